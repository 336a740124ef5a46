//! The IPC space: names and their entries, the rights and user references they hold, and the calls that
//! change them, as XNU does (`ipc_entry_alloc`, osfmk/ipc/ipc_entry.c; `ipc_right_copyout`,
//! `ipc_right_dealloc`, `ipc_right_delta` and `ipc_right_check`, osfmk/ipc/ipc_right.c; `mach_port_*`,
//! osfmk/ipc/mach_port.c, in xnu-11417.121.6 and xnu-1504.15.3), with the guard exceptions a bad name, right
//! or value raises (`mach_port_guard_exception`, osfmk/ipc/ipc_policy.c) and the host port
//! (`host_self_trap`, osfmk/kern/ipc_host.c).

use crate::backend::mach::kern_return::*;
use crate::backend::mach::port::*;
use crate::backend::mach::{KernResult, IKOT_HOST, IKOT_NONE};

use super::profiles::{Guards, Task};
use super::State;

pub(super) type PortId = usize;

/// A kernel port object.
#[derive(Clone, Debug)]
pub(super) struct Port {
    pub(super) active: bool,
    /// The kernel object it stands for (`IKOT_*`, osfmk/kern/ipc_kobject.h: the same numbers from
    /// xnu-1504.15.3 to xnu-11417.121.6), `IKOT_NONE` for a port of the task's own.
    kobject: u32,
}

/// A name's entry in the space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The port the rights name; kept for dead names too, so the model can say which port died.
    pub(super) port: PortId,
    /// `MACH_PORT_TYPE_*` bits held.
    pub bits: mach_port_type_t,
    /// User references of the send right or dead name (0 for a receive right alone).
    pub urefs: mach_port_urefs_t,
}

