//! Linux: the probe is an `LD_PRELOAD` library. Its exported `pthread_create` comes before glibc's in
//! symbol lookup; the real one is found with `dlsym(RTLD_NEXT)`. A constructor in `.init_array` starts
//! the probe, a TSD destructor sees each created thread end, and `atexit` takes the last sample.

use std::ffi::{c_int, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;
type PthreadCreate =
    unsafe extern "C" fn(*mut libc::pthread_t, *const libc::pthread_attr_t, StartRoutine, *mut c_void) -> c_int;

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    super::on_load();
}

static REAL: OnceLock<Option<PthreadCreate>> = OnceLock::new();
static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();

fn real_pthread_create() -> Option<PthreadCreate> {
    *REAL.get_or_init(|| {
        // SAFETY: RTLD_NEXT with a NUL-terminated name; the symbol, if found, is glibc's pthread_create,
        // whose type is PthreadCreate.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) };
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, PthreadCreate>(sym) })
    })
}

extern "C" fn thread_ended(_: *mut c_void) {
    super::on_thread_end();
}

extern "C" fn at_exit() {
    super::on_exit();
}

/// Creates the TSD key and registers the exit sample; false when the probe cannot work.
pub fn install() -> bool {
    if real_pthread_create().is_none() {
        return false;
    }
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

/// What a created thread runs first: its end is then seen by the TSD destructor, however it ends.
struct Start {
    routine: StartRoutine,
    arg: *mut c_void,
}

extern "C" fn trampoline(start: *mut c_void) -> *mut c_void {
    // SAFETY: `start` is the Box leaked by pthread_create below for this thread alone.
    let start = unsafe { Box::from_raw(start.cast::<Start>()) };
    if let Some(&key) = KEY.get() {
        // SAFETY: the key exists; any non-null value makes the destructor run at the thread's end.
        unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<c_void>()) };
    }
    (start.routine)(start.arg)
}

/// The interposed `pthread_create`.
///
/// # Safety
/// The caller's contract is `pthread_create`'s.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let Some(real) = real_pthread_create() else { return libc::EAGAIN };
    if !super::active() {
        // SAFETY: the caller's arguments, passed on unchanged.
        return unsafe { real(thread, attr, routine, arg) };
    }
    super::before_create();
    let start = Box::into_raw(Box::new(Start { routine, arg }));
    // SAFETY: the caller's arguments, with our trampoline and its box in place of routine and arg.
    let ret = unsafe { real(thread, attr, trampoline, start.cast()) };
    if ret != 0 {
        // SAFETY: the thread was not created, so the box is still ours.
        drop(unsafe { Box::from_raw(start) });
        super::create_failed();
    }
    ret
}
