//! libSystem's Mach functions and types that mach2 does not declare, each from the SDK header named
//! beside it, and the signatures of those the backends take from `mach2` and `libc`. Declared through the
//! ABI manifest's macros, so `ci/abi-check.sh` compares each with the Darwin SDK headers.

use super::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t};
use super::kern_return::kern_return_t;
use super::port::{mach_port_name_t, mach_port_right_t, mach_port_t, mach_port_type_t, mach_port_urefs_t};
#[allow(unused_imports)] // only the macOS checks of BORROWED name these
use {
    super::port::{mach_msg_type_name_t, mach_port_delta_t},
    libc::{c_void, pthread_key_t, pthread_t},
};

mach_types! {
    /// mach/i386/vm_types.h, mach/arm/vm_types.h
    pub type natural_t = u32;
    /// mach/message.h
    pub type mach_msg_type_number_t = natural_t;
    /// mach/mach_types.h
    pub type ipc_space_t = mach_port_t;
    /// mach/mach_types.h
    pub type thread_act_t = mach_port_t;
    /// mach/mach_types.h
    pub type vm_map_t = mach_port_t;
    /// mach/i386/vm_types.h, mach/arm/vm_types.h (`uintptr_t`)
    pub type vm_address_t = usize;
    /// mach/i386/vm_types.h, mach/arm/vm_types.h (`uintptr_t`)
    pub type vm_size_t = usize;
    /// mach/i386/vm_types.h, mach/arm/vm_types.h
    pub type mach_vm_address_t = u64;
    /// mach_debug/ipc_info.h: an `IKOT_*` kernel object type
    pub type ipc_info_object_type_t = natural_t;
    /// mach/mach_types.h
    pub type semaphore_t = mach_port_t;
    /// mach/sync_policy.h
    pub type sync_policy_t = i32;
    /// mach/task_special_ports.h
    pub type task_special_port_t = i32;
}

/// The thread-specific slot of the MIG reply port, private to libsystem (so not in the SDK's headers
/// and not in the ABI check): libsyscall/os/tsd.h:38 in xnu-11417.121.6, :40 in xnu-3248.60.10.
pub const TSD_MIG_REPLY: libc::pthread_key_t = 2;

mach_consts! {
    /// sys/proc_info.h: `proc_listpids` lists the processes whose parent is `typeinfo`.
    pub const PROC_PPID_ONLY: u32 = 6;
    /// sys/proc_info.h: `proc_listpids` lists the processes whose effective uid is `typeinfo`.
    pub const PROC_UID_ONLY: u32 = 4;
}

mach_structs! {
    /// mach_debug/ipc_info.h: the summary of a task's IPC space.
    pub struct ipc_info_space_basic_t {
        pub iisb_genno_mask: natural_t,
        pub iisb_table_size: natural_t,
        pub iisb_table_next: natural_t,
        pub iisb_table_inuse: natural_t,
        pub iisb_reserved: [natural_t; 2],
    }
}

mach_fns! {
    /// mach/mach_port.h: every name in a space and its type, in two out-of-line arrays the caller
    /// releases with `vm_deallocate`.
    pub fn mach_port_names(
        task: ipc_space_t,
        names: *mut *mut mach_port_name_t,
        namesCnt: *mut mach_msg_type_number_t,
        types: *mut *mut mach_port_type_t,
        typesCnt: *mut mach_msg_type_number_t,
    ) -> kern_return_t;
    /// mach/mach_port.h
    pub fn mach_port_type(task: ipc_space_t, name: mach_port_name_t, ptype: *mut mach_port_type_t) -> kern_return_t;
    /// mach/mach_port.h
    pub fn mach_port_get_refs(
        task: ipc_space_t,
        name: mach_port_name_t,
        right: mach_port_right_t,
        refs: *mut mach_port_urefs_t,
    ) -> kern_return_t;
    /// mach/mach_port.h: `iisb_table_inuse` is the count `top` shows as a process's ports.
    pub fn mach_port_space_basic_info(task: ipc_space_t, basic_info: *mut ipc_info_space_basic_t) -> kern_return_t;
    /// mach/thread_act.h
    pub fn thread_swap_exception_ports(
        thread: thread_act_t,
        exception_mask: exception_mask_t,
        new_port: mach_port_t,
        behavior: exception_behavior_t,
        new_flavor: thread_state_flavor_t,
        masks: *mut exception_mask_t,
        masksCnt: *mut mach_msg_type_number_t,
        old_handlers: *mut mach_port_t,
        old_behaviors: *mut exception_behavior_t,
        old_flavors: *mut thread_state_flavor_t,
    ) -> kern_return_t;
    /// mach/vm_map.h
    pub fn vm_deallocate(target_task: vm_map_t, address: vm_address_t, size: vm_size_t) -> kern_return_t;
    /// mach/mach_port.h: the kernel object type of what a send or receive right names (the address is
    /// given only to development kernels).
    pub fn mach_port_kobject(
        task: ipc_space_t,
        name: mach_port_name_t,
        object_type: *mut ipc_info_object_type_t,
        object_addr: *mut mach_vm_address_t,
    ) -> kern_return_t;
}

