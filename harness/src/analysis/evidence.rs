//! Whole items judged by their evidence: does a countable counter (descriptors, mappings, timers, threads,
//! Mach names and references) keep growing across the censuses, however slowly?
//!
//! A leak of one descriptor in a thousand threads moves a counter by a thousandth per thread, far below
//! any threshold on a rate; but the items it leaves are whole, they never go away, and over a long run
//! they add up to a staircase that rises all the way. What threads in flight hold, a cache that fills, a
//! heap that grows and is collected, move a counter up and down, or up and then no more. So a counter
//! **keeps growing** when, over the run after its first sixth (start-up, caches filled early), all of these
//! hold:
//!
//! - it rose by at least [`MIN_ITEMS`] whole items, measured as the Theil-Sen slope (the median of the
//!   slopes between every two censuses, which a few outliers do not move) times the window's length;
//! - that rise is more than twice the band the censuses scatter in around that line (the noise: what
//!   threads in flight hold, a heap's ups and downs; a single step leaves a band as wide as itself);
//! - it rose in each third of the window (census to census): it did not stop.
//!
//! It **keeps falling** by the same rules, mirrored. A counter that rose by at least [`MIN_ITEMS`] over the
//! run without keeping on growing **grew and stopped** (a cache, a pool, a lazily made helper): it is not a
//! leak, and the report says so. Whatever the verdict, the censuses tell the smallest steady leak they
//! could have shown ([`Evidence::limit`]): the rise the rules need over the window's length.
//!
//! Invariants (property-tested below): a steady staircase of whole items that leaves at least four items
//! in each third of the window keeps growing, whatever its rate; a run extended with more of the same
//! staircase never stops showing it (more data never makes the verdict less strict); adding a constant
//! changes nothing; bounded noise with no trend never keeps growing; one step, anywhere, never does.

/// The fewest whole items a counter must rise by, over the window, to keep growing.
pub const MIN_ITEMS: f64 = 3.0;

/// The items a steady leak must leave over a window to be seen whatever its phase against the censuses:
/// one in each third of it and one more (measured over `exec`'s census schedule: a staircase of one item
/// every N threads is found at every phase once the window holds four of them).
const LIMIT_ITEMS: f64 = 4.0;

/// The share of the run, by threads ended, left out at its start: start-up and caches filled early.
const HEAD: f64 = 1.0 / 6.0;

/// The fewest censuses a window holds; a window with fewer is read from the last ones (a handful of points
/// can line up by chance).
const MIN_WINDOW: usize = 10;

/// How far one way the censuses' order must lean (Mann and Kendall's statistic, in standard deviations
/// of what order by chance gives: 3.09 is one chance in 1000 one way), so that a handful of noisy censuses
/// that happen to line up do not make a trend.
const MIN_ORDER_Z: f64 = 3.09;

/// The most censuses the slope and the order statistic read (every so many when there are more): the
/// pairs grow as its square.
const MAX_POINTS: usize = 96;

/// What a counter's censuses show of its items.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Growth {
    /// It keeps growing across the run: a leak, whatever the rate.
    Steady,
    /// It keeps falling across the run.
    Falling,
    /// It rose by `rise` items from the first census (`from` threads ended) to where it ended, reached by
    /// the time `by` threads had ended, and then did not keep growing.
    Stopped { rise: f64, from: f64, by: f64 },
    /// It fell by `fall` items from the first census to where it ended, and then did not keep falling.
    StoppedFalling { fall: f64, from: f64, by: f64 },
    /// It moved by [`MIN_ITEMS`] or more over the run and was still moving at its end, but neither steadily
    /// one way nor settled: what its noise could hide, the stretches tell.
    Moving,
    /// It did not move by [`MIN_ITEMS`] over the run.
    Level,
}

/// The evidence of one counter's censuses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evidence {
    pub growth: Growth,
    /// The change per thread over the window: the Theil-Sen slope.
    pub rate: f64,
    /// The band the censuses scatter in around that line, in items.
    pub band: f64,
    /// The smallest steady change per thread these censuses could have shown: the rise the rules need
    /// over the window's length.
    pub limit: f64,
}

