//! Mach: the C declarations the backends and the probe make by hand (one module per header family,
//! recorded for the ABI check, `abi.rs`), and the census of a task's port space, written once over
//! [`PortSpace`]: the model (mach-sim) answers its calls on any OS, the kernel on macOS (`native.rs`).

#[macro_use]
pub mod abi;
pub mod exception;
pub mod ffi;
pub mod kern_return;
#[cfg(target_os = "macos")]
pub mod native;
pub mod port;

use kern_return::{kern_return_t, KERN_INVALID_NAME};
use port::{
    mach_port_name_t, mach_port_right_t, mach_port_type_t, mach_port_urefs_t, MACH_PORT_RIGHT_DEAD_NAME,
    MACH_PORT_RIGHT_SEND, MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE,
    MACH_PORT_TYPE_SEND, MACH_PORT_TYPE_SEND_ONCE,
};

use crate::CallError;

/// A Mach call's result: the value, or the `kern_return_t` it failed with.
pub type KernResult<T> = Result<T, kern_return_t>;

/// Counter names of a Mach census, in order: names in the space, names holding each kind of right, and
/// user references of send rights and dead names.
pub const COUNTERS: &[&str] = &["names", "send", "receive", "send_once", "port_set", "dead", "urefs"];

/// The calls a census of this task's port space makes.
pub trait PortSpace {
    /// `mach_port_names(mach_task_self(), ...)`: every name in the task's space with its type.
    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>>;

    /// `mach_port_get_refs(mach_task_self(), name, right, &refs)`.
    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t>;

    /// Whether the calling thread has a MIG reply port: the receive right its first MIG call makes and
    /// keeps in the thread's `__TSD_MIG_REPLY` slot (libsyscall/mach/mig_reply_port.c:59-75 and
    /// libsyscall/os/tsd.h:38 in xnu-11417.121.6) until the thread ends (libpthread-330.201.1
    /// src/pthread.c:742-743). The model makes none: there, always true.
    fn has_reply_port(&self) -> bool;

    /// `mig_dealloc_reply_port(mig_get_reply_port())`: destroys the calling thread's reply port and
    /// clears its slot (mig_reply_port.c:81-94), so that the thread's next MIG call makes a new one.
    fn drop_reply_port(&self);
}

/// Reads `names send receive send_once port_set dead urefs` of the task into `out`.
///
/// `mach_port_names` is a MIG call: a thread's first MIG call makes the thread's reply port, a receive
/// right in this task kept until the thread ends ([`PortSpace::has_reply_port`]). So every census counts
/// one reply port, the calling thread's, whether the thread had it or the census made it; one the
/// census made is given back after, so that censuses taken on different threads (the probe's, on
/// whichever thread is ending or joining) neither leave ports behind nor count each other's.
pub fn census<S: PortSpace + ?Sized>(space: &S, out: &mut [i64]) -> Result<(), CallError> {
    let made = !space.has_reply_port();
    let counted = count(space, out);
    if made {
        space.drop_reply_port();
    }
    counted
}

/// The census itself: see [`census`].
fn count<S: PortSpace + ?Sized>(space: &S, out: &mut [i64]) -> Result<(), CallError> {
    let names = space.mach_port_names().map_err(|code| CallError::kern("mach_port_names", code))?;
    let mut counts = [0i64; 7];
    counts[0] = names.len() as i64;
    for &(name, t) in &names {
        for (slot, bit) in [
            (1, MACH_PORT_TYPE_SEND),
            (2, MACH_PORT_TYPE_RECEIVE),
            (3, MACH_PORT_TYPE_SEND_ONCE),
            (4, MACH_PORT_TYPE_PORT_SET),
            (5, MACH_PORT_TYPE_DEAD_NAME),
        ] {
            if t & bit != 0 {
                counts[slot] += 1;
            }
        }
        let right = if t & MACH_PORT_TYPE_SEND != 0 {
            MACH_PORT_RIGHT_SEND
        } else if t & MACH_PORT_TYPE_DEAD_NAME != 0 {
            MACH_PORT_RIGHT_DEAD_NAME
        } else {
            continue;
        };
        match space.mach_port_get_refs(name, right) {
            Ok(refs) => counts[6] += i64::from(refs),
            // The name went away between the two calls (a port dying meanwhile): the next census sees it.
            Err(KERN_INVALID_NAME) => {}
            Err(code) => return Err(CallError::kern("mach_port_get_refs (census)", code)),
        }
    }
    out[..7].copy_from_slice(&counts);
    Ok(())
}
