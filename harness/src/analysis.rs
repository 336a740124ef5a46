//! From checkpoints to per-thread deltas, slopes and a verdict.
//!
//! Invariants (property-tested in tests.rs):
//! - on checkpoints that are exactly linear in the cycle number, `per_thread` and `slope` are the rate;
//! - a counter that grows by at least one per thread over the run never yields `clean`, and one that
//!   shrinks by at least one per thread never does either;
//! - the verdict depends on rates, not on absolute counter values (adding a constant changes nothing).
//!
//! Each segment between consecutive checkpoints is classified by its rate: growing above
//! [`RATE_THRESHOLD`], shrinking below its negative, flat otherwise. A counter whose segments all agree
//! takes that class; one whose segments disagree (a one-off jump in one half, a leak that starts late)
//! makes the cell inconclusive rather than guessing.

pub mod evidence;

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

/// How much of a counter is one unit of it: a page (4 KiB, the smallest on Linux) for `vm_kib`, one for
/// every counter of things (descriptors, mappings, names, threads). A counter moves when it changes by more
/// than [`RATE_THRESHOLD`] units per thread.
pub fn unit(counter: &str) -> f64 {
    if counter == "vm_kib" {
        4.0
    } else {
        1.0
    }
}

/// Whether a counter measures memory rather than counting things: it can corroborate a leak but never
/// decide one (see [`estimate`]).
pub fn is_size(counter: &str) -> bool {
    counter == "vm_kib"
}

fn classify(rate: f64, counter: &str) -> Trend {
    let threshold = RATE_THRESHOLD * unit(counter);
    if rate > threshold {
        Trend::Grows
    } else if rate < -threshold {
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
        let mut segments = checkpoints.windows(2).map(|w| classify(rate(&w[0], &w[1], index), name));
        let head = segments.next().expect("two checkpoints make one segment");
        let trend = if segments.all(|t| t == head) { head } else { Trend::Unsteady };
        trends.push((name.clone(), trend));
    }

    let verdict = verdict(&trends);
    Ok(Analysis { per_thread: Counters(per_thread), slope: Counters(slope), trends, verdict })
}

/// What one unit of each counter over the checkpoints' span amounts to per thread: the finest change the
/// measurement can show.
pub fn resolution(checkpoints: &[Checkpoint]) -> Counters<f64> {
    let (Some(first), Some(last)) = (checkpoints.first(), checkpoints.last()) else { return Counters::default() };
    let span = f64::from(last.cycle.saturating_sub(first.cycle)).max(1.0);
    Counters(first.counters.names().map(|n| (n.to_owned(), unit(n) / span)).collect())
}

/// The fewest censuses `threadleak exec` judges a program on (four stretches between them).
pub const MIN_CENSUSES: usize = 5;

/// The share of a run, counted in threads ended, that may lie outside the middle on either side: one
/// sixth each way, so the verdict reads the middle two thirds.
const TAIL: f64 = 1.0 / 6.0;

/// The estimate of a program's per-thread change (`threadleak exec`, `threadleak::check`), from censuses it
/// cannot control.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Each counter's typical rate: the median of the rates of the stretches between consecutive
    /// censuses, each stretch weighted by the threads that ended in it; for a counter that keeps growing
    /// (or falling) by its evidence alone, the Theil-Sen slope it was judged on.
    pub per_thread: Counters<f64>,
    /// The rates that bound the middle two thirds of the run, `[low, high]`: the weighted 1/6 and 5/6
    /// quantiles of the stretches' rates.
    pub interval: Counters<[f64; 2]>,
    /// The change per thread between the last two censuses.
    pub slope: Counters<f64>,
    pub trends: Vec<(String, Trend)>,
    pub verdict: Verdict,
    /// What each thread in flight held, where the censuses showed it, and was set apart: `(counter,
    /// covariate, amount per thread)`, e.g. `("maps", "unjoined", 6.0)`.
    pub in_flight: Vec<(String, String, f64)>,
    /// For each countable counter, the smallest steady change per thread its censuses could have shown
    /// ([`evidence::Evidence::limit`]).
    pub limits: Counters<f64>,
    /// The sentences the verdict comes with, a sentence each: why it is inconclusive, what grew and
    /// stopped, memory that moved and did not count.
    pub notes: Vec<String>,
}

