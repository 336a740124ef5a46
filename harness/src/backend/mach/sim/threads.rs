//! Threads, as libpthread and the kernel make, end, join and free them (`_bsdthread_create` and
//! `_bsdthread_terminate`, apple/darwin-libpthread kern/kern_support.c; `_pthread_exit` and `pthread_join`,
//! src/pthread.c; `ipc_thread_terminate`, osfmk/kern/ipc_tt.c), on the model's clock; the C library's
//! semaphores for joiners (Libc-594.9.5, libpthread-138 to -301 with libplatform); `task_threads`
//! (osfmk/kern/task.c); and each thread's exception ports (`thread_swap_exception_ports`, osfmk/kern/ipc_tt.c).

use crate::backend::mach::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t, EXC_TYPES_COUNT};
use crate::backend::mach::kern_return::*;
use crate::backend::mach::port::*;
use crate::backend::mach::{ExceptionHandler, KernResult, IKOT_SEMAPHORE, IKOT_THREAD_CONTROL};

use super::profiles::{JoinSemaphores, CODES};
use super::space::PortId;
use super::State;

pub(super) type ThreadId = usize;

/// One exception handler slot of a thread: the port, behavior and flavor installed, if any.
type Slot = Option<(PortId, exception_behavior_t, thread_state_flavor_t)>;

