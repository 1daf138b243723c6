//! A flavor's and an image's NUMA request as nova reads them: `nova/virt/hardware.py`
//! `numa_get_constraints` and the helpers it calls, in the same order, raising the same
//! exceptions (their class names are carried in [`crate::Error::Nova`]).
//!
//! Read: `hw:cpu_policy`, `hw:cpu_thread_policy`, `hw:cpu_realtime` + `hw:cpu_realtime_mask`,
//! `hw:cpu_dedicated_mask`, `hw:emulator_threads_policy`, `resources[N]:VCPU|PCPU`,
//! `trait[N]:HW_CPU_HYPERTHREADING`, `hw:numa_nodes`, `hw:mem_page_size`, `hw:numa_cpus.N` and
//! `hw:numa_mem.N`; image properties `hw_cpu_policy`, `hw_cpu_thread_policy`,
//! `hw_cpu_realtime_mask`, `hw_numa_nodes`, `hw_mem_page_size`.
//! Not read: vPMEM (`hw:pmem`), memory locking and encryption (`hw:locked_memory`,
//! `hw:mem_encryption`), image `hw_numa_cpus`/`hw_numa_mem` lists and `traits_required`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cpu::parse_cpu_spec;
use crate::model::{CpuPolicy, InstanceCell, InstanceTopology, ThreadPolicy};
use crate::units::{string_to_bytes, PageRequest};
use crate::Error;

/// A flavor (vCPUs, RAM, extra specs) and the image properties that go with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flavor {
    pub name: String,
    pub vcpus: u32,
    pub memory_mb: i64,
    pub extra_specs: BTreeMap<String, String>,
    pub image_properties: BTreeMap<String, String>,
}

impl Flavor {
    pub fn new(vcpus: u32, memory_mb: i64) -> Flavor {
        Flavor { name: format!("{vcpus} vCPU / {memory_mb} MiB"), vcpus, memory_mb, ..Default::default() }
    }

    pub fn spec(mut self, key: &str, value: &str) -> Flavor {
        self.extra_specs.insert(key.into(), value.into());
        self
    }

    fn get(&self, key: &str) -> (Option<&str>, Option<&str>) {
        (self.extra_specs.get(&format!("hw:{key}")).map(String::as_str), self.image_properties.get(&format!("hw_{key}")).map(String::as_str))
    }
}

fn reject(exception: &'static str, message: impl Into<String>) -> Error {
    Error::Nova { exception, message: message.into() }
}

/// `oslo_utils.strutils.bool_from_string` (not strict).
fn bool_from_string(v: &str) -> bool {
    matches!(v.trim().to_lowercase().as_str(), "1" | "t" | "true" | "on" | "y" | "yes")
}

/// `strutils.is_int_like`: `str(int(v)) == v`.
fn is_int_like(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0')) && v != "-0"
}

/// A policy value from `source` (flavor or image): absent or empty is None, else one of
/// `choices` or nova's `exception`.
fn policy_value<T>(
    v: Option<&str>,
    source: &str,
    parse: fn(&str) -> Option<T>,
    exception: &'static str,
    what: &str,
    choices: &str,
) -> Result<Option<T>, Error> {
    match v.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).ok_or_else(|| reject(exception, format!("{what} {v:?} in {source} is not one of {choices}"))),
    }
}

fn cpu_policy(f: &Flavor) -> Result<Option<CpuPolicy>, Error> {
    let (fl, im) = f.get("cpu_policy");
    let parse = |v, source| policy_value(v, source, CpuPolicy::parse, "InvalidCPUAllocationPolicy", "CPU policy", "dedicated, shared, mixed");
    let (fl, im) = (parse(fl, "flavor extra specs")?, parse(im, "image properties")?);
    let forbidden = || reject("ImageCPUPinningForbidden", "the image's hw_cpu_policy conflicts with the flavor's hw:cpu_policy");
    Ok(match fl {
        Some(CpuPolicy::Dedicated) => fl,
        Some(CpuPolicy::Mixed) if im == Some(CpuPolicy::Dedicated) => return Err(forbidden()),
        Some(CpuPolicy::Mixed) => fl,
        Some(CpuPolicy::Shared) if matches!(im, Some(CpuPolicy::Mixed | CpuPolicy::Dedicated)) => return Err(forbidden()),
        Some(CpuPolicy::Shared) => fl,
        None => im,
    })
}

