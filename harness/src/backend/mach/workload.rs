//! The Mach workload, census and settle step, written once over [`Mach`].
//!
//! Where each axis is realized:
//! - `thread`: [`MachWorkload::cycle`] (detached or joinable; `pthread_join` or not);
//! - `self`: [`take_self_references`], K `mach_thread_self()` calls, each balanced by
//!   `mach_port_deallocate` when `balanced`;
//! - `exc`: [`install_exception_port`], Clozure CL's per-thread exception port, swapped back and released
//!   when `restored`;
//! - `fix`: [`balance_thread_port`], Clozure CL's fix, run from the thread's TSD destructor.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::exception::{
    EXCEPTION_DEFAULT, EXC_MASK_ARITHMETIC, EXC_MASK_BAD_ACCESS, EXC_MASK_BAD_INSTRUCTION, EXC_MASK_SOFTWARE,
    THREAD_STATE_NONE,
};
use super::kern_return::{kern_return_t, KERN_INVALID_NAME};
use super::port::*;
use super::{KernResult, Mach};
use crate::backend::{CallError, Inventory, SettleError, SettleFailure, Workload};
use crate::matrix::{Cell, Exc, Fix, SelfRef, ThreadKind};
use crate::record::Params;
use threadleak_census::mach::PortSpace;

pub use threadleak_census::mach::COUNTERS;

/// The exceptions Clozure CL routes to its per-thread port (`LISP_EXCEPTIONS_HANDLED_MASK`,
/// lisp-kernel/x86-exceptions.c in Clozure/ccl).
const EXCEPTION_MASK: u32 = EXC_MASK_SOFTWARE | EXC_MASK_BAD_ACCESS | EXC_MASK_BAD_INSTRUCTION | EXC_MASK_ARITHMETIC;

/// Polls before the settle step gives up (the model's clock moves only when polled).
const SETTLE_POLLS: u32 = 50_000;

/// Wall time before the settle step gives up (a real kernel's clock moves anyway).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Attaches the call's name to a `kern_return_t`: the one place Mach failures become [`CallError`]s.
pub(crate) fn kr<T>(call: &'static str, result: KernResult<T>) -> Result<T, CallError> {
    result.map_err(|code| CallError::kern(call, code))
}

/// What a thread's body and its exit hook share.
#[derive(Default)]
struct ThreadState {
    /// The thread's own port name (`pthread_mach_thread_np`), recorded for the fix and the settle step.
    kport: mach_port_name_t,
    /// The first failed call, which ends the cell.
    failure: Option<CallError>,
    /// What the fix's `mach_port_mod_refs` returned when it failed: an observation, not a harness error
    /// (Clozure CL ignores it too).
    fix_failed: Option<kern_return_t>,
}

/// One cell's workload over a [`Mach`] implementation.
pub struct MachWorkload<M: Mach> {
    api: M,
    cell: Cell,
    self_calls: u32,
    /// The port name of the last thread created, which the settle step waits on.
    last_kport: Option<mach_port_name_t>,
    threads: u64,
    /// How often the fix's `mach_port_mod_refs` failed, by `kern_return_t`.
    fix_failures: BTreeMap<kern_return_t, u64>,
}

impl<M: Mach> MachWorkload<M> {
    pub fn new(api: M, cell: Cell, params: &Params) -> Result<MachWorkload<M>, CallError> {
        let mut workload = MachWorkload {
            api,
            cell,
            self_calls: params.self_calls,
            last_kport: None,
            threads: 0,
            fix_failures: BTreeMap::new(),
        };
        // The first MIG call on a thread creates its reply port: make it now, before any baseline.
        let mut scratch = [0i64; 7];
        workload.census(&mut scratch)?;
        Ok(workload)
    }

    pub fn api(&self) -> &M {
        &self.api
    }
}

/// The `self` axis: K references to the thread's own port, released again when balanced.
pub(crate) fn take_self_references<M: Mach>(api: &M, self_ref: SelfRef, k: u32) -> Result<(), CallError> {
    if self_ref == SelfRef::None {
        return Ok(());
    }
    for _ in 0..k {
        let name = api.mach_thread_self();
        if self_ref == SelfRef::Balanced {
            kr("mach_port_deallocate (mach_thread_self)", api.mach_port_deallocate(name))?;
        }
    }
    Ok(())
}

