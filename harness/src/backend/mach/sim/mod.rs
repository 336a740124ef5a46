//! mach-sim: a model of one task's IPC space under XNU's port-rights rules, with the libpthread thread
//! lifecycle around it, implementing [`Mach`] so the Mach workload runs on any OS.
//!
//! What is modelled, and where the sources say so (apple-oss-distributions/xnu at xnu-11417.121.6, "old"
//! at xnu-1504.15.3, macOS 10.6's; libpthread-539; Libc-594.9.5 for 10.6's C library). The rules that
//! changed between releases are a [`Profile`]'s (`Rules`, each citing the tag that changed it); the
//! profiles between 10.6 and today (10.11, 10.13, 10.14) follow xnu-3248.60.10, xnu-4570.71.2 and
//! xnu-4903.270.47 with libpthread-138.10.4, -301.50.1 and -330.250.2.
//!
//! - A space maps names to entries: type bits (`MACH_PORT_TYPE_*`) and a user-reference count. A port has
//!   at most one name in a space, so a second send right to a named port adds a user reference rather
//!   than a name (`ipc_right_copyout`, osfmk/ipc/ipc_right.c). Names carry a generation in their low byte,
//!   so a freed name is not handed out again unchanged (`ipc_entry_alloc`, osfmk/ipc/ipc_entry.c).
//! - User references of a send right saturate: modern XNU leaves them pegged at `MACH_PORT_UREFS_MAX`
//!   (65535), old XNU at 65534 for copyouts that allow overflow, as `mach_thread_self` does
//!   (`ipc_right_copyout`; `thread_self_trap` in osfmk/kern/ipc_tt.c). See [`Profile`].
//! - `mach_port_mod_refs` (`ipc_right_delta`): on modern XNU a pegged count ignores every delta but the
//!   one that removes all references, and overflow pegs; on old XNU there is no pegged state and a
//!   positive overflow returns `KERN_UREFS_OVERFLOW`. Underflow is `KERN_INVALID_VALUE`; the wrong right
//!   `KERN_INVALID_RIGHT`; an unknown name `KERN_INVALID_NAME`.
//! - `mach_port_deallocate` (`ipc_right_dealloc`): one reference less, the name freed at zero; a pegged
//!   count is left alone on modern XNU; a receive right is `KERN_INVALID_RIGHT`.
//! - When a port dies, a send right naming it turns into a dead name keeping its user references
//!   (`ipc_right_check`); `mach_port_names` reports it as `DEAD_NAME` (`mach_port_names_helper`,
//!   osfmk/ipc/mach_port.c) and `mach_port_get_refs` answers 0 for the wrong right.
//! - Destroying a receive right whose name also holds send rights leaves a dead name (`ipc_right_delta`,
//!   `MACH_PORT_RIGHT_RECEIVE`).
//! - Modern XNU raises a guard exception when a task deallocates or changes references of a name it does
//!   not have, of a right it does not hold, or by a value it may not (`kGUARD_EXC_INVALID_NAME`,
//!   `_INVALID_RIGHT`, `_INVALID_VALUE`: `mach_port_deallocate_kernel`, osfmk/ipc/mach_port.c;
//!   `ipc_right_delta`, osfmk/ipc/ipc_right.c), except for live/dead confusion; old XNU only returns the
//!   code. Whether the exception is delivered depends on the task ([`Task`]): not to an ordinary
//!   program, fatally to a hardened one. A guard raised while the kernel terminates a thread is never
//!   delivered.
//! - Threads: `_bsdthread_create` gives the task one user reference to the new thread's port, the name
//!   libpthread records (apple/darwin-libpthread kern/kern_support.c); `pthread_mach_thread_np` adds none;
//!   TSD destructors run before `_pthread_terminate` (src/pthread.c); `_bsdthread_terminate` drops the
//!   library's reference for every thread, detached, joined or never joined, after a joiner may already
//!   have been woken; the port dies when the thread is freed later (`ipc_thread_terminate`), which also
//!   releases the kernel's copies of the thread's exception ports.
//! - `thread_swap_exception_ports` (osfmk/kern/ipc_tt.c): every selected slot gets its own copy of the new
//!   send right (the caller keeps its own); the replaced handlers come back grouped by (port, behavior,
//!   flavor) as send rights the caller now owns, `MACH_PORT_NULL` for empty slots.
//!
//! - `task_threads` copies out a send right to every listed thread, and `mach_host_self` one to the host
//!   port, each a user reference more on a name the space already has (`ipc_object_copyout`,
//!   osfmk/ipc/ipc_object.c:1007; `host_self_trap`, osfmk/kern/ipc_host.c:175-178 in xnu-11417.121.6).
//! - The C library's semaphores for joiners, where a release has them: `semaphore_create` is a new send
//!   right, `semaphore_destroy` frees it.
//!
//! Port sets exist as names (allocated, destroyed by `mod_refs(-1)` or `deallocate`), without members.
//! Not modelled: set membership, send-once rights, notifications and their requests, message queues, MIG
//! reply ports, pinned ports (`KERN_INVALID_CAPABILITY`: only first-party tasks pin their thread ports,
//! osfmk/ipc/ipc_init.c:116-117). `mach_port_allocate` of another right returns `KERN_INVALID_VALUE`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t, EXC_TYPES_COUNT};
use super::kern_return::*;
use super::port::*;
use super::{
    ExceptionHandler, KernResult, Mach, IKOT_HOST, IKOT_NONE, IKOT_SEMAPHORE, IKOT_TASK_CONTROL, IKOT_THREAD_CONTROL,
};

/// Whose rules the model follows: the OS-dependent rules are data, chosen here (`Profile::rules`). Each
/// profile is one macOS release's kernel and thread library, named by its kernel; the tags are those of
/// apple-oss-distributions. Which libpthread a release shipped is not recorded in the sources: it is
/// inferred from the availability annotations of its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Profile {
    /// macOS 10.6 (xnu-1504.15.3, Libc-594.9.5): urefs of a send right stop at 65534;
    /// `mach_port_mod_refs` reports positive overflow with `KERN_UREFS_OVERFLOW`; no guard exceptions; a
    /// joinable thread that exits unjoined keeps a semaphore of a pool until it is joined.
    #[cfg_attr(feature = "cli", value(name = "xnu-1504"))]
    #[serde(rename = "xnu-1504")]
    Xnu1504,
    /// macOS 10.11 (xnu-3248.60.10, libpthread-138.10.4, whose newest availability annotation is 10.11):
    /// the count rules of 10.6; a joinable thread that exits unjoined keeps a semaphore from its cache.
    #[cfg_attr(feature = "cli", value(name = "xnu-3248"))]
    #[serde(rename = "xnu-3248")]
    Xnu3248,
    /// macOS 10.13 (xnu-4570.71.2, libpthread-301.50.1, libplatform-161.50.1): urefs peg at 65535 and stay
    /// pegged (from xnu-3789.31.2, 10.12.2); still no guard exceptions; the unjoined semaphore as in 10.11.
    #[cfg_attr(feature = "cli", value(name = "xnu-4570"))]
    #[serde(rename = "xnu-4570")]
    Xnu4570,
    /// macOS 10.14 (xnu-4903.270.47, libpthread-330.250.2): guard exceptions raised, delivered to no
    /// task; joins without semaphores.
    #[cfg_attr(feature = "cli", value(name = "xnu-4903"))]
    #[serde(rename = "xnu-4903")]
    Xnu4903,
    /// Today's rules (macOS 15: xnu-11417.121.6, libpthread-539, the newest published).
    #[cfg_attr(feature = "cli", value(name = "xnu-11417"))]
    #[serde(rename = "xnu-11417")]
    Xnu11417,
}

/// The modelled task, as XNU classes it for Mach-port guard exceptions. An ordinary program gets
/// `task_exc_guard = (task_exc_guard_default >> TASK_EXC_GUARD_THIRD_PARTY_DEFAULT_SHIFT) & 0xff`, which is
/// `TASK_EXC_GUARD_NONE`: the optional guard codes (`kGUARD_EXC_INVALID_NAME`, `_INVALID_RIGHT`,
/// `_INVALID_VALUE`, ...) are raised but never delivered (`task_set_exc_guard_ctrl_port_default`,
/// osfmk/kern/task.c:9262-9300 in xnu-11417.121.6; `mach_port_guard_ast` returns when
/// `TASK_EXC_GUARD_MP_DELIVER` is clear, osfmk/ipc/ipc_policy.c:869-871), and the call only returns its
/// code. A platform binary or a task with the browser-engine entitlements (`task_is_hardened_binary`,
/// task.c:736-740) gets `_TASK_EXC_GUARD_ALL_FATAL` (task.c:555), under which those codes kill it
/// (ipc_policy.c:890-915). The code-signing hardened runtime (`CS_RUNTIME`) plays no part in either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Task {
    /// An ordinary third-party program (what threadleak and the programs it measures are).
    #[default]
    #[cfg_attr(feature = "cli", value(name = "third-party"))]
    #[serde(rename = "third-party")]
    ThirdParty,
    /// A platform binary or a browser-engine-entitled task: optional guard codes are fatal.
    #[cfg_attr(feature = "cli", value(name = "hardened"))]
    #[serde(rename = "hardened")]
    Hardened,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::ThirdParty => "third-party",
            Task::Hardened => "hardened",
        }
    }
}

/// Where the C library of a release keeps the semaphore a joinable thread that exits unjoined leaves
/// for its joiner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JoinSemaphores {
    /// libpthread-330.201.1 and later: none; a join waits on the thread's exit gate (pthread_join_context,
    /// src/pthread_cancelable.c:441-500 in libpthread-330.201.1).
    None,
    /// libpthread-138 to -301 (10.11 to 10.13): `_pthread_exit` takes `os_get_cached_semaphore()` (the exiting
    /// thread's one-slot cache, or a new `semaphore_create`) into `joiner_notify`, then clears the cache
    /// (src/pthread.c:1431-1438 in libpthread-218.60.3, :1312-1319 in -138.10.4, :1486-1493 in -301.50.1);
    /// the kernel only signals it (kern/kern_support.c); only `pthread_join` takes it, putting it in the
    /// joiner's cache, where `os_put_cached_semaphore` destroys the one it displaces (libplatform-126.1.2
    /// include/os/semaphore_private.h:68-76, through `_os_semaphore_dispose`, src/os/semaphore.c:53-58). `join_destroys`: libpthread-301's join first takes its own semaphore from
    /// the cache and puts it back last, destroying the thread's (src/pthread_cancelable.c:337, 382, 386-387);
    /// -138 and -218 keep the thread's (src/pthread_cancelable.c:274 in -218.60.3).
    Cached { join_destroys: bool },
    /// Libc-594.9.5 (macOS 10.6): `_pthread_exit` takes `new_sem_from_pool()` into `joiner_notify`
    /// (pthreads/pthread.c:1749-1761); the pool grows 16 at a time with `semaphore_create`, a new send
    /// right each (pthread.c:2136-2152); only `pthread_join` returns it (`restore_sem_to_pool`,
    /// pthreads/pthread_cancelable.c:211). The kernel only signals it (`bsdthread_terminate`,
    /// bsd/kern/pthread_synch.c:412-413 in xnu-1504.15.3).
    Pool16,
}

