//! Backends: how a cell's workload is realized and how the process's resources are counted.
//!
//! Each backend lives in its own file; this module is the only place that chooses between them, and the
//! only place (with those files) that may name a target OS. The portable code sees [`Backend`] and the
//! [`Workload`] trait.
//!
//! | backend | axis realized in | counters |
//! |---|---|---|
//! | `linux` | `linux.rs`: `thread_main` (self, exc), `on_thread_exit` (fix), `Linux::cycle` (thread) | `fds maps vm_kib timers tasks` |
//! | `mach-sim` | `mach/workload.rs`: `take_self_references` (self), `install_exception_port` (exc), `balance_thread_port` (fix), `MachWorkload::cycle` (thread); over the model in `mach/sim/` | `names send receive send_once port_set dead urefs` |
//! | `macos` | the same Mach workload, over the real calls in `mach/real.rs` | as `mach-sim` |
//!
//! Scenarios of the corpus (`scenario.rs`) whose unit is a thread run as matrix cells; the others are Mach
//! workloads of their own (`mach/scenarios.rs`), on `mach-sim` and `macos`.

use std::fmt;

use crate::matrix::Cell;
use crate::record::{Failure, Os, Params};
use crate::scenario::{Case, MachWork, Realization, Variant};

#[cfg(target_os = "linux")]
mod linux;
pub mod mach;

/// A backend's name, as `--backend` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BackendName {
    /// The Linux kernel's analog resources, measured for real.
    #[cfg_attr(feature = "cli", value(name = "linux"))]
    Linux,
    /// A model of XNU's port-rights rules running the Mach workload (any OS).
    #[cfg_attr(feature = "cli", value(name = "mach-sim"))]
    MachSim,
    /// The Mach workload on this Mac's kernel.
    #[cfg_attr(feature = "cli", value(name = "macos"))]
    Macos,
}

