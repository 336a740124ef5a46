//! The call stack of a call the probe records ([`sites`](crate::sites)), innermost first.
//!
//! The C library's unwinder (`_Unwind_Backtrace`, libgcc's or libunwind's) finds and interprets each
//! frame's unwind information anew on every walk: some 400 ns a frame here, 6 µs for a stack of 16. On
//! Linux x86-64 the probe walks the stack itself instead, with the same information (each module's
//! `.eh_frame`, found through glibc's `_dl_find_object`, 2.35, and read with `gimli`) reduced to a rule
//! per return address (where the caller's frame and return address are) and remembered in a fixed
//! table of sets of four, so that a stack walked before costs a table lookup and two loads a frame
//! wherever its modules were loaded (in a table of single entries, two of a walk's addresses shared
//! one about once in 3,000 runs, and each walk read both rules again, with 5 KiB of stack). Every load is
//! checked to lie within the thread's stack; a frame whose rule is not of the plain kind (a signal
//! frame, a realigned stack), or a module without unwind information, ends the walk.
//!
//! **A guest's manners.** The walk takes no lock a signal handler could wait on and allocates nothing:
//! the thread's stack is learned before the program runs on it (the main thread's as the probe loads,
//! each created thread's in the probe's trampoline, before the thread's own function), never in a call
//! the program makes; the rule table is lock-free, and the one evaluation context is taken with
//! `try_lock`. A call made off the thread's known stack (a signal handler on an alternate stack, a
//! coroutine's stack), within [`STACK_MARGIN`] of its end, or on a thread the probe did not start, is
//! not walked (its site has no frames): the walk would need more stack than such a stack may have, or
//! the C library's unwinder, which takes locks. Elsewhere than Linux x86-64 the C library's unwinder is
//! used.

use crate::sites::DEPTH;

/// The stack a walk leaves free below it at least: nearer the end of the thread's stack, no walk.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub const STACK_MARGIN: usize = 32 << 10;

/// The stack of the caller into `frames`, leaving out frames for which `own` is true (the probe's);
/// returns how many were written (0 where the stack is not walked: see the module's text).
pub fn capture(frames: &mut [usize; DEPTH], own: &dyn Fn(usize) -> bool) -> usize {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    return fast::capture(frames, own).unwrap_or(0);
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    libgcc::capture(frames, own)
}

/// Prepares the fast walk (finds `_dl_find_object`, learns the main thread's stack); called once as the
/// probe starts, on the main thread, before the program's `main`.
pub fn prepare() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fast::prepare();
}

/// Learns the calling thread's stack, for later walks on it: called in the probe's trampoline as a
/// created thread starts, before the thread's own function runs.
pub fn learn_stack() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fast::learn_stack();
}

/// The unwinder's interface (the Itanium C++ ABI's, which libgcc_s and libunwind both export): where the
/// fast walk is not (and, on Linux x86-64, in a test that compares the two).
#[cfg(any(test, not(all(target_os = "linux", target_arch = "x86_64"))))]
pub(crate) mod libgcc {
    use super::DEPTH;