impl State {
    pub(super) fn new_port(&mut self, kobject: u32) -> PortId {
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

    pub(super) fn free_name(&mut self, name: mach_port_name_t) {
        if let Some(entry) = self.entries.remove(&name) {
            if self.by_port.get(&entry.port) == Some(&name) {
                self.by_port.remove(&entry.port);
            }
            self.free_indexes.push(name >> 8);
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
    pub(super) fn reported_type(&self, e: &Entry) -> mach_port_type_t {
        if e.bits & MACH_PORT_TYPE_SEND != 0 && !self.ports[e.port].active {
            MACH_PORT_TYPE_DEAD_NAME
        } else {
            e.bits
        }
    }

    /// Copies a send right to `port` out into the space (`ipc_right_copyout`, with overflow allowed).
    pub(super) fn copyout_send(&mut self, port: PortId) -> mach_port_name_t {
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
    pub(super) fn deallocate(&mut self, name: mach_port_name_t) -> KernResult<()> {
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
    pub(super) fn mod_refs(
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
    pub(super) fn port_of(&mut self, name: mach_port_name_t) -> KernResult<Option<PortId>> {
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

    /// `host_self_trap` copies out a send right to the host port each call (osfmk/kern/ipc_host.c); the
    /// port never dies, so the references stay until deallocated.
    pub(super) fn host_self(&mut self) -> mach_port_t {
        let host = match self.host {
            Some(port) => port,
            None => {
                let port = self.new_port(IKOT_HOST);
                self.host = Some(port);
                port
            }
        };
        self.copyout_send(host)
    }

    /// `mach_port_allocate`: a receive right, a port set or a dead name.
    pub(super) fn allocate(&mut self, right: mach_port_right_t) -> KernResult<mach_port_name_t> {
        match right {
            MACH_PORT_RIGHT_RECEIVE => {
                let port = self.new_port(IKOT_NONE);
                let name = self.new_name();
                self.entries.insert(name, Entry { port, bits: MACH_PORT_TYPE_RECEIVE, urefs: 0 });
                self.by_port.insert(port, name);
                Ok(name)
            }
            // A port set (mach_port_allocate_full, osfmk/ipc/mach_port.c:591; ipc_pset_alloc): a name with
            // the set right and no user references. Membership is not modelled.
            MACH_PORT_RIGHT_PORT_SET => {
                let set = self.new_port(IKOT_NONE);
                let name = self.new_name();
                self.entries.insert(name, Entry { port: set, bits: MACH_PORT_TYPE_PORT_SET, urefs: 0 });
                Ok(name)
            }
            MACH_PORT_RIGHT_DEAD_NAME => {
                let port = self.new_port(IKOT_NONE);
                self.ports[port].active = false;
                let name = self.new_name();
                self.entries.insert(name, Entry { port, bits: MACH_PORT_TYPE_DEAD_NAME, urefs: 1 });
                Ok(name)
            }
            _ => Err(KERN_INVALID_VALUE),
        }
    }

    /// `mach_port_insert_right`: only `MACH_MSG_TYPE_MAKE_SEND`, of a receive right, under its own name.
    pub(super) fn insert_right(
        &mut self,
        name: mach_port_name_t,
        poly: mach_port_t,
        poly_poly: mach_msg_type_name_t,
    ) -> KernResult<()> {
        if poly_poly != MACH_MSG_TYPE_MAKE_SEND {
            return Err(KERN_INVALID_VALUE);
        }
        // MAKE_SEND needs the receive right (ipc_object_copyin).
        let port = match self.entries.get(&poly) {
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
        self.copyout_send(port);
        Ok(())
    }

    /// `mach_port_get_refs` (osfmk/ipc/mach_port.c:800-866 in xnu-11417.121.6, :802-862 in xnu-1504.15.3):
    /// no guard on any path.
    pub(super) fn get_refs(
        &mut self,
        name: mach_port_name_t,
        right: mach_port_right_t,
    ) -> KernResult<mach_port_urefs_t> {
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
        if !self.entries.contains_key(&name) {
            return Err(KERN_INVALID_NAME);
        }
        self.check(name);
        let e = &self.entries[&name];
        if e.bits & mach_port_type(right) == 0 {
            return Ok(0);
        }
        Ok(match right {
            MACH_PORT_RIGHT_SEND | MACH_PORT_RIGHT_DEAD_NAME => e.urefs,
            _ => 1,
        })
    }

    /// `mach_port_type`: the rights a name holds, once a dead port's send right has turned into a dead name.
    pub(super) fn port_type(&mut self, name: mach_port_name_t) -> KernResult<mach_port_type_t> {
        if !self.entries.contains_key(&name) {
            return Err(KERN_INVALID_NAME);
        }
        self.check(name);
        Ok(self.entries[&name].bits)
    }

    /// `mach_port_kobject_description` (osfmk/ipc/mach_debug.c:483-491 in xnu-11417.121.6; `mach_port_kobject`,
    /// mach_debug.c:528-546 in xnu-1504.15.3): `KERN_INVALID_NAME` for no entry, `KERN_INVALID_RIGHT` for a
    /// name without a send or receive right (a dead name), the same in every profile. Release kernels
    /// answer it in every era: its `#if !MACH_IPC_DEBUG` stub (`KERN_FAILURE`) is left out of them, as the
    /// option is configured in (`options MACH_IPC_DEBUG`, osfmk/conf/MASTER:97 in xnu-1504.15.3; `ipc_debug`
    /// in `MACH_BASE`, hence `MACH_RELEASE`, config/MASTER.x86_64:44-45 in xnu-3248.60.10 and
    /// config/MASTER.x86_64:55-56 and MASTER.arm64.MacOSX:60-61 in xnu-8020.140.41), and xnu-8792.41.9
    /// dropped the `#if`. The `IKOT_*` numbers used are the same from xnu-1504 (osfmk/kern/ipc_kobject.h).
    pub(super) fn kobject(&mut self, name: mach_port_name_t) -> KernResult<u32> {
        if !self.entries.contains_key(&name) {
            return Err(KERN_INVALID_NAME);
        }
        self.check(name);
        let e = &self.entries[&name];
        if e.bits & (MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE) == 0 {
            return Err(KERN_INVALID_RIGHT);
        }
        Ok(self.ports[e.port].kobject)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::PROFILES;
    use super::super::{Profile, Sim, Task};
    use super::*;
    use crate::backend::mach::{Mach, IKOT_THREAD_CONTROL};

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
}
