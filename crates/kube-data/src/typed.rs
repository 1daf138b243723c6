//! Typed decoding: a stored protobuf object printed as `kubectl get -o json|yaml` prints it.
//!
//! kube-apiserver stores built-in kinds as `k8s\0` + `runtime.Unknown` whose `raw` is the
//! object's protobuf message. Rendering it needs the schema: per message and field number,
//! the JSON name and type. `build.rs` builds that table at compile time from the `k8s-pb`
//! (field numbers) and `k8s-openapi` (JSON names, required fields) sources; this module walks
//! the wire format with it. Hand-written because no crate offers reflection over the
//! Kubernetes protobuf types, and kubectl's JSON is not protobuf's JSON mapping: integers are
//! numbers, `Time` is RFC 3339, `Quantity` and `IntOrString` are scalars, `RawExtension` and
//! `FieldsV1` embed JSON, and the CRD schema's `*Or*` unions collapse.
//!
//! What is printed follows Go's `encoding/json` on the Kubernetes types: a field the sender
//! wrote is printed, except zero scalars, which Go's `omitempty` drops unless the field is
//! required (not `Option` in k8s-openapi) or a pointer where zero differs from unset
//! ([`ZERO_MATTERS`]); a zero `metav1.Time` prints as `null` (Go's non-pointer times).
//! Keys come out sorted, as kubectl prints unstructured objects.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // unsigned and float fields: protobuf allows them; Kubernetes' types have none today
pub(crate) enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Double,
    Float,
    /// Index into [`MESSAGES`].
    Message(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Card {
    Single,
    Repeated,
    Map,
}

pub(crate) struct FieldDef {
    pub tag: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub card: Card,
    pub required: bool,
    /// A Go struct embedded `json:",inline"`: its fields are printed in the parent.
    pub inline: bool,
}

pub(crate) struct MessageDef {
    /// k8s-pb's name: the proto package without `k8s.io.` and prost's type name (`api.core.v1.PodIp`).
    pub name: &'static str,
    pub fields: &'static [FieldDef],
}

include!(concat!(env!("OUT_DIR"), "/kube_schema.rs"));

/// Optional fields that are Go pointers where zero is not the default, so a written zero is
/// printed (`replicas: 0` on a scaled-down Deployment, `automountServiceAccountToken: false`).
/// `Type.field` entries apply to that message only; bare names to every message.
pub const ZERO_MATTERS: &[&str] = &[
    "DeploymentSpec.replicas",
    "StatefulSetSpec.replicas",
    "ReplicaSetSpec.replicas",
    "ReplicationControllerSpec.replicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "hostUsers",
    "shareProcessNamespace",
    "setHostnameAsFQDN",
    "PodSpec.priority",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "parallelism",
    "completions",
    "suspend",
    "manualSelector",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "ttlSecondsAfterFinished",
    "startingDeadlineSeconds",
    "defaultMode",
    "KeyToPath.mode",
    "optional",
    "tolerationSeconds",
    "storageClassName",
    "allowVolumeExpansion",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "runAsNonRoot",
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "procMount",
    "expirationSeconds",
    "allocateLoadBalancerNodePorts",
    "publishNotReadyAddresses",
    "EndpointConditions.ready",
    "EndpointConditions.serving",
    "EndpointConditions.terminating",
    "minReadySeconds",
];

const MAX_DEPTH: usize = 100;
/// Go's zero `time.Time` as Unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// An object rendered as JSON, with what could not be rendered exactly.
#[derive(Debug)]
pub struct Rendered {
    pub value: Value,
    /// Fields this build does not know (newer Kubernetes) or could not print; never fatal.
    pub warnings: Vec<String>,
}

/// The protobuf message for a stored `apiVersion` and `kind`, if this build knows it.
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static str> {
    message_index(api_version, kind).map(|i| MESSAGES[i].name)
}

fn message_index(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".to_string(),
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration".to_string(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    };
    find(&format!("{package}.{version}.{kind}"))
}

fn find(name: &str) -> Option<usize> {
    // MESSAGES is sorted by exact name; prost's renaming (`PodIP` → `PodIp`) makes kinds differ
    // in case only, so fall back to a case-insensitive scan.
    MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok().or_else(|| MESSAGES.iter().position(|m| m.name.eq_ignore_ascii_case(name)))
}

/// Render the `raw` bytes of a stored protobuf object (`runtime.Unknown.raw`) as kubectl
/// prints it. Unknown kinds render `metadata` only (field 1 of every top-level kind), with a
/// warning; malformed bytes are an error naming the message and field.
pub fn render_protobuf(api_version: &str, kind: &str, raw: &[u8]) -> Result<Rendered, String> {
    let mut warnings = Vec::new();
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version.into()));
    obj.insert("kind".into(), Value::String(kind.into()));
    match message_index(api_version, kind) {
        Some(idx) => {
            let mut ctx = Ctx { warnings: &mut warnings, depth: 0 };
            if let Value::Object(m) = ctx.message(idx, raw)? {
                obj.extend(m);
            }
        }
        None => {
            warnings.push(format!("{api_version} {kind} is not a kind this build knows: only its metadata is shown"));
            let meta = find("apimachinery.pkg.apis.meta.v1.ObjectMeta").expect("ObjectMeta is in the table");
            let mut ctx = Ctx { warnings: &mut warnings, depth: 0 };
            for f in fields(raw) {
                let (tag, w) = f?;
                if let (1, Wire::Len(b)) = (tag, w) {
                    obj.insert("metadata".into(), ctx.message(meta, b)?);
                }
            }
        }
    }
    Ok(Rendered { value: Value::Object(sort(obj)), warnings })
}

