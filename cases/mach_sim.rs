//! The XNU model beyond the default matrix: the overrun of 65535 user references under both profiles,
//! the settle step against the model's delays, and what the record says about the model.

use crate::common;

use threadleak::backend::mach::sim::Profile;
use threadleak::backend::{Backend, ModelOptions};
use threadleak::matrix::{self, Cell, Exc, Fix, SelfRef};
use threadleak::record::{CellRecord, Params, Status, Verdict};
use threadleak::runner::{run, run_cell};

fn sim(profile: Profile, delay: u32) -> Backend {
    Backend::MachSim(ModelOptions { profile, delay, ..ModelOptions::default() })
}

/// 70,000 `mach_thread_self()` calls in each of 10 measured threads (and one warm-up thread).
fn overrun(profile: Profile, fix: &str) -> CellRecord {
    let mut config = common::config(sim(profile, 3));
    config.params = Params { cycles: 10, warmup: 1, self_calls: 70_000, memory: false };
    let cell: Cell = format!("thread=detached,self=leaked,exc=none,fix={fix}").parse().unwrap();
    let record = run_cell(&config, cell);
    assert_eq!(record.status, Status::Ok, "{:?}", record.note);
    record
}

fn deltas(record: &CellRecord) -> Vec<(&str, f64)> {
    record.per_thread.iter().filter(|&(_, v)| v != 0.0).collect()
}

#[test]
fn the_overrun_defeats_the_fix_on_modern_xnu() {
    let record = overrun(Profile::Xnu11417, "on");
    // One dead name per thread, its user references pegged at MACH_PORT_UREFS_MAX.
    assert_eq!(deltas(&record), [("names", 1.0), ("dead", 1.0), ("urefs", 65535.0)]);
    assert_eq!(record.verdict, Verdict::Leak);
    let note = record.note.unwrap();
    // 11 threads x (70000 - 65534) references beyond the cap.
    assert!(note.contains("49126 send rights were copied out to names already at 65535 user references"), "{note}");
    assert!(
        note.contains("11 mach_port_mod_refs calls on names pegged at 65535 user references were ignored"),
        "{note}"
    );
}

#[test]
fn the_overrun_without_the_fix_leaks_the_same_on_modern_xnu() {
    let record = overrun(Profile::Xnu11417, "off");
    assert_eq!(deltas(&record), [("names", 1.0), ("dead", 1.0), ("urefs", 65535.0)]);
}

#[test]
fn on_xnu_1504_the_fix_survives_the_overrun() {
    // Old XNU stops a send right at 65534 references without a sticky state, and reports
    // KERN_UREFS_OVERFLOW only for positive deltas (MACH_PORT_UREFS_OVERFLOW requires delta > 0), so the
    // fix's mach_port_mod_refs(-65533) succeeds and libpthread's release destroys the name.
    let record = overrun(Profile::Xnu1504, "on");
    assert_eq!(deltas(&record), []);
    assert_eq!(record.verdict, Verdict::Clean);
    assert!(record.note.unwrap().contains("already at 65534 user references"));
    let without = overrun(Profile::Xnu1504, "off");
    // The kernel's release takes one of the 65534.
    assert_eq!(deltas(&without), [("names", 1.0), ("dead", 1.0), ("urefs", 65533.0)]);
}

#[test]
fn delays_change_nothing_once_settled() {
    let cells = matrix::select(&[]);
    let per_thread = |delay: u32| -> Vec<(String, Vec<(String, f64)>)> {
        let mut config = common::config(sim(Profile::Xnu11417, delay));
        config.jobs = 2;
        config.params.cycles = 100;
        let record = run(&config, &cells, |_| {});
        record
            .cells
            .into_iter()
            .map(|c| {
                assert_eq!((c.status, c.note.as_deref()), (Status::Ok, None), "{}", c.cell);
                (c.cell, c.per_thread.0)
            })
            .collect()
    };
    let immediate = per_thread(0);
    assert_eq!(per_thread(7), immediate);
    assert_eq!(per_thread(500), immediate);
}

