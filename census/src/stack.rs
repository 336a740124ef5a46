//! The calling thread's stack as return addresses, walked by the platform's unwinder: `_Unwind_Backtrace`,
//! which every Rust program on these systems links for its panics (libgcc_s on Linux, libunwind in
//! libSystem on macOS). Its interface is the Itanium C++ ABI's (`unwind.h`: GCC's
//! libgcc/unwind-generic.h, LLVM's libunwind/include/unwind.h, which the macOS SDK ships).

use std::ffi::{c_int, c_void};

/// `struct _Unwind_Context`, opaque.
#[repr(C)]
struct UnwindContext {
    _opaque: [u8; 0],
}

/// `_Unwind_Reason_Code`: `_URC_NO_REASON` goes on, `_URC_END_OF_STACK` stops (unwind.h: 0 and 5).
type Reason = c_int;
const URC_NO_REASON: Reason = 0;
const URC_END_OF_STACK: Reason = 5;

unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut c_void) -> Reason,
        argument: *mut c_void,
    ) -> Reason;
    fn _Unwind_GetIP(context: *mut UnwindContext) -> usize;
}

/// The walk in progress, passed to [`each_frame`].
struct Walk<'a> {
    frames: &'a mut [usize],
    n: usize,
    skip: &'a dyn Fn(usize) -> bool,
}

extern "C" fn each_frame(context: *mut UnwindContext, argument: *mut c_void) -> Reason {
    // SAFETY: `argument` is the `Walk` that `walk` passes and keeps alive for the whole walk.
    let walk = unsafe { &mut *argument.cast::<Walk>() };
    // SAFETY: `context` is the unwinder's context for the frame being visited, valid during this call.
    let ip = unsafe { _Unwind_GetIP(context) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    if (walk.skip)(ip) {
        return URC_NO_REASON;
    }
    walk.frames[walk.n] = ip;
    walk.n += 1;
    if walk.n < walk.frames.len() {
        URC_NO_REASON
    } else {
        URC_END_OF_STACK
    }
}

/// Fills `frames` with the return addresses of the calling thread's frames, innermost first, leaving out
/// those `skip` says to, and returns how many it filled. It allocates nothing (the probe walks inside
/// the program it measures).
pub fn walk(frames: &mut [usize], skip: &dyn Fn(usize) -> bool) -> usize {
    if frames.is_empty() {
        return 0;
    }
    let mut walk = Walk { frames, n: 0, skip };
    // SAFETY: `each_frame` matches `_Unwind_Trace_Fn` and reads `argument` as the `Walk` given here,
    // which outlives the call; the unwinder calls it only during this call.
    unsafe { _Unwind_Backtrace(each_frame, (&mut walk as *mut Walk).cast()) };
    walk.n
}

/// The return addresses of the calling thread's frames, innermost first (the unwinder's own frames and
/// this function's among them), at most `max`.
pub fn trace(max: usize) -> Vec<usize> {
    let mut frames = vec![0; max];
    let n = walk(&mut frames, &|_| false);
    frames.truncate(n);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn nested(max: usize) -> Vec<usize> {
        std::hint::black_box(trace(max))
    }

    #[test]
    fn the_walk_sees_the_callers_and_stops_at_its_limit() {
        let here = the_walk_sees_the_callers_and_stops_at_its_limit as *const () as usize;
        let ips = nested(64);
        assert!(ips.len() >= 3, "{ips:?}");
        // This test's own frame is among them: a return address a little past the function's start.
        assert!(ips.iter().any(|&ip| ip > here && ip - here < 4096), "{here:#x} {ips:x?}");
        assert_eq!(nested(2).len(), 2);
        assert!(nested(0).is_empty());
        // What `skip` says to leave out is left out, and the rest still fills the frames.
        let mut frames = [0usize; 4];
        let first = nested(1)[0];
        assert_eq!(walk(&mut frames, &|ip| ip == first), 4);
        assert!(!frames.contains(&first));
    }
}
