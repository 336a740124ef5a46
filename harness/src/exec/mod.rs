//! `threadleak exec`: any program's change of resources per thread ended, measured by the probe library
//! loaded into it (the `probe/` crate), without changing the program.
//!
//! - before the run, [`preflight`] tells apart programs the probe cannot enter (static, another C
//!   library, setuid; on macOS SIP-protected or hardened), each with its own reason;
//! - the run: the program starts in a process group of its own with the probe preloaded, dies with its
//!   runner (Linux: `PR_SET_PDEATHSIG`), and whatever it leaves behind is found and killed at the end:
//!   orphans come back to the runner (a subreaper on Linux), and a watchdog process kills every process
//!   carrying the run's mark and removes the run's files if the runner itself is killed;
//! - the probe appends censuses to a samples file and keeps each process's running counts of threads in a
//!   shared counts file ([`counts`]); [`samples`] reads both back into one series per process, each
//!   estimated on its own, and the program's verdict is the worst of theirs.

pub use threadleak_census::channel;
pub use threadleak_census::counts;
pub mod fat;
pub mod preflight;
pub mod probe;
pub mod samples;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::analysis;
use crate::backend::{self, AtCycle, Backend, CallError};
use crate::record::{CellRecord, Counters, Failure, Params, Record, Status, Tool, Verdict, EXEC_CELL, SCHEMA};
use crate::runner::{abnormal_end, kill_descendants, supervise, Capture};

/// The hidden subcommand that makes the binary act as a run's watchdog.
pub const WATCHDOG_SUBCOMMAND: &str = "__watchdog";

/// The environment variable naming the channel; its value marks every process of a run.
const SAMPLES_ENV: &str = "THREADLEAK_PROBE_OUT";

/// How to run the program.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// A census every this many thread ends, after the first few (16, 32, ... below it).
    pub every: u32,
    pub timeout: Duration,
    pub term_grace: Duration,
    /// The probe library to preload; `None`: the one this binary carries.
    pub probe: Option<PathBuf>,
    /// Record where each descriptor was made (the call stack), and report the sites of what is left.
    pub sites: bool,
    /// Memory counts: `vm_kib` that grows steadily makes a leak (by default it decides nothing).
    pub memory: bool,
}

/// Why the program could not be run at all (its own failures are in the record instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the {0} backend cannot measure a program: exec needs this machine's own (linux or macos)")]
    NotNative(&'static str),
    #[error("this threadleak was built without its probe (THREADLEAK_EMBED_PROBE=0): name one with --probe PATH or THREADLEAK_PROBE")]
    NoProbe,
    #[error("the probe library {} cannot be used", .path.display())]
    BadProbe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the files the probe writes to")]
    Files(#[source] std::io::Error),
}

/// `VAR=ours:theirs`, keeping what the caller had.
fn prepended(var: &str, ours: &OsStr) -> OsString {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        None => ours.to_owned(),
        Some(theirs) => {
            let mut v = ours.to_owned();
            v.push(":");
            v.push(theirs);
            v
        }
    }
}

/// The files a run shares with its probe, in a private folder (mode 0700) created for the run: the
/// channel ([`channel`]) and the counts ([`counts`]), each mapped by the probe. Run as root (`shared`),
/// whose programs may start others as another user, the folder can be entered by anyone but not listed
/// (0711: its name is random), and its files opened by anyone (0666): a process that dropped to another
/// user still loads the probe and writes to the run, whose lines are never trusted anyway.
struct RunFiles {
    dir: tempfile::TempDir,
    samples: PathBuf,
    counts: PathBuf,
    shared: bool,
}

