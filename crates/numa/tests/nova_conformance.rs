//! Cases from nova's own unit tests (`nova/tests/unit/virt/test_hardware.py`, and one from
//! `nova/tests/unit/virt/libvirt/test_driver.py`), each giving nova's decision, plus the
//! two-node OVS-DPDK scenarios checked against nova (research brief, section 4).
//! Reservation parsing cases (`test_numa_get_reserved_huge_pages`,
//! `test_reserved_huge_pages_invalid_format/_value`) are in `src/config.rs`; page-size parsing
//! (`test_get_requested_mempages_*`) in `src/constraints.rs`. Everything else is checked against
//! the real nova by `crates/quorum/tests/files/numa_nova.rs`.

use std::collections::{BTreeMap, BTreeSet};

use numa::constraints::{numa_get_constraints, Flavor};
use numa::cpu::nova_cpus;
use numa::fit::{add_usage, fit_instance_cell, fit_instance_to_host, supports_pagesize_request};
use numa::host::{nova_view, KernelPages, Node};
use numa::model::{CpuPolicy, HostCell, InstanceCell, Pages};
use numa::units::PageRequest;
use numa::Error;

fn cell(id: u32, mempages: Vec<Pages>, cpus: &[u32]) -> HostCell {
    HostCell::new(id, &cpus.iter().copied().collect(), 1024, mempages)
}

/// nova's CPU sets without any CPU option in nova.conf: every online CPU, both ways.
fn all_cpus(nodes: &[Node]) -> numa::cpu::NovaCpus {
    nova_cpus(&Default::default(), &nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect()).unwrap().0
}

fn pages(size_kb: u64, total: i64, used: i64, reserved: i64) -> Pages {
    Pages { size_kb, total, used, reserved }
}

fn inst(id: u32, memory: i64, pagesize: Option<PageRequest>, policy: Option<CpuPolicy>, vcpus: &[u32]) -> InstanceCell {
    let set: BTreeSet<u32> = vcpus.iter().copied().collect();
    let dedicated = policy == Some(CpuPolicy::Dedicated);
    InstanceCell {
        guest_cell: id,
        id,
        cpuset: if dedicated { BTreeSet::new() } else { set.clone() },
        pcpuset: if dedicated { set } else { BTreeSet::new() },
        memory,
        pagesize,
        pagesize_kb: None,
        cpu_policy: policy,
        cpu_thread_policy: None,
        cpu_pinning: BTreeMap::new(),
        cpuset_reserved: None,
    }
}

/// test_hardware.py `NUMATopologyTest.test_reserved_hugepages_success`
#[test]
fn test_reserved_hugepages_success() {
    let mut host = vec![cell(0, vec![pages(2048, 512, 128, 128)], &[0, 1]), cell(1, vec![pages(1048576, 5, 2, 1)], &[2, 3])];
    let mut a = inst(0, 256, Some(PageRequest::Size(2048)), None, &[0]);
    a.pagesize_kb = Some(2048);
    let mut b = inst(1, 1024, Some(PageRequest::Size(1048576)), None, &[1]);
    b.pagesize_kb = Some(1048576);
    add_usage(&mut host, &[a, b]).unwrap();
    assert_eq!((host[0].mempages[0].used, host[0].mempages[0].free()), (256, 128));
    assert_eq!((host[1].mempages[0].used, host[1].mempages[0].free()), (3, 1));
}

/// libvirt/test_driver.py `_test_does_want_hugepages`: reserved pages land on the right cells.
#[test]
fn test_does_want_hugepages_reserved() {
    let conf =
        "reserved_huge_pages = node:0,size:2048,count:128\nreserved_huge_pages = node:1,size:2048,count:1\nreserved_huge_pages = node:3,size:2048,count:64\n";
    let c = numa::config::parse_nova_conf(conf, "nova.conf").unwrap();
    let nodes: Vec<Node> = (0..4)
        .map(|id| Node {
            id,
            mem_total_kb: 4 << 20,
            cpus: [id].into(),
            pages: vec![KernelPages { size_kb: 2048, nr: 1024, free: 1024, surplus: 0 }],
            thread_siblings: BTreeMap::new(),
        })
        .collect();
    let view = nova_view(&nodes, &c.reserved, &all_cpus(&nodes)).unwrap();
    let r: Vec<i64> = view.iter().map(|c| c.mempages[1].reserved).collect();
    assert_eq!(r, vec![128, 1, 0, 64]);
}

