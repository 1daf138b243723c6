//! How far encryption at rest has got in a snapshot: for every resource an
//! EncryptionConfiguration lists, the values at the snapshot's latest revision (the latest live
//! revision of each key; deleted keys do not count) by state: plain, each configured provider
//! and key, or a key the configuration does not have. Values are classified by their prefix,
//! not decrypted, so KMS values count like the others and no key material is needed beyond the
//! file. One pass over the snapshot, with bbolt's structural check on the way; memory holds one
//! small entry per key of a listed resource, never values.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::encryption::{Class, EncryptionConfig, Transformer};
use crate::resources::{self, GroupResource};
use etcd_data::schema::{self, KeyValueRef, Revision, RevisionKey};

/// The state of one resource, or of the whole snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Condition {
    /// Every value uses the current write key (or, when the write provider is identity, is plain).
    EncryptionCompleted,
    /// Some value does not.
    EncryptionInProgress,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    /// As the configuration lists it: `secrets`, `deployments.apps`, `*.apps`, `*.`, `*.*`.
    pub resource: String,
    /// The write state: `aescbc:key1`, `aesgcm:k`, `secretbox:k`, `kms:v2:name`, or `identity`.
    pub write: String,
    pub status: Condition,
    /// Live values of this resource at the latest revision.
    pub total: u64,
    /// Of which in the write state.
    pub at_write_key: u64,
    /// Values without a `k8s:enc:` prefix.
    pub plain: u64,
    /// Values under each provider and key of the configuration (`aescbc:key1`, `kms:v1:name`).
    pub encrypted: BTreeMap<String, u64>,
    /// Values under a provider or key the configuration does not list (best-effort label).
    pub not_in_config: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The snapshot's latest revision.
    pub revision: i64,
    pub status: Condition,
    pub resources: Vec<ResourceStatus>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Bolt(#[from] bolt::Error),
    #[error("{0}")]
    Damaged(String),
}

/// Count the snapshot at `path` against `config`.
pub fn status(path: &Path, config: &EncryptionConfig) -> Result<StatusReport, StatusError> {
    let db = bolt::Db::open(path)?;
    let listed = config.listed_resources();
    let rows: Vec<(GroupResource, Transformer<'_>)> = listed
        .iter()
        .map(|s| {
            let gr = GroupResource::parse(s);
            let t = config.transformer_for(&gr);
            (gr, t)
        })
        .collect();
    // Per storage resource: the row its values count under (None: not configured).
    let mut route: HashMap<GroupResource, Option<usize>> = HashMap::new();
    let mut classes: Vec<Class> = Vec::new();
    let mut class_ids: HashMap<Class, u32> = HashMap::new();
    // Key -> (latest revision, deleted, row, class).
    let mut latest: HashMap<Vec<u8>, (Revision, bool, u32, u32)> = HashMap::new();
    let mut revision = 0i64;
    let mut malformed = 0u64;
    let mut first_malformed = None;
    let report = bolt::walk(&db, &mut |p: &[Vec<u8>], k: &[u8], v: Option<&[u8]>| {
        let (1, Some(v)) = (p.len(), v) else { return };
        if p[0] != schema::KEY {
            return;
        }
        let bad = |what: String, malformed: &mut u64, first: &mut Option<String>| {
            *malformed += 1;
            first.get_or_insert(what);
        };
        let rk = match RevisionKey::parse(k) {
            Ok(rk) => rk,
            Err(e) => return bad(format!("key bucket: {e}"), &mut malformed, &mut first_malformed),
        };
        revision = revision.max(rk.rev.main);
        if v.is_empty() {
            return; // the empty marker of a restore's --bump-revision
        }
        let Some(kv) = KeyValueRef::decode(v) else {
            return bad(format!("key bucket: revision {} holds no valid KeyValue", rk.rev.main), &mut malformed, &mut first_malformed);
        };
        if let Some(slot) = latest.get_mut(kv.key) {
            // A later revision of a key already counted.
            let row = slot.2 as usize;
            let class = if rk.tombstone { 0 } else { intern(&mut classes, &mut class_ids, rows[row].1.classify(kv.value)) };
            *slot = (rk.rev, rk.tombstone, row as u32, class);
            return;
        }
        let Some(gr) = resources::of_key(kv.key) else { return };
        let row = *route.entry(gr.clone()).or_insert_with(|| {
            let rule = config.transformer_for(&gr).rule;
            rule.and_then(|r| rows.iter().position(|(g, _)| *g == r))
        });
        let Some(row) = row else { return };
        let class = if rk.tombstone { 0 } else { intern(&mut classes, &mut class_ids, rows[row].1.classify(kv.value)) };
        latest.insert(kv.key.to_vec(), (rk.rev, rk.tombstone, row as u32, class));
    });
    if let Some(f) = report.faults.first() {
        return Err(StatusError::Damaged(format!("{}: snapshot is damaged: {} faults; first: {f}", path.display(), report.fault_count)));
    }
    if let Some(first) = first_malformed {
        return Err(StatusError::Damaged(format!("{}: {malformed} malformed key-bucket entries; first: {first}", path.display())));
    }
    let mut out: Vec<ResourceStatus> = listed
        .iter()
        .zip(&rows)
        .map(|(s, (_, t))| ResourceStatus {
            resource: s.clone(),
            write: t.write_label(),
            status: Condition::EncryptionCompleted,
            total: 0,
            at_write_key: 0,
            plain: 0,
            encrypted: BTreeMap::new(),
            not_in_config: BTreeMap::new(),
        })
        .collect();
    for (_, (_, deleted, row, class)) in latest {
        if deleted {
            continue;
        }
        let (r, t) = (&mut out[row as usize], &rows[row as usize].1);
        let c = &classes[class as usize];
        r.total += 1;
        if t.is_write_state(c) {
            r.at_write_key += 1;
        }
        match c {
            Class::Plain => r.plain += 1,
            Class::Configured(l) => *r.encrypted.entry(l.clone()).or_default() += 1,
            Class::NotInConfig(l) => *r.not_in_config.entry(l.clone()).or_default() += 1,
        }
    }
    for r in &mut out {
        if r.at_write_key != r.total {
            r.status = Condition::EncryptionInProgress;
        }
    }
    let status = if out.iter().all(|r| r.status == Condition::EncryptionCompleted) { Condition::EncryptionCompleted } else { Condition::EncryptionInProgress };
    Ok(StatusReport { revision, status, resources: out, warnings: report.warnings })
}

fn intern(classes: &mut Vec<Class>, ids: &mut HashMap<Class, u32>, c: Class) -> u32 {
    if let Some(id) = ids.get(&c) {
        return *id;
    }
    let id = classes.len() as u32;
    ids.insert(c.clone(), id);
    classes.push(c);
    id
}
