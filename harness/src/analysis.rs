//! From checkpoints to per-thread deltas, slopes and a verdict.
//!
//! Invariants (property-tested below):
//! - on checkpoints that are exactly linear in the cycle number, `per_thread` and `slope` are the rate;
//! - a counter that grows by at least one per thread over the run never yields `clean`, and one that
//!   shrinks by at least one per thread never does either;
//! - the verdict depends on rates, not on absolute counter values (adding a constant changes nothing).
//!
//! Each segment between consecutive checkpoints is classified by its rate: growing above
//! [`RATE_THRESHOLD`], shrinking below its negative, flat otherwise. A counter whose segments all agree
//! takes that class; one whose segments disagree (a one-off jump in one half, a leak that starts late)
//! makes the cell inconclusive rather than guessing.

use crate::record::{Checkpoint, Counters, Verdict};

/// Units per thread below which a segment counts as flat. A real leak moves a counter by at least one
/// unit per thread (a name, a descriptor, a mapping, a KiB); the threshold leaves room for one-off
/// changes of up to a tenth of the segment's thread count, which then show up as disagreeing segments.
pub const RATE_THRESHOLD: f64 = 0.1;

/// The direction a counter moves per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    Flat,
    Grows,
    Shrinks,
    /// Segments disagree.
    Unsteady,
}

/// The analysis of one cell's checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub per_thread: Counters<f64>,
    pub slope: Counters<f64>,
    pub trends: Vec<(String, Trend)>,
    pub verdict: Verdict,
}

/// Why checkpoints cannot be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("at least two checkpoints are needed, got {0}")]
    TooFew(usize),
    #[error("checkpoint cycles must increase strictly ({prev} then {next})")]
    NotIncreasing { prev: u32, next: u32 },
    #[error("checkpoint at cycle {cycle} has counters {found:?}, the first has {expected:?}")]
    CounterMismatch { cycle: u32, expected: Vec<String>, found: Vec<String> },
}

fn classify(rate: f64) -> Trend {
    if rate > RATE_THRESHOLD {
        Trend::Grows
    } else if rate < -RATE_THRESHOLD {
        Trend::Shrinks
    } else {
        Trend::Flat
    }
}

fn rate(a: &Checkpoint, b: &Checkpoint, index: usize) -> f64 {
    let dv = b.counters.0[index].1 as f64 - a.counters.0[index].1 as f64;
    dv / f64::from(b.cycle - a.cycle)
}

/// Analyses checkpoints sorted by cycle, all carrying the same counters in the same order.
pub fn analyse(checkpoints: &[Checkpoint]) -> Result<Analysis, AnalysisError> {
    let (first, last) = match checkpoints {
        [first, .., last] => (first, last),
        _ => return Err(AnalysisError::TooFew(checkpoints.len())),
    };
    let names: Vec<String> = first.counters.names().map(str::to_owned).collect();
    for pair in checkpoints.windows(2) {
        if pair[1].cycle <= pair[0].cycle {
            return Err(AnalysisError::NotIncreasing { prev: pair[0].cycle, next: pair[1].cycle });
        }
        let found: Vec<String> = pair[1].counters.names().map(str::to_owned).collect();
        if found != names {
            return Err(AnalysisError::CounterMismatch { cycle: pair[1].cycle, expected: names, found });
        }
    }
    let before_last = &checkpoints[checkpoints.len() - 2];

    let mut per_thread = Vec::with_capacity(names.len());
    let mut slope = Vec::with_capacity(names.len());
    let mut trends = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        per_thread.push((name.clone(), rate(first, last, index)));
        slope.push((name.clone(), rate(before_last, last, index)));
        let mut segments = checkpoints.windows(2).map(|w| classify(rate(&w[0], &w[1], index)));
        let head = segments.next().expect("two checkpoints make one segment");
        let trend = if segments.all(|t| t == head) { head } else { Trend::Unsteady };
        trends.push((name.clone(), trend));
    }

    let verdict = verdict(&trends);
    Ok(Analysis { per_thread: Counters(per_thread), slope: Counters(slope), trends, verdict })
}

