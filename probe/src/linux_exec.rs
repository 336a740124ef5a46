//! Linux: the calls that start a program (`execve` and its family, `posix_spawn`), interposed to tell the
//! runner about every program the program starts, so that one that runs without the probe is named
//! rather than missed: a parent that takes `LD_PRELOAD` out of its children's environment, a static
//! program. Each start is a line of the channel (`exec`, `spawn`: the path, the pid that will run it,
//! and whether its environment still names the probe); an `exec` that returns (it failed) is one too.
//! The runner expects a `load` line from each; `threadleak::exec::samples` says which never came.
//!
//! glibc's own starts (`system`, `popen`, `posix_spawn`'s internals) call the kernel directly and are not
//! seen: their programs load the probe from the environment they inherit.

use std::ffi::{c_char, c_int, CStr};
use std::io::Write as _;
use std::sync::OnceLock;

use super::{next, unix};

extern "C" {
    /// The process's environment (POSIX `environ`).
    static environ: *const *const c_char;
}

/// The probe's own entry of `LD_PRELOAD`, as this process was started with it.
static OWN: OnceLock<Vec<u8>> = OnceLock::new();

/// Notes the probe's own entry of `LD_PRELOAD` (the first: the runner puts it first), as the probe loads.
pub fn remember() {
    let preload = std::env::var_os("LD_PRELOAD").unwrap_or_default();
    let own = std::os::unix::ffi::OsStrExt::as_bytes(preload.as_os_str()).split(|&b| b == b':' || b == b' ').next();
    let _ = OWN.set(own.unwrap_or_default().to_vec());
}

/// Whether the environment `envp` still loads the probe into what it starts, and lets it write: it
/// preloads the probe's library and names the channel.
fn carries_probe(envp: *const *const c_char) -> bool {
    let Some(own) = OWN.get().filter(|o| !o.is_empty()) else { return false };
    let (mut preloads, mut channel) = (false, false);
    let mut at = envp;
    // SAFETY: `envp` is a null-terminated array of NUL-terminated strings, as exec and spawn require.
    while !at.is_null() && !unsafe { *at }.is_null() {
        // SAFETY: a NUL-terminated string of the array.
        let entry = unsafe { CStr::from_ptr(*at) }.to_bytes();
        if let Some(value) = entry.strip_prefix(b"LD_PRELOAD=") {
            preloads |= value.split(|&b| b == b':' || b == b' ').any(|p| p == own.as_slice());
        }
        channel |= entry.starts_with(b"THREADLEAK_PROBE_OUT=");
        // SAFETY: the array goes on to its null entry.
        at = unsafe { at.add(1) };
    }
    preloads && channel
}

/// Writes a line of a program started (`kind` `exec`, `spawn` or `exec-failed`): `child` the pid that
/// runs it (this one for an exec), `path` what it runs.
fn tell(kind: &str, child: u32, path: &[u8], probed: bool) {
    if !crate::active() {
        return;
    }
    let mut line = [0u8; 1536];
    let mut w = std::io::Cursor::new(&mut line[..]);
    let path = text_of(&path[..path.len().min(1024)]);
    let ok = write!(
        w,
        "{{\"pid\":{},\"kind\":\"{kind}\",\"child\":{child},\"probed\":{probed},\"path\":",
        std::process::id()
    )
    .is_ok()
        && serde_json::to_writer(&mut w, path).is_ok()
        && w.write_all(b"}\n").is_ok();
    if ok {
        let len = w.position() as usize;
        unix::append(&line[..len], 0);
    }
}

/// The longest prefix of `path` that is text (a path is bytes; the line is JSON), without allocating.
fn text_of(path: &[u8]) -> &str {
    match std::str::from_utf8(path) {
        Ok(text) => text,
        // SAFETY: the bytes up to `valid_up_to` were checked to be UTF-8.
        Err(e) => unsafe { std::str::from_utf8_unchecked(&path[..e.valid_up_to()]) },
    }
}

fn bytes<'a>(s: *const c_char) -> &'a [u8] {
    if s.is_null() {
        return b"";
    }
    // SAFETY: a NUL-terminated string the caller passed to exec or spawn.
    unsafe { CStr::from_ptr(s) }.to_bytes()
}

