//! `threadleak compare`: records from different versions side by side, duplicates merged or flagged, and
//! bad record files refused with their name and what is wrong, never a panic.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use threadleak::backend::mach::sim::Profile;
use threadleak::backend::{Backend, ModelOptions};
use threadleak::compare::{self, CompareFormat, LoadError};
use threadleak::matrix;
use threadleak::record::Record;
use threadleak::runner::run;

/// A mach-sim record of the overrun cells under `profile`.
fn overrun(profile: Profile) -> Record {
    let mut config = common::config(Backend::MachSim(ModelOptions { profile, delay: 1, ..ModelOptions::default() }));
    config.params.cycles = 4;
    config.params.warmup = 1;
    config.params.self_calls = 70_000;
    run(&config, &matrix::select(&["thread=detached,self=leaked,exc=none".parse().unwrap()]), |_| {})
}

fn write(dir: &Path, name: &str, record: &Record) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, record.to_json()).unwrap();
    path
}

#[test]
fn profiles_are_ordered_and_their_differences_spelled_out() {
    let dir = tempfile::tempdir().unwrap();
    // Given newest first: the comparison orders by version, xnu-1504 before xnu-11417.
    let new = write(dir.path(), "new.json", &overrun(Profile::Xnu11417));
    let old = write(dir.path(), "old.json", &overrun(Profile::Xnu1504));
    let out =
        Command::new(common::bin()).args(["compare", "--format", "markdown"]).arg(&new).arg(&old).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| cell | xnu-1504 (macOS 10.6) | xnu-11417 (macOS 15) |"), "{text}");
    assert!(text.contains(
        "- `thread=detached,self=leaked,exc=none,fix=on`: changed between xnu-1504 (macOS 10.6) and xnu-11417 \
         (macOS 15): names 0 → +1, dead 0 → +1, urefs 0 → +65535, clean → leak"
    ));
}

#[test]
fn the_recorded_profiles_differ_exactly_in_the_overrun_cells() {
    let dir = format!("{}/../fixtures/records", env!("CARGO_MANIFEST_DIR"));
    let load = |name: &str| {
        let path = PathBuf::from(format!("{dir}/{name}"));
        (path.clone(), compare::load(&path).unwrap())
    };
    let groups =
        compare::compare(vec![load("mach-sim-xnu-11417-overrun.json"), load("mach-sim-xnu-1504-overrun.json")]);
    assert_eq!(groups.len(), 1);
    let changed: Vec<&str> = groups[0].changes.iter().map(|(cell, _)| cell.as_str()).collect();
    let expected: Vec<String> = matrix::select(&["self=leaked".parse().unwrap()]).iter().map(|c| c.id()).collect();
    assert_eq!(changed, expected);
    let (cell, sentence) = &groups[0].changes[1];
    assert_eq!(cell, "thread=detached,self=leaked,exc=none,fix=on");
    assert_eq!(
        sentence,
        "changed between xnu-1504 (macOS 10.6) and xnu-11417 (macOS 15): names 0 → +1, dead 0 → +1, urefs 0 → \
         +65535, clean → leak"
    );
}

/// `run --profile all` writes a record per modelled release; `compare` over them names the release where
/// a cell's or a scenario's behaviour first changed: the C library's semaphore for a thread never joined
/// is gone from 10.14 (libpthread-330).
#[test]
fn compare_over_every_profile_names_the_release_that_changed_the_unjoined_cells() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(common::bin())
        .args(["run", "--backend", "mach-sim", "--profile", "all", "--cycles", "100", "--format", "json"])
        .args(["--cell", "thread=unjoined,self=none,exc=none", "--scenario", "mailcore2-unjoined", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut records: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    records.sort();
    let names: Vec<String> = records.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "mach-sim-xnu-11417.json",
            "mach-sim-xnu-1504.json",
            "mach-sim-xnu-3248.json",
            "mach-sim-xnu-4570.json",
            "mach-sim-xnu-4903.json"
        ]
    );
    let out = Command::new(common::bin()).arg("compare").args(&records).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for id in [
        "thread=unjoined,self=none,exc=none,fix=off",
        "thread=unjoined,self=none,exc=none,fix=on",
        "scenario=mailcore2-unjoined,variant=buggy",
    ] {
        let changes: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("* {id}: "))).collect();
        assert_eq!(changes.len(), 2, "{id}: {text}");
        // 10.6's pool of 16 against 10.11's one-slot cache, then no semaphore at all.
        assert!(changes[0].contains("changed between xnu-1504 (macOS 10.6) and xnu-3248 (macOS 10.11)"), "{text}");
        assert!(
            changes[1].contains(
                "changed between xnu-4570 (macOS 10.13) and xnu-4903 (macOS 10.14): names +1 → 0, send +1 → 0, \
                 urefs +1 → 0, leak → clean, by kind: names +1 → 0 (name with a send right to a semaphore), urefs \
                 +1 → 0 (on send rights to semaphores)"
            ),
            "{text}"
        );
    }
    // The fixed variant is clean in every era: no change to report.
    assert!(!text.contains("* scenario=mailcore2-unjoined,variant=fixed"), "{text}");
}

