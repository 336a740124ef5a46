//! `threadleak::check`: a crate's own test asserts, in one line, that a closure leaks no kernel resource
//! per call (Mach ports on macOS; descriptors, mappings, memory, timers and threads on Linux).
//!
//! ```no_run
//! #[test]
//! fn spawning_a_scoped_thread_leaks_nothing() {
//!     threadleak::check(|| std::thread::scope(|s| { s.spawn(|| ()); })).cycles(1000).assert_clean();
//! }
//! ```
//!
//! `cargo test` runs a binary's tests as threads of one process, so other tests' threads and files would
//! move the counters. The measurement runs in a child instead: the test binary itself, re-executed
//! filtered to this one test (`TEST --exact`, which libtest and nextest binaries both take), with
//! `THREADLEAK_CHECK` naming the test and which of its checks to measure. In the child, the test runs
//! from its start up to that check, which warms the closure up, calls it `cycles` times with settled
//! censuses of the native backend evenly spaced from the first call to the last ([`child::measure`]),
//! writes its report to a file in a private folder the parent created, and ends the child. The parent
//! reads the report, estimates the change per call stretch by stretch as `threadleak exec` does
//! ([`analysis::estimate`]: a one-off step, such as a cache filling, does not decide; memory alone never
//! decides a leak), and asserts. A child that crashes,
//! hangs past the timeout (its process group is killed) or writes no report fails the test with why and
//! the tail of its stderr.
//!
//! Settling: before each census the child waits until the process has no more threads than at the
//! baseline (threads the closure started have ended and been reaped), or until no thread has ended for
//! [`QUIET`] (what still runs then is counted: a thread the closure leaves running is a leak too), at
//! most [`SETTLE_LIMIT`].

use std::cell::Cell as Slot;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::analysis;
use crate::backend::{self, Backend, CallError, SettleError, SettleFailure, Workload};
use crate::child::{self, ChildReport, Mode};
use crate::record::{CellRecord, Params, Record, Status, Tool, Verdict, SCHEMA};
use crate::runner::{self, Capture};

/// In a child: `INDEX:TEST`, the test and which of its checks (counted from 0) to measure.
const CHECK_ENV: &str = "THREADLEAK_CHECK";
/// In a child: the file its report goes to.
const REPORT_ENV: &str = "THREADLEAK_CHECK_REPORT";

/// A settle ends when no thread has ended for this long.
pub const QUIET: Duration = Duration::from_millis(100);
/// A settle gives up after this long, and the census is taken with a note.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10);

thread_local! {
    /// Checks made so far on this thread: libtest runs each test on a thread of its own, so this numbers
    /// a test's checks the same way in the parent and in the child.
    static CHECKS: Slot<u32> = const { Slot::new(0) };
}

/// Measures `f` per call in a child process; see [`Check`] for the settings and the assertions.
pub fn check<F: FnMut()>(f: F) -> Check<F> {
    Check { f, cycles: 1000, warmup: 100, censuses: 9, timeout: Duration::from_secs(300), test: None, memory: false }
}

/// A closure to measure, and how.
#[must_use = "a check measures nothing until it is asserted or its record is taken"]
pub struct Check<F> {
    f: F,
    cycles: u32,
    warmup: u32,
    censuses: u32,
    timeout: Duration,
    test: Option<String>,
    memory: bool,
}

/// Why a check could not measure at all (a child that fails is a record with its status instead).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("threadleak::check measures this machine's own kernel, and this OS has no backend (Linux or macOS)")]
    NoBackend,
    #[error(
        "threadleak::check cannot tell which test it runs in (this thread is {0:?}; libtest names a test's \
         thread after the test): call it from the test's own thread, or name the test with .test_name(\"path::to::test\")"
    )]
    NoTest(Option<String>),
    #[error("cannot start the test binary as the measuring child")]
    Start(#[source] std::io::Error),
    #[error("this process is the measuring child of another check of this test; only that one is measured here")]
    NotMeasuredHere,
}

impl<F: FnMut()> Check<F> {
    /// Calls measured (default 1000), after the warm-up.
    pub fn cycles(mut self, cycles: u32) -> Self {
        self.cycles = cycles.max(2);
        self
    }

    /// Calls before the baseline census (default 100): pools started, caches filled, libraries loaded.
    pub fn warmup(mut self, warmup: u32) -> Self {
        self.warmup = warmup;
        self
    }

    /// Censuses over the measured calls (default 9, at least 5): the first after the warm-up, the last
    /// after the last call, the others evenly between.
    pub fn censuses(mut self, censuses: u32) -> Self {
        self.censuses = censuses.max(analysis::MIN_CENSUSES as u32);
        self
    }

