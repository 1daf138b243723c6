//! Objects as kubectl shows them, read from a snapshot: [`get`] renders the selected live
//! objects (typed protobuf or JSON, `metadata.resourceVersion` = the key's mod revision, as
//! kube-apiserver reports it), [`diff`] compares two snapshots object by object and field by
//! field. kubectl's short names and singular forms are accepted ([`resolve_resource`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::encryption::EncryptionConfig;
use crate::list::{for_each_value, Filter, ListError, Object};
use crate::typed;

/// kubectl's short names, and plural forms for singular ones (`pod` → `pods`, `ingress` → `ingresses`).
pub fn resolve_resource(arg: &str) -> String {
    const SHORT: &[(&str, &str)] = &[
        ("po", "pods"),
        ("svc", "services"),
        ("deploy", "deployments"),
        ("ns", "namespaces"),
        ("cm", "configmaps"),
        ("sa", "serviceaccounts"),
        ("ds", "daemonsets"),
        ("sts", "statefulsets"),
        ("rs", "replicasets"),
        ("rc", "replicationcontrollers"),
        ("pv", "persistentvolumes"),
        ("pvc", "persistentvolumeclaims"),
        ("ing", "ingresses"),
        ("no", "nodes"),
        ("ep", "endpoints"),
        ("crd", "customresourcedefinitions"),
        ("crds", "customresourcedefinitions"),
        ("cj", "cronjobs"),
        ("netpol", "networkpolicies"),
        ("pdb", "poddisruptionbudgets"),
        ("sc", "storageclasses"),
        ("ev", "events"),
        ("hpa", "horizontalpodautoscalers"),
        ("quota", "resourcequotas"),
        ("limits", "limitranges"),
        ("pc", "priorityclasses"),
    ];
    let lower = arg.to_ascii_lowercase();
    if let Some((_, full)) = SHORT.iter().find(|(s, _)| *s == lower) {
        return (*full).to_string();
    }
    let (base, group) = lower.split_once('.').map(|(b, g)| (b.to_string(), Some(g.to_string()))).unwrap_or((lower.clone(), None));
    let plural = if base.ends_with("ss") || base.ends_with('x') || base.ends_with("ch") {
        format!("{base}es")
    } else if base.ends_with('s') {
        base
    } else if let Some(stem) = base.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'o', 'u'])) {
        format!("{stem}ies")
    } else {
        format!("{base}s")
    };
    match group {
        Some(g) => format!("{plural}.{g}"),
        None => plural,
    }
}

/// An object as `kubectl get -o json` shows it, with the warnings rendering gave; or why it
/// cannot be shown (the listing's error, or encrypted with no configuration given).
pub fn render(o: &Object, plain: Option<&[u8]>) -> Result<typed::Rendered, String> {
    if let Some(e) = &o.error {
        return Err(e.clone());
    }
    let Some(plain) = plain else {
        return Err(format!(
            "encrypted with {}: reading it needs the EncryptionConfiguration that holds its key",
            o.encryption.as_deref().unwrap_or("a provider")
        ));
    };
    let mut r = typed::render(plain)?;
    if let Some(meta) = r.value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(o.mod_revision.to_string()));
    }
    Ok(r)
}

/// One selected object: rendered, or why it could not be.
pub struct GotObject {
    pub object: Object,
    pub rendered: Result<typed::Rendered, String>,
}

/// The live objects `filter` selects, rendered, in key order. One pass over the key bucket:
/// memory holds the latest value of each selected key only.
pub fn get(path: &Path, filter: &Filter, config: Option<&EncryptionConfig>) -> Result<(Vec<GotObject>, Vec<String>), ListError> {
    let mut out = Vec::new();
    let warnings = for_each_value(path, filter, config, &mut |o, plain, _| {
        let rendered = render(&o, plain);
        out.push(GotObject { object: o, rendered });
    })?;
    out.sort_by(|a, b| a.object.key.cmp(&b.object.key));
    Ok((out, warnings))
}

