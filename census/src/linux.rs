//! Linux: a census of this process's `fds maps vm_kib timers tasks`, read from procfs without allocating
//! (the probe takes it on a thread of the program it measures, inside `pthread_create` and thread exit),
//! and the procfs readers the harness's inventory shares.
//!
//! Probes read procfs with `open`/`read`/`getdents64` into stack buffers: a probe that allocated could
//! move the heap and show up in `vm_kib` and `maps`.

use std::ffi::{c_int, CStr};
#[cfg(test)]
use std::{ffi::c_void, ptr};

use crate::CallError;
#[cfg(test)]
use crate::Code;

/// The calling thread's `errno`.
pub fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The one place that turns a `-1` return into a [`CallError`].
pub fn check(call: &'static str, ret: c_int) -> Result<c_int, CallError> {
    if ret == -1 {
        Err(CallError::errno(call, errno()))
    } else {
        Ok(ret)
    }
}

/// Closes a descriptor its caller opened and owns.
pub fn close(fd: c_int) {
    // SAFETY: the caller passes a descriptor it opened and owns, which nothing else refers to.
    unsafe { libc::close(fd) };
}

/// Reads `fds maps vm_kib timers tasks` of this process into `out`, without allocating.
pub fn census(out: &mut [i64]) -> Result<(), CallError> {
    census_setting_apart(out, &mut []).map(|_| ())
}

/// A thread stack a census may set apart: `tcb` is the thread's `pthread_t`, the address of its control
/// block at the top of its stack block (glibc `nptl/allocate_stack.c`, musl `pthread_create.c`);
/// `min_block` the stack and guard sizes its attributes asked for. The census sets `found` when it set
/// the stack apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackQuery {
    pub tcb: usize,
    pub min_block: usize,
    pub found: bool,
}

/// What a census set apart: mappings, and their size in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetApart {
    pub maps: i64,
    pub kib: i64,
}

/// Like [`census`], but the stacks of `stacks` (sorted by `tcb`) are not counted in `maps` and `vm_kib`:
/// a thread's stack block is the anonymous `rw` mapping holding its control block, with the
/// inaccessible mappings right below it (glibc's guard page, or guard zones a runtime put inside the
/// block, as HotSpot does), when together they are at least the block its attributes asked for and at
/// most four times that (glibc reuses a cached block up to four times the size asked for,
/// `nptl/nptl-stack.c`, `get_cached_stack`). A mapping that merely contains a control-block address of a
/// thread long gone (the kernel reused a freed stack's range) is smaller or larger than that and is
/// counted.
pub fn census_setting_apart(out: &mut [i64], stacks: &mut [StackQuery]) -> Result<SetApart, CallError> {
    out[0] = count_open_fds()?;
    let maps = read_maps(stacks)?;
    out[1] = maps.lines - maps.arena_lines - maps.apart.maps;
    // Malloc's heaps are left out: the brk heap grows in steps of its top pad (128 KiB) whatever the
    // cause, which would turn an exact count of mappings into a rounding artefact, and the heap of each
    // further arena appears once as threads first overlap (glibc makes up to eight per core). Heap bytes
    // are not a kernel resource of the thread (an unjoined thread's glibc DTV, 288 bytes, lives there).
    out[2] =
        status_field(c"/proc/self/status", b"VmSize:")? - (maps.heap_bytes + maps.arena_bytes) / 1024 - maps.apart.kib;
    out[3] = count_lines(c"/proc/self/timers", b"ID:")?;
    out[4] = count_dir_entries(c"/proc/self/task")?;
    Ok(maps.apart)
}

/// Whether the thread `tid` of this process is gone from the kernel. A tid is reused only after the
/// kernel has handed out every other one (`pid_max`), far more than the threads that end between two
/// censuses.
pub fn thread_gone(tid: i64) -> bool {
    let Ok(tid) = libc::pid_t::try_from(tid) else { return true };
    // SAFETY: signal 0 checks that the thread exists and sends nothing.
    let ret = unsafe { libc::tgkill(libc::getpid(), tid, 0) };
    ret == -1 && errno() == libc::ESRCH
}

