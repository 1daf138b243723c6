//! Kubernetes objects as stored in etcd: the envelope and metadata decoder
//! (`kube_data::value::decode`), the typed renderer (`typed::render`, the whole schema walk),
//! `typed::render_protobuf` of the input's tail as a kind picked by its first byte (so every
//! kind is reachable without guessing its name), and the key parsers (`keys::parse`,
//! `resources::of_key`). Errors are fine; panics, hangs and unbounded allocation are not.
#![no_main]

use kube_data::{keys, resources, typed, value};
use libfuzzer_sys::fuzz_target;

/// Stored kinds across the API groups the schema covers.
const KINDS: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "Node"),
    ("v1", "Namespace"),
    ("v1", "Event"),
    ("v1", "Endpoints"),
    ("v1", "PersistentVolume"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ServiceAccount"),
    ("v1", "LimitRange"),
    ("v1", "ResourceQuota"),
    ("v1", "ReplicationController"),
    ("v1", "PodTemplate"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "ControllerRevision"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("coordination.k8s.io/v1", "Lease"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("v1", "NoSuchKind"),
];

fuzz_target!(|data: &[u8]| {
    let _ = value::decode(data);
    if let Ok(r) = typed::render(data) {
        let _ = kube_data::print::to_yaml(&r.value);
    }
    let _ = kube_data::encryption::is_stored_object(data);
    if let Some(info) = keys::parse(data) {
        let _ = resources::of(&info);
    }
    let _ = resources::of_key(data);
    if let Some((sel, raw)) = data.split_first() {
        let (av, kind) = KINDS[*sel as usize % KINDS.len()];
        if let Ok(r) = typed::render_protobuf(av, kind, raw) {
            let _ = kube_data::print::to_yaml(&r.value);
        }
    }
});