/// An `exec` of `path` with environment `envp`, told before and (when it returns, having failed) after.
fn exec(path: &[u8], envp: *const *const c_char, run: impl FnOnce() -> c_int) -> c_int {
    let pid = std::process::id();
    tell("exec", pid, path, carries_probe(envp));
    let ret = run();
    // SAFETY: __errno_location is the calling thread's errno; the failed exec's is given back as it was.
    let errno = unsafe { *libc::__errno_location() };
    tell("exec-failed", pid, path, false);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    ret
}

type Execve = unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int;
type Execv = unsafe extern "C" fn(*const c_char, Argv) -> c_int;

fn real_execve() -> Option<Execve> {
    real!("execve", Execve)
}
fn real_execv() -> Option<Execv> {
    real!("execv", Execv)
}
fn real_execvp() -> Option<Execv> {
    real!("execvp", Execv)
}
fn real_execvpe() -> Option<Execve> {
    real!("execvpe", Execve)
}
fn real_posix_spawn() -> Option<Spawn> {
    real!("posix_spawn", Spawn)
}
fn real_posix_spawnp() -> Option<Spawn> {
    real!("posix_spawnp", Spawn)
}

/// Looks up the real calls as the probe loads: a child of `fork` (or of `vfork`) that execs calls no
/// `dlsym`, which is not async-signal-safe.
pub fn resolve() {
    let _ = (real_execve(), real_execv(), real_execvp(), real_execvpe());
    let _ = (real_posix_spawn(), real_posix_spawnp());
}

/// The answer of an exec whose real call could not be found.
fn no_exec() -> c_int {
    // SAFETY: __errno_location is the calling thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

type Argv = *const *const c_char;

/// Interposed `execve`.
///
/// # Safety
/// The caller's contract is `execve`'s.
#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    let Some(real) = real_execve() else { return no_exec() };
    // SAFETY: the caller's arguments, passed on.
    exec(bytes(path), envp, || unsafe { real(path, argv, envp) })
}

/// Interposed `execv` (the process's environment).
///
/// # Safety
/// The caller's contract is `execv`'s.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Argv) -> c_int {
    let Some(real) = real_execv() else { return no_exec() };
    // SAFETY: `environ` is the process's environment, read as exec would read it.
    let envp = unsafe { environ };
    // SAFETY: the caller's arguments, passed on.
    exec(bytes(path), envp, || unsafe { real(path, argv) })
}

/// Interposed `execvp` (the process's environment).
///
/// # Safety
/// The caller's contract is `execvp`'s.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Argv) -> c_int {
    let Some(real) = real_execvp() else { return no_exec() };
    // SAFETY: as in `execv`.
    let envp = unsafe { environ };
    // SAFETY: the caller's arguments, passed on.
    exec(bytes(file), envp, || unsafe { real(file, argv) })
}

/// Interposed `execvpe`.
///
/// # Safety
/// The caller's contract is `execvpe`'s.
#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int {
    let Some(real) = real_execvpe() else { return no_exec() };
    // SAFETY: the caller's arguments, passed on.
    exec(bytes(file), envp, || unsafe { real(file, argv, envp) })
}

type Spawn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    Argv,
    Argv,
) -> c_int;

/// A spawn of `path`, told once it has a pid.
fn spawned(path: *const c_char, pid: *mut libc::pid_t, envp: Argv, ret: c_int) -> c_int {
    if ret == 0 && !pid.is_null() {
        // SAFETY: on success posix_spawn wrote the child's pid.
        let child = unsafe { *pid };
        tell("spawn", child as u32, bytes(path), carries_probe(envp));
    }
    ret
}

/// Interposed `posix_spawn`.
///
/// # Safety
/// The caller's contract is `posix_spawn`'s.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: Argv,
    envp: Argv,
) -> c_int {
    let Some(real) = real_posix_spawn() else { return libc::ENOSYS };
    // SAFETY: the caller's arguments, passed on.
    spawned(path, pid, envp, unsafe { real(pid, path, actions, attr, argv, envp) })
}

/// Interposed `posix_spawnp`.
///
/// # Safety
/// The caller's contract is `posix_spawnp`'s.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: Argv,
    envp: Argv,
) -> c_int {
    let Some(real) = real_posix_spawnp() else { return libc::ENOSYS };
    // SAFETY: the caller's arguments, passed on.
    spawned(file, pid, envp, unsafe { real(pid, file, actions, attr, argv, envp) })
}