/// The stack buffer each procfs probe reads through. Small, because `threadleak exec`'s probe takes its
/// census on a thread of the measured program, whose stack may be small.
const PROBE_BUFFER: usize = 4096;

/// An open procfs file, closed on drop.
struct ProcFile(c_int);

impl ProcFile {
    fn open(path: &'static CStr, flags: c_int) -> Result<ProcFile, CallError> {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_RDONLY | libc::O_CLOEXEC) };
        check("open (procfs probe)", fd).map(ProcFile)
    }

    /// Feeds the file's bytes to `f` through a stack buffer.
    fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) -> Result<(), CallError> {
        let mut buf = [0u8; PROBE_BUFFER];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return Ok(()),
                n if n < 0 => return Err(CallError::errno("read (procfs probe)", errno())),
                n => f(&buf[..n as usize]),
            }
        }
    }
}

impl Drop for ProcFile {
    fn drop(&mut self) {
        close(self.0);
    }
}

/// Entries of a procfs directory, `.` and `..` excluded, read with getdents64.
pub fn count_dir_entries(path: &'static CStr) -> Result<i64, CallError> {
    let mut count = 0i64;
    for_each_dir_entry(path, |_, _| count += 1)?;
    Ok(count)
}

/// Calls `f` with the directory's descriptor and each entry's name (NUL-terminated), `.` and `..` left out,
/// reading with getdents64 into a stack buffer.
pub fn for_each_dir_entry(path: &'static CStr, mut f: impl FnMut(c_int, &CStr)) -> Result<(), CallError> {
    let dir = ProcFile::open(path, libc::O_DIRECTORY)?;
    let mut buf = [0u8; PROBE_BUFFER];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes; the kernel fills it with linux_dirent64 records.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.0, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(CallError::errno("getdents64 (procfs probe)", errno()));
        }
        if n == 0 {
            return Ok(());
        }
        // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, name (include/linux/dirent.h).
        let mut off = 0usize;
        while off + 19 <= n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            if let Ok(name) = CStr::from_bytes_until_nul(&buf[off + 19..(off + reclen).min(n as usize)]) {
                if name != c"." && name != c".." {
                    f(dir.0, name);
                }
            }
            off += reclen;
        }
    }
}

/// How many descriptors are polled at once when counting them: 2 KiB of `pollfd` on the stack.
const POLL_CHUNK: usize = 256;

/// The descriptors this process has open, counted with `poll` ([`for_each_polled_fd`]). Listing
/// /proc/self/fd instead makes the kernel build a dentry for every descriptor: 17 ms for 19,000
/// descriptors here, against 0.7 ms; and it opens a descriptor of its own.
fn count_open_fds() -> Result<i64, CallError> {
    let mut open = 0i64;
    for_each_polled_fd(|_| open += 1)?;
    Ok(open)
}

/// Calls `f` with each descriptor this process has open that `poll` sees, in order: `poll` marks a
/// descriptor that is not open `POLLNVAL` (poll(2)), over the whole descriptor table (`FDSize` of
/// /proc/self/status), a chunk at a time and never more at once than `RLIMIT_NOFILE` allows. It takes a
/// descriptor opened with `O_PATH` for one not open (`fdget`, fs/select.c): those are not seen.
pub fn for_each_polled_fd(mut f: impl FnMut(c_int)) -> Result<(), CallError> {
    let table = usize::try_from(status_field(c"/proc/self/status", b"FDSize:")?).unwrap_or(0);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is valid for writing.
    check("getrlimit(RLIMIT_NOFILE)", unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let chunk = POLL_CHUNK.min(usize::try_from(lim.rlim_cur).unwrap_or(POLL_CHUNK)).max(1);
    let mut polled = [libc::pollfd { fd: -1, events: 0, revents: 0 }; POLL_CHUNK];
    let mut first = 0usize;
    while first < table {
        let n = chunk.min(table - first);
        for (i, p) in polled[..n].iter_mut().enumerate() {
            *p = libc::pollfd { fd: (first + i) as c_int, events: 0, revents: 0 };
        }
        // SAFETY: `polled` holds `n` initialized entries; a zero timeout returns at once.
        if unsafe { libc::poll(polled.as_mut_ptr(), n as libc::nfds_t, 0) } < 0 {
            return Err(CallError::errno("poll (counting descriptors)", errno()));
        }
        for p in &polled[..n] {
            if p.revents & libc::POLLNVAL == 0 {
                f(p.fd);
            }
        }
        first += n;
    }
    Ok(())
}

/// Lines of a procfs file that start with `prefix`.
fn count_lines(path: &'static CStr, prefix: &[u8]) -> Result<i64, CallError> {
    let file = ProcFile::open(path, 0)?;
    let mut count = 0i64;
    // How many bytes of the prefix the current line has matched, or None once it cannot match.
    let mut matched: Option<usize> = Some(0);
    file.for_each_chunk(|chunk| {
        for &b in chunk {
            if b == b'\n' {
                matched = Some(0);
            } else if let Some(m) = matched {
                matched = (b == prefix[m]).then_some(m + 1);
                if matched == Some(prefix.len()) {
                    count += 1;
                    matched = None;
                }
            }
        }
    })?;
    Ok(count)
}

/// One line of /proc/self/maps, as the census reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MapLine {
    start: usize,
    end: usize,
    /// `rw-p` or `rwxp`: what a thread stack is.
    writable: bool,
    /// `---p`: a guard.
    no_access: bool,
    /// No path: an anonymous mapping.
    anonymous: bool,
    heap: bool,
}

