//! One subprocess per matrix cell: spawn, time out, kill the process group, collect the record.
//!
//! Every child runs in a process group of its own, so that a timeout (SIGTERM, then SIGKILL after a grace
//! period) reaches whatever it started, and an interrupted run can kill every group still alive
//! ([`kill_live_children`]). A child that crashes, hangs or prints garbage becomes that cell's status; the
//! other cells carry on.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::analysis;
use crate::backend::{AtCycle, Backend, CallError};
use crate::child::{ChildReport, Mode, WindowStats};
use crate::record::{CellRecord, Failure, Params, Record, Status, Tool, SCHEMA};
use crate::scenario::Case;

/// The environment variable that tells a child its runner's pid.
pub const PARENT_ENV: &str = "THREADLEAK_RUNNER_PID";

/// The hidden subcommand that makes the binary act as a child.
pub const CHILD_SUBCOMMAND: &str = "__child";

/// The most stdout a child may print; a record is a few KiB.
const STDOUT_LIMIT: usize = 1 << 20;
/// How much of a child's stderr is kept for the report.
const STDERR_TAIL: usize = 2048;
/// How long a child may take to die after SIGKILL before the runner gives up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for a child's pipes to close once it has exited.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// The stack of a job thread (it formats and parses, no deep recursion), and of a thread that watches a
/// child (it reads a pipe or waits): small, so that a tight address-space limit (`ulimit -v`) still holds
/// them.
const JOB_STACK: usize = 256 << 10;
const WATCH_STACK: usize = 64 << 10;

/// Starts a thread that watches a child, or says why it cannot (the process limit, `ulimit -u`).
fn watch(what: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new()
        .stack_size(WATCH_STACK)
        .spawn(f)
        .map(drop)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start a thread to {what}: {e}")))
}

/// How to run cells.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The executable to start for each cell: normally this binary (`std::env::current_exe`).
    pub exe: PathBuf,
    pub backend: Backend,
    pub params: Params,
    /// Children running at once.
    pub jobs: usize,
    /// Wall time a child may take before it is killed.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub term_grace: Duration,
}

impl RunConfig {
    pub fn new(exe: PathBuf, backend: Backend) -> RunConfig {
        RunConfig {
            exe,
            backend,
            params: Params::default(),
            jobs: thread::available_parallelism().map_or(1, |n| n.get()),
            timeout: Duration::from_secs(60),
            term_grace: Duration::from_secs(2),
        }
    }
}

/// Progress of a run, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub finished: &'a CellRecord,
}

/// Process groups of children alive now, and whether the run is stopping (no child may start then).
static LIVE: Mutex<(Vec<i32>, bool)> = Mutex::new((Vec::new(), false));

fn live() -> std::sync::MutexGuard<'static, (Vec<i32>, bool)> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills the process group of every child still running, and lets no new one start (for an
/// interrupted run, which then exits).
pub fn kill_live_children() {
    let mut live = live();
    live.1 = true;
    for &pgid in &live.0 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Runs `cells` (matrix cells or scenario variants) and assembles the record.
pub fn run<C: Copy + Into<Case> + Sync>(
    config: &RunConfig,
    cells: &[C],
    mut on_progress: impl FnMut(Progress<'_>),
) -> Record {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, CellRecord)>();
    let mut results: Vec<Option<CellRecord>> = vec![None; cells.len()];
    let jobs = config.jobs.clamp(1, cells.len().max(1));
    let cpus = Cpus::new(jobs);
    let work = |tx: &mpsc::Sender<(usize, CellRecord)>| loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(&cell) = cells.get(index) else { break };
        let cpu = cpus.take();
        let record = run_cell_on(config, cell.into(), Mode::Matrix, cpu).0;
        cpus.give_back(cpu);
        if tx.send((index, record)).is_err() {
            break;
        }
    };
    thread::scope(|scope| {
        // As many job threads as the process limit (`ulimit -u`) allows; with none, the cells run here.
        let mut started = 0;
        for _ in 0..jobs {
            let tx = tx.clone();
            let work = &work;
            match thread::Builder::new().stack_size(JOB_STACK).spawn_scoped(scope, move || work(&tx)) {
                Ok(_) => started += 1,
                Err(_) => break,
            }
        }
        if started == 0 {
            work(&tx);
        }
        drop(tx);
        for (done, (index, record)) in rx.iter().enumerate() {
            on_progress(Progress { done: done + 1, total: cells.len(), finished: &record });
            results[index] = Some(record);
        }
    });
    Record {
        schema: SCHEMA,
        tool: Tool::this(),
        backend: config.backend.to_string(),
        os: config.backend.os(),
        model: config.backend.model().map(|m| crate::record::Model {
            profile: m.profile.name().to_owned(),
            delay: m.delay,
            task: m.task.name().to_owned(),
        }),
        params: config.params,
        cells: results.into_iter().map(|r| r.expect("every cell reports")).collect(),
    }
}

