//! nova's NUMA objects (`nova/objects/numa.py`): host cells with CPUs, memory and hugepage
//! pools, and the instance cells a flavor asks for.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::Error;
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
    /// Shared pCPUs (`cpu_shared_set`).
    pub cpuset: BTreeSet<u32>,
    /// Dedicated pCPUs (`cpu_dedicated_set`).
    pub pcpuset: BTreeSet<u32>,
    /// MiB.
    pub memory: i64,
    pub cpu_usage: i64,
    pub memory_usage: i64,
    pub pinned_cpus: BTreeSet<u32>,
    pub mempages: Vec<Pages>,
}

impl HostCell {
    pub fn avail_memory(&self) -> i64 {
        self.memory - self.memory_usage
    }
    pub fn free_pcpus(&self) -> BTreeSet<u32> {
        self.pcpuset.difference(&self.pinned_cpus).copied().collect()
    }
    pub fn avail_pcpus(&self) -> usize {
        self.free_pcpus().len()
    }
    pub fn page(&self, size_kb: u64) -> Option<&Pages> {
        self.mempages.iter().find(|p| p.size_kb == size_kb)
    }
    /// `can_fit_pagesize`: `memory_kb` fits in free (or total) pages of `size_kb` and is a whole
    /// number of them.
    pub fn can_fit_pagesize(&self, size_kb: u64, memory_kb: i64, use_free: bool) -> Result<bool, Error> {
        let p = self.page(size_kb).ok_or_else(|| Error::PageSizeNotSupported {
            cell: self.id,
            size_kb,
            available: self.mempages.iter().map(|p| p.size_kb).collect(),
        })?;
        let avail_kb = if use_free { p.free() } else { p.total } * size_kb as i64;
        Ok(memory_kb <= avail_kb && memory_kb % size_kb as i64 == 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuPolicy {
    Shared,
    Dedicated,
    Mixed,
}

/// `InstanceNUMACell`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceCell {
    pub id: u32,
    pub cpuset: BTreeSet<u32>,
    pub pcpuset: BTreeSet<u32>,
    /// MiB.
    pub memory: i64,
    #[serde(skip)]
    pub pagesize: Option<PageRequest>,
    /// The concrete page size chosen (KiB), once fitted.
    pub pagesize_kb: Option<u64>,
    pub cpu_policy: Option<CpuPolicy>,
    /// Guest vCPU → host pCPU, for dedicated CPUs.
    pub cpu_pinning: BTreeMap<u32, u32>,
}

impl InstanceCell {
    pub fn pinned(&self) -> bool {
        matches!(self.cpu_policy, Some(CpuPolicy::Dedicated) | Some(CpuPolicy::Mixed))
    }
}

/// A flavor's NUMA-relevant parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flavor {
    pub name: String,
    pub vcpus: u32,
    pub memory_mb: i64,
    /// `hw:numa_nodes`.
    pub numa_nodes: Option<u32>,
    /// `hw:mem_page_size`.
    pub mem_page_size: Option<String>,
    /// `hw:cpu_policy`.
    pub cpu_policy: Option<String>,
}

/// `numa_get_constraints` for the flavor keys modelled here: a NUMA topology exists when
/// `hw:numa_nodes`, a page size or a dedicated/mixed CPU policy is asked for; vCPUs and memory
/// split evenly over the nodes (`_get_numa_topology_auto`).
pub fn instance_topology(f: &Flavor) -> Result<Option<Vec<InstanceCell>>, Error> {
    let pagesize = f.mem_page_size.as_deref().map(PageRequest::parse).transpose()?;
    let policy = match f.cpu_policy.as_deref() {
        None | Some("shared") => None,
        Some("dedicated") => Some(CpuPolicy::Dedicated),
        Some("mixed") => Some(CpuPolicy::Mixed),
        Some(o) => return Err(Error::Instance(format!("hw:cpu_policy {o:?} (want shared, dedicated or mixed)"))),
    };
    if f.numa_nodes.is_none() && pagesize.is_none() && policy.is_none() {
        return Ok(None);
    }
    let nodes = f.numa_nodes.unwrap_or(1).max(1);
    if !f.vcpus.is_multiple_of(nodes) || f.memory_mb % nodes as i64 != 0 {
        return Err(Error::Instance(format!("{} vCPUs and {} MiB do not split evenly over {nodes} NUMA nodes", f.vcpus, f.memory_mb)));
    }
    let k = f.vcpus / nodes;
    Ok(Some(
        (0..nodes)
            .map(|i| {
                let cpus: BTreeSet<u32> = (i * k..(i + 1) * k).collect();
                let dedicated = policy == Some(CpuPolicy::Dedicated);
                InstanceCell {
                    id: i,
                    cpuset: if dedicated { BTreeSet::new() } else { cpus.clone() },
                    pcpuset: if dedicated { cpus } else { BTreeSet::new() },
                    memory: f.memory_mb / nodes as i64,
                    pagesize,
                    pagesize_kb: None,
                    cpu_policy: policy,
                    cpu_pinning: BTreeMap::new(),
                }
            })
            .collect(),
    ))
}
