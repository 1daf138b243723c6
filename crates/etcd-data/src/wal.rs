//! The write-ahead log a restore writes (`server/wal/{wal.go,encoder.go}`, `walpb/record.proto`).
//!
//! Frame: `u64 LE lenField ‖ record ‖ pad`, `pad = (8 - len % 8) % 8`, and
//! `lenField = len | (0x80 | pad) << 56` when `pad != 0`. A record is
//! `walpb.Record{1 type, 2 crc, 3 data}`; types 1 metadata, 2 entry, 3 hard state, 4 crc,
//! 5 snapshot. The crc is a running CRC-32C (Castagnoli) over every record's data
//! (`crc32.Update` semantics); a crc record carries the previous segment's value (0 for the
//! first) and no data. The segment file is `0000000000000000-0000000000000000.wal`,
//! preallocated to 64,000,000 bytes (`SegmentSizeBytes`); zeros end the log.
//!
//! A restore of N members (IDs ascending `id_1 < … < id_N`) writes, in order (`etcdutl`
//! `saveWALAndSnap`):
//! 1. crc record (crc 0);
//! 2. metadata `etcdserverpb.Metadata{1 NodeID, 2 ClusterID}`;
//! 3. snapshot `walpb.Snapshot{1 index 0, 2 term 0}`;
//! 4. N entries `raftpb.Entry{1 Type ConfChange, 2 Term 1, 3 Index i, 4 Data ConfChange{1 ID 0,
//!    2 Type AddNode, 3 NodeID id_i, 4 Context member JSON}}`;
//! 5. hard state `raftpb.HardState{1 term 1, 2 vote id_1, 3 commit N}`;
//! 6. snapshot `walpb.Snapshot{1 index N, 2 term 1, 3 ConfState}`; etcd 3.4's `walpb.Snapshot`
//!    has no field 3.

use std::path::{Path, PathBuf};

use crate::cluster::ClusterSpec;
use crate::pbwire::Buf;

pub const SEGMENT_SIZE: u64 = 64_000_000;
pub const FIRST_SEGMENT: &str = "0000000000000000-0000000000000000.wal";

pub const REC_METADATA: u64 = 1;
pub const REC_ENTRY: u64 = 2;
pub const REC_STATE: u64 = 3;
pub const REC_CRC: u64 = 4;
pub const REC_SNAPSHOT: u64 = 5;

/// Encodes framed WAL records with the running CRC.
#[derive(Default)]
pub struct Encoder {
    pub out: Vec<u8>,
    crc: u32,
}

impl Encoder {
    fn frame(&mut self, record: &[u8]) {
        let len = record.len() as u64;
        let pad = (8 - len % 8) % 8;
        let field = if pad != 0 { len | ((0x80 | pad) << 56) } else { len };
        self.out.extend_from_slice(&field.to_le_bytes());
        self.out.extend_from_slice(record);
        self.out.extend(std::iter::repeat_n(0u8, pad as usize));
    }

    /// A record with data; updates the running crc.
    pub fn record(&mut self, typ: u64, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        let mut b = Buf::default();
        b.uint(1, typ).uint(2, self.crc as u64).bytes(3, data);
        let r = b.take();
        self.frame(&r);
    }

    /// The crc record that starts a segment.
    pub fn crc_record(&mut self, prev: u32) {
        self.crc = prev;
        let mut b = Buf::default();
        b.uint(1, REC_CRC).uint(2, prev as u64);
        let r = b.take();
        self.frame(&r);
    }
}

/// `raftpb.ConfState{voters}`: voters unpacked, then `auto_leave = false` (field 5).
pub fn conf_state(voters: &[u64]) -> Vec<u8> {
    let mut b = Buf::default();
    for v in voters {
        b.uint(1, *v);
    }
    b.uint(5, 0);
    b.take()
}