/// The CPUs a run keeps its children on, one child to a CPU.
///
/// A child's threads never run at once: its main thread waits while the one workload thread of a cycle
/// runs ([`Workload::cycle`](crate::backend::Workload::cycle)). Kept on one CPU, each handover between
/// them is a switch on that CPU; left to the scheduler, a new thread often starts on another CPU than its
/// creator's, and then every handover is a wake-up across CPUs (an inter-processor interrupt: in a virtual
/// machine, an exit to the hypervisor) and the thread's stack is made in one CPU's caches and used in
/// another's. Where a child runs changes nothing it counts, only how fast it creates threads.
///
/// A child gets the CPU its job's thread runs on when it starts, where the scheduler placed that thread,
/// unless another child of the run holds it; then the first CPU none holds. With more jobs than CPUs the
/// scheduler places every child, as it does where a process cannot choose its CPUs (macOS).
struct Cpus {
    /// The CPUs this process may use; empty when children are not kept on one.
    allowed: Vec<usize>,
    /// Those held by a child now.
    held: Mutex<Vec<usize>>,
}

impl Cpus {
    fn new(jobs: usize) -> Cpus {
        let allowed = crate::backend::allowed_cpus();
        Cpus { allowed: if jobs <= allowed.len() { allowed } else { Vec::new() }, held: Mutex::new(Vec::new()) }
    }