/// What becomes of the optional Mach-port guard exceptions (`kGUARD_EXC_INVALID_NAME`, `_INVALID_RIGHT`,
/// `_INVALID_VALUE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guards {
    /// Not raised: the calls only return their code (osfmk/ipc/mach_port.c:806-808, 939-941 in
    /// xnu-4570.71.2).
    None,
    /// Raised, and delivered to no task on a release kernel: `task_exc_guard_default` is 0 and nothing
    /// sets it (osfmk/kern/task.c:340-345, 1209; osfmk/ipc/mach_port.c:2405 in xnu-4903.270.47).
    Undelivered,
    /// Raised; delivered as the [`Task`] says.
    ByTask,
}

/// The rules that differ between releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rules {
    /// The highest count a send right reaches by copyout (from xnu-3789.31.2: `MACH_PORT_UREFS_MAX`; before:
    /// one less, "maximum urefs for send is MACH_PORT_UREFS_MAX-1", osfmk/ipc/ipc_right.c:2457-2465 in
    /// xnu-3248.60.10).
    send_urefs_cap: mach_port_urefs_t,
    /// From xnu-3789.31.2: once a count reaches `MACH_PORT_UREFS_MAX` it is sticky ("leave urefs pegged"):
    /// deallocate leaves it, `mod_refs` ignores any delta but `-MACH_PORT_UREFS_MAX`, and overflowing deltas
    /// peg (osfmk/ipc/ipc_right.c:877, 1277-1290 in xnu-3789.31.2). Before: counts move freely and positive
    /// overflow is `KERN_UREFS_OVERFLOW` (ipc_right.c:1317-1319 in xnu-3248.60.10).
    sticky_peg: bool,
    /// Invalid names, rights and values in `mach_port_deallocate`/`mod_refs`: from xnu-4903.221.2 (the first
    /// 10.14 tag published) they raise guard exceptions.
    guards: Guards,
    /// From xnu-3789.31.2: `ipc_right_delta` refuses `|delta| > MACH_PORT_UREFS_MAX` on a send right or dead
    /// name, once the right's type is checked (osfmk/ipc/ipc_right.c:1270, 1331 in xnu-3789.31.2;
    /// :1485-1489, 1565-1569 in xnu-11417.121.6).
    delta_range_check: bool,
    /// Exception types a thread has slots for (`EXC_TYPES_COUNT`, osfmk/mach/i386/exception.h:66: 11 in
    /// xnu-1504.15.3, 14 from xnu-3247.1.106).
    exc_types: usize,
    /// The highest exception behavior `thread_swap_exception_ports` accepts, flags masked: 3
    /// (`EXCEPTION_STATE_IDENTITY`) up to xnu-8019 (osfmk/kern/ipc_tt.c:1681-1695 in xnu-1504.15.3,
    /// :2455-2462 in xnu-4903.270.47); 5 (`_STATE_IDENTITY_PROTECTED`) from xnu-11215.1.10
    /// (`set_exception_ports_validation`, ipc_tt.c:4225-4284 in xnu-11417.121.6).
    max_behavior: exception_behavior_t,
    /// The flags a behavior may carry: `MACH_EXCEPTION_CODES` only up to 10.14; today also `_ERRORS` (from
    /// xnu-6153.11.26) and `_BACKTRACE_PREFERRED` (from xnu-8792.41.9; osfmk/mach/exception_types.h:110-145
    /// in xnu-11417.121.6).
    exception_flags: exception_behavior_t,
    /// The C library's semaphores for joiners.
    join_semaphores: JoinSemaphores,
    /// A thread that is terminating (its port not yet dead) comes back from `task_threads` as
    /// `MACH_PORT_NULL` (from xnu-7195.101.1, `thread->ipc_active`: osfmk/kern/ipc_tt.c:4000-4020 in
    /// xnu-11417.121.6); before, as a send right to its port (`convert_thread_to_port`, ipc_tt.c:2145 in
    /// xnu-4903.270.47).
    terminating_threads_null: bool,
}

/// `MACH_EXCEPTION_CODES`, the flag every release accepts.
const CODES: exception_behavior_t = 1 << 31;

impl Profile {
    /// Every profile, oldest release first.
    pub const ALL: &'static [Profile] =
        &[Profile::Xnu1504, Profile::Xnu3248, Profile::Xnu4570, Profile::Xnu4903, Profile::Xnu11417];

    /// Whether a joinable thread that exits unjoined leaves a semaphore (a send right) for its joiner
    /// under this release's C library.
    pub fn joinable_threads_keep_a_semaphore(self) -> bool {
        self.rules().join_semaphores != JoinSemaphores::None
    }

    /// The macOS release whose sources the profile follows.
    pub fn macos(self) -> &'static str {
        match self {
            Profile::Xnu1504 => "10.6",
            Profile::Xnu3248 => "10.11",
            Profile::Xnu4570 => "10.13",
            Profile::Xnu4903 => "10.14",
            Profile::Xnu11417 => "15",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Xnu1504 => "xnu-1504",
            Profile::Xnu3248 => "xnu-3248",
            Profile::Xnu4570 => "xnu-4570",
            Profile::Xnu4903 => "xnu-4903",
            Profile::Xnu11417 => "xnu-11417",
        }
    }

    /// The release's rules, each derived from the next newer release's by what changed between them.
    fn rules(self) -> Rules {
        let today = Rules {
            send_urefs_cap: MACH_PORT_UREFS_MAX,
            sticky_peg: true,
            guards: Guards::ByTask,
            delta_range_check: true,
            exc_types: EXC_TYPES_COUNT,
            max_behavior: 5,
            exception_flags: CODES | 1 << 30 | 1 << 29,
            join_semaphores: JoinSemaphores::None,
            terminating_threads_null: true,
        };
        let mojave = Rules {
            guards: Guards::Undelivered,
            max_behavior: 3,
            exception_flags: CODES,
            terminating_threads_null: false,
            ..today
        };
        let high_sierra =
            Rules { guards: Guards::None, join_semaphores: JoinSemaphores::Cached { join_destroys: true }, ..mojave };
        let el_capitan = Rules {
            send_urefs_cap: MACH_PORT_UREFS_MAX - 1,
            sticky_peg: false,
            delta_range_check: false,
            join_semaphores: JoinSemaphores::Cached { join_destroys: false },
            ..high_sierra
        };
        match self {
            Profile::Xnu11417 => today,
            Profile::Xnu4903 => mojave,
            Profile::Xnu4570 => high_sierra,
            Profile::Xnu3248 => el_capitan,
            Profile::Xnu1504 => Rules { exc_types: 11, join_semaphores: JoinSemaphores::Pool16, ..el_capitan },
        }
    }
}

type PortId = usize;
type ThreadId = usize;

/// A kernel port object.
#[derive(Clone, Debug)]
struct Port {
    active: bool,
    /// The kernel object it stands for (`IKOT_*`, osfmk/kern/ipc_kobject.h: the same numbers from
    /// xnu-1504.15.3 to xnu-11417.121.6), `IKOT_NONE` for a port of the task's own.
    kobject: u32,
}

/// A name's entry in the space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The port the rights name; kept for dead names too, so the model can say which port died.
    port: PortId,
    /// `MACH_PORT_TYPE_*` bits held.
    pub bits: mach_port_type_t,
    /// User references of the send right or dead name (0 for a receive right alone).
    pub urefs: mach_port_urefs_t,
}

/// One exception handler slot of a thread: the port, behavior and flavor installed, if any.
type Slot = Option<(PortId, exception_behavior_t, thread_state_flavor_t)>;

#[derive(Clone, Debug)]
struct Thread {
    port: PortId,
    /// The name libpthread recorded for the thread (`pthread_mach_thread_np`).
    kport: mach_port_name_t,
    detached: bool,
    joined: bool,
    /// Exception handler slots, indexed by exception type: (port, behavior, flavor).
    exc: [Slot; EXC_TYPES_COUNT],
    /// The semaphore the thread left for its joiner (`joiner_notify`), until a join takes it.
    joinsem: Option<mach_port_name_t>,
    /// libplatform's one-slot semaphore cache of the thread (`__TSD_SEMAPHORE_CACHE`), libpthread-138 to -301.
    sem_cache: Option<mach_port_name_t>,
    /// `_bsdthread_terminate` has run: the thread is off the task's thread list.
    released: bool,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// `_bsdthread_terminate`: the kernel deallocates libpthread's reference to the thread port.
    Release(ThreadId),
    /// The thread is freed and its port destroyed.
    Free(ThreadId),
}

/// The whole model: one task, its space, its threads, and a clock.
#[derive(Clone, Debug)]
struct State {
    rules: Rules,
    task: Task,
    /// Guard exceptions raised and not delivered (a third-party task, or a terminating thread).
    undelivered: u64,
    /// Set while the kernel terminates a thread: a guard raised then is never delivered.
    terminating: bool,
    /// Libc-594's pool of semaphores for joiners: names of send rights, free for the taking.
    sem_pool: Vec<mach_port_name_t>,
    /// Semaphores the C library has created, and destroyed.
    semaphores: u64,
    semaphores_destroyed: u64,
    delay: u64,
    clock: u64,
    ports: Vec<Port>,
    entries: BTreeMap<mach_port_name_t, Entry>,
    /// The name of each port that has live rights in the space (dead names are not listed).
    by_port: HashMap<PortId, mach_port_name_t>,
    /// Next generation per name index; a freed index is reused with the next generation.
    generations: Vec<u8>,
    free_indexes: Vec<u32>,
    threads: Vec<Thread>,
    current: ThreadId,
    /// Kernel events to come, by (clock time, order of scheduling).
    pending: BTreeMap<(u64, u64), Event>,
    scheduled: u64,
    /// A fatal guard exception, once raised: every later call fails.
    fault: Option<String>,
    /// The host port, once `mach_host_self` has named it.
    host: Option<PortId>,
    /// Send rights copied out to a name already at the cap, and dropped there ("leave urefs pegged").
    absorbed: u64,
    /// `mach_port_mod_refs` deltas a pegged count ignored.
    ignored: u64,
}

/// mach-sim, implementing [`Mach`].
pub struct Sim {
    state: Mutex<State>,
    profile: Profile,
}

impl Sim {
    /// A task with its own task port and a main thread, under `profile`. `delay` model clock steps pass
    /// between a thread's exit hook and the kernel's release of its port, and as many again before the
    /// port dies.
    pub fn new(profile: Profile, delay: u32) -> Sim {
        Sim::with_task(profile, delay, Task::default())
    }

    /// Like [`Sim::new`], for the task `task` (see [`Task`]).
    pub fn with_task(profile: Profile, delay: u32, task: Task) -> Sim {
        let mut state = State {
            rules: profile.rules(),
            task,
            undelivered: 0,
            terminating: false,
            sem_pool: Vec::new(),
            semaphores: 0,
            semaphores_destroyed: 0,
            delay: u64::from(delay),
            clock: 0,
            ports: Vec::new(),
            entries: BTreeMap::new(),
            by_port: HashMap::new(),
            generations: Vec::new(),
            free_indexes: Vec::new(),
            threads: Vec::new(),
            current: 0,
            pending: BTreeMap::new(),
            scheduled: 0,
            fault: None,
            host: None,
            absorbed: 0,
            ignored: 0,
        };
        // mach_task_self(): a send right to the task's own port.
        let task = state.new_port(IKOT_TASK_CONTROL);
        state.copyout_send(task);
        // The main thread, as libpthread records it.
        state.new_thread(false);
        Sim { state: Mutex::new(state), profile }
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One step of the clock, then whatever the kernel has scheduled for now; fails once a fatal guard
    /// exception has been raised.
    fn enter(&self) -> Result<MutexGuard<'_, State>, kern_return_t> {
        let mut state = self.lock();
        state.tick();
        match state.fault {
            Some(_) => Err(KERN_TERMINATED),
            None => Ok(state),
        }
    }