/// Render a stored (decrypted) value: the protobuf envelope through the schema, JSON values
/// (custom resources, some OpenShift kinds) as they are. CBOR values are refused with a reason.
pub fn render(value: &[u8]) -> Result<Rendered, String> {
    use prost::Message;
    if let Some(body) = value.strip_prefix(crate::value::PROTO_MAGIC) {
        let u = crate::value::Unknown::decode(body).map_err(|e| format!("protobuf envelope does not decode as runtime.Unknown: {e}"))?;
        let tm = u.type_meta.unwrap_or_default();
        let (av, kind) = (tm.api_version.unwrap_or_default(), tm.kind.unwrap_or_default());
        return render_protobuf(&av, &kind, u.raw.as_deref().unwrap_or_default());
    }
    if value.first() == Some(&b'{') {
        let v: Value = serde_json::from_slice(value).map_err(|e| format!("JSON value does not parse: {e}"))?;
        let v = match v {
            Value::Object(m) => Value::Object(sort(m)),
            other => other,
        };
        return Ok(Rendered { value: v, warnings: Vec::new() });
    }
    if value.starts_with(crate::value::CBOR_MAGIC) {
        return Err("CBOR-encoded value: printing CBOR objects is not supported (its type meta is shown by `k8s ls`)".into());
    }
    Err("not a Kubernetes object (neither the protobuf envelope nor JSON)".into())
}

fn sort(m: Map<String, Value>) -> Map<String, Value> {
    let b: BTreeMap<String, Value> = m.into_iter().collect();
    b.into_iter().collect()
}

