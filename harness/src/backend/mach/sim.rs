//! mach-sim: a model of one task's IPC space under XNU's port-rights rules, with the libpthread thread
//! lifecycle around it, implementing [`Mach`] so the Mach workload runs on any OS.
//!
//! What is modelled, and where XNU says so (apple-oss-distributions/xnu unless noted; "old" is
//! apple/darwin-xnu at xnu-1456/1699, the releases around macOS 10.6's xnu-1504):
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
//! - Modern XNU raises a guard exception, `kGUARD_EXC_INVALID_NAME`, when a task deallocates or changes
//!   references of a name it does not have (`mach_port_deallocate_kernel`, osfmk/ipc/mach_port.c); old XNU
//!   only returns `KERN_INVALID_NAME`. The model treats the exception as fatal, as it is for a task whose
//!   exception-guard behavior includes `TASK_EXC_GUARD_MP_FATAL`.
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
//! Not modelled: port sets, send-once rights, notifications and their requests, message queues, MIG reply
//! ports. Calls the workload does not make in those forms return `KERN_INVALID_VALUE`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::exception::{exception_behavior_t, exception_mask_t, thread_state_flavor_t, EXC_TYPES_COUNT};
use super::kern_return::*;
use super::port::*;
use super::{ExceptionHandler, KernResult, Mach};

/// Whose rules the model follows: the OS-dependent rules are data, chosen here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Profile {
    /// Today's rules (macOS 15; xnu-11417): urefs peg at 65535 and stay pegged.
    #[cfg_attr(feature = "cli", value(name = "xnu-11417"))]
    #[serde(rename = "xnu-11417")]
    Xnu11417,
    /// macOS 10.6 (xnu-1504): urefs of a send right stop at 65534; `mach_port_mod_refs` reports positive
    /// overflow with `KERN_UREFS_OVERFLOW`; no guard exceptions.
    #[cfg_attr(feature = "cli", value(name = "xnu-1504"))]
    #[serde(rename = "xnu-1504")]
    Xnu1504,
}

/// The rules that differ between releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rules {
    /// The highest count a send right reaches by copyout (modern: `MACH_PORT_UREFS_MAX`; old: one less,
    /// "maximum urefs for send is MACH_PORT_UREFS_MAX-1").
    send_urefs_cap: mach_port_urefs_t,
    /// Modern: once a count reaches `MACH_PORT_UREFS_MAX` it is sticky ("leave urefs pegged"): deallocate
    /// leaves it, `mod_refs` ignores any delta but `-MACH_PORT_UREFS_MAX`, and overflowing deltas peg.
    /// Old: counts move freely and positive overflow is `KERN_UREFS_OVERFLOW`.
    sticky_peg: bool,
    /// Modern: invalid names and rights in `mach_port_deallocate`/`mod_refs` raise guard exceptions.
    guard_exceptions: bool,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Xnu11417 => "xnu-11417",
            Profile::Xnu1504 => "xnu-1504",
        }
    }

    fn rules(self) -> Rules {
        match self {
            Profile::Xnu11417 => {
                Rules { send_urefs_cap: MACH_PORT_UREFS_MAX, sticky_peg: true, guard_exceptions: true }
            }
            Profile::Xnu1504 => {
                Rules { send_urefs_cap: MACH_PORT_UREFS_MAX - 1, sticky_peg: false, guard_exceptions: false }
            }
        }
    }
}

type PortId = usize;
type ThreadId = usize;

/// A kernel port object.
#[derive(Clone, Debug)]
struct Port {
    active: bool,
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
        let mut state = State {
            rules: profile.rules(),
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
            absorbed: 0,
            ignored: 0,
        };
        // mach_task_self(): a send right to the task's own port.
        let task = state.new_port();
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
    fn new_port(&mut self) -> PortId {
        self.ports.push(Port { active: true });
        self.ports.len() - 1
    }

