//! Instances already placed, read from libvirt domain XML (`virsh dumpxml`), as nova writes it
//! (`nova/virt/libvirt/driver.py::_get_guest_numa_config`, `_get_memory_backing_hugepages_support`):
//!
//! ```xml
//! <domain><vcpu>2</vcpu>
//!   <cputune><vcpupin vcpu="0" cpuset="3"/>...</cputune>
//!   <numatune><memory mode="strict" nodeset="0"/><memnode cellid="0" mode="strict" nodeset="0"/></numatune>
//!   <memoryBacking><hugepages><page size="2048" unit="KiB" nodeset="0"/></hugepages></memoryBacking>
//!   <cpu><numa><cell id="0" cpus="0-1" memory="524288" unit="KiB"/></numa></cpu>
//! </domain>
//! ```
//!
//! Each guest cell becomes an instance cell on the host node its `memnode` names, with the page
//! size of the `page` element whose `nodeset` holds the guest cell (none: small pages), and the
//! host CPUs its vCPUs are pinned to: vCPUs pinned to one pCPU are dedicated, the others shared
//! (`hw:cpu_policy=mixed` when both). An `emulatorpin` on a single pCPU no vCPU uses is the pCPU
//! nova reserved for isolated emulator threads. The thread policy is not in the XML: `isolate`
//! guests placed on SMT hosts count one thread per core here, where nova counts the core.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
use crate::host::parse_cpu_list;
use crate::model::{CpuPolicy, InstanceCell};

fn kib(value: &str, unit: Option<&str>) -> Option<i64> {
    let v: i64 = value.trim().parse().ok()?;
    let mul = match unit.unwrap_or("KiB") {
        "b" | "bytes" => return Some(v / 1024),
        "KiB" | "k" | "K" => 1,
        "MiB" | "M" => 1024,
        "GiB" | "G" => 1024 * 1024,
        _ => return None,
    };
    // A size beyond i64 KiB (from a damaged or hostile domain XML) is no size.
    v.checked_mul(mul)
}

