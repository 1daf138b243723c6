//! Delta segments: the changes a cluster made after a full backup, captured from a watch of
//! the whole keyspace and stored as sealed repository objects, so a restore can replay them
//! onto the backup and stop at any revision (`restore --at-revision`, `--at-time`).
//!
//! ```text
//! clusters/<cluster>/deltas/<first revision, 20 digits>-<last revision, 20 digits>-<16 hex>
//! ```
//! * The 16 hex are the start of the BLAKE3-256 of the stored bytes: a segment is written
//!   once under a name derived from its content, never rewritten (write-once buckets).
//! * `first`..`last` is the range of revisions the segment **covers**: `first` is one past the
//!   previous segment's `last` (or the revision the capture started from), `last` is the
//!   revision of its last event. Revisions in the range without events (a `--bump-revision`
//!   jump) are covered too; a chain is contiguous when each segment starts one past where the
//!   previous one ends. Every event of a revision is in one segment: revisions are never split.
//! * Stored bytes: `seal(data key, zstd(plaintext), AAD = "delta")` (AES-256-GCM, as every
//!   sealed object; zstd level = the repository's `compression`, at least 1).
//!
//! Plaintext:
//! ```text
//! "QDS1"
//! u32 LE  header length, then the header: JSON (SegmentHeader)
//! records, to the end, one per revision in ascending order:
//!   i64 LE  main revision
//!   i64 LE  time the capture received it, Unix milliseconds
//!   u32 LE  number of events n (≥ 1)
//!   n × event, in the order of the transaction's changes (= its sub revisions 0, 1, …):
//!     u8      kind: 0 put, 1 delete
//!     u32 LE  length, then: put → the marshalled mvccpb.KeyValue as the watch delivered it
//!             (key, create_revision, mod_revision, version, value, lease); delete → the key
//!     i64 LE  prev_kv's mod_revision (0: no previous value, or the capture ran without prev_kv)
//! ```
//! Times are when the capture received the watch response, not when etcd committed: close to
//! it while the watch is live, later while it catches up after a reconnect.
use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use etcd_data::replay::{Change, RevisionChanges};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::repository::Repository;

pub const FORMAT: &str = "quorum-delta";
pub const VERSION: u32 = 1;
/// The directory of a cluster's segments (`clusters/<C>/deltas`).
pub fn dir(cluster: &str) -> String {
    crate::format::cluster_path(cluster, "deltas")
}
const MAGIC: &[u8; 4] = b"QDS1";
const AAD: &[u8] = b"delta";
/// Characters of the BLAKE3 hex kept in a segment's name.
pub const NAME_HASH_LEN: usize = 16;

/// A segment's header (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub format: String,
    pub version: u32,
    pub cluster: String,
    /// The full backup (id) the capture started after.
    pub base: String,
    /// etcd's cluster ID (hex) from the watch responses.
    #[serde(default)]
    pub cluster_id: Option<String>,
    pub first_revision: i64,
    pub last_revision: i64,
    /// Revisions with events, and events, in the segment.
    pub revisions: u64,
    pub events: u64,
    /// Receive times of the first and last revision (Unix ms).
    pub first_time_ms: i64,
    pub last_time_ms: i64,
    pub host: String,
    pub created: String,
    /// Leases the segment's puts are attached to, with their granted TTL in seconds, as the
    /// capture first saw them (`LeaseTimeToLive`): a point-in-time restore adds the ones the
    /// base backup's lease table lacks, so etcd attaches their keys (and expires them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<(i64, i64)>,
}

/// One event of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub change: Change,
    /// `prev_kv.mod_revision` (0 when there was none).
    pub prev_mod_revision: i64,
}

/// Every event of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub revision: i64,
    pub time_ms: i64,
    pub events: Vec<Event>,
}

impl Record {
    pub fn changes(&self) -> RevisionChanges {
        RevisionChanges { revision: self.revision, changes: self.events.iter().map(|e| e.change.clone()).collect() }
    }
}

