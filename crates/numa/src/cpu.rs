//! Host CPUs as nova's libvirt driver sees them: CPU set specifications (`hardware.py::
//! parse_cpu_spec`), thread siblings and online CPUs from sysfs, and the CPU sets nova derives
//! from `[compute] cpu_dedicated_set`, `[compute] cpu_shared_set` and `vcpu_pin_set`
//! (`driver.py::_check_cpu_set_configuration`, `_get_vcpu_available`, `_get_pcpu_available`),
//! refusing what nova-compute refuses, with the exception it raises.
//!
//! Sets are [`PySet`]s built by the same operations as nova builds them, because their
//! iteration order decides the pinning (see [`crate::pyset`]).

use std::collections::BTreeSet;
use std::path::Path;

use crate::pyset::PySet;
use crate::Error;

fn invalid(message: String) -> Error {
    Error::Nova { exception: "Invalid", message }
}

/// The largest CPU number a CPU list may hold. Kernels run at most 8192 CPUs (the largest
/// `CONFIG_NR_CPUS`), so a larger number in sysfs, nova.conf or a domain's XML is damage; and
/// without a bound one range (`0-4294967295`) makes a set of four billion CPUs.
pub const MAX_CPU: u32 = 65_535;

/// The most CPUs one list may name, counting a CPU again each time a range or entry repeats
/// it: a list of a few thousand repeated full ranges is as costly as a huge one.
pub const MAX_LISTED: u64 = 4 * (MAX_CPU as u64 + 1);

/// Counts `n` more CPUs named by a list; the reason to refuse it once it names too many.
fn count_listed(listed: &mut u64, n: u64) -> Result<(), String> {
    *listed += n;
    if *listed > MAX_LISTED {
        return Err(format!("the list names more than {MAX_LISTED} CPUs"));
    }
    Ok(())
}

/// `parse_cpu_spec`: `1-4,^3,6`: ranges are merged in as `set(range(a, b + 1))`, single CPUs
/// added, exclusions discarded at the end. CPU numbers above [`MAX_CPU`] are refused (nova
/// has no bound: it would build the set, or run out of memory trying).
pub fn parse_cpu_spec(spec: &str) -> Result<PySet, Error> {
    let mut ids = PySet::new();
    let mut reject = PySet::new();
    let mut listed = 0u64;
    let int = |s: &str| -> Option<u32> {
        let t = s.trim();
        let t = t.strip_prefix('+').unwrap_or(t);
        t.parse::<u32>().ok().filter(|n| *n <= MAX_CPU)
    };
    for rule in spec.split(',') {
        let rule = rule.trim();
        if rule.is_empty() {
            continue;
        }
        if let Some((a, b)) = rule.split_once('-') {
            let (neg, a) = match a.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, a),
            };
            let (Some(start), Some(end)) = (int(a), int(b)) else { return Err(invalid(format!("Invalid range expression {rule:?}"))) };
            if start > end {
                return Err(invalid(format!("Invalid range expression {rule:?}")));
            }
            count_listed(&mut listed, u64::from(end - start) + 1).map_err(|why| invalid(format!("Invalid range expression {rule:?}: {why}")))?;
            let range = PySet::from_iter_adds(start..=end);
            if neg {
                reject.merge(&range)
            } else {
                ids.merge(&range)
            }
        } else if let Some(rest) = rule.strip_prefix('^') {
            count_listed(&mut listed, 1).map_err(|why| invalid(format!("Invalid exclusion expression {rule:?}: {why}")))?;
            reject.add(int(rest).ok_or_else(|| invalid(format!("Invalid exclusion expression {rule:?}")))?);
        } else {
            count_listed(&mut listed, 1).map_err(|why| invalid(format!("Invalid inclusion expression {rule:?}: {why}")))?;
            ids.add(int(rule).ok_or_else(|| invalid(format!("Invalid inclusion expression {rule:?}")))?);
        }
    }
    ids.sub_assign(&reject);
    Ok(ids)
}

/// The kernel's CPU list format (`0-3,8,10-11`), as sysfs writes it. CPU numbers above
/// [`MAX_CPU`], and lists naming more than [`MAX_LISTED`] CPUs, are refused.
pub fn parse_kernel_list(s: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    let mut listed = 0u64;
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list element {part:?}");
        let cpu = |t: &str| t.trim().parse::<u32>().ok().filter(|n| *n <= MAX_CPU).ok_or_else(bad);
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (cpu(a)?, cpu(b)?);
                if a > b {
                    return Err(bad());
                }
                count_listed(&mut listed, u64::from(b - a) + 1).map_err(|why| format!("{}: {why}", bad()))?;
                out.extend(a..=b);
            }
            None => {
                count_listed(&mut listed, 1).map_err(|why| format!("{}: {why}", bad()))?;
                out.insert(cpu(part)?);
            }
        }
    }
    Ok(out)
}

