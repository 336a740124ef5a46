//! The tests of `cases/`, one module per subject, in one test binary (`cargo test --test cases`;
//! `cargo test --test cases exec::` runs one subject). One binary is built and linked once instead of once
//! per subject, and its tests share the machine's cores: while programs run under `threadleak exec` (two
//! at a time at most, `common::turn`), tests that do not measure a program run beside them.
//!
//! `library.rs` is a binary of its own: `threadleak::check` measures the process that calls it, so its
//! tests must not share a process with the rest.

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
mod mach_sim;
mod matrix;
mod scenarios;
mod summary;
mod verdicts;
mod xnu_tests;