fn thread_policy(f: &Flavor) -> Result<Option<ThreadPolicy>, Error> {
    let (fl, im) = f.get("cpu_thread_policy");
    let parse = |v, source| policy_value(v, source, ThreadPolicy::parse, "InvalidCPUThreadAllocationPolicy", "CPU thread policy", "prefer, isolate, require");
    let (fl, im) = (parse(fl, "flavor extra specs")?, parse(im, "image properties")?);
    match fl {
        None | Some(ThreadPolicy::Prefer) => Ok(fl.or(im)),
        Some(p) if im.is_some_and(|i| i != p) => {
            Err(reject("ImageCPUThreadPolicyForbidden", "the image's hw_cpu_thread_policy conflicts with the flavor's hw:cpu_thread_policy"))
        }
        _ => Ok(fl),
    }
}

fn emulator_isolate(f: &Flavor) -> Result<Option<bool>, Error> {
    match f.extra_specs.get("hw:emulator_threads_policy").map(String::as_str).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some("share") => Ok(Some(false)),
        Some("isolate") => Ok(Some(true)),
        Some(v) => Err(reject("InvalidEmulatorThreadsPolicy", format!("emulator threads policy {v:?} is not one of share, isolate"))),
    }
}

fn spec_set(spec: &str) -> Result<BTreeSet<u32>, Error> {
    Ok(parse_cpu_spec(spec)?.sorted())
}

/// A vCPU mask as nova reads `hw:cpu_realtime_mask` and `hw:cpu_dedicated_mask`: one starting
/// with `^` excludes from all the flavor's vCPUs (`0-{vcpus-1},{mask}`).
fn vcpu_mask(f: &Flavor, mask: &str) -> Result<BTreeSet<u32>, Error> {
    if mask.trim().starts_with('^') {
        spec_set(&format!("0-{},{mask}", f.vcpus as i64 - 1))
    } else {
        spec_set(mask)
    }
}

/// `get_realtime_cpu_constraint`.
fn realtime_cpus(f: &Flavor) -> Result<Option<BTreeSet<u32>>, Error> {
    if !f.extra_specs.get("hw:cpu_realtime").is_some_and(|v| bool_from_string(v)) {
        return Ok(None);
    }
    let (fl, im) = f.get("cpu_realtime_mask");
    let mask = im.filter(|m| !m.is_empty()).or(fl.filter(|m| !m.is_empty()));
    let all: BTreeSet<u32> = (0..f.vcpus).collect();
    let rt = match mask {
        Some(m) => vcpu_mask(f, m)?,
        None => all.clone(),
    };
    let bad = |m: &str| reject("RealtimeMaskNotFoundOrInvalid", m.to_string());
    if rt.is_empty() {
        return Err(bad("the realtime CPU mask leaves no realtime vCPU"));
    }
    if all == rt && emulator_isolate(f)?.is_none() {
        return Err(bad("hw:cpu_realtime needs hw:cpu_realtime_mask excluding at least one vCPU, or hw:emulator_threads_policy"));
    }
    if !rt.is_subset(&all) {
        return Err(bad("the realtime CPU mask names vCPUs the flavor does not have"));
    }
    Ok(Some(rt))
}

/// `get_dedicated_cpu_constraint`.
fn dedicated_mask(f: &Flavor) -> Result<Option<BTreeSet<u32>>, Error> {
    let Some(mask) = f.extra_specs.get("hw:cpu_dedicated_mask").filter(|m| !m.is_empty()) else { return Ok(None) };
    let p = vcpu_mask(f, mask)?;
    let all: BTreeSet<u32> = (0..f.vcpus).collect();
    let shared: BTreeSet<u32> = all.difference(&p).copied().collect();
    if p.is_empty() || shared.is_empty() || !p.is_subset(&all) {
        return Err(reject("InvalidMixedInstanceDedicatedMask", format!("hw:cpu_dedicated_mask {mask:?} must name some, but not all, of the flavor's vCPUs")));
    }
    Ok(Some(p))
}

/// What follows `{prefix}[N]:` in an extra spec key (N a request group: digits without a
/// leading 0), as nova's `re.match('{prefix}([1-9][0-9]*)?:…', key)` reads it.
fn after_group<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?;
    let colon = rest.find(':')?;
    let group = &rest[..colon];
    (group.is_empty() || (!group.starts_with('0') && group.bytes().all(|b| b.is_ascii_digit()))).then(|| &rest[colon + 1..])
}

fn resource_sum(f: &Flavor, class: &str) -> i64 {
    f.extra_specs
        .iter()
        .filter(|(k, _)| after_group(k, "resources").is_some_and(|r| r.starts_with(class)))
        .filter_map(|(_, v)| v.trim().parse::<i64>().ok())
        .sum()
}

