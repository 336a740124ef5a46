//! The matrix as tests: one test per cell and backend, each asserting the cell's per-thread deltas with a
//! snapshot named by the cell id: `snapshots/<cell id>@linux.snap` for the Linux backend,
//! `snapshots/<cell id>@mach.snap` for the Mach backends: mach-sim, and on a Mac the real kernel, unless
//! an override for that macOS release exists (`<cell id>@macos-26.snap`; see docs/macos.md).
//!
//! `cargo test --test cases matrix::` runs every cell; `cargo test --test cases matrix::linux::` one
//! backend; `cargo test --test cases Unjoined` the unjoined cells.

use crate::common;

use rstest::rstest;
use threadleak::backend::{Backend, ModelOptions};
use threadleak::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};
use threadleak::record::Status;
use threadleak::runner::run_cell;

/// Runs `cell` on `backend` and asserts it against the snapshot `<cell id>@<suffix>`. A note would mean
/// a fallback, a noisy setup or an unsettled census, except the real backend's report of the IPC table.
fn assert_cell(backend: Backend, suffix: &str, cell: Cell) {
    let record = run_cell(&common::config(backend), cell);
    assert_eq!(record.status, Status::Ok, "{}: {:?}", cell, record.note);
    let informational = |note: &str| backend == Backend::Macos && note.starts_with("IPC table at the end:");
    assert!(record.note.as_deref().is_none_or(informational), "{cell}: {:?}", record.note);
    // Shown with a failure only (libtest prints a failing test's captured output): on a Mac, what keeps
    // a legitimately different release's numbers, as ci/summary.sh lists it.
    if backend == Backend::Macos {
        if let Some(commands) = threadleak::expect::override_commands(&cell.id(), &backend.os().version) {
            eprintln!("{cell}: if this release's kernel legitimately differs from the model: {commands}");
        }
    }
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

/// The Mach workload on this Mac's kernel: test names are `macos::cell::thread_…`.
#[cfg(target_os = "macos")]
mod macos {
    use super::*;

    /// `macos-<major>` when the snapshot has an override for this release, else the model's `mach`.
    fn suffix(cell: Cell) -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases/snapshots");
        threadleak::expect::snapshot_suffix("macos", &Backend::Macos.os().version, &dir, &cell.id())
    }

    #[rstest]
    fn cell(
        #[values(ThreadKind::Detached, ThreadKind::Joined, ThreadKind::Unjoined)] thread: ThreadKind,
        #[values(SelfRef::None, SelfRef::Leaked, SelfRef::Balanced)] self_ref: SelfRef,
        #[values(Exc::None, Exc::Restored, Exc::Leaked)] exc: Exc,
        #[values(Fix::Off, Fix::On)] fix: Fix,
    ) {
        let cell = Cell { thread, self_ref, exc, fix };
        assert_cell(Backend::Macos, &suffix(cell), cell);
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
