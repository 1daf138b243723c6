//! Per-group verification: the number of keys and a SHA-256 over the group's `(key,
//! plaintext)` pairs in key order (each as a big-endian u64 length and the bytes), computed the
//! same way on the source (the backup) and on the target.
//!
//! Plaintexts, not stored bytes: a re-encrypted value differs in bytes on every write but must
//! decrypt to the source's. A target value that does not decrypt with the target's
//! configuration is hashed as a marker plus its stored bytes, so it can never match.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The result for one namespace / prefix.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupCheck {
    pub group: String,
    pub source_keys: u64,
    pub target_keys: u64,
    /// Keys left out on both sides: conflicts kept as the target has them (`--on-conflict skip`).
    pub skipped: u64,
    /// Target values that did not decrypt with the target's configuration.
    pub target_undecryptable: u64,
    pub source_hash: String,
    pub target_hash: String,
    pub ok: bool,
}

/// Running digests per group. Keys must be added in key order within each group.
#[derive(Default)]
pub struct Digests {
    groups: BTreeMap<String, (u64, Sha256, u64)>,
}

impl Digests {
    pub fn add(&mut self, group: &str, key: &[u8], plain: Option<&[u8]>, stored: &[u8]) {
        let e = self.groups.entry(group.to_string()).or_insert_with(|| (0, Sha256::new(), 0));
        e.0 += 1;
        e.1.update((key.len() as u64).to_be_bytes());
        e.1.update(key);
        match plain {
            Some(p) => {
                e.1.update((p.len() as u64).to_be_bytes());
                e.1.update(p);
            }
            None => {
                e.2 += 1;
                e.1.update(u64::MAX.to_be_bytes());
                e.1.update(stored);
            }
        }
    }

    /// (keys, hex sha256, undecryptable) per group.
    pub fn finish(self) -> BTreeMap<String, (u64, String, u64)> {
        self.groups.into_iter().map(|(g, (n, h, u))| (g, (n, hex::encode(h.finalize()), u))).collect()
    }
}

/// The digest of no keys.
pub fn empty_hash() -> String {
    hex::encode(Sha256::new().finalize())
}

/// Compare per group; `groups` are always reported (even when empty on both sides).
pub fn compare(groups: &[String], source: Digests, target: Digests, skipped: &BTreeMap<String, u64>) -> Vec<GroupCheck> {
    let s = source.finish();
    let t = target.finish();
    let mut names: Vec<String> = groups.to_vec();
    names.extend(s.keys().cloned());
    names.extend(t.keys().cloned());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|g| {
            let (sk, sh, _) = s.get(&g).cloned().unwrap_or((0, empty_hash(), 0));
            let (tk, th, tu) = t.get(&g).cloned().unwrap_or((0, empty_hash(), 0));
            GroupCheck { ok: sk == tk && sh == th && tu == 0, skipped: skipped.get(&g).copied().unwrap_or(0), group: g, source_keys: sk, target_keys: tk, target_undecryptable: tu, source_hash: sh, target_hash: th }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_equal_hash_and_order_matters() {
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("ns", b"k1", Some(b"v"), b"x");
        a.add("ns", b"k2", Some(b"w"), b"y");
        b.add("ns", b"k1", Some(b"v"), b"other bytes, same plaintext");
        b.add("ns", b"k2", Some(b"w"), b"z");
        let r = compare(&["empty".into()], a, b, &BTreeMap::new());
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|c| c.ok), "{r:?}");
        assert_eq!(r[0].source_hash, empty_hash());

        // Boundaries are part of the hash: ("k1","vk2") != ("k1v","k2").
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("g", b"k1", Some(b"vk2"), b"");
        b.add("g", b"k1v", Some(b"k2"), b"");
        assert!(!compare(&[], a, b, &BTreeMap::new())[0].ok);

        // An undecryptable target value never matches.
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("g", b"k", Some(b"v"), b"v");
        b.add("g", b"k", None, b"v");
        let r = compare(&[], a, b, &BTreeMap::new());
        assert!(!r[0].ok);
        assert_eq!(r[0].target_undecryptable, 1);
    }
}
