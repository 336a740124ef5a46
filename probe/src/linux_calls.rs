//! Linux: the calls that make or give back a descriptor, interposed for [`sites`](crate::sites) the way
//! the pthread calls are (exported here, the real ones found with `dlsym(RTLD_NEXT)`). Each passes the
//! call through untouched and, when sites are on, records the descriptor it made against the calling
//! stack, or forgets the one it gave back.
//!
//! Made: `open`, `openat`, `creat` (and their `64` names), `socket`, `socketpair`, `accept`, `accept4`,
//! `pipe`, `pipe2`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`, `eventfd`, `timerfd_create`, `epoll_create`,
//! `epoll_create1`, `signalfd` (a new one), `inotify_init`, `inotify_init1`, `fanotify_init`,
//! `memfd_create`, `pidfd_open`, `pidfd_getfd`, `posix_openpt`, the `_FORTIFY_SOURCE` forms of `open`
//! and `openat` (`__open_2`, ...), and the C library's `FILE` and `DIR`
//! openers (`fopen`, `freopen`, `tmpfile`, `popen`, `opendir`), whose descriptors the C library opens
//! with internal calls no preload sees; and `syscall(2)` for the same system calls made raw (as
//! programs do where the C library has no wrapper, `pidfd_open` before glibc 2.36). Given back: `close`,
//! `close_range`, `closefrom`, `fclose`, `pclose`, `closedir`, and `syscall` for `close`.
//!
//! Not seen: descriptors made inside the C library by internal calls (`getaddrinfo`'s sockets, `nscd`),
//! received over a socket (`SCM_RIGHTS`), or by a raw system call instruction (Go without cgo): the
//! census still counts them, and the report says how much of a leak its sites explain.
//!
//! Variadic functions (`open`, `openat`, `fcntl`, `syscall`) are declared with their optional arguments
//! as plain integers: on the Linux ABIs Rust targets (x86-64 System V, AArch64 AAPCS64, RISC-V), variadic
//! integer and pointer arguments travel in the same registers as fixed ones, so the values pass through
//! unchanged.

use std::ffi::{c_char, c_int, c_long, c_uint, c_void};
use std::sync::OnceLock;

use super::next;

use crate::sites;

/// The calls' names, by the index a site records.
pub const CALLS: &[&str] = &[
    "open",
    "open64",
    "openat",
    "openat64",
    "creat",
    "creat64",
    "socket",
    "socketpair",
    "accept",
    "accept4",
    "pipe",
    "pipe2",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "eventfd",
    "timerfd_create",
    "epoll_create",
    "epoll_create1",
    "signalfd",
    "inotify_init",
    "inotify_init1",
    "fanotify_init",
    "memfd_create",
    "pidfd_open",
    "pidfd_getfd",
    "posix_openpt",
    "__open_2",
    "__open64_2",
    "__openat_2",
    "__openat64_2",
    "fopen",
    "fopen64",
    "freopen",
    "freopen64",
    "tmpfile",
    "tmpfile64",
    "popen",
    "opendir",
    // `syscall(2)`, by the system call's name.
    "syscall(open)",
    "syscall(openat)",
    "syscall(openat2)",
    "syscall(dup)",
    "syscall(dup3)",
    "syscall(socket)",
    "syscall(eventfd2)",
    "syscall(memfd_create)",
    "syscall(pidfd_open)",
    "syscall(pidfd_getfd)",
    "syscall(timerfd_create)",
    "syscall(epoll_create1)",
    "syscall(inotify_init1)",
    "syscall(userfaultfd)",
    "syscall(perf_event_open)",
];

/// The index of `name` in [`CALLS`], at compile time.
const fn call(name: &str) -> u32 {
    let mut i = 0;
    while i < CALLS.len() {
        if bytes_eq(CALLS[i].as_bytes(), name.as_bytes()) {
            return i as u32;
        }
        i += 1;
    }
    panic!("not a call the probe names");
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

fn fail<T: From<i8>>() -> T {
    // SAFETY: __errno_location is the calling thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    T::from(-1)
}

/// Defines an interposed call returning one new descriptor (or -1): the real call, then the record.
macro_rules! makes_fd {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        /// Interposed: passed through, and the descriptor it makes recorded against the calling stack.
        ///
        /// # Safety
        /// The caller's contract is the C library's function of that name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            type Real = unsafe extern "C" fn($($ty),*) -> $ret;
            let Some(real) = real!(fn $name, Real) else { return fail() };
            // SAFETY: the caller's arguments, passed on to the function they were meant for.
            let fd = unsafe { real($($arg),*) };
            sites::made_fd(const { call(stringify!($name)) }, fd as i64);
            fd
        }
    )*};
}

