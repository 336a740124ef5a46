//! `threadleak exec` on real programs: the C reproduction leaking and releasing a handle per thread, a
//! runtime nobody here wrote (CPython), every fault, and `git bisect run` finding the commit that started
//! leaking. `cargo test` does not build a cdylib, so the first test here builds the probe library beside
//! the binary under test.

#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use threadleak::exit::ExitCode;
use threadleak::record::{Failure, Record, Status, Verdict};

/// `fixtures/tt.c`, built once per test into `dir` (`static` links it statically).
fn tt(dir: &Path, static_link: bool) -> PathBuf {
    let exe = dir.join(if static_link { "tt-static" } else { "tt" });
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tt.c");
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args(["-O2", "-pthread"]).arg(&source).arg("-o").arg(&exe);
    if static_link {
        cc.arg("-static");
    }
    let out = cc.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Each test's program has the machine to itself: measuring a program is measuring what runs beside it too.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds the probe library into the profile folder of the binary under test, once.
fn ensure_probe() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = common::bin();
        let profile = bin.parent().and_then(Path::file_name).and_then(|p| p.to_str()).unwrap_or("debug").to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "threadleak-probe"]);
        if profile != "debug" {
            build.args(["--profile", if profile == "release" { "release" } else { &profile }]);
        }
        let out = build.current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
        assert!(out.status.success(), "building the probe: {}", String::from_utf8_lossy(&out.stderr));
        assert!(threadleak::exec::probe_beside(&bin).is_ok(), "the probe is not beside {}", bin.display());
    });
}

/// `threadleak exec [flags] --format json --out FILE -- program...`: the exit code and the record.
fn exec(flags: &[&str], program: &[&str]) -> (i32, Record, Output) {
    ensure_probe();
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exec.json");
    let out = Command::new(common::bin())
        .arg("exec")
        .args(flags)
        .args(["--format", "json", "--out"])
        .arg(&path)
        .arg("--")
        .args(program)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no record ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), Record::from_json(&text).unwrap(), out)
}

/// The real interpreter behind any shim, so that the process measured is CPython itself.
fn python() -> String {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_leaked_self_handle_is_one_descriptor_per_thread() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), false);
    let (code, record, _) = exec(&[], &[tt.to_str().unwrap(), "leak", "3000"]);
    assert_eq!(code, ExitCode::OK);
    let cell = &record.cells[0];
    assert_eq!(cell.cell, "exec");
    assert_eq!(cell.command.as_deref().unwrap()[1..], ["leak", "3000"]);
    assert_eq!(cell.verdict, Verdict::Leak);
    // A census can find the next thread already holding its handle: the estimate is robust, not exact.
    let fds = cell.per_thread.get("fds").unwrap();
    assert!((fds - 1.0).abs() < 0.01, "{fds}");
    assert_eq!(cell.per_thread.get("maps"), Some(0.0));
    // The warm-up thread of tt counts too.
    assert_eq!(record.params.cycles, 3001);
}

#[test]
fn a_released_self_handle_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), false);
    let (code, record, _) = exec(&["--every", "500"], &[tt.to_str().unwrap(), "release", "3000"]);
    assert_eq!(code, ExitCode::OK);
    let cell = &record.cells[0];
    assert_eq!(cell.verdict, Verdict::Clean, "{:?}", cell.note);
    assert!(cell.per_thread.iter().all(|(_, v)| v == 0.0), "{:?}", cell.per_thread);
    // A census every 500 thread ends: before the creations that follow the 500th, 1000th, ... end.
    assert!(cell.checkpoints.len() >= 4, "{:?}", cell.checkpoints);
}

#[test]
fn cpython_starting_and_joining_threads_leaks_nothing() {
    let program = "import threading\nfor _ in range(10000):\n    t = threading.Thread(target=lambda: None)\n    t.start()\n    t.join()\n";
    let (code, record, _) = exec(&[], &[&python(), "-c", program]);
    assert_eq!(code, ExitCode::OK);
    let cell = &record.cells[0];
    assert_eq!(record.params.cycles, 10000);
    assert_eq!(cell.verdict, Verdict::Clean, "{:?}", cell.note);
    assert!(cell.per_thread.iter().all(|(_, v)| v == 0.0), "{:?}", cell.per_thread);
}

