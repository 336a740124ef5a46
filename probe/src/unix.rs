//! What the Linux and macOS probes share: the probe's lock and fork handlers, the files it shares with the
//! runner (the channel and the counts, both mapped, neither holding a descriptor), the thread-end hook,
//! and the trampoline every created thread starts in. The platform files add only how the pthread calls are interposed.

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_int, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::OnceLock;

use threadleak_census::channel;
use threadleak_census::counts::{ProcessCounts, SLOT_BYTES};

/// The probe's one lock, held by a census, by `pthread_create` while it creates a thread, and by the
/// books' updates. A raw pthread mutex, so that fork handlers can hold it across `fork` and the child
/// never inherits it taken.
struct Lock(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be shared between threads; it is only used through its functions.
unsafe impl Sync for Lock {}

static LOCK: Lock = Lock(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

thread_local! {
    /// Whether this thread holds the lock: a signal handler that lands during a census and calls
    /// `pthread_create` must not wait for itself.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
    /// This thread's slot in the books, plus one (0: not a thread the probe created, or not booked).
    static SLOT: Cell<usize> = const { Cell::new(0) };
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

/// The pid of the process that is forking, for its child to name as its parent.
static FORKING: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Whether `before_fork` took the lock (it does not when the fork comes from a signal handler that
    /// interrupted this thread's census, which already holds it).
    static FORK_LOCKED: Cell<bool> = const { Cell::new(false) };
}

extern "C" fn before_fork() {
    let take = !HOLDING.with(Cell::get);
    if take {
        // SAFETY: as in `lock`; given back by one of the two handlers below.
        unsafe { libc::pthread_mutex_lock(LOCK.0.get()) };
    }
    FORK_LOCKED.with(|f| f.set(take));
    FORKING.store(std::process::id(), Ordering::Relaxed);
}

extern "C" fn after_fork_in_parent() {
    if FORK_LOCKED.with(Cell::get) {
        // SAFETY: taken by `before_fork` in this thread.
        unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
    }
}

extern "C" fn after_fork_in_child() {
    // The child has one thread, this one, which holds the lock: the books are its alone.
    super::forked(FORKING.load(Ordering::Relaxed));
    if FORK_LOCKED.with(Cell::get) {
        // SAFETY: the child's copy, taken by `before_fork` in the thread that is the child's only one.
        unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
    }
}

/// The calling thread's slot in the books, if the probe created and booked it.
pub fn current_slot() -> Option<usize> {
    SLOT.with(Cell::get).checked_sub(1)
}

pub type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;

static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();

/// The thread-specific value of a created thread the books have no slot for (any non-null value makes
/// the destructor run).
const UNBOOKED: usize = usize::MAX;

extern "C" fn thread_ended(value: *mut c_void) {
    let value = value as usize;
    super::on_thread_end(if value == UNBOOKED { None } else { Some(value - 1) });
}

/// Creates the TSD key whose destructor sees each created thread end, and the fork handlers; false when
/// the probe cannot work.
pub fn install_hooks() -> bool {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is valid for writing; the destructor has the signature pthread expects.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_ended)) } != 0 {
        return false;
    }
    let _ = KEY.set(key);
    // SAFETY: registers functions with no preconditions.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child)) == 0 }
}

fn c_path(path: &OsStr) -> Vec<u8> {
    let mut bytes = path.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// The channel the runner created, mapped shared (`threadleak_census::channel`); null while the probe has
/// none.
static CHANNEL: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Maps a file the runner created, shared, whole, and closes its descriptor at once: the mapping stays,
/// shared with the runner and with every process forked from this one, and the program's table of
/// descriptors holds none of the probe's. `None` for a symbolic link, a file that is not regular, or
/// one shorter than `min` bytes.
fn map_shared(path: &OsStr, min: usize) -> Option<(*mut c_void, usize)> {
    let bytes = c_path(path);
    // SAFETY: `bytes` is NUL-terminated.
    let fd = unsafe { libc::open(bytes.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `st` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is valid for writing.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG;
    let len = if ok && st.st_size as usize >= min { st.st_size as usize } else { 0 };
    let map = if len > 0 {
        // SAFETY: a shared mapping of the whole of a regular file opened read-write.
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) }
    } else {
        libc::MAP_FAILED
    };
    // SAFETY: closes the descriptor opened above; the mapping does not need it.
    unsafe { libc::close(fd) };
    (map != libc::MAP_FAILED).then_some((map, len))
}

/// Maps the channel the runner created; false when there is none to use.
pub fn map_channel(path: &OsStr) -> bool {
    match map_shared(path, channel::BYTES) {
        Some((map, _)) if channel_header(map.cast()).magic.load(Ordering::Acquire) == channel::MAGIC => {
            CHANNEL.store(map.cast(), Ordering::Release);
            true
        }
        Some((map, len)) => {
            // SAFETY: the mapping made just above, used by nothing.
            unsafe { libc::munmap(map, len) };
            false
        }
        None => false,
    }
}

fn channel_header(base: *mut u8) -> &'static channel::Header {
    // SAFETY: `base` is the start of a mapping of at least `channel::BYTES` bytes, never unmapped, aligned
    // to a page; the header is atomics only.
    unsafe { &*base.cast::<channel::Header>() }
}