    /// Wall time the child may take (default 5 minutes); past it its process group is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Let memory count (default: no): `vm_kib` that grows steadily over the calls fails
    /// [`assert_clean`](Check::assert_clean). By default memory is reported with its rate and decides
    /// nothing: a heap, an arena or a runtime's caches drift while no item is left behind.
    pub fn memory(mut self, counts: bool) -> Self {
        self.memory = counts;
        self
    }

    /// The test's full name as `cargo test` lists it (`module::test`), where the check does not run on
    /// the test's own thread.
    pub fn test_name(mut self, name: impl Into<String>) -> Self {
        self.test = Some(name.into());
        self
    }

    /// Measures and returns the record (one cell, named after the test). In the measuring child this
    /// does not return: the child ends once its report is written.
    pub fn record(self) -> Result<Record, CheckError> {
        self.measure()?.ok_or(CheckError::NotMeasuredHere)
    }

    /// Panics unless the closure leaves nothing behind per call: every counter flat.
    #[track_caller]
    pub fn assert_clean(self) {
        let Some(record) = self.measure().unwrap_or_else(|e| panic!("{e}")) else { return };
        let cell = measured(&record);
        if cell.verdict != Verdict::Clean {
            panic!("threadleak: expected clean, got {}\n{}", moved(cell), crate::report::table(&record));
        }
    }

    /// Panics unless `counter` changes by `per_call` per call (within a tenth of its unit, or what the
    /// run can resolve): a test that pins a known leak.
    #[track_caller]
    pub fn assert_leaks(self, counter: &str, per_call: f64) {
        let Some(record) = self.measure().unwrap_or_else(|e| panic!("{e}")) else { return };
        let cell = measured(&record);
        let Some(got) = cell.per_thread.get(counter) else {
            let names: Vec<&str> = cell.per_thread.names().collect();
            panic!("threadleak: no counter {counter:?} on this backend (it has {names:?})");
        };
        let tolerance = (0.1 * analysis::unit(counter)).max(cell.resolution.get(counter).unwrap_or(0.0));
        if (got - per_call).abs() > tolerance {
            panic!(
                "threadleak: expected {counter} {} per call, got {} ({})\n{}",
                crate::report::delta(per_call),
                crate::report::delta(got),
                moved(cell),
                crate::report::table(&record)
            );
        }
    }

    /// The record, measured in a child; `None` in a child that measures another check of this test.
    fn measure(mut self) -> Result<Option<Record>, CheckError> {
        let backend = Backend::native().ok_or(CheckError::NoBackend)?;
        let index = CHECKS.with(|n| {
            let index = n.get();
            n.set(index + 1);
            index
        });
        let thread = std::thread::current();
        let test = match self.test.clone().or_else(|| thread.name().map(str::to_owned)) {
            Some(name) if name != "main" => name,
            other => return Err(CheckError::NoTest(other)),
        };
        let params = Params { cycles: self.cycles, warmup: self.warmup, self_calls: 0, memory: self.memory };
        match std::env::var(CHECK_ENV) {
            Ok(wanted) if wanted == format!("{index}:{test}") => self.measure_here(backend, &params),
            Ok(_) => Ok(None),
            Err(_) => self.measure_in_child(backend, &params, index, test).map(Some),
        }
    }

    /// In the child: the measurement, its report written, and the end of the process.
    fn measure_here(&mut self, backend: Backend, params: &Params) -> ! {
        let report = child::die_with_runner(params).unwrap_or_else(|| {
            let mut workload = Closure { f: &mut self.f, floor: None, notes: Vec::new() };
            child::measure(&mut workload, backend.counters(), params, Mode::Series { censuses: self.censuses })
        });
        let path = std::env::var_os(REPORT_ENV).map(PathBuf::from);
        let written = path.ok_or_else(|| std::io::Error::other(format!("{REPORT_ENV} is not set"))).and_then(|path| {
            let json = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
            std::fs::write(path, json)
        });
        if let Err(e) = written {
            eprintln!("threadleak::check: cannot write the report: {e}");
            std::process::exit(3);
        }
        std::process::exit(0);
    }