impl RunFiles {
    fn create() -> std::io::Result<RunFiles> {
        let shared = nix::unistd::geteuid().is_root();
        let dir = tempfile::Builder::new().prefix("threadleak-exec-").tempdir()?;
        if shared {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        }
        let samples = dir.path().join("channel");
        let counts = dir.path().join("counts");
        let new = |path: &Path| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            if shared {
                // Past the umask: anyone the program becomes opens them.
                file.set_permissions(std::fs::Permissions::from_mode(0o666))?;
            }
            Ok::<_, std::io::Error>(file)
        };
        let mut channel = new(&samples)?;
        channel.write_all(&channel::MAGIC.to_ne_bytes())?;
        channel.set_len(channel::BYTES as u64)?;
        new(&counts)?.set_len((counts::SLOTS * counts::SLOT_BYTES) as u64)?;
        Ok(RunFiles { dir, samples, counts, shared })
    }

    /// The run's mark: the samples variable as every process of the run has it in its environment.
    fn mark(&self) -> Vec<u8> {
        [SAMPLES_ENV.as_bytes(), b"=", self.samples.as_os_str().as_bytes()].concat()
    }
}

/// Opens a regular file for reading, refusing a symbolic link, a FIFO or a device (the program could
/// have put one in the file's place).
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Reads at most `limit` bytes of a regular file (see [`open_regular`]).
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads the channel: its header, then its lines up to where the header says they end (at most the
/// file's size); `None` when it is no longer a channel.
fn read_channel(path: &Path) -> std::io::Result<Option<channel::Reading>> {
    let mut file = open_regular(path)?;
    let mut bytes = vec![0; channel::HEADER_BYTES];
    file.read_exact(&mut bytes)?;
    let Some(lines) = channel::lines_in(&bytes) else { return Ok(None) };
    file.take(lines).read_to_end(&mut bytes)?;
    Ok(channel::read(&bytes))
}

/// What the interrupt handler needs to clean up after a run in progress.
struct Active {
    dir: PathBuf,
    /// The watchdog's stdin: closing it tells the watchdog to clean up.
    watchdog: Option<(Child, ChildStdin)>,
}

static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

fn active() -> std::sync::MutexGuard<'static, Option<Active>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// For an interrupted run (the caller has killed the program's process group): kills the descendants the
/// program left, has the watchdog sweep for the rest, and removes the run's files.
pub fn clean_up_after_interrupt() {
    let Some(mut run) = active().take() else { return };
    kill_descendants(run.watchdog.as_ref().map(|(child, _)| child.id()));
    finish_watchdog(&mut run.watchdog);
    let _ = std::fs::remove_dir_all(&run.dir);
}