pub use crate::format::check_cluster_name;

/// Builds one segment in memory (the events of the revisions pushed, encoded).
#[derive(Debug)]
pub struct SegmentBuilder {
    cluster: String,
    base: String,
    cluster_id: Option<String>,
    first_revision: i64,
    last_revision: i64,
    revisions: u64,
    events: u64,
    first_time_ms: i64,
    last_time_ms: i64,
    body: Vec<u8>,
    leases: std::collections::BTreeMap<i64, i64>,
}

impl SegmentBuilder {
    /// A segment covering revisions from `first_revision` on.
    pub fn new(cluster: &str, base: &str, first_revision: i64) -> SegmentBuilder {
        SegmentBuilder {
            cluster: cluster.to_string(),
            base: base.to_string(),
            cluster_id: None,
            first_revision,
            last_revision: first_revision - 1,
            revisions: 0,
            events: 0,
            first_time_ms: 0,
            last_time_ms: 0,
            body: Vec::new(),
            leases: Default::default(),
        }
    }

    /// Record a lease (id, granted TTL in seconds) that a put of this segment is attached to.
    pub fn add_lease(&mut self, id: i64, ttl: i64) {
        self.leases.insert(id, ttl);
    }

    pub fn set_cluster_id(&mut self, id: Option<String>) {
        self.cluster_id = id;
    }

    pub fn is_empty(&self) -> bool {
        self.revisions == 0
    }

    /// Encoded bytes so far (before compression).
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn first_revision(&self) -> i64 {
        self.first_revision
    }

    /// The last revision pushed (`first_revision - 1` when empty).
    pub fn last_revision(&self) -> i64 {
        self.last_revision
    }

