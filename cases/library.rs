//! `threadleak::check` used as a crate author would, in tests that `cargo test` runs as threads of one
//! process (in parallel with each other and with the other subjects' tests: each check measures in a
//! child, this test binary started again for that one test, `library::NAME`): thread-spawning code
//! nobody here wrote (`threadpool`, `rayon`, `tokio`'s blocking pool, the standard library's scoped
//! threads) measured clean, a closure that leaks one descriptor (Linux) or one thread port (macOS) per
//! call measured with its numbers, one that leaks in one call of 20 or of 200 failed at 1,000 calls and at
//! 10,000, growth that stops and memory not counted as leaks, and the ways a check can fail (a panicking
//! closure, a hang past the timeout, a check called off the test's thread), each with why.

use std::time::Duration;

use threadleak::record::{Status, Verdict};

#[test]
fn a_threadpool_created_and_joined_per_call_leaks_nothing() {
    threadleak::check(|| {
        let pool = threadpool::ThreadPool::new(2);
        for _ in 0..2 {
            pool.execute(|| ());
        }
        pool.join();
    })
    .cycles(400)
    .assert_clean();
}

#[test]
fn a_long_lived_threadpool_leaks_nothing_per_job() {
    let pool = threadpool::ThreadPool::new(4);
    threadleak::check(|| {
        pool.execute(|| ());
        pool.join();
    })
    .assert_clean();
}

#[test]
fn scoped_threads_leak_nothing() {
    threadleak::check(|| {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| ());
            }
        })
    })
    .cycles(500)
    .assert_clean();
}

/// One kernel handle per thread, never released: a descriptor on Linux, a dead name (the thread's port,
/// after the thread ends) on macOS.
fn leak_one_handle() {
    #[cfg(target_os = "linux")]
    std::mem::forget(std::fs::File::open("/proc/thread-self/stat").unwrap());
    #[cfg(target_os = "macos")]
    {
        use threadleak::backend::mach::Mach;
        // The thread's port, one user reference, deliberately kept: a dead name once the thread ends.
        let _ = threadleak::backend::mach::real::Real::new().unwrap().mach_thread_self();
    }
}

#[cfg(target_os = "linux")]
const LEAKED: &str = "fds";
#[cfg(target_os = "macos")]
const LEAKED: &str = "dead";

#[test]
fn a_leak_per_thread_is_measured_with_its_number() {
    threadleak::check(|| std::thread::spawn(leak_one_handle).join().unwrap()).cycles(500).assert_leaks(LEAKED, 1.0);
}

#[test]
#[should_panic(expected = "expected clean, got leak (")]
fn assert_clean_fails_on_a_leak_with_the_table() {
    threadleak::check(|| std::thread::spawn(leak_one_handle).join().unwrap()).cycles(200).assert_clean();
}

#[test]
fn the_record_holds_the_checkpoints_and_the_verdict() {
    let record =
        threadleak::check(|| std::thread::spawn(|| ()).join().unwrap()).cycles(300).warmup(20).record().unwrap();
    let cell = &record.cells[0];
    assert_eq!(cell.cell, "library::the_record_holds_the_checkpoints_and_the_verdict");
    assert_eq!(cell.status, Status::Ok, "{:?}", cell.note);
    assert_eq!(cell.verdict, Verdict::Clean, "{:?}", cell.per_thread);
    assert_eq!(cell.checkpoints.iter().map(|c| c.cycle).collect::<Vec<_>>(), [0, 37, 75, 112, 150, 187, 225, 262, 300]);
    assert_eq!((record.params.cycles, record.params.warmup), (300, 20));
}

#[test]
fn a_closure_that_panics_fails_the_check_with_its_message() {
    let record = threadleak::check(|| panic!("the closure gave up")).record().unwrap();
    let cell = &record.cells[0];
    assert_eq!(cell.status, Status::Crashed, "{:?}", cell.note);
    let failure = format!("{:?}", cell.failure);
    assert!(failure.contains("the closure gave up"), "{failure}");
}

#[test]
fn a_closure_that_hangs_is_killed_at_the_timeout() {
    let record = threadleak::check(|| std::thread::sleep(Duration::from_secs(3600)))
        .timeout(Duration::from_secs(2))
        .record()
        .unwrap();
    assert_eq!(record.cells[0].status, Status::Timeout, "{:?}", record.cells[0].note);
}

