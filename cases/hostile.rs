//! threadleak used as a hostile user, a hostile record or a stingy machine would: where results are
//! written (a full disk, a link at the target, a folder that is not there), what untrusted records can
//! put on a terminal, in markdown or in JUnit, how records are read (FIFOs, devices, a million counters),
//! what `--expect` answers `git bisect` when the baseline cannot judge, and what happens when the machine
//! says no (process and address-space limits, a closed stderr). Each test failed before its fix.

#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use threadleak::backend::{Backend, ModelOptions};
use threadleak::exit::ExitCode;
use threadleak::matrix;
use threadleak::record::{Counters, Record, Status, Verdict};
use threadleak::report::{self, Format};

fn threadleak(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

/// `threadleak ARGS` run by bash after `setup` (limits, traps), so that the limits are the runner's own.
fn threadleak_under(setup: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("{setup}; exec \"$0\" \"$@\""))
        .arg(common::bin())
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that a run exited with `code` and said `what` on stderr.
fn says(output: &Output, code: i32, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(what), "{stderr}");
}

/// A record of two mach-sim cells, made by the library.
fn sim_record() -> Record {
    let mut config = common::config(Backend::MachSim(ModelOptions::default()));
    config.params.cycles = 20;
    threadleak::runner::run(
        &config,
        &matrix::select(&[
            "thread=joined,exc=none,fix=off,self=leaked".parse().unwrap(),
            "thread=joined,exc=none,fix=off,self=none".parse().unwrap(),
        ]),
        |_| {},
    )
}

/// Every byte 0x00-0x1f and 0x7f, C1's CSI, escape sequences that clear the screen and set a window title,
/// and the markup of every format.
fn hostile() -> String {
    let c0: String = (0u8..0x20).map(char::from).collect();
    format!("{c0}\u{7f}\u{9b}31m\u{1b}[2J\u{1b}]0;owned\u{7} | <b>&amp;</b> `x` ]]> # [link](javascript:x) *y*")
}

/// A record with hostile text wherever a record holds text.
fn hostile_record() -> Record {
    let mut record = sim_record();
    record.os.release = hostile();
    record.os.version = hostile();
    record.os.libc = hostile();
    record.os.build = Some(hostile());
    record.tool.version = hostile();
    if let Some(model) = record.model.as_mut() {
        model.profile = hostile();
    }
    for cell in &mut record.cells {
        cell.note = Some(hostile());
        cell.per_thread.0.push((format!("counter{}", hostile()), 1.0));
    }
    record
}

fn write_record(dir: &Path, name: &str, record: &Record) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, record.to_json()).unwrap();
    path
}

/// Whether text holds a control character a terminal would act on (newlines end lines; nothing else).
fn raw_controls(text: &str) -> Vec<char> {
    text.chars().filter(|&c| c.is_control() && c != '\n').collect()
}

#[test]
fn a_full_disk_keeps_the_previous_record_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    std::fs::write(&out, "the previous record").unwrap();
    // Files of 8 KiB at most; the record is larger. SIGXFSZ ignored: the write fails with EFBIG.
    let args =
        ["run", "--backend", "mach-sim", "--cell", "thread=joined", "--cycles", "20", "--format", "json", "--out"];
    let output = threadleak_under("trap '' XFSZ; ulimit -f 8", &[&args[..], &[out.to_str().unwrap()]].concat());
    assert_eq!(output.status.code(), Some(ExitCode::FAILED), "{}", String::from_utf8_lossy(&output.stderr));
    says(&output, ExitCode::FAILED, &format!("cannot write {}", out.display()));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "the previous record");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left");
}

#[test]
fn degrade_writes_its_three_files_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("curves");
    // 200 windows: the CSV (9 KiB) and the SVG (7 KiB) fit in 16 KiB; the JSON (84 KiB) does not.
    let output = threadleak_under(
        "trap '' XFSZ; ulimit -f 16",
        &[
            "degrade",
            "--cell",
            "thread=joined,self=leaked,exc=none,fix=off",
            "--threads",
            "2000",
            "--window",
            "10",
            "--out-dir",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(ExitCode::FAILED), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "degrade left some of its files");
}