/// `VirtMemoryPagesTestCase.test_numa_pagesize_usage_from_cell`
#[test]
fn test_numa_pagesize_usage_from_cell() {
    let mut host = vec![cell(0, vec![pages(4, 262144, 0, 0), pages(2048, 512, 0, 0)], &[0])];
    let mut i = inst(0, 512, Some(PageRequest::Size(2048)), None, &[0]);
    i.pagesize_kb = Some(2048);
    add_usage(&mut host, &[i]).unwrap();
    assert_eq!(host[0].mempages[1].used, 256);
}

/// `VirtMemoryPagesTestCase.test_cell_accepts_request_wipe`
#[test]
fn test_cell_accepts_request_wipe() {
    let host = cell(0, vec![pages(4, 262144, 0, 0)], &[0]);
    let ask = |r| supports_pagesize_request(&host, &inst(0, 1024, Some(r), None, &[0])).unwrap();
    assert_eq!(ask(PageRequest::Small), Some(4));
    assert_eq!(ask(PageRequest::Any), Some(4));
    assert_eq!(ask(PageRequest::Large), None);
}

/// `test_cell_accepts_request_large_pass` and `test_cell_accepts_request_custom_pass`
#[test]
fn test_cell_accepts_request_large_and_custom_pass() {
    let host = cell(0, vec![pages(4, 256, 0, 0), pages(2048, 512, 0, 0)], &[0]);
    assert_eq!(supports_pagesize_request(&host, &inst(0, 1024, Some(PageRequest::Large), None, &[0])).unwrap(), Some(2048));
    assert_eq!(supports_pagesize_request(&host, &inst(0, 1024, Some(PageRequest::Size(2048)), None, &[0])).unwrap(), Some(2048));
}

/// `test_cell_accepts_request_remainder_memory`
#[test]
fn test_cell_accepts_request_remainder_memory() {
    let host = cell(0, vec![pages(4, 256, 0, 0), pages(2048, 512, 0, 0)], &[0]);
    assert_eq!(supports_pagesize_request(&host, &inst(0, 1025, Some(PageRequest::Size(2048)), None, &[0])).unwrap(), None);
}

/// `test_cell_accepts_request_host_mempages`
#[test]
fn test_cell_accepts_request_host_mempages() {
    let host = cell(0, vec![pages(4, 256, 0, 0), pages(2048, 512, 0, 0)], &[0]);
    let e = supports_pagesize_request(&host, &inst(0, 1024, Some(PageRequest::Size(4096)), None, &[0])).unwrap_err();
    assert!(matches!(e, Error::Nova { exception: "MemoryPageSizeNotSupported", .. }) && e.to_string().contains("4096"), "{e}");
}

/// `VirtNUMATopologyCellUsageTestCase.test_fit_instance_cell_mempages`
#[test]
fn test_fit_instance_cell_mempages() {
    let mut host = cell(0, vec![pages(4, 262144, 0, 0)], &[1, 2]);
    let mut i = inst(0, 1024, Some(PageRequest::Size(4)), None, &[0]);
    assert!(fit_instance_cell(&host, &mut i, None, 0).unwrap());
    host.mempages[0].used = 1;
    let mut i = inst(0, 1024, Some(PageRequest::Size(4)), None, &[0]);
    assert!(!fit_instance_cell(&host, &mut i, None, 0).unwrap());
}

/// `test_fit_instance_cell_no_guest_mempages`: without a page request a shared guest may
/// overcommit (total checked), a dedicated one may not (free checked).
#[test]
fn test_fit_instance_cell_no_guest_mempages() {
    let host = cell(0, vec![pages(4, 262144, 262144, 0)], &[1, 2]);
    assert!(fit_instance_cell(&host, &mut inst(0, 1024, None, None, &[0]), None, 0).unwrap());
    assert!(!fit_instance_cell(&host, &mut inst(0, 4096, None, None, &[0]), None, 0).unwrap());
    assert!(!fit_instance_cell(&host, &mut inst(0, 1024, None, Some(CpuPolicy::Dedicated), &[0]), None, 0).unwrap());
}

