//! The counts file `threadleak exec` shares with its probe: one 64-byte slot per process that loaded the
//! probe (or was forked from one that did), claimed by pid, holding the running counts of threads
//! created and ended. The probe maps the file shared and updates its slot as threads start and end, so
//! the counts are right however the process ends (`_exit`, a signal, running out of descriptors), with or
//! without a census.
//!
//! The layout is this crate's `ProcessCounts`, native-endian: the probe and the runner are one build on
//! one machine.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes per slot.
pub const SLOT_BYTES: usize = 64;

/// Slots in the file the runner creates: processes beyond that are counted in no slot.
pub const SLOTS: usize = 4096;

/// The process loaded the probe as it started (an `exec`).
pub const ORIGIN_EXEC: u32 = 1;
/// The process was forked from one that had the probe, without `exec`.
pub const ORIGIN_FORK: u32 = 2;

/// One process's slot.
#[repr(C, align(64))]
pub struct ProcessCounts {
    /// The process, 0 while the slot is free.
    pub pid: AtomicU32,
    pub parent: AtomicU32,
    /// [`ORIGIN_EXEC`] or [`ORIGIN_FORK`].
    pub origin: AtomicU32,
    _reserved: AtomicU32,
    /// Threads created through `pthread_create`.
    pub created: AtomicU64,
    /// Of those, threads that have ended.
    pub ended: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<ProcessCounts>() == SLOT_BYTES);

impl ProcessCounts {
    pub const fn new() -> ProcessCounts {
        ProcessCounts {
            pid: AtomicU32::new(0),
            parent: AtomicU32::new(0),
            origin: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            created: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }

    /// Claims the slot for `pid` if it is free.
    pub fn claim(&self, pid: u32, parent: u32, origin: u32) -> bool {
        if self.pid.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        self.fill(parent, origin);
        true
    }

    /// Makes the slot `pid`'s, whatever it held.
    pub fn reset(&self, pid: u32, parent: u32, origin: u32) {
        self.pid.store(pid, Ordering::Release);
        self.fill(parent, origin);
    }

    fn fill(&self, parent: u32, origin: u32) {
        self.parent.store(parent, Ordering::Relaxed);
        self.origin.store(origin, Ordering::Relaxed);
        self.created.store(0, Ordering::Relaxed);
        self.ended.store(0, Ordering::Release);
    }
}

impl Default for ProcessCounts {
    fn default() -> ProcessCounts {
        ProcessCounts::new()
    }
}

/// A process's counts, as the runner reads them from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub pid: u32,
    pub parent: u32,
    pub origin: u32,
    pub created: u64,
    pub ended: u64,
}

/// Reads every claimed slot of the counts file's bytes (a short last slot is ignored).
pub fn read(bytes: &[u8]) -> Vec<Counts> {
    let u32_at = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    bytes
        .chunks_exact(SLOT_BYTES)
        .map(|s| Counts {
            pid: u32_at(s, 0),
            parent: u32_at(s, 4),
            origin: u32_at(s, 8),
            created: u64_at(s, 16),
            ended: u64_at(s, 24),
        })
        .filter(|c| c.pid != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_read_back_as_written() {
        let slots: Vec<ProcessCounts> = (0..3).map(|_| ProcessCounts::new()).collect();
        assert!(slots[0].claim(100, 1, ORIGIN_EXEC));
        assert!(!slots[0].claim(101, 1, ORIGIN_EXEC));
        assert!(slots[2].claim(102, 100, ORIGIN_FORK));
        slots[0].created.store(7, Ordering::Relaxed);
        slots[0].ended.store(5, Ordering::Relaxed);
        // The bytes of the slots, field by field, as the probe's mapping holds them.
        let mut bytes = vec![0u8; SLOT_BYTES * 3];
        for (i, s) in slots.iter().enumerate() {
            let b = &mut bytes[i * SLOT_BYTES..];
            b[0..4].copy_from_slice(&s.pid.load(Ordering::Relaxed).to_ne_bytes());
            b[4..8].copy_from_slice(&s.parent.load(Ordering::Relaxed).to_ne_bytes());
            b[8..12].copy_from_slice(&s.origin.load(Ordering::Relaxed).to_ne_bytes());
            b[16..24].copy_from_slice(&s.created.load(Ordering::Relaxed).to_ne_bytes());
            b[24..32].copy_from_slice(&s.ended.load(Ordering::Relaxed).to_ne_bytes());
        }
        let read = read(&bytes);
        assert_eq!(
            read,
            [
                Counts { pid: 100, parent: 1, origin: ORIGIN_EXEC, created: 7, ended: 5 },
                Counts { pid: 102, parent: 100, origin: ORIGIN_FORK, created: 0, ended: 0 },
            ]
        );
    }

    #[test]
    fn the_layout_matches_the_offsets_read() {
        assert_eq!(std::mem::offset_of!(ProcessCounts, pid), 0);
        assert_eq!(std::mem::offset_of!(ProcessCounts, parent), 4);
        assert_eq!(std::mem::offset_of!(ProcessCounts, origin), 8);
        assert_eq!(std::mem::offset_of!(ProcessCounts, created), 16);
        assert_eq!(std::mem::offset_of!(ProcessCounts, ended), 24);
    }
}
