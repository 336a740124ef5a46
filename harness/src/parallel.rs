//! Work on many independent items (records `compare` reads, sites a run judges) spread over the
//! machine's cores, its results kept in the items' order.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The address space a helper thread takes beyond this one's: its stack, and the arena the C library
/// reserves for a thread's allocations (64 MiB, 128 MiB while it is aligned), with room to spare.
const HELPER_ADDRESS_SPACE: u64 = 256 << 20;

/// `each(&mut state, index)` for the indices `0..len`, on as many threads as the machine runs at once
/// (each with a `state` of its own from `init`), returned in index order.
///
/// Once a result is `last`, no index after it is begun: what is returned is every index up to the first
/// such result, in order, and perhaps some after it that were already under way.
///
/// Helpers are started only as the process's limits allow: none beyond what an address-space limit
/// (`ulimit -v`) leaves room for, and none once the thread limit (`ulimit -u`) refuses one; with no
/// helper, everything is done on this thread.
pub fn map_in_order<S, R: Send>(
    len: usize,
    init: impl Fn() -> S + Sync,
    each: impl Fn(&mut S, usize) -> R + Sync,
    last: impl Fn(&R) -> bool + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let first_last = AtomicUsize::new(usize::MAX);
    let work = || {
        let mut state = init();
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= len || index > first_last.load(Ordering::Relaxed) {
                return done;
            }
            let result = each(&mut state, index);
            if last(&result) {
                first_last.fetch_min(index, Ordering::Relaxed);
            }
            done.push((index, result));
        }
    };
    let room = crate::backend::address_space_left().map_or(usize::MAX, |left| (left / HELPER_ADDRESS_SPACE) as usize);
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(room.saturating_add(1)).clamp(1, len.max(1));
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> =
            (1..threads).map_while(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok()).collect();
        let mut done = work();
        for helper in helpers {
            done.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        done
    });
    done.sort_unstable_by_key(|&(index, _)| index);
    done.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_their_items_whatever_thread_made_them() {
        // Each thread's state is its own buffer, reused from item to item (as `compare` reuses its text).
        let texts = map_in_order(
            10_000,
            String::new,
            |buffer, i| {
                buffer.clear();
                buffer.push_str(&i.to_string());
                buffer.clone()
            },
            |_| false,
        );
        assert_eq!(texts, (0..10_000).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn nothing_after_the_first_last_result_is_begun_and_everything_before_it_is_done() {
        let begun = AtomicUsize::new(0);
        let results = map_in_order(
            100_000,
            || (),
            |_, i| {
                begun.fetch_add(1, Ordering::Relaxed);
                if i > 10 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                i
            },
            |&i| i == 10,
        );
        assert_eq!(results[..=10], (0..=10).collect::<Vec<_>>());
        assert!(results.iter().enumerate().all(|(k, &i)| k == i));
        // What other threads had under way when 10 was found may finish, and no more is begun: a few
        // items, not the 100,000 (each after 10 takes a millisecond).
        assert!(begun.load(Ordering::Relaxed) < 1_000, "{}", begun.load(Ordering::Relaxed));
    }

    #[test]
    fn no_items_is_no_results() {
        assert!(map_in_order(0, || (), |_, i| i, |_| true).is_empty());
    }
}
