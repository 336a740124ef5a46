//! The probe is a guest (`fixtures/guest.c`): what a program can observe of it is its environment's
//! variables, its process group and its mappings, and nothing else; what the program does to its
//! descriptors, its signals, its stacks cannot stall it, crash it, or turn the report clean; and what it
//! could not see is said. Each case runs the program plainly and under `threadleak exec`.

#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{exec, exec_text};
use threadleak::exit::ExitCode;
use threadleak::record::Verdict;

fn guest(dir: &Path) -> PathBuf {
    common::build_fixture("guest.c", &dir.join("guest"), &["-O2", "-g", "-ldl"])
}

/// The program run plainly, as a user runs it (nothing on stdin): its exit code and stdout.
fn plain(program: &[&str]) -> (i32, String) {
    let out = Command::new(program[0]).args(&program[1..]).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The program under `threadleak exec`: its exit code (threadleak's) and what the program printed (the
/// table follows it).
fn under_exec(flags: &[&str], program: &[&str]) -> (i32, String) {
    let (code, _, stdout) = exec_text(flags, program);
    (code, stdout)
}

#[test]
fn a_program_sees_its_environment_its_group_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let program = [guest.to_str().unwrap(), "observe"];
    let (_, alone) = plain(&program);
    let (code, measured) = under_exec(&[], &program);
    assert_eq!(code, ExitCode::OK);
    // What exec says it changes: the variables that load the probe and name its files, and a process
    // group of the program's own. Standard output stays what it was (a pipe to this test, either way).
    let documented = |line: &&str| {
        *line == "own process group: 0"
            || *line == "own process group: 1"
            || line.starts_with("env: LD_PRELOAD")
            || line.starts_with("env: THREADLEAK_")
    };
    // The C library's own two signals (32 and 33) left out of the ignored ones, as below.
    let own_signals = |line: &str| match line.strip_prefix("SigIgn:\t") {
        Some(mask) => format!("SigIgn: {:x}", u64::from_str_radix(mask, 16).unwrap_or(0) & !(0b11 << 31)),
        None => line.to_owned(),
    };
    let facts = |text: &str| -> Vec<String> {
        text.lines().take_while(|l| *l != "ok").filter(|l| !documented(l)).map(own_signals).collect()
    };
    assert_eq!(facts(&measured), facts(&alone), "under exec:\n{measured}\nalone:\n{alone}");
    assert!(measured.contains("own process group: 1") && measured.contains("env: LD_PRELOAD"), "{measured}");
}

#[test]
fn the_probe_holds_no_descriptor_of_the_programs() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    // The descriptors open at start are the program's own.
    let (_, alone) = plain(&[guest.to_str().unwrap(), "fds"]);
    let (_, measured) = under_exec(&[], &[guest.to_str().unwrap(), "fds"]);
    assert_eq!(measured.lines().next(), alone.lines().next());
    // With RLIMIT_NOFILE at 4, both of its opens work; the censuses it had no descriptor free for are
    // said to be missing.
    let (code, record, _) = exec(&[], &[guest.to_str().unwrap(), "nofile"]);
    let note = record.cells[0].note.clone().unwrap_or_default();
    assert_eq!(code, ExitCode::OK, "{note}");
    assert!(note.contains("exited with code 0") && note.contains("censuses could not be taken"), "{note}");
    // A program that dup2s its log onto fd 3 finds in it only its own lines.
    let log = dir.path().join("guest.log");
    let (_, measured) = under_exec(&[], &[guest.to_str().unwrap(), "log", "25", log.to_str().unwrap()]);
    assert!(measured.starts_with("log lines: 25\n"), "{measured}");
}

#[test]
fn closing_every_descriptor_above_2_hides_no_leak() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let (code, record, _) = exec(&["--expect", "clean"], &[guest.to_str().unwrap(), "closefrom", "100", "3000"]);
    let cell = &record.cells[0];
    assert_eq!((code, cell.verdict), (ExitCode::DIFFERS, Verdict::Leak), "{:?}", cell.note);
    assert_eq!(cell.per_thread.get("fds"), Some(1.0));
}

