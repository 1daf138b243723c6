//! nova.conf and OVS-DPDK settings.
//!
//! `reserved_huge_pages` (`nova/conf/compute.py`, a `MultiOpt` of `types.Dict` in
//! `[DEFAULT]`; parsed by `hardware.py::numa_get_reserved_huge_pages`): one `node:N,size:S,count:C`
//! per line, repeated for more. Each line: split on `,`, each pair once on `:`, keys and values
//! stripped, a key twice is an error. `size` is `int()` KiB, else `string_to_bytes(IEC,
//! return_int=True) / 1024` (so `2MB` → 2048.0, `1GB` → 1048576.0, and `2Mb` → 256.0: bits);
//! node and count are `int()`. The same (node, size) twice: the last wins. Entries for nodes or
//! sizes the host lacks are ignored silently by nova (reported here as warnings).
//!
//! OVS (`vswitchd/vswitch.xml`): `other_config:dpdk-socket-mem` is a comma list of MB per NUMA
//! node in ascending order, missing trailing nodes 0; `dpdk-socket-limit` likewise, 0 = no limit.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;
use crate::units::string_to_bytes;

/// Reserved pages: node → [(size in KiB as nova computes it, count)].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reserved(pub BTreeMap<u32, Vec<(f64, i64)>>);

impl Reserved {
    /// The reservation nova applies to (node, size): sizes compare as nova's floats.
    pub fn get(&self, node: u32, size_kb: u64) -> i64 {
        self.0.get(&node).and_then(|v| v.iter().rev().find(|(s, _)| *s == size_kb as f64)).map(|(_, c)| *c).unwrap_or(0)
    }

    fn set(&mut self, node: u32, size: f64, count: i64) {
        let v = self.0.entry(node).or_default();
        v.retain(|(s, _)| *s != size);
        v.push((size, count));
    }
}

fn py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse().ok()
}

/// Parse one `reserved_huge_pages` value; `file`/`line` name it in errors. A malformed
/// dictionary is refused by oslo.config (`ConfigFileValueError`), missing keys and bad numbers
/// by nova (`InvalidReservedMemoryPagesOption`). A negative node is accepted, as nova accepts
/// it, and matches no cell.
pub fn parse_reserved_line(value: &str, file: &str, line: usize) -> Result<(i64, f64, i64), Error> {
    let oslo = |why: String| Error::ReservedHugePages { file: file.into(), line, value: value.into(), why, exception: "ConfigFileValueError" };
    let err = |why: String| Error::ReservedHugePages { file: file.into(), line, value: value.into(), why, exception: "InvalidReservedMemoryPagesOption" };
    let mut d: BTreeMap<String, String> = BTreeMap::new();
    for pair in value.trim().split(',') {
        let (k, v) = pair.split_once(':').ok_or_else(|| oslo(format!("{pair:?} is not key:value")))?;
        let k = k.trim().to_string();
        if d.insert(k.clone(), v.trim().to_string()).is_some() {
            return Err(oslo(format!("duplicate key {k}")));
        }
    }
    let get = |k: &str| d.get(k).ok_or_else(|| err(format!("missing {k}")));
    let node = py_int(get("node")?).ok_or_else(|| err("node is not an integer".into()))?;
    let size_s = get("size")?;
    let size = match py_int(size_s) {
        Some(n) => n as f64,
        None => string_to_bytes(size_s).map(|b| b.ceil() / 1024.0).ok_or_else(|| err(format!("size {size_s:?} is not KiB or an IEC size like 2MB, 1GB")))?,
    };
    let count = py_int(get("count")?).ok_or_else(|| err("count is not an integer".into()))?;
    Ok((node, size, count))
}

/// The settings of nova.conf this tool uses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NovaConf {
    pub reserved: Reserved,
    /// (line, value) of each `reserved_huge_pages`.
    pub reserved_lines: Vec<(usize, String)>,
    pub cpu_dedicated_set: Option<String>,
    pub cpu_shared_set: Option<String>,
    pub vcpu_pin_set: Option<String>,
    pub reserved_host_memory_mb: Option<i64>,
    /// `[DEFAULT] reserved_host_cpus` (0 when unset).
    pub reserved_host_cpus: i64,
    /// `[compute] packing_host_numa_cells_allocation_strategy`.
    pub pack: Option<bool>,
    /// `[DEFAULT] cpu_allocation_ratio`, `ram_allocation_ratio` and their `initial_*` defaults.
    pub cpu_allocation_ratio: Option<f64>,
    pub ram_allocation_ratio: Option<f64>,
    pub initial_cpu_allocation_ratio: Option<f64>,
    pub initial_ram_allocation_ratio: Option<f64>,
}

