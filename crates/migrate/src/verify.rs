//! Per-group verification: the number of keys and a SHA-256 over the group's keys in key
//! order, each as a big-endian u64 length, the key, and the SHA-256 of its plaintext (a tag
//! byte tells a plaintext digest from an undecryptable value's), computed the same way on the
//! source (the backup) and on the target.
//!
//! Plaintexts, not stored bytes: a re-encrypted value differs in bytes on every write but must
//! decrypt to the source's. A target value that does not decrypt with the target's
//! configuration is hashed as a marker plus the digest of its stored bytes, so it can never
//! match. Only per-key digests (32 bytes) are ever kept, never values.
//!
//! What is compared is the source's selection: a partial migration's target may hold keys in
//! a selected namespace or prefix that the source never had (on a live Kubernetes target the
//! controllers create Events, the `default` ServiceAccount or `kube-root-ca.crt` as soon as a
//! Namespace exists). Those are counted per group as `target_only` and are not a difference.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A SHA-256.
pub type Digest32 = [u8; 32];

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// What a key's value is, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueDigest {
    /// SHA-256 of the plaintext.
    Plain(Digest32),
    /// The value does not decrypt: SHA-256 of the stored bytes (never equal to a plaintext's).
    Undecryptable(Digest32),
}

/// The result for one namespace / prefix.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupCheck {
    pub group: String,
    pub source_keys: u64,
    /// Keys of the source's selection found in the target (compared).
    pub target_keys: u64,
    /// Keys left out on both sides: conflicts kept as the target has them (`--on-conflict skip`).
    pub skipped: u64,
    /// Keys in the group that the target holds and the source does not (left alone, not compared).
    pub target_only: u64,
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
    pub fn add(&mut self, group: &str, key: &[u8], value: ValueDigest) {
        let e = match self.groups.get_mut(group) {
            Some(e) => e,
            None => self.groups.entry(group.to_string()).or_insert_with(|| (0, Sha256::new(), 0)),
        };
        e.0 += 1;
        e.1.update((key.len() as u64).to_be_bytes());
        e.1.update(key);
        match value {
            ValueDigest::Plain(d) => {
                e.1.update([0u8]);
                e.1.update(d);
            }
            ValueDigest::Undecryptable(d) => {
                e.2 += 1;
                e.1.update([1u8]);
                e.1.update(d);
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
/// `skipped` and `target_only` are per-group counts reported alongside (not compared).
pub fn compare(groups: &[String], source: Digests, target: Digests, skipped: &BTreeMap<String, u64>, target_only: &BTreeMap<String, u64>) -> Vec<GroupCheck> {
    let s = source.finish();
    let t = target.finish();
    let mut names: Vec<String> = groups.to_vec();
    names.extend(s.keys().cloned());
    names.extend(t.keys().cloned());
    names.extend(target_only.keys().cloned());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|g| {
            let (sk, sh, _) = s.get(&g).cloned().unwrap_or((0, empty_hash(), 0));
            let (tk, th, tu) = t.get(&g).cloned().unwrap_or((0, empty_hash(), 0));
            GroupCheck {
                ok: sk == tk && sh == th && tu == 0,
                skipped: skipped.get(&g).copied().unwrap_or(0),
                target_only: target_only.get(&g).copied().unwrap_or(0),
                group: g,
                source_keys: sk,
                target_keys: tk,
                target_undecryptable: tu,
                source_hash: sh,
                target_hash: th,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[u8]) -> ValueDigest {
        ValueDigest::Plain(digest(v))
    }

    #[test]
    fn equal_content_equal_hash_and_order_matters() {
        let none = BTreeMap::new();
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("ns", b"k1", p(b"v"));
        a.add("ns", b"k2", p(b"w"));
        b.add("ns", b"k1", p(b"v"));
        b.add("ns", b"k2", p(b"w"));
        let r = compare(&["empty".into()], a, b, &none, &none);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|c| c.ok), "{r:?}");
        assert_eq!(r[0].source_hash, empty_hash());

        // Boundaries are part of the hash: ("k1","vk2") != ("k1v","k2").
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("g", b"k1", p(b"vk2"));
        b.add("g", b"k1v", p(b"k2"));
        assert!(!compare(&[], a, b, &none, &none)[0].ok);

        // A different value under the same key differs.
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("g", b"k", p(b"v"));
        b.add("g", b"k", p(b"w"));
        assert!(!compare(&[], a, b, &none, &none)[0].ok);

        // An undecryptable target value never matches, even with the plaintext's bytes.
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("g", b"k", p(b"v"));
        b.add("g", b"k", ValueDigest::Undecryptable(digest(b"v")));
        let r = compare(&[], a, b, &none, &none);
        assert!(!r[0].ok);
        assert_eq!(r[0].target_undecryptable, 1);
    }

    #[test]
    fn target_only_keys_are_reported_not_compared() {
        let mut a = Digests::default();
        let mut b = Digests::default();
        a.add("ns", b"k1", p(b"v"));
        b.add("ns", b"k1", p(b"v"));
        let only: BTreeMap<String, u64> = [("ns".to_string(), 2), ("other".to_string(), 1)].into();
        let r = compare(&["ns".into()], a, b, &BTreeMap::new(), &only);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|c| c.ok), "{r:?}");
        assert_eq!((r[0].group.as_str(), r[0].target_only, r[0].target_keys), ("ns", 2, 1));
        assert_eq!((r[1].group.as_str(), r[1].target_only, r[1].source_keys), ("other", 1, 0));
    }
}
