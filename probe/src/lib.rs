//! The probe `threadleak exec` loads into a program (`LD_PRELOAD` on Linux, `DYLD_INSERT_LIBRARIES` on
//! macOS). It interposes `pthread_create`, `pthread_join` and `pthread_detach` to keep books on the threads
//! the program creates ([`books`]), publishes each process's running counts of threads created and ended
//! in a file the runner maps too, and takes censuses of the process with the native backend's counters,
//! appending each as one JSON line to the channel `THREADLEAK_PROBE_OUT` names (a file it maps shared,
//! holding no descriptor: `threadleak_census::channel`).
//!
//! **When.** A census is taken in the program's `pthread_create` or after a `pthread_join` returns, once
//! the count of ended threads reaches the next point of a schedule ([`next_census`]): about four censuses
//! each time the count doubles, then every K (`THREADLEAK_PROBE_EVERY`), so that a run of a few hundred
//! threads already has a dozen censuses before the program's own teardown. No census is taken at exit:
//! what a program does while it ends (closing what it opened at start) is not per thread.
//!
//! **What.** With creation held off (the probe's lock), the census waits, boundedly, until threads that
//! have finished ended (the count of ended threads stops moving) and until the threads the books saw end
//! are gone from the kernel. Threads the probe did not create (helpers the C library starts itself) are
//! never waited for. The census then counts the process and sets apart what belongs to threads in
//! flight, from the books: the stacks of running threads, of ended threads whose stacks are parked in the
//! C library's cache, and of ended threads not yet joined (counted instead as `unjoined`), and the
//! running threads themselves in `tasks`. What is left is what ended threads left behind, plus what
//! running threads hold that no book can attribute; the runner's estimate takes it from there.
//!
//! **Forks.** A child forked without `exec` is a process of its own: it claims its own counts, starts its
//! own schedule, and the parent's threads are parked in its books (their stacks are in its copy of the
//! C library's cache). A child that `exec`s loads the probe afresh.
//!
//! The platform files hold the interposition (`linux.rs`, `macos.rs`) and what both share (`unix.rs`);
//! this file the bookkeeping. Without `THREADLEAK_PROBE_OUT` the probe passes every call through.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use threadleak_census::{
    census_setting_apart as native_census_setting_apart, thread_gone as native_thread_gone, StackQuery,
};

mod books;
mod sites;
mod unix;
mod unwind;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;

use books::{Slot, BOOKS, DETACHED, ENDED, GONE, JOINED, OWN_STACK};

/// Whether the probe is active: it has its channel, and its hooks are in.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static EVERY: AtomicU64 = AtomicU64::new(1000);
/// Ended threads after which the next census is due.
static NEXT_CENSUS: AtomicU64 = AtomicU64::new(u64::MAX);
/// Censuses this process has taken.
static CENSUSES: AtomicU32 = AtomicU32::new(0);
/// Booked threads that have ended and are neither joined nor detached: a census due at a join waits for
/// the joins to catch up (see [`joined`]).
static UNJOINED_NOW: AtomicU64 = AtomicU64::new(0);

/// The first point of the census schedule: enough threads ended that the program's start-up is behind.
const FIRST_CENSUS: u64 = 16;

/// How long a census waits for threads that have ended to be gone from the kernel.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// How long the count of ended threads must stay put before a census believes no thread is ending.
const QUIET: Duration = Duration::from_micros(500);

/// The longest a census waits for that quiet.
const QUIET_LIMIT: Duration = Duration::from_millis(20);

/// The counters every census has beyond the backend's: ended threads not joined.
const UNJOINED: &str = "unjoined";

/// The next ended count at which a census is due, after `ended`: the next multiple of a step that is a
/// quarter of the threads ended so far, rounded down to a power of two, at least 16 and at most `every`.
/// So 16, 32, 48, ..., 128, then 160, 192, ..., then every `every` once that many have ended four times
/// over: about four censuses each time the count doubles, enough to tell a leak from what threads in
/// flight hold in a run of a few hundred threads, and few enough not to cost a long run.
pub fn next_census(ended: u64, every: u64) -> u64 {
    let every = every.max(1);
    let quarter = ended / 4;
    let power = if quarter == 0 { 0 } else { 1 << (63 - quarter.leading_zeros()) };
    let step = power.max(FIRST_CENSUS).min(every);
    (ended / step + 1) * step
}