#[test]
fn a_check_off_the_tests_thread_says_how_to_name_the_test() {
    // A thread of no name: no test to look for.
    let error = std::thread::spawn(|| threadleak::check(|| ()).record().unwrap_err().to_string()).join().unwrap();
    assert!(error.contains(".test_name("), "{error}");
    // A thread named otherwise than the test: the child finds no such test, and says what to do; it did
    // not crash.
    let record = std::thread::Builder::new()
        .name("worker-1".into())
        .spawn(|| threadleak::check(|| ()).record().unwrap())
        .unwrap()
        .join()
        .unwrap();
    let cell = &record.cells[0];
    let note = cell.note.as_deref().unwrap_or_default();
    assert_eq!(cell.status, Status::Error, "{note}");
    assert!(note.contains("no test named `worker-1`") && note.contains(".test_name("), "{note}");
}

/// A check inside `tokio::spawn` runs on one of the runtime's workers, not on the test's thread.
#[test]
fn a_check_on_a_runtime_worker_says_what_to_do() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let record = runtime
        .block_on(async { tokio::spawn(async { threadleak::check(|| ()).cycles(50).record().unwrap() }).await })
        .unwrap();
    let note = record.cells[0].note.clone().unwrap_or_default();
    assert_eq!(record.cells[0].status, Status::Error, "{note}");
    assert!(note.contains("no test named `tokio-rt-worker`") && note.contains("tokio::spawn"), "{note}");
}

#[test]
fn a_check_on_a_runtime_worker_runs_when_named() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime
        .block_on(async {
            tokio::spawn(async {
                threadleak::check(|| std::thread::spawn(|| ()).join().unwrap())
                    .cycles(200)
                    .test_name("library::a_check_on_a_runtime_worker_runs_when_named")
                    .assert_clean()
            })
            .await
        })
        .unwrap();
}

#[test]
fn tokio_spawn_blocking_on_a_long_lived_runtime_leaks_nothing() {
    // The runtime outlives the calls; its blocking pool grows as it is used (a thread spawned whenever
    // none is idle), which the warm-up waits out.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    threadleak::check(|| runtime.block_on(async { tokio::task::spawn_blocking(|| ()).await.unwrap() })).assert_clean();
}

#[test]
fn rayon_leaks_nothing_per_call() {
    use rayon::prelude::*;
    threadleak::check(|| {
        let (a, b) = rayon::join(|| 1, || 2);
        (0..64u64).into_par_iter().map(|x| x * a * b).sum::<u64>()
    })
    .assert_clean();
}

#[test]
fn a_closure_may_return_a_value() {
    threadleak::check(|| std::thread::spawn(|| vec![1u8; 64]).join().unwrap()).cycles(200).assert_clean();
}

/// One handle leaked by every `every`-th call (a thread that keeps it), the others clean.
fn rarely_leaking(every: u32) -> impl FnMut() {
    let mut calls = 0u32;
    move || {
        calls += 1;
        if calls % every == 0 {
            std::thread::spawn(leak_one_handle).join().unwrap();
        } else {
            std::thread::spawn(|| ()).join().unwrap();
        }
    }
}

