//! etcd keys of kube-apiserver and OpenShift apiservers → resource, namespace, name.
//!
//! Layout (`kubernetes/apiserver pkg/storage/etcd3/store.go`, registry key funcs):
//! `/<prefix>/<resource path>[/<namespace>]/<name>`. The prefix is `/registry` upstream,
//! `/kubernetes.io` for OpenShift's kube-apiserver and `/openshift.io` for openshift- and
//! oauth-apiservers: it is read from the key, never assumed. Built-in resources use their
//! plural without a group, with the overrides of `SpecialDefaultResourcePrefixes`
//! (`controllers` = replicationcontrollers, `services/endpoints`, `minions` = nodes,
//! `services/specs` = services, `ingress`); CRDs, custom resources and APIServices carry their
//! group (`<group>/<plural>`), OpenShift's oauth objects a nested path (`oauth/accesstokens`).

use serde::Serialize;

/// A key's Kubernetes meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub prefix: String,
    /// Resource as `kubectl` names it: plural, with `.group` for grouped resources.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// Multi-segment storage paths and the resource they hold.
const NESTED: &[(&str, &str)] = &[
    ("services/specs", "services"),
    ("services/endpoints", "endpoints"),
    ("oauth/accesstokens", "oauthaccesstokens.oauth.openshift.io"),
    ("oauth/authorizetokens", "oauthauthorizetokens.oauth.openshift.io"),
    ("oauth/clients", "oauthclients.oauth.openshift.io"),
    ("oauth/clientauthorizations", "oauthclientauthorizations.oauth.openshift.io"),
];

/// Single-segment storage paths that differ from the resource name.
const RENAMED: &[(&str, &str)] = &[("minions", "nodes"), ("controllers", "replicationcontrollers"), ("ingress", "ingresses.networking.k8s.io")];

/// Cluster-scoped built-in resources (no namespace segment).
const CLUSTER_SCOPED: &[&str] = &[
    "namespaces",
    "nodes",
    "persistentvolumes",
    "clusterroles",
    "clusterrolebindings",
    "storageclasses",
    "csidrivers",
    "csinodes",
    "volumeattachments",
    "priorityclasses",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "runtimeclasses",
    "certificatesigningrequests",
    "flowschemas",
    "prioritylevelconfigurations",
    "ingressclasses",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "customresourcedefinitions.apiextensions.k8s.io",
    "apiservices.apiregistration.k8s.io",
    "oauthaccesstokens.oauth.openshift.io",
    "oauthauthorizetokens.oauth.openshift.io",
    "oauthclients.oauth.openshift.io",
    "oauthclientauthorizations.oauth.openshift.io",
    "ranges",
];

/// Parse a key; None for keys outside any object layout (e.g. `compact_rev_key`).
pub fn parse(key: &[u8]) -> Option<KeyInfo> {
    let k = std::str::from_utf8(key).ok()?;
    let rest = k.strip_prefix('/')?;
    let (prefix, rest) = rest.split_once('/')?;
    // Segments on the stack for the usual depths (this runs for every key of a listing).
    let mut fixed: [&str; 8] = [""; 8];
    let mut n = 0;
    let mut long: Vec<&str> = Vec::new();
    for seg in rest.split('/') {
        if n < fixed.len() {
            fixed[n] = seg;
        } else {
            if long.is_empty() {
                long.extend_from_slice(&fixed);
            }
            long.push(seg);
        }
        n += 1;
    }
    let segs: &[&str] = if long.is_empty() { &fixed[..n] } else { &long };
    if segs.len() < 2 || segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    // The resource path: nested special paths, a grouped `<group>/<plural>`, or one segment.
    let (resource, used) = if let Some((_, r)) = NESTED.iter().find(|(p, _)| rest.strip_prefix(p).is_some_and(|r| r.starts_with('/'))) {
        (r.to_string(), 2)
    } else if segs[0].contains('.') && segs.len() >= 3 {
        (format!("{}.{}", segs[1], segs[0]), 2)
    } else {
        let r = RENAMED.iter().find(|(p, _)| *p == segs[0]).map(|(_, r)| r.to_string()).unwrap_or_else(|| segs[0].to_string());
        (r, 1)
    };
    let tail = &segs[used..];
    let (namespace, name) = match tail {
        [name] => (None, name.to_string()),
        [ns, name] if !CLUSTER_SCOPED.contains(&resource.as_str()) => (Some(ns.to_string()), name.to_string()),
        [..] => (None, tail.join("/")),
    };
    if name.is_empty() {
        return None;
    }
    Some(KeyInfo { prefix: format!("/{prefix}"), resource, namespace, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str) -> (String, String, Option<String>, String) {
        let i = parse(k.as_bytes()).unwrap();
        (i.prefix, i.resource, i.namespace, i.name)
    }

    #[test]
    fn layouts() {
        assert_eq!(p("/registry/pods/default/pi-dqtsw"), ("/registry".into(), "pods".into(), Some("default".into()), "pi-dqtsw".into()));
        assert_eq!(p("/registry/namespaces/default"), ("/registry".into(), "namespaces".into(), None, "default".into()));
        assert_eq!(p("/registry/services/specs/default/kubernetes").1, "services");
        assert_eq!(p("/registry/services/endpoints/default/kubernetes").1, "endpoints");
        assert_eq!(p("/registry/minions/node-1"), ("/registry".into(), "nodes".into(), None, "node-1".into()));
        assert_eq!(
            p("/registry/apiextensions.k8s.io/customresourcedefinitions/crontabs.stable.example.com").1,
            "customresourcedefinitions.apiextensions.k8s.io"
        );
        assert_eq!(
            p("/registry/stable.example.com/crontabs/default/my-new-cron-object"),
            ("/registry".into(), "crontabs.stable.example.com".into(), Some("default".into()), "my-new-cron-object".into())
        );
        assert_eq!(p("/kubernetes.io/secrets/openshift-config/pull-secret").0, "/kubernetes.io");
        assert_eq!(
            p("/openshift.io/oauth/accesstokens/sha256~abc"),
            ("/openshift.io".into(), "oauthaccesstokens.oauth.openshift.io".into(), None, "sha256~abc".into())
        );
        assert_eq!(p("/openshift.io/routes/openshift-console/console").1, "routes");
        assert!(parse(b"compact_rev_key").is_none());
        assert_eq!(p("/registry/a.b/c/ns/n1/n2/n3/n4/n5/n6/n7").3, "ns/n1/n2/n3/n4/n5/n6/n7", "deep keys keep their tail");
    }
}
