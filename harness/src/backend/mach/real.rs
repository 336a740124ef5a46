//! The real macOS backend: [`Mach`] through libSystem (mach2, libc, and the declarations in `ffi.rs`).
//!
//! Every call goes to the kernel of the machine it runs on; nothing here models anything. Threads are raw
//! pthreads, so that nothing but the workload runs on them, and the handshake that tells the creator a
//! thread is done is a mutex and condition variable: a dispatch or Mach semaphore would itself be a port
//! in the space being counted.

use std::ffi::{c_void, CStr};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t, EXC_TYPES_COUNT};
use super::ffi;
use super::port::*;
use super::{ExceptionHandler, KernResult, Mach};
use crate::backend::CallError;
use crate::record::Os;
use threadleak_census::mach::native::{kr, task, Native};
use threadleak_census::mach::PortSpace;

pub use threadleak_census::mach::native::thread_gone;

/// The number of threads of process `pid`: `pti_threadnum` of `proc_pidinfo(PROC_PIDTASKINFO)`, which
/// `fill_taskprocinfo` (osfmk/kern/bsd_kern.c) sets to `task->thread_count`; `None` if it cannot be read.
/// Unlike `task_threads` it puts no port right in this task's space.
pub fn thread_count(pid: u32) -> Option<u64> {
    let pid = libc::c_int::try_from(pid).ok()?;
    let mut info = std::mem::MaybeUninit::<libc::proc_taskinfo>::zeroed();
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    // SAFETY: `info` is valid for writing `size` bytes, the size of the PROC_PIDTASKINFO flavor's struct.
    let got = unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDTASKINFO, 0, info.as_mut_ptr().cast(), size) };
    if got != size {
        return None;
    }
    // SAFETY: proc_pidinfo filled all `size` bytes (checked above).
    let info = unsafe { info.assume_init() };
    u64::try_from(info.pti_threadnum).ok()
}

