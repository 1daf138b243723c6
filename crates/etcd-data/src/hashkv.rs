//! `HashKV` offline: the value `etcdctl endpoint hashkv --rev R` returns, computed from a
//! snapshot or member db file, so a backup can record it and a restored member can later be
//! checked against it.
//!
//! Why hand-written: etcd computes this hash only inside a running server, from its in-memory
//! key index (`etcdutl` has no offline `hashkv`), and there is no Rust implementation. The
//! rules below are re-derived from the upstream source named with each one.
//!
//! # The rules
//!
//! Sources: etcd v3.5.16 `server/mvcc/hash.go` (`unsafeHashByRev`, `kvHasher.WriteKeyValue`),
//! `server/mvcc/kvstore.go` (`hashByRev`, `restore`), `server/mvcc/index.go` (`Keep`),
//! `server/mvcc/key_index.go` (`keep`, `doCompact`); etcd v3.4.23 `mvcc/kvstore.go`
//! (`HashByRev`, `restore`), `mvcc/key_index.go`.
//!
//! * **Compact revision** `C`: the main revision of `meta/finishedCompactRev`; if
//!   `meta/scheduledCompactRev` is greater (a compaction was scheduled but not finished), that
//!   one, because a server resumes it on start and its `compactMainRev` becomes the scheduled
//!   value at once. Neither key: `-1` (what a never-compacted member reports).
//! * **Current revision**: the main revision of the last `key` entry (1 when the bucket is
//!   empty), raised to `finishedCompactRev` and (3.5.16; 3.4.23 only the former) to
//!   `scheduledCompactRev` when those are greater (a compaction can delete the latest tombstone).
//! * **Hashed revision** `R`: the requested one, or the current revision for `None`/`Some(0)`.
//!   `R < C` is refused as compacted (3.5; 3.4 also refuses `R == C`), `R` above the current
//!   revision as a future revision.
//! * **Hash**: one CRC-32C (Castagnoli; Go's `crc32.MakeTable(crc32.Castagnoli)`) over the
//!   bucket name `key`, then for each `key`-bucket entry in key (= revision) order, its key
//!   bytes (17-byte revision, plus `t` for a tombstone) and its value bytes, of the entries
//!   that pass:
//!   - entries with main revision `> R` are skipped;
//!   - entries with main revision `<= C` are skipped unless they are in the *keep set*, and the
//!     keep set is not empty (an empty keep set lets all of them through);
//!   - entries with main revision `== C` that are tombstones are skipped (3.5.16 rule, added
//!     when 3.5.16 stopped deleting a tombstone that sits exactly at the compact revision;
//!     3.4.23 deletes it in compaction and so never sees it);
//!   - every other entry, tombstones included, is hashed.
//! * **Keep set** (`treeIndex.Keep(R)`): for each key of the index, its latest revision
//!   `<= R`, unless that revision is a tombstone. (This is what `keyIndex.keep`'s walk over
//!   generations amounts to, in 3.4's `>` and 3.5's `>=` variant of `doCompact` alike; the
//!   unit tests below check it against a literal model of the generations.) The index is the
//!   one a server rebuilds from the file (`restoreIntoIndex`); this includes the empty key
//!   that `etcdutl snapshot restore --bump-revision` writes (an empty value decodes as a
//!   `KeyValue` with an empty key).
//! * **Live keys**: keys whose latest revision `<= R` is not a tombstone, without the empty
//!   key, which `etcdctl get "" --prefix` does not cover (it ranges from `"\x00"`). It equals
//!   `etcdctl get "" --prefix --count-only --rev R`.
//!
//! Caveats: a 3.5 server answers `--rev` equal to the revision of a compaction it ran itself
//! from a cache filled during that compaction (`hashStorage.HashByRev`), with that
//! compaction's *previous* compact revision; a restarted or restored member computes it afresh,
//! as here. For a file whose scheduled compaction has not finished, the value is the one a
//! server reports after resuming it, except when no key is live at `R` (then the unpruned
//! revisions below `C` are hashed, by etcd too).
//!
//! # Memory
//!
//! One streaming pass over the `key` bucket (the cursor holds one page per tree level). The
//! hash must include or skip the entries `<= C` by what comes *later* in the file, so those
//! entries are hashed one by one as they stream past and kept as (CRC, length, flags) — 16
//! bytes each — and combined in order at the end (CRC-32C is linear); the entries above `C`
//! are hashed in the stream. A map from user key to its latest state holds every key that has
//! an entry `<= C` (about 60 bytes plus the key's length each): after a finished compaction
//! that is one entry per key live at `C`, i.e. O(keys live at `C`), never more than the
//! number of entries `<= C` in the file. Keys first written after `C` need no map: the live
//! count follows them by `KeyValue.version` (1 on creation) and tombstones.