/// How a series of censuses is judged, beyond its counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Judging {
    /// Memory counts: `vm_kib` that grows steadily over the run makes a leak (by default it is reported
    /// and decides nothing).
    pub memory: bool,
}

/// The counters that count threads in flight rather than what ended threads left: each census's own
/// value is set apart from the others' (see [`estimate`]), and they are judged on their own, on what stays
/// counted: at each census, the fewest counted then or at any later census (threads never joined, or
/// never ending, only accumulate; those ended half-way through a batch are joined later, those running
/// at one census end by a later one). `running` is the threads the program created and that still run
/// (the checkpoints' `live`); `unjoined` those ended and not joined.
pub const IN_FLIGHT_COUNTERS: &[&str] = &["unjoined", "running"];

/// Estimates the change per thread ended from a program's censuses (sorted by threads ended, the
/// checkpoints' `cycle`).
///
/// **Whole items, by their evidence.** Descriptors, mappings, timers, threads, Mach names and references
/// are whole items: a counter that keeps growing across the run ([`evidence::judge`]: by a few items at
/// least, beyond the band its censuses scatter in, and in each third of the run after its first sixth) is
/// a leak however small its rate, one item in a thousand threads once the run is long enough. One that
/// rose and then stopped (a cache or a pool filled) is not, and a note says what grew and when.
///
/// **Stretches.** Beside the evidence, each counter is read stretch by stretch over the middle two
/// thirds of the run, by threads ended: it certainly grows when its rate is above [`RATE_THRESHOLD`]
/// units in at least five sixths of the run (a leak too), shrinks when below its negative in as much, is
/// flat when the middle two thirds lie within both, and is unsteady (inconclusive) otherwise, unless it
/// grew and settled: noise as large as the rate that would matter hides what a leak would show.
///
/// **Threads in flight.** Before that, what threads still in flight at each census hold is estimated
/// and set apart: the threads running (the checkpoints' `live`: under `exec`, those the program created
/// and that still run, beyond their stacks, which the probe already set apart; in a check, the
/// process's threads, a pool grown while its threads were busy) and those ended but not joined
/// ([`IN_FLIGHT_COUNTERS`]), each on its own or as one total. The costs per such thread are fitted with the rate per thread ended over the stretches
/// (least absolute deviations, which a few one-off steps do not move), and kept only when they leave the
/// series steadier. Threads that never end, or are never joined, and keep piling up are a leak
/// themselves: what they hold is then not set apart but counted with them.
///
/// **Memory.** A counter of memory ([`is_size`]) decides nothing unless `judging.memory`: memory that
/// grows while nothing countable does is as likely garbage a collector has not reclaimed, or a cache, as
/// mappings the kernel merged. When it moves steadily one way over the middle of the run
/// (`steady_rate`: not for a few steps, nor for memory that goes up and down again), a note gives its
/// rate; counted, it makes a leak.
///
/// Invariants (property-tested in tests.rs):
/// - on censuses exactly linear in the threads ended, the estimate is the rate, its interval is that one
///   point, and the verdict is the rate's class;
/// - a one-off change confined to stretches holding less than a sixth of the run moves neither the
///   estimate of an otherwise linear counter nor its verdict;
/// - a counter that grows by at least one per thread in every stretch is never clean;
/// - whole items left steadily by one thread in N are a leak once the run holds enough of them, and a
///   longer run never makes it less so;
/// - what threads in flight hold, in proportion to their number, does not move the estimate, unless
///   they keep piling up, which is a leak;
/// - fewer than [`MIN_CENSUSES`] censuses are always inconclusive, with the reason.
pub fn estimate(checkpoints: &[Checkpoint], judging: Judging) -> Result<Estimate, AnalysisError> {
    let a = analyse(checkpoints)?;
    let n = checkpoints.len();
    let at: Vec<f64> = checkpoints.iter().map(|c| f64::from(c.cycle)).collect();
    let span = at[n - 1] - at[0];
    let series = |index: usize| -> Vec<f64> { checkpoints.iter().map(|c| c.counters.0[index].1 as f64).collect() };
    let names: Vec<String> = a.per_thread.names().map(str::to_owned).collect();
    // Counters of threads in flight: what stays counted at each census, the fewest then or later.
    let staying = |mut values: Vec<f64>| -> Vec<f64> {
        for i in (0..n.saturating_sub(1)).rev() {
            values[i] = values[i].min(values[i + 1]);
        }
        values
    };
    let mut covariates: Vec<(String, Vec<f64>)> =
        vec![("live".to_owned(), checkpoints.iter().map(|c| c.live.unwrap_or(0) as f64).collect())];
    for (index, name) in names.iter().enumerate() {
        if IN_FLIGHT_COUNTERS.contains(&name.as_str()) && name != "running" {
            covariates.push((name.clone(), series(index)));
        }
    }
    // Threads that keep piling up are a leak: what they hold is not set apart.
    let piling_up: Vec<String> = covariates
        .iter()
        .filter(|(_, threads)| evidence::judge(&at, &staying(threads.clone())).growth == evidence::Growth::Steady)
        .map(|(name, _)| name.clone())
        .collect();
    covariates.retain(|(name, _)| !piling_up.contains(name));

    let mut per_thread = Vec::with_capacity(names.len());
    let mut interval = Vec::with_capacity(names.len());
    let mut trends = Vec::with_capacity(names.len());
    let mut limits = Vec::new();
    let mut in_flight = Vec::new();
    // Why the verdict could be inconclusive, and what else the verdict comes with.
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let mut confounded_counters = Vec::new();
    let mut steady_rates = Vec::new();
    // Each counter's series, what threads in flight hold set apart.
    let mut adjusted = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let mut values =
            if IN_FLIGHT_COUNTERS.contains(&name.as_str()) { staying(series(index)) } else { series(index) };
        if !IN_FLIGHT_COUNTERS.contains(&name.as_str()) {
            // A counter of the threads themselves (a check's `tasks`) is not explained by itself.
            let others: Vec<(String, Vec<f64>)> = covariates.iter().filter(|(_, c)| *c != values).cloned().collect();
            let found = set_apart_in_flight(&at, &mut values, &others);
            for (covariate, cost) in found.costs {
                in_flight.push((name.clone(), covariate, cost));
            }
            if found.confounded {
                confounded_counters.push(name.clone());
            }
        }
        adjusted.push(values);
    }
    // Mappings that come and go with a heap's chunks are memory, not items (see [`heap_chunk_kib`]): read
    // on the censuses as counted, where threads in flight that map much memory show it too.
    let chunk_kib = match (names.iter().position(|n| n == "maps"), names.iter().position(|n| is_size(n))) {
        (Some(m), Some(v)) => heap_chunk_kib(&series(m), &series(v)),
        _ => None,
    };
    for (name, values) in names.iter().zip(&adjusted) {
        let mut stretches: Vec<(f64, f64)> =
            (1..n).map(|i| ((values[i] - values[i - 1]) / (at[i] - at[i - 1]), at[i] - at[i - 1])).collect();
        stretches.sort_by(|x, y| x.0.total_cmp(&y.0));
        let quantile = |q: f64| weighted_quantile(&stretches, q * span);
        let (low, mut median, high) = (quantile(TAIL), quantile(0.5), quantile(1.0 - TAIL));
        let threshold = RATE_THRESHOLD * unit(name);
        let by_stretches = if low > threshold {
            Trend::Grows
        } else if high < -threshold {
            Trend::Shrinks
        } else if low >= -threshold && high <= threshold {
            Trend::Flat
        } else {
            Trend::Unsteady
        };
        let mut trend = by_stretches;
        if is_size(name) {
            steady_rates.push(steady_rate(&at, values));
        } else {
            let ev = evidence::judge(&at, values);
            limits.push((name.clone(), ev.limit));
            trend = match (ev.growth, by_stretches) {
                (_, Trend::Grows | Trend::Shrinks) => by_stretches,
                (growth, _) if name == "maps" && chunk_kib.is_some() => {
                    notes.push(format!(
                        "maps moved with {:.0} KiB of memory a mapping: a heap that grows (and shrinks) by chunks, \
                         memory rather than items (a block of 128 KiB or more is mapped on its own, as glibc's \
                         malloc does from its M_MMAP_THRESHOLD; runtimes' heaps likewise), which decides nothing \
                         unless asked to",
                        chunk_kib.unwrap_or(0.0)
                    ));
                    match (judging.memory, growth) {
                        (false, _) => Trend::Flat,
                        (true, evidence::Growth::Steady) => {
                            median = ev.rate;
                            Trend::Grows
                        }
                        (true, _) => by_stretches,
                    }
                }
                (evidence::Growth::Steady, _) => {
                    median = ev.rate;
                    Trend::Grows
                }
                (evidence::Growth::Falling, _) => {
                    median = ev.rate;
                    Trend::Shrinks
                }
                (evidence::Growth::Stopped { .. } | evidence::Growth::StoppedFalling { .. }, _) => Trend::Flat,
                (evidence::Growth::Moving | evidence::Growth::Level, _) => by_stretches,
            };
            if trend == Trend::Flat {
                notes.extend(stopped_note(name, ev.growth));
            }
        }
        if trend != Trend::Flat && confounded_counters.contains(name) {
            trend = Trend::Unsteady;
            reasons.push(format!(
                "{name} moved while the threads in flight rose or fell in step with the threads ended: what they \
                 held cannot be told from what ended threads left"
            ));
        } else if trend == Trend::Unsteady && n >= MIN_CENSUSES && !is_size(name) {
            let share = |keep: &dyn Fn(f64) -> bool| {
                // `+ 0.0` turns the empty sum's -0.0 into 0.
                100.0 * stretches.iter().filter(|s| keep(s.0)).map(|s| s.1).sum::<f64>() / span + 0.0
            };
            reasons.push(format!(
                "{name} grew in {:.0} % of the run and shrank in {:.0} % (by threads ended; the middle two thirds \
                 range from {low:+.2} to {high:+.2} per thread): neither a steady change nor none",
                share(&|r| r > threshold),
                share(&|r| r < -threshold)
            ));
        }
        per_thread.push((name.clone(), median));
        interval.push((name.clone(), [low, high]));
        trends.push((name.clone(), trend));
    }
    for covariate in &piling_up {
        let who = if covariate == "live" { "threads that never end" } else { "threads never joined" };
        notes.push(format!("{who} keep piling up: what they hold is counted with them, not set apart"));
    }
    let mut counted: Vec<(String, Trend)> = trends.iter().filter(|(n, _)| !is_size(n)).cloned().collect();
    let sizes: Vec<(String, Trend)> = trends.iter().filter(|(name, _)| is_size(name)).cloned().collect();
    for ((name, trend), &value) in sizes.iter().zip(&steady_rates) {
        // A one-off step (a cached stack freed, a cache filled) moves it in one stretch; what counts is
        // memory that moves over the middle of the run, stretch after stretch.
        if *trend == Trend::Flat || value.abs() <= RATE_THRESHOLD * unit(name) {
            continue;
        }
        let how = if value > 0.0 { "grew" } else { "shrank" };
        if judging.memory {
            counted.push((name.clone(), if value > 0.0 { Trend::Grows } else { Trend::Unsteady }));
            notes.push(format!(
                "{name} {how} by {value:+.2} per thread ended over the middle two thirds of the run, steadily: memory \
                 counts in this run"
            ));
        } else {
            notes.push(format!(
                "{name} {how} by {value:+.2} per thread ended over the middle two thirds of the run: memory (a heap, \
                 an arena, garbage not yet collected) decides nothing unless asked to (exec --memory, \
                 check's .memory(true))"
            ));
        }
    }
    let mut verdict = estimate_verdict(&counted);
    if n < MIN_CENSUSES {
        verdict = Verdict::Inconclusive;
        reasons.insert(
            0,
            format!(
                "not judged: {n} censuses were taken before the program ended; a verdict needs at least \
                 {MIN_CENSUSES} (80 threads ended)"
            ),
        );
    } else if verdict == Verdict::Inconclusive && reasons.is_empty() {
        reasons.extend(Analysis { trends: counted, ..a.clone() }.explain());
    }
    reasons.append(&mut notes);
    Ok(Estimate {
        per_thread: Counters(per_thread),
        interval: Counters(interval),
        slope: a.slope,
        trends,
        verdict,
        in_flight,
        limits: Counters(limits),
        notes: reasons,
    })
}

