//! `quorum numa fit|diagnose`: flags and printing; the work is in the `numa` crate.

use std::path::PathBuf;

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use numa::constraints::Flavor;
use numa::model::HostCell;

use crate::exit::Failure;
use crate::output::{self, Format};

#[derive(Args, Clone)]
pub struct HostArgs {
    /// sysfs root (a captured tree works: it needs devices/system/node/node*/...).
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// /proc/meminfo (for the default hugepage size).
    #[arg(long, default_value = "/proc/meminfo")]
    meminfo: PathBuf,
    /// `LC_ALL=C lscpu` output, for CPUs per node (else sysfs cpulist).
    #[arg(long)]
    lscpu: Option<PathBuf>,
    /// nova.conf (reserved_huge_pages, cpu_dedicated_set, cpu_shared_set, vcpu_pin_set, packing strategy).
    #[arg(long)]
    nova_conf: Option<PathBuf>,
    /// Instances already placed: a JSON list, one object per instance: {"cells": [{"node", "memory_mb",
    /// "pagesize_kb", "vcpus", "pcpus": [pinned host CPUs in vCPU order], "emulator_pcpus", "cpu_policy",
    /// "thread_policy"}]} (or one cell written flat).
    #[arg(long)]
    instances: Option<PathBuf>,
    /// Instances already placed, as libvirt domain XML (`virsh dumpxml`); repeatable.
    #[arg(long = "domain-xml")]
    domain_xml: Vec<PathBuf>,
    /// Host cell order strategy (nova >= 26 Zed defaults to spread, 25 Yoga to pack).
    #[arg(long, value_parser = ["pack", "spread"])]
    strategy: Option<String>,
    /// Flavor vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Flavor RAM in MiB.
    #[arg(long, default_value_t = 512)]
    ram: i64,
    /// hw:mem_page_size (small, large, any, KiB, or e.g. 2MB); short for --property hw:mem_page_size=...
    #[arg(long)]
    mem_page_size: Option<String>,
    /// hw:cpu_policy (shared, dedicated, mixed); short for --property hw:cpu_policy=...
    #[arg(long)]
    cpu_policy: Option<String>,
    /// hw:numa_nodes; short for --property hw:numa_nodes=...
    #[arg(long)]
    numa_nodes: Option<String>,
    /// A flavor extra spec, as `openstack flavor set --property` takes it (repeatable):
    /// hw:cpu_thread_policy=isolate, hw:cpu_dedicated_mask=^0, hw:emulator_threads_policy=isolate,
    /// hw:numa_cpus.0=0-1, hw:numa_mem.0=1024, hw:cpu_realtime=yes, ...
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// An image property, as `openstack image set --property` takes it (repeatable): hw_mem_page_size=large, ...
    #[arg(long = "image-property", value_name = "KEY=VALUE")]
    image_properties: Vec<String>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    write_out: Format,
}

#[derive(Subcommand)]
pub enum NumaCmd {
    /// Which host cells, page size and pCPUs nova would give a flavor, why none fits, or why nova refuses it.
    #[command(
        after_help = "Examples:\n  quorum numa fit --nova-conf /etc/nova/nova.conf --vcpus 1 --ram 512 --mem-page-size large --cpu-policy dedicated\n  quorum numa fit --nova-conf /etc/nova/nova.conf --vcpus 4 --ram 4096 --property hw:cpu_policy=dedicated \\\n    --property hw:cpu_thread_policy=isolate --property hw:emulator_threads_policy=isolate -w json\n\nExit status: 0 fits, 1 fits nowhere, 2 nova rejects the request or the host's configuration."
    )]
    Fit(HostArgs),
    /// nova's free hugepages against the kernel's, the cause, and the reserved_huge_pages lines to add.
    #[command(
        after_help = "Examples:\n  ovs-vsctl list Open_vSwitch > ovs.txt\n  quorum numa diagnose --nova-conf /etc/nova/nova.conf --ovs ovs.txt --instances placed.json \\\n    --vcpus 1 --ram 512 --mem-page-size large --cpu-policy dedicated"
    )]
    Diagnose {
        #[command(flatten)]
        host: HostArgs,
        /// `ovs-vsctl list Open_vSwitch` output (other_config dpdk-socket-mem / dpdk-socket-limit).
        #[arg(long)]
        ovs: Option<PathBuf>,
        /// dpdk-socket-mem, MB per node (overrides --ovs).
        #[arg(long)]
        dpdk_socket_mem: Option<String>,
        /// dpdk-socket-limit, MB per node (overrides --ovs).
        #[arg(long)]
        dpdk_socket_limit: Option<String>,
        /// DPDK hugepage size in KiB (default: the host's default hugepage size).
        #[arg(long)]
        dpdk_page_kb: Option<u64>,
    },
}

