//! Sites for the Mach backends: [`Tracked`] wraps the model or the real calls and records, at every call
//! that adds a right or a user reference to a name in the task's space, the call stack that made it
//! ([`crate::sites::Recorder`], keyed by the calling source line: a line that calls `mach_thread_self`
//! 70,000 times a thread is unwound once); the calls that give one back take the latest one off the
//! name's list.
//!
//! At a tally, each name's list is cut to what the name holds now (its user references, and one for a
//! receive or port-set right), keeping the latest: references the workload did not add itself
//! (libpthread's own on a thread's port, the kernel's) and references given back behind the wrapper's
//! back (libpthread's release at thread exit) then take the oldest entries with them, and a name reused
//! after its list was emptied starts a new one. What is left of every list, counted by site, is what
//! each call left in the space.

use std::collections::BTreeMap;
use std::panic::Location;
use std::sync::Mutex;

use super::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t};
use super::port::*;
use super::{ExceptionHandler, KernResult, Mach};
use crate::backend::SiteTally;
use crate::record::SiteRecord;
use crate::sites::Recorder;

/// A [`Mach`] whose reference-adding calls are recorded with their stacks.
pub struct Tracked<M: Mach> {
    inner: M,
    recorder: Recorder,
    /// Per name, the sites of the rights and references added to it, oldest first, as (site, how many)
    /// runs.
    made: Mutex<BTreeMap<mach_port_name_t, Vec<(u32, usize)>>>,
}

impl<M: Mach> Tracked<M> {
    pub fn new(inner: M) -> Tracked<M> {
        Tracked { inner, recorder: Recorder::default(), made: Mutex::new(BTreeMap::new()) }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    fn made(&self) -> std::sync::MutexGuard<'_, BTreeMap<mach_port_name_t, Vec<(u32, usize)>>> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `count` additions to `name` by `call`, made at source line `at` (sites are keyed by the
    /// calling line: [`Recorder::capture_at`]).
    fn add(&self, call: &'static str, at: &'static Location<'static>, name: mach_port_name_t, count: usize) {
        if name == MACH_PORT_NULL || name == MACH_PORT_DEAD || count == 0 {
            return;
        }
        let site = self.recorder.capture_at(call, at);
        let mut made = self.made();
        let list = made.entry(name).or_default();
        match list.last_mut() {
            Some((last, n)) if *last == site => *n += count,
            _ => list.push((site, count)),
        }
    }

    /// Takes `count` additions off `name`'s list, the latest first.
    fn give_back(&self, name: mach_port_name_t, mut count: usize) {
        let mut made = self.made();
        let Some(list) = made.get_mut(&name) else { return };
        while count > 0 {
            let Some((_, n)) = list.last_mut() else { break };
            let taken = count.min(*n);
            (*n, count) = (*n - taken, count - taken);
            if *n == 0 {
                list.pop();
            }
        }
        if list.is_empty() {
            made.remove(&name);
        }
    }

    /// What the name holds now, in the units its list counts: its user references, plus one for a
    /// receive or port-set right; with its type. `None` for a name no longer in the space.
    fn holds(&self, name: mach_port_name_t) -> Option<(usize, mach_port_type_t)> {
        let t = self.inner.mach_port_type(name).ok()?;
        let right = if t & MACH_PORT_TYPE_SEND != 0 {
            Some(MACH_PORT_RIGHT_SEND)
        } else if t & MACH_PORT_TYPE_DEAD_NAME != 0 {
            Some(MACH_PORT_RIGHT_DEAD_NAME)
        } else {
            None
        };
        let urefs = right.map_or(0, |r| self.inner.mach_port_get_refs(name, r).unwrap_or(0)) as usize;
        let rights = usize::from(t & (MACH_PORT_TYPE_RECEIVE | MACH_PORT_TYPE_PORT_SET) != 0);
        Some((urefs + rights, t))
    }
}

/// The counter a call's additions move: a new name, or user references on one.
fn counter(call: &str) -> &'static str {
    if call == "mach_port_allocate" {
        "names"
    } else {
        "urefs"
    }
}

impl<M: Mach> Mach for Tracked<M> {
    type Thread = M::Thread;

    fn pthread_create(
        &self,
        detached: bool,
        body: &(dyn Fn() + Sync),
        on_exit: &(dyn Fn() + Sync),
    ) -> Result<Self::Thread, i32> {
        self.inner.pthread_create(detached, body, on_exit)
    }

    fn pthread_join(&self, thread: Self::Thread) -> Result<(), i32> {
        self.inner.pthread_join(thread)
    }

    fn pthread_mach_thread_np_self(&self) -> mach_port_t {
        self.inner.pthread_mach_thread_np_self()
    }

    #[track_caller]
    fn mach_thread_self(&self) -> mach_port_t {
        let name = self.inner.mach_thread_self();
        self.add("mach_thread_self", Location::caller(), name, 1);
        name
    }