makes_fd! {
    fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn openat(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn openat64(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn creat(path: *const c_char, mode: libc::mode_t) -> c_int;
    fn creat64(path: *const c_char, mode: libc::mode_t) -> c_int;
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, flags: c_int) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(fd: c_int, new: c_int) -> c_int;
    fn dup3(fd: c_int, new: c_int, flags: c_int) -> c_int;
    fn eventfd(initial: c_uint, flags: c_int) -> c_int;
    fn timerfd_create(clock: c_int, flags: c_int) -> c_int;
    fn epoll_create(size: c_int) -> c_int;
    fn epoll_create1(flags: c_int) -> c_int;
    fn inotify_init() -> c_int;
    fn inotify_init1(flags: c_int) -> c_int;
    fn fanotify_init(flags: c_uint, event_flags: c_uint) -> c_int;
    fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
    fn pidfd_open(pid: libc::pid_t, flags: c_uint) -> c_int;
    fn pidfd_getfd(pidfd: c_int, target: c_int, flags: c_uint) -> c_int;
    fn posix_openpt(flags: c_int) -> c_int;
    // What `open` and `openat` compile to under _FORTIFY_SOURCE when the flags are not constant.
    fn __open_2(path: *const c_char, flags: c_int) -> c_int;
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int;
    fn __openat_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn __openat64_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int;
}

/// Defines an interposed call returning a `FILE` or `DIR` (or null): the real call, then the record of
/// the descriptor under it.
macro_rules! makes_stream {
    ($descriptor:ident; $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        /// Interposed: passed through, and the descriptor under the stream it makes recorded.
        ///
        /// # Safety
        /// The caller's contract is the C library's function of that name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            type Real = unsafe extern "C" fn($($ty),*) -> $ret;
            let Some(real) = real!(fn $name, Real) else { return fail_null() };
            // SAFETY: the caller's arguments, passed on to the function they were meant for.
            let stream = unsafe { real($($arg),*) };
            if !stream.is_null() && sites::enabled() {
                // SAFETY: a stream the C library just returned.
                let fd = unsafe { $descriptor(stream) };
                sites::made_fd(const { call(stringify!($name)) }, fd as i64);
            }
            stream
        }
    )*};
}

fn fail_null<T>() -> *mut T {
    let _: c_int = fail();
    std::ptr::null_mut()
}

makes_stream! { fileno;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE;
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE;
    fn freopen(path: *const c_char, mode: *const c_char, stream: *mut libc::FILE) -> *mut libc::FILE;
    fn freopen64(path: *const c_char, mode: *const c_char, stream: *mut libc::FILE) -> *mut libc::FILE;
    fn tmpfile() -> *mut libc::FILE;
    fn tmpfile64() -> *mut libc::FILE;
    fn popen(command: *const c_char, mode: *const c_char) -> *mut libc::FILE;
}

unsafe fn fileno(stream: *mut libc::FILE) -> c_int {
    // SAFETY: the caller's stream is valid.
    unsafe { libc::fileno(stream) }
}

unsafe fn dir_fd(dir: *mut libc::DIR) -> c_int {
    // SAFETY: the caller's directory stream is valid.
    unsafe { libc::dirfd(dir) }
}

makes_stream! { dir_fd;
    fn opendir(path: *const c_char) -> *mut libc::DIR;
}

/// Records both descriptors of a pair `make` filled, if it succeeded.
fn made_pair(index: u32, ret: c_int, fds: *const c_int) -> c_int {
    if ret == 0 && !fds.is_null() && sites::enabled() {
        // SAFETY: on success the call wrote two descriptors to `fds`.
        let pair = unsafe { [*fds, *fds.add(1)] };
        for fd in pair {
            sites::made_fd(index, fd as i64);
        }
    }
    ret
}

/// Interposed `pipe`.
///
/// # Safety
/// The caller's contract is `pipe`'s.
#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    let Some(real) = real!("pipe", unsafe extern "C" fn(*mut c_int) -> c_int) else { return fail() };
    // SAFETY: the caller's argument, passed on.
    made_pair(const { call("pipe") }, unsafe { real(fds) }, fds)
}

/// Interposed `pipe2`.
///
/// # Safety
/// The caller's contract is `pipe2`'s.
#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let Some(real) = real!("pipe2", unsafe extern "C" fn(*mut c_int, c_int) -> c_int) else { return fail() };
    // SAFETY: the caller's arguments, passed on.
    made_pair(const { call("pipe2") }, unsafe { real(fds, flags) }, fds)
}

