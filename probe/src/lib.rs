//! The probe `threadleak exec` loads into a program (`LD_PRELOAD` on Linux, `DYLD_INSERT_LIBRARIES` on
//! macOS). It interposes `pthread_create` to count the threads the program creates and ends, and samples
//! the process with the native backend's census: at load, every K thread ends, and at exit. Each sample
//! is one JSON line appended to the file `THREADLEAK_PROBE_OUT` names.
//!
//! The census every K ends is taken in the program's next `pthread_create`, before the thread is created
//! and with creation held off: first until threads that have finished their work have run their exit
//! hooks (the count of ended threads stops moving), then, where the backend counts the process's threads,
//! until the ended ones are gone. A program that never waits for its threads to be gone (detached
//! threads, or CPython's) is then measured as if it had.
//!
//! The platform files hold the interposition (`linux.rs`, `macos.rs`) and what both share (`unix.rs`);
//! this file the bookkeeping. Without `THREADLEAK_PROBE_OUT` the probe does nothing but pass calls through.

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use threadleak::backend::{native_census, Backend};

mod unix;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;

/// The samples file, or -1 while the probe is inactive.
static OUT: AtomicI32 = AtomicI32::new(-1);
static EVERY: AtomicU64 = AtomicU64::new(1000);
static CREATED: AtomicU64 = AtomicU64::new(0);
static ENDED: AtomicU64 = AtomicU64::new(0);
/// Ended threads after which the next census is due.
static NEXT_CENSUS: AtomicU64 = AtomicU64::new(u64::MAX);
/// The process's threads at load (Linux's `tasks` counter), or -1 where there is no such counter or once
/// threads the probe cannot see (created without `pthread_create`) make it useless for settling.
static LOAD_TASKS: AtomicI64 = AtomicI64::new(-1);

/// How long a census waits for ended threads to be gone.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// How long the count of ended threads must stay put before a census believes no thread is ending.
const QUIET: Duration = Duration::from_micros(500);

/// The longest a census waits for that quiet.
const QUIET_LIMIT: Duration = Duration::from_millis(20);