    pub fn revisions(&self) -> u64 {
        self.revisions
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Add one revision's events (all of them). Revisions must grow.
    pub fn push(&mut self, r: &Record) -> Result<()> {
        if r.revision <= self.last_revision {
            return Err(Error::Format(format!("revision {} pushed after {} (revisions must grow)", r.revision, self.last_revision)));
        }
        if r.events.is_empty() {
            return Err(Error::Format(format!("revision {} has no events", r.revision)));
        }
        let b = &mut self.body;
        b.extend_from_slice(&r.revision.to_le_bytes());
        b.extend_from_slice(&r.time_ms.to_le_bytes());
        b.extend_from_slice(&(r.events.len() as u32).to_le_bytes());
        for e in &r.events {
            let (kind, bytes) = match &e.change {
                Change::Put { kv } => (0u8, kv),
                Change::Delete { key } => (1u8, key),
            };
            b.push(kind);
            b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            b.extend_from_slice(bytes);
            b.extend_from_slice(&e.prev_mod_revision.to_le_bytes());
        }
        if self.revisions == 0 {
            self.first_time_ms = r.time_ms;
        }
        self.last_time_ms = r.time_ms;
        self.last_revision = r.revision;
        self.revisions += 1;
        self.events += r.events.len() as u64;
        Ok(())
    }

    /// The header this segment will carry.
    pub fn header(&self) -> SegmentHeader {
        SegmentHeader {
            format: FORMAT.into(),
            version: VERSION,
            cluster: self.cluster.clone(),
            base: self.base.clone(),
            cluster_id: self.cluster_id.clone(),
            first_revision: self.first_revision,
            last_revision: self.last_revision,
            revisions: self.revisions,
            events: self.events,
            first_time_ms: self.first_time_ms,
            last_time_ms: self.last_time_ms,
            host: crate::hostname(),
            created: crate::now_rfc3339(),
            leases: self.leases.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    /// Seal: (object name, stored bytes, header).
    pub fn seal(&self, key: &MasterKey, level: i32) -> Result<(String, Vec<u8>, SegmentHeader)> {
        if self.is_empty() {
            return Err(Error::Format("an empty segment is never written".into()));
        }
        let header = self.header();
        let h = serde_json::to_vec(&header).expect("serializable");
        let mut plain = Vec::with_capacity(8 + h.len() + self.body.len());
        plain.extend_from_slice(MAGIC);
        plain.extend_from_slice(&(h.len() as u32).to_le_bytes());
        plain.extend_from_slice(&h);
        plain.extend_from_slice(&self.body);
        let z = zstd::bulk::compress(&plain, level.max(1)).map_err(|e| Error::Other(format!("zstd: {e}")))?;
        let stored = key.seal(&z, AAD);
        let name = segment_name(&self.cluster, self.first_revision, self.last_revision, &stored);
        Ok((name, stored, header))
    }
}

/// `clusters/<cluster>/deltas/<first:020>-<last:020>-<hash16>`.
pub fn segment_name(cluster: &str, first: i64, last: i64, stored: &[u8]) -> String {
    let h = blake3::hash(stored).to_hex();
    format!("{}/{first:020}-{last:020}-{}", dir(cluster), &h[..NAME_HASH_LEN])
}

/// What a segment's name says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRef {
    /// Full object name.
    pub name: String,
    pub first: i64,
    pub last: i64,
    pub hash: String,
    pub size: u64,
}

/// Parse the last component of a segment name.
pub fn parse_segment_file(file: &str) -> Option<(i64, i64, String)> {
    let mut it = file.splitn(3, '-');
    let (a, b, h) = (it.next()?, it.next()?, it.next()?);
    if a.len() != 20 || b.len() != 20 || h.len() != NAME_HASH_LEN || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let (first, last) = (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?);
    (first >= 1 && first <= last).then(|| (first, last, h.to_string()))
}

/// A decoded segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub header: SegmentHeader,
    pub records: Vec<Record>,
}

/// Authenticate and decode a segment's stored bytes; `name` is its object name (its cluster,
/// range and hash are checked against the content).
pub fn open_segment(key: &MasterKey, name: &str, stored: &[u8]) -> Result<Segment> {
    let bad = |why: String| Error::Damaged(format!("{name}: {why}"));
    let file = name.rsplit('/').next().unwrap_or(name);
    let (first, last, hash) = parse_segment_file(file).ok_or_else(|| bad("not a segment name".into()))?;
    if blake3::hash(stored).to_hex()[..NAME_HASH_LEN] != hash {
        return Err(bad("content does not match its name (damaged)".into()));
    }
    let z = key.open(stored, AAD).ok_or_else(|| bad("does not authenticate (damaged, or written under another key)".into()))?;
    let plain = zstd::stream::decode_all(&z[..]).map_err(|e| bad(format!("does not decompress: {e}")))?;
    if plain.len() < 8 || &plain[..4] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let hl = u32::from_le_bytes(plain[4..8].try_into().unwrap()) as usize;
    let hend = 8usize.checked_add(hl).filter(|e| *e <= plain.len()).ok_or_else(|| bad("header beyond the end".into()))?;
    let header: SegmentHeader = serde_json::from_slice(&plain[8..hend]).map_err(|e| bad(format!("header: {e}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(Error::Format(format!("{name}: segment format {} v{} is not one this quorum reads", header.format, header.version)));
    }
    // `clusters/<C>/deltas/<file>` (version 1: `deltas/<C>/<file>`).
    let parts: Vec<&str> = name.split('/').collect();
    let cluster = match parts.as_slice() {
        [crate::format::CLUSTERS, c, "deltas", _] => Some(*c),
        [crate::format::v1::DELTAS, c, _] => Some(*c),
        _ => None,
    };
    if cluster.is_some_and(|c| c != header.cluster) || header.first_revision != first || header.last_revision != last {
        return Err(bad(format!("header (cluster {}, revisions {}..{}) does not match the name", header.cluster, header.first_revision, header.last_revision)));
    }
    let records = decode_records(&plain[hend..]).ok_or_else(|| bad("truncated or malformed record".into()))?;
    let mut prev = first - 1;
    let mut events = 0u64;
    for r in &records {
        if r.revision <= prev || r.revision > last {
            return Err(bad(format!("record of revision {} out of order or outside {first}..{last}", r.revision)));
        }
        prev = r.revision;
        events += r.events.len() as u64;
    }
    if prev != last || records.len() as u64 != header.revisions || events != header.events {
        return Err(bad(format!(
            "holds {} revisions and {events} events up to {prev}; the header says {} and {} up to {last}",
            records.len(),
            header.revisions,
            header.events
        )));
    }
    Ok(Segment { header, records })
}

fn decode_records(mut b: &[u8]) -> Option<Vec<Record>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    let i64_ = |b: &mut &[u8]| take(b, 8).map(|s| i64::from_le_bytes(s.try_into().unwrap()));
    let u32_ = |b: &mut &[u8]| take(b, 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()));
    let mut out = Vec::new();
    while !b.is_empty() {
        let revision = i64_(&mut b)?;
        let time_ms = i64_(&mut b)?;
        let n = u32_(&mut b)? as usize;
        if n == 0 {
            return None;
        }
        let mut events = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let kind = take(&mut b, 1)?[0];
            let len = u32_(&mut b)? as usize;
            let bytes = take(&mut b, len)?.to_vec();
            let prev_mod_revision = i64_(&mut b)?;
            let change = match kind {
                0 => Change::Put { kv: bytes },
                1 => Change::Delete { key: bytes },
                _ => return None,
            };
            events.push(Event { change, prev_mod_revision });
        }
        out.push(Record { revision, time_ms, events });
    }
    Some(out)
}

