//! The host's real state, as the kernel reports it, and nova's view built from it.
//!
//! * `<sysfs>/devices/system/node/nodeN/meminfo`: `Node N MemTotal: X kB` (whitespace-split;
//!   column widths vary by kernel);
//! * `<sysfs>/devices/system/node/nodeN/hugepages/hugepages-<S>kB/{nr_hugepages,free_hugepages,surplus_hugepages}`:
//!   one integer each; `nr_hugepages` is the pool (free and taken);
//! * `<sysfs>/devices/system/node/nodeN/cpulist`, or `LC_ALL=C lscpu`'s `NUMA nodeN CPU(s):`;
//! * `/proc/meminfo` `Hugepagesize:` for the default size.
//!
//! nova's view (`LibvirtDriver._get_host_numa_topology` via libvirt's `virNumaGetPages`): per
//! cell, memory = MemTotal / 1024 MiB; one page pool per huge size with `total = nr_hugepages`,
//! and a small-page (4 KiB) pool of `(MemTotal − Σ hugepage bytes) / 4096`; `reserved` from
//! `reserved_huge_pages`. nova never reads `free_hugepages`: pages other processes hold are
//! invisible to it unless reserved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::config::Reserved;
use crate::cpu::NovaCpus;
use crate::error::Error;
use crate::model::{HostCell, Pages};
use crate::pyset::PySet;

/// One hugepage pool of one node, as the kernel counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelPages {
    pub size_kb: u64,
    pub nr: i64,
    pub free: i64,
    pub surplus: i64,
}

/// One NUMA node as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: u32,
    pub mem_total_kb: i64,
    pub cpus: BTreeSet<u32>,
    pub pages: Vec<KernelPages>,
    /// CPU → its `thread_siblings_list` text (what libvirt reports as `siblings`); CPUs without
    /// one are taken as cores of their own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub thread_siblings: BTreeMap<u32, String>,
}

fn read(p: &Path) -> Result<String, Error> {
    std::fs::read_to_string(p).map_err(|e| Error::Input { file: p.display().to_string(), why: e.to_string() })
}

fn read_int(p: &Path) -> Result<i64, Error> {
    let t = read(p)?;
    t.trim().parse().map_err(|_| Error::Input { file: p.display().to_string(), why: format!("not an integer: {:?}", t.trim()) })
}

/// `0-3,8,10-11` → set.
pub use crate::cpu::parse_kernel_list as parse_cpu_list;

/// `NUMA nodeN CPU(s): list` lines of `LC_ALL=C lscpu`.
pub fn parse_lscpu(text: &str, file: &str) -> Result<BTreeMap<u32, BTreeSet<u32>>, Error> {
    let mut m = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("NUMA node") else { continue };
        let Some((id, cpus)) = rest.split_once(" CPU(s):") else { continue };
        let id: u32 = id.trim().parse().map_err(|_| Error::Input { file: format!("{file}:{}", i + 1), why: format!("bad node in {line:?}") })?;
        let set = parse_cpu_list(cpus).map_err(|why| Error::Input { file: format!("{file}:{}", i + 1), why })?;
        m.insert(id, set);
    }
    Ok(m)
}

/// Read every node under `<sysfs>/devices/system/node`.
pub fn read_sysfs(sysfs: &Path) -> Result<Vec<Node>, Error> {
    let base = sysfs.join("devices/system/node");
    let rd = std::fs::read_dir(&base).map_err(|e| Error::Input { file: base.display().to_string(), why: e.to_string() })?;
    let mut nodes = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("node").and_then(|n| n.parse::<u32>().ok()) else { continue };
        let dir = e.path();
        let meminfo_path = dir.join("meminfo");
        let meminfo = read(&meminfo_path)?;
        let mem_total_kb = meminfo
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[2] == "MemTotal:").then(|| f[3].parse::<i64>().ok()).flatten()
            })
            .ok_or_else(|| Error::Input { file: meminfo_path.display().to_string(), why: "no \"Node N MemTotal: X kB\" line".into() })?;
        let cpulist = dir.join("cpulist");
        let cpus = if cpulist.exists() {
            parse_cpu_list(&read(&cpulist)?).map_err(|why| Error::Input { file: cpulist.display().to_string(), why })?
        } else {
            BTreeSet::new()
        };
        let mut pages = Vec::new();
        let hp = dir.join("hugepages");
        if let Ok(rd) = std::fs::read_dir(&hp) {
            for p in rd.flatten() {
                let pn = p.file_name().to_string_lossy().into_owned();
                let Some(size) = pn.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")).and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                let d = p.path();
                pages.push(KernelPages {
                    size_kb: size,
                    nr: read_int(&d.join("nr_hugepages"))?,
                    free: read_int(&d.join("free_hugepages"))?,
                    surplus: if d.join("surplus_hugepages").exists() { read_int(&d.join("surplus_hugepages"))? } else { 0 },
                });
            }
        }
        pages.sort_by_key(|p| p.size_kb);
        let mut thread_siblings = BTreeMap::new();
        for &c in &cpus {
            if let Some(t) = crate::cpu::read_thread_siblings(sysfs, c)? {
                thread_siblings.insert(c, t);
            }
        }
        nodes.push(Node { id, mem_total_kb, cpus, pages, thread_siblings });
    }
    if nodes.is_empty() {
        return Err(Error::Input { file: base.display().to_string(), why: "no nodeN directories".into() });
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// The default hugepage size from `/proc/meminfo` (`Hugepagesize: 2048 kB`).
pub fn default_hugepage_kb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| l.strip_prefix("Hugepagesize:").and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()))
}

