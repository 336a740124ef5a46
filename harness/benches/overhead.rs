//! The harness's cycle rate against the raw C loop of `fixtures/tt.c`, measured in one run.
//!
//! Both create a detached thread, hand-shake with it through a semaphore and wait, in a loop, under the
//! same `GLIBC_TUNABLES` as a child gets. Rounds alternate between the two so that a change of machine
//! load hits both; the figure is the ratio of the medians. Target: at least 0.8.
//!
//! `cargo bench -p threadleak --bench overhead` (set `THREADLEAK_BENCH_CYCLES` to change the loop length).

use std::path::Path;
use std::process::Command;

use threadleak::backend::Backend;

const TARGET_RATIO: f64 = 0.8;
const ROUNDS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("overhead: the Linux backend is the one measured here; skipping");
        return;
    }
    let cycles: u32 = std::env::var("THREADLEAK_BENCH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let tt = dir.path().join("tt");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tt.c");
    let built = Command::new("cc").args(["-O2", "-pthread"]).arg(&source).arg("-o").arg(&tt).status();
    assert!(built.is_ok_and(|s| s.success()), "cannot build {}", source.display());

    let env = Backend::Linux.child_env();
    let mut raw = Vec::new();
    let mut harness = Vec::new();
    for _ in 0..ROUNDS {
        let out = Command::new(&tt).args(["plain", &cycles.to_string()]).envs(env.iter().copied()).output().unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let rate = line.split_whitespace().find_map(|kv| kv.strip_prefix("rate=")).expect("tt prints rate=");
        raw.push(rate.parse::<f64>().unwrap());

        let out = Command::new(env!("CARGO_BIN_EXE_threadleak"))
            .args(["__child", "--backend", "linux", "--cell", "thread=detached,self=none,exc=none,fix=off"])
            .args(["--cycles", &cycles.to_string()])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a child report");
        harness.push(report["cycles_per_sec"].as_f64().expect("cycles_per_sec"));
    }
    let (raw, harness) = (median(raw), median(harness));
    let ratio = harness / raw;
    println!("overhead: {cycles} detached create/exit cycles, median of {ROUNDS} alternating rounds");
    println!("  fixtures/tt.c plain     {raw:>10.0} threads/s");
    println!("  threadleak child        {harness:>10.0} threads/s");
    println!("  ratio                   {ratio:>10.3} (target >= {TARGET_RATIO})");
    if ratio < TARGET_RATIO {
        eprintln!("overhead: ratio {ratio:.3} is below the target {TARGET_RATIO}");
        std::process::exit(1);
    }
}