borrowed_fns! {
    /// mach/mach_port.h
    mach2::mach_port::mach_port_allocate => fn mach_port_allocate(
        task: ipc_space_t,
        right: mach_port_right_t,
        name: *mut mach_port_name_t,
    ) -> kern_return_t;
    /// mach/mach_port.h
    mach2::mach_port::mach_port_insert_right => fn mach_port_insert_right(
        task: ipc_space_t,
        name: mach_port_name_t,
        poly: mach_port_t,
        polyPoly: mach_msg_type_name_t,
    ) -> kern_return_t;
    /// mach/mach_port.h
    mach2::mach_port::mach_port_deallocate => fn mach_port_deallocate(task: ipc_space_t, name: mach_port_name_t) -> kern_return_t;
    /// mach/mach_port.h
    mach2::mach_port::mach_port_mod_refs => fn mach_port_mod_refs(
        task: ipc_space_t,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> kern_return_t;
    /// mach/mach_init.h
    mach2::mach_init::mach_thread_self => fn mach_thread_self() -> mach_port_t;
    /// mach/mach_init.h
    mach2::mach_init::mach_host_self => fn mach_host_self() -> mach_port_t;
    /// mach/task.h: a send right to each of the task's threads, in an out-of-line array the caller
    /// releases with `vm_deallocate`.
    mach2::task::task_threads => fn task_threads(
        target_task: mach_port_t,
        act_list: *mut *mut thread_act_t,
        act_listCnt: *mut mach_msg_type_number_t,
    ) -> kern_return_t;
    /// mach/task.h: a new semaphore, a send right in the caller's space.
    mach2::semaphore::semaphore_create => fn semaphore_create(
        task: mach_port_t,
        semaphore: *mut semaphore_t,
        policy: sync_policy_t,
        value: i32,
    ) -> kern_return_t;
    /// mach/task.h: a send right to one of the task's special ports.
    mach2::task::task_get_special_port => fn task_get_special_port(
        task: mach_port_t,
        which_port: task_special_port_t,
        special_port: *mut mach_port_t,
    ) -> kern_return_t;
    /// pthread.h
    libc::pthread_mach_thread_np => fn pthread_mach_thread_np(thread: pthread_t) -> mach_port_t;
    /// pthread.h: non-zero on the process's main thread.
    libc::pthread_main_np => fn pthread_main_np() -> i32;
    /// libproc.h
    libc::proc_pidinfo => fn proc_pidinfo(pid: i32, flavor: i32, arg: u64, buffer: *mut c_void, buffersize: i32) -> i32;
    /// libproc.h
    libc::proc_listpids => fn proc_listpids(kind: u32, typeinfo: u32, buffer: *mut c_void, buffersize: i32) -> i32;
    /// mach/mach_init.h: the calling thread's MIG reply port, made if it has none.
    mach2::mig::mig_get_reply_port => fn mig_get_reply_port() -> mach_port_t;
    /// mach/mach_init.h: destroys the calling thread's MIG reply port.
    mach2::mig::mig_dealloc_reply_port => fn mig_dealloc_reply_port(reply_port: mach_port_t) -> ();
    /// pthread.h: the calling thread's value in slot `key`.
    libc::pthread_getspecific => fn pthread_getspecific(key: pthread_key_t) -> *mut c_void;
    /// sys/sysctl.h
    libc::sysctl => fn sysctl(
        name: *mut i32,
        namelen: u32,
        oldp: *mut c_void,
        oldlenp: *mut usize,
        newp: *mut c_void,
        newlen: usize,
    ) -> i32;
}