    /// In the parent: the test binary started again for this test only, supervised, and its report read.
    fn measure_in_child(
        &mut self,
        backend: Backend,
        params: &Params,
        index: u32,
        test: String,
    ) -> Result<Record, CheckError> {
        let exe = std::env::current_exe().map_err(CheckError::Start)?;
        let dir = tempfile::Builder::new().prefix("threadleak-check-").tempdir().map_err(CheckError::Start)?;
        let report_path = dir.path().join("report.json");
        let mut command = Command::new(&exe);
        command
            .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1", "--include-ignored"])
            .env(CHECK_ENV, format!("{index}:{test}"))
            .env(REPORT_ENV, &report_path)
            .stdin(Stdio::null());
        for (name, value) in backend.child_env() {
            command.env(name, value);
        }
        let outcome = runner::supervise(command, self.timeout, Duration::from_secs(2), Capture::Output, |_| {})
            .map_err(CheckError::Start)?;

        // Neither axes nor a command: a check's cell (`report` titles it so).
        let mut cell = CellRecord::unmeasured(test, None, None);
        cell.elapsed_ms = outcome.elapsed.as_millis() as u64;
        let mut notes = Vec::new();
        let timeout_ms = self.timeout.as_millis() as u64;
        if let Some((status, failure, note)) = runner::abnormal_end(&outcome, timeout_ms, "the test child", "") {
            cell.status = status;
            cell.failure = Some(failure);
            notes.push(note);
        } else {
            let report = std::fs::read(&report_path)
                .map_err(|e| format!("it wrote no report ({e}): the check was not reached in it"))
                .and_then(|bytes| {
                    serde_json::from_slice::<ChildReport>(&bytes).map_err(|e| format!("its report is not one: {e}"))
                });
            match report {
                Ok(report) => {
                    runner::conclude(
                        &mut cell,
                        &mut notes,
                        report,
                        Mode::Series { censuses: self.censuses },
                        analysis::Judging { memory: self.memory },
                    );
                }
                Err(why) => {
                    cell.status = Status::Crashed;
                    notes.push(format!("the test child ended well but {why}"));
                    cell.failure = Some(crate::record::Failure::Exit { code: 0, stderr_tail: outcome.stderr_tail });
                }
            }
        }
        if !notes.is_empty() {
            cell.note = Some(notes.join("; "));
        }
        Ok(Record {
            schema: SCHEMA,
            tool: Tool::this(),
            backend: backend.as_str().to_owned(),
            os: backend.os(),
            model: None,
            params: *params,
            cells: vec![cell],
        })
    }
}

/// The record's one cell, or a panic that says why it was not measured (with the child's stderr tail).
#[track_caller]
fn measured(record: &Record) -> &CellRecord {
    let cell = &record.cells[0];
    if cell.status != Status::Ok || cell.checkpoints.len() < 2 {
        let tail = match &cell.failure {
            Some(crate::record::Failure::Exit { stderr_tail, .. })
            | Some(crate::record::Failure::Signal { stderr_tail, .. })
            | Some(crate::record::Failure::Timeout { stderr_tail, .. }) => stderr_tail.as_str(),
            _ => "",
        };
        panic!(
            "threadleak: the check of {} was not measured ({}): {}\n--- the child's stderr, last lines ---\n{tail}",
            cell.cell,
            cell.status.as_str(),
            cell.note.as_deref().unwrap_or("no note")
        );
    }
    cell
}

/// `fds +1, maps +2`: what moved per call.
fn moved(cell: &CellRecord) -> String {
    let moved = crate::report::moved(&cell.per_thread.0);
    if moved.is_empty() {
        format!("{} with nothing moving", cell.verdict.as_str())
    } else {
        format!("{} ({})", cell.verdict.as_str(), moved.join(", "))
    }
}

/// The closure as a workload: a cycle is a call; a census is the native backend's.
struct Closure<'a> {
    f: &'a mut dyn FnMut(),
    /// The fewest threads seen at a settle: the process at rest.
    floor: Option<u64>,
    notes: Vec<String>,
}

impl Workload for Closure<'_> {
    fn cycle(&mut self) -> Result<(), CallError> {
        (self.f)();
        Ok(())
    }

    fn settle(&mut self) -> Result<(), SettleFailure> {
        let pid = std::process::id();
        let Some(mut count) = backend::thread_count(pid) else {
            if self.notes.is_empty() {
                self.notes.push("this process's threads cannot be counted: censuses were not settled".to_owned());
            }
            return Ok(());
        };
        let started = Instant::now();
        let mut unchanged_since = started;
        loop {
            if self.floor.is_some_and(|floor| count <= floor) || unchanged_since.elapsed() >= QUIET {
                break;
            }
            if started.elapsed() >= SETTLE_LIMIT {
                return Err(SettleFailure::TimedOut(SettleError {
                    waited_ms: started.elapsed().as_millis() as u64,
                    detail: format!("threads {count}, at rest {}", self.floor.unwrap_or(0)),
                }));
            }
            std::thread::sleep(Duration::from_millis(1));
            match backend::thread_count(pid) {
                Some(now) if now != count => {
                    count = now;
                    unchanged_since = Instant::now();
                }
                _ => {}
            }
        }
        self.floor = Some(self.floor.map_or(count, |floor| floor.min(count)));
        Ok(())
    }

    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError> {
        backend::native_census(out)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn inventory(&mut self) -> Result<backend::Inventory, CallError> {
        backend::native_inventory()
    }
}