    #[track_caller]
    fn mach_host_self(&self) -> mach_port_t {
        let name = self.inner.mach_host_self();
        self.add("mach_host_self", Location::caller(), name, 1);
        name
    }

    #[track_caller]
    fn task_threads(&self) -> KernResult<Vec<mach_port_t>> {
        let at = Location::caller();
        let names = self.inner.task_threads()?;
        for &name in &names {
            self.add("task_threads", at, name, 1);
        }
        Ok(names)
    }

    fn spawn_idle_thread(&self) -> Result<(), i32> {
        self.inner.spawn_idle_thread()
    }

    #[track_caller]
    fn mach_port_allocate(&self, right: mach_port_right_t) -> KernResult<mach_port_name_t> {
        let name = self.inner.mach_port_allocate(right)?;
        // A new name: whatever an earlier name of the same number had is gone.
        self.made().remove(&name);
        self.add("mach_port_allocate", Location::caller(), name, 1);
        Ok(name)
    }

    #[track_caller]
    fn mach_port_insert_right(
        &self,
        name: mach_port_name_t,
        poly: mach_port_t,
        poly_poly: mach_msg_type_name_t,
    ) -> KernResult<()> {
        self.inner.mach_port_insert_right(name, poly, poly_poly)?;
        self.add("mach_port_insert_right", Location::caller(), name, 1);
        Ok(())
    }

    fn mach_port_deallocate(&self, name: mach_port_name_t) -> KernResult<()> {
        self.inner.mach_port_deallocate(name)?;
        self.give_back(name, 1);
        Ok(())
    }

    #[track_caller]
    fn mach_port_mod_refs(
        &self,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> KernResult<()> {
        self.inner.mach_port_mod_refs(name, right, delta)?;
        if delta > 0 {
            self.add("mach_port_mod_refs", Location::caller(), name, delta as usize);
        } else {
            self.give_back(name, delta.unsigned_abs() as usize);
        }
        Ok(())
    }

    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        self.inner.mach_port_get_refs(name, right)
    }

    fn mach_port_type(&self, name: mach_port_name_t) -> KernResult<mach_port_type_t> {
        self.inner.mach_port_type(name)
    }

    fn mach_port_kobject(&self, name: mach_port_name_t) -> KernResult<u32> {
        self.inner.mach_port_kobject(name)
    }

    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>> {
        self.inner.mach_port_names()
    }

    fn has_reply_port(&self) -> bool {
        self.inner.has_reply_port()
    }

    fn drop_reply_port(&self) {
        self.inner.drop_reply_port()
    }

    #[track_caller]
    fn thread_swap_exception_ports(
        &self,
        thread: mach_port_t,
        mask: exception_mask_t,
        new_port: mach_port_t,
        behavior: exception_behavior_t,
        flavor: thread_state_flavor_t,
    ) -> KernResult<Vec<ExceptionHandler>> {
        let at = Location::caller();
        let old = self.inner.thread_swap_exception_ports(thread, mask, new_port, behavior, flavor)?;
        // Each handler that comes back is a send right the caller now owns.
        for handler in &old {
            self.add("thread_swap_exception_ports", at, handler.port, 1);
        }
        Ok(old)
    }

    fn settle_pause(&self) {
        self.inner.settle_pause()
    }

    fn notes(&self) -> Vec<String> {
        self.inner.notes()
    }

    fn site_tally(&self) -> Option<SiteTally> {
        let names: Vec<mach_port_name_t> = self.made().keys().copied().collect();
        let mut tally = SiteTally::new();
        for name in names {
            let Some((holds, t)) = self.holds(name) else {
                self.made().remove(&name);
                continue;
            };
            let kept: Vec<(u32, usize)> = {
                let mut made = self.made();
                let Some(list) = made.get_mut(&name) else { continue };
                // The oldest runs go first, down to what the name holds.
                let mut stale = list.iter().map(|r| r.1).sum::<usize>().saturating_sub(holds);
                while stale > 0 {
                    let taken = stale.min(list[0].1);
                    (list[0].1, stale) = (list[0].1 - taken, stale - taken);
                    if list[0].1 == 0 {
                        list.remove(0);
                    }
                }
                list.clone()
            };
            for (site, n) in kept {
                let entry = tally.entry(site).or_insert_with(|| (0, super::workload::name_kind(&self.inner, name, t)));
                entry.0 += n as i64;
            }
        }
        Some(tally)
    }

    fn site(&self, id: u32) -> Option<SiteRecord> {
        let call = self.recorder.call(id)?;
        Some(SiteRecord {
            counter: counter(call).to_owned(),
            kind: None,
            call: call.to_owned(),
            per_thread: 0.0,
            live: 0,
            outlived: 0,
            stopped: false,
            frames: self.recorder.frames(id),
        })
    }
}
