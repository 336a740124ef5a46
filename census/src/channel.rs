//! The channel `threadleak exec`'s probe writes to: a file the runner creates in the run's private
//! folder, which the probe maps shared as it loads and whose descriptor it closes at once. So the program
//! never holds a descriptor of the probe's (a program that closes every descriptor above 2, `dup2`s its log
//! onto 3, or runs with `RLIMIT_NOFILE` at 4 sees its own table only), and a process forked without `exec`
//! writes to the same mapping.
//!
//! Layout (native-endian: the probe and the runner are one build on one machine): a [`Header`] of 64
//! bytes, then lines of JSON, each appended by reserving its bytes with one atomic add on the header's
//! cursor and copying them in. A line that does not fit in the [`BYTES`] the file holds is not written
//! but counted (`dropped`), so the runner knows that the program's later censuses were not seen. A
//! process killed between reserving and copying leaves zeros, which the reader skips.

use std::sync::atomic::{AtomicU64, Ordering};

/// The size of the file, header included: room for the censuses of more than 100,000 processes.
pub const BYTES: usize = 64 << 20;

/// Bytes before the first line.
pub const HEADER_BYTES: usize = 64;

/// Marks a channel the probe can use.
pub const MAGIC: u64 = 0x7468_7265_6164_6c6b; // "threadlk"

/// The header, at the start of the mapping.
#[repr(C, align(64))]
pub struct Header {
    pub magic: AtomicU64,
    /// Bytes of lines reserved so far (may pass the room there is: those lines were dropped).
    pub cursor: AtomicU64,
    /// Lines that did not fit.
    pub dropped: AtomicU64,
    /// Threads ended, in the process whose line was the first dropped, when it was dropped.
    pub dropped_at: AtomicU64,
    _reserved: [AtomicU64; 4],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_BYTES);

impl Header {
    /// Where a line of `len` bytes goes, from the start of the mapping, or `None` (counted) when it does
    /// not fit: `ended` is the writer's count of threads ended, kept for the first line dropped.
    pub fn reserve(&self, len: usize, ended: u64) -> Option<usize> {
        let at = self.cursor.fetch_add(len as u64, Ordering::AcqRel) as usize;
        if HEADER_BYTES + at + len <= BYTES {
            return Some(HEADER_BYTES + at);
        }
        if self.dropped.fetch_add(1, Ordering::AcqRel) == 0 {
            self.dropped_at.store(ended, Ordering::Release);
        }
        None
    }
}

/// What the runner reads back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The lines, as text (bytes that are not UTF-8 replaced; the zeros a killed writer left, removed).
    pub text: String,
    /// Lines that did not fit, and the count of threads ended when the first of them was dropped.
    pub dropped: u64,
    pub dropped_at: u64,
}

/// How many bytes of lines follow a channel's `header` (its first [`HEADER_BYTES`]), at most what the file
/// holds; `None` when it is not a channel.
pub fn lines_in(header: &[u8]) -> Option<u64> {
    let word = |i: usize| header.get(i * 8..i * 8 + 8).map(|b| u64::from_ne_bytes(b.try_into().expect("eight bytes")));
    (word(0)? == MAGIC).then(|| word(1).unwrap_or(0).min((BYTES - HEADER_BYTES) as u64))
}

/// Reads a channel's bytes: its header, then its lines up to the cursor. `None` when the bytes are not a
/// channel (the file was replaced, or the probe never started).
pub fn read(bytes: &[u8]) -> Option<Reading> {
    let word = |i: usize| -> Option<u64> {
        bytes.get(i * 8..i * 8 + 8).map(|b| u64::from_ne_bytes(b.try_into().expect("eight bytes")))
    };
    if word(0)? != MAGIC {
        return None;
    }
    let (cursor, dropped, dropped_at) = (word(1)?, word(2)?, word(3)?);
    let end = (HEADER_BYTES as u64).saturating_add(cursor).min(bytes.len() as u64) as usize;
    // A writer killed while copying leaves its bytes' place zero: a run of zeros ends the line it cut
    // short (which is then malformed, and said so), never glues it to the next whole line.
    let mut lines: Vec<u8> = Vec::with_capacity(end - HEADER_BYTES.min(end));
    for &b in &bytes[HEADER_BYTES.min(end)..end] {
        match b {
            0 if lines.last().is_some_and(|&l| l != b'\n') => lines.push(b'\n'),
            0 => {}
            b => lines.push(b),
        }
    }
    Some(Reading { text: String::from_utf8_lossy(&lines).into_owned(), dropped, dropped_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(header: [u64; 4], lines: &[u8]) -> Vec<u8> {
        let mut bytes: Vec<u8> = header.iter().flat_map(|w| w.to_ne_bytes()).collect();
        bytes.resize(HEADER_BYTES, 0);
        bytes.extend_from_slice(lines);
        bytes
    }

    #[test]
    fn lines_are_read_up_to_the_cursor_and_a_killed_writers_zeros_are_skipped() {
        let bytes = channel([MAGIC, 12, 0, 0], b"{\"a\":1}\n\0\0\0\n{\"never\":1}\n");
        assert_eq!(read(&bytes).unwrap().text, "{\"a\":1}\n\n");
        let cut = channel([MAGIC, 20, 0, 0], b"{\"b\"\0\0\0{\"c\":2}\n");
        assert_eq!(read(&cut).unwrap().text, "{\"b\"\n{\"c\":2}\n", "a cut line stays apart from the next");
    }

    #[test]
    fn dropped_lines_are_counted_and_a_file_that_is_not_a_channel_is_refused() {
        let bytes = channel([MAGIC, 1 << 40, 3, 5000], b"{}\n");
        let reading = read(&bytes).unwrap();
        assert_eq!((reading.text.as_str(), reading.dropped, reading.dropped_at), ("{}\n", 3, 5000));
        assert_eq!(read(&channel([7, 0, 0, 0], b"")), None);
        assert_eq!(read(b"short"), None);
    }

    #[test]
    fn a_line_that_does_not_fit_is_dropped_and_the_first_drop_remembered() {
        let header = Header {
            magic: AtomicU64::new(MAGIC),
            cursor: AtomicU64::new((BYTES - HEADER_BYTES - 10) as u64),
            dropped: AtomicU64::new(0),
            dropped_at: AtomicU64::new(0),
            _reserved: Default::default(),
        };
        assert_eq!(header.reserve(10, 1), Some(BYTES - 10));
        assert_eq!(header.reserve(1, 2), None);
        assert_eq!(header.reserve(1, 3), None);
        assert_eq!((header.dropped.load(Ordering::Relaxed), header.dropped_at.load(Ordering::Relaxed)), (2, 2));
    }
}
