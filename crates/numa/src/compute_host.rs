//! A compute host as nova sees it, read from its files: the kernel's NUMA nodes, hugepage
//! pools, thread siblings and online CPUs (sysfs, optionally lscpu for CPUs), the default
//! hugepage size (/proc/meminfo), nova.conf's reservations, CPU sets, allocation ratios and
//! packing strategy, and the instances already placed (a JSON list, or libvirt domain XML)
//! counted against nova's view of each cell.
//!
//! The view goes the way nova-compute's resource tracker takes it: the libvirt driver builds
//! the topology and stores it in the database, then each placed instance's usage is applied
//! to the stored topology and stored again, and the scheduler and the claim read it back.

use std::path::{Path, PathBuf};

use crate::model::{CpuPolicy, HostCell, InstanceCell, ThreadPolicy};
use crate::Error;

/// Where the host's state is read from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub sysfs_root: PathBuf,
    pub meminfo: PathBuf,
    pub lscpu: Option<PathBuf>,
    pub nova_conf: Option<PathBuf>,
    /// Instances already placed: a JSON list (see `PlacedInstance` in this module).
    pub instances: Option<PathBuf>,
    /// Instances already placed, as `virsh dumpxml` output.
    pub domain_xml: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct ComputeHost {
    /// The kernel's nodes and hugepage pools.
    pub kernel: Vec<crate::host::Node>,
    /// nova's cells: reservations and CPU sets applied, placed instances counted.
    pub nova: Vec<HostCell>,
    /// nova.conf's `packing_host_numa_cells_allocation_strategy`, when set.
    pub pack: Option<bool>,
    /// The scheduler's NUMA limits (allocation ratios).
    pub limits: crate::fit::Limits,
    /// The default hugepage size, KiB (`Hugepagesize` in /proc/meminfo).
    pub default_kb: Option<u64>,
    /// Settings nova ignores (reservations for nodes or page sizes the host lacks, …).
    pub warnings: Vec<String>,
}

/// One instance already placed, in the instances JSON list: either one cell written flat
/// (`{"node": 0, "memory_mb": 512, …}`) or `{"name": …, "cells": [cell, …]}`. A cell:
/// `node` (host cell), `memory_mb`, `pagesize_kb` (null: small pages), `vcpus` (guest vCPUs in
/// the cell), `pcpus` (host CPUs its dedicated vCPUs are pinned to, in vCPU order), `dedicated`
/// (all vCPUs dedicated, pinned to the lowest free pCPUs when `pcpus` is absent),
/// `emulator_pcpus` (pCPUs reserved for its emulator threads), `cpu_policy`, `thread_policy`
/// (`isolate` takes whole cores).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum PlacedInstance {
    Cells {
        #[serde(default)]
        #[allow(dead_code)]
        name: Option<String>,
        cells: Vec<PlacedCell>,
    },
    Flat(PlacedCell),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacedCell {
    node: u32,
    memory_mb: i64,
    #[serde(default)]
    pagesize_kb: Option<u64>,
    #[serde(default)]
    vcpus: u32,
    #[serde(default)]
    dedicated: bool,
    #[serde(default)]
    pcpus: Option<Vec<u32>>,
    #[serde(default)]
    emulator_pcpus: Vec<u32>,
    #[serde(default)]
    cpu_policy: Option<CpuPolicy>,
    #[serde(default)]
    thread_policy: Option<ThreadPolicy>,
}

impl PlacedCell {
    fn cell(&self, nova: &[HostCell]) -> Result<InstanceCell, String> {
        let hc = nova.iter().find(|c| c.id == self.node).ok_or_else(|| format!("an instance is on node {} which the host lacks", self.node))?;
        let pcpus: Vec<u32> = match &self.pcpus {
            Some(p) => p.clone(),
            None if self.dedicated => hc.free_pcpus().into_iter().take(self.vcpus as usize).collect(),
            None => vec![],
        };
        let vcpus = self.vcpus.max(pcpus.len() as u32);
        let shared = vcpus as usize - pcpus.len();
        let policy = self.cpu_policy.or(match (shared, pcpus.len()) {
            (_, 0) => None,
            (0, _) => Some(CpuPolicy::Dedicated),
            _ => Some(CpuPolicy::Mixed),
        });
        Ok(InstanceCell {
            guest_cell: 0,
            id: self.node,
            cpuset: (0..shared as u32).collect(),
            pcpuset: (shared as u32..vcpus).collect(),
            memory: self.memory_mb,
            pagesize: None,
            pagesize_kb: self.pagesize_kb,
            cpu_policy: policy,
            cpu_thread_policy: self.thread_policy,
            cpu_pinning: (shared as u32..vcpus).zip(pcpus).collect(),
            cpuset_reserved: (!self.emulator_pcpus.is_empty()).then(|| self.emulator_pcpus.iter().copied().collect()),
        })
    }
}