#[test]
fn the_record_names_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    let out = std::process::Command::new(common::bin())
        .args(["run", "--backend", "mach-sim", "--profile", "xnu-1504", "--sim-delay", "2"])
        .args(["--cell", "thread=joined,self=leaked,exc=none,fix=off", "--cycles", "50", "--format", "json", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = threadleak::record::Record::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(record.backend, "mach-sim");
    let model = record.model.unwrap();
    assert_eq!((model.profile.as_str(), model.delay), ("xnu-1504", 2));
    assert_eq!(record.cells[0].per_thread.get("dead"), Some(1.0));
}

#[test]
fn model_options_need_the_model() {
    let out = std::process::Command::new(common::bin())
        .args(["run", "--backend", "linux", "--profile", "xnu-1504"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(threadleak::exit::ExitCode::USAGE));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--profile, --sim-delay and --task apply to --backend mach-sim only"));
}

#[test]
fn on_xnu_1504_a_thread_never_joined_keeps_a_semaphore() {
    // Libc-594.9.5: each joinable thread that exits with no joiner takes a semaphore (a send right) from a
    // pool that grows 16 at a time; only pthread_join returns it. 10 warm-up and 1000 measured threads never
    // joined keep 1010, so the pool made 1024: 16 at the baseline (after the first warm-up thread), 1008 more
    // over the 1000 threads, +1.008 per thread. Joined threads return theirs: the first 16 are all there is.
    let config = common::config(sim(Profile::Xnu1504, 3));
    let cell = |spec: &str| run_cell(&config, spec.parse::<Cell>().unwrap());
    let unjoined = cell("thread=unjoined,self=none,exc=none,fix=off");
    assert_eq!(deltas(&unjoined), [("names", 1.008), ("send", 1.008), ("urefs", 1.008)]);
    assert_eq!(unjoined.verdict, Verdict::Leak);
    assert!(unjoined.note.unwrap().contains("the C library created 1024 semaphores"));
    let joined = cell("thread=joined,self=none,exc=none,fix=off");
    assert_eq!(deltas(&joined), []);
    assert!(joined.note.unwrap().contains("the C library created 16 semaphores"));
    // Today's libpthread keeps none.
    let modern = run_cell(
        &common::config(sim(Profile::Xnu11417, 3)),
        "thread=unjoined,self=none,exc=none,fix=off".parse::<Cell>().unwrap(),
    );
    assert_eq!(deltas(&modern), []);
}

#[test]
fn the_record_says_which_task_was_modelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    let out = std::process::Command::new(common::bin())
        .args([
            "run",
            "--backend",
            "mach-sim",
            "--task",
            "hardened",
            "--cell",
            "thread=joined,self=none,exc=none,fix=off",
        ])
        .args(["--cycles", "20", "--format", "json", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = threadleak::record::Record::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(record.model.unwrap().task, "hardened");
    // A record from before the task was recorded modelled a hardened one.
    let old = r#"{"profile": "xnu-11417", "delay": 3}"#;
    assert_eq!(serde_json::from_str::<threadleak::record::Model>(old).unwrap().task, "hardened");
}

/// Where each Mach cell's leftovers were made, derived from its axes: a leaked `mach_thread_self` is
/// `take_self_references`'s (K references per thread, on what becomes a dead name), a leaked exception
/// port is `install_exception_port`'s (the name, and the send right made from it); the fix and the
/// balanced and restored axes give everything back, so nothing is left of them.
#[test]
fn every_mach_cell_names_the_call_and_function_that_left_each_reference() {
    let cells = matrix::select(&[]);
    let mut config = common::config(sim(Profile::Xnu11417, 3));
    config.jobs = 2;
    config.params = Params { cycles: 100, warmup: 2, self_calls: 2, memory: false };
    let record = run(&config, &cells, |_| {});
    for cell in &record.cells {
        let axes = cell.axes.as_ref().unwrap();
        let mut expected: Vec<(&str, f64, &str)> = Vec::new();
        if axes.self_ref == SelfRef::Leaked && axes.fix == Fix::Off {
            expected.push(("mach_thread_self", 2.0, "take_self_references"));
        }
        if axes.exc == Exc::Leaked {
            expected.push(("mach_port_allocate", 1.0, "install_exception_port"));
            expected.push(("mach_port_insert_right", 1.0, "install_exception_port"));
        }
        // The function by its own name (a build without full debug information names inlined functions
        // without their module).
        let last = |f: Option<&str>| f.and_then(|f| f.rsplit("::").next()).unwrap_or("?").to_owned();
        let mut found: Vec<(&str, f64, String)> =
            cell.sites.iter().map(|s| (s.call.as_str(), s.per_thread, last(s.frames[0].function.as_deref()))).collect();
        let mut expected: Vec<(&str, f64, String)> =
            expected.into_iter().map(|(c, r, f)| (c, r, f.to_owned())).collect();
        found.sort_by(|a, b| a.0.cmp(b.0));
        expected.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(found, expected, "{}: {:#?}", cell.cell, cell.sites);
        for site in &cell.sites {
            let kind = site.kind.as_deref().unwrap_or("");
            // What the reference is on: a thread's port, dead once the thread is gone; the exception port,
            // a receive right with a send right made from it.
            let want = if site.call == "mach_thread_self" { "dead name" } else { "name with receive and send rights" };
            assert_eq!(kind, want, "{}: {site:#?}", cell.cell);
            assert!(site.frames[0].file.as_deref().is_some_and(|f| f.ends_with("workload.rs")), "{site:#?}");
        }
    }
}
