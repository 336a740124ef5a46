//! The Linux backend: the matrix realized with Linux's analog resources, counted from procfs.
//!
//! Where each axis is realized:
//! - `thread`: [`Linux::cycle`] (attribute detached or joinable; `pthread_join` or not);
//! - `self`: [`thread_main`], K thread handles (`pidfd_open(tid, PIDFD_THREAD)`, or a `/proc/thread-self`
//!   directory fd on kernels before 6.9), closed by the thread when balanced;
//! - `exc`: [`thread_main`], a guarded `sigaltstack` region and a `timer_create(SIGEV_THREAD_ID)` timer,
//!   as language runtimes install per thread; torn down by the thread when restored;
//! - `fix`: [`on_thread_exit`], a TSD destructor that closes the handles the thread still holds.
//!
//! Threads are raw pthreads, not `std::thread`, so that nothing but the workload runs in them. Probes read
//! procfs with `open`/`read`/`getdents64` into stack buffers: a probe that allocated could move the heap
//! and show up in `vm_kib` and `maps`.

use std::cell::{Cell as Slot, UnsafeCell};
use std::ffi::{c_int, c_void, CStr};
use std::mem::MaybeUninit;
use std::ptr;
use std::time::{Duration, Instant};

use super::{CallError, Code, Inventory, SettleError, SettleFailure, Workload};
use crate::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};
use crate::record::{Os, Params};
use threadleak_census::linux::{
    census, check, close, count_dir_entries, errno, for_each_dir_entry, for_each_polled_fd, parse_range, status_field,
};

/// Stack size of every workload thread. Fixed rather than taken from `RLIMIT_STACK`, so that `vm_kib`
/// of an unjoined thread (stack plus one guard page) does not depend on the caller's `ulimit -s`.
const STACK_BYTES: usize = 8 << 20;

/// The alternate signal stack a runtime gives each thread, and its guard page below it.
const ALTSTACK_BYTES: usize = 64 << 10;

/// `PIDFD_THREAD` (Linux 6.9, include/uapi/linux/pidfd.h): a pidfd for a thread rather than a process.
/// It is defined as `O_EXCL`.
const PIDFD_THREAD: c_int = libc::O_EXCL;

/// The settle step's bound: past this, the census is called inconclusive rather than waited for.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// The environment variable that forces the self-handle kind (`pidfd` or `proc-thread-self`), so the
/// fallback taken on kernels before 6.9 can be exercised on any kernel.
const SELF_HANDLE_ENV: &str = "THREADLEAK_LINUX_SELF_HANDLE";

/// For the pthread functions, which return the error number instead of setting errno.
fn check_pthread(call: &'static str, ret: c_int) -> Result<(), CallError> {
    if ret == 0 {
        Ok(())
    } else {
        Err(CallError::errno(call, ret))
    }
}

/// What the `self` axis opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SelfHandle {
    Pidfd,
    ProcThreadSelf,
}

impl SelfHandle {
    /// Opens one handle to the calling thread.
    fn open(self) -> Result<c_int, CallError> {
        match self {
            SelfHandle::Pidfd => {
                // SAFETY: gettid and pidfd_open take plain integers and touch no memory of ours.
                let fd = unsafe {
                    let tid = libc::gettid();
                    libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD)
                };
                check("pidfd_open", fd as c_int)
            }
            SelfHandle::ProcThreadSelf => {
                // SAFETY: the path is a NUL-terminated literal.
                let fd = unsafe {
                    libc::open(c"/proc/thread-self".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
                };
                check("open /proc/thread-self", fd)
            }
        }
    }

    /// Picks the handle kind: a thread pidfd when the kernel has `PIDFD_THREAD`, else the procfs fallback.
    fn detect() -> Result<SelfHandle, CallError> {
        match std::env::var(SELF_HANDLE_ENV).as_deref() {
            Ok("pidfd") => return Ok(SelfHandle::Pidfd),
            Ok("proc-thread-self") => return Ok(SelfHandle::ProcThreadSelf),
            _ => {}
        }
        match SelfHandle::Pidfd.open() {
            Ok(fd) => {
                close(fd);
                Ok(SelfHandle::Pidfd)
            }
            // EINVAL: a kernel before 6.9 rejects the flag; ENOSYS: one before 5.3 lacks the call.
            Err(CallError { code: Code::Errno(libc::EINVAL | libc::ENOSYS), .. }) => Ok(SelfHandle::ProcThreadSelf),
            Err(e) => Err(e),
        }
    }
}

/// State shared between the child's main thread and the one workload thread alive at a time.
///
/// Both threads only ever hold shared references to it; what changes is in cells. The main thread
/// changes them only while no workload thread runs; a workload thread changes them before it posts
/// `done`, and the main thread reads them after `sem_wait` returns (POSIX makes both a memory
/// synchronization point), so the cells are never used by two threads at once.
struct ThreadCtx {
    done: UnsafeCell<libc::sem_t>,
    exit_key: libc::pthread_key_t,
    self_ref: SelfRef,
    exc: Exc,
    fix: Fix,
    handle: SelfHandle,
    /// K handle slots, allocated once by the main thread so that thread bodies never allocate.
    handles: UnsafeCell<Vec<c_int>>,
    /// How many of `handles` the thread holds.
    held: Slot<usize>,
    /// The first call that failed in the thread.
    failure: Slot<Option<CallError>>,
}