/// Write a built segment; returns its name and header.
pub async fn write_segment(repo: &Repository, seg: &SegmentBuilder) -> Result<(String, SegmentHeader)> {
    check_cluster_name(&seg.cluster)?;
    let (name, stored, header) = seg.seal(repo.data_key(), repo.config.compression)?;
    repo.put_new(&ObjPath::from(name.as_str()), Bytes::from(stored)).await?;
    Ok((name, header))
}

/// Read and decode one segment.
pub async fn read_segment(repo: &Repository, name: &str) -> Result<Segment> {
    let stored = repo.get(&ObjPath::from(name)).await?;
    open_segment(repo.data_key(), name, &stored)
}

/// Every segment of `cluster`, by first revision (then last, then name). Objects under the
/// prefix whose names are not segment names are ignored.
pub async fn list_segments(repo: &Repository, cluster: &str) -> Result<Vec<SegmentRef>> {
    check_cluster_name(cluster)?;
    let d = dir(cluster);
    let metas = repo.list(&d).await?;
    let mut out: Vec<SegmentRef> = metas
        .into_iter()
        .filter_map(|m| {
            let name = m.location.to_string();
            let file = m.location.filename()?.to_string();
            let (first, last, hash) = parse_segment_file(&file)?;
            (name == format!("{d}/{file}")).then_some(SegmentRef { name, first, last, hash, size: m.size })
        })
        .collect();
    out.sort_by(|a, b| (a.first, a.last, &a.name).cmp(&(b.first, b.last, &b.name)));
    Ok(out)
}

/// Revisions no segment covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
}

impl Gap {
    /// The verb that agrees with the gap's Display: "is" for one revision, else "are".
    pub fn are(&self) -> &'static str {
        if self.from == self.to {
            "is"
        } else {
            "are"
        }
    }

    /// The same in the past: "was" or "were".
    pub fn were(&self) -> &'static str {
        if self.from == self.to {
            "was"
        } else {
            "were"
        }
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "revision {}", self.from)
        } else {
            write!(f, "revisions {}..{}", self.from, self.to)
        }
    }
}