    /// The space, name by name, for tests.
    pub fn space(&self) -> BTreeMap<mach_port_name_t, Entry> {
        self.lock().entries.clone()
    }

    /// Lets every scheduled kernel event happen.
    pub fn drain(&self) {
        let mut state = self.lock();
        if let Some((&(at, _), _)) = state.pending.last_key_value() {
            state.clock = state.clock.max(at);
        }
        state.process_due();
    }

    /// The model's invariants: checked by the property tests after every operation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let state = self.lock();
        for (&name, e) in &state.entries {
            if e.urefs > MACH_PORT_UREFS_MAX {
                return Err(format!("{name:#x}: {} user references", e.urefs));
            }
            if e.bits & MACH_PORT_TYPE_SEND != 0 && e.bits & MACH_PORT_TYPE_DEAD_NAME != 0 {
                return Err(format!("{name:#x} holds a send right and a dead name"));
            }
            let has_urefs = e.bits & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME) != 0;
            if has_urefs != (e.urefs > 0) {
                return Err(format!("{name:#x}: bits {:#x} with {} user references", e.bits, e.urefs));
            }
            if e.bits == 0 {
                return Err(format!("{name:#x} holds no right"));
            }
            let live = e.bits & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE) != 0;
            if live && state.by_port.get(&e.port) != Some(&name) {
                return Err(format!("{name:#x} names port {} which maps to {:?}", e.port, state.by_port.get(&e.port)));
            }
        }
        for (&port, &name) in &state.by_port {
            match state.entries.get(&name) {
                Some(e) if e.port == port && e.bits & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE) != 0 => {}
                other => return Err(format!("port {port} maps to {name:#x}, which is {other:?}")),
            }
        }
        Ok(())
    }
}

impl State {
    fn new_port(&mut self, kobject: u32) -> PortId {
        self.ports.push(Port { active: true, kobject });
        self.ports.len() - 1
    }

    /// A free name: an index and a generation in the low byte whose two low bits are always set, starting
    /// at 0x03 and advancing by 4 each time the index is reused (the entry's generation starts at 0xff and
    /// rolls over on the first claim: ipc_space.c:267-271, `ipc_entry_claim` in ipc_entry.c:198 of
    /// xnu-11417.121.6; XNU also randomises the free list and the rollover period, which only changes
    /// which names come out).
    fn new_name(&mut self) -> mach_port_name_t {
        let index = self.free_indexes.pop().unwrap_or_else(|| {
            self.generations.push(0xff);
            self.generations.len() as u32
        });
        let generation = &mut self.generations[index as usize - 1];
        *generation = generation.wrapping_add(4);
        (index << 8) | mach_port_name_t::from(*generation)
    }

    fn free_name(&mut self, name: mach_port_name_t) {
        if let Some(entry) = self.entries.remove(&name) {
            if self.by_port.get(&entry.port) == Some(&name) {
                self.by_port.remove(&entry.port);
            }
            self.free_indexes.push(name >> 8);
        }
    }

    fn new_thread(&mut self, detached: bool) -> ThreadId {
        let port = self.new_port(IKOT_THREAD_CONTROL);
        // _bsdthread_create: ipc_port_copyout_send of the new thread's port into the task's space.
        let kport = self.copyout_send(port);
        self.threads.push(Thread {
            port,
            kport,
            detached,
            joined: false,
            exc: [None; EXC_TYPES_COUNT],
            joinsem: None,
            sem_cache: None,
            released: false,
        });
        self.threads.len() - 1
    }

    fn tick(&mut self) {
        self.clock += 1;
        self.process_due();
    }

    fn process_due(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > self.clock {
                break;
            }
            let event = entry.remove();
            self.happen(event);
        }
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.scheduled += 1;
        self.pending.insert((self.clock + after, self.scheduled), event);
    }

    fn happen(&mut self, event: Event) {
        match event {
            Event::Release(t) => {
                // _bsdthread_terminate marks the thread terminating (thread_terminate_pinned, AST_APC) before
                // it deallocates libpthread's reference (kern/kern_support.c:511-522 in libpthread-539), and
                // ast_taken_user handles AST_APC before AST_MACH_EXCEPTION (osfmk/kern/ast.c:242-250): a
                // guard raised by that deallocation (a name the task no longer has) is never delivered. The
                // result is ignored.
                let kport = self.threads[t].kport;
                self.threads[t].released = true;
                self.terminating = true;
                let _ = self.deallocate(kport);
                self.terminating = false;
            }
            Event::Free(t) => {
                let port = self.threads[t].port;
                self.ports[port].active = false;
                // ipc_thread_terminate releases the kernel's exception port copies.
                self.threads[t].exc = [None; EXC_TYPES_COUNT];
            }
        }
    }

    /// A semaphore from Libc-594's pool, which grows by 16 `semaphore_create`s when empty, each a new
    /// send right in the space (`new_sem_from_pool`, pthreads/pthread.c:2136-2152; `convert_semaphore_to_port`,
    /// osfmk/kern/ipc_sync.c:103-114 in xnu-1504.15.3).
    fn take_semaphore(&mut self) -> mach_port_name_t {
        if self.sem_pool.is_empty() {
            for _ in 0..16 {
                let name = self.semaphore_create();
                self.sem_pool.push(name);
            }
        }
        self.sem_pool.pop().expect("the pool was just filled")
    }

    /// A new semaphore: `semaphore_create` copies out a send right to it, a new name with one reference
    /// (`convert_semaphore_to_port`, osfmk/kern/ipc_sync.c:134-176 in xnu-3248.60.10).
    fn semaphore_create(&mut self) -> mach_port_name_t {
        self.semaphores += 1;
        let semaphore = self.new_port(IKOT_SEMAPHORE);
        self.copyout_send(semaphore)
    }

    /// `semaphore_destroy`: moves the send right in (`semaphore_consume_ref_t`, osfmk/mach/mach_types.defs:494
    /// in xnu-3248.60.10), freeing the name, and the semaphore dies.
    fn semaphore_destroy(&mut self, name: mach_port_name_t) {
        if let Some(e) = self.entries.get(&name) {
            self.ports[e.port].active = false;
            self.free_name(name);
            self.semaphores_destroyed += 1;
        }
    }

    /// `os_get_cached_semaphore` on thread `t`: its cached semaphore, or a new one (libplatform-126.1.2
    /// include/os/semaphore_private.h:55-64; the new one from `_os_semaphore_create`, src/os/semaphore.c:40-50).
    fn get_cached_semaphore(&mut self, t: ThreadId) -> mach_port_name_t {
        match self.threads[t].sem_cache.take() {
            Some(name) => name,
            None => self.semaphore_create(),
        }
    }

    /// `os_put_cached_semaphore` on thread `t`: caches `sem` (or nothing), destroying what it displaces
    /// (semaphore.c:53-58).
    fn put_cached_semaphore(&mut self, t: ThreadId, sem: Option<mach_port_name_t>) {
        if let Some(old) = std::mem::replace(&mut self.threads[t].sem_cache, sem) {
            self.semaphore_destroy(old);
        }
    }

    /// `ipc_right_check`: a send right whose port has died becomes a dead name keeping its references.
    fn check(&mut self, name: mach_port_name_t) {
        let Some(e) = self.entries.get_mut(&name) else { return };
        if e.bits & MACH_PORT_TYPE_SEND != 0 && !self.ports[e.port].active {
            e.bits = MACH_PORT_TYPE_DEAD_NAME;
            let port = e.port;
            if self.by_port.get(&port) == Some(&name) {
                self.by_port.remove(&port);
            }
        }
    }

    /// The type `mach_port_names` reports: a dead port's send right shows as a dead name, unconverted.
    fn reported_type(&self, e: &Entry) -> mach_port_type_t {
        if e.bits & MACH_PORT_TYPE_SEND != 0 && !self.ports[e.port].active {
            MACH_PORT_TYPE_DEAD_NAME
        } else {
            e.bits
        }
    }

    /// Copies a send right to `port` out into the space (`ipc_right_copyout`, with overflow allowed).
    fn copyout_send(&mut self, port: PortId) -> mach_port_name_t {
        if !self.ports[port].active {
            return MACH_PORT_DEAD;
        }
        if let Some(&name) = self.by_port.get(&port) {
            let cap = self.rules.send_urefs_cap;
            let e = self.entries.get_mut(&name).expect("by_port names an entry");
            if e.bits & MACH_PORT_TYPE_SEND != 0 {
                if e.urefs < cap {
                    e.urefs += 1;
                } else {
                    // "leave urefs pegged": the extra right is consumed, the count stays.
                    self.absorbed += 1;
                }
            } else {
                e.bits |= MACH_PORT_TYPE_SEND;
                e.urefs = 1;
            }
            return name;
        }
        let name = self.new_name();
        self.entries.insert(name, Entry { port, bits: MACH_PORT_TYPE_SEND, urefs: 1 });
        self.by_port.insert(port, name);
        name
    }

    /// A bad name, right or value passed to `mach_port_deallocate`/`mod_refs`: the code, and from 10.14 the
    /// guard exception it raises (`mach_port_guard_exception`, osfmk/ipc/ipc_policy.c:752-769 in
    /// xnu-11417.121.6), named after the code: `kGUARD_EXC_INVALID_NAME`, `_INVALID_RIGHT` or
    /// `_INVALID_VALUE`, all optional codes (osfmk/mach/port.h:529-564): today fatal for a hardened task and
    /// not delivered to a third-party one; in 10.14 delivered to none.
    fn bad(&mut self, kr: kern_return_t, call: &str, name: mach_port_name_t) -> kern_return_t {
        if self.rules.guards == Guards::None {
            return kr;
        }
        let guard = match kr {
            KERN_INVALID_NAME => "kGUARD_EXC_INVALID_NAME",
            KERN_INVALID_VALUE => "kGUARD_EXC_INVALID_VALUE",
            _ => "kGUARD_EXC_INVALID_RIGHT",
        };
        match self.task {
            Task::Hardened if !self.terminating && self.rules.guards == Guards::ByTask => {
                if self.fault.is_none() {
                    self.fault = Some(format!("EXC_GUARD {guard}: {call} on name {name:#x}"));
                }
            }
            _ => self.undelivered += 1,
        }
        kr
    }

    /// `mach_port_deallocate` (`ipc_right_dealloc`).
    fn deallocate(&mut self, name: mach_port_name_t) -> KernResult<()> {
        if name == MACH_PORT_NULL || name == MACH_PORT_DEAD {
            return Ok(());
        }
        if !self.entries.contains_key(&name) {
            return Err(self.bad(KERN_INVALID_NAME, "mach_port_deallocate", name));
        }
        self.check(name);
        // A port set is destroyed (ipc_right_dealloc's PORT_SET case, ipc_right.c:1043-1058).
        if self.entries[&name].bits == MACH_PORT_TYPE_PORT_SET {
            self.free_name(name);
            return Ok(());
        }
        let sticky = self.rules.sticky_peg;
        let e = self.entries.get_mut(&name).expect("checked above");
        if e.bits & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME) == 0 {
            return Err(self.bad(KERN_INVALID_RIGHT, "mach_port_deallocate", name));
        }
        if sticky && e.urefs == MACH_PORT_UREFS_MAX {
            return Ok(());
        }
        e.urefs -= 1;
        if e.urefs == 0 {
            self.drop_send_or_dead(name);
        }
        Ok(())
    }

    /// The last reference of a send right or dead name is gone: free the name, or keep the receive right.
    fn drop_send_or_dead(&mut self, name: mach_port_name_t) {
        let e = self.entries.get_mut(&name).expect("caller holds the entry");
        e.urefs = 0;
        e.bits &= !(MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_DEAD_NAME);
        if e.bits == 0 {
            self.free_name(name);
        }
    }

    /// `mach_port_mod_refs` (`mach_port_mod_refs`, osfmk/ipc/mach_port.c:889-924, and `ipc_right_delta`,
    /// osfmk/ipc/ipc_right.c:1241-1680 in xnu-11417.121.6; mach_port.c:885-914 and ipc_right.c:957-1269
    /// in xnu-1504.15.3, which take the same paths without guards or the range check).
    fn mod_refs(
        &mut self,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> KernResult<()> {
        const CALL: &str = "mach_port_mod_refs";
        // An unknown right is refused before the name is looked at, without a guard.
        if right >= MACH_PORT_RIGHT_NUMBER {
            return Err(KERN_INVALID_VALUE);
        }
        // No name at all: send and send-once rights to nothing take any delta (!MACH_PORT_VALID).
        if name == MACH_PORT_NULL || name == MACH_PORT_DEAD {
            return match right {
                MACH_PORT_RIGHT_SEND | MACH_PORT_RIGHT_SEND_ONCE => Ok(()),
                _ => Err(KERN_INVALID_NAME),
            };
        }
        if !self.entries.contains_key(&name) {
            return Err(self.bad(KERN_INVALID_NAME, CALL, name));
        }
        let bits = self.entries[&name].bits;
        match right {
            MACH_PORT_RIGHT_RECEIVE => {
                if bits & MACH_PORT_TYPE_RECEIVE == 0 {
                    return Err(self.bad(KERN_INVALID_RIGHT, CALL, name));
                }
                match delta {
                    0 => Ok(()),
                    -1 => {
                        self.destroy_receive(name);
                        Ok(())
                    }
                    _ => Err(self.bad(KERN_INVALID_VALUE, CALL, name)),
                }
            }
            MACH_PORT_RIGHT_SEND | MACH_PORT_RIGHT_DEAD_NAME => {
                self.check(name);
                let bits_now = self.entries[&name].bits;
                let want = if right == MACH_PORT_RIGHT_SEND { MACH_PORT_TYPE_SEND } else { MACH_PORT_TYPE_DEAD_NAME };
                if bits_now & want == 0 {
                    // "invalid right exception only when not live/dead confusion" (ipc_right.c:1535-1549): a
                    // send right asked of a dead name (one that was dead, or died just now) raises nothing,
                    // nor does the first send right asked of a receive right (the AE case, delta 1).
                    let confusion = right == MACH_PORT_RIGHT_SEND
                        && (bits_now & MACH_PORT_TYPE_DEAD_NAME != 0
                            || (bits_now == MACH_PORT_TYPE_RECEIVE && delta == 1));
                    return Err(if confusion { KERN_INVALID_RIGHT } else { self.bad(KERN_INVALID_RIGHT, CALL, name) });
                }
                let urefs = self.entries[&name].urefs;
                let new = match self.apply_delta(urefs, delta, right) {
                    Err(KERN_INVALID_VALUE) => return Err(self.bad(KERN_INVALID_VALUE, CALL, name)),
                    other => other?,
                };
                let e = self.entries.get_mut(&name).expect("checked above");
                e.urefs = new;
                if new == 0 {
                    self.drop_send_or_dead(name);
                }
                Ok(())
            }
            // ipc_right.c:1268-1297: -1 destroys the set and frees the name; 0 does nothing.
            MACH_PORT_RIGHT_PORT_SET => {
                if bits & MACH_PORT_TYPE_PORT_SET == 0 {
                    return Err(self.bad(KERN_INVALID_RIGHT, CALL, name));
                }
                match delta {
                    0 => Ok(()),
                    -1 => {
                        self.free_name(name);
                        Ok(())
                    }
                    _ => Err(self.bad(KERN_INVALID_VALUE, CALL, name)),
                }
            }
            // No send-once rights are modelled; a missing one raises nothing (ipc_right.c:1406-1407), nor does
            // MACH_PORT_RIGHT_LABELH (ipc_right.c:1649-1650).
            _ => Err(KERN_INVALID_RIGHT),
        }
    }

    /// The new count after `delta`, under the profile's rules.
    fn apply_delta(&mut self, urefs: u32, delta: i32, right: mach_port_right_t) -> KernResult<u32> {
        let max = i64::from(MACH_PORT_UREFS_MAX);
        let (urefs, delta) = (i64::from(urefs), i64::from(delta));
        // Modern XNU checks the range first, pegged or not (ipc_right.c:1565-1569).
        if self.rules.delta_range_check && delta.abs() > max {
            return Err(KERN_INVALID_VALUE);
        }
        if self.rules.sticky_peg {
            if urefs == max {
                if delta == -max {
                    return Ok(0);
                }
                if delta != 0 {
                    self.ignored += 1;
                }
                return Ok(max as u32);
            }
            if urefs + delta < 0 {
                return Err(KERN_INVALID_VALUE);
            }
            Ok((urefs + delta).min(max) as u32)
        } else {
            if urefs + delta < 0 {
                return Err(KERN_INVALID_VALUE);
            }
            // xnu-1504: "maximum urefs for send is MACH_PORT_UREFS_MAX-1" (ipc_right.c:1179, 1197); a dead
            // name may reach MACH_PORT_UREFS_MAX (:1155).
            let cap = if right == MACH_PORT_RIGHT_SEND { max - 1 } else { max };
            if delta > 0 && urefs + delta > cap {
                return Err(KERN_UREFS_OVERFLOW);
            }
            Ok((urefs + delta) as u32)
        }
    }

    /// Destroys the receive right named `name`: the port dies; send rights under the same name become a
    /// dead name, keeping their references.
    fn destroy_receive(&mut self, name: mach_port_name_t) {
        let e = self.entries.get_mut(&name).expect("caller checked");
        let port = e.port;
        self.ports[port].active = false;
        if e.bits & MACH_PORT_TYPE_SEND != 0 {
            e.bits = MACH_PORT_TYPE_DEAD_NAME;
            self.by_port.remove(&port);
        } else {
            self.free_name(name);
        }
    }

    /// The live port a name holds a send right to, for calls that take a port argument.
    fn port_of(&mut self, name: mach_port_name_t) -> KernResult<Option<PortId>> {
        if name == MACH_PORT_NULL || name == MACH_PORT_DEAD {
            return Ok(None);
        }
        self.check(name);
        match self.entries.get(&name) {
            None => Err(KERN_INVALID_NAME),
            Some(e) if e.bits & MACH_PORT_TYPE_SEND != 0 => Ok(Some(e.port)),
            Some(e) if e.bits & MACH_PORT_TYPE_DEAD_NAME != 0 => Ok(None),
            Some(_) => Err(KERN_INVALID_RIGHT),
        }
    }
}