impl ThreadCtx {
    fn post(&self) {
        // SAFETY: `done` was initialized by `sem_init`; semaphores are made to be shared between threads.
        unsafe { libc::sem_post(self.done.get()) };
    }

    fn fail(&self, e: CallError) {
        if self.failure.get().is_none() {
            self.failure.set(Some(e));
        }
    }

    /// Closes the handles the thread still holds.
    fn close_held(&self) {
        // SAFETY: only the thread using the context touches `handles` (see the type's comment).
        let handles = unsafe { &*self.handles.get() };
        for &fd in &handles[..self.held.get()] {
            close(fd);
        }
        self.held.set(0);
    }
}

/// The workload thread. Realizes the `self` and `exc` axes; returns a null pointer.
extern "C" fn thread_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the ThreadCtx the main thread passed, which outlives this thread's use of it (the
    // main thread waits for `done`, posted from `on_thread_exit` after the last access).
    let ctx = unsafe { &*arg.cast::<ThreadCtx>() };
    // SAFETY: the key was created by `Linux::open`; a non-null value makes its destructor run at exit.
    let ret = unsafe { libc::pthread_setspecific(ctx.exit_key, arg) };
    if let Err(e) = check_pthread("pthread_setspecific", ret) {
        ctx.fail(e);
        // Without the destructor, the handshake happens here.
        ctx.post();
        return ptr::null_mut();
    }
    if let Err(e) = take_self_handles(ctx).and_then(|()| exception_machinery(ctx)) {
        ctx.fail(e);
    }
    ptr::null_mut()
}

/// The `self` axis: K handles to the thread itself, released again when balanced.
fn take_self_handles(ctx: &ThreadCtx) -> Result<(), CallError> {
    if ctx.self_ref == SelfRef::None {
        return Ok(());
    }
    // SAFETY: only the thread using the context touches `handles` (see the type's comment).
    let handles = unsafe { &mut *ctx.handles.get() };
    for (slot, handle) in handles.iter_mut().enumerate() {
        *handle = ctx.handle.open()?;
        ctx.held.set(slot + 1);
    }
    if ctx.self_ref == SelfRef::Balanced {
        ctx.close_held();
    }
    Ok(())
}

/// The `exc` axis: a guarded alternate signal stack and a timer aimed at this thread, as runtimes install
/// for their per-thread signal handling; removed again when restored.
fn exception_machinery(ctx: &ThreadCtx) -> Result<(), CallError> {
    if ctx.exc == Exc::None {
        return Ok(());
    }
    let page = page_size();
    let len = ALTSTACK_BYTES + page;
    // SAFETY: an anonymous mapping at an address of the kernel's choosing aliases nothing.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(CallError::errno("mmap (sigaltstack)", errno()));
    }
    // SAFETY: the first page of the mapping just made; stacks grow down, so the guard goes below.
    check("mprotect (sigaltstack guard)", unsafe { libc::mprotect(base, page, libc::PROT_NONE) })?;
    let stack =
        libc::stack_t { ss_sp: base.cast::<u8>().wrapping_add(page).cast(), ss_flags: 0, ss_size: ALTSTACK_BYTES };
    // SAFETY: `stack` describes memory this thread owns for as long as it is installed.
    check("sigaltstack", unsafe { libc::sigaltstack(&stack, ptr::null_mut()) })?;

    // SAFETY: sigevent is plain data; zero is a valid starting value for every field.
    let mut event: libc::sigevent = unsafe { MaybeUninit::zeroed().assume_init() };
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_signo = libc::SIGURG; // never delivered: the timer is never armed
                                      // SAFETY: gettid has no preconditions.
    event.sigev_notify_thread_id = unsafe { libc::gettid() };
    let mut timer: libc::timer_t = ptr::null_mut();
    // SAFETY: `event` and `timer` are valid for the call.
    check("timer_create", unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) })?;

    if ctx.exc == Exc::Restored {
        // SAFETY: the timer was created above and is deleted once.
        check("timer_delete", unsafe { libc::timer_delete(timer) })?;
        let off = libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
        // SAFETY: disabling needs no memory; the thread is not running on the alternate stack.
        check("sigaltstack (disable)", unsafe { libc::sigaltstack(&off, ptr::null_mut()) })?;
        // SAFETY: the mapping is no longer installed anywhere.
        check("munmap (sigaltstack)", unsafe { libc::munmap(base, len) })?;
    }
    Ok(())
}

/// The TSD destructor every workload thread registers: the `fix` axis, then the handshake.
///
/// Posting from here, rather than from the thread body, means the main thread never reuses the context
/// while a previous thread's destructor still reads it.
extern "C" fn on_thread_exit(arg: *mut c_void) {
    // SAFETY: `arg` is the value set by `thread_main`, the live ThreadCtx.
    let ctx = unsafe { &*arg.cast::<ThreadCtx>() };
    if ctx.fix == Fix::On {
        // The analog of Clozure CL's shutdown_thread_tcr trimming the thread port's references: release
        // every self handle the thread still holds.
        ctx.close_held();
    }
    ctx.post();
}

