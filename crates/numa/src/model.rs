//! nova's NUMA objects (`nova/objects/numa.py`, `instance_numa.py`): host cells with CPUs,
//! thread siblings, memory and hugepage pools, and the instance cells a request asks for.
//!
//! A host cell's dedicated CPUs and sibling sets are [`PySet`]s: nova's pinning depends on
//! their CPython iteration order, which changes as nova copies them (each assignment to an
//! object field, each JSON round trip through the database); [`HostCell::assigned`] and
//! [`HostCell::through_database`] are those copies.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::pyset::PySet;
use crate::units::PageRequest;

/// `NUMAPagesTopology`: one page size's pool on a cell. `free = total - used - reserved`, which
/// nova does not clamp (it can go negative, and then nothing fits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pages {
    pub size_kb: u64,
    pub total: i64,
    pub used: i64,
    pub reserved: i64,
}

impl Pages {
    pub fn free(&self) -> i64 {
        self.total - self.used - self.reserved
    }
}

/// `NUMACell` as nova's resource tracker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostCell {
    pub id: u32,
    /// Shared pCPUs (`cpu_shared_set`, or `vcpu_pin_set`, or all online CPUs).
    pub cpuset: BTreeSet<u32>,
    /// Dedicated pCPUs (`cpu_dedicated_set`, or the legacy fallback to the shared ones).
    pub pcpuset: PySet,
    /// Thread sibling sets of the usable CPUs, in nova's order.
    #[serde(default)]
    pub siblings: Vec<PySet>,
    /// MiB.
    pub memory: i64,
    pub cpu_usage: i64,
    pub memory_usage: i64,
    pub pinned_cpus: BTreeSet<u32>,
    pub mempages: Vec<Pages>,
}

impl HostCell {
    /// A cell whose CPUs serve both shared and dedicated guests, without SMT.
    pub fn new(id: u32, cpus: &BTreeSet<u32>, memory: i64, mempages: Vec<Pages>) -> HostCell {
        HostCell {
            id,
            cpuset: cpus.clone(),
            pcpuset: PySet::from_iter_adds(cpus.iter().copied()),
            siblings: cpus.iter().map(|c| PySet::from_iter_adds([*c])).collect(),
            memory,
            cpu_usage: 0,
            memory_usage: 0,
            pinned_cpus: BTreeSet::new(),
            mempages,
        }
    }

    pub fn avail_memory(&self) -> i64 {
        self.memory - self.memory_usage
    }

    /// `free_pcpus`: `pcpuset - pinned_cpus`, in CPython's order.
    pub fn free_pcpus_ordered(&self) -> PySet {
        PySet::sub(&self.pcpuset, &PySet::from_iter_adds(self.pinned_cpus.iter().copied()))
    }

    pub fn free_pcpus(&self) -> BTreeSet<u32> {
        self.pcpuset.iter().filter(|c| !self.pinned_cpus.contains(c)).collect()
    }

    pub fn avail_pcpus(&self) -> usize {
        self.pcpuset.iter().filter(|c| !self.pinned_cpus.contains(c)).count()
    }

    /// `free_siblings`: each sibling set `& free_pcpus`.
    pub fn free_siblings(&self) -> Vec<PySet> {
        let free = self.free_pcpus_ordered();
        self.siblings.iter().map(|s| PySet::and(s, &free)).collect()
    }

    pub fn page(&self, size_kb: u64) -> Option<&Pages> {
        self.mempages.iter().find(|p| p.size_kb == size_kb)
    }

