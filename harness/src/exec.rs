//! `threadleak exec`: any program's leak per thread created, measured by the probe library loaded into
//! it (the `probe/` crate), without changing the program.
//!
//! The probe appends samples (a census with the count of threads created and ended) to a file this module
//! names in the environment, from every process of the program that loads it. The process that created
//! the most threads is the subject; its periodic samples are the checkpoints, analysed like a matrix cell
//! whose cycles are the threads ended, with the robust estimate: a census can catch a thread of the
//! program half-way through its work, which no settling can rule out in a program the harness does not
//! control.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::analysis;
use crate::backend::{Backend, CallError};
use crate::record::{CellRecord, Checkpoint, Counters, Params, Record, Status, Tool, EXEC_CELL, SCHEMA};
use crate::runner::{abnormal_end, supervise, Capture};

/// How to run the program.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// A census every this many thread ends.
    pub every: u32,
    pub timeout: Duration,
    pub term_grace: Duration,
    /// The probe library.
    pub probe: PathBuf,
}

/// Why the program could not be run at all (its own failures are in the record instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the {0} backend cannot measure a program: exec needs this machine's own (linux or macos)")]
    NotNative(&'static str),
    #[error("the probe library {} was not found beside {}; build it with `cargo build --release -p threadleak-probe` (it is built with the workspace)", .probe.display(), .exe.display())]
    NoProbe { probe: PathBuf, exe: PathBuf },
    #[error("cannot create a folder for the probe's samples")]
    Samples(#[source] std::io::Error),
}

/// The probe library's file name on this OS.
fn probe_file_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libthreadleak_probe.dylib"
    } else {
        "libthreadleak_probe.so"
    }
}

/// The probe beside `exe` (cargo puts a workspace's libraries beside its binaries).
pub fn probe_beside(exe: &Path) -> Result<PathBuf, ExecError> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    let probe = dir.join(probe_file_name());
    if probe.is_file() {
        Ok(probe)
    } else {
        Err(ExecError::NoProbe { probe, exe: exe.to_owned() })
    }
}

/// One line of the samples file.
#[derive(Debug, Deserialize)]
struct Sample {
    pid: u32,
    kind: String,
    created: u64,
    ended: u64,
    /// False when the census gave up waiting for ended threads to be gone.
    #[serde(default = "settled_by_default")]
    settled: bool,
    counters: Counters<i64>,
}

fn settled_by_default() -> bool {
    true
}

/// `VAR=ours:theirs` (or `theirs:ours` when `ours_last`), keeping what the caller had.
fn joined(var: &str, ours: &std::ffi::OsStr, ours_last: bool) -> OsString {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        None => ours.to_owned(),
        Some(theirs) => {
            let (first, second) = if ours_last { (theirs, ours.to_owned()) } else { (ours.to_owned(), theirs) };
            let mut v = first;
            v.push(":");
            v.push(second);
            v
        }
    }
}

/// Runs the program with the probe and measures it.
pub fn exec(backend: Backend, config: &ExecConfig) -> Result<Record, ExecError> {
    let preload = match backend {
        Backend::Linux => "LD_PRELOAD",
        Backend::Macos => "DYLD_INSERT_LIBRARIES",
        Backend::MachSim(_) => return Err(ExecError::NotNative(backend.as_str())),
    };
    let dir = tempfile::tempdir().map_err(ExecError::Samples)?;
    let samples = dir.path().join("samples.jsonl");
    let mut command = Command::new(&config.command[0]);
    command
        .args(&config.command[1..])
        .env(preload, joined(preload, config.probe.as_os_str(), false))
        .env("THREADLEAK_PROBE_OUT", &samples)
        .env("THREADLEAK_PROBE_EVERY", config.every.to_string())
        // The program runs in a process group of its own, which a terminal would stop (SIGTTIN) when it
        // reads: it reads nothing instead.
        .stdin(Stdio::null());
    for &(var, value) in backend.child_env() {
        // The caller's settings first, ours after: the later setting wins.
        command.env(var, joined(var, value.as_ref(), true));
    }
    let argv: Vec<String> = config.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut cell = CellRecord::unmeasured(EXEC_CELL.to_owned(), None, Some(argv.clone()));
    let mut notes = Vec::new();
    let mut created = 0u64;
    match supervise(command, config.timeout, config.term_grace, Capture::Inherit) {
        Err(err) => {
            cell.status = Status::Error;
            notes.push(format!("cannot start `{}`: {err}", argv[0]));
            cell.failure = Some(CallError::errno("spawn", err.raw_os_error().unwrap_or(0)).at_cycle(0));
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
            let text = std::fs::read_to_string(&samples).unwrap_or_default();
            created = measure(&text, config.every, &mut cell, &mut notes);
        }
    }
    cell.note = Some(notes.join("; "));
    Ok(Record {
        schema: SCHEMA,
        tool: Tool::this(),
        backend: backend.as_str().to_owned(),
        os: backend.os(),
        model: None,
        params: Params { cycles: created.min(u64::from(u32::MAX)) as u32, warmup: config.every, self_calls: 0 },
        cells: vec![cell],
    })
}

