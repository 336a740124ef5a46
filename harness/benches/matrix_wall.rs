//! Wall time of whole runs, one child per cell, `--jobs` = cores:
//! - the full default matrix (54 cells, 1000 cycles) on the Linux backend and on mach-sim: under 3 s;
//! - the overrun on mach-sim (K = 70,000 `mach_thread_self()` per thread, 10 threads, 2 cells): under 5 s;
//! - the Linux matrix against the machine's own limit, measured in the same run in alternating rounds:
//!   the same threads (cells × (cycles + warm-up)) created and joined by `fixtures/create_join.c` as the
//!   backend creates them (an 8 MiB stack, the children's `GLIBC_TUNABLES`), one process per cell, as
//!   many at a time as there are cores. Target: the matrix within 1.6 times the limit (next: 1.3).
//!
//! `cargo bench -p threadleak --bench matrix_wall` (`THREADLEAK_BENCH_ROUNDS` sets the rounds of the
//! comparison, 9 by default; words after `--` run only the cases whose names hold one of them, `limit`
//! naming the comparison: `cargo bench -p threadleak --bench matrix_wall -- limit`).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{build_fixture, median, time};
use threadleak::backend::Backend;
use threadleak::matrix::Cell;
use threadleak::record::Params;

const ROUNDS: usize = 5;

/// The matrix's wall time against the machine's limit: the target, and the one after it.
const LIMIT_TARGET: f64 = 1.6;
const LIMIT_NEXT: f64 = 1.3;

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
    // `cargo bench` passes `--bench`; other words select cases.
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    println!("matrix_wall: {cores} cores, median of {ROUNDS} runs each");
    let mut missed = false;
    for case in CASES {
        if (case.linux_only && !cfg!(target_os = "linux")) || !selected(case.name) {
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
    if cfg!(target_os = "linux") && selected("linux against the limit") {
        missed |= against_the_limit(cores);
    }
    if missed {
        eprintln!("matrix_wall: a target was missed");
        std::process::exit(1);
    }
}

/// The Linux matrix against the same threads created and joined by a plain C loop, alternating rounds;
/// whether the target was missed.
fn against_the_limit(cores: usize) -> bool {
    let rounds: usize =
        std::env::var("THREADLEAK_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|&r| r > 0).unwrap_or(9);
    let params = Params::default();
    let processes = Cell::all().len();
    let per_process = params.cycles + params.warmup;
    let dir = tempfile::tempdir().unwrap();
    let program = build_fixture(dir.path(), "create_join.c", &["-O2"]);
    let jobs = cores.to_string();

    let (mut matrix, mut limit) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        matrix.push(time(
            Command::new(env!("CARGO_BIN_EXE_threadleak")).args(["run", "--format", "json", "--jobs", &jobs]),
        ));
        limit.push(create_join(&program, processes, per_process, cores));
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{lo:.2}-{hi:.2} s")
    };
    let (matrix_spread, limit_spread) = (spread(&matrix), spread(&limit));
    let (matrix, limit) = (median(matrix), median(limit));
    let ratio = matrix / limit;
    println!(
        "  linux matrix against the machine's limit: {processes} processes x {per_process} threads = {} threads, \
         {cores} at a time, median of {rounds} alternating rounds",
        processes as u64 * u64::from(per_process)
    );
    println!("    threadleak run              {matrix:>6.2} s ({matrix_spread})");
    println!("    fixtures/create_join.c      {limit:>6.2} s ({limit_spread})");
    println!(
        "    ratio                       {ratio:>6.2} (target <= {LIMIT_TARGET}: {}; next <= {LIMIT_NEXT}: {})",
        if ratio <= LIMIT_TARGET { "met" } else { "missed" },
        if ratio <= LIMIT_NEXT { "met" } else { "not yet" }
    );
    ratio > LIMIT_TARGET
}

/// Wall time of `processes` runs of `create_join PER_PROCESS` under the children's environment, `jobs`
/// at a time, seconds.
fn create_join(program: &std::path::Path, processes: usize, per_process: u32, jobs: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let count = per_process.to_string();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, processes) {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < processes {
                    let status = Command::new(program)
                        .arg(&count)
                        .envs(Backend::Linux.child_env().iter().copied())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(status.success(), "{} {count}: {status}", program.display());
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}