#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The fields of one message, in wire order.
fn fields(b: &[u8]) -> impl Iterator<Item = Result<(u32, Wire<'_>), String>> {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if pos >= b.len() || failed {
            return None;
        }
        let r = (|| {
            let key = varint(b, &mut pos)?;
            let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
            let w = match key & 7 {
                0 => Wire::Varint(varint(b, &mut pos)?),
                1 => {
                    let s = b.get(pos..pos + 8).ok_or("truncated 64-bit field")?;
                    pos += 8;
                    Wire::Fixed64(u64::from_le_bytes(s.try_into().unwrap()))
                }
                2 => {
                    let n = usize::try_from(varint(b, &mut pos)?).map_err(|_| "length out of range")?;
                    let s = pos.checked_add(n).and_then(|end| b.get(pos..end)).ok_or("length runs past the end")?;
                    pos += n;
                    Wire::Len(s)
                }
                5 => {
                    let s = b.get(pos..pos + 4).ok_or("truncated 32-bit field")?;
                    pos += 4;
                    Wire::Fixed32(u32::from_le_bytes(s.try_into().unwrap()))
                }
                t => return Err(format!("wire type {t} is not used by Kubernetes")),
            };
            Ok((tag, w))
        })();
        failed = r.is_err();
        Some(r)
    })
}

struct Ctx<'w> {
    warnings: &'w mut Vec<String>,
    depth: usize,
}

enum Acc {
    One(Value, bool),
    Many(Vec<Value>),
    Map(Map<String, Value>),
}