use std::collections::HashMap;

use crate::schema::{self, KeyValueRef, Revision, RevisionKey};

/// What `etcdctl endpoint hashkv --rev R -w json` reports, plus the live key count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashKv {
    /// `HashKV.hash`.
    pub hash: u32,
    /// The current revision a member restored from this file reports (`HashKV.header.revision`).
    pub revision: i64,
    /// `HashKV.compact_revision`: -1 when never compacted.
    pub compact_revision: i64,
    /// The revision hashed (`--rev`, or the current revision).
    pub hashed_revision: i64,
    /// Keys visible at `hashed_revision` (`etcdctl get "" --prefix --count-only --rev`).
    pub live_keys: i64,
    /// `scheduledCompactRev` is above `finishedCompactRev`: a server resumes that compaction.
    pub compaction_pending: bool,
}

/// Why no hash could be computed.
#[derive(Debug, thiserror::Error)]
pub enum HashKvError {
    #[error("revision {rev} has been compacted (compact revision {compact})")]
    Compacted { rev: i64, compact: i64 },
    #[error("revision {rev} is a future revision (current revision {current})")]
    FutureRev { rev: i64, current: i64 },
    #[error("invalid revision {0}")]
    InvalidRevision(i64),
    #[error("the db has no `key` bucket")]
    NoKeyBucket,
    #[error("damaged db: {0}")]
    Damaged(bolt::Fault),
    #[error("key bucket entry {key}: {what}")]
    Malformed { key: String, what: String },
}

impl From<bolt::Fault> for HashKvError {
    fn from(f: bolt::Fault) -> Self {
        HashKvError::Damaged(f)
    }
}

/// An entry at or below the compact revision, hashed on its own.
struct Below {
    crc: u32,
    len: usize,
    /// A tombstone at exactly the compact revision: never hashed.
    tomb_at_compact: bool,
    kept: bool,
}

/// The latest state of a key that has an entry at or below the compact revision.
struct KeyState {
    live: bool,
    /// Index into the `Below` list when the latest entry is at or below the compact revision.
    below: Option<usize>,
}

fn meta_rev(db: &bolt::Db, name: &[u8]) -> Result<Option<i64>, HashKvError> {
    let Some(meta) = db.bucket(&[schema::META])? else { return Ok(None) };
    Ok(meta.get(name)?.and_then(|v| Revision::main_of(&v)))
}

fn malformed(key: &[u8], what: impl Into<String>) -> HashKvError {
    HashKvError::Malformed { key: bolt::show(key), what: what.into() }
}

/// Compute `HashKV` at `rev` (`None` or `Some(0)`: the current revision). See the module doc.
pub fn hash_kv(db: &bolt::Db, rev: Option<i64>) -> Result<HashKv, HashKvError> {
    let mut fold = HashKvFold::new(db, rev)?;
    let bucket = db.bucket(&[schema::KEY])?.ok_or(HashKvError::NoKeyBucket)?;
    let mut cursor = bucket.cursor()?;
    while let Some(e) = cursor.next()? {
        fold.entry(e.key, (!e.is_bucket()).then_some(e.value));
        if fold.failed.is_some() {
            break;
        }
    }
    fold.key_bucket_seen = true;
    fold.finish()
}

/// `HashKV` folded over the `key` bucket's entries in key order, as a cursor or a walk of the
/// whole file ([`bolt::walk`], for one pass that also gives `snapshot status`) meets them.
pub struct HashKvFold {
    finished: Option<i64>,
    scheduled: Option<i64>,
    compact: i64,
    compaction_pending: bool,
    rev: Option<i64>,
    /// With no revision given every entry is at or below the current revision.
    upper: i64,
    last_main: Option<i64>,
    below: Vec<Below>,
    keys: HashMap<Vec<u8>, KeyState>,
    tail_crc: u32,
    tail_len: usize,
    /// Keys live at the hashed revision, the empty key included (it is in etcd's keep set).
    live: i64,
    /// Set by the caller once it has met the `key` bucket.
    pub key_bucket_seen: bool,
    failed: Option<HashKvError>,
}

