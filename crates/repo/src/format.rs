//! The repository's objects and their encodings (FORMAT.md describes the same, byte by byte).
//!
//! ```text
//! config                          plaintext JSON: format, version, id, chunker and pack settings
//! keys/<purpose>-<rand>           JSON: a master key wrapped under a passphrase or key file
//! locks/<rand>                    repository-wide lock (plaintext JSON); <rand>.released marker
//! clusters/<C>/locks/<rand>       a lock on cluster C
//! clusters/<C>/data/<hh>/<blake3> pack: sealed blobs, then the sealed header, then its length (u32 LE)
//! clusters/<C>/index/<blake3>     sealed, zstd: which blobs each of C's packs holds, where
//! clusters/<C>/snapshots/<blake3> sealed JSON manifest: one backup; written last
//! clusters/<C>/deltas/<first>-<last>-<h>        sealed delta segment
//! clusters/<C>/verifications/<id>-<time>-<rand> sealed JSON: a drill's result
//! clusters/<C>/retention/<time>-<rand>          sealed JSON: the delta floor forget decided
//! exports/<id>.db                 plaintext single-object copy of a snapshot, for presigned URLs
//! ```
//! Everything of one cluster lives under `clusters/<C>/` (since version 2), so an operation on one
//! cluster lists and reads that cluster's objects only. Version 1 kept `data/`, `index/`,
//! `snapshots/`, `deltas/<C>/` and `verifications/` at the top level ([`v1`]); only
//! `repo upgrade` reads that layout.
//! Object names are the BLAKE3-256 hash of the stored bytes (packs, indexes, manifests) or fresh random
//! values (keys, locks, verifications): nothing is ever written twice under one name.
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};

pub const FORMAT: &str = "quorum-repository";
/// Version 3 is version 2 plus chunk list patches ([`crate::chunk_list`]): manifests that a
/// version-2 binary would misread, so it must refuse the repository.
pub const VERSION: u32 = 3;
/// Read and written as version 3, but backups store whole chunk lists (version-2 binaries may
/// share the repository) until `repo upgrade` makes it version 3.
pub const VERSION_2: u32 = 2;
/// The layout before per-cluster prefixes; read by `repo upgrade` only.
pub const VERSION_1: u32 = 1;
/// The prefix under which each cluster's objects live.
pub const CLUSTERS: &str = "clusters";

/// A cluster name usable in object names: 1..=128 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_cluster_name(c: &str) -> Result<()> {
    let ok = !c.is_empty() && c.len() <= 128 && !c.starts_with('.') && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("cluster name {c:?} cannot name repository objects: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with .)")))
    }
}

/// `clusters/<C>/<what>`: where cluster C keeps one kind of object (`data`, `index`,
/// `snapshots`, `deltas`, `verifications`, `retention`, `locks`).
pub fn cluster_path(cluster: &str, what: &str) -> String {
    format!("{CLUSTERS}/{cluster}/{what}")
}

/// Object names of the version-1 layout (one namespace shared by every cluster).
pub mod v1 {
    pub const SNAPSHOTS: &str = "snapshots";
    pub const INDEX: &str = "index";
    pub const DATA: &str = "data";
    pub const DELTAS: &str = "deltas";
    pub const VERIFICATIONS: &str = "verifications";
    pub fn pack_path(id: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{DATA}/{}/{}", &id[..2], id))
    }
}

/// What a blob holds; part of its authenticated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum BlobType {
    /// A chunk of a snapshot file (data key).
    Data = 0,
    /// A list of chunk ids (data key).
    List = 1,
    /// A chunk of an `--include` bundle (bundle key).
    Bundle = 2,
    /// A bundle's file table (bundle key).
    BundleList = 3,
}

impl BlobType {
    pub fn from_u8(b: u8) -> Option<BlobType> {
        Some(match b {
            0 => BlobType::Data,
            1 => BlobType::List,
            2 => BlobType::Bundle,
            3 => BlobType::BundleList,
            _ => return None,
        })
    }
    pub fn uses_bundle_key(self) -> bool {
        matches!(self, BlobType::Bundle | BlobType::BundleList)
    }
}

pub type BlobId = [u8; 32];

/// The associated data that binds a sealed blob to its type and id.
pub fn blob_aad(t: BlobType, id: &BlobId) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = t as u8;
    a[1..].copy_from_slice(id);
    a
}

/// Blob plaintext framing: one byte, 0 = stored, 1 = zstd; then the bytes.
pub fn frame(data: &[u8], level: i32) -> Vec<u8> {
    match zstd::bulk::Compressor::new(level) {
        Ok(mut c) => frame_with(&mut c, data, level),
        Err(_) => {
            let mut v = Vec::new();
            push_stored(data, &mut v);
            v
        }
    }
}

