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
//! A doc test (or any program) checks on its main thread, and the program is started again to measure:
//!
//! ```
//! let joined = threadleak::check(|| std::thread::spawn(|| 7).join().unwrap()).cycles(200);
//! joined.assert_clean();
//! ```
//!
//! `cargo test` runs a binary's tests as threads of one process, so other tests' threads and files would
//! move the counters. The measurement runs in a child instead: the test binary itself, re-executed
//! filtered to this one test (`TEST --exact`, which libtest and nextest binaries both take), with
//! `THREADLEAK_CHECK` naming the test and which of its checks to measure. In the child, the test runs
//! from its start up to that check (each earlier check of the test returning the record the parent got
//! for it), which warms the closure up, calls it `cycles` times with settled censuses of the native
//! backend evenly spaced from the first call to the last ([`child::measure`]), writes its report to a
//! file in a private folder the parent created, kills the processes the calls left, and ends. The parent
//! reads the report, judges the change per call by its evidence as `threadleak exec` does
//! ([`analysis::estimate`]: whole items that keep growing are a leak however rarely, growth that stops
//! is not, memory decides nothing unless [`Check::memory`]), and asserts. A child that crashes, hangs
//! past the timeout (its process group and its descendants are killed) or writes no report fails the
//! test with why and the tail of its stderr.
//!
//! Which test: libtest runs each test on a thread named after it, and the child is started with that name.
//! A check on the main thread (a doc test, an example, a program of one's own) measures in a child that
//! is this program started again with its own arguments. A check on another thread (a runtime's worker, a
//! pool's) cannot be traced to its test: it is named with [`Check::test_name`], or the child, finding no
//! such test, says so and what to do.
//!
//! Settling: the warm-up goes on, a round of `warmup` calls at a time, until two rounds in a row have
//! started no thread that stayed (a pool that grows as it is used, like tokio's blocking pool, has grown),
//! at most [`MAX_WARMUP_ROUNDS`] rounds; the baseline census is taken once the count of threads has stood
//! still for [`QUIET`]; before each later census the child waits until the process
//! has no more threads than at the census before: threads the calls started and that end soon after (a
//! helper that finishes its work) are waited for, up to [`Check::settle`] (1 s by default), and no longer
//! once more than a few are left and none has ended for a second (threads left running by the calls: a
//! leak). What still runs then is counted.

use std::cell::Cell as Slot;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::analysis;
use crate::backend::{self, Backend, CallError, SettleFailure, Workload};
use crate::child::{self, ChildReport, Mode};
use crate::record::{CellRecord, Params, Record, Status, Tool, Verdict, SCHEMA};
use crate::runner::{self, Capture};

/// A folder of this user's alone (mode 0700) under the temporary folder, made under a random name that
/// nobody holds (`mkdir` fails on a name that exists, and another is drawn), removed with what it holds
/// when dropped. The parent's report and records pass through it.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(prefix: &str) -> std::io::Result<PrivateDir> {
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::DirBuilderExt;
        let mut last = None;
        for _ in 0..64 {
            // Each `RandomState` is keyed afresh from the OS's random source (std's hash map keys).
            let draw = std::collections::hash_map::RandomState::new().build_hasher().finish();
            let path = std::env::temp_dir().join(format!("{prefix}{}-{draw:016x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name for a private folder")))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// In a child: `INDEX:TEST`, the test and which of its checks (counted from 0) to measure.
const CHECK_ENV: &str = "THREADLEAK_CHECK";
/// In a child: the file its report goes to.
const REPORT_ENV: &str = "THREADLEAK_CHECK_REPORT";
/// In a child: the file holding the records of the test's checks before the one measured, which the
/// child's run of the test gets back from them, as the parent's did.
const EARLIER_ENV: &str = "THREADLEAK_CHECK_EARLIER";

/// How long a census waits, by default, for threads the calls started to end.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The baseline census is taken once the count of threads has not changed for this long.
pub const QUIET: Duration = Duration::from_millis(100);

