//! A static resources tarball as `backup --openshift-backup` and the k8s commands read it from
//! a cluster-backup.sh directory: `repo::openshift::read_tarball` (gzip, tar headers, the
//! per-member size bound, the gzip trailer), then what is derived from the member paths
//! (static pod revisions, the EncryptionConfiguration's member). Errors are fine; panics, hangs
//! and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("openshift").join("static_kuberesources_2026-12-04_031500.tar.gz");
    std::fs::write(&path, data).unwrap();
    let mut paths = Vec::new();
    let _ = repo::openshift::read_tarball(&path, |m, content| {
        assert!(content.len() as u64 <= repo::openshift::MAX_MEMBER);
        paths.push(m.path.clone());
        Ok(())
    });
    let _ = repo::openshift::static_pod_revisions(paths.iter().map(String::as_str));
    let _ = repo::openshift::encryption_config_path(paths.iter().map(String::as_str));
});
