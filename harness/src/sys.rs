//! What the standard library lacks: waiting for a child to end without reaping it, so that its process
//! group cannot be reused by another process while we signal it; and which loaded module holds a code
//! address. The only unsafe code outside `backend/`; POSIX `waitid` and `dladdr` behave the same on
//! Linux and macOS.

use std::io;

/// Blocks until the child `pid` has ended, leaving it a zombie (`WNOWAIT`): its process-group id stays
/// reserved until it is reaped.
pub fn wait_ended_unreaped(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it for a child of this process.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writing; `pid` names our own child.
        let ret = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Restores the default disposition of SIGCHLD, which an ignoring parent would have passed on: with
/// SIGCHLD ignored, children are reaped by the kernel and their exit status is lost.
pub fn default_sigchld() {
    // SAFETY: SIG_DFL is a valid disposition; nothing else in this process handles SIGCHLD.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// The module (executable or library) loaded in this process that holds code address `ip`: its path and
/// the address it is loaded at (`dladdr`'s `dli_fname` and `dli_fbase`).
pub fn module_of(ip: usize) -> Option<(String, usize)> {
    // SAFETY: Dl_info is plain data that dladdr fills.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the loader's tables; `info` is valid for writing.
    if unsafe { libc::dladdr(ip as *const libc::c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is the module's NUL-terminated path, valid while the module is loaded (this
    // process never unloads one).
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    // glibc names the main program "" (or as it was invoked): its path is the executable's.
    let name = if name.is_empty() || !name.starts_with('/') {
        std::env::current_exe().ok()?.to_string_lossy().into_owned()
    } else {
        name
    };
    Some((name, info.dli_fbase as usize))
}