fn read_if_present(p: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Input { file: p.display().to_string(), why: e.to_string() }),
    }
}

/// `<sysfs>/devices/system/cpu/cpuN/topology/thread_siblings_list`, verbatim (trimmed): the
/// text libvirt reports as the CPU's `siblings` attribute. None when the file is absent.
pub fn read_thread_siblings(sysfs: &Path, cpu: u32) -> Result<Option<String>, Error> {
    let p = sysfs.join(format!("devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"));
    let Some(t) = read_if_present(&p)? else { return Ok(None) };
    let t = t.trim().to_string();
    parse_kernel_list(&t).map_err(|why| Error::Input { file: p.display().to_string(), why })?;
    Ok(Some(t))
}

/// `<sysfs>/devices/system/cpu/online`, None when absent.
pub fn read_online(sysfs: &Path) -> Result<Option<BTreeSet<u32>>, Error> {
    let p = sysfs.join("devices/system/cpu/online");
    let Some(t) = read_if_present(&p)? else { return Ok(None) };
    parse_kernel_list(&t).map(Some).map_err(|why| Error::Input { file: p.display().to_string(), why })
}

/// nova.conf's CPU settings.
#[derive(Debug, Clone, Default)]
pub struct CpuConfig {
    pub cpu_dedicated_set: Option<String>,
    pub cpu_shared_set: Option<String>,
    pub vcpu_pin_set: Option<String>,
    pub reserved_host_cpus: i64,
}

/// The CPUs nova offers: shared (`VCPU`) and dedicated (`PCPU`), as `_get_host_numa_topology`
/// computes them before intersecting them with each cell.
#[derive(Debug, Clone)]
pub struct NovaCpus {
    pub shared: PySet,
    pub dedicated: PySet,
}

fn get_set(value: &Option<String>, name: &str) -> Result<Option<PySet>, Error> {
    let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else { return Ok(None) };
    let s = parse_cpu_spec(v)?;
    if s.is_empty() {
        return Err(invalid(format!("No CPUs available after parsing {name} config, {v:?}")));
    }
    Ok(Some(s))
}

fn configuration(message: &str) -> Error {
    Error::Nova { exception: "InvalidConfiguration", message: message.into() }
}