/// The pids `proc_listpids` lists for `kind` (a `PROC_*` filter of bsd/sys/proc_info.h) and `typeinfo`.
/// Given no buffer, the kernel answers with room for its process count and 20 more; given one, it
/// fills at most that and returns the bytes written (xnu-11417.121.6 `bsd/kern/proc_info.c`,
/// `proc_listpids`; `libsyscall/wrappers/libproc/libproc.c` divides them by `sizeof(int)`).
fn listed_pids(kind: u32, typeinfo: u32) -> Vec<u32> {
    // SAFETY: a null buffer asks for the size only.
    let room = unsafe { libc::proc_listpids(kind, typeinfo, ptr::null_mut(), 0) };
    let Ok(room) = usize::try_from(room) else { return Vec::new() };
    let mut pids: Vec<libc::c_int> = vec![0; room / std::mem::size_of::<libc::c_int>() + 64];
    let size = libc::c_int::try_from(pids.len() * std::mem::size_of::<libc::c_int>()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pids` is valid for writing `size` bytes.
    let written = unsafe { libc::proc_listpids(kind, typeinfo, pids.as_mut_ptr().cast(), size) };
    let Ok(written) = usize::try_from(written) else { return Vec::new() };
    pids.truncate(written / std::mem::size_of::<libc::c_int>());
    pids.into_iter().filter_map(|p| u32::try_from(p).ok()).filter(|&p| p != 0).collect()
}

/// The processes whose parent is `parent` (`PROC_PPID_ONLY`, as `proc_listchildpids` asks).
pub fn children_of(parent: u32) -> Vec<u32> {
    listed_pids(ffi::PROC_PPID_ONLY, parent)
}

/// This user's processes (`PROC_UID_ONLY`, by effective uid) but this one whose environment holds
/// `entry` (`NAME=value`) exactly, read with `sysctl(KERN_PROCARGS2)` (see `procargs.rs`: a restricted
/// process shows no environment while SIP is on).
pub fn processes_with_env(entry: &[u8]) -> Vec<u32> {
    let me = std::process::id();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    // The reply holds at most `kern.argmax` bytes and the int before them; a larger buffer is refused
    // (`sysctl_procargsx`: EINVAL past ARG_MAX).
    let mut argmax: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    let mut mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
    // SAFETY: `mib` names two levels; `argmax` is valid for writing `len` bytes.
    let got = unsafe { libc::sysctl(mib.as_mut_ptr(), 2, (&raw mut argmax).cast(), &mut len, ptr::null_mut(), 0) };
    let Ok(argmax) = usize::try_from(argmax) else { return Vec::new() };
    if got != 0 || argmax == 0 {
        return Vec::new();
    }
    let mut reply = vec![0u8; argmax + std::mem::size_of::<libc::c_int>()];
    listed_pids(ffi::PROC_UID_ONLY, uid)
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let Ok(pid_c) = libc::c_int::try_from(pid) else { return false };
            let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid_c];
            let mut len = reply.len();
            // SAFETY: `mib` names three levels; `reply` is valid for writing `len` bytes.
            let got =
                unsafe { libc::sysctl(mib.as_mut_ptr(), 3, reply.as_mut_ptr().cast(), &mut len, ptr::null_mut(), 0) };
            got == 0 && super::procargs::environment(&reply[..len.min(reply.len())]).any(|s| s == entry)
        })
        .collect()
}

/// Whether the calling thread is the main thread: `pthread_main_np` (libpthread-539 `src/pthread.c`,
/// `pthread_self() == main_thread()`).
pub fn on_main_thread() -> bool {
    // SAFETY: pthread_main_np has no preconditions.
    unsafe { libc::pthread_main_np() != 0 }
}

/// Tells the creator that a thread has run its exit hook.
#[derive(Default)]
struct Handshake {
    done: Mutex<bool>,
    cond: Condvar,
}

impl Handshake {
    fn reset(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }

    fn signal(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        *done = true;
        self.cond.notify_one();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.cond.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What a new thread needs: its work, its exit hook, and whom to tell.
struct Start<'a> {
    body: &'a (dyn Fn() + Sync),
    on_exit: &'a (dyn Fn() + Sync),
    handshake: &'a Handshake,
    key: libc::pthread_key_t,
}

extern "C" fn thread_start(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Start` that `pthread_create` below keeps alive until the handshake, which
    // comes after this thread's last use of it (in `thread_exit`).
    let start = unsafe { &*arg.cast::<Start<'_>>() };
    // SAFETY: the key was created by `Real::new`; a non-null value makes its destructor run at exit.
    if unsafe { libc::pthread_setspecific(start.key, arg) } != 0 {
        // Without the destructor the exit hook would never run: run it here rather than hang the creator.
        (start.body)();
        (start.on_exit)();
        start.handshake.signal();
        return ptr::null_mut();
    }
    (start.body)();
    ptr::null_mut()
}

/// The TSD destructor: runs the exit hook, then releases the creator. libpthread runs destructors
/// before `_pthread_terminate` (src/pthread.c, `_pthread_exit`), so the thread port is still named with
/// libpthread's reference here, as it was in Clozure CL's `shutdown_thread_tcr`.
extern "C" fn thread_exit(arg: *mut c_void) {
    // SAFETY: as in `thread_start`; the creator waits for the signal below before dropping `Start`.
    let start = unsafe { &*arg.cast::<Start<'_>>() };
    (start.on_exit)();
    start.handshake.signal();
}

/// The real Mach calls, in this task.
pub struct Real {
    key: libc::pthread_key_t,
    handshake: Handshake,
}

impl Real {
    pub fn new() -> Result<Real, CallError> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid for writing; the destructor has the C signature pthread expects.
        let ret = unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) };
        if ret != 0 {
            return Err(CallError::errno("pthread_key_create", ret));
        }
        Ok(Real { key, handshake: Handshake::default() })
    }
}

impl Mach for Real {
    type Thread = libc::pthread_t;

    fn pthread_create(
        &self,
        detached: bool,
        body: &(dyn Fn() + Sync),
        on_exit: &(dyn Fn() + Sync),
    ) -> Result<libc::pthread_t, i32> {
        let start = Start { body, on_exit, handshake: &self.handshake, key: self.key };
        self.handshake.reset();
        let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: `attr` is initialized by pthread_attr_init before any other use and destroyed below.
        let ret = unsafe { libc::pthread_attr_init(attr.as_mut_ptr()) };
        if ret != 0 {
            return Err(ret);
        }
        let state = if detached { libc::PTHREAD_CREATE_DETACHED } else { libc::PTHREAD_CREATE_JOINABLE };
        let mut thread: libc::pthread_t = 0;
        // SAFETY: `attr` was initialized above; `start` outlives the thread's use of it (see thread_start).
        let ret = unsafe {
            let mut ret = libc::pthread_attr_setdetachstate(attr.as_mut_ptr(), state);
            if ret == 0 {
                let arg = ptr::from_ref(&start).cast_mut().cast::<c_void>();
                ret = libc::pthread_create(&mut thread, attr.as_ptr(), thread_start, arg);
            }
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            ret
        };
        if ret != 0 {
            return Err(ret);
        }
        self.handshake.wait();
        Ok(thread)
    }