impl Ctx<'_> {
    fn message(&mut self, idx: usize, b: &[u8]) -> Result<Value, String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!("objects nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let r = self.message_inner(idx, b);
        self.depth -= 1;
        r
    }

    fn message_inner(&mut self, idx: usize, b: &[u8]) -> Result<Value, String> {
        let def = &MESSAGES[idx];
        let at = |e: String| format!("{}: {e}", def.name);
        if let Some(v) = self.special(def.name, b).map_err(at)? {
            return Ok(v);
        }
        let mut acc: BTreeMap<&'static str, (Acc, &FieldDef)> = BTreeMap::new();
        let mut inlined = Vec::new();
        for f in fields(b) {
            let (tag, w) = f.map_err(at)?;
            let Some(fd) = def.fields.iter().find(|f| f.tag == tag) else {
                // Removed fields linger as zero values in old objects (ObjectMeta's clusterName).
                if matches!(w, Wire::Len([]) | Wire::Varint(0)) {
                    continue;
                }
                let w = format!("{}: field {tag} is not known to this build (newer Kubernetes?); left out", def.name);
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
                continue;
            };
            let err = |e: String| format!("{}.{}: {e}", def.name, fd.json);
            match fd.card {
                Card::Single if fd.inline => {
                    if let (Value::Object(m), _) = self.value(fd.ty, w).map_err(err)? {
                        inlined.push(m);
                    }
                }
                Card::Single => {
                    let (v, zero) = self.value(fd.ty, w).map_err(err)?;
                    acc.insert(fd.json, (Acc::One(v, zero), fd));
                }
                Card::Repeated => {
                    let items = self.repeated(fd.ty, w).map_err(err)?;
                    match acc.entry(fd.json).or_insert((Acc::Many(Vec::new()), fd)) {
                        (Acc::Many(list), _) => list.extend(items),
                        _ => unreachable!(),
                    }
                }
                Card::Map => {
                    let Wire::Len(entry) = w else { return Err(err("map entry is not length-delimited".into())) };
                    let (mut k, mut v) = (String::new(), None);
                    for e in fields(entry) {
                        match e.map_err(err)? {
                            (1, Wire::Len(s)) => k = String::from_utf8_lossy(s).into_owned(),
                            (2, w) => v = Some(self.value(fd.ty, w).map_err(err)?.0),
                            _ => {}
                        }
                    }
                    let v = v.unwrap_or_else(|| zero_of(fd.ty));
                    match acc.entry(fd.json).or_insert((Acc::Map(Map::new()), fd)) {
                        (Acc::Map(m), _) => {
                            m.insert(k, v);
                        }
                        _ => unreachable!(),
                    }
                }
            }
        }
        let short = def.name.rsplit('.').next().unwrap_or(def.name);
        let mut out = Map::new();
        for (name, (a, fd)) in acc {
            match a {
                // Go's `omitzero` (Kubernetes 1.34+: no more `creationTimestamp: null`).
                Acc::One(Value::Null, _) if short == "ObjectMeta" && name == "creationTimestamp" => {}
                Acc::One(v, zero) => {
                    if !zero || fd.required || zero_matters(short, name) {
                        out.insert(name.into(), v);
                    }
                }
                Acc::Many(list) => {
                    if !list.is_empty() || fd.required {
                        out.insert(name.into(), Value::Array(list));
                    }
                }
                Acc::Map(m) => {
                    if !m.is_empty() || fd.required {
                        out.insert(name.into(), Value::Object(sort(m)));
                    }
                }
            }
        }
        for m in inlined {
            for (k, v) in m {
                out.entry(k).or_insert(v);
            }
        }
        Ok(Value::Object(sort(out)))
    }

    /// A single value and whether it is its type's zero (messages never are: a written
    /// message is printed, as Go prints a set pointer or a struct).
    fn value(&mut self, ty: Ty, w: Wire<'_>) -> Result<(Value, bool), String> {
        let bad = || format!("wire type does not match {ty:?}");
        Ok(match (ty, w) {
            (Ty::String, Wire::Len(s)) => (Value::String(String::from_utf8_lossy(s).into_owned()), s.is_empty()),
            (Ty::Bytes, Wire::Len(s)) => (Value::String(base64::engine::general_purpose::STANDARD.encode(s)), s.is_empty()),
            (Ty::Bool, Wire::Varint(v)) => (Value::Bool(v != 0), v == 0),
            (Ty::Int32, Wire::Varint(v)) => (Value::from(v as i64 as i32), v as i32 == 0),
            (Ty::Int64, Wire::Varint(v)) => (Value::from(v as i64), v == 0),
            (Ty::Uint32, Wire::Varint(v)) => (Value::from(v as u32), v as u32 == 0),
            (Ty::Uint64, Wire::Varint(v)) => (Value::from(v), v == 0),
            (Ty::Int32, Wire::Fixed32(v)) => (Value::from(v as i32), v == 0),
            (Ty::Uint32, Wire::Fixed32(v)) => (Value::from(v), v == 0),
            (Ty::Int64, Wire::Fixed64(v)) => (Value::from(v as i64), v == 0),
            (Ty::Uint64, Wire::Fixed64(v)) => (Value::from(v), v == 0),
            (Ty::Double, Wire::Fixed64(v)) => float(f64::from_bits(v)),
            (Ty::Float, Wire::Fixed32(v)) => float(f64::from(f32::from_bits(v))),
            (Ty::Message(i), Wire::Len(s)) => (self.message(i, s)?, false),
            _ => return Err(bad()),
        })
    }

    fn repeated(&mut self, ty: Ty, w: Wire<'_>) -> Result<Vec<Value>, String> {
        let packed_scalar = matches!(ty, Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Uint32 | Ty::Uint64 | Ty::Double | Ty::Float);
        match (packed_scalar, w) {
            (true, Wire::Len(s)) => {
                let mut out = Vec::new();
                let mut pos = 0;
                while pos < s.len() {
                    let w = match ty {
                        Ty::Double => {
                            let b = s.get(pos..pos + 8).ok_or("truncated packed double")?;
                            pos += 8;
                            Wire::Fixed64(u64::from_le_bytes(b.try_into().unwrap()))
                        }
                        Ty::Float => {
                            let b = s.get(pos..pos + 4).ok_or("truncated packed float")?;
                            pos += 4;
                            Wire::Fixed32(u32::from_le_bytes(b.try_into().unwrap()))
                        }
                        _ => Wire::Varint(varint(s, &mut pos)?),
                    };
                    out.push(self.value(ty, w)?.0);
                }
                Ok(out)
            }
            _ => Ok(vec![self.value(ty, w)?.0]),
        }
    }

    /// Types whose JSON form is not their message form.
    fn special(&mut self, name: &str, b: &[u8]) -> Result<Option<Value>, String> {
        if !name.starts_with("apimachinery.pkg.") && !name.starts_with("apiextensions_apiserver.") {
            return Ok(None);
        }
        let all: Vec<(u32, Wire<'_>)> = fields(b).collect::<Result<_, _>>()?;
        let get = |t: u32| all.iter().rev().find(|(tag, _)| *tag == t).map(|(_, w)| *w);
        let int = |t: u32| match get(t) {
            Some(Wire::Varint(v)) => v as i64,
            _ => 0,
        };
        let bytes = |t: u32| match get(t) {
            Some(Wire::Len(s)) => Some(s),
            _ => None,
        };
        let text = |t: u32| bytes(t).map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default();
        let embedded = |t: u32| -> Value {
            match bytes(t) {
                None | Some([]) => Value::Null,
                Some(s) => serde_json::from_slice(s).unwrap_or_else(|_| Value::String(base64::engine::general_purpose::STANDARD.encode(s))),
            }
        };
        Ok(Some(match () {
            // kube-apiserver writes a zero time as an empty message (and reads nanoseconds of
            // Time as zero: JSON has only seconds).
            _ if name.ends_with("meta.v1.Time") => {
                let (s, n) = (int(1), int(2));
                if b.is_empty() || (s == GO_ZERO_TIME && n == 0) {
                    Value::Null
                } else {
                    Value::String(crate::value::rfc3339(s))
                }
            }
            _ if name.ends_with("meta.v1.MicroTime") => {
                let (s, n) = (int(1), int(2));
                if b.is_empty() || (s == GO_ZERO_TIME && n == 0) {
                    Value::Null
                } else {
                    let base = crate::value::rfc3339(s);
                    Value::String(format!("{}.{:06}Z", base.trim_end_matches('Z'), n / 1000))
                }
            }
            _ if name.ends_with("meta.v1.Duration") => Value::String(go_duration(int(1))),
            _ if name.ends_with("meta.v1.FieldsV1") => embedded(1),
            _ if name.ends_with("api.resource.Quantity") || name.ends_with("api.resource.QuantityValue") => Value::String(text(1)),
            _ if name.ends_with("util.intstr.IntOrString") => {
                if int(1) == 1 {
                    Value::String(text(3))
                } else {
                    Value::from(int(2) as i32)
                }
            }
            _ if name.ends_with("runtime.RawExtension") => match bytes(1) {
                Some(s) if s.starts_with(crate::value::PROTO_MAGIC) => {
                    self.warnings.push(format!("{name}: an embedded protobuf object is shown as base64"));
                    Value::String(base64::engine::general_purpose::STANDARD.encode(s))
                }
                _ => embedded(1),
            },
            _ if name.starts_with("apiextensions_apiserver") => {
                let json_schema = find(&format!("{}.JsonSchemaProps", name.rsplit_once('.').unwrap().0));
                let schema = |this: &mut Self, t: u32| -> Result<Option<Value>, String> {
                    match (bytes(t), json_schema) {
                        (Some(s), Some(i)) => this.message(i, s).map(Some),
                        _ => Ok(None),
                    }
                };
                match name.rsplit('.').next().unwrap() {
                    "Json" => embedded(1),
                    "JsonSchemaPropsOrBool" => match schema(self, 2)? {
                        Some(s) => s,
                        None => Value::Bool(int(1) != 0),
                    },
                    "JsonSchemaPropsOrArray" => {
                        let list: Vec<Value> = all
                            .iter()
                            .filter(|(t, _)| *t == 2)
                            .map(|(_, w)| match (w, json_schema) {
                                (Wire::Len(s), Some(i)) => self.message(i, s),
                                _ => Err("malformed JSONSchemaPropsOrArray".into()),
                            })
                            .collect::<Result<_, _>>()?;
                        if list.is_empty() {
                            schema(self, 1)?.unwrap_or(Value::Null)
                        } else {
                            Value::Array(list)
                        }
                    }
                    "JsonSchemaPropsOrStringArray" => {
                        let list: Vec<Value> = all
                            .iter()
                            .filter_map(|(t, w)| match (t, w) {
                                (2, Wire::Len(s)) => Some(Value::String(String::from_utf8_lossy(s).into_owned())),
                                _ => None,
                            })
                            .collect();
                        if list.is_empty() {
                            schema(self, 1)?.unwrap_or(Value::Null)
                        } else {
                            Value::Array(list)
                        }
                    }
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        }))
    }
}

fn zero_matters(short: &str, field: &str) -> bool {
    ZERO_MATTERS.iter().any(|e| match e.split_once('.') {
        Some((t, f)) => f == field && t.eq_ignore_ascii_case(short),
        None => *e == field,
    })
}

fn zero_of(ty: Ty) -> Value {
    match ty {
        Ty::String => Value::String(String::new()),
        Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Message(_) => Value::Object(Map::new()),
        _ => Value::from(0),
    }
}

fn float(f: f64) -> (Value, bool) {
    (Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null), f == 0.0)
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let mut s = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 { ("ns", 1) } else if u < 1_000_000 { ("µs", 1_000) } else { ("ms", 1_000_000) };
        s.push_str(&frac(u, div));
        s.push_str(unit);
    } else {
        let secs = u / 1_000_000_000;
        let (h, m) = (secs / 3600, secs / 60 % 60);
        if h > 0 {
            s.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            s.push_str(&format!("{m}m"));
        }
        s.push_str(&frac(u % 60_000_000_000, 1_000_000_000));
        s.push('s');
    }
    if neg {
        s.insert(0, '-');
    }
    s
}

