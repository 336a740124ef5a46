//! `--expect` and the `git bisect run` exit codes, JUnit and markdown output: on mach-sim, so they run
//! on any machine.

use crate::common;

use std::process::{Command, Output};

use threadleak::exit::ExitCode;

fn threadleak(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

/// `threadleak run --backend mach-sim`, 50 cycles unless `extra` says otherwise.
fn sim(extra: &[&str]) -> Vec<String> {
    let cycles: &[&str] = if extra.contains(&"--cycles") { &[] } else { &["--cycles", "50"] };
    ["run", "--backend", "mach-sim"].iter().chain(cycles).chain(extra).map(|s| (*s).to_owned()).collect()
}

fn run(args: Vec<String>) -> Output {
    Command::new(common::bin()).args(&args).output().unwrap()
}

fn snapshots() -> String {
    format!("{}/../cases/snapshots", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn matching_the_accepted_snapshots_exits_0() {
    let out = run(sim(&["--cell", "thread=joined", "--expect", &snapshots()]));
    assert_eq!(out.status.code(), Some(ExitCode::MATCHES), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_leak_against_clean_exits_1_naming_the_cell() {
    let out = run(sim(&["--cell", "thread=detached,exc=none,fix=off", "--expect", "clean"]));
    assert_eq!(out.status.code(), Some(ExitCode::DIFFERS));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "thread=detached,self=leaked,exc=none,fix=off: expected clean (nothing moves), got leak (names +1, dead +1, urefs +1)"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().filter(|l| l.contains("expected clean")).count(), 1, "{stderr}");
}

#[test]
fn a_baseline_record_from_another_profile_differs_in_the_overrun() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let overrun = ["--cell", "thread=detached,self=leaked,exc=none,fix=on", "--self-calls", "70000", "--cycles", "4"];
    let mut args = sim(&overrun);
    args.extend(["--profile".into(), "xnu-1504".into(), "--format".into(), "json".into(), "--out".into()]);
    args.push(good.to_string_lossy().into_owned());
    assert_eq!(run(args).status.code(), Some(ExitCode::OK));
    let same = run([
        sim(&overrun),
        vec!["--profile".into(), "xnu-1504".into(), "--expect".into(), good.to_string_lossy().into()],
    ]
    .concat());
    assert_eq!(same.status.code(), Some(ExitCode::MATCHES), "{}", String::from_utf8_lossy(&same.stderr));
    let modern = run([sim(&overrun), vec!["--expect".into(), good.to_string_lossy().into()]].concat());
    assert_eq!(modern.status.code(), Some(ExitCode::DIFFERS));
    assert!(String::from_utf8_lossy(&modern.stderr)
        .contains("expected clean (nothing moves), got leak (names +1, dead +1, urefs +65535)"));
}

#[test]
fn a_cell_that_cannot_be_measured_exits_125() {
    // 70,000 references in each of 1,000 threads take longer than 50 ms: the child is killed.
    let out = run(sim(&[
        "--cell",
        "thread=detached,self=leaked,exc=none,fix=off",
        "--self-calls",
        "70000",
        "--cycles",
        "1000",
        "--timeout",
        "50ms",
        "--expect",
        "clean",
    ]));
    assert_eq!(out.status.code(), Some(ExitCode::CANNOT_TELL));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot tell (timeout: killed after 50 ms)"));
}

#[test]
fn an_unusable_baseline_exits_128_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = run(sim(&["--expect", &missing.to_string_lossy()]));
    assert_eq!(out.status.code(), Some(ExitCode::BASELINE_UNUSABLE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot use the baseline: cannot read"));
    // A Linux record cannot judge a mach-sim run.
    let linux = format!("{}/../fixtures/records/linux.json", env!("CARGO_MANIFEST_DIR"));
    let out = run(sim(&["--cell", "thread=detached,exc=none", "--expect", &linux]));
    assert_eq!(out.status.code(), Some(ExitCode::BASELINE_UNUSABLE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was made with backend linux, this run uses mach-sim"));
}

#[test]
fn junit_has_a_test_case_per_cell_and_says_what_moved() {
    let out = run(sim(&["--cell", "thread=joined,exc=none", "--format", "junit"]));
    assert_eq!(out.status.code(), Some(ExitCode::OK));
    let xml = String::from_utf8(out.stdout).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suite = &report.test_suites[0];
    assert_eq!((suite.name.as_str(), suite.tests, suite.failures, suite.errors), ("threadleak.mach-sim", 6, 1, 0));
    let failed: Vec<_> = suite
        .test_cases
        .iter()
        .filter_map(|c| match &c.status {
            quick_junit::TestCaseStatus::NonSuccess { message, ty, .. } => {
                Some((c.name.to_string(), ty.clone(), message.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "thread=joined,self=leaked,exc=none,fix=off");
    assert_eq!(failed[0].1.as_deref().map(|t| t.to_string()), Some("leak".to_owned()));
    // The message leads with where the leak was made (the frames' lines are the model's code, so only
    // the first function is asserted), then what was left and how much moved.
    let message = failed[0].2.as_deref().map(|m| m.to_string()).unwrap_or_default();
    let (made, rest) = message.split_once("; ").unwrap();
    assert!(made.starts_with("made at: +1 per thread: dead name (mach_thread_self) ← "), "{message}");
    assert!(made.contains("take_self_references (workload.rs:"), "{message}");
    assert_eq!(
        rest,
        "left behind per thread: +1 dead name, +1 uref on dead names; names moved by +1 per thread, dead moved by +1 \
         per thread, urefs moved by +1 per thread (over 50 threads)"
    );
    // With --expect, a failure is a difference from the baseline, not a leak.
    let out = run(sim(&["--cell", "thread=joined,exc=none", "--format", "junit", "--expect", &snapshots()]));
    let report = quick_junit::Report::deserialize_from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!((report.failures, report.errors), (0, 0));
}

#[test]
fn markdown_is_a_table_with_a_row_per_cell() {
    let out = threadleak(&[
        "run",
        "--backend",
        "mach-sim",
        "--cycles",
        "20",
        "--cell",
        "thread=unjoined,exc=leaked",
        "--format",
        "markdown",
    ]);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("| cell | verdict | names | send | receive | send_once | port_set | dead | urefs |"), "{md}");
    assert!(
        md.contains("| `thread=unjoined,self=leaked,exc=leaked,fix=off` | leak | +2 | +1 | +1 | 0 | 0 | +1 | +2 |"),
        "{md}"
    );
    assert_eq!(md.lines().filter(|l| l.starts_with("| `thread=")).count(), 6);
}