impl NovaConf {
    /// The limits nova's NUMATopologyFilter applies: the compute node's allocation ratios,
    /// which nova sets from `*_allocation_ratio`, else `initial_*_allocation_ratio` (4.0, 1.0).
    pub fn limits(&self) -> crate::fit::Limits {
        crate::fit::Limits {
            cpu_allocation_ratio: self.cpu_allocation_ratio.or(self.initial_cpu_allocation_ratio).unwrap_or(4.0),
            ram_allocation_ratio: self.ram_allocation_ratio.or(self.initial_ram_allocation_ratio).unwrap_or(1.0),
        }
    }

    pub fn cpu(&self) -> crate::cpu::CpuConfig {
        crate::cpu::CpuConfig {
            cpu_dedicated_set: self.cpu_dedicated_set.clone(),
            cpu_shared_set: self.cpu_shared_set.clone(),
            vcpu_pin_set: self.vcpu_pin_set.clone(),
            reserved_host_cpus: self.reserved_host_cpus,
        }
    }
}

/// Parse nova.conf (INI; `#`/`;` comments; repeated keys kept for multi-valued options).
pub fn parse_nova_conf(text: &str, file: &str) -> Result<NovaConf, Error> {
    let mut c = NovaConf::default();
    let mut section = String::from("DEFAULT");
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::Input { file: format!("{file}:{}", i + 1), why: format!("not key = value: {line:?}") });
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match (section.as_str(), k) {
            ("DEFAULT", "reserved_huge_pages") => {
                let (node, size, count) = parse_reserved_line(&v, file, i + 1)?;
                if let Ok(node) = u32::try_from(node) {
                    c.reserved.set(node, size, count);
                }
                c.reserved_lines.push((i + 1, v));
            }
            ("DEFAULT", "vcpu_pin_set") => c.vcpu_pin_set = Some(v),
            ("DEFAULT", "reserved_host_memory_mb") => {
                c.reserved_host_memory_mb =
                    Some(v.parse().map_err(|_| Error::Input { file: format!("{file}:{}", i + 1), why: "reserved_host_memory_mb is not an integer".into() })?)
            }
            ("DEFAULT", "reserved_host_cpus") => {
                c.reserved_host_cpus =
                    v.parse().map_err(|_| Error::Input { file: format!("{file}:{}", i + 1), why: "reserved_host_cpus is not an integer".into() })?
            }
            ("DEFAULT", "cpu_allocation_ratio" | "ram_allocation_ratio" | "initial_cpu_allocation_ratio" | "initial_ram_allocation_ratio") => {
                let r: f64 = v.parse().map_err(|_| Error::Input { file: format!("{file}:{}", i + 1), why: format!("{k} is not a number") })?;
                let slot = match k {
                    "cpu_allocation_ratio" => &mut c.cpu_allocation_ratio,
                    "ram_allocation_ratio" => &mut c.ram_allocation_ratio,
                    "initial_cpu_allocation_ratio" => &mut c.initial_cpu_allocation_ratio,
                    _ => &mut c.initial_ram_allocation_ratio,
                };
                *slot = Some(r);
            }
            ("compute", "cpu_dedicated_set") => c.cpu_dedicated_set = Some(v),
            ("compute", "cpu_shared_set") => c.cpu_shared_set = Some(v),
            ("compute", "packing_host_numa_cells_allocation_strategy") => {
                c.pack = Some(matches!(v.to_lowercase().as_str(), "true" | "t" | "1" | "yes" | "y" | "on"))
            }
            _ => {}
        }
    }
    Ok(c)
}

/// MB per node from a `dpdk-socket-mem`/`dpdk-socket-limit` value (`"1024,1024"`, quotes allowed).
pub fn parse_socket_list(v: &str) -> Result<Vec<u64>, String> {
    v.trim().trim_matches('"').split(',').map(|x| x.trim().parse::<u64>().map_err(|_| format!("invalid MB value {x:?} in {v:?}"))).collect()
}

/// MB per NUMA node, as OVS-DPDK's `dpdk-socket-mem` and `dpdk-socket-limit` list them.
pub type SocketMb = Vec<u64>;

