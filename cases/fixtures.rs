//! `fixtures/tt.c`, the C reproduction, built with the system C compiler: it shows the leak without the
//! harness, and agrees with the harness's measurement of the same scenario.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn build_tt(dir: &Path) -> PathBuf {
    common::build_fixture("tt.c", &dir.join("tt"), &["-O2", "-Wall", "-Wextra", "-Werror"])
}

/// Runs tt and parses its `key=value` line.
fn tt(exe: &Path, args: &[&str]) -> BTreeMap<String, String> {
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(out.status.success(), "tt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    line.split_whitespace().skip(1).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

#[test]
fn tt_leaks_one_handle_per_thread_unless_it_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_tt(dir.path());
    assert_eq!(tt(&exe, &["plain", "500"])["per_thread"], "0.000");
    assert_eq!(tt(&exe, &["leak", "500"])["per_thread"], "1.000");
    // Linux counts descriptors, one per handle; macOS counts port names, and K references to the same
    // port share one name.
    let k3 = if cfg!(target_os = "macos") { "1.000" } else { "3.000" };
    assert_eq!(tt(&exe, &["leak", "200", "3"])["per_thread"], k3);
    assert_eq!(tt(&exe, &["release", "500"])["per_thread"], "0.000");
    let bad = Command::new(&exe).args(["sometimes", "5"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[cfg(target_os = "linux")]
#[test]
fn the_harness_agrees_with_tt() {
    use threadleak::backend::Backend;
    use threadleak::runner::run_cell;

    let dir = tempfile::tempdir().unwrap();
    let exe = build_tt(dir.path());
    let raw: f64 = tt(&exe, &["leak", "1000"])["per_thread"].parse().unwrap();
    let cell: threadleak::matrix::Cell = "thread=detached,self=leaked,exc=none,fix=off".parse().unwrap();
    let record = run_cell(&common::config(Backend::Linux), cell);
    assert_eq!(record.per_thread.get("fds"), Some(raw));
}
