//! Linux: the probe is an `LD_PRELOAD` library. Its exported `pthread_create`, `pthread_join` (and glibc's
//! `pthread_tryjoin_np`, `pthread_timedjoin_np`, `pthread_clockjoin_np`) and `pthread_detach` come before
//! the C library's in symbol lookup; the real ones are found with `dlsym(RTLD_NEXT)`. A constructor in
//! `.init_array` starts the probe.
//!
//! C11's `thrd_create` is not followed: glibc implements it with an internal call that no preload sees.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

use super::unix::{self, StartRoutine};
use super::Creation;

type PthreadCreate =
    unsafe extern "C" fn(*mut libc::pthread_t, *const libc::pthread_attr_t, StartRoutine, *mut c_void) -> c_int;
type PthreadJoin = unsafe extern "C" fn(libc::pthread_t, *mut *mut c_void) -> c_int;
type PthreadTimedJoin = unsafe extern "C" fn(libc::pthread_t, *mut *mut c_void, *const libc::timespec) -> c_int;
type PthreadClockJoin =
    unsafe extern "C" fn(libc::pthread_t, *mut *mut c_void, libc::clockid_t, *const libc::timespec) -> c_int;
type PthreadDetach = unsafe extern "C" fn(libc::pthread_t) -> c_int;

extern "C" {
    // glibc 2.18 (nptl/pthread_getattr_default_np.c): the attributes a thread created with NULL gets.
    fn pthread_getattr_default_np(attr: *mut libc::pthread_attr_t) -> c_int;
    // POSIX; the libc crate declares it for other systems only.
    fn pthread_attr_getdetachstate(attr: *const libc::pthread_attr_t, state: *mut c_int) -> c_int;
    // Deprecated but exported (glibc nptl/pthread_attr_getstackaddr.c): null unless the program set a
    // stack of its own, which `pthread_attr_getstack` cannot tell.
    fn pthread_attr_getstackaddr(attr: *const libc::pthread_attr_t, addr: *mut *mut c_void) -> c_int;
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    super::on_load();
}

/// The next definition of `name` after this library, typed as `F`.
pub(crate) fn next<F: Copy>(name: &'static [u8]) -> Option<F> {
    debug_assert_eq!(name.last(), Some(&0));
    // SAFETY: RTLD_NEXT with a NUL-terminated name.
    let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast::<c_char>()) };
    // SAFETY: each caller names the C function whose type is `F` (a function pointer, pointer-sized).
    (!sym.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&sym) })
}

/// The real function `$name` (a string, or `fn name` for an identifier), looked up once.
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static REAL: OnceLock<Option<$ty>> = OnceLock::new();
        *REAL.get_or_init(|| next::<$ty>(concat!($name, "\0").as_bytes()))
    }};
    (fn $name:ident, $ty:ty) => {{
        static REAL: OnceLock<Option<$ty>> = OnceLock::new();
        *REAL.get_or_init(|| next::<$ty>(concat!(stringify!($name), "\0").as_bytes()))
    }};
}

#[path = "linux_calls.rs"]
mod calls;
pub use calls::{describe, held, own_code, with_module_of, CALLS};

#[path = "linux_exec.rs"]
mod exec;

/// Installs the probe's hooks; false when it cannot work.
pub fn install() -> bool {
    exec::remember();
    exec::resolve();
    real!("pthread_create", PthreadCreate).is_some() && unix::install_hooks()
}

/// The kernel's id for the calling thread.
pub fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions.
    i64::from(unsafe { libc::gettid() })
}

