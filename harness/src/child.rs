//! The child side: one cell's warm-up, measured cycles and checkpoints, and the one line it reports.
//!
//! The child is this same binary, started by the runner with a hidden subcommand. It writes exactly one
//! JSON line ([`ChildReport`]) to stdout and nothing else; the runner turns it into a [`CellRecord`].
//!
//! [`CellRecord`]: crate::record::CellRecord

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, SettleFailure};
use crate::matrix::Cell;
use crate::record::{Checkpoint, Counters, Failure, Params};

/// What a child reports: its checkpoints so far, and the failure that stopped it if one did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    pub checkpoints: Vec<Checkpoint>,
    /// Measured cycles per second, settle and census time excluded.
    pub cycles_per_sec: Option<f64>,
    pub notes: Vec<String>,
    pub failure: Option<Failure>,
}

/// The cycles after which a census is taken: the baseline, the middle and the end (deduplicated).
pub fn checkpoint_plan(cycles: u32) -> Vec<u32> {
    let mut plan = vec![0, cycles / 2, cycles];
    plan.dedup();
    plan
}

/// Runs one cell in this process and reports. Never panics on a failed call: the failure is the report.
pub fn run(backend: Backend, cell: Cell, params: &Params) -> ChildReport {
    let warmup = i64::from(params.warmup);
    let mut report = ChildReport { checkpoints: Vec::new(), cycles_per_sec: None, notes: Vec::new(), failure: None };
    let mut workload = match backend.open(cell, params) {
        Ok(w) => w,
        Err(e) => {
            report.failure = Some(e.at_cycle(-warmup));
            return report;
        }
    };

    // Every buffer the measured loop touches is allocated before the baseline.
    let plan = checkpoint_plan(params.cycles);
    let width = backend.counters().len();
    let mut censuses = vec![vec![0i64; width]; plan.len()];
    let mut taken = 0usize;

    for i in 0..params.warmup {
        if let Err(e) = workload.cycle() {
            report.failure = Some(e.at_cycle(i64::from(i) - warmup));
            return report;
        }
    }

    let mut busy = Duration::ZERO;
    let mut cycle = 0u32;
    let mut outcome: Result<(), Failure> = Ok(());
    for (slot, &target) in plan.iter().enumerate() {
        let started = Instant::now();
        while cycle < target {
            if let Err(e) = workload.cycle() {
                outcome = Err(e.at_cycle(i64::from(cycle)));
                break;
            }
            cycle += 1;
        }
        busy += started.elapsed();
        if outcome.is_err() {
            break;
        }
        let settled = workload.settle().map_err(|f| match f {
            SettleFailure::TimedOut(s) => Failure::Settle { waited_ms: s.waited_ms, detail: s.detail },
            SettleFailure::Call(e) => e.at_cycle(i64::from(cycle)),
        });
        if let Err(f) =
            settled.and_then(|()| workload.census(&mut censuses[slot]).map_err(|e| e.at_cycle(i64::from(cycle))))
        {
            outcome = Err(f);
            break;
        }
        taken = slot + 1;
    }

    let names = backend.counters();
    report.checkpoints = plan
        .iter()
        .zip(&censuses)
        .take(taken)
        .map(|(&cycle, values)| Checkpoint {
            cycle,
            counters: Counters(names.iter().map(|n| (*n).to_owned()).zip(values.iter().copied()).collect()),
        })
        .collect();
    if cycle > 0 && !busy.is_zero() {
        report.cycles_per_sec = Some(f64::from(cycle) / busy.as_secs_f64());
    }
    report.failure = outcome.err();
    report.notes = workload.notes();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_a_baseline_a_middle_and_an_end() {
        assert_eq!(checkpoint_plan(1000), [0, 500, 1000]);
        assert_eq!(checkpoint_plan(3), [0, 1, 3]);
        assert_eq!(checkpoint_plan(1), [0, 1]);
        assert_eq!(checkpoint_plan(0), [0]);
    }
}