/// [`frame`] with a compression context the caller keeps across blobs.
pub fn frame_with(comp: &mut zstd::bulk::Compressor<'_>, data: &[u8], level: i32) -> Vec<u8> {
    let mut v = Vec::new();
    frame_into(comp, data, level, &mut v);
    v
}

/// [`frame_with`], appending the framed bytes to `out`: compressed straight into its spare
/// room, with no buffer of their own (a backup frames each chunk after the room for its
/// nonce, then seals it there: [`crate::crypto::MasterKey::seal_in_place`]).
pub fn frame_into(comp: &mut zstd::bulk::Compressor<'_>, data: &[u8], level: i32, out: &mut Vec<u8>) {
    let was = out.len();
    if level != 0 {
        out.reserve(1 + zstd::zstd_safe::compress_bound(data.len()));
        out.push(1);
        let mut at = std::io::Cursor::new(&mut *out);
        at.set_position(was as u64 + 1);
        match comp.compress_to_buffer(data, &mut at) {
            Ok(n) if n + 1 < data.len() => return,
            _ => out.truncate(was),
        }
    }
    push_stored(data, out);
}

/// `data` framed as stored, appended to `out`.
fn push_stored(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(1 + data.len());
    out.push(0);
    out.extend_from_slice(data);
}

/// The most bytes a zstd stream can decompress to per byte of it: every block (at most
/// 128 KiB out) takes at least 4 bytes (a 3-byte header and an RLE byte).
pub const ZSTD_MAX_RATIO: usize = 128 * 1024 / 4;

/// The plaintext of a framed blob, or None when it is not `plain_len` bytes. `plain_len` comes
/// from a pack header or an index: a length that the framed bytes cannot hold is refused
/// before anything is allocated for it.
pub fn unframe(framed: &[u8], plain_len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    unframe_into(framed, plain_len, &mut v)?;
    Some(v)
}

/// [`unframe`], appending the plaintext to `out` (decompressed in place, not copied); on None
/// `out` is as it was.
pub fn unframe_into(framed: &[u8], plain_len: usize, out: &mut Vec<u8>) -> Option<()> {
    thread_local! {
        // One decompression context per thread: making one per 8 KiB blob dominates otherwise.
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    let was = out.len();
    match framed.first()? {
        0 if framed.len() - 1 == plain_len => out.extend_from_slice(&framed[1..]),
        1 if plain_len <= (framed.len() - 1).saturating_mul(ZSTD_MAX_RATIO) => {
            out.reserve_exact(plain_len);
            let n = DCTX.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                // Into `out`'s spare room, after what it holds.
                let mut at = std::io::Cursor::new(&mut *out);
                at.set_position(was as u64);
                d.as_mut()?.decompress_to_buffer(&framed[1..], &mut at).ok()
            });
            if n != Some(plain_len) || out.len() != was + plain_len {
                out.truncate(was);
                return None;
            }
        }
        _ => return None,
    }
    Some(())
}

/// `config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: String,
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// zstd level for blobs (0 = store).
    pub compression: i32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// When non-zero, bbolt files (snapshots) are cut into fixed chunks of this many pages
    /// instead: bbolt never shifts bytes (pages are rewritten in place or elsewhere), so page
    /// boundaries are the natural cut points and a changed page costs one chunk.
    #[serde(default)]
    pub pages: u32,
}

impl Default for ChunkerParams {
    /// Snapshots (bbolt files) are cut every page: bbolt rewrites whole pages scattered
    /// through the file and never shifts bytes, so page-sized chunks keep an increment to the
    /// pages that really changed (FORMAT.md, "Chunks"). Other files (the `--include` bundle)
    /// use content-defined chunks of about 16 KiB.
    fn default() -> Self {
        ChunkerParams { min: 8 * 1024, avg: 16 * 1024, max: 64 * 1024, pages: 1 }
    }
}

/// One blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub id: BlobId,
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext (uncompressed) length.
    pub plain_len: u32,
}

const PACK_MAGIC: &[u8; 4] = b"QPK1";
const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// The sealed header appended to a pack, followed by its length as u32 LE.
pub fn encode_pack_header(key: &MasterKey, entries: &[PackEntry]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + entries.len() * ENTRY_LEN);
    h.extend_from_slice(PACK_MAGIC);
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        h.push(e.blob_type as u8);
        h.extend_from_slice(&e.id);
        h.extend_from_slice(&e.offset.to_le_bytes());
        h.extend_from_slice(&e.length.to_le_bytes());
        h.extend_from_slice(&e.plain_len.to_le_bytes());
    }
    let mut sealed = key.seal(&h, b"pack-header");
    let n = sealed.len() as u32;
    sealed.extend_from_slice(&n.to_le_bytes());
    sealed
}

