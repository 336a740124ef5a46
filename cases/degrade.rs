//! `threadleak degrade`: one child creating threads continuously, a window of latency statistics and a
//! census every N threads, written as CSV, JSON and SVG.

use crate::common;

use std::process::Command;

use threadleak::exit::ExitCode;

#[cfg(target_os = "linux")]
#[test]
fn a_leaking_cell_is_plotted_against_its_leaked_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["degrade", "--cell", "thread=detached,self=leaked,exc=none,fix=off", "--threads", "3000"])
        .args(["--window", "1000", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ExitCode::OK), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("with 3000 fds leaked: ratio"), "{summary}");

    let csv = std::fs::read_to_string(dir.path().join("degrade.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        [("1000", "1000"), ("2000", "2000"), ("3000", "3000")]
    );
    for r in &rows {
        let (p50, p99): (f64, f64) = (r[2].parse().unwrap(), r[3].parse().unwrap());
        assert!(p50 > 0.0 && p99 >= p50, "{r:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("degrade.json")).unwrap()).unwrap();
    assert_eq!(json["leaked_counter"], "fds");
    assert_eq!(json["status"], "ok");
    assert!(json["p50_ratio"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(dir.path().join("degrade.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);
}

#[test]
fn the_model_has_no_timing_and_says_so() {
    let out = Command::new(common::bin())
        .args(["degrade", "--backend", "mach-sim", "--cell", "thread=detached,self=leaked,exc=none,fix=off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ExitCode::USAGE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mach-sim is a model and has no timing"));
}

#[cfg(target_os = "linux")]
#[test]
fn an_unknown_counter_is_a_usage_error() {
    let out = Command::new(common::bin())
        .args(["degrade", "--cell", "thread=detached,self=leaked,exc=none,fix=off", "--counter", "ports"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ExitCode::USAGE));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("unknown counter `ports` (counters: fds, maps, vm_kib, timers, tasks)"));
}
