//! What `threadleak exec` costs a program, against the program run exactly as its users run it (no
//! probe, no `GLIBC_TUNABLES`): the whole `threadleak exec --every 1000 -- PROGRAM` command, wall time, in
//! alternating rounds of one run. Programs: `fixtures/lifecycles.c`, a tight create/join loop of 20,000
//! threads (target: at most 1.2 times the plain run), and 20,000 detached threads, up to 16 in flight
//! (reported).
//!
//! `cargo bench -p threadleak --bench exec_overhead` (the probe library must be built: `cargo build
//! --release --workspace`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{build_fixture, median, time};

const ROUNDS: usize = 9;
const THREADS: &str = "20000";
const TARGET: f64 = 1.2;

fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("exec_overhead: measures the Linux probe; skipping");
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_threadleak"));
    assert!(threadleak::exec::probe::embedded(), "this build carries no probe (THREADLEAK_EMBED_PROBE=0)");
    let dir = tempfile::tempdir().unwrap();
    let program = build_fixture(dir.path(), "lifecycles.c", &["-O2"]);
    let record = dir.path().join("record.json");
    println!("exec_overhead: lifecycles PATTERN {THREADS}, median wall time of {ROUNDS} alternating rounds");
    let mut missed = false;
    for pattern in ["joined", "detached"] {
        let (mut plain, mut measured) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            plain.push(time(Command::new(&program).args([pattern, THREADS])));
            measured.push(time(
                Command::new(bin)
                    .args(["exec", "--every", "1000", "--format", "json", "--out"])
                    .arg(&record)
                    .arg("--")
                    .arg(&program)
                    .args([pattern, THREADS]),
            ));
        }
        let (plain, measured) = (median(plain), median(measured));
        let ratio = measured / plain;
        println!(
            "  {pattern:<9} plain {:>8.1} ms   threadleak exec {:>8.1} ms   ratio {ratio:.3}",
            plain * 1e3,
            measured * 1e3
        );
        if pattern == "joined" {
            println!("  {:<9} target: ratio at most {TARGET}", "");
            missed |= ratio > TARGET;
        }
    }
    if missed {
        eprintln!("exec_overhead: the target was missed");
        std::process::exit(1);
    }
}
