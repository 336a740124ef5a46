//! macOS: the probe is a `DYLD_INSERT_LIBRARIES` library whose `__DATA,__interpose` section tells dyld
//! to bind every other image's `pthread_create` to ours (dyld's interposing; calls from this image reach
//! the real one). A constructor in `__DATA,__mod_init_func` starts the probe, a TSD destructor sees each
//! created thread end, and `atexit` takes the last sample. SIP-protected binaries never load it: dyld
//! strips `DYLD_*` variables for them.

use std::ffi::{c_int, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;

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

static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();

extern "C" fn thread_ended(_: *mut c_void) {
    super::on_thread_end();
}

extern "C" fn at_exit() {
    super::on_exit();
}

/// Creates the TSD key and registers the exit sample; false when the probe cannot work.
pub fn install() -> bool {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is valid for writing; the destructor has the signature pthread expects.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_ended)) } != 0 {
        return false;
    }
    let _ = KEY.set(key);
    // SAFETY: registers a function with no preconditions.
    unsafe { libc::atexit(at_exit) == 0 }
}

/// Opens the samples file for appending; the descriptor is not inherited across exec.
pub fn open_append(path: &OsStr) -> Option<c_int> {
    let mut bytes = path.as_bytes().to_vec();
    bytes.push(0);
    // SAFETY: `bytes` is NUL-terminated.
    let fd = unsafe {
        libc::open(bytes.as_ptr().cast(), libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, 0o600)
    };
    (fd >= 0).then_some(fd)
}

/// Appends `bytes` with one `write` (O_APPEND keeps lines from several processes whole).
pub fn write_all(fd: c_int, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for its length.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

struct Start {
    routine: StartRoutine,
    arg: *mut c_void,
}

extern "C" fn trampoline(start: *mut c_void) -> *mut c_void {
    // SAFETY: `start` is the Box leaked by probe_pthread_create for this thread alone.
    let start = unsafe { Box::from_raw(start.cast::<Start>()) };
    if let Some(&key) = KEY.get() {
        // SAFETY: the key exists; any non-null value makes the destructor run at the thread's end.
        unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<c_void>()) };
    }
    (start.routine)(start.arg)
}

/// The replacement dyld binds other images' `pthread_create` to.
unsafe extern "C" fn probe_pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    if !super::active() {
        // SAFETY: the caller's arguments, passed on unchanged to the real function.
        return unsafe { libc::pthread_create(thread, attr, routine, arg) };
    }
    super::before_create();
    let start = Box::into_raw(Box::new(Start { routine, arg }));
    // SAFETY: the caller's arguments, with our trampoline and its box in place of routine and arg.
    let ret = unsafe { libc::pthread_create(thread, attr, trampoline, start.cast()) };
    if ret != 0 {
        // SAFETY: the thread was not created, so the box is still ours.
        drop(unsafe { Box::from_raw(start) });
        super::create_failed();
    }
    ret
}
