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

/// Blobs of one pack closer than this are read with one request.
const COALESCE_GAP: u64 = 64 << 10;

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
}

/// One live key's latest record, met newest first: its key, its revision key, the record
/// (empty unless asked for) and where it lies in the file (None in an inline bucket).
type Latest<'a> = dyn FnMut(&[u8], &[u8], &[u8], Option<(u64, usize)>) -> bool + 'a;

/// A key's identity in the set of keys met: 128 bits of BLAKE3, so the set costs 16 bytes a
/// key however long the keys (a collision, which would hide a key, is beyond reach).
fn key_id(key: &[u8]) -> u128 {
    u128::from_le_bytes(blake3::hash(key).as_bytes()[..16].try_into().expect("16 bytes"))
}

/// Call `f` for the latest record of every live key of the snapshot at `path`, newest first,
/// until it returns false. False when the snapshot has no `key` bucket.
fn each_latest(path: &Path, records: bool, f: &mut Latest<'_>) -> Result<bool> {
    let db = bolt::Db::open(path).map_err(etcd_data::Error::from)?;
    let damaged = |f: bolt::Fault| Error::Damaged(format!("{}: key bucket: {f}", path.display()));
    let Some(bucket) = db.bucket(&[etcd_data::schema::KEY]).map_err(damaged)? else { return Ok(false) };
    let mut seen: rustc_hash::FxHashSet<u128> = Default::default();
    let mut c = bucket.cursor_rev().map_err(damaged)?;
    loop {
        let (rev_key, record, key, tombstone) = {
            let Some(e) = c.next().map_err(damaged)? else { break };
            let Ok(rk) = RevisionKey::parse(e.key) else { continue };
            let Some(kv) = KeyValueRef::decode(e.value) else { continue };
            if e.value.is_empty() || kv.key.is_empty() || !seen.insert(key_id(kv.key)) {
                continue;
            }
            (e.key.to_vec(), if records { e.value.to_vec() } else { Vec::new() }, kv.key.to_vec(), rk.tombstone)
        };
        if !tombstone && !f(&key, &rev_key, &record, c.value_offset()) {
            break;
        }
    }
    Ok(true)
}

