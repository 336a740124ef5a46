//! The analysis's tests: `analyse` on the matrix's checkpoints, `estimate` on a program's censuses, and
//! the property tests of the invariants their docs state.

use super::*;
use proptest::prelude::*;

/// The estimate with memory deciding nothing, as `exec` and `check` judge by default.
fn estimate(checkpoints: &[Checkpoint]) -> Result<Estimate, AnalysisError> {
    super::estimate(checkpoints, Judging::default())
}

fn checkpoints(cycles: &[u32], series: &[(&str, &[i64])]) -> Vec<Checkpoint> {
    cycles
        .iter()
        .enumerate()
        .map(|(i, &cycle)| Checkpoint {
            cycle,
            counters: Counters(series.iter().map(|(n, v)| ((*n).to_owned(), v[i])).collect()),
            live: None,
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
    let cps = checkpoints(&[0, 500, 1000], &[("vm_kib", &[1000, 9196, 9196])]);
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
fn what_threads_in_flight_hold_is_set_apart() {
    // SBCL keeps a few ended threads unjoined for a while, each holding 6 mappings beyond its stack.
    let cycles: Vec<u32> = [17, 33, 66, 130, 258, 513, 1001, 2003, 3001, 4002, 5001, 6001].to_vec();
    let unjoined = [1, 2, 3, 3, 4, 3, 2, 3, 3, 2, 8, 3];
    let maps: Vec<i64> = unjoined.iter().map(|u| 91 + 6 * u).collect();
    let e = estimate(&checkpoints(&cycles, &[("maps", &maps), ("unjoined", &unjoined)])).unwrap();
    assert_eq!(e.verdict, Verdict::Clean, "{:?}", e.notes);
    assert_eq!(e.in_flight, [("maps".to_owned(), "unjoined".to_owned(), 6.0)]);
    // Batches joined after the censuses caught them half-way: what stays unjoined is nothing.
    let batch = [0, 40, 0, 63, 12, 0, 63, 0, 0, 30, 0, 0];
    let e = estimate(&checkpoints(&cycles, &[("maps", &[40; 12]), ("unjoined", &batch)])).unwrap();
    assert_eq!(e.verdict, Verdict::Clean, "{:?}", e.notes);
    // Threads that are never joined: `unjoined` itself grows, one per thread.
    let unjoined: Vec<i64> = cycles.iter().map(|&c| i64::from(c)).collect();
    let e = estimate(&checkpoints(&cycles, &[("maps", &[40; 12]), ("unjoined", &unjoined)])).unwrap();
    assert_eq!((e.verdict, e.per_thread.get("unjoined")), (Verdict::Leak, Some(1.0)));
}

#[test]
fn what_threads_hold_while_running_and_until_joined_is_set_apart_as_one() {
    // SBCL: a thread's memory (6 mappings) is held while it runs and until it is joined; both counts
    // move at almost every census.
    let cycles: Vec<u32> = [27, 46, 75, 134, 270, 518, 1003, 2010, 3001, 4004, 5003, 6008, 7009].to_vec();
    let live = [1u64, 1, 1, 1, 1, 1, 1, 5, 1, 3, 10, 7, 1];
    let unjoined = [13i64, 12, 1, 2, 2, 2, 12, 1, 11, 1, 2, 1, 3];
    let maps: Vec<i64> = live.iter().zip(&unjoined).map(|(&l, &u)| 87 + 6 * (l as i64 + u)).collect();
    let mut cps = checkpoints(&cycles, &[("maps", &maps), ("unjoined", &unjoined)]);
    for (cp, l) in cps.iter_mut().zip(live) {
        cp.live = Some(l);
    }
    let e = estimate(&cps).unwrap();
    assert_eq!(e.verdict, Verdict::Clean, "{:?}", e.notes);
    assert_eq!(e.in_flight, [("maps".to_owned(), "in flight".to_owned(), 6.0)]);
}

#[test]
fn a_pool_that_grew_while_its_threads_were_busy_is_set_apart_and_one_that_keeps_growing_is_a_leak() {
    // A check's 9 censuses over 1,000 calls on a loaded machine: the pool the calls use grew by 8 and
    // by 12 threads (its threads were all busy), each with 2 mappings, and its threads stay idle.
    let cycles: Vec<u32> = (0..=8).map(|i| 125 * i).collect();
    let threads = [6i64, 6, 6, 14, 14, 26, 26, 26, 26];
    let maps: Vec<i64> = threads.iter().map(|t| 50 + 2 * t).collect();
    let counted = checkpoints(&cycles, &[("maps", &maps), ("tasks", &threads)]);
    let e = estimate(&counted).unwrap();
    assert_eq!(e.verdict, Verdict::Inconclusive, "without the threads counted, maps move unexplained");
    let mut cps = counted.clone();
    for (cp, &t) in cps.iter_mut().zip(&threads) {
        cp.live = Some(t as u64);
    }
    let e = estimate(&cps).unwrap();
    assert_eq!(e.verdict, Verdict::Clean, "{:?}", e.notes);
    assert_eq!(e.in_flight, [("maps".to_owned(), "live".to_owned(), 2.0)]);
    // A pool that never stops growing, a thread per 25 calls: the threads pile up, and what they
    // hold is counted with them.
    let threads: Vec<i64> = cycles.iter().map(|&c| 6 + i64::from(c) / 25).collect();
    let maps: Vec<i64> = threads.iter().map(|t| 50 + 2 * t).collect();
    let mut cps = checkpoints(&cycles, &[("maps", &maps), ("tasks", &threads)]);
    for (cp, &t) in cps.iter_mut().zip(&threads) {
        cp.live = Some(t as u64);
    }
    let e = estimate(&cps).unwrap();
    assert_eq!((e.verdict, e.per_thread.get("maps")), (Verdict::Leak, Some(0.08)), "{:?}", e.notes);
    assert!(e.notes.iter().any(|n| n.starts_with("threads that never end keep piling up")), "{:?}", e.notes);
}

#[test]
fn what_threads_in_flight_hold_is_not_guessed_when_they_fall_as_threads_end() {
    // All threads created first, then joined: every census has as many running as are yet to end.
    let cycles: Vec<u32> = [16, 32, 64, 128, 256, 512, 900].to_vec();
    let mut cps =
        checkpoints(&cycles, &[("maps", &cycles.iter().map(|&c| 100 + 6 * (1000 - i64::from(c))).collect::<Vec<_>>())]);
    for (cp, &c) in cps.iter_mut().zip(&cycles) {
        cp.live = Some(1000 - u64::from(c));
    }
    let e = estimate(&cps).unwrap();
    assert_eq!(e.verdict, Verdict::Inconclusive);
    assert!(e.notes[0].contains("cannot be told from what ended threads left"), "{:?}", e.notes);
    // Threads never joined, each holding 6 mappings: `unjoined` grows for sure, so it is a leak.
    let unjoined: Vec<i64> = cycles.iter().map(|&c| i64::from(c)).collect();
    let maps: Vec<i64> = unjoined.iter().map(|u| 100 + 6 * u).collect();
    let e = estimate(&checkpoints(&cycles, &[("maps", &maps), ("unjoined", &unjoined)])).unwrap();
    assert_eq!(e.verdict, Verdict::Leak);
}

#[test]
fn memory_alone_decides_nothing_unless_it_counts() {
    let cycles: Vec<u32> = [16, 32, 64, 128, 256, 512, 1000, 2000].to_vec();
    let vm: Vec<i64> = cycles.iter().map(|&c| 10 * i64::from(c)).collect();
    let cps = checkpoints(&cycles, &[("maps", &[50; 8]), ("vm_kib", &vm)]);
    let e = estimate(&cps).unwrap();
    assert_eq!(e.verdict, Verdict::Clean);
    assert!(
        e.notes[0].starts_with(
            "vm_kib grew by +10.00 per thread ended over the middle two thirds of the run: memory (a heap, an \
             arena, garbage not yet collected) decides nothing unless asked to"
        ),
        "{:?}",
        e.notes
    );
    // Counted, it is a leak.
    let e = super::estimate(&cps, Judging { memory: true }).unwrap();
    assert_eq!(e.verdict, Verdict::Leak, "{:?}", e.notes);
    // With the mappings it corroborates, it is a leak.
    let maps: Vec<i64> = cycles.iter().map(|&c| i64::from(c)).collect();
    let e = estimate(&checkpoints(&cycles, &[("maps", &maps), ("vm_kib", &vm)])).unwrap();
    assert_eq!(e.verdict, Verdict::Leak);
    // A one-off step in memory, in a stretch of a third of the run, withholds nothing.
    let vm = [900, 900, 900, 900, 900, 900, 900, -7300, -7300];
    let cycles9 = [16, 32, 64, 128, 256, 512, 1000, 2000, 3000];
    let e = estimate(&checkpoints(&cycles9, &[("maps", &[50; 9]), ("vm_kib", &vm)])).unwrap();
    assert_eq!(e.verdict, Verdict::Clean, "{:?}", e.notes);
    // Below a tenth of a page per thread, it does not move at all.
    let vm: Vec<i64> = cycles.iter().map(|&c| i64::from(c) / 3).collect();
    assert_eq!(estimate(&checkpoints(&cycles, &[("vm_kib", &vm)])).unwrap().verdict, Verdict::Clean);
}

/// The threads ended at each census of a run of Node.js's 2,000 workers (`exec`'s schedule).
const NODE_CENSUSES: [u32; 23] =
    [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792];

#[test]
fn memory_that_grows_in_about_half_the_stretches_counts_whichever_half() {
    // A heap that grows a 256 KiB page every so often (Node.js's workers, joined one by one): the share
    // of stretches that grow sits near one half, so their median falls on either side of the threshold
    // from run to run; the steady rate over the middle of the run does not.
    let cycles: Vec<u32> = NODE_CENSUSES.to_vec();
    let mut medians = Vec::new();
    for phase in 0..4usize {
        let mut vm = Vec::with_capacity(cycles.len());
        let mut heap = 625_000i64;
        for (i, _) in cycles.iter().enumerate() {
            // A page in every other stretch, shifted by the phase; two in some.
            if (i + phase) % 2 == 0 {
                heap += 256 * (1 + (i as i64 + phase as i64) % 3 / 2);
            }
            vm.push(heap);
        }
        let cps = checkpoints(&cycles, &[("maps", &[90; 23]), ("vm_kib", &vm)]);
        let e = estimate(&cps).unwrap();
        assert_eq!(e.verdict, Verdict::Clean, "phase {phase}: {:?} {:?}", e.per_thread, e.notes);
        assert!(e.notes[0].contains("over the middle two thirds"), "phase {phase}: {:?}", e.notes);
        let counted = super::estimate(&cps, Judging { memory: true }).unwrap();
        assert_eq!(counted.verdict, Verdict::Leak, "phase {phase}: {:?}", counted.notes);
        medians.push(e.per_thread.get("vm_kib").unwrap());
    }
    // The case it is made for: the typical stretch's rate is below the threshold in some phases and
    // above it in others.
    let threshold = RATE_THRESHOLD * unit("vm_kib");
    assert!(medians.iter().any(|&m| m <= threshold) && medians.iter().any(|&m| m > threshold), "{medians:?}");
    // The steady rate leaves out the stretch that moved most: exact on a straight line, and nothing for
    // one step.
    let at = [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0];
    assert_eq!(steady_rate(&at, &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0]), 2.0);
    assert_eq!(steady_rate(&at, &[0.0, 0.0, 0.0, 5000.0, 5000.0, 5000.0, 5000.0]), 0.0);
    // glibc's timer helper threads, whose 8 MiB stacks no probe sees, made and freed at random under
    // load: memory that goes up and down again, whichever stretches it happens in.
    let cycles = [
        16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536,
        1792, 2048, 2560,
    ];
    let two_steps: Vec<i64> = cycles.iter().map(|&c| if (448..2560).contains(&c) { 15_908 } else { 24_104 }).collect();
    let under_load = [
        7712, 24104, 24104, 24104, 24104, 24104, 15908, 15908, 15908, 15908, 15908, 15908, 15908, 15908, 15908, 15908,
        24104, 15908, 15908, 15908, 15908, 24104, 24104, 24104, 15908,
    ];
    for vm in [&two_steps[..], &under_load[..]] {
        let e =
            super::estimate(&checkpoints(&cycles, &[("maps", &[41; 25]), ("vm_kib", vm)]), Judging { memory: true })
                .unwrap();
        assert_eq!(e.verdict, Verdict::Clean, "{vm:?}: {:?}", e.notes);
    }
}

#[test]
fn a_heap_that_grows_by_chunks_is_memory_not_items() {
    // Node.js's joined workers (a run kept by `ci/runtimes.sh --keep`): after a collection early on, V8's
    // heap grows page by page to the end of the run, 256 KiB a mapping.
    let cycles: Vec<u32> = NODE_CENSUSES.to_vec();
    let maps =
        [90, 92, 92, 92, 92, 93, 102, 102, 102, 102, 104, 104, 105, 90, 98, 99, 107, 125, 126, 130, 166, 168, 168];
    let vm = [
        638660, 639172, 639172, 639172, 639172, 639428, 641732, 641732, 641732, 641732, 642244, 642244, 642500, 638660,
        640708, 640964, 641988, 646596, 646852, 647876, 657092, 657604, 657604,
    ];
    let cps = checkpoints(&cycles, &[("fds", &[21; 23]), ("maps", &maps), ("vm_kib", &vm)]);
    let e = estimate(&cps).unwrap();
    assert_eq!(e.verdict, Verdict::Clean, "{:?}", e.notes);
    assert!(e.notes.iter().any(|n| n.starts_with("maps moved with 256 KiB of memory a mapping")), "{:?}", e.notes);
    // Counted, memory makes it a leak.
    assert_eq!(super::estimate(&cps, Judging { memory: true }).unwrap().verdict, Verdict::Leak);
    // Mappings that bring little memory each are items: a leaked alternate signal stack and its guard
    // page (34 KiB a mapping), one thread in 40.
    let maps: Vec<i64> = cycles.iter().map(|&c| 90 + 2 * i64::from(c / 40)).collect();
    let vm: Vec<i64> = cycles.iter().map(|&c| 638_660 + 68 * i64::from(c / 40)).collect();
    let e = estimate(&checkpoints(&cycles, &[("maps", &maps), ("vm_kib", &vm)])).unwrap();
    assert_eq!(e.verdict, Verdict::Leak, "{:?}", e.notes);
}

#[test]
fn weighted_quantiles_follow_the_weights() {
    let sorted = [(-1.0, 10.0), (0.0, 80.0), (5.0, 10.0)];
    assert_eq!(weighted_quantile(&sorted, 5.0), -1.0);
    assert_eq!(weighted_quantile(&sorted, 10.0), -0.5);
    assert_eq!(weighted_quantile(&sorted, 50.0), 0.0);
    assert_eq!(weighted_quantile(&sorted, 95.0), 5.0);
}

#[test]
fn a_program_is_judged_only_when_the_censuses_make_it_certain() {
    let cycles: Vec<u32> = [16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000, 5000].to_vec();
    // Malloc arenas appearing once, early: a step in one stretch, clean.
    let vm = [100, 100, 100, 100, 65_636, 65_636, 65_636, 65_636, 65_636, 65_636, 65_636];
    let e = estimate(&checkpoints(&cycles, &[("vm_kib", &vm)])).unwrap();
    assert_eq!((e.verdict, e.per_thread.get("vm_kib")), (Verdict::Clean, Some(0.0)));
    // A leak that starts half-way: neither clean nor, on three censuses, a steady leak.
    let fds = [5, 5, 5, 5, 5, 5, 5, 5, 1005, 2005, 3005];
    let e = estimate(&checkpoints(&cycles, &[("fds", &fds)])).unwrap();
    assert_eq!(e.verdict, Verdict::Inconclusive, "{:?}", e.notes);
    assert!(e.notes[0].starts_with("fds grew in 60 % of the run and shrank in 0 %"), "{:?}", e.notes);
    // Descriptors that go up and down by hundreds: neither a steady change nor none.
    let fds = [5, 5, 5, 5, 405, 5, 905, 5, 1005, 205, 805];
    let e = estimate(&checkpoints(&cycles, &[("fds", &fds)])).unwrap();
    assert_eq!(e.verdict, Verdict::Inconclusive);
    assert!(e.notes[0].starts_with("fds grew in 52 % of the run and shrank in 45 %"), "{:?}", e.notes);
    // Four censuses are not enough, however clean.
    let e = estimate(&checkpoints(&cycles[..4], &[("fds", &[3, 3, 3, 3])])).unwrap();
    assert_eq!(e.verdict, Verdict::Inconclusive);
    assert_eq!(
        e.notes,
        ["not judged: 4 censuses were taken before the program ended; a verdict needs at least 5 (80 threads ended)"]
    );
}

proptest! {
    #[test]
    fn the_estimate_is_exact_on_linear_data(
        set in proptest::collection::btree_set(1u32..100_000, MIN_CENSUSES..12),
        base in -1_000_000i64..1_000_000,
        rate in -70_000i64..70_000,
    ) {
        let cycles: Vec<u32> = set.into_iter().collect();
        let values: Vec<i64> = cycles.iter().map(|&c| base + rate * i64::from(c)).collect();
        let e = estimate(&checkpoints(&cycles, &[("x", &values)])).unwrap();
        prop_assert_eq!(e.per_thread.get("x"), Some(rate as f64));
        prop_assert_eq!(e.interval.get("x"), Some([rate as f64, rate as f64]));
        let expected = match rate { 0 => Verdict::Clean, r if r > 0 => Verdict::Leak, _ => Verdict::OverRelease };
        prop_assert_eq!(e.verdict, expected);
    }

    #[test]
    fn a_one_off_change_in_a_short_stretch_does_not_turn_the_verdict(
        set in proptest::collection::btree_set(1u32..100_000, MIN_CENSUSES..14),
        rate in prop_oneof![Just(-1i64), Just(0i64), Just(1i64), Just(2i64)],
        which in 0usize..14,
        jump in -10_000_000i64..10_000_000,
    ) {
        let cycles: Vec<u32> = set.into_iter().collect();
        // The step happens in stretch k, and only counts when that stretch is under a sixth of the run.
        let span = f64::from(cycles[cycles.len() - 1] - cycles[0]);
        let short: Vec<usize> =
            (0..cycles.len() - 1).filter(|&k| f64::from(cycles[k + 1] - cycles[k]) < span / 6.0).collect();
        prop_assume!(!short.is_empty());
        let k = short[which % short.len()];
        let values: Vec<i64> = cycles
            .iter()
            .enumerate()
            .map(|(i, &c)| 50 + rate * i64::from(c) + if i > k { jump } else { 0 })
            .collect();
        let e = estimate(&checkpoints(&cycles, &[("x", &values)])).unwrap();
        prop_assert_eq!(e.per_thread.get("x"), Some(rate as f64));
        let expected = match rate { 0 => Verdict::Clean, r if r > 0 => Verdict::Leak, _ => Verdict::OverRelease };
        prop_assert_eq!(e.verdict, expected);
    }

    #[test]
    fn what_threads_in_flight_hold_does_not_move_the_estimate(
        // Eight stretches at least: with fewer, a cost per thread in flight is not fitted.
        set in proptest::collection::btree_set(1u32..100_000, 9..15),
        rate in prop_oneof![Just(0i64), Just(1i64)],
        changes in proptest::collection::vec(proptest::option::weighted(0.3, 0u64..20), 14),
        cost in 1i64..10_000,
    ) {
        let cycles: Vec<u32> = set.into_iter().collect();
        // Threads running at each census: now and then a different number.
        let mut live = Vec::with_capacity(cycles.len());
        for change in changes.iter().cycle().take(cycles.len()) {
            live.push(change.unwrap_or_else(|| live.last().copied().unwrap_or(3)));
        }
        // Its cost can be told only when the count changed at all (and not in proportion to the
        // threads ended).
        prop_assume!(live.windows(2).any(|w| w[0] != w[1]));
        let fds: Vec<i64> = cycles.iter().zip(&live).map(|(&c, &l)| 10 + rate * i64::from(c) + cost * l as i64).collect();
        let mut cps = checkpoints(&cycles, &[("fds", &fds)]);
        for (cp, l) in cps.iter_mut().zip(&live) {
            cp.live = Some(*l);
        }
        let e = estimate(&cps).unwrap();
        // Threads that keep piling up are a leak of their own: what they hold is counted with them.
        let at: Vec<f64> = cycles.iter().map(|&c| f64::from(c)).collect();
        let mut staying: Vec<f64> = live.iter().map(|&l| l as f64).collect();
        for i in (0..staying.len() - 1).rev() {
            staying[i] = staying[i].min(staying[i + 1]);
        }
        if evidence::judge(&at, &staying).growth == evidence::Growth::Steady {
            prop_assert!(
                e.notes.iter().any(|n| n.starts_with("threads that never end keep piling up")),
                "{:?}", e.notes
            );
            let unadjusted = estimate(&checkpoints(&cycles, &[("fds", &fds)])).unwrap();
            prop_assert_eq!(e.per_thread.get("fds"), unadjusted.per_thread.get("fds"));
            prop_assert_eq!(e.verdict, unadjusted.verdict);
        } else {
            prop_assert_eq!(e.per_thread.get("fds"), Some(rate as f64));
            prop_assert_eq!(e.verdict, if rate == 0 { Verdict::Clean } else { Verdict::Leak });
        }
    }

    #[test]
    fn growing_by_one_per_thread_in_every_stretch_is_never_clean(
        set in proptest::collection::btree_set(1u32..100_000, 2..14),
        extra in proptest::collection::vec(0i64..1_000_000, 14),
    ) {
        let cycles: Vec<u32> = set.into_iter().collect();
        let mut values = vec![0i64];
        for (i, w) in cycles.windows(2).enumerate() {
            let last = *values.last().unwrap();
            values.push(last + i64::from(w[1] - w[0]) + extra[i]);
        }
        let e = estimate(&checkpoints(&cycles, &[("x", &values), ("flat", &vec![3; cycles.len()])])).unwrap();
        prop_assert_ne!(e.verdict, Verdict::Clean);
        if cycles.len() >= MIN_CENSUSES {
            prop_assert_eq!(e.verdict, Verdict::Leak);
        }
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