/// The `exc` axis, as Clozure CL installs its per-thread exception port: a receive right with a send
/// right made from it, swapped in as the thread's handler. `restored` swaps the old handlers back,
/// releases the rights that come back, then the send and the receive right.
fn install_exception_port<M: Mach>(api: &M, exc: Exc, thread: mach_port_t) -> Result<(), CallError> {
    if exc == Exc::None {
        return Ok(());
    }
    let port = kr("mach_port_allocate", api.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE))?;
    kr("mach_port_insert_right", api.mach_port_insert_right(port, port, MACH_MSG_TYPE_MAKE_SEND))?;
    let old = kr(
        "thread_swap_exception_ports",
        api.thread_swap_exception_ports(thread, EXCEPTION_MASK, port, EXCEPTION_DEFAULT, THREAD_STATE_NONE),
    )?;
    if exc == Exc::Leaked {
        return Ok(());
    }
    for handler in &old {
        let ours = kr(
            "thread_swap_exception_ports (restore)",
            api.thread_swap_exception_ports(thread, handler.mask, handler.port, handler.behavior, handler.flavor),
        )?;
        // What comes back is our own port, as send rights the task now owns; and the old handler's right
        // was copied into the thread again, so ours can go too.
        for right in ours.iter().chain(std::iter::once(handler)) {
            if right.port != MACH_PORT_NULL && right.port != MACH_PORT_DEAD {
                kr("mach_port_deallocate (exception handler)", api.mach_port_deallocate(right.port))?;
            }
        }
    }
    kr("mach_port_deallocate (exception port send right)", api.mach_port_deallocate(port))?;
    kr("mach_port_mod_refs (exception port receive right)", api.mach_port_mod_refs(port, MACH_PORT_RIGHT_RECEIVE, -1))
}

/// The `fix` axis: Clozure CL's `shutdown_thread_tcr` trims the thread port's send-right references to
/// exactly one, so that libpthread's release at termination destroys the name (lisp-kernel/thread_manager.c).
pub(crate) fn balance_thread_port<M: Mach>(
    api: &M,
    kport: mach_port_name_t,
) -> Result<Option<kern_return_t>, CallError> {
    let refs = kr("mach_port_get_refs (fix)", api.mach_port_get_refs(kport, MACH_PORT_RIGHT_SEND))?;
    if refs > 1 {
        let delta = -((refs - 1) as mach_port_delta_t);
        if let Err(code) = api.mach_port_mod_refs(kport, MACH_PORT_RIGHT_SEND, delta) {
            return Ok(Some(code));
        }
    }
    Ok(None)
}