impl HashKvFold {
    /// The compaction state comes from the `meta` bucket, read first.
    pub fn new(db: &bolt::Db, rev: Option<i64>) -> Result<HashKvFold, HashKvError> {
        let finished = meta_rev(db, schema::META_FINISHED_COMPACT)?;
        let scheduled = meta_rev(db, schema::META_SCHEDULED_COMPACT)?;
        let compact = finished.into_iter().chain(scheduled).max().unwrap_or(-1);
        let rev = match rev {
            Some(r) if r < 0 => return Err(HashKvError::InvalidRevision(r)),
            Some(0) | None => None,
            Some(r) if r < compact => return Err(HashKvError::Compacted { rev: r, compact }),
            r => r,
        };
        Ok(HashKvFold {
            finished,
            scheduled,
            compact,
            compaction_pending: scheduled.is_some_and(|s| s > finished.unwrap_or(-1)),
            rev,
            upper: rev.unwrap_or(i64::MAX),
            last_main: None,
            below: Vec::new(),
            keys: HashMap::new(),
            tail_crc: 0,
            tail_len: 0,
            live: 0,
            key_bucket_seen: false,
            failed: None,
        })
    }

    /// The next entry of the `key` bucket (`value` None: a nested bucket, which is damage).
    /// The first problem is kept for [`HashKvFold::finish`]; later entries are ignored.
    pub fn entry(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.failed.is_none() {
            if let Err(e) = self.fold(key, value) {
                self.failed = Some(e);
            }
        }
    }

    fn fold(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), HashKvError> {
        let Some(value) = value else { return Err(malformed(key, "is a nested bucket")) };
        let rk = RevisionKey::parse(key).map_err(|err| malformed(key, err.to_string()))?;
        self.last_main = Some(rk.rev.main);
        if rk.rev.main > self.upper {
            return Ok(());
        }
        let kv = KeyValueRef::decode(value).ok_or_else(|| malformed(key, "value is not a KeyValue"))?;
        let now_live = !rk.tombstone;
        if rk.rev.main <= self.compact {
            let idx = self.below.len();
            self.below.push(Below {
                crc: crc32c::crc32c_append(crc32c::crc32c(key), value),
                len: key.len() + value.len(),
                tomb_at_compact: rk.tombstone && rk.rev.main == self.compact,
                kept: false,
            });
            let was_live = match self.keys.get_mut(kv.key) {
                Some(st) => std::mem::replace(st, KeyState { live: now_live, below: Some(idx) }).live,
                None => {
                    self.keys.insert(kv.key.to_vec(), KeyState { live: now_live, below: Some(idx) });
                    false
                }
            };
            self.live += now_live as i64 - was_live as i64;
            return Ok(());
        }
        self.tail_crc = crc32c::crc32c_append(crc32c::crc32c_append(self.tail_crc, key), value);
        self.tail_len += key.len() + value.len();
        if let Some(st) = self.keys.get_mut(kv.key) {
            let was_live = std::mem::replace(st, KeyState { live: now_live, below: None }).live;
            self.live += now_live as i64 - was_live as i64;
        } else if kv.key.is_empty() {
            // The bump marker (version 0) is followed exactly, like keys with older entries.
            self.keys.insert(Vec::new(), KeyState { live: now_live, below: None });
            self.live += now_live as i64;
        } else if rk.tombstone {
            // Not live at C (its entry <= C would be in the map), so created after C.
            self.live -= 1;
        } else if kv.version == 1 {
            self.live += 1;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<HashKv, HashKvError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !self.key_bucket_seen {
            return Err(HashKvError::NoKeyBucket);
        }
        let HashKvFold { finished, scheduled, compact, compaction_pending, rev, last_main, mut below, keys, tail_crc, tail_len, live, .. } = self;
        let current = [last_main.unwrap_or(1), finished.unwrap_or(-1), scheduled.unwrap_or(-1)].into_iter().max().unwrap();
        let hashed = rev.unwrap_or(current);
        if hashed > current {
            return Err(HashKvError::FutureRev { rev: hashed, current });
        }
        let empty_live = keys.get(&b""[..]).is_some_and(|s| s.live);
        for st in keys.values() {
            if let (true, Some(i)) = (st.live, st.below) {
                below[i].kept = true;
            }
        }
        drop(keys);
        let keep_empty = live == 0;
        let shift = Shift::new();
        let mut crc = crc32c::crc32c(schema::KEY);
        for b in below.iter().filter(|b| !b.tomb_at_compact && (keep_empty || b.kept)) {
            crc = shift.combine(crc, b.crc, b.len);
        }
        crc = shift.combine(crc, tail_crc, tail_len);
        Ok(HashKv { hash: crc, revision: current, compact_revision: compact, hashed_revision: hashed, live_keys: live - empty_live as i64, compaction_pending })
    }
}

/// CRC-32C concatenation: `combine(crc(A), crc(B), |B|) == crc(A ‖ B)`, computed as
/// `crc(A)·x^(8|B|) mod P ⊕ crc(B)` with a table of `x^(2^k) mod P`, so one combine costs a
/// few 32-step carry-less multiplications (the `crc32c` crate's zlib-style combine squares
/// 32×32 matrices per bit of the length, too slow for a million entries).
struct Shift {
    /// `x^(2^k) mod P`, bit-reflected (bit 31 is `x^0`).
    pow2: [u32; 64],
}

const POLY: u32 = 0x82F6_3B78;
const ONE: u32 = 1 << 31;

/// `a·b mod P` in the bit-reflected representation.
fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    let mut m = ONE;
    while m != 0 && a & (m | (m - 1)) != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

impl Shift {
    fn new() -> Shift {
        let mut pow2 = [0u32; 64];
        pow2[0] = ONE >> 1; // x^1
        for k in 1..64 {
            pow2[k] = mul_mod(pow2[k - 1], pow2[k - 1]);
        }
        Shift { pow2 }
    }

