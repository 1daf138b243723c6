//! The key map of a backup: every live key of the snapshot, sorted, with where its latest
//! record lies in the snapshot file. Reading one object from a remote backup then costs the
//! key map and the one or two chunks that hold the record, not the whole snapshot
//! (`k8s get --repo`, `k8s ls --repo`; issue 17).
//!
//! etcd's `key` bucket is ordered by revision, so a key cannot be found without reading the
//! whole bucket: the map is made at backup time by one backwards pass over it (the newest
//! record of a key is met first; a tombstone means the key is gone), in the thread that
//! already reads the file for its status and hashkv.
//!
//! Stored as data blobs (sealed, compressed and deduplicated like snapshot chunks: an
//! unchanged stretch of keys costs nothing in the next backup), `SEGMENT` entries each,
//! named by the manifest's `key_map`. Segment layout (little-endian):
//! `"QKM1"`, entry count (u32), then per entry: key length (u16), key, revision key length
//! (u8), revision key (etcd's `key` bucket key), record offset in the file (u64), record
//! length (u32).
//!
//! In a version-3 repository a backup stores its key map as a patch of the newest backup's
//! when it can ([`Patch`]): that map's segments and patches, plus one patch (in blobs of at most
//! `SEGMENT` entries) setting every entry that changed or is new and removing every key that
//! is gone; a reader applies the patches in order over the segments. Records move whenever
//! bbolt rewrites their page, so a whole map changed in every segment at 1% of churn: 4.4 MB
//! a backup for 385k keys, against 0.13 MB as a patch. The chain is rewritten whole past a
//! quarter of the live keys or 256 patches, as chunk lists are.
//!
//! A reader turns the records it fetched into a small bbolt file holding only them in a `key`
//! bucket ([`write_db`]), which every snapshot reader of `kube-data` reads as it reads a whole
//! snapshot.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use etcd_data::schema::{KeyValueRef, RevisionKey};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::format::{BlobId, Manifest};
use crate::repository::{parse_id, Index, Repository};

/// Which keys a reader wants.
pub type KeyFilter<'a> = dyn Fn(&[u8]) -> bool + Sync + 'a;

/// Entries per stored segment.
pub const SEGMENT: usize = 16384;
const MAGIC: &[u8; 4] = b"QKM1";

/// One live key and where its latest record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    /// The record's key in etcd's `key` bucket (its revision).
    pub rev_key: Vec<u8>,
    pub offset: u64,
    pub len: u32,
}

/// The manifest's reference to a backup's key map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyMapRef {
    /// Segment blobs, in key order.
    pub segments: Vec<String>,
    /// Live keys in all.
    pub entries: u64,
    /// Version 3: patch blobs applied in order to the segments (an earlier backup's), each
    /// setting or removing keys; a later patch overrides an earlier one ([`Patch`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<String>,
    /// Entries in all the patches: the chain is rewritten whole past a quarter of `entries`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patch_entries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl KeyMapRef {
    /// Every blob of the key map: segments, then patches.
    pub fn blobs(&self) -> impl Iterator<Item = &String> {
        self.segments.iter().chain(&self.patches)
    }
}

const PATCH_MAGIC: &[u8; 4] = b"QKP1";

/// A key map patch: keys set to a new place, or removed (`None`), in key order. Stored as a
/// data blob: `"QKP1"`, entry count (u32), then per entry a kind byte (`0` removed: key
/// length (u16), key; `1` set: the entry as in a segment).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Patch(pub Vec<(Vec<u8>, Option<Entry>)>);

impl Patch {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.0.len() * 80);
        b.extend_from_slice(PATCH_MAGIC);
        b.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (key, e) in &self.0 {
            match e {
                None => {
                    b.push(0);
                    b.extend_from_slice(&(key.len() as u16).to_le_bytes());
                    b.extend_from_slice(key);
                }
                Some(e) => {
                    b.push(1);
                    e.encode_into(&mut b);
                }
            }
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Patch> {
        let bad = |what: &str| Error::Damaged(format!("key map patch: {what}"));
        if b.len() < 8 || &b[..4] != PATCH_MAGIC {
            return Err(bad("not a key map patch"));
        }
        let count = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        let mut r = Reader { b, at: 8 };
        let mut out = Vec::with_capacity(count.min(SEGMENT));
        for _ in 0..count {
            match r.take(1).ok_or_else(|| bad("truncated"))?[0] {
                0 => {
                    let kl = u16::from_le_bytes(r.take(2).ok_or_else(|| bad("truncated"))?.try_into().unwrap()) as usize;
                    out.push((r.take(kl).ok_or_else(|| bad("truncated"))?.to_vec(), None));
                }
                1 => {
                    let e = r.entry().ok_or_else(|| bad("truncated"))?;
                    out.push((e.key.clone(), Some(e)));
                }
                _ => return Err(bad("unknown entry kind")),
            }
        }
        if r.at != b.len() {
            return Err(bad("trailing bytes"));
        }
        if out.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(bad("keys out of order"));
        }
        Ok(Patch(out))
    }
}