/// The WAL of a freshly restored member `node_id` of `cluster`. `with_conf_state`: etcd 3.5's
/// layout (the final snapshot record carries the ConfState); false for 3.4.
pub fn restore_wal(cluster: &ClusterSpec, node_id: u64, with_conf_state: bool) -> Vec<u8> {
    let n = cluster.members.len() as u64;
    let voters: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    let mut e = Encoder::default();
    e.crc_record(0);
    let mut b = Buf::default();
    e.record(REC_METADATA, &b.uint(1, node_id).uint(2, cluster.cluster_id).take());
    e.record(REC_SNAPSHOT, &b.uint(1, 0).uint(2, 0).take());
    for (i, m) in cluster.members.iter().enumerate() {
        let cc = b.uint(1, 0).uint(2, 0).uint(3, m.id).bytes(4, m.to_json().as_bytes()).take();
        let entry = b.uint(1, 1).uint(2, 1).uint(3, i as u64 + 1).bytes(4, &cc).take();
        e.record(REC_ENTRY, &entry);
    }
    e.record(REC_STATE, &b.uint(1, 1).uint(2, voters[0]).uint(3, n).take());
    b.uint(1, n).uint(2, 1);
    if with_conf_state {
        b.bytes(3, &conf_state(&voters));
    }
    let snap = b.take();
    e.record(REC_SNAPSHOT, &snap);
    e.out
}

/// Who a data dir's member is: the WAL's metadata record (`etcdserverpb.Metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RecordMsg {
    #[prost(int64, tag = "1")]
    typ: i64,
    #[prost(uint32, tag = "2")]
    crc: u32,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetadataMsg {
    #[prost(uint64, tag = "1")]
    node_id: u64,
    #[prost(uint64, tag = "2")]
    cluster_id: u64,
}

/// The member and cluster IDs recorded in the WAL directory `wal_dir` (`member/wal`): every
/// segment starts with the metadata record, so the first segment's first records are read
/// (a few hundred bytes; the CRC is not needed for two IDs that etcd itself checks at start).
pub fn identity(wal_dir: &Path) -> crate::Result<Identity> {
    use prost::Message;
    use std::io::Read;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| crate::Error::Io { path, source }
    };
    let mut segments: Vec<PathBuf> =
        std::fs::read_dir(wal_dir).map_err(io(wal_dir))?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "wal")).collect();
    segments.sort();
    let first = segments.first().ok_or_else(|| crate::Error::Schema { path: wal_dir.to_path_buf(), what: "no WAL segment (*.wal) here".into() })?;
    let mut head = Vec::new();
    std::fs::File::open(first).map_err(io(first))?.take(64 * 1024).read_to_end(&mut head).map_err(io(first))?;
    let damaged = |what: &str| crate::Error::Schema { path: first.clone(), what: format!("WAL segment: {what}") };
    let mut at = 0usize;
    for _ in 0..4 {
        let field = u64::from_le_bytes(head.get(at..at + 8).ok_or_else(|| damaged("ends before its metadata record"))?.try_into().expect("8 bytes"));
        let len = (field & !(0xffu64 << 56)) as usize;
        let pad = if field >> 63 == 1 { ((field >> 56) & 0x7) as usize } else { 0 };
        let rec = head.get(at + 8..at + 8 + len).ok_or_else(|| damaged("a record runs past the first 64 KiB"))?;
        let r = RecordMsg::decode(rec).map_err(|e| damaged(&format!("record at offset {at}: {e}")))?;
        if r.typ == REC_METADATA as i64 {
            let m = MetadataMsg::decode(r.data.as_slice()).map_err(|e| damaged(&format!("metadata record: {e}")))?;
            return Ok(Identity { node_id: m.node_id, cluster_id: m.cluster_id });
        }
        at += 8 + len + pad;
    }
    Err(damaged("no metadata record among the first records"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_match_etcdutl() {
        // etcdutl 3.5.16 default restore (research brief section 8).
        let c = ClusterSpec::new("default=http://localhost:2380", "etcd-cluster").unwrap();
        let w = restore_wal(&c, c.members[0].id, true);
        assert_eq!(&w[..16], &[0x04, 0, 0, 0, 0, 0, 0, 0x84, 0x08, 0x04, 0x10, 0, 0, 0, 0, 0]);
        let meta_frame = [
            0x20, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x01, 0x10, 0xbb, 0x81, 0xc7, 0xfc, 0x05, 0x1a, 0x16, 0x08, 0xcd, 0xd2, 0x91, 0x8b, 0xd2, 0xb8, 0x81, 0xcf, 0x8e,
            0x01, 0x10, 0xb2, 0x98, 0xea, 0xf1, 0x94, 0x83, 0x86, 0xfc, 0xcd, 0x01,
        ];
        assert_eq!(&w[16..16 + meta_frame.len()], &meta_frame);
        assert_eq!(w.len() % 8, 0);
    }
}
