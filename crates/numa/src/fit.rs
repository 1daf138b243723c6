//! nova's placement decision, `nova/virt/hardware.py::numa_fit_instance_to_host` and
//! `_numa_fit_instance_cell`, reproduced step by step.
//!
//! Why hand-written: this is nova's own algorithm, which no crate provides; the point is to
//! decide exactly as nova decides, quirks included:
//! * host cells are sorted only when the host has more cells than the instance: by available
//!   memory (descending when spreading), then by CPU usage (shared policy) or free pCPUs
//!   (dedicated), stable sorts so the last key is primary;
//! * permutations of host cells are tried in order, with caches of (host cell, instance cell)
//!   pairs that fit or did not;
//! * the page size chosen for an instance cell is written into the request even when the cell
//!   then fails on CPUs, and later permutations see it (nova's mutation quirk).
//!
//! Not modelled: PCI and network affinity, emulator-thread isolation, CPU thread policies
//! (`isolate`/`require`; dedicated CPUs are pinned lowest-first), vPMEM.

use crate::error::Error;
use crate::model::{CpuPolicy, HostCell, InstanceCell};
use crate::units::PageRequest;

/// Overcommit limits (`NUMATopologyLimits`), as the scheduler passes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
}

/// `_numa_cell_supports_pagesize_request`: the first candidate size whose free pages hold the
/// cell's memory; explicit sizes the host lacks raise `MemoryPageSizeNotSupported`.
pub fn supports_pagesize_request(host: &HostCell, inst: &InstanceCell) -> Result<Option<u64>, Error> {
    let mut avail: Vec<u64> = host.mempages.iter().map(|p| p.size_kb).collect();
    avail.sort_unstable_by(|a, b| b.cmp(a));
    let smallest = avail.last().copied();
    let candidates: Vec<u64> = match inst.pagesize {
        Some(PageRequest::Small) => smallest.into_iter().collect(),
        Some(PageRequest::Large) => avail.iter().copied().filter(|s| Some(*s) != smallest).collect(),
        Some(PageRequest::Any) => avail.clone(),
        Some(PageRequest::Size(s)) => vec![s],
        None => vec![],
    };
    let memory_kb = inst.memory * 1024;
    for s in candidates {
        if host.can_fit_pagesize(s, memory_kb, true)? {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// `_numa_fit_instance_cell`. Mutates `inst` as nova does (page size, pinning, id).
pub fn fit_instance_cell(host: &HostCell, inst: &mut InstanceCell, limits: Option<Limits>, cpuset_reserved: usize) -> Result<bool, Error> {
    let pinned = inst.pinned();
    if inst.pagesize.is_some() {
        match supports_pagesize_request(host, inst)? {
            Some(ps) => {
                inst.pagesize = Some(PageRequest::Size(ps));
                inst.pagesize_kb = Some(ps);
            }
            None => return Ok(false),
        }
    } else if !host.mempages.is_empty() {
        let ps = host.mempages.iter().map(|p| p.size_kb).min().expect("mempages");
        if !host.can_fit_pagesize(ps, inst.memory * 1024, pinned)? {
            return Ok(false);
        }
    } else if pinned {
        if host.avail_memory() < inst.memory {
            return Ok(false);
        }
    } else if host.memory < inst.memory {
        return Ok(false);
    }
    let policy = inst.cpu_policy;
    let dedicated = matches!(policy, Some(CpuPolicy::Dedicated) | Some(CpuPolicy::Mixed));
    let shared = matches!(policy, None | Some(CpuPolicy::Shared) | Some(CpuPolicy::Mixed));
    if dedicated && inst.pcpuset.len() + cpuset_reserved > host.pcpuset.len() {
        return Ok(false);
    }
    if shared && inst.cpuset.len() > host.cpuset.len() {
        return Ok(false);
    }
    if dedicated {
        if inst.pcpuset.len() + cpuset_reserved > host.avail_pcpus() {
            return Ok(false);
        }
        let free: Vec<u32> = host.free_pcpus().into_iter().collect();
        inst.cpu_pinning = inst.pcpuset.iter().copied().zip(free).collect();
    }
    if let (true, Some(l)) = (shared, limits) {
        if (host.cpu_usage + inst.cpuset.len() as i64) as f64 > host.cpuset.len() as f64 * l.cpu_allocation_ratio {
            return Ok(false);
        }
        if (host.memory_usage + inst.memory) as f64 > host.memory as f64 * l.ram_allocation_ratio {
            return Ok(false);
        }
    }
    inst.id = host.id;
    Ok(true)
}

/// Itertools-order permutations of `n` items taken `k` at a time.
fn permutations(n: usize, k: usize) -> Vec<Vec<usize>> {
    fn go(n: usize, k: usize, cur: &mut Vec<usize>, used: &mut Vec<bool>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in 0..n {
            if !used[i] {
                used[i] = true;
                cur.push(i);
                go(n, k, cur, used, out);
                cur.pop();
                used[i] = false;
            }
        }
    }
    let mut out = Vec::new();
    go(n, k, &mut Vec::new(), &mut vec![false; n], &mut out);
    out
}

/// The host cells in the order nova tries them.
pub fn sorted_cells(host: &[HostCell], inst: &[InstanceCell], pack: bool) -> Vec<HostCell> {
    let mut cells = host.to_vec();
    if host.len() > inst.len() {
        if pack {
            cells.sort_by_key(|c| c.avail_memory());
        } else {
            cells.sort_by_key(|c| std::cmp::Reverse(c.avail_memory()));
        }
        match inst.first().and_then(|c| c.cpu_policy) {
            None | Some(CpuPolicy::Shared) => {
                if pack {
                    cells.sort_by_key(|c| std::cmp::Reverse(c.cpu_usage));
                } else {
                    cells.sort_by_key(|c| c.cpu_usage);
                }
            }
            _ => {
                if pack {
                    cells.sort_by_key(|c| c.avail_pcpus());
                } else {
                    cells.sort_by_key(|c| std::cmp::Reverse(c.avail_pcpus()));
                }
            }
        }
    }
    cells
}

/// `numa_fit_instance_to_host`: the fitted instance cells (with host cell ids, page sizes and
/// pinning), or None when the instance fits nowhere. `inst` is mutated as nova mutates it.
pub fn fit_instance_to_host(host: &[HostCell], inst: &mut [InstanceCell], pack: bool, limits: Option<Limits>) -> Option<Vec<InstanceCell>> {
    if host.is_empty() || inst.is_empty() || host.len() < inst.len() {
        return None;
    }
    let cells = sorted_cells(host, inst, pack);
    let mut not_fit = std::collections::HashSet::new();
    let mut fit = std::collections::HashSet::new();
    for perm in permutations(cells.len(), inst.len()) {
        let mut chosen = Vec::new();
        for (slot, &ci) in perm.iter().enumerate() {
            let hc = &cells[ci];
            let key = (hc.id, inst[slot].id);
            if not_fit.contains(&key) {
                break;
            }
            if fit.contains(&key) {
                inst[slot].id = hc.id;
                chosen.push(inst[slot].clone());
                continue;
            }
            // MemoryPageSizeNotSupported ⇒ this cell does not fit.
            match fit_instance_cell(hc, &mut inst[slot], limits, 0) {
                Ok(true) => {
                    fit.insert(key);
                    chosen.push(inst[slot].clone());
                }
                _ => {
                    not_fit.insert(key);
                    break;
                }
            }
        }
        if chosen.len() == inst.len() {
            return Some(chosen);
        }
    }
    None
}

/// `numa_usage_from_instance_numa` (sign +1) for one placed instance: page, memory, CPU usage
/// and pinning added to the host cells.
pub fn add_usage(host: &mut [HostCell], placed: &[InstanceCell]) {
    for ic in placed {
        let Some(hc) = host.iter_mut().find(|h| h.id == ic.id) else { continue };
        let size = ic.pagesize_kb.or_else(|| hc.mempages.iter().map(|p| p.size_kb).min());
        if let Some(size) = size {
            if let Some(p) = hc.mempages.iter_mut().find(|p| p.size_kb == size) {
                p.used = (p.used + ic.memory * 1024 / size as i64).max(0);
            }
        }
        hc.memory_usage += ic.memory;
        hc.cpu_usage += ic.cpuset.len() as i64;
        hc.pinned_cpus.extend(ic.cpu_pinning.values().copied());
    }
}