/// A way of running the matrix, with its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The Linux kernel's analog resources, measured for real (`linux.rs`).
    Linux,
    /// The Mach workload on the XNU model (`mach/sim/`).
    MachSim(ModelOptions),
    /// The Mach workload on the real kernel (`mach/real.rs`).
    Macos,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Linux => "linux",
            Backend::MachSim(_) => "mach-sim",
            Backend::Macos => "macos",
        }
    }

    /// The backend that measures the machine this build runs on, if there is one.
    pub fn native() -> Option<Backend> {
        if cfg!(target_os = "linux") {
            Some(Backend::Linux)
        } else if cfg!(target_os = "macos") {
            Some(Backend::Macos)
        } else {
            None
        }
    }

    /// Counter names, in the order records and tables show them.
    pub fn counters(self) -> &'static [&'static str] {
        match self {
            Backend::Linux => threadleak_census::LINUX_COUNTERS,
            Backend::MachSim(_) | Backend::Macos => mach::COUNTERS,
        }
    }

    /// The arguments that select this backend on a child's command line.
    pub fn child_args(self) -> Vec<String> {
        let mut args = vec!["--backend".to_owned(), self.as_str().to_owned()];
        if let Backend::MachSim(model) = self {
            args.extend(["--profile".to_owned(), model.profile.name().to_owned()]);
            args.extend(["--sim-delay".to_owned(), model.delay.to_string()]);
            args.extend(["--task".to_owned(), model.task.name().to_owned()]);
        }
        args
    }

    /// Environment a child needs before it starts (read by the dynamic loader, so it cannot be set later).
    pub fn child_env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // glibc caches up to 40 MiB of freed thread stacks and reuses them, which makes `maps` and
            // `vm_kib` depend on history; with the cache off every freed stack is unmapped at once.
            // One malloc arena keeps thread bodies from creating per-thread heaps.
            Backend::Linux => &[("GLIBC_TUNABLES", "glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1")],
            Backend::MachSim(_) | Backend::Macos => &[],
        }
    }

    /// Describes the machine the children run on (for the model too: the modelled system is in
    /// [`Backend::model`]).
    pub fn os(self) -> Os {
        host_os()
    }

    /// The model's settings, for the record.
    pub fn model(self) -> Option<ModelOptions> {
        match self {
            Backend::MachSim(model) => Some(model),
            Backend::Linux | Backend::Macos => None,
        }
    }

    /// Prepares a case's workload in the calling process (the child).
    pub fn open(self, case: Case, params: &Params) -> Result<Box<dyn Workload>, CallError> {
        match case.realization() {
            Realization::Cell(cell) => self.open_cell(cell, params),
            Realization::Mach(work, variant) => self.open_mach_scenario(case, work, variant, params),
        }
    }

    fn open_cell(self, cell: Cell, params: &Params) -> Result<Box<dyn Workload>, CallError> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Linux => Ok(Box::new(linux::Linux::open(cell, params)?)),
            #[cfg(not(target_os = "linux"))]
            Backend::Linux => {
                let _ = (cell, params);
                Err(CallError::errno("the linux backend (this is not Linux)", libc::ENOSYS))
            }
            Backend::MachSim(model) => Ok(Box::new(mach::MachWorkload::new(
                mach::tracked::Tracked::new(mach::sim::Sim::with_task(model.profile, model.delay, model.task)),
                cell,
                params,
            )?)),
            #[cfg(target_os = "macos")]
            Backend::Macos => Ok(Box::new(mach::MachWorkload::new(
                mach::tracked::Tracked::new(mach::real::Real::new()?),
                cell,
                params,
            )?)),
            #[cfg(not(target_os = "macos"))]
            Backend::Macos => {
                let _ = (cell, params);
                Err(CallError::errno("the macos backend (this is not macOS)", libc::ENOSYS))
            }
        }
    }

    fn open_mach_scenario(
        self,
        case: Case,
        work: MachWork,
        variant: Variant,
        params: &Params,
    ) -> Result<Box<dyn Workload>, CallError> {
        match self {
            Backend::Linux => {
                let _ = case;
                Err(CallError::errno("the scenario's Mach calls (it has no Linux analog)", libc::ENOSYS))
            }
            Backend::MachSim(model) => Ok(Box::new(mach::ScenarioWorkload::new(
                mach::tracked::Tracked::new(mach::sim::Sim::with_task(model.profile, model.delay, model.task)),
                work,
                variant,
                params,
            )?)),
            #[cfg(target_os = "macos")]
            Backend::Macos => {
                let api = mach::tracked::Tracked::new(mach::real::Real::new()?);
                Ok(Box::new(mach::ScenarioWorkload::new(api, work, variant, params)?))
            }
            #[cfg(not(target_os = "macos"))]
            Backend::Macos => {
                let _ = (work, variant, params);
                Err(CallError::errno("the macos backend (this is not macOS)", libc::ENOSYS))
            }
        }
    }

    /// Whether `case` can run on this backend: `Err` says why not.
    pub fn runs(self, case: &Case) -> Result<(), &'static str> {
        match (self, case) {
            (Backend::Linux, Case::Scenario(s)) => s.scenario.not_on_linux().map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A census of this very process by the native backend, in its counter order: what `threadleak exec`'s
/// probe samples inside the program it measures.
pub fn native_census(out: &mut [i64]) -> Result<(), CallError> {
    threadleak_census::census(out)
}

/// This process's real Mach calls, made once for the native inventory.
#[cfg(target_os = "macos")]
fn native_mach() -> Result<&'static mach::real::Real, CallError> {
    static REAL: std::sync::OnceLock<Result<mach::real::Real, CallError>> = std::sync::OnceLock::new();
    REAL.get_or_init(mach::real::Real::new).as_ref().map_err(|e| *e)
}

/// What [`native_census`] counts, by kind ([`Workload::inventory`]).
pub fn native_inventory() -> Result<Inventory, CallError> {
    #[cfg(target_os = "linux")]
    return linux::inventory();
    #[cfg(target_os = "macos")]
    return mach::inventory(native_mach()?);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    return Ok(Inventory::new());
}

