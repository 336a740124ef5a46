//! The Mach backends: one workload and one census, written against [`Mach`], the trait of exactly the Mach
//! and pthread calls they make.
//!
//! - `workload.rs`: every axis realized with Mach calls, the census and the settle step (portable);
//! - `scenarios.rs`: the corpus's workloads that are not matrix cells (portable);
//! - `sim/`: mach-sim, a model of one task's IPC space under XNU's rules (portable);
//! - `tracked.rs`: either of them, with the stack of every call that adds a reference recorded (sites);
//! - `real.rs`: the calls themselves, on macOS (mach2, libc, and `ffi.rs`), and the process listings
//!   `exec`'s clean-up uses there;
//! - `procargs.rs`: another process's environment, from the reply macOS gives (portable);
//! - the C types, constants and functions declared by hand (`kern_return`, `port`, `exception`, `ffi`,
//!   recorded for the ABI check, `abi`) and the census itself are in the `threadleak-census` crate
//!   (`census/src/mach/`), which the probe shares; `workload.rs` takes its census from there.
//!
//! The trait speaks Mach's own language: `kern_return_t` codes, `mach_port_name_t` names,
//! `MACH_PORT_RIGHT_*` rights. Only the pthread calls return an errno.

pub mod procargs;
#[cfg(target_os = "macos")]
pub mod real;
mod scenarios;
pub mod sim;
pub mod tracked;
mod workload;

pub use scenarios::ScenarioWorkload;
pub use threadleak_census::mach::{abi, exception, ffi, kern_return, port, KernResult};
pub use workload::{census, inventory, MachWorkload, COUNTERS};

use exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t};
use port::{
    mach_msg_type_name_t, mach_port_delta_t, mach_port_name_t, mach_port_right_t, mach_port_t, mach_port_type_t,
    mach_port_urefs_t,
};

/// Kernel object types (`IKOT_*`) that [`Mach::mach_port_kobject`] answers and the inventory names:
/// osfmk/kern/ipc_kobject.h:87-110 in xnu-11417.121.6, the same numbers from xnu-1504.15.3 on (its
/// ipc_kobject.h:90-113, where the thread's is named `IKOT_THREAD`). The header
/// is the kernel's own, not the SDK's, so these are not in the ABI check.
pub const IKOT_NONE: u32 = 0;
pub const IKOT_THREAD_CONTROL: u32 = 1;
pub const IKOT_TASK_CONTROL: u32 = 2;
pub const IKOT_HOST: u32 = 3;
pub const IKOT_SEMAPHORE: u32 = 23;

/// One exception handler slot as `thread_swap_exception_ports` returns it (the `masks`, `old_handlers`,
/// `old_behaviors` and `old_flavors` arrays, zipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionHandler {
    pub mask: exception_mask_t,
    /// A send right the caller now owns, or `MACH_PORT_NULL`.
    pub port: mach_port_t,
    pub behavior: exception_behavior_t,
    pub flavor: thread_state_flavor_t,
}

/// The Mach and pthread calls the workload and census make, in one task.
///
/// Implementations: the XNU model (`sim/`) and, on macOS, the real calls. Methods are named after the C
/// functions they stand for and follow their semantics; the documentation of each says only what the
/// workload relies on.
pub trait Mach: Sync {
    /// A pthread, as `pthread_create` returns it.
    type Thread;

    /// `pthread_create` with the given detach state. The new thread runs `body`; when it ends, a
    /// thread-specific-data destructor (`pthread_key_create`, `pthread_setspecific`) runs `on_exit` on
    /// it, as Clozure CL's `shutdown_thread_tcr` runs. Returns once `on_exit` has returned; the thread may
    /// still be terminating. `Err` holds the errno.
    fn pthread_create(
        &self,
        detached: bool,
        body: &(dyn Fn() + Sync),
        on_exit: &(dyn Fn() + Sync),
    ) -> Result<Self::Thread, i32>;

    /// `pthread_join`. `Err` holds the errno.
    fn pthread_join(&self, thread: Self::Thread) -> Result<(), i32>;

    /// `pthread_mach_thread_np(pthread_self())`: the calling thread's port name, which libpthread holds
    /// one reference to. Adds no reference.
    fn pthread_mach_thread_np_self(&self) -> mach_port_t;