extern "C" fn sentinel_main(_: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One cell's workload in this process.
pub struct Linux {
    thread: ThreadKind,
    /// Boxed so its address stays fixed while threads hold it; freed in `Drop`.
    ctx: *mut ThreadCtx,
    attr: libc::pthread_attr_t,
    tasks_baseline: i64,
    notes: Vec<String>,
}

impl Linux {
    pub fn open(cell: Cell, params: &Params) -> Result<Linux, CallError> {
        raise_fd_limit()?;

        let mut notes = Vec::new();
        let handle = SelfHandle::detect()?;
        if handle == SelfHandle::ProcThreadSelf && cell.self_ref != SelfRef::None {
            notes.push(
                "self handles are /proc/thread-self directory fds: this kernel has no PIDFD_THREAD (Linux < 6.9) \
                 or THREADLEAK_LINUX_SELF_HANDLE asked for them"
                    .to_owned(),
            );
        }
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if !tunables.contains("glibc.pthread.stack_cache_size=0") {
            notes.push(
                "glibc's stack cache is on (GLIBC_TUNABLES not set by the runner): maps and vm_kib are noisy"
                    .to_owned(),
            );
        }

        let mut exit_key: libc::pthread_key_t = 0;
        // SAFETY: `exit_key` is valid for writing; the destructor is an extern "C" fn of the right type.
        check_pthread("pthread_key_create", unsafe { libc::pthread_key_create(&mut exit_key, Some(on_thread_exit)) })?;

        let ctx = Box::into_raw(Box::new(ThreadCtx {
            // SAFETY: sem_t is plain data, initialized by sem_init below before any use.
            done: UnsafeCell::new(unsafe { MaybeUninit::zeroed().assume_init() }),
            exit_key,
            self_ref: cell.self_ref,
            exc: cell.exc,
            fix: cell.fix,
            handle,
            handles: UnsafeCell::new(vec![-1; params.self_calls as usize]),
            held: Slot::new(0),
            failure: Slot::new(None),
        }));
        // SAFETY: `ctx` was just allocated; an unshared (pshared = 0) semaphore starting at 0.
        check("sem_init", unsafe { libc::sem_init((*ctx).done.get(), 0, 0) })?;

        // SAFETY: pthread_attr_t is initialized by pthread_attr_init before use.
        let mut attr: libc::pthread_attr_t = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: `attr` is valid for writing.
        check_pthread("pthread_attr_init", unsafe { libc::pthread_attr_init(&mut attr) })?;
        let detach = match cell.thread {
            ThreadKind::Detached => libc::PTHREAD_CREATE_DETACHED,
            ThreadKind::Joined | ThreadKind::Unjoined => libc::PTHREAD_CREATE_JOINABLE,
        };
        // SAFETY: `attr` was initialized above.
        check_pthread("pthread_attr_setdetachstate", unsafe { libc::pthread_attr_setdetachstate(&mut attr, detach) })?;
        // SAFETY: as above.
        check_pthread("pthread_attr_setstacksize", unsafe { libc::pthread_attr_setstacksize(&mut attr, STACK_BYTES) })?;

        let mut linux = Linux { thread: cell.thread, ctx, attr, tasks_baseline: 0, notes };
        linux.tasks_baseline = count_dir_entries(c"/proc/self/task")?;
        Ok(linux)
    }

    fn wait_for_tasks(&self, deadline: Instant) -> Result<(), SettleFailure> {
        let mut pause = Duration::from_micros(20);
        loop {
            let tasks = count_dir_entries(c"/proc/self/task")?;
            if tasks <= self.tasks_baseline {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SettleFailure::TimedOut(SettleError {
                    waited_ms: SETTLE_LIMIT.as_millis() as u64,
                    detail: format!("/proc/self/task has {tasks} entries, baseline {}", self.tasks_baseline),
                }));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

impl Drop for Linux {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from Box::into_raw in `open` and no thread uses it once the main thread has
        // stopped creating them (each cycle waits for its thread's last access).
        unsafe {
            libc::pthread_attr_destroy(&mut self.attr);
            libc::sem_destroy((*self.ctx).done.get());
            drop(Box::from_raw(self.ctx));
        }
    }
}

impl Workload for Linux {
    fn cycle(&mut self) -> Result<(), CallError> {
        let mut thread: libc::pthread_t = 0;
        // SAFETY: `ctx` lives until `drop`; only shared references to it are ever made.
        let ctx = unsafe { &*self.ctx };
        ctx.failure.set(None);
        // SAFETY: `attr` is initialized; `ctx` outlives the thread's use of it (we wait for `done`).
        let ret = unsafe { libc::pthread_create(&mut thread, &self.attr, thread_main, self.ctx.cast()) };
        check_pthread("pthread_create", ret)?;
        // Joined first: the join returns once the thread has ended, its exit hook run, so the wait below
        // takes the hook's post without blocking, and the main thread waits once per thread, not twice
        // (for the post, then for the end). A failed join is reported after the wait, which the context
        // must outlive.
        let joined = match self.thread {
            // SAFETY: a joinable thread created above, joined once.
            ThreadKind::Joined => unsafe { libc::pthread_join(thread, ptr::null_mut()) },
            ThreadKind::Detached | ThreadKind::Unjoined => 0,
        };
        loop {
            // SAFETY: `done` is initialized; sem_wait blocks until the thread's exit hook posts it.
            if unsafe { libc::sem_wait(ctx.done.get()) } == 0 {
                break;
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(CallError::errno("sem_wait", e));
            }
        }
        check_pthread("pthread_join", joined)?;
        // Handles the thread kept are the leak being measured: forget them, never close them here.
        ctx.held.set(0);
        match ctx.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn settle(&mut self) -> Result<(), SettleFailure> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        self.wait_for_tasks(deadline)?;
        // glibc frees an exited thread's stack only when a later thread is queued for freeing (its own
        // stack is still in use while it exits); creating and joining one sentinel flushes the queue
        // (glibc nptl/nptl-stack.c, queue_stack and free_stacks).
        let mut sentinel: libc::pthread_t = 0;
        // SAFETY: default attributes, a body that touches nothing.
        check_pthread("pthread_create (sentinel)", unsafe {
            libc::pthread_create(&mut sentinel, ptr::null(), sentinel_main, ptr::null_mut())
        })?;
        // SAFETY: joinable sentinel created above, joined once.
        check_pthread("pthread_join (sentinel)", unsafe { libc::pthread_join(sentinel, ptr::null_mut()) })?;
        self.wait_for_tasks(deadline)
    }

    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError> {
        census(out)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn inventory(&mut self) -> Result<Inventory, CallError> {
        inventory()
    }
}

/// What the census counts, by kind: each descriptor by what it points at, each mapping by size,
/// permissions and name, each timer by its notification ([`fd_kind`], [`MapKind`], [`TimerKind`]).
/// Finds descriptors with `poll` ([`open_descriptors`]) and reads their links with readlinkat into a stack
/// buffer, the rest through `std::fs`; it allocates, so it is taken after a census, never inside one. The
/// brk heap is left out, as the census leaves it out of `vm_kib`.
pub fn inventory() -> Result<Inventory, CallError> {
    let io = |call: &'static str| move |e: std::io::Error| CallError::errno(call, e.raw_os_error().unwrap_or(0));
    let mut out = Inventory::new();
    // Descriptors, by the target of each link, read into a stack buffer; a link is read once per kind where
    // the device (or the device and inode) says the kind, and a kind's name is made once.
    // Kinds and their counts, by index; `index` finds a kind's, `files` a file's. `devices` holds each
    // device seen (few: a scan is cheaper than hashing), whether its filesystem has one kind, and that
    // kind's index once a link of it was read.
    let mut kinds: Vec<(String, i64)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut files: std::collections::HashMap<(u64, u64), usize> = std::collections::HashMap::new();
    let mut devices: Vec<(u64, bool, Option<usize>)> = Vec::new();
    let mut target = [0u8; 4096];
    // The directory whose entries links are read at, open throughout, and left out of the count.
    // SAFETY: the path is a NUL-terminated literal.
    let dir = check("open /proc/self/fd", unsafe {
        libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
    })?;
    // SAFETY: `dir` was just opened and nothing else owns it; dropping `links` closes it.
    let links = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
    let mut digits = [0u8; 12];
    for fd in open_descriptors(dir)? {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is valid for writing a `stat`.
        let file = (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| {
            // SAFETY: fstat succeeded and filled it.
            let st = unsafe { st.assume_init() };
            (st.st_mode & libc::S_IFMT, st.st_dev, st.st_ino)
        });
        // Where every descriptor of a filesystem is of one kind (pipefs, sockfs, pidfs), its device says
        // the kind; a file of a filesystem names one inode by one path. An anonymous inode is shared by
        // descriptors of different kinds (eventfd, timerfd: fs/anon_inodes.c): read each time.
        let key = file.and_then(|(mode, dev, ino)| {
            let device = devices.iter().position(|d| d.0 == dev).unwrap_or_else(|| {
                let mut fs = MaybeUninit::<libc::statfs>::uninit();
                // SAFETY: `fs` is valid for writing a `statfs`.
                let magic = (unsafe { libc::fstatfs(fd, fs.as_mut_ptr()) } == 0)
                    // SAFETY: fstatfs succeeded and filled it.
                    .then(|| unsafe { fs.assume_init() }.f_type as u64);
                devices.push((dev, magic.is_some_and(|m| ONE_KIND_FILESYSTEMS.contains(&m)), None));
                devices.len() - 1
            });
            if devices[device].1 {
                Some(Key::Device(device))
            } else {
                matches!(mode, libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK)
                    .then_some(Key::File(dev, ino))
            }
        });
        let known = match key {
            Some(Key::Device(device)) => devices[device].2,
            Some(Key::File(dev, ino)) => files.get(&(dev, ino)).copied(),
            None => None,
        };
        let at = match known {
            Some(at) => at,
            None => {
                let name = fd_name(fd, &mut digits);
                // SAFETY: `name` is NUL-terminated, `target` valid for its length; a descriptor closed
                // meanwhile fails and is not counted.
                let n = unsafe { libc::readlinkat(dir, name.as_ptr(), target.as_mut_ptr().cast(), target.len()) };
                if n <= 0 {
                    continue;
                }
                let kind = crate::sites::fd_kind(&String::from_utf8_lossy(&target[..n as usize]));
                let at = *index.entry(kind).or_insert_with_key(|kind| {
                    kinds.push((kind.clone(), 0));
                    kinds.len() - 1
                });
                match key {
                    Some(Key::Device(device)) => devices[device].2 = Some(at),
                    Some(Key::File(dev, ino)) => {
                        files.insert((dev, ino), at);
                    }
                    None => {}
                }
                at
            }
        };
        kinds[at].1 += 1;
    }
    drop(links);
    for (kind, count) in kinds {
        out.insert(("fds".to_owned(), kind), count);
    }
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(io("read /proc/self/maps"))?;
    // Equal kinds are counted first and their text made once: a process holds thousands of mappings and
    // timers of a few kinds.
    let mut mappings: std::collections::HashMap<MapKind<'_>, i64> = std::collections::HashMap::new();
    for_each_map_kind(&maps, |kind| *mappings.entry(kind).or_insert(0) += 1);
    for (kind, count) in mappings {
        *out.entry(("maps".to_owned(), kind.to_string())).or_insert(0) += count;
    }
    let timers = std::fs::read_to_string("/proc/self/timers").map_err(io("read /proc/self/timers"))?;
    let mut notified: std::collections::HashMap<TimerKind<'_>, i64> = std::collections::HashMap::new();
    for_each_timer_kind(&timers, |kind| *notified.entry(kind).or_insert(0) += 1);
    for (kind, count) in notified {
        *out.entry(("timers".to_owned(), kind.to_string())).or_insert(0) += count;
    }
    Ok(out)
}

/// The descriptors this process has open, but `dir`: those `poll` sees ([`for_each_polled_fd`]) when
/// they are all there are, which the size of /proc/self/fd (`dir`, itself one of them) counts (Linux 6.2,
/// `proc_fd_getattr`); else, for descriptors opened with `O_PATH`, which `poll` does not see, on an older
/// kernel, or when descriptors were opened or closed meanwhile, the entries of /proc/self/fd. Listing the
/// directory makes the kernel build a dentry for each descriptor: 15 ms at 20,000 here, against 3 ms.
fn open_descriptors(dir: c_int) -> Result<Vec<c_int>, CallError> {
    let mut fds = Vec::new();
    for_each_polled_fd(|fd| {
        if fd != dir {
            fds.push(fd);
        }
    })?;
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writing a `stat`.
    let all = (unsafe { libc::fstat(dir, st.as_mut_ptr()) } == 0)
        // SAFETY: fstat succeeded and filled it.
        .then(|| unsafe { st.assume_init() }.st_size);
    if all == Some(fds.len() as i64 + 1) {
        return Ok(fds);
    }
    fds.clear();
    for_each_dir_entry(c"/proc/self/fd", |listing, name| {
        match name.to_str().ok().and_then(|n| n.parse::<c_int>().ok()) {
            // The listing's own descriptor and `dir` are not the process's.
            Some(fd) if fd != listing && fd != dir => fds.push(fd),
            _ => {}
        }
    })?;
    Ok(fds)
}

/// A descriptor's name in /proc/self/fd, written NUL-terminated into `digits`.
fn fd_name(fd: c_int, digits: &mut [u8; 12]) -> &CStr {
    let mut at = digits.len() - 1;
    digits[at] = 0;
    let mut rest = fd.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    CStr::from_bytes_with_nul(&digits[at..]).unwrap_or_default()
}

/// What says a descriptor's kind in the inventory: its device (by index), where its filesystem has one
/// kind, or its file's device and inode.
#[derive(Clone, Copy)]
enum Key {
    Device(usize),
    File(u64, u64),
}

/// Filesystems whose every file is of one kind, by `statfs` magic (include/uapi/linux/magic.h): pipefs
/// (anonymous pipes), sockfs (sockets), pidfs (pidfds, Linux 6.9).
const ONE_KIND_FILESYSTEMS: [u64; 3] = [0x5049_5045, 0x534f_434b, 0x5049_4446];

/// A size as `8 MiB` or `68 KiB`.
fn size_text(bytes: usize) -> String {
    let kib = bytes / 1024;
    if kib >= 1024 && kib % 1024 == 0 {
        format!("{} MiB", kib / 1024)
    } else {
        format!("{kib} KiB")
    }
}

/// A mapping's kind, told before it is written out as `SIZE PERMS NAME` (its `Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct MapKind<'a> {
    bytes: usize,
    perms: &'a str,
    what: MapWhat<'a>,
}

/// What a mapping is, by its name or, unnamed, by its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum MapWhat<'a> {
    /// An inaccessible page right below an anonymous `rw-p` mapping.
    GuardBelowStack,
    /// An anonymous `rw-p` mapping right above a guard page.
    Stack,
    Anonymous,
    Named(&'a str),
}

impl std::fmt::Display for MapKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (size, perms) = (size_text(self.bytes), self.perms);
        match self.what {
            MapWhat::GuardBelowStack => write!(f, "{size} {perms} guard page (below a stack)"),
            MapWhat::Stack => write!(f, "{size} {perms} anonymous, guard page below (a stack)"),
            MapWhat::Anonymous => write!(f, "{size} {perms} anonymous"),
            MapWhat::Named(name) => write!(f, "{size} {perms} {name}"),
        }
    }
}

/// Each mapping's kind, `SIZE PERMS NAME`: the path, a `[name]` of the kernel's, or `anonymous`. An
/// inaccessible anonymous mapping right below an anonymous `rw-p` one is a guard page and the one above
/// it a stack: a thread's (glibc `nptl/allocate_stack.c`) or an alternate signal stack a runtime guards
/// the same way; Linux no longer names thread stacks (since 4.5), so which of them it is is not said.
/// The brk heap is left out.
#[cfg(test)]
fn map_kinds(maps: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_map_kind(maps, |kind| out.push(kind.to_string()));
    out
}

/// Calls `f` with the kind of each mapping of `maps` (the text of `/proc/self/maps`), in order, as
/// [`map_kinds`] writes them.
fn for_each_map_kind<'a>(maps: &'a str, mut f: impl FnMut(MapKind<'a>)) {
    struct Map<'a> {
        start: usize,
        end: usize,
        perms: &'a str,
        name: &'a str,
    }
    let lines: Vec<Map<'_>> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = parse_range(fields.next()?.as_bytes())?;
            let perms = fields.next()?;
            let name = fields.nth(3).map_or("", |_| line.splitn(6, char::is_whitespace).last().unwrap_or("").trim());
            Some(Map { start, end, perms, name })
        })
        .collect();
    let guard = |m: &Map<'_>| m.perms == "---p" && m.name.is_empty();
    let guarded = |i: usize| i > 0 && guard(&lines[i - 1]) && lines[i - 1].end == lines[i].start;
    for (i, m) in lines.iter().enumerate() {
        if m.name == "[heap]" {
            continue;
        }
        let above = lines.get(i + 1);
        let what = if guard(m) && above.is_some_and(|a| a.start == m.end && a.perms == "rw-p" && a.name.is_empty()) {
            MapWhat::GuardBelowStack
        } else if m.name.is_empty() && m.perms == "rw-p" && guarded(i) {
            MapWhat::Stack
        } else if m.name.is_empty() {
            MapWhat::Anonymous
        } else {
            MapWhat::Named(m.name)
        };
        f(MapKind { bytes: m.end - m.start, perms: m.perms, what });
    }
}

