//! macOS: the Mach calls that add a right or a user reference to a name in the task's own space,
//! interposed for [`sites`](crate::sites) through the same `__DATA,__interpose` section as the pthread
//! calls. Each passes the call through and, when sites are on, records the name against the calling
//! stack: a name is kept under the latest call that added to it, and a census forgets the names no
//! longer in the space (`mach_port_type` says `KERN_INVALID_NAME`), so releases need no interposing.
//!
//! Recorded: `mach_thread_self`, `mach_host_self`, `mach_port_allocate`, `mach_port_insert_right`,
//! `mach_port_mod_refs` (a positive delta), `semaphore_create`, `task_get_special_port`, `task_threads`
//! (each thread's name) and `thread_swap_exception_ports` (each handler that comes back). Not
//! `mach_reply_port`: it is declared under `#ifdef PRIVATE` (osfmk/mach/mach_traps.h:86-88 in xnu-11417.121.6),
//! absent from the SDK, and the reply ports of MIG calls are made inside libsystem, where no
//! interposing reaches. Each replacement has the type of the declaration the ABI manifest checks
//! against the SDK headers (`threadleak_census::mach::ffi`), which the compiler holds it to.

use std::ffi::{c_int, c_void};

use threadleak_census::mach::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t};
use threadleak_census::mach::ffi::{
    self, mach_msg_type_number_t, semaphore_t, sync_policy_t, task_special_port_t, thread_act_t,
};
use threadleak_census::mach::kern_return::{kern_return_t, KERN_SUCCESS};
use threadleak_census::mach::port::{
    mach_msg_type_name_t, mach_port_delta_t, mach_port_name_t, mach_port_right_t, mach_port_t, mach_port_type_t,
    MACH_PORT_TYPE_DEAD_NAME, MACH_PORT_TYPE_PORT_SET, MACH_PORT_TYPE_RECEIVE, MACH_PORT_TYPE_SEND,
    MACH_PORT_TYPE_SEND_ONCE,
};

use super::Interpose;
use crate::sites::{self, Counter};

/// The calls' names, by the index a site records.
pub const CALLS: &[&str] = &[
    "mach_thread_self",
    "mach_host_self",
    "mach_port_allocate",
    "mach_port_insert_right",
    "mach_port_mod_refs",
    "semaphore_create",
    "task_get_special_port",
    "task_threads",
    "thread_swap_exception_ports",
];

fn own_task() -> mach_port_t {
    // SAFETY: reads the process's task port name, set by libSystem before any code runs.
    unsafe { mach2::traps::mach_task_self() }
}

/// Records that call `call` added to `name` in this task's space.
fn made(call: usize, name: mach_port_name_t) {
    if name != 0 && name != u32::MAX {
        sites::made(call as u32, Counter::Names, (name >> 8) as usize, name);
    }
}

/// Defines the replacement `$ours` for `$real`, held to its type: the real call, then `$record` with
/// its result.
macro_rules! replace {
    ($(fn $ours:ident = $real:path, $call:literal ($($arg:ident: $ty:ty),*) -> $ret:ty,
        |$result:ident, $index:ident| $record:block)*) => {$(
        const _: unsafe extern "C" fn($($ty),*) -> $ret = $real;
        const _: unsafe extern "C" fn($($ty),*) -> $ret = $ours;

        #[doc = concat!("The replacement for `", $call, "`.")]
        unsafe extern "C" fn $ours($($arg: $ty),*) -> $ret {
            // SAFETY: the caller's arguments, passed on to the function they were meant for.
            let $result: $ret = unsafe { $real($($arg),*) };
            if sites::enabled() {
                let $index = CALLS.iter().position(|c| *c == $call).unwrap_or(0);
                $record
            }
            $result
        }
    )*};
}