#[test]
fn a_leak_in_one_call_of_20_or_200_fails_at_1000_calls_and_at_10000() {
    for every in [20, 200] {
        for cycles in [1000, 10_000] {
            let record = threadleak::check(rarely_leaking(every)).cycles(cycles).record().unwrap();
            let cell = &record.cells[0];
            let rate = cell.per_thread.get(LEAKED).unwrap();
            assert_eq!(
                cell.verdict,
                Verdict::Leak,
                "1 in {every}, {cycles} calls: {:?} {:?}",
                cell.per_thread,
                cell.note
            );
            assert!(
                (rate - 1.0 / f64::from(every)).abs() < 0.25 / f64::from(every),
                "1 in {every}, {cycles} calls: {rate}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "expected clean, got leak (")]
fn assert_clean_fails_on_a_leak_in_one_call_of_200() {
    threadleak::check(rarely_leaking(200)).cycles(1000).assert_clean();
}

#[test]
fn growth_that_stops_is_not_a_leak() {
    // A cache of handles filled by 64 calls early in the run (after the warm-up: 100 calls, then two rounds
    // of 100 in which no thread stayed), then never again.
    let mut calls = 0u32;
    let record = threadleak::check(move || {
        calls += 1;
        if (501..=564).contains(&calls) {
            std::thread::spawn(leak_one_handle).join().unwrap();
        }
    })
    .cycles(2000)
    .record()
    .unwrap();
    let cell = &record.cells[0];
    let note = cell.note.as_deref().unwrap_or_default();
    assert_eq!(cell.verdict, Verdict::Clean, "{}", threadleak::report::table(&record));
    assert!(note.contains(&format!("{LEAKED} grew by ")) && note.contains("then stopped"), "{note}");
}

#[test]
fn a_thread_that_ends_shortly_after_the_call_is_waited_for() {
    threadleak::check(|| {
        std::thread::spawn(|| std::thread::sleep(Duration::from_millis(300)));
    })
    .assert_clean();
}

/// Memory that grows while no item is left behind: reported, and no leak unless memory is asked to count.
#[cfg(target_os = "linux")]
#[test]
fn memory_decides_nothing_unless_it_counts() {
    // A MiB kept per call, mapped on its own by the allocator: mappings of memory, not items.
    let keep = || std::mem::forget(vec![1u8; 1 << 20]);
    let record = threadleak::check(keep).cycles(300).record().unwrap();
    let cell = &record.cells[0];
    assert_eq!(cell.verdict, Verdict::Clean, "{:?} {:?}", cell.per_thread, cell.note);
    assert!(cell.note.as_deref().unwrap_or_default().contains("memory"), "{:?}", cell.note);
    let record = threadleak::check(keep).cycles(300).memory(true).record().unwrap();
    assert_eq!(record.cells[0].verdict, Verdict::Leak, "{:?}", record.cells[0].note);
    assert!(record.params.memory);
}

#[test]
fn a_check_off_the_tests_thread_runs_when_named() {
    std::thread::spawn(|| {
        threadleak::check(|| std::thread::spawn(|| ()).join().unwrap())
            .cycles(200)
            .test_name("library::a_check_off_the_tests_thread_runs_when_named")
            .assert_clean()
    })
    .join()
    .unwrap();
}

#[test]
#[ignore = "run by ignored_filtered_and_uncaptured_runs_measure_too"]
fn an_ignored_test_with_a_check() {
    threadleak::check(|| std::thread::spawn(leak_one_handle).join().unwrap()).cycles(100).assert_leaks(LEAKED, 1.0);
}

/// The test binary run as people run it: `--ignored`, `--include-ignored`, a filter, `--exact`,
/// `--nocapture`, one test thread; the check's child finds its test every time.
#[test]
fn ignored_filtered_and_uncaptured_runs_measure_too() {
    let runs: [&[&str]; 3] = [
        &["--ignored", "an_ignored_test"],
        &["--include-ignored", "--nocapture", "an_ignored_test_with_a"],
        &["--ignored", "--exact", "library::an_ignored_test_with_a_check", "--test-threads", "1"],
    ];
    for args in runs {
        let out = std::process::Command::new(std::env::current_exe().unwrap()).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 1 passed"),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
#[should_panic(expected = "per call, got +1")]
fn assert_leaks_fails_on_another_number() {
    threadleak::check(|| std::thread::spawn(leak_one_handle).join().unwrap()).cycles(100).assert_leaks(LEAKED, 2.0);
}

/// The report travels in a file of its own: what the test prints (on stdout, which libtest shares) is not
/// read as a report.
#[test]
fn a_closure_that_prints_garbage_is_measured_all_the_same() {
    threadleak::check(|| {
        println!("{{\"checkpoints\": \u{1b}[2J not a report");
        std::thread::spawn(|| ()).join().unwrap()
    })
    .cycles(200)
    .assert_clean();
}

/// Processes the calls start in sessions of their own (`setsid`) end with the check: the measuring child
/// is their subreaper and kills what is left before it ends.
#[cfg(target_os = "linux")]
#[test]
fn processes_the_calls_leave_in_sessions_of_their_own_end_with_the_check() {
    // The same in the parent and in the child, which runs this test again.
    let marker = "40.918273".to_owned();
    // Left unwaited on purpose: the calls leave these processes behind.
    #[allow(clippy::zombie_processes)]
    let start = || {
        std::process::Command::new("setsid").args(["sleep", &marker]).spawn().unwrap();
    };
    let record = threadleak::check(start).warmup(2).cycles(10).censuses(5).record().unwrap();
    assert_eq!(record.cells[0].status, Status::Ok, "{:?}", record.cells[0].note);
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