/// The most rounds of warm-up calls made while the process's threads keep growing.
pub const MAX_WARMUP_ROUNDS: u32 = 10;

/// Threads beyond the census before from which a census stops waiting when none has ended for [`GIVE_UP`]:
/// they are the calls' own, left running.
const MANY_LEFT: u64 = 4;
const GIVE_UP: Duration = Duration::from_secs(1);

/// The name a check made on the main thread goes by: the program is started again whole.
const MAIN: &str = "main";

thread_local! {
    /// Checks made so far on this thread: libtest runs each test on a thread of its own, so this numbers
    /// a test's checks the same way in the parent and in the child.
    static CHECKS: Slot<u32> = const { Slot::new(0) };
    /// The records of the checks made so far on this thread, in order: a child measuring a later check
    /// gets them back for the earlier ones.
    static RECORDS: std::cell::RefCell<Vec<Record>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Measures `f` per call in a child process; see [`Check`] for the settings and the assertions. What `f`
/// returns is dropped after each call.
pub fn check<F: FnMut() -> R, R>(f: F) -> Check<F> {
    Check {
        f,
        cycles: 1000,
        warmup: 100,
        censuses: 9,
        timeout: Duration::from_secs(300),
        settle: SETTLE,
        test: None,
        memory: false,
    }
}

/// A closure a check calls: any `FnMut()` whatever it returns (the value is dropped after the call).
pub trait Calls {
    /// Calls it once and drops what it returned.
    fn call(&mut self);
}

impl<F: FnMut() -> R, R> Calls for F {
    fn call(&mut self) {
        drop(self());
    }
}

/// A closure to measure, and how.
#[must_use = "a check measures nothing until it is asserted or its record is taken"]
pub struct Check<F> {
    f: F,
    cycles: u32,
    warmup: u32,
    censuses: u32,
    timeout: Duration,
    settle: Duration,
    test: Option<String>,
    memory: bool,
}

/// Why a check could not measure at all (a child that fails is a record with its status instead).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("threadleak::check measures this machine's own kernel, and this OS has no backend (Linux or macOS)")]
    NoBackend,
    #[error(
        "threadleak::check runs on a thread with no name, so it cannot tell which test it is in (libtest names a \
         test's thread after the test): call it on the test's own thread, or name the test with \
         .test_name(\"module::test\")"
    )]
    NoTest,
    #[error("cannot start the test binary as the measuring child")]
    Start(#[source] std::io::Error),
    #[error("this process is the measuring child of another check of this test; only that one is measured here")]
    NotMeasuredHere,
}

impl<F: Calls> Check<F> {
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

    /// How long each census waits for threads the calls started to end (default 1 s): a thread that ends
    /// shortly after its call is not counted mid-flight. What still runs then is counted.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
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
    /// does not return: the child ends once its report is written. A test may make several checks: the
    /// child that measures one gets back, for each check before it, the record the parent got.
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
        // The main thread's check (a doc test, a program) is measured by starting the program again; a
        // test's, by starting the test binary for that test, named after its thread unless named here.
        let test = match (&self.test, std::thread::current().name()) {
            (Some(test), _) => test.clone(),
            (None, _) if backend::on_main_thread() => MAIN.to_owned(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => return Err(CheckError::NoTest),
        };
        let params = Params { cycles: self.cycles, warmup: self.warmup, self_calls: 0, memory: self.memory };
        match std::env::var(CHECK_ENV) {
            Ok(wanted) if wanted == format!("{index}:{test}") => self.measure_here(backend, &params),
            Ok(_) => Ok(earlier(index)),
            Err(_) => {
                let record = self.measure_in_child(backend, &params, index, test)?;
                RECORDS.with(|r| r.borrow_mut().push(record.clone()));
                Ok(Some(record))
            }
        }
    }

