//! nova's placement decision, `nova/virt/hardware.py::numa_fit_instance_to_host`,
//! `_numa_fit_instance_cell` and `_pack_instance_onto_cores`, and its usage accounting,
//! `numa_usage_from_instance_numa`, reproduced step by step.
//!
//! Why hand-written: this is nova's own algorithm, which no crate provides; the point is to
//! decide exactly as nova decides, quirks included:
//! * host cells are sorted only when the host has more cells than the instance: by available
//!   memory (descending when spreading), then by CPU usage (shared policy) or free pCPUs
//!   (dedicated, mixed), stable sorts so the last key is primary;
//! * permutations of host cells are tried in order, with caches of (host cell, instance cell
//!   id) pairs that fit or did not, keyed by the instance cell's id *before* the attempt, which
//!   an earlier success may already have rewritten to a host cell id;
//! * the request is mutated as nova mutates it: the page size chosen for an instance cell stays
//!   even when the cell then fails on CPUs, and a cached fit reuses the pinning of the attempt
//!   that made it;
//! * dedicated vCPUs are packed onto thread siblings in the order CPython iterates nova's
//!   sibling sets ([`crate::pyset`]), under the `prefer`, `isolate` and `require` thread
//!   policies, with one pCPU reserved on the first guest cell for isolated emulator threads.
//!
//! Not modelled: PCI and network affinity, vPMEM, `[libvirt] cpu_power_management`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::Error;
use crate::model::{CpuPolicy, HostCell, InstanceCell, InstanceTopology, ThreadPolicy};
use crate::pyset::PySet;
use crate::units::PageRequest;

/// Overcommit limits (`NUMATopologyLimits`), as the scheduler's NUMATopologyFilter passes them:
/// the host's `cpu_allocation_ratio` and `ram_allocation_ratio`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
}

fn not_supported(e: &Error) -> bool {
    matches!(e, Error::Nova { exception: "MemoryPageSizeNotSupported", .. })
}