/// Reads the samples into `cell`: checkpoints, per-thread deltas and verdict, or why there are none.
/// Returns the threads the subject process created.
fn measure(text: &str, every: u32, cell: &mut CellRecord, notes: &mut Vec<String>) -> u64 {
    let mut malformed = 0;
    let mut by_pid: Vec<(u32, Vec<Sample>)> = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<Sample>(line) {
            Ok(sample) => match by_pid.iter_mut().find(|(pid, _)| *pid == sample.pid) {
                Some((_, list)) => list.push(sample),
                None => by_pid.push((sample.pid, vec![sample])),
            },
            Err(_) => malformed += 1,
        }
    }
    if malformed > 0 {
        notes.push(format!("{malformed} malformed sample lines ignored"));
    }
    let degrade = |cell: &mut CellRecord, notes: &mut Vec<String>, note: String| {
        if cell.status == Status::Ok {
            cell.status = Status::Error;
        }
        notes.push(note);
    };
    let Some((pid, samples)) = by_pid.iter().max_by_key(|(_, s)| s.iter().map(|x| x.created).max().unwrap_or(0)) else {
        degrade(
            cell,
            notes,
            "the probe did not load: the program is static, or it (or the system) strips the preload variable \
             (on macOS, SIP-protected binaries do)"
                .to_owned(),
        );
        return 0;
    };
    let created = samples.iter().map(|s| s.created).max().unwrap_or(0);
    if by_pid.len() > 1 {
        notes.push(format!(
            "{} processes loaded the probe; measured pid {pid}, which created the most threads",
            by_pid.len()
        ));
    }
    if created == 0 {
        degrade(cell, notes, "the program created no threads: there is nothing to measure per thread".to_owned());
        return 0;
    }
    // The periodic censuses: the first comes after `every` threads have ended, with the program's
    // start-up behind it. With one only, the exit sample closes the range; with none, the load sample
    // opens it, start-up included.
    let periodic: Vec<&Sample> = samples.iter().filter(|s| s.kind == "census").collect();
    let exit = samples.iter().filter(|s| s.kind == "exit");
    let chosen: Vec<&Sample> = match periodic.len() {
        0 => {
            notes.push(format!(
                "fewer than {every} threads ended: the baseline is the probe's load, the program's start-up included"
            ));
            samples.iter().collect()
        }
        1 => periodic.into_iter().chain(exit).collect(),
        _ => periodic,
    };
    let unsettled = chosen.iter().filter(|s| !s.settled).count();
    if unsettled > 0 {
        notes.push(format!(
            "{unsettled} of {} censuses gave up waiting for ended threads to be gone: threads the probe did not \
             create are running (settled by two agreeing censuses instead)",
            chosen.len()
        ));
    }
    // Checkpoints are placed by threads ended, which the census waits on, where the threads created may
    // be a thread ahead.
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for s in chosen {
        let cycle = s.ended.min(u64::from(u32::MAX)) as u32;
        match checkpoints.last_mut() {
            Some(last) if last.cycle == cycle => last.counters = s.counters.clone(),
            _ => checkpoints.push(Checkpoint { cycle, counters: s.counters.clone() }),
        }
    }
    match analysis::analyse_robust(&checkpoints) {
        Ok(a) => {
            notes.extend(a.explain());
            cell.per_thread = a.per_thread;
            cell.slope = a.slope;
            cell.verdict = a.verdict;
        }
        Err(e) => notes.push(format!("the samples cannot be analysed: {e}")),
    }
    cell.checkpoints = checkpoints;
    created
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Verdict;

    fn cell() -> CellRecord {
        CellRecord::unmeasured(EXEC_CELL.into(), None, Some(vec!["prog".into()]))
    }

    fn line(pid: u32, kind: &str, created: u64, fds: i64) -> String {
        format!("{{\"pid\":{pid},\"kind\":\"{kind}\",\"created\":{created},\"ended\":{created},\"counters\":{{\"fds\":{fds},\"maps\":9}}}}\n")
    }

    #[test]
    fn the_subject_is_the_process_that_created_the_most_threads() {
        let mut text = line(7, "load", 0, 3) + &line(9, "load", 0, 3);
        for k in 1..=4 {
            text += &line(9, "census", k * 100, 3 + k as i64 * 100);
        }
        text += &line(7, "exit", 2, 4);
        text += "garbage\n";
        let (mut c, mut notes) = (cell(), Vec::new());
        assert_eq!(measure(&text, 100, &mut c, &mut notes), 400);
        assert_eq!(c.per_thread.get("fds"), Some(1.0));
        assert_eq!(c.verdict, Verdict::Leak);
        assert_eq!(c.checkpoints.iter().map(|cp| cp.cycle).collect::<Vec<_>>(), [100, 200, 300, 400]);
        assert_eq!(
            notes,
            [
                "1 malformed sample lines ignored",
                "2 processes loaded the probe; measured pid 9, which created the most threads"
            ]
        );
    }

    #[test]
    fn no_samples_means_the_probe_did_not_load() {
        let (mut c, mut notes) = (cell(), Vec::new());
        assert_eq!(measure("", 1000, &mut c, &mut notes), 0);
        assert_eq!(c.status, Status::Error);
        assert!(notes[0].starts_with("the probe did not load"));
    }

    #[test]
    fn no_threads_is_said() {
        let (mut c, mut notes) = (cell(), Vec::new());
        measure(&(line(5, "load", 0, 3) + &line(5, "exit", 0, 3)), 1000, &mut c, &mut notes);
        assert_eq!(c.status, Status::Error);
        assert_eq!(notes, ["the program created no threads: there is nothing to measure per thread"]);
    }
}