/// A timer's kind: how it notifies (`notify: HOW/TARGET.ID`, HOW `signal`, `none` or `thread`; TARGET
/// `tid` for `SIGEV_THREAD_ID`: `show_timer`, fs/proc/base.c) and which signal, without the target's id;
/// written out by its `Display`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TimerKind<'a> {
    how: &'a str,
    to_thread: bool,
    signal: &'a str,
}

impl<'a> TimerKind<'a> {
    /// From a timer's `notify:` and `signal:` values, `?` for one missing.
    fn new(notify: Option<&'a str>, signal: Option<&'a str>) -> TimerKind<'a> {
        let (how, target) = notify.unwrap_or("?").split_once('/').unwrap_or(("?", "?"));
        let signal = signal.unwrap_or("?").split('/').next().unwrap_or("?");
        TimerKind { how, to_thread: target.starts_with("tid"), signal }
    }
}

impl std::fmt::Display for TimerKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signal = self.signal;
        match (self.how, self.to_thread) {
            ("signal", true) => write!(f, "signal {signal} to a thread (SIGEV_THREAD_ID)"),
            ("signal", false) => write!(f, "signal {signal} to the process"),
            ("none", _) => f.write_str("no notification"),
            ("thread", _) => write!(f, "a thread started (SIGEV_THREAD), signal {signal}"),
            (other, _) => write!(f, "{other}, signal {signal}"),
        }
    }
}

