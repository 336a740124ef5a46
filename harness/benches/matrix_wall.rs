//! Wall time of the full default matrix (54 cells, 1000 cycles, one child each, `--jobs` = cores).
//! Target: under 3 s on 2 cores. `cargo bench -p threadleak --bench matrix_wall`.

use std::process::Command;
use std::time::{Duration, Instant};

const TARGET: Duration = Duration::from_secs(3);
const ROUNDS: usize = 5;

fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("matrix_wall: measures the Linux backend; skipping");
        return;
    }
    let mut walls = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_threadleak")).args(["run", "--format", "json"]).output().unwrap();
        walls.push(started.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    walls.sort();
    let median = walls[ROUNDS / 2];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("matrix_wall: 54 cells x 1000 cycles on {cores} cores, {ROUNDS} runs");
    println!(
        "  min {:.2} s, median {:.2} s, max {:.2} s (target < {} s)",
        walls[0].as_secs_f64(),
        median.as_secs_f64(),
        walls[ROUNDS - 1].as_secs_f64(),
        TARGET.as_secs()
    );
    if median >= TARGET {
        eprintln!("matrix_wall: median {:.2} s misses the target", median.as_secs_f64());
        std::process::exit(1);
    }
}
