//! The versioned result record: what a run writes with `--format json` and what later tools read.
//!
//! Schema 1. Fields are only ever added; a change that alters the meaning of an existing field bumps
//! [`SCHEMA`]. Counter maps keep the backend's counter order, so tables print columns in a stable order.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};

/// The schema version this build writes and reads.
pub const SCHEMA: u32 = 1;

/// The id of the one cell of a `threadleak exec` record.
pub const EXEC_CELL: &str = "exec";

/// The most counters a record may give a cell, checkpoint or process: a backend has at most a dozen. A
/// record with more is refused while it is read, so that reading stays linear in its size.
pub const MAX_COUNTERS: usize = 64;

/// Counters of one map that a new name is compared with one by one before they are kept in a set: a
/// backend's dozen are, without a copy of each name.
const LOOKED_THROUGH: usize = 16;

thread_local! {
    /// Set while this thread reads a record for its outcomes only ([`Record::outcomes_from_json`]).
    static OUTCOMES_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A cell's field that outcomes do not need (its series, bounds and processes): read, or, for outcomes
/// only, checked as JSON and skipped (left empty).
fn unread<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(deserializer: D) -> Result<T, D::Error> {
    if OUTCOMES_ONLY.with(std::cell::Cell::get) {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(T::default())
    } else {
        T::deserialize(deserializer)
    }
}

/// A site's frames: read, or, for outcomes only, only the named ones, each with nothing but its function
/// (what names a site across versions); the rest checked as JSON and skipped.
fn frames<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Frame>, D::Error> {
    if !OUTCOMES_ONLY.with(std::cell::Cell::get) {
        return Vec::<Frame>::deserialize(deserializer);
    }
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(default, borrow)]
        function: Option<std::borrow::Cow<'a, str>>,
    }
    let frames = Vec::<Named<'de>>::deserialize(deserializer)?;
    Ok(frames
        .into_iter()
        .filter_map(|f| f.function)
        .map(|function| Frame { function: Some(function.into_owned()), ..Frame::unnamed("", 0) })
        .collect())
}

/// The most cells a record may hold: the matrix has 54.
pub const MAX_CELLS: usize = 4096;

/// Named counters in a fixed order; serialized as a JSON object in that order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters<T>(pub Vec<(String, T)>);

impl<T: Copy> Counters<T> {
    pub fn get(&self, name: &str) -> Option<T> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, T)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }
}

impl<T: Serialize> Serialize for Counters<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counters<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Ordered<T> {
            type Value = Counters<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of counter values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Counters<T>, A::Error> {
                let mut entries: Vec<(String, T)> = Vec::new();
                // A name is looked for among the few before it; past LOOKED_THROUGH of them, in a set.
                let mut seen: Option<std::collections::HashSet<String>> = None;
                while let Some((name, value)) = access.next_entry::<String, T>()? {
                    if entries.len() == MAX_COUNTERS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_COUNTERS} counters (a backend has at most a dozen)"
                        )));
                    }
                    let twice = match &mut seen {
                        Some(seen) => !seen.insert(name.clone()),
                        None => entries.iter().any(|(n, _)| *n == name),
                    };
                    if twice {
                        return Err(serde::de::Error::custom(format!("counter `{name}` appears twice")));
                    }
                    entries.push((name, value));
                    if seen.is_none() && entries.len() == LOOKED_THROUGH {
                        seen = Some(entries.iter().map(|(n, _)| n.clone()).collect());
                    }
                }
                Ok(Counters(entries))
            }
        }
        deserializer.deserialize_map(Ordered(std::marker::PhantomData))
    }
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub tool: Tool,
    pub backend: String,
    pub os: Os,
    /// The model's settings, for the `mach-sim` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    pub params: Params,
    pub cells: Vec<CellRecord>,
}

/// The settings of the XNU model a `mach-sim` record was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// The rules followed, e.g. `xnu-11417`.
    pub profile: String,
    /// Clock steps before a dead thread's port is released and dies.
    pub delay: u32,
    /// The modelled task (`third-party` or `hardened`); records made before it was recorded modelled a
    /// hardened one.
    #[serde(default = "hardened")]
    pub task: String,
}

