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
//!
//! Laid out as: `profiles.rs`, the releases and the rules that differ between them, and the task's kind;
//! `space.rs`, the IPC space (names, rights, user references) and the calls on it; `threads.rs`, threads,
//! their semaphores and exception ports, and the kernel's clock of thread events. Here: the model's state,
//! [`Sim`], and its [`Mach`] calls, which hand over to those rules.

mod profiles;
mod space;
mod threads;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t};
use super::kern_return::*;
use super::port::*;
use super::{ExceptionHandler, KernResult, Mach, IKOT_TASK_CONTROL};
use profiles::{JoinSemaphores, Rules};
use space::{Port, PortId};
use threads::{Event, Thread, ThreadId};

pub use profiles::{Profile, Task};
pub use space::Entry;

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
        self.lock().exit_thread(thread, detached, caller);
        Ok(thread)
    }

    fn pthread_join(&self, thread: ThreadId) -> Result<(), i32> {
        self.enter().map_err(|_| libc::ESRCH)?.join(thread)
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

    fn mach_host_self(&self) -> mach_port_t {
        let Ok(mut state) = self.enter() else { return MACH_PORT_NULL };
        state.host_self()
    }

    fn task_threads(&self) -> KernResult<Vec<mach_port_t>> {
        Ok(self.enter()?.task_threads())
    }

    fn spawn_idle_thread(&self) -> Result<(), i32> {
        let mut state = self.enter().map_err(|_| libc::EAGAIN)?;
        state.new_thread(true);
        Ok(())
    }

    fn mach_port_allocate(&self, right: mach_port_right_t) -> KernResult<mach_port_name_t> {
        self.enter()?.allocate(right)
    }

    fn mach_port_insert_right(
        &self,
        name: mach_port_name_t,
        poly: mach_port_t,
        poly_poly: mach_msg_type_name_t,
    ) -> KernResult<()> {
        self.enter()?.insert_right(name, poly, poly_poly)
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

    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        self.enter()?.get_refs(name, right)
    }

    fn mach_port_type(&self, name: mach_port_name_t) -> KernResult<mach_port_type_t> {
        self.enter()?.port_type(name)
    }

    fn mach_port_kobject(&self, name: mach_port_name_t) -> KernResult<u32> {
        self.enter()?.kobject(name)
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
        self.enter()?.swap_exception_ports(thread, mask, new_port, behavior, flavor)
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

    pub(super) const PROFILES: &[Profile] = Profile::ALL;

    /// A thread taking `extra` references to itself, with Clozure CL's fix in its exit hook when `fix`.
    pub(super) fn spawn(sim: &Sim, extra: u32, fix: bool) -> mach_port_name_t {
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
