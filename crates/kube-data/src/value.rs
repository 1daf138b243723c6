//! Stored values: the protobuf envelope (`k8s\0` + `runtime.Unknown`), JSON, CBOR, and the
//! encryption-at-rest envelope around any of them.
//!
//! `runtime.Unknown` (proto2, apimachinery `pkg/runtime/generated.proto`): 1 typeMeta
//! {1 apiVersion, 2 kind}, 2 raw (the typed object), 3 contentEncoding, 4 contentType. Every
//! built-in object's field 1 is its `ObjectMeta` (1 name, 2 generateName, 3 namespace,
//! 4 selfLink, 5 uid, 6 resourceVersion, 7 generation, 8 creationTimestamp {1 seconds, 2 nanos}).
//! Detection is strict, in this order: `k8s:enc:` → encrypted, `k8s\0` → protobuf,
//! `d9 d9 f7` → CBOR, `{` → JSON, else unknown.

use serde::Serialize;

pub const PROTO_MAGIC: &[u8] = b"k8s\x00";
pub const ENC_PREFIX: &[u8] = b"k8s:enc:";
pub const CBOR_MAGIC: &[u8] = &[0xd9, 0xd9, 0xf7];

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    pub api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub kind: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    pub content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub content_type: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Time {
    #[prost(int64, optional, tag = "1")]
    pub seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    pub nanos: Option<i32>,
}

/// The ObjectMeta fields a listing needs (others are skipped by the decoder).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub namespace: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub uid: Option<String>,
    #[prost(int64, optional, tag = "7")]
    pub generation: Option<i64>,
    #[prost(message, optional, tag = "8")]
    pub creation_timestamp: Option<Time>,
}

/// Field 1 of any built-in object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WithMeta {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
}

/// How a value is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Protobuf,
    Json,
    Cbor,
    Unknown,
}

/// What a (decrypted) value says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decoded {
    pub encoding: Encoding,
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    /// RFC 3339, seconds precision.
    pub creation_timestamp: Option<String>,
}

pub(crate) fn rfc3339(secs: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), UTC.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Decode an unencrypted value's envelope and metadata. Errors name what is wrong.
pub fn decode(v: &[u8]) -> Result<Decoded, String> {
    use prost::Message;
    let empty = |encoding| Decoded { encoding, api_version: None, kind: None, name: None, namespace: None, uid: None, creation_timestamp: None };
    if let Some(body) = v.strip_prefix(PROTO_MAGIC) {
        let u = Unknown::decode(body).map_err(|e| format!("protobuf envelope does not decode as runtime.Unknown: {e}"))?;
        let tm = u.type_meta.unwrap_or_default();
        let meta = u.raw.as_deref().map(WithMeta::decode).transpose().map_err(|e| format!("object body does not decode: {e}"))?.and_then(|w| w.metadata);
        let meta = meta.unwrap_or_default();
        return Ok(Decoded {
            encoding: Encoding::Protobuf,
            api_version: tm.api_version,
            kind: tm.kind,
            name: meta.name,
            namespace: meta.namespace.filter(|n| !n.is_empty()),
            uid: meta.uid,
            creation_timestamp: meta.creation_timestamp.and_then(|t| t.seconds).map(rfc3339),
        });
    }
    if v.starts_with(CBOR_MAGIC) {
        return Ok(empty(Encoding::Cbor));
    }
    if v.first() == Some(&b'{') {
        // Only the type and identity fields are kept; serde skips the rest without building it.
        #[derive(serde::Deserialize)]
        struct Meta {
            name: Option<String>,
            namespace: Option<String>,
            uid: Option<String>,
            #[serde(rename = "creationTimestamp")]
            creation_timestamp: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(rename = "apiVersion")]
            api_version: Option<String>,
            kind: Option<String>,
            metadata: Option<Meta>,
        }
        let h: Head = serde_json::from_slice(v).map_err(|e| format!("JSON value does not parse: {e}"))?;
        let m = h.metadata.unwrap_or(Meta { name: None, namespace: None, uid: None, creation_timestamp: None });
        return Ok(Decoded {
            encoding: Encoding::Json,
            api_version: h.api_version,
            kind: h.kind,
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            creation_timestamp: m.creation_timestamp,
        });
    }
    Ok(empty(Encoding::Unknown))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1498504170), "2017-06-26T19:09:30Z");
    }
}
