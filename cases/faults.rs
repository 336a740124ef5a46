//! Children that misbehave: hang, ignore SIGTERM, crash, exit non-zero, print garbage, run out of a
//! resource. Each becomes that cell's status with a clear note; no process outlives the run.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use threadleak::backend::Backend;
use threadleak::matrix::Cell;
use threadleak::record::{CellRecord, Failure, Status, Verdict};
use threadleak::runner::{run, run_cell, RunConfig};

fn cell() -> Cell {
    "thread=detached,self=none,exc=none,fix=off".parse().unwrap()
}

/// A stand-in child: a shell script the runner starts instead of the real binary.
fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("child.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config_for(exe: PathBuf, timeout_ms: u64) -> RunConfig {
    let mut config = RunConfig::new(exe, Backend::Linux);
    config.timeout = Duration::from_millis(timeout_ms);
    config.term_grace = Duration::from_millis(300);
    config
}

/// Runs the cell with a stand-in child made of `body(dir)`; returns the record and the script's folder.
fn run_script(body: impl FnOnce(&Path) -> String, timeout_ms: u64) -> (CellRecord, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(dir.path(), &body(dir.path()));
    (run_cell(&config_for(exe, timeout_ms), cell()), dir)
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[test]
fn a_hung_child_is_killed_with_its_group_and_reported() {
    let body = |dir: &Path| {
        let dir = dir.display();
        format!("echo $$ > {dir}/child.pid\nsleep 1000 &\necho $! > {dir}/grandchild.pid\necho waiting >&2\nwait")
    };
    let (record, dir) = run_script(body, 1000);
    assert_eq!(record.status, Status::Timeout);
    assert_eq!(record.verdict, Verdict::Inconclusive);
    match &record.failure {
        Some(Failure::Timeout { after_ms: 1000, escalated_to_sigkill: false, stderr_tail }) => {
            assert_eq!(stderr_tail, "waiting")
        }
        other => panic!("unexpected failure {other:?}"),
    }
    assert_eq!(record.note.as_deref(), Some("killed after 1000 ms"));
    assert!(common::process_is_dead(read_pid(&dir.path().join("child.pid"))));
    assert!(common::process_is_dead(read_pid(&dir.path().join("grandchild.pid"))));
}

#[test]
fn a_child_that_ignores_sigterm_gets_sigkill() {
    // An ignored signal stays ignored across fork and exec, so the grandchild ignores SIGTERM too.
    let body =
        |dir: &Path| format!("trap '' TERM\nsleep 1000 &\necho $! > {}/grandchild.pid\nwait\nwait", dir.display());
    let (record, dir) = run_script(body, 1000);
    assert_eq!(record.status, Status::Timeout);
    assert!(
        matches!(record.failure, Some(Failure::Timeout { escalated_to_sigkill: true, .. })),
        "{:?}",
        record.failure
    );
    assert_eq!(record.note.as_deref(), Some("killed after 1000 ms (ignored SIGTERM; SIGKILL sent)"));
    assert!(common::process_is_dead(read_pid(&dir.path().join("grandchild.pid"))));
}

#[test]
fn a_crashing_child_is_reported_with_its_signal_and_stderr() {
    let (record, _dir) = run_script(|_| "echo 'about to fault' >&2\nkill -SEGV $$".to_owned(), 10_000);
    assert_eq!(record.status, Status::Crashed);
    assert_eq!(
        record.failure,
        Some(Failure::Signal { signal: 11, signal_name: "SIGSEGV".into(), stderr_tail: "about to fault".into() })
    );
    assert_eq!(record.note.as_deref(), Some("child died of SIGSEGV"));
}

#[test]
fn a_child_exiting_non_zero_is_reported() {
    let (record, _dir) = run_script(|_| "echo 'cannot go on' >&2\nexit 3".to_owned(), 10_000);
    assert_eq!(record.status, Status::Crashed);
    assert_eq!(record.failure, Some(Failure::Exit { code: 3, stderr_tail: "cannot go on".into() }));
}

#[test]
fn a_child_printing_garbage_is_reported() {
    let (record, _dir) = run_script(|_| "echo 'hello, not a record'".to_owned(), 10_000);
    assert_eq!(record.status, Status::Crashed);
    match &record.failure {
        Some(Failure::Garbage { detail, stdout_head, .. }) => {
            assert!(detail.starts_with("not a child report"), "{detail}");
            assert_eq!(stdout_head, "hello, not a record\n");
        }
        other => panic!("unexpected failure {other:?}"),
    }
}

#[test]
fn a_settle_timeout_reported_by_the_child_makes_the_cell_inconclusive() {
    let line = r#"{"checkpoints":[],"cycles_per_sec":null,"notes":[],"failure":{"kind":"settle","waited_ms":5000,"detail":"/proc/self/task has 2 entries, baseline 1"}}"#;
    let (record, _dir) = run_script(|_| format!("echo '{line}'"), 10_000);
    assert_eq!(record.status, Status::Ok);
    assert_eq!(record.verdict, Verdict::Inconclusive);
    assert_eq!(
        record.note.as_deref(),
        Some("settle did not finish in 5000 ms: /proc/self/task has 2 entries, baseline 1")
    );
}

#[test]
fn one_bad_cell_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // Crashes for joined threads only; prints a well-formed report otherwise.
    let good = r#"{"checkpoints":[{"cycle":0,"counters":{"fds":3}},{"cycle":2,"counters":{"fds":3}}],"cycles_per_sec":null,"notes":[],"failure":null}"#;
    let body = format!("case \"$*\" in *thread=joined*) kill -ABRT $$;; esac\necho '{good}'");
    let cells = threadleak::matrix::select(&["exc=none,self=none,fix=off".parse().unwrap()]);
    let record = run(&config_for(script(dir.path(), &body), 10_000), &cells, |_| {});
    let outcomes: Vec<(String, Status)> = record.cells.iter().map(|c| (c.cell.clone(), c.status)).collect();
    assert_eq!(
        outcomes,
        [
            ("thread=detached,self=none,exc=none,fix=off".to_owned(), Status::Ok),
            ("thread=joined,self=none,exc=none,fix=off".to_owned(), Status::Crashed),
            ("thread=unjoined,self=none,exc=none,fix=off".to_owned(), Status::Ok),
        ]
    );
    assert_eq!(record.cells[0].verdict, Verdict::Clean);
}