fn frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let rest = v % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_knows_the_common_kinds() {
        for (av, k) in [("v1", "Pod"), ("apps/v1", "Deployment"), ("batch/v1", "Job"), ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), ("apiregistration.k8s.io/v1", "APIService"), ("v1", "Secret"), ("networking.k8s.io/v1", "Ingress")] {
            assert!(message_for(av, k).is_some(), "{av} {k}");
        }
        let status = &MESSAGES[find("api.core.v1.PodStatus").unwrap()];
        let names: Vec<&str> = status.fields.iter().map(|f| f.json).collect();
        assert!(names.contains(&"podIP") && names.contains(&"podIPs") && names.contains(&"qosClass"), "{names:?}");
        let props = &MESSAGES[find("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps").unwrap()];
        assert!(props.fields.iter().any(|f| f.json == "$ref") && props.fields.iter().any(|f| f.json == "x-kubernetes-preserve-unknown-fields"));
        let cs = &MESSAGES[find("api.core.v1.ContainerStatus").unwrap()];
        assert!(cs.fields.iter().find(|f| f.json == "restartCount").unwrap().required);
        // The join with k8s-openapi names all but the kinds it has no definition for (alpha and
        // beta versions it dropped, metrics, internal types); a broken join would name most.
        let total: usize = MESSAGES.iter().map(|m| m.fields.len()).sum();
        assert!(FALLBACK_NAMED_FIELDS * 6 < total, "{FALLBACK_NAMED_FIELDS} of {total} fields named by the fallback rule");
    }

    #[test]
    fn durations_print_like_go() {
        for (n, s) in [(0, "0s"), (1_500_000_000, "1.5s"), (3_600_000_000_000, "1h0m0s"), (150_000_000, "150ms"), (90_000_000_000, "1m30s"), (-2_000_000_000, "-2s"), (1_500, "1.5µs")] {
            assert_eq!(go_duration(n), s);
        }
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        for raw in [&[0x0a, 0x05, 0x01][..], &[0xff; 12][..], &[0x0b][..]] {
            assert!(render_protobuf("v1", "Pod", raw).is_err());
        }
    }
}