/// Called once when the probe is loaded, before the program's `main`.
fn on_load() {
    let Some(path) = std::env::var_os("THREADLEAK_PROBE_OUT") else { return };
    let every = std::env::var("THREADLEAK_PROBE_EVERY").ok().and_then(|v| v.parse().ok()).filter(|&k| k > 0);
    EVERY.store(every.unwrap_or(1000), Ordering::Relaxed);
    if !unix::map_channel(&path) {
        return;
    }
    if let Some(counts) = std::env::var_os("THREADLEAK_PROBE_COUNTS") {
        unix::map_counts(&counts);
    }
    if !imp::install() {
        return;
    }
    unix::claim_counts(std::process::id(), unix::parent_pid(), unix::ORIGIN_EXEC);
    if std::env::var_os("THREADLEAK_PROBE_SITES").is_some_and(|v| v == "1") {
        sites::enable(imp::own_code());
    }
    ACTIVE.store(true, Ordering::Release);
    NEXT_CENSUS.store(next_census(0, EVERY.load(Ordering::Relaxed)), Ordering::Relaxed);
    let command = unix::command_line();
    let line = serde_json::json!({
        "pid": std::process::id(),
        "kind": "load",
        "parent": unix::parent_pid(),
        "command": command,
        "names": native_counters().map(|names| names.iter().chain([&UNJOINED]).collect::<Vec<_>>()),
    });
    unix::append(format!("{line}\n").as_bytes(), 0);
}

/// The counters of this OS's census, if it has one.
fn native_counters() -> Option<&'static [&'static str]> {
    Some(threadleak_census::counters()).filter(|names| !names.is_empty())
}

fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// How a thread is about to be created, as its attributes say.
pub struct Creation {
    /// The stack block the C library will give it (stack and guard), 0 when unknown.
    pub block: usize,
    pub detached: bool,
    /// The program supplies the stack: it is the program's memory, never set apart.
    pub own_stack: bool,
}

/// Wraps the real `pthread_create`: takes the census that is due, if one is, then books and counts the
/// thread and creates it. `create` gets the slot (if the books have room) and returns the result and the
/// new thread's `pthread_t`.
fn creating(how: Creation, create: impl FnOnce(Option<usize>) -> (libc::c_int, usize)) -> libc::c_int {
    // Within a census on this thread (a signal handler creating a thread): create, count, nothing more.
    let held = unix::lock();
    if held.is_some() {
        census_if_due();
    }
    let mut bits = if how.detached { DETACHED } else { 0 };
    if how.own_stack {
        bits |= OWN_STACK;
    }
    // Books are only written under the lock. Where the thread is made is recorded with it: threads that
    // never end and pile up are a leak of their own, reported where they were created.
    let slot = held.as_ref().and_then(|_| BOOKS.take(how.block, bits, sites::thread_made()));
    unix::counts().created.fetch_add(1, Ordering::AcqRel);
    let (ret, tcb) = create(slot);
    match (ret, slot) {
        (0, Some(slot)) => BOOKS.name(slot, tcb),
        (0, None) => {}
        (_, slot) => {
            if let Some(slot) = slot {
                BOOKS.free(slot);
            }
            unix::counts().created.fetch_sub(1, Ordering::AcqRel);
        }
    }
    ret
}

/// Called by a created thread as it starts: records the kernel's id for it.
fn on_thread_start(slot: usize) {
    BOOKS.slot(slot).set_id(imp::thread_id());
}

/// Called from a thread-specific-data destructor as a created thread ends.
fn on_thread_end(slot: Option<usize>) {
    sites::thread_ended();
    if let Some(slot) = slot {
        // The state word orders this against a concurrent join or detach (see `release`).
        if BOOKS.slot(slot).mark(ENDED) & (DETACHED | JOINED) == 0 {
            UNJOINED_NOW.fetch_add(1, Ordering::AcqRel);
        }
    }
    unix::counts().ended.fetch_add(1, Ordering::AcqRel);
}