fn hardened() -> String {
    "hardened".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Tool {
    pub fn this() -> Tool {
        Tool { name: env!("CARGO_PKG_NAME").to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() }
    }
}

/// The machine the children ran on, as the backend reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Os {
    /// `linux` or `macos`.
    pub family: String,
    /// Kernel release (`uname -r`; on macOS `kern.osrelease`, the Darwin release).
    pub release: String,
    /// Linux: the kernel version string (`uname -v`); macOS: the product version (`kern.osproductversion`).
    pub version: String,
    pub arch: String,
    /// The C library and its version, e.g. `glibc 2.36`.
    pub libc: String,
    /// The OS build, where there is one (macOS: `kern.osversion`, e.g. `24G231`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

/// What every cell of a run was given. For an `exec` record: `cycles` is the threads the program
/// created, `warmup` the census interval K (threads ended before the baseline), `self_calls` 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Measured cycles (threads created) per cell.
    pub cycles: u32,
    /// Cycles run before the baseline census.
    pub warmup: u32,
    /// K: extra self references a thread takes when the `self` axis is not `none`.
    pub self_calls: u32,
    /// Memory counts (`exec --memory`, check's `.memory(true)`): `vm_kib` that grows steadily makes a leak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params { cycles: 1000, warmup: 10, self_calls: 1, memory: false }
    }
}

/// How a cell's child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The child ran every cycle and returned its checkpoints.
    Ok,
    /// The child ran past the timeout and was killed.
    Timeout,
    /// The child died of a signal, exited non-zero without a record, or printed something that is not one.
    Crashed,
    /// The child reported an error of its own: a failed call, typically resource exhaustion.
    Error,
}

/// What the checkpoints say about the cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No counter moves per thread.
    Clean,
    /// Some counter grows per thread (and none shrinks).
    Leak,
    /// Some counter shrinks per thread (and none grows).
    OverRelease,
    /// The measurement cannot be trusted: the halves disagree, the settle step timed out, counters move in
    /// both directions, or the child did not complete.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Leak => "leak",
            Verdict::OverRelease => "over-release",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Timeout => "timeout",
            Status::Crashed => "crashed",
            Status::Error => "error",
        }
    }
}

/// The axes of a cell, spelled out for readers that do not parse ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axes {
    pub thread: ThreadKind,
    #[serde(rename = "self")]
    pub self_ref: SelfRef,
    pub exc: Exc,
    pub fix: Fix,
}

impl From<Cell> for Axes {
    fn from(Cell { thread, self_ref, exc, fix }: Cell) -> Axes {
        Axes { thread, self_ref, exc, fix }
    }
}

/// A census taken after `cycle` measured cycles (0 is the baseline, after warm-up); for `exec`, after
/// `cycle` of the process's threads had ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub cycle: u32,
    pub counters: Counters<i64>,
    /// `exec`: the process's threads still running at the census (their stacks and their entries in
    /// `tasks` were set apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<u64>,
}

/// Why a cell has no trustworthy measurement, in a form a program can read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// A call in the child failed; `cycle` is the measured cycle it failed at (warm-up cycles count from
    /// `-warmup`).
    Call { call: String, errno: i32, errno_name: String, cycle: i64 },
    /// A Mach call in the child failed with a `kern_return_t`.
    Kern { call: String, kr: i32, kr_name: String, cycle: i64 },
    /// The settle step did not see the exited threads go away in time.
    Settle { waited_ms: u64, detail: String },
    /// The child was killed after the timeout.
    Timeout { after_ms: u64, escalated_to_sigkill: bool, stderr_tail: String },
    /// The child died of a signal.
    Signal { signal: i32, signal_name: String, stderr_tail: String },
    /// The child exited with a non-zero code and no record.
    Exit { code: i32, stderr_tail: String },
    /// The child's output is not a record.
    Garbage { detail: String, stdout_head: String, stderr_tail: String },
    /// `exec`: the program was not run, because the probe cannot enter it (a static program, another C
    /// library, setuid; on macOS SIP-protected or hardened).
    Refused { reason: String },
}

/// What changed of one kind of resource, per thread (per unit of a scenario): `fds`, `anon_inode:[pidfd]`,
/// +1. The kinds of a counter are what the backend's inventory tells apart (`Workload::inventory`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindDelta {
    /// The counter the kind belongs to (`fds`, `maps`, `timers`; `names`, `urefs`).
    pub counter: String,
    /// What the resource is: a descriptor's target, a mapping's size, permissions and name, a timer's
    /// notification, a Mach name's right.
    pub kind: String,
    pub per_thread: f64,
}