impl MapLine {
    /// Parses `start-end perms offset dev inode [path]` from the first bytes of a line (`head`) and its
    /// last bytes (`tail`, for `[heap]`).
    fn parse(head: &[u8], tail: &[u8]) -> MapLine {
        let mut fields = head.split(|&b| b == b' ').filter(|f| !f.is_empty());
        let range = fields.next().unwrap_or_default();
        let perms = fields.next().unwrap_or_default();
        // offset, dev, inode; then the path, if there is one.
        let anonymous = fields.nth(3).is_none();
        let (start, end) = parse_range(range).unwrap_or((0, 0));
        MapLine {
            start,
            end,
            writable: perms == b"rw-p" || perms == b"rwxp",
            no_access: perms == b"---p",
            anonymous,
            heap: tail.ends_with(b"[heap]"),
        }
    }

    fn bytes(&self) -> usize {
        self.end - self.start
    }
}

/// What /proc/self/maps says: its lines, the brk heap's size, the heaps of malloc's other arenas, and the
/// stacks set apart.
struct Maps {
    lines: i64,
    heap_bytes: i64,
    arena_lines: i64,
    arena_bytes: i64,
    apart: SetApart,
}

/// The size and alignment of the heap of each glibc malloc arena but the main one, on 64-bit machines:
/// `HEAP_MAX_SIZE`, twice `DEFAULT_MMAP_THRESHOLD_MAX` (glibc `malloc/arena.c`, `new_heap`, which maps it
/// aligned to its size, inaccessible, and opens its start `rw` as the arena grows).
const ARENA_HEAP: usize = 64 << 20;

/// Lines a stack's guard zones may take below it, and so how many earlier lines are kept.
const GUARD_LINES: usize = 4;