#[derive(Debug, Serialize, Clone)]
pub struct ObjectRef {
    pub key: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    pub kind: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FieldChange {
    /// `spec.containers[0].image`, `metadata.labels["app.kubernetes.io/name"]`.
    pub path: String,
    /// Absent when the field was added (`null` in JSON output).
    pub old: Option<Value>,
    /// Absent when the field was removed.
    pub new: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct Changed {
    #[serde(flatten)]
    pub object: ObjectRef,
    /// Empty when the values differ but could not be read (encrypted without a configuration).
    pub fields: Vec<FieldChange>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct DiffReport {
    pub added: Vec<ObjectRef>,
    pub removed: Vec<ObjectRef>,
    pub changed: Vec<Changed>,
    pub unchanged: usize,
    pub warnings: Vec<String>,
    /// How many of the warnings report damaged data (objects may be missing from the comparison).
    pub damaged: usize,
}

impl DiffReport {
    pub fn differs(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

fn obj_ref(o: &Object) -> ObjectRef {
    ObjectRef {
        key: o.key.clone(),
        resource: o.info.resource.clone(),
        namespace: o.info.namespace.clone(),
        name: o.info.name.clone(),
        kind: o.decoded.as_ref().and_then(|d| d.kind.clone()),
    }
}

/// What `diff` compares: the rendered object without `resourceVersion` and `managedFields`
/// (bookkeeping that changes on every write); None when it cannot be read.
fn comparable(plain: Option<&[u8]>) -> Option<Value> {
    let mut v = typed::render(plain?).ok()?.value;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    Some(v)
}

/// The rendered object's digest, or the stored bytes' when it cannot be read.
fn digest(c: &Option<Value>, raw: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    match c {
        Some(v) => h.update(serde_json::to_vec(v).expect("JSON values serialize")),
        None => h.update(raw),
    }
    h.finalize().into()
}

/// Compare the live objects of snapshots `a` and `b`: added, removed, changed (field by
/// field). Memory: a digest per object, plus the rendered forms of changed objects only.
/// Secret `data`/`stringData` values are masked unless `show_secrets`.
pub fn diff(
    a: &Path,
    b: &Path,
    filter: &Filter,
    config_a: Option<&EncryptionConfig>,
    config_b: Option<&EncryptionConfig>,
    show_secrets: bool,
) -> Result<DiffReport, ListError> {
    let mut report = DiffReport::default();
    // Pass 1: A's digests.
    let mut in_a: HashMap<String, ([u8; 32], ObjectRef)> = HashMap::new();
    let wa = for_each_value(a, filter, config_a, &mut |o, plain, raw| {
        let c = comparable(plain);
        let d = digest(&c, raw);
        in_a.insert(o.key.clone(), (d, obj_ref(&o)));
    })?;
    report.damaged += crate::list::damage_count(&wa);
    report.warnings.extend(wa.into_iter().map(|w| format!("A: {w}")));
    // Pass 2: B against A; changed objects keep B's rendering.
    let mut seen = HashSet::new();
    let mut changed_b: BTreeMap<String, (ObjectRef, Option<Value>)> = BTreeMap::new();
    let wb = for_each_value(b, filter, config_b, &mut |o, plain, raw| {
        seen.insert(o.key.clone());
        let c = comparable(plain);
        let d = digest(&c, raw);
        match in_a.get(&o.key) {
            None => report.added.push(obj_ref(&o)),
            Some((da, _)) if *da == d => report.unchanged += 1,
            Some(_) => {
                changed_b.insert(o.key.clone(), (obj_ref(&o), c));
            }
        }
    })?;
    report.damaged += crate::list::damage_count(&wb);
    report.warnings.extend(wb.into_iter().map(|w| format!("B: {w}")));
    report.removed = in_a.iter().filter(|(k, _)| !seen.contains(*k)).map(|(_, (_, r))| r.clone()).collect();
    // Pass 3: A's renderings of the changed objects.
    if !changed_b.is_empty() {
        let mut old: HashMap<String, Option<Value>> = HashMap::new();
        for_each_value(a, filter, config_a, &mut |o, plain, _| {
            if changed_b.contains_key(&o.key) {
                old.insert(o.key.clone(), comparable(plain));
            }
        })?;
        for (key, (r, new)) in changed_b {
            let (fields, note) = match (old.remove(&key), new) {
                (Some(Some(o)), Some(n)) => {
                    let mut f = Vec::new();
                    let secret = n["kind"] == "Secret" && n["apiVersion"] == "v1";
                    fields_diff(&o, &n, String::new(), &mut f);
                    if secret && !show_secrets {
                        for c in &mut f {
                            if c.path.starts_with("data") || c.path.starts_with("stringData") {
                                c.old = c.old.as_ref().map(|_| Value::String("(hidden)".into()));
                                c.new = c.new.as_ref().map(|_| Value::String("(hidden)".into()));
                            }
                        }
                    }
                    (f, None)
                }
                _ => (
                    Vec::new(),
                    Some("stored value differs; it could not be read (encrypted without a configuration that opens it, or undecodable)".to_string()),
                ),
            };
            report.changed.push(Changed { object: r, fields, note });
        }
    }
    report.added.sort_by(|x, y| x.key.cmp(&y.key));
    report.removed.sort_by(|x, y| x.key.cmp(&y.key));
    Ok(report)
}

fn child(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", serde_json::to_string(key).expect("a string serializes")),
    }
}

fn fields_diff(a: &Value, b: &Value, path: String, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = child(&path, k);
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => fields_diff(u, v, p, out),
                    (Some(u), None) => out.push(FieldChange { path: p, old: Some(u.clone()), new: None }),
                    (None, Some(v)) => out.push(FieldChange { path: p, old: None, new: Some(v.clone()) }),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                fields_diff(u, v, format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(FieldChange { path, old: Some(a.clone()), new: Some(b.clone()) }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_resolve_like_kubectl() {
        assert_eq!(resolve_resource("po"), "pods");
        assert_eq!(resolve_resource("pod"), "pods");
        assert_eq!(resolve_resource("deployment.apps"), "deployments.apps");
        assert_eq!(resolve_resource("networkpolicy"), "networkpolicies");
        assert_eq!(resolve_resource("secrets"), "secrets");
        assert_eq!(resolve_resource("node"), "nodes");
        assert_eq!(resolve_resource("ingress"), "ingresses");
    }

    #[test]
    fn field_paths() {
        let mut out = Vec::new();
        fields_diff(
            &json!({"metadata": {"labels": {"app.kubernetes.io/name": "a"}}, "spec": {"replicas": 3, "containers": [{"image": "x:1"}]}}),
            &json!({"metadata": {"labels": {"app.kubernetes.io/name": "b"}}, "spec": {"replicas": 0, "containers": [{"image": "x:2"}], "paused": true}}),
            String::new(),
            &mut out,
        );
        let paths: Vec<&str> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["metadata.labels[\"app.kubernetes.io/name\"]", "spec.containers[0].image", "spec.paused", "spec.replicas"]);
        assert!(out[2].old.is_none());
    }
}