#[derive(Clone, Debug)]
pub(super) struct Thread {
    pub(super) port: PortId,
    /// The name libpthread recorded for the thread (`pthread_mach_thread_np`).
    pub(super) kport: mach_port_name_t,
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
pub(super) enum Event {
    /// `_bsdthread_terminate`: the kernel deallocates libpthread's reference to the thread port.
    Release(ThreadId),
    /// The thread is freed and its port destroyed.
    Free(ThreadId),
}

impl State {
    pub(super) fn new_thread(&mut self, detached: bool) -> ThreadId {
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

    pub(super) fn tick(&mut self) {
        self.clock += 1;
        self.process_due();
    }

    pub(super) fn process_due(&mut self) {
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

    /// What follows a thread's body and TSD destructors, back on `caller`: `_pthread_exit` takes a semaphore
    /// for a joiner where the C library has them, and the kernel releases libpthread's reference to the thread
    /// port after `delay` steps of the clock and frees the thread as many again later.
    pub(super) fn exit_thread(&mut self, thread: ThreadId, detached: bool, caller: ThreadId) {
        if let JoinSemaphores::Cached { .. } = self.rules.join_semaphores {
            // _pthread_exit: a joinable thread with no joiner waiting takes a semaphore for one; every thread
            // then clears its cache.
            if !detached {
                let sem = self.get_cached_semaphore(thread);
                self.threads[thread].joinsem = Some(sem);
            }
            self.put_cached_semaphore(thread, None);
        }
        if !detached && self.rules.join_semaphores == JoinSemaphores::Pool16 {
            // Libc-594: the joinable thread exits with no joiner waiting and leaves a semaphore for one.
            let sem = self.take_semaphore();
            self.threads[thread].joinsem = Some(sem);
        }
        self.current = caller;
        let delay = self.delay;
        self.schedule(delay, Event::Release(thread));
        self.schedule(2 * delay, Event::Free(thread));
        self.process_due();
    }

    /// `pthread_join` of `thread` by the current thread.
    pub(super) fn join(&mut self, thread: ThreadId) -> Result<(), i32> {
        let t = self.threads.get_mut(thread).ok_or(libc::ESRCH)?;
        if t.detached || t.joined {
            return Err(libc::EINVAL);
        }
        // Joining frees libpthread's memory only; it never touches the port (src/pthread.c). Libc-594's join
        // returns the thread's semaphore to the pool (restore_sem_to_pool); libpthread-138 to -301 put it in
        // the joiner's cache (-301: after taking the joiner's own out, which goes back last).
        t.joined = true;
        let joinsem = t.joinsem.take();
        let joiner = self.current;
        match self.rules.join_semaphores {
            JoinSemaphores::Pool16 => self.sem_pool.extend(joinsem),
            JoinSemaphores::Cached { join_destroys: true } => {
                let death = self.get_cached_semaphore(joiner);
                self.put_cached_semaphore(joiner, joinsem);
                self.put_cached_semaphore(joiner, Some(death));
            }
            JoinSemaphores::Cached { join_destroys: false } => self.put_cached_semaphore(joiner, joinsem),
            JoinSemaphores::None => {}
        }
        Ok(())
    }

    /// `task_threads` (`task_threads_internal`, osfmk/kern/task.c:3872-3964 in xnu-11417.121.6, :1975-2081 in
    /// xnu-3248.60.10): a send right to every thread on the task's list, in creation order. A thread stays
    /// listed until the reaper takes it, after it has begun terminating and before its port dies
    /// (osfmk/kern/thread.c:664-681 in xnu-3248.60.10): in that window it comes back as a send right to its
    /// port, or today as `MACH_PORT_NULL` (`Rules::terminating_threads_null`).
    pub(super) fn task_threads(&mut self) -> Vec<mach_port_t> {
        let listed: Vec<(PortId, bool)> =
            self.threads.iter().filter(|t| self.ports[t.port].active).map(|t| (t.port, t.released)).collect();
        let null = self.rules.terminating_threads_null;
        listed
            .into_iter()
            .map(|(port, terminating)| if terminating && null { MACH_PORT_NULL } else { self.copyout_send(port) })
            .collect()
    }

    /// `thread_swap_exception_ports` on the thread `thread` names: every selected slot gets its own copy of the
    /// new send right, and the replaced handlers come back as send rights the caller now owns.
    pub(super) fn swap_exception_ports(
        &mut self,
        thread: mach_port_t,
        mask: exception_mask_t,
        new_port: mach_port_t,
        behavior: exception_behavior_t,
        flavor: thread_state_flavor_t,
    ) -> KernResult<Vec<ExceptionHandler>> {
        let types = self.rules.exc_types;
        let valid_mask = ((1u32 << types) - 1) & !1;
        if mask & !valid_mask != 0 {
            return Err(KERN_INVALID_ARGUMENT);
        }
        let target = self.port_of(thread).map_err(|_| KERN_INVALID_ARGUMENT)?;
        let Some(t) = target.and_then(|p| self.threads.iter().position(|t| t.port == p)) else {
            return Err(KERN_INVALID_ARGUMENT);
        };
        let new = self.port_of(new_port)?;
        // EXCEPTION_DEFAULT, _STATE, _STATE_IDENTITY (and today _IDENTITY_PROTECTED and
        // _STATE_IDENTITY_PROTECTED), flags masked: MACH_EXCEPTION_CODES, and today _ERRORS and
        // _BACKTRACE_PREFERRED, which with an _IDENTITY_PROTECTED behavior require MACH_EXCEPTION_CODES
        // (set_exception_ports_validation, osfmk/kern/ipc_tt.c:4225-4284 in xnu-11417.121.6; ipc_tt.c:1681-1695
        // in xnu-1504.15.3).
        let flags = self.rules.exception_flags;
        let kind = behavior & !flags;
        let needs_codes = kind == 4 || behavior & (1 << 29) != 0;
        if new.is_some() && (!(1..=self.rules.max_behavior).contains(&kind) || (needs_codes && behavior & CODES == 0)) {
            return Err(KERN_INVALID_ARGUMENT);
        }
        // The replaced handlers, grouped by (port, behavior, flavor) with their masks combined.
        let mut old: Vec<(exception_mask_t, Slot)> = Vec::new();
        for i in 1..types {
            if mask & (1 << i) == 0 {
                continue;
            }
            let slot = self.threads[t].exc[i];
            match old.iter_mut().find(|(_, s)| *s == slot) {
                Some((m, _)) => *m |= 1 << i,
                None => old.push((1 << i, slot)),
            }
            self.threads[t].exc[i] = new.map(|p| (p, behavior, flavor));
        }
        Ok(old
            .into_iter()
            .map(|(mask, slot)| match slot {
                None => ExceptionHandler { mask, port: MACH_PORT_NULL, behavior: 0, flavor: 0 },
                Some((port, behavior, flavor)) => {
                    ExceptionHandler { mask, port: self.copyout_send(port), behavior, flavor }
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::spawn;
    use super::super::{Entry, Profile, Sim, Task};
    use super::*;
    use crate::backend::mach::Mach;
    use std::collections::BTreeMap;

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
}