/// Called once when the probe is loaded, before the program's `main`.
fn on_load() {
    let Some(path) = std::env::var_os("THREADLEAK_PROBE_OUT") else { return };
    let every = std::env::var("THREADLEAK_PROBE_EVERY").ok().and_then(|v| v.parse().ok()).filter(|&k| k > 0);
    EVERY.store(every.unwrap_or(1000), Ordering::Relaxed);
    let Some(fd) = unix::open_append(&path) else { return };
    if !imp::install() {
        return;
    }
    OUT.store(fd, Ordering::Release);
    NEXT_CENSUS.store(EVERY.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Some(_held) = unix::lock() {
        sample("load", Settle::No);
    }
}

fn active() -> bool {
    OUT.load(Ordering::Acquire) >= 0
}

/// Wraps the real `pthread_create`: takes the census that is due, if one is, then counts and creates the
/// thread.
fn creating<T>(create: impl FnOnce() -> T, created: impl FnOnce(&T) -> bool) -> T {
    // Within a census on this thread (a signal handler creating a thread): create, count, nothing more.
    let held = unix::lock();
    let every = EVERY.load(Ordering::Relaxed);
    if held.is_some() && ENDED.load(Ordering::Acquire) >= NEXT_CENSUS.load(Ordering::Relaxed) {
        wait_for_quiet();
        sample("census", Settle::Tasks);
        NEXT_CENSUS.store((ENDED.load(Ordering::Acquire) / every + 1) * every, Ordering::Relaxed);
    }
    CREATED.fetch_add(1, Ordering::AcqRel);
    let result = create();
    if !created(&result) {
        CREATED.fetch_sub(1, Ordering::AcqRel);
    }
    result
}

/// Called from a thread-specific-data destructor as a created thread ends.
fn on_thread_end() {
    ENDED.fetch_add(1, Ordering::AcqRel);
}

/// Called at process exit (not when the exit comes from a signal handler that interrupted a census).
fn on_exit() {
    if let Some(_held) = unix::lock() {
        wait_for_quiet();
        sample("exit", Settle::Tasks);
    }
}

/// Called in the child of a `fork`: its counts are its parent's, and it has one thread. A child that
/// `exec`s loads the probe afresh; one that does not is not measured.
fn forked() {
    OUT.store(-1, Ordering::Release);
}

/// Waits (bounded) until the count of ended threads has not moved for [`QUIET`]: a thread that has
/// finished its work for the program but not yet run its exit hook gets the time to.
fn wait_for_quiet() {
    let started = Instant::now();
    let mut seen = ENDED.load(Ordering::Acquire);
    let mut since = Instant::now();
    while since.elapsed() < QUIET && started.elapsed() < QUIET_LIMIT {
        std::thread::sleep(Duration::from_micros(50));
        let now = ENDED.load(Ordering::Acquire);
        if now != seen {
            seen = now;
            since = Instant::now();
        }
    }
}

/// How a census waits for threads that have ended to be gone.
#[derive(Clone, Copy)]
enum Settle {
    No,
    /// Until the process's threads are those the probe's books count alive; where there is no such
    /// count, until two censuses agree.
    Tasks,
}

/// Waits as `settle` says (bounded by [`SETTLE_LIMIT`]), leaving the census in `now`. `None` when a
/// census fails, else whether the wait ended settled rather than at its bound.
fn settle_census(settle: Settle, tasks: Option<usize>, now: &mut [i64], again: &mut [i64]) -> Option<bool> {
    let Settle::Tasks = settle else { return Some(true) };
    let started = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        let alive = CREATED.load(Ordering::Acquire) as i64 - ENDED.load(Ordering::Acquire) as i64;
        let load = LOAD_TASKS.load(Ordering::Relaxed);
        let settled = match tasks {
            Some(t) if load >= 0 => now[t] <= load + alive,
            _ => again == now,
        };
        if settled {
            return Some(true);
        }
        if started.elapsed() >= SETTLE_LIMIT {
            // Threads the probe did not see are running: settle by agreement from now on.
            LOAD_TASKS.store(-1, Ordering::Relaxed);
            return Some(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
        now.swap_with_slice(again);
        native_census(now).ok()?;
    }
}

/// Takes a census, settled as `settle` says, and appends it to the samples file. The caller holds the
/// census lock.
fn sample(kind: &str, settle: Settle) {
    let fd = OUT.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let Some(backend) = Backend::native() else { return };
    let names = backend.counters();
    let mut now = vec![0i64; names.len()];
    // No census reads i64::MIN: the first comparison cannot agree.
    let mut again = vec![i64::MIN; names.len()];
    if native_census(&mut now).is_err() {
        return;
    }
    let tasks = names.iter().position(|&n| n == "tasks");
    if let (Settle::No, Some(t)) = (settle, tasks) {
        LOAD_TASKS.store(now[t], Ordering::Relaxed);
    }
    let Some(settled) = settle_census(settle, tasks, &mut now, &mut again) else { return };
    // The samples file is the probe's own: it is not the program's.
    if let Some(fds) = names.iter().position(|&n| n == "fds") {
        now[fds] -= 1;
    }
    let counters: Vec<String> = names.iter().zip(&now).map(|(n, v)| format!("\"{n}\":{v}")).collect();
    let line = format!(
        "{{\"pid\":{},\"kind\":\"{kind}\",\"created\":{},\"ended\":{},\"settled\":{settled},\"counters\":{{{}}}}}\n",
        std::process::id(),
        CREATED.load(Ordering::Acquire),
        ENDED.load(Ordering::Acquire),
        counters.join(",")
    );
    unix::write_all(fd, line.as_bytes());
}
