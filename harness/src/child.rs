//! The child side: one cell's warm-up, measured cycles and checkpoints, and the one line it reports.
//!
//! The child is this same binary, started by the runner with a hidden subcommand. It writes exactly one
//! JSON line ([`ChildReport`]) to stdout and nothing else; the runner turns it into a [`CellRecord`].
//!
//! [`CellRecord`]: crate::record::CellRecord

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{AtCycle, Backend, SettleFailure, Workload};
use crate::backend::{Inventory, SiteTally};
use crate::record::{Checkpoint, Counters, Failure, KindDelta, Params, SiteRecord};
use crate::scenario::Case;

/// What a child reports: its checkpoints so far, and the failure that stopped it if one did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    pub checkpoints: Vec<Checkpoint>,
    /// Measured cycles per second, settle and census time excluded.
    pub cycles_per_sec: Option<f64>,
    pub notes: Vec<String>,
    pub failure: Option<Failure>,
    /// In degradation mode: latency statistics of each window of threads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowStats>,
    /// What moved by kind, from the baseline's inventory to the last census's (see [`kinds`]); `None` when
    /// no inventories were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<KindDelta>>,
    /// Where what was left was made, by site, from the tallies taken with the inventories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteRecord>,
}

/// Create-to-exit latency of the threads of one window: from `pthread_create` to the thread's exit hook
/// having run (and `pthread_join` for joined threads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Threads created when the window closed.
    pub threads: u32,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// How a child spends its cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Checkpoints at the baseline, the middle and the end, each settled.
    Matrix,
    /// A census every `window` threads (settled only at the ends), and every thread's latency.
    Degrade { window: u32 },
    /// `censuses` censuses evenly spaced from the baseline to the end, each settled, for
    /// [`analysis::estimate`](crate::analysis::estimate) (a closure under [`crate::check()`]).
    Series { censuses: u32 },
}

impl Mode {
    /// The cycles after which a census is taken (deduplicated, increasing).
    pub fn plan(self, cycles: u32) -> Vec<u32> {
        let mut plan = match self {
            Mode::Matrix => vec![0, cycles / 2, cycles],
            Mode::Degrade { window } => {
                let mut plan: Vec<u32> = (0..cycles).step_by(window.max(1) as usize).collect();
                plan.push(cycles);
                plan
            }
            Mode::Series { censuses } => {
                let stretches = u64::from(censuses.max(2) - 1);
                (0..=stretches).map(|i| (u64::from(cycles) * i / stretches) as u32).collect()
            }
        };
        plan.dedup();
        plan
    }