fn read(p: &Path) -> Result<String, Error> {
    std::fs::read_to_string(p).map_err(|e| Error::Input { file: p.display().to_string(), why: e.to_string() })
}

/// Read the host.
pub fn load(i: &Inputs) -> Result<ComputeHost, Error> {
    let mut kernel = crate::host::read_sysfs(&i.sysfs_root)?;
    if let Some(l) = &i.lscpu {
        let m = crate::host::parse_lscpu(&read(l)?, &l.display().to_string())?;
        for n in &mut kernel {
            if let Some(c) = m.get(&n.id) {
                n.cpus = c.clone();
            }
        }
    }
    let default_kb = std::fs::read_to_string(&i.meminfo).ok().and_then(|t| crate::host::default_hugepage_kb(&t));
    let conf = match &i.nova_conf {
        Some(p) => crate::config::parse_nova_conf(&read(p)?, &p.display().to_string())?,
        None => Default::default(),
    };
    let mut warnings = Vec::new();
    for (node, sizes) in &conf.reserved.0 {
        for (size, count) in sizes {
            match kernel.iter().find(|n| n.id == *node) {
                None => warnings.push(format!("reserved_huge_pages for node {node} is ignored by nova: the host has no such node")),
                Some(n) if !n.pages.iter().any(|p| p.size_kb as f64 == *size) && *size != 4.0 => {
                    warnings.push(format!("reserved_huge_pages size {size} KiB on node {node} is ignored by nova: the node has no such page size"))
                }
                Some(n) => {
                    if let Some(p) = n.pages.iter().find(|p| p.size_kb as f64 == *size) {
                        if *count > p.nr {
                            warnings.push(format!("node {node}: {count} pages of {size} KiB reserved, but only {} exist", p.nr));
                        }
                    }
                }
            }
        }
    }
    let online = match crate::cpu::read_online(&i.sysfs_root)? {
        Some(o) => o,
        None => kernel.iter().flat_map(|n| n.cpus.iter().copied()).collect(),
    };
    if kernel.iter().any(|n| !n.cpus.is_empty() && n.thread_siblings.is_empty()) {
        warnings.push("no devices/system/cpu/cpuN/topology/thread_siblings_list under the sysfs root: every CPU is taken as a core of its own".into());
    }
    let (cpus, cpu_warnings) = crate::cpu::nova_cpus(&conf.cpu(), &online)?;
    warnings.extend(cpu_warnings);
    let mut nova = crate::host::nova_view(&kernel, &conf.reserved, &cpus)?;
    through_database(&mut nova);
    if let Some(p) = &i.instances {
        let bad = |why: String| Error::Input { file: p.display().to_string(), why };
        let placed: Vec<PlacedInstance> = serde_json::from_str(&read(p)?).map_err(|e| bad(e.to_string()))?;
        for (n, pl) in placed.iter().enumerate() {
            let cells = match pl {
                PlacedInstance::Flat(c) => vec![c.cell(&nova).map_err(|w| bad(format!("instance {n}: {w}")))?],
                PlacedInstance::Cells { cells, .. } => {
                    cells.iter().map(|c| c.cell(&nova)).collect::<Result<_, _>>().map_err(|w| bad(format!("instance {n}: {w}")))?
                }
            };
            add_placed(&mut nova, &format!("{} (instance {n})", p.display()), &cells)?;
        }
    }
    for p in &i.domain_xml {
        let cells = crate::libvirt::parse_domain(&read(p)?, &p.display().to_string())?;
        if let Some(c) = cells.iter().find(|c| !nova.iter().any(|h| h.id == c.id)) {
            return Err(Error::Input { file: p.display().to_string(), why: format!("guest memory on node {} which the host lacks", c.id) });
        }
        add_placed(&mut nova, &p.display().to_string(), &cells)?;
    }
    Ok(ComputeHost { kernel, nova, pack: conf.pack, limits: conf.limits(), default_kb, warnings })
}

/// The resource tracker's step for one instance: its usage applied to the stored topology,
/// which is stored again.
fn add_placed(nova: &mut [HostCell], what: &str, cells: &[InstanceCell]) -> Result<(), Error> {
    crate::fit::add_usage(nova, cells).map_err(|e| Error::Input { file: what.to_string(), why: format!("nova cannot account for this instance: {e}") })?;
    through_database(nova);
    Ok(())
}

/// The topology stored in `compute_nodes.numa_topology` and read back.
fn through_database(nova: &mut [HostCell]) {
    for c in nova {
        c.through_database();
    }
}
