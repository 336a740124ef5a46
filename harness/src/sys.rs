//! Process control the standard library lacks: waiting for a child to end without reaping it, so that
//! its process group cannot be reused by another process while we signal it. The only unsafe code
//! outside `backend/`; POSIX `waitid` behaves the same on Linux and macOS.

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
