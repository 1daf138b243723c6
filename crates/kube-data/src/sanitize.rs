//! Making an object from one cluster fit to `kubectl apply` on another: what the source
//! cluster assigned (identity, bookkeeping, placement, addresses) is removed so the new
//! cluster assigns its own, and objects the new cluster's controllers create themselves are
//! left out. [`RULES`] is the whole rule set; the docs print the same table (`rules_table`).

use serde_json::{Map, Value};

/// One sanitization rule: which objects (`*` = all kinds) and what happens to them.
pub struct Rule {
    /// `Kind` or `Kind.group` (`Machine.machine.openshift.io`), or `*`.
    pub applies_to: &'static str,
    pub action: Action,
    pub why: &'static str,
}

pub enum Action {
    /// Remove the fields at these paths (`metadata.uid`; `spec.ports[].nodePort` for every element).
    Remove(&'static [&'static str]),
    /// Leave the object out of the export (`--keep-owned` keeps controller-owned ones).
    Skip,
}

pub const RULES: &[Rule] = &[
    Rule {
        applies_to: "*",
        action: Action::Remove(&[
            "metadata.uid",
            "metadata.resourceVersion",
            "metadata.generation",
            "metadata.creationTimestamp",
            "metadata.deletionTimestamp",
            "metadata.deletionGracePeriodSeconds",
            "metadata.managedFields",
            "metadata.selfLink",
            "metadata.ownerReferences",
            "status",
        ]),
        why: "assigned by the source cluster; owner references name source uids, and the garbage collector deletes objects whose owner uid does not exist",
    },
    Rule {
        applies_to: "*",
        action: Action::Remove(&["metadata.annotations.kubectl.kubernetes.io/last-applied-configuration"]),
        why: "holds the source's last apply, including fields removed here",
    },
    Rule {
        applies_to: "Service",
        action: Action::Remove(&["spec.clusterIP", "spec.clusterIPs", "spec.healthCheckNodePort", "spec.ports[].nodePort"]),
        why: "addresses and ports come from the new cluster's service CIDR and node-port range (headless `None` is kept)",
    },
    Rule { applies_to: "Pod", action: Action::Remove(&["spec.nodeName"]), why: "the scheduler places the pod on a node of the new cluster" },
    Rule {
        applies_to: "PersistentVolume",
        action: Action::Remove(&["spec.claimRef.uid", "spec.claimRef.resourceVersion"]),
        why: "the claim is bound again by namespace and name",
    },
    Rule {
        applies_to: "PersistentVolumeClaim",
        action: Action::Remove(&["metadata.annotations.pv.kubernetes.io/bind-completed", "metadata.annotations.pv.kubernetes.io/bound-by-controller"]),
        why: "binding state of the source's PV controller",
    },
    Rule {
        applies_to: "Job.batch",
        action: Action::Remove(&[
            "spec.selector",
            "spec.template.metadata.labels.controller-uid",
            "spec.template.metadata.labels.batch.kubernetes.io/controller-uid",
        ]),
        why: "the generated selector names the source Job's uid; the new Job generates its own (`spec.selector` is kept with `spec.manualSelector: true`)",
    },
    Rule {
        applies_to: "Machine.machine.openshift.io",
        action: Action::Remove(&["spec.providerID", "metadata.annotations"]),
        why: "control-plane machine replacement: the provider assigns a new instance",
    },
    Rule {
        applies_to: "Machine.cluster.x-k8s.io",
        action: Action::Remove(&["spec.providerID", "metadata.annotations"]),
        why: "as for OpenShift machines: the new instance gets its own provider ID",
    },
    Rule { applies_to: "Event", action: Action::Skip, why: "history of the source cluster" },
    Rule { applies_to: "Event.events.k8s.io", action: Action::Skip, why: "history of the source cluster" },
    Rule { applies_to: "Endpoints", action: Action::Skip, why: "maintained by the endpoints controller from the Services and Pods" },
    Rule { applies_to: "EndpointSlice.discovery.k8s.io", action: Action::Skip, why: "maintained by the endpoint-slice controller" },
    Rule { applies_to: "Lease.coordination.k8s.io", action: Action::Skip, why: "leader election and node heartbeats of the source cluster" },
    Rule { applies_to: "ControllerRevision.apps", action: Action::Skip, why: "history kept by the workload controllers" },
    Rule {
        applies_to: "Secret type=kubernetes.io/service-account-token",
        action: Action::Skip,
        why: "token signed by the source cluster's key; the new cluster issues its own",
    },
    Rule { applies_to: "ConfigMap kube-root-ca.crt", action: Action::Skip, why: "published into every namespace by the new cluster" },
    Rule {
        applies_to: "any object with a controller owner reference",
        action: Action::Skip,
        why: "its controller (ReplicaSet, Job, StatefulSet, …) creates it again; --keep-owned keeps it",
    },
];

