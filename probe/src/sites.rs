//! Sites: where each counted resource the program holds was made. With `THREADLEAK_PROBE_SITES=1`, every
//! interposed call that makes a resource (the platform files say which: `linux_calls.rs`) records its call
//! stack, interned in a fixed table of stacks, against the resource (a descriptor); the calls that give
//! one back clear it. At each census the probe tallies the live resources by stack, and writes each
//! stack once (its frames as module and offset, for the runner to symbolize after the run) and the
//! tallies: the runner turns them into a rate per thread ended, per stack.
//!
//! **Where it is called from.** Anywhere: a thread, a signal handler, the unwinder itself (which may
//! `open` or `mmap`), a forked child. So the hot path takes no lock and allocates nothing: the stack is
//! captured into the caller's frame, interned with atomic operations into a fixed table, and stored in
//! one atomic word per resource. A call made while the thread is already recording (the unwinder's own
//! calls, a signal handler landing mid-record) is passed through unrecorded. Memory is fixed at load,
//! whatever the program does: [`SITES`] stacks, [`RESOURCES`] descriptors; past either, calls are
//! counted as unrecorded and the census says so.
//!
//! **Which thread made it.** Each thread that records gets a serial number; the probe marks the serials
//! of threads that ended, so a census can say how many of a stack's resources outlived the thread that
//! made them.

