//! What recording sites costs (`threadleak exec`, on by default; `--no-sites` turns it off), in one run:
//!
//! - per tracked call: `fixtures/two_sites.c calls N` opens and closes `/dev/null` N times, 20 calls
//!   deep, and times the pairs itself; under `exec` and `exec --no-sites` in alternating rounds, the
//!   difference of the medians is what recording an `open` (its stack) and a `close` costs. Target: under
//!   2 µs for the pair.
//! - a program: `fixtures/lifecycles.c joined 4000 leak`, a create/join loop leaking one descriptor per
//!   thread, plain, under `threadleak exec`, and under `valgrind --tool=none --track-fds=yes` (the one
//!   tool that tells where each descriptor was made, listing every one still open at exit), in
//!   alternating rounds, whole commands, wall time. Target: `exec` at most 1.5 times the plain run;
//!   valgrind's ratio is printed beside it as the anchor (when valgrind is installed).
//!
//! `cargo bench -p threadleak --bench sites`

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{build_fixture, median, time};

const ROUNDS: usize = 7;
const PAIRS: &str = "200000";
const PAIR_TARGET_NS: f64 = 2000.0;
const THREADS: &str = "4000";
const RATIO_TARGET: f64 = 1.5;

/// The `pair_ns=` figure a `two_sites calls` run printed (`exec` itself exits 3 there: a program with no
/// threads is not measured).
fn pair_ns(command: &mut Command) -> f64 {
    let out = command.stderr(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("pair_ns="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pair_ns in {text:?}"))
}

fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("sites: measures the Linux probe; skipping");
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_threadleak"));
    assert!(threadleak::exec::probe::embedded(), "this build carries no probe (THREADLEAK_EMBED_PROBE=0)");
    let dir = tempfile::tempdir().unwrap();
    let two = build_fixture(dir.path(), "two_sites.c", &["-g", "-O2"]);
    let lifecycles = build_fixture(dir.path(), "lifecycles.c", &["-O2"]);
    let record = dir.path().join("record.json");
    let exec = |flags: &[&str]| {
        let mut c = Command::new(bin);
        c.arg("exec").args(flags).args(["--format", "json", "--out"]).arg(&record).arg("--");
        c
    };
    let mut missed = false;

    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        on.push(pair_ns(exec(&[]).arg(&two).args(["calls", PAIRS])));
        off.push(pair_ns(exec(&["--no-sites"]).arg(&two).args(["calls", PAIRS])));
    }
    let (on, off) = (median(on), median(off));
    let cost = on - off;
    println!("sites: per tracked call, two_sites calls {PAIRS} (open + close of /dev/null, 20 calls deep), medians of {ROUNDS} rounds");
    println!(
        "  exec --no-sites {off:>8.0} ns a pair   exec {on:>8.0} ns a pair   recording costs {cost:>6.0} ns a pair"
    );
    println!("  target: under {PAIR_TARGET_NS:.0} ns a pair");
    missed |= cost > PAIR_TARGET_NS;

    let valgrind = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    let (mut plain, mut measured, mut anchor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(time(Command::new(&lifecycles).args(["joined", THREADS, "leak"])));
        measured.push(time(exec(&[]).arg(&lifecycles).args(["joined", THREADS, "leak"])));
        if valgrind {
            anchor.push(time(
                Command::new("valgrind")
                    .args(["--tool=none", "--track-fds=yes", "-q"])
                    .arg(&lifecycles)
                    .args(["joined", THREADS, "leak"]),
            ));
        }
    }
    let plain = median(plain);
    let ratio = median(measured) / plain;
    println!(
        "sites: lifecycles joined {THREADS} leak (one descriptor per thread), wall time, medians of {ROUNDS} rounds"
    );
    println!(
        "  plain {:>7.1} ms   threadleak exec {:>7.1} ms   ratio {ratio:.2} (target: at most {RATIO_TARGET})",
        plain * 1e3,
        plain * ratio * 1e3
    );
    if valgrind {
        let v = median(anchor);
        println!("  valgrind --tool=none --track-fds=yes {:>7.1} ms   ratio {:.2} (the anchor)", v * 1e3, v / plain);
    } else {
        println!("  valgrind is not installed: no anchor");
    }
    missed |= ratio > RATIO_TARGET;
    if missed {
        eprintln!("sites: a target was missed");
        std::process::exit(1);
    }
}