/// The memory a mapping brings from which mappings are memory rather than items: glibc's malloc maps a
/// block of its own from 128 KiB (`DEFAULT_MMAP_THRESHOLD_MIN`, malloc/malloc.c), and runtimes grow their
/// heaps by such chunks (V8's pages are 256 KiB).
const HEAP_CHUNK_KIB: f64 = 128.0;

/// The memory each mapping brought as `maps` moved, when mappings came and went as a heap's chunks: the
/// median, over the stretches in which the count of mappings moved (three at least), of the memory that
/// moved with each; `None` when that is under [`HEAP_CHUNK_KIB`] (mappings of a few pages each: stacks,
/// guard pages, files), or too few stretches moved to tell.
fn heap_chunk_kib(maps: &[f64], kib: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = (1..maps.len().min(kib.len()))
        .filter(|&i| maps[i] != maps[i - 1])
        .map(|i| (kib[i] - kib[i - 1]) / (maps[i] - maps[i - 1]))
        .collect();
    if ratios.len() < 3 {
        return None;
    }
    Some(evidence::median(ratios)).filter(|&r| r >= HEAP_CHUNK_KIB)
}

/// What a counter that grew (or fell) and stopped did, as a sentence; nothing for one that did not move.
fn stopped_note(name: &str, growth: evidence::Growth) -> Option<String> {
    let items = |x: f64| if x == x.round() { format!("{x:.0}") } else { format!("{x:.1}") };
    match growth {
        evidence::Growth::Stopped { rise, from, by } => Some(format!(
            "{name} grew by {} between {from:.0} and {by:.0} threads ended, then stopped (a cache or a pool filled, \
             a helper made once): not a leak",
            items(rise)
        )),
        evidence::Growth::StoppedFalling { fall, from, by } => Some(format!(
            "{name} fell by {} between {from:.0} and {by:.0} threads ended, then stopped: not an over-release",
            items(fall)
        )),
        _ => None,
    }
}

