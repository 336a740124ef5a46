//! `ci/summary.sh`, the macOS workflow's job summary, on records a Mac would write: the model's own
//! numbers relabelled as a Mac's (they agree with the snapshots), and the same with one cell's numbers
//! changed (it must be listed with both sets of numbers and the commands that keep it as an override).

use crate::common;

use std::path::Path;
use std::process::Command;

/// A record of the full matrix on mach-sim, relabelled as made on macOS `version`.
fn mac_record(dir: &Path, name: &str, version: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let model = dir.join("model.json");
    if !model.exists() {
        let out = Command::new(common::bin())
            .args(["run", "--backend", "mach-sim", "--format", "json", "--out"])
            .arg(&model)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    record["backend"] = "macos".into();
    record["model"] = serde_json::Value::Null;
    record["os"]["family"] = "macos".into();
    record["os"]["version"] = version.into();
    change(&mut record);
    std::fs::create_dir_all(dir.join("records")).unwrap();
    std::fs::write(dir.join("records").join(format!("{name}.json")), serde_json::to_string(&record).unwrap()).unwrap();
}

fn summary(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/summary.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir.join("records"))
        .env("THREADLEAK_BIN", common::bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_mac_that_agrees_with_the_model_is_said_to_match() {
    let dir = tempfile::tempdir().unwrap();
    mac_record(dir.path(), "record-macos-15.5-arm64", "15.5", |_| {});
    let text = summary(dir.path());
    assert!(text.contains("### record-macos-15.5-arm64 against the model's snapshots"), "{text}");
    assert!(text.contains("#### Against the baseline: matches"), "{text}");
    assert!(!text.contains("cargo insta review"), "{text}");
}

#[test]
fn a_cell_that_differs_is_listed_with_both_numbers_and_the_override_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cell = "thread=detached,self=leaked,exc=none,fix=off";
    mac_record(dir.path(), "record-macos-15.5-arm64", "15.5", |_| {});
    mac_record(dir.path(), "record-macos-26.1-arm64", "26.1", |record| {
        let cells = record["cells"].as_array_mut().unwrap();
        let target = cells.iter_mut().find(|c| c["cell"] == cell).unwrap();
        // The kernel of this made-up release keeps no dead name: nothing moves.
        for (_, value) in target["per_thread"].as_object_mut().unwrap() {
            *value = 0.0.into();
        }
        target["verdict"] = "clean".into();
    });
    let text = summary(dir.path());
    let (first, second) = text.split_once("### record-macos-26.1-arm64").expect(&text);
    assert!(first.contains("#### Against the baseline: matches"), "{text}");
    assert!(second.contains("#### Against the baseline: differs"), "{text}");
    // Both sets of numbers: the model's leak and the measured nothing.
    assert!(second.contains("expected leak (names +1, dead +1, urefs +1), got clean (nothing moves)"), "{text}");
    assert!(
        second.contains(&format!(
            "cp 'cases/snapshots/{cell}@mach.snap' 'cases/snapshots/{cell}@macos-26.snap' && cargo test --test cases matrix::macos::"
        )),
        "{text}"
    );
    assert_eq!(second.matches("cargo insta review").count(), 1, "{text}");
}
