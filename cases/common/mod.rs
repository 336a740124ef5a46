//! Helpers shared by the tests in `cases/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use threadleak::backend::Backend;
use threadleak::record::{CellRecord, Record};
use threadleak::report::delta;
use threadleak::runner::RunConfig;

/// The `threadleak` binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_threadleak"))
}

/// Builds `fixtures/SOURCE` into `exe` with the C compiler (`$CC`, or `cc`), `-pthread` and `flags`.
///
/// Each source is compiled once for each compiler and flags: the build is kept in cargo's scratch folder
/// for tests (`target/tmp/fixtures`), named by a hash of the compiler, its version, the flags and the
/// source, and copied to `exe`.
pub fn build_fixture(source: &str, exe: &Path, flags: &[&str]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let stem = source.trim_end_matches(".c").to_owned();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(source);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let run =
        |command: &mut Command| command.output().unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    static VERSION: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let version = VERSION.get_or_init(|| run(Command::new(&cc).arg("--version")).stdout);
    let mut key = std::collections::hash_map::DefaultHasher::new();
    (&cc, version, flags, std::fs::read(&source).unwrap()).hash(&mut key);
    let built = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures").join(format!("{stem}-{:016x}", key.finish()));
    {
        let _one = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !built.exists() {
            std::fs::create_dir_all(built.parent().unwrap()).unwrap();
            // Written beside, then renamed: a build is whole or absent, whatever else runs these tests.
            let partial = built.with_extension(format!("{}.partial", std::process::id()));
            let out = run(Command::new(&cc).args(flags).arg("-pthread").arg(&source).arg("-o").arg(&partial));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            std::fs::rename(&partial, &built).unwrap();
        }
    }
    std::fs::copy(&built, exe).unwrap();
    exe.to_owned()
}

/// A runner configuration for one cell at a time, with the default parameters.
pub fn config(backend: Backend) -> RunConfig {
    let mut config = RunConfig::new(bin(), backend);
    config.jobs = 1;
    config.timeout = Duration::from_secs(120);
    config
}

/// What a snapshot holds for a cell: the verdict, every counter's change per thread, and what moved by
/// kind (`fds +1 (anon_inode:[pidfd])`). No timings, no absolute counter values, no addresses, nothing
/// that depends on the machine beyond the kernel's behaviour.
pub fn summary(record: &CellRecord) -> String {
    let mut out = format!("verdict: {}\n", record.verdict.as_str());
    for (name, value) in record.per_thread.iter() {
        out.push_str(&format!("{name}: {}\n", delta(value)));
    }
    let kinds = record.kinds.as_deref().unwrap_or_default();
    if !kinds.is_empty() {
        out.push_str("by kind:\n");
        for k in kinds {
            out.push_str(&format!("  {} {} ({})\n", k.counter, delta(k.per_thread), k.kind));
        }
    }
    out
}

/// Whether a process is gone, or a zombie (dead, waiting for a parent that is not the test to reap it).
pub fn process_is_dead(pid: i32) -> bool {
    let out = std::process::Command::new("ps").args(["-o", "stat=", "-p", &pid.to_string()]).output().unwrap();
    let stat = String::from_utf8_lossy(&out.stdout);
    let stat = stat.trim();
    stat.is_empty() || stat.starts_with('Z')
}

/// Programs measured at once, at most: as many as the machine has cores, and no more than two. Measuring
/// a program is measuring what runs beside it too; the censuses are made to hold under load (each waits
/// for the program's ended threads to settle), and two programs on two cores, with tests that measure no
/// program beside them, is the load they are tested under. More would make the tests' time a matter of
/// the machine's.
fn turns() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

static TURNS: (std::sync::Mutex<usize>, std::sync::Condvar) = (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A program's turn to be measured (see [`turns`]), given back when dropped.
pub struct Turn(());

impl Drop for Turn {
    fn drop(&mut self) {
        *TURNS.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        TURNS.1.notify_one();
    }
}

/// Waits for a turn to measure a program.
pub fn turn() -> Turn {
    let mut running = TURNS.0.lock().unwrap_or_else(|p| p.into_inner());
    while *running >= turns() {
        running = TURNS.1.wait(running).unwrap_or_else(|p| p.into_inner());
    }
    *running += 1;
    Turn(())
}

/// `threadleak exec [flags] --format json --out FILE -- program...`: the exit code and the record.
pub fn exec(flags: &[&str], program: &[&str]) -> (i32, Record, Output) {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exec.json");
    let out = Command::new(bin())
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

/// `threadleak exec [flags] -- program...` as a user sees it: the exit code, stderr and stdout.
pub fn exec_text(flags: &[&str], program: &[&str]) -> (i32, String, String) {
    let _turn = turn();
    let out = Command::new(bin()).arg("exec").args(flags).arg("--").args(program).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stderr), text(&out.stdout))
}

pub fn line_of(fixture: &str, needle: &str) -> u32 {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(fixture)).unwrap();
    let lines: Vec<usize> =
        source.lines().enumerate().filter(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1).collect();
    assert_eq!(lines.len(), 1, "`{needle}` must be on one line of {fixture}: {lines:?}");
    lines[0] as u32
}

/// A fixture built with debug information, as a developer hunting a leak builds it.
pub fn build_with_debug_info(dir: &Path, source: &str) -> PathBuf {
    build_fixture(source, &dir.join(source.trim_end_matches(".c")), &["-g", "-O2"])
}

pub fn frame_names(site: &threadleak::record::SiteRecord) -> Vec<String> {
    site.frames.iter().map(threadleak::sites::frame_text).collect()
}

/// Fails at once, saying why, where one of `signals` is ignored in the tests' own process (the tests run
/// under `nohup`, or as a script's background job): the runner keeps a signal it was started with ignored,
/// as a shell does, so a test that interrupts it would wait for it forever. Read from
/// `/proc/self/status` on Linux; elsewhere not checked.
pub fn assert_signals_not_ignored(signals: &[i32]) {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .and_then(|m| u64::from_str_radix(m, 16).ok())
            .unwrap();
        for &signal in signals {
            assert!(
                mask & (1 << (signal - 1)) == 0,
                "signal {signal} is ignored where the tests run (nohup, or a script's background job): the runner \
                 started from here keeps it ignored and would never be interrupted; run the tests with it at its \
                 default"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = signals;
}
