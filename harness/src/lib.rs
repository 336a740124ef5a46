//! threadleak: a reproduction and regression harness for kernel resources leaked by thread creation.
//!
//! The matrix of scenarios ([`matrix`]) and the corpus of published bugs ([`scenario`]) run one child
//! process per cell or scenario variant ([`runner`], [`child`]); a
//! backend ([`backend`]) realizes each scenario and counts the process's resources; [`analysis`] turns
//! checkpoints into per-thread deltas and a verdict; [`record`] is the versioned result; [`report`]
//! renders it; [`sites`] says where what was left behind was made; [`compare`] sets records side by side; [`exec`] measures any program through the
//! probe library; [`check()`] measures a closure from a crate's own tests; `cli` (feature `cli`, the
//! default) is the command line.

pub mod analysis;
pub mod backend;
pub mod check;
pub mod child;
#[cfg(feature = "cli")]
pub mod cli;
pub mod compare;
pub mod degrade;
#[cfg(feature = "cli")]
pub mod exec;
pub mod exit;
pub mod expect;
pub mod matrix;
#[cfg(feature = "cli")]
pub mod output;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sites;
pub mod sys;
pub mod text;

pub use check::check;
