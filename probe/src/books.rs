//! The probe's books on the threads it created: a fixed table, allocated with the library (no allocation
//! in the program's hot paths, bounded whatever the program does), keyed by the thread's `pthread_t`.
//!
//! Each created thread gets a slot with what a census needs to know about it: whether it still runs,
//! whether it has been detached or joined, the kernel's id for it (to wait until an ended thread is gone),
//! and the stack block its C library gave it, so that a census can set apart the stacks of threads in
//! flight (running, parked in the C library's stack cache, or ended and not yet joined) instead of
//! counting them as left behind. Slots are taken and freed under the probe's lock; a thread changes only
//! its own slot's state, atomically.
//!
//! With glibc and musl, a `pthread_t` is the address of the thread's control block, at the top of its
//! stack block; a stack reused from the cache gives the next thread the same `pthread_t`, which replaces
//! the old slot.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};

/// Threads the books can follow at once (running, parked or unjoined). Past it, new threads are counted
/// but not followed, and the census says so.
pub const CAPACITY: usize = 1 << 16;

/// The hash index has twice as many entries as slots, so probes stay short.
const INDEX: usize = CAPACITY * 2;

/// The slot is taken.
pub const USED: u32 = 1;
/// The thread ran its exit hook (the probe's thread-specific-data destructor).
pub const ENDED: u32 = 1 << 1;
/// Created detached, or detached since: its stack goes back to the C library when it ends.
pub const DETACHED: u32 = 1 << 2;
/// Joined: its stack went back to the C library.
pub const JOINED: u32 = 1 << 3;
/// Ended and seen gone from the kernel's list of the process's threads.
pub const GONE: u32 = 1 << 4;
/// The program gave the thread a stack of its own: never set apart.
pub const OWN_STACK: u32 = 1 << 5;

pub struct Slot {
    /// The thread's `pthread_t`, 0 until `pthread_create` has returned it.
    tcb: AtomicUsize,
    /// The smallest stack block (stack and guard) the C library gave the thread, 0 when unknown.
    block: AtomicUsize,
    /// The kernel's id for the thread (Linux: its tid; macOS: its port name), 0 until it has started.
    id: AtomicI64,
    state: AtomicU32,
    /// Where it was created: a site's index plus one ([`crate::sites`]), 0 when none was recorded.
    site: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            tcb: AtomicUsize::new(0),
            block: AtomicUsize::new(0),
            id: AtomicI64::new(0),
            state: AtomicU32::new(0),
            site: AtomicU32::new(0),
        }
    }

    pub fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    /// Sets `bits`; returns the state before.
    pub fn mark(&self, bits: u32) -> u32 {
        self.state.fetch_or(bits, Ordering::AcqRel)
    }

    pub fn tcb(&self) -> usize {
        self.tcb.load(Ordering::Acquire)
    }

    pub fn block(&self) -> usize {
        self.block.load(Ordering::Relaxed)
    }

    pub fn id(&self) -> i64 {
        self.id.load(Ordering::Acquire)
    }

    pub fn set_id(&self, id: i64) {
        self.id.store(id, Ordering::Release);
    }

    /// Where the thread was created: a site's index plus one, 0 when none was recorded.
    pub fn site(&self) -> u32 {
        self.site.load(Ordering::Relaxed)
    }
}

/// The table. Every method that takes or frees a slot, or reads the index, needs the probe's lock.
pub struct Books {
    slots: [Slot; CAPACITY],
    /// Open addressing, linear probing: slot index + 1, or 0 for an empty entry.
    index: [AtomicU32; INDEX],
    /// Where the search for a free slot starts.
    cursor: AtomicUsize,
    /// One past the highest slot ever taken: scans stop there.
    high: AtomicUsize,
    /// Threads that found the table full.
    pub overflowed: AtomicUsize,
}

pub static BOOKS: Books = Books {
    slots: [const { Slot::new() }; CAPACITY],
    index: [const { AtomicU32::new(0) }; INDEX],
    cursor: AtomicUsize::new(0),
    high: AtomicUsize::new(0),
    overflowed: AtomicUsize::new(0),
};

