//! `threadleak exec` on real programs: the thread lifecycles runtimes have (`fixtures/lifecycles.c`:
//! detached, never joined, batches, teardown, forks, `_exit`, the C library's own helper threads, raw
//! clones), each asserted five times (the verdict must be the same every run); the C reproduction; a
//! runtime nobody here wrote (CPython); process hygiene (a killed runner, an interrupt, a daemon); programs
//! the probe cannot enter; `git bisect run`; and the binary alone, copied away from its build, with the
//! probe it carries or one named with `--probe`.

#![cfg(target_os = "linux")]

use crate::common;

use common::{build_with_debug_info, exec, exec_text, frame_names, line_of, turn};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use threadleak::exit::ExitCode;
use threadleak::record::{Failure, Record, Status, Verdict};

/// A fixture C program, built once per test into `dir` (`static` links it statically).
fn build(dir: &Path, source: &str, static_link: bool) -> PathBuf {
    let stem = source.trim_end_matches(".c");
    let exe = dir.join(if static_link { format!("{stem}-static") } else { stem.to_owned() });
    common::build_fixture(source, &exe, if static_link { &["-O2", "-static"] } else { &["-O2"] })
}

fn tt(dir: &Path, static_link: bool) -> PathBuf {
    build(dir, "tt.c", static_link)
}

fn lifecycles(dir: &Path) -> PathBuf {
    build(dir, "lifecycles.c", false)
}

/// Runs the program five times and asserts the same verdict every time; returns the records.
fn five_times(program: &[&str], verdict: Verdict) -> Vec<Record> {
    (0..5)
        .map(|run| {
            let (_, record, out) = exec(&[], program);
            let cell = &record.cells[0];
            let censuses: Vec<String> = cell
                .processes
                .iter()
                .flat_map(|p| {
                    p.checkpoints
                        .iter()
                        .map(move |c| format!("pid {} {} {:?} {:?}", p.pid, c.cycle, c.live, c.counters.0))
                })
                .collect();
            assert_eq!(
                cell.verdict,
                verdict,
                "run {run} of {program:?}: {:?}\ncensuses:\n{}\nstderr: {}",
                cell.note,
                censuses.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            );
            record
        })
        .collect()
}

fn per_thread(record: &Record, counter: &str) -> f64 {
    record.cells[0].per_thread.get(counter).unwrap_or_else(|| panic!("no {counter} in {:?}", record.cells[0]))
}

/// The real interpreter behind any shim, so that the process measured is CPython itself.
fn python() -> String {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn detached_threads_never_waited_for_are_clean_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    for record in five_times(&[lc.to_str().unwrap(), "detached", "3000"], Verdict::Clean) {
        assert!(record.cells[0].per_thread.iter().all(|(_, v)| v == 0.0), "{:?}", record.cells[0].per_thread);
    }
}

#[test]
fn detached_threads_leaking_a_descriptor_each_leak_one_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    for record in five_times(&[lc.to_str().unwrap(), "detached", "3000", "leak"], Verdict::Leak) {
        // A thread still running at a census may already hold the descriptor it will leave: the rate
        // of a stretch can be off by a thread or two in a thousand.
        let fds = per_thread(&record, "fds");
        assert!((fds - 1.0).abs() < 0.01, "{fds}");
        assert_eq!(per_thread(&record, "maps"), 0.0);
    }
}

#[test]
fn joinable_threads_never_joined_leak_their_stacks_counted_as_unjoined() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    for record in five_times(&[lc.to_str().unwrap(), "unjoined", "2000"], Verdict::Leak) {
        assert_eq!(per_thread(&record, "unjoined"), 1.0);
        // Their stacks are set apart from `maps` and `vm_kib`: counted once, as `unjoined`.
        assert_eq!((per_thread(&record, "maps"), per_thread(&record, "vm_kib")), (0.0, 0.0));
    }
}

#[test]
fn threads_joined_in_batches_are_clean_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    five_times(&[lc.to_str().unwrap(), "batch", "3000"], Verdict::Clean);
    five_times(&[lc.to_str().unwrap(), "batch", "3000", "leak"], Verdict::Leak);
}