/// The instance cells of one domain, placed on host nodes. A domain without `<numatune>`
/// memnodes has no NUMA placement: an empty list.
pub fn parse_domain(xml: &str, file: &str) -> Result<Vec<InstanceCell>, Error> {
    let bad = |why: String| Error::Input { file: file.to_string(), why };
    let doc = roxmltree::Document::parse(xml).map_err(|e| bad(format!("not XML: {e}")))?;
    let root = doc.root_element();
    let find = |name: &'static str| root.descendants().filter(move |n| n.has_tag_name(name));
    let mut memnode: BTreeMap<u32, u32> = BTreeMap::new();
    for m in find("memnode") {
        let cell = m.attribute("cellid").and_then(|v| v.parse().ok()).ok_or_else(|| bad("memnode without a numeric cellid".into()))?;
        let nodes = parse_cpu_list(m.attribute("nodeset").unwrap_or("")).map_err(bad)?;
        let node = *nodes.iter().next().ok_or_else(|| bad(format!("memnode {cell} has an empty nodeset")))?;
        memnode.insert(cell, node);
    }
    let mut page_of: BTreeMap<u32, u64> = BTreeMap::new();
    for p in find("page") {
        let size = p.attribute("size").and_then(|s| kib(s, p.attribute("unit"))).ok_or_else(|| bad("hugepage page without a valid size".into()))?;
        match p.attribute("nodeset") {
            Some(ns) => {
                for c in parse_cpu_list(ns).map_err(bad)? {
                    page_of.insert(c, size as u64);
                }
            }
            None => {
                for c in memnode.keys() {
                    page_of.insert(*c, size as u64);
                }
            }
        }
    }
    let mut pins: BTreeMap<u32, u32> = BTreeMap::new();
    for v in find("vcpupin") {
        let vcpu = v.attribute("vcpu").and_then(|x| x.parse().ok()).ok_or_else(|| bad("vcpupin without a numeric vcpu".into()))?;
        let cpus = parse_cpu_list(v.attribute("cpuset").unwrap_or("")).map_err(bad)?;
        if cpus.len() == 1 {
            pins.insert(vcpu, *cpus.iter().next().unwrap());
        }
    }
    let mut out = Vec::new();
    for c in root.descendants().filter(|n| n.has_tag_name("cell") && n.parent().is_some_and(|p| p.has_tag_name("numa"))) {
        let id: u32 = c.attribute("id").and_then(|v| v.parse().ok()).ok_or_else(|| bad("guest NUMA cell without a numeric id".into()))?;
        let Some(&node) = memnode.get(&id) else { continue };
        let memory_kib = c.attribute("memory").and_then(|m| kib(m, c.attribute("unit"))).ok_or_else(|| bad(format!("guest cell {id} has no valid memory")))?;
        let vcpus: BTreeSet<u32> = parse_cpu_list(c.attribute("cpus").unwrap_or("")).map_err(bad)?;
        let pinned: BTreeMap<u32, u32> = vcpus.iter().filter_map(|v| pins.get(v).map(|p| (*v, *p))).collect();
        let shared: BTreeSet<u32> = vcpus.iter().filter(|v| !pinned.contains_key(v)).copied().collect();
        let policy = match (pinned.is_empty(), shared.is_empty()) {
            (true, _) => None,
            (false, true) => Some(CpuPolicy::Dedicated),
            (false, false) => Some(CpuPolicy::Mixed),
        };
        out.push(InstanceCell {
            guest_cell: id,
            id: node,
            cpuset: shared,
            pcpuset: pinned.keys().copied().collect(),
            memory: memory_kib / 1024,
            pagesize: None,
            pagesize_kb: page_of.get(&id).copied(),
            cpu_policy: policy,
            cpu_thread_policy: None,
            cpu_pinning: pinned,
            cpuset_reserved: None,
        });
    }
    // hw:emulator_threads_policy=isolate: nova pins the emulator threads to the one pCPU it
    // reserved on the first guest cell, a CPU no vCPU is pinned to.
    if let Some(e) = find("emulatorpin").next() {
        let cpus = parse_cpu_list(e.attribute("cpuset").unwrap_or("")).map_err(bad)?;
        let vcpu_pcpus: BTreeSet<u32> = pins.values().copied().collect();
        if let (1, Some(first)) = (cpus.len(), out.iter_mut().find(|c| c.guest_cell == 0 && c.pinned())) {
            if cpus.is_disjoint(&vcpu_pcpus) {
                first.cpuset_reserved = Some(cpus);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nova_domain_xml() {
        let xml = r#"<domain type="kvm"><name>instance-0001</name><vcpu>2</vcpu>
          <cputune><vcpupin vcpu="0" cpuset="9"/><vcpupin vcpu="1" cpuset="10"/></cputune>
          <numatune><memory mode="strict" nodeset="1"/><memnode cellid="0" mode="strict" nodeset="1"/></numatune>
          <memoryBacking><hugepages><page size="2048" unit="KiB" nodeset="0"/></hugepages></memoryBacking>
          <cpu><numa><cell id="0" cpus="0-1" memory="1048576" unit="KiB"/></numa></cpu></domain>"#;
        let cells = super::parse_domain(xml, "d.xml").unwrap();
        assert_eq!(cells.len(), 1);
        let c = &cells[0];
        assert_eq!((c.id, c.memory, c.pagesize_kb), (1, 1024, Some(2048)));
        assert_eq!(c.cpu_pinning.values().copied().collect::<Vec<_>>(), vec![9, 10]);
        let isolated = xml.replace("</cputune>", "<emulatorpin cpuset=\"11\"/></cputune>");
        let cells = super::parse_domain(&isolated, "d.xml").unwrap();
        assert_eq!(cells[0].cpuset_reserved, Some([11].into()));
        let mixed = xml.replace(r#"<vcpupin vcpu="1" cpuset="10"/>"#, r#"<vcpupin vcpu="1" cpuset="0-7"/>"#);
        let cells = super::parse_domain(&mixed, "d.xml").unwrap();
        assert_eq!((cells[0].cpu_policy, cells[0].cpuset.len(), cells[0].pcpuset.len()), (Some(super::CpuPolicy::Mixed), 1, 1));
        assert!(super::parse_domain("<domain>", "bad.xml").unwrap_err().to_string().starts_with("bad.xml: not XML"));
    }

    /// Found while fuzzing (`fuzz/fuzz_targets/libvirt_domain.rs`, the input below makes that
    /// target panic): a cell's memory of 9e12 GiB overflowed the KiB product.
    #[test]
    fn sizes_beyond_i64_kib_are_refused() {
        let xml = "<domain><numatune><memnode cellid='0' nodeset='0'/></numatune><cpu><numa>\
                   <cell id='0' cpus='0' memory='9000000000000' unit='GiB'/></numa></cpu></domain>";
        let e = super::parse_domain(xml, "d.xml").unwrap_err();
        assert!(e.to_string().contains("guest cell 0 has no valid memory"), "{e}");
        assert_eq!(super::kib("8796093022207", Some("GiB")), Some(8796093022207 * 1024 * 1024));
        assert_eq!(super::kib("8796093022208", Some("GiB")), None);
    }
}
