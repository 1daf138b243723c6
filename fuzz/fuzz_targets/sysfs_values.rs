//! Values read from a compute host's sysfs and procfs, and nova's value syntaxes: CPU lists
//! (`cpu::parse_kernel_list`, `parse_cpu_spec`), `lscpu` output, `Hugepagesize` in meminfo,
//! IEC sizes (`units::string_to_bytes`), DPDK socket lists and `reserved_huge_pages` values;
//! and `host::read_sysfs` over a one-node sysfs tree whose files (meminfo, cpulist, hugepage
//! counts, thread siblings) are the input's `|`-separated parts, and nova's host view of it. Errors are fine; panics,
//! hangs and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = numa::cpu::parse_kernel_list(text);
    let _ = numa::cpu::parse_cpu_spec(text);
    let _ = numa::host::parse_lscpu(text, "lscpu");
    let _ = numa::host::default_hugepage_kb(text);
    let _ = numa::units::string_to_bytes(text);
    let _ = numa::config::parse_socket_list(text);
    let _ = numa::config::parse_reserved_line(text, "nova.conf", 1);

    // A sysfs tree: node0/{meminfo,cpulist}, node0/hugepages/hugepages-2048kB/{nr,free,surplus},
    // cpu0's thread_siblings_list, in that order in the input.
    let root = common::scratch("sysfs");
    let node = root.join("devices/system/node/node0");
    let hp = node.join("hugepages/hugepages-2048kB");
    let topo = root.join("devices/system/cpu/cpu0/topology");
    if !hp.is_dir() {
        std::fs::create_dir_all(&hp).unwrap();
        std::fs::create_dir_all(&topo).unwrap();
    }
    let files = [
        node.join("meminfo"),
        node.join("cpulist"),
        hp.join("nr_hugepages"),
        hp.join("free_hugepages"),
        hp.join("surplus_hugepages"),
        topo.join("thread_siblings_list"),
    ];
    let mut parts = text.split('|');
    for f in &files {
        std::fs::write(f, parts.next().unwrap_or("")).unwrap();
    }
    if let Ok(nodes) = numa::host::read_sysfs(&root) {
        // What `quorum numa` computes from them next: nova's view with no CPU options set.
        let online = nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
        if let Ok((cpus, _)) = numa::cpu::nova_cpus(&numa::cpu::CpuConfig::default(), &online) {
            let _ = numa::host::nova_view(&nodes, &numa::config::Reserved::default(), &cpus);
        }
    }
    let _ = numa::cpu::read_online(&root);
});