    /// `x^(8·n) mod P`.
    fn bytes(&self, mut n: usize) -> u32 {
        let mut p = ONE;
        let mut k = 3;
        while n != 0 {
            if n & 1 != 0 {
                p = mul_mod(self.pow2[k], p);
            }
            n >>= 1;
            k += 1;
        }
        p
    }

    fn combine(&self, crc1: u32, crc2: u32, len2: usize) -> u32 {
        if len2 == 0 {
            return crc1;
        }
        mul_mod(self.bytes(len2), crc1) ^ crc2
    }
}

#[cfg(test)]
mod tests {
    //! A literal model of etcd's key index (generations, `doCompact`, `keep`, `compact` in
    //! both the 3.4.23 and the 3.5.16 variant, `restoreIntoIndex`) and of `kvHasher`, checked
    //! against the streaming computation on random histories written as bbolt files.

    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use prost::Message;

    use super::*;
    use crate::schema::KeyValue;

    #[test]
    fn combine_equals_appending() {
        let shift = Shift::new();
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for split in [0, 1, 2, 3, 7, 8, 17, 255, 256, 1000, 4096, 4999, 5000] {
            let (a, b) = data.split_at(split);
            assert_eq!(shift.combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len()), crc32c::crc32c(&data), "split {split}");
            assert_eq!(crc32c::crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len()), crc32c::crc32c(&data));
        }
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    type Gen = Vec<Revision>;

    /// `keyIndex`: generations; the last may be empty.
    #[derive(Clone, Debug)]
    struct Ki {
        gens: Vec<Gen>,
    }

    impl Ki {
        fn is_empty(&self) -> bool {
            self.gens.len() == 1 && self.gens[0].is_empty()
        }
        fn put(&mut self, r: Revision) {
            if self.gens.is_empty() {
                self.gens.push(vec![]);
            }
            self.gens.last_mut().unwrap().push(r);
        }
        fn tombstone(&mut self, r: Revision) -> bool {
            if self.gens.last().unwrap().is_empty() {
                return false;
            }
            self.put(r);
            self.gens.push(vec![]);
            true
        }
        /// `doCompact`: (generation index, revision index or None).
        fn do_compact(&self, at: i64, avail: &mut HashSet<Revision>, v35: bool) -> (usize, Option<usize>) {
            let mut gi = 0;
            while gi < self.gens.len() - 1 {
                let tomb = self.gens[gi].last().unwrap().main;
                if (v35 && tomb >= at) || (!v35 && tomb > at) {
                    break;
                }
                gi += 1;
            }
            let g = &self.gens[gi];
            let ri = (0..g.len()).rev().find(|&i| g[i].main <= at);
            if let Some(i) = ri {
                avail.insert(g[i]);
            }
            (gi, ri)
        }
        fn keep(&self, at: i64, avail: &mut HashSet<Revision>, v35: bool) {
            if self.is_empty() {
                return;
            }
            let (gi, ri) = self.do_compact(at, avail, v35);
            let g = &self.gens[gi];
            if !g.is_empty() && ri == Some(g.len() - 1) && gi != self.gens.len() - 1 {
                avail.remove(&g[g.len() - 1]);
            }
        }
        fn compact(&mut self, at: i64, avail: &mut HashSet<Revision>, v35: bool) {
            let (mut gi, ri) = self.do_compact(at, avail, v35);
            let last = self.gens.len() - 1;
            let g = &mut self.gens[gi];
            if !g.is_empty() {
                if let Some(i) = ri {
                    g.drain(..i);
                }
                if !v35 && g.len() == 1 && gi != last {
                    avail.remove(&g[0]);
                    gi += 1;
                }
            }
            self.gens.drain(..gi);
        }
    }