fn home(tcb: usize) -> usize {
    // Control blocks are at least 64-byte aligned: the low bits carry nothing.
    ((tcb >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % INDEX
}

impl Books {
    pub fn slot(&self, index: usize) -> &Slot {
        &self.slots[index]
    }

    /// Takes a free slot for a thread about to be created at `site` (a site's index plus one, or 0);
    /// `None` when the table is full.
    pub fn take(&self, block: usize, bits: u32, site: u32) -> Option<usize> {
        let start = self.cursor.load(Ordering::Relaxed);
        for k in 0..CAPACITY {
            let i = (start + k) % CAPACITY;
            let slot = &self.slots[i];
            if slot.state.load(Ordering::Acquire) == 0 {
                slot.tcb.store(0, Ordering::Relaxed);
                slot.id.store(0, Ordering::Relaxed);
                slot.block.store(block, Ordering::Relaxed);
                slot.site.store(site, Ordering::Relaxed);
                slot.state.store(USED | bits, Ordering::Release);
                self.cursor.store((i + 1) % CAPACITY, Ordering::Relaxed);
                self.high.fetch_max(i + 1, Ordering::Relaxed);
                return Some(i);
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Gives the slot of a thread that was created its `pthread_t`. A slot already holding that
    /// `pthread_t` belongs to a thread whose stack block has been handed to this one: it is freed.
    pub fn name(&self, slot: usize, tcb: usize) {
        if tcb == 0 {
            return;
        }
        if let Some(old) = self.find(tcb) {
            self.free(old);
        }
        self.slots[slot].tcb.store(tcb, Ordering::Release);
        let mut i = home(tcb);
        while self.index[i].load(Ordering::Relaxed) != 0 {
            i = (i + 1) % INDEX;
        }
        self.index[i].store(slot as u32 + 1, Ordering::Relaxed);
    }

    /// The slot of the thread whose `pthread_t` is `tcb`.
    pub fn find(&self, tcb: usize) -> Option<usize> {
        if tcb == 0 {
            return None;
        }
        let mut i = home(tcb);
        loop {
            match self.index[i].load(Ordering::Relaxed) {
                0 => return None,
                e => {
                    let slot = e as usize - 1;
                    if self.slots[slot].tcb.load(Ordering::Acquire) == tcb {
                        return Some(slot);
                    }
                }
            }
            i = (i + 1) % INDEX;
        }
    }

    /// Frees a slot, removing it from the index (backward-shift deletion keeps every probe sequence
    /// unbroken).
    pub fn free(&self, slot: usize) {
        let tcb = self.slots[slot].tcb.load(Ordering::Acquire);
        if tcb != 0 {
            if let Some(mut hole) = self.entry_of(slot, tcb) {
                self.index[hole].store(0, Ordering::Relaxed);
                let mut i = (hole + 1) % INDEX;
                loop {
                    let e = self.index[i].load(Ordering::Relaxed);
                    if e == 0 {
                        break;
                    }
                    let h = home(self.slots[e as usize - 1].tcb.load(Ordering::Acquire));
                    // Move the entry back into the hole unless its home lies cyclically in (hole, i].
                    let stays = if hole <= i { hole < h && h <= i } else { hole < h || h <= i };
                    if !stays {
                        self.index[hole].store(e, Ordering::Relaxed);
                        self.index[i].store(0, Ordering::Relaxed);
                        hole = i;
                    }
                    i = (i + 1) % INDEX;
                }
            }
        }
        let s = &self.slots[slot];
        s.tcb.store(0, Ordering::Relaxed);
        s.state.store(0, Ordering::Release);
    }

    fn entry_of(&self, slot: usize, tcb: usize) -> Option<usize> {
        let mut i = home(tcb);
        loop {
            match self.index[i].load(Ordering::Relaxed) {
                0 => return None,
                e if e as usize - 1 == slot => return Some(i),
                _ => i = (i + 1) % INDEX,
            }
        }
    }

    /// Every slot in use, with its index.
    pub fn used(&self) -> impl Iterator<Item = (usize, &Slot)> {
        let high = self.high.load(Ordering::Relaxed);
        self.slots[..high].iter().enumerate().filter(|(_, s)| s.state() & USED != 0)
    }

    /// Forgets every thread: in a forked child, the parent's threads are gone. Their stacks stay in the
    /// child's copy of the C library's cache, so each one that has a `pthread_t` stays in the books as
    /// ended and detached: parked until the C library reuses or frees it. `keep` (the forking thread's
    /// slot, now the child's main thread) is freed.
    pub fn after_fork(&self, keep: Option<usize>) {
        let high = self.high.load(Ordering::Relaxed);
        for (i, slot) in self.slots[..high].iter().enumerate() {
            let state = slot.state();
            if state & USED == 0 {
                continue;
            }
            if Some(i) == keep || slot.tcb() == 0 {
                self.free(i);
            } else {
                slot.state.store(state | ENDED | DETACHED | GONE, Ordering::Release);
            }
        }
    }
}

/// Whether a thread in this state is ended and its stack no longer the program's: back in the C
/// library's hands (detached or joined).
pub fn parked(state: u32) -> bool {
    state & ENDED != 0 && state & (DETACHED | JOINED) != 0
}

/// Whether a thread in this state ended joinable and has not been joined (yet): its stack stays mapped
/// until it is.
pub fn unjoined(state: u32) -> bool {
    state & ENDED != 0 && state & (DETACHED | JOINED) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The books are one static table: the tests share it, one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn clear() {
        for i in 0..CAPACITY {
            if BOOKS.slot(i).state() != 0 {
                BOOKS.free(i);
            }
        }
    }

    #[test]
    fn slots_are_found_by_their_pthread_t_and_freed() {
        let _serial = SERIAL.lock().unwrap();
        clear();
        let tcbs: Vec<usize> = (1..=5000).map(|k| 0x7f00_0000_0000 + k * 0x80_1000).collect();
        let slots: Vec<usize> = tcbs
            .iter()
            .map(|&t| {
                let s = BOOKS.take(8 << 20, 0, 0).unwrap();
                BOOKS.name(s, t);
                s
            })
            .collect();
        for (t, s) in tcbs.iter().zip(&slots) {
            assert_eq!(BOOKS.find(*t), Some(*s));
        }
        // Free every other one: the rest must still be found (backward shift keeps probe chains whole).
        for s in slots.iter().step_by(2) {
            BOOKS.free(*s);
        }
        for (k, (t, s)) in tcbs.iter().zip(&slots).enumerate() {
            assert_eq!(BOOKS.find(*t), if k % 2 == 0 { None } else { Some(*s) });
        }
        clear();
    }

    #[test]
    fn a_reused_stack_block_replaces_the_old_thread() {
        let _serial = SERIAL.lock().unwrap();
        clear();
        let first = BOOKS.take(1 << 20, DETACHED, 0).unwrap();
        BOOKS.name(first, 0x7f12_3456_7000);
        BOOKS.slot(first).mark(ENDED);
        let second = BOOKS.take(1 << 20, 0, 0).unwrap();
        BOOKS.name(second, 0x7f12_3456_7000);
        assert_eq!(BOOKS.find(0x7f12_3456_7000), Some(second));
        assert_eq!(BOOKS.slot(first).state(), 0);
        assert_eq!(BOOKS.used().count(), 1);
        clear();
    }

    #[test]
    fn after_a_fork_the_parents_threads_are_parked() {
        let _serial = SERIAL.lock().unwrap();
        clear();
        let running = BOOKS.take(1 << 20, 0, 0).unwrap();
        BOOKS.name(running, 0x7f00_0010_0000);
        let forking = BOOKS.take(1 << 20, 0, 0).unwrap();
        BOOKS.name(forking, 0x7f00_0020_0000);
        BOOKS.after_fork(Some(forking));
        assert!(parked(BOOKS.slot(running).state()));
        assert_eq!(BOOKS.find(0x7f00_0020_0000), None);
        clear();
    }

    #[test]
    fn states_read_as_parked_or_unjoined() {
        assert!(parked(USED | ENDED | DETACHED));
        assert!(parked(USED | ENDED | JOINED));
        assert!(!parked(USED | DETACHED));
        assert!(unjoined(USED | ENDED));
        assert!(!unjoined(USED));
    }
}
