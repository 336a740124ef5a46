//! The GitHub Action's measuring step (`ci/action.sh`, which `action.yml` runs) called as the action calls
//! it, with its inputs as environment variables: the record, the step's outputs, the job summary and the
//! exit code that fails the step.

#![cfg(target_os = "linux")]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use threadleak::exit::ExitCode;
use threadleak::record::{Record, Verdict};

fn tt(dir: &Path) -> PathBuf {
    common::build_fixture("tt.c", &dir.join("tt program"), &["-O2"])
}

/// What one call of the step left: its exit code, its outputs, the summary, and the record.
struct Step {
    output: Output,
    outputs: BTreeMap<String, String>,
    summary: String,
    record: Option<Record>,
}

fn step(dir: &Path, inputs: &[(&str, &str)]) -> Step {
    let github_output = dir.join("github-output");
    let summary = dir.join("summary.md");
    let _ = std::fs::remove_file(&github_output);
    let _ = std::fs::remove_file(&summary);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/action.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("THREADLEAK_BIN", common::bin())
        .env("THREADLEAK_OUT_DIR", dir.join("records"))
        .env("GITHUB_OUTPUT", &github_output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .current_dir(dir);
    for (name, value) in inputs {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let outputs: BTreeMap<String, String> = std::fs::read_to_string(&github_output)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let record = outputs
        .get("record")
        .filter(|p| !p.is_empty())
        .map(|p| Record::from_json(&std::fs::read_to_string(p).unwrap()).unwrap());
    Step { output, outputs, summary: std::fs::read_to_string(&summary).unwrap_or_default(), record }
}

#[test]
fn a_clean_program_passes_and_a_leaking_one_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path());
    // The path has a space: quoting in the command input groups it into one word.
    let command = |mode: &str| format!("'{}' {mode} 2000", tt.display());

    let clean = step(dir.path(), &[("THREADLEAK_COMMAND", &command("release")), ("THREADLEAK_EVERY", "200")]);
    let stderr = String::from_utf8_lossy(&clean.output.stderr);
    assert_eq!(clean.output.status.code(), Some(ExitCode::MATCHES), "{stderr}");
    assert_eq!(clean.outputs["exit-code"], "0");
    assert_eq!(clean.outputs["verdict"], "clean");
    let name = &clean.outputs["name"];
    assert!(name.starts_with("threadleak-linux-") && name.ends_with(std::env::consts::ARCH), "{name}");
    assert!(clean.outputs["record"].ends_with(&format!("records/{name}.json")));
    let record = clean.record.unwrap();
    assert_eq!(record.cells[0].verdict, Verdict::Clean);
    assert!(clean.summary.starts_with(&format!("## threadleak: {name} (exit 0)")), "{}", clean.summary);
    assert!(clean.summary.contains("| `exec` | clean |"), "{}", clean.summary);

    let leak = step(dir.path(), &[("THREADLEAK_COMMAND", &command("leak")), ("THREADLEAK_EVERY", "200")]);
    assert_eq!(leak.output.status.code(), Some(ExitCode::DIFFERS), "{}", String::from_utf8_lossy(&leak.output.stderr));
    assert_eq!(leak.outputs["exit-code"], ExitCode::DIFFERS.to_string());
    assert_eq!(leak.outputs["verdict"], "leak");
    assert_eq!(leak.record.unwrap().cells[0].per_thread.get("fds"), Some(1.0));
    assert!(leak.summary.contains("| `exec` | leak |"), "{}", leak.summary);

    // `expect: none` judges nothing: the leak is reported, the step passes.
    let unjudged = step(
        dir.path(),
        &[("THREADLEAK_COMMAND", &command("leak")), ("THREADLEAK_EVERY", "200"), ("THREADLEAK_EXPECT", "none")],
    );
    assert_eq!(unjudged.output.status.code(), Some(ExitCode::OK));
    assert_eq!(unjudged.outputs["verdict"], "leak");
}