impl Mach for Sim {
    type Thread = ThreadId;

    fn pthread_create(
        &self,
        detached: bool,
        body: &(dyn Fn() + Sync),
        on_exit: &(dyn Fn() + Sync),
    ) -> Result<ThreadId, i32> {
        let (thread, caller) = {
            let mut state = self.enter().map_err(|_| libc::EAGAIN)?;
            let thread = state.new_thread(detached);
            let caller = std::mem::replace(&mut state.current, thread);
            (thread, caller)
        };
        // The body and the TSD destructor run "on" the new thread: calls made meanwhile act as it.
        body();
        on_exit();
        let mut state = self.lock();
        if let JoinSemaphores::Cached { .. } = state.rules.join_semaphores {
            // _pthread_exit: a joinable thread with no joiner waiting takes a semaphore for one; every thread
            // then clears its cache.
            if !detached {
                let sem = state.get_cached_semaphore(thread);
                state.threads[thread].joinsem = Some(sem);
            }
            state.put_cached_semaphore(thread, None);
        }
        if !detached && state.rules.join_semaphores == JoinSemaphores::Pool16 {
            // Libc-594: the joinable thread exits with no joiner waiting and leaves a semaphore for one.
            let sem = state.take_semaphore();
            state.threads[thread].joinsem = Some(sem);
        }
        state.current = caller;
        let delay = state.delay;
        state.schedule(delay, Event::Release(thread));
        state.schedule(2 * delay, Event::Free(thread));
        state.process_due();
        Ok(thread)
    }

    fn pthread_join(&self, thread: ThreadId) -> Result<(), i32> {
        let mut state = self.enter().map_err(|_| libc::ESRCH)?;
        let t = state.threads.get_mut(thread).ok_or(libc::ESRCH)?;
        if t.detached || t.joined {
            return Err(libc::EINVAL);
        }
        // Joining frees libpthread's memory only; it never touches the port (src/pthread.c). Libc-594's join
        // returns the thread's semaphore to the pool (restore_sem_to_pool); libpthread-138 to -301 put it in
        // the joiner's cache (-301: after taking the joiner's own out, which goes back last).
        t.joined = true;
        let joinsem = t.joinsem.take();
        let joiner = state.current;
        match state.rules.join_semaphores {
            JoinSemaphores::Pool16 => state.sem_pool.extend(joinsem),
            JoinSemaphores::Cached { join_destroys: true } => {
                let death = state.get_cached_semaphore(joiner);
                state.put_cached_semaphore(joiner, joinsem);
                state.put_cached_semaphore(joiner, Some(death));
            }
            JoinSemaphores::Cached { join_destroys: false } => state.put_cached_semaphore(joiner, joinsem),
            JoinSemaphores::None => {}
        }
        Ok(())
    }

    fn pthread_mach_thread_np_self(&self) -> mach_port_t {
        let state = self.lock();
        state.threads[state.current].kport
    }

    fn mach_thread_self(&self) -> mach_port_t {
        let Ok(mut state) = self.enter() else { return MACH_PORT_NULL };
        let port = state.threads[state.current].port;
        state.copyout_send(port)
    }

    /// `host_self_trap` copies out a send right to the host port each call (osfmk/kern/ipc_host.c); the
    /// port never dies, so the references stay until deallocated.
    fn mach_host_self(&self) -> mach_port_t {
        let Ok(mut state) = self.enter() else { return MACH_PORT_NULL };
        let host = match state.host {
            Some(port) => port,
            None => {
                let port = state.new_port(IKOT_HOST);
                state.host = Some(port);
                port
            }
        };
        state.copyout_send(host)
    }

    /// `task_threads` (`task_threads_internal`, osfmk/kern/task.c:3872-3964 in xnu-11417.121.6, :1975-2081 in
    /// xnu-3248.60.10): a send right to every thread on the task's list, in creation order. A thread stays
    /// listed until the reaper takes it, after it has begun terminating and before its port dies
    /// (osfmk/kern/thread.c:664-681 in xnu-3248.60.10): in that window it comes back as a send right to its
    /// port, or today as `MACH_PORT_NULL` (`Rules::terminating_threads_null`).
    fn task_threads(&self) -> KernResult<Vec<mach_port_t>> {
        let mut state = self.enter()?;
        let listed: Vec<(PortId, bool)> =
            state.threads.iter().filter(|t| state.ports[t.port].active).map(|t| (t.port, t.released)).collect();
        let null = state.rules.terminating_threads_null;
        Ok(listed
            .into_iter()
            .map(|(port, terminating)| if terminating && null { MACH_PORT_NULL } else { state.copyout_send(port) })
            .collect())
    }

    fn spawn_idle_thread(&self) -> Result<(), i32> {
        let mut state = self.enter().map_err(|_| libc::EAGAIN)?;
        state.new_thread(true);
        Ok(())
    }

