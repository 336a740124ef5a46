//! macOS: the probe is a `DYLD_INSERT_LIBRARIES` library whose `__DATA,__interpose` section tells dyld
//! to bind every other image's `pthread_create` to ours (dyld's interposing; calls from this image reach
//! the real one). A constructor in `__DATA,__mod_init_func` starts the probe. SIP-protected binaries never
//! load it: dyld strips `DYLD_*` variables for them.

use std::ffi::{c_int, c_void};

use super::unix::{self, StartRoutine};

#[used]
#[link_section = "__DATA,__mod_init_func"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    super::on_load();
}

/// One entry of the interposing table: (replacement, replaced), as dyld reads it.
#[repr(C)]
struct Interpose {
    replacement: *const c_void,
    replaced: *const c_void,
}

// SAFETY: the table is immutable data that only dyld reads.
unsafe impl Sync for Interpose {}

#[used]
#[link_section = "__DATA,__interpose"]
static INTERPOSE_PTHREAD_CREATE: Interpose =
    Interpose { replacement: probe_pthread_create as *const c_void, replaced: libc::pthread_create as *const c_void };

/// Installs the probe's hooks; false when it cannot work.
pub fn install() -> bool {
    unix::install_hooks()
}

/// The replacement dyld binds other images' `pthread_create` to.
unsafe extern "C" fn probe_pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the caller's thread and attr, with a start routine and argument that pthread may run.
    unix::create(|routine, arg| unsafe { libc::pthread_create(thread, attr, routine, arg) }, routine, arg)
}