/// A timer's kind from its block of `/proc/self/timers` ([`TimerKind`]).
#[cfg(test)]
fn timer_kind(block: &str) -> String {
    let field = |key: &str| block.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim);
    TimerKind::new(field("notify:"), field("signal:")).to_string()
}

/// Calls `f` with the kind of each timer of `timers` (the text of `/proc/self/timers`), in order: each
/// timer's block starts with its `ID:` line (and the first line starts one, whatever it is), and its
/// first `notify:` and `signal:` lines say its kind.
fn for_each_timer_kind<'a>(timers: &'a str, mut f: impl FnMut(TimerKind<'a>)) {
    let mut block: Option<(Option<&'a str>, Option<&'a str>)> = None;
    for line in timers.lines() {
        if line.starts_with("ID:") || block.is_none() {
            if let Some((notify, signal)) = block {
                f(TimerKind::new(notify, signal));
            }
            block = Some((None, None));
        }
        if let Some((notify, signal)) = &mut block {
            let line = line.trim();
            *notify = notify.or_else(|| line.strip_prefix("notify:").map(str::trim));
            *signal = signal.or_else(|| line.strip_prefix("signal:").map(str::trim));
        }
    }
    if let Some((notify, signal)) = block {
        f(TimerKind::new(notify, signal));
    }
}