/// Bytes read in turn.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len())?;
        let s = &self.b[self.at..end];
        self.at = end;
        Some(s)
    }

    /// One entry in its stored form.
    fn entry(&mut self) -> Option<Entry> {
        let kl = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize;
        let key = self.take(kl)?.to_vec();
        let rl = self.take(1)?[0] as usize;
        let rev_key = self.take(rl)?.to_vec();
        let offset = u64::from_le_bytes(self.take(8)?.try_into().unwrap());
        let len = u32::from_le_bytes(self.take(4)?.try_into().unwrap());
        Some(Entry { key, rev_key, offset, len })
    }
}

impl Entry {
    /// The stored form (as in a segment). Entries come from segments or from [`Run::push`],
    /// which refuses keys and revision keys too long for their length fields.
    fn encode_into(&self, b: &mut Vec<u8>) {
        put_entry(b, self.key.len() as u16, &self.key, self.rev_key.len() as u8, &self.rev_key, self.offset, self.len);
    }
}

/// An entry's stored form: key length (u16), key, revision key length (u8), revision key,
/// offset (u64), length (u32).
fn put_entry(b: &mut Vec<u8>, kl: u16, key: &[u8], rl: u8, rev_key: &[u8], offset: u64, len: u32) {
    b.extend_from_slice(&kl.to_le_bytes());
    b.extend_from_slice(key);
    b.push(rl);
    b.extend_from_slice(rev_key);
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
}

/// Patches applied in order, for lookups and merges: key → its latest setting.
pub fn overrides(patches: impl IntoIterator<Item = Patch>) -> BTreeMap<Vec<u8>, Option<Entry>> {
    let mut m = BTreeMap::new();
    for p in patches {
        m.extend(p.0);
    }
    m
}

/// The entries of `base` (segments' entries) with `over` applied, keeping those `want`
/// accepts, in key order.
pub fn resolve(base: impl IntoIterator<Item = Entry>, over: &BTreeMap<Vec<u8>, Option<Entry>>, want: &KeyFilter<'_>) -> Vec<Entry> {
    let mut out: Vec<Entry> = base.into_iter().filter(|e| want(&e.key) && !over.contains_key(&e.key)).collect();
    out.extend(over.iter().filter_map(|(k, e)| e.as_ref().filter(|_| want(k))).cloned());
    out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    out
}

/// A backup's key map resolved (segments with its patches applied), read a segment at a time
/// as a merge with a new key map needs it: memory holds one segment and the patches.
pub struct OldMap<'a> {
    repo: &'a Repository,
    index: &'a Index,
    segments: std::collections::VecDeque<String>,
    over: BTreeMap<Vec<u8>, Option<Entry>>,
    /// Resolved entries read and not yet taken, in key order.
    ready: std::collections::VecDeque<Entry>,
    /// The last key of the segments read so far.
    read_to: Option<Vec<u8>>,
    done: bool,
}

impl<'a> OldMap<'a> {
    /// Reads the patches now, the segments as [`OldMap::fill`] needs them.
    pub async fn open(repo: &'a Repository, index: &'a Index, km: &KeyMapRef) -> Result<OldMap<'a>> {
        let mut patches = Vec::new();
        for p in &km.patches {
            let loc = index.blobs.get(&parse_id(p)?).ok_or_else(|| Error::Damaged(format!("key map patch {p} is not in any index")))?;
            patches.push(Patch::decode(&repo.read_blob(index, loc).await?)?);
        }
        Ok(OldMap {
            repo,
            index,
            segments: km.segments.iter().cloned().collect(),
            over: overrides(patches),
            ready: Default::default(),
            read_to: None,
            done: false,
        })
    }

    /// Read segments until every resolved entry with a key up to `key` (all, with None) is
    /// in `ready`.
    pub async fn fill(&mut self, key: Option<&[u8]>) -> Result<()> {
        while !self.done && (key.is_none() || self.read_to.as_deref().is_none_or(|r| Some(r) < key)) {
            let from = self.read_to.clone();
            let batch = match self.segments.pop_front() {
                Some(s) => {
                    let loc = self.index.blobs.get(&parse_id(&s)?).ok_or_else(|| Error::Damaged(format!("key map blob {s} is not in any index")))?;
                    let entries = decode(&self.repo.read_blob(self.index, loc).await?)?;
                    let Some(last) = entries.last().map(|e| e.key.clone()) else { continue };
                    if from.as_ref().is_some_and(|f| entries[0].key <= *f) {
                        return Err(Error::Damaged("key map segments out of key order".into()));
                    }
                    let to = std::ops::Bound::Included(last.clone());
                    self.read_to = Some(last);
                    self.resolved_range(entries, to, from)
                }
                None => {
                    self.done = true;
                    self.resolved_range(Vec::new(), std::ops::Bound::Unbounded, from)
                }
            };
            self.ready.extend(batch);
        }
        Ok(())
    }

    /// A segment's entries with the patches' keys after `from` and up to `to` applied.
    fn resolved_range(&self, base: Vec<Entry>, to: std::ops::Bound<Vec<u8>>, from: Option<Vec<u8>>) -> Vec<Entry> {
        let lo = from.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut out: Vec<Entry> = base.into_iter().filter(|e| !self.over.contains_key(&e.key)).collect();
        out.extend(self.over.range((lo, to)).filter_map(|(_, e)| e.clone()));
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

impl OldMap<'_> {
    /// Compare the entries of one segment of a new key map (in key order, after every entry
    /// compared before) with this map, adding what differs to `patch`: keys this map has
    /// before them are removed, changed or new entries set.
    pub async fn diff_segment(&mut self, new: Vec<Entry>, patch: &mut Patch) -> Result<()> {
        let Some(last) = new.last().map(|e| e.key.clone()) else { return Ok(()) };
        self.fill(Some(&last)).await?;
        for e in new {
            while let Some(o) = self.ready.pop_front() {
                if o.key < e.key {
                    patch.0.push((o.key, None));
                } else {
                    self.ready.push_front(o);
                    break;
                }
            }
            if self.ready.front().is_some_and(|o| o.key == e.key) && self.ready.pop_front().as_ref() == Some(&e) {
                continue;
            }
            patch.0.push((e.key.clone(), Some(e)));
        }
        Ok(())
    }

    /// After the new map's last segment: every key of this map left is removed.
    pub async fn diff_end(&mut self, patch: &mut Patch) -> Result<()> {
        self.fill(None).await?;
        patch.0.extend(self.ready.drain(..).map(|o| (o.key, None)));
        Ok(())
    }
}

