//! threadleak-census: what both the `threadleak` harness and the probe it loads into programs count with.
//!
//! - [`census`]: this process's counters, read without allocating, on the OS it runs on (`linux.rs`:
//!   `fds maps vm_kib timers tasks` from procfs; `mach/`: Mach port names, rights and user references);
//! - [`mach`]: the Mach declarations made by hand and checked against the SDK headers (`mach/abi.rs`),
//!   and the census written once over [`mach::PortSpace`], which the harness's model also answers;
//! - [`channel`] and [`counts`]: the memory `threadleak exec` shares with its probe;
//! - [`stack`]: the calling thread's stack, for the sites the harness records in process.
//!
//! It depends on `libc` and `nix` only (and `mach2` on macOS), so that the probe's build, nested in the
//! harness's, compiles nothing the harness's own build compiles beside it.

pub mod channel;
pub mod counts;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod mach;
pub mod stack;

use std::fmt;

/// How a failed call said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// An errno value (POSIX calls, and the pthread functions that return one).
    Errno(i32),
    /// A `kern_return_t` (Mach calls).
    Kern(i32),
}

/// A call that failed, and the code it failed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallError {
    pub call: &'static str,
    pub code: Code,
}

impl CallError {
    pub fn errno(call: &'static str, errno: i32) -> CallError {
        CallError { call, code: Code::Errno(errno) }
    }

    pub fn kern(call: &'static str, kr: i32) -> CallError {
        CallError { call, code: Code::Kern(kr) }
    }

    /// The code's symbolic name (`EMFILE`, `KERN_INVALID_NAME`), or its number when it has none.
    pub fn code_name(&self) -> String {
        match self.code {
            Code::Errno(errno) => {
                let name = format!("{:?}", nix::errno::Errno::from_raw(errno));
                if name == "UnknownErrno" {
                    format!("errno {errno}")
                } else {
                    name
                }
            }
            Code::Kern(kr) => mach::kern_return::name(kr).map_or_else(|| format!("kern_return_t {kr}"), str::to_owned),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, n) = match self.code {
            Code::Errno(e) => ("errno", e),
            Code::Kern(kr) => ("kern_return_t", kr),
        };
        write!(f, "{} failed: {} ({what} {n})", self.call, self.code_name())
    }
}

/// The counters of a Linux census, in order.
pub const LINUX_COUNTERS: &[&str] = &["fds", "maps", "vm_kib", "timers", "tasks"];

/// The counters [`census`] fills on this OS, in order; empty where there is no native census.
pub fn counters() -> &'static [&'static str] {
    #[cfg(target_os = "linux")]
    return LINUX_COUNTERS;
    #[cfg(not(target_os = "linux"))]
    if cfg!(target_os = "macos") {
        mach::COUNTERS
    } else {
        &[]
    }
}

#[cfg(target_os = "linux")]
pub use linux::{SetApart, StackQuery};

/// A thread stack a census may set apart (Linux; elsewhere no counter sees stacks).
#[cfg(not(target_os = "linux"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackQuery {
    pub tcb: usize,
    pub min_block: usize,
    pub found: bool,
}

/// What a census set apart.
#[cfg(not(target_os = "linux"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetApart {
    pub maps: i64,
    pub kib: i64,
}

/// A census of this very process, in [`counters`] order: what `threadleak exec`'s probe samples inside
/// the program it measures, and what `threadleak::check` and the Linux matrix count.
pub fn census(out: &mut [i64]) -> Result<(), CallError> {
    census_setting_apart(out, &mut []).map(|_| ())
}

/// Like [`census`], with the stacks of threads in flight (`stacks`, sorted by `tcb`) set apart where a
/// counter would count them (Linux's `maps` and `vm_kib`).
pub fn census_setting_apart(out: &mut [i64], stacks: &mut [StackQuery]) -> Result<SetApart, CallError> {
    #[cfg(target_os = "linux")]
    return linux::census_setting_apart(out, stacks);
    #[cfg(target_os = "macos")]
    {
        let _ = stacks;
        mach::census(&mach::native::Native, out).map(|()| SetApart::default())
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = (out, stacks);
        Err(CallError::errno("a census (no native backend on this OS)", libc::ENOSYS))
    }
}

/// Whether the thread the kernel knows as `id` in this process is gone: on Linux `id` is its tid; on
/// macOS the name of its thread port, which turns into a dead name (or goes) when the thread is gone.
pub fn thread_gone(id: i64) -> bool {
    #[cfg(target_os = "linux")]
    return linux::thread_gone(id);
    #[cfg(target_os = "macos")]
    return mach::native::thread_gone(id);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = id;
        true
    }
}