    /// The calling thread's frames, those `own` says are the probe's left out (`threadleak_census::stack`).
    pub fn capture(frames: &mut [usize; DEPTH], own: &dyn Fn(usize) -> bool) -> usize {
        threadleak_census::stack::walk(frames, own)
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod fast {
    use std::cell::Cell;
    use std::ffi::{c_int, c_void};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use gimli::{
        BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, Pointer, ReaderOffset, Register,
        RegisterRule, UnwindContext, UnwindContextStorage, UnwindSection, UnwindTableRow, X86_64,
    };

    use super::DEPTH;

    /// glibc's `struct dl_find_object` (elf/dlfcn.h, 2.35).
    #[repr(C)]
    struct DlFindObject {
        flags: u64,
        map_start: *mut c_void,
        map_end: *mut c_void,
        link_map: *mut c_void,
        eh_frame: *mut c_void,
        reserved: [u64; 7],
    }

    type FindObject = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

    /// `_dl_find_object`, or 0 before glibc 2.35.
    static FIND: AtomicUsize = AtomicUsize::new(0);

    /// Frames walked at most (the probe's own included).
    const WALK: usize = 64;

    /// Rules remembered, by return address.
    static RULES: Rules<{ 1 << 14 }> = Rules::new();

    /// Addresses' rules in a fixed table, lock-free, in sets of [`WAYS`](Rules::WAYS) entries: the
    /// addresses of one walk that fall in one set (as some do, by where the modules were loaded) are all
    /// kept, so that a stack walked before is never read again, however its addresses hash.
    struct Rules<const N: usize> {
        /// An entry's address; 0 for none, [`CLAIMED`](Self::CLAIMED) while it is written.
        keys: [AtomicU64; N],
        /// An entry's packed rule, or [`NO_RULE`].
        values: [AtomicU64; N],
        /// Which entry of a full set the next rule takes.
        next: AtomicUsize,
    }

    impl<const N: usize> Rules<N> {
        const WAYS: usize = 4;
        /// No address: user-space addresses are below 2^47.
        const CLAIMED: u64 = u64::MAX;

        const fn new() -> Self {
            // Two sets at least: the set is taken from the top bits of a product, shifted by fewer than 64.
            assert!(N.is_power_of_two() && N >= 2 * Self::WAYS);
            Self {
                keys: [const { AtomicU64::new(0) }; N],
                values: [const { AtomicU64::new(0) }; N],
                next: AtomicUsize::new(0),
            }
        }

        /// The entries of the set `address` falls in.
        fn set(address: usize) -> std::ops::Range<usize> {
            let sets = N / Self::WAYS;
            let first = (address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - sets.trailing_zeros())) % sets;
            first * Self::WAYS..(first + 1) * Self::WAYS
        }

        /// What is remembered of `address`: an entry is read between two reads of its address, so that one
        /// being rewritten is not taken.
        fn get(&self, address: usize) -> Option<u64> {
            let key = address as u64;
            Self::set(address).find_map(|i| {
                (self.keys[i].load(Ordering::Acquire) == key)
                    .then(|| self.values[i].load(Ordering::Acquire))
                    .filter(|_| self.keys[i].load(Ordering::Acquire) == key)
            })
        }

        /// Remembers `value` for `address` in a free entry of its set, or in the set's next one when none
        /// is free; nothing when another thread is writing that entry.
        fn put(&self, address: usize, value: u64) {
            let set = Self::set(address);
            let i = set
                .clone()
                .find(|&i| self.keys[i].load(Ordering::Relaxed) == 0)
                .unwrap_or_else(|| set.start + self.next.fetch_add(1, Ordering::Relaxed) % Self::WAYS);
            let seen = self.keys[i].load(Ordering::Acquire);
            if seen == Self::CLAIMED
                || self.keys[i].compare_exchange(seen, Self::CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_err()
            {
                return;
            }
            self.values[i].store(value, Ordering::Release);
            self.keys[i].store(address as u64, Ordering::Release);
        }
    }

    /// Where a frame's caller is: the canonical frame address (CFA) is RSP or RBP plus an offset, the
    /// return address is just below it, and RBP is restored from the CFA plus an offset (or kept).
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Rule {
        from_bp: bool,
        offset: i32,
        bp_at: Option<i16>,
        /// The outermost frame (its return address is undefined: `_start`, `clone`).
        outermost: bool,
    }

    impl Rule {
        fn pack(self) -> u64 {
            1 | u64::from(self.from_bp) << 1
                | u64::from(self.bp_at.is_some()) << 2
                | u64::from(self.outermost) << 3
                | u64::from(self.bp_at.unwrap_or(0) as u16) << 16
                | u64::from(self.offset as u32) << 32
        }

        fn unpack(v: u64) -> Option<Rule> {
            (v & 1 != 0).then(|| Rule {
                from_bp: v & 2 != 0,
                bp_at: (v & 4 != 0).then_some((v >> 16) as u16 as i16),
                outermost: v & 8 != 0,
                offset: (v >> 32) as u32 as i32,
            })
        }
    }

    /// Fixed storage for gimli's evaluation of a frame's unwind program: no allocation, bounded.
    struct Fixed;

    impl<T: ReaderOffset> UnwindContextStorage<T> for Fixed {
        type Rules = [(Register, RegisterRule<T>); 32];
        type Stack = [UnwindTableRow<T, Self>; 4];
    }

    /// The evaluation context, made once (it is large); taken with `try_lock`, so that a signal handler
    /// that interrupts an evaluation never waits for it (its walk ends early instead).
    static CONTEXT: Mutex<Option<Box<UnwindContext<usize, Fixed>>>> = Mutex::new(None);

    thread_local! {
        /// The calling thread's stack, `[low, high)`, learned before the program ran on it; `(0, 0)`
        /// while unknown.
        static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }

    pub fn prepare() {
        // SAFETY: a NUL-terminated name, looked up in the global scope.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
        *CONTEXT.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(UnwindContext::new_in()));
        FIND.store(f as usize, Ordering::Release);
        learn_stack();
    }

    /// The calling thread's stack, as learned; `(0, 0)` when it was not.
    fn stack() -> (usize, usize) {
        STACK.try_with(Cell::get).unwrap_or((0, 0))
    }

    /// Learns the calling thread's stack from its attributes (`pthread_getattr_np`, which takes locks and,
    /// on the main thread, reads /proc/self/maps: never called in a call the program makes).
    pub fn learn_stack() {
        // SAFETY: pthread_attr_t is plain data that pthread_getattr_np initializes.
        let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
        let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
        // SAFETY: the calling thread's attributes, read into `attr` and destroyed once.
        let ok = unsafe {
            libc::pthread_getattr_np(libc::pthread_self(), &mut attr) == 0 && {
                let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
                libc::pthread_attr_destroy(&mut attr);
                got
            }
        };
        let span = if ok { (addr as usize, addr as usize + size) } else { (0, 0) };
        let _ = STACK.try_with(|s| s.set(span));
    }

    /// What the table remembers of an address that has no plain rule (a module without unwind
    /// information, a signal frame): it is not read again (reading costs the most stack and time).
    const NO_RULE: u64 = 2;

    /// The rule for return address `ra` (or, for the first frame, the exact address `exact`).
    fn rule(address: usize, exact: bool) -> Option<Rule> {
        if let Some(v) = RULES.get(address) {
            return if v == NO_RULE { None } else { Rule::unpack(v) };
        }
        // Not known yet: read it, unless the evaluation context is busy (then ask again next time).
        let rule = find(if exact { address } else { address - 1 })?;
        RULES.put(address, rule.map_or(NO_RULE, Rule::pack));
        rule
    }

    /// Reads the rule for code address `pc` from its module's `.eh_frame`: `Some(None)` when it has no
    /// plain one, `None` when it cannot be read now (the evaluation context is busy).
    fn find(pc: usize) -> Option<Option<Rule>> {
        let find = FIND.load(Ordering::Acquire);
        if find == 0 {
            return Some(None);
        }
        let Ok(mut guard) = CONTEXT.try_lock() else { return None };
        Some(find_with(pc, find, guard.as_mut().map(|b| &mut **b)))
    }

    /// [`find`], given `_dl_find_object` and the evaluation context.
    fn find_with(pc: usize, find: usize, ctx: Option<&mut UnwindContext<usize, Fixed>>) -> Option<Rule> {
        let ctx = ctx?;
        // SAFETY: FIND holds _dl_find_object's address, whose type this is.
        let find: FindObject = unsafe { std::mem::transmute::<usize, FindObject>(find) };
        // SAFETY: plain data that _dl_find_object fills.
        let mut object: DlFindObject = unsafe { std::mem::zeroed() };
        // SAFETY: `object` is valid for writing; any address may be asked about.
        if unsafe { find(pc as *mut c_void, &mut object) } != 0 {
            return None;
        }
        let (hdr, end) = (object.eh_frame as usize, object.map_end as usize);
        if hdr == 0 || hdr >= end {
            return None;
        }
        // SAFETY: the module's PT_GNU_EH_FRAME segment lies within its mapping, which is loaded and
        // readable up to `map_end`; gimli reads only what the headers it parses ask for.
        let hdr_bytes = unsafe { std::slice::from_raw_parts(hdr as *const u8, end - hdr) };
        let bases = BaseAddresses::default().set_eh_frame_hdr(hdr as u64);
        let parsed = EhFrameHdr::new(hdr_bytes, LittleEndian).parse(&bases, 8).ok()?;
        let eh = match parsed.eh_frame_ptr() {
            Pointer::Direct(a) => a as usize,
            Pointer::Indirect(_) => return None,
        };
        if eh < object.map_start as usize || eh >= end {
            return None;
        }
        // SAFETY: as above, the `.eh_frame` section lies within the module's loaded mapping.
        let eh_bytes = unsafe { std::slice::from_raw_parts(eh as *const u8, end - eh) };
        let frame = EhFrame::from(EndianSlice::new(eh_bytes, LittleEndian));
        let bases = bases.set_eh_frame(eh as u64);
        let table = parsed.table()?;
        let row = table.unwind_info_for_address(&frame, &bases, ctx, pc as u64, EhFrame::cie_from_offset).ok()?;
        let (from_bp, offset) = match *row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => (false, offset),
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => (true, offset),
            _ => return None,
        };
        let offset = i32::try_from(offset).ok()?;
        let outermost = match row.register(X86_64::RA) {
            RegisterRule::Offset(-8) => false,
            RegisterRule::Undefined => true,
            _ => return None,
        };
        let bp_at = match row.register(X86_64::RBP) {
            RegisterRule::Offset(o) => Some(i16::try_from(o).ok()?),
            RegisterRule::Undefined | RegisterRule::SameValue => None,
            _ => return None,
        };
        Some(Rule { from_bp, offset, bp_at, outermost })
    }