    fn pthread_join(&self, thread: libc::pthread_t) -> Result<(), i32> {
        // SAFETY: a joinable thread created by `pthread_create` above, joined once.
        match unsafe { libc::pthread_join(thread, ptr::null_mut()) } {
            0 => Ok(()),
            errno => Err(errno),
        }
    }

    fn pthread_mach_thread_np_self(&self) -> mach_port_t {
        // SAFETY: pthread_self is always valid for the calling thread.
        unsafe { libc::pthread_mach_thread_np(libc::pthread_self()) }
    }

    fn mach_thread_self(&self) -> mach_port_t {
        // SAFETY: no preconditions; the reference it adds is the point.
        unsafe { mach2::mach_init::mach_thread_self() }
    }

    fn mach_host_self(&self) -> mach_port_t {
        // SAFETY: no preconditions; the reference it adds is the point.
        unsafe { mach2::mach_init::mach_host_self() }
    }

    fn task_threads(&self) -> KernResult<Vec<mach_port_t>> {
        let mut list: *mut ffi::thread_act_t = ptr::null_mut();
        let mut count: ffi::mach_msg_type_number_t = 0;
        // SAFETY: both out-pointers are valid for writing; the kernel fills them with an out-of-line array.
        kr(unsafe { mach2::task::task_threads(task(), &mut list, &mut count) })?;
        let threads = if list.is_null() || count == 0 {
            Vec::new()
        } else {
            // SAFETY: on success the array holds `count` thread port names.
            unsafe { std::slice::from_raw_parts(list, count as usize) }.to_vec()
        };
        if !list.is_null() && count != 0 {
            let len = count as usize * std::mem::size_of::<ffi::thread_act_t>();
            // SAFETY: the region was allocated in this task by the kernel for this reply (mach/task.h).
            kr(unsafe { ffi::vm_deallocate(task(), list as usize, len) })?;
        }
        Ok(threads)
    }