/// Read the header of a whole pack (`bytes` = the pack object).
pub fn decode_pack(key: &MasterKey, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let bad = |why: &str| Error::Damaged(format!("pack header: {why}"));
    if bytes.len() < 4 {
        return Err(bad("pack shorter than its length field"));
    }
    let n = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    if n + 4 > bytes.len() {
        return Err(bad("header length beyond the pack"));
    }
    let start = bytes.len() - 4 - n;
    let h = key.open(&bytes[start..bytes.len() - 4], b"pack-header").ok_or_else(|| bad("does not authenticate"))?;
    let entries = parse_entries(&h).ok_or_else(|| bad("malformed"))?;
    for e in &entries {
        if e.offset as usize + e.length as usize > start {
            return Err(bad("a blob extends into the header"));
        }
    }
    Ok(entries)
}

fn parse_entries(h: &[u8]) -> Option<Vec<PackEntry>> {
    if h.len() < 8 || &h[..4] != PACK_MAGIC {
        return None;
    }
    let count = u32::from_le_bytes(h[4..8].try_into().ok()?) as usize;
    if h.len() != 8 + count * ENTRY_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for c in h[8..].chunks_exact(ENTRY_LEN) {
        out.push(PackEntry {
            blob_type: BlobType::from_u8(c[0])?,
            id: c[1..33].try_into().ok()?,
            offset: u32::from_le_bytes(c[33..37].try_into().ok()?),
            length: u32::from_le_bytes(c[37..41].try_into().ok()?),
            plain_len: u32::from_le_bytes(c[41..45].try_into().ok()?),
        });
    }
    Some(out)
}

/// One pack's entries in an index object.
#[derive(Debug, Clone)]
pub struct IndexPack {
    pub pack: BlobId,
    pub entries: Vec<PackEntry>,
}

const INDEX_MAGIC: &[u8; 4] = b"QIX1";

pub fn encode_index(key: &MasterKey, packs: &[IndexPack]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(INDEX_MAGIC);
    h.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        h.extend_from_slice(&p.pack);
        h.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            h.push(e.blob_type as u8);
            h.extend_from_slice(&e.id);
            h.extend_from_slice(&e.offset.to_le_bytes());
            h.extend_from_slice(&e.length.to_le_bytes());
            h.extend_from_slice(&e.plain_len.to_le_bytes());
        }
    }
    let z = zstd::bulk::compress(&h, 3).expect("zstd of an in-memory buffer");
    key.seal(&z, b"index")
}

/// `path`: the object's name in the repository, for the error.
pub fn decode_index(key: &MasterKey, sealed: &[u8], path: &str) -> Result<Vec<IndexPack>> {
    let bad = |why: &str| Error::Damaged(format!("{path}: {why}"));
    let z = key.open(sealed, b"index").ok_or_else(|| bad("does not authenticate (damaged, or written under another key)"))?;
    let h = zstd::stream::decode_all(&z[..]).map_err(|_| bad("does not decompress"))?;
    if h.len() < 8 || &h[..4] != INDEX_MAGIC {
        return Err(bad("bad magic"));
    }
    let mut pos = 8;
    let count = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
    // Each pack takes at least 36 bytes: no more room than the bytes can hold.
    let mut out = Vec::with_capacity(count.min((h.len() - 8) / 36));
    for _ in 0..count {
        if pos + 36 > h.len() {
            return Err(bad("truncated"));
        }
        let pack: BlobId = h[pos..pos + 32].try_into().unwrap();
        let n = u32::from_le_bytes(h[pos + 32..pos + 36].try_into().unwrap()) as usize;
        pos += 36;
        let end = pos + n * ENTRY_LEN;
        if end > h.len() {
            return Err(bad("truncated"));
        }
        let mut hdr = Vec::with_capacity(8 + n * ENTRY_LEN);
        hdr.extend_from_slice(PACK_MAGIC);
        hdr.extend_from_slice(&(n as u32).to_le_bytes());
        hdr.extend_from_slice(&h[pos..end]);
        let entries = parse_entries(&hdr).ok_or_else(|| bad("malformed entry"))?;
        pos = end;
        out.push(IndexPack { pack, entries });
    }
    if pos != h.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// A backup's manifest (`clusters/<C>/snapshots/<id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub cluster: String,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub etcd_version: Option<String>,
    /// Where the snapshot came from: an endpoint, or a file path.
    pub source: String,
    pub time: String,
    pub host: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub snapshot: SnapshotFacts,
    /// List blobs (in order) whose concatenated contents are the chunk ids of the snapshot,
    /// or, with `chunk_patches`, of the earlier backup whose list this one patches.
    pub chunk_lists: Vec<String>,
    /// Version 3: patch blobs applied in order to `chunk_lists` ([`crate::chunk_list`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_patches: Vec<String>,
    pub chunks: u64,
    #[serde(default)]
    pub bundle: Option<BundleRef>,
    /// Bytes this backup added to the repository (sealed, new blobs only).
    pub added_bytes: u64,
    pub added_blobs: u64,
    /// Set when the backup was built offline from an older backup and delta segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidated: Option<Consolidated>,
    /// Where each live key's latest record lies ([`crate::keymap`]); absent in backups made
    /// before key maps, or of snapshots without a `key` bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_map: Option<crate::keymap::KeyMapRef>,
    /// Set for a backup in OpenShift's layout (`cluster-backup.sh`): its bundle holds the
    /// static resources tarball's members ([`crate::openshift`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openshift: Option<OpenshiftRef>,
}

