//! The matrix as tests: one test per cell and backend, each asserting the cell's per-thread deltas with a
//! snapshot named by the cell id: `snapshots/<cell id>@linux.snap` for the Linux backend,
//! `snapshots/<cell id>@mach.snap` for the Mach backends (mach-sim here; the real macOS backend asserts
//! against the same files).
//!
//! `cargo test --test matrix` runs every cell; `cargo test --test matrix linux::` one backend;
//! `cargo test --test matrix Unjoined` the unjoined cells.

mod common;

use rstest::rstest;
use threadleak::backend::{Backend, ModelOptions};
use threadleak::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};
use threadleak::record::Status;
use threadleak::runner::run_cell;

/// Runs `cell` on `backend` and asserts it against the snapshot `<cell id>@<suffix>`.
fn assert_cell(backend: Backend, suffix: &str, cell: Cell) {
    let record = run_cell(&common::config(backend), cell);
    assert_eq!(record.status, Status::Ok, "{}: {:?}", cell, record.note);
    assert_eq!(record.note, None, "{cell}");
    insta::with_settings!({ snapshot_suffix => suffix, prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!(cell.id(), common::summary(&record));
    });
}

/// The Linux backend on this machine's kernel: test names are `linux::cell::thread_…`.
#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    #[rstest]
    fn cell(
        #[values(ThreadKind::Detached, ThreadKind::Joined, ThreadKind::Unjoined)] thread: ThreadKind,
        #[values(SelfRef::None, SelfRef::Leaked, SelfRef::Balanced)] self_ref: SelfRef,
        #[values(Exc::None, Exc::Restored, Exc::Leaked)] exc: Exc,
        #[values(Fix::Off, Fix::On)] fix: Fix,
    ) {
        assert_cell(Backend::Linux, "linux", Cell { thread, self_ref, exc, fix });
    }
}

/// The Mach workload on the XNU model (today's rules): test names are `mach_sim::cell::thread_…`.
mod mach_sim {
    use super::*;

    #[rstest]
    fn cell(
        #[values(ThreadKind::Detached, ThreadKind::Joined, ThreadKind::Unjoined)] thread: ThreadKind,
        #[values(SelfRef::None, SelfRef::Leaked, SelfRef::Balanced)] self_ref: SelfRef,
        #[values(Exc::None, Exc::Restored, Exc::Leaked)] exc: Exc,
        #[values(Fix::Off, Fix::On)] fix: Fix,
    ) {
        assert_cell(Backend::MachSim(ModelOptions::default()), "mach", Cell { thread, self_ref, exc, fix });
    }
}