/// A new key map as a patch of the newest backup's (its [`KeyMapRef`], and that backup's
/// chain), or None to store it whole: past a quarter of `entries`, or 256 patches.
pub fn keep_patch(old: &KeyMapRef, patch: &Patch, entries: u64) -> bool {
    let chained = old.patch_entries + patch.0.len() as u64;
    (chained as f64) <= crate::chunk_list::REBASE_SHARE * entries as f64 && old.patches.len() < crate::chunk_list::MAX_CHAIN
}

/// A patch as blobs of at most [`SEGMENT`] entries each (disjoint key ranges, so their order
/// among themselves does not matter); none when nothing changed.
pub fn patch_blobs(patch: Patch) -> Vec<Vec<u8>> {
    patch.0.chunks(SEGMENT).map(|c| Patch(c.to_vec()).encode()).collect()
}

/// A key's identity in the set of keys met: 128 bits of BLAKE3, so the set costs 16 bytes a
/// key however long the keys (a collision, which would hide a key, is beyond reach).
fn key_id(key: &[u8]) -> u128 {
    u128::from_le_bytes(blake3::hash(key).as_bytes()[..16].try_into().expect("16 bytes"))
}

/// One record of the `key` bucket: its key, the record, whether it is a tombstone.
type Record<'a> = dyn FnMut(&[u8], &[u8], bool) + 'a;

/// Call `f` with every record of the `key` bucket of the snapshot `db`, newest first.
fn each_record(db: &bolt::Db, f: &mut Record<'_>) -> Result<()> {
    let damaged = |f: bolt::Fault| Error::Damaged(format!("{}: key bucket: {f}", db.path().display()));
    let Some(bucket) = db.bucket(&[etcd_data::schema::KEY]).map_err(damaged)? else { return Ok(()) };
    let mut c = bucket.cursor_rev().map_err(damaged)?;
    while let Some(e) = c.next().map_err(damaged)? {
        let Ok(rk) = RevisionKey::parse(e.key) else { continue };
        let Some(kv) = KeyValueRef::decode(e.value) else { continue };
        if e.value.is_empty() || kv.key.is_empty() {
            continue;
        }
        f(kv.key, e.value, rk.tombstone);
    }
    Ok(())
}

/// Entries in their stored form packed in one buffer (no allocation per key), sorted in place.
#[derive(Debug, Default)]
struct Run {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

/// The parts of an entry in its stored form: its key and its revision key.
fn entry_key(e: &[u8]) -> &[u8] {
    let kl = u16::from_le_bytes([e[0], e[1]]) as usize;
    &e[2..2 + kl]
}

fn entry_rev(e: &[u8]) -> &[u8] {
    let kl = u16::from_le_bytes([e[0], e[1]]) as usize;
    let rl = e[2 + kl] as usize;
    &e[3 + kl..3 + kl + rl]
}

/// Key order, and for one key the newest record first (a revision key sorts as its revision).
fn entry_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    entry_key(a).cmp(entry_key(b)).then_with(|| entry_rev(b).cmp(entry_rev(a)))
}

impl Run {
    /// Add an entry; false when it cannot be stored (a key longer than 64 KiB).
    fn push(&mut self, key: &[u8], rev_key: &[u8], offset: u64, len: u32) -> bool {
        let (Ok(kl), Ok(rl)) = (u16::try_from(key.len()), u8::try_from(rev_key.len())) else { return false };
        if self.buf.capacity() == 0 {
            // Once, the whole run and one entry of the largest size: no doubling past it.
            self.buf.reserve_exact(RUN_BYTES + (1 << 16) + 300);
        }
        self.starts.push(self.buf.len());
        put_entry(&mut self.buf, kl, key, rl, rev_key, offset, len);
        true
    }