/// Where resources left behind were made: one call stack, and how many of what it made stayed, per thread
/// ended (`threadleak exec --sites`; in the model, each call that adds a reference).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// The counter its resources move (`fds`; `urefs`).
    pub counter: String,
    /// What they are, as the inventory names kinds (`anon_inode:[pidfd]`, a path; `dead name`), where
    /// the run could tell (`exec`: one of them, at the last census that had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The call that made them (`open`, `syscall(pidfd_open)`, `mach_thread_self`).
    pub call: String,
    /// Its resources still alive, per thread ended, over the run.
    pub per_thread: f64,
    /// Its resources alive at the last census, and how many of them the thread that made them outlived.
    pub live: u64,
    pub outlived: u64,
    /// It grew and then stopped (a cache filled): shown apart from what keeps growing, and no leak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The stack, innermost first (inlined functions each a frame of their own).
    #[serde(deserialize_with = "frames")]
    pub frames: Vec<Frame>,
}

/// One frame of a site's stack: where the code is (module and offset), and what it is where the
/// module's symbols (and debug information) tell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The module's path (`?` when no loaded module held the address; `offset` is then the address).
    pub module: String,
    /// From where the module is loaded.
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Frame {
    /// A frame by where its code is, not yet named (or that nothing names).
    pub fn unnamed(module: &str, offset: u64) -> Frame {
        Frame { module: module.to_owned(), offset, function: None, file: None, line: None }
    }
}

/// One cell's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// The cell id, or `exec` for a program measured by `threadleak exec`.
    pub cell: String,
    /// The cell's axes (absent for `exec` and scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axes: Option<Axes>,
    /// The scenario and variant, for a case of the corpus (`threadleak run --scenario`); its figures are
    /// per `unit` rather than per thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<crate::scenario::ScenarioRef>,
    /// The command line `threadleak exec` ran (only for `exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    pub status: Status,
    /// Change of each counter per measured thread, from the baseline to the last checkpoint.
    pub per_thread: Counters<f64>,
    /// Change of each counter per thread between the last two checkpoints.
    #[serde(deserialize_with = "unread")]
    pub slope: Counters<f64>,
    /// What moved, by kind, from the baseline's inventory to the last checkpoint's, per thread; the kinds
    /// that moved by more than a tenth, largest first within each counter. Absent when no inventory was
    /// taken (`exec`, a child that did not finish, a record made before kinds were recorded); `[]` when
    /// nothing moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<KindDelta>>,
    /// Where what was left behind was made, by call stack, most per thread first (`exec --sites`; the
    /// model's cells). Empty when no site was recorded or none left anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteRecord>,
    pub verdict: Verdict,
    #[serde(deserialize_with = "unread")]
    pub checkpoints: Vec<Checkpoint>,
    /// Wall time of the child, spawn to exit.
    pub elapsed_ms: u64,
    /// Threads created and ended per second in the measured cycles, census time excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles_per_sec: Option<f64>,
    /// Facts a reader needs to interpret the cell (a fallback taken, why it is inconclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// `exec`: the rates bounding the middle two thirds of the run (`[low, high]`), which the verdict reads.
    #[serde(default, deserialize_with = "unread", skip_serializing_if = "Counters::is_empty")]
    pub interval: Counters<[f64; 2]>,
    /// What one unit of each counter over the run amounts to per thread: the finest change the
    /// measurement can show (`--expect` allows for it).
    #[serde(default, deserialize_with = "unread", skip_serializing_if = "Counters::is_empty")]
    pub resolution: Counters<f64>,
    /// `exec` and `threadleak::check`: for each countable counter, the smallest steady change per thread
    /// (per call) its censuses could have shown: what a `clean` verdict rules out.
    #[serde(default, deserialize_with = "unread", skip_serializing_if = "Counters::is_empty")]
    pub limits: Counters<f64>,
    /// `exec`: each process of the program that created threads, measured on its own. The cell's own
    /// figures are those of the process that decides the verdict.
    #[serde(default, deserialize_with = "unread", skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessRecord>,
}

