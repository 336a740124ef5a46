//! The matrix as tests: one test per cell, each asserting the cell's per-thread deltas with a snapshot
//! named by the cell id (`snapshots/<cell id>@<backend>.snap`).
//!
//! `cargo test --test matrix` runs every cell; `cargo test --test matrix Unjoined` only the unjoined ones.

mod common;

/// The Linux backend on this machine's kernel: test names are `linux::cell::thread_…`.
#[cfg(target_os = "linux")]
mod linux {
    use super::common;
    use rstest::rstest;
    use threadleak::backend::Backend;
    use threadleak::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};
    use threadleak::record::Status;
    use threadleak::runner::run_cell;

    #[rstest]
    fn cell(
        #[values(ThreadKind::Detached, ThreadKind::Joined, ThreadKind::Unjoined)] thread: ThreadKind,
        #[values(SelfRef::None, SelfRef::Leaked, SelfRef::Balanced)] self_ref: SelfRef,
        #[values(Exc::None, Exc::Restored, Exc::Leaked)] exc: Exc,
        #[values(Fix::Off, Fix::On)] fix: Fix,
    ) {
        let cell = Cell { thread, self_ref, exc, fix };
        let record = run_cell(&common::config(Backend::Linux), cell);
        assert_eq!(record.status, Status::Ok, "{}: {:?}", cell, record.note);
        assert_eq!(record.note, None, "{cell}");
        insta::with_settings!({ snapshot_suffix => "linux", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(cell.id(), common::summary(&record));
        });
    }
}