    fn mach_port_allocate(&self, right: mach_port_right_t) -> KernResult<mach_port_name_t> {
        let mut state = self.enter()?;
        match right {
            MACH_PORT_RIGHT_RECEIVE => {
                let port = state.new_port(IKOT_NONE);
                let name = state.new_name();
                state.entries.insert(name, Entry { port, bits: MACH_PORT_TYPE_RECEIVE, urefs: 0 });
                state.by_port.insert(port, name);
                Ok(name)
            }
            // A port set (mach_port_allocate_full, osfmk/ipc/mach_port.c:591; ipc_pset_alloc): a name with
            // the set right and no user references. Membership is not modelled.
            MACH_PORT_RIGHT_PORT_SET => {
                let set = state.new_port(IKOT_NONE);
                let name = state.new_name();
                state.entries.insert(name, Entry { port: set, bits: MACH_PORT_TYPE_PORT_SET, urefs: 0 });
                Ok(name)
            }
            MACH_PORT_RIGHT_DEAD_NAME => {
                let port = state.new_port(IKOT_NONE);
                state.ports[port].active = false;
                let name = state.new_name();
                state.entries.insert(name, Entry { port, bits: MACH_PORT_TYPE_DEAD_NAME, urefs: 1 });
                Ok(name)
            }
            _ => Err(KERN_INVALID_VALUE),
        }
    }

    fn mach_port_insert_right(
        &self,
        name: mach_port_name_t,
        poly: mach_port_t,
        poly_poly: mach_msg_type_name_t,
    ) -> KernResult<()> {
        let mut state = self.enter()?;
        if poly_poly != MACH_MSG_TYPE_MAKE_SEND {
            return Err(KERN_INVALID_VALUE);
        }
        // MAKE_SEND needs the receive right (ipc_object_copyin).
        let port = match state.entries.get(&poly) {
            None => return Err(KERN_INVALID_NAME),
            Some(e) if e.bits & MACH_PORT_TYPE_RECEIVE == 0 => return Err(KERN_INVALID_RIGHT),
            Some(e) => e.port,
        };
        if name != poly {
            // A name the caller chose (ipc_entry_alloc_name, ipc_entry.c:315-336 in xnu-11417.121.6): the
            // generation's two low bits must be set (`ipc_entry_name_mask`, :812-817), and index 0 is never
            // a name.
            if name & 0b11 != 0b11 {
                return Err(KERN_INVALID_VALUE);
            }
            if name >> 8 == 0 {
                return Err(KERN_FAILURE);
            }
            // The port already has a name here (ipc_object_copyout_name, ipc_object.c:1093-1100).
            return Err(KERN_RIGHT_EXISTS);
        }
        state.copyout_send(port);
        Ok(())
    }

    fn mach_port_deallocate(&self, name: mach_port_name_t) -> KernResult<()> {
        self.enter()?.deallocate(name)
    }

    fn mach_port_mod_refs(
        &self,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> KernResult<()> {
        self.enter()?.mod_refs(name, right, delta)
    }

    /// `mach_port_get_refs` (osfmk/ipc/mach_port.c:800-866 in xnu-11417.121.6, :802-862 in xnu-1504.15.3):
    /// no guard on any path.
    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        let mut state = self.enter()?;
        if right >= MACH_PORT_RIGHT_NUMBER {
            return Err(KERN_INVALID_VALUE);
        }
        // No name: a send or send-once right to nothing has one reference (mach_port.c:819-826).
        if name == MACH_PORT_NULL || name == MACH_PORT_DEAD {
            return match right {
                MACH_PORT_RIGHT_SEND | MACH_PORT_RIGHT_SEND_ONCE => Ok(1),
                _ => Err(KERN_INVALID_NAME),
            };
        }
        if !state.entries.contains_key(&name) {
            return Err(KERN_INVALID_NAME);
        }
        state.check(name);
        let e = &state.entries[&name];
        if e.bits & mach_port_type(right) == 0 {
            return Ok(0);
        }
        Ok(match right {
            MACH_PORT_RIGHT_SEND | MACH_PORT_RIGHT_DEAD_NAME => e.urefs,
            _ => 1,
        })
    }

    fn mach_port_type(&self, name: mach_port_name_t) -> KernResult<mach_port_type_t> {
        let mut state = self.enter()?;
        if !state.entries.contains_key(&name) {
            return Err(KERN_INVALID_NAME);
        }
        state.check(name);
        Ok(state.entries[&name].bits)
    }