/// Reads /proc/self/maps through a stack buffer, setting apart the stacks of `stacks` (sorted by `tcb`).
fn read_maps(stacks: &mut [StackQuery]) -> Result<Maps, CallError> {
    let file = ProcFile::open(c"/proc/self/maps", 0)?;
    let mut maps = Maps { lines: 0, heap_bytes: 0, arena_lines: 0, arena_bytes: 0, apart: SetApart::default() };
    // Each line's start (address range, perms, offset, dev, inode and the path's first bytes) and end.
    let mut head = [0u8; 96];
    let mut head_len = 0usize;
    let mut tail = [0u8; 6];
    // The lines just before this one, most recent last, and the stacks not yet passed.
    let mut below = [MapLine::default(); GUARD_LINES];
    let mut next = 0usize;
    file.for_each_chunk(|chunk| {
        // A line's bytes in this chunk, up to its newline if the chunk holds it.
        for part in chunk.split_inclusive(|&b| b == b'\n') {
            let (text, ends) = match part.split_last() {
                Some((b'\n', text)) => (text, true),
                _ => (part, false),
            };
            let take = text.len().min(head.len() - head_len);
            head[head_len..head_len + take].copy_from_slice(&text[..take]);
            head_len += take;
            // The line's last bytes so far.
            let width = tail.len();
            if text.len() >= width {
                tail.copy_from_slice(&text[text.len() - width..]);
            } else if !text.is_empty() {
                tail.copy_within(text.len().., 0);
                tail[width - text.len()..].copy_from_slice(text);
            }
            if !ends {
                continue;
            }
            let line = MapLine::parse(&head[..head_len], &tail);
            head_len = 0;
            tail = [0; 6];
            maps.lines += 1;
            if line.heap {
                maps.heap_bytes += line.bytes() as i64;
            }
            while next < stacks.len() && stacks[next].tcb < line.start {
                next += 1;
            }
            let mut k = next;
            while k < stacks.len() && stacks[k].tcb < line.end {
                if let Some((lines, bytes)) = stack_block(&line, &below, stacks[k].min_block) {
                    // One block may hold several control blocks only if the kernel merged two stacks:
                    // set it apart once.
                    if !stacks[next..k].iter().any(|s| s.found) {
                        maps.apart.maps += lines as i64;
                        maps.apart.kib += (bytes / 1024) as i64;
                    }
                    stacks[k].found = true;
                }
                k += 1;
            }
            if let Some(lines) = arena_heap(&line, &below[GUARD_LINES - 1]) {
                maps.arena_lines += lines;
                maps.arena_bytes += ARENA_HEAP as i64;
            }
            below.copy_within(1.., 0);
            below[GUARD_LINES - 1] = line;
        }
    })?;
    Ok(maps)
}

/// Whether `line` (holding a thread's control block) and the inaccessible lines right below it make a
/// stack block of at least `min_block` bytes (and at most four times that): the lines and bytes to set
/// apart.
fn stack_block(line: &MapLine, below: &[MapLine; GUARD_LINES], min_block: usize) -> Option<(usize, usize)> {
    if !(line.writable && line.anonymous) || min_block == 0 {
        return None;
    }
    // Sizes are asked in bytes and mapped in pages: one page of slack.
    let page = 4096;
    let enough = min_block.saturating_sub(page);
    let mut lines = 1;
    let mut bytes = line.bytes();
    let mut start = line.start;
    for guard in below.iter().rev() {
        if bytes >= min_block {
            break;
        }
        if !(guard.no_access && guard.anonymous && guard.end == start && guard.end != 0) {
            break;
        }
        lines += 1;
        bytes += guard.bytes();
        start = guard.start;
    }
    (bytes >= enough && bytes <= 4 * min_block + page).then_some((lines, bytes))
}

/// Whether `line` ends a malloc arena's heap: a `rw` mapping of [`ARENA_HEAP`] bytes at an address aligned
/// to it, or a `rw` part so aligned (`before`) and the inaccessible rest (`line`), contiguous, together that
/// size. Returns the lines it takes.
fn arena_heap(line: &MapLine, before: &MapLine) -> Option<i64> {
    let aligned = |l: &MapLine| l.anonymous && l.writable && l.start % ARENA_HEAP == 0 && l.start != 0;
    if aligned(line) && line.bytes() == ARENA_HEAP {
        return Some(1);
    }
    let rest = line.no_access && line.anonymous && before.end == line.start;
    (rest && aligned(before) && line.end - before.start == ARENA_HEAP).then_some(2)
}

/// The `start-end` hex range a maps line begins with.
pub fn parse_range(range: &[u8]) -> Option<(usize, usize)> {
    let hex = |digits: &[u8]| -> Option<usize> {
        std::str::from_utf8(digits).ok().and_then(|t| usize::from_str_radix(t, 16).ok())
    };
    let dash = range.iter().position(|&b| b == b'-')?;
    let (start, end) = (hex(&range[..dash])?, hex(&range[dash + 1..])?);
    (end >= start).then_some((start, end))
}

