//! What the benchmarks that time whole commands share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Wall time of a command, seconds; it must succeed.
pub fn time(command: &mut Command) -> f64 {
    let started = Instant::now();
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(status.success(), "{command:?} failed: {status}");
    elapsed
}

/// Builds `fixtures/SOURCE` into `dir` with `cc -pthread` and `flags`.
pub fn build_fixture(dir: &Path, source: &str, flags: &[&str]) -> PathBuf {
    let exe = dir.join(source.trim_end_matches(".c"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(source);
    let built = Command::new("cc").args(flags).arg("-pthread").arg(&source).arg("-o").arg(&exe).status().unwrap();
    assert!(built.success(), "cannot build {}", source.display());
    exe
}