/// The rate at which `values` moves over the middle two thirds of the run (by threads ended, `at`), in a
/// way that neither a few steps (a cache filled, a helper thread's stack made and freed) nor the share of
/// stretches that move (a heap that grows a page now and then, in about half of them) decides. Two
/// estimates must agree: the rate over the window leaving out the stretches that moved most, a sixth of
/// them (at least one), which steps do not move; and the median slope between every two censuses in the
/// window (Theil and Sen's), which memory that goes up and down again does not move. The smaller in
/// magnitude is returned, 0 when they disagree in sign: memory moves only when it moves steadily one way.
fn steady_rate(at: &[f64], values: &[f64]) -> f64 {
    let n = at.len();
    let span = at[n - 1] - at[0];
    let (lo, hi) = (at[0] + TAIL * span, at[n - 1] - TAIL * span);
    // Each stretch's change and length within the window.
    let mut parts: Vec<(f64, f64)> = (1..n)
        .map(|i| {
            let overlap = (at[i].min(hi) - at[i - 1].max(lo)).max(0.0);
            ((values[i] - values[i - 1]) * overlap / (at[i] - at[i - 1]), overlap)
        })
        .filter(|&(_, overlap)| overlap > 0.0)
        .collect();
    parts.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
    let kept = &parts[parts.len().div_ceil(6).min(parts.len())..];
    let (change, length) = kept.iter().fold((0.0, 0.0), |(c, l), &(dc, dl)| (c + dc, l + dl));
    let trimmed = if length > 0.0 { change / length } else { 0.0 };
    // The median of the slopes between every two censuses in the window (or all, when fewer than three
    // fall in it).
    let inside: Vec<usize> = (0..n).filter(|&i| at[i] >= lo && at[i] <= hi).collect();
    let points: Vec<usize> = if inside.len() >= 3 { inside } else { (0..n).collect() };
    let mut slopes: Vec<f64> = Vec::with_capacity(points.len() * points.len() / 2);
    for (k, &i) in points.iter().enumerate() {
        for &j in &points[k + 1..] {
            slopes.push((values[j] - values[i]) / (at[j] - at[i]));
        }
    }
    let median = evidence::median(slopes);
    if trimmed == 0.0 || median == 0.0 || trimmed.signum() != median.signum() {
        0.0
    } else if trimmed.abs() < median.abs() {
        trimmed
    } else {
        median
    }
}