/// The number after `field` in a `key: value kB` file such as /proc/self/status.
pub fn status_field(path: &'static CStr, field: &[u8]) -> Result<i64, CallError> {
    let file = ProcFile::open(path, 0)?;
    // /proc/self/status is about 1.5 KiB; keep it whole in a stack buffer.
    let mut text = [0u8; PROBE_BUFFER];
    let mut len = 0usize;
    file.for_each_chunk(|chunk| {
        let take = chunk.len().min(text.len() - len);
        text[len..len + take].copy_from_slice(&chunk[..take]);
        len += take;
    })?;
    let text = &text[..len];
    let missing = CallError::errno("parse /proc/self/status (field missing)", libc::ENODATA);
    let start = text.windows(field.len()).position(|w| w == field).ok_or(missing)? + field.len();
    let digits = text[start..].iter().skip_while(|b| b.is_ascii_whitespace()).take_while(|b| b.is_ascii_digit());
    let mut value = 0i64;
    let mut any = false;
    for &d in digits {
        value = value * 10 + i64::from(d - b'0');
        any = true;
    }
    if any {
        Ok(value)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_this_process() {
        assert!(count_dir_entries(c"/proc/self/task").unwrap() >= 1);
        assert!(count_dir_entries(c"/proc/self/fd").unwrap() >= 3);
        // Counted by poll: the same as listing them (less the listing's own descriptor), and one more for
        // a descriptor opened. Other tests of this process open and close theirs meanwhile, between any
        // two of these looks: a round where nothing else moved agrees exactly, and a miscount would make
        // no round agree.
        let rounds: Vec<(i64, i64, i64)> = (0..100)
            .map(|_| {
                let listed = count_dir_entries(c"/proc/self/fd").unwrap() - 1;
                let polled = count_open_fds().unwrap();
                let extra = std::fs::File::open("/dev/null").unwrap();
                let with_extra = count_open_fds().unwrap();
                drop(extra);
                (listed, polled, with_extra)
            })
            .collect();
        assert!(
            rounds.iter().any(|&(listed, polled, with_extra)| (polled, with_extra) == (listed, listed + 1)),
            "no round agreed: {rounds:?}"
        );
        let maps = read_maps(&mut []).unwrap();
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        // Test threads run beside this one and can map stacks in between; the counts stay close.
        assert!((maps.lines - text.lines().count() as i64).abs() < 50, "{} vs {}", maps.lines, text.lines().count());
        let range_len = |l: &str| parse_range(l.split(' ').next().unwrap().as_bytes()).map_or(0, |(a, b)| b - a);
        let expected: i64 = text.lines().filter(|l| l.ends_with("[heap]")).map(|l| range_len(l) as i64).sum();
        assert!((maps.heap_bytes - expected).abs() <= 1 << 20, "{} vs {expected}", maps.heap_bytes);
        assert_eq!(count_lines(c"/proc/self/status", b"VmSize:").unwrap(), 1);
        assert!(status_field(c"/proc/self/status", b"VmSize:").unwrap() > 0);
    }

    #[test]
    fn maps_lines_parse() {
        let line = MapLine::parse(b"55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0", b"00 0");
        assert_eq!(
            (line.start, line.end, line.writable, line.anonymous, line.heap),
            (0x55d0c0a00000, 0x55d0c0a21000, true, true, false)
        );
        let line = MapLine::parse(b"55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0      [heap]", b"[heap]");
        assert!(line.heap && !line.anonymous);
        let line = MapLine::parse(b"7f00-8f00 ---p 00000000 00:00 0", b"00 0");
        assert!(line.no_access && !line.writable);
        assert_eq!(parse_range(b"garbage"), None);
        assert_eq!(parse_range(b"ffff-0000"), None);
    }

    fn line(start: usize, end: usize, perms: &str) -> MapLine {
        MapLine { start, end, writable: perms == "rw-p", no_access: perms == "---p", anonymous: true, heap: false }
    }

    #[test]
    fn a_stack_block_is_its_rw_part_and_the_guard_below() {
        let mb = 1 << 20;
        let guard = line(0x1000_0000, 0x1000_1000, "---p");
        let stack = line(0x1000_1000, 0x1000_1000 + 8 * mb, "rw-p");
        let below = [MapLine::default(), MapLine::default(), MapLine::default(), guard];
        assert_eq!(stack_block(&stack, &below, 8 * mb + 4096), Some((2, 8 * mb + 4096)));
        // A 68 KiB mapping (an alternate signal stack and its guard) where a stack used to be is not one.
        let alt = line(0x1000_1000 + 8 * mb - 64 * 1024, 0x1000_1000 + 8 * mb, "rw-p");
        let alt_guard = line(alt.start - 4096, alt.start, "---p");
        let below = [MapLine::default(), MapLine::default(), MapLine::default(), alt_guard];
        assert_eq!(stack_block(&alt, &below, 8 * mb + 4096), None);
        // Guard zones a runtime put inside the block (HotSpot, with no glibc guard) count with it.
        let zones = line(0x2000_0000, 0x2001_0000, "---p");
        let rest = line(0x2001_0000, 0x2010_0000, "rw-p");
        let below = [MapLine::default(), MapLine::default(), MapLine::default(), zones];
        assert_eq!(stack_block(&rest, &below, mb), Some((2, mb)));
    }

    #[test]
    fn malloc_arena_heaps_are_told_by_size_and_alignment() {
        let heap = 0x7f00_0000_0000 + 3 * ARENA_HEAP;
        let rw = line(heap, heap + 0x21000, "rw-p");
        let rest = line(heap + 0x21000, heap + ARENA_HEAP, "---p");
        assert_eq!(arena_heap(&rest, &rw), Some(2));
        assert_eq!(arena_heap(&line(heap, heap + ARENA_HEAP, "rw-p"), &MapLine::default()), Some(1));
        // Not aligned, or not the whole size: something else.
        let off = line(heap + 4096, heap + 0x21000, "rw-p");
        assert_eq!(arena_heap(&line(heap + 0x21000, heap + ARENA_HEAP + 4096, "---p"), &off), None);
        assert_eq!(arena_heap(&line(heap + 0x21000, heap + ARENA_HEAP - 4096, "---p"), &rw), None);
        // A thread stack below its guard has the guard first: not an arena.
        assert_eq!(arena_heap(&line(heap + 4096, heap + ARENA_HEAP, "rw-p"), &line(heap, heap + 4096, "---p")), None);
    }

    #[test]
    fn the_census_sets_apart_a_running_threads_stack() {
        extern "C" fn wait(arg: *mut c_void) -> *mut c_void {
            // SAFETY: `arg` is the semaphore the test posts once it has taken its census.
            unsafe { libc::sem_wait(arg.cast()) };
            ptr::null_mut()
        }
        // SAFETY: a zeroed sem_t initialized by sem_init; attr initialized before use; the thread is
        // joined before the semaphore goes out of scope.
        unsafe {
            let mut sem: libc::sem_t = std::mem::zeroed();
            libc::sem_init(&mut sem, 0, 0);
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setstacksize(&mut attr, 1 << 20);
            let mut t: libc::pthread_t = 0;
            assert_eq!(libc::pthread_create(&mut t, &attr, wait, (&mut sem as *mut libc::sem_t).cast()), 0);
            let mut plain = [0i64; 5];
            census(&mut plain).unwrap();
            let mut apart = [0i64; 5];
            let mut stacks = [StackQuery { tcb: t as usize, min_block: (1 << 20) + 4096, found: false }];
            let set = census_setting_apart(&mut apart, &mut stacks).unwrap();
            libc::sem_post(&mut sem);
            libc::pthread_join(t, ptr::null_mut());
            libc::pthread_attr_destroy(&mut attr);
            assert!(stacks[0].found);
            // A fresh block is 1 MiB of stack and its 4 KiB guard page: two mappings. glibc may instead
            // hand out the cached block of a thread of this binary that ended (up to four times the size
            // asked for, `nptl/nptl-stack.c`, `get_cached_stack`), such as a test thread's 2 MiB block.
            assert!(
                set == SetApart { maps: 2, kib: 1028 }
                    || (set.maps >= 1 && set.maps <= 2 && set.kib > 1028 && set.kib <= 4 * 1028),
                "{set:?}"
            );
            // Other test threads may map and unmap beside this one: the counts are close, not equal.
            assert!((plain[1] - apart[1] - set.maps).abs() <= 4, "{plain:?} {apart:?}");
        }
    }

    #[test]
    fn a_missing_status_field_is_an_error() {
        let err = status_field(c"/proc/self/status", b"NoSuchField:").unwrap_err();
        assert_eq!(err.code, Code::Errno(libc::ENODATA));
    }
}
