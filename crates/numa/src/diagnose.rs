//! Diagnosis: per NUMA node and page size, what nova believes free against what the kernel
//! says free, the cause when they differ, whether a flavor nova would place here can start, and
//! the `reserved_huge_pages` lines that make nova's view true.
//!
//! nova free = `nr_hugepages − pages of nova's instances − reserved`; kernel free =
//! `free_hugepages`. Pages held by others (OVS-DPDK) are `foreign = nr − free − nova's pages`.
//! When `foreign > reserved`, nova counts `foreign − reserved` pages that do not exist, and a
//! guest it places there fails in QEMU's `os_mem_prealloc`.
//!
//! Recommended count per node (OVS memory `M` MB on that node, DPDK page size `S` KiB):
//! `ceil(M × 1024 / S)`, raised to the observed foreign pages if more are held.

use serde::Serialize;

use crate::constraints::{numa_get_constraints, Flavor};
use crate::fit::fit_instance_to_host;
use crate::fit::Limits;
use crate::host::Node;
use crate::model::HostCell;

#[derive(Debug, Clone, Serialize)]
pub struct PoolDiagnosis {
    pub node: u32,
    pub size_kb: u64,
    pub kernel_total: i64,
    pub kernel_free: i64,
    pub nova_used: i64,
    pub reserved: i64,
    pub nova_free: i64,
    pub foreign: i64,
    pub overcounted: i64,
    pub cause: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub node: u32,
    pub size_kb: u64,
    pub count: i64,
    pub arithmetic: String,
    pub line: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlacementCheck {
    pub flavor: String,
    pub nova_places_on: Option<u32>,
    pub page_size_kb: Option<u64>,
    pub pages_needed: Option<i64>,
    pub kernel_free: Option<i64>,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub pools: Vec<PoolDiagnosis>,
    pub recommendations: Vec<Recommendation>,
    pub placement: Option<PlacementCheck>,
    pub warnings: Vec<String>,
}

/// A flavor to place, and how the scheduler places it.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub flavor: &'a Flavor,
    pub pack: bool,
    pub limits: Limits,
}

