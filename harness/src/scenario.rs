//! The corpus: leaks of this class that shipped in real programs, each a scenario with a buggy and a
//! fixed variant, and [`Case`], what a child runs: a matrix cell or a scenario's variant.
//!
//! Where each scenario is realized:
//! - a scenario whose unit is a thread is a matrix cell per variant ([`Work::Cells`]): it runs on every
//!   backend exactly as that cell does (`backend/mach/workload.rs`, `backend/linux.rs`);
//! - the others are Mach workloads of their own ([`Work::Mach`], `backend/mach/scenarios.rs`), which run on
//!   mach-sim and on a Mac; they have no Linux analog, and [`Work::Mach::linux`] says why.
//!
//! A scenario's id is `scenario=NAME,variant=buggy|fixed`; ids are stable (snapshots and records are keyed
//! by them). Each entry says where the bug and its fix were published; no code of theirs is copied.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};

/// What one measured cycle of a scenario is, as its source counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// A thread created and ended.
    Thread,
    /// One refresh of a process list.
    Refresh,
    /// One sample of a sampling profiler.
    Sample,
    /// One call of the leaking function.
    Call,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Thread => "thread",
            Unit::Refresh => "refresh",
            Unit::Sample => "sample",
            Unit::Call => "call",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Unit::Thread => "threads",
            Unit::Refresh => "refreshes",
            Unit::Sample => "samples",
            Unit::Call => "calls",
        }
    }
}

/// The two sides of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The code as it shipped.
    Buggy,
    /// The code with its published fix.
    Fixed,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Buggy, Variant::Fixed];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Buggy => "buggy",
            Variant::Fixed => "fixed",
        }
    }
}

/// The Mach workloads of scenarios that are not matrix cells (`backend/mach/scenarios.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MachWork {
    /// `task_threads` on the task itself once per unit, with `idle` long-lived threads besides the
    /// measuring one; fixed: every returned right deallocated.
    TaskThreads { idle: u32 },
    /// `mach_host_self` once per unit; fixed: its reference deallocated.
    HostSelf,
    /// A long-lived thread (the measuring one) calls `mach_thread_self` once per unit; fixed: the
    /// reference released.
    SampleThreadSelf,
}

/// How a scenario is realized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Each variant is a matrix cell, on every backend.
    Cells { buggy: Cell, fixed: Cell },
    /// A Mach workload; `linux` says why there is no Linux analog.
    Mach { work: MachWork, linux: &'static str },
}

/// One published bug.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Scenario {
    /// The id's name: `project-what`.
    pub name: &'static str,
    /// The project and year.
    pub project: &'static str,
    /// Where the bug and its fix were published.
    pub source: &'static str,
    /// What the program did.
    pub pattern: &'static str,
    /// What the fix changed.
    pub fix: &'static str,
    pub unit: Unit,
    pub work: Work,
}

const fn cell(thread: ThreadKind, self_ref: SelfRef, fix: Fix) -> Cell {
    Cell { thread, self_ref, exc: Exc::None, fix }
}

const NO_TASK_THREADS: &str =
    "Linux has no call that hands out a counted reference to each thread of a process (/proc/self/task is read, \
     not held)";