    /// `mach_port_kobject_description` (osfmk/ipc/mach_debug.c:483-491 in xnu-11417.121.6; `mach_port_kobject`,
    /// mach_debug.c:528-546 in xnu-1504.15.3): `KERN_INVALID_NAME` for no entry, `KERN_INVALID_RIGHT` for a
    /// name without a send or receive right (a dead name), the same in every profile. Release kernels
    /// answer it in every era: its `#if !MACH_IPC_DEBUG` stub (`KERN_FAILURE`) is left out of them, as the
    /// option is configured in (`options MACH_IPC_DEBUG`, osfmk/conf/MASTER:97 in xnu-1504.15.3; `ipc_debug`
    /// in `MACH_BASE`, hence `MACH_RELEASE`, config/MASTER.x86_64:44-45 in xnu-3248.60.10 and
    /// config/MASTER.x86_64:55-56 and MASTER.arm64.MacOSX:60-61 in xnu-8020.140.41), and xnu-8792.41.9
    /// dropped the `#if`. The `IKOT_*` numbers used are the same from xnu-1504 (osfmk/kern/ipc_kobject.h).
    fn mach_port_kobject(&self, name: mach_port_name_t) -> KernResult<u32> {
        let mut state = self.enter()?;
        if !state.entries.contains_key(&name) {
            return Err(KERN_INVALID_NAME);
        }
        state.check(name);
        let e = &state.entries[&name];
        if e.bits & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE) == 0 {
            return Err(KERN_INVALID_RIGHT);
        }
        Ok(state.ports[e.port].kobject)
    }

    /// The model's calls make no MIG reply port: as if the thread had one already.
    fn has_reply_port(&self) -> bool {
        true
    }

    fn drop_reply_port(&self) {}

    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>> {
        let state = self.enter()?;
        Ok(state.entries.iter().map(|(&name, e)| (name, state.reported_type(e))).collect())
    }

    fn thread_swap_exception_ports(
        &self,
        thread: mach_port_t,
        mask: exception_mask_t,
        new_port: mach_port_t,
        behavior: exception_behavior_t,
        flavor: thread_state_flavor_t,
    ) -> KernResult<Vec<ExceptionHandler>> {
        let mut state = self.enter()?;
        let types = state.rules.exc_types;
        let valid_mask = ((1u32 << types) - 1) & !1;
        if mask & !valid_mask != 0 {
            return Err(KERN_INVALID_ARGUMENT);
        }
        let target = state.port_of(thread).map_err(|_| KERN_INVALID_ARGUMENT)?;
        let Some(t) = target.and_then(|p| state.threads.iter().position(|t| t.port == p)) else {
            return Err(KERN_INVALID_ARGUMENT);
        };
        let new = state.port_of(new_port)?;
        // EXCEPTION_DEFAULT, _STATE, _STATE_IDENTITY (and today _IDENTITY_PROTECTED and
        // _STATE_IDENTITY_PROTECTED), flags masked: MACH_EXCEPTION_CODES, and today _ERRORS and
        // _BACKTRACE_PREFERRED, which with an _IDENTITY_PROTECTED behavior require MACH_EXCEPTION_CODES
        // (set_exception_ports_validation, osfmk/kern/ipc_tt.c:4225-4284 in xnu-11417.121.6; ipc_tt.c:1681-1695
        // in xnu-1504.15.3).
        let flags = state.rules.exception_flags;
        let kind = behavior & !flags;
        let needs_codes = kind == 4 || behavior & (1 << 29) != 0;
        if new.is_some() && (!(1..=state.rules.max_behavior).contains(&kind) || (needs_codes && behavior & CODES == 0))
        {
            return Err(KERN_INVALID_ARGUMENT);
        }
        // The replaced handlers, grouped by (port, behavior, flavor) with their masks combined.
        let mut old: Vec<(exception_mask_t, Slot)> = Vec::new();
        for i in 1..types {
            if mask & (1 << i) == 0 {
                continue;
            }
            let slot = state.threads[t].exc[i];
            match old.iter_mut().find(|(_, s)| *s == slot) {
                Some((m, _)) => *m |= 1 << i,
                None => old.push((1 << i, slot)),
            }
            state.threads[t].exc[i] = new.map(|p| (p, behavior, flavor));
        }
        Ok(old
            .into_iter()
            .map(|(mask, slot)| match slot {
                None => ExceptionHandler { mask, port: MACH_PORT_NULL, behavior: 0, flavor: 0 },
                Some((port, behavior, flavor)) => {
                    ExceptionHandler { mask, port: state.copyout_send(port), behavior, flavor }
                }
            })
            .collect())
    }

    fn settle_pause(&self) {
        self.lock().tick();
    }

    fn notes(&self) -> Vec<String> {
        let state = self.lock();
        let mut notes: Vec<String> = state.fault.iter().cloned().collect();
        if state.undelivered > 0 {
            notes.push(format!(
                "{} guard exceptions were raised and not delivered (a {} task, or a thread terminating)",
                state.undelivered,
                state.task.name()
            ));
        }
        match state.rules.join_semaphores {
            JoinSemaphores::Pool16 if state.semaphores > 0 => notes.push(format!(
                "the C library created {} semaphores for joiners (Libc-594: 16 at a time; one is kept by each joinable \
                 thread until it is joined)",
                state.semaphores
            )),
            JoinSemaphores::Cached { .. } if state.semaphores > 0 => notes.push(format!(
                "the C library created {} semaphores for joiners and destroyed {} (libpthread-138 to -301: one is kept \
                 by each joinable thread until it is joined; each thread caches one)",
                state.semaphores, state.semaphores_destroyed
            )),
            _ => {}
        }
        if state.absorbed > 0 {
            notes.push(format!(
                "{} send rights were copied out to names already at {} user references and dropped silently \
                 (ipc_right_copyout: urefs pegged)",
                state.absorbed, state.rules.send_urefs_cap
            ));
        }
        if state.ignored > 0 {
            notes.push(format!(
                "{} mach_port_mod_refs calls on names pegged at {MACH_PORT_UREFS_MAX} user references were ignored \
                 (ipc_right_delta: only a delta of -{MACH_PORT_UREFS_MAX} changes a pegged count)",
                state.ignored
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::super::workload::balance_thread_port;
    use super::*;
    use proptest::prelude::*;

    const PROFILES: &[Profile] = Profile::ALL;

    /// A thread taking `extra` references to itself, with Clozure CL's fix in its exit hook when `fix`.
    fn spawn(sim: &Sim, extra: u32, fix: bool) -> mach_port_name_t {
        let kport = Mutex::new(MACH_PORT_NULL);
        let body = || {
            *kport.lock().unwrap() = sim.pthread_mach_thread_np_self();
            for _ in 0..extra {
                sim.mach_thread_self();
            }
        };
        let on_exit = || {
            if fix {
                balance_thread_port(sim, *kport.lock().unwrap()).unwrap();
            }
        };
        sim.pthread_create(true, &body, &on_exit).unwrap();
        kport.into_inner().unwrap()
    }

    fn added(before: &BTreeMap<u32, Entry>, after: &BTreeMap<u32, Entry>) -> Vec<Entry> {
        after.iter().filter(|(n, _)| !before.contains_key(n)).map(|(_, e)| e.clone()).collect()
    }

    #[test]
    fn a_leaked_self_reference_becomes_a_dead_name_only_after_the_thread_is_freed() {
        let sim = Sim::new(Profile::Xnu11417, 3);
        let before = sim.space();
        let kport = spawn(&sim, 1, false);
        // Back from pthread_create: libpthread's reference and ours.
        assert_eq!(sim.space()[&kport].urefs, 2);
        assert_eq!(sim.space()[&kport].bits, MACH_PORT_TYPE_SEND);
        sim.settle_pause();
        sim.settle_pause();
        // _bsdthread_terminate has dropped libpthread's reference; the port is still alive.
        assert_eq!(sim.mach_port_type(kport), Ok(MACH_PORT_TYPE_SEND));
        assert_eq!(sim.mach_port_get_refs(kport, MACH_PORT_RIGHT_SEND), Ok(1));
        for _ in 0..3 {
            sim.settle_pause();
        }
        assert_eq!(sim.mach_port_type(kport), Ok(MACH_PORT_TYPE_DEAD_NAME));
        assert_eq!(sim.mach_port_get_refs(kport, MACH_PORT_RIGHT_SEND), Ok(0));
        assert_eq!(sim.mach_port_get_refs(kport, MACH_PORT_RIGHT_DEAD_NAME), Ok(1));
        let new = added(&before, &sim.space());
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].bits, new[0].urefs), (MACH_PORT_TYPE_DEAD_NAME, 1));
    }

    #[test]
    fn a_thread_without_extra_references_leaves_nothing_for_every_kind() {
        for detached in [true, false] {
            let sim = Sim::new(Profile::Xnu11417, 2);
            let before = sim.space();
            let t = sim.pthread_create(detached, &|| {}, &|| {}).unwrap();
            if !detached {
                sim.pthread_join(t).unwrap();
            }
            sim.drain();
            assert_eq!(sim.space(), before);
        }
    }

    #[test]
    fn the_fix_holds_below_the_peg_and_fails_at_it_on_modern_xnu() {
        for (profile, extra, leaks) in [
            (Profile::Xnu11417, 65_533, false),
            (Profile::Xnu11417, 65_534, true),
            (Profile::Xnu11417, 70_000, true),
            (Profile::Xnu1504, 65_534, false),
            (Profile::Xnu1504, 70_000, false),
        ] {
            let sim = Sim::new(profile, 0);
            let before = sim.space();
            spawn(&sim, extra, true);
            sim.drain();
            let new: Vec<u32> = sim.space().keys().filter(|n| !before.contains_key(n)).copied().collect();
            assert_eq!(!new.is_empty(), leaks, "{profile:?} with {extra} extra references: {new:?}");
            if leaks {
                assert_eq!(sim.mach_port_type(new[0]), Ok(MACH_PORT_TYPE_DEAD_NAME));
                assert_eq!(sim.mach_port_get_refs(new[0], MACH_PORT_RIGHT_DEAD_NAME), Ok(MACH_PORT_UREFS_MAX));
            }
        }
    }

    #[test]
    fn pegged_counts_ignore_partial_deltas_on_modern_xnu_only() {
        for (profile, after_minus_one, cap) in
            [(Profile::Xnu11417, MACH_PORT_UREFS_MAX, MACH_PORT_UREFS_MAX), (Profile::Xnu1504, 65_532, 65_534)]
        {
            let sim = Sim::new(profile, 0);
            let name = sim.mach_thread_self();
            for _ in 0..70_000 {
                sim.mach_thread_self();
            }
            assert_eq!(sim.mach_port_get_refs(name, MACH_PORT_RIGHT_SEND), Ok(cap));
            assert_eq!(sim.mach_port_mod_refs(name, MACH_PORT_RIGHT_SEND, -1), Ok(()));
            assert_eq!(sim.mach_port_deallocate(name), Ok(()));
            assert_eq!(sim.mach_port_get_refs(name, MACH_PORT_RIGHT_SEND), Ok(after_minus_one), "{profile:?}");
        }
    }

    #[test]
    fn old_xnu_reports_positive_overflow() {
        let sim = Sim::new(Profile::Xnu1504, 0);
        let name = sim.mach_thread_self();
        assert_eq!(sim.mach_port_mod_refs(name, MACH_PORT_RIGHT_SEND, 70_000), Err(KERN_UREFS_OVERFLOW));
        let modern = Sim::new(Profile::Xnu11417, 0);
        let name = modern.mach_thread_self();
        assert_eq!(modern.mach_port_mod_refs(name, MACH_PORT_RIGHT_SEND, 70_000), Err(KERN_INVALID_VALUE));
        assert_eq!(modern.mach_port_mod_refs(name, MACH_PORT_RIGHT_SEND, 65_534), Ok(()));
        assert_eq!(modern.mach_port_get_refs(name, MACH_PORT_RIGHT_SEND), Ok(MACH_PORT_UREFS_MAX));
    }

    #[test]
    fn errors_are_the_ones_xnu_returns() {
        // Each row holds under both profiles (mach_port.c and ipc_right.c of xnu-11417.121.6 and
        // xnu-1504.15.3); a third-party task sees the codes whatever the guards, which it is not sent.
        for &profile in PROFILES {
            let sim = Sim::new(profile, 0);
            let receive = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
            let me = sim.mach_thread_self();
            let dead = sim.mach_port_allocate(MACH_PORT_RIGHT_DEAD_NAME).unwrap();
            let unknown = 0x1234_5603;
            let rows: Vec<(&str, KernResult<u32>, KernResult<u32>)> = vec![
                ("deallocate(receive)", sim.mach_port_deallocate(receive).map(|()| 0), Err(KERN_INVALID_RIGHT)),
                ("deallocate(unknown)", sim.mach_port_deallocate(unknown).map(|()| 0), Err(KERN_INVALID_NAME)),
                ("deallocate(NULL)", sim.mach_port_deallocate(MACH_PORT_NULL).map(|()| 0), Ok(0)),
                ("get_refs(receive, SEND)", sim.mach_port_get_refs(receive, MACH_PORT_RIGHT_SEND), Ok(0)),
                ("get_refs(receive, RECEIVE)", sim.mach_port_get_refs(receive, MACH_PORT_RIGHT_RECEIVE), Ok(1)),
                (
                    "get_refs(unknown, SEND)",
                    sim.mach_port_get_refs(unknown, MACH_PORT_RIGHT_SEND),
                    Err(KERN_INVALID_NAME),
                ),
                ("get_refs(receive, 9)", sim.mach_port_get_refs(receive, 9), Err(KERN_INVALID_VALUE)),
                ("get_refs(receive, LABELH)", sim.mach_port_get_refs(receive, MACH_PORT_RIGHT_LABELH), Ok(0)),
                // mach_port.c:819-826: no name, one reference.
                ("get_refs(NULL, SEND)", sim.mach_port_get_refs(MACH_PORT_NULL, MACH_PORT_RIGHT_SEND), Ok(1)),
                ("get_refs(DEAD, SEND_ONCE)", sim.mach_port_get_refs(MACH_PORT_DEAD, MACH_PORT_RIGHT_SEND_ONCE), Ok(1)),
                (
                    "get_refs(NULL, RECEIVE)",
                    sim.mach_port_get_refs(MACH_PORT_NULL, MACH_PORT_RIGHT_RECEIVE),
                    Err(KERN_INVALID_NAME),
                ),
                // mach_port.c:906-912: no name, any delta on a send or send-once right.
                (
                    "mod_refs(NULL, SEND, +1)",
                    sim.mach_port_mod_refs(MACH_PORT_NULL, MACH_PORT_RIGHT_SEND, 1).map(|()| 0),
                    Ok(0),
                ),
                (
                    "mod_refs(DEAD, SEND, -7)",
                    sim.mach_port_mod_refs(MACH_PORT_DEAD, MACH_PORT_RIGHT_SEND, -7).map(|()| 0),
                    Ok(0),
                ),
                (
                    "mod_refs(NULL, RECEIVE, -1)",
                    sim.mach_port_mod_refs(MACH_PORT_NULL, MACH_PORT_RIGHT_RECEIVE, -1).map(|()| 0),
                    Err(KERN_INVALID_NAME),
                ),
                (
                    "mod_refs(receive, 6, 0)",
                    sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_NUMBER, 0).map(|()| 0),
                    Err(KERN_INVALID_VALUE),
                ),
                (
                    "mod_refs(unknown, 6, 0)",
                    sim.mach_port_mod_refs(unknown, MACH_PORT_RIGHT_NUMBER, 0).map(|()| 0),
                    Err(KERN_INVALID_VALUE),
                ),
                (
                    "mod_refs(receive, SEND, -1)",
                    sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_SEND, -1).map(|()| 0),
                    Err(KERN_INVALID_RIGHT),
                ),
                (
                    "mod_refs(receive, SEND_ONCE, -1)",
                    sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_SEND_ONCE, -1).map(|()| 0),
                    Err(KERN_INVALID_RIGHT),
                ),
                (
                    "mod_refs(receive, PORT_SET, -1)",
                    sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_PORT_SET, -1).map(|()| 0),
                    Err(KERN_INVALID_RIGHT),
                ),
                (
                    "mod_refs(receive, LABELH, 1)",
                    sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_LABELH, 1).map(|()| 0),
                    Err(KERN_INVALID_RIGHT),
                ),
                (
                    "mod_refs(receive, RECEIVE, -2)",
                    sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_RECEIVE, -2).map(|()| 0),
                    Err(KERN_INVALID_VALUE),
                ),
                (
                    "mod_refs(dead, SEND, 1)",
                    sim.mach_port_mod_refs(dead, MACH_PORT_RIGHT_SEND, 1).map(|()| 0),
                    Err(KERN_INVALID_RIGHT),
                ),
                (
                    "mod_refs(me, DEAD_NAME, 1)",
                    sim.mach_port_mod_refs(me, MACH_PORT_RIGHT_DEAD_NAME, 1).map(|()| 0),
                    Err(KERN_INVALID_RIGHT),
                ),
                (
                    "mod_refs(me, SEND, -5)",
                    sim.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, -5).map(|()| 0),
                    Err(KERN_INVALID_VALUE),
                ),
            ];
            for (call, got, want) in rows {
                assert_eq!(got, want, "{profile:?}: {call}");
            }
            assert_eq!(sim.mach_port_type(me), Ok(MACH_PORT_TYPE_SEND), "{profile:?}: the task goes on");
            // Only 10.14 and later raise guards; the rows that raise one: deallocate(receive), deallocate(unknown),
            // mod_refs(receive, SEND), (receive, PORT_SET), (receive, RECEIVE, -2), (me, DEAD_NAME), (me, SEND, -5).
            let raised = sim.notes().first().cloned().unwrap_or_default();
            match profile {
                Profile::Xnu11417 | Profile::Xnu4903 => {
                    assert!(raised.starts_with("7 guard exceptions were raised and not delivered"), "{raised}")
                }
                Profile::Xnu1504 | Profile::Xnu3248 | Profile::Xnu4570 => assert_eq!(raised, ""),
            }
        }
    }

    #[test]
    fn the_delta_range_is_checked_before_the_peg_on_modern_xnu_only() {
        // ipc_right.c:1565-1569 (xnu-11417.121.6): |delta| > 65535 is refused before a pegged count ignores it.
        let modern = Sim::new(Profile::Xnu11417, 0);
        let me = modern.mach_thread_self();
        modern.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, 70_000).unwrap_err();
        modern.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, 65_535).unwrap();
        assert_eq!(modern.mach_port_get_refs(me, MACH_PORT_RIGHT_SEND), Ok(MACH_PORT_UREFS_MAX));
        assert_eq!(modern.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, -70_000), Err(KERN_INVALID_VALUE));
        assert_eq!(modern.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, -3), Ok(()));
        assert_eq!(modern.mach_port_get_refs(me, MACH_PORT_RIGHT_SEND), Ok(MACH_PORT_UREFS_MAX));
        // xnu-1504 has no range check: the underflow is what refuses it.
        let old = Sim::new(Profile::Xnu1504, 0);
        let me = old.mach_thread_self();
        assert_eq!(old.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, -70_000), Err(KERN_INVALID_VALUE));
        assert_eq!(old.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, 70_000), Err(KERN_UREFS_OVERFLOW));
    }

    #[test]
    fn a_send_right_asked_of_a_receive_right_or_a_dead_name_raises_no_guard() {
        // "invalid right exception only when not live/dead confusion" (ipc_right.c:1535-1549): a hardened task
        // survives mod_refs(SEND) on a dead name, and on a receive right with delta 1 (the AE case).
        let sim = Sim::with_task(Profile::Xnu11417, 0, Task::Hardened);
        let dead = sim.mach_port_allocate(MACH_PORT_RIGHT_DEAD_NAME).unwrap();
        let receive = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
        assert_eq!(sim.mach_port_mod_refs(dead, MACH_PORT_RIGHT_SEND, -1), Err(KERN_INVALID_RIGHT));
        assert_eq!(sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_SEND, 1), Err(KERN_INVALID_RIGHT));
        assert!(sim.mach_port_names().is_ok(), "{:?}", sim.notes());
        // With another delta it is a guard, fatal here.
        assert_eq!(sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_SEND, -1), Err(KERN_INVALID_RIGHT));
        assert_eq!(sim.mach_port_names(), Err(KERN_TERMINATED));
    }

    #[test]
    fn libc_594_keeps_a_semaphore_for_each_thread_never_joined() {
        // Libc-594.9.5: a joinable thread exiting with no joiner takes a semaphore from a pool that grows 16
        // at a time (a send right each); pthread_join puts it back; detached threads take none.
        let count = |sim: &Sim, bits: u32| sim.space().values().filter(|e| e.bits == bits).count();
        let old = Sim::new(Profile::Xnu1504, 0);
        let before = count(&old, MACH_PORT_TYPE_SEND);
        let first = old.pthread_create(false, &|| {}, &|| {}).unwrap();
        assert_eq!(count(&old, MACH_PORT_TYPE_SEND), before + 16, "the pool's first 16");
        old.pthread_join(first).unwrap();
        for _ in 0..40 {
            let t = old.pthread_create(false, &|| {}, &|| {}).unwrap();
            old.pthread_join(t).unwrap();
            old.pthread_create(true, &|| {}, &|| {}).unwrap();
        }
        assert_eq!(count(&old, MACH_PORT_TYPE_SEND), before + 16, "joined and detached threads keep none");
        for _ in 0..40 {
            old.pthread_create(false, &|| {}, &|| {}).unwrap();
        }
        // 40 kept: the pool of 16 grew twice more (48), 8 left in it.
        assert_eq!(count(&old, MACH_PORT_TYPE_SEND), before + 48);
        assert!(old.notes().iter().any(|n| n.starts_with("the C library created 48 semaphores")), "{:?}", old.notes());
        // libpthread-539 keeps none.
        let modern = Sim::new(Profile::Xnu11417, 0);
        let before = modern.space().len();
        for _ in 0..40 {
            modern.pthread_create(false, &|| {}, &|| {}).unwrap();
        }
        modern.drain();
        assert_eq!(modern.space().len(), before);
    }

    #[test]
    fn libpthread_138_to_301_keep_a_cached_semaphore_for_each_thread_never_joined() {
        // _pthread_exit takes os_get_cached_semaphore() for a joiner; only pthread_join takes it back, into the
        // joiner's one-slot cache (libpthread-218.60.3 src/pthread.c:1431-1438, src/pthread_cancelable.c:274).
        let sends = |sim: &Sim| sim.space().values().filter(|e| e.bits == MACH_PORT_TYPE_SEND).count();
        for profile in [Profile::Xnu3248, Profile::Xnu4570] {
            let sim = Sim::new(profile, 0);
            let before = sends(&sim);
            // Joined threads: the joiner ends up caching exactly one, whatever the count.
            for _ in 0..5 {
                let t = sim.pthread_create(false, &|| {}, &|| {}).unwrap();
                sim.pthread_join(t).unwrap();
            }
            sim.drain();
            assert_eq!(sends(&sim), before + 1, "{profile:?}: the joiner's cached semaphore");
            // Detached threads take none; each unjoined one keeps its own.
            for _ in 0..5 {
                sim.pthread_create(true, &|| {}, &|| {}).unwrap();
            }
            sim.drain();
            assert_eq!(sends(&sim), before + 1, "{profile:?}: detached");
            for _ in 0..7 {
                sim.pthread_create(false, &|| {}, &|| {}).unwrap();
            }
            sim.drain();
            assert_eq!(sends(&sim), before + 8, "{profile:?}: unjoined");
        }
        // libpthread-301's join destroys the thread's semaphore and keeps its own; -138's keeps the thread's
        // and destroys its own: the same count, other names.
        let cached = |profile| {
            let sim = Sim::new(profile, 0);
            let t = sim.pthread_create(false, &|| {}, &|| {}).unwrap();
            sim.pthread_join(t).unwrap();
            let kept = sim.space();
            let t = sim.pthread_create(false, &|| {}, &|| {}).unwrap();
            let joinsem = added(&kept, &sim.space());
            sim.pthread_join(t).unwrap();
            (joinsem.len(), added(&kept, &sim.space()) == joinsem)
        };
        assert_eq!(cached(Profile::Xnu3248), (1, true), "-138: the joiner caches the thread's semaphore");
        assert_eq!(cached(Profile::Xnu4570), (1, false), "-301: the thread's semaphore is destroyed");
        // libpthread-330 and later keep none.
        for profile in [Profile::Xnu4903, Profile::Xnu11417] {
            let sim = Sim::new(profile, 0);
            let before = sim.space().len();
            for _ in 0..7 {
                sim.pthread_create(false, &|| {}, &|| {}).unwrap();
            }
            sim.drain();
            assert_eq!(sim.space().len(), before, "{profile:?}");
        }
    }

    #[test]
    fn guards_are_raised_from_10_14_and_delivered_to_a_hardened_task_only_today() {
        for (profile, fatal) in [(Profile::Xnu4903, false), (Profile::Xnu11417, true)] {
            let sim = Sim::with_task(profile, 0, Task::Hardened);
            assert_eq!(sim.mach_port_deallocate(0x1234_5603), Err(KERN_INVALID_NAME), "{profile:?}");
            let notes = sim.notes();
            assert_eq!(notes.iter().any(|n| n.starts_with("EXC_GUARD kGUARD_EXC_INVALID_NAME")), fatal, "{notes:?}");
            assert_eq!(notes.iter().any(|n| n.starts_with("1 guard exceptions were raised")), !fatal, "{notes:?}");
        }
        let sim = Sim::with_task(Profile::Xnu4570, 0, Task::Hardened);
        assert_eq!(sim.mach_port_deallocate(0x1234_5603), Err(KERN_INVALID_NAME));
        assert!(sim.notes().is_empty(), "10.13 raises none: {:?}", sim.notes());
    }

    #[test]
    fn task_threads_gives_a_reference_per_listed_thread_and_null_for_one_terminating_today() {
        for profile in Profile::ALL {
            let sim = Sim::new(*profile, 2);
            sim.spawn_idle_thread().unwrap();
            let before = sim.space();
            let names = sim.task_threads().unwrap();
            assert_eq!(names.len(), 2, "{profile:?}: the main thread and the idle one");
            let after = sim.space();
            for name in &names {
                assert_eq!(after[name].urefs, before[name].urefs + 1, "{profile:?}: one more reference, no new name");
            }
            for name in names {
                sim.mach_port_deallocate(name).unwrap();
            }
            assert_eq!(sim.space(), before, "{profile:?}: the fix leaves the space as it was");
        }
        // A thread released by the kernel but not yet freed (model clock between the two events).
        let terminating = |profile| {
            let sim = Sim::new(profile, 4);
            sim.pthread_create(true, &|| {}, &|| {}).unwrap();
            for _ in 0..4 {
                sim.settle_pause();
            }
            sim.task_threads().unwrap()
        };
        let today = terminating(Profile::Xnu11417);
        assert_eq!((today.len(), today[1]), (2, MACH_PORT_NULL), "xnu-11417: ipc_active is false");
        let mojave = terminating(Profile::Xnu4903);
        assert!(mojave.len() == 2 && mojave[1] != MACH_PORT_NULL, "xnu-4903: a live right ({mojave:?})");
    }

    #[test]
    fn kernel_object_types_are_told_in_every_era() {
        let sim = Sim::new(Profile::Xnu11417, 0);
        let me = sim.pthread_mach_thread_np_self();
        let host = sim.mach_host_self();
        let port = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
        let dead = sim.mach_port_allocate(MACH_PORT_RIGHT_DEAD_NAME).unwrap();
        assert_eq!(sim.mach_port_kobject(me), Ok(IKOT_THREAD_CONTROL));
        assert_eq!(sim.mach_port_kobject(host), Ok(IKOT_HOST));
        assert_eq!(sim.mach_port_kobject(port), Ok(IKOT_NONE));
        assert_eq!(sim.mach_port_kobject(dead), Err(KERN_INVALID_RIGHT));
        assert_eq!(sim.mach_port_kobject(0x7777_7703), Err(KERN_INVALID_NAME));
        for &profile in Profile::ALL {
            let sim = Sim::new(profile, 0);
            assert_eq!(
                sim.mach_port_kobject(sim.pthread_mach_thread_np_self()),
                Ok(IKOT_THREAD_CONTROL),
                "{profile:?}"
            );
            assert_eq!(sim.mach_port_kobject(sim.mach_host_self()), Ok(IKOT_HOST), "{profile:?}");
        }
    }

    #[test]
    fn mach_host_self_adds_a_reference_per_call_to_one_name() {
        let sim = Sim::new(Profile::Xnu11417, 0);
        let host = sim.mach_host_self();
        let before = sim.space();
        for _ in 0..10 {
            assert_eq!(sim.mach_host_self(), host);
        }
        assert_eq!(sim.space()[&host].urefs, before[&host].urefs + 10);
        assert_eq!(sim.space().len(), before.len());
    }

    #[test]
    fn destroying_a_receive_right_leaves_its_send_rights_as_a_dead_name() {
        let sim = Sim::new(Profile::Xnu11417, 0);
        let port = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
        sim.mach_port_insert_right(port, port, MACH_MSG_TYPE_MAKE_SEND).unwrap();
        assert_eq!(sim.mach_port_type(port), Ok(MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE));
        sim.mach_port_mod_refs(port, MACH_PORT_RIGHT_RECEIVE, -1).unwrap();
        assert_eq!(sim.mach_port_type(port), Ok(MACH_PORT_TYPE_DEAD_NAME));
        assert_eq!(sim.mach_port_get_refs(port, MACH_PORT_RIGHT_DEAD_NAME), Ok(1));
    }

    #[test]
    fn a_guard_raised_as_the_kernel_releases_libpthreads_reference_is_never_delivered() {
        // The thread gives up libpthread's reference itself; _bsdthread_terminate then deallocates a name the
        // task no longer has, after marking the thread terminating: even a hardened task goes on.
        for (profile, task) in [
            (Profile::Xnu11417, Task::Hardened),
            (Profile::Xnu11417, Task::ThirdParty),
            (Profile::Xnu1504, Task::Hardened),
        ] {
            let sim = Sim::with_task(profile, 1, task);
            let body = || {
                let own = sim.pthread_mach_thread_np_self();
                sim.mach_port_deallocate(own).unwrap();
            };
            sim.pthread_create(true, &body, &|| {}).unwrap();
            sim.drain();
            assert!(sim.mach_port_names().is_ok(), "{profile:?} {task:?}");
            let raised = profile == Profile::Xnu11417;
            assert_eq!(
                sim.notes().iter().any(|n| n.starts_with("1 guard exceptions were raised and not delivered")),
                raised
            );
        }
    }

    #[test]
    fn optional_guards_kill_a_hardened_task_and_are_not_delivered_to_a_third_party_one() {
        // kGUARD_EXC_INVALID_NAME (mach_port_deallocate_kernel, mach_port.c:755-758) and kGUARD_EXC_INVALID_VALUE
        // (ipc_right_delta's invalid_value, ipc_right.c:1670-1676) are optional codes (port.h:529-564).
        type Call = fn(&Sim) -> KernResult<()>;
        let calls: [(&str, Call); 2] = [
            ("kGUARD_EXC_INVALID_NAME", |sim| sim.mach_port_deallocate(0x1234_5603)),
            ("kGUARD_EXC_INVALID_VALUE", |sim| {
                let me = sim.mach_thread_self();
                sim.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, -5)
            }),
        ];
        for (guard, call) in calls {
            let third_party = Sim::with_task(Profile::Xnu11417, 0, Task::ThirdParty);
            assert!(call(&third_party).is_err());
            assert!(third_party.mach_port_names().is_ok(), "{guard}");
            assert_eq!(
                third_party.notes()[0],
                "1 guard exceptions were raised and not delivered (a third-party task, or a thread terminating)"
            );
            let hardened = Sim::with_task(Profile::Xnu11417, 0, Task::Hardened);
            assert!(call(&hardened).is_err());
            assert_eq!(hardened.mach_port_names(), Err(KERN_TERMINATED), "{guard}");
            assert!(hardened.notes()[0].starts_with(&format!("EXC_GUARD {guard}")), "{:?}", hardened.notes());
            // xnu-1504 has no guard machinery.
            let old = Sim::with_task(Profile::Xnu1504, 0, Task::Hardened);
            assert!(call(&old).is_err());
            assert!(old.mach_port_names().is_ok() && old.notes().is_empty(), "{:?}", old.notes());
        }
    }

    #[test]
    fn swapped_exception_ports_come_back_as_rights_the_caller_owns() {
        let sim = Sim::new(Profile::Xnu11417, 0);
        let me = sim.pthread_mach_thread_np_self();
        let port = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
        sim.mach_port_insert_right(port, port, MACH_MSG_TYPE_MAKE_SEND).unwrap();
        let mask = 0b10_1110;
        let old = sim.thread_swap_exception_ports(me, mask, port, 1, 5).unwrap();
        assert_eq!(old, [ExceptionHandler { mask, port: MACH_PORT_NULL, behavior: 0, flavor: 0 }]);
        assert_eq!(sim.mach_port_get_refs(port, MACH_PORT_RIGHT_SEND), Ok(1), "the caller keeps its right");
        let back = sim.thread_swap_exception_ports(me, mask, MACH_PORT_NULL, 0, 0).unwrap();
        assert_eq!(back, [ExceptionHandler { mask, port, behavior: 1, flavor: 5 }]);
        assert_eq!(sim.mach_port_get_refs(port, MACH_PORT_RIGHT_SEND), Ok(2), "one more for the returned right");
        assert_eq!(sim.thread_swap_exception_ports(me, 1, port, 1, 5), Err(KERN_INVALID_ARGUMENT));
        assert_eq!(sim.thread_swap_exception_ports(me, mask, port, 99, 5), Err(KERN_INVALID_ARGUMENT));
    }

    /// One step of a random sequence.
    #[derive(Clone, Debug)]
    enum Op {
        ThreadSelf,
        Deallocate(usize),
        ModRefs(usize, mach_port_right_t, mach_port_delta_t),
        GetRefs(usize, mach_port_right_t),
        Type(usize),
        Allocate,
        MakeSend(usize),
        Swap(usize, bool),
        Pause,
        Spawn { extra: u32, fix: bool, detached: bool },
        TaskThreads { release: bool },
        HostSelf,
        Idle,
    }

    fn op() -> impl Strategy<Value = Op> {
        let pick = any::<usize>();
        let right = 0u32..6;
        let delta = prop_oneof![-3i32..4, Just(-65_535), Just(65_535), Just(-70_000), Just(70_000)];
        prop_oneof![
            3 => Just(Op::ThreadSelf),
            3 => pick.prop_map(Op::Deallocate),
            3 => (pick, right.clone(), delta).prop_map(|(p, r, d)| Op::ModRefs(p, r, d)),
            1 => (pick, right).prop_map(|(p, r)| Op::GetRefs(p, r)),
            1 => pick.prop_map(Op::Type),
            2 => Just(Op::Allocate),
            2 => pick.prop_map(Op::MakeSend),
            1 => (pick, any::<bool>()).prop_map(|(p, b)| Op::Swap(p, b)),
            2 => Just(Op::Pause),
            2 => (0u32..4, any::<bool>(), any::<bool>()).prop_map(|(extra, fix, detached)| Op::Spawn { extra, fix, detached }),
            1 => any::<bool>().prop_map(|release| Op::TaskThreads { release }),
            1 => Just(Op::HostSelf),
            1 => Just(Op::Idle),
        ]
    }

    fn run(sim: &Sim, op: &Op) {
        let names: Vec<u32> = sim.space().keys().copied().collect();
        let name = |i: usize| names.get(i % names.len().max(1)).copied().unwrap_or(0x1234_5600);
        match *op {
            Op::ThreadSelf => {
                sim.mach_thread_self();
            }
            Op::Deallocate(i) => {
                let _ = sim.mach_port_deallocate(name(i));
            }
            Op::ModRefs(i, r, d) => {
                let _ = sim.mach_port_mod_refs(name(i), r, d);
            }
            Op::GetRefs(i, r) => {
                let _ = sim.mach_port_get_refs(name(i), r);
            }
            Op::Type(i) => {
                let _ = sim.mach_port_type(name(i));
            }
            Op::Allocate => {
                let _ = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE);
            }
            Op::MakeSend(i) => {
                let _ = sim.mach_port_insert_right(name(i), name(i), MACH_MSG_TYPE_MAKE_SEND);
            }
            Op::Swap(i, null) => {
                let me = sim.pthread_mach_thread_np_self();
                let new = if null { MACH_PORT_NULL } else { name(i) };
                if let Ok(old) = sim.thread_swap_exception_ports(me, 0b10_1110, new, 1, 5) {
                    for h in old {
                        let _ = sim.mach_port_deallocate(h.port);
                    }
                }
            }
            Op::Pause => sim.settle_pause(),
            Op::TaskThreads { release } => {
                for name in sim.task_threads().unwrap_or_default() {
                    if release {
                        let _ = sim.mach_port_deallocate(name);
                    }
                }
            }
            Op::HostSelf => {
                sim.mach_host_self();
            }
            Op::Idle => {
                let _ = sim.spawn_idle_thread();
            }
            Op::Spawn { extra, fix, detached } => {
                let kport = Mutex::new(0);
                let body = || {
                    *kport.lock().unwrap() = sim.pthread_mach_thread_np_self();
                    for _ in 0..extra {
                        sim.mach_thread_self();
                    }
                };
                let on_exit = || {
                    if fix {
                        let _ = balance_thread_port(sim, *kport.lock().unwrap());
                    }
                };
                if let Ok(t) = sim.pthread_create(detached, &body, &on_exit) {
                    if !detached {
                        let _ = sim.pthread_join(t);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn invariants_hold_after_every_operation(
            profile in prop::sample::select(PROFILES),
            delay in 0u32..4,
            ops in prop::collection::vec(op(), 0..60),
        ) {
            let sim = Sim::new(profile, delay);
            for op in &ops {
                run(&sim, op);
                if let Err(e) = sim.check_invariants() {
                    return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
                }
            }
            sim.drain();
            prop_assert_eq!(sim.check_invariants(), Ok(()));
        }

        #[test]
        fn balanced_sequences_leave_the_space_as_it_was(
            profile in prop::sample::select(PROFILES),
            delay in 0u32..4,
            takes in prop::collection::vec(0u8..6, 0..40),
            order in any::<u64>(),
            idle in 0u32..4,
        ) {
            let sim = Sim::new(profile, delay);
            for _ in 0..idle {
                sim.spawn_idle_thread().unwrap();
            }
            let before = sim.space();
            let task = *before.keys().next().unwrap();
            // Each take pushes the calls that undo it.
            type Undo = Box<dyn Fn(&Sim)>;
            let mut undo: Vec<Undo> = Vec::new();
            for take in takes {
                match take {
                    0 => {
                        let name = sim.mach_thread_self();
                        undo.push(Box::new(move |s| s.mach_port_deallocate(name).unwrap()));
                    }
                    1 => {
                        let port = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
                        undo.push(Box::new(move |s| s.mach_port_mod_refs(port, MACH_PORT_RIGHT_RECEIVE, -1).unwrap()));
                    }
                    2 => {
                        let port = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
                        sim.mach_port_insert_right(port, port, MACH_MSG_TYPE_MAKE_SEND).unwrap();
                        undo.push(Box::new(move |s| {
                            s.mach_port_deallocate(port).unwrap();
                            s.mach_port_mod_refs(port, MACH_PORT_RIGHT_RECEIVE, -1).unwrap();
                        }));
                    }
                    3 => {
                        sim.mach_port_mod_refs(task, MACH_PORT_RIGHT_SEND, 3).unwrap();
                        undo.push(Box::new(move |s| s.mach_port_mod_refs(task, MACH_PORT_RIGHT_SEND, -3).unwrap()));
                    }
                    4 => {
                        // task_threads, its rights released by the fix (the threads live on: the main thread
                        // and those spawned idle before the baseline).
                        let names = sim.task_threads().unwrap();
                        undo.push(Box::new(move |s| {
                            for &name in &names {
                                s.mach_port_deallocate(name).unwrap();
                            }
                        }));
                    }
                    _ => {
                        // A thread that balances its own references.
                        let body = || {
                            let me = sim.mach_thread_self();
                            sim.mach_port_deallocate(me).unwrap();
                        };
                        sim.pthread_create(true, &body, &|| {}).unwrap();
                    }
                }
            }
            // Undo in an order chosen by the test case, not necessarily the reverse one.
            let mut seed = order;
            while !undo.is_empty() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let f = undo.remove((seed >> 33) as usize % undo.len());
                f(&sim);
            }
            sim.drain();
            prop_assert_eq!(sim.space(), before);
        }

        #[test]
        fn the_fix_trims_any_thread_below_the_peg_to_zero_leaked_names(
            profile in prop::sample::select(PROFILES),
            extra in prop_oneof![0u32..100, 65_400u32..65_534],
            delay in 0u32..4,
        ) {
            let sim = Sim::new(profile, delay);
            let before = sim.space();
            spawn(&sim, extra, true);
            sim.drain();
            prop_assert_eq!(sim.space(), before);
        }
    }
}