replace! {
    fn probe_mach_thread_self = mach2::mach_init::mach_thread_self, "mach_thread_self" () -> mach_port_t, |result, index| {
        made(index, result);
    }
    fn probe_mach_host_self = mach2::mach_init::mach_host_self, "mach_host_self" () -> mach_port_t, |result, index| {
        made(index, result);
    }
    fn probe_mach_port_allocate = mach2::mach_port::mach_port_allocate, "mach_port_allocate"
        (task: mach_port_t, right: mach_port_right_t, name: *mut mach_port_name_t) -> kern_return_t, |result, index| {
        if result == KERN_SUCCESS && task == own_task() && !name.is_null() {
            // SAFETY: on success the call wrote the new name.
            made(index, unsafe { *name });
        }
    }
    fn probe_mach_port_insert_right = mach2::mach_port::mach_port_insert_right, "mach_port_insert_right"
        (task: mach_port_t, name: mach_port_name_t, poly: mach_port_t, poly_poly: mach_msg_type_name_t) -> kern_return_t, |result, index| {
        if result == KERN_SUCCESS && task == own_task() {
            made(index, name);
        }
    }
    fn probe_mach_port_mod_refs = mach2::mach_port::mach_port_mod_refs, "mach_port_mod_refs"
        (task: mach_port_t, name: mach_port_name_t, right: mach_port_right_t, delta: mach_port_delta_t) -> kern_return_t, |result, index| {
        if result == KERN_SUCCESS && task == own_task() && delta > 0 {
            made(index, name);
        }
    }
    fn probe_semaphore_create = mach2::semaphore::semaphore_create, "semaphore_create"
        (task: mach_port_t, semaphore: *mut semaphore_t, policy: sync_policy_t, value: c_int) -> kern_return_t, |result, index| {
        if result == KERN_SUCCESS && task == own_task() && !semaphore.is_null() {
            // SAFETY: on success the call wrote the new semaphore's name.
            made(index, unsafe { *semaphore });
        }
    }
    fn probe_task_get_special_port = mach2::task::task_get_special_port, "task_get_special_port"
        (task: mach_port_t, which: task_special_port_t, port: *mut mach_port_t) -> kern_return_t, |result, index| {
        if result == KERN_SUCCESS && !port.is_null() {
            // SAFETY: on success the call wrote a send right's name in the caller's space.
            made(index, unsafe { *port });
        }
    }
    fn probe_task_threads = mach2::task::task_threads, "task_threads"
        (task: mach_port_t, list: *mut *mut thread_act_t, count: *mut mach_msg_type_number_t) -> kern_return_t, |result, index| {
        // A task with no threads (one that is ending, asked for from outside) gives a null array and a
        // count of 0 (xnu-11417.121.6 osfmk/kern/task.c:3930-3935): no slice is made of that.
        // SAFETY: `list` and `count` are the caller's, checked non-null, and written by the call on success.
        if result == KERN_SUCCESS && !list.is_null() && !count.is_null() && unsafe { !(*list).is_null() && *count > 0 } {
            // SAFETY: on success the call wrote an array of `*count` names the caller now owns (non-null).
            let names = unsafe { std::slice::from_raw_parts(*list, *count as usize) };
            for &name in names {
                made(index, name);
            }
        }
    }
    fn probe_thread_swap_exception_ports = ffi::thread_swap_exception_ports, "thread_swap_exception_ports"
        (
            thread: thread_act_t,
            mask: exception_mask_t,
            new_port: mach_port_t,
            behavior: exception_behavior_t,
            flavor: thread_state_flavor_t,
            masks: *mut exception_mask_t,
            count: *mut mach_msg_type_number_t,
            old_handlers: *mut mach_port_t,
            old_behaviors: *mut exception_behavior_t,
            old_flavors: *mut thread_state_flavor_t
        ) -> kern_return_t, |result, index| {
        if result == KERN_SUCCESS && !old_handlers.is_null() && !count.is_null() {
            // SAFETY: on success the call wrote `*count` handlers, each a send right the caller now owns.
            let handlers = unsafe { std::slice::from_raw_parts(old_handlers, *count as usize) };
            for &name in handlers {
                made(index, name);
            }
        }
    }
}

/// The interposing entries for the calls above, dyld reads them with the pthread ones.
#[used]
#[link_section = "__DATA,__interpose"]
static INTERPOSE_SITES: [Interpose; 9] = [
    Interpose::of(probe_mach_thread_self as *const c_void, mach2::mach_init::mach_thread_self as *const c_void),
    Interpose::of(probe_mach_host_self as *const c_void, mach2::mach_init::mach_host_self as *const c_void),
    Interpose::of(probe_mach_port_allocate as *const c_void, mach2::mach_port::mach_port_allocate as *const c_void),
    Interpose::of(
        probe_mach_port_insert_right as *const c_void,
        mach2::mach_port::mach_port_insert_right as *const c_void,
    ),
    Interpose::of(probe_mach_port_mod_refs as *const c_void, mach2::mach_port::mach_port_mod_refs as *const c_void),
    Interpose::of(probe_semaphore_create as *const c_void, mach2::semaphore::semaphore_create as *const c_void),
    Interpose::of(probe_task_get_special_port as *const c_void, mach2::task::task_get_special_port as *const c_void),
    Interpose::of(probe_task_threads as *const c_void, mach2::task::task_threads as *const c_void),
    Interpose::of(
        probe_thread_swap_exception_ports as *const c_void,
        ffi::thread_swap_exception_ports as *const c_void,
    ),
];

