//! kube-apiserver's EncryptionConfiguration (YAML or JSON) as `quorum k8s` reads it:
//! `kube_data::encryption::parse_config`, then, for a configuration that parses, the
//! transformer lookups and a read and a write of a fixed value through each listed resource.
//! Errors are fine; panics, hangs and unbounded allocation are not.
#![no_main]

use kube_data::encryption::parse_config;
use kube_data::resources::GroupResource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = parse_config(text, "fuzz.yaml") else { return };
    let value = b"k8s:enc:aescbc:v1:key1:0123456789abcdef0123456789abcdef";
    for r in cfg.listed_resources().iter().take(64) {
        let t = cfg.transformer_for(&GroupResource::parse(r));
        let _ = t.write_label();
        let class = t.classify(value);
        let _ = t.is_write_state(&class);
        let _ = t.read(value, b"/registry/secrets/default/x");
        let _ = t.write(b"k8s\x00plain", b"/registry/secrets/default/x", &mut |b: &mut [u8]| b.fill(7));
    }
    let _ = cfg.decrypt(value, b"/registry/secrets/default/x");
});