    /// The stored bytes of the entry at `start`.
    fn entry(&self, start: usize) -> &[u8] {
        let kl = u16::from_le_bytes([self.buf[start], self.buf[start + 1]]) as usize;
        let rl = self.buf[start + 2 + kl] as usize;
        &self.buf[start..start + 2 + kl + 1 + rl + 12]
    }

    /// Sort, keeping only the newest entry of each key.
    fn sort(&mut self) {
        let mut starts = std::mem::take(&mut self.starts);
        starts.sort_unstable_by(|a, b| entry_order(self.entry(*a), self.entry(*b)));
        starts.dedup_by(|b, a| entry_key(self.entry(*a)) == entry_key(self.entry(*b)));
        self.starts = starts;
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
    }
}

/// Bytes of entries sorted in memory before they are spilled to a temporary file as a run:
/// what bounds a backup's memory for the key map, however many keys the cluster has.
const RUN_BYTES: usize = 4 << 20;

/// A key map being built: the newest record of every key met (tombstones included, as they
/// hide older records), in sorted runs, all but the last spilled to unnamed temporary files
/// (gone when closed, even after a kill -9). [`Built::segments`] merges them.
#[derive(Debug, Default)]
pub struct Built {
    spilled: Vec<std::fs::File>,
    last: Run,
}

impl Built {
    fn spill(&mut self) -> Result<()> {
        use std::io::{Seek, Write};
        self.last.sort();
        let tmp = std::env::temp_dir();
        let io = |e: std::io::Error| {
            Error::io(&tmp, std::io::Error::new(e.kind(), format!("spilling the key map's sorted keys (set TMPDIR to a filesystem with space): {e}")))
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tempfile::tempfile().map_err(io)?);
        for s in &self.last.starts {
            w.write_all(self.last.entry(*s)).map_err(io)?;
        }
        let mut f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.rewind().map_err(io)?;
        self.spilled.push(f);
        self.last.clear();
        Ok(())
    }

    /// Merge the runs into the stored form, calling `f` with each segment in key order;
    /// returns the live keys in all.
    pub fn segments(self, mut f: impl FnMut(Vec<u8>) -> Result<()>) -> Result<u64> {
        let mut sources: Vec<Source> = self.spilled.into_iter().map(|f| Source::File(std::io::BufReader::with_capacity(32 << 10, f))).collect();
        sources.push(Source::Memory(self.last, 0));
        let mut heap = std::collections::BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(entry) = s.next()? {
                heap.push(Head { entry, source: i });
            }
        }
        let (mut seg, mut count, mut total) = (segment_start(), 0usize, 0u64);
        let mut last_key: Vec<u8> = Vec::new();
        let mut first = true;
        while let Some(Head { entry, source }) = heap.pop() {
            if let Some(next) = sources[source].next()? {
                heap.push(Head { entry: next, source });
            }
            // Older records of a key already decided by its newest.
            if !first && entry_key(&entry) == last_key.as_slice() {
                continue;
            }
            first = false;
            last_key.clear();
            last_key.extend_from_slice(entry_key(&entry));
            if RevisionKey::parse(entry_rev(&entry)).is_ok_and(|r| r.tombstone) {
                continue;
            }
            seg.extend_from_slice(&entry);
            count += 1;
            total += 1;
            if count == SEGMENT {
                f(segment_end(std::mem::replace(&mut seg, segment_start()), count))?;
                count = 0;
            }
        }
        if count > 0 {
            f(segment_end(seg, count))?;
        }
        Ok(total)
    }
}

fn segment_start() -> Vec<u8> {
    let mut b = Vec::with_capacity(1 << 20);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[0; 4]);
    b
}

fn segment_end(mut b: Vec<u8>, count: usize) -> Vec<u8> {
    b[4..8].copy_from_slice(&(count as u32).to_le_bytes());
    b
}

/// A sorted run being merged: spilled, or the last one, still in memory.
enum Source {
    File(std::io::BufReader<std::fs::File>),
    Memory(Run, usize),
}

impl Source {
    fn next(&mut self) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        match self {
            Source::Memory(run, at) => {
                let Some(s) = run.starts.get(*at) else { return Ok(None) };
                *at += 1;
                Ok(Some(run.entry(*s).to_vec()))
            }
            Source::File(r) => {
                let io =
                    |e: std::io::Error| Error::io(std::env::temp_dir(), std::io::Error::new(e.kind(), format!("reading back the key map's sorted keys: {e}")));
                let mut kl = [0u8; 2];
                match r.read_exact(&mut kl) {
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    r => r.map_err(io)?,
                }
                let kl = u16::from_le_bytes(kl) as usize;
                let mut e = vec![0u8; 2 + kl + 1];
                e[..2].copy_from_slice(&(kl as u16).to_le_bytes());
                r.read_exact(&mut e[2..]).map_err(io)?;
                let rl = e[2 + kl] as usize;
                e.resize(3 + kl + rl + 12, 0);
                r.read_exact(&mut e[3 + kl..]).map_err(io)?;
                Ok(Some(e))
            }
        }
    }
}

/// The head entry of a run in the merge: the heap yields the smallest key first and, for one
/// key, its newest record first.
struct Head {
    entry: Vec<u8>,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        entry_order(&other.entry, &self.entry)
    }
}

