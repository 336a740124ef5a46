//! What the exec probe costs a program: `fixtures/tt.c plain` creating detached threads, without the
//! probe, with it interposing only (no census due), and with a census every 1,000 thread ends, in
//! alternating rounds of one run. Targets: interposition under 5 µs per thread created; the census every
//! 1,000 threads under 5 % of the run time.
//!
//! `cargo bench -p threadleak --bench exec_overhead` (the probe library must be built: `cargo build
//! --release --workspace`).

use std::path::Path;
use std::process::Command;

use threadleak::backend::Backend;

const ROUNDS: usize = 9;
const THREADS: &str = "20000";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// tt's loop rate, threads per second.
fn rate(tt: &Path, probe: Option<(&Path, &str, &Path)>) -> f64 {
    let mut cmd = Command::new(tt);
    cmd.args(["plain", THREADS]).envs(Backend::Linux.child_env().iter().copied());
    if let Some((lib, every, out)) = probe {
        cmd.env("LD_PRELOAD", lib).env("THREADLEAK_PROBE_OUT", out).env("THREADLEAK_PROBE_EVERY", every);
    }
    let out = cmd.output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split_whitespace().find_map(|kv| kv.strip_prefix("rate=")).expect("tt prints rate=").parse().unwrap()
}

fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("exec_overhead: measures the Linux probe; skipping");
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_threadleak"));
    let lib = threadleak::exec::probe_beside(bin).expect("the probe library: cargo build --release --workspace");
    let dir = tempfile::tempdir().unwrap();
    let tt = dir.path().join("tt");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tt.c");
    assert!(Command::new("cc").args(["-O2", "-pthread"]).arg(&source).arg("-o").arg(&tt).status().unwrap().success());
    let samples = dir.path().join("samples.jsonl");
    let (mut plain, mut interposed, mut sampled) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(rate(&tt, None));
        interposed.push(rate(&tt, Some((&lib, "1000000000", &samples))));
        sampled.push(rate(&tt, Some((&lib, "1000", &samples))));
    }
    let (plain, interposed, sampled) = (median(plain), median(interposed), median(sampled));
    let per_thread_us = (1.0 / interposed - 1.0 / plain) * 1e6;
    let census_share = (1.0 / sampled - 1.0 / interposed) / (1.0 / plain);
    println!("exec_overhead: tt plain {THREADS}, median of {ROUNDS} alternating rounds");
    println!("  without the probe            {plain:>10.0} threads/s");
    println!("  probe, interposing only      {interposed:>10.0} threads/s");
    println!("  probe, census every 1,000    {sampled:>10.0} threads/s");
    println!("  interposition per thread     {per_thread_us:>10.2} µs (target < 5)");
    println!("  census share of run time     {:>10.2} % (target < 5)", census_share * 100.0);
    if per_thread_us >= 5.0 || census_share >= 0.05 {
        eprintln!("exec_overhead: a target was missed");
        std::process::exit(1);
    }
}