    /// Whether the census after `slot` (of `len`) waits for exited threads first.
    fn settles(self, slot: usize, len: usize) -> bool {
        match self {
            Mode::Matrix | Mode::Series { .. } => true,
            Mode::Degrade { .. } => slot == 0 || slot + 1 == len,
        }
    }
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl ChildReport {
    /// A report of nothing measured, stopped by `failure` if given.
    pub fn stopped(failure: Option<Failure>) -> ChildReport {
        ChildReport {
            checkpoints: Vec::new(),
            cycles_per_sec: None,
            notes: Vec::new(),
            failure,
            windows: Vec::new(),
            kinds: None,
            sites: Vec::new(),
        }
    }
}

/// In a child its runner started: arranges to die with the runner; if that fails, the report that says so.
pub fn die_with_runner(params: &Params) -> Option<ChildReport> {
    let runner = std::env::var(crate::runner::PARENT_ENV).ok().and_then(|p| p.parse().ok())?;
    let failed = crate::backend::die_with_parent(runner).err()?;
    Some(ChildReport::stopped(Some(failed.at_cycle(-i64::from(params.warmup)))))
}

/// Runs one cell or scenario variant in this process and reports, its threads kept on `cpu` if given and
/// the OS allows (a CPU that cannot be had changes nothing but speed). Never panics on a failed call: the
/// failure is the report.
pub fn run(backend: Backend, case: Case, params: &Params, mode: Mode, cpu: Option<usize>) -> ChildReport {
    if let Some(cpu) = cpu {
        crate::backend::stay_on_cpu(cpu);
    }
    if let Some(report) = die_with_runner(params) {
        return report;
    }
    match backend.open(case, params) {
        Ok(mut workload) => measure(workload.as_mut(), backend.counters(), params, mode),
        Err(e) => ChildReport::stopped(Some(e.at_cycle(-i64::from(params.warmup)))),
    }
}

/// Warms `workload` up, then runs its measured cycles with a census (of `names`) at each point of
/// `mode`'s plan; used for a cell, and for a closure under [`crate::check()`].
pub fn measure(workload: &mut dyn Workload, names: &[&str], params: &Params, mode: Mode) -> ChildReport {
    let warmup = i64::from(params.warmup);
    let mut report = ChildReport::stopped(None);
    // Every buffer the measured loop touches is allocated before the baseline.
    let plan = mode.plan(params.cycles);
    let width = names.len();
    let mut censuses = vec![vec![0i64; width]; plan.len()];
    let mut threads: Vec<Option<u64>> = vec![None; plan.len()];
    let mut taken = 0usize;
    let timed = matches!(mode, Mode::Degrade { .. });
    let mut latencies: Vec<u64> = if timed { vec![0; params.cycles as usize] } else { Vec::new() };

    for i in 0..params.warmup {
        if let Err(e) = workload.cycle() {
            report.failure = Some(e.at_cycle(i64::from(i) - warmup));
            return report;
        }
    }

    let mut busy = Duration::ZERO;
    let mut cycle = 0u32;
    let mut outcome: Result<(), Failure> = Ok(());
    // Inventories at the baseline and at the last census, outside degradation mode (whose censuses are
    // taken mid-flight).
    let inventories = !timed && plan.len() > 1;
    let (mut first, mut last): (Option<Inventory>, Option<Inventory>) = (None, None);
    let (mut first_sites, mut last_sites) = (None, None);
    let mut inventory_failed: Option<String> = None;
    for (slot, &target) in plan.iter().enumerate() {
        let started = Instant::now();
        while cycle < target {
            let t0 = Instant::now();
            if let Err(e) = workload.cycle() {
                outcome = Err(e.at_cycle(i64::from(cycle)));
                break;
            }
            if timed {
                latencies[cycle as usize] = t0.elapsed().as_nanos() as u64;
            }
            cycle += 1;
        }
        busy += started.elapsed();
        if outcome.is_err() {
            break;
        }
        let settled = if mode.settles(slot, plan.len()) {
            workload.settle().map_err(|f| match f {
                SettleFailure::TimedOut(s) => Failure::Settle { waited_ms: s.waited_ms, detail: s.detail },
                SettleFailure::Call(e) => e.at_cycle(i64::from(cycle)),
            })
        } else {
            Ok(())
        };
        if let Err(f) =
            settled.and_then(|()| workload.census(&mut censuses[slot]).map_err(|e| e.at_cycle(i64::from(cycle))))
        {
            outcome = Err(f);
            break;
        }
        threads[slot] = workload.threads();
        taken = slot + 1;
        if inventories && (slot == 0 || slot + 1 == plan.len()) && inventory_failed.is_none() {
            match workload.inventory() {
                Ok(inventory) if slot == 0 => first = Some(inventory),
                Ok(inventory) => last = Some(inventory),
                Err(e) => inventory_failed = Some(format!("no inventory of kinds: {e}")),
            }
            if slot == 0 {
                first_sites = workload.sites();
            } else {
                last_sites = workload.sites();
            }
        }
    }

    report.checkpoints = plan
        .iter()
        .zip(&censuses)
        .zip(&threads)
        .take(taken)
        .map(|((&cycle, values), &live)| Checkpoint {
            cycle,
            counters: Counters(names.iter().map(|n| (*n).to_owned()).zip(values.iter().copied()).collect()),
            live,
        })
        .collect();
    if cycle > 0 && !busy.is_zero() {
        report.cycles_per_sec = Some(f64::from(cycle) / busy.as_secs_f64());
    }
    if timed {
        for pair in plan[..taken].windows(2) {
            let window = &mut latencies[pair[0] as usize..pair[1] as usize];
            window.sort_unstable();
            report.windows.push(WindowStats {
                threads: pair[1],
                p50_ns: percentile(window, 50.0),
                p99_ns: percentile(window, 99.0),
                max_ns: window.last().copied().unwrap_or(0),
            });
        }
    }
    report.failure = outcome.err();
    report.notes = workload.notes();
    report.notes.extend(inventory_failed);
    if let (Some(first), Some(last)) = (&first, &last) {
        report.kinds = Some(kinds(first, last, cycle, names));
    }
    if let (Some(first), Some(last)) = (&first_sites, &last_sites) {
        report.sites = sites(&*workload, first, last, cycle);
    }
    report
}

/// The sites whose count grew by at least [`crate::sites::SITE_THRESHOLD`] per cycle between two
/// tallies, most per cycle first, resolved.
fn sites(workload: &dyn Workload, first: &SiteTally, last: &SiteTally, cycles: u32) -> Vec<SiteRecord> {
    if cycles == 0 {
        return Vec::new();
    }
    let mut out: Vec<SiteRecord> = last
        .iter()
        .filter_map(|(&id, (count, kind))| {
            let before = first.get(&id).map_or(0, |e| e.0);
            let per_thread = (count - before) as f64 / f64::from(cycles);
            if per_thread < crate::sites::SITE_THRESHOLD {
                return None;
            }
            let site = workload.site(id)?;
            let live = *count as u64;
            Some(SiteRecord { per_thread, live, outlived: live, kind: Some(kind.clone()), ..site })
        })
        .collect();
    out.sort_by(|a, b| b.per_thread.total_cmp(&a.per_thread).then_with(|| a.call.cmp(&b.call)));
    out.truncate(crate::sites::MAX_SITES);
    out
}

/// What moved by kind between two inventories, per cycle: the kinds that moved by more than a tenth, in
/// counter order (`names`), largest first within each.
pub fn kinds(first: &Inventory, last: &Inventory, cycles: u32, names: &[&str]) -> Vec<KindDelta> {
    if cycles == 0 {
        return Vec::new();
    }
    let keys: std::collections::BTreeSet<&(String, String)> = first.keys().chain(last.keys()).collect();
    let mut out: Vec<KindDelta> = keys
        .into_iter()
        .filter_map(|key| {
            let change = last.get(key).copied().unwrap_or(0) - first.get(key).copied().unwrap_or(0);
            let per_thread = change as f64 / f64::from(cycles);
            (per_thread.abs() > crate::analysis::RATE_THRESHOLD).then(|| KindDelta {
                counter: key.0.clone(),
                kind: key.1.clone(),
                per_thread,
            })
        })
        .collect();
    let order = |k: &KindDelta| names.iter().position(|n| *n == k.counter).unwrap_or(names.len());
    out.sort_by(|a, b| {
        order(a).cmp(&order(b)).then(b.per_thread.abs().total_cmp(&a.per_thread.abs())).then(a.kind.cmp(&b.kind))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_a_baseline_a_middle_and_an_end() {
        assert_eq!(Mode::Matrix.plan(1000), [0, 500, 1000]);
        assert_eq!(Mode::Matrix.plan(3), [0, 1, 3]);
        assert_eq!(Mode::Matrix.plan(1), [0, 1]);
        assert_eq!(Mode::Matrix.plan(0), [0]);
        assert_eq!(Mode::Series { censuses: 9 }.plan(1000), [0, 125, 250, 375, 500, 625, 750, 875, 1000]);
        assert_eq!(Mode::Series { censuses: 9 }.plan(4), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn kinds_are_what_moved_by_more_than_a_tenth_per_cycle_in_counter_order() {
        let inventory = |items: &[(&str, &str, i64)]| -> Inventory {
            items.iter().map(|&(c, k, n)| ((c.to_owned(), k.to_owned()), n)).collect()
        };
        let first = inventory(&[("maps", "4 KiB ---p guard page", 10), ("fds", "pipe", 4), ("fds", "/dev/null", 3)]);
        let last = inventory(&[
            ("maps", "4 KiB ---p guard page", 110),
            ("fds", "pipe", 4),
            ("fds", "/dev/null", 8),
            ("fds", "anon_inode:[pidfd]", 200),
        ]);
        let got: Vec<(String, String, f64)> = kinds(&first, &last, 100, &["fds", "maps"])
            .into_iter()
            .map(|k| (k.counter, k.kind, k.per_thread))
            .collect();
        // /dev/null moved by 0.05 per cycle: not reported; the pipes did not move.
        assert_eq!(
            got,
            [
                ("fds".to_owned(), "anon_inode:[pidfd]".to_owned(), 2.0),
                ("maps".to_owned(), "4 KiB ---p guard page".to_owned(), 1.0)
            ]
        );
        assert!(kinds(&first, &last, 0, &["fds"]).is_empty());
    }

    #[test]
    fn degradation_takes_a_census_every_window() {
        assert_eq!(Mode::Degrade { window: 1000 }.plan(3000), [0, 1000, 2000, 3000]);
        assert_eq!(Mode::Degrade { window: 1000 }.plan(2500), [0, 1000, 2000, 2500]);
        assert!(Mode::Degrade { window: 10 }.settles(0, 4) && Mode::Degrade { window: 10 }.settles(3, 4));
        assert!(!Mode::Degrade { window: 10 }.settles(1, 4));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 99.0), percentile(&v, 100.0)), (50, 99, 100));
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