/// The key map of a snapshot: its records' keys, in sorted runs, for [`Built::segments`] to
/// merge into the live keys with their latest records' places. A [`bolt::Visitor`]: a walk of
/// the file ([`bolt::walk`], which a backup makes anyway for the snapshot's status and
/// HashKV) hands it the `key` bucket's records with their offsets
/// ([`bolt::Visitor::entry_at`]), in key order, the order a snapshot streamed from etcd
/// arrives in; runs are sorted anyway. [`Builder::finish`] gives None when the snapshot has
/// no `key` bucket or keeps records where no offset can be given (an inline bucket) or no
/// entry can hold (a key over 64 KiB). Memory stays near `RUN_BYTES` (plus 32 KiB a run
/// when merging).
#[derive(Debug)]
pub struct Builder {
    out: Built,
    found: bool,
    /// False once a record could not be placed: there will be no key map.
    placed: bool,
    failed: Option<Error>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder { out: Built::default(), found: false, placed: true, failed: None }
    }
}

impl Builder {
    /// One record of the `key` bucket: its revision key, the record, its offset in the file.
    fn record(&mut self, rev_key: &[u8], record: &[u8], at: Option<u64>) {
        if !self.placed || self.failed.is_some() || RevisionKey::parse(rev_key).is_err() {
            return;
        }
        let Some(kv) = KeyValueRef::decode(record) else { return };
        if record.is_empty() || kv.key.is_empty() {
            return;
        }
        self.placed = at.is_some_and(|offset| self.out.last.push(kv.key, rev_key, offset, record.len() as u32));
        if self.placed && self.out.last.buf.len() >= RUN_BYTES {
            if let Err(e) = self.out.spill() {
                self.failed = Some(e);
            }
        }
    }

    /// The key map, None if the snapshot cannot have one; a spill that failed is an error.
    pub fn finish(mut self) -> Result<Option<Built>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !self.found || !self.placed {
            return Ok(None);
        }
        self.out.last.sort();
        Ok(Some(self.out))
    }
}

impl bolt::Visitor for Builder {
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
        self.entry_at(path, key, value, None);
    }

    fn entry_at(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>, at: Option<u64>) {
        match (path, value) {
            ([], None) if key == etcd_data::schema::KEY => self.found = true,
            ([bucket], Some(record)) if bucket == etcd_data::schema::KEY => self.record(key, record, at),
            _ => {}
        }
    }
}

/// The latest record of every live key of the snapshot at `path` that `want` accepts, sorted
/// by key: `(key, record)`.
pub fn latest_records(path: &Path, want: &KeyFilter<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut seen: rustc_hash::FxHashSet<u128> = Default::default();
    let db = bolt::Db::open(path).map_err(etcd_data::Error::from)?;
    each_record(&db, &mut |key, record, tombstone| {
        if seen.insert(key_id(key)) && !tombstone && want(key) {
            out.push((key.to_vec(), record.to_vec()));
        }
    })?;
    out.sort_unstable();
    Ok(out)
}