/// nova-compute's checks at start and the sets it derives. `online`: the host's online CPUs,
/// as libvirt lists them (ascending).
pub fn nova_cpus(conf: &CpuConfig, online: &BTreeSet<u32>) -> Result<(NovaCpus, Vec<String>), Error> {
    let mut warnings = Vec::new();
    // _check_cpu_set_configuration
    let pin = get_set(&conf.vcpu_pin_set, "'vcpu_pin_set'")?;
    let shared = get_set(&conf.cpu_shared_set, "'[compute] cpu_shared_set'")?;
    let dedicated = get_set(&conf.cpu_dedicated_set, "'[compute] cpu_dedicated_set'")?;
    match &pin {
        None => {
            if shared.is_some() || dedicated.is_some() {
                if let (Some(s), Some(d)) = (&shared, &dedicated) {
                    if !PySet::and(d, s).is_empty() {
                        return Err(configuration("The '[compute] cpu_dedicated_set' and '[compute] cpu_shared_set' configuration options must be disjoint."));
                    }
                }
                if conf.reserved_host_cpus != 0 {
                    return Err(configuration(
                        "The 'reserved_host_cpus' config option cannot be defined alongside the '[compute] cpu_shared_set' or '[compute] cpu_dedicated_set' options. Unset 'reserved_host_cpus'.",
                    ));
                }
            }
        }
        Some(_) => {
            if dedicated.is_some() {
                return Err(configuration(
                    "The 'vcpu_pin_set' config option has been deprecated and cannot be defined alongside '[compute] cpu_dedicated_set'. Unset 'vcpu_pin_set'.",
                ));
            }
            if shared.is_some() {
                warnings.push("vcpu_pin_set and [compute] cpu_shared_set are both set: nova uses vcpu_pin_set for shared and dedicated CPUs, and cpu_shared_set only for emulator threads".into());
            } else {
                warnings.push("vcpu_pin_set is deprecated: nova uses it for both shared and dedicated CPUs".into());
            }
        }
    }
    let online_set = PySet::from_iter_adds(online.iter().copied());
    // _get_vcpu_available
    let available_shared = if let Some(p) = &pin {
        Some((p.clone(), "vcpu_pin_set"))
    } else if let Some(s) = &shared {
        Some((s.clone(), "[compute] cpu_shared_set"))
    } else if dedicated.is_some() {
        None
    } else {
        Some((online_set.clone(), ""))
    };
    let shared_cpus = match available_shared {
        None => PySet::new(),
        Some((s, opt)) => {
            if !opt.is_empty() && !s.sorted().is_subset(online) {
                return Err(invalid(format!(
                    "Invalid '{opt}' config: one or more of the configured CPUs is not online. Online cpuset(s): {:?}, configured cpuset(s): {:?}",
                    online,
                    s.sorted()
                )));
            }
            s
        }
    };
    // _get_pcpu_available
    let mut dedicated_cpus = match &dedicated {
        None => PySet::new(),
        Some(d) => {
            if !d.sorted().is_subset(online) {
                return Err(invalid(format!(
                    "Invalid '[compute] cpu_dedicated_set' config: one or more of the configured CPUs is not available. Available cpuset(s): {:?}, configured cpuset(s): {:?}",
                    online,
                    d.sorted()
                )));
            }
            d.clone()
        }
    };
    // The legacy fallback: without cpu_dedicated_set, pinned guests use the shared CPUs, except
    // when only cpu_shared_set is set.
    if dedicated_cpus.is_empty() && !(shared.is_some() && pin.is_none()) {
        dedicated_cpus = shared_cpus.clone();
    }
    Ok((NovaCpus { shared: shared_cpus, dedicated: dedicated_cpus }, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/fuzz_targets/sysfs_values.rs`): `001-45600107` in a sysfs CPU
    /// list built a set of 45 million CPUs (`0-4294967295`: four billion) and timed out.
    #[test]
    fn huge_cpu_numbers_and_lists_are_refused() {
        let e = parse_kernel_list("001-45600107").unwrap_err();
        assert!(e.contains("invalid CPU list element"), "{e}");
        assert!(parse_kernel_list("0-4294967295").is_err());
        assert!(parse_kernel_list("65536").is_err());
        assert_eq!(parse_kernel_list("65535").unwrap(), [MAX_CPU].into());
        assert_eq!(parse_kernel_list("0-65535").unwrap().len(), 65_536);
        let repeated = ["0-65535"; 5].join(",");
        assert!(parse_kernel_list(&repeated).unwrap_err().contains("more than"), "repeats count");
        let e = parse_cpu_spec("0-4294967295").unwrap_err();
        assert!(e.to_string().contains("(nova: Invalid)"), "{e}");
        assert!(parse_cpu_spec("^70000").is_err());
        assert!(parse_cpu_spec(&repeated).unwrap_err().to_string().contains("more than"));
        assert_eq!(parse_cpu_spec("0-65535,^1-65535").unwrap().sorted(), [0].into());
    }

    /// nova `test_parse_cpu_spec_*` cases.
    #[test]
    fn parse_cpu_spec_like_nova() {
        assert_eq!(parse_cpu_spec("1-4,^3,6").unwrap().sorted(), [1, 2, 4, 6].into());
        assert_eq!(parse_cpu_spec(" 1 , 2 ,, 5-6").unwrap().sorted(), [1, 2, 5, 6].into());
        assert_eq!(parse_cpu_spec("^0-1,0-3").unwrap().sorted(), [2, 3].into());
        for bad in ["3-1", "a", "^a", "1-b", "-"] {
            let e = parse_cpu_spec(bad).unwrap_err();
            assert!(e.to_string().contains("(nova: Invalid)"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpu_sets_as_nova_derives_them() {
        let online: BTreeSet<u32> = (0..8).collect();
        let conf = |d: Option<&str>, s: Option<&str>, p: Option<&str>| CpuConfig {
            cpu_dedicated_set: d.map(Into::into),
            cpu_shared_set: s.map(Into::into),
            vcpu_pin_set: p.map(Into::into),
            reserved_host_cpus: 0,
        };
        let sets = |c: CpuConfig| nova_cpus(&c, &online).map(|(n, _)| (n.shared.sorted(), n.dedicated.sorted()));
        assert_eq!(sets(conf(None, None, None)).unwrap(), (online.clone(), online.clone()));
        assert_eq!(sets(conf(None, Some("0-3"), None)).unwrap(), ((0..4).collect(), BTreeSet::new()), "shared set alone: no pCPUs");
        assert_eq!(sets(conf(None, Some("0-1"), Some("2-5"))).unwrap(), ((2..6).collect(), (2..6).collect()), "vcpu_pin_set wins");
        assert_eq!(sets(conf(Some("4-7"), Some("0-3"), None)).unwrap(), ((0..4).collect(), (4..8).collect()));
        let name = |c: CpuConfig| match nova_cpus(&c, &online) {
            Err(Error::Nova { exception, .. }) => exception,
            other => panic!("{other:?}"),
        };
        assert_eq!(name(conf(Some("2-5"), Some("0-3"), None)), "InvalidConfiguration");
        assert_eq!(name(conf(Some("2-5"), None, Some("0-3"))), "InvalidConfiguration");
        assert_eq!(name(conf(Some("6-9"), None, None)), "Invalid");
        assert_eq!(name(conf(None, Some("^1"), None)), "Invalid");
    }
}