/// `NUMATopologyTest.test_host_usage_contiguous_pages_compute`
#[test]
fn test_host_usage_contiguous_pages_compute() {
    let mut host = vec![cell(0, vec![pages(4, 262144, 32, 0), pages(2048, 512, 2, 0)], &[0, 1, 2, 3])];
    let mk = |m, ps| {
        let mut i = inst(0, m, Some(PageRequest::Size(ps)), None, &[0]);
        i.pagesize_kb = Some(ps as u64);
        i
    };
    add_usage(&mut host, &[mk(64, 4), mk(32, 4), mk(16, 2048)]).unwrap();
    assert_eq!(host[0].mempages[0].used, 24608);
    assert_eq!(host[0].mempages[1].used, 10);
}

// ---- Two nodes, 8 pCPUs each, 1024 × 2 MiB pages per node (research brief, section 4, [ran]) ----

fn two_nodes(reserved: i64) -> Vec<HostCell> {
    let nodes: Vec<Node> = (0..2)
        .map(|id| Node {
            id,
            mem_total_kb: 16 << 20,
            cpus: (id * 8..id * 8 + 8).collect(),
            pages: vec![KernelPages { size_kb: 2048, nr: 1024, free: 1024, surplus: 0 }],
            thread_siblings: BTreeMap::new(),
        })
        .collect();
    let mut r = String::new();
    if reserved > 0 {
        r = format!("reserved_huge_pages = node:0,size:2048,count:{reserved}\nreserved_huge_pages = node:1,size:2048,count:{reserved}\n");
    }
    let c = numa::config::parse_nova_conf(&r, "nova.conf").unwrap();
    nova_view(&nodes, &c.reserved, &all_cpus(&nodes)).unwrap()
}

fn flavor(memory_mb: i64) -> Flavor {
    Flavor::new(2, memory_mb).spec("hw:mem_page_size", "large").spec("hw:cpu_policy", "dedicated")
}

fn place(host: &[HostCell], f: &Flavor, pack: bool) -> Option<(u32, u64)> {
    let mut i = numa_get_constraints(f).unwrap().unwrap();
    fit_instance_to_host(host, &mut i, pack, None).unwrap().map(|c| (c[0].id, c[0].pagesize_kb.unwrap()))
}

#[test]
fn scenario_a_no_reservation() {
    for pack in [true, false] {
        assert_eq!(place(&two_nodes(0), &flavor(2048), pack), Some((0, 2048)));
    }
}

#[test]
fn scenario_b_reserved_512() {
    let h = two_nodes(512);
    assert_eq!(place(&h, &flavor(1024), false), Some((0, 2048)));
    assert_eq!(place(&h, &flavor(2048), false), None);
}

#[test]
fn scenario_c_spread_versus_pack() {
    for (pack, want) in [(false, vec![0, 1, 0, 1]), (true, vec![0, 0, 0, 0])] {
        // Continuing scenario B: 512 pages reserved per node for OVS.
        let mut h = two_nodes(512);
        let mut got = vec![];
        for _ in 0..4 {
            let mut i = numa_get_constraints(&flavor(256)).unwrap().unwrap();
            let placed = fit_instance_to_host(&h, &mut i, pack, None).unwrap().unwrap();
            got.push(placed[0].id);
            add_usage(&mut h, &placed).unwrap();
        }
        assert_eq!(got, want, "pack={pack}");
        let free: Vec<i64> = h.iter().map(|c| c.page(2048).unwrap().free()).collect();
        assert_eq!(free, if pack { vec![0, 512] } else { vec![256, 256] });
    }
}

/// nova writes the page size it picked into the request even when the cell then fails on
/// CPUs (research brief section 1.4): with pack, node0 (1 GiB pages, no free pCPU) is tried
/// first and poisons the request; node1 (2 MiB pages only) then cannot serve 1 GiB pages.
#[test]
fn scenario_d_pagesize_mutation_quirk() {
    let mk = || {
        let mut n0 = cell(0, vec![pages(4, 1 << 20, 0, 0), pages(1048576, 4, 0, 0)], &[0, 1]);
        n0.pinned_cpus = [0, 1].into();
        n0.memory = 8192;
        let mut n1 = cell(1, vec![pages(4, 1 << 20, 0, 0), pages(2048, 1024, 0, 0)], &[2, 3]);
        n1.memory = 8192;
        vec![n0, n1]
    };
    let f = flavor(1024);
    assert_eq!(place(&mk(), &f, true), None);
    assert_eq!(place(&mk(), &f, false), Some((1, 2048)));
}