/// Parse one stored segment.
pub fn decode(b: &[u8]) -> Result<Vec<Entry>> {
    let bad = |what: &str| Error::Damaged(format!("key map segment: {what}"));
    let mut r = Reader { b, at: 0 };
    if r.take(4).ok_or_else(|| bad("truncated"))? != MAGIC {
        return Err(bad("not a key map segment"));
    }
    let count = u32::from_le_bytes(r.take(4).ok_or_else(|| bad("truncated"))?.try_into().unwrap()) as usize;
    let mut out = Vec::with_capacity(count.min(SEGMENT));
    for _ in 0..count {
        out.push(r.entry().ok_or_else(|| bad("truncated"))?);
    }
    if r.at != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// Every entry of `m`'s key map whose key `want` accepts, in key order; None when the backup
/// has no key map (made before there were key maps).
pub async fn select(repo: &Repository, index: &Index, m: &Manifest, want: &KeyFilter<'_>, parallel: usize) -> Result<Option<Vec<Entry>>> {
    let Some(km) = &m.key_map else { return Ok(None) };
    // The segments were stored one after another at the end of the backup: they share a pack
    // or two, and are read with a ranged read per run, not a request each; so are patches.
    let mut blobs = Vec::with_capacity(km.segments.len() + km.patches.len());
    for (i, s) in km.blobs().enumerate() {
        let loc = index.blobs.get(&parse_id(s)?).ok_or_else(|| Error::Damaged(format!("key map blob {s} is not in any index")))?;
        blobs.push((i, *loc));
    }
    let (mut read, _) = read_blobs(repo, index, blobs, parallel).await?;
    let mut patches = Vec::with_capacity(km.patches.len());
    for i in km.segments.len()..km.segments.len() + km.patches.len() {
        let b = read.remove(&i).ok_or_else(|| Error::Damaged("a key map patch was not read".into()))?;
        patches.push(Patch::decode(&b)?);
    }
    let mut base = Vec::new();
    for seg in read.into_values() {
        base.extend(decode(&seg)?.into_iter().filter(|e| want(&e.key)));
    }
    Ok(Some(resolve(base, &overrides(patches), want)))
}

/// Read and open `blobs` (each with the caller's number for it), one ranged read per run of
/// blobs of a pack that lie closer than the store link's bandwidth-delay product
/// ([`crate::link::Link::coalesce_gap`], measured on the reads before this one): a request
/// costs a round trip, skipped bytes cost their transfer. The blobs by number, and the bytes
/// read.
async fn read_blobs(
    repo: &Repository,
    index: &Index,
    blobs: Vec<(usize, crate::repository::BlobLoc)>,
    parallel: usize,
) -> Result<(BTreeMap<usize, Vec<u8>>, u64)> {
    let mut by_pack: BTreeMap<BlobId, Vec<(usize, crate::repository::BlobLoc)>> = BTreeMap::new();
    for (i, loc) in blobs {
        by_pack.entry(loc.pack).or_default().push((i, loc));
    }
    let gap = repo.location.link.coalesce_gap();
    let mut runs: Vec<Vec<(usize, crate::repository::BlobLoc)>> = Vec::new();
    for (_, mut blobs) in by_pack {
        blobs.sort_by_key(|(_, l)| l.entry.offset);
        for b in blobs {
            let end = |l: &crate::repository::BlobLoc| l.entry.offset as u64 + l.entry.length as u64;
            match runs.last_mut() {
                Some(run) if run[0].1.pack == b.1.pack && (b.1.entry.offset as u64) <= end(&run[run.len() - 1].1) + gap => run.push(b),
                _ => runs.push(vec![b]),
            }
        }
    }
    let read = std::sync::atomic::AtomicU64::new(0);
    let blobs: BTreeMap<usize, Vec<u8>> = futures::stream::iter(runs.into_iter().map(|run| {
        let read = &read;
        async move {
            let pack = run[0].1.pack;
            let start = run[0].1.entry.offset as u64;
            let end = run.iter().map(|(_, l)| l.entry.offset as u64 + l.entry.length as u64).max().unwrap_or(start);
            let path = index.pack_path(&pack);
            let bytes = repo.store().get_range(&path, start..end).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::Damaged(format!("pack {} is missing", hex::encode(pack))),
                e => Error::store(format!("read {path}"), e),
            })?;
            let mut out = Vec::with_capacity(run.len());
            for (i, l) in &run {
                let from = (l.entry.offset as u64 - start) as usize;
                let sealed =
                    bytes.get(from..from + l.entry.length as usize).ok_or_else(|| Error::Damaged(format!("pack {}: short read", hex::encode(pack))))?;
                out.push((*i, repo.open_blob(&l.entry, sealed, &hex::encode(pack))?));
            }
            read.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, Error>(out)
        }
    }))
    // Small ranged reads: their cost is the round trip, so more of them are in flight than
    // the bulk paths' `parallel`.
    .buffer_unordered(parallel.max(1) * 4)
    .try_collect::<Vec<_>>()
    .await?
    .into_iter()
    .flatten()
    .collect();
    Ok((blobs, read.into_inner()))
}