impl<M: Mach> Workload for MachWorkload<M> {
    fn cycle(&mut self) -> Result<(), CallError> {
        let Cell { thread, self_ref, exc, fix } = self.cell;
        let (api, k) = (&self.api, self.self_calls);
        let state = Mutex::new(ThreadState::default());
        let lock = || state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let body = || {
            let kport = api.pthread_mach_thread_np_self();
            lock().kport = kport;
            let result = take_self_references(api, self_ref, k).and_then(|()| install_exception_port(api, exc, kport));
            if let Err(e) = result {
                lock().failure.get_or_insert(e);
            }
        };
        let on_exit = || {
            if fix == Fix::Off {
                return;
            }
            let kport = lock().kport;
            match balance_thread_port(api, kport) {
                Ok(failed) => lock().fix_failed = failed,
                Err(e) => {
                    lock().failure.get_or_insert(e);
                }
            }
        };
        let created = api.pthread_create(thread == ThreadKind::Detached, &body, &on_exit);
        let handle = created.map_err(|errno| CallError::errno("pthread_create", errno))?;
        if thread == ThreadKind::Joined {
            api.pthread_join(handle).map_err(|errno| CallError::errno("pthread_join", errno))?;
        }
        let state = state.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.threads += 1;
        self.last_kport = Some(state.kport);
        if let Some(code) = state.fix_failed {
            *self.fix_failures.entry(code).or_default() += 1;
        }
        match state.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until the last thread's port name is dead or gone (libpthread's reference is dropped by the
    /// kernel after the thread is joinable, `_bsdthread_terminate`, and the port dies after that), then
    /// until two censuses agree.
    fn settle(&mut self) -> Result<(), SettleFailure> {
        let started = std::time::Instant::now();
        if let Some(name) = self.last_kport {
            let mut polls = 0u32;
            loop {
                match self.api.mach_port_type(name) {
                    Err(KERN_INVALID_NAME) => break,
                    Ok(t) if t & MACH_PORT_TYPE_DEAD_NAME != 0 => break,
                    Ok(_) => {}
                    Err(code) => return Err(CallError::kern("mach_port_type (settle)", code).into()),
                }
                polls += 1;
                if gave_up(started, polls) {
                    return Err(timed_out(
                        started,
                        format!("thread port name {name:#x} still holds a send right after {polls} polls"),
                    ));
                }
                self.api.settle_pause();
            }
        }
        censuses_agree(&self.api, started)
    }

    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError> {
        census(&self.api, out)
    }

    fn inventory(&mut self) -> Result<Inventory, CallError> {
        inventory(&self.api)
    }

    fn sites(&mut self) -> Option<crate::backend::SiteTally> {
        self.api.site_tally()
    }

    fn site(&self, id: u32) -> Option<crate::record::SiteRecord> {
        self.api.site(id)
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = self.api.notes();
        for (&code, &count) in &self.fix_failures {
            let name = super::kern_return::name(code).unwrap_or("an unknown kern_return_t");
            notes.push(format!(
                "the fix's mach_port_mod_refs failed with {name} ({code}) in {count} of {} threads",
                self.threads
            ));
        }
        notes
    }
}

/// Whether the settle step, begun at `started`, has polled `polls` times or waited too long.
fn gave_up(started: std::time::Instant, polls: u32) -> bool {
    polls >= SETTLE_POLLS || started.elapsed() >= SETTLE_LIMIT
}

fn timed_out(started: std::time::Instant, detail: String) -> SettleFailure {
    SettleFailure::TimedOut(SettleError { waited_ms: started.elapsed().as_millis() as u64, detail })
}

/// The end of every settle step: waits until two consecutive censuses agree.
pub(crate) fn censuses_agree<M: Mach>(api: &M, started: std::time::Instant) -> Result<(), SettleFailure> {
    let (mut a, mut b) = ([0i64; 7], [0i64; 7]);
    let mut tries = 0u32;
    loop {
        census(api, &mut a)?;
        census(api, &mut b)?;
        if a == b {
            return Ok(());
        }
        tries += 1;
        if gave_up(started, tries) {
            return Err(timed_out(started, format!("two consecutive censuses never agreed ({tries} tries)")));
        }
        api.settle_pause();
    }
}

/// What a name holds, as the inventory names it: its rights, or a dead name; `to` says what the port
/// stands for, where the kernel tells it.
fn right_kind(t: mach_port_type_t, to: Option<(&str, &str)>) -> String {
    let rights: Vec<&str> = [
        (MACH_PORT_TYPE_RECEIVE, "receive"),
        (MACH_PORT_TYPE_SEND, "send"),
        (MACH_PORT_TYPE_SEND_ONCE, "send-once"),
        (MACH_PORT_TYPE_PORT_SET, "port set"),
    ]
    .into_iter()
    .filter(|&(bit, _)| t & bit != 0)
    .map(|(_, name)| name)
    .collect();
    let to = to.map_or(String::new(), |(one, _)| format!(" to {one}"));
    match rights.as_slice() {
        _ if t & MACH_PORT_TYPE_DEAD_NAME != 0 => "dead name".to_owned(),
        [] => format!("name of type {t:#x}"),
        [one] if *one == "port set" => "port set".to_owned(),
        [one] => format!("name with a {one} right{to}"),
        many => format!("name with {} rights{to}", many.join(" and ")),
    }
}

/// What a kernel object type (`IKOT_*`, osfmk/kern/ipc_kobject.h) is, once and many times over; `None`
/// for a port of the task's own (`IKOT_NONE`).
fn kobject_words(kind: u32) -> Option<(&'static str, &'static str)> {
    use super::{IKOT_HOST, IKOT_NONE, IKOT_SEMAPHORE, IKOT_TASK_CONTROL, IKOT_THREAD_CONTROL};
    match kind {
        IKOT_NONE => None,
        IKOT_THREAD_CONTROL => Some(("a thread", "threads")),
        IKOT_TASK_CONTROL => Some(("the task", "the task")),
        IKOT_HOST => Some(("the host", "the host")),
        IKOT_SEMAPHORE => Some(("a semaphore", "semaphores")),
        _ => Some(("a kernel object", "kernel objects")),
    }
}

/// What the port a name of type `t` holds a right to stands for, where the kernel tells it.
fn stands_for<M: Mach>(api: &M, name: mach_port_name_t, t: mach_port_type_t) -> Option<(&'static str, &'static str)> {
    let live = t & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE) != 0;
    if live {
        api.mach_port_kobject(name).ok().and_then(kobject_words)
    } else {
        None
    }
}

/// What a name of type `t` is, as the inventory names it (`dead name`, `name with a send right to a
/// thread`).
pub(crate) fn name_kind<M: Mach>(api: &M, name: mach_port_name_t, t: mach_port_type_t) -> String {
    right_kind(t, stands_for(api, name, t))
}