/// Judges `values` (a counter at each census, what threads in flight hold set apart) against `at` (threads
/// ended at each census, strictly increasing). Fewer than two censuses show nothing.
///
/// Two windows are read: the run after its first sixth, and its second half (a leak that began half-way
/// through keeps growing there, while a line drawn over the whole window would bend); the counter keeps
/// growing when it does in either. The rate and limit are the longer window's unless the counter kept
/// growing in the shorter one only.
pub fn judge(at: &[f64], values: &[f64]) -> Evidence {
    let n = at.len().min(values.len());
    if n < 2 {
        return Evidence { growth: Growth::Level, rate: 0.0, band: 0.0, limit: f64::INFINITY };
    }
    let long = window(&at[..n], &values[..n], HEAD);
    let growth = match long.growth {
        Growth::Level => {
            let half = window(&at[..n], &values[..n], 0.5);
            if matches!(half.growth, Growth::Steady | Growth::Falling) {
                return half;
            }
            let total = values[n - 1] - values[0];
            // Where it reached where it ended: a move that stopped did so before the run's last third.
            let reached = (0..n)
                .find(|&i| if total > 0.0 { values[i] >= values[n - 1] } else { values[i] <= values[n - 1] })
                .unwrap_or(n - 1);
            let stopped = settled(&at[..n], &values[..n], total) && reached < tail(&at[..n], &values[..n]).start;
            let moved = total.abs() >= MIN_ITEMS;
            if moved && stopped && total > 0.0 {
                Growth::Stopped { rise: total, from: at[0], by: at[reached] }
            } else if moved && stopped {
                Growth::StoppedFalling { fall: -total, from: at[0], by: at[reached] }
            } else if moved || tail_range(&at[..n], &values[..n]) >= MIN_ITEMS {
                Growth::Moving
            } else {
                Growth::Level
            }
        }
        steady => steady,
    };
    Evidence { growth, ..long }
}

/// The evidence over the run after its first `head` share (by threads ended, at least [`MIN_WINDOW`]
/// censuses): [`Growth::Steady`], [`Growth::Falling`] or [`Growth::Level`].
fn window(at: &[f64], values: &[f64], head: f64) -> Evidence {
    let n = at.len();
    let span = at[n - 1] - at[0];
    let start = at[0] + head * span;
    let first = (0..n).find(|&i| at[i] >= start).unwrap_or(n - 1).min(n.saturating_sub(MIN_WINDOW));
    let (x, y) = (&at[first..n], &values[first..n]);
    let length = x[x.len() - 1] - x[0];
    let rate = theil_sen(x, y);
    let intercept = median(y.iter().zip(x).map(|(v, t)| v - rate * t).collect());
    let (low, high) = y
        .iter()
        .zip(x)
        .map(|(v, t)| v - intercept - rate * t)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let band = high - low;
    let rise = rate * length;
    let thirds =
        [1.0, 2.0, 3.0].map(|k| level(x, y, x[0] + length * k / 3.0) - level(x, y, x[0] + length * (k - 1.0) / 3.0));
    let needed = LIMIT_ITEMS.max(2.0 * band + 1.0);
    let limit = if length > 0.0 { needed / length } else { f64::INFINITY };
    let order = mann_kendall(&thinned(y));
    let growth = if rise >= MIN_ITEMS && rise > 2.0 * band && thirds.iter().all(|&d| d > 0.0) && order >= MIN_ORDER_Z {
        Growth::Steady
    } else if -rise >= MIN_ITEMS && -rise > 2.0 * band && thirds.iter().all(|&d| d < 0.0) && -order >= MIN_ORDER_Z {
        Growth::Falling
    } else {
        Growth::Level
    };
    Evidence { growth, rate, band, limit }
}

/// The censuses of the last third of the run after its head (and the one before them): where a counter
/// that stopped has settled.
fn tail(at: &[f64], values: &[f64]) -> std::ops::Range<usize> {
    let n = at.len();
    let span = at[n - 1] - at[0];
    let from = at[n - 1] - (1.0 - HEAD) * span / 3.0;
    let first = (0..n).find(|&i| at[i] >= from).unwrap_or(n - 1).saturating_sub(1);
    first..n.min(values.len())
}

/// How far apart the censuses of the run's [`tail`] lie, in items.
fn tail_range(at: &[f64], values: &[f64]) -> f64 {
    let (lo, hi) =
        values[tail(at, values)].iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    hi - lo
}