fn read(p: &PathBuf) -> Result<String, Failure> {
    std::fs::read_to_string(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))
}

struct Loaded {
    kernel: Vec<numa::host::Node>,
    nova: Vec<HostCell>,
    pack: bool,
    limits: numa::fit::Limits,
    default_kb: Option<u64>,
    flavor: Flavor,
    warnings: Vec<String>,
}

fn key_values(list: &[String], flag: &str) -> Result<BTreeMap<String, String>, Failure> {
    let mut m = BTreeMap::new();
    for kv in list {
        let Some((k, v)) = kv.split_once('=') else { return Err(Failure::usage(format!("{flag} {kv:?}: want KEY=VALUE"))) };
        if m.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Failure::usage(format!("{flag} {k} is given twice")));
        }
    }
    Ok(m)
}

fn flavor(a: &HostArgs) -> Result<Flavor, Failure> {
    let mut f = Flavor::new(a.vcpus, a.ram);
    f.extra_specs = key_values(&a.properties, "--property")?;
    f.image_properties = key_values(&a.image_properties, "--image-property")?;
    for (flag, key, v) in [
        ("--mem-page-size", "hw:mem_page_size", &a.mem_page_size),
        ("--cpu-policy", "hw:cpu_policy", &a.cpu_policy),
        ("--numa-nodes", "hw:numa_nodes", &a.numa_nodes),
    ] {
        if let Some(v) = v {
            if f.extra_specs.contains_key(key) {
                return Err(Failure::usage(format!("{flag} and --property {key}=... both set {key}: give one")));
            }
            f.extra_specs.insert(key.into(), v.clone());
        }
    }
    Ok(f)
}

fn load(a: &HostArgs) -> Result<Loaded, Failure> {
    let inputs = numa::compute_host::Inputs {
        sysfs_root: a.sysfs_root.clone(),
        meminfo: a.meminfo.clone(),
        lscpu: a.lscpu.clone(),
        nova_conf: a.nova_conf.clone(),
        instances: a.instances.clone(),
        domain_xml: a.domain_xml.clone(),
    };
    let flavor = flavor(a)?;
    let host = numa::compute_host::load(&inputs).map_err(|e| match e {
        numa::Error::Nova { .. } => Failure::usage(format!("nova-compute refuses this host's configuration: {e}")),
        e => e.into(),
    })?;
    let pack = match a.strategy.as_deref() {
        Some(s) => s == "pack",
        None => host.pack.unwrap_or(false),
    };
    Ok(Loaded { kernel: host.kernel, nova: host.nova, pack, limits: host.limits, default_kb: host.default_kb, flavor, warnings: host.warnings })
}

