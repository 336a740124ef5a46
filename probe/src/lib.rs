//! The probe `threadleak exec` loads into a program (`LD_PRELOAD` on Linux, `DYLD_INSERT_LIBRARIES` on
//! macOS). It interposes `pthread_create` to count the threads the program creates and ends, and samples
//! the process with the native backend's census: at load, every K thread ends (settled), and at exit.
//! Each sample is one JSON line appended to the file `THREADLEAK_PROBE_OUT` names.
//!
//! The platform files hold the interposition (`linux.rs`, `macos.rs`); this file the bookkeeping. Without
//! `THREADLEAK_PROBE_OUT` the probe does nothing but pass calls through.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use threadleak::backend::{native_census, Backend};

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
/// One census at a time.
static CENSUS: Mutex<()> = Mutex::new(());

/// Called once when the probe is loaded, before the program's `main`.
fn on_load() {
    let Some(path) = std::env::var_os("THREADLEAK_PROBE_OUT") else { return };
    let every = std::env::var("THREADLEAK_PROBE_EVERY").ok().and_then(|v| v.parse().ok()).filter(|&k| k > 0);
    EVERY.store(every.unwrap_or(1000), Ordering::Relaxed);
    let Some(fd) = imp::open_append(&path) else { return };
    if !imp::install() {
        return;
    }
    OUT.store(fd, Ordering::Release);
    NEXT_CENSUS.store(EVERY.load(Ordering::Relaxed), Ordering::Relaxed);
    sample("load", false);
}

fn active() -> bool {
    OUT.load(Ordering::Acquire) >= 0
}

/// Called by the interposed `pthread_create` before it creates a thread: the census that is due, if one
/// is, runs here, in a thread the program was about to use anyway.
fn before_create() {
    let ended = ENDED.load(Ordering::Acquire);
    let due = NEXT_CENSUS.load(Ordering::Relaxed);
    if ended >= due {
        let every = EVERY.load(Ordering::Relaxed);
        NEXT_CENSUS.store((ended / every + 1) * every, Ordering::Relaxed);
        sample("census", true);
    }
    CREATED.fetch_add(1, Ordering::AcqRel);
}

/// `pthread_create` failed: the thread does not exist.
fn create_failed() {
    CREATED.fetch_sub(1, Ordering::AcqRel);
}

/// Called from a thread-specific-data destructor as a created thread ends.
fn on_thread_end() {
    ENDED.fetch_add(1, Ordering::AcqRel);
}

/// Called at process exit.
fn on_exit() {
    sample("exit", true);
}

/// Takes a census (after waiting, when `settle`, until two agree) and appends it to the samples file.
fn sample(kind: &str, settle: bool) {
    let fd = OUT.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let Ok(_one) = CENSUS.try_lock() else { return };
    let Some(backend) = Backend::native() else { return };
    let names = backend.counters();
    let mut now = vec![0i64; names.len()];
    let mut again = vec![0i64; names.len()];
    if native_census(&mut now).is_err() {
        return;
    }
    if settle {
        // Threads that have ended may still be leaving: wait until two censuses agree (bounded, about
        // 50 ms at most).
        let mut pause = Duration::from_micros(20);
        for _ in 0..60 {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
            if native_census(&mut again).is_err() {
                return;
            }
            if again == now {
                break;
            }
            std::mem::swap(&mut now, &mut again);
        }
    }
    // The samples file is the probe's own: it is not the program's.
    if let Some(fds) = names.iter().position(|&n| n == "fds") {
        now[fds] -= 1;
    }
    let counters: Vec<String> = names.iter().zip(&now).map(|(n, v)| format!("\"{n}\":{v}")).collect();
    let line = format!(
        "{{\"pid\":{},\"kind\":\"{kind}\",\"created\":{},\"ended\":{},\"counters\":{{{}}}}}\n",
        std::process::id(),
        CREATED.load(Ordering::Acquire),
        ENDED.load(Ordering::Acquire),
        counters.join(",")
    );
    imp::write_all(fd, line.as_bytes());
}
