//! nova.conf and OVS `other_config` as `quorum numa` reads them from a compute host:
//! `numa::config::parse_nova_conf`, then the CPU sets nova derives from it
//! (`cpu::nova_cpus`, which parses `cpu_dedicated_set`, `cpu_shared_set` and `vcpu_pin_set`
//! with `parse_cpu_spec`) against a fixed set of online CPUs, and the allocation limits; the
//! host view of one fixed node with those reservations; the same text as `ovs-vsctl` output (`parse_ovs_other_config`). Errors are fine; panics, hangs
//! and unbounded allocation are not.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = numa::config::parse_nova_conf(text, "nova.conf") {
        let _ = c.limits();
        let online: BTreeSet<u32> = (0..16).collect();
        if let Ok((cpus, _)) = numa::cpu::nova_cpus(&c.cpu(), &online) {
            let node = numa::host::Node {
                id: 0,
                mem_total_kb: 16 << 20,
                cpus: online.clone(),
                pages: vec![numa::host::KernelPages { size_kb: 2048, nr: 1024, free: 1024, surplus: 0 }],
                thread_siblings: Default::default(),
            };
            let _ = numa::host::nova_view(&[node], &c.reserved, &cpus);
        }
    }
    let _ = numa::config::parse_ovs_other_config(text, "ovs");
});
