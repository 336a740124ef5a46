//! Verdicts by evidence, on programs with a known answer (`fixtures/rare.c`, threads created and joined
//! one after another): a leak of one descriptor in 20, 100, 200 or 1,000 threads is a leak, with its rate,
//! its site and exit 1 under `--expect clean`, however small the rate; a cache filled by the first 64
//! threads is not, and says what grew and stopped; a clean program says what its run could have seen;
//! threads that never end are a leak of threads, reported where they were created; memory alone decides
//! nothing unless `--memory` asks it to.

#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};

use common::{build_with_debug_info, exec, exec_text, line_of};
use threadleak::exit::ExitCode;
use threadleak::record::{CellRecord, Verdict};

fn rare(dir: &Path) -> PathBuf {
    build_with_debug_info(dir, "rare.c")
}

/// `rare ARGS...` under `threadleak exec --expect clean`: the exit code and the record's cell.
fn judged(rare: &Path, args: &[&str], flags: &[&str]) -> (i32, CellRecord) {
    let program: Vec<&str> = std::iter::once(rare.to_str().unwrap()).chain(args.iter().copied()).collect();
    let flags: Vec<&str> = ["--expect", "clean"].into_iter().chain(flags.iter().copied()).collect();
    let (code, record, _) = exec(&flags, &program);
    (code, record.cells[0].clone())
}

#[test]
fn a_descriptor_left_by_one_thread_in_20_100_200_or_1000_is_a_leak() {
    let dir = tempfile::tempdir().unwrap();
    let rare = rare(dir.path());
    // 200, 40, 100 and 30 descriptors left over the run.
    for (threads, every) in [(4000, 20), (4000, 100), (20_000, 200), (30_000, 1000)] {
        let (code, cell) = judged(&rare, &[&threads.to_string(), &every.to_string()], &[]);
        let what = format!("1 in {every} of {threads}: {:?} {:?}", cell.per_thread, cell.note);
        assert_eq!((code, cell.verdict), (ExitCode::DIFFERS, Verdict::Leak), "{what}");
        let rate = cell.per_thread.get("fds").unwrap();
        assert!((rate * every as f64 - 1.0).abs() < 0.05, "{what}");
        // Its site is where the thread opened the descriptor, at the same rate.
        let site = &cell.sites[0];
        assert_eq!((site.call.as_str(), site.kind.as_deref(), site.stopped), ("open", Some("/dev/null"), false));
        assert!((site.per_thread * every as f64 - 1.0).abs() < 0.05, "{what}: {site:?}");
        assert_eq!(site.frames[0].line, Some(line_of("rare.c", "int fd = open(\"/dev/null\"")), "{what}");
    }
}

#[test]
fn a_leak_at_random_one_thread_in_1000_is_found_over_30000() {
    let dir = tempfile::tempdir().unwrap();
    let (code, cell) = judged(&rare(dir.path()), &["30000", "1000", "random"], &[]);
    assert_eq!((code, cell.verdict), (ExitCode::DIFFERS, Verdict::Leak), "{:?} {:?}", cell.per_thread, cell.note);
}

#[test]
fn a_cache_filled_by_the_first_64_threads_is_not_a_leak() {
    let dir = tempfile::tempdir().unwrap();
    let (code, cell) = judged(&rare(dir.path()), &["8000", "64", "cache"], &[]);
    let note = cell.note.clone().unwrap_or_default();
    assert_eq!((code, cell.verdict), (ExitCode::MATCHES, Verdict::Clean), "{note}");
    // The first census is at 16 threads ended: 48 more by the 64th, none after.
    assert!(note.contains("fds grew by 48 between 16 and 64 threads ended, then stopped"), "{note}");
    let [site] = &cell.sites[..] else { panic!("{:#?}", cell.sites) };
    assert!(site.stopped && site.live == 64, "{site:?}");
}

#[test]
fn a_clean_run_says_what_it_could_have_seen() {
    let dir = tempfile::tempdir().unwrap();
    let rare = rare(dir.path());
    let (code, cell) = judged(&rare, &["4000", "0"], &[]);
    assert_eq!((code, cell.verdict), (ExitCode::MATCHES, Verdict::Clean), "{:?}", cell.note);
    // Nothing moved: the limit is four items over the part of the run judged, after its first sixth: from
    // the census at 640 threads ended to the last, at 3,584 (the next would be at 4,096).
    let limit = cell.limits.get("fds").unwrap();
    assert_eq!(limit, 4.0 / (3584.0 - 640.0));
    let (_, _, table) = exec_text(&[], &[rare.to_str().unwrap(), "4000", "0"]);
    assert!(table.contains("clean: a steady leak of one item in 736 threads ended would have shown"), "{table}");
}

#[test]
fn threads_that_never_end_are_a_leak_reported_where_they_were_created() {
    let dir = tempfile::tempdir().unwrap();
    let (code, cell) = judged(&rare(dir.path()), &["3000", "10", "linger"], &[]);
    let note = cell.note.clone().unwrap_or_default();
    assert_eq!((code, cell.verdict), (ExitCode::DIFFERS, Verdict::Leak), "{note}");
    // 300 of 3,000 threads never end; the rate is per thread ended (2,700).
    let running = cell.per_thread.get("running").unwrap();
    assert!((running - 1.0 / 9.0).abs() < 0.01, "{running}");
    // What they hold is counted with them, not set apart as what threads in flight hold.
    assert!((cell.per_thread.get("fds").unwrap() - 1.0 / 9.0).abs() < 0.01, "{:?}", cell.per_thread);
    assert!(note.contains("threads that never end keep piling up"), "{note}");
    let site = cell.sites.iter().find(|s| s.counter == "running").unwrap_or_else(|| panic!("{:#?}", cell.sites));
    assert_eq!((site.call.as_str(), site.frames[0].function.as_deref()), ("pthread_create", Some("main")));
    assert_eq!(site.frames[0].line, Some(line_of("rare.c", "pthread_create(&t, NULL, body")));
}

#[test]
fn memory_alone_decides_nothing_unless_it_counts() {
    let dir = tempfile::tempdir().unwrap();
    let rare = rare(dir.path());
    // A MiB kept by every thread: memory, and no item.
    let (code, cell) = judged(&rare, &["2000", "1", "memory"], &[]);
    let note = cell.note.clone().unwrap_or_default();
    assert_eq!((code, cell.verdict), (ExitCode::MATCHES, Verdict::Clean), "{note}");
    assert!(note.contains("vm_kib grew by +1028") && note.contains("decides nothing unless asked to"), "{note}");
    let (code, cell) = judged(&rare, &["2000", "1", "memory"], &["--memory"]);
    assert_eq!((code, cell.verdict), (ExitCode::DIFFERS, Verdict::Leak), "{:?}", cell.note);
}