#[test]
fn a_missing_executable_is_an_error_naming_it() {
    let record = run_cell(&config_for(PathBuf::from("/nonexistent/threadleak"), 1000), cell());
    assert_eq!(record.status, Status::Error);
    assert!(record.note.as_deref().unwrap().starts_with("failed to start the child `/nonexistent/threadleak`"));
    assert!(matches!(&record.failure, Some(Failure::Call { errno_name, .. }) if errno_name == "ENOENT"));
}

/// Limits lowered by `ulimit` in a shell that then runs the real binary on the Linux backend.
#[cfg(target_os = "linux")]
mod limits {
    use super::*;

    /// Runs the real binary under a shell that lowers a limit first; returns the exit code and the record.
    fn run_limited(limit: &str, cell: &str, cycles: u32) -> (i32, threadleak::record::Record) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("record.json");
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{limit} && exec \"$0\" run --jobs 1 --cell {cell} --cycles {cycles} --format json --out {}",
                out.display()
            ))
            .arg(common::bin())
            .status()
            .unwrap();
        let record = threadleak::record::Record::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
        (status.code().unwrap(), record)
    }

    #[test]
    fn running_out_of_descriptors_is_the_cells_error_with_errno_and_cycle() {
        let (code, record) = run_limited("ulimit -n 64", "thread=joined,self=leaked,exc=none,fix=off", 1000);
        assert_eq!(code, threadleak::exit::ExitCode::INCOMPLETE);
        let cell = &record.cells[0];
        assert_eq!(cell.status, Status::Error);
        match &cell.failure {
            Some(Failure::Call { call, errno_name, cycle, .. }) => {
                // A thread pidfd, or on kernels before 6.9 the /proc/thread-self fallback.
                assert!(call == "pidfd_open" || call == "open /proc/thread-self", "{call}");
                assert_eq!(errno_name, "EMFILE");
                assert!((0..64).contains(cycle), "cycle {cycle}");
            }
            other => panic!("unexpected failure {other:?}"),
        }
        assert!(cell.note.as_deref().unwrap().contains("pidfd_open failed with EMFILE (errno 24) at cycle"));
        // The baseline census was taken before the failure.
        assert_eq!(cell.checkpoints.len(), 1);
    }

    #[test]
    fn running_out_of_address_space_fails_pthread_create_with_eagain() {
        // Unjoined threads keep their 8 MiB stacks: a 1 GiB address-space limit runs out within ~120 threads.
        let (code, record) = run_limited("ulimit -v 1048576", "thread=unjoined,self=none,exc=none,fix=off", 1000);
        assert_eq!(code, threadleak::exit::ExitCode::INCOMPLETE);
        match &record.cells[0].failure {
            Some(Failure::Call { call, errno_name, cycle, .. }) => {
                assert_eq!(call, "pthread_create");
                assert_eq!(errno_name, "EAGAIN");
                assert!((0..1000).contains(cycle), "cycle {cycle}");
            }
            other => panic!("unexpected failure {other:?}"),
        }
    }
}

#[test]
fn an_interrupted_run_kills_its_children_and_exits_130() {
    common::assert_signals_not_ignored(&[libc::SIGINT]);
    // A cell that takes minutes on the model; the cycle count marks its child in the process list.
    let marker = "987653";
    let mut run = std::process::Command::new(common::bin())
        .args(["run", "--backend", "mach-sim", "--jobs", "2", "--self-calls", "70000", "--cycles", marker])
        .args(["--cell", "self=leaked,exc=none,fix=off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let children = || -> Vec<String> {
        let out = std::process::Command::new("ps").args(["-eo", "pid,args"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("__child") && l.contains(marker))
            .map(str::to_owned)
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while children().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!children().is_empty(), "the children never started");
    let status = std::process::Command::new("kill").args(["-INT", &run.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(threadleak::exit::ExitCode::INTERRUPTED));
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("interrupted by signal 2; children killed"), "{stderr}");
    // Killed children may take a moment to be reaped by init.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !children().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = children().into_iter().filter(|l| !l.contains("<defunct>")).collect();
    assert!(left.is_empty(), "{left:?}");
}