/// Sets apart from `values` what each thread in flight holds (see [`estimate`]): returns each covariate
/// with a cost found, and subtracts cost times the covariate's value at each census.
///
/// Readings are tried: a cost for each count in flight (threads running, threads ended and not joined),
/// a cost for one of them alone, and one cost for their total (a runtime that keeps a thread's memory until it is joined
/// holds the same while it runs). The one that leaves the steadiest series (the narrowest middle two
/// thirds of its stretches' rates, then the narrowest band around its line) is kept; none is kept unless
/// it is steadier than the series as it is. A count in flight that moves in proportion to the threads ended (threads never joined) cannot be
/// told from them and is never used.
fn set_apart_in_flight(at: &[f64], values: &mut [f64], covariates: &[(String, Vec<f64>)]) -> InFlight {
    let n = values.len();
    let mut usable: Vec<(String, Vec<f64>)> = Vec::new();
    let mut confounded = false;
    for (name, c) in covariates {
        let ratios: Vec<f64> = (1..n).map(|i| (c[i] - c[i - 1]) / (at[i] - at[i - 1])).collect();
        if ratios.iter().any(|r| (r - ratios[0]).abs() > 1e-9) {
            usable.push((name.clone(), c.clone()));
        } else if ratios[0] != 0.0 {
            confounded = true;
        }
    }
    // The simpler reading first: among equally steady ones, the first is kept.
    let mut readings = Vec::new();
    if usable.len() > 1 {
        let total = (0..n).map(|i| usable.iter().map(|(_, c)| c[i]).sum()).collect();
        readings.push(vec![("in flight".to_owned(), total)]);
        // Only one kind of thread in flight may hold anything (Node.js's running workers hold descriptors;
        // its ended ones, not yet joined, none).
        readings.extend(usable.iter().map(|c| vec![c.clone()]));
    }
    readings.push(usable);
    // Steadier: a narrower middle of the stretches' rates, or as narrow and a narrower band around the
    // series' line (what whole items that come and go with the threads in flight leave).
    type Steadiness = (f64, f64);
    let steadiness = |v: &[f64]| -> Steadiness { (roughness(at, v), evidence::judge(at, v).band) };
    let steadier = |a: Steadiness, b: Steadiness| a.0 < b.0 - 1e-9 || (a.0 <= b.0 + 1e-9 && a.1 < b.1 - 1e-9);
    let mut best: (Steadiness, Vec<f64>, Vec<(String, f64)>) = (steadiness(values), values.to_vec(), Vec::new());
    for reading in readings {
        let mut adjusted = values.to_vec();
        let costs = costs_in_flight(at, &mut adjusted, &reading);
        let rough = steadiness(&adjusted);
        if !costs.is_empty() && steadier(rough, best.0) {
            best = (rough, adjusted, costs);
        }
    }
    values.copy_from_slice(&best.1);
    InFlight { costs: best.2, confounded }
}