#[test]
fn what_a_program_closes_as_it_ends_is_not_an_over_release() {
    // 100 descriptors opened at start, closed in atexit; 1,500 threads joined.
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    for record in five_times(&[lc.to_str().unwrap(), "teardown", "1500"], Verdict::Clean) {
        // Sixteen censuses or more (16, 32, ..., 1024, 1280), all before the teardown.
        assert!(record.cells[0].checkpoints.len() >= 16, "{:?}", record.cells[0].checkpoints);
    }
}

#[test]
fn a_run_of_300_threads_is_judged_and_a_shorter_one_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    let (code, record, _) = exec(&[], &[lc.to_str().unwrap(), "joined", "300", "leak"]);
    assert_eq!((code, record.cells[0].verdict), (ExitCode::OK, Verdict::Leak));
    // 16, 32, ..., 128, 160, ..., 256.
    assert_eq!(record.cells[0].checkpoints.len(), 12);
    let (code, record, out) = exec(&[], &[lc.to_str().unwrap(), "joined", "70", "leak"]);
    assert_eq!((code, record.cells[0].verdict), (ExitCode::OK, Verdict::Inconclusive));
    let note = record.cells[0].note.as_deref().unwrap();
    assert!(note.contains("not judged: 4 censuses were taken before the program ended"), "{note}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the run cannot be judged (inconclusive)"), "{stderr}");
}

#[test]
fn children_forked_without_exec_are_measured_each_on_its_own() {
    // A parent joins 100 threads and forks two children that each join 3,000, leaking a descriptor each.
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    for record in five_times(&[lc.to_str().unwrap(), "fork", "3000", "leak"], Verdict::Leak) {
        let cell = &record.cells[0];
        assert_eq!(cell.processes.len(), 3, "{:#?}", cell.processes);
        let forks: Vec<_> = cell.processes.iter().filter(|p| p.origin == "fork").collect();
        assert_eq!(forks.len(), 2);
        for fork in forks {
            assert_eq!((fork.verdict, fork.created, fork.per_thread.get("fds")), (Verdict::Leak, 3000, Some(1.0)));
        }
        // The parent ended its own 100 threads before forking: six censuses, its own verdict.
        let parent = cell.processes.iter().find(|p| p.origin == "exec").unwrap();
        assert_eq!((parent.created, parent.checkpoints.len(), parent.verdict), (100, 6, Verdict::Leak));
        assert_eq!(record.params.cycles, 6100);
    }
    five_times(&[lc.to_str().unwrap(), "fork", "3000"], Verdict::Clean);
}

#[test]
fn threads_are_counted_however_the_program_ends() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    // `_exit`: no atexit handler runs.
    let (code, record, _) = exec(&[], &[lc.to_str().unwrap(), "_exit", "2000", "leak"]);
    assert_eq!((code, record.params.cycles, record.cells[0].verdict), (ExitCode::OK, 2000, Verdict::Leak));
    // Out of descriptors: the program fails at thread 1,4xx and exits 1; what was measured is kept.
    let script = format!("ulimit -n 1500; exec {} joined 5000 leak", lc.display());
    for _ in 0..5 {
        let (code, record, out) = exec(&[], &["/bin/sh", "-c", &script]);
        let cell = &record.cells[0];
        assert_eq!((code, cell.status, cell.verdict), (ExitCode::INCOMPLETE, Status::Crashed, Verdict::Leak));
        assert_eq!(per_thread(&record, "fds"), 1.0);
        let created = cell.processes[0].created;
        assert!((1400..1500).contains(&created), "{created}");
        match &cell.failure {
            Some(Failure::Exit { code: 1, stderr_tail }) => {
                assert!(stderr_tail.contains("Too many open files"), "{stderr_tail}")
            }
            other => panic!("{other:?}"),
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("what was measured before is in the record"), "{stderr}");
    }
}