    type Index = BTreeMap<Vec<u8>, Ki>;
    /// The key bucket: revision key bytes → value.
    type KeyBucket = BTreeMap<Vec<u8>, Vec<u8>>;

    fn rev_key(r: Revision, tomb: bool) -> Vec<u8> {
        let mut k = r.to_bytes().to_vec();
        if tomb {
            k.push(b't');
        }
        k
    }

    /// `restoreIntoIndex`.
    fn restore_index(b: &KeyBucket) -> Index {
        let mut idx = Index::new();
        for (k, v) in b {
            let rk = RevisionKey::parse(k).unwrap();
            let kv = KeyValue::decode(&v[..]).unwrap();
            match idx.get_mut(&kv.key) {
                Some(ki) if rk.tombstone => {
                    ki.tombstone(rk.rev);
                }
                Some(ki) => ki.put(rk.rev),
                None if !rk.tombstone => {
                    idx.insert(kv.key, Ki { gens: vec![vec![rk.rev]] });
                }
                None => {}
            }
        }
        idx
    }

    fn keep_of(idx: &Index, rev: i64, v35: bool) -> HashSet<Revision> {
        let mut avail = HashSet::new();
        for ki in idx.values() {
            ki.keep(rev, &mut avail, v35);
        }
        avail
    }

    /// `kvHasher` (3.5.16) or the 3.4.23 loop.
    fn literal_hash(b: &KeyBucket, compact: i64, rev: i64, keep: &HashSet<Revision>, v35: bool) -> u32 {
        let mut crc = crc32c::crc32c(b"key");
        for (k, v) in b {
            let rk = RevisionKey::parse(k).unwrap();
            if rk.rev >= (Revision { main: rev + 1, sub: 0 }) {
                continue;
            }
            if rk.rev < (Revision { main: compact + 1, sub: 0 }) && !keep.is_empty() && !keep.contains(&rk.rev) {
                continue;
            }
            if v35 && rk.rev.main == compact && rk.tombstone {
                continue;
            }
            crc = crc32c::crc32c_append(crc32c::crc32c_append(crc, k), v);
        }
        crc
    }

    /// A store: the live index, the key bucket, and every entry ever written (for the truth
    /// about which keys are live at a revision).
    struct Store {
        idx: Index,
        bucket: KeyBucket,
        history: Vec<(Revision, Vec<u8>, bool)>,
        rev: i64,
        version: HashMap<Vec<u8>, (i64, i64)>,
        finished: Option<i64>,
        scheduled: Option<i64>,
    }