/// The rules as a Markdown table (for `--help` and the docs).
pub fn rules_table() -> String {
    let mut s = String::from("| applies to | action | why |\n|---|---|---|\n");
    for r in RULES {
        let action = match &r.action {
            Action::Remove(paths) => format!("remove {}", paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")),
            Action::Skip => "leave out".into(),
        };
        s.push_str(&format!("| {} | {action} | {} |\n", r.applies_to, r.why));
    }
    s
}

fn kind_of(obj: &Value) -> (String, String) {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let group = av.rsplit_once('/').map(|(g, _)| g.to_string()).unwrap_or_default();
    (kind, group)
}

fn applies(rule: &str, kind: &str, group: &str) -> bool {
    if rule == "*" {
        return true;
    }
    match rule.split_once('.') {
        Some((k, g)) => k == kind && g == group,
        None => rule == kind && group.is_empty(),
    }
}

/// Why the object should be left out of an export, or None to keep it.
pub fn skip_reason(obj: &Value, keep_owned: bool) -> Option<&'static str> {
    let (kind, group) = kind_of(obj);
    for r in RULES {
        if matches!(r.action, Action::Skip) && applies(r.applies_to, &kind, &group) {
            return Some(r.why);
        }
    }
    if kind == "Secret" && group.is_empty() && obj["type"] == "kubernetes.io/service-account-token" {
        return Some("service-account token signed by the source cluster");
    }
    if kind == "ConfigMap" && group.is_empty() && obj["metadata"]["name"] == "kube-root-ca.crt" {
        return Some("published into every namespace by the new cluster");
    }
    let owned = obj["metadata"]["ownerReferences"].as_array().is_some_and(|refs| refs.iter().any(|r| r["controller"] == true));
    if owned && !keep_owned {
        return Some("created again by its controller (--keep-owned keeps it)");
    }
    None
}

/// Apply every removal rule for the object's kind, in place.
pub fn sanitize(obj: &mut Value) {
    let (kind, group) = kind_of(obj);
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    for r in RULES {
        let Action::Remove(paths) = &r.action else { continue };
        if !applies(r.applies_to, &kind, &group) {
            continue;
        }
        for p in *paths {
            if headless && (*p == "spec.clusterIP" || *p == "spec.clusterIPs") {
                continue;
            }
            if *p == "spec.selector" && obj.pointer("/spec/manualSelector") == Some(&Value::Bool(true)) {
                continue;
            }
            remove_path(obj, p);
        }
    }
    // Empty maps left behind (an annotation map whose only entry went) are dropped too.
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
    }
}

/// Remove `a.b[].c` (every element of list `b`) or `a.b.<map key with dots>`: path segments
/// are taken greedily, so a map key containing dots (an annotation name) is the rest.
fn remove_path(v: &mut Value, path: &str) {
    let Some(map) = v.as_object_mut() else { return };
    remove_in(map, path);
}

fn remove_in(map: &mut Map<String, Value>, path: &str) {
    if map.remove(path).is_some() {
        return;
    }
    let Some((head, rest)) = path.split_once('.') else { return };
    if let Some(list) = head.strip_suffix("[]") {
        if let Some(Value::Array(items)) = map.get_mut(list) {
            for it in items {
                if let Some(m) = it.as_object_mut() {
                    remove_in(m, rest);
                }
            }
        }
        return;
    }
    if let Some(Value::Object(inner)) = map.get_mut(head) {
        remove_in(inner, rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_keeps_headless_and_loses_assigned_addresses() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "uid": "u", "resourceVersion": "5", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": [{"port": 80, "nodePort": 30080}], "type": "NodePort"}, "status": {"loadBalancer": {}}});
        sanitize(&mut svc);
        assert_eq!(svc, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}], "type": "NodePort"}}));
        let mut headless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        sanitize(&mut headless);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn machines_pods_pvs_jobs() {
        let mut m = json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine", "metadata": {"name": "m0", "annotations": {"machine.openshift.io/instance-state": "running"}, "labels": {"a": "b"}}, "spec": {"providerID": "aws:///i-1", "providerSpec": {}}});
        sanitize(&mut m);
        assert_eq!(
            m,
            json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine", "metadata": {"name": "m0", "labels": {"a": "b"}}, "spec": {"providerSpec": {}}})
        );
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": []}});
        sanitize(&mut pod);
        assert!(pod["spec"].get("nodeName").is_none());
        let mut pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"}, "spec": {"claimRef": {"name": "c", "namespace": "n", "uid": "x", "resourceVersion": "9"}}});
        sanitize(&mut pv);
        assert_eq!(pv["spec"]["claimRef"], json!({"name": "c", "namespace": "n"}));
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"selector": {"matchLabels": {"controller-uid": "u", "batch.kubernetes.io/controller-uid": "u"}}, "template": {"metadata": {"labels": {"controller-uid": "u", "job-name": "j"}}}}});
        sanitize(&mut job);
        assert_eq!(job["spec"]["template"]["metadata"]["labels"], json!({"job-name": "j"}));
        assert!(job["spec"].get("selector").is_none());
    }

    #[test]
    fn skips() {
        let owned = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"ownerReferences": [{"controller": true}]}});
        assert!(skip_reason(&owned, false).is_some());
        assert!(skip_reason(&owned, true).is_none());
        assert!(skip_reason(&json!({"apiVersion": "v1", "kind": "Event"}), false).is_some());
        assert!(skip_reason(&json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token"}), false).is_some());
        assert!(skip_reason(&json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque"}), false).is_none());
        assert!(rules_table().contains("| Service | remove `spec.clusterIP`"));
    }
}
