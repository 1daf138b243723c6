//! `quorum numa fit|diagnose`: flags and printing; the work is in the `numa` crate.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use numa::model::{Flavor, HostCell};

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
    /// Instances already placed: JSON list of {"node", "memory_mb", "pagesize_kb", "vcpus", "dedicated"}.
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
    /// hw:mem_page_size (small, large, any, KiB, or e.g. 2MB).
    #[arg(long)]
    mem_page_size: Option<String>,
    /// hw:cpu_policy (shared, dedicated, mixed).
    #[arg(long)]
    cpu_policy: Option<String>,
    /// hw:numa_nodes.
    #[arg(long)]
    numa_nodes: Option<u32>,
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
    write_out: Format,
}

#[derive(Subcommand)]
pub enum NumaCmd {
    /// Which cell and page size nova would choose for a flavor, or why none fits.
    #[command(after_help = "Example:\n  quorum numa fit --nova-conf /etc/nova/nova.conf --vcpus 1 --ram 512 --mem-page-size large --cpu-policy dedicated")]
    Fit(HostArgs),
    /// nova's free hugepages against the kernel's, the cause, and the reserved_huge_pages lines to add.
    #[command(
        after_help = "Example:\n  ovs-vsctl list Open_vSwitch > ovs.txt\n  quorum numa diagnose --nova-conf /etc/nova/nova.conf --ovs ovs.txt --instances placed.json \\\n    --vcpus 1 --ram 512 --mem-page-size large --cpu-policy dedicated"
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
    default_kb: Option<u64>,
    flavor: Flavor,
    warnings: Vec<String>,
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
    let host = numa::compute_host::load(&inputs)?;
    let pack = match a.strategy.as_deref() {
        Some(s) => s == "pack",
        None => host.pack.unwrap_or(false),
    };
    let flavor = Flavor {
        name: format!("{} vCPU / {} MiB", a.vcpus, a.ram),
        vcpus: a.vcpus,
        memory_mb: a.ram,
        numa_nodes: a.numa_nodes,
        mem_page_size: a.mem_page_size.clone(),
        cpu_policy: a.cpu_policy.clone(),
    };
    if let Some(ps) = &flavor.mem_page_size {
        numa::units::PageRequest::parse(ps)?;
    }
    Ok(Loaded { kernel: host.kernel, nova: host.nova, pack, default_kb: host.default_kb, flavor, warnings: host.warnings })
}

pub fn run(cmd: NumaCmd) -> Result<(), Failure> {
    match cmd {
        NumaCmd::Fit(a) => {
            let l = load(&a)?;
            let topo = numa::model::instance_topology(&l.flavor)?;
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
                Some(mut inst) => match numa::fit::fit_instance_to_host(&l.nova, &mut inst, l.pack, None) {
                    Some(cells) => Out { strategy, fits: true, cells, reason: None },
                    None => Out { strategy, fits: false, cells: vec![], reason: Some(why_not(&l.nova, &l.flavor)) },
                },
            };
            output::warnings(&l.warnings);
            output::print(a.write_out, &out, || {
                if out.fits && !out.cells.is_empty() {
                    for c in &out.cells {
                        println!(
                            "fits: guest cell on host node {} with {} KiB pages{} ({} strategy)",
                            c.id,
                            c.pagesize_kb.unwrap_or(4),
                            if c.cpu_pinning.is_empty() {
                                String::new()
                            } else {
                                format!(", pinned to pCPUs {:?}", c.cpu_pinning.values().collect::<Vec<_>>())
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
            let flavor = (host.mem_page_size.is_some() || host.cpu_policy.is_some() || host.numa_nodes.is_some()).then_some(&l.flavor);
            let mut d = numa::diagnose::diagnose(&l.kernel, &l.nova, mem.as_deref(), lim.as_deref(), page, flavor, l.pack);
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
            format!("node {}: {} free pCPUs, {}", c.id, c.avail_pcpus(), if pools.is_empty() { "no hugepages".into() } else { pools.join(", ") })
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