    /// `can_fit_pagesize`: `memory_kb` fits in free (or total) pages of `size_kb` and is a whole
    /// number of them.
    pub fn can_fit_pagesize(&self, size_kb: i64, memory_kb: i64, use_free: bool) -> Result<bool, Error> {
        let Some(p) = self.mempages.iter().find(|p| p.size_kb as i64 == size_kb) else {
            return Err(Error::Nova {
                exception: "MemoryPageSizeNotSupported",
                message: format!("page size {size_kb} KiB is not available on NUMA cell {} (it has {:?} KiB pages)", self.id, self.page_sizes()),
            });
        };
        let avail_kb = if use_free { p.free() } else { p.total } * size_kb;
        Ok(memory_kb <= avail_kb && memory_kb % size_kb == 0)
    }

    pub fn page_sizes(&self) -> Vec<u64> {
        self.mempages.iter().map(|p| p.size_kb).collect()
    }

    /// The copies nova makes when a cell's sets are assigned to a new `NUMACell` (field
    /// coercion).
    pub fn assigned(&mut self) {
        self.pcpuset = self.pcpuset.coerced();
        for s in &mut self.siblings {
            *s = s.coerced();
        }
    }

    /// The copies of a trip through `compute_nodes.numa_topology` (`_to_json`, then
    /// `obj_from_db_obj`).
    pub fn through_database(&mut self) {
        self.pcpuset = self.pcpuset.json_round_trip();
        for s in &mut self.siblings {
            *s = s.json_round_trip();
        }
    }

    /// `pin_cpus_with_siblings`: the whole cores of `cpus`.
    pub fn with_siblings(&self, cpus: &BTreeSet<u32>) -> BTreeSet<u32> {
        self.siblings.iter().filter(|s| s.iter().any(|c| cpus.contains(&c))).flat_map(|s| s.iter()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPolicy {
    Shared,
    Dedicated,
    Mixed,
}

impl CpuPolicy {
    pub fn parse(v: &str) -> Option<CpuPolicy> {
        match v {
            "shared" => Some(CpuPolicy::Shared),
            "dedicated" => Some(CpuPolicy::Dedicated),
            "mixed" => Some(CpuPolicy::Mixed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadPolicy {
    Prefer,
    Isolate,
    Require,
}

impl ThreadPolicy {
    pub fn parse(v: &str) -> Option<ThreadPolicy> {
        match v {
            "prefer" => Some(ThreadPolicy::Prefer),
            "isolate" => Some(ThreadPolicy::Isolate),
            "require" => Some(ThreadPolicy::Require),
            _ => None,
        }
    }
}

/// `InstanceNUMACell`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceCell {
    /// The guest cell's index in the request.
    pub guest_cell: u32,
    /// nova's `id`: the guest cell index in a request, the host cell once fitted.
    pub id: u32,
    /// Shared vCPUs.
    pub cpuset: BTreeSet<u32>,
    /// Dedicated vCPUs.
    pub pcpuset: BTreeSet<u32>,
    /// MiB.
    pub memory: i64,
    #[serde(skip)]
    pub pagesize: Option<PageRequest>,
    /// The concrete page size chosen (KiB), once fitted with a page-size request.
    pub pagesize_kb: Option<u64>,
    pub cpu_policy: Option<CpuPolicy>,
    pub cpu_thread_policy: Option<ThreadPolicy>,
    /// Guest vCPU → host pCPU, for dedicated vCPUs.
    pub cpu_pinning: BTreeMap<u32, u32>,
    /// Host pCPUs reserved for the emulator threads (`hw:emulator_threads_policy=isolate`);
    /// written as a list, empty for none.
    #[serde(serialize_with = "none_as_empty")]
    pub cpuset_reserved: Option<BTreeSet<u32>>,
}

fn none_as_empty<S: serde::Serializer>(v: &Option<BTreeSet<u32>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().flatten())
}

impl InstanceCell {
    pub fn pinned(&self) -> bool {
        matches!(self.cpu_policy, Some(CpuPolicy::Dedicated) | Some(CpuPolicy::Mixed))
    }
}

/// `InstanceNUMATopology`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceTopology {
    pub cells: Vec<InstanceCell>,
    pub emulator_threads_isolated: bool,
}