/// Starts the watchdog: a process of this binary, in a group of its own, that waits for its stdin to
/// close (the runner ended, however it ended) and then kills every process with the run's mark and
/// removes the run's folder.
fn start_watchdog(files: &RunFiles) -> Option<(Child, ChildStdin)> {
    let exe = std::env::current_exe().ok()?;
    let mut command = Command::new(exe);
    command
        .arg(WATCHDOG_SUBCOMMAND)
        .arg(files.dir.path())
        .arg(OsStr::from_bytes(&files.mark()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

/// Closes the watchdog's stdin and waits (boundedly) for it to finish its sweep.
fn finish_watchdog(watchdog: &mut Option<(Child, ChildStdin)>) {
    let Some((mut child, stdin)) = watchdog.take() else { return };
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The watchdog (`threadleak __watchdog DIR MARK`): waits until its stdin closes, then kills every
/// process whose environment holds `mark` and removes `dir`.
pub fn watchdog(dir: &Path, mark: &OsStr) -> i32 {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kill_marked(mark.as_bytes());
    let _ = std::fs::remove_dir_all(dir);
    0
}

/// Kills every process but this one whose environment holds `mark`, until none is left (bounded; a
/// process killed is no longer found, its environment gone with it): how many were killed. A process in
/// the middle of its exec shows no environment for a moment, so only a second look finding none ends it.
fn kill_marked(mark: &[u8]) -> usize {
    let mut killed = std::collections::BTreeSet::new();
    let mut found_none = 0;
    for _ in 0..50 {
        let marked = backend::processes_with_env(mark);
        if marked.is_empty() {
            found_none += 1;
            if found_none == 2 {
                break;
            }
        } else {
            found_none = 0;
        }
        for pid in marked {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            killed.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.len()
}

/// `1 process`, `2 processes`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Runs the program with the probe and measures it.
pub fn exec(backend: Backend, config: &ExecConfig) -> Result<Record, ExecError> {
    let preload = match backend {
        Backend::Linux => "LD_PRELOAD",
        Backend::Macos => "DYLD_INSERT_LIBRARIES",
        Backend::MachSim(_) => return Err(ExecError::NotNative(backend.as_str())),
    };
    let argv: Vec<String> = config.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut cell = CellRecord::unmeasured(EXEC_CELL.to_owned(), None, Some(argv.clone()));
    let mut notes = Vec::new();
    let record = |cell: CellRecord, created: u64| Record {
        schema: SCHEMA,
        tool: Tool::this(),
        backend: backend.as_str().to_owned(),
        os: backend.os(),
        model: None,
        params: Params {
            cycles: created.min(u64::from(u32::MAX)) as u32,
            warmup: config.every,
            self_calls: 0,
            memory: config.memory,
        },
        cells: vec![cell],
    };

    let entry = preflight::inspect(&config.command[0], &probe::cputypes(config.probe.as_deref()));
    if let Some(reason) = entry.refusal() {
        cell.status = Status::Error;
        cell.failure = Some(Failure::Refused { reason: reason.clone() });
        cell.note = Some(format!("not run: {reason}"));
        return Ok(record(cell, 0));
    }

    let files = RunFiles::create().map_err(ExecError::Files)?;
    let probe = probe::Probe::prepare(config.probe.as_deref(), files.dir.path(), files.shared)?;
    let watchdog = start_watchdog(&files);
    let keep = watchdog.as_ref().map(|(child, _)| child.id());
    *active() = Some(Active { dir: files.dir.path().to_owned(), watchdog });
    let adopted = backend::adopt_orphans();

    let mut command = Command::new(&config.command[0]);
    command
        .args(&config.command[1..])
        .env(preload, prepended(preload, probe.path().as_os_str()))
        .env(SAMPLES_ENV, &files.samples)
        .env("THREADLEAK_PROBE_COUNTS", &files.counts)
        .env("THREADLEAK_PROBE_EVERY", config.every.to_string())
        .env("THREADLEAK_PROBE_SITES", if config.sites { "1" } else { "0" })
        // The program runs in a process group of its own, which a terminal would stop (SIGTTIN) when it
        // reads: it reads nothing instead.
        .stdin(Stdio::null());
    backend::die_with_runner(&mut command, std::process::id());
    crate::sys::pass_ignored_signals(&mut command);

    let tell_watchdog = |pid: u32| {
        if let Some(Active { watchdog: Some((_, stdin)), .. }) = active().as_mut() {
            let _ = writeln!(stdin, "{pid}");
        }
    };
    let run_started = Instant::now();
    let started = match supervise(command, config.timeout, config.term_grace, Capture::TeeStderr, tell_watchdog) {
        Err(err) => {
            cell.status = Status::Error;
            notes.push(format!("cannot start `{}`: {err}", argv[0]));
            cell.failure = Some(CallError::errno("spawn", err.raw_os_error().unwrap_or(0)).at_cycle(0));
            false
        }
        Ok(outcome) => {
            cell.elapsed_ms = outcome.elapsed.as_millis() as u64;
            match abnormal_end(&outcome, config.timeout.as_millis() as u64, "the program", "") {
                Some((status, failure, note)) => {
                    cell.status = status;
                    cell.failure = Some(failure);
                    notes.push(note);
                }
                None => notes.push("the program exited with code 0".to_owned()),
            }
            true
        }
    };
    let mut left = kill_descendants(keep);
    if !adopted {
        // Without a subreaper (macOS, or a Linux that refused it) an orphan is found by the run's mark.
        left += kill_marked(&files.mark());
    }
    if left > 0 {
        notes.push(format!(
            "{} the program left behind (orphaned or in sessions of their own) killed",
            count(left, "process", "processes")
        ));
    }

    let reading = match read_channel(&files.samples) {
        Ok(Some(reading)) => reading,
        Ok(None) => {
            notes.push("the probe's channel was overwritten (it no longer starts as one): nothing was read".to_owned());
            channel::Reading::default()
        }
        Err(e) => {
            notes.push(format!("the probe's channel could not be read: {e}"));
            channel::Reading::default()
        }
    };
    let counts = read_bounded(&files.counts, (counts::SLOTS * counts::SLOT_BYTES) as u64)
        .map(|bytes| counts::read(&bytes))
        .unwrap_or_default();
    let judging = analysis::Judging { memory: config.memory };
    // What follows the program (reading, naming its frames) is held to the same timeout.
    let deadline = run_started + config.timeout;
    let created =
        if started { measure(&reading, &counts, judging, deadline, &entry, &mut cell, &mut notes) } else { 0 };

    if let Some(mut run) = active().take() {
        finish_watchdog(&mut run.watchdog);
    }
    drop(files);
    cell.note = Some(notes.join("; "));
    Ok(record(cell, created))
}

/// Reads the samples and counts into `cell`: the program's processes, the deciding one's figures and the
/// verdict, or why there are none. Returns the threads all processes created.
fn measure(
    channel: &channel::Reading,
    counts: &[counts::Counts],
    judging: analysis::Judging,
    deadline: Instant,
    entry: &preflight::Entry,
    cell: &mut CellRecord,
    notes: &mut Vec<String>,
) -> u64 {
    let mut reading = samples::read(&channel.text, counts, judging);
    let mut symbolizer = crate::sites::Symbolizer::until(Some(deadline));
    for p in &mut reading.processes {
        for site in &mut p.sites {
            let raw: Vec<(String, u64)> = site.frames.iter().map(|f| (f.module.clone(), f.offset)).collect();
            site.frames = symbolizer.frames(&raw);
        }
    }
    if let Some(why) = symbolizer.shortfall() {
        notes.push(format!("some frames keep their module and offset: {why}"));
    }
    notes.extend(reading.notes.iter().cloned());
    let fail = |cell: &mut CellRecord, notes: &mut Vec<String>, note: String| {
        if cell.status == Status::Ok {
            cell.status = Status::Error;
        }
        notes.push(note);
    };
    if reading.loaded == 0 {
        fail(cell, notes, format!("the probe did not load: {}", entry.why_no_probe()));
        return 0;
    }
    let created: u64 = reading.processes.iter().map(|p| p.created).sum();
    if reading.processes.is_empty() {
        fail(
            cell,
            notes,
            format!(
                "the probe saw no thread created through pthread_create in the {} it loaded into: the program has \
                 none, or makes them without the C library (a raw clone, as Go does without cgo), which the probe \
                 cannot count",
                count(reading.loaded, "process", "processes")
            ),
        );
        return 0;
    }
    let others = reading.loaded - reading.processes.len();
    if reading.processes.len() > 1 || others > 0 {
        notes.push(format!(
            "{} created threads, each measured on its own{}",
            count(reading.processes.len(), "process", "processes"),
            if others > 0 { format!(" ({others} more loaded the probe and created none)") } else { String::new() }
        ));
    }
    let several = reading.processes.len() > 1;
    match samples::decide(&reading.processes) {
        Some(decider) => {
            cell.per_thread = decider.per_thread.clone();
            cell.interval = decider.interval.clone();
            cell.limits = decider.limits.clone();
            cell.checkpoints = decider.checkpoints.clone();
            cell.sites = decider.sites.clone();
            cell.resolution = analysis::resolution(&decider.checkpoints);
            cell.verdict = decider.verdict;
            if let Ok(e) = analysis::estimate(&decider.checkpoints, judging) {
                cell.slope = e.slope;
            }
            if several {
                notes.push(format!(
                    "the verdict is pid {}'s, the worst of those judged (each process has a row of its own)",
                    decider.pid
                ));
            } else if let Some(note) = &decider.note {
                notes.push(note.clone());
            }
        }
        None => {
            cell.verdict = Verdict::Inconclusive;
            cell.per_thread = Counters::default();
            if several {
                notes.push(
                    "no process took enough censuses to be judged (each process has a row of its own)".to_owned(),
                );
            } else {
                let p = &reading.processes[0];
                notes.push(p.note.clone().unwrap_or_else(|| "not judged".to_owned()));
                // One process, too few censuses: its figures are still worth showing.
                cell.per_thread = p.per_thread.clone();
                cell.checkpoints = p.checkpoints.clone();
            }
        }
    }
    cell.processes = std::mem::take(&mut reading.processes);
    if !reading.unmeasured.is_empty() {
        // A program that ran without the probe may have leaked unseen: never clean.
        let named: Vec<String> = reading
            .unmeasured
            .iter()
            .take(8)
            .map(|(path, probed)| {
                let why = if *probed {
                    "it did not load the probe: a static program, or one the loader would not preload into"
                } else {
                    "its environment lost LD_PRELOAD or THREADLEAK_PROBE_OUT"
                };
                format!("{} ({why})", crate::report::shell_words(std::slice::from_ref(path)))
            })
            .collect();
        notes.push(format!(
            "{} the program started ran without the probe and {} not measured: {}{}",
            count(reading.unmeasured.len(), "program", "programs"),
            if reading.unmeasured.len() == 1 { "was" } else { "were" },
            named.join(", "),
            if reading.unmeasured.len() > 8 { ", ..." } else { "" }
        ));
        if matches!(cell.verdict, Verdict::Clean | Verdict::OverRelease) {
            cell.verdict = Verdict::Inconclusive;
        }
    }
    if channel.dropped > 0 {
        // What the program did after the channel filled was not seen: never clean.
        notes.push(format!(
            "the probe's channel ({} MiB) filled when {} threads had ended: {} lines after that were not seen, so \
             the run cannot be called clean",
            channel::BYTES >> 20,
            channel.dropped_at,
            channel.dropped
        ));
        if matches!(cell.verdict, Verdict::Clean | Verdict::OverRelease) {
            cell.verdict = Verdict::Inconclusive;
        }
    }
    created
}

// Linux only: on macOS `sleep` is a platform binary, whose environment the kernel may hide.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_mark_finds_and_kills_every_process_that_carries_it_and_no_other() {
        let mark = format!("THREADLEAK_TEST_MARK={}", std::process::id());
        let start = |with_mark: bool| {
            let mut command = Command::new("sleep");
            command.arg("30");
            if with_mark {
                let (name, value) = mark.split_once('=').unwrap();
                command.env(name, value);
            }
            command.spawn().unwrap()
        };
        let mut marked = [start(true), start(true)];
        let mut unmarked = start(false);
        // A child started with vfork lets its parent go on before its exec has laid out the new
        // environment (the kernel releases the parent as the old memory goes, then writes the new stack):
        // until then /proc shows it none. Wait (bounded) until both show the mark.
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend::processes_with_env(mark.as_bytes()).len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(kill_marked(mark.as_bytes()), 2);
        for child in &mut marked {
            let status = child.wait().unwrap();
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        }
        assert!(unmarked.try_wait().unwrap().is_none(), "a process without the mark was killed");
        unmarked.kill().unwrap();
        unmarked.wait().unwrap();
        // Once they are gone nothing carries it.
        assert_eq!(kill_marked(mark.as_bytes()), 0);
    }
}