    /// `mach_thread_self()`: the calling thread's port name, with one more user reference.
    fn mach_thread_self(&self) -> mach_port_t;

    /// `mach_host_self()`: the host port's name, with one more user reference (`host_self_trap`).
    fn mach_host_self(&self) -> mach_port_t;

    /// `task_threads(mach_task_self(), ...)`: a send right to each thread of the task, each copied out
    /// into the space (a user reference more on the name of a thread the space already names). The
    /// out-of-line array the names come in is memory, counted by no Mach counter: implementations give it
    /// back with `vm_deallocate` themselves.
    fn task_threads(&self) -> KernResult<Vec<mach_port_t>>;

    /// Starts a thread that stays alive and idle until the process ends, as a runtime's long-lived threads
    /// do (`task_threads` lists it). `Err` holds the errno.
    fn spawn_idle_thread(&self) -> Result<(), i32>;

    /// `mach_port_allocate(mach_task_self(), right, &name)`.
    fn mach_port_allocate(&self, right: mach_port_right_t) -> KernResult<mach_port_name_t>;

    /// `mach_port_insert_right(mach_task_self(), name, poly, poly_poly)`.
    fn mach_port_insert_right(
        &self,
        name: mach_port_name_t,
        poly: mach_port_t,
        poly_poly: mach_msg_type_name_t,
    ) -> KernResult<()>;

    /// `mach_port_deallocate(mach_task_self(), name)`.
    fn mach_port_deallocate(&self, name: mach_port_name_t) -> KernResult<()>;

    /// `mach_port_mod_refs(mach_task_self(), name, right, delta)`.
    fn mach_port_mod_refs(
        &self,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> KernResult<()>;

    /// `mach_port_get_refs(mach_task_self(), name, right, &refs)`.
    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t>;

    /// `mach_port_type(mach_task_self(), name, &type)`.
    fn mach_port_type(&self, name: mach_port_name_t) -> KernResult<mach_port_type_t>;

    /// `mach_port_kobject(mach_task_self(), name, &type, &addr)`: the kernel object type (`IKOT_*`) of the
    /// port a send or receive right names. Release kernels answer an ordinary task in every era
    /// covered (they are configured with `MACH_IPC_DEBUG`; see `sim/space.rs`, `kobject`).
    fn mach_port_kobject(&self, name: mach_port_name_t) -> KernResult<u32>;

    /// Whether the calling thread has a MIG reply port: the receive right its first MIG call makes and
    /// keeps in the thread's `__TSD_MIG_REPLY` slot (libsyscall/mach/mig_reply_port.c:59-75 and
    /// libsyscall/os/tsd.h:38 in xnu-11417.121.6) until the thread ends (libpthread-330.201.1
    /// src/pthread.c:742-743). The model makes none: there, always true.
    fn has_reply_port(&self) -> bool;

    /// `mig_dealloc_reply_port(mig_get_reply_port())`: destroys the calling thread's reply port and
    /// clears its slot (mig_reply_port.c:81-94), so that the thread's next MIG call makes a new one.
    fn drop_reply_port(&self);

    /// `mach_port_names(mach_task_self(), ...)`: every name in the task's space with its type.
    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>>;

    /// `thread_swap_exception_ports(thread, mask, new_port, behavior, flavor, ...)`: installs `new_port`
    /// for the exceptions in `mask` and returns the handlers it replaced.
    fn thread_swap_exception_ports(
        &self,
        thread: mach_port_t,
        mask: exception_mask_t,
        new_port: mach_port_t,
        behavior: exception_behavior_t,
        flavor: thread_state_flavor_t,
    ) -> KernResult<Vec<ExceptionHandler>>;

    /// Lets time pass between two polls of the settle step: a short sleep on a real kernel, a step of
    /// the model's clock in the model.
    fn settle_pause(&self);

    /// Facts about how the calls were realized that a reader of the record needs.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// What the calls made that the space still holds, by the site that made it ([`tracked::Tracked`]);
    /// `None` where calls are not tracked.
    fn site_tally(&self) -> Option<crate::backend::SiteTally> {
        None
    }

    /// Site `id` of [`Mach::site_tally`]: its call, counter and frames.
    fn site(&self, id: u32) -> Option<crate::record::SiteRecord> {
        let _ = id;
        None
    }
}