pub use threadleak_census::{census_setting_apart as native_census_setting_apart, thread_gone as native_thread_gone};
pub use threadleak_census::{SetApart, StackQuery};

/// Arranges for this child to die with its runner (pid `runner`), where the OS offers that: Linux's
/// `PR_SET_PDEATHSIG`. Elsewhere the runner's interrupt handler and timeouts are what end children.
pub fn die_with_parent(runner: u32) -> Result<(), CallError> {
    #[cfg(target_os = "linux")]
    return linux::die_with_parent(runner);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = runner;
        Ok(())
    }
}

/// Has the program `command` will start die with its runner (`runner`, this process) however the runner
/// ends, where the OS offers that (Linux: `PR_SET_PDEATHSIG`); elsewhere the runner's interrupt handler,
/// timeouts and `threadleak exec`'s watchdog end it.
pub fn die_with_runner(command: &mut std::process::Command, runner: u32) {
    #[cfg(target_os = "linux")]
    linux::die_with_runner(command, runner);
    #[cfg(not(target_os = "linux"))]
    let _ = (command, runner);
}

/// `bytes` in a sealed anonymous file that other processes of this user open by the returned path, valid
/// while the returned descriptor is open; `None` where the OS has none (only Linux has `memfd_create`).
pub fn sealed_file(
    name: &std::ffi::CStr,
    bytes: &[u8],
) -> Option<std::io::Result<(std::path::PathBuf, std::os::fd::OwnedFd)>> {
    #[cfg(target_os = "linux")]
    return Some(linux::sealed_memfd(name, bytes).map(|fd| {
        let path = std::path::PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        (path, fd)
    }));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, bytes);
        None
    }
}

/// The CPUs the calling thread may run on, where the OS lets a process choose (Linux); empty elsewhere.
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    return linux::allowed_cpus();
    #[cfg(not(target_os = "linux"))]
    return Vec::new();
}

/// The CPU the calling thread runs on now, where that can be told (Linux).
pub fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    return linux::current_cpu();
    #[cfg(not(target_os = "linux"))]
    return None;
}

/// Keeps the calling thread, and the threads it creates from now on, on one CPU, where the OS offers
/// that (Linux); whether it was done.
pub fn stay_on_cpu(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    return linux::stay_on_cpu(cpu);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

/// Whether the calling thread is its process's main thread (the one `main` runs on); `false` where that
/// cannot be told.
pub fn on_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    return linux::on_main_thread();
    #[cfg(target_os = "macos")]
    return mach::real::on_main_thread();
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    return false;
}

/// Makes this process the reaper of its orphaned descendants, where the OS offers that (Linux); false
/// elsewhere, or when it failed.
pub fn adopt_orphans() -> bool {
    #[cfg(target_os = "linux")]
    return linux::adopt_orphans();
    #[cfg(not(target_os = "linux"))]
    return false;
}

/// The processes whose parent is `parent` (empty where it cannot be read: Linux and macOS here).
pub fn children_of(parent: u32) -> Vec<u32> {
    #[cfg(target_os = "linux")]
    return linux::children_of(parent);
    #[cfg(target_os = "macos")]
    return mach::real::children_of(parent);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = parent;
        Vec::new()
    }
}

/// This user's processes whose environment holds `entry` (`NAME=value`), but this one (empty where it
/// cannot be read: Linux and macOS here).
pub fn processes_with_env(entry: &[u8]) -> Vec<u32> {
    #[cfg(target_os = "linux")]
    return linux::processes_with_env(entry);
    #[cfg(target_os = "macos")]
    return mach::real::processes_with_env(entry);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = entry;
        Vec::new()
    }
}

