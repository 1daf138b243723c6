//! Listing the Kubernetes objects of a snapshot straight from its bbolt file: the latest
//! revision of every live key (tombstones remove), decrypted when a configuration is given,
//! with the metadata its value carries. One pass over the `key` bucket; memory holds one small
//! summary per live key, never values.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use serde::Serialize;

use crate::encryption::{unseal, EncryptionConfig, Sealed};
use crate::keys::{self, KeyInfo};
use crate::value::{decode, Decoded};

#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub size: usize,
    /// `aescbc:key1`, `kms:v2:name`, or None for plain values.
    pub encryption: Option<String>,
    pub decoded: Option<Decoded>,
    /// Why the value could not be read (decryption or decoding), per object.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub resource: Option<String>,
}

impl Filter {
    fn wants(&self, i: &KeyInfo) -> bool {
        let res_ok = self.resource.as_ref().is_none_or(|r| {
            i.resource == *r || i.resource.split('.').next() == Some(r.as_str()) || (r.ends_with('s') && i.resource.starts_with(r.as_str()))
        });
        res_ok && self.namespace.as_ref().is_none_or(|n| i.namespace.as_deref() == Some(n.as_str()))
    }
}

/// Why a listing failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Bolt(#[from] bolt::Error),
    #[error("{0}")]
    Damaged(String),
}

/// The live objects of the snapshot at `path`, in key order.
pub fn list(path: &Path, filter: &Filter, config: Option<&EncryptionConfig>) -> Result<(Vec<Object>, Vec<String>), ListError> {
    let db = bolt::Db::open(path)?;
    let mut warnings = db.warnings();
    let bucket = db.bucket(&[etcd_data::schema::KEY]).map_err(|f| ListError::Damaged(f.to_string()))?;
    let Some(bucket) = bucket else { return Ok((vec![], warnings)) };
    let mut live: BTreeMap<Vec<u8>, Object> = BTreeMap::new();
    let mut c = bucket.cursor().map_err(|f| ListError::Damaged(f.to_string()))?;
    let mut bad = 0usize;
    loop {
        let e = match c.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(f) => {
                warnings.push(format!("stopped reading the key bucket: {f}"));
                break;
            }
        };
        let Ok(rk) = etcd_data::schema::RevisionKey::parse(e.key) else {
            bad += 1;
            continue;
        };
        if e.value.is_empty() {
            continue; // etcdutl's bump marker
        }
        let Ok(kv) = etcd_data::schema::KeyValue::decode(e.value) else {
            bad += 1;
            continue;
        };
        if rk.tombstone {
            live.remove(&kv.key);
            continue;
        }
        let Some(info) = keys::parse(&kv.key) else { continue };
        if !filter.wants(&info) {
            continue;
        }
        let (encryption, decoded, error) = summarize(&kv.key, &kv.value, config);
        live.insert(
            kv.key.clone(),
            Object {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                info,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
                size: kv.value.len(),
                encryption,
                decoded,
                error,
            },
        );
    }
    if bad > 0 {
        warnings.push(format!("{bad} key-bucket entries were malformed and skipped (run `quorum snapshot verify`)"));
    }
    Ok((live.into_values().collect(), warnings))
}

fn summarize(key: &[u8], value: &[u8], config: Option<&EncryptionConfig>) -> (Option<String>, Option<Decoded>, Option<String>) {
    let enc = match unseal(value) {
        Ok(Sealed::Plain(_)) => None,
        Ok(Sealed::Encrypted { provider, key, .. }) => Some(format!("{provider}:{key}")),
        Err(e) => return (None, None, Some(e)),
    };
    let plain = match (&enc, config) {
        (None, _) => value.to_vec(),
        (Some(_), Some(c)) => match c.decrypt(value, key) {
            Ok(p) => p,
            Err(e) => return (enc, None, Some(e.to_string())),
        },
        (Some(_), None) => return (enc, None, None),
    };
    match decode(&plain) {
        Ok(d) => (enc, Some(d), None),
        Err(e) => (enc, None, Some(e)),
    }
}
