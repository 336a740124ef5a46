//! threadleak: a reproduction and regression harness for kernel resources leaked by thread creation
//! (Mach ports on macOS; descriptors, mappings, memory, timers and threads on Linux).
//!
//! In a crate's own tests, [`check()`] asserts in one line that a closure leaks nothing per call:
//!
//! ```no_run
//! #[test]
//! fn spawning_a_scoped_thread_leaks_nothing() {
//!     threadleak::check(|| std::thread::scope(|s| { s.spawn(|| ()); })).cycles(1000).assert_clean();
//! }
//! ```
//!
//! [`Check`] sets how it measures (cycles, warm-up, censuses, settling, memory) and asserts
//! ([`Check::assert_clean`], [`Check::assert_leaks`]) or returns the [`Record`] ([`Check::record`]),
//! which [`report`] renders. As a dev-dependency, `threadleak = { ..., default-features = false }`
//! builds only this (docs/library.md).
//!
//! The rest is the `threadleak` command's (feature `cli`, the default), public for its tests and hidden
//! here: the matrix of scenarios and the corpus of published bugs run one child process per cell
//! (`matrix`, `scenario`, `runner`, `child`); a backend realizes each and counts the process's resources
//! (`backend`, over the `threadleak-census` crate); `analysis` turns checkpoints into per-thread changes
//! and a verdict; `sites` says where what was left behind was made; `compare` and `expect` set records
//! side by side and judge them; `exec` measures any program through the probe library; `cli` is the
//! command line.

#[doc(hidden)]
pub mod analysis;
#[doc(hidden)]
pub mod backend;
pub mod check;
#[doc(hidden)]
pub mod child;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod compare;
#[doc(hidden)]
pub mod degrade;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod exec;
#[doc(hidden)]
pub mod exit;
#[doc(hidden)]
pub mod expect;
#[doc(hidden)]
pub mod matrix;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod output;
#[doc(hidden)]
pub mod parallel;
pub mod record;
pub mod report;
#[doc(hidden)]
pub mod runner;
#[doc(hidden)]
pub mod scenario;
#[doc(hidden)]
pub mod sites;
#[doc(hidden)]
pub mod sys;
#[doc(hidden)]
pub mod text;

pub use check::{check, Check, CheckError};
pub use record::Record;