pub fn run(cmd: NumaCmd) -> Result<(), Failure> {
    match cmd {
        NumaCmd::Fit(a) => {
            let l = load(&a)?;
            let topo = numa::constraints::numa_get_constraints(&l.flavor).map_err(|e| Failure::usage(format!("nova rejects the request: {e}")))?;
            #[derive(serde::Serialize)]
            struct Out {
                strategy: &'static str,
                fits: bool,
                cells: Vec<numa::model::InstanceCell>,
                reason: Option<String>,
            }
            let strategy = if l.pack { "pack" } else { "spread" };
            let out = match topo {
                None => {
                    Out { strategy, fits: true, cells: vec![], reason: Some("no NUMA topology requested: nova places the guest on no particular node".into()) }
                }
                Some(mut inst) => match numa::fit::fit_instance_to_host(&l.nova, &mut inst, l.pack, Some(l.limits))? {
                    Some(cells) => Out { strategy, fits: true, cells, reason: None },
                    None => Out { strategy, fits: false, cells: vec![], reason: Some(why_not(&l.nova, &l.flavor)) },
                },
            };
            output::warnings(&l.warnings);
            output::print(a.write_out, &out, || {
                if out.fits && !out.cells.is_empty() {
                    for c in &out.cells {
                        println!(
                            "fits: guest cell {} on host node {} with {} KiB pages{}{} ({} strategy)",
                            c.guest_cell,
                            c.id,
                            c.pagesize_kb.unwrap_or(4),
                            if c.cpu_pinning.is_empty() {
                                String::new()
                            } else {
                                let pins: Vec<String> = c.cpu_pinning.iter().map(|(v, p)| format!("{v}→{p}")).collect();
                                format!(", vCPU→pCPU {}", pins.join(" "))
                            },
                            match &c.cpuset_reserved {
                                Some(r) => format!(", emulator threads on pCPUs {:?}", r.iter().collect::<Vec<_>>()),
                                None => String::new(),
                            },
                            strategy
                        );
                    }
                } else {
                    println!("{}: {}", if out.fits { "fits" } else { "does not fit" }, out.reason.clone().unwrap_or_default());
                }
            });
            if out.fits {
                Ok(())
            } else {
                Err(Failure::quiet(crate::exit::FAILED))
            }
        }
        NumaCmd::Diagnose { host, ovs, dpdk_socket_mem, dpdk_socket_limit, dpdk_page_kb } => {
            let l = load(&host)?;
            let (mut mem, mut lim) = (None, None);
            if let Some(p) = &ovs {
                (mem, lim) = numa::config::parse_ovs_other_config(&read(p)?, &p.display().to_string())?;
            }
            let parse = |v: &str| numa::config::parse_socket_list(v).map_err(Failure::usage);
            if let Some(v) = &dpdk_socket_mem {
                mem = Some(parse(v)?);
            }
            if let Some(v) = &dpdk_socket_limit {
                lim = Some(parse(v)?);
            }
            let page = dpdk_page_kb.or(l.default_kb).or_else(|| l.kernel.iter().flat_map(|n| n.pages.iter().map(|p| p.size_kb)).min()).unwrap_or(2048);
            let asked = !host.properties.is_empty() || host.mem_page_size.is_some() || host.cpu_policy.is_some() || host.numa_nodes.is_some();
            let placement = asked.then_some(numa::diagnose::Placement { flavor: &l.flavor, pack: l.pack, limits: l.limits });
            let mut d = numa::diagnose::diagnose(&l.kernel, &l.nova, mem.as_deref(), lim.as_deref(), page, placement);
            d.warnings.extend(l.warnings);
            output::print(host.write_out, &d, || print_diagnosis(&d));
            Ok(())
        }
    }
}

fn why_not(nova: &[HostCell], f: &Flavor) -> String {
    let per: Vec<String> = nova
        .iter()
        .map(|c| {
            let pools: Vec<String> = c.mempages.iter().filter(|p| p.size_kb > 4).map(|p| format!("{} free of {} KiB", p.free(), p.size_kb)).collect();
            format!(
                "node {}: {} free pCPUs, {} MiB free, {}",
                c.id,
                c.avail_pcpus(),
                c.avail_memory(),
                if pools.is_empty() { "no hugepages".into() } else { pools.join(", ") }
            )
        })
        .collect();
    format!("no host cell holds {} MiB ({} vCPUs) as asked; nova's view: {}", f.memory_mb, f.vcpus, per.join("; "))
}

fn print_diagnosis(d: &numa::diagnose::Diagnosis) {
    let rows: Vec<Vec<String>> = d
        .pools
        .iter()
        .map(|p| {
            vec![
                p.node.to_string(),
                format!("{} KiB", p.size_kb),
                p.kernel_total.to_string(),
                p.kernel_free.to_string(),
                p.nova_used.to_string(),
                p.reserved.to_string(),
                p.nova_free.to_string(),
                p.foreign.to_string(),
                if p.cause.is_some() { "MISMATCH".into() } else { "ok".into() },
            ]
        })
        .collect();
    print!("{}", output::table(&["NODE", "PAGE", "TOTAL", "KERNEL FREE", "NOVA USED", "RESERVED", "NOVA FREE", "HELD BY OTHERS", "STATE"], &rows));
    for p in d.pools.iter().filter(|p| p.cause.is_some()) {
        println!("node {} ({} KiB pages): {}", p.node, p.size_kb, p.cause.as_deref().unwrap_or(""));
    }
    if let Some(pl) = &d.placement {
        println!("flavor {}: {}", pl.flavor, pl.verdict);
    }
    for w in &d.warnings {
        println!("warning: {w}");
    }
    if !d.recommendations.is_empty() {
        println!("\nadd to nova.conf, then restart nova-compute (it reads both once, at start):\n[DEFAULT]");
        for r in &d.recommendations {
            println!("{}    # {}", r.line, r.arithmetic);
        }
    }
}