fn hyperthreading_trait(f: &Flavor) -> Option<&str> {
    f.extra_specs.iter().find_map(|(k, v)| after_group(k, "trait").is_some_and(|r| r.starts_with("HW_CPU_HYPERTHREADING")).then_some(v.as_str()))
}

/// `_get_numa_node_count_constraint`: the flavor's string, else the image's integer; both set
/// (truthy) is forbidden.
fn node_count(f: &Flavor) -> Result<Option<u32>, Error> {
    let (fl, im) = f.get("numa_nodes");
    let fl = fl.filter(|v| !v.is_empty());
    let im = im.filter(|v| !v.is_empty());
    let invalid = |v: &str| reject("InvalidNUMANodesNumber", format!("hw:numa_nodes {v:?} is not a positive integer"));
    let im_value = im.map(|v| v.trim().parse::<i64>().map_err(|_| invalid(v))).transpose()?;
    if fl.is_some() && im_value.is_some_and(|n| n != 0) {
        return Err(reject("ImageNUMATopologyForbidden", "hw_numa_nodes is set by both the flavor and the image"));
    }
    match (fl, im_value) {
        (Some(v), _) => match v.parse::<i64>() {
            Ok(n) if is_int_like(v) && n >= 1 => Ok(Some(n as u32)),
            _ => Err(invalid(v)),
        },
        (None, Some(n)) if n >= 1 => Ok(Some(n as u32)),
        (None, Some(n)) => Err(invalid(&n.to_string())),
        (None, None) => Ok(None),
    }
}

/// A page-size value as `check_and_return_pages_size` returns it: `Some(kib)` for sizes
/// (`string_to_bytes(v, return_int=True) / 1024`, a float), or the small/large/any markers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PageValue {
    Marker(PageRequest),
    Kib(f64),
}

fn page_value(v: &str) -> Result<PageValue, Error> {
    Ok(match v {
        "any" => PageValue::Marker(PageRequest::Any),
        "large" => PageValue::Marker(PageRequest::Large),
        "small" => PageValue::Marker(PageRequest::Small),
        d if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => PageValue::Kib(d.parse::<f64>().unwrap_or(f64::INFINITY)),
        other => match string_to_bytes(other) {
            Some(b) => PageValue::Kib(b.ceil() / 1024.0),
            None => return Err(reject("MemoryPageSizeInvalid", format!("invalid memory page size {other:?}"))),
        },
    })
}

/// `_get_numa_pagesize_constraint`.
fn page_size(f: &Flavor) -> Result<Option<PageValue>, Error> {
    let (fl, im) = f.get("mem_page_size");
    let (fl, im) = (fl.filter(|v| !v.is_empty()), im.filter(|v| !v.is_empty()));
    let forbidden = |p: &str, against: &str| reject("MemoryPageSizeForbidden", format!("page size {p} is forbidden against {against:?}"));
    let Some(fl) = fl else {
        return match im {
            Some(i) => Err(forbidden(i, "<empty>")),
            None => Ok(None),
        };
    };
    let v = page_value(fl)?;
    match im {
        Some(i) if matches!(v, PageValue::Marker(PageRequest::Any | PageRequest::Large)) => page_value(i).map(Some),
        Some(i) => Err(forbidden(i, fl)),
        None => Ok(Some(v)),
    }
}

fn truthy(p: &Option<PageValue>) -> bool {
    match p {
        None => false,
        Some(PageValue::Kib(k)) => *k != 0.0,
        Some(PageValue::Marker(_)) => true,
    }
}

/// The value an `InstanceNUMACell.pagesize` integer field holds once assigned.
fn cell_pagesize(p: &Option<PageValue>) -> Option<PageRequest> {
    match p {
        None => None,
        Some(PageValue::Marker(m)) => Some(*m),
        Some(PageValue::Kib(k)) => match k.trunc() as i64 {
            0 => None,
            -1 => Some(PageRequest::Small),
            -2 => Some(PageRequest::Large),
            -3 => Some(PageRequest::Any),
            n => Some(PageRequest::Size(n)),
        },
    }
}

fn numa_list(f: &Flavor, key: &str) -> Vec<String> {
    (0..128).map_while(|i| f.extra_specs.get(&format!("{key}.{i}")).cloned()).collect()
}

