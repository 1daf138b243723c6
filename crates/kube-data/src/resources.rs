//! Group and resource of a key, as kube-apiserver names them when it picks a transformer.
//!
//! An EncryptionConfiguration names resources as `resource[.group]` (`schema.ParseGroupResource`:
//! everything after the first `.` is the group), so `secrets` is the core group's, `deployments.apps`
//! and `crontabs.stable.example.com` are grouped, `*.apps` is every resource of `apps`, `*.` every
//! resource of the core group and `*.*` every resource. Built-in resources are stored without their
//! group (`/registry/deployments/...`), so the group comes from [`BUILTIN_GROUPS`]; a single-segment
//! storage path not in the table is taken to be a core resource. Grouped storage paths
//! (`/registry/<group>/<plural>/...`: CRDs, custom resources, APIServices) carry their group.

use std::fmt;

use serde::Serialize;

use crate::keys::{self, KeyInfo};

/// A group and resource; `group` is empty for the core group, `*` in either is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    /// `schema.ParseGroupResource`: split at the first `.`.
    pub fn parse(s: &str) -> GroupResource {
        match s.split_once('.') {
            Some((r, g)) => GroupResource { group: g.to_string(), resource: r.to_string() },
            None => GroupResource { group: String::new(), resource: s.to_string() },
        }
    }

    /// Like [`GroupResource::parse`], but a bare built-in name gets its group (`deployments` →
    /// `deployments.apps`), as a person typing `--resource deployments` means.
    pub fn parse_loose(s: &str) -> GroupResource {
        if !s.contains('.') {
            if let Some((_, g)) = BUILTIN_GROUPS.iter().find(|(r, _)| *r == s) {
                return GroupResource { group: g.to_string(), resource: s.to_string() };
            }
        }
        GroupResource::parse(s)
    }

    pub fn is_wildcard(&self) -> bool {
        self.resource == "*" || self.group == "*"
    }
}

impl fmt::Display for GroupResource {
    /// As the configuration spells it (`grYAMLString`): `secrets`, `deployments.apps`, `*.`, `*.*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() && self.resource == "*" {
            write!(f, "*.")
        } else if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// Built-in resources stored without their group, and the group (kubernetes
/// `pkg/controlplane` REST storage providers, 1.2x–1.3x).
pub const BUILTIN_GROUPS: &[(&str, &str)] = &[
    ("deployments", "apps"),
    ("statefulsets", "apps"),
    ("daemonsets", "apps"),
    ("replicasets", "apps"),
    ("controllerrevisions", "apps"),
    ("jobs", "batch"),
    ("cronjobs", "batch"),
    ("horizontalpodautoscalers", "autoscaling"),
    ("poddisruptionbudgets", "policy"),
    ("podsecuritypolicies", "policy"),
    ("roles", "rbac.authorization.k8s.io"),
    ("rolebindings", "rbac.authorization.k8s.io"),
    ("clusterroles", "rbac.authorization.k8s.io"),
    ("clusterrolebindings", "rbac.authorization.k8s.io"),
    ("networkpolicies", "networking.k8s.io"),
    ("ingressclasses", "networking.k8s.io"),
    ("ipaddresses", "networking.k8s.io"),
    ("servicecidrs", "networking.k8s.io"),
    ("storageclasses", "storage.k8s.io"),
    ("volumeattachments", "storage.k8s.io"),
    ("csidrivers", "storage.k8s.io"),
    ("csinodes", "storage.k8s.io"),
    ("csistoragecapacities", "storage.k8s.io"),
    ("volumeattributesclasses", "storage.k8s.io"),
    ("priorityclasses", "scheduling.k8s.io"),
    ("leases", "coordination.k8s.io"),
    ("leasecandidates", "coordination.k8s.io"),
    ("runtimeclasses", "node.k8s.io"),
    ("mutatingwebhookconfigurations", "admissionregistration.k8s.io"),
    ("validatingwebhookconfigurations", "admissionregistration.k8s.io"),
    ("validatingadmissionpolicies", "admissionregistration.k8s.io"),
    ("validatingadmissionpolicybindings", "admissionregistration.k8s.io"),
    ("mutatingadmissionpolicies", "admissionregistration.k8s.io"),
    ("mutatingadmissionpolicybindings", "admissionregistration.k8s.io"),
    ("certificatesigningrequests", "certificates.k8s.io"),
    ("clustertrustbundles", "certificates.k8s.io"),
    ("endpointslices", "discovery.k8s.io"),
    ("flowschemas", "flowcontrol.apiserver.k8s.io"),
    ("prioritylevelconfigurations", "flowcontrol.apiserver.k8s.io"),
    ("resourceclaims", "resource.k8s.io"),
    ("resourceclaimtemplates", "resource.k8s.io"),
    ("deviceclasses", "resource.k8s.io"),
    ("resourceslices", "resource.k8s.io"),
    ("devicetaintrules", "resource.k8s.io"),
    ("storageversionmigrations", "storagemigration.k8s.io"),
    ("storageversions", "internal.apiserver.k8s.io"),
];