use std::cell::Cell;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Frames kept of a stack (innermost first, the probe's own left out).
pub const DEPTH: usize = 16;
/// Distinct stacks the table holds.
pub const SITES: usize = 4096;
/// Descriptors followed: 0 to this, past which a descriptor is not (the process's limit is usually lower).
pub const RESOURCES: usize = 1 << 20;
/// Serials whose end is remembered (serials wrap around it).
const SERIALS: usize = 1 << 20;

/// The counter a recorded call's resource moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(dead_code)] // each OS makes one kind
pub enum Counter {
    /// A descriptor (Linux).
    Fds = 0,
    /// A name in the task's IPC space, by the latest call that added a right or reference to it (macOS).
    Names = 1,
    /// A thread the program created through `pthread_create` and that still runs.
    Running = 2,
}

/// The call a thread's site names (beyond the platform's calls, which name what makes a resource).
pub const THREAD_CALL: u32 = u32::MAX;

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Fds => "fds",
            Counter::Names => "names",
            Counter::Running => "running",
        }
    }

    fn from_index(i: u32) -> Counter {
        match i {
            1 => Counter::Names,
            2 => Counter::Running,
            _ => Counter::Fds,
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The probe's own code, `[low, high)`: frames in it are not the program's.
static OWN_LOW: AtomicUsize = AtomicUsize::new(0);
static OWN_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Calls not recorded: the stack table was full, or the descriptor past [`RESOURCES`].
static UNRECORDED: AtomicU64 = AtomicU64::new(0);

struct Site {
    /// The stack's hash (never 0 once claimed), 0 while the entry is free.
    hash: AtomicU64,
    /// Set once the frames are written.
    ready: AtomicBool,
    /// Whether this process has written the stack to the samples file.
    written: AtomicBool,
    call: AtomicU32,
    counter: AtomicU32,
    depth: AtomicU32,
    frames: [AtomicUsize; DEPTH],
}

impl Site {
    const fn new() -> Site {
        Site {
            hash: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            written: AtomicBool::new(false),
            call: AtomicU32::new(0),
            counter: AtomicU32::new(0),
            depth: AtomicU32::new(0),
            frames: [const { AtomicUsize::new(0) }; DEPTH],
        }
    }
}

static TABLE: [Site; SITES] = [const { Site::new() }; SITES];

/// Per resource, by its key (a descriptor; a Mach name's index): 0 (not recorded), or the site index plus
/// one in the high half and the maker's serial in the low half.
static OWNER: [AtomicU64; RESOURCES] = [const { AtomicU64::new(0) }; RESOURCES];
/// Per key, the resource itself (the descriptor; the Mach name), for a census to ask about it.
static IDS: [AtomicU32; RESOURCES] = [const { AtomicU32::new(0) }; RESOURCES];
/// One past the highest key ever recorded: a census scans up to it.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// Serials of threads that ended, one bit each.
static ENDED: [AtomicU64; SERIALS / 64] = [const { AtomicU64::new(0) }; SERIALS / 64];
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// Set while this thread records (or is within a call the probe makes): a call from inside passes.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// This thread's serial, 0 until it records.
    static SERIAL: Cell<u32> = const { Cell::new(0) };
}

/// Starts recording; `own` is any address in the probe's code, to tell its frames apart.
pub fn enable(own: (usize, usize)) {
    OWN_LOW.store(own.0, Ordering::Relaxed);
    OWN_HIGH.store(own.1, Ordering::Relaxed);
    crate::unwind::prepare();
    ENABLED.store(true, Ordering::Release);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// Holds [`BUSY`] for the calling thread; `None` when it is already held.
struct Busy(());

impl Busy {
    fn enter() -> Option<Busy> {
        // A thread being torn down has no thread-locals left: it records nothing.
        let was = BUSY.try_with(|b| b.replace(true)).unwrap_or(true);
        (!was).then_some(Busy(()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}

/// Runs `f` with this thread's calls unrecorded (the probe's own, at a census).
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let _busy = Busy::enter();
    f()
}

fn serial() -> u32 {
    SERIAL
        .try_with(|s| {
            if s.get() == 0 {
                let mut n = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    n = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
                }
                let i = n as usize % SERIALS;
                ENDED[i / 64].fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
                s.set(n);
            }
            s.get()
        })
        .unwrap_or(0)
}

/// Called as a thread the probe created ends: what it made now outlives it.
pub fn thread_ended() {
    let n = SERIAL.try_with(Cell::get).unwrap_or(0);
    if n != 0 {
        let i = n as usize % SERIALS;
        ENDED[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
    }
}

fn has_ended(serial: u32) -> bool {
    let i = serial as usize % SERIALS;
    serial != 0 && ENDED[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
}

/// The calling stack, innermost first, without the probe's own frames, into `frames`; returns how many.
fn capture(frames: &mut [usize; DEPTH]) -> usize {
    let (low, high) = (OWN_LOW.load(Ordering::Relaxed), OWN_HIGH.load(Ordering::Relaxed));
    crate::unwind::capture(frames, &|ip| ip >= low && ip < high)
}

fn hash(call: u32, frames: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(call);
    for &f in frames {
        h = (h ^ f as u64).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    h | 1
}

/// The table's index for this stack, claiming an entry for a new one; `None` when the table is full.
fn intern(call: u32, counter: Counter, frames: &[usize]) -> Option<usize> {
    let h = hash(call, frames);
    let start = (h >> 7) as usize % SITES;
    for k in 0..SITES {
        let i = (start + k) % SITES;
        let site = &TABLE[i];
        match site.hash.load(Ordering::Acquire) {
            0 => {
                if site.hash.compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    for (slot, &f) in site.frames.iter().zip(frames) {
                        slot.store(f, Ordering::Relaxed);
                    }
                    site.depth.store(frames.len() as u32, Ordering::Relaxed);
                    site.call.store(call, Ordering::Relaxed);
                    site.counter.store(counter as u32, Ordering::Relaxed);
                    site.ready.store(true, Ordering::Release);
                    return Some(i);
                }
                if site.hash.load(Ordering::Acquire) == h {
                    return Some(i);
                }
            }
            x if x == h => return Some(i),
            _ => {}
        }
    }
    None
}

/// Records that the calling thread's call `call` (an index into the platform's names) made resource
/// `id` (a descriptor, or a Mach name), kept under `key` (the descriptor, or the name's index).
pub fn made(call: u32, counter: Counter, key: usize, id: u32) {
    if !enabled() {
        return;
    }
    let Some(_busy) = Busy::enter() else { return };
    let Some(entry) = OWNER.get(key) else {
        UNRECORDED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut frames = [0usize; DEPTH];
    let n = capture(&mut frames);
    let Some(site) = intern(call, counter, &frames[..n]) else {
        entry.store(0, Ordering::Release);
        UNRECORDED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    IDS[key].store(id, Ordering::Relaxed);
    entry.store(((site as u64 + 1) << 32) | u64::from(serial()), Ordering::Release);
    HIGH.fetch_max(key + 1, Ordering::Relaxed);
}

/// Records where the calling thread is creating a thread (its `pthread_create`): the site's index plus
/// one, to keep in the thread's slot of the books, or 0 when nothing was recorded.
pub fn thread_made() -> u32 {
    if !enabled() {
        return 0;
    }
    let Some(_busy) = Busy::enter() else { return 0 };
    let mut frames = [0usize; DEPTH];
    let n = capture(&mut frames);
    match intern(THREAD_CALL, Counter::Running, &frames[..n]) {
        Some(site) => site as u32 + 1,
        None => {
            UNRECORDED.fetch_add(1, Ordering::Relaxed);
            0
        }
    }
}

/// [`made`] for a descriptor a call returned (nothing for -1).
#[cfg(target_os = "linux")]
pub fn made_fd(call: u32, fd: i64) {
    if fd >= 0 && fd < RESOURCES as i64 {
        made(call, Counter::Fds, fd as usize, fd as u32);
    } else if fd >= 0 && enabled() {
        UNRECORDED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records that the resource under `key` was given back (a descriptor closed, or replaced by `dup2`).
#[cfg(target_os = "linux")]
pub fn released(key: i64) {
    if key >= 0 && enabled() {
        if let Some(entry) = OWNER.get(key as usize) {
            entry.store(0, Ordering::Release);
        }
    }
}

/// Records that every descriptor from `first` to `last` was given back (`close_range`).
#[cfg(target_os = "linux")]
pub fn released_range(first: u64, last: u64) {
    if !enabled() {
        return;
    }
    let high = HIGH.load(Ordering::Relaxed) as u64;
    for fd in first..=last.min(high.saturating_sub(1)) {
        OWNER[fd as usize].store(0, Ordering::Release);
    }
}

/// In a forked child: it has its parent's descriptors and stacks, and writes the stacks and their tallies
/// anew under its own pid.
pub fn after_fork() {
    for site in &TABLE {
        site.written.store(false, Ordering::Relaxed);
    }
    // The child is single-threaded here and holds the probe's lock: nothing else takes this one.
    *WRITTEN.lock().unwrap_or_else(|p| p.into_inner()) = [(0, 0); SITES];
}

/// Per stack at a census: its resources alive, how many of them outlived the thread that made them, and
/// one of them (the highest), to say what they are.
static TALLY: Mutex<[(u32, u32, u32); SITES]> = Mutex::new([(0, 0, 0); SITES]);

/// What the last census wrote of each stack (its resources alive, and of those, outliving their maker):
/// a census writes only the stacks whose tally changed, so that a program with thousands of live stacks
/// costs the channel what moves, not what is.
static WRITTEN: Mutex<[(u32, u32); SITES]> = Mutex::new([(0, 0); SITES]);

/// What a census writes: room for every stack's definition or every stack's tally, a line each.
static LINE: Mutex<[u8; 8192]> = Mutex::new([0; 8192]);

/// At a census (the caller holds the probe's lock): writes each stack not yet written, and the changes
/// since the last census of the live resources by stack (a stack whose count changed, with its count and
/// what one of them is, a descriptor's target; a count of 0 for a stack that has none left), to the
/// channel. `ended` is this process's threads ended. A resource
/// recorded but given back behind the probe's back (by a call it does not see) is forgotten here:
/// `held` says whether a resource (by id) is still there, asked of each when more are recorded than
/// `open_now` (what the census counted of their kind), or always without it.
/// `running` gives, for each thread the books have still running, where it was created (a site's index
/// plus one, 0 for none).
pub fn census(
    pid: u32,
    ended: u64,
    calls: &[&str],
    held: impl Fn(u32) -> bool,
    open_now: Option<i64>,
    running: impl Iterator<Item = u32>,
) {
    if !enabled() {
        return;
    }
    let mut tally = TALLY.lock().unwrap_or_else(|p| p.into_inner());
    tally.iter_mut().for_each(|t| *t = (0, 0, 0));
    let high = HIGH.load(Ordering::Relaxed).min(RESOURCES);
    // Asking about every resource costs a system call each: it is done when the records cannot all be
    // right (more recorded than the census counted open), or when the census counted none of their kind.
    let recorded = OWNER[..high].iter().filter(|e| e.load(Ordering::Relaxed) != 0).count() as i64;
    let check = open_now.is_none_or(|open| recorded > open);
    for (n, entry) in OWNER[..high].iter().enumerate() {
        let v = entry.load(Ordering::Acquire);
        if v == 0 {
            continue;
        }
        let id = IDS[n].load(Ordering::Relaxed);
        if check && !held(id) {
            let _ = entry.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed);
            continue;
        }
        let site = (v >> 32) as usize - 1;
        let t = &mut tally[site];
        t.0 += 1;
        t.1 += u32::from(has_ended(v as u32));
        t.2 = id;
    }
    for site in running.filter(|&s| s > 0 && (s as usize) <= SITES) {
        tally[site as usize - 1].0 += 1;
    }
    let mut line = LINE.lock().unwrap_or_else(|p| p.into_inner());
    for (i, site) in TABLE.iter().enumerate() {
        if tally[i].0 > 0 && site.ready.load(Ordering::Acquire) && !site.written.swap(true, Ordering::Relaxed) {
            let len = define(&mut line[..], pid, i, site, calls);
            crate::unix::append(&line[..len], ended);
        }
    }
    // The changes, as many lines as they take (the runner applies every line of a census in turn), and
    // one line for a census with none, which tells that nothing changed.
    let mut written = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
    let head = |w: &mut std::io::Cursor<&mut [u8]>| {
        let _ = write!(
            w,
            "{{\"pid\":{pid},\"kind\":\"sites\",\"ended\":{ended},\"unrecorded\":{},\"tally\":[",
            UNRECORDED.load(Ordering::Relaxed)
        );
    };
    let mut w = std::io::Cursor::new(&mut line[..]);
    head(&mut w);
    let mut first = true;
    for (i, &(live, outlived, one)) in tally.iter().enumerate() {
        if written[i] == (live, outlived) {
            continue;
        }
        written[i] = (live, outlived);
        if w.position() as usize > 8192 - 1024 {
            let _ = w.write_all(b"]}\n");
            let len = w.position() as usize;
            crate::unix::append(&w.get_ref()[..len], ended);
            w.set_position(0);
            head(&mut w);
            first = true;
        }
        let _ = write!(w, "{}[{i},{live},{outlived},", if first { "" } else { "," });
        let mut what = [0u8; 512];
        let what: &[u8] = if live == 0 {
            b""
        } else if Counter::from_index(TABLE[i].counter.load(Ordering::Relaxed)) == Counter::Running {
            b"still running"
        } else {
            crate::imp::describe(one, &mut what)
        };
        let _ = serde_json::to_writer(&mut w, &*String::from_utf8_lossy(what));
        let _ = w.write_all(b"]");
        first = false;
    }
    let _ = w.write_all(b"]}\n");
    let len = w.position() as usize;
    crate::unix::append(&w.get_ref()[..len], ended);
}

/// Writes stack `i`'s definition into `buf`: its call, counter and frames, each frame as the module's
/// path and the offset from where the module is loaded (`["?", address]` when no module has it).
/// Returns the length (a line, or 0 if it did not fit).
fn define(buf: &mut [u8], pid: u32, i: usize, site: &Site, calls: &[&str]) -> usize {
    let depth = (site.depth.load(Ordering::Relaxed) as usize).min(DEPTH);
    let call = match site.call.load(Ordering::Relaxed) {
        THREAD_CALL => "pthread_create",
        i => calls.get(i as usize).copied().unwrap_or("?"),
    };
    let counter = Counter::from_index(site.counter.load(Ordering::Relaxed)).name();
    let mut w = std::io::Cursor::new(buf);
    let mut ok = write!(w, "{{\"pid\":{pid},\"kind\":\"site\",\"id\":{i},\"call\":").is_ok()
        && serde_json::to_writer(&mut w, call).is_ok()
        && write!(w, ",\"counter\":\"{counter}\",\"frames\":[").is_ok();
    for (k, f) in site.frames[..depth].iter().enumerate() {
        let ip = f.load(Ordering::Relaxed);
        let sep = if k == 0 { "" } else { "," };
        // The module's path is read while the module is known loaded (within `module_of`'s callback).
        ok &= crate::imp::with_module_of(ip, |module| match module {
            Some((path, base)) => {
                write!(w, "{sep}[").is_ok()
                    && serde_json::to_writer(&mut w, &*String::from_utf8_lossy(path)).is_ok()
                    && write!(w, ",{}]", ip - base).is_ok()
            }
            None => write!(w, "{sep}[\"?\",{ip}]").is_ok(),
        });
    }
    ok &= w.write_all(b"]}\n").is_ok();
    if ok {
        w.position() as usize
    } else {
        0
    }
}
