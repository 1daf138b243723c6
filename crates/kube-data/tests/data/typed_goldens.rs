//! Typed decoding against data written by a real kube-apiserver: the values published with
//! auger (`../shared/fixtures/kube/auger`, provenance in SOURCES.md) rendered as kubectl
//! prints them. The pod and job must equal auger's own decoded JSON and YAML as values (auger
//! decodes with the Kubernetes scheme itself); every rendering must equal its golden YAML in
//! `tests/golden/` byte for byte. `QUORUM_BLESS=1` rewrites the goldens (review the diff).

use std::path::PathBuf;

use kube_data::{print, typed};

fn fixtures() -> PathBuf {
    testkit::shared_fixtures().join("kube/auger")
}

fn golden(name: &str, yaml: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("QUORUM_BLESS").is_some() {
        std::fs::write(&path, yaml).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (QUORUM_BLESS=1 writes it)", path.display()));
    assert_eq!(yaml, want, "{name} differs from its golden");
}

/// A stored value file: auger's test strips the one `\n` each file ends with.
fn stored(file: &str) -> Vec<u8> {
    let mut v = std::fs::read(fixtures().join(file)).unwrap();
    assert_eq!(v.pop(), Some(b'\n'));
    v
}

#[test]
fn auger_pod_and_job_equal_augers_decoding() {
    if !testkit::fixtures_available("typed_goldens::auger_pod_and_job_equal_augers_decoding") {
        return;
    }
    for name in ["pod", "job"] {
        let r = typed::render(&stored(&format!("storage/{name}.bin"))).unwrap();
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join(format!("json/{name}.json"))).unwrap()).unwrap();
        assert_eq!(r.value, json, "{name}: rendering differs from auger's JSON");
        let yaml = print::to_yaml(&r.value);
        let auger_yaml: serde_json::Value = yaml_serde::from_str(&std::fs::read_to_string(fixtures().join(format!("yaml/{name}.yaml"))).unwrap()).unwrap();
        let ours: serde_json::Value = yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(ours, auger_yaml, "{name}: our YAML reads back differently from auger's");
        golden(&format!("auger-{name}.yaml"), &yaml);
        // JSON output reads back to the same value.
        let back: serde_json::Value = serde_json::from_str(&print::to_json(&r.value)).unwrap();
        assert_eq!(back, r.value);
    }
}

#[test]
fn auger_proto_payloads_render_with_type_meta() {
    if !testkit::fixtures_available("typed_goldens::auger_proto_payloads_render_with_type_meta") {
        return;
    }
    // proto/*.bin are the runtime.Unknown raw payloads alone; meta/*.txt names their type.
    for (name, av, kind) in [("pod", "v1", "Pod"), ("job", "batch/v1", "Job")] {
        let raw = std::fs::read(fixtures().join(format!("proto/{name}.bin"))).unwrap();
        let r = typed::render_protobuf(av, kind, &raw).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join(format!("json/{name}.json"))).unwrap()).unwrap();
        assert_eq!(r.value, json, "{name}");
    }
}

#[test]
fn auger_bolt_records_render() {
    if !testkit::fixtures_available("typed_goldens::auger_bolt_records_render") {
        return;
    }
    // Whole mvccpb.KeyValue records from a real etcd leaf page.
    for i in 0..3 {
        let rec = std::fs::read(fixtures().join(format!("boltdb/page2item{i}.bin"))).unwrap();
        let kv = etcd_data::schema::KeyValueRef::decode(&rec).expect("a KeyValue record");
        let key = std::fs::read_to_string(fixtures().join(format!("boltdb/page2item{i}-key.txt"))).unwrap();
        assert_eq!(String::from_utf8_lossy(kv.key), key.trim_end());
        let r = typed::render(kv.value).unwrap();
        let info = kube_data::keys::parse(kv.key).unwrap();
        assert_eq!(r.value["metadata"]["name"], serde_json::Value::String(info.name.clone()), "{key}");
        golden(&format!("auger-page2item{i}.yaml"), &print::to_yaml(&r.value));
    }
}

#[test]
fn p1_namespace_renders() {
    if !testkit::fixtures_available("typed_goldens::p1_namespace_renders") {
        return;
    }
    let v = testkit::kube_vector("P1");
    let r = typed::render(&v).unwrap();
    assert_eq!(r.value["kind"], "Namespace");
    golden("p1-namespace.yaml", &print::to_yaml(&r.value));
}