#[test]
fn agreeing_records_of_one_version_merge_and_disagreeing_ones_are_flagged() {
    let a = overrun(Profile::Xnu11417);
    let groups = compare::compare(vec![(PathBuf::from("a.json"), a.clone()), (PathBuf::from("b.json"), a.clone())]);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].columns.len(), 1);
    assert_eq!(groups[0].columns[0].sources.len(), 2);
    assert!(groups[0].disputes.is_empty());

    let mut b = a.clone();
    b.cells[1].per_thread.0[0].1 = 0.0;
    let groups = compare::compare(vec![(PathBuf::from("a.json"), a), (PathBuf::from("b.json"), b.clone())]);
    assert_eq!(groups[0].columns.len(), 2);
    assert_eq!(groups[0].disputes, ["b.json and a.json both describe xnu-11417 (macOS 15) but disagree"]);
    let table = compare::render(&groups, CompareFormat::Table);
    assert!(
        table.contains("xnu-11417 (macOS 15) [a.json]") && table.contains("xnu-11417 (macOS 15) [b.json]"),
        "{table}"
    );
}

#[test]
fn bad_records_name_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let good = overrun(Profile::Xnu11417).to_json();
    let cases: &[(&str, String, &str)] = &[
        ("truncated.json", good[..good.len() / 2].to_owned(), "not a threadleak record: EOF while parsing"),
        ("schema.json", good.replacen("\"schema\": 1", "\"schema\": 99", 1), "record schema 99 is not supported"),
        ("axis.json", good.replace("self=leaked", "self=sometimes"), "unknown value `sometimes` for axis `self`"),
        ("huge.json", good.replacen("\"cycles\": 4", "\"cycles\": 1e400", 1), "not a threadleak record"),
        // 100,000 levels of nesting in a field nobody reads: skipped without recursion.
        (
            "deep.json",
            format!("{{\"schema\": 1, \"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)),
            "not a threadleak record: missing field `tool`",
        ),
        ("empty.json", String::new(), "not a threadleak record: EOF while parsing"),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(common::bin()).arg("compare").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&*path.to_string_lossy()) && stderr.contains(expected), "{name}: {stderr}");
    }
    let missing = dir.path().join("missing.json");
    assert!(matches!(compare::load(&missing), Err(LoadError::Io { .. })));
}

#[test]
fn a_file_larger_than_any_record_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    let file = std::fs::File::create(&path).unwrap();
    // A sparse file: 5 GiB long, no disk used.
    file.set_len(5 << 30).unwrap();
    match compare::load(&path) {
        Err(LoadError::TooLarge { size, .. }) => assert_eq!(size, 5 << 30),
        other => panic!("unexpected {other:?}"),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.json");
        std::fs::write(&path, &bytes).unwrap();
        let _ = compare::load(&path);
    }

    #[test]
    fn mutated_records_are_an_error_or_a_record(at in any::<usize>(), byte in any::<u8>()) {
        let good = include_str!("../fixtures/records/linux.json");
        let mut bytes = good.as_bytes().to_vec();
        let at = at % bytes.len();
        bytes[at] = byte;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mutated.json");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(record) = compare::load(&path) {
            let _ = compare::render(&compare::compare(vec![(path, record)]), CompareFormat::Markdown);
        }
    }
}