/// `_numa_cell_supports_pagesize_request`: the first candidate size whose free pages hold the
/// cell's memory; explicit sizes the host lacks raise `MemoryPageSizeNotSupported`.
pub fn supports_pagesize_request(host: &HostCell, inst: &InstanceCell) -> Result<Option<i64>, Error> {
    let mut avail: Vec<i64> = host.mempages.iter().map(|p| p.size_kb as i64).collect();
    avail.sort_unstable_by(|a, b| b.cmp(a));
    let candidates: Vec<i64> = match inst.pagesize {
        Some(PageRequest::Small) => avail.last().copied().into_iter().collect(),
        Some(PageRequest::Large) => avail[..avail.len().saturating_sub(1)].to_vec(),
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

/// `_get_pinning`: sorted vCPUs zipped with the first `threads` CPUs of each set.
fn get_pinning(threads: usize, sets: &[PySet], vcpus: &BTreeSet<u32>) -> Option<Vec<(u32, u32)>> {
    if threads * sets.len() < vcpus.len() {
        return None;
    }
    let usable = sets.iter().flat_map(|s| s.iter().take(threads));
    Some(vcpus.iter().copied().zip(usable).collect())
}

/// `_get_reserved`: the first `n` CPUs left in `sets` once the pinned ones (or, isolating,
/// their whole cores) are taken out. None for no pinning or nothing reserved.
fn get_reserved(sets: &[PySet], pinning: &Option<Vec<(u32, u32)>>, n: usize, isolate: bool) -> Option<BTreeSet<u32>> {
    let pinning = pinning.as_ref().filter(|p| !p.is_empty())?;
    if n == 0 {
        return None;
    }
    let mut usable: Vec<Vec<u32>> = sets.iter().map(PySet::to_vec).collect();
    for &(_, pcpu) in pinning {
        if let Some(i) = usable.iter().position(|s| s.contains(&pcpu)) {
            if isolate {
                usable.remove(i);
            } else {
                usable[i].retain(|c| *c != pcpu);
            }
        }
    }
    let reserved: BTreeSet<u32> = usable.into_iter().flatten().take(n).collect();
    (!reserved.is_empty()).then_some(reserved)
}

/// `_pack_instance_onto_cores`: pins `inst`'s dedicated vCPUs (and reserves `num_reserved`
/// pCPUs) on `host`, or returns false leaving `inst` untouched.
pub fn pack_instance_onto_cores(host: &HostCell, inst: &mut InstanceCell, num_reserved: usize) -> Result<bool, Error> {
    let Some(threads_per_core) = host.siblings.iter().map(PySet::len).max() else {
        return Err(Error::Nova {
            exception: "ValueError",
            message: format!("host cell {} has no usable CPUs: nova's max() of no sibling sets fails", host.id),
        });
    };
    let threads_per_core = threads_per_core.max(1);
    let mut sibling_sets: BTreeMap<usize, Vec<PySet>> = BTreeMap::new();
    for sib in host.free_siblings() {
        for t in 1..=sib.len() {
            sibling_sets.entry(t).or_default().push(sib.clone());
        }
    }
    let empty = Vec::new();
    let ones = sibling_sets.get(&1).unwrap_or(&empty);
    let policy = inst.cpu_thread_policy;
    let (pinning, reserved) = if policy == Some(ThreadPolicy::Isolate) {
        let Some(full) = sibling_sets.get(&threads_per_core) else { return Ok(false) };
        if threads_per_core != 1 && host.pcpuset.sorted() != host.cpuset {
            // nova's bug #1889633 guard: new-style CPU sets on an SMT host.
            return Ok(false);
        }
        let pinning = get_pinning(1, full, &inst.pcpuset);
        let reserved = get_reserved(ones, &pinning, num_reserved, true);
        // `if not pinning …`: an empty pinning (a mixed cell without dedicated vCPUs) fails too.
        if pinning.as_ref().is_none_or(|p| p.is_empty()) || (num_reserved > 0 && reserved.is_none()) {
            (None, None)
        } else {
            (pinning, reserved)
        }
    } else {
        if policy == Some(ThreadPolicy::Require) && threads_per_core <= 1 {
            return Ok(false);
        }
        let (mut pinning, mut reserved, mut threads_no) = (None, None, 1);
        for (&t, sets) in sibling_sets.iter().rev() {
            threads_no = t;
            if policy == Some(ThreadPolicy::Require) && t <= 1 {
                continue;
            }
            pinning = get_pinning(t, sets, &inst.pcpuset);
            reserved = get_reserved(ones, &pinning, num_reserved, false);
            if pinning.is_none() || (num_reserved > 0 && reserved.is_none()) {
                continue;
            }
            break;
        }
        if policy != Some(ThreadPolicy::Require) && pinning.as_ref().is_none_or(|p| p.is_empty()) {
            let single: Vec<PySet> = ones.iter().flat_map(|s| s.iter()).map(|c| PySet::from_iter_adds([c])).collect();
            pinning = get_pinning(threads_no, &single, &inst.pcpuset);
            reserved = get_reserved(&single, &pinning, num_reserved, false);
        }
        (pinning, reserved)
    };
    let Some(pinning) = pinning else { return Ok(false) };
    if num_reserved > 0 && reserved.is_none() {
        return Ok(false);
    }
    for (v, p) in pinning {
        inst.cpu_pinning.insert(v, p);
    }
    inst.id = host.id;
    inst.cpuset_reserved = reserved;
    Ok(true)
}

/// `_numa_fit_instance_cell`. Mutates `inst` as nova does (page size, pinning, id).
pub fn fit_instance_cell(host: &HostCell, inst: &mut InstanceCell, limits: Option<Limits>, cpuset_reserved: usize) -> Result<bool, Error> {
    let pinned = inst.pinned();
    if inst.pagesize.is_some() {
        match supports_pagesize_request(host, inst)? {
            Some(ps) => {
                inst.pagesize = Some(PageRequest::Size(ps));
                inst.pagesize_kb = Some(ps as u64);
            }
            None => return Ok(false),
        }
    } else if !host.mempages.is_empty() {
        let ps = host.mempages.iter().map(|p| p.size_kb).min().expect("mempages") as i64;
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
    let shared = matches!(inst.cpu_policy, None | Some(CpuPolicy::Shared) | Some(CpuPolicy::Mixed));
    if pinned && inst.pcpuset.len() + cpuset_reserved > host.pcpuset.len() {
        return Ok(false);
    }
    if shared && inst.cpuset.len() > host.cpuset.len() {
        return Ok(false);
    }
    if pinned {
        if inst.pcpuset.len() + cpuset_reserved > host.avail_pcpus() {
            return Ok(false);
        }
        if !pack_instance_onto_cores(host, inst, cpuset_reserved)? {
            return Ok(false);
        }
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
pub fn fit_instance_to_host(host: &[HostCell], inst: &mut InstanceTopology, pack: bool, limits: Option<Limits>) -> Result<Option<Vec<InstanceCell>>, Error> {
    let cells_wanted = inst.cells.len();
    if host.is_empty() || cells_wanted == 0 || host.len() < cells_wanted {
        return Ok(None);
    }
    let cells = sorted_cells(host, &inst.cells, pack);
    let mut not_fit = HashSet::new();
    let mut fit = HashSet::new();
    for perm in permutations(cells.len(), cells_wanted) {
        let mut chosen = Vec::new();
        for (slot, &ci) in perm.iter().enumerate() {
            let hc = &cells[ci];
            let key = (hc.id, inst.cells[slot].id);
            if not_fit.contains(&key) {
                break;
            }
            if fit.contains(&key) {
                inst.cells[slot].id = hc.id;
                chosen.push(slot);
                continue;
            }
            let reserved = usize::from(inst.emulator_threads_isolated && chosen.is_empty());
            match fit_instance_cell(hc, &mut inst.cells[slot], limits, reserved) {
                Ok(true) => {
                    fit.insert(key);
                    chosen.push(slot);
                }
                Ok(false) => {
                    not_fit.insert(key);
                    break;
                }
                Err(e) if not_supported(&e) => {
                    not_fit.insert(key);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if chosen.len() == cells_wanted {
            return Ok(Some(chosen.into_iter().map(|s| inst.cells[s].clone()).collect()));
        }
    }
    Ok(None)
}

/// `numa_usage_from_instance_numa` (sign +1) for one placed instance: page, memory, CPU usage
/// and pinning added to the host cells, every cell rebuilt as nova rebuilds it. Pinning CPUs a
/// cell lacks or has pinned already fails as nova's `pin_cpus` does.
pub fn add_usage(host: &mut [HostCell], placed: &[InstanceCell]) -> Result<(), Error> {
    for hc in host.iter_mut() {
        hc.assigned();
        let (mut memory_usage, mut cpu_usage) = (hc.memory_usage, hc.cpu_usage);
        for ic in placed.iter().filter(|ic| ic.id == hc.id) {
            let size = ic.pagesize_kb.or_else(|| hc.mempages.iter().map(|p| p.size_kb).min());
            if let Some(size) = size {
                for p in hc.mempages.iter_mut().filter(|p| p.size_kb == size) {
                    p.used = (p.used as f64 + (ic.memory * 1024) as f64 / size as f64).max(0.0) as i64;
                }
            }
            memory_usage += ic.memory;
            cpu_usage += ic.cpuset.len() as i64;
            if !ic.pinned() {
                continue;
            }
            let mut pinned: BTreeSet<u32> = ic.cpu_pinning.values().copied().collect();
            pinned.extend(ic.cpuset_reserved.iter().flatten().copied());
            if ic.cpu_thread_policy == Some(ThreadPolicy::Isolate) {
                pinned = hc.with_siblings(&pinned);
            }
            let pcpus = hc.pcpuset.sorted();
            if !pinned.is_subset(&pcpus) {
                return Err(Error::Nova {
                    exception: "CPUPinningUnknown",
                    message: format!("CPU set to pin {pinned:?} must be a subset of known CPU set {pcpus:?} of host cell {}", hc.id),
                });
            }
            if !pinned.is_disjoint(&hc.pinned_cpus) {
                return Err(Error::Nova {
                    exception: "CPUPinningInvalid",
                    message: format!("CPU set to pin {pinned:?} must be a subset of free CPU set {:?} of host cell {}", hc.free_pcpus(), hc.id),
                });
            }
            hc.pinned_cpus.extend(pinned);
        }
        hc.memory_usage = memory_usage.max(0);
        hc.cpu_usage = cpu_usage.max(0);
    }
    Ok(())
}