#[test]
fn a_link_at_the_output_is_replaced_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not yours").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let output = threadleak(&[
        "run",
        "--backend",
        "mach-sim",
        "--cell",
        "thread=joined,self=none,exc=none",
        "--cycles",
        "10",
        "--format",
        "json",
        "--out",
        link.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(ExitCode::OK));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not yours");
    assert!(Record::from_json(&std::fs::read_to_string(&link).unwrap()).is_ok());
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let cases: [(PathBuf, &str); 3] = [
        (dir.path().join("nodir/x.json"), "does not exist"),
        (dir.path().to_owned(), "it is a folder"),
        // A folder that takes no new file, even for root.
        (PathBuf::from("/proc/threadleak.json"), "cannot write /proc/threadleak.json"),
    ];
    for (out, what) in cases {
        // A cell of 10 million threads would take minutes: the refusal comes first.
        let output = threadleak(&[
            "run",
            "--cell",
            "thread=joined,self=none,exc=none,fix=off",
            "--cycles",
            "10000000",
            "--out",
            out.to_str().unwrap(),
        ]);
        says(&output, ExitCode::FAILED, what);
    }
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let output = threadleak(&[
        "degrade",
        "--cell",
        "thread=joined,self=none,exc=none,fix=off",
        "--threads",
        "10000000",
        "--out-dir",
        file.to_str().unwrap(),
    ]);
    says(&output, ExitCode::FAILED, "is not a folder");
    let output = threadleak(&[
        "degrade",
        "--cell",
        "thread=joined,self=none,exc=none,fix=off",
        "--threads",
        "10000000",
        "--out-dir",
        "/proc/threadleak-curves",
    ]);
    assert_eq!(output.status.code(), Some(ExitCode::FAILED));
    assert!(started.elapsed() < Duration::from_secs(60), "a refused output ran the cell first");
}