/// The corpus, in the order `threadleak scenarios` lists it.
pub static ALL: &[Scenario] = &[
    Scenario {
        name: "ccl-thread-self",
        project: "Clozure CL, 2011",
        source: "openmcl-devel, \"thread creation slows down\" (2011); Clozure/ccl commit a633bdfc \
                 (lisp-kernel/thread_manager.c)",
        pattern: "each new (detached) thread's setup calls mach_thread_self() (current_native_thread_id, from \
                  thread_init_tcr) and never releases it: once the thread is gone, a dead name per thread",
        fix: "the same commit takes the name with pthread_mach_thread_np(pthread_self()), which adds no reference, \
              and shutdown_thread_tcr trims the thread port's send references to one (mach_port_get_refs, \
              mach_port_mod_refs)",
        unit: Unit::Thread,
        work: Work::Cells {
            buggy: cell(ThreadKind::Detached, SelfRef::Leaked, Fix::Off),
            fixed: cell(ThreadKind::Detached, SelfRef::None, Fix::On),
        },
    },
    Scenario {
        name: "sbcl-thread-self",
        project: "SBCL, 2011",
        source: "sbcl/sbcl commit d3af5593f (src/runtime/darwin-os.c, mach_thread_init); the same class again in \
                 commit 9207a8dfe (2023, sb_GetTID)",
        pattern: "each new (joinable, joined) thread passes mach_thread_self() to thread_set_exception_ports and \
                  never releases it: a dead name per thread",
        fix: "the reference mach_thread_self() added is released with mach_port_deallocate (9207a8dfe: \
              pthread_mach_thread_np instead)",
        unit: Unit::Thread,
        work: Work::Cells {
            buggy: cell(ThreadKind::Joined, SelfRef::Leaked, Fix::Off),
            fixed: cell(ThreadKind::Joined, SelfRef::Balanced, Fix::Off),
        },
    },
    Scenario {
        name: "mailcore2-unjoined",
        project: "MailCore2, 2017",
        source: "MailCore/mailcore2 issue 1617 (MCOperationQueue::startThread); commit 25aa18c7 (2018)",
        pattern: "the queue's joinable thread quits when idle and a new one starts with the next operation; none \
                  is ever joined or detached: the process's ports grow per thread",
        fix: "pthread_detach right after pthread_create (commit 25aa18c7); joining, the reporter's experiment, \
              works too",
        unit: Unit::Thread,
        work: Work::Cells {
            buggy: cell(ThreadKind::Unjoined, SelfRef::None, Fix::Off),
            fixed: cell(ThreadKind::Detached, SelfRef::None, Fix::Off),
        },
    },
    Scenario {
        name: "htop-task-threads",
        project: "htop, 2026",
        source: "htop-dev/htop issue 2014, pull request 2015 (darwin/DarwinProcess.c, DarwinProcess_scanThreads); \
                 a regression of commit 4c0e9659",
        pattern: "task_threads() on every refresh; the thread send rights it returns are never deallocated. htop \
                  reads other processes, whose threads each get a name in its space; the scenario reads its own \
                  task (task_for_pid needs root), whose threads already have names: user references grow",
        fix: "mach_port_deallocate each returned right, then vm_deallocate the array",
        unit: Unit::Refresh,
        work: Work::Mach { work: MachWork::TaskThreads { idle: 3 }, linux: NO_TASK_THREADS },
    },
    Scenario {
        name: "dotnet-task-threads",
        project: ".NET runtime, 2022",
        source: "dotnet/runtime pull request 70338 (src/coreclr/pal/src/exception/machmessage.cpp, \
                 MachMessage::GetThreadFromState)",
        pattern: "task_threads(mach_task_self()) for each exception message that carries no thread port; the \
                  returned thread send rights are never deallocated",
        fix: "mach_port_deallocate each returned right before vm_deallocate of the array",
        unit: Unit::Call,
        work: Work::Mach { work: MachWork::TaskThreads { idle: 3 }, linux: NO_TASK_THREADS },
    },
    Scenario {
        name: "backtrace-task-threads",
        project: "SimpleDebugger 2025, BSBacktraceLogger 2021",
        source: "EmergeTools/SimpleDebugger issue 11 (setInstruction); bestswifter/BSBacktraceLogger issue 18 \
                 (bs_machThreadFromNSThread); both open",
        pattern: "task_threads(mach_task_self()) on every call; the returned thread send rights are never \
                  deallocated",
        fix: "not fixed upstream; the fix both issues propose: mach_port_deallocate each returned right, then \
              vm_deallocate the array",
        unit: Unit::Call,
        work: Work::Mach { work: MachWork::TaskThreads { idle: 3 }, linux: NO_TASK_THREADS },
    },
    Scenario {
        name: "webkit-sample-thread-self",
        project: "WebKit, 2026",
        source: "WebKit/WebKit pull request 71210 (ResourceUsageThreadCocoa.mm, \
                 ResourceUsageThread::platformCollectCPUData)",
        pattern: "a never-exiting sampling thread calls mach_thread_self() on every sample and never releases \
                  it: user references grow on a live name",
        fix: "the right is adopted by an owner that releases it (MachSendRight): mach_port_deallocate per sample",
        unit: Unit::Sample,
        work: Work::Mach {
            work: MachWork::SampleThreadSelf,
            linux: "a Linux thread names itself with gettid(), which holds nothing; the matrix's self axis covers \
                    references a thread takes to itself (pidfds)",
        },
    },
    Scenario {
        name: "mach-override-host-self",
        project: "mach_override, 2014",
        source: "rentzsch/mach_override pull request 16, commit 84a5bd9 (mach_override.c, \
                 host_page_size(mach_host_self(), ...))",
        pattern: "mach_host_self() on every call, never released: user references of the host port grow",
        fix: "the published fix stops calling it (PAGE_SIZE at compile time); the fixed variant keeps the call \
              and releases the reference, as the pull request says a mach_host_self() result must be",
        unit: Unit::Call,
        work: Work::Mach {
            work: MachWork::HostSelf,
            linux: "Linux has no host port: nothing in a process stands for the machine",
        },
    },
];