/// `numa_get_constraints`: the instance NUMA topology the request asks for, None when it asks
/// for none, or nova's rejection.
pub fn numa_get_constraints(f: &Flavor) -> Result<Option<InstanceTopology>, Error> {
    let mut policy = cpu_policy(f)?;
    let mut threads = thread_policy(f)?;
    let realtime = realtime_cpus(f)?;
    let mut dedicated = dedicated_mask(f)?;
    let emulator = emulator_isolate(f)?;
    let (req_vcpu, req_pcpu) = (resource_sum(f, "VCPU"), resource_sum(f, "PCPU"));
    let invalid = |m: &str| reject("InvalidRequest", m.to_string());
    if policy.is_some() && (req_vcpu != 0 || req_pcpu != 0) {
        return Err(invalid("resources:VCPU or resources:PCPU cannot be combined with hw:cpu_policy"));
    }
    if req_vcpu != 0 && req_pcpu != 0 {
        return Err(invalid("resources:VCPU and resources:PCPU cannot both be given"));
    }
    if req_pcpu != 0 {
        if emulator == Some(true) && f.vcpus as i64 + 1 != req_pcpu {
            return Err(invalid("hw:emulator_threads_policy=isolate needs exactly vcpus + 1 PCPUs in resources:PCPU"));
        }
        if emulator != Some(true) && f.vcpus as i64 != req_pcpu {
            return Err(invalid("resources:PCPU must equal the flavor's vCPUs"));
        }
        policy = Some(CpuPolicy::Dedicated);
    }
    if req_vcpu != 0 {
        policy = Some(CpuPolicy::Shared);
    }
    let trait_ = hyperthreading_trait(f);
    if threads.is_some() && trait_.is_some() {
        return Err(invalid("trait:HW_CPU_HYPERTHREADING cannot be combined with hw:cpu_thread_policy"));
    }
    match trait_ {
        Some("forbidden") => threads = Some(ThreadPolicy::Isolate),
        Some("required") => threads = Some(ThreadPolicy::Require),
        _ => {}
    }
    match policy {
        None | Some(CpuPolicy::Shared) => {
            if threads.is_some() {
                return Err(reject("CPUThreadPolicyConfigurationInvalid", "hw:cpu_thread_policy needs hw:cpu_policy=dedicated or mixed"));
            }
            if emulator == Some(true) {
                return Err(reject("BadRequirementEmulatorThreadsPolicy", "hw:emulator_threads_policy=isolate needs hw:cpu_policy=dedicated or mixed"));
            }
            if dedicated.is_some() {
                return Err(reject("RequiredMixedInstancePolicy", "hw:cpu_dedicated_mask needs hw:cpu_policy=mixed"));
            }
            if realtime.is_some() {
                return Err(reject("RealtimeConfigurationInvalid", "hw:cpu_realtime needs hw:cpu_policy=dedicated or mixed"));
            }
        }
        Some(CpuPolicy::Dedicated) => {
            if dedicated.is_some() {
                return Err(reject("RequiredMixedInstancePolicy", "hw:cpu_dedicated_mask needs hw:cpu_policy=mixed"));
            }
        }
        Some(CpuPolicy::Mixed) => {
            if realtime.is_some() == dedicated.is_some() {
                return Err(reject(
                    "RequiredMixedOrRealtimeCPUMask",
                    "hw:cpu_policy=mixed needs exactly one of hw:cpu_dedicated_mask and hw:cpu_realtime_mask",
                ));
            }
            dedicated = dedicated.or(realtime);
        }
    }
    let nodes = node_count(f)?;
    let pagesize = page_size(f)?;
    let all: BTreeSet<u32> = (0..f.vcpus).collect();
    let pcpus = if policy == Some(CpuPolicy::Dedicated) { all.clone() } else { dedicated.unwrap_or_default() };
    if !(nodes.is_some() || truthy(&pagesize) || matches!(policy, Some(CpuPolicy::Dedicated | CpuPolicy::Mixed))) {
        return Ok(None);
    }
    let vcpus: BTreeSet<u32> = all.difference(&pcpus).copied().collect();
    let nodes = nodes.unwrap_or(1);
    let cpu_list = numa_list(f, "hw:numa_cpus");
    let mem_list = numa_list(f, "hw:numa_mem");
    let mut cells = Vec::new();
    let cell = |id: u32, cpus: &BTreeSet<u32>, memory: i64| InstanceCell {
        guest_cell: id,
        id,
        cpuset: cpus & &vcpus,
        pcpuset: cpus & &pcpus,
        memory,
        pagesize: cell_pagesize(&pagesize),
        pagesize_kb: None,
        cpu_policy: policy,
        cpu_thread_policy: threads,
        cpu_pinning: BTreeMap::new(),
        cpuset_reserved: None,
    };
    match (cpu_list.is_empty(), mem_list.is_empty()) {
        (true, true) => {
            if !f.vcpus.is_multiple_of(nodes) || f.memory_mb % nodes as i64 != 0 {
                return Err(reject(
                    "ImageNUMATopologyAsymmetric",
                    format!("{} vCPUs and {} MiB cannot be split evenly over {nodes} NUMA nodes", f.vcpus, f.memory_mb),
                ));
            }
            let k = f.vcpus / nodes;
            for n in 0..nodes {
                cells.push(cell(n, &(n * k..(n + 1) * k).collect(), f.memory_mb / nodes as i64));
            }
        }
        (false, false) => {
            if cpu_list.len() != nodes as usize || mem_list.len() != nodes as usize {
                return Err(reject("ImageNUMATopologyIncomplete", "hw:numa_cpus.N and hw:numa_mem.N must be given for every NUMA node"));
            }
            let mut avail = all.clone();
            let mut total = 0i64;
            for n in 0..nodes as usize {
                let mem: i64 = mem_list[n].trim().parse().map_err(|_| Error::Instance(format!("hw:numa_mem.{n} {:?} is not an integer", mem_list[n])))?;
                let cpus = spec_set(&cpu_list[n])?;
                for &c in &cpus {
                    if c as i64 > f.vcpus as i64 - 1 {
                        return Err(reject("ImageNUMATopologyCPUOutOfRange", format!("vCPU {c} in hw:numa_cpus.{n} is out of range 0-{}", f.vcpus as i64 - 1)));
                    }
                    if !avail.remove(&c) {
                        return Err(reject("ImageNUMATopologyCPUDuplicates", format!("vCPU {c} is assigned to more than one NUMA node")));
                    }
                }
                cells.push(cell(n as u32, &cpus, mem));
                total += mem;
            }
            if !avail.is_empty() {
                return Err(reject("ImageNUMATopologyCPUsUnassigned", format!("vCPUs {avail:?} are not assigned to any NUMA node")));
            }
            if total != f.memory_mb {
                return Err(reject("ImageNUMATopologyMemoryOutOfRange", format!("hw:numa_mem.N add up to {total} MiB, the flavor has {}", f.memory_mb)));
            }
        }
        _ => return Err(reject("ImageNUMATopologyIncomplete", "hw:numa_cpus.N and hw:numa_mem.N must be given together")),
    }
    Ok(Some(InstanceTopology { cells, emulator_threads_isolated: emulator == Some(true) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_groups_as_nova_matches_them() {
        assert_eq!(after_group("resources:PCPU", "resources"), Some("PCPU"));
        assert_eq!(after_group("resources12:VCPU", "resources"), Some("VCPU"));
        assert_eq!(after_group("resources01:PCPU", "resources"), None, "a group never starts with 0");
        assert_eq!(after_group("resourcesx:PCPU", "resources"), None);
        assert_eq!(after_group("trait:HW_CPU_HYPERTHREADING", "trait"), Some("HW_CPU_HYPERTHREADING"));
        let pcpu = numa_get_constraints(&Flavor::new(2, 1024).spec("resources:PCPU", "2")).unwrap().unwrap();
        assert_eq!(pcpu.cells[0].cpu_policy, Some(CpuPolicy::Dedicated));
        let forbidden = Flavor::new(2, 1024).spec("resources:PCPU", "2").spec("trait:HW_CPU_HYPERTHREADING", "forbidden");
        assert_eq!(numa_get_constraints(&forbidden).unwrap().unwrap().cells[0].cpu_thread_policy, Some(ThreadPolicy::Isolate));
    }

    #[test]
    fn masks_with_a_caret_exclude_from_all_vcpus() {
        let mixed = Flavor::new(4, 1024).spec("hw:cpu_policy", "mixed").spec("hw:cpu_dedicated_mask", "^0-1");
        let t = numa_get_constraints(&mixed).unwrap().unwrap();
        assert_eq!((t.cells[0].cpuset.clone(), t.cells[0].pcpuset.clone()), ([0, 1].into(), [2, 3].into()));
        let rt = mixed.clone().spec("hw:cpu_dedicated_mask", "").spec("hw:cpu_realtime", "yes").spec("hw:cpu_realtime_mask", "^0");
        assert_eq!(numa_get_constraints(&rt).unwrap().unwrap().cells[0].pcpuset, [1, 2, 3].into());
        let e = numa_get_constraints(&Flavor::new(2, 1024).spec("hw:cpu_policy", "exclusive")).unwrap_err();
        assert!(e.to_string().contains("(nova: InvalidCPUAllocationPolicy)") && e.to_string().contains("flavor extra specs"), "{e}");
    }
}
