//! A compute host as nova sees it, read from its files: the kernel's NUMA nodes and hugepage
//! pools (sysfs, optionally lscpu for CPUs), the default hugepage size (/proc/meminfo),
//! nova.conf's reservations, CPU sets and packing strategy, and the instances already placed
//! (a JSON list, or libvirt domain XML) counted against nova's view of each cell.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::model::{CpuPolicy, HostCell, InstanceCell};
use crate::Error;

/// Where the host's state is read from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub sysfs_root: PathBuf,
    pub meminfo: PathBuf,
    pub lscpu: Option<PathBuf>,
    pub nova_conf: Option<PathBuf>,
    /// Instances already placed: JSON list of `{"node", "memory_mb", "pagesize_kb", "vcpus", "dedicated"}`.
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
    /// The default hugepage size, KiB (`Hugepagesize` in /proc/meminfo).
    pub default_kb: Option<u64>,
    /// Settings nova ignores (reservations for nodes or page sizes the host lacks, …).
    pub warnings: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Placed {
    node: u32,
    memory_mb: i64,
    pagesize_kb: Option<u64>,
    #[serde(default)]
    vcpus: u32,
    #[serde(default)]
    dedicated: bool,
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
    let conf_file = i.nova_conf.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "nova.conf".into());
    let cpus = |s: &Option<String>| -> Result<Option<BTreeSet<u32>>, Error> {
        s.as_ref().map(|v| crate::host::parse_cpu_list(v).map_err(|why| Error::Input { file: conf_file.clone(), why })).transpose()
    };
    let dedicated = cpus(&conf.cpu_dedicated_set)?;
    let shared = cpus(&conf.cpu_shared_set)?.or(cpus(&conf.vcpu_pin_set)?);
    let mut nova = crate::host::nova_view(&kernel, &conf.reserved, dedicated.as_ref(), shared.as_ref());
    if let Some(p) = &i.instances {
        let bad = |why: String| Error::Input { file: p.display().to_string(), why };
        let placed: Vec<Placed> = serde_json::from_str(&read(p)?).map_err(|e| bad(e.to_string()))?;
        for (n, pl) in placed.iter().enumerate() {
            let cpus: BTreeSet<u32> = (0..pl.vcpus).collect();
            let mut ic = InstanceCell {
                id: pl.node,
                cpuset: if pl.dedicated { Default::default() } else { cpus.clone() },
                pcpuset: Default::default(),
                memory: pl.memory_mb,
                pagesize: None,
                pagesize_kb: pl.pagesize_kb,
                cpu_policy: pl.dedicated.then_some(CpuPolicy::Dedicated),
                cpu_pinning: Default::default(),
            };
            if pl.dedicated {
                let Some(hc) = nova.iter().find(|c| c.id == pl.node) else {
                    return Err(bad(format!("instance {n} is on node {} which the host lacks", pl.node)));
                };
                ic.cpu_pinning = cpus.iter().copied().zip(hc.free_pcpus()).collect();
            }
            crate::fit::add_usage(&mut nova, std::slice::from_ref(&ic));
        }
    }
    for p in &i.domain_xml {
        let cells = crate::libvirt::parse_domain(&read(p)?, &p.display().to_string())?;
        if let Some(c) = cells.iter().find(|c| !nova.iter().any(|h| h.id == c.id)) {
            return Err(Error::Input { file: p.display().to_string(), why: format!("guest memory on node {} which the host lacks", c.id) });
        }
        crate::fit::add_usage(&mut nova, &cells);
    }
    Ok(ComputeHost { kernel, nova, pack: conf.pack, default_kb, warnings })
}