    fn new_name(&mut self) -> mach_port_name_t {
        let index = self.free_indexes.pop().unwrap_or_else(|| {
            self.generations.push(0);
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
        let port = self.new_port();
        // _bsdthread_create: ipc_port_copyout_send of the new thread's port into the task's space.
        let kport = self.copyout_send(port);
        self.threads.push(Thread { port, kport, detached, joined: false, exc: [None; EXC_TYPES_COUNT] });
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
                let kport = self.threads[t].kport;
                if !self.entries.contains_key(&kport) && self.rules.guard_exceptions && self.fault.is_none() {
                    self.fault = Some(format!(
                        "EXC_GUARD kGUARD_EXC_INVALID_NAME: _bsdthread_terminate deallocated thread port name \
                         {kport:#x}, which the task no longer had (libpthread's own reference was released)"
                    ));
                }
                // _bsdthread_terminate ignores the result.
                let _ = self.deallocate(kport);
            }
            Event::Free(t) => {
                let port = self.threads[t].port;
                self.ports[port].active = false;
                // ipc_thread_terminate releases the kernel's exception port copies.
                self.threads[t].exc = [None; EXC_TYPES_COUNT];
            }
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

    /// A bad name or right passed to `mach_port_deallocate`/`mod_refs`: the code, and on modern XNU the
    /// guard exception it raises.
    fn bad(&mut self, kr: kern_return_t, call: &str, name: mach_port_name_t) -> kern_return_t {
        if self.rules.guard_exceptions && self.fault.is_none() {
            let guard = if kr == KERN_INVALID_NAME { "kGUARD_EXC_INVALID_NAME" } else { "kGUARD_EXC_INVALID_RIGHT" };
            self.fault = Some(format!("EXC_GUARD {guard}: {call} on name {name:#x}"));
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

    /// `mach_port_mod_refs` (`ipc_right_delta`).
    fn mod_refs(
        &mut self,
        name: mach_port_name_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> KernResult<()> {
        if right > MACH_PORT_RIGHT_DEAD_NAME {
            return Err(KERN_INVALID_VALUE);
        }
        if !self.entries.contains_key(&name) {
            return Err(self.bad(KERN_INVALID_NAME, "mach_port_mod_refs", name));
        }
        let bits = self.entries[&name].bits;
        match right {
            MACH_PORT_RIGHT_RECEIVE => {
                if bits & MACH_PORT_TYPE_RECEIVE == 0 {
                    return Err(self.bad(KERN_INVALID_RIGHT, "mach_port_mod_refs", name));
                }
                match delta {
                    0 => Ok(()),
                    -1 => {
                        self.destroy_receive(name);
                        Ok(())
                    }
                    _ => Err(KERN_INVALID_VALUE),
                }
            }
            MACH_PORT_RIGHT_SEND | MACH_PORT_RIGHT_DEAD_NAME => {
                self.check(name);
                let bits_now = self.entries[&name].bits;
                let want = if right == MACH_PORT_RIGHT_SEND { MACH_PORT_TYPE_SEND } else { MACH_PORT_TYPE_DEAD_NAME };
                if bits_now & want == 0 {
                    // A send right whose port died has just become a dead name: no exception for that.
                    let converted = right == MACH_PORT_RIGHT_SEND && bits & MACH_PORT_TYPE_SEND != 0;
                    return Err(if converted {
                        KERN_INVALID_RIGHT
                    } else {
                        self.bad(KERN_INVALID_RIGHT, "mach_port_mod_refs", name)
                    });
                }
                let urefs = self.entries[&name].urefs;
                let new = self.apply_delta(urefs, delta, right)?;
                let e = self.entries.get_mut(&name).expect("checked above");
                e.urefs = new;
                if new == 0 {
                    self.drop_send_or_dead(name);
                }
                Ok(())
            }
            // Send-once rights and port sets are not modelled.
            _ => Err(KERN_INVALID_VALUE),
        }
    }

    /// The new count after `delta`, under the profile's rules.
    fn apply_delta(&mut self, urefs: u32, delta: i32, right: mach_port_right_t) -> KernResult<u32> {
        let max = i64::from(MACH_PORT_UREFS_MAX);
        let (urefs, delta) = (i64::from(urefs), i64::from(delta));
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
            if urefs + delta < 0 || delta.abs() > max {
                return Err(KERN_INVALID_VALUE);
            }
            Ok((urefs + delta).min(max) as u32)
        } else {
            if urefs + delta < 0 {
                return Err(KERN_INVALID_VALUE);
            }
            // Old XNU: a send right may hold one reference less than a dead name.
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
        // Joining frees libpthread's memory only; it never touches the port (src/pthread.c).
        t.joined = true;
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

    fn mach_port_allocate(&self, right: mach_port_right_t) -> KernResult<mach_port_name_t> {
        let mut state = self.enter()?;
        match right {
            MACH_PORT_RIGHT_RECEIVE => {
                let port = state.new_port();
                let name = state.new_name();
                state.entries.insert(name, Entry { port, bits: MACH_PORT_TYPE_RECEIVE, urefs: 0 });
                state.by_port.insert(port, name);
                Ok(name)
            }
            MACH_PORT_RIGHT_DEAD_NAME => {
                let port = state.new_port();
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
            // The port already has a name here (ipc_object_copyout_name).
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

    fn mach_port_get_refs(&self, name: mach_port_name_t, right: mach_port_right_t) -> KernResult<mach_port_urefs_t> {
        let mut state = self.enter()?;
        if right > MACH_PORT_RIGHT_DEAD_NAME {
            return Err(KERN_INVALID_VALUE);
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
        let valid_mask = ((1u32 << EXC_TYPES_COUNT) - 1) & !1;
        if mask & !valid_mask != 0 {
            return Err(KERN_INVALID_ARGUMENT);
        }
        let target = state.port_of(thread).map_err(|_| KERN_INVALID_ARGUMENT)?;
        let Some(t) = target.and_then(|p| state.threads.iter().position(|t| t.port == p)) else {
            return Err(KERN_INVALID_ARGUMENT);
        };
        let new = state.port_of(new_port)?;
        // EXCEPTION_DEFAULT, _STATE, _STATE_IDENTITY, _IDENTITY_PROTECTED, with or without MACH_EXCEPTION_CODES.
        if new.is_some() && !(1..=4).contains(&(behavior & !(1 << 31))) {
            return Err(KERN_INVALID_ARGUMENT);
        }
        // The replaced handlers, grouped by (port, behavior, flavor) with their masks combined.
        let mut old: Vec<(exception_mask_t, Slot)> = Vec::new();
        for i in 1..EXC_TYPES_COUNT {
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

    const PROFILES: [Profile; 2] = [Profile::Xnu11417, Profile::Xnu1504];

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
        let sim = Sim::new(Profile::Xnu1504, 0);
        let receive = sim.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE).unwrap();
        assert_eq!(sim.mach_port_deallocate(receive), Err(KERN_INVALID_RIGHT));
        assert_eq!(sim.mach_port_get_refs(receive, MACH_PORT_RIGHT_SEND), Ok(0));
        assert_eq!(sim.mach_port_get_refs(receive, MACH_PORT_RIGHT_RECEIVE), Ok(1));
        assert_eq!(sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_SEND, -1), Err(KERN_INVALID_RIGHT));
        assert_eq!(sim.mach_port_mod_refs(receive, MACH_PORT_RIGHT_RECEIVE, -2), Err(KERN_INVALID_VALUE));
        assert_eq!(sim.mach_port_get_refs(0x1234_5600, MACH_PORT_RIGHT_SEND), Err(KERN_INVALID_NAME));
        assert_eq!(sim.mach_port_deallocate(0x1234_5600), Err(KERN_INVALID_NAME));
        assert_eq!(sim.mach_port_get_refs(receive, 9), Err(KERN_INVALID_VALUE));
        let me = sim.mach_thread_self();
        assert_eq!(sim.mach_port_mod_refs(me, MACH_PORT_RIGHT_SEND, -5), Err(KERN_INVALID_VALUE));
        // Old XNU has no guard exceptions: the task goes on.
        assert_eq!(sim.mach_port_type(me), Ok(MACH_PORT_TYPE_SEND));
        assert!(sim.notes().is_empty());
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
    fn deallocating_libpthreads_reference_is_a_guard_exception_at_termination() {
        let sim = Sim::new(Profile::Xnu11417, 1);
        let body = || {
            let own = sim.pthread_mach_thread_np_self();
            sim.mach_port_deallocate(own).unwrap();
        };
        sim.pthread_create(true, &body, &|| {}).unwrap();
        sim.drain();
        assert_eq!(sim.mach_port_names(), Err(KERN_TERMINATED));
        let notes = sim.notes();
        assert!(notes[0].starts_with("EXC_GUARD kGUARD_EXC_INVALID_NAME: _bsdthread_terminate"), "{notes:?}");
        // The 10.6 kernel had no such exception: the failed release goes unnoticed.
        let old = Sim::new(Profile::Xnu1504, 1);
        let body = || {
            let own = old.pthread_mach_thread_np_self();
            old.mach_port_deallocate(own).unwrap();
        };
        old.pthread_create(true, &body, &|| {}).unwrap();
        old.drain();
        assert!(old.mach_port_names().is_ok());
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
            profile in prop::sample::select(&PROFILES[..]),
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
            profile in prop::sample::select(&PROFILES[..]),
            delay in 0u32..4,
            takes in prop::collection::vec(0u8..5, 0..40),
            order in any::<u64>(),
        ) {
            let sim = Sim::new(profile, delay);
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
            profile in prop::sample::select(&PROFILES[..]),
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
