//! What timing every thread costs: the child's cycle rate in degradation mode (a clock read and a store
//! per thread, a census every window) against the plain matrix mode, same cell, alternating rounds in one
//! run. Target: the sampling adds under 5 % (ratio of medians at least 0.95).
//!
//! `cargo bench -p threadleak --bench degrade_overhead`

use std::process::Command;

use threadleak::backend::Backend;

const ROUNDS: usize = 9;
const THREADS: &str = "20000";
const TARGET: f64 = 0.95;

fn rate(extra: &[&str]) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_threadleak"))
        .args(["__child", "--backend", "linux", "--cell", "thread=detached,self=none,exc=none,fix=off"])
        .args(["--cycles", THREADS])
        .args(extra)
        .envs(Backend::Linux.child_env().iter().copied())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a child report");
    report["cycles_per_sec"].as_f64().expect("cycles_per_sec")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("degrade_overhead: measures the Linux backend; skipping");
        return;
    }
    let (mut plain, mut timed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(rate(&[]));
        timed.push(rate(&["--degrade-window", "1000"]));
    }
    let (plain, timed) = (median(plain), median(timed));
    let ratio = timed / plain;
    println!("degrade_overhead: {THREADS} detached threads, median of {ROUNDS} alternating rounds");
    println!("  matrix mode            {plain:>10.0} threads/s");
    println!("  degradation mode       {timed:>10.0} threads/s");
    println!("  ratio                  {ratio:>10.3} (target >= {TARGET})");
    if ratio < TARGET {
        eprintln!("degrade_overhead: sampling costs more than 5 %");
        std::process::exit(1);
    }
}