/// Bytes of address space this process may still map under its `ulimit -v`, where that is enforced and
/// set (Linux); `None` otherwise.
pub fn address_space_left() -> Option<u64> {
    #[cfg(target_os = "linux")]
    return linux::address_space_left();
    #[cfg(not(target_os = "linux"))]
    return None;
}

/// How many threads process `pid` has now, where that can be read (Linux, macOS).
pub fn thread_count(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    return linux::thread_count(pid);
    #[cfg(target_os = "macos")]
    return mach::real::thread_count(pid);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = pid;
        None
    }
}

/// The machine this process runs on.
fn host_os() -> Os {
    #[cfg(target_os = "linux")]
    return linux::os();
    #[cfg(target_os = "macos")]
    return mach::real::os();
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    return Os { family: std::env::consts::OS.to_owned(), arch: std::env::consts::ARCH.to_owned(), ..Os::default() };
}

/// The settings of the XNU model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelOptions {
    /// Whose rules the model follows.
    pub profile: mach::sim::Profile,
    /// Model clock steps between a thread's exit hook and the kernel's release of its port, and again
    /// until the port dies; 0 makes both immediate. Exercises the settle step.
    pub delay: u32,
    /// The modelled task: whether XNU delivers the optional guard exceptions to it.
    pub task: mach::sim::Task,
}

impl Default for ModelOptions {
    fn default() -> ModelOptions {
        ModelOptions { profile: mach::sim::Profile::Xnu11417, delay: 3, task: mach::sim::Task::ThirdParty }
    }
}

pub use threadleak_census::{CallError, Code};

/// A failed call as a record states it.
pub trait AtCycle {
    /// The failure, at measured cycle `cycle`.
    fn at_cycle(self, cycle: i64) -> Failure;
}

impl AtCycle for CallError {
    fn at_cycle(self, cycle: i64) -> Failure {
        match self.code {
            Code::Errno(errno) => {
                Failure::Call { call: self.call.to_owned(), errno, errno_name: self.code_name(), cycle }
            }
            Code::Kern(kr) => Failure::Kern { call: self.call.to_owned(), kr, kr_name: self.code_name(), cycle },
        }
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

    /// Reads every counter, in [`Backend::counters`] order, into `out`. The Linux census does not allocate
    /// (an allocation could move the counters it reads); the Mach census allocates in user memory, which
    /// no Mach counter sees.
    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError>;

    /// Facts about how the workload was realized that a reader of the record needs (a fallback taken).
    fn notes(&self) -> Vec<String>;

    /// What the census counts, by kind ([`Inventory`]): taken at the baseline and at the end only, after
    /// the census, since it may allocate. A backend that tells no kinds apart returns none.
    fn inventory(&mut self) -> Result<Inventory, CallError> {
        Ok(Inventory::new())
    }

    /// What the workload's own calls made that the process still holds, by the site (call stack) that
    /// made it; taken with the inventories. `None` where the backend records no sites.
    fn sites(&mut self) -> Option<SiteTally> {
        None
    }

    /// Site `id` of a tally: its call, counter and resolved frames (its figures left at zero).
    fn site(&self, id: u32) -> Option<crate::record::SiteRecord> {
        let _ = id;
        None
    }

    /// The threads the process runs, read just after a census, where threads the workload does not
    /// make one per cycle (a closure's pool, which grows when its threads are all busy) can be in flight
    /// at a census: what they hold is then set apart as threads in flight (the checkpoint's `live`).
    /// `None` for a cell, whose only threads are its cycles'.
    fn threads(&mut self) -> Option<u64> {
        None
    }
}

/// How many resources each site made that are still held, and what one of them is, by site id.
pub type SiteTally = std::collections::BTreeMap<u32, (i64, String)>;

/// How many of each kind of resource a process holds, by (counter, kind): (`fds`, `anon_inode:[pidfd]`),
/// (`maps`, `8 MiB rw-p anonymous, guard page below (a stack)`), (`names`, `dead name`), (`urefs`, `of dead names`).
pub type Inventory = std::collections::BTreeMap<(String, String), i64>;