#[test]
fn helper_threads_of_the_c_library_are_never_waited_for() {
    // glibc runs a SIGEV_THREAD timer's notifications on threads of its own, which no preload sees.
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    for record in five_times(&[lc.to_str().unwrap(), "timer", "3000"], Verdict::Clean) {
        let note = record.cells[0].note.as_deref().unwrap_or_default();
        assert!(!note.contains("still exiting"), "{note}");
        // The timer's helper thread is said not to have been waited for.
        assert!(note.contains("threads it did not create through pthread_create"), "{note}");
    }
}

#[test]
fn threads_made_without_pthread_create_are_said_to_be_unseen() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    let (code, record, _) = exec(&[], &[lc.to_str().unwrap(), "clone", "2000"]);
    assert_eq!((code, record.cells[0].status), (ExitCode::INCOMPLETE, Status::Error));
    let note = record.cells[0].note.as_deref().unwrap();
    assert!(note.contains("the probe saw no thread created through pthread_create in the 1 process"), "{note}");
    assert!(note.contains("raw clone"), "{note}");
}

#[test]
fn a_daemon_the_program_leaves_behind_is_killed_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    let (code, record, out) = exec(&[], &[lc.to_str().unwrap(), "setsid", "500"]);
    assert_eq!(code, ExitCode::OK);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = stdout.lines().find_map(|l| l.strip_prefix("setsid=")).unwrap().parse().unwrap();
    assert!(common::process_is_dead(pid), "the daemon {pid} outlived the run");
    assert!(record.cells[0].note.as_deref().unwrap().contains("left behind"), "{:?}", record.cells[0].note);
}

/// What is left in the folder a runner was given as its `TMPDIR` (where it makes its run folder).
fn left_in(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp).unwrap().filter_map(|e| e.ok().map(|e| e.path())).collect()
}