/// One process of a program measured by `threadleak exec`: the program itself, a program it started, or
/// a child it forked without `exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub parent: u32,
    /// `exec` (it loaded the probe as it started) or `fork` (forked from a process that had it).
    pub origin: String,
    /// Its command line, when it loaded the probe itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Threads it created through `pthread_create`, and how many of them ended.
    pub created: u64,
    pub ended: u64,
    /// Change of each counter per thread ended (empty when it could not be measured).
    pub per_thread: Counters<f64>,
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    pub interval: Counters<[f64; 2]>,
    /// For each countable counter, the smallest steady change per thread ended its censuses could have
    /// shown.
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    pub limits: Counters<f64>,
    pub verdict: Verdict,
    pub checkpoints: Vec<Checkpoint>,
    /// Where what it left behind was made (`--sites`), most per thread first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteRecord>,
    /// Why it could not be judged, and what a reader needs to interpret it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl<T> Counters<T> {
    /// Whether there are no counters (for `skip_serializing_if`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl CellRecord {
    /// A cell not yet measured: status ok, verdict inconclusive, nothing else known.
    pub fn unmeasured(cell: String, axes: Option<Axes>, command: Option<Vec<String>>) -> CellRecord {
        CellRecord {
            cell,
            axes,
            scenario: None,
            command,
            status: Status::Ok,
            per_thread: Counters::default(),
            slope: Counters::default(),
            kinds: None,
            sites: Vec::new(),
            verdict: Verdict::Inconclusive,
            checkpoints: Vec::new(),
            elapsed_ms: 0,
            cycles_per_sec: None,
            note: None,
            failure: None,
            interval: Counters::default(),
            resolution: Counters::default(),
            limits: Counters::default(),
            processes: Vec::new(),
        }
    }

    /// The verdict, or the status when the cell did not complete: what a table shows.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            Status::Ok => self.verdict.as_str(),
            other => other.as_str(),
        }
    }

    /// Whether the cell's measurement can be trusted either way (completed and not inconclusive).
    pub fn judgeable(&self) -> bool {
        self.status == Status::Ok && self.verdict != Verdict::Inconclusive
    }
}

/// What is wrong with a record file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a threadleak record")]
    Json(#[source] serde_json::Error),
    #[error("record schema {found} is not supported (this build reads schema {SCHEMA})")]
    Schema { found: u64 },
    #[error("cell `{cell}`")]
    Cell { cell: String, source: crate::scenario::CaseError },
    #[error("cell `{cell}` appears twice")]
    DuplicateCell { cell: String },
    #[error("cell `{cell}` has axes that say otherwise")]
    AxesMismatch { cell: String },
    #[error("cell `{cell}` names a scenario that says otherwise")]
    ScenarioMismatch { cell: String },
    #[error("{cells} cells is more than a record can hold ({MAX_CELLS} at most)")]
    TooManyCells { cells: usize },
}

impl Record {
    /// Parses a record. A record of another schema version is reported as such, even when the rest of it
    /// would not parse as schema 1.
    pub fn from_json(text: &str) -> Result<Record, RecordError> {
        #[derive(Deserialize)]
        struct Version {
            schema: u64,
        }
        let schema_error = |text: &str| match serde_json::from_str::<Version>(text) {
            Ok(v) if v.schema != u64::from(SCHEMA) => Some(RecordError::Schema { found: v.schema }),
            _ => None,
        };
        let record: Record = match serde_json::from_str(text) {
            Ok(record) => record,
            Err(e) => return Err(schema_error(text).unwrap_or(RecordError::Json(e))),
        };
        if record.schema != SCHEMA {
            return Err(RecordError::Schema { found: u64::from(record.schema) });
        }
        if record.cells.len() > MAX_CELLS {
            return Err(RecordError::TooManyCells { cells: record.cells.len() });
        }
        let mut seen = std::collections::HashSet::new();
        for cell in &record.cells {
            if !seen.insert(cell.cell.as_str()) {
                return Err(RecordError::DuplicateCell { cell: cell.cell.clone() });
            }
            // Every cell is a matrix cell or a scenario's variant, but the one cell of an `exec` record.
            if cell.cell == EXEC_CELL && cell.command.is_some() {
                continue;
            }
            let parsed = cell
                .cell
                .parse::<crate::scenario::Case>()
                .map_err(|source| RecordError::Cell { cell: cell.cell.clone(), source })?;
            match parsed {
                crate::scenario::Case::Cell(parsed) => {
                    if cell.axes.is_some_and(|axes| axes != Axes::from(parsed)) || cell.scenario.is_some() {
                        return Err(RecordError::AxesMismatch { cell: cell.cell.clone() });
                    }
                }
                crate::scenario::Case::Scenario(s) => {
                    if cell.axes.is_some() || cell.scenario.as_ref().is_some_and(|r| *r != s.into()) {
                        return Err(RecordError::ScenarioMismatch { cell: cell.cell.clone() });
                    }
                }
            }
        }
        Ok(record)
    }

