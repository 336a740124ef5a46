//! The corpus's Mach workloads that are not matrix cells ([`MachWork`]), written once over [`Mach`]: one
//! unit of the published program's work per cycle, buggy or fixed.
//!
//! - `TaskThreads`: [`TaskThreads::unit`], htop's refresh, .NET's exception handling, a backtrace logger's
//!   walk of every thread;
//! - `HostSelf`: mach_override's `mach_host_self()` per call;
//! - `SampleThreadSelf`: WebKit's sampler asking for its own port per sample.
//!
//! The measuring thread is itself a long-lived thread of the task, so the units that act "on a
//! long-lived thread" run on it.

use std::time::Instant;

use super::port::*;
use super::workload::{censuses_agree, kr};
use super::Mach;
use crate::backend::{CallError, Inventory, SettleFailure, Workload};
use crate::record::Params;
use crate::scenario::{MachWork, Variant};

/// One scenario's workload over a [`Mach`] implementation.
pub struct ScenarioWorkload<M: Mach> {
    api: M,
    work: MachWork,
    variant: Variant,
}

impl<M: Mach> ScenarioWorkload<M> {
    /// Starts what the scenario needs alive for its whole run (the idle threads `task_threads` lists), and
    /// makes this thread's MIG reply port before any baseline, as the matrix's workload does.
    pub fn new(api: M, work: MachWork, variant: Variant, _params: &Params) -> Result<ScenarioWorkload<M>, CallError> {
        if let MachWork::TaskThreads { idle } = work {
            for _ in 0..idle {
                api.spawn_idle_thread().map_err(|errno| CallError::errno("pthread_create (idle thread)", errno))?;
            }
        }
        let mut scratch = [0i64; 7];
        super::census(&api, &mut scratch)?;
        Ok(ScenarioWorkload { api, work, variant })
    }
}

impl<M: Mach> Workload for ScenarioWorkload<M> {
    fn cycle(&mut self) -> Result<(), CallError> {
        let (api, fixed) = (&self.api, self.variant == Variant::Fixed);
        match self.work {
            MachWork::TaskThreads { .. } => {
                let threads = kr("task_threads", api.task_threads())?;
                if fixed {
                    for name in threads {
                        kr("mach_port_deallocate (task_threads)", api.mach_port_deallocate(name))?;
                    }
                }
            }
            // One call that adds a reference to one name; the fix releases it.
            MachWork::HostSelf | MachWork::SampleThreadSelf => {
                let (call, release, name) = match self.work {
                    MachWork::HostSelf => {
                        ("mach_host_self", "mach_port_deallocate (mach_host_self)", api.mach_host_self())
                    }
                    _ => ("mach_thread_self", "mach_port_deallocate (mach_thread_self)", api.mach_thread_self()),
                };
                if name == MACH_PORT_NULL {
                    return Err(CallError::kern(call, super::kern_return::KERN_FAILURE));
                }
                if fixed {
                    kr(release, api.mach_port_deallocate(name))?;
                }
            }
        }
        Ok(())
    }

    /// Nothing ends in a unit: waits only until two censuses agree.
    fn settle(&mut self) -> Result<(), SettleFailure> {
        censuses_agree(&self.api, Instant::now())
    }

    fn census(&mut self, out: &mut [i64]) -> Result<(), CallError> {
        super::census(&self.api, out)
    }

    fn inventory(&mut self) -> Result<Inventory, CallError> {
        super::workload::inventory(&self.api)
    }

    fn sites(&mut self) -> Option<crate::backend::SiteTally> {
        self.api.site_tally()
    }

    fn site(&self, id: u32) -> Option<crate::record::SiteRecord> {
        self.api.site(id)
    }

    fn notes(&self) -> Vec<String> {
        self.api.notes()
    }
}