/// Whether a counter that moved by `total` over the run has settled: its last third lies within less than
/// half that move (a cache that filled lies flat there; noise that happens to end higher than it began
/// does not).
fn settled(at: &[f64], values: &[f64], total: f64) -> bool {
    tail_range(at, values) <= total.abs() / 2.0
}

/// The counter's level at `t`: what the last census at or before it counted (a step between two censuses
/// lies in one third of a window, however far apart they are).
fn level(x: &[f64], y: &[f64], t: f64) -> f64 {
    match x.iter().rposition(|&a| a <= t + 1e-9) {
        None => y[0],
        Some(i) => y[i],
    }
}

/// At most [`MAX_POINTS`] indices of `n` points, evenly spread (the first and last always among them).
fn picks(n: usize) -> Vec<usize> {
    if n <= MAX_POINTS {
        (0..n).collect()
    } else {
        (0..MAX_POINTS).map(|k| k * (n - 1) / (MAX_POINTS - 1)).collect()
    }
}

/// The values at [`picks`].
fn thinned(y: &[f64]) -> Vec<f64> {
    picks(y.len()).into_iter().map(|i| y[i]).collect()
}

/// The median of the slopes between every two points (Theil and Sen), reading at most `MAX_POINTS` (96)
/// points evenly spread (the first and last always among them).
pub fn theil_sen(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let picks = picks(n);
    let mut slopes = Vec::with_capacity(picks.len() * picks.len() / 2);
    for (k, &i) in picks.iter().enumerate() {
        for &j in &picks[k + 1..] {
            if x[j] > x[i] {
                slopes.push((y[j] - y[i]) / (x[j] - x[i]));
            }
        }
    }
    median(slopes)
}