/// A program tree: `lc` joining threads for ever, a child in its group, and a grandchild in a session of
/// its own, run with `dir/tmp` as the runner's `TMPDIR`. Returns the runner (the caller waits for it) and
/// the pids of the tree, once all are up.
#[allow(clippy::zombie_processes)]
fn start_tree(dir: &Path, flags: &[&str]) -> (std::process::Child, Vec<i32>) {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let lc = lifecycles(dir);
    let pids = dir.join("pids");
    let script = format!(
        "sleep 1000 & echo $! >> {p}; setsid sleep 1001 & echo $! >> {p}; echo $$ >> {p}; exec {lc} joined 1000000000",
        p = pids.display(),
        lc = lc.display()
    );
    let mut runner = Command::new(common::bin())
        .arg("exec")
        .args(flags)
        .args(["--", "/bin/sh", "-c", &script])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() == 3 {
            std::thread::sleep(Duration::from_millis(300));
            return (runner, pids);
        }
        if Instant::now() >= deadline {
            let _ = runner.kill();
            let _ = runner.wait();
            panic!("the program tree did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_dead_within(pids: &[i32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| common::process_is_dead(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn the_program_tree_dies_with_a_runner_killed_by_sigkill() {
    let _turn = turn();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (mut runner, pids) = start_tree(dir.path(), &[]);
        runner.kill().unwrap();
        runner.wait().unwrap();
        assert!(all_dead_within(&pids, Duration::from_secs(10)), "{pids:?} outlived their runner");
        // The watchdog removes the run folder.
        let tmp = dir.path().join("tmp");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !left_in(&tmp).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(left_in(&tmp), Vec::<PathBuf>::new(), "a run folder survived");
    }
}

#[test]
fn an_interrupt_ends_with_130_no_output_and_nothing_left() {
    common::assert_signals_not_ignored(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    let _turn = turn();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let (runner, pids) = start_tree(dir.path(), &["--format", "json", "--out", out.to_str().unwrap()]);
        // SAFETY: signals a child process of this test.
        unsafe { libc::kill(runner.id() as i32, signal) };
        let output = runner.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(ExitCode::INTERRUPTED), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(!out.exists(), "an interrupted run wrote its output");
        assert!(all_dead_within(&pids, Duration::from_secs(10)), "{pids:?} outlived the interrupt");
        assert_eq!(left_in(&dir.path().join("tmp")), Vec::<PathBuf>::new(), "a run folder survived");
    }
}

#[test]
fn what_the_program_writes_into_the_probes_channel_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let lc = lifecycles(dir.path());
    // The channel's cursor set past its end: every line after it is dropped, and said to be.
    let full = format!(
        "printf '\\377\\377\\377\\377\\0\\0\\0\\0' | dd of=\"$THREADLEAK_PROBE_OUT\" bs=1 seek=8 conv=notrunc \
         status=none; exec {} joined 400",
        lc.display()
    );
    let (_, record, _) = exec(&[], &["/bin/sh", "-c", &full]);
    let cell = &record.cells[0];
    let note = cell.note.as_deref().unwrap();
    assert!(note.contains("the probe's channel (64 MiB) filled"), "{note}");
    assert_ne!(cell.verdict, Verdict::Clean, "{note}");
    // The counts are kept apart from the channel: the threads are still counted.
    assert_eq!(record.params.cycles, 400);
    // Its header overwritten: nothing read, and said why.
    let zeroed = format!(
        "dd if=/dev/zero of=\"$THREADLEAK_PROBE_OUT\" bs=64 count=1 conv=notrunc status=none; exec {} joined 400",
        lc.display()
    );
    let (_, record, _) = exec(&[], &["/bin/sh", "-c", &zeroed]);
    let note = record.cells[0].note.as_deref().unwrap();
    assert!(note.contains("the probe's channel was overwritten"), "{note}");
    // The file replaced by a link to /dev/zero: refused, not read for ever.
    let swap = format!(
        "ln -sf /dev/zero \"$THREADLEAK_PROBE_OUT.new\" && mv -f \"$THREADLEAK_PROBE_OUT.new\" \"$THREADLEAK_PROBE_OUT\"; exec {} joined 400",
        lc.display()
    );
    let (_, record, _) = exec(&[], &["/bin/sh", "-c", &swap]);
    let note = record.cells[0].note.as_deref().unwrap();
    assert!(note.contains("the probe's channel could not be read"), "{note}");
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
    assert_eq!(cell.per_thread.get("fds"), Some(1.0));
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
    // 16, 32, ..., 128, 160, ..., 256, 320, ..., 512, 640, ... every 128, then every 500 from 2,000. A
    // census is taken at the first creation that finds its point reached: tt's detached threads may run
    // their exit hooks a creation late, and the census waits for the one in flight to end.
    let cycles: Vec<u32> = cell.checkpoints.iter().map(|c| c.cycle).collect();
    let points = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512];
    assert!(cycles.len() >= points.len() + 4, "{cycles:?}");
    assert!(cycles.iter().zip(points).all(|(&c, p)| (p..=p + 3).contains(&c)), "{cycles:?}");
    assert!(cycles.iter().any(|c| (2500..=2503).contains(c)), "{cycles:?}");
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
    assert!(record.cells[0]
        .note
        .as_deref()
        .unwrap()
        .contains("the probe saw no thread created through pthread_create"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the program was not measured"));
}

#[test]
fn a_failing_program_keeps_its_exit_status_and_its_measurement() {
    let program = "import sys, threading\nfor _ in range(400):\n    t = threading.Thread(target=lambda: None); t.start(); t.join()\nsys.stderr.write('bye\\n')\nsys.exit(3)\n";
    let (code, record, _) = exec(&[], &[&python(), "-c", program]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    let cell = &record.cells[0];
    assert_eq!(cell.status, Status::Crashed);
    match &cell.failure {
        Some(Failure::Exit { code: 3, stderr_tail }) => assert_eq!(stderr_tail, "bye"),
        other => panic!("{other:?}"),
    }
    assert!(cell.note.as_deref().unwrap().starts_with("the program exited with code 3"));
    // What was measured before it failed is kept.
    assert_eq!((cell.verdict, cell.per_thread.get("fds")), (Verdict::Clean, Some(0.0)));
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

/// A program the probe cannot enter is not run: the record says why.
fn refused(program: &Path) -> String {
    let (code, record, _) = exec(&[], &[program.to_str().unwrap(), "leak", "100"]);
    assert_eq!(code, ExitCode::INCOMPLETE);
    let cell = &record.cells[0];
    assert_eq!((cell.status, cell.elapsed_ms), (Status::Error, 0));
    match &cell.failure {
        Some(Failure::Refused { reason }) => reason.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn programs_the_probe_cannot_enter_are_told_apart_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let reason = refused(&tt(dir.path(), true));
    assert!(reason.contains("is statically linked"), "{reason}");
    // A script whose interpreter is static.
    let script = dir.path().join("script");
    std::fs::write(&script, format!("#!{}\n", tt(dir.path(), true).display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let reason = refused(&script);
    assert!(reason.starts_with("the interpreter of the script"), "{reason}");
    // musl, where its compiler is installed.
    if Command::new("musl-gcc").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let exe = dir.path().join("tt-musl");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tt.c");
        let built = Command::new("musl-gcc").args(["-O2", "-pthread"]).arg(&source).arg("-o").arg(&exe).status();
        if built.is_ok_and(|s| s.success()) {
            let reason = refused(&exe);
            assert!(reason.contains("is linked against musl"), "{reason}");
        }
    } else {
        eprintln!("musl-gcc is not installed: the musl case is not exercised here");
    }
    // Setuid to another user: the loader's secure-execution mode ignores LD_PRELOAD.
    let setuid = dir.path().join("tt-setuid");
    std::fs::copy(tt(dir.path(), false), &setuid).unwrap();
    // SAFETY: plain calls on a path this test owns.
    let owned = unsafe {
        let path = std::ffi::CString::new(setuid.to_str().unwrap()).unwrap();
        libc::geteuid() == 0 && libc::chown(path.as_ptr(), 65534, 65534) == 0 && libc::chmod(path.as_ptr(), 0o4755) == 0
    };
    if owned {
        let reason = refused(&setuid);
        assert!(reason.contains("is setuid"), "{reason}");
    } else {
        eprintln!("not root: the setuid case is not exercised here");
    }
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
    let _turn = turn();
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
    let _turn = turn();
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
    // Each forked child is a process of its own, with its one thread; the parent's 301 are its own.
    let parent = cell.processes.iter().find(|p| p.origin == "exec").unwrap();
    assert_eq!(parent.created, 301);
    let forks: Vec<_> = cell.processes.iter().filter(|p| p.origin == "fork").collect();
    assert_eq!(forks.len(), 30);
    assert!(forks.iter().all(|p| p.created == 1 && p.parent == parent.pid), "{forks:#?}");
    assert_eq!(cell.verdict, Verdict::Clean, "{:?}", cell.note);
}

/// The binary carries its probe: copied alone into an empty folder (as `cargo install` leaves it) and run
/// from `/`, it measures, and leaves nothing behind in its temporary folder.
#[test]
fn the_binary_alone_measures_from_any_folder_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), false);
    let lone = dir.path().join("bin");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&lone).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let bin = lone.join("threadleak");
    std::fs::copy(common::bin(), &bin).unwrap();
    let record = dir.path().join("record.json");
    let _turn = turn();
    for (mode, verdict) in [("release", Verdict::Clean), ("leak", Verdict::Leak)] {
        let out = Command::new(&bin)
            .args(["exec", "--every", "200", "--format", "json", "--out"])
            .arg(&record)
            .arg("--")
            .arg(&tt)
            .args([mode, "2000"])
            .current_dir("/")
            .env("TMPDIR", &tmp)
            .env_remove("THREADLEAK_PROBE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(ExitCode::OK), "{}", String::from_utf8_lossy(&out.stderr));
        let record = Record::from_json(&std::fs::read_to_string(&record).unwrap()).unwrap();
        assert_eq!(record.cells[0].verdict, verdict, "{mode}: {:?}", record.cells[0]);
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// `--probe PATH` (or THREADLEAK_PROBE) replaces the carried probe: a path that is not there is an error
/// naming it before anything runs; a file that is not a library is preloaded, and the loader's refusal is
/// what the record says.
#[test]
fn an_explicit_probe_replaces_the_carried_one() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path(), false);
    let missing = dir.path().join("no-such-probe.so");
    let out = Command::new(common::bin())
        .arg("exec")
        .arg("--probe")
        .arg(&missing)
        .arg("--")
        .arg(&tt)
        .args(["release", "100"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(ExitCode::FAILED), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()) && stderr.contains("cannot be used"), "{stderr}");

    let not_a_library = dir.path().join("not-a-library.so");
    std::fs::write(&not_a_library, "text").unwrap();
    let _turn = turn();
    let path = dir.path().join("exec.json");
    let out = Command::new(common::bin())
        .args(["exec", "--format", "json", "--out"])
        .arg(&path)
        .arg("--")
        .arg(&tt)
        .args(["release", "100"])
        .env("THREADLEAK_PROBE", &not_a_library)
        .output()
        .unwrap();
    let record = Record::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let note = record.cells[0].note.as_deref().unwrap_or_default();
    assert_eq!(record.cells[0].status, Status::Error, "{note}");
    assert!(note.contains("the probe did not load"), "{note}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be preloaded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The line of `fixtures/NAME` that holds `needle` (1-based), read from the source, so that a test of
/// where a call was made does not break when the fixture gains a line.
#[test]
fn the_site_of_tts_leak_is_the_function_and_line_that_opened_the_pidfd() {
    let dir = tempfile::tempdir().unwrap();
    let tt = build_with_debug_info(dir.path(), "tt.c");
    let (code, record, _) = exec(&[], &[tt.to_str().unwrap(), "leak", "2000"]);
    assert_eq!(code, ExitCode::OK);
    let cell = &record.cells[0];
    assert_eq!(cell.verdict, Verdict::Leak);
    let [site] = &cell.sites[..] else { panic!("one site expected: {:#?}", cell.sites) };
    assert_eq!((site.counter.as_str(), site.per_thread), ("fds", 1.0));
    // tt takes a pidfd where the kernel has PIDFD_THREAD (6.9), and opens /proc/thread-self elsewhere.
    let (call, kind, needle) = if site.call == "syscall(pidfd_open)" {
        ("syscall(pidfd_open)", "anon_inode:[pidfd]", "syscall(SYS_pidfd_open")
    } else {
        ("open", "/proc/PID/task/TID", "open(\"/proc/thread-self\"")
    };
    assert_eq!((site.call.as_str(), site.kind.as_deref()), (call, Some(kind)), "{site:#?}");
    // The function that made it (inlined into the thread's body, which is the next frame), at its line.
    let top = &site.frames[0];
    assert_eq!(top.function.as_deref(), Some("self_take"), "{:?}", frame_names(site));
    assert!(top.file.as_deref().is_some_and(|f| f.ends_with("tt.c")), "{top:?}");
    assert_eq!(top.line, Some(line_of("tt.c", needle)));
    assert_eq!(site.frames[1].function.as_deref(), Some("worker"), "{:?}", frame_names(site));
    // Counted at the last census (1,792 threads ended): every one outlived the thread that opened it.
    assert!(site.live >= 1700 && site.outlived == site.live, "{site:#?}");
}

#[test]
fn two_leaks_from_two_functions_are_each_reported_with_their_own_rate_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let two = build_with_debug_info(dir.path(), "two_sites.c");
    let (code, record, _) = exec(&[], &[two.to_str().unwrap(), "3000"]);
    assert_eq!(code, ExitCode::OK);
    let cell = &record.cells[0];
    assert_eq!(cell.per_thread.get("fds"), Some(1.5), "{:?}", cell.note);
    /// A site as asserted: call, rate, kind, and the function and line of its first frame.
    type Summary = (String, f64, Option<String>, Option<String>, Option<u32>);
    let summary: Vec<Summary> = cell
        .sites
        .iter()
        .map(|s| (s.call.clone(), s.per_thread, s.kind.clone(), s.frames[0].function.clone(), s.frames[0].line))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "fopen".into(),
                1.0,
                Some("/dev/null".into()),
                Some("keep_log".into()),
                Some(line_of("two_sites.c", "fopen(\"/dev/null\""))
            ),
            (
                "eventfd".into(),
                0.5,
                Some("anon_inode:[eventfd]".into()),
                Some("arm_wakeup".into()),
                Some(line_of("two_sites.c", "eventfd(0, EFD_CLOEXEC)"))
            ),
        ],
        "{:#?}",
        cell.sites
    );
    // Both are called from the thread's body, each from its own line.
    for (site, needle) in cell.sites.iter().zip(["    keep_log();", "        arm_wakeup();"]) {
        assert_eq!(site.frames[1].function.as_deref(), Some("worker"));
        assert_eq!(site.frames[1].line, Some(line_of("two_sites.c", needle)));
    }
    // The pipe each thread opens and closes is nobody's leak.
    assert!(cell.sites.iter().all(|s| s.call != "pipe"));

    // The table shows them under the program, the JUnit failure leads with the first.
    let (_, _, table) = exec_text(&[], &[two.to_str().unwrap(), "300"]);
    assert!(table.contains("+1 per thread ended: fd /dev/null (fopen) ← keep_log (two_sites.c:"), "{table}");
    let (_, _, junit) = exec_text(&["--format", "junit"], &[two.to_str().unwrap(), "300"]);
    assert!(
        junit.contains("message=\"made at: +1 per thread ended: fd /dev/null (fopen) ← keep_log (two_sites.c:"),
        "{junit}"
    );
}

