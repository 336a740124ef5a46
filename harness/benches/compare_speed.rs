//! `threadleak compare` over 1,000 records of 54 cells (a full mach-sim record, copied under 1,000
//! versions), target under 0.5 s; and a hostile record of 1,000,000 counters (under the 64 MiB a record
//! may be), which must be refused in well under a second: reading a record is linear in its size.
//! `cargo bench -p threadleak --bench compare_speed`

use std::process::Command;
use std::time::{Duration, Instant};

const RECORDS: usize = 1000;
const TARGET: Duration = Duration::from_millis(500);
/// The hostile record's refusal.
const WIDE_TARGET: Duration = Duration::from_secs(1);

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = dir.path().join("base.json");
    let out = Command::new(env!("CARGO_BIN_EXE_threadleak"))
        .args(["run", "--backend", "mach-sim", "--format", "json", "--out"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::remove_file(&first).unwrap();
    // Vary the version so that the records form 1,000 columns, and the deltas so that there are changes.
    let mut paths = Vec::new();
    for i in 0..RECORDS {
        let version = text.replacen("\"profile\": \"xnu-11417\"", &format!("\"profile\": \"xnu-{}\"", 10_000 + i), 1);
        let varied = if i % 2 == 0 { version } else { version.replacen("\"urefs\": 1.0", "\"urefs\": 2.0", 1) };
        let path = dir.path().join(format!("r{i:04}.json"));
        std::fs::write(&path, varied).unwrap();
        paths.push(path);
    }
    let mut walls = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_threadleak")).arg("compare").args(&paths).output().unwrap();
        walls.push(started.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    walls.sort();
    let median = walls[2];
    let size: u64 = paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    println!("compare_speed: {RECORDS} records of 54 cells ({} MiB), median of 5 runs", size >> 20);
    println!(
        "  min {:.3} s, median {:.3} s, max {:.3} s (target < {} s)",
        walls[0].as_secs_f64(),
        median.as_secs_f64(),
        walls[4].as_secs_f64(),
        TARGET.as_secs_f64()
    );
    let wide = wide_record(&text, dir.path());
    let started = Instant::now();
    let refused = threadleak::compare::load(&wide);
    let wide_time = started.elapsed();
    assert!(refused.is_err(), "a record of a million counters was accepted");
    println!(
        "  a record of 1,000,000 counters ({} MiB) refused in {:.3} s (target < {} s)",
        std::fs::metadata(&wide).unwrap().len() >> 20,
        wide_time.as_secs_f64(),
        WIDE_TARGET.as_secs_f64()
    );
    if median >= TARGET || wide_time >= WIDE_TARGET {
        eprintln!("compare_speed: a target was missed");
        std::process::exit(1);
    }
}

/// The record with its first cell's per-thread counters replaced by a million distinct ones.
fn wide_record(text: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let start = text.find("\"per_thread\": {").expect("a per_thread object") + "\"per_thread\": {".len();
    let end = start + text[start..].find('}').expect("its end");
    let counters: Vec<String> = (0..1_000_000).map(|i| format!("\"c{i}\":0")).collect();
    let path = dir.join("wide.json");
    std::fs::write(&path, format!("{}{}{}", &text[..start], counters.join(","), &text[end..])).unwrap();
    path
}
