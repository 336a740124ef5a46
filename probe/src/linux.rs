//! Linux: the probe is an `LD_PRELOAD` library. Its exported `pthread_create` comes before glibc's in
//! symbol lookup; the real one is found with `dlsym(RTLD_NEXT)`. A constructor in `.init_array` starts
//! the probe.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use super::unix::{self, StartRoutine};

type PthreadCreate =
    unsafe extern "C" fn(*mut libc::pthread_t, *const libc::pthread_attr_t, StartRoutine, *mut c_void) -> c_int;

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    super::on_load();
}

static REAL: OnceLock<Option<PthreadCreate>> = OnceLock::new();

fn real_pthread_create() -> Option<PthreadCreate> {
    *REAL.get_or_init(|| {
        // SAFETY: RTLD_NEXT with a NUL-terminated name.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) };
        // SAFETY: the symbol, found, is glibc's pthread_create, whose type is PthreadCreate.
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, PthreadCreate>(sym) })
    })
}

/// Installs the probe's hooks; false when it cannot work.
pub fn install() -> bool {
    real_pthread_create().is_some() && unix::install_hooks()
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
    // SAFETY: the caller's thread and attr, with a start routine and argument that pthread may run.
    unix::create(|routine, arg| unsafe { real(thread, attr, routine, arg) }, routine, arg)
}
