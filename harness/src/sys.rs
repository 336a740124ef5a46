//! What the standard library lacks: waiting for a child to end without reaping it, so that its process
//! group cannot be reused by another process while we signal it; the signals this process was started
//! with ignored, passed on to the programs it runs; and which loaded module holds a code address. The only unsafe code outside `backend/`; POSIX `waitid` and `dladdr` behave the same on
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

/// Whether `signal`'s disposition, ignored, passes from this process to the programs it starts as it
/// would from its own parent: every signal but those none can ignore (SIGKILL, SIGSTOP), SIGPIPE (which
/// Rust's runtime ignores before `main`, so that its disposition at start is lost; the standard library
/// starts programs with its default), and the C library's own (glibc keeps the two below SIGRTMIN).
fn inherited(signal: libc::c_int) -> bool {
    #[cfg(target_os = "linux")]
    if signal > 31 && signal < libc::SIGRTMIN() {
        return false;
    }
    !matches!(signal, libc::SIGKILL | libc::SIGSTOP | libc::SIGPIPE)
}

/// The signals there are: 1 to 31, and on Linux the real-time ones up to SIGRTMAX.
fn signals() -> impl Iterator<Item = libc::c_int> {
    #[cfg(target_os = "linux")]
    let last = libc::SIGRTMAX();
    #[cfg(not(target_os = "linux"))]
    let last = 31;
    (1..=last).filter(|&s| inherited(s))
}

/// The signals this process was started with ignored (`nohup`, a shell's background job), of those
/// [`inherited`] says pass on, noted once as it starts.
static IGNORED_AT_START: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();

/// Notes which signals this process was started with ignored, before anything changes them; then
/// restores the default disposition of SIGCHLD, which an ignoring parent would have passed on: with
/// SIGCHLD ignored, children are reaped by the kernel and their exit status is lost.
pub fn start() {
    IGNORED_AT_START.get_or_init(|| {
        signals()
            .filter(|&signal| {
                // SAFETY: sigaction is plain data that sigaction fills; a null new action only reads.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                // SAFETY: `old` is valid for writing; `signal` is a valid signal number.
                unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN }
            })
            .collect()
    });
    // SAFETY: SIG_DFL is a valid disposition; nothing else in this process handles SIGCHLD.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// Whether this process was started with `signal` ignored.
pub fn ignored_at_start(signal: libc::c_int) -> bool {
    IGNORED_AT_START.get().is_some_and(|s| s.contains(&signal))
}

/// Has the program `command` starts inherit the signals this process was started with ignored, as it
/// would had this process not been between them: a program run under `nohup` through `threadleak exec`
/// survives a hangup as it does alone.
pub fn pass_ignored_signals(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let ignored = IGNORED_AT_START.get().cloned().unwrap_or_default();
    if ignored.is_empty() {
        return;
    }
    // SAFETY: between fork and exec the closure calls only `signal`, which is async-signal-safe, on a
    // list allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            for &signal in &ignored {
                libc::signal(signal, libc::SIG_IGN);
            }
            Ok(())
        });
    }
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