#[test]
fn a_program_without_threads_is_said_to_have_none() {
    let (code, record, out) = exec(&[], &["/bin/true"]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    assert_eq!(record.cells[0].status, Status::Error);
    assert!(record.cells[0].note.as_deref().unwrap().contains("the program created no threads"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the program was not measured"));
}

#[test]
fn a_failing_program_keeps_its_exit_status() {
    let program = "import sys, threading\nfor _ in range(50):\n    t = threading.Thread(target=lambda: None); t.start(); t.join()\nsys.exit(3)\n";
    let (code, record, _) = exec(&["--every", "10"], &[&python(), "-c", program]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    let cell = &record.cells[0];
    assert_eq!(cell.status, Status::Crashed);
    assert!(matches!(cell.failure, Some(Failure::Exit { code: 3, .. })), "{:?}", cell.failure);
    assert!(cell.note.as_deref().unwrap().starts_with("the program exited with code 3"));
    // What was measured before it failed is kept.
    assert_eq!(cell.per_thread.get("fds"), Some(0.0));
}

#[test]
fn a_crashing_program_is_reported_with_its_signal() {
    let program = "import os, threading\nthreading.Thread(target=lambda: None).start()\nos.kill(os.getpid(), 11)\n";
    let (code, record, _) = exec(&[], &[&python(), "-c", program]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    assert!(matches!(record.cells[0].failure, Some(Failure::Signal { signal: 11, .. })));
    assert!(record.cells[0].note.as_deref().unwrap().starts_with("the program died of SIGSEGV"));
}

#[test]
fn a_program_past_its_timeout_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 1000 & echo $! > {}; wait", pid_file.display());
    let (code, record, _) = exec(&["--timeout", "500ms"], &["/bin/sh", "-c", &script]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    assert_eq!(record.cells[0].status, Status::Timeout);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(common::process_is_dead(pid));
}

#[test]
fn a_static_program_refuses_the_probe_and_is_said_to() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), true);
    let (code, record, _) = exec(&[], &[tt.to_str().unwrap(), "leak", "100"]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    assert_eq!(record.cells[0].status, Status::Error);
    assert!(record.cells[0].note.as_deref().unwrap().contains("the probe did not load"));
}

#[test]
fn a_missing_program_is_an_error_naming_it() {
    let (code, record, _) = exec(&[], &["/nonexistent/program"]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    assert!(record.cells[0].note.as_deref().unwrap().starts_with("cannot start `/nonexistent/program`"));
}

#[test]
fn expect_clean_gives_the_bisect_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), false);
    ensure_probe();
    let _alone = alone();
    let status = |mode: &str| {
        Command::new(common::bin())
            .args(["exec", "--every", "200", "--expect", "clean", "--"])
            .arg(&tt)
            .args([mode, "2000"])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(status("release"), Some(ExitCode::MATCHES));
    assert_eq!(status("leak"), Some(ExitCode::DIFFERS));
}

/// git bisect run over a history in which a "runtime" starts leaking at the third of five commits.
#[test]
fn git_bisect_run_finds_the_commit_that_started_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), false);
    let repo = dir.path().join("runtime");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("run.sh"), format!("exec {} \"$(cat mode)\" 2000\n", tt.display())).unwrap();
    for (i, mode) in ["release", "release", "leak", "leak", "leak"].iter().enumerate() {
        std::fs::write(repo.join("mode"), mode).unwrap();
        std::fs::write(repo.join("version"), i.to_string()).unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", &format!("commit {i}: {mode}")]);
    }
    git(&["bisect", "start", "HEAD", "HEAD~4"]);
    ensure_probe();
    let _alone = alone();
    let bin = common::bin();
    let log = git(&[
        "bisect",
        "run",
        bin.to_str().unwrap(),
        "exec",
        "--every",
        "200",
        "--expect",
        "clean",
        "--",
        "sh",
        "run.sh",
    ]);
    assert!(log.contains("is the first bad commit"), "{log}");
    assert!(log.contains("commit 2: leak"), "{log}");
}

#[test]
fn a_program_that_forks_while_censuses_run_is_neither_hung_nor_mismeasured() {
    // Censuses at every thread end hold the probe's lock most of the time; the children fork under it.
    let program = "import os, threading\n\
def spin():\n    for _ in range(300):\n        t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
bg = threading.Thread(target=spin); bg.start()\n\
for _ in range(30):\n    pid = os.fork()\n    if pid == 0:\n        t = threading.Thread(target=lambda: None); t.start(); t.join()\n        os._exit(0)\n    os.waitpid(pid, 0)\n\
bg.join()\n";
    let (code, record, out) = exec(&["--every", "1", "--timeout", "60s"], &[&python(), "-c", program]);
    assert_eq!(code, ExitCode::OK, "{}", String::from_utf8_lossy(&out.stderr));
    let cell = &record.cells[0];
    // The forked children are not measured: only the parent loaded the probe at start.
    assert!(!cell.note.as_deref().unwrap().contains("processes loaded the probe"), "{:?}", cell.note);
    assert_eq!(record.params.cycles, 301);
}
