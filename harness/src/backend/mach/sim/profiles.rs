//! The profiles: which macOS release's rules the model follows ([`Profile`]), and which task it is, as XNU
//! classes it for guard exceptions ([`Task`]). The rules that differ between releases are a profile's
//! `Rules`, each citing the tag that changed it and the lines it comes from (apple-oss-distributions: xnu at
//! xnu-1504.15.3 with Libc-594.9.5 for 10.6; xnu-3248.60.10, xnu-4570.71.2 and xnu-4903.270.47 with
//! libpthread-138.10.4, -301.50.1 and -330.250.2 for 10.11, 10.13 and 10.14; xnu-11417.121.6 with
//! libpthread-539 for today's).

use crate::backend::mach::exception::{exception_behavior_t, EXC_TYPES_COUNT};
use crate::backend::mach::port::*;

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
pub(super) enum JoinSemaphores {
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
pub(super) enum Guards {
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
pub(super) struct Rules {
    /// The highest count a send right reaches by copyout (from xnu-3789.31.2: `MACH_PORT_UREFS_MAX`; before:
    /// one less, "maximum urefs for send is MACH_PORT_UREFS_MAX-1", osfmk/ipc/ipc_right.c:2457-2465 in
    /// xnu-3248.60.10).
    pub(super) send_urefs_cap: mach_port_urefs_t,
    /// From xnu-3789.31.2: once a count reaches `MACH_PORT_UREFS_MAX` it is sticky ("leave urefs pegged"):
    /// deallocate leaves it, `mod_refs` ignores any delta but `-MACH_PORT_UREFS_MAX`, and overflowing deltas
    /// peg (osfmk/ipc/ipc_right.c:877, 1277-1290 in xnu-3789.31.2). Before: counts move freely and positive
    /// overflow is `KERN_UREFS_OVERFLOW` (ipc_right.c:1317-1319 in xnu-3248.60.10).
    pub(super) sticky_peg: bool,
    /// Invalid names, rights and values in `mach_port_deallocate`/`mod_refs`: from xnu-4903.221.2 (the first
    /// 10.14 tag published) they raise guard exceptions.
    pub(super) guards: Guards,
    /// From xnu-3789.31.2: `ipc_right_delta` refuses `|delta| > MACH_PORT_UREFS_MAX` on a send right or dead
    /// name, once the right's type is checked (osfmk/ipc/ipc_right.c:1270, 1331 in xnu-3789.31.2;
    /// :1485-1489, 1565-1569 in xnu-11417.121.6).
    pub(super) delta_range_check: bool,
    /// Exception types a thread has slots for (`EXC_TYPES_COUNT`, osfmk/mach/i386/exception.h:66: 11 in
    /// xnu-1504.15.3, 14 from xnu-3247.1.106).
    pub(super) exc_types: usize,
    /// The highest exception behavior `thread_swap_exception_ports` accepts, flags masked: 3
    /// (`EXCEPTION_STATE_IDENTITY`) up to xnu-8019 (osfmk/kern/ipc_tt.c:1681-1695 in xnu-1504.15.3,
    /// :2455-2462 in xnu-4903.270.47); 5 (`_STATE_IDENTITY_PROTECTED`) from xnu-11215.1.10
    /// (`set_exception_ports_validation`, ipc_tt.c:4225-4284 in xnu-11417.121.6).
    pub(super) max_behavior: exception_behavior_t,
    /// The flags a behavior may carry: `MACH_EXCEPTION_CODES` only up to 10.14; today also `_ERRORS` (from
    /// xnu-6153.11.26) and `_BACKTRACE_PREFERRED` (from xnu-8792.41.9; osfmk/mach/exception_types.h:110-145
    /// in xnu-11417.121.6).
    pub(super) exception_flags: exception_behavior_t,
    /// The C library's semaphores for joiners.
    pub(super) join_semaphores: JoinSemaphores,
    /// A thread that is terminating (its port not yet dead) comes back from `task_threads` as
    /// `MACH_PORT_NULL` (from xnu-7195.101.1, `thread->ipc_active`: osfmk/kern/ipc_tt.c:4000-4020 in
    /// xnu-11417.121.6); before, as a send right to its port (`convert_thread_to_port`, ipc_tt.c:2145 in
    /// xnu-4903.270.47).
    pub(super) terminating_threads_null: bool,
}

/// `MACH_EXCEPTION_CODES`, the flag every release accepts.
pub(super) const CODES: exception_behavior_t = 1 << 31;

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
    pub(super) fn rules(self) -> Rules {
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