/// Appends `line` to the channel (nothing without one): its bytes reserved with one atomic add, then
/// copied, so lines from every thread and process of the run stay whole. `ended` (this process's threads
/// ended) is kept with the first line that does not fit.
pub fn append(line: &[u8], ended: u64) {
    let base = CHANNEL.load(Ordering::Acquire);
    if base.is_null() {
        return;
    }
    if let Some(at) = channel_header(base).reserve(line.len(), ended) {
        // SAFETY: `reserve` gave this writer alone the bytes `at..at + line.len()`, within the mapping.
        unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), base.add(at), line.len()) };
    }
}

/// The counts file the runner created, mapped shared: one slot per process, claimed by pid.
static COUNTS: AtomicPtr<ProcessCounts> = AtomicPtr::new(std::ptr::null_mut());
static COUNTS_SLOTS: AtomicU32 = AtomicU32::new(0);
/// This process's slot, or the fallback below when there is none.
static MINE: AtomicPtr<ProcessCounts> = AtomicPtr::new(std::ptr::null_mut());
static FALLBACK: ProcessCounts = ProcessCounts::new();

pub const ORIGIN_EXEC: u32 = threadleak_census::counts::ORIGIN_EXEC;
pub const ORIGIN_FORK: u32 = threadleak_census::counts::ORIGIN_FORK;

/// Maps the counts file (see [`map_shared`]).
pub fn map_counts(path: &OsStr) {
    if let Some((map, len)) = map_shared(path, SLOT_BYTES) {
        COUNTS_SLOTS.store((len / SLOT_BYTES) as u32, Ordering::Relaxed);
        COUNTS.store(map.cast(), Ordering::Release);
    }
}

/// Claims a slot of the counts file for `pid` (at load, or in a forked child); without one, this
/// process's counts are its own only.
pub fn claim_counts(pid: u32, parent: u32, origin: u32) {
    let base = COUNTS.load(Ordering::Acquire);
    let slots = COUNTS_SLOTS.load(Ordering::Relaxed) as usize;
    let mut mine: *mut ProcessCounts = std::ptr::null_mut();
    for i in 0..slots {
        // SAFETY: `base` maps `slots` slots of SLOT_BYTES each, ProcessCounts's size and alignment.
        let slot = unsafe { &*base.add(i) };
        if slot.claim(pid, parent, origin) {
            mine = base.wrapping_add(i);
            break;
        }
    }
    if mine.is_null() {
        FALLBACK.reset(pid, parent, origin);
    }
    MINE.store(mine, Ordering::Release);
}

/// This process's running counts.
pub fn counts() -> &'static ProcessCounts {
    let mine = MINE.load(Ordering::Acquire);
    if mine.is_null() {
        &FALLBACK
    } else {
        // SAFETY: a slot of the shared mapping, which is never unmapped.
        unsafe { &*mine }
    }
}

/// The parent process's pid.
pub fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() as u32 }
}

/// This process's command line, for the record (Linux: /proc/self/cmdline, bounded; elsewhere the
/// arguments the standard library saw).
pub fn command_line() -> Vec<String> {
    if let Ok(bytes) = std::fs::read("/proc/self/cmdline") {
        return bytes.split(|&b| b == 0).filter(|a| !a.is_empty()).take(64).map(|a| lossy(a, 1024)).collect();
    }
    std::env::args_os().take(64).map(|a| lossy(a.as_bytes(), 1024)).collect()
}

fn lossy(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// What a created thread runs first, so that its end is seen by the TSD destructor however it ends.
struct Start {
    routine: StartRoutine,
    arg: *mut c_void,
    slot: Option<usize>,
}

extern "C" fn trampoline(start: *mut c_void) -> *mut c_void {
    // SAFETY: `start` is the Box leaked by `create` for this thread alone.
    let start = unsafe { Box::from_raw(start.cast::<Start>()) };
    // Before the program runs on this thread: a walk in one of its calls never has to ask.
    crate::unwind::learn_stack();
    if let Some(slot) = start.slot {
        SLOT.with(|s| s.set(slot + 1));
        super::on_thread_start(slot);
    }
    if let Some(&key) = KEY.get() {
        let value = start.slot.map_or(UNBOOKED, |s| s + 1);
        // SAFETY: the key exists; any non-null value makes the destructor run at the thread's end.
        unsafe { libc::pthread_setspecific(key, value as *mut c_void) };
    }
    let (routine, arg) = (start.routine, start.arg);
    drop(start);
    routine(arg)
}

/// The interposed `pthread_create`, given the real one (which returns its result and the new thread's
/// `pthread_t`): books and counts the thread and starts it in the trampoline, or passes the call through
/// while the probe is inactive.
pub fn create(
    real: impl FnOnce(StartRoutine, *mut c_void) -> (c_int, usize),
    routine: StartRoutine,
    arg: *mut c_void,
    how: super::Creation,
) -> c_int {
    if !super::active() {
        return real(routine, arg).0;
    }
    super::creating(how, |slot| {
        let start = Box::into_raw(Box::new(Start { routine, arg, slot }));
        let (ret, tcb) = real(trampoline, start.cast());
        if ret != 0 {
            // SAFETY: the thread was not created, so the box is still ours.
            drop(unsafe { Box::from_raw(start) });
        }
        (ret, tcb)
    })
}

/// After the program's `pthread_join` (or a variant) for `thread` returned `ret`.
pub fn joined(thread: usize, ret: c_int) -> c_int {
    if ret == 0 {
        super::joined(thread);
    }
    ret
}

/// After the program's `pthread_detach` for `thread` returned `ret`.
pub fn detached(thread: usize, ret: c_int) -> c_int {
    if ret == 0 {
        super::detached(thread);
    }
    ret
}