    fn spawn_idle_thread(&self) -> Result<(), i32> {
        // It waits in `pause` (`sigsuspend`, Libc-1725.40.4 gen/FreeBSD/pause.c:48-54), which makes no
        // port. Not `std::thread::park`: on Apple that is a dispatch semaphore (std's
        // sys/sync/thread_parking/darwin.rs), whose Mach semaphore, a send right in this space, is made on
        // its first blocking wait (libdispatch-1542.0.4 src/semaphore.c:113, src/shims/lock.c:80-109),
        // at a moment the census after this call would race. And it returns once the thread runs, told
        // through a mutex and condition variable (`Handshake`), which make no port either.
        let started = std::sync::Arc::new(Handshake::default());
        let tell = std::sync::Arc::clone(&started);
        std::thread::Builder::new()
            .name("idle".to_owned())
            .stack_size(64 << 10)
            .spawn(move || {
                tell.signal();
                loop {
                    // SAFETY: pause has no preconditions; it returns after a caught signal.
                    unsafe { libc::pause() };
                }
            })
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EAGAIN))?;
        started.wait();
        Ok(())
    }

    fn mach_port_allocate(&self, right: mach_port_right_t) -> KernResult<mach_port_name_t> {
        let mut name: mach_port_name_t = MACH_PORT_NULL;
        // SAFETY: `name` is valid for writing.
        kr(unsafe { mach2::mach_port::mach_port_allocate(task(), right, &mut name) })?;
        Ok(name)
    }

    fn mach_port_insert_right(
        &self,
        name: mach_port_name_t,
        poly: mach_port_t,
        poly_poly: mach_msg_type_name_t,
    ) -> KernResult<()> {
        // SAFETY: plain values only.
        kr(unsafe { mach2::mach_port::mach_port_insert_right(task(), name, poly, poly_poly) })
    }

    fn mach_port_deallocate(&self, name: mach_port_name_t) -> KernResult<()> {
        // SAFETY: plain values only.
        kr(unsafe { mach2::mach_port::mach_port_deallocate(task(), name) })
    }

    fn mach_port_mod_refs(
        &self,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> KernResult<()> {
        // SAFETY: plain values only.
        kr(unsafe { mach2::mach_port::mach_port_mod_refs(task(), name, right, delta) })
    }

    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        Native.mach_port_get_refs(name, right)
    }

    fn mach_port_type(&self, name: mach_port_name_t) -> KernResult<mach_port_type_t> {
        let mut t: mach_port_type_t = 0;
        // SAFETY: `t` is valid for writing.
        kr(unsafe { ffi::mach_port_type(task(), name, &mut t) })?;
        Ok(t)
    }

    fn mach_port_kobject(&self, name: mach_port_name_t) -> KernResult<u32> {
        let (mut kind, mut addr) = (0, 0);
        // SAFETY: both out-pointers are valid for writing.
        kr(unsafe { ffi::mach_port_kobject(task(), name, &mut kind, &mut addr) })?;
        Ok(kind)
    }

    fn has_reply_port(&self) -> bool {
        Native.has_reply_port()
    }

    fn drop_reply_port(&self) {
        Native.drop_reply_port()
    }

    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>> {
        Native.mach_port_names()
    }

    fn thread_swap_exception_ports(
        &self,
        thread: mach_port_t,
        mask: exception_mask_t,
        new_port: mach_port_t,
        behavior: exception_behavior_t,
        flavor: thread_state_flavor_t,
    ) -> KernResult<Vec<ExceptionHandler>> {
        let mut masks = [0 as exception_mask_t; EXC_TYPES_COUNT];
        let mut ports = [MACH_PORT_NULL; EXC_TYPES_COUNT];
        let mut behaviors = [0 as exception_behavior_t; EXC_TYPES_COUNT];
        let mut flavors = [0 as thread_state_flavor_t; EXC_TYPES_COUNT];
        let mut count = EXC_TYPES_COUNT as ffi::mach_msg_type_number_t;
        // SAFETY: each array holds EXC_TYPES_COUNT elements, the count the kernel is told it may fill.
        kr(unsafe {
            ffi::thread_swap_exception_ports(
                thread,
                mask,
                new_port,
                behavior,
                flavor,
                masks.as_mut_ptr(),
                &mut count,
                ports.as_mut_ptr(),
                behaviors.as_mut_ptr(),
                flavors.as_mut_ptr(),
            )
        })?;
        Ok((0..(count as usize).min(EXC_TYPES_COUNT))
            .map(|i| ExceptionHandler { mask: masks[i], port: ports[i], behavior: behaviors[i], flavor: flavors[i] })
            .collect())
    }

    fn settle_pause(&self) {
        std::thread::sleep(Duration::from_micros(100));
    }

    fn notes(&self) -> Vec<String> {
        let mut info = ffi::ipc_info_space_basic_t::default();
        // SAFETY: `info` is valid for writing.
        match kr(unsafe { ffi::mach_port_space_basic_info(task(), &mut info) }) {
            Ok(()) => vec![format!(
                "IPC table at the end: {} entries in use of {} (mach_port_space_basic_info)",
                info.iisb_table_inuse, info.iisb_table_size
            )],
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        // SAFETY: the key was created in `new` and no thread created by this value is running.
        unsafe { libc::pthread_key_delete(self.key) };
    }
}

/// A `sysctlbyname` string, or empty when the name is unknown.
fn sysctl_string(name: &CStr) -> String {
    let mut len: libc::size_t = 0;
    // SAFETY: asking for the length only: a null buffer with a valid length pointer.
    if unsafe { libc::sysctlbyname(name.as_ptr(), ptr::null_mut(), &mut len, ptr::null_mut(), 0) } != 0 || len == 0 {
        return String::new();
    }
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` holds `len` bytes, as `len` says.
    if unsafe { libc::sysctlbyname(name.as_ptr(), buf.as_mut_ptr().cast(), &mut len, ptr::null_mut(), 0) } != 0 {
        return String::new();
    }
    buf.truncate(len);
    CStr::from_bytes_until_nul(&buf).map_or_else(|_| String::new(), |s| s.to_string_lossy().into_owned())
}

/// The Mac this runs on: product version, build, Darwin release and architecture.
pub fn os() -> Os {
    Os {
        family: "macos".to_owned(),
        release: sysctl_string(c"kern.osrelease"),
        version: sysctl_string(c"kern.osproductversion"),
        build: Some(sysctl_string(c"kern.osversion")).filter(|b| !b.is_empty()),
        arch: std::env::consts::ARCH.to_owned(),
        libc: "libSystem".to_owned(),
    }
}