/// Mann and Kendall's trend statistic of a series in order, in standard deviations: the pairs that rise
/// less those that fall, against its spread under no trend with ties allowed for (Kendall, *Rank
/// Correlation Methods*, 1975), corrected for continuity. Positive when the series leans up; 0 for a
/// series of fewer than three values or all equal.
pub fn mann_kendall(y: &[f64]) -> f64 {
    let n = y.len();
    if n < 3 {
        return 0.0;
    }
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            s += match y[j].total_cmp(&y[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    let mut sorted = y.to_vec();
    sorted.sort_by(f64::total_cmp);
    let tie_term: f64 = sorted
        .chunk_by(|a, b| a == b)
        .map(|g| {
            let t = g.len() as f64;
            t * (t - 1.0) * (2.0 * t + 5.0)
        })
        .sum();
    let n = n as f64;
    let variance = (n * (n - 1.0) * (2.0 * n + 5.0) - tie_term) / 18.0;
    if variance <= 0.0 || s == 0 {
        return 0.0;
    }
    let s = s as f64;
    (s - s.signum()) / variance.sqrt()
}

/// The median (the mean of the two middle values for an even count); 0 for none. Found by selection, in
/// linear time: the series of sites and slopes it is taken of run to thousands of values.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let odd = v.len() % 2 == 1;
    let (below, &mut upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if odd {
        return upper;
    }
    // The lower middle value is the greatest of those below the upper one.
    let lower = below.iter().copied().max_by(f64::total_cmp).unwrap_or(upper);
    (lower + upper) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Censuses as `threadleak exec` schedules them (16, 32, ... four a doubling, then every 1000) up to
    /// `threads` ended.
    fn schedule(threads: u64) -> Vec<f64> {
        let mut at = Vec::new();
        let mut point = 16u64;
        while point <= threads {
            at.push(point as f64);
            let quarter = point / 4;
            let power = if quarter == 0 { 0 } else { 1 << (63 - quarter.leading_zeros()) };
            let step = power.clamp(16, 1000);
            point = (point / step + 1) * step;
        }
        at
    }

    /// One item kept by every `every`-th thread.
    fn staircase(at: &[f64], every: u64) -> Vec<f64> {
        at.iter().map(|&t| (t as u64 / every) as f64).collect()
    }

    #[test]
    fn a_leak_of_one_in_a_thousand_threads_keeps_growing_over_30000() {
        let at = schedule(30_000);
        let e = judge(&at, &staircase(&at, 1000));
        assert_eq!(e.growth, Growth::Steady, "{e:?}");
        assert!((e.rate - 0.001).abs() < 1e-4, "{e:?}");
        for (threads, every) in [(4000, 20), (4000, 100), (20_000, 200)] {
            let at = schedule(threads);
            let e = judge(&at, &staircase(&at, every));
            assert_eq!(e.growth, Growth::Steady, "{threads} {every}: {e:?}");
            assert!((e.rate - 1.0 / every as f64).abs() < 0.1 / every as f64, "{threads} {every}: {e:?}");
        }
        // Too few items for the run's length: a leak of one in 5000 over 4000 threads is not seen, and the
        // limit says so.
        let at = schedule(4000);
        let e = judge(&at, &staircase(&at, 5000));
        assert_eq!(e.growth, Growth::Level);
        assert!(e.limit > 1.0 / 5000.0, "{e:?}");
    }

    #[test]
    fn a_cache_filled_early_grew_and_stopped() {
        let at = schedule(8000);
        let fds: Vec<f64> = at.iter().map(|&t| 5.0 + t.min(64.0)).collect();
        assert_eq!(judge(&at, &fds).growth, Growth::Stopped { rise: 48.0, from: 16.0, by: 64.0 });
        // Filled over the first half of the run: stopped too, and settled.
        let fds: Vec<f64> = at.iter().map(|&t| 5.0 + t.min(4000.0)).collect();
        let e = judge(&at, &fds);
        // The first census at or past the 4000th thread ended.
        assert!(matches!(e.growth, Growth::Stopped { by: 4096.0, .. }), "{e:?}");
    }

    #[test]
    fn one_step_anywhere_is_not_steady() {
        let at = schedule(10_000);
        for step_at in [100.0, 1500.0, 3000.0, 5000.0, 8000.0, 9500.0] {
            let v: Vec<f64> = at.iter().map(|&t| if t >= step_at { 50.0 } else { 0.0 }).collect();
            let e = judge(&at, &v);
            assert!(!matches!(e.growth, Growth::Steady), "step at {step_at}: {e:?}");
        }
    }

    #[test]
    fn a_leak_that_starts_late_is_seen_once_the_run_holds_enough_of_it_and_one_that_stops_is_not() {
        // Begun half-way through a run of 10,000 threads: the five censuses of its second half are too few to
        // tell it from a step, and it is still moving at the end.
        let at = schedule(10_000);
        let late: Vec<f64> = at.iter().map(|&t| (t - 5000.0).max(0.0)).collect();
        assert_eq!(judge(&at, &late).growth, Growth::Moving);
        // Twice as long a run, the second half of which leaks: that half shows it.
        let at = schedule(20_000);
        let late: Vec<f64> = at.iter().map(|&t| (t - 10_000.0).max(0.0)).collect();
        assert_eq!(judge(&at, &late).growth, Growth::Steady);
        let early: Vec<f64> = at.iter().map(|&t| t.min(10_000.0)).collect();
        assert!(matches!(judge(&at, &early).growth, Growth::Stopped { .. }));
    }

    #[test]
    fn a_heap_collected_now_and_then_does_not_keep_growing() {
        // Node.js's joined workers: mappings of a heap that grows and is collected (a run kept by
        // `ci/runtimes.sh --keep`; the collection falls inside both windows).
        let at = [
            16.0, 32.0, 48.0, 64.0, 80.0, 96.0, 112.0, 128.0, 160.0, 192.0, 224.0, 256.0, 320.0, 384.0, 448.0, 512.0,
            640.0, 768.0, 896.0, 1024.0, 1280.0, 1536.0, 1792.0,
        ];
        let maps = [
            90.0, 92.0, 92.0, 92.0, 92.0, 93.0, 101.0, 101.0, 101.0, 101.0, 102.0, 105.0, 105.0, 106.0, 123.0, 123.0,
            126.0, 94.0, 103.0, 106.0, 125.0, 132.0, 165.0,
        ];
        let e = judge(&at, &maps);
        assert!(!matches!(e.growth, Growth::Steady), "{e:?}");
    }

    /// Noise with no trend at all (each census drawn on its own, uniformly, from a few items up and down)
    /// keeps growing or falling by chance about once in 5,000 series: what makes a false leak, measured on
    /// 4,000 series at each of six run lengths and three sizes of noise (a fixed seed: the count is exact).
    #[test]
    fn noise_without_a_trend_rarely_keeps_growing() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut draw = |amplitude: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % (2 * amplitude + 1)) as f64
        };
        let mut false_leaks = 0;
        let series = 4000;
        for threads in [300, 1000, 2000, 5000, 10_000, 30_000] {
            let at = schedule(threads);
            for amplitude in [1, 3, 20] {
                for _ in 0..series {
                    let v: Vec<f64> = at.iter().map(|_| draw(amplitude)).collect();
                    false_leaks += usize::from(matches!(judge(&at, &v).growth, Growth::Steady | Growth::Falling));
                }
            }
        }
        assert!(false_leaks <= 18 * series / 5000, "{false_leaks} of {}", 18 * series);
    }

    #[test]
    fn the_slope_is_the_median_slope_and_shrugs_off_one_census_of_threads_in_flight() {
        let x: Vec<f64> = (1..=10).map(|k| 16.0 * f64::from(k)).collect();
        let exact: Vec<f64> = x.iter().map(|t| 3.0 + t).collect();
        assert_eq!(theil_sen(&x, &exact), 1.0);
        let mut bumped = exact.clone();
        bumped[4] += 40.0;
        assert!((theil_sen(&x, &bumped) - 1.0).abs() < 1e-9);
        assert_eq!(theil_sen(&x, &[5.0; 10]), 0.0);
        assert_eq!(theil_sen(&x[..1], &exact[..1]), 0.0);
        let long: Vec<f64> = (1..=5000).map(f64::from).collect();
        let half: Vec<f64> = long.iter().map(|t| t / 2.0).collect();
        assert!((theil_sen(&long, &half) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_order_statistic_follows_kendall() {
        // Eight rising values: every one of the 28 pairs rises; the spread is sqrt(8·7·21/18).
        let rising: Vec<f64> = (0..8).map(f64::from).collect();
        assert!((mann_kendall(&rising) - 27.0 / (8.0f64 * 7.0 * 21.0 / 18.0).sqrt()).abs() < 1e-12);
        let falling: Vec<f64> = rising.iter().rev().copied().collect();
        assert_eq!(mann_kendall(&falling), -mann_kendall(&rising));
        assert_eq!(mann_kendall(&[3.0; 8]), 0.0);
        // A staircase of pairs: four ties of two take 4·2·1·9/18 from the variance, and 4 pairs from S.
        let stairs = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        assert!((mann_kendall(&stairs) - 23.0 / (8.0f64 * 7.0 * 21.0 / 18.0 - 4.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_steady_fall_is_falling() {
        let at = schedule(5000);
        let v: Vec<f64> = at.iter().map(|&t| 1000.0 - (t / 50.0).floor()).collect();
        assert_eq!(judge(&at, &v).growth, Growth::Falling);
    }

    proptest! {
        #[test]
        fn whole_items_left_steadily_keep_growing_and_more_of_them_never_hide_it(
            (threads, every) in (2000u64..60_000).prop_flat_map(|threads| {
                // Four items in each third of the window at least (the window is the last five sixths).
                let most = ((threads - 16) * 5 / 18 / 4).max(1);
                (Just(threads), 1..=most)
            }),
            base in -1000i64..1000,
            extra in 1u64..4,
        ) {
            let at = schedule(threads);
            let v: Vec<f64> = staircase(&at, every).iter().map(|s| s + base as f64).collect();
            prop_assert_eq!(judge(&at, &v).growth, Growth::Steady);
            let longer = schedule(threads * (1 + extra));
            let v: Vec<f64> = staircase(&longer, every).iter().map(|s| s + base as f64).collect();
            prop_assert_eq!(judge(&longer, &v).growth, Growth::Steady);
        }

        #[test]
        fn adding_a_constant_changes_nothing(
            threads in 200u64..20_000,
            every in 1u64..500,
            shift in -100_000i64..100_000,
        ) {
            let at = schedule(threads);
            let v = staircase(&at, every);
            let shifted: Vec<f64> = v.iter().map(|x| x + shift as f64).collect();
            let (a, b) = (judge(&at, &v), judge(&at, &shifted));
            prop_assert_eq!(a.growth == Growth::Steady, b.growth == Growth::Steady);
            prop_assert!((a.rate - b.rate).abs() < 1e-9 && (a.band - b.band).abs() < 1e-6);
        }
    }
}