/// The records of `entries` (bytes of the snapshot file at each entry's place), read from the
/// chunks that hold them, fetched once each: `(revision key, record)`, and the bytes read
/// from the store for the chunks.
pub async fn fetch(repo: Arc<Repository>, index: &Index, m: &Manifest, entries: &[Entry], parallel: usize) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, u64)> {
    let size = m.snapshot.size;
    for e in entries {
        if e.len == 0 || e.offset.checked_add(e.len as u64).is_none_or(|end| end > size) {
            return Err(Error::Damaged(format!("key map: record of {} lies outside the snapshot", String::from_utf8_lossy(&e.key))));
        }
    }
    // Chunks of one size: a record's chunks are known by arithmetic, and only the list blobs
    // holding their ids are read (one of 19 for one object of a 1.26 GB snapshot). Otherwise
    // the whole list gives each chunk's start.
    let (starts, all) = match fixed_chunk(&repo, m) {
        Some(chunk) => (Starts::Fixed(chunk), None),
        None => {
            let all = repo.chunk_ids(m, index).await?;
            let mut starts = Vec::with_capacity(all.len());
            let mut off = 0u64;
            for id in &all {
                let loc = index.blobs.get(id).ok_or_else(|| Error::Damaged(format!("chunk {} is not in any index", hex::encode(id))))?;
                starts.push(off);
                off += loc.entry.plain_len as u64;
            }
            if off != size {
                return Err(Error::Damaged(format!("the chunks add up to {off} bytes, the manifest says {size}")));
            }
            (Starts::Listed(starts), Some(all))
        }
    };
    let positions: std::collections::BTreeSet<usize> =
        entries.iter().flat_map(|e| starts.chunk_of(e.offset)..=starts.chunk_of(e.offset + e.len as u64 - 1)).collect();
    let (ids, mut read) = match all {
        None => repo.chunk_ids_at(m, index, &positions).await?,
        Some(all) => {
            let read = m.list_blobs().filter_map(|l| parse_id(l).ok().and_then(|i| index.blobs.get(&i))).map(|l| l.entry.length as u64).sum();
            (positions.iter().map(|i| (*i, all[*i])).collect::<BTreeMap<usize, BlobId>>(), read)
        }
    };
    // A namespace's records are spread over hundreds of chunks: read in runs ([`read_blobs`]).
    let needed: Vec<(usize, crate::repository::BlobLoc)> = ids
        .iter()
        .map(|(i, id)| index.blobs.get(id).map(|l| (*i, *l)).ok_or_else(|| Error::Damaged(format!("chunk {} is not in any index", hex::encode(id)))))
        .collect::<Result<_>>()?;
    let (chunks, chunks_read) = read_blobs(&repo, index, needed, parallel).await?;
    read += chunks_read;
    for (i, c) in &chunks {
        if c.len() as u64 != starts.len(*i, size) {
            return Err(Error::Damaged(format!("chunk {i} holds {} bytes, not the {} its place needs", c.len(), starts.len(*i, size))));
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut rec = Vec::with_capacity(e.len as usize);
        let (mut pos, end) = (e.offset, e.offset + e.len as u64);
        while pos < end {
            let i = starts.chunk_of(pos);
            let c = &chunks[&i];
            let from = (pos - starts.start(i)) as usize;
            let to = ((end - starts.start(i)) as usize).min(c.len());
            rec.extend_from_slice(&c[from..to]);
            pos = starts.start(i) + to as u64;
        }
        out.push((e.rev_key.clone(), rec));
    }
    Ok((out, read))
}

/// Where a backup's chunks start in the file.
enum Starts {
    /// From the whole chunk list.
    Listed(Vec<u64>),
    /// Every chunk this size but the last.
    Fixed(u64),
}

impl Starts {
    fn chunk_of(&self, pos: u64) -> usize {
        match self {
            Starts::Listed(s) => s.partition_point(|s| *s <= pos) - 1,
            Starts::Fixed(c) => (pos / c) as usize,
        }
    }

    fn start(&self, i: usize) -> u64 {
        match self {
            Starts::Listed(s) => s[i],
            Starts::Fixed(c) => i as u64 * c,
        }
    }

    /// The length chunk `i` must have in a file of `size` bytes.
    fn len(&self, i: usize, size: u64) -> u64 {
        match self {
            Starts::Listed(s) => s.get(i + 1).copied().unwrap_or(size) - s[i],
            Starts::Fixed(c) => (*c).min(size - i as u64 * c),
        }
    }
}

/// The chunk size of a backup cut into fixed chunks of the repository's `pages` of 4 KiB
/// (etcd's page size on amd64 and 4 KiB-page arm64), when the manifest's chunk count agrees;
/// None otherwise (content-defined chunks, another page size: the whole list gives the
/// starts). Every chunk read is checked to have the length its place needs.
fn fixed_chunk(repo: &Repository, m: &Manifest) -> Option<u64> {
    let chunk = repo.config.chunker.pages as u64 * 4096;
    (chunk > 0 && m.snapshot.size.div_ceil(chunk) == m.chunks).then_some(chunk)
}

/// What [`fetch_selected`] read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selected {
    /// Keys selected.
    pub keys: usize,
    /// Bytes read from the store for them (sealed): the key map and the chunks.
    pub fetched: u64,
    /// The snapshot's size.
    pub snapshot: u64,
}

/// The live keys of backup `id` that `want` accepts, as a small bbolt file at `out` (see
/// [`write_db`]), reading only the key map and the chunks that hold their records; under a
/// shared lock on the backup's cluster. None (and nothing written) when the backup has no
/// key map: the caller fetches the whole snapshot instead.
pub async fn fetch_selected(repo: Arc<Repository>, id: &str, m: &Manifest, want: &KeyFilter<'_>, out: &Path, parallel: usize) -> Result<Option<Selected>> {
    if m.key_map.is_none() {
        return Ok(None);
    }
    let read = async {
        let index = repo.load_index(&m.cluster).await?;
        let sealed = |id: &str| parse_id(id).ok().and_then(|i| index.blobs.get(&i)).map_or(0, |l| l.entry.length as u64);
        let km = m.key_map.as_ref().expect("checked above");
        let mut fetched: u64 = km.blobs().map(|s| sealed(s)).sum();
        let Some(entries) = select(&repo, &index, m, want, parallel).await? else { return Ok(None) };
        let (records, read) = fetch(repo.clone(), &index, m, &entries, parallel).await?;
        fetched += read;
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || write_db(records, &out)).await.map_err(|e| Error::Other(format!("writing the key file: {e}")))??;
        Ok(Some(Selected { keys: entries.len(), fetched, snapshot: m.snapshot.size }))
    };
    crate::restore::reading_backup(&repo, id, m, "get", read).await
}