/// What an OpenShift backup was (`backups get --openshift-layout` writes it back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenshiftRef {
    /// The files' stamp (`date +%F_%H%M%S`): `snapshot_<stamp>.db`.
    pub stamp: String,
    /// The revision of each static pod whose resources the bundle holds.
    pub static_pods: std::collections::BTreeMap<String, u64>,
    /// The bundle path of the kube-apiserver's EncryptionConfiguration, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_config: Option<String>,
}

/// How a consolidated backup was built.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consolidated {
    /// The full backup replayed onto.
    pub base: String,
    pub base_revision: i64,
    /// The last revision replayed (the backup's revision).
    pub to_revision: i64,
    /// Delta segments read.
    pub segments: usize,
    /// Revisions with events replayed.
    pub revisions: u64,
}

/// The snapshot's own figures, for `backups show` and the drill's comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub size: u64,
    pub sha256: String,
    /// `snapshot status` figures.
    pub hash: u32,
    pub revision: i64,
    pub total_key: i64,
    #[serde(default)]
    pub version: Option<String>,
    /// `etcdctl endpoint hashkv` at `revision` and the number of live keys, computed offline.
    #[serde(default)]
    pub hash_kv: Option<u32>,
    #[serde(default)]
    pub compact_revision: Option<i64>,
    #[serde(default)]
    pub live_keys: Option<u64>,
}

/// The `--include` bundle: the file table is a BundleList blob (bundle key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleRef {
    pub table: String,
    pub files: u64,
    pub bytes: u64,
    /// Every chunk id of the bundle's files (ids reveal nothing without the bundle key), so
    /// `prune` and `check` work without the bundle key.
    pub blobs: Vec<String>,
}

/// One file of a bundle (inside the sealed BundleList blob).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleFile {
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
    pub chunks: Vec<String>,
    /// For a member of an OpenShift static resources tarball: its tar header facts (path,
    /// type, mode, owner, time, link), kept so the tarball is written back as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar: Option<crate::openshift::Member>,
}

/// A drill's record (`clusters/<C>/verifications/...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub backup: String,
    pub cluster: String,
    pub time: String,
    pub host: String,
    pub ok: bool,
    pub etcd_version: String,
    pub seconds: f64,
    pub checks: Vec<String>,
    #[serde(default)]
    pub failure: Option<String>,
}

impl Manifest {
    /// Every blob that holds the chunk list: whole lists, then patches.
    pub fn list_blobs(&self) -> impl Iterator<Item = &String> {
        self.chunk_lists.iter().chain(&self.chunk_patches)
    }
}

pub fn seal_json<T: Serialize>(key: &MasterKey, v: &T, aad: &[u8]) -> Vec<u8> {
    key.seal(&serde_json::to_vec(v).expect("serializable"), aad)
}

pub fn open_json<T: for<'de> Deserialize<'de>>(key: &MasterKey, sealed: &[u8], aad: &[u8], what: &str) -> Result<T> {
    let plain = key.open(sealed, aad).ok_or_else(|| Error::Damaged(format!("{what}: does not authenticate (damaged, or written under another key)")))?;
    serde_json::from_slice(&plain).map_err(|e| Error::Damaged(format!("{what}: {e}")))
}