/// The type of the name `name` in this task's space, or `None` when it is not there.
fn type_of(name: mach_port_name_t) -> Option<mach_port_type_t> {
    let mut t: mach_port_type_t = 0;
    // SAFETY: `t` is valid for writing; any name may be asked about.
    (unsafe { ffi::mach_port_type(own_task(), name, &mut t) } == KERN_SUCCESS).then_some(t)
}

/// Whether `name` is still in this task's space.
pub fn held(name: u32) -> bool {
    type_of(name).is_some_and(|t| t != 0)
}

/// What `name` holds, as the inventory says it (`dead name`, `send`, `receive and send`), into `buf`.
pub fn describe(name: u32, buf: &mut [u8; 512]) -> &[u8] {
    let Some(t) = type_of(name) else { return &buf[..0] };
    if t & MACH_PORT_TYPE_DEAD_NAME != 0 {
        buf[..9].copy_from_slice(b"dead name");
        return &buf[..9];
    }
    let mut w = std::io::Cursor::new(&mut buf[..]);
    let mut first = true;
    for (bit, word) in [
        (MACH_PORT_TYPE_RECEIVE, "receive"),
        (MACH_PORT_TYPE_SEND, "send"),
        (MACH_PORT_TYPE_SEND_ONCE, "send-once"),
        (MACH_PORT_TYPE_PORT_SET, "port set"),
    ] {
        if t & bit != 0 {
            let _ = std::io::Write::write_all(&mut w, if first { b"" } else { b" and " });
            let _ = std::io::Write::write_all(&mut w, word.as_bytes());
            first = false;
        }
    }
    let len = w.position() as usize;
    &buf[..len]
}

/// The module that holds `ip` (its path and where it is loaded), given to `f`.
pub fn with_module_of<R>(ip: usize, f: impl FnOnce(Option<(&[u8], usize)>) -> R) -> R {
    // SAFETY: Dl_info is plain data that dladdr fills.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads dyld's tables; `info` is valid for writing.
    if unsafe { libc::dladdr(ip as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return f(None);
    }
    // SAFETY: dli_fname is the image's NUL-terminated path, valid while the image is loaded.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_bytes();
    f(Some((name, info.dli_fbase as usize)))
}

/// The probe's own code: its image's `__TEXT` segment, read from the Mach-O header dyld loaded it at.
pub fn own_code() -> (usize, usize) {
    // SAFETY: as in `with_module_of`.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr with an address in this image.
    if unsafe { libc::dladdr(own_code as *const c_void, &mut info) } == 0 || info.dli_fbase.is_null() {
        return (0, 0);
    }
    let base = info.dli_fbase as usize;
    // mach-o/loader.h: a 64-bit header (32 bytes) then `ncmds` load commands; LC_SEGMENT_64 (0x19) is
    // segment_command_64, whose name is at 8 and vmsize at 32.
    // SAFETY: dyld maps the image's header and load commands at dli_fbase.
    let ncmds = unsafe { *((base + 16) as *const u32) };
    let mut at = base + 32;
    for _ in 0..ncmds {
        // SAFETY: within the load commands, each `cmdsize` long.
        let (cmd, size) = unsafe { (*(at as *const u32), *((at + 4) as *const u32)) };
        // SAFETY: a segment command's name is 16 bytes at offset 8.
        if cmd == 0x19 && unsafe { std::slice::from_raw_parts((at + 8) as *const u8, 6) } == b"__TEXT" {
            // SAFETY: vmsize, at offset 32 of segment_command_64.
            let vmsize = unsafe { *((at + 32) as *const u64) } as usize;
            return (base, base + vmsize);
        }
        at += size as usize;
    }
    (0, 0)
}
