//! What the Linux and macOS probes share: the samples file, the thread-end hook, and the trampoline
//! every created thread starts in. The platform files add only how `pthread_create` is interposed.

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_int, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// The probe's one lock, held by a census and by `pthread_create` while it creates a thread. A raw
/// pthread mutex, so that fork handlers can hold it across `fork` and the child never inherits it taken.
struct Lock(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be shared between threads; it is only used through its functions.
unsafe impl Sync for Lock {}

static LOCK: Lock = Lock(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

thread_local! {
    /// Whether this thread holds the lock: a signal handler that lands during a census and calls
    /// `exit` or `pthread_create` must not wait for itself.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// The lock, held until dropped.
pub struct Held(());

/// Takes the lock, or `None` when this thread already holds it.
pub fn lock() -> Option<Held> {
    if HOLDING.with(Cell::get) {
        return None;
    }
    // SAFETY: the mutex is initialized statically and never moved.
    unsafe { libc::pthread_mutex_lock(LOCK.0.get()) };
    HOLDING.with(|h| h.set(true));
    Some(Held(()))
}

impl Drop for Held {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(false));
        // SAFETY: this thread took the mutex in `lock`.
        unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
    }
}

extern "C" fn before_fork() {
    // SAFETY: as in `lock`; given back by one of the two handlers below.
    unsafe { libc::pthread_mutex_lock(LOCK.0.get()) };
}

extern "C" fn after_fork_in_parent() {
    // SAFETY: taken by `before_fork` in this thread.
    unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
}

extern "C" fn after_fork_in_child() {
    // SAFETY: the child's copy, taken by `before_fork` in the thread that is the child's only one.
    unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
    super::forked();
}

pub type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;

static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();

extern "C" fn thread_ended(_: *mut c_void) {
    super::on_thread_end();
}

extern "C" fn at_exit() {
    super::on_exit();
}

/// Creates the TSD key whose destructor sees each created thread end, and registers the exit sample;
/// false when the probe cannot work.
pub fn install_hooks() -> bool {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is valid for writing; the destructor has the signature pthread expects.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_ended)) } != 0 {
        return false;
    }
    let _ = KEY.set(key);
    // SAFETY: registers functions with no preconditions.
    unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child)) == 0
            && libc::atexit(at_exit) == 0
    }
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

/// What a created thread runs first, so that its end is seen by the TSD destructor however it ends.
struct Start {
    routine: StartRoutine,
    arg: *mut c_void,
}

extern "C" fn trampoline(start: *mut c_void) -> *mut c_void {
    // SAFETY: `start` is the Box leaked by `create` for this thread alone.
    let start = unsafe { Box::from_raw(start.cast::<Start>()) };
    if let Some(&key) = KEY.get() {
        // SAFETY: the key exists; any non-null value makes the destructor run at the thread's end.
        unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<c_void>()) };
    }
    (start.routine)(start.arg)
}

/// The interposed `pthread_create`, given the real one: counts the thread and starts it in the
/// trampoline (or passes the call through while the probe is inactive).
pub fn create(real: impl FnOnce(StartRoutine, *mut c_void) -> c_int, routine: StartRoutine, arg: *mut c_void) -> c_int {
    if !super::active() {
        return real(routine, arg);
    }
    let start = Box::into_raw(Box::new(Start { routine, arg }));
    let ret = super::creating(|| real(trampoline, start.cast()), |&ret| ret == 0);
    if ret != 0 {
        // SAFETY: the thread was not created, so the box is still ours.
        drop(unsafe { Box::from_raw(start) });
    }
    ret
}