#[test]
fn the_command_is_split_as_the_shell_splits_words_and_nothing_is_expanded() {
    let dir = tempfile::tempdir().unwrap();
    // `$HOME` stays as written: the program `$HOME/x` does not exist, and the record says so.
    let step = step(dir.path(), &[("THREADLEAK_COMMAND", "'$HOME/x' \"a b\"")]);
    let record = step.record.expect("a record");
    assert_eq!(record.cells[0].command.as_deref(), Some(&["$HOME/x".to_owned(), "a b".to_owned()][..]));
    assert_ne!(step.outputs["exit-code"], "0");
    assert_eq!(step.output.status.code().map(|c| c.to_string()).as_deref(), Some(step.outputs["exit-code"].as_str()));
}

#[test]
fn without_a_command_it_runs_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let step = step(dir.path(), &[("THREADLEAK_ARGS", "--backend mach-sim --cell thread=joined,exc=none")]);
    let stderr = String::from_utf8_lossy(&step.output.stderr);
    assert_eq!(step.output.status.code(), Some(ExitCode::OK), "{stderr}");
    let record = step.record.expect("a record");
    assert_eq!(record.backend, "mach-sim");
    assert!(!record.cells.is_empty() && record.cells.iter().all(|c| c.cell.starts_with("thread=joined")), "{stderr}");
    assert!(step.summary.contains("`thread=joined,"), "{}", step.summary);
}

/// Every line the step prints that GitHub would read as a workflow command (`::error::`, `::add-mask::`,
/// `::stop-commands::`) other than the step's own stop-commands and its end.
fn workflow_commands(output: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut active = true;
    let mut token = String::new();
    let mut found = Vec::new();
    for line in stdout.lines().chain(stderr.lines()) {
        let line = line.trim_start();
        if let Some(t) = line.strip_prefix("::stop-commands::").filter(|_| active && token.is_empty()) {
            (active, token) = (false, t.to_owned());
        } else if !token.is_empty() && line == format!("::{token}::") {
            active = true;
        } else if active && line.starts_with("::") {
            found.push(line.to_owned());
        }
    }
    found
}

#[test]
fn inputs_holding_workflow_commands_are_printed_escaped_and_never_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let tt = tt(dir.path());
    let hostile = "1\n::error::forged\n::add-mask::secret";
    // A bad count or duration is refused before threadleak runs, its value escaped.
    for (input, value) in [("THREADLEAK_EVERY", hostile), ("THREADLEAK_TIMEOUT", hostile)] {
        let step =
            step(dir.path(), &[("THREADLEAK_COMMAND", &format!("'{}' release 300", tt.display())), (input, value)]);
        assert_eq!(step.output.status.code(), Some(ExitCode::USAGE), "{input}");
        assert_eq!(workflow_commands(&step.output), Vec::<String>::new(), "{input}");
    }
    // A command and arguments that hold them run (a newline splits words), and nothing they print is obeyed.
    let step = step(
        dir.path(),
        &[
            ("THREADLEAK_COMMAND", &format!("'{}' release\n300 '::error::in a word'", tt.display())),
            ("THREADLEAK_ARGS", "--every\n::warning::x"),
        ],
    );
    assert_eq!(step.output.status.code(), Some(ExitCode::USAGE), "{:?}", step.output);
    assert_eq!(workflow_commands(&step.output), Vec::<String>::new());
    let stderr = String::from_utf8_lossy(&step.output.stderr);
    assert!(stderr.contains("$'::error::in a word'") || stderr.contains("::error::in\\ a\\ word"), "{stderr}");
}

#[test]
fn arguments_that_cannot_be_split_fail_the_step_and_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let step = step(dir.path(), &[("THREADLEAK_ARGS", "--cell 'thread=joined")]);
    assert_eq!(step.output.status.code(), Some(ExitCode::USAGE));
    let stderr = String::from_utf8_lossy(&step.output.stderr);
    assert!(stderr.contains("the args input cannot be split into words"), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert!(step.record.is_none());
}
