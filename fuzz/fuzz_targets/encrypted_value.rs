//! Encrypted-at-rest values as stored in etcd (`k8s:enc:<provider>:<version>:<key>:<payload>`)
//! read with a fixed configuration that has a key for every provider: `encryption::unseal`,
//! `EncryptionConfig::decrypt`, and each resource's `Transformer::classify` and `read`
//! (kube-apiserver's order of providers). The key names and providers come from the input, so
//! every branch of the envelope parser and of each cipher's payload checks is reachable.
//! Errors are fine; panics, hangs and unbounded allocation are not.
#![no_main]

use std::sync::OnceLock;

use kube_data::encryption::{parse_config, unseal, EncryptionConfig};
use kube_data::resources::GroupResource;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
            - name: "a:b"
              secret: AAECAwQFBgcICQoLDA0ODw==
      - aesgcm:
          keys:
            - name: key1
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
      - secretbox:
          keys:
            - name: key1
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
      - kms:
          apiVersion: v2
          name: mock
      - identity: {}
  - resources: [configmaps, "*.apps"]
    providers:
      - aesgcm:
          keys:
            - name: k24
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYX
      - identity: {}
  - resources: ["*.*"]
    providers:
      - secretbox:
          keys:
            - name: sb
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
"#;

fn config() -> &'static EncryptionConfig {
    static C: OnceLock<EncryptionConfig> = OnceLock::new();
    C.get_or_init(|| parse_config(CONFIG, "fuzz").expect("the fixed configuration parses"))
}

fuzz_target!(|data: &[u8]| {
    let cfg = config();
    let _ = unseal(data);
    let key = b"/registry/secrets/default/x";
    let _ = cfg.decrypt(data, key);
    for gr in ["secrets", "configmaps", "deployments.apps", "leases.coordination.k8s.io"] {
        let t = cfg.transformer_for(&GroupResource::parse(gr));
        let class = t.classify(data);
        let _ = t.is_write_state(&class);
        let _ = t.read(data, key);
    }
});