/// A bbolt file at `out` holding `records` in a `key` bucket, as etcd stores them: a snapshot
/// with only these records, for the snapshot readers. Records are sorted by revision here.
pub fn write_db(mut records: Vec<(Vec<u8>, Vec<u8>)>, out: &Path) -> Result<()> {
    records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    records.dedup_by(|a, b| a.0 == b.0);
    let f = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let werr = |e: bolt::WriteError| Error::Other(format!("{}: {e}", out.display()));
    let mut w = bolt::Writer::new(std::io::BufWriter::new(f), bolt::WriterOptions::default()).map_err(werr)?;
    w.begin_bucket(etcd_data::schema::KEY).map_err(werr)?;
    for (k, v) in &records {
        w.put(k, v).map_err(werr)?;
    }
    w.end_bucket().map_err(werr)?;
    let (buf, _) = w.finish().map_err(werr)?;
    buf.into_inner().map_err(|e| Error::io(out, e.into_error()))?.sync_all().map_err(|e| Error::io(out, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64, tombstone: bool) -> Vec<u8> {
        let mut k = etcd_data::schema::Revision { main, sub: 0 }.to_bytes().to_vec();
        if tombstone {
            k.push(etcd_data::schema::MARK_TOMBSTONE);
        }
        k
    }

    fn entry(key: &str, main: i64) -> Entry {
        Entry { key: key.as_bytes().to_vec(), rev_key: rev(main, false), offset: main as u64 * 4096, len: 100 }
    }

    /// Patches round-trip, later ones override earlier ones (a key removed then set again is
    /// there), and readers see the base with every patch applied.
    #[test]
    fn patches_apply_in_order_over_the_segments() {
        let base: Vec<Entry> = ["/a", "/b", "/c", "/d"].iter().enumerate().map(|(i, k)| entry(k, i as i64 + 1)).collect();
        let p1 = Patch(vec![(b"/b".to_vec(), None), (b"/c".to_vec(), Some(entry("/c", 10))), (b"/e".to_vec(), Some(entry("/e", 11)))]);
        let p2 = Patch(vec![(b"/0".to_vec(), Some(entry("/0", 12))), (b"/b".to_vec(), Some(entry("/b", 13))), (b"/e".to_vec(), None)]);
        for p in [&p1, &p2] {
            assert_eq!(&Patch::decode(&p.encode()).unwrap(), p);
        }
        let over = overrides([p1, p2]);
        let all = resolve(base.clone(), &over, &|_| true);
        let got: Vec<(&[u8], i64)> = all.iter().map(|e| (e.key.as_slice(), (e.offset / 4096) as i64)).collect();
        assert_eq!(got, vec![(&b"/0"[..], 12), (b"/a", 1), (b"/b", 13), (b"/c", 10), (b"/d", 4)]);
        let some = resolve(base, &over, &|k| k.starts_with(b"/b") || k.starts_with(b"/e"));
        assert_eq!(some.len(), 1);
        // Damage is refused.
        let mut bad = Patch(vec![(b"/z".to_vec(), None), (b"/a".to_vec(), None)]).encode();
        assert!(Patch::decode(&bad).is_err(), "keys out of order");
        bad.truncate(bad.len() - 1);
        assert!(Patch::decode(&bad).is_err());
        assert!(Patch::decode(b"QKM1\0\0\0\0").is_err());
    }

    #[test]
    fn spilled_runs_merge_to_the_newest_record_of_each_live_key() {
        // Records as the backwards pass meets them (newest first), spilled every 3000 records:
        // keys written, rewritten and deleted across runs, so each rule of the merge is met
        // between runs and within one.
        let n = SEGMENT + SEGMENT / 5;
        let mut history: Vec<(Vec<u8>, i64, bool)> = Vec::new();
        let mut main = 0;
        for round in 0..3 {
            for i in 0..n {
                main += 1;
                let deleted = round == 1 && i % 7 == 0 || round == 2 && i % 11 == 0;
                history.push((format!("/registry/pods/ns/p{i:06}").into_bytes(), main, false));
                if deleted {
                    main += 1;
                    history.push((format!("/registry/pods/ns/p{i:06}").into_bytes(), main, true));
                }
            }
        }
        let mut built = Built::default();
        for (at, (key, main, tomb)) in history.iter().rev().enumerate() {
            assert!(built.last.push(key, &rev(*main, *tomb), *main as u64 * 100, 90));
            if at % 3000 == 2999 {
                built.spill().unwrap();
            }
        }
        assert!(built.spilled.len() > 10);
        assert!(!built.last.push(&vec![b'k'; 70000], &rev(1, false), 0, 1), "a key over 64 KiB has no entry");
        built.last.sort();
        let mut segs = Vec::new();
        let total = built
            .segments(|s| {
                segs.push(s);
                Ok(())
            })
            .unwrap();

        let mut want: BTreeMap<Vec<u8>, (i64, bool)> = BTreeMap::new();
        for (key, main, tomb) in &history {
            want.insert(key.clone(), (*main, *tomb));
        }
        let want: Vec<Entry> = want
            .into_iter()
            .filter(|(_, (_, tomb))| !tomb)
            .map(|(key, (main, _))| Entry { key, rev_key: rev(main, false), offset: main as u64 * 100, len: 90 })
            .collect();
        assert_eq!(total, want.len() as u64);
        assert_eq!(segs.len(), want.len().div_ceil(SEGMENT));
        let back: Vec<Entry> = segs.iter().flat_map(|s| decode(s).unwrap()).collect();
        assert_eq!(back, want, "every live key once, at its newest record, in key order");

        assert!(decode(&segs[1][..segs[1].len() - 1]).is_err());
        let mut extra = segs[1].clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(b"XXXX\0\0\0\0").is_err());
    }
}