    impl Store {
        fn new() -> Store {
            Store { idx: Index::new(), bucket: KeyBucket::new(), history: vec![], rev: 1, version: HashMap::new(), finished: None, scheduled: None }
        }
        fn is_live(&self, key: &[u8]) -> bool {
            self.idx.get(key).is_some_and(|ki| !ki.gens.last().unwrap().is_empty())
        }
        /// One transaction: puts and deletes of distinct keys.
        fn txn(&mut self, ops: &[(Vec<u8>, bool)]) {
            let main = self.rev + 1;
            let mut sub = 0;
            for (key, delete) in ops {
                let r = Revision { main, sub };
                if *delete {
                    if !self.is_live(key) {
                        continue;
                    }
                    self.idx.get_mut(key).unwrap().tombstone(r);
                    self.version.remove(key);
                    let v = KeyValue { key: key.clone(), ..Default::default() }.encode_to_vec();
                    self.bucket.insert(rev_key(r, true), v);
                } else {
                    let (create, ver) = self.version.get(key).map(|&(c, v)| (c, v + 1)).unwrap_or((main, 1));
                    self.version.insert(key.clone(), (create, ver));
                    let kv = KeyValue {
                        key: key.clone(),
                        create_revision: create,
                        mod_revision: main,
                        version: ver,
                        value: format!("v{main}.{sub}").into_bytes(),
                        lease: 0,
                    };
                    self.bucket.insert(rev_key(r, false), kv.encode_to_vec());
                    self.idx.entry(key.clone()).or_insert(Ki { gens: vec![] }).put(r);
                }
                self.history.push((r, key.clone(), *delete));
                sub += 1;
            }
            if sub > 0 {
                self.rev = main;
            }
        }
        /// Compaction at `at`; `physical: false` stops after scheduling (as a crash would).
        fn compact(&mut self, at: i64, v35: bool, physical: bool) {
            self.scheduled = Some(at);
            if !physical {
                return;
            }
            let mut avail = HashSet::new();
            let keys: Vec<Vec<u8>> = self.idx.keys().cloned().collect();
            for k in keys {
                let ki = self.idx.get_mut(&k).unwrap();
                ki.compact(at, &mut avail, v35);
                if ki.is_empty() || ki.gens.is_empty() {
                    self.idx.remove(&k);
                }
            }
            self.bucket.retain(|k, _| {
                let rk = RevisionKey::parse(k).unwrap();
                rk.rev.main > at || avail.contains(&rk.rev)
            });
            self.finished = Some(at);
        }
        fn live_at(&self, rev: i64) -> i64 {
            let mut latest: BTreeMap<&[u8], bool> = BTreeMap::new();
            for (r, k, del) in &self.history {
                if r.main <= rev {
                    latest.insert(k, !del);
                }
            }
            latest.values().filter(|l| **l).count() as i64
        }
        fn write(&self, dir: &std::path::Path) -> bolt::Db {
            let path = dir.join(format!("db{}", self.rev));
            let f = std::fs::File::create(&path).unwrap();
            let mut w = bolt::Writer::new(f, bolt::WriterOptions::default()).unwrap();
            w.begin_bucket(schema::KEY).unwrap();
            for (k, v) in &self.bucket {
                w.put(k, v).unwrap();
            }
            w.end_bucket().unwrap();
            w.begin_bucket(schema::META).unwrap();
            if let Some(f) = self.finished {
                w.put(schema::META_FINISHED_COMPACT, &Revision { main: f, sub: 0 }.to_bytes()).unwrap();
            }
            if let Some(s) = self.scheduled {
                w.put(schema::META_SCHEDULED_COMPACT, &Revision { main: s, sub: 0 }.to_bytes()).unwrap();
            }
            w.end_bucket().unwrap();
            w.finish().unwrap();
            bolt::Db::open(&path).unwrap()
        }
    }

    fn random_txn(s: &mut Store, rng: &mut Rng, nkeys: u64) {
        let n = 1 + rng.below(3) as usize;
        let mut seen = BTreeSet::new();
        let mut ops = vec![];
        for _ in 0..n {
            let k = format!("/k/{}", rng.below(nkeys)).into_bytes();
            if seen.insert(k.clone()) {
                ops.push((k, rng.below(3) == 0));
            }
        }
        s.txn(&ops);
    }