/// The segments that carry a cluster from one revision on.
#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    /// The first revision wanted (a base backup's revision + 1).
    pub from: i64,
    /// Segments to replay, in order, contiguous from `from` to `contiguous_to`.
    pub segments: Vec<SegmentRef>,
    /// The last revision reached without a gap (`from - 1` when no segment starts the chain).
    pub contiguous_to: i64,
    /// Every hole after `from` up to the last captured revision.
    pub gaps: Vec<Gap>,
    /// The last revision any segment covers.
    pub last_captured: i64,
}

/// Pick segments covering `from..=to` (or as far as they go when `to` is None): at each step
/// the segment that covers the next revision and reaches furthest (segments written twice over
/// one range, e.g. by a capture restarted from an earlier point, overlap harmlessly: they hold
/// the same history). Also lists every gap up to the last captured revision.
pub fn plan_chain(segments: &[SegmentRef], from: i64, to: Option<i64>) -> Chain {
    let last_captured = segments.iter().map(|s| s.last).max().unwrap_or(0);
    let mut chain = Chain { from, segments: Vec::new(), contiguous_to: from - 1, gaps: Vec::new(), last_captured };
    if to.is_some_and(|t| t < from) {
        return chain; // the base itself is the target: nothing to replay
    }
    let mut next = from;
    let mut contiguous = true;
    // Segments by first revision; BTreeMap keeps the scan simple.
    let mut by_first: BTreeMap<i64, Vec<&SegmentRef>> = BTreeMap::new();
    for s in segments.iter().filter(|s| s.last >= from) {
        by_first.entry(s.first).or_default().push(s);
    }
    while next <= last_captured {
        let best =
            by_first.range(..=next).flat_map(|(_, v)| v.iter()).filter(|s| s.last >= next).max_by(|a, b| a.last.cmp(&b.last).then_with(|| b.name.cmp(&a.name)));
        match best {
            Some(s) => {
                if contiguous {
                    chain.segments.push((*s).clone());
                    chain.contiguous_to = s.last;
                }
                next = s.last + 1;
                if contiguous && to.is_some_and(|t| s.last >= t) {
                    break;
                }
            }
            None => {
                let resume = by_first.range(next..).next().map(|(f, _)| *f).unwrap_or(last_captured + 1);
                chain.gaps.push(Gap { from: next, to: resume - 1 });
                contiguous = false;
                next = resume;
            }
        }
    }
    chain
}