/// OpenShift apiserver resources stored under `/openshift.io` without their group.
const OPENSHIFT_GROUPS: &[(&str, &str)] = &[
    ("routes", "route.openshift.io"),
    ("builds", "build.openshift.io"),
    ("buildconfigs", "build.openshift.io"),
    ("deploymentconfigs", "apps.openshift.io"),
    ("images", "image.openshift.io"),
    ("imagestreams", "image.openshift.io"),
    ("templates", "template.openshift.io"),
    ("templateinstances", "template.openshift.io"),
    ("brokertemplateinstances", "template.openshift.io"),
    ("users", "user.openshift.io"),
    ("groups", "user.openshift.io"),
];

/// The group and resource kube-apiserver stores under `info`'s path.
pub fn of(info: &KeyInfo) -> GroupResource {
    let r = info.resource.as_str();
    if r.contains('.') {
        return GroupResource::parse(r);
    }
    if r == "ranges" {
        // `/registry/ranges/serviceips`, `/registry/ranges/servicenodeports` (RangeAllocation).
        let resource = match info.name.as_str() {
            "serviceips" => "serviceipallocations",
            "servicenodeports" => "servicenodeportallocations",
            other => other,
        };
        return GroupResource { group: String::new(), resource: resource.to_string() };
    }
    let table: &[(&str, &str)] = if info.prefix == "/openshift.io" { OPENSHIFT_GROUPS } else { BUILTIN_GROUPS };
    let group = table.iter().find(|(n, _)| *n == r).map(|(_, g)| g.to_string()).unwrap_or_default();
    GroupResource { group, resource: r.to_string() }
}

/// The group and resource of an etcd key; None for keys outside any object layout.
pub fn of_key(key: &[u8]) -> Option<GroupResource> {
    keys::parse(key).map(|i| of(&i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gr(k: &str) -> String {
        of_key(k.as_bytes()).unwrap().to_string()
    }

    #[test]
    fn keys_to_group_resources() {
        assert_eq!(gr("/registry/secrets/default/s"), "secrets");
        assert_eq!(gr("/registry/deployments/default/web"), "deployments.apps");
        assert_eq!(gr("/registry/ingress/default/i"), "ingresses.networking.k8s.io");
        assert_eq!(gr("/registry/minions/n1"), "nodes");
        assert_eq!(gr("/registry/services/endpoints/default/kubernetes"), "endpoints");
        assert_eq!(gr("/registry/stable.example.com/crontabs/ns/c"), "crontabs.stable.example.com");
        assert_eq!(gr("/registry/apiextensions.k8s.io/customresourcedefinitions/a.b.c"), "customresourcedefinitions.apiextensions.k8s.io");
        assert_eq!(gr("/registry/ranges/serviceips"), "serviceipallocations");
        assert_eq!(gr("/openshift.io/routes/ns/r"), "routes.route.openshift.io");
        assert_eq!(gr("/kubernetes.io/secrets/ns/s"), "secrets");
        assert_eq!(GroupResource::parse("*.").to_string(), "*.");
        assert_eq!(GroupResource::parse("*.*"), GroupResource { group: "*".into(), resource: "*".into() });
        assert_eq!(GroupResource::parse_loose("deployments").to_string(), "deployments.apps");
        assert!(of_key(b"compact_rev_key").is_none());
    }
}