/// `dpdk-socket-mem` and `dpdk-socket-limit` from `ovs-vsctl list Open_vSwitch` output.
pub fn parse_ovs_other_config(text: &str, file: &str) -> Result<(Option<SocketMb>, Option<SocketMb>), Error> {
    let Some(line) = text.lines().find(|l| l.trim_start().starts_with("other_config")) else {
        return Ok((None, None));
    };
    let get = |key: &str| -> Result<Option<Vec<u64>>, Error> {
        let Some(at) = line.find(&format!("{key}=")) else { return Ok(None) };
        let rest = &line[at + key.len() + 1..];
        let v = if let Some(r) = rest.strip_prefix('"') { r.split('"').next().unwrap_or("") } else { rest.split([',', '}']).next().unwrap_or("") };
        parse_socket_list(v).map(Some).map_err(|why| Error::Input { file: file.into(), why })
    };
    Ok((get("dpdk-socket-mem")?, get("dpdk-socket-limit")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nova `NUMATopologyTest.test_numa_get_reserved_huge_pages`.
    #[test]
    fn test_numa_get_reserved_huge_pages() {
        let conf = "[DEFAULT]\nreserved_huge_pages = node:3,size:2048,count:128\nreserved_huge_pages = node:3,size:1GB,count:4\n\
                    reserved_huge_pages = node:6,size:2MB,count:64\nreserved_huge_pages = node:9,size:1GB,count:1\n";
        let c = parse_nova_conf(conf, "nova.conf").unwrap();
        assert_eq!(c.reserved.get(3, 2048), 128);
        assert_eq!(c.reserved.get(3, 1048576), 4);
        assert_eq!(c.reserved.get(6, 2048), 64);
        assert_eq!(c.reserved.get(9, 1048576), 1);
        assert_eq!(parse_nova_conf("", "x").unwrap().reserved, Reserved::default());
    }

    /// nova `test_reserved_huge_pages_invalid_format` and `_invalid_value`.
    #[test]
    fn test_reserved_huge_pages_invalid() {
        let e = parse_nova_conf("reserved_huge_pages = node:0,size:2048\n", "nova.conf").unwrap_err();
        assert!(e.to_string().starts_with("nova.conf:1: invalid reserved_huge_pages"), "{e}");
        assert!(e.to_string().contains("missing count"), "{e}");
        let e = parse_nova_conf("[DEFAULT]\n\nreserved_huge_pages = 0:foo:bar\n", "nova.conf").unwrap_err();
        assert!(e.to_string().starts_with("nova.conf:3:"), "{e}");
        let dup = parse_nova_conf("reserved_huge_pages = node:0,node:1,size:2048,count:1\n", "n").unwrap_err();
        assert!(dup.to_string().ends_with("(nova: ConfigFileValueError)"), "oslo.config refuses a duplicate key: {dup}");
        let missing = parse_nova_conf("reserved_huge_pages = node:0,size:2048\n", "n").unwrap_err();
        assert!(missing.to_string().ends_with("(nova: InvalidReservedMemoryPagesOption)"), "{missing}");
        let negative = parse_nova_conf("reserved_huge_pages = node:-1,size:2048,count:1\n", "n").unwrap();
        assert_eq!(negative.reserved, Reserved::default(), "nova accepts a negative node, which matches no cell");
    }

    #[test]
    fn reserved_size_forms_and_last_wins() {
        assert_eq!(parse_reserved_line("node:0,size:2MiB,count:1", "f", 1).unwrap().1, 2048.0);
        assert_eq!(parse_reserved_line("node:0,size:2Mb,count:1", "f", 1).unwrap().1, 256.0, "bits, as nova");
        assert!(parse_reserved_line("node:0,size:2M,count:1", "f", 1).is_err());
        assert_eq!(parse_reserved_line("node:0,size:2048,count:-5", "f", 1).unwrap().2, -5);
        let c = parse_nova_conf("reserved_huge_pages=node:0,size:2048,count:5\nreserved_huge_pages=node:0,size:2MB,count:100\n", "f").unwrap();
        assert_eq!(c.reserved.get(0, 2048), 100);
    }

    #[test]
    fn ovs_other_config() {
        let out = "_uuid               : 1f2e\nother_config        : {dpdk-init=\"true\", dpdk-socket-limit=\"2048,2048\", dpdk-socket-mem=\"512,512\", pmd-cpu-mask=\"0x6\"}\n";
        assert_eq!(parse_ovs_other_config(out, "ovs").unwrap(), (Some(vec![512, 512]), Some(vec![2048, 2048])));
        assert!(parse_ovs_other_config("other_config : {dpdk-socket-mem=\"a,1\"}", "ovs").is_err());
    }
}