/// `nova`: nova's view with its instances' usage applied. `socket_mem`: OVS MB per node.
pub fn diagnose(
    kernel: &[Node],
    nova: &[HostCell],
    socket_mem: Option<&[u64]>,
    socket_limit: Option<&[u64]>,
    dpdk_page_kb: u64,
    placement: Option<Placement>,
) -> Diagnosis {
    let mut pools = Vec::new();
    let mut warnings = Vec::new();
    for n in kernel {
        let Some(cell) = nova.iter().find(|c| c.id == n.id) else { continue };
        for kp in &n.pages {
            let np = cell.page(kp.size_kb);
            let (used, reserved) = np.map(|p| (p.used, p.reserved)).unwrap_or((0, 0));
            let nova_free = kp.nr - used - reserved;
            let foreign = kp.nr - kp.free - used;
            let overcounted = (foreign - reserved).max(0);
            let cause = if overcounted > 0 {
                Some(format!(
                    "{foreign} pages are held outside nova (OVS-DPDK or another hugepage user) but only {reserved} are reserved: nova counts {overcounted} free pages that do not exist"
                ))
            } else if nova_free < 0 {
                Some(format!("reserved ({reserved}) exceeds what is left: nova's free count is negative, nothing fits"))
            } else if foreign < 0 {
                Some(format!("the kernel reports {} more free pages than nova's instances leave: an instance nova counts is not running, or nova-compute has not restarted since nr_hugepages changed", -foreign))
            } else {
                None
            };
            pools.push(PoolDiagnosis {
                node: n.id,
                size_kb: kp.size_kb,
                kernel_total: kp.nr,
                kernel_free: kp.free,
                nova_used: used,
                reserved,
                nova_free,
                foreign,
                overcounted,
                cause,
            });
        }
    }
    let mut recommendations = Vec::new();
    if let Some(mem) = socket_mem {
        if socket_limit.is_none_or(|l| l.iter().all(|x| *x == 0)) {
            warnings.push("dpdk-socket-limit is unset or 0: OVS may grow beyond dpdk-socket-mem; set dpdk-socket-limit equal to dpdk-socket-mem".into());
        }
        for n in kernel {
            let m_mem = mem.get(n.id as usize).copied().unwrap_or(0);
            let m_lim = socket_limit.and_then(|l| l.get(n.id as usize).copied()).unwrap_or(0);
            let m = m_mem.max(m_lim);
            let observed = pools.iter().find(|p| p.node == n.id && p.size_kb == dpdk_page_kb).map(|p| p.foreign).unwrap_or(0);
            if m == 0 && observed <= 0 {
                continue;
            }
            let by_ovs = (m * 1024).div_ceil(dpdk_page_kb) as i64;
            let count = by_ovs.max(observed);
            let mut arithmetic = format!("{m} MB × 1024 / {dpdk_page_kb} KiB = {by_ovs} pages");
            if observed > by_ovs {
                arithmetic += &format!("; {observed} are observed held, so {observed}");
            }
            recommendations.push(Recommendation {
                node: n.id,
                size_kb: dpdk_page_kb,
                count,
                arithmetic,
                line: format!("reserved_huge_pages = node:{},size:{dpdk_page_kb},count:{count}", n.id),
            });
        }
    } else {
        for p in pools.iter().filter(|p| p.overcounted > 0) {
            recommendations.push(Recommendation {
                node: p.node,
                size_kb: p.size_kb,
                count: p.foreign,
                arithmetic: format!("{} pages observed held outside nova (no OVS socket memory given)", p.foreign),
                line: format!("reserved_huge_pages = node:{},size:{},count:{}", p.node, p.size_kb, p.foreign),
            });
        }
    }
    let placement = placement.map(|Placement { flavor: f, pack, limits }| {
        let mut inst = match numa_get_constraints(f) {
            Ok(Some(i)) => i,
            Ok(None) => {
                return PlacementCheck { flavor: f.name.clone(), nova_places_on: None, page_size_kb: None, pages_needed: None, kernel_free: None, verdict: "no NUMA topology requested: nova does not pin this guest to a node".into() }
            }
            Err(e) => return PlacementCheck { flavor: f.name.clone(), nova_places_on: None, page_size_kb: None, pages_needed: None, kernel_free: None, verdict: format!("invalid flavor: {e}") },
        };
        match fit_instance_to_host(nova, &mut inst, pack, Some(limits)) {
            Err(e) => PlacementCheck { flavor: f.name.clone(), nova_places_on: None, page_size_kb: None, pages_needed: None, kernel_free: None, verdict: format!("nova fails: {e}") },
            Ok(None) => PlacementCheck { flavor: f.name.clone(), nova_places_on: None, page_size_kb: None, pages_needed: None, kernel_free: None, verdict: "nova finds no cell: the build is rejected by the scheduler (no valid host)".into() },
            Ok(Some(cells)) => {
                let c = &cells[0];
                let size = c.pagesize_kb.unwrap_or(4);
                let needed = c.memory * 1024 / size as i64;
                let kfree = kernel.iter().find(|n| n.id == c.id).and_then(|n| n.pages.iter().find(|p| p.size_kb == size)).map(|p| p.free);
                let verdict = match kfree {
                    Some(kf) if kf < needed => format!(
                        "WILL FAIL: nova places it on node {} with {size} KiB pages, needing {needed}, but the kernel has {kf} free there: QEMU reports os_mem_prealloc: Insufficient free host memory pages",
                        c.id
                    ),
                    Some(kf) => format!("OK: node {} has {kf} free {size} KiB pages for the {needed} needed", c.id),
                    None => format!("placed on node {} with {size} KiB pages (small pages: not checked against the kernel)", c.id),
                };
                PlacementCheck { flavor: f.name.clone(), nova_places_on: Some(c.id), page_size_kb: Some(size), pages_needed: Some(needed), kernel_free: kfree, verdict }
            }
        }
    });
    Diagnosis { pools, recommendations, placement, warnings }
}