/// Like [`analyse`], for samples of a program nobody controls (`threadleak exec`), where a census can
/// catch a thread in the middle of ending: the per-thread change is the Theil–Sen estimate (the median of
/// the slopes between every pair of checkpoints), which one such sample cannot move, and a counter's trend
/// is the class of that median, unsteady when fewer than half of the pairs share it.
///
/// Exact on linear data, like [`analyse`].
pub fn analyse_robust(checkpoints: &[Checkpoint]) -> Result<Analysis, AnalysisError> {
    let mut a = analyse(checkpoints)?;
    if checkpoints.len() < 4 {
        return Ok(a);
    }
    let mut trends = Vec::with_capacity(a.trends.len());
    for (index, (name, per_thread)) in a.per_thread.0.iter_mut().enumerate() {
        let mut slopes: Vec<f64> = Vec::new();
        for (i, earlier) in checkpoints.iter().enumerate() {
            for later in &checkpoints[i + 1..] {
                slopes.push(rate(earlier, later, index));
            }
        }
        slopes.sort_by(f64::total_cmp);
        let n = slopes.len();
        let median = if n % 2 == 1 { slopes[n / 2] } else { (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0 };
        *per_thread = median;
        let class = classify(median);
        let agreeing = slopes.iter().filter(|&&r| classify(r) == class).count();
        trends.push((name.clone(), if 2 * agreeing >= n { class } else { Trend::Unsteady }));
    }
    a.verdict = verdict(&trends);
    a.trends = trends;
    Ok(a)
}

fn verdict(trends: &[(String, Trend)]) -> Verdict {
    let any = |t: Trend| trends.iter().any(|&(_, x)| x == t);
    if any(Trend::Unsteady) || (any(Trend::Grows) && any(Trend::Shrinks)) {
        Verdict::Inconclusive
    } else if any(Trend::Grows) {
        Verdict::Leak
    } else if any(Trend::Shrinks) {
        Verdict::OverRelease
    } else {
        Verdict::Clean
    }
}

impl Analysis {
    /// A sentence naming the counters that make the verdict, for the record's note.
    pub fn explain(&self) -> Option<String> {
        let pick =
            |t: Trend| -> Vec<&str> { self.trends.iter().filter(|&&(_, x)| x == t).map(|(n, _)| n.as_str()).collect() };
        let unsteady = pick(Trend::Unsteady);
        match self.verdict {
            Verdict::Inconclusive if !unsteady.is_empty() => {
                Some(format!("segments between checkpoints disagree for: {}", unsteady.join(", ")))
            }
            Verdict::Inconclusive => Some(format!(
                "counters move in both directions: grows {}; shrinks {}",
                pick(Trend::Grows).join(", "),
                pick(Trend::Shrinks).join(", ")
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn checkpoints(cycles: &[u32], series: &[(&str, &[i64])]) -> Vec<Checkpoint> {
        cycles
            .iter()
            .enumerate()
            .map(|(i, &cycle)| Checkpoint {
                cycle,
                counters: Counters(series.iter().map(|(n, v)| ((*n).to_owned(), v[i])).collect()),
            })
            .collect()
    }

    #[test]
    fn exact_on_a_linear_leak() {
        let cps = checkpoints(&[0, 500, 1000], &[("fds", &[7, 507, 1007]), ("maps", &[40, 40, 40])]);
        let a = analyse(&cps).unwrap();
        assert_eq!(a.per_thread.get("fds"), Some(1.0));
        assert_eq!(a.slope.get("fds"), Some(1.0));
        assert_eq!(a.per_thread.get("maps"), Some(0.0));
        assert_eq!(a.verdict, Verdict::Leak);
        assert_eq!(a.explain(), None);
    }

    #[test]
    fn a_one_off_jump_is_inconclusive_not_a_leak() {
        let cps = checkpoints(&[0, 500, 1000], &[("vm_kib", &[1000, 1132, 1132])]);
        let a = analyse(&cps).unwrap();
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert_eq!(a.explain().unwrap(), "segments between checkpoints disagree for: vm_kib");
    }

    #[test]
    fn small_one_off_changes_are_flat() {
        let cps = checkpoints(&[0, 500, 1000], &[("fds", &[5, 6, 6])]);
        assert_eq!(analyse(&cps).unwrap().verdict, Verdict::Clean);
    }

    #[test]
    fn shrinking_is_an_over_release_and_mixed_is_inconclusive() {
        let cps = checkpoints(&[0, 10, 20], &[("dead", &[100, 90, 80])]);
        assert_eq!(analyse(&cps).unwrap().verdict, Verdict::OverRelease);
        let cps = checkpoints(&[0, 10, 20], &[("a", &[100, 90, 80]), ("b", &[0, 10, 20])]);
        let a = analyse(&cps).unwrap();
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert_eq!(a.explain().unwrap(), "counters move in both directions: grows b; shrinks a");
    }

    #[test]
    fn malformed_checkpoints_are_errors() {
        assert_eq!(analyse(&[]), Err(AnalysisError::TooFew(0)));
        let cps = checkpoints(&[0, 0], &[("fds", &[1, 1])]);
        assert_eq!(analyse(&cps), Err(AnalysisError::NotIncreasing { prev: 0, next: 0 }));
        let mut cps = checkpoints(&[0, 5], &[("fds", &[1, 1])]);
        cps[1].counters.0[0].0 = "maps".into();
        assert!(matches!(analyse(&cps), Err(AnalysisError::CounterMismatch { cycle: 5, .. })));
    }

    fn cycles() -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::btree_set(1u32..100_000, 1..6).prop_map(|set| {
            let mut v = vec![0];
            v.extend(set);
            v
        })
    }

    #[test]
    fn one_sample_caught_mid_exit_does_not_move_the_robust_estimate() {
        // vm_kib: a thread's stack still mapped at the sixth census only.
        let vm = [11212, 11212, 11212, 11212, 11212, 19408, 11212, 11212];
        let cycles: Vec<u32> = (1..=8).map(|k| k * 200).collect();
        let cps = checkpoints(&cycles, &[("vm_kib", &vm)]);
        assert_eq!(analyse(&cps).unwrap().verdict, Verdict::Inconclusive);
        let robust = analyse_robust(&cps).unwrap();
        assert_eq!(robust.verdict, Verdict::Clean);
        assert_eq!(robust.per_thread.get("vm_kib"), Some(0.0));
    }

    proptest! {
        #[test]
        fn the_robust_estimate_is_exact_on_linear_data(cycles in cycles(), base in -1_000_000i64..1_000_000, rate in -70_000i64..70_000) {
            let values: Vec<i64> = cycles.iter().map(|&c| base + rate * i64::from(c)).collect();
            let a = analyse_robust(&checkpoints(&cycles, &[("x", &values)])).unwrap();
            prop_assert_eq!(a.per_thread.get("x"), Some(rate as f64));
            let expected = match rate { 0 => Verdict::Clean, r if r > 0 => Verdict::Leak, _ => Verdict::OverRelease };
            prop_assert_eq!(a.verdict, expected);
        }

        #[test]
        fn linear_data_gives_the_exact_rate(cycles in cycles(), base in -1_000_000i64..1_000_000, rate in -70_000i64..70_000) {
            let values: Vec<i64> = cycles.iter().map(|&c| base + rate * i64::from(c)).collect();
            let a = analyse(&checkpoints(&cycles, &[("x", &values)])).unwrap();
            prop_assert_eq!(a.per_thread.get("x"), Some(rate as f64));
            prop_assert_eq!(a.slope.get("x"), Some(rate as f64));
            let expected = match rate { 0 => Verdict::Clean, r if r > 0 => Verdict::Leak, _ => Verdict::OverRelease };
            prop_assert_eq!(a.verdict, expected);
        }

        #[test]
        fn one_per_thread_is_never_clean(
            cycles in cycles(),
            noise in proptest::collection::vec(-1_000_000i64..1_000_000, 6),
            sign in prop_oneof![Just(1i64), Just(-1i64)],
        ) {
            // Arbitrary values in between; only the ends are fixed at one unit per thread (or more).
            let n = *cycles.last().unwrap();
            let mut values: Vec<i64> = cycles.iter().zip(&noise).map(|(_, &z)| z).collect();
            let last = values.len() - 1;
            values[last] = values[0] + sign * i64::from(n) + sign * noise[5].abs();
            let a = analyse(&checkpoints(&cycles, &[("x", &values), ("flat", &vec![3; cycles.len()])])).unwrap();
            prop_assert_ne!(a.verdict, Verdict::Clean);
        }

        #[test]
        fn adding_a_constant_changes_nothing(cycles in cycles(), values in proptest::collection::vec(-1000i64..1000, 6), shift in -1_000_000i64..1_000_000) {
            let values = &values[..cycles.len()];
            let shifted: Vec<i64> = values.iter().map(|v| v + shift).collect();
            let a = analyse(&checkpoints(&cycles, &[("x", values)])).unwrap();
            let b = analyse(&checkpoints(&cycles, &[("x", &shifted)])).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