impl Chain {
    /// Is `target` reachable (contiguously) from `from`?
    pub fn check_target(&self, cluster: &str, target: i64) -> Result<()> {
        if target <= self.contiguous_to {
            return Ok(());
        }
        if let Some(g) = self.gaps.first().filter(|g| g.from <= target) {
            return Err(Error::Missing(format!(
                "{g} of cluster {cluster} {} missing from the delta chain (no segment covers them): revisions {}..{} can be restored, {target} cannot",
                g.are(),
                self.from - 1,
                self.contiguous_to
            )));
        }
        Err(Error::Missing(format!(
            "revision {target} is beyond the captured chain of cluster {cluster}: the last captured revision is {}",
            self.contiguous_to.max(self.last_captured)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, c: i64, m: i64, v: i64) -> Vec<u8> {
        etcd_data::replay::encode_kv(&etcd_data::schema::KeyValue {
            key: k.as_bytes().to_vec(),
            create_revision: c,
            mod_revision: m,
            version: v,
            value: b"v".to_vec(),
            lease: 0,
        })
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = MasterKey::generate();
        let mut b = SegmentBuilder::new("prod", "abc", 10);
        b.set_cluster_id(Some("cdf818194e3a8c32".into()));
        let r1 = Record {
            revision: 11,
            time_ms: 1000,
            events: vec![
                Event { change: Change::Put { kv: kv("a", 11, 11, 1) }, prev_mod_revision: 0 },
                Event { change: Change::Delete { key: b"b".to_vec() }, prev_mod_revision: 7 },
            ],
        };
        let r2 = Record { revision: 14, time_ms: 2000, events: vec![Event { change: Change::Put { kv: kv("a", 11, 14, 2) }, prev_mod_revision: 11 }] };
        b.push(&r1).unwrap();
        assert!(b.push(&r1).is_err(), "revisions must grow");
        b.push(&r2).unwrap();
        let (name, stored, h) = b.seal(&key, 1).unwrap();
        assert!(name.starts_with("clusters/prod/deltas/00000000000000000010-00000000000000000014-"), "{name}");
        assert_eq!((h.first_revision, h.last_revision, h.revisions, h.events), (10, 14, 2, 3));
        let s = open_segment(&key, &name, &stored).unwrap();
        assert_eq!(s.records, vec![r1, r2]);
        assert_eq!(s.header, h);
        // Tampered, renamed, wrong key.
        let mut t = stored.clone();
        t[20] ^= 1;
        assert!(open_segment(&key, &name, &t).unwrap_err().to_string().contains("does not match its name"));
        let other = segment_name("prod", 10, 14, &t);
        assert!(open_segment(&key, &other, &t).unwrap_err().to_string().contains("authenticate"));
        let moved = name.replace("clusters/prod/", "clusters/staging/");
        assert!(open_segment(&key, &moved, &stored).unwrap_err().to_string().contains("does not match the name"));
        assert!(open_segment(&MasterKey::generate(), &name, &stored).is_err());
    }

    fn seg(first: i64, last: i64, tag: &str) -> SegmentRef {
        SegmentRef { name: format!("clusters/c/deltas/{first:020}-{last:020}-{tag}"), first, last, hash: tag.into(), size: 1 }
    }

    #[test]
    fn chain_planning_gaps_and_overlaps() {
        let segs = vec![seg(1, 5, "a"), seg(6, 9, "b"), seg(8, 12, "c"), seg(13, 13, "d"), seg(20, 25, "e"), seg(30, 31, "f")];
        // From 7: b covers 7..9, then c reaches 12, d 13; then a gap 14..19.
        let c = plan_chain(&segs, 7, None);
        assert_eq!(c.segments.iter().map(|s| s.hash.as_str()).collect::<Vec<_>>(), vec!["b", "c", "d"]);
        assert_eq!(c.contiguous_to, 13);
        assert_eq!(c.gaps, vec![Gap { from: 14, to: 19 }, Gap { from: 26, to: 29 }]);
        assert_eq!(c.last_captured, 31);
        assert!(c.check_target("c", 13).is_ok());
        let e = c.check_target("c", 22).unwrap_err().to_string();
        assert!(e.contains("revisions 14..19 of cluster c are missing"), "{e}");
        // A target stops the walk early.
        let c = plan_chain(&segs, 1, Some(7));
        assert_eq!(c.segments.iter().map(|s| s.hash.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        // Beyond the end.
        let c = plan_chain(&segs[..4], 1, Some(40));
        let e = c.check_target("c", 40).unwrap_err().to_string();
        assert!(e.contains("beyond the captured chain of cluster c: the last captured revision is 13"), "{e}");
        // Nothing captured after the base: a gap from the start.
        let c = plan_chain(&segs, 14, Some(20));
        assert_eq!(c.contiguous_to, 13);
        assert!(c.check_target("c", 20).unwrap_err().to_string().contains("revisions 14..19"));
        assert!(c.check_target("c", 13).is_ok(), "the base itself needs no segment");
        let c = plan_chain(&segs, 6, Some(5));
        assert!(c.segments.is_empty() && c.check_target("c", 5).is_ok());
    }

    #[test]
    fn names() {
        assert_eq!(parse_segment_file("00000000000000000010-00000000000000000014-0123456789abcdef"), Some((10, 14, "0123456789abcdef".into())));
        assert_eq!(parse_segment_file("00000000000000000015-00000000000000000014-0123456789abcdef"), None);
        assert_eq!(parse_segment_file("10-14-0123456789abcdef"), None);
        assert!(check_cluster_name("prod-1.eu_west").is_ok());
        assert!(check_cluster_name("a/b").is_err());
        assert!(check_cluster_name(".x").is_err());
    }
}