/// A key map as built: entries in their stored form, packed in one buffer (no allocation per
/// key: a backup of a cluster with millions of keys holds them in tens of bytes each).
#[derive(Debug, Default)]
pub struct Built {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl Built {
    /// Add an entry; false when it cannot be stored (a key longer than 64 KiB).
    fn push(&mut self, key: &[u8], rev_key: &[u8], offset: u64, len: u32) -> bool {
        let (Ok(kl), Ok(rl)) = (u16::try_from(key.len()), u8::try_from(rev_key.len())) else { return false };
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(&kl.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.push(rl);
        self.buf.extend_from_slice(rev_key);
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        true
    }

    fn key(&self, start: usize) -> &[u8] {
        let kl = u16::from_le_bytes([self.buf[start], self.buf[start + 1]]) as usize;
        &self.buf[start + 2..start + 2 + kl]
    }

    /// The stored bytes of the entry at `start`.
    fn entry(&self, start: usize) -> &[u8] {
        let kl = u16::from_le_bytes([self.buf[start], self.buf[start + 1]]) as usize;
        let rl = self.buf[start + 2 + kl] as usize;
        &self.buf[start..start + 2 + kl + 1 + rl + 12]
    }

    fn sort(&mut self) {
        let mut starts = std::mem::take(&mut self.starts);
        starts.sort_unstable_by(|a, b| self.key(*a).cmp(self.key(*b)));
        self.starts = starts;
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// The key map of the snapshot at `path`: its live keys, sorted, with their latest records'
/// places. None when the snapshot has no `key` bucket or keeps records where no offset can
/// be given (an inline bucket) or no entry can hold (a key over 64 KiB); a damaged bucket is
/// an error (the backup reports it anyway).
pub fn build(path: &Path) -> Result<Option<Built>> {
    let mut out = Built::default();
    let mut placed = true;
    let found = each_latest(path, false, &mut |key, rev_key, _, at| {
        placed = at.is_some_and(|(offset, len)| out.push(key, rev_key, offset, len as u32));
        placed
    })?;
    if !found || !placed {
        return Ok(None);
    }
    out.sort();
    Ok(Some(out))
}

/// The latest record of every live key of the snapshot at `path` that `want` accepts, sorted
/// by key: `(key, record)`.
pub fn latest_records(path: &Path, want: &KeyFilter<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    each_latest(path, true, &mut |key, _, record, _| {
        if want(key) {
            out.push((key.to_vec(), record.to_vec()));
        }
        true
    })?;
    out.sort_unstable();
    Ok(out)
}

/// The stored form of a built key map, one byte string per segment.
pub fn encode(m: &Built) -> Vec<Vec<u8>> {
    m.starts
        .chunks(SEGMENT)
        .map(|seg| {
            let mut b = Vec::with_capacity(8 + seg.iter().map(|s| m.entry(*s).len()).sum::<usize>());
            b.extend_from_slice(MAGIC);
            b.extend_from_slice(&(seg.len() as u32).to_le_bytes());
            for s in seg {
                b.extend_from_slice(m.entry(*s));
            }
            b
        })
        .collect()
}

/// Parse one stored segment.
pub fn decode(b: &[u8]) -> Result<Vec<Entry>> {
    let bad = |what: &str| Error::Damaged(format!("key map segment: {what}"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = at.checked_add(n).filter(|e| *e <= b.len()).ok_or_else(|| bad("truncated"))?;
        let s = &b[at..end];
        at = end;
        Ok(s)
    };
    if take(4)? != MAGIC {
        return Err(bad("not a key map segment"));
    }
    let count = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
    let mut out = Vec::with_capacity(count.min(SEGMENT));
    for _ in 0..count {
        let kl = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        let key = take(kl)?.to_vec();
        let rl = take(1)?[0] as usize;
        let rev_key = take(rl)?.to_vec();
        let offset = u64::from_le_bytes(take(8)?.try_into().unwrap());
        let len = u32::from_le_bytes(take(4)?.try_into().unwrap());
        out.push(Entry { key, rev_key, offset, len });
    }
    if at != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// Every entry of `m`'s key map whose key `want` accepts, in key order; None when the backup
/// has no key map (made before there were key maps).
pub async fn select(repo: &Repository, index: &Index, m: &Manifest, want: &KeyFilter<'_>) -> Result<Option<Vec<Entry>>> {
    let Some(km) = &m.key_map else { return Ok(None) };
    let mut out = Vec::new();
    let segs: Vec<Vec<Entry>> = futures::stream::iter(km.segments.iter().map(|s| async move {
        let id = parse_id(s)?;
        let loc = index.blobs.get(&id).ok_or_else(|| Error::Damaged(format!("key map blob {s} is not in any index")))?;
        decode(&repo.read_blob(index, loc).await?)
    }))
    .buffered(8)
    .try_collect()
    .await?;
    for seg in segs {
        out.extend(seg.into_iter().filter(|e| want(&e.key)));
    }
    Ok(Some(out))
}

/// The records of `entries` (bytes of the snapshot file at each entry's place), read from the
/// chunks that hold them, fetched once each: `(revision key, record)`, and the bytes read
/// from the store for the chunks.
pub async fn fetch(repo: Arc<Repository>, index: &Index, m: &Manifest, entries: &[Entry], parallel: usize) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, u64)> {
    let ids = repo.chunk_ids(m, index).await?;
    // Where each chunk starts in the file.
    let mut starts = Vec::with_capacity(ids.len());
    let mut off = 0u64;
    for id in &ids {
        let loc = index.blobs.get(id).ok_or_else(|| Error::Damaged(format!("chunk {} is not in any index", hex::encode(id))))?;
        starts.push(off);
        off += loc.entry.plain_len as u64;
    }
    if off != m.snapshot.size {
        return Err(Error::Damaged(format!("the chunks add up to {off} bytes, the manifest says {}", m.snapshot.size)));
    }
    let chunk_of = |pos: u64| starts.partition_point(|s| *s <= pos) - 1;
    // The chunks each record needs.
    let mut needed: BTreeMap<usize, BlobId> = BTreeMap::new();
    for e in entries {
        let end = e.offset + e.len as u64;
        if e.len == 0 || end > off {
            return Err(Error::Damaged(format!("key map: record of {} lies outside the snapshot", String::from_utf8_lossy(&e.key))));
        }
        let (first, last) = (chunk_of(e.offset), chunk_of(end - 1));
        needed.extend((first..=last).zip(&ids[first..=last]).map(|(i, id)| (i, *id)));
    }
    // One ranged read per run of nearby blobs in a pack: a namespace's records are spread
    // over hundreds of chunks, and a request costs more than a few skipped kilobytes.
    let mut by_pack: BTreeMap<BlobId, Vec<(usize, crate::repository::BlobLoc)>> = BTreeMap::new();
    for (i, id) in needed {
        let loc = index.blobs.get(&id).ok_or_else(|| Error::Damaged(format!("chunk {} is not in any index", hex::encode(id))))?;
        by_pack.entry(loc.pack).or_default().push((i, *loc));
    }
    let mut runs: Vec<Vec<(usize, crate::repository::BlobLoc)>> = Vec::new();
    for (_, mut blobs) in by_pack {
        blobs.sort_by_key(|(_, l)| l.entry.offset);
        for b in blobs {
            let end = |l: &crate::repository::BlobLoc| l.entry.offset as u64 + l.entry.length as u64;
            match runs.last_mut() {
                Some(run) if run[0].1.pack == b.1.pack && (b.1.entry.offset as u64) <= end(&run[run.len() - 1].1) + COALESCE_GAP => run.push(b),
                _ => runs.push(vec![b]),
            }
        }
    }
    let read = std::sync::atomic::AtomicU64::new(0);
    let chunks: BTreeMap<usize, Vec<u8>> = futures::stream::iter(runs.into_iter().map(|run| {
        let (repo, read) = (repo.clone(), &read);
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
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut rec = Vec::with_capacity(e.len as usize);
        let (mut pos, end) = (e.offset, e.offset + e.len as u64);
        while pos < end {
            let i = chunk_of(pos);
            let c = &chunks[&i];
            let from = (pos - starts[i]) as usize;
            let to = ((end - starts[i]) as usize).min(c.len());
            rec.extend_from_slice(&c[from..to]);
            pos = starts[i] + to as u64;
        }
        out.push((e.rev_key.clone(), rec));
    }
    Ok((out, read.into_inner()))
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
        let mut fetched: u64 = km.segments.iter().chain(&m.chunk_lists).map(|s| sealed(s)).sum();
        let Some(entries) = select(&repo, &index, m, want).await? else { return Ok(None) };
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

    #[test]
    fn segments_round_trip_and_refuse_damage() {
        let entries: Vec<Entry> = (0..SEGMENT + 10)
            .map(|i| Entry { key: format!("/registry/pods/ns/p{i:06}").into_bytes(), rev_key: vec![1; 17], offset: i as u64 * 100, len: 90 })
            .collect();
        let mut built = Built::default();
        for e in entries.iter().rev() {
            assert!(built.push(&e.key, &e.rev_key, e.offset, e.len));
        }
        assert!(!built.push(&vec![b'k'; 70000], &[1; 17], 0, 1), "a key over 64 KiB has no entry");
        built.sort();
        let segs = encode(&built);
        assert_eq!(segs.len(), 2);
        let back: Vec<Entry> = segs.iter().flat_map(|s| decode(s).unwrap()).collect();
        assert_eq!(back, entries, "sorted by key again");
        assert!(decode(&segs[1][..segs[1].len() - 1]).is_err());
        let mut extra = segs[1].clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(b"XXXX\0\0\0\0").is_err());
    }
}