/// What [`set_apart_in_flight`] found.
struct InFlight {
    /// Each covariate whose cost was set apart, with its cost per thread.
    costs: Vec<(String, f64)>,
    /// A count in flight moved in step with the threads ended: what it holds cannot be told apart.
    confounded: bool,
}

/// How unsteady a series is: how far apart the rates bounding the middle two thirds of its stretches
/// are, by threads ended (what the verdict reads; one-off steps in the outer sixths do not count).
fn roughness(at: &[f64], values: &[f64]) -> f64 {
    let n = values.len();
    let mut rates: Vec<(f64, f64)> =
        (1..n).map(|i| ((values[i] - values[i - 1]) / (at[i] - at[i - 1]), at[i] - at[i - 1])).collect();
    let total: f64 = rates.iter().map(|r| r.1).sum();
    rates.sort_by(|x, y| x.0.total_cmp(&y.0));
    weighted_quantile(&rates, (1.0 - TAIL) * total) - weighted_quantile(&rates, TAIL * total)
}

/// The most stretches the fit below reads; more are merged, consecutive ones together, into as many.
const MAX_STRETCHES: usize = 48;

/// The cost of each covariate per thread in flight, fitted with the rate per thread ended over the
/// stretches (`Δvalue = rate · Δended + Σ cost · Δcovariate`, least absolute deviations), and `values`
/// adjusted by it.
fn costs_in_flight(at: &[f64], values: &mut [f64], covariates: &[(String, Vec<f64>)]) -> Vec<(String, f64)> {
    let n = values.len();
    let mut rows: Vec<(Vec<f64>, f64)> = (1..n)
        .map(|i| {
            let mut x = vec![at[i] - at[i - 1]];
            x.extend(covariates.iter().map(|(_, c)| c[i] - c[i - 1]));
            (x, values[i] - values[i - 1])
        })
        .collect();
    if rows.len() > MAX_STRETCHES {
        let per = rows.len().div_ceil(MAX_STRETCHES);
        rows = rows
            .chunks(per)
            .map(|group| {
                let mut x = vec![0.0; group[0].0.len()];
                let mut y = 0.0;
                for (gx, gy) in group {
                    x.iter_mut().zip(gx).for_each(|(a, b)| *a += b);
                    y += gy;
                }
                (x, y)
            })
            .collect();
    }
    // Four stretches for each unknown at least: with fewer, any cost fits.
    if rows.len() < 4 * (covariates.len() + 1) {
        return Vec::new();
    }
    let Some(beta) = least_absolute_deviations(&rows, covariates.len() + 1) else { return Vec::new() };
    // Costs that leave much unexplained are guesses (what a thread holds varies with its age): they are
    // used only when what they leave is under a fifth of what they explain.
    let (mut left, mut explained) = (0.0, 0.0);
    for (x, y) in &rows {
        let in_flight: f64 = x[1..].iter().zip(&beta[1..]).map(|(d, c)| d * c).sum();
        left += (y - beta[0] * x[0] - in_flight).abs();
        explained += in_flight.abs();
    }
    if left > 0.2 * explained {
        return Vec::new();
    }
    let mut found = Vec::new();
    for ((name, series), &cost) in covariates.iter().zip(&beta[1..]) {
        // A subsystem of integer counts solves to an integer cost up to rounding: keep it exact.
        let cost = if (cost - cost.round()).abs() < 1e-9 { cost.round() } else { cost };
        if cost != 0.0 {
            for (v, c) in values.iter_mut().zip(series) {
                *v -= cost * c;
            }
            found.push((name.clone(), cost));
        }
    }
    found
}