#[test]
fn without_sites_nothing_is_recorded_and_the_verdict_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let two = build_with_debug_info(dir.path(), "two_sites.c");
    let (_, record, _) = exec(&["--no-sites"], &[two.to_str().unwrap(), "1000"]);
    let cell = &record.cells[0];
    assert_eq!((cell.verdict, cell.per_thread.get("fds")), (Verdict::Leak, Some(1.5)));
    assert!(cell.sites.is_empty(), "{:#?}", cell.sites);
}

#[test]
fn cpython_keeping_a_file_per_thread_is_reported_with_its_path_and_a_stack_through_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kept.txt");
    std::fs::write(&file, "x").unwrap();
    let program = format!(
        "import threading\nkept = []\ndef work():\n    kept.append(open({:?}))\n\
         for _ in range(3000):\n    t = threading.Thread(target=work)\n    t.start()\n    t.join()\n",
        file.to_str().unwrap()
    );
    let (code, record, _) = exec(&[], &[&python(), "-c", &program]);
    assert_eq!(code, ExitCode::OK);
    let cell = &record.cells[0];
    assert_eq!(cell.per_thread.get("fds"), Some(1.0), "{:?}", cell.note);
    let [site] = &cell.sites[..] else { panic!("one site expected: {:#?}", cell.sites) };
    assert_eq!((site.per_thread, site.kind.as_deref()), (1.0, Some(file.to_str().unwrap())));
    assert!(site.call.starts_with("open"), "{site:#?}");
    // Made by the interpreter's own code (libpython, or the executable it is linked into), in the thread's
    // body: CPython's thread entry is on the stack unless it is past the frames kept.
    let interpreter = |f: &threadleak::record::Frame| f.module.contains("python");
    assert!(interpreter(&site.frames[0]), "{:?}", frame_names(site));
    assert!(site.frames.iter().filter(|f| interpreter(f)).count() >= 8, "{:?}", frame_names(site));
}

#[test]
fn a_program_started_by_a_relative_path_is_symbolized_all_the_same() {
    // The loader names the main program as it was invoked (`./tt`): its frames must still be found.
    let dir = tempfile::tempdir().unwrap();
    build_with_debug_info(dir.path(), "tt.c");
    let _turn = turn();
    let path = dir.path().join("exec.json");
    let out = Command::new(common::bin())
        .args(["exec", "--format", "json", "--out"])
        .arg(&path)
        .args(["--", "./tt", "leak", "500"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(ExitCode::OK), "{}", String::from_utf8_lossy(&out.stderr));
    let record = Record::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let site = &record.cells[0].sites[0];
    assert!(site.frames[0].module.starts_with('/'), "{site:#?}");
    assert_eq!(site.frames[0].function.as_deref(), Some("self_take"), "{site:#?}");
}