/// Interposed `socketpair`.
///
/// # Safety
/// The caller's contract is `socketpair`'s.
#[no_mangle]
pub unsafe extern "C" fn socketpair(domain: c_int, kind: c_int, protocol: c_int, fds: *mut c_int) -> c_int {
    type Real = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_int) -> c_int;
    let Some(real) = real!("socketpair", Real) else { return fail() };
    // SAFETY: the caller's arguments, passed on.
    made_pair(const { call("socketpair") }, unsafe { real(domain, kind, protocol, fds) }, fds)
}

/// Interposed `signalfd`: a new descriptor only when asked for one (`fd` -1).
///
/// # Safety
/// The caller's contract is `signalfd`'s.
#[no_mangle]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int {
    type Real = unsafe extern "C" fn(c_int, *const libc::sigset_t, c_int) -> c_int;
    let Some(real) = real!("signalfd", Real) else { return fail() };
    // SAFETY: the caller's arguments, passed on.
    let ret = unsafe { real(fd, mask, flags) };
    if fd == -1 {
        sites::made_fd(const { call("signalfd") }, ret as i64);
    }
    ret
}

/// Interposed `fcntl`: `F_DUPFD` and `F_DUPFD_CLOEXEC` make a descriptor.
///
/// # Safety
/// The caller's contract is `fcntl`'s.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let Some(real) = real!("fcntl", unsafe extern "C" fn(c_int, c_int, usize) -> c_int) else { return fail() };
    // SAFETY: the caller's arguments, passed on (see the module's note on variadic calls).
    let ret = unsafe { real(fd, cmd, arg) };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        sites::made_fd(const { call("fcntl") }, ret as i64);
    }
    ret
}

/// Defines an interposed call that gives back the descriptor `$descriptor` finds in its argument: the
/// record is forgotten first (once closed, the number can be another thread's new descriptor).
macro_rules! gives_back {
    ($(fn $name:ident($arg:ident: $ty:ty) -> $ret:ty, $descriptor:expr;)*) => {$(
        /// Interposed: the descriptor's record forgotten, then the call passed through.
        ///
        /// # Safety
        /// The caller's contract is the C library's function of that name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($arg: $ty) -> $ret {
            type Real = unsafe extern "C" fn($ty) -> $ret;
            let Some(real) = real!(fn $name, Real) else { return fail() };
            if sites::enabled() {
                // SAFETY: the caller's argument, valid for the call it is given to (`close`'s needs none).
                #[allow(unused_unsafe)]
                let fd = unsafe { $descriptor };
                sites::released(fd as i64);
            }
            // SAFETY: the caller's argument, passed on.
            unsafe { real($arg) }
        }
    )*};
}

gives_back! {
    fn close(fd: c_int) -> c_int, fd;
    fn fclose(stream: *mut libc::FILE) -> c_int, fileno(stream);
    fn pclose(stream: *mut libc::FILE) -> c_int, fileno(stream);
    fn closedir(dir: *mut libc::DIR) -> c_int, dir_fd(dir);
}

/// Interposed `close_range` (glibc 2.34).
///
/// # Safety
/// The caller's contract is `close_range`'s.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let Some(real) = real!("close_range", unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int) else {
        return fail();
    };
    // SAFETY: the caller's arguments, passed on.
    let ret = unsafe { real(first, last, flags) };
    if ret == 0 && flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        sites::released_range(u64::from(first), u64::from(last));
    }
    ret
}

/// Interposed `closefrom` (glibc 2.34): closes every descriptor from `first` on, through an internal
/// `close_range` no preload sees.
///
/// # Safety
/// The caller's contract is `closefrom`'s.
#[no_mangle]
pub unsafe extern "C" fn closefrom(first: c_int) {
    let Some(real) = real!("closefrom", unsafe extern "C" fn(c_int)) else { return };
    sites::released_range(first.max(0) as u64, u64::from(u32::MAX));
    // SAFETY: the caller's argument, passed on.
    unsafe { real(first) }
}

