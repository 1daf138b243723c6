//! Decoding and decryption on published data written by real Kubernetes components
//! (`../shared/fixtures/kube`, provenance in its SOURCES.md), and on the generated G vectors
//! as a cross-check.

use std::path::PathBuf;

use base64::Engine;
use kube_data::encryption::{gcm_decrypt, parse_config, unseal, DecryptError, Sealed};
use kube_data::value::{decode, Encoding};

fn fixtures() -> PathBuf {
    testkit::shared_fixtures().join("kube")
}

fn vector(name: &str) -> Vec<u8> {
    testkit::kube_vector(name)
}

const KEY00: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 00..1f

fn config() -> kube_data::encryption::EncryptionConfig {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, namespaces]\n  providers:\n  - aescbc:\n      keys: [{{name: key1, secret: {KEY00}}}]\n  - secretbox:\n      keys: [{{name: key1, secret: {KEY00}}}]\n  - aesgcm:\n      keys: [{{name: key1, secret: {KEY00}}}]\n  - identity: {{}}\n"
    );
    parse_config(&yaml, "enc.yaml").unwrap()
}

#[test]
fn p1_namespace_protobuf() {
    if !testkit::fixtures_available("published_vectors::p1_namespace_protobuf") {
        return;
    }
    let v = vector("P1");
    assert_eq!(v.len(), 126);
    let d = decode(&v).unwrap();
    assert_eq!(d.encoding, Encoding::Protobuf);
    assert_eq!((d.api_version.as_deref(), d.kind.as_deref(), d.name.as_deref()), (Some("v1"), Some("Namespace"), Some("default")));
    assert_eq!(d.uid.as_deref(), Some("aa4b1bb4-5ad2-11e7-bcd0-42010a800002"));
}

#[test]
fn auger_storage_values_match_their_goldens() {
    if !testkit::fixtures_available("published_vectors::auger_storage_values_match_their_goldens") {
        return;
    }
    for (file, meta) in [("pod", "pod.txt"), ("job", "job.txt")] {
        let mut v = std::fs::read(fixtures().join(format!("auger/storage/{file}.bin"))).unwrap();
        assert_eq!(v.pop(), Some(b'\n'), "the fixture carries one trailing newline");
        let d = decode(&v).unwrap();
        let golden = std::fs::read_to_string(fixtures().join(format!("auger/meta/{meta}"))).unwrap();
        assert!(golden.contains(&format!("TypeMeta.APIVersion: {}", d.api_version.unwrap())), "{golden}");
        assert!(golden.contains(&format!("TypeMeta.Kind: {}", d.kind.unwrap())), "{golden}");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join(format!("auger/json/{file}.json"))).unwrap()).unwrap();
        assert_eq!(d.name.as_deref(), json["metadata"]["name"].as_str());
        assert_eq!(d.namespace.as_deref(), json["metadata"]["namespace"].as_str());
        assert_eq!(d.uid.as_deref(), json["metadata"]["uid"].as_str());
        assert_eq!(d.creation_timestamp.as_deref(), json["metadata"]["creationTimestamp"].as_str());
    }
}

#[test]
fn p3_gcm_legacy_ciphertext() {
    let payload = hex::decode("9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797dac0a3f0a0845605ca85ac8562b4ae1").unwrap();
    assert_eq!(gcm_decrypt(b"snorlax_awesomes", &payload, b"bamboo").unwrap(), b"pandas are the best");
    assert!(gcm_decrypt(b"snorlax_awesomes", &payload, b"panda").is_none(), "AAD is authenticated");
}

#[test]
fn kms_values_are_recognised_not_failed() {
    if !testkit::fixtures_available("published_vectors::kms_values_are_recognised_not_failed") {
        return;
    }
    let p4 = vector("P4");
    match unseal(&p4).unwrap() {
        Sealed::Encrypted { provider, key, .. } => assert_eq!((provider.as_str(), key.as_str()), ("kms:v2", "kms-provider")),
        other => panic!("{other:?}"),
    }
    let e = config().decrypt(&p4, b"/x").unwrap_err();
    assert!(matches!(e, DecryptError::NeedsKms { .. }), "{e}");
    assert!(matches!(config().decrypt(&vector("G4"), b"/registry/namespaces/default").unwrap_err(), DecryptError::NeedsKms { .. }));
}

#[test]
fn generated_vectors_cross_check() {
    if !testkit::fixtures_available("published_vectors::generated_vectors_cross_check") {
        return;
    }
    let c = config();
    let p1 = vector("P1");
    assert_eq!(c.decrypt(&vector("G1"), b"/registry/namespaces/default").unwrap(), p1, "aescbc");
    assert_eq!(c.decrypt(&vector("G3"), b"/registry/namespaces/default").unwrap(), p1, "secretbox");
    // A wrong key names the key.
    let other = parse_config(
        &format!(
            "resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: [{{name: key1, secret: {}}}]\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ),
        "other.yaml",
    )
    .unwrap();
    let e = other.decrypt(&vector("G1"), b"/k").unwrap_err();
    assert_eq!(e, DecryptError::Failed { provider: "aescbc".into(), key: "key1".into() });
    let none = parse_config("resources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n", "id.yaml").unwrap();
    assert!(matches!(none.decrypt(&vector("G3"), b"/k").unwrap_err(), DecryptError::NoKey { .. }));
}

#[test]
fn bad_configs_are_named() {
    let e = parse_config("resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: [{name: k, secret: '***'}]\n", "enc.yaml").unwrap_err();
    assert!(e.contains("enc.yaml") && e.contains("not standard base64"), "{e}");
    let e = parse_config("resources: [ {", "enc.yaml").unwrap_err();
    assert!(e.starts_with("enc.yaml: not an EncryptionConfiguration") && e.contains("line"), "{e}");
    let e = parse_config("resources:\n- resources: [s]\n  providers:\n  - {identity: {}, aescbc: {keys: []}}\n", "e.yaml").unwrap_err();
    assert!(e.contains("exactly one provider"), "{e}");
}
