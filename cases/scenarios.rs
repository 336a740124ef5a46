//! The corpus as tests: each published bug's two variants, asserted with snapshots named by the scenario
//! id, like the matrix's cells: `<id>@mach.snap` for today's model and a Mac, `<id>@mach-<profile>.snap`
//! for the model of an older release, `<id>@linux.snap` where a Linux analog exists.
//!
//! `cargo test --test cases scenarios::` runs them all; `cargo test --test cases mailcore2` one scenario.

use crate::common;

use rstest::rstest;
use threadleak::backend::mach::sim::Profile;
use threadleak::backend::{Backend, ModelOptions};
use threadleak::record::{CellRecord, Status, Verdict};
use threadleak::runner::run_cell;
use threadleak::scenario::{Case, Scenario, ScenarioCase, Variant};

fn case(name: &str, variant: Variant) -> Case {
    let scenario = Scenario::named(name).unwrap_or_else(|| panic!("no scenario {name}"));
    Case::Scenario(ScenarioCase { scenario, variant })
}

fn model(profile: Profile) -> Backend {
    Backend::MachSim(ModelOptions { profile, ..ModelOptions::default() })
}

/// The snapshot suffix of `case` on `backend`, as `--expect cases/snapshots` picks it: `mach` for today's
/// model, `mach-<profile>` for an older one, and on a Mac `mach` unless that release has an override.
fn suffix(backend: Backend, case: Case) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases/snapshots");
    let version = backend.model().map_or_else(|| backend.os().version, |m| m.profile.name().to_owned());
    threadleak::expect::snapshot_suffix(backend.as_str(), &version, &dir, &case.id())
}

fn run(backend: Backend, case: Case) -> CellRecord {
    let record = run_cell(&common::config(backend), case);
    assert_eq!(record.status, Status::Ok, "{case}: {:?}", record.note);
    assert!(record.scenario.is_some(), "{case}: the record names its scenario");
    record
}

fn assert_case(backend: Backend, case: Case) {
    let record = run(backend, case);
    let suffix = suffix(backend, case);
    insta::with_settings!({ snapshot_suffix => suffix, prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!(case.id(), common::summary(&record));
    });
}

/// Calls `$m!` with the names of the corpus's scenarios in brackets, before its own arguments: the one list
/// the tests below are made from (`every_scenario_is_tested` holds it to the corpus).
macro_rules! with_scenario_names {
    ($m:ident!($($args:tt)*)) => {
        $m! {[
            "ccl-thread-self",
            "sbcl-thread-self",
            "mailcore2-unjoined",
            "htop-task-threads",
            "dotnet-task-threads",
            "backtrace-task-threads",
            "webkit-sample-thread-self",
            "mach-override-host-self"
        ] $($args)*}
    };
}

macro_rules! names_const {
    ([$($n:literal),+]) => {
        const NAMES: &[&str] = &[$($n),+];
    };
}

with_scenario_names!(names_const!());

/// A test per scenario and variant (and the extra values given): `$name` and `$variant` name the
/// parameters the body uses.
macro_rules! each_scenario {
    ([$($n:literal),+] $name:ident, $variant:ident $(, #[values($($v:expr),+)] $extra:ident: $ty:ty)* => $body:block) => {
        #[rstest]
        fn scenario(
            #[values($($n),+)] $name: &str,
            #[values(Variant::Buggy, Variant::Fixed)] $variant: Variant,
            $(#[values($($v),+)] $extra: $ty),*
        ) $body
    };
}

/// The model, under every profile: test names are `mach_sim::scenario::…`.
mod mach_sim {
    use super::*;

    with_scenario_names!(each_scenario!(
        name, variant,
        #[values(Profile::Xnu1504, Profile::Xnu3248, Profile::Xnu4570, Profile::Xnu4903, Profile::Xnu11417)] profile: Profile
        => { assert_case(model(profile), case(name, variant)); }
    ));
}

/// The Linux backend, for scenarios with a Linux analog: test names are `linux::scenario::…`.
#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    #[rstest]
    fn scenario(
        #[values("ccl-thread-self", "sbcl-thread-self", "mailcore2-unjoined")] name: &str,
        #[values(Variant::Buggy, Variant::Fixed)] variant: Variant,
    ) {
        assert_case(Backend::Linux, case(name, variant));
    }

    #[test]
    fn the_others_are_refused_with_the_reason() {
        for s in threadleak::scenario::ALL {
            let refused = Backend::Linux.runs(&case(s.name, Variant::Buggy));
            assert_eq!(refused.is_err(), s.not_on_linux().is_some(), "{}", s.name);
        }
    }
}

/// This Mac's kernel, held to today's model: test names are `macos::scenario::…`.
#[cfg(target_os = "macos")]
mod macos {
    use super::*;

    with_scenario_names!(each_scenario!(name, variant => { assert_case(Backend::Macos, case(name, variant)); }));
}

/// The tests are made for every scenario of the corpus, and for nothing else.
#[test]
fn every_scenario_is_tested() {
    let corpus: Vec<&str> = threadleak::scenario::ALL.iter().map(|s| s.name).collect();
    assert_eq!(NAMES, corpus.as_slice());
}

/// What the sources say, beside the snapshots: every fix is clean in every era; every buggy variant
/// leaks in every era, except MailCore2's, whose leak is the C library's and ended with libpthread-330.
#[test]
fn each_fix_is_clean_and_each_bug_leaks_where_its_era_says() {
    for s in threadleak::scenario::ALL {
        for &profile in Profile::ALL {
            let fixed = run(model(profile), case(s.name, Variant::Fixed));
            assert_eq!(fixed.verdict, Verdict::Clean, "{} fixed under {}", s.name, profile.name());
            let buggy = run(model(profile), case(s.name, Variant::Buggy));
            let leaks = s.name != "mailcore2-unjoined" || profile.joinable_threads_keep_a_semaphore();
            let expected = if leaks { Verdict::Leak } else { Verdict::Clean };
            assert_eq!(buggy.verdict, expected, "{} buggy under {}", s.name, profile.name());
        }
    }
}