/// Has the kernel kill this process when its parent dies, and exits at once if the parent `runner` is
/// already gone (reparenting happened before the request could take effect).
pub fn die_with_parent(runner: u32) -> Result<(), CallError> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number only.
    check("prctl(PR_SET_PDEATHSIG)", unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != runner {
        std::process::exit(1);
    }
    Ok(())
}

/// Has the program `command` will start killed when its runner (this process, `runner`) dies: the kernel
/// sends SIGKILL when the parent exits (`PR_SET_PDEATHSIG`, set between fork and exec), and a child whose
/// parent already changed refuses to start.
pub fn die_with_runner(command: &mut std::process::Command, runner: u32) {
    use std::os::unix::process::CommandExt;
    let runner = runner as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != runner {
                return Err(std::io::Error::other("the runner died before the program started"));
            }
            Ok(())
        });
    }
}

/// `bytes` in a sealed anonymous file (`memfd_create(2)`): nothing can write, grow or shrink it once
/// sealed, it lives on no filesystem (so a `noexec` `/tmp` does not matter), and it is gone when the last
/// descriptor of it closes. Another process of this user opens it as `/proc/PID/fd/N`.
///
/// `MFD_EXEC` asks for an executable file where `vm.memfd_noexec` would otherwise make it non-executable
/// (Linux 6.3, `mm/memfd.c`); a kernel older than that flag refuses it with `EINVAL`, and its memfds are
/// executable, so the call is made again without it. With `vm.memfd_noexec=2` the kernel refuses
/// executable memfds (`EACCES`), which the caller takes as "use a file instead".
pub fn sealed_memfd(name: &CStr, bytes: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    const MFD_EXEC: libc::c_uint = 0x0010; // include/uapi/linux/memfd.h
    let create = |flags: libc::c_uint| {
        // SAFETY: `name` is a NUL-terminated string; memfd_create has no other precondition.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: memfd_create returned a new descriptor that nothing else owns.
            Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        }
    };
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let fd = match create(flags | MFD_EXEC) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => create(flags)?,
        other => other?,
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(F_ADD_SEALS) on a descriptor this function owns, with an integer argument.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_ADD_SEALS, seals) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a descendant
/// whose parent exits (a daemon that calls `setsid` after a double fork) becomes this process's child,
/// where [`children_of`] finds it.
pub fn adopt_orphans() -> bool {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a flag only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) == 0 }
}

