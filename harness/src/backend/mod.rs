//! Backends: how a cell's workload is realized and how the process's resources are counted.
//!
//! Each backend lives in its own file; this module is the only place that chooses between them, and the
//! only place (with those files) that may name a target OS. The portable code sees [`Backend`] and the
//! [`Workload`] trait.
//!
//! | backend | axis realized in | counters |
//! |---|---|---|
//! | `linux` | `linux.rs`: `thread_main` (self, exc), `on_thread_exit` (fix), `Linux::cycle` (thread) | `fds maps vm_kib timers tasks` |

use std::fmt;
use std::str::FromStr;

use crate::matrix::Cell;
use crate::record::{Failure, Os, Params};

#[cfg(target_os = "linux")]
mod linux;

/// A way of running the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// The Linux kernel's analog resources, measured for real.
    #[value(name = "linux")]
    Linux,
}

impl Backend {
    pub const ALL: &'static [Backend] = &[Backend::Linux];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Linux => "linux",
        }
    }

    /// The backend that measures the machine this build runs on, if there is one.
    pub fn native() -> Option<Backend> {
        if cfg!(target_os = "linux") {
            Some(Backend::Linux)
        } else {
            None
        }
    }

    /// Counter names, in the order records and tables show them.
    pub fn counters(self) -> &'static [&'static str] {
        match self {
            Backend::Linux => &["fds", "maps", "vm_kib", "timers", "tasks"],
        }
    }

    /// Environment a child needs before it starts (read by the dynamic loader, so it cannot be set later).
    pub fn child_env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // glibc caches up to 40 MiB of freed thread stacks and reuses them, which makes `maps` and
            // `vm_kib` depend on history; with the cache off every freed stack is unmapped at once.
            // One malloc arena keeps thread bodies from creating per-thread heaps.
            Backend::Linux => &[("GLIBC_TUNABLES", "glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1")],
        }
    }

    /// Describes the machine, as far as the backend can read it.
    pub fn os(self) -> Os {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Linux => linux::os(),
            #[cfg(not(target_os = "linux"))]
            Backend::Linux => Os::default(),
        }
    }

    /// Prepares a cell's workload in the calling process (the child).
    pub fn open(self, cell: Cell, params: &Params) -> Result<Box<dyn Workload>, CallError> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Linux => Ok(Box::new(linux::Linux::open(cell, params)?)),
            #[cfg(not(target_os = "linux"))]
            Backend::Linux => {
                let _ = (cell, params);
                Err(CallError { call: "the linux backend (this is not Linux)", errno: libc::ENOSYS })
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        Backend::ALL.iter().copied().find(|b| b.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Backend::ALL.iter().map(|b| b.as_str()).collect();
            format!("unknown backend `{s}` (backends: {})", names.join(", "))
        })
    }
}

/// A system call that failed, with the errno it set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallError {
    pub call: &'static str,
    pub errno: i32,
}

impl CallError {
    /// The errno's symbolic name (`EMFILE`), or its number when it has none.
    pub fn errno_name(&self) -> String {
        let name = format!("{:?}", nix::errno::Errno::from_raw(self.errno));
        if name == "UnknownErrno" {
            format!("errno {}", self.errno)
        } else {
            name
        }
    }
}

impl CallError {
    /// The failure as a record states it; `cycle` is the measured cycle it happened at.
    pub fn at_cycle(self, cycle: i64) -> Failure {
        Failure::Call { call: self.call.to_owned(), errno: self.errno, errno_name: self.errno_name(), cycle }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {} (errno {})", self.call, self.errno_name(), self.errno)
    }
}

/// The settle step gave up: exited threads did not go away in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleError {
    pub waited_ms: u64,
    /// What was still outstanding, e.g. `tasks 2, baseline 1`.
    pub detail: String,
}

/// Why the settle step could not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleFailure {
    TimedOut(SettleError),
    Call(CallError),
}

impl From<CallError> for SettleFailure {
    fn from(e: CallError) -> SettleFailure {
        SettleFailure::Call(e)
    }
}

/// One cell's workload inside a child process.
///
/// The child calls `cycle` once per thread, and at each checkpoint `settle` then `census`. Between
/// `settle` and `census` nothing else runs in the process.
pub trait Workload {
    /// Creates one thread that realizes the cell and returns once the thread has finished its work
    /// (joined, for joined threads). The thread may still be exiting.
    fn cycle(&mut self) -> Result<(), CallError>;

    /// Waits until every thread that has finished its work is gone from the kernel's and the C library's
    /// books, so that a census counts only what is left behind.
    fn settle(&mut self) -> Result<(), SettleFailure>;

    /// Reads every counter, in [`Backend::counters`] order, into `out`. Must not allocate.
    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError>;

    /// Facts about how the workload was realized that a reader of the record needs (a fallback taken).
    fn notes(&self) -> Vec<String>;
}