    /// [`Record::from_json`], checked the same way, for what comparing records reads of their cells
    /// (`compare::Entry`): a cell's series, bounds and processes, and its sites' unnamed frames and
    /// frames' places, are checked as JSON and skipped, not built. The record holds only that: it is for
    /// reducing to outcomes, not for reporting or writing out.
    pub(crate) fn outcomes_from_json(text: &str) -> Result<Record, RecordError> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                OUTCOMES_ONLY.with(|o| o.set(false));
            }
        }
        OUTCOMES_ONLY.with(|o| o.set(true));
        let _reset = Reset;
        Record::from_json(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a record always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        let cell: Cell = "thread=unjoined,self=leaked,exc=none,fix=off".parse().unwrap();
        let counters = |v: i64| Counters(vec![("fds".to_owned(), v), ("maps".to_owned(), 2 * v)]);
        Record {
            schema: SCHEMA,
            tool: Tool::this(),
            backend: "linux".into(),
            os: Os { family: "linux".into(), ..Os::default() },
            model: None,
            params: Params::default(),
            cells: vec![CellRecord {
                cell: cell.id(),
                scenario: None,
                axes: Some(cell.into()),
                command: None,
                status: Status::Ok,
                per_thread: Counters(vec![("fds".into(), 1.0), ("maps".into(), 2.0)]),
                slope: Counters(vec![("fds".into(), 1.0), ("maps".into(), 2.0)]),
                kinds: None,
                sites: Vec::new(),
                verdict: Verdict::Leak,
                checkpoints: vec![
                    Checkpoint { cycle: 0, counters: counters(0), live: None },
                    Checkpoint { cycle: 1000, counters: counters(1000), live: None },
                ],
                elapsed_ms: 40,
                cycles_per_sec: Some(25000.0),
                note: None,
                failure: Some(Failure::Call {
                    call: "pidfd_open".into(),
                    errno: 24,
                    errno_name: "EMFILE".into(),
                    cycle: 17,
                }),
                interval: Counters::default(),
                resolution: Counters::default(),
                limits: Counters::default(),
                processes: Vec::new(),
            }],
        }
    }

    #[test]
    fn the_record_round_trips() {
        let record = sample();
        assert_eq!(Record::from_json(&record.to_json()).unwrap(), record);
    }

    #[test]
    fn counters_keep_their_order() {
        let text = r#"{"zeta":1,"alpha":2,"mid":3}"#;
        let c: Counters<i64> = serde_json::from_str(text).unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["zeta", "alpha", "mid"]);
        assert_eq!(serde_json::to_string(&c).unwrap(), text);
        assert!(serde_json::from_str::<Counters<i64>>(r#"{"a":1,"a":2}"#).is_err());
    }

    #[test]
    fn the_wrong_schema_is_named() {
        let text = sample().to_json().replacen("\"schema\": 1", "\"schema\": 7", 1);
        let err = Record::from_json(&text).unwrap_err().to_string();
        assert_eq!(err, "record schema 7 is not supported (this build reads schema 1)");
    }

    #[test]
    fn an_unknown_cell_is_named() {
        let text = sample().to_json().replace("self=leaked", "self=sometimes");
        let err = Record::from_json(&text).unwrap_err();
        assert_eq!(err.to_string(), "cell `thread=unjoined,self=sometimes,exc=none,fix=off`");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("unknown value `sometimes` for axis `self`"), "{cause}");
    }

    #[test]
    fn duplicate_cells_and_contradicting_axes_are_refused() {
        let mut record = sample();
        record.cells.push(record.cells[0].clone());
        let err = Record::from_json(&record.to_json()).unwrap_err().to_string();
        assert_eq!(err, "cell `thread=unjoined,self=leaked,exc=none,fix=off` appears twice");
        let mut record = sample();
        record.cells[0].axes.as_mut().unwrap().fix = crate::matrix::Fix::On;
        let err = Record::from_json(&record.to_json()).unwrap_err().to_string();
        assert_eq!(err, "cell `thread=unjoined,self=leaked,exc=none,fix=off` has axes that say otherwise");
    }

    proptest! {
        #[test]
        fn counters_round_trip(values in proptest::collection::vec((-1i64 << 40)..(1i64 << 40), 0..8)) {
            let counters = Counters(values.iter().enumerate().map(|(i, &v)| (format!("c{i}"), v)).collect());
            let text = serde_json::to_string(&counters).unwrap();
            prop_assert_eq!(serde_json::from_str::<Counters<i64>>(&text).unwrap(), counters);
        }

        #[test]
        fn arbitrary_text_is_an_error_not_a_panic(text in ".{0,200}") {
            let _ = Record::from_json(&text);
        }
    }
}
