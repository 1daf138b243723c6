//! libvirt domain XML (`virsh dumpxml`) as `quorum numa` reads an instance's placement:
//! `numa::libvirt::parse_domain`. Errors are fine; panics, hangs and unbounded allocation are
//! not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = numa::libvirt::parse_domain(text, "domain.xml");
});