    /// In the child: the measurement, its report written, and the end of the process, which takes with it
    /// every process the calls started and left (it is their subreaper, where the OS has one: a process
    /// started in a session of its own comes back to it when its parent ends).
    fn measure_here(&mut self, backend: Backend, params: &Params) -> ! {
        backend::adopt_orphans();
        let report = child::die_with_runner(params).unwrap_or_else(|| {
            let mut workload = Closure::new(&mut self.f, self.warmup, self.settle);
            child::measure(&mut workload, backend.counters(), params, Mode::Series { censuses: self.censuses })
        });
        let path = std::env::var_os(REPORT_ENV).map(PathBuf::from);
        let written = path.ok_or_else(|| std::io::Error::other(format!("{REPORT_ENV} is not set"))).and_then(|path| {
            let json = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
            std::fs::write(path, json)
        });
        runner::kill_descendants(None);
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
        let dir = PrivateDir::new("threadleak-check-").map_err(CheckError::Start)?;
        let report_path = dir.path().join("report.json");
        let mut command = Command::new(&exe);
        if test == MAIN {
            command.args(std::env::args_os().skip(1));
        } else {
            command.args([test.as_str(), "--exact", "--nocapture", "--test-threads=1", "--include-ignored"]);
        }
        let earlier_path = dir.path().join("earlier.json");
        let earlier = RECORDS.with(|r| serde_json::to_vec(&*r.borrow())).map_err(std::io::Error::other);
        earlier.and_then(|json| std::fs::write(&earlier_path, json)).map_err(CheckError::Start)?;
        command
            .env(CHECK_ENV, format!("{index}:{test}"))
            .env(REPORT_ENV, &report_path)
            .env(EARLIER_ENV, &earlier_path)
            .stdin(Stdio::null());
        for (name, value) in backend.child_env() {
            command.env(name, value);
        }
        let outcome = runner::supervise(command, self.timeout, Duration::from_secs(2), Capture::Output, |_| {})
            .map_err(CheckError::Start)?;
        let ran_no_test = String::from_utf8_lossy(&outcome.stdout).lines().any(|l| l.trim() == "running 0 tests");

        // Neither axes nor a command: a check's cell (`report` titles it so).
        let mut cell = CellRecord::unmeasured(test.clone(), None, None);
        cell.elapsed_ms = outcome.elapsed.as_millis() as u64;
        let mut notes = Vec::new();
        let timeout_ms = self.timeout.as_millis() as u64;
        if let Some((status, failure, note)) = runner::abnormal_end(&outcome, timeout_ms, "the test child", "") {
            cell.status = status;
            cell.failure = Some(failure);
            notes.push(note);
        } else {
            let report = std::fs::read(&report_path)
                .map_err(|e| {
                    if ran_no_test {
                        format!(
                            "the test binary has no test named `{test}`: the check ran on a thread that is not the \
                             test's own (libtest names each test's thread after the test; a runtime's worker or a \
                             pool's thread is another). Call threadleak::check on the test's thread (outside \
                             tokio::spawn or the pool's closure), or name the test: .test_name(\"module::test\"), \
                             as `cargo test -- --list` lists it"
                        )
                    } else {
                        format!(
                            "it ended well but wrote no report ({e}): the check was not reached in it (the test \
                             must make the same checks, in the same order, every time it runs)"
                        )
                    }
                })
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
                    // It ended well: not a crash, but nothing measured.
                    cell.status = Status::Error;
                    notes.push(format!("the test child: {why}"));
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

/// In a child: the record the parent got for this test's check `index`, made before the one the child
/// measures; `None` when it has none.
fn earlier(index: u32) -> Option<Record> {
    let path = std::env::var_os(EARLIER_ENV)?;
    let records: Vec<Record> = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    records.into_iter().nth(index as usize)
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
    f: &'a mut dyn Calls,
    /// Calls in a round of warm-up.
    warmup: u32,
    /// Rounds of warm-up made beyond the first while threads kept growing, and whether they still were.
    rounds: (u32, bool),
    /// The threads the process had before the first call.
    before: Option<u64>,
    /// The threads the process had at the census before: a census waits until it has no more.
    rest: Option<u64>,
    /// How long a census waits for that.
    settle: Duration,
    /// Censuses at which threads were still running when the census stopped waiting.
    unsettled: u32,
    notes: Vec<String>,
}

impl<'a> Closure<'a> {
    fn new(f: &'a mut dyn Calls, warmup: u32, settle: Duration) -> Closure<'a> {
        let before = backend::thread_count(std::process::id());
        Closure { f, warmup, rounds: (0, false), before, rest: None, settle, unsettled: 0, notes: Vec::new() }
    }

    /// Waits, up to the settle time, until the process has no more than `rest` threads; returns the count
    /// then.
    fn wait_for(&self, pid: u32, rest: u64) -> u64 {
        let started = Instant::now();
        let mut count = backend::thread_count(pid).unwrap_or(rest);
        while count > rest && started.elapsed() < self.settle {
            std::thread::sleep(Duration::from_millis(1));
            count = backend::thread_count(pid).unwrap_or(count);
        }
        count
    }

    /// Settles the warm-up: waits (up to the settle time) for threads the warm-up calls started to end,
    /// then makes more rounds of calls until two in a row leave the process, settled the same way, with
    /// no more threads than before them (at most [`MAX_WARMUP_ROUNDS`]): a pool that grows as it is used
    /// has grown.
    fn warm_up_pools(&mut self, pid: u32) {
        let Some(first) = self.before else { return };
        let mut before = self.wait_for(pid, first);
        let mut still = 0;
        while still < 2 && self.rounds.0 < MAX_WARMUP_ROUNDS && self.warmup > 0 {
            for _ in 0..self.warmup {
                self.f.call();
            }
            self.rounds.0 += 1;
            let after = self.wait_for(pid, before);
            still = if after > before { 0 } else { still + 1 };
            before = before.max(after);
        }
        self.rounds.1 = self.warmup > 0 && still < 2;
    }
}

impl Workload for Closure<'_> {
    fn cycle(&mut self) -> Result<(), CallError> {
        self.f.call();
        Ok(())
    }

    fn settle(&mut self) -> Result<(), SettleFailure> {
        let pid = std::process::id();
        if self.rest.is_none() {
            self.warm_up_pools(pid);
        }
        let Some(mut count) = backend::thread_count(pid) else {
            if self.notes.is_empty() {
                self.notes.push("this process's threads cannot be counted: censuses were not settled".to_owned());
            }
            return Ok(());
        };
        let started = Instant::now();
        let mut changed = started;
        loop {
            let done = match self.rest {
                // The baseline: once the count stands still.
                None => changed.elapsed() >= QUIET,
                Some(rest) => count <= rest || (count >= rest + MANY_LEFT && changed.elapsed() >= GIVE_UP),
            };
            if done || started.elapsed() >= self.settle {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            let now = backend::thread_count(pid).unwrap_or(count);
            if now != count {
                (count, changed) = (now, Instant::now());
            }
        }
        self.unsettled += u32::from(self.rest.is_some_and(|rest| count > rest));
        self.rest = Some(count);
        Ok(())
    }

    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError> {
        backend::native_census(out)
    }

    /// A pool the calls use grows when its threads are all busy (a loaded machine): the threads it runs
    /// at each census are the threads in flight.
    fn threads(&mut self) -> Option<u64> {
        backend::thread_count(std::process::id())
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if self.rounds.1 {
            notes.push(format!(
                "the process's threads still grew after {} rounds of {} warm-up calls",
                self.rounds.0 + 1,
                self.warmup
            ));
        }
        if self.unsettled > 0 {
            notes.push(format!(
                "at {} censuses, the process still had more threads than at the census before when it stopped \
                 waiting (after {} s, or a second after the last thread ended with {MANY_LEFT} or more left): they \
                 were counted",
                self.unsettled,
                self.settle.as_secs_f64()
            ));
        }
        notes
    }

    fn inventory(&mut self) -> Result<backend::Inventory, CallError> {
        backend::native_inventory()
    }
}
