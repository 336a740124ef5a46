//! The command line end to end: listing, usage errors and their exit code, the JSON record, the table,
//! the self-handle fallback and K self references.

use crate::common;

use std::process::{Command, Output};

use threadleak::exit::ExitCode;

fn threadleak(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn list_prints_every_cell_or_the_selected_ones() {
    let out = threadleak(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 54);
    assert_eq!(text.lines().next(), Some("thread=detached,self=none,exc=none,fix=off"));
    let out = threadleak(&["list", "--cell", "self=leaked,fix=on", "--cell", "thread=unjoined,exc=leaked"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 9 + 6 - 1);
}

#[test]
fn usage_errors_name_what_is_wrong_and_exit_2() {
    for (args, needle) in [
        (&["run", "--cell", "thread=sleepy"][..], "unknown value `sleepy` for axis `thread`"),
        (&["run", "--cell", "colour=red"][..], "unknown axis `colour`"),
        (&["run", "--cycles", "1"][..], "--cycles"),
        (&["run", "--timeout", "5h"][..], "unknown unit `h`"),
        (&["run", "--backend", "vms"][..], "invalid value 'vms' for '--backend <BACKEND>'"),
        (&["run", "--jobs", "0"][..], "--jobs"),
        (&["list", "--cell", "self=leaked,self=sometimes"][..], "unknown value `sometimes`"),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (&["run", "--scenario", "nope"][..], "unknown scenario `nope` (scenarios: ccl-thread-self, "),
        (&["run", "--backend", "mach-sim", "--profile", "xnu-9"][..], "unknown profile `xnu-9` (profiles: xnu-1504, "),
        (&["run", "--backend", "mach-sim", "--profile", "all"][..], "--profile all writes one record per profile"),
        (
            &["run", "--backend", "mach-sim", "--profile", "all", "--out", "/nonexistent"][..],
            "names an existing folder",
        ),
        (&["run", "--backend", "mach-sim", "--profile", "all", "--out", "Cargo.toml"][..], "--out names a folder"),
        (
            &[
                "degrade",
                "--backend",
                "mach-sim",
                "--profile",
                "all",
                "--cell",
                "thread=detached,self=none,exc=none,fix=off",
            ][..],
            "applies to `run` only",
        ),
    ] {
        let out = threadleak(args);
        assert_eq!(out.status.code(), Some(ExitCode::USAGE), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn run_help_lists_every_profile_of_the_model_with_its_release() {
    let out = threadleak(&["run", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8(out.stdout).unwrap();
    for profile in threadleak::backend::mach::sim::Profile::ALL {
        let line = format!("- {}:", profile.name());
        let at = help.find(&line).unwrap_or_else(|| panic!("{line} missing from:\n{help}"));
        assert!(help[at..].lines().next().unwrap().ends_with(&format!("macOS {}", profile.macos())), "{help}");
    }
    assert!(help.contains("- all:"), "{help}");
}

#[test]
fn scenarios_lists_the_corpus_with_units_sources_and_why_not_on_linux() {
    let out = threadleak(&["scenarios"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for s in threadleak::scenario::ALL {
        let head = format!("{}  (per {}; {})", s.name, s.unit.as_str(), s.project);
        assert!(text.lines().any(|l| l == head), "{head} in {text}");
    }
    assert_eq!(text.lines().filter(|l| l.starts_with("    linux:  no analog: ")).count(), 5, "{text}");
}

#[test]
fn scenarios_run_on_the_model_with_their_unit_and_skip_what_linux_cannot_run() {
    let out = threadleak(&["run", "--backend", "mach-sim", "--scenario", "htop-task-threads", "--cycles", "50"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("scenario=htop-task-threads,variant=buggy"), "{text}");
    assert!(text.contains("per the scenario's unit"), "{text}");
    if cfg!(target_os = "linux") {
        let out =
            threadleak(&["run", "--scenario", "htop-task-threads", "--scenario", "ccl-thread-self", "--cycles", "20"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("htop-task-threads does not run on linux: "), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("scenario=ccl-thread-self,variant=buggy") && !text.contains("htop"), "{text}");
        let out = threadleak(&["run", "--scenario", "htop-task-threads"]);
        assert_eq!(out.status.code(), Some(ExitCode::USAGE));
        assert!(stderr(&out).contains("none of the scenarios asked for runs on linux"), "{}", stderr(&out));
    }
}

/// Runs on the Linux backend, measuring this machine.
#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use threadleak::record::{Record, Status, Verdict};

    /// `threadleak run ARGS --format json --out FILE` with `env` set; checks the exit code, parses the record.
    fn run_json(env: &[(&str, &str)], args: &[&str]) -> Record {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let out = Command::new(common::bin())
            .envs(env.iter().copied())
            .arg("run")
            .args(args)
            .args(["--format", "json", "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(ExitCode::OK), "{}", stderr(&out));
        Record::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn run_writes_a_schema_1_record() {
        let record = run_json(&[], &["--cell", "self=leaked,exc=none,fix=off", "--cycles", "200"]);
        assert_eq!(record.schema, 1);
        assert_eq!(record.backend, "linux");
        assert_eq!(record.os.family, "linux");
        assert_eq!((record.params.cycles, record.params.warmup, record.params.self_calls), (200, 10, 1));
        assert_eq!(record.cells.len(), 3);
        for cell in &record.cells {
            assert_eq!(cell.status, Status::Ok);
            assert_eq!(cell.verdict, Verdict::Leak);
            assert_eq!(cell.per_thread.get("fds"), Some(1.0));
            assert_eq!(cell.slope.get("fds"), Some(1.0));
            let cycles: Vec<u32> = cell.checkpoints.iter().map(|c| c.cycle).collect();
            assert_eq!(cycles, [0, 100, 200]);
            assert!(cell.cycles_per_sec.unwrap() > 0.0);
        }
    }

    #[test]
    fn the_table_has_a_row_per_cell_and_a_column_per_counter() {
        let out = threadleak(&["run", "--cell", "thread=unjoined,self=none,exc=none", "--cycles", "100"]);
        assert_eq!(out.status.code(), Some(ExitCode::OK), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("threadleak "), "{text}");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(header, ["cell", "verdict", "fds", "maps", "vm_kib", "timers", "tasks"]);
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(row, ["thread=unjoined,self=none,exc=none,fix=off", "leak", "0", "+2", "+8196", "0", "0"]);
    }

    #[test]
    fn k_self_references_leak_k_handles_and_the_fix_releases_them() {
        let record = run_json(&[], &["--cell", "thread=detached,exc=none", "--self-calls", "3", "--cycles", "100"]);
        let fds: Vec<(&str, f64)> =
            record.cells.iter().map(|c| (c.cell.as_str(), c.per_thread.get("fds").unwrap())).collect();
        assert_eq!(
            fds,
            [
                ("thread=detached,self=none,exc=none,fix=off", 0.0),
                ("thread=detached,self=none,exc=none,fix=on", 0.0),
                ("thread=detached,self=leaked,exc=none,fix=off", 3.0),
                ("thread=detached,self=leaked,exc=none,fix=on", 0.0),
                ("thread=detached,self=balanced,exc=none,fix=off", 0.0),
                ("thread=detached,self=balanced,exc=none,fix=on", 0.0),
            ]
        );
    }

    #[test]
    fn the_proc_thread_self_fallback_is_measured_the_same_and_said() {
        let record = run_json(
            &[("THREADLEAK_LINUX_SELF_HANDLE", "proc-thread-self")],
            &["--cell", "thread=joined,exc=none,fix=off", "--cycles", "100"],
        );
        let [none, leaked, balanced] = &record.cells[..] else { panic!("three cells expected") };
        assert_eq!(none.note, None);
        assert_eq!(leaked.per_thread.get("fds"), Some(1.0));
        assert!(leaked.note.as_deref().unwrap().contains("/proc/thread-self directory fds"));
        assert_eq!(balanced.per_thread.get("fds"), Some(0.0));
    }
}