    /// Our streaming result equals the literal model (3.5.16 hasher; and the 3.4.23 one above C
    /// once a 3.4 compaction has finished) for every revision from C to current.
    fn check(s: &Store, db: &bolt::Db, v35: bool, bucket: &KeyBucket, what: &str) {
        let compact = s.finished.into_iter().chain(s.scheduled).max().unwrap_or(-1);
        let restored = restore_index(bucket);
        let current = [bucket.keys().last().map(|k| Revision::main_of(k).unwrap()).unwrap_or(1), compact].into_iter().max().unwrap();
        let whole = hash_kv(db, None).unwrap();
        assert_eq!((whole.revision, whole.hashed_revision, whole.compact_revision), (current, current, compact), "{what}");
        // One walk of the whole file gives the same HashKV, and the same status.
        let (status, one) = crate::status_and_hash_kv_beside(db, &mut |_: &[Vec<u8>], _: &[u8], _: Option<&[u8]>| {}).unwrap();
        assert_eq!(one.unwrap(), whole, "{what}: status_and_hash_kv_beside");
        assert_eq!(status, crate::status_of(db).unwrap(), "{what}: status_and_hash_kv_beside");
        for rev in compact.max(1)..=current {
            let ours = hash_kv(db, Some(rev)).unwrap();
            let keep = keep_of(&restored, rev, v35);
            let want = literal_hash(bucket, compact, rev, &keep, true);
            assert_eq!(ours.hash, want, "{what}: rev {rev} (compact {compact}, current {current})");
            if !v35 && rev > compact && s.finished == s.scheduled {
                assert_eq!(ours.hash, literal_hash(bucket, compact, rev, &keep, false), "{what}: 3.4 hasher, rev {rev}");
            }
            if rev == current {
                assert_eq!(ours.hash, whole.hash, "{what}");
            }
            if s.finished == s.scheduled {
                // The index a live server kept through its compactions gives the same keep set.
                let live_keep = keep_of(&s.idx, rev, v35);
                assert_eq!(want, literal_hash(bucket, compact, rev, &live_keep, true), "{what}: live index, rev {rev}");
            }
            assert_eq!(ours.live_keys, s.live_at(rev), "{what}: live keys at {rev}");
        }
        if compact > 1 {
            assert!(matches!(hash_kv(db, Some(compact - 1)), Err(HashKvError::Compacted { .. })));
        }
        assert!(matches!(hash_kv(db, Some(current + 1)), Err(HashKvError::FutureRev { .. })));
    }

    #[test]
    fn streaming_equals_literal_model() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 1..=60u64 {
            for v35 in [true, false] {
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 | (v35 as u64) << 1);
                let nkeys = 2 + rng.below(8);
                let mut s = Store::new();
                for _ in 0..(5 + rng.below(40)) {
                    random_txn(&mut s, &mut rng, nkeys);
                }
                let db = s.write(dir.path());
                check(&s, &db, v35, &s.bucket, &format!("seed {seed} v35 {v35}: uncompacted"));
                for round in 0..3 {
                    let from = s.finished.unwrap_or(1).max(1);
                    let at = from + rng.below((s.rev - from + 1) as u64) as i64;
                    // Sometimes at the latest revision, sometimes right after deleting everything.
                    let at = if round == 2 { s.rev } else { at };
                    s.compact(at, v35, true);
                    let db = s.write(dir.path());
                    check(&s, &db, v35, &s.bucket, &format!("seed {seed} v35 {v35}: compacted at {at}"));
                    for _ in 0..(1 + rng.below(10)) {
                        random_txn(&mut s, &mut rng, nkeys);
                    }
                    if rng.below(3) == 0 {
                        let all: Vec<(Vec<u8>, bool)> = (0..nkeys).map(|k| (format!("/k/{k}").into_bytes(), true)).collect();
                        s.txn(&all);
                    }
                    let db = s.write(dir.path());
                    check(&s, &db, v35, &s.bucket, &format!("seed {seed} v35 {v35}: after round {round}"));
                }
                // Scheduled but not finished: a server resumes it; the file still has everything.
                let pending = s.rev;
                s.scheduled = Some(pending);
                let db = s.write(dir.path());
                assert_eq!(hash_kv(&db, None).unwrap().compaction_pending, Some(pending) > s.finished);
                check(&s, &db, v35, &s.bucket, &format!("seed {seed} v35 {v35}: pending compaction"));
                s.scheduled = s.finished;

                // etcdutl --bump-revision 50 --mark-compacted: an empty value at latest+50.
                let marker = Revision { main: s.rev + 50, sub: 0 };
                let mut bucket = s.bucket.clone();
                bucket.insert(marker.to_bytes().to_vec(), vec![]);
                let mut bumped = Store { bucket: bucket.clone(), ..s };
                bumped.scheduled = Some(marker.main);
                let db = bumped.write(dir.path());
                let h = hash_kv(&db, None).unwrap();
                assert_eq!((h.revision, h.compact_revision), (marker.main, marker.main));
                let want = literal_hash(&bucket, marker.main, marker.main, &keep_of(&restore_index(&bucket), marker.main, v35), true);
                assert_eq!(h.hash, want, "seed {seed}: bumped");
                assert_eq!(h.live_keys, bumped.live_at(marker.main), "the marker is not counted");
            }
        }
    }
}