#[test]
fn signals_ignored_by_the_caller_stay_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    // The C library's own two signals (32 and 33, below SIGRTMIN) left out: what glibc does with them
    // when a program starts another is its business (docs/exec.md: a guest's manners).
    let sigign = |line: &str| {
        let mask = line.lines().find_map(|l| l.strip_prefix("SigIgn:\t"))?;
        Some(u64::from_str_radix(mask, 16).ok()? & !(0b11 << 31))
    };
    // As `nohup` and a shell's background job leave them: SIGHUP and SIGINT ignored.
    let ignoring = |inner: String| {
        let out = Command::new("sh")
            .args(["-c", &format!("trap '' HUP INT; exec {inner}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let alone = ignoring(format!("'{}' sigign", guest.display()));
    let measured = ignoring(format!("'{}' exec -- '{}' sigign", common::bin().display(), guest.display()));
    // The two the shell set (others may be ignored already where the tests run, as Python leaves SIGXFSZ).
    assert_eq!(sigign(&alone).map(|mask| mask & 0b11), Some(0b11), "{alone}");
    assert_eq!(sigign(&measured), sigign(&alone), "{measured}");
}

#[test]
fn a_signal_handler_that_opens_files_while_threads_do_never_deadlocks() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let started = Instant::now();
    let (code, record, _) = exec(&["--timeout", "60s"], &[guest.to_str().unwrap(), "alarm", "50"]);
    let note = record.cells[0].note.clone().unwrap_or_default();
    assert_eq!(code, ExitCode::OK, "{note}");
    assert!(note.contains("exited with code 0"), "{note}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn small_stacks_run_as_they_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    // An alternate signal stack of SIGSTKSZ's traditional 8 KiB, and a coroutine's of 4 KiB, each opening a
    // file: the probe does not walk them, and takes little of them.
    for args in [["altstack", "8192", "20"], ["coroutine", "4096", "20"]] {
        let program: Vec<&str> = std::iter::once(guest.to_str().unwrap()).chain(args).collect();
        assert_eq!(plain(&program), (0, "ok\n".to_owned()), "{args:?} alone");
        let (code, record, _) = exec(&[], &program);
        let note = record.cells[0].note.clone().unwrap_or_default();
        assert_eq!(code, ExitCode::OK, "{args:?}: {note}");
        assert!(note.contains("exited with code 0"), "{args:?}: {note}");
    }
}

/// `own stack: A bytes (first call), B (again); alternate stack: C (with the signal frame)`.
fn stack_use(text: &str) -> (u64, u64) {
    let numbers: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 3, "{text}");
    (numbers[1], numbers[2])
}

/// The stack the probe takes in a call it records (docs/exec.md: a guest's manners): what an `open` and
/// a `close` reach into a painted stack under exec, less what they reach alone, on a thread's own stack
/// (walked, with the rules of its frames already read) and on an alternate signal stack (not walked).
#[test]
fn the_probe_takes_at_most_its_stated_stack() {
    const BUDGET: u64 = 1024;
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let (_, alone) = plain(&[guest.to_str().unwrap(), "stackuse"]);
    let (_, measured) = under_exec(&[], &[guest.to_str().unwrap(), "stackuse"]);
    let ((own_alone, alt_alone), (own, alt)) = (stack_use(&alone), stack_use(&measured));
    assert!(own.saturating_sub(own_alone) <= BUDGET, "own stack: {own} under exec, {own_alone} alone");
    assert!(alt.saturating_sub(alt_alone) <= BUDGET, "alternate stack: {alt} under exec, {alt_alone} alone");
}

#[test]
fn descriptors_made_where_the_probe_does_not_see_are_counted_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let (_, record, _) = exec(&[], &[guest.to_str().unwrap(), "hidden", "2000"]);
    let cell = &record.cells[0];
    let note = cell.note.clone().unwrap_or_default();
    assert_eq!((cell.verdict, cell.per_thread.get("fds")), (Verdict::Leak, Some(1.0)), "{note}");
    assert!(
        note.contains("the calls the probe saw make descriptors explain 0: the rest was made where it does not see")
    );
}

#[test]
fn a_program_started_without_the_probe_is_named_and_the_run_is_never_clean() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let (code, record, _) = exec(&["--expect", "clean"], &[guest.to_str().unwrap(), "strip", "2000"]);
    let cell = &record.cells[0];
    let note = cell.note.clone().unwrap_or_default();
    assert_eq!((code, cell.verdict), (ExitCode::CANNOT_TELL, Verdict::Inconclusive), "{note}");
    assert!(
        note.contains("1 program the program started ran without the probe and was not measured")
            && note.contains("its environment lost LD_PRELOAD"),
        "{note}"
    );
}