    /// Walks the caller's stack; `None` when the walk cannot start here (the C library's unwinder
    /// takes over).
    #[inline(never)]
    pub fn capture(frames: &mut [usize; DEPTH], own: &dyn Fn(usize) -> bool) -> Option<usize> {
        let (mut ip, mut sp, mut bp): (usize, usize, usize);
        // SAFETY: reads the instruction pointer, stack pointer and frame pointer; touches nothing.
        unsafe {
            std::arch::asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) ip,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags)
            );
        }
        let (low, high) = stack();
        if sp < low.saturating_add(super::STACK_MARGIN) || sp >= high || FIND.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let read = |at: usize| -> Option<usize> {
            // SAFETY: `at` is 8-aligned within the thread's stack, which is mapped and readable.
            (at >= low && at + 8 <= high && at % 8 == 0).then(|| unsafe { *(at as *const usize) })
        };
        let mut n = 0;
        for walked in 0..WALK {
            let Some(rule) = rule(ip, walked == 0) else { break };
            if rule.outermost {
                break;
            }
            let cfa = (if rule.from_bp { bp } else { sp }).wrapping_add_signed(rule.offset as isize);
            if cfa <= sp {
                break;
            }
            let Some(ra) = read(cfa - 8) else { break };
            if let Some(at) = rule.bp_at {
                let Some(saved) = read(cfa.wrapping_add_signed(at as isize)) else { break };
                bp = saved;
            }
            (ip, sp) = (ra, cfa);
            if ip == 0 {
                break;
            }
            if !own(ip) {
                frames[n] = ip;
                n += 1;
                if n == DEPTH {
                    break;
                }
            }
        }
        Some(n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[inline(never)]
        fn nested(depth: u32, out: &mut ([usize; DEPTH], usize, [usize; DEPTH], usize)) {
            if depth > 0 {
                nested(depth - 1, out);
                std::hint::black_box(&out);
                return;
            }
            out.1 = capture(&mut out.0, &|_| false).unwrap();
            out.3 = super::super::libgcc::capture(&mut out.2, &|_| false);
        }

        #[test]
        fn the_fast_walk_finds_the_frames_the_c_librarys_unwinder_finds() {
            prepare();
            let mut out = ([0; DEPTH], 0, [0; DEPTH], 0);
            nested(10, &mut out);
            let (fast, slow) = (&out.0[..out.1], &out.2[..out.3]);
            assert!(fast.len() >= 10, "{fast:x?}");
            // The two walks start at two calls in `nested` (and the C library's inside itself); from the
            // frame of `nested` that called it on, they must agree frame for frame.
            let at = slow.iter().position(|&ip| ip == fast[1]).unwrap_or_else(|| panic!("{fast:x?} {slow:x?}"));
            let common = (slow.len() - at).min(fast.len() - 1);
            assert!(common >= 12, "{fast:x?} {slow:x?}");
            assert_eq!(&fast[1..1 + common], &slow[at..at + common]);
        }

        #[test]
        fn addresses_that_share_a_set_are_all_remembered() {
            type Small = Rules<64>;
            let rules = Small::new();
            // Addresses above user space (never a real one's) that fall in one set, as four of a walk's may:
            // as many as it holds, and one more.
            let first = 0xffff_8000_0000_0000;
            let set = Small::set(first);
            let addresses: Vec<usize> = (first..).filter(|&a| Small::set(a) == set).take(4 + 1).collect();
            let (fits, more) = addresses.split_at(4);
            for (value, &a) in (10..).zip(fits) {
                rules.put(a, value);
            }
            for (value, &a) in (10..).zip(fits) {
                assert_eq!(rules.get(a), Some(value), "{a:x} in {fits:x?}");
            }
            // The one more is remembered, in place of one of the others.
            rules.put(more[0], 99);
            assert_eq!(rules.get(more[0]), Some(99));
            assert_eq!(fits.iter().filter(|&&a| rules.get(a).is_some()).count(), 3);
            assert_eq!(rules.get(first - 8), None, "an address never remembered");
        }

        #[test]
        fn a_rule_packs_and_unpacks() {
            for rule in [
                Rule { from_bp: false, offset: 16, bp_at: None, outermost: false },
                Rule { from_bp: true, offset: -8, bp_at: Some(-16), outermost: false },
                Rule { from_bp: false, offset: 8, bp_at: Some(-4096), outermost: true },
            ] {
                assert_eq!(Rule::unpack(rule.pack()), Some(rule));
            }
            assert_eq!(Rule::unpack(0), None);
        }
    }
}
