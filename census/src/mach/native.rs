//! The census's calls on this Mac's kernel: [`PortSpace`] through libSystem (mach2, libc, and the
//! declarations in `ffi.rs`).

use std::ptr;

use super::ffi;
use super::kern_return::{kern_return_t, KERN_SUCCESS};
use super::port::*;
use super::{KernResult, PortSpace};

/// The one place a `kern_return_t` from libSystem becomes a result.
pub fn kr(ret: kern_return_t) -> KernResult<()> {
    if ret == KERN_SUCCESS {
        Ok(())
    } else {
        Err(ret)
    }
}

/// This task's own port name.
pub fn task() -> mach_port_t {
    // SAFETY: reads the task's own port name, set by libSystem before main.
    unsafe { mach2::traps::mach_task_self() }
}

/// Whether the thread whose port name was `name` is gone: the name is dead or no longer in the space
/// (`ipc_right_check` turns a send right to a dead port into a dead name, osfmk/ipc/ipc_right.c).
pub fn thread_gone(name: i64) -> bool {
    let Ok(name) = mach_port_name_t::try_from(name) else { return true };
    let mut t: mach_port_type_t = 0;
    // SAFETY: `t` is valid for writing.
    match kr(unsafe { ffi::mach_port_type(task(), name, &mut t) }) {
        Ok(()) => t & MACH_PORT_TYPE_DEAD_NAME != 0,
        Err(_) => true,
    }
}

/// This task's port space, on the real kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Native;

impl PortSpace for Native {
    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>> {
        let (mut names, mut types) = (ptr::null_mut::<mach_port_name_t>(), ptr::null_mut::<mach_port_type_t>());
        let (mut names_count, mut types_count) = (0, 0);
        // SAFETY: all four out-pointers are valid for writing; the kernel fills them with out-of-line arrays.
        kr(unsafe { ffi::mach_port_names(task(), &mut names, &mut names_count, &mut types, &mut types_count) })?;
        let count = names_count.min(types_count) as usize;
        let result = if count == 0 {
            Vec::new()
        } else {
            // SAFETY: on success the arrays hold `names_count` and `types_count` elements.
            let (n, t) =
                unsafe { (std::slice::from_raw_parts(names, count), std::slice::from_raw_parts(types, count)) };
            n.iter().copied().zip(t.iter().copied()).collect()
        };
        // Out-of-line memory belongs to the caller: give both regions back (mach/mach_port.h), then report
        // the first failure.
        let mut freed = Ok(());
        for (addr, len) in [(names as usize, names_count as usize * 4), (types as usize, types_count as usize * 4)] {
            if addr != 0 && len != 0 {
                // SAFETY: the region was allocated in this task by the kernel for this reply.
                let done = kr(unsafe { ffi::vm_deallocate(task(), addr, len) });
                freed = freed.and(done);
            }
        }
        freed.map(|()| result)
    }

    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        let mut refs: mach_port_urefs_t = 0;
        // SAFETY: `refs` is valid for writing.
        kr(unsafe { ffi::mach_port_get_refs(task(), name, right, &mut refs) })?;
        Ok(refs)
    }

    fn has_reply_port(&self) -> bool {
        // SAFETY: pthread_getspecific reads the calling thread's slot `key`, any slot, the reserved ones
        // included (`_pthread_getspecific_direct`, libpthread-539 src/pthread_tsd.c:255-258).
        !unsafe { libc::pthread_getspecific(ffi::TSD_MIG_REPLY) }.is_null()
    }

    fn drop_reply_port(&self) {
        // SAFETY: gives back this thread's own reply port; passed the port itself, the call deallocates
        // nothing else (mig_reply_port.c:85-91).
        unsafe { mach2::mig::mig_dealloc_reply_port(mach2::mig::mig_get_reply_port()) }
    }
}