/// What the attributes (or, for none, the process's defaults) say of the thread to be created.
fn creation(attr: *const libc::pthread_attr_t) -> Creation {
    // SAFETY: pthread_attr_t is plain data, filled by pthread_getattr_default_np before use.
    let mut defaults: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    let from = if attr.is_null() {
        // SAFETY: `defaults` is valid for writing.
        if unsafe { pthread_getattr_default_np(&mut defaults) } != 0 {
            return Creation { block: 0, detached: false, own_stack: false };
        }
        &defaults as *const libc::pthread_attr_t
    } else {
        attr
    };
    let (mut state, mut size, mut guard, mut addr) = (0, 0usize, 0usize, std::ptr::null_mut());
    // SAFETY: `from` is an initialized attribute object (the caller's, or the defaults); the outputs are
    // valid for writing.
    let ok = unsafe {
        pthread_attr_getdetachstate(from, &mut state) == 0
            && libc::pthread_attr_getstacksize(from, &mut size) == 0
            && libc::pthread_attr_getguardsize(from, &mut guard) == 0
            && pthread_attr_getstackaddr(from, &mut addr) == 0
    };
    if attr.is_null() {
        // SAFETY: initialized by pthread_getattr_default_np above, destroyed once.
        unsafe { libc::pthread_attr_destroy(&mut defaults) };
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    // glibc's block: the stack size, then the guard rounded up to pages (nptl/allocate_stack.c).
    let block = if ok { size + guard.div_ceil(page) * page } else { 0 };
    Creation { block, detached: ok && state == libc::PTHREAD_CREATE_DETACHED, own_stack: !addr.is_null() }
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
    let Some(real) = real!("pthread_create", PthreadCreate) else { return libc::EAGAIN };
    let how = creation(attr);
    let call = |routine, arg| {
        // SAFETY: the caller's thread and attr, with a start routine and argument that pthread may run.
        let ret = unsafe { real(thread, attr, routine, arg) };
        // SAFETY: on success pthread_create has written the new thread's id to `thread`.
        let tcb = if ret == 0 && !thread.is_null() { (unsafe { *thread }) as usize } else { 0 };
        (ret, tcb)
    };
    unix::create(call, routine, arg, how)
}

/// The interposed `pthread_join`.
///
/// # Safety
/// The caller's contract is `pthread_join`'s.
#[no_mangle]
pub unsafe extern "C" fn pthread_join(thread: libc::pthread_t, ret: *mut *mut c_void) -> c_int {
    let Some(real) = real!("pthread_join", PthreadJoin) else { return libc::ENOSYS };
    // SAFETY: the caller's arguments, passed on.
    unix::joined(thread as usize, unsafe { real(thread, ret) })
}

/// The interposed `pthread_tryjoin_np`.
///
/// # Safety
/// The caller's contract is `pthread_tryjoin_np`'s.
#[no_mangle]
pub unsafe extern "C" fn pthread_tryjoin_np(thread: libc::pthread_t, ret: *mut *mut c_void) -> c_int {
    let Some(real) = real!("pthread_tryjoin_np", PthreadJoin) else { return libc::ENOSYS };
    // SAFETY: the caller's arguments, passed on.
    unix::joined(thread as usize, unsafe { real(thread, ret) })
}

/// The interposed `pthread_timedjoin_np`.
///
/// # Safety
/// The caller's contract is `pthread_timedjoin_np`'s.
#[no_mangle]
pub unsafe extern "C" fn pthread_timedjoin_np(
    thread: libc::pthread_t,
    ret: *mut *mut c_void,
    abstime: *const libc::timespec,
) -> c_int {
    let Some(real) = real!("pthread_timedjoin_np", PthreadTimedJoin) else { return libc::ENOSYS };
    // SAFETY: the caller's arguments, passed on.
    unix::joined(thread as usize, unsafe { real(thread, ret, abstime) })
}

/// The interposed `pthread_clockjoin_np` (glibc 2.31).
///
/// # Safety
/// The caller's contract is `pthread_clockjoin_np`'s.
#[no_mangle]
pub unsafe extern "C" fn pthread_clockjoin_np(
    thread: libc::pthread_t,
    ret: *mut *mut c_void,
    clock: libc::clockid_t,
    abstime: *const libc::timespec,
) -> c_int {
    let Some(real) = real!("pthread_clockjoin_np", PthreadClockJoin) else { return libc::ENOSYS };
    // SAFETY: the caller's arguments, passed on.
    unix::joined(thread as usize, unsafe { real(thread, ret, clock, abstime) })
}

/// The interposed `pthread_detach`.
///
/// # Safety
/// The caller's contract is `pthread_detach`'s.
#[no_mangle]
pub unsafe extern "C" fn pthread_detach(thread: libc::pthread_t) -> c_int {
    let Some(real) = real!("pthread_detach", PthreadDetach) else { return libc::ENOSYS };
    // SAFETY: the caller's argument, passed on.
    unix::detached(thread as usize, unsafe { real(thread) })
}