/// Marks a booked thread joined or detached (`bits`); one that had ended unjoined no longer is.
fn release(thread: usize, bits: u32) {
    if let Some(slot) = BOOKS.find(thread) {
        let before = BOOKS.slot(slot).mark(bits);
        if before & ENDED != 0 && before & (DETACHED | JOINED) == 0 {
            UNJOINED_NOW.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Called after the program's `pthread_join` (or a variant) returned 0 for `thread`; then takes the
/// census that is due, if one is and the joins have caught up with the ends (no booked thread is left
/// ended and unjoined), or once it is half a step overdue. A program that joins its threads in batches
/// is then counted between batches, not half-way through one.
fn joined(thread: usize) {
    if !active() {
        return;
    }
    if let Some(_held) = unix::lock() {
        release(thread, JOINED);
        let next = NEXT_CENSUS.load(Ordering::Relaxed);
        let ended = unix::counts().ended.load(Ordering::Acquire);
        if UNJOINED_NOW.load(Ordering::Acquire) == 0 || ended >= next.saturating_add(next / 2) {
            census_if_due();
        }
    }
}

/// Called after the program's `pthread_detach` returned 0 for `thread`.
fn detached(thread: usize) {
    if !active() {
        return;
    }
    if let Some(_held) = unix::lock() {
        release(thread, DETACHED);
    }
}

/// Called in the child of a `fork`, holding the lock: the child is a process of its own. Its parent's
/// threads are gone but their stacks are parked in its books; the forking thread is its main thread.
fn forked(parent: u32) {
    if !active() {
        return;
    }
    BOOKS.after_fork(unix::current_slot());
    sites::after_fork();
    UNJOINED_NOW.store(0, Ordering::Relaxed);
    unix::claim_counts(std::process::id(), parent, unix::ORIGIN_FORK);
    CENSUSES.store(0, Ordering::Relaxed);
    NEXT_CENSUS.store(next_census(0, EVERY.load(Ordering::Relaxed)), Ordering::Relaxed);
}

/// Takes a census if one is due. The caller holds the lock.
fn census_if_due() {
    let ended = unix::counts().ended.load(Ordering::Acquire);
    if ended < NEXT_CENSUS.load(Ordering::Relaxed) {
        return;
    }
    // The census's own calls (it opens /proc) are not the program's.
    sites::quietly(take_census);
    let ended = unix::counts().ended.load(Ordering::Acquire);
    NEXT_CENSUS.store(next_census(ended, EVERY.load(Ordering::Relaxed)), Ordering::Relaxed);
}

/// Threads created and not yet ended.
fn live() -> u64 {
    let c = unix::counts();
    c.created.load(Ordering::Acquire).saturating_sub(c.ended.load(Ordering::Acquire))
}

/// Waits (bounded) until the count of ended threads has not moved for [`QUIET`]: a thread that has
/// finished its work for the program but not yet run its exit hook gets the time to.
fn wait_for_quiet() {
    if live() == 0 {
        return;
    }
    let started = Instant::now();
    let ended = || unix::counts().ended.load(Ordering::Acquire);
    let mut seen = ended();
    let mut since = Instant::now();
    while since.elapsed() < QUIET && started.elapsed() < QUIET_LIMIT {
        std::thread::sleep(Duration::from_micros(50));
        let now = ended();
        if now != seen {
            seen = now;
            since = Instant::now();
        }
    }
}

/// Waits (bounded by [`SETTLE_LIMIT`]) until every thread the books saw end is gone from the kernel, and
/// returns how many are still there.
fn wait_until_gone() -> usize {
    let started = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        let mut pending = 0;
        for (_, slot) in BOOKS.used() {
            let state = slot.state();
            if state & ENDED != 0 && state & GONE == 0 {
                if native_thread_gone(slot.id()) {
                    slot.mark(GONE);
                } else {
                    pending += 1;
                }
            }
        }
        if pending == 0 || started.elapsed() >= SETTLE_LIMIT {
            return pending;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

/// The stacks a census sets apart, sorted by `pthread_t`: a static buffer, so that a census never
/// allocates (an allocation could map memory and move the counters it reads).
static STACKS: Mutex<[StackQuery; books::CAPACITY]> =
    Mutex::new([StackQuery { tcb: 0, min_block: 0, found: false }; books::CAPACITY]);

/// The most counters a census line carries (the backend's and `unjoined`).
const MAX_COUNTERS: usize = 12;

/// Takes a census, settled and with threads in flight set apart, and appends it to the samples file.
/// The caller holds the lock.
fn take_census() {
    let Some(names) = native_counters() else { return };
    if !active() || names.len() >= MAX_COUNTERS {
        return;
    }
    wait_for_quiet();
    let pending = wait_until_gone();
    let mut stacks = STACKS.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    for (_, slot) in BOOKS.used() {
        if slot.state() & OWN_STACK == 0 && slot.tcb() != 0 && slot.block() > 0 {
            stacks[n] = StackQuery { tcb: slot.tcb(), min_block: slot.block(), found: false };
            n += 1;
        }
    }
    let stacks = &mut stacks[..n];
    stacks.sort_unstable_by_key(|s| s.tcb);
    let mut now = [0i64; MAX_COUNTERS];
    let apart = match native_census_setting_apart(&mut now[..names.len()], stacks) {
        Ok(apart) => apart,
        Err(e) => {
            // Said, so that the runner can tell a census it could not take from one never due (a
            // program at its limit of descriptors leaves none free to read /proc with).
            let mut buf = [0u8; 256];
            let mut w = std::io::Cursor::new(&mut buf[..]);
            let ended = unix::counts().ended.load(Ordering::Acquire);
            let _ = writeln!(
                w,
                "{{\"pid\":{},\"kind\":\"census-failed\",\"ended\":{ended},\"call\":\"{}\",\"error\":\"{}\"}}",
                std::process::id(),
                e.call,
                e.code_name()
            );
            let len = w.position() as usize;
            unix::append(&buf[..len], ended);
            return;
        }
    };
    // Parked stacks the census did not find have been freed (or reused): their threads are forgotten.
    let mut unjoined = 0i64;
    for (i, slot) in BOOKS.used() {
        let state = slot.state();
        if books::unjoined(state) {
            unjoined += 1;
        } else if books::parked(state) && !is_found(stacks, slot) {
            BOOKS.free(i);
        }
    }
    let live = live();
    if let Some(t) = names.iter().position(|&n| n == "tasks") {
        now[t] -= live as i64;
    }
    let open_fds = names.iter().position(|&n| n == "fds").map(|f| now[f]);
    now[names.len()] = unjoined;
    let c = unix::counts();
    let mut buf = [0u8; 1024];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(
        w,
        "{{\"pid\":{},\"kind\":\"census\",\"created\":{},\"ended\":{},\"live\":{live},\"pending\":{pending},\
         \"untracked\":{},\"apart\":{{\"maps\":{},\"kib\":{}}},\"counters\":{{",
        std::process::id(),
        c.created.load(Ordering::Acquire),
        c.ended.load(Ordering::Acquire),
        BOOKS.overflowed.load(Ordering::Relaxed),
        apart.maps,
        apart.kib
    );
    for (i, name) in names.iter().chain([&UNJOINED]).enumerate() {
        let _ = write!(w, "{}\"{name}\":{}", if i == 0 { "" } else { "," }, now[i]);
    }
    let _ = w.write_all(b"}}\n");
    let len = w.position() as usize;
    let ended = c.ended.load(Ordering::Acquire);
    unix::append(&buf[..len], ended);
    let running = BOOKS.used().filter(|(_, slot)| slot.state() & ENDED == 0).map(|(_, slot)| slot.site());
    sites::census(std::process::id(), ended, imp::CALLS, imp::held, open_fds, running);
    CENSUSES.fetch_add(1, Ordering::Relaxed);
}

fn is_found(stacks: &[StackQuery], slot: &Slot) -> bool {
    stacks.binary_search_by_key(&slot.tcb(), |s| s.tcb).is_ok_and(|i| stacks[i].found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_four_censuses_a_doubling_then_every_k() {
        let points = |every: u64, count: usize| {
            let mut v = vec![next_census(0, every)];
            while v.len() < count {
                v.push(next_census(*v.last().unwrap(), every));
            }
            v
        };
        assert_eq!(points(1000, 12), [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256]);
        let long = points(1000, 60);
        assert!(long.contains(&1024) && long.contains(&5000) && long.contains(&6000), "{long:?}");
        assert_eq!(points(1, 5), [1, 2, 3, 4, 5]);
        assert_eq!(points(10, 5), [10, 20, 30, 40, 50]);
        // A burst of ends past several points: the next one after where the count is.
        assert_eq!(next_census(700, 1000), 768);
        assert_eq!(next_census(40, 1000), 48);
        assert_eq!(next_census(5300, 1000), 6000);
    }

    #[test]
    fn a_run_of_300_threads_has_more_than_five_censuses_and_one_of_20000_few_enough() {
        let count = |threads: u64| {
            let (mut point, mut censuses) = (next_census(0, 1000), 0);
            while point <= threads {
                censuses += 1;
                point = next_census(point, 1000);
            }
            censuses
        };
        assert_eq!(count(300), 12);
        assert_eq!(count(79), 4);
        assert_eq!(count(20_000), 44);
    }
}