impl Scenario {
    /// The scenario named `name`.
    pub fn named(name: &str) -> Option<&'static Scenario> {
        ALL.iter().find(|s| s.name == name)
    }

    /// Why this scenario cannot run on Linux, or `None` when it can.
    pub fn not_on_linux(&self) -> Option<&'static str> {
        match self.work {
            Work::Cells { .. } => None,
            Work::Mach { linux, .. } => Some(linux),
        }
    }
}

/// A scenario's variant: what a child runs for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScenarioCase {
    pub scenario: &'static Scenario,
    pub variant: Variant,
}

/// What one child runs: a matrix cell, or a variant of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Case {
    Cell(Cell),
    Scenario(ScenarioCase),
}

/// How a case is realized on a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Realization {
    Cell(Cell),
    Mach(MachWork, Variant),
}

impl Case {
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// The cell this case runs as, or its Mach workload.
    pub fn realization(&self) -> Realization {
        match *self {
            Case::Cell(cell) => Realization::Cell(cell),
            Case::Scenario(ScenarioCase { scenario, variant }) => match (scenario.work, variant) {
                (Work::Cells { buggy, .. }, Variant::Buggy) => Realization::Cell(buggy),
                (Work::Cells { fixed, .. }, Variant::Fixed) => Realization::Cell(fixed),
                (Work::Mach { work, .. }, variant) => Realization::Mach(work, variant),
            },
        }
    }

    /// What one measured cycle is.
    pub fn unit(&self) -> Unit {
        match self {
            Case::Cell(_) => Unit::Thread,
            Case::Scenario(s) => s.scenario.unit,
        }
    }
}

impl From<Cell> for Case {
    fn from(cell: Cell) -> Case {
        Case::Cell(cell)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Case::Cell(cell) => cell.fmt(f),
            Case::Scenario(ScenarioCase { scenario, variant }) => {
                write!(f, "scenario={},variant={}", scenario.name, variant.as_str())
            }
        }
    }
}

/// What is wrong with a case id or a `--scenario` argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("unknown scenario `{name}` (scenarios: {known})")]
    UnknownScenario { name: String, known: String },
    #[error("`{0}` is not a scenario id (`scenario=NAME,variant=buggy` or `variant=fixed`)")]
    Malformed(String),
    #[error(transparent)]
    Cell(#[from] crate::matrix::ParseError),
}

fn unknown(name: &str) -> CaseError {
    CaseError::UnknownScenario {
        name: name.to_owned(),
        known: ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
    }
}