/// The system calls `syscall(2)` is watched for: those that make a descriptor, by their name's index.
fn raw_maker(number: c_long) -> Option<u32> {
    Some(match number {
        libc::SYS_openat => const { call("syscall(openat)") },
        libc::SYS_openat2 => const { call("syscall(openat2)") },
        libc::SYS_dup => const { call("syscall(dup)") },
        libc::SYS_dup3 => const { call("syscall(dup3)") },
        libc::SYS_socket => const { call("syscall(socket)") },
        libc::SYS_eventfd2 => const { call("syscall(eventfd2)") },
        libc::SYS_memfd_create => const { call("syscall(memfd_create)") },
        libc::SYS_pidfd_open => const { call("syscall(pidfd_open)") },
        libc::SYS_pidfd_getfd => const { call("syscall(pidfd_getfd)") },
        libc::SYS_timerfd_create => const { call("syscall(timerfd_create)") },
        libc::SYS_epoll_create1 => const { call("syscall(epoll_create1)") },
        libc::SYS_inotify_init1 => const { call("syscall(inotify_init1)") },
        libc::SYS_userfaultfd => const { call("syscall(userfaultfd)") },
        libc::SYS_perf_event_open => const { call("syscall(perf_event_open)") },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open => const { call("syscall(open)") },
        _ => return None,
    })
}

/// Interposed `syscall(2)`: system calls that make or give back a descriptor are recorded.
///
/// # Safety
/// The caller's contract is `syscall`'s.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    number: c_long,
    a: c_long,
    b: c_long,
    c: c_long,
    d: c_long,
    e: c_long,
    f: c_long,
) -> c_long {
    type Real = unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;
    let Some(real) = real!("syscall", Real) else { return fail() };
    if number == libc::SYS_close && sites::enabled() {
        sites::released(a);
    }
    // SAFETY: the caller's arguments, passed on (see the module's note on variadic calls).
    let ret = unsafe { real(number, a, b, c, d, e, f) };
    if let Some(index) = raw_maker(number) {
        sites::made_fd(index, ret);
    }
    ret
}

/// The module that holds `ip` (its path and where it is loaded), given to `f` while the module's path
/// is valid; `None` when no loaded module holds it.
pub fn with_module_of<R>(ip: usize, f: impl FnOnce(Option<(&[u8], usize)>) -> R) -> R {
    // SAFETY: Dl_info is plain data that dladdr fills.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the loader's tables; `info` is valid for writing.
    if unsafe { libc::dladdr(ip as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return f(None);
    }
    // SAFETY: dli_fname is the loaded module's NUL-terminated name, valid while the module is loaded;
    // `f` runs at a census, with the probe's lock held, which `dlclose` does not wait for: a module the
    // program unloads at this very moment is the one race left, as with any reader of the loader's list.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_bytes();
    // The main program's name in the loader's list is empty, or the program as it was invoked (`./tt`):
    // its path is the executable's.
    let name = if name.first() != Some(&b'/') { own_executable() } else { name };
    f(Some((name, info.dli_fbase as usize)))
}

/// What descriptor `fd` is, its `/proc/self/fd` link (`anon_inode:[pidfd]`, `socket:[123]`, a path),
/// read into `buf`; empty when it cannot be read.
pub fn describe(fd: u32, buf: &mut [u8; 512]) -> &[u8] {
    let mut path = [0u8; 32];
    let mut w = std::io::Cursor::new(&mut path[..]);
    let _ = std::io::Write::write_fmt(&mut w, format_args!("/proc/self/fd/{fd}\0"));
    // SAFETY: `path` is NUL-terminated (it has room for any descriptor number); `buf` is valid for its length.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    &buf[..n.max(0) as usize]
}

/// Whether descriptor `fd` is still open.
pub fn held(fd: u32) -> bool {
    // SAFETY: F_GETFD reads a descriptor's flags; an unopened one gives EBADF.
    (unsafe { libc::fcntl(fd as c_int, libc::F_GETFD) }) != -1
}

/// This process's executable, read once.
fn own_executable() -> &'static [u8] {
    static EXE: OnceLock<Vec<u8>> = OnceLock::new();
    EXE.get_or_init(|| {
        std::fs::read_link("/proc/self/exe")
            .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
            .unwrap_or_default()
    })
}

/// The probe's own code: the span of the loaded segments of the module that holds this function.
pub fn own_code() -> (usize, usize) {
    struct Span {
        inside: usize,
        low: usize,
        high: usize,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: the loader passes a valid info for the call; `data` is the Span below.
        let (info, span) = unsafe { (&*info, &mut *data.cast::<Span>()) };
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr as usize;
        let loads = headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
        let (mut low, mut high) = (usize::MAX, 0);
        for h in loads {
            low = low.min(base + h.p_vaddr as usize);
            high = high.max(base + (h.p_vaddr + h.p_memsz) as usize);
        }
        if span.inside >= low && span.inside < high {
            (span.low, span.high) = (low, high);
            return 1;
        }
        0
    }
    let mut span = Span { inside: own_code as *const () as usize, low: 0, high: 0 };
    // SAFETY: the callback only reads the headers and writes `span`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut span as *mut Span).cast()) };
    (span.low, span.high)
}