/// nova's host topology from the kernel's nodes, built as the libvirt driver's
/// `_get_host_numa_topology` builds it, set operation for set operation: per cell, the CPUs
/// (ascending, as libvirt lists them) `&` nova's shared and dedicated CPUs; the sibling sets
/// de-duplicated through a set of tuples (CPython's order), restricted to the usable CPUs,
/// empty ones dropped; the cell then assigned to a new `NUMACell`.
pub fn nova_view(nodes: &[Node], reserved: &Reserved, cpus: &NovaCpus) -> Result<Vec<HostCell>, Error> {
    let usable = PySet::or(&cpus.shared, &cpus.dedicated);
    let mut cells = Vec::new();
    for n in nodes {
        // The counts come from sysfs files: sizes that no i64 of KiB holds are damage.
        let beyond = || Error::Input { file: format!("node{}", n.id), why: "hugepage pools or memory beyond what 64-bit KiB counts hold".into() };
        let huge_kb = n
            .pages
            .iter()
            .try_fold(0i64, |sum, p| i64::try_from(p.size_kb).ok().and_then(|s| s.checked_mul(p.nr)).and_then(|kb| sum.checked_add(kb)))
            .ok_or_else(beyond)?;
        let small_kb = n.mem_total_kb.checked_sub(huge_kb).ok_or_else(beyond)?;
        let mut mempages = vec![Pages { size_kb: 4, total: small_kb / 4, used: 0, reserved: reserved.get(n.id, 4) }];
        mempages.extend(n.pages.iter().map(|p| Pages { size_kb: p.size_kb, total: p.nr, used: 0, reserved: reserved.get(n.id, p.size_kb) }));
        let mut cell_cpus = PySet::from_iter_adds(n.cpus.iter().copied());
        let cpuset = PySet::and(&cell_cpus, &cpus.shared);
        let pcpuset = PySet::and(&cell_cpus, &cpus.dedicated);
        let mut tuples = Vec::new();
        for &c in &n.cpus {
            let spec = n.thread_siblings.get(&c).cloned().unwrap_or_else(|| c.to_string());
            tuples.push(crate::cpu::parse_cpu_spec(&spec)?.to_vec());
        }
        let unique = crate::pyset::set_of_tuples_order(&tuples);
        cell_cpus = PySet::and(&cell_cpus, &usable);
        let siblings: Vec<PySet> = unique.into_iter().map(|t| PySet::and(&PySet::from_iter_adds(t), &cell_cpus)).filter(|s| !s.is_empty()).collect();
        let mut cell = HostCell {
            id: n.id,
            cpuset: cpuset.sorted(),
            pcpuset,
            siblings,
            memory: n.mem_total_kb / 1024,
            cpu_usage: 0,
            memory_usage: 0,
            pinned_cpus: BTreeSet::new(),
            mempages,
        };
        cell.assigned();
        cells.push(cell);
    }
    Ok(cells)
}

/// A host for examples and tests: nodes of (id, hugepages), all of `size_kb`, `cpus` CPUs each,
/// 16 GiB per node.
pub fn synthetic(nodes: &[(u32, i64)], size_kb: u64, cpus: u32) -> Vec<HostCell> {
    let kernel: Vec<Node> = nodes
        .iter()
        .map(|&(id, n)| Node {
            id,
            mem_total_kb: 16 << 20,
            cpus: (id * cpus..(id + 1) * cpus).collect(),
            pages: vec![KernelPages { size_kb, nr: n, free: n, surplus: 0 }],
            thread_siblings: BTreeMap::new(),
        })
        .collect();
    let online: BTreeSet<u32> = kernel.iter().flat_map(|n| n.cpus.iter().copied()).collect();
    let (sets, _) = crate::cpu::nova_cpus(&Default::default(), &online).expect("no CPU sets configured");
    nova_view(&kernel, &Reserved::default(), &sets).expect("synthetic sibling lists parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found while fuzzing (`fuzz/fuzz_targets/sysfs_values.rs`, a tree with
    /// `nr_hugepages` = 5000000000000000 makes that target panic): pool size × count overflowed.
    #[test]
    fn hugepage_counts_beyond_i64_kib_are_refused() {
        let cpus = NovaCpus { shared: PySet::from_iter_adds([0]), dedicated: PySet::new() };
        let node = |nr: i64, mem: i64| Node {
            id: 0,
            mem_total_kb: mem,
            cpus: [0].into(),
            pages: vec![KernelPages { size_kb: 2048, nr, free: nr, surplus: 0 }],
            thread_siblings: BTreeMap::new(),
        };
        let e = nova_view(&[node(5_000_000_000_000_000, 1000)], &Reserved::default(), &cpus).unwrap_err();
        assert!(e.to_string().contains("beyond what 64-bit KiB counts hold"), "{e}");
        assert!(nova_view(&[node(1, i64::MIN)], &Reserved::default(), &cpus).is_err(), "memory minus pools underflows");
        let cells = nova_view(&[node(512, 16 << 20)], &Reserved::default(), &cpus).unwrap();
        assert_eq!(cells[0].mempages[0].total, ((16 << 20) - 512 * 2048) / 4);
    }
}
