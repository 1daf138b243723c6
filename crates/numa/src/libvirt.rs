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
//! host CPUs its vCPUs are pinned to.

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
    Some(v * mul)
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
        let dedicated = !vcpus.is_empty() && pinned.len() == vcpus.len();
        out.push(InstanceCell {
            guest_cell: id,
            id: node,
            cpuset: if dedicated { BTreeSet::new() } else { vcpus.clone() },
            pcpuset: if dedicated { vcpus } else { BTreeSet::new() },
            memory: memory_kib / 1024,
            pagesize: None,
            pagesize_kb: page_of.get(&id).copied(),
            cpu_policy: dedicated.then_some(CpuPolicy::Dedicated),
            cpu_thread_policy: None,
            cpu_pinning: pinned,
            cpuset_reserved: None,
        });
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
        assert!(super::parse_domain("<domain>", "bad.xml").unwrap_err().to_string().starts_with("bad.xml: not XML"));
    }
}
