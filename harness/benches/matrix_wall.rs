//! Wall time of whole runs, one child per cell, `--jobs` = cores:
//! - the full default matrix (54 cells, 1000 cycles) on the Linux backend and on mach-sim: under 3 s;
//! - the overrun on mach-sim (K = 70,000 `mach_thread_self()` per thread, 10 threads, 2 cells): under 5 s.
//!
//! `cargo bench -p threadleak --bench matrix_wall`

use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    target: Duration,
    linux_only: bool,
}

const CASES: &[Case] = &[
    Case { name: "linux, 54 cells x 1000 cycles", args: &[], target: Duration::from_secs(3), linux_only: true },
    Case {
        name: "mach-sim, 54 cells x 1000 cycles",
        args: &["--backend", "mach-sim"],
        target: Duration::from_secs(3),
        linux_only: false,
    },
    Case {
        name: "mach-sim overrun, K=70000, 10 threads",
        args: &[
            "--backend",
            "mach-sim",
            "--cell",
            "thread=detached,self=leaked,exc=none",
            "--self-calls",
            "70000",
            "--cycles",
            "10",
        ],
        target: Duration::from_secs(5),
        linux_only: false,
    },
];

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("matrix_wall: {cores} cores, median of {ROUNDS} runs each");
    let mut missed = false;
    for case in CASES {
        if case.linux_only && !cfg!(target_os = "linux") {
            continue;
        }
        let mut walls = Vec::new();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_threadleak"))
                .arg("run")
                .args(case.args)
                .args(["--format", "json"])
                .output()
                .unwrap();
            walls.push(started.elapsed());
            assert!(out.status.success(), "{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
        }
        walls.sort();
        let median = walls[ROUNDS / 2];
        println!(
            "  {:<40} min {:.2} s, median {:.2} s, max {:.2} s (target < {} s)",
            case.name,
            walls[0].as_secs_f64(),
            median.as_secs_f64(),
            walls[ROUNDS - 1].as_secs_f64(),
            case.target.as_secs()
        );
        missed |= median >= case.target;
    }
    if missed {
        eprintln!("matrix_wall: a target was missed");
        std::process::exit(1);
    }
}