    /// A CPU for the next child, held until [`Cpus::give_back`]; `None` when the child is not kept on one.
    fn take(&self) -> Option<usize> {
        if self.allowed.is_empty() {
            return None;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let free = |cpu: &usize| self.allowed.contains(cpu) && !held.contains(cpu);
        let cpu = crate::backend::current_cpu().filter(free).or_else(|| self.allowed.iter().copied().find(free))?;
        held.push(cpu);
        Some(cpu)
    }

    fn give_back(&self, cpu: Option<usize>) {
        if let Some(cpu) = cpu {
            self.held.lock().unwrap_or_else(|p| p.into_inner()).retain(|&c| c != cpu);
        }
    }
}

/// The frames a site of a cell keeps.
const SITE_DEPTH: usize = 6;

/// A child's sites with their frames resolved here, in the runner, after the child ended (one
/// symbolizer for the whole run, so that this executable's debug information is read once), without
/// the frames of the recording layer (`backend/mach/tracked.rs`).
fn resolved(mut sites: Vec<crate::record::SiteRecord>) -> Vec<crate::record::SiteRecord> {
    static SYMBOLIZER: std::sync::Mutex<Option<crate::sites::Symbolizer>> = std::sync::Mutex::new(None);
    if sites.is_empty() {
        return sites;
    }
    let mut symbolizer = SYMBOLIZER.lock().unwrap_or_else(|p| p.into_inner());
    let symbolizer = symbolizer.get_or_insert_with(Default::default);
    for site in &mut sites {
        let raw: Vec<(String, u64)> = site.frames.iter().map(|f| (f.module.clone(), f.offset)).collect();
        site.frames = crate::sites::past_recording(symbolizer.frames(&raw), "tracked.rs", SITE_DEPTH);
    }
    sites
}

/// What came back from a supervised process.
pub struct Outcome {
    /// How the process ended, when that could be learnt.
    pub status: Option<ExitStatus>,
    /// Why the status could not be learnt.
    pub lost: Option<String>,
    pub timed_out: bool,
    /// SIGTERM was not enough.
    pub escalated: bool,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: String,
    pub elapsed: Duration,
    /// A process outside the group kept the output pipes open.
    pub pipes_held: bool,
}

/// Runs one cell or scenario variant in its own child process.
pub fn run_cell(config: &RunConfig, cell: impl Into<Case>) -> CellRecord {
    run_cell_in(config, cell.into(), Mode::Matrix).0
}

/// Runs one cell in its own child process in `mode`; returns its record and, in degradation mode, the
/// latency statistics of each window.
pub fn run_cell_in(config: &RunConfig, cell: Case, mode: Mode) -> (CellRecord, Vec<WindowStats>) {
    run_cell_on(config, cell, mode, None)
}

/// [`run_cell_in`], the child kept on `cpu` if given (see [`Cpus`]).
fn run_cell_on(config: &RunConfig, cell: Case, mode: Mode, cpu: Option<usize>) -> (CellRecord, Vec<WindowStats>) {
    let mut windows = Vec::new();
    let axes = match cell {
        Case::Cell(c) => Some(c.into()),
        Case::Scenario(_) => None,
    };
    let mut record = CellRecord::unmeasured(cell.id(), axes, None);
    if let Case::Scenario(s) = cell {
        record.scenario = Some(s.into());
    }
    let outcome = match spawn_and_wait(config, cell, mode, cpu) {
        Ok(outcome) => outcome,
        Err(err) => {
            record.status = Status::Error;
            record.note = Some(format!("failed to start the child `{}`: {err}", config.exe.display()));
            let errno = err.raw_os_error().unwrap_or(0);
            record.failure = Some(CallError::errno("spawn", errno).at_cycle(-i64::from(config.params.warmup)));
            return (record, windows);
        }
    };
    record.elapsed_ms = outcome.elapsed.as_millis() as u64;
    let mut notes: Vec<String> = Vec::new();
    if outcome.pipes_held {
        notes.push("a process outside the child's group kept its output open".into());
    }

    if let Some((status, failure, note)) =
        abnormal_end(&outcome, timeout_ms(config.timeout), "child", " without a record")
    {
        record.status = status;
        record.failure = Some(failure);
        notes.push(note);
    } else {
        match parse_report(&outcome.stdout, outcome.stdout_truncated) {
            Err(detail) => {
                record.status = Status::Crashed;
                notes.push(format!("child output is not a record: {detail}"));
                let head = String::from_utf8_lossy(&outcome.stdout[..outcome.stdout.len().min(200)]).into_owned();
                record.failure = Some(Failure::Garbage { detail, stdout_head: head, stderr_tail: outcome.stderr_tail });
            }
            Ok(report) => windows = conclude(&mut record, &mut notes, report, mode, analysis::Judging::default()),
        }
    }
    if !notes.is_empty() {
        record.note = Some(notes.join("; "));
    }
    (record, windows)
}

/// Takes a child's report into its cell's record: the checkpoints, and the analysis of them or the failure
/// that stopped the child. Returns the latency statistics of degradation mode.
pub(crate) fn conclude(
    record: &mut CellRecord,
    notes: &mut Vec<String>,
    report: ChildReport,
    mode: Mode,
    judging: analysis::Judging,
) -> Vec<WindowStats> {
    notes.extend(report.notes);
    record.cycles_per_sec = report.cycles_per_sec;
    record.kinds = report.kinds;
    record.sites = resolved(report.sites);
    record.checkpoints = report.checkpoints;
    match &report.failure {
        Some(Failure::Call { call, errno_name, errno, cycle }) => {
            record.status = Status::Error;
            notes.push(format!("{call} failed with {errno_name} (errno {errno}) at cycle {cycle}"));
        }
        Some(Failure::Kern { call, kr_name, kr, cycle }) => {
            record.status = Status::Error;
            notes.push(format!("{call} failed with {kr_name} ({kr}) at cycle {cycle}"));
        }
        Some(Failure::Settle { waited_ms, detail }) => {
            notes.push(format!("settle did not finish in {waited_ms} ms: {detail}"));
        }
        Some(other) => notes.push(format!("child reported {other:?}")),
        None => {
            let checkpoints = &record.checkpoints;
            let analysed = match mode {
                // A series of censuses is estimated stretch by stretch, as exec's are.
                Mode::Series { .. } => analysis::estimate(checkpoints, judging).map(|e| {
                    notes.extend(e.notes);
                    notes.extend(crate::report::in_flight(&e.in_flight, ""));
                    record.interval = e.interval;
                    record.limits = e.limits;
                    (e.per_thread, e.slope, e.verdict)
                }),
                Mode::Matrix => analysis::analyse(checkpoints).map(|a| {
                    notes.extend(a.explain());
                    (a.per_thread, a.slope, a.verdict)
                }),
                // In degradation mode only the first and last censuses are settled.
                Mode::Degrade { .. } => {
                    let ends: Vec<_> =
                        [checkpoints.first(), checkpoints.last()].into_iter().flatten().cloned().collect();
                    analysis::analyse(&ends).map(|a| {
                        notes.extend(a.explain());
                        (a.per_thread, a.slope, a.verdict)
                    })
                }
            };
            match analysed {
                Ok((per_thread, slope, verdict)) => {
                    record.per_thread = per_thread;
                    record.slope = slope;
                    record.verdict = verdict;
                    record.resolution = analysis::resolution(&record.checkpoints);
                }
                Err(e) => {
                    record.status = Status::Crashed;
                    notes.push(format!("child checkpoints cannot be analysed: {e}"));
                }
            }
        }
    }
    record.failure = report.failure;
    report.windows
}

fn timeout_ms(timeout: Duration) -> u64 {
    timeout.as_millis() as u64
}

/// How a supervised process ended when it did not end well: timed out, died of a signal, or exited
/// non-zero. `who` names it in the note (`child`, `the program`); `after_exit` ends the exit sentence.
pub fn abnormal_end(
    outcome: &Outcome,
    timeout_ms: u64,
    who: &str,
    after_exit: &str,
) -> Option<(Status, Failure, String)> {
    let stderr_tail = outcome.stderr_tail.clone();
    if outcome.timed_out {
        let how = if outcome.escalated { " (ignored SIGTERM; SIGKILL sent)" } else { "" };
        let failure = Failure::Timeout { after_ms: timeout_ms, escalated_to_sigkill: outcome.escalated, stderr_tail };
        return Some((Status::Timeout, failure, format!("killed after {timeout_ms} ms{how}")));
    }
    if let Some(signal) = outcome.status.and_then(|s| s.signal()) {
        let name = signal_name(signal);
        let note = format!("{who} died of {name}");
        return Some((Status::Crashed, Failure::Signal { signal, signal_name: name, stderr_tail }, note));
    }
    if let (None, Some(why)) = (outcome.status, &outcome.lost) {
        let failure = Failure::Exit { code: -1, stderr_tail };
        return Some((Status::Crashed, failure, format!("{who}'s exit status was lost: {why}")));
    }
    let code = outcome.status.and_then(|s| s.code()).filter(|&c| c != 0)?;
    Some((Status::Crashed, Failure::Exit { code, stderr_tail }, format!("{who} exited with code {code}{after_exit}")))
}

fn parse_report(stdout: &[u8], truncated: bool) -> Result<ChildReport, String> {
    if truncated {
        return Err(format!("more than {STDOUT_LIMIT} bytes of output"));
    }
    let text = std::str::from_utf8(stdout).map_err(|e| format!("not UTF-8 ({e})"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err("no output".into());
    }
    if text.lines().count() > 1 {
        return Err(format!("{} lines of output where one was expected", text.lines().count()));
    }
    serde_json::from_str(text).map_err(|e| format!("not a child report ({e})"))
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

fn spawn_and_wait(config: &RunConfig, cell: Case, mode: Mode, cpu: Option<usize>) -> std::io::Result<Outcome> {
    let p = &config.params;
    let mut command = Command::new(&config.exe);
    command
        .arg(CHILD_SUBCOMMAND)
        .args(config.backend.child_args())
        .args(["--cell", &cell.id()])
        .args(["--cycles", &p.cycles.to_string(), "--warmup", &p.warmup.to_string()])
        .args(["--self-calls", &p.self_calls.to_string()]);
    if let Mode::Degrade { window } = mode {
        command.args(["--degrade-window", &window.to_string()]);
    }
    if let Some(cpu) = cpu {
        command.args(["--cpu", &cpu.to_string()]);
    }
    command.envs(config.backend.child_env().iter().copied()).stdin(Stdio::null());
    supervise(command, config.timeout, config.term_grace, Capture::Output, |_| ())
}

/// What happens to a supervised process's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// Read stdout whole (bounded) and keep the tail of stderr.
    Output,
    /// Leave stdout and stderr to the caller's, as they are (a terminal stays a terminal, a file a file,
    /// for the program to see), keeping stderr's tail: read back from a file at the end; passed on as it
    /// comes, through a pipe of this process's, where the caller's stderr is a pipe; none from a terminal.
    TeeStderr,
}

/// What the caller's stderr is, for [`Capture::TeeStderr`].
enum CallersStderr {
    /// A pipe or a socket: passed on through a pipe of this process's, which keeps the tail.
    Pipe,
    /// A regular file, this long when the program started.
    File(u64),
    /// Anything else (a terminal, `/dev/null`): given to the program as it is, with no tail.
    Other,
}

impl CallersStderr {
    fn now() -> CallersStderr {
        use std::os::unix::fs::FileTypeExt;
        match stderr_file().and_then(|f| f.metadata()) {
            Ok(m) if m.is_file() => CallersStderr::File(m.len()),
            Ok(m) if m.file_type().is_fifo() || m.file_type().is_socket() => CallersStderr::Pipe,
            _ => CallersStderr::Other,
        }
    }

    /// The last `keep` bytes written to it since `now`, from a file: opened anew for reading (the
    /// caller's descriptor is write-only, as a shell's `2>FILE` opens it), where the system reopens a
    /// descriptor's file by `/dev/fd` (Linux; elsewhere `/dev/fd` duplicates the descriptor, and there is
    /// no tail).
    fn tail(&self, keep: usize) -> String {
        let CallersStderr::File(start) = *self else { return String::new() };
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/fd/2");
        let Ok(file) =
            opened.and_then(|f| if f.metadata()?.is_file() { Ok(f) } else { Err(std::io::Error::other("")) })
        else {
            return String::new();
        };
        let end = file.metadata().map_or(start, |m| m.len());
        let from = start.max(end.saturating_sub(keep as u64));
        let mut buf = vec![0; (end.saturating_sub(from) as usize).min(keep)];
        let n = file.read_at(&mut buf, from).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).trim().to_owned()
    }
}

/// This process's stderr, as a file of its own (a duplicate: reading it with `read_at` moves no offset).
fn stderr_file() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    std::io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from)
}