/// The name of a content-addressed object: BLAKE3-256 of its stored bytes, hex.
pub fn content_name(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// `clusters/<C>/data/<hh>/<id>`.
pub fn pack_path(cluster: &str, id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{}/{}/{}", cluster_path(cluster, "data"), &id[..2], id))
}

/// `clusters/<C>/snapshots/<id>`.
pub fn manifest_path(cluster: &str, id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{}/{id}", cluster_path(cluster, "snapshots")))
}

pub fn random_name() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_header_and_index_round_trip() {
        let k = MasterKey::generate();
        let entries = vec![
            PackEntry { blob_type: BlobType::Data, id: [1; 32], offset: 0, length: 100, plain_len: 300 },
            PackEntry { blob_type: BlobType::Bundle, id: [2; 32], offset: 100, length: 50, plain_len: 20 },
        ];
        let mut pack = vec![0u8; 150];
        pack.extend_from_slice(&encode_pack_header(&k, &entries));
        assert_eq!(decode_pack(&k, &pack).unwrap(), entries);
        let idx = encode_index(&k, &[IndexPack { pack: [9; 32], entries: entries.clone() }]);
        let back = decode_index(&k, &idx, "x").unwrap();
        assert_eq!(back[0].pack, [9; 32]);
        assert_eq!(back[0].entries, entries);
        // A blob claimed to overlap the header is refused.
        let mut short = vec![0u8; 120];
        short.extend_from_slice(&encode_pack_header(&k, &entries));
        assert!(decode_pack(&k, &short).is_err());
        assert!(decode_pack(&MasterKey::generate(), &pack).is_err());
    }

    #[test]
    fn framing() {
        let data = vec![7u8; 10_000];
        let f = frame(&data, 1);
        assert_eq!(f[0], 1);
        assert_eq!(unframe(&f, data.len()).unwrap(), data);
        let rnd: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let f = frame(&rnd, 0);
        assert_eq!(f[0], 0);
        assert_eq!(unframe(&f, rnd.len()).unwrap(), rnd);
        assert!(unframe(&[1, 2, 3], 5).is_none());
    }

    #[test]
    fn framing_into_a_buffer_appends_what_frame_gives_and_seals_there() {
        let k = MasterKey::generate();
        let mut comp = zstd::bulk::Compressor::new(1).unwrap();
        let squeezable = vec![7u8; 8192];
        let mut noise = vec![0u8; 8192];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut noise);
        for (data, stored) in [(&squeezable, false), (&noise, true), (&Vec::new(), true)] {
            let mut buf = vec![0xAA; crate::crypto::NONCE_LEN];
            frame_into(&mut comp, data, 1, &mut buf);
            let framed = buf[crate::crypto::NONCE_LEN..].to_vec();
            assert_eq!(framed[0] == 0, stored, "{} bytes", data.len());
            assert_eq!(unframe(&framed, data.len()).unwrap(), *data);
            assert_eq!(framed, frame(data, 1));
            k.seal_in_place(&mut buf, b"aad");
            assert_eq!(buf.len(), crate::crypto::OVERHEAD + framed.len());
            assert_eq!(k.open(&buf, b"aad").unwrap(), framed);
        }
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/repo_pack.rs`): a pack entry's plain length of
    /// almost 4 GiB made `unframe` allocate it for a few bytes of zstd.
    #[test]
    fn unframe_refuses_a_length_the_bytes_cannot_hold() {
        let mut framed = frame(&[0u8; 4096], 3);
        assert_eq!(framed[0], 1);
        assert!(unframe(&framed, 4_294_967_291).is_none());
        assert!(unframe(&framed, (framed.len() - 1) * ZSTD_MAX_RATIO + 1).is_none());
        assert_eq!(unframe(&framed, 4096).unwrap(), vec![0u8; 4096]);
        framed.truncate(1);
        assert!(unframe(&framed, 1).is_none());
        // The largest ratio zstd reaches (long runs) stays within the bound.
        let big = vec![7u8; 8 << 20];
        let f = frame(&big, 19);
        assert!(big.len() <= (f.len() - 1) * ZSTD_MAX_RATIO, "{} bytes framed in {}", big.len(), f.len());
        assert_eq!(unframe(&f, big.len()).unwrap(), big);
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/repo_index.rs`): an index whose pack count says
    /// 0x28010002 reserved room for that many packs (37 GB) before reading any.
    #[test]
    fn index_pack_count_does_not_reserve_beyond_the_bytes() {
        let k = MasterKey::generate();
        let mut h = INDEX_MAGIC.to_vec();
        h.extend_from_slice(&0x2801_0002u32.to_le_bytes());
        h.extend_from_slice(&[0u8; 40]);
        let sealed = k.seal(&zstd::bulk::compress(&h, 1).unwrap(), b"index");
        let e = decode_index(&k, &sealed, "idx").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