#[test]
fn a_failed_exec_leaves_its_errno_and_is_not_a_program_unmeasured() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    let program = [guest.to_str().unwrap(), "execfail"];
    let (_, alone) = plain(&program);
    let (code, record, _) = exec(&[], &program);
    let (_, measured) = under_exec(&[], &program);
    assert!(alone.contains("execv missing: No such file or directory\nexecv folder: Permission denied"), "{alone}");
    assert_eq!(measured.lines().take(5).collect::<Vec<_>>(), alone.lines().collect::<Vec<_>>());
    let cell = &record.cells[0];
    assert_eq!((code, cell.verdict), (ExitCode::OK, Verdict::Clean), "{:?}", cell.note);
}

#[test]
fn a_leak_at_thousands_of_sites_stays_within_the_channel_and_is_never_clean() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest(dir.path());
    // 4,096 sites live from the start, and a leak in the last three tenths of 10,000 threads, a census
    // every 20 threads: the tallies that change are written, and the channel holds them all.
    let (_, record, _) = exec(&["--every", "20"], &[guest.to_str().unwrap(), "sites", "10000"]);
    let cell = &record.cells[0];
    let note = cell.note.clone().unwrap_or_default();
    assert!(note.contains("exited with code 0") && !note.contains("channel"), "{note}");
    assert_ne!(cell.verdict, Verdict::Clean, "{note}");
    assert!(cell.checkpoints.len() >= 490, "{}", cell.checkpoints.len());
}

#[test]
fn standard_error_that_is_a_file_stays_that_file_and_its_tail_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr.txt");
    let status = Command::new(common::bin())
        .args(["exec", "--format", "json", "--out"])
        .arg(dir.path().join("r.json"))
        .args(["--", "sh", "-c", "readlink /proc/self/fd/2 >&2; echo the last words >&2; exit 3"])
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(ExitCode::INCOMPLETE));
    let written = std::fs::read_to_string(&err).unwrap();
    assert!(written.starts_with(&format!("{}\nthe last words\n", err.display())), "{written}");
    let record = threadleak::record::Record::from_json(&std::fs::read_to_string(dir.path().join("r.json")).unwrap());
    let failure = format!("{:?}", record.unwrap().cells[0].failure);
    assert!(failure.contains("the last words"), "{failure}");
}

/// CPython's own tests of what the issue found the probe changed (a descriptor passed on to a child, a
/// child run as another user), plainly and under exec, where Debian's test suite is installed.
#[test]
fn cpythons_own_tests_pass_alike_with_and_without_exec() {
    let suite = Path::new("/usr/lib/python3.11/test/test_subprocess.py");
    if !suite.is_file() {
        eprintln!("skipped: Debian's libpython3.11-testsuite is not installed ({} is missing)", suite.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outcomes = |under_exec: bool| -> String {
        let xml = dir.path().join(if under_exec { "exec.xml" } else { "alone.xml" });
        let python = ["/usr/bin/python3", "-m", "test", "--junit-xml", xml.to_str().unwrap(), "test_subprocess"];
        let tests =
            ["-m", "test_pass_fds_redirected", "-m", "test_pass_fds", "-m", "test_user", "-m", "test_close_fds"];
        let mut command = if under_exec {
            let mut c = Command::new(common::bin());
            c.args(["exec", "--"]);
            c.args(python);
            c
        } else {
            let mut c = Command::new(python[0]);
            c.args(&python[1..]);
            c
        };
        command.args(tests).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
        let text = std::fs::read_to_string(&xml).unwrap_or_default();
        // Each test case's name and whether it held a failure or an error: `name=ok` a line.
        text.split("<testcase ")
            .skip(1)
            .map(|case| {
                let name = case.split('"').nth(1).unwrap_or("?");
                let bad =
                    case.split("</testcase>").next().is_some_and(|c| c.contains("<failure") || c.contains("<error"));
                format!("{name}={}", if bad { "failed" } else { "ok" })
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let alone = outcomes(false);
    assert!(alone.contains("test_pass_fds_redirected=ok"), "{alone}");
    assert_eq!(outcomes(true), alone);
}
