//! The probe library a run preloads: the one this binary carries (built and embedded by `build.rs`), or
//! one a developer names with `--probe PATH` (or `THREADLEAK_PROBE`).
//!
//! The carried probe is written out for the run where only this user can read it and nobody can replace
//! it: on Linux a sealed anonymous file (`memfd_create`), preloaded as `/proc/RUNNER/fd/N`; where that is
//! not possible (another OS, or `vm.memfd_noexec=2`), a file in the run's private folder (mode 0700),
//! removed with it whatever the ending (the runner, or its watchdog if the runner is killed). Run as
//! root, whose programs may start others as another user (a server's workers, `su`), which could neither
//! open another user's `/proc/RUNNER/fd/N` nor enter the folder (the loader would print an error into
//! the program's stderr, and the program would run unmeasured), it is a file in the run's folder that
//! anyone may read and no one else replace (`RunFiles` in `exec/mod.rs`).

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ExecError;
use crate::backend;

/// The probe this binary carries, if it was built with one.
#[cfg(threadleak_embedded_probe)]
const EMBEDDED: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/probe.bin")));
#[cfg(not(threadleak_embedded_probe))]
const EMBEDDED: Option<&[u8]> = None;

/// Does this binary carry a probe?
pub fn embedded() -> bool {
    EMBEDDED.is_some()
}

/// The CPU types of the probe's slices: `explicit`'s (`--probe PATH`), or the carried one's
/// (`preflight::probe_cputypes`).
pub fn cputypes(explicit: Option<&Path>) -> Vec<u32> {
    let head = match explicit {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| {
                let mut head = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut head).map(|_| head)
            })
            .unwrap_or_default(),
        None => EMBEDDED.map(|b| b[..b.len().min(4096)].to_vec()).unwrap_or_default(),
    };
    super::preflight::probe_cputypes(&head)
}

/// The probe library's file name on this OS.
fn file_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libthreadleak_probe.dylib"
    } else {
        "libthreadleak_probe.so"
    }
}

/// A probe ready to preload, by its path, valid while this lives.
#[derive(Debug)]
pub struct Probe {
    path: PathBuf,
    /// The sealed file the path names, kept open for the run.
    _sealed: Option<OwnedFd>,
}

impl Probe {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The probe `explicit` names, made absolute (the program may change its working folder before a
    /// process of it starts), or else the carried one, written out beside the run's files in `run_dir`
    /// (readable by other users when `shared`).
    pub fn prepare(explicit: Option<&Path>, run_dir: &Path, shared: bool) -> Result<Probe, ExecError> {
        if let Some(path) = explicit {
            let bad = |source| ExecError::BadProbe { path: path.to_owned(), source };
            let path = std::fs::canonicalize(path).map_err(bad)?;
            if !std::fs::metadata(&path).map_err(bad)?.is_file() {
                return Err(bad(std::io::Error::other("not a regular file")));
            }
            return Ok(Probe { path, _sealed: None });
        }
        let bytes = EMBEDDED.ok_or(ExecError::NoProbe)?;
        if !shared {
            if let Some(Ok((path, fd))) = backend::sealed_file(c"threadleak-probe", bytes) {
                return Ok(Probe { path, _sealed: Some(fd) });
            }
        }
        let path = run_dir.join(file_name());
        let write = || {
            let mode = if shared { 0o555 } else { 0o500 };
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path)?;
            std::io::Write::write_all(&mut file, bytes)
        };
        write().map_err(ExecError::Files)?;
        Ok(Probe { path, _sealed: None })
    }
}
