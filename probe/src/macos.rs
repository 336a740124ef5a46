//! macOS: the probe is a `DYLD_INSERT_LIBRARIES` library whose `__DATA,__interpose` section tells dyld
//! to bind every other image's `pthread_create`, `pthread_join` and `pthread_detach` to ours (dyld's
//! interposing; calls from this image reach the real ones). A constructor in `__DATA,__mod_init_func`
//! starts the probe. SIP-protected and hardened-runtime binaries never load it: dyld ignores `DYLD_*`
//! variables for them (`threadleak exec` tells them apart before the run).
//!
//! No Mach counter sees a thread's stack, so threads are booked without one (nothing to set apart).

use std::ffi::{c_int, c_void};

use super::unix::{self, StartRoutine};
use super::Creation;

#[used]
#[link_section = "__DATA,__mod_init_func"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    super::on_load();
}

/// One entry of the interposing table: (replacement, replaced), as dyld reads it.
#[repr(C)]
pub(crate) struct Interpose {
    replacement: *const c_void,
    replaced: *const c_void,
}

impl Interpose {
    pub(crate) const fn of(replacement: *const c_void, replaced: *const c_void) -> Interpose {
        Interpose { replacement, replaced }
    }
}

#[path = "macos_calls.rs"]
mod calls;
pub use calls::{describe, held, own_code, with_module_of, CALLS};

// SAFETY: the table is immutable data that only dyld reads.
unsafe impl Sync for Interpose {}

#[used]
#[link_section = "__DATA,__interpose"]
static INTERPOSE: [Interpose; 3] = [
    Interpose { replacement: probe_pthread_create as *const c_void, replaced: libc::pthread_create as *const c_void },
    Interpose { replacement: probe_pthread_join as *const c_void, replaced: libc::pthread_join as *const c_void },
    Interpose { replacement: probe_pthread_detach as *const c_void, replaced: libc::pthread_detach as *const c_void },
];

/// Installs the probe's hooks; false when it cannot work.
pub fn install() -> bool {
    unix::install_hooks()
}

/// The kernel's id for the calling thread: the name of its thread port, which libpthread holds a
/// reference to (`pthread_mach_thread_np` adds none, libpthread `src/pthread.c`).
pub fn thread_id() -> i64 {
    // SAFETY: pthread_self is always valid for the calling thread.
    i64::from(unsafe { libc::pthread_mach_thread_np(libc::pthread_self()) })
}

fn creation(attr: *const libc::pthread_attr_t) -> Creation {
    let mut state = libc::PTHREAD_CREATE_JOINABLE;
    if !attr.is_null() {
        // SAFETY: the caller's initialized attribute object; `state` is valid for writing.
        unsafe { libc::pthread_attr_getdetachstate(attr, &mut state) };
    }
    Creation { block: 0, detached: state == libc::PTHREAD_CREATE_DETACHED, own_stack: false }
}

/// The replacement dyld binds other images' `pthread_create` to.
unsafe extern "C" fn probe_pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let call = |routine, arg| {
        // SAFETY: the caller's thread and attr, with a start routine and argument that pthread may run.
        let ret = unsafe { libc::pthread_create(thread, attr, routine, arg) };
        // SAFETY: on success pthread_create has written the new thread's id to `thread`.
        let id = if ret == 0 && !thread.is_null() { unsafe { *thread } } else { 0 };
        (ret, id)
    };
    unix::create(call, routine, arg, creation(attr))
}

/// The replacement for `pthread_join`.
unsafe extern "C" fn probe_pthread_join(thread: libc::pthread_t, ret: *mut *mut c_void) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    unix::joined(thread, unsafe { libc::pthread_join(thread, ret) })
}

/// The replacement for `pthread_detach`.
unsafe extern "C" fn probe_pthread_detach(thread: libc::pthread_t) -> c_int {
    // SAFETY: the caller's argument, passed on.
    unix::detached(thread, unsafe { libc::pthread_detach(thread) })
}