#[test]
fn an_interrupted_degrade_writes_nothing() {
    common::assert_signals_not_ignored(&[libc::SIGINT]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("curves");
    let mut child = Command::new(common::bin())
        .args([
            "degrade",
            "--cell",
            "thread=joined,self=none,exc=none,fix=off",
            "--threads",
            "10000000",
            "--out-dir",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(ExitCode::INTERRUPTED));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn control_characters_from_a_record_never_reach_a_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_record(dir.path(), "a.json", &hostile_record());
    let mut other = hostile_record();
    other.cells[0].per_thread.0[0].1 = 7.0;
    other.os.version = format!("2{}", hostile());
    if let Some(model) = other.model.as_mut() {
        model.profile = format!("z{}", hostile());
    }
    let b = write_record(dir.path(), "b.json", &other);
    for format in ["table", "markdown"] {
        let output = threadleak(&["compare", "--format", format, a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(ExitCode::OK), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        assert_eq!(raw_controls(&text), Vec::<char>::new(), "{text}");
        assert!(text.contains("\\u{1b}"), "{text}");
    }
    // --expect: the baseline's counter names are in the lines that say what differs.
    let output = threadleak(&[
        "run",
        "--backend",
        "mach-sim",
        "--cell",
        "thread=joined,exc=none,fix=off,self=none",
        "--cycles",
        "20",
        "--format",
        "json",
        "--expect",
        a.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(ExitCode::DIFFERS), "{stderr}");
    assert_eq!(raw_controls(&stderr), Vec::<char>::new(), "{stderr}");
    assert!(stderr.contains("counter\\u{0}"), "{stderr}");
    // An error that quotes a record's text.
    let mut bad = hostile_record();
    bad.cells[0].cell = format!("thread=joined,self=sometimes{}", hostile());
    let bad = write_record(dir.path(), "bad.json", &bad);
    let output = threadleak(&["compare", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(ExitCode::USAGE));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(raw_controls(&stderr), Vec::<char>::new(), "{stderr}");
    // Text that is not UTF-8 is not a record.
    let mut bytes = hostile_record().to_json().into_bytes();
    let key = b"\"note\": \"";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    bytes[at] = 0xff;
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, bytes).unwrap();
    let output = threadleak(&["compare", invalid.to_str().unwrap()]);
    says(&output, ExitCode::USAGE, "valid UTF-8");
}

/// Every output format of a record: what it must parse as, and hold no raw control character.
fn check_every_format(record: &Record) {
    let json = report::render(record, Format::Json, None);
    assert_eq!(&Record::from_json(&json).unwrap(), record);
    let xml = report::render(record, Format::Junit, None);
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(parsed.tests, record.cells.len());
    for c in xml.chars() {
        // XML 1.0's Char: tab, newline, carriage return, and nothing else below space.
        assert!((c >= ' ' || "\t\n\r".contains(c)) && c != '\u{fffe}' && c != '\u{ffff}', "{c:?} in {xml}");
    }
    let table = report::render(record, Format::Table, None);
    assert_eq!(raw_controls(&table), Vec::<char>::new(), "{table}");
    let markdown = report::render(record, Format::Markdown, None);
    assert_eq!(raw_controls(&markdown), Vec::<char>::new(), "{markdown}");
    // Every table row has the header's columns: no `|` of the record's splits a cell.
    let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with('|')).collect();
    let columns = |row: &str| row.replace("\\|", "").matches('|').count();
    assert!(rows.iter().all(|r| columns(r) == columns(rows[0])), "{markdown}");
    // No heading, no HTML, no link: every `]` that could close a link text is escaped.
    let link = |l: &str| l.match_indices("](").any(|(i, _)| i == 0 || l.as_bytes()[i - 1] != b'\\');
    assert!(!markdown.lines().any(|l| l.starts_with('#') || l.contains("<b>") || link(l)), "{markdown}");
}

#[test]
fn every_format_of_a_hostile_record_parses_and_shows_its_text_as_data() {
    check_every_format(&hostile_record());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_record_the_loader_accepts_renders_to_output_that_parses(
        texts in proptest::collection::vec("\\PC*|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}|<>&`#\\]]{0,40}", 6),
        value in -1e6f64..1e6,
    ) {
        let mut record = sim_record();
        record.os.release = texts[0].clone();
        record.os.version = texts[1].clone();
        record.tool.version = texts[2].clone();
        record.cells[0].note = Some(texts[3].clone());
        record.cells[0].per_thread.0.push((texts[4].clone() + "x", value));
        record.cells[1].command = None;
        record.cells[1].note = Some(texts[5].clone());
        // Only what the loader accepts is rendered: the JSON goes through it first.
        if let Ok(loaded) = Record::from_json(&record.to_json()) {
            check_every_format(&loaded);
        }
    }
}

#[test]
fn fifos_and_devices_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("record.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let started = Instant::now();
    for (path, what) in
        [(fifo.to_str().unwrap(), "is a FIFO, not a record file"), ("/dev/zero", "is a device, not a record file")]
    {
        says(&threadleak(&["compare", path]), ExitCode::USAGE, what);
        let output = threadleak(&[
            "run",
            "--backend",
            "mach-sim",
            "--cell",
            "thread=joined,self=none,exc=none,fix=off",
            "--expect",
            path,
        ]);
        assert_eq!(output.status.code(), Some(ExitCode::BASELINE_UNUSABLE));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_record_with_more_counters_than_a_backend_has_is_refused_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = sim_record();
    record.cells[0].per_thread = Counters((0..100).map(|i| (format!("c{i}"), 0.0)).collect());
    let path = write_record(dir.path(), "wide.json", &record);
    let output = threadleak(&["compare", path.to_str().unwrap()]);
    says(&output, ExitCode::USAGE, "more than 64 counters");
}

/// A mach-sim baseline for the two cells of `sim_record`, with `edit` applied.
fn baseline(dir: &Path, edit: impl FnOnce(&mut Record)) -> PathBuf {
    let mut record = sim_record();
    edit(&mut record);
    write_record(dir, "baseline.json", &record)
}

fn expect(baseline: &Path) -> Output {
    threadleak(&[
        "run",
        "--backend",
        "mach-sim",
        "--cell",
        "thread=joined,self=leaked,exc=none,fix=off",
        "--cell",
        "thread=joined,self=none,exc=none,fix=off",
        "--cycles",
        "20",
        "--expect",
        baseline.to_str().unwrap(),
    ])
}

#[test]
fn a_baseline_cell_that_cannot_judge_makes_the_baseline_unusable() {
    let dir = tempfile::tempdir().unwrap();
    // Recorded under `ulimit -n 64`: a cell in error, inconclusive.
    let errored = baseline(dir.path(), |r| {
        r.cells[0].status = Status::Error;
        r.cells[0].verdict = Verdict::Inconclusive;
    });
    let output = expect(&errored);
    says(&output, ExitCode::BASELINE_UNUSABLE, "cannot judge cell");
    // Every cell crashed: unusable, not "matches".
    let crashed = baseline(dir.path(), |r| r.cells.iter_mut().for_each(|c| c.status = Status::Crashed));
    assert_eq!(expect(&crashed).status.code(), Some(ExitCode::BASELINE_UNUSABLE));
    // The baseline as recorded: matches.
    let good = baseline(dir.path(), |_| {});
    assert_eq!(
        expect(&good).status.code(),
        Some(ExitCode::MATCHES),
        "{}",
        String::from_utf8_lossy(&expect(&good).stderr)
    );
}

#[test]
fn motion_below_what_the_analysis_counts_is_no_difference() {
    let dir = tempfile::tempdir().unwrap();
    // A background thread mapping 12 KiB moved vm_kib by 0.012 per thread: not what anyone would bisect.
    let noisy = baseline(dir.path(), |r| {
        for c in &mut r.cells {
            c.per_thread.0.push(("vm_kib".into(), 0.012));
        }
    });
    assert_eq!(expect(&noisy).status.code(), Some(ExitCode::MATCHES));
    // A whole name per thread more is.
    let worse = baseline(dir.path(), |r| {
        let cell = r.cells.iter_mut().find(|c| c.cell == "thread=joined,self=none,exc=none,fix=off").unwrap();
        cell.per_thread.0[0].1 = 1.0;
    });
    let output = expect(&worse);
    says(&output, ExitCode::DIFFERS, "expected clean (names +1), got clean (nothing moves)");
}

#[test]
fn exec_refuses_a_run_record_as_its_baseline_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let run = baseline(dir.path(), |_| {});
    let output = threadleak(&["exec", "--expect", run.to_str().unwrap(), "--", "/bin/true"]);
    says(&output, ExitCode::BASELINE_UNUSABLE, "is a record of `threadleak run`, this is `threadleak exec`");
}

/// What a run answered under a limit: a record (exit 0 or 3), or one line and exit 4; never a panic
/// (101) or an abort (134).
fn answered(output: &Output) {
    let code = output.status.code();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("error while loading shared libraries") {
        // The dynamic loader could not map the binary: threadleak never ran.
        return;
    }
    assert!(matches!(code, Some(ExitCode::OK | ExitCode::INCOMPLETE | ExitCode::FAILED)), "{code:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == Some(ExitCode::FAILED) {
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    } else {
        let record = Record::from_json(&String::from_utf8_lossy(&output.stdout)).unwrap();
        for cell in record.cells.iter().filter(|c| c.status != Status::Ok) {
            assert!(cell.note.is_some(), "{cell:?}");
        }
    }
}

#[test]
fn a_process_limit_gives_a_record_never_a_panic() {
    // Root is not held to RLIMIT_NPROC: run as nobody then, if nobody can reach this build.
    let root = nix::unistd::geteuid().is_root();
    let as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"];
    if root
        && !Command::new(as_nobody[0])
            .args(&as_nobody[1..])
            .arg(common::bin())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        eprintln!("root, and nobody cannot run {}: the process limit is not exercised here", common::bin().display());
        return;
    }
    for limit in [2, 4, 6, 10, 14] {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nproc={limit}")).arg("--");
        if root {
            command.args(as_nobody);
        }
        let output = command
            .arg(common::bin())
            .args(["run", "--backend", "mach-sim", "--cell", "thread=detached", "--format", "json"])
            .current_dir("/")
            .output()
            .unwrap();
        answered(&output);
    }
}

#[test]
fn an_address_space_limit_gives_a_record_or_one_line_never_an_abort() {
    let mut answered_at = Vec::new();
    for kib in [12_000, 20_000, 25_000, 40_000] {
        let limit = format!("ulimit -v {kib}");
        // Below what the binary needs to be loaded and reach `main` (its segments, the C library, the
        // first pages of stack), the kernel or the loader ends it before any of its code runs: nothing
        // of threadleak's to answer. `--version` tells those limits apart.
        if threadleak_under(&limit, &["--version"]).status.code().is_none() {
            continue;
        }
        answered(&threadleak_under(&limit, &["run", "--cell", "thread=detached", "--format", "json"]));
        answered_at.push(kib);
    }
    // The test exercises the limits a loaded binary meets: the larger ones always.
    assert!(answered_at.contains(&25_000) && answered_at.contains(&40_000), "{answered_at:?}");
}

#[test]
fn a_closed_stderr_or_stdout_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let lc = dir.path().join("lifecycles");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/lifecycles.c");
    assert!(Command::new("cc").args(["-O2", "-pthread"]).arg(&source).arg("-o").arg(&lc).status().unwrap().success());
    let out = dir.path().join("r.json");
    let run = "run --backend mach-sim --cell thread=joined,exc=leaked --cycles 10".to_owned();
    let run_to_file = format!("{run} --format json --out {}", out.display());
    let exec = format!("exec -- {} joined 100", lc.display());
    let exec_to_file = format!("exec --format json --out {} -- {} joined 100", out.display(), lc.display());
    // (the command's arguments, how its output is closed, the exit code it must give)
    let cases = [
        (&run_to_file, "2>&-", ExitCode::OK),
        (&run_to_file, "2>&1 | true", ExitCode::OK),
        (&exec_to_file, "2>&-", ExitCode::OK),
        (&exec_to_file, "2>&1 | true", ExitCode::OK),
        // A closed descriptor 1 is a sink to the standard library (writes to it are dropped, EBADF);
        // a broken pipe cannot take the table: the run failed, and says so where it can.
        (&run, ">&-", ExitCode::OK),
        (&run, "2>&1 | true", ExitCode::FAILED),
        (&exec, "| true", ExitCode::FAILED),
    ];
    for (args, closed, expected) in cases {
        let code_file = dir.path().join("code");
        let status = Command::new("bash")
            .arg("-c")
            .arg(format!("\"$0\" {args} {closed}; echo ${{PIPESTATUS[0]}} > {}", code_file.display()))
            .arg(common::bin())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let code: i32 = std::fs::read_to_string(&code_file).unwrap().trim().parse().unwrap();
        assert_eq!(code, expected, "{args} {closed}");
    }
}

#[test]
fn a_backend_of_another_os_and_a_timeout_too_short_are_usage_errors() {
    let output = threadleak(&["run", "--backend", "macos", "--cell", "thread=joined,self=none,exc=none,fix=off"]);
    says(&output, ExitCode::USAGE, "the macos backend measures its own OS's kernel and runs only there");
    for timeout in ["0s", "0.0000001ms", "5ms"] {
        says(&threadleak(&["run", "--backend", "mach-sim", "--timeout", timeout]), ExitCode::USAGE, "at least 10ms");
    }
}