/// A least-absolute-deviations fit of `y ≈ x · β` with `p` unknowns (at most 3), over `rows` of `(x, y)`:
/// such a fit lies where `p` of the rows hold exactly, so every square subsystem is solved and the
/// solution with the smallest sum of absolute residuals kept (the first found among equals). When most
/// rows hold exactly for one `β`, that `β` is found (the exact-fit property); a few rows far off (a
/// one-off step) do not move it. `None` when every subsystem is singular.
fn least_absolute_deviations(rows: &[(Vec<f64>, f64)], p: usize) -> Option<Vec<f64>> {
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut pick = vec![0usize; p];
    let n = rows.len();
    if n < p || p == 0 || p > 3 {
        return None;
    }
    // Every combination of p rows, in order.
    fn next(pick: &mut [usize], n: usize) -> bool {
        let p = pick.len();
        for i in (0..p).rev() {
            if pick[i] < n - p + i {
                pick[i] += 1;
                for j in i + 1..p {
                    pick[j] = pick[j - 1] + 1;
                }
                return true;
            }
        }
        false
    }
    for (i, slot) in pick.iter_mut().enumerate() {
        *slot = i;
    }
    loop {
        if let Some(beta) = solve(&pick.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>()) {
            let sar: f64 =
                rows.iter().map(|(x, y)| (y - x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>()).abs()).sum();
            if best.as_ref().is_none_or(|(b, _)| sar < *b - 1e-9) {
                best = Some((sar, beta));
            }
        }
        if !next(&mut pick, n) {
            break;
        }
    }
    best.map(|(_, beta)| beta)
}