/// The task's names by what they hold (`names`, `dead name`), and the user references on send rights and
/// on dead names (`urefs`, `on dead names`): what a census counts, told apart. What a port stands for (a
/// thread, the host) is said as `mach_port_kobject` tells it, which release kernels do in every era.
pub fn inventory<M: Mach>(api: &M) -> Result<Inventory, CallError> {
    let mut out = Inventory::new();
    for (name, t) in kr("mach_port_names (inventory)", api.mach_port_names())? {
        let to = stands_for(api, name, t);
        *out.entry(("names".to_owned(), right_kind(t, to))).or_insert(0) += 1;
        let (right, on) = if t & MACH_PORT_TYPE_SEND != 0 {
            (
                MACH_PORT_RIGHT_SEND,
                to.map_or("on send rights".to_owned(), |(_, many)| format!("on send rights to {many}")),
            )
        } else if t & MACH_PORT_TYPE_DEAD_NAME != 0 {
            (MACH_PORT_RIGHT_DEAD_NAME, "on dead names".to_owned())
        } else {
            continue;
        };
        match api.mach_port_get_refs(name, right) {
            Ok(refs) => *out.entry(("urefs".to_owned(), on)).or_insert(0) += i64::from(refs),
            Err(KERN_INVALID_NAME) => {}
            Err(code) => return Err(CallError::kern("mach_port_get_refs (inventory)", code)),
        }
    }
    Ok(out)
}

/// Reads the [`COUNTERS`] into `out`: the census of the port space `api` stands for
/// ([`threadleak_census::mach::census`], which the probe takes on macOS too).
pub fn census<M: Mach>(api: &M, out: &mut [i64]) -> Result<(), CallError> {
    threadleak_census::mach::census(&Space(api), out)
}

/// A [`Mach`] as the census sees it.
struct Space<'a, M>(&'a M);

impl<M: Mach> PortSpace for Space<'_, M> {
    fn mach_port_names(&self) -> KernResult<Vec<(mach_port_name_t, mach_port_type_t)>> {
        self.0.mach_port_names()
    }

    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        self.0.mach_port_get_refs(name, right)
    }

    fn has_reply_port(&self) -> bool {
        self.0.has_reply_port()
    }

    fn drop_reply_port(&self) {
        self.0.drop_reply_port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mach::sim::{Profile, Sim};

    fn census(w: &mut MachWorkload<Sim>) -> [i64; 7] {
        let mut out = [0; 7];
        w.census(&mut out).unwrap();
        out
    }

    #[test]
    fn without_the_settle_step_the_census_would_count_a_live_thread() {
        let cell: Cell = "thread=joined,self=leaked,exc=none,fix=off".parse().unwrap();
        let params = Params { cycles: 2, warmup: 1, self_calls: 1, memory: false };
        let mut w = MachWorkload::new(Sim::new(Profile::Xnu11417, 50), cell, &params).unwrap();
        w.settle().unwrap();
        let base = census(&mut w);
        w.cycle().unwrap();
        // Joined, but libpthread's reference is not yet dropped and the port is alive: 2 urefs, no dead name.
        let early = census(&mut w);
        assert_eq!((early[0] - base[0], early[5] - base[5], early[6] - base[6]), (1, 0, 2));
        w.settle().unwrap();
        let settled = census(&mut w);
        assert_eq!((settled[0] - base[0], settled[5] - base[5], settled[6] - base[6]), (1, 1, 1));
    }

    #[test]
    fn a_settle_that_never_ends_names_the_port_it_waited_on() {
        let cell: Cell = "thread=detached,self=none,exc=none,fix=off".parse().unwrap();
        let params = Params { cycles: 2, warmup: 1, self_calls: 1, memory: false };
        // The model's delay is beyond the settle step's patience (each poll is two clock steps).
        let mut w = MachWorkload::new(Sim::new(Profile::Xnu11417, 3 * SETTLE_POLLS), cell, &params).unwrap();
        w.cycle().unwrap();
        match w.settle() {
            Err(SettleFailure::TimedOut(e)) => {
                assert!(e.detail.starts_with("thread port name 0x"), "{}", e.detail);
                assert!(e.detail.ends_with(&format!("still holds a send right after {SETTLE_POLLS} polls")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_failed_mach_call_names_the_call_and_the_code() {
        let e = kr::<()>("mach_port_allocate", Err(super::super::kern_return::KERN_RESOURCE_SHORTAGE)).unwrap_err();
        assert_eq!(e.to_string(), "mach_port_allocate failed: KERN_RESOURCE_SHORTAGE (kern_return_t 6)");
    }
}