/// Starts `command` in a process group of its own and waits for it: past `timeout` the group gets
/// SIGTERM, and SIGKILL `grace` later. Whatever the process started in its group is killed when it ends.
/// `spawned` learns the process's pid (its group's id) as soon as it runs.
pub fn supervise(
    mut command: Command,
    timeout: Duration,
    grace: Duration,
    capture: Capture,
    spawned: impl FnOnce(u32),
) -> std::io::Result<Outcome> {
    let callers = CallersStderr::now();
    match capture {
        Capture::Output => {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Capture::TeeStderr if matches!(callers, CallersStderr::Pipe) => {
            command.stderr(Stdio::piped());
        }
        Capture::TeeStderr => {}
    }
    command.process_group(0);

    let started = Instant::now();
    // The runner's pid, which the child checks after arranging to die with its parent (a parent that
    // died before that would go unnoticed).
    command.env(PARENT_ENV, std::process::id().to_string());
    let mut child = {
        // Registering under the lock means an interrupt either sees the group or comes before the spawn.
        let mut live = live();
        if live.1 {
            return Err(std::io::Error::other("the run is being interrupted"));
        }
        let child = command.spawn()?;
        live.0.push(child.id() as i32);
        child
    };
    let pgid = child.id() as i32;
    spawned(child.id());
    let (out_tx, out_rx) = mpsc::channel();
    let (err_tx, err_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let tee = capture == Capture::TeeStderr;
    let watching = watch("read the child's output", move || {
        let mut buf = Vec::new();
        let res = match stdout {
            Some(stdout) => stdout.take(STDOUT_LIMIT as u64 + 1).read_to_end(&mut buf).map(drop),
            None => Ok(()),
        };
        let _ = out_tx.send(res.map(|()| buf));
    })
    .and_then(|()| {
        watch("read the child's stderr", move || {
            let _ = err_tx.send(stderr.map(|e| read_tail(e, STDERR_TAIL, tee)).unwrap_or_default());
        })
    })
    // The waiter sees the child end but leaves it unreaped: until it is reaped below, its pid, and so
    // its process group id, cannot be given to another process, so the signals below reach only its group.
    .and_then(|()| {
        watch("wait for the child", move || {
            let _ = exit_tx.send(crate::sys::wait_ended_unreaped(pid));
        })
    });
    if let Err(e) = watching {
        // Unwatched, the child cannot be run: it goes, with its group, before it does anything.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = child.wait();
        live().0.retain(|&g| g != pgid);
        return Err(e);
    }

    let group = Pid::from_raw(pgid);
    let mut timed_out = false;
    let mut escalated = false;
    let mut outside = Vec::new();
    let waited = match exit_rx.recv_timeout(timeout) {
        Ok(res) => res,
        Err(_) => {
            timed_out = true;
            // Its descendants in sessions or groups of their own (a daemon that called setsid) are found
            // while the process still holds them, and go with it, below.
            outside = descendants(pid);
            let _ = killpg(group, Signal::SIGTERM);
            match exit_rx.recv_timeout(grace) {
                Ok(res) => res,
                Err(_) => {
                    escalated = true;
                    let _ = killpg(group, Signal::SIGKILL);
                    // A process stuck in the kernel can outlast even SIGKILL: give up on it rather than hang.
                    exit_rx.recv_timeout(KILL_GRACE).unwrap_or_else(|_| {
                        Err(std::io::Error::other(format!("still alive {} s after SIGKILL", KILL_GRACE.as_secs())))
                    })
                }
            }
        }
    };
    let elapsed = started.elapsed();
    // Whatever the process started in its group goes with it: no process outlives its run.
    let _ = killpg(group, Signal::SIGKILL);
    for &p in &outside {
        let _ = nix::sys::signal::kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    let reaped = waited.and_then(|()| child.wait());
    live().0.retain(|&g| g != pgid);
    let (status, lost) = match reaped {
        Ok(status) => (Some(status), None),
        // The process ran; only its status is lost. Try to reap it anyway (it may be a zombie).
        Err(e) => (child.try_wait().ok().flatten(), Some(e.to_string())),
    };

    let deadline = Instant::now() + PIPE_GRACE;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let (stdout, pipes_held_out) = match out_rx.recv_timeout(remaining()) {
        Ok(Ok(buf)) => (buf, false),
        Ok(Err(_)) => (Vec::new(), false),
        Err(_) => (Vec::new(), true),
    };
    let (mut stderr_tail, pipes_held_err) = match err_rx.recv_timeout(remaining()) {
        Ok(tail) => (tail, false),
        Err(_) => (String::new(), true),
    };
    if capture == Capture::TeeStderr && stderr_tail.is_empty() {
        stderr_tail = callers.tail(STDERR_TAIL);
    }
    let stdout_truncated = stdout.len() > STDOUT_LIMIT;
    Ok(Outcome {
        status,
        lost,
        timed_out,
        escalated,
        stdout,
        stdout_truncated,
        stderr_tail,
        elapsed,
        pipes_held: pipes_held_out || pipes_held_err,
    })
}

/// The processes descended from `pid` (its children, theirs, and so on; at most 4,096), where the OS
/// lets them be listed (Linux).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        for child in crate::backend::children_of(parent) {
            if found.len() < 4096 && !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Kills and reaps every child of this process but `keep` (on Linux, where this process is a subreaper,
/// orphaned descendants are reparented here), then their children in turn, until none is left (bounded).
/// Returns how many were killed.
pub fn kill_descendants(keep: Option<u32>) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..100 {
        let children: Vec<u32> = crate::backend::children_of(me).into_iter().filter(|&p| Some(p) != keep).collect();
        if children.is_empty() {
            break;
        }
        for pid in children {
            let target = Pid::from_raw(pid as i32);
            // A daemon that called setsid leads a group of its own: it goes with its group.
            if nix::unistd::getpgid(Some(target)).is_ok_and(|g| g == target) {
                let _ = killpg(target, Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(target, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(target, None);
            killed += 1;
        }
    }
    killed
}

/// Reads a stream to its end, keeping only its last `keep` bytes, and with `tee` passing every byte on to
/// this process's stderr (a closed stderr only stops the passing on).
fn read_tail(mut stream: impl Read, keep: usize, tee: bool) -> String {
    let mut tail: Vec<u8> = Vec::with_capacity(keep * 2);
    let mut buf = [0u8; 4096];
    let mut passing = tee;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(n) => {
                if passing {
                    use std::io::Write;
                    passing = std::io::stderr().write_all(&buf[..n]).is_ok();
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > keep * 2 {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    let start = tail.len().saturating_sub(keep);
    String::from_utf8_lossy(&tail[start..]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_end() {
        let text: Vec<u8> = (0..10_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        let tail = read_tail(&text[..], 16, false);
        // The last 16 bytes are "\n9997\n9998\n9999\n", then trimmed.
        assert_eq!(tail, "9997\n9998\n9999");
    }

    #[test]
    fn reports_are_one_json_line() {
        assert_eq!(parse_report(b"", false).unwrap_err(), "no output");
        assert_eq!(parse_report(b"{}\n{}\n", false).unwrap_err(), "2 lines of output where one was expected");
        assert!(parse_report(b"hello", false).unwrap_err().starts_with("not a child report"));
        assert!(parse_report(b"\xff\xfe", false).unwrap_err().starts_with("not UTF-8"));
        let ok = br#"{"checkpoints":[],"cycles_per_sec":null,"notes":[],"failure":null}"#;
        assert!(parse_report(ok, false).unwrap().windows.is_empty());
        assert!(parse_report(ok, false).is_ok());
        assert!(parse_report(ok, true).is_err());
    }

    #[test]
    fn signals_have_names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(250), "signal 250");
    }
}