/// Solves a square system (rows of `(x, y)`) by Gaussian elimination with partial pivoting; `None` when
/// it is singular.
fn solve(rows: &[(Vec<f64>, f64)]) -> Option<Vec<f64>> {
    let p = rows.len();
    let mut m: Vec<Vec<f64>> = rows.iter().map(|(x, y)| x.iter().copied().chain([*y]).collect()).collect();
    for col in 0..p {
        let pivot = (col..p).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-9 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (row, values) in m.iter_mut().enumerate() {
            if row != col {
                let f = values[col] / pivot_row[col];
                for (v, &pv) in values[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * pv;
                }
            }
        }
    }
    Some((0..p).map(|i| m[i][p] / m[i][i]).collect())
}

/// The value at cumulative weight `at` of `(value, weight)` pairs sorted by value: the value of the pair
/// whose weight covers `at`, and the mean of the two neighbours when `at` falls exactly on a boundary.
fn weighted_quantile(sorted: &[(f64, f64)], at: f64) -> f64 {
    let mut below = 0.0;
    for (i, &(value, weight)) in sorted.iter().enumerate() {
        let above = below + weight;
        if at < above || i + 1 == sorted.len() {
            return value;
        }
        if at == above {
            return (value + sorted[i + 1].0) / 2.0;
        }
        below = above;
    }
    0.0
}

/// The verdict of a program's counters: a counter that certainly grows (in five sixths of the run) makes
/// a leak even when others are unsteady, and one that certainly shrinks an over-release; both, or only
/// unsteady ones, cannot be judged.
fn estimate_verdict(trends: &[(String, Trend)]) -> Verdict {
    let any = |t: Trend| trends.iter().any(|&(_, x)| x == t);
    match (any(Trend::Grows), any(Trend::Shrinks)) {
        (true, true) => Verdict::Inconclusive,
        (true, false) => Verdict::Leak,
        (false, true) => Verdict::OverRelease,
        (false, false) if any(Trend::Unsteady) => Verdict::Inconclusive,
        (false, false) => Verdict::Clean,
    }
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
mod tests;