impl FromStr for Case {
    type Err = CaseError;
    fn from_str(s: &str) -> Result<Case, CaseError> {
        let Some(rest) = s.strip_prefix("scenario=") else { return Ok(Case::Cell(s.parse()?)) };
        let (name, variant) = rest.split_once(",variant=").ok_or_else(|| CaseError::Malformed(s.to_owned()))?;
        let scenario = Scenario::named(name).ok_or_else(|| unknown(name))?;
        let variant = match variant {
            "buggy" => Variant::Buggy,
            "fixed" => Variant::Fixed,
            _ => return Err(CaseError::Malformed(s.to_owned())),
        };
        Ok(Case::Scenario(ScenarioCase { scenario, variant }))
    }
}

/// The scenarios `--scenario` arguments select (`all`, or names), each with both variants, in corpus
/// order and without repeats.
pub fn select(names: &[String]) -> Result<Vec<Case>, CaseError> {
    let mut chosen: Vec<&'static Scenario> = Vec::new();
    for name in names {
        let picked: Vec<&'static Scenario> = if name == "all" {
            ALL.iter().collect()
        } else {
            vec![Scenario::named(name).ok_or_else(|| unknown(name))?]
        };
        for scenario in picked {
            if !chosen.contains(&scenario) {
                chosen.push(scenario);
            }
        }
    }
    chosen.sort_by_key(|s| ALL.iter().position(|a| a == *s));
    Ok(chosen
        .into_iter()
        .flat_map(|scenario| Variant::ALL.map(|variant| Case::Scenario(ScenarioCase { scenario, variant })))
        .collect())
}

/// A scenario case as a record spells it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioRef {
    pub name: String,
    pub variant: Variant,
    /// What the per-unit figures (`per_thread`, `slope`) are per.
    pub unit: Unit,
}

impl From<ScenarioCase> for ScenarioRef {
    fn from(ScenarioCase { scenario, variant }: ScenarioCase) -> ScenarioRef {
        ScenarioRef { name: scenario.name.to_owned(), variant, unit: scenario.unit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_id_parses_back_to_itself() {
        for case in select(&["all".to_owned()]).unwrap() {
            assert_eq!(case.id().parse::<Case>().unwrap(), case);
        }
        for cell in Cell::all() {
            assert_eq!(Case::Cell(cell).id().parse::<Case>().unwrap(), Case::Cell(cell));
        }
    }

    #[test]
    fn names_are_unique_and_selection_keeps_corpus_order() {
        let mut names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        let picked =
            select(&["webkit-sample-thread-self".to_owned(), "ccl-thread-self".to_owned(), "all".to_owned()]).unwrap();
        assert_eq!(picked.len(), 2 * ALL.len());
        assert_eq!(picked[0].id(), "scenario=ccl-thread-self,variant=buggy");
        assert_eq!(picked[1].id(), "scenario=ccl-thread-self,variant=fixed");
    }

    #[test]
    fn bad_ids_name_what_is_wrong() {
        let e = "scenario=nope,variant=buggy".parse::<Case>().unwrap_err().to_string();
        assert!(e.starts_with("unknown scenario `nope` (scenarios: ccl-thread-self, "), "{e}");
        let e = "scenario=ccl-thread-self,variant=maybe".parse::<Case>().unwrap_err().to_string();
        assert!(e.contains("is not a scenario id"), "{e}");
        assert!("scenario=ccl-thread-self".parse::<Case>().is_err());
        assert!(select(&["nope".to_owned()]).is_err());
    }

    #[test]
    fn scenarios_that_are_cells_run_on_linux_and_the_others_say_why_not() {
        for s in ALL {
            match s.work {
                Work::Cells { buggy, fixed } => {
                    assert_ne!(buggy, fixed, "{}", s.name);
                    assert_eq!(s.unit, Unit::Thread, "{}", s.name);
                    assert!(s.not_on_linux().is_none());
                }
                Work::Mach { .. } => assert!(s.not_on_linux().is_some_and(|why| !why.is_empty())),
            }
        }
    }
}
