//! The tests of `cases/`, one module per subject, in one test binary (`cargo test --test cases`;
//! `cargo test --test cases exec::` runs one subject). One binary is built and linked once instead of once
//! per subject, and its tests share the machine's cores: while programs run under `threadleak exec` (two
//! at a time at most, `common::turn`), tests that do not measure a program run beside them.
//!
//! `library.rs` is `threadleak::check` as a crate author uses it: each check measures in a child (this
//! binary started again for that one test), so its tests share the process with the rest as a crate's
//! own tests share theirs.

mod common;

mod action;
mod cli;
mod compare;
mod degrade;
mod exec;
mod expect;
mod faults;
mod fixtures;
mod guest;
mod hostile;
mod library;
mod mach_sim;
mod matrix;
mod scenarios;
mod summary;
mod verdicts;
mod xnu_tests;