/// The processes whose parent is `parent`, from each /proc/PID/stat (the fourth field, after the command
/// name in parentheses, which may itself hold spaces and parentheses).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
    .collect()
}

/// The processes whose environment holds `entry` (`NAME=value`) exactly, from /proc/PID/environ (readable
/// for this user's own processes).
pub fn processes_with_env(entry: &[u8]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        (pid != me && environ.split(|&b| b == 0).any(|v| v == entry)).then_some(pid)
    })
    .collect()
}

/// The threads of process `pid` the kernel knows now (`Threads:` in /proc/PID/status).
pub fn thread_count(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

/// The CPUs the calling thread may run on (`sched_getaffinity(2)`), in increasing order; empty when they
/// cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: `set` is valid for writing its size.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set, for CPUs below its size.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// The CPU the calling thread runs on now (`sched_getcpu(3)`).
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// Keeps the calling thread, and the threads it creates from now on, on `cpu` (`sched_setaffinity(2)`);
/// whether that was done.
pub fn stay_on_cpu(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: cpu_set_t is plain data; zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: `cpu` is below the set's size (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid set of its size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// Whether the calling thread is the main thread: the kernel gives the main thread the process's id as
/// its own (clone(2), "the thread group leader").
pub fn on_main_thread() -> bool {
    // SAFETY: gettid and getpid have no preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

/// Bytes of address space this process may still map: its `RLIMIT_AS` (`ulimit -v`) less what it maps
/// now; `None` when there is no limit.
pub fn address_space_left() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is valid for writing.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let mapped = status_field(c"/proc/self/status", b"VmSize:").ok()? as u64 * 1024;
    Some(lim.rlim_cur.saturating_sub(mapped))
}

/// Lets a leaking cell run into the hard limit rather than the (often 1024) soft one.
fn raise_fd_limit() -> Result<(), CallError> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is valid for writing.
    check("getrlimit(RLIMIT_NOFILE)", unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit.
        check("setrlimit(RLIMIT_NOFILE)", unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(())
}

/// The machine, from uname(2) and glibc.
pub fn os() -> Os {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: `uts` is valid for writing.
    let ok = unsafe { libc::uname(&mut uts) } == 0;
    let field = |f: &[libc::c_char]| -> String {
        if !ok {
            return String::new();
        }
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    Os {
        family: "linux".to_owned(),
        release: field(&uts.release),
        version: field(&uts.version),
        arch: std::env::consts::ARCH.to_owned(),
        libc: libc_version(),
        build: None,
    }
}

#[cfg(target_env = "gnu")]
fn libc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    format!("glibc {}", v.to_string_lossy())
}

#[cfg(not(target_env = "gnu"))]
fn libc_version() -> String {
    std::env::consts::OS.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_told_apart_by_what_they_point_at() {
        assert_eq!(crate::sites::fd_kind("anon_inode:[pidfd]"), "anon_inode:[pidfd]");
        assert_eq!(crate::sites::fd_kind("socket:[123456]"), "socket");
        assert_eq!(crate::sites::fd_kind("pipe:[99]"), "pipe");
        assert_eq!(crate::sites::fd_kind("/dev/null"), "/dev/null");
        assert_eq!(crate::sites::fd_kind("/proc/4242/task/4243"), "/proc/PID/task/TID");
        assert_eq!(crate::sites::fd_kind("/proc/4242/fd"), "/proc/PID/fd");
        assert_eq!(crate::sites::fd_kind("/tmp/x (deleted)"), "/tmp/x (deleted)");
    }

    #[test]
    fn mappings_are_told_apart_by_size_permissions_and_name_with_stacks_and_their_guards() {
        let maps = "\
55d0a0000000-55d0a0021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 ---p 00000000 00:00 0 
7f0000001000-7f0000801000 rw-p 00000000 00:00 0 
7f0000900000-7f0000910000 rw-p 00000000 00:00 0 
7f0000a00000-7f0000a28000 r--p 00000000 08:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            map_kinds(maps),
            [
                "4 KiB ---p guard page (below a stack)",
                "8 MiB rw-p anonymous, guard page below (a stack)",
                "64 KiB rw-p anonymous",
                "160 KiB r--p /usr/lib/x86_64-linux-gnu/libc.so.6",
                "132 KiB rw-p [stack]",
            ]
        );
    }

    #[test]
    fn timers_are_told_apart_by_how_they_notify() {
        assert_eq!(
            timer_kind("ID: 0\nsignal: 23/0000000000000000\nnotify: signal/tid.4243\nClockID: 1\n"),
            "signal 23 to a thread (SIGEV_THREAD_ID)"
        );
        assert_eq!(
            timer_kind("ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.4242\nClockID: 0\n"),
            "signal 14 to the process"
        );
        assert_eq!(timer_kind("ID: 2\nsignal: 0/0\nnotify: none/pid.4242\nClockID: 0\n"), "no notification");
    }

    #[test]
    fn the_inventory_tells_apart_what_this_process_opens() {
        // Descriptors that share one inode but not their kind (eventfd and timerfd on anon_inodefs), a file
        // opened twice, pipes and sockets, each counted as what it is. Other tests of this binary open and
        // close pipes and sockets meanwhile: for those, what is open at the end is at least ours.
        let dir = tempfile::tempdir().unwrap();
        let held = dir.path().join("held");
        std::fs::write(&held, b"").unwrap();
        let path = std::ffi::CString::new(held.clone().into_os_string().into_encoded_bytes()).unwrap();
        let before = inventory().unwrap();
        let mut fds = Vec::new();
        for _ in 0..2 {
            // SAFETY: plain integers and a NUL-terminated path in, descriptors out; each is closed below.
            unsafe {
                fds.push(libc::eventfd(0, libc::EFD_CLOEXEC));
                fds.push(libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC));
                fds.push(libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC));
                let mut ends = [0; 2];
                assert_eq!(libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC), 0);
                fds.extend(ends);
                fds.push(libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0));
            }
        }
        assert!(fds.iter().all(|&fd| fd >= 0));
        let after = inventory().unwrap();
        for fd in fds {
            // SAFETY: each was opened above and is closed once.
            unsafe { libc::close(fd) };
        }
        let count = |of: &Inventory, kind: &str| of.get(&("fds".to_owned(), kind.to_owned())).copied().unwrap_or(0);
        let grew = |kind: &str| count(&after, kind) - count(&before, kind);
        let file = held.to_string_lossy();
        assert_eq!([grew("anon_inode:[eventfd]"), grew("anon_inode:[timerfd]"), grew(&file)], [2, 2, 2], "{after:?}");
        assert!(count(&after, "pipe") >= 4 && count(&after, "socket") >= 2, "{after:?}");
    }

    #[test]
    fn descriptors_poll_does_not_see_are_found_by_listing() {
        // `poll` takes an O_PATH descriptor for one not open; the size of /proc/self/fd counts it.
        // SAFETY: NUL-terminated paths in, descriptors out; each is closed below.
        let (held, dir) = unsafe {
            (
                libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC),
                libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC),
            )
        };
        assert!(held >= 0 && dir >= 0);
        let fds = open_descriptors(dir).unwrap();
        close(held);
        close(dir);
        assert!(fds.contains(&held) && !fds.contains(&dir), "{fds:?}");
    }

    #[test]
    fn descriptors_are_named_in_decimal() {
        let mut digits = [0u8; 12];
        assert_eq!(fd_name(0, &mut digits), c"0");
        assert_eq!(fd_name(19_999, &mut digits), c"19999");
        assert_eq!(fd_name(c_int::MAX, &mut digits), c"2147483647");
    }

    #[test]
    fn os_names_the_kernel_and_glibc() {
        let os = os();
        assert_eq!(os.family, "linux");
        assert!(!os.release.is_empty());
        assert!(os.libc.starts_with("glibc ") || !cfg!(target_env = "gnu"), "{}", os.libc);
    }
}
