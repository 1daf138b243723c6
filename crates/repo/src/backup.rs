//! `quorum backup`: one snapshot file (and optional `--include` files) into the repository.
//!
//! ```text
//! reader thread ──chunks──► worker threads ──sealed new blobs──► packer task ──► upload tasks
//!  (FastCDC, seeded        (keyed BLAKE3 id, dedup against        (16 MiB packs,     (≤ 4 in
//!   from the repo key)      the index, zstd, AES-256-GCM)          sealed header)     flight)
//!       └──► sha256 thread (the manifest's file hash)
//! status + hashkv thread (pread walks of the same file)
//! ```
//! Memory is bounded by the channel depths (64 chunks each), the pack being filled and the
//! packs in flight: about 100 MiB at the defaults, whatever the snapshot size.
//!
//! Order of writes: packs, then one index object naming them, then the manifest. A backup is
//! visible only once its manifest exists; an interrupted backup leaves packs no index names,
//! which `prune` removes.
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use fastcdc::v2020::{Normalization, StreamCDC};
use sha2::Digest;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::{self, BlobId, BlobType, BundleFile, BundleRef, IndexPack, Manifest, PackEntry, SnapshotFacts};
use crate::repository::Repository;

/// What to back up and how to label it.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub snapshot: PathBuf,
    pub cluster: String,
    pub tags: Vec<String>,
    pub includes: Vec<PathBuf>,
    pub cluster_id: Option<String>,
    pub member_id: Option<String>,
    pub member: Option<String>,
    pub etcd_version: Option<String>,
    /// Endpoint or file the snapshot came from.
    pub source: String,
    /// Parallel uploads.
    pub uploads: usize,
    /// Set for a backup built offline from an older one and delta segments.
    pub consolidated: Option<format::Consolidated>,
    /// An OpenShift static resources tarball whose members make the bundle (instead of
    /// `includes`), with the backup's stamp ([`crate::openshift`]).
    pub openshift: Option<(PathBuf, String)>,
    /// The backup's time (RFC 3339) when it was made earlier than now (an imported backup).
    pub time: Option<String>,
    /// Set when the snapshot at `snapshot` is still being written (a live backup streamed from
    /// etcd): every read goes through it and waits for its bytes.
    pub arriving: Option<ArrivingSnapshot>,
}

/// A snapshot file still being written: its bytes as they arrive (reads wait for them) and the
/// length it will have.
#[derive(Clone)]
pub struct ArrivingSnapshot {
    pub bytes: Arc<dyn bolt::ReadAt>,
    pub len: u64,
}

impl std::fmt::Debug for ArrivingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrivingSnapshot").field("len", &self.len).finish_non_exhaustive()
    }
}

/// The snapshot's bytes in file order, through an [`ArrivingSnapshot`].
struct ArrivingReader {
    from: ArrivingSnapshot,
    pos: u64,
}

impl std::io::Read for ArrivingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.from.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.from.bytes.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

/// Open the snapshot of `opts` for the walks (status, hashkv, the key map).
fn open_snapshot(path: &Path, arriving: Option<&ArrivingSnapshot>) -> Result<bolt::Db> {
    Ok(match arriving {
        Some(a) => bolt::Db::open_source(path, a.bytes.clone(), a.len),
        None => bolt::Db::open(path),
    }
    .map_err(etcd_data::Error::from)?)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub id: String,
    pub manifest: Manifest,
    pub seconds: f64,
    /// Bytes of the snapshot (plain).
    pub bytes: u64,
    /// Snapshot chunks already in the repository (or repeated in the file): not uploaded again.
    pub reused_chunks: u64,
    /// Snapshot chunks uploaded by this backup.
    pub new_chunks: u64,
    pub packs: u64,
}

/// The chunk list of a cluster's newest backup, resolved, with the blobs that store it.
struct ParentList {
    lists: Vec<String>,
    patches: Vec<String>,
    ids: Vec<BlobId>,
    /// Entries in its patches.
    chain_entries: u64,
    /// Its key map, with an index of the key map's blobs only (the whole index is not kept
    /// for the length of the backup).
    key_map: Option<(crate::keymap::KeyMapRef, crate::repository::Index)>,
}

/// [`ParentList`] of the backup of `cluster` written last (by the store's modification time:
/// one listing and one manifest read, however many backups the cluster keeps); None when there
/// is none (the first backup) or it cannot be read (this backup then stores a whole list and
/// key map, and `repo check` reports the damage). Any backup would do: the newest is the one
/// most like this one.
async fn parent_list(repo: &Repository, cluster: &str, index: &crate::repository::Index) -> Result<Option<ParentList>> {
    let metas = repo.list(&format::cluster_path(cluster, "snapshots")).await?;
    let Some(newest) = metas.iter().max_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.location.cmp(&b.location))) else {
        return Ok(None);
    };
    let id = newest.location.filename().unwrap_or_default().to_string();
    let m = match repo.read_manifest(cluster, &id).await {
        Ok(m) => m,
        Err(e @ Error::Store { .. }) => return Err(e),
        Err(e) => {
            eprintln!("Warning: backup {}: {e}; this backup stores a whole chunk list and key map", crate::short(&id));
            return Ok(None);
        }
    };
    let ids = match repo.chunk_ids(&m, index).await {
        Ok(ids) => ids,
        Err(e @ Error::Store { .. }) => return Err(e),
        Err(e) => {
            eprintln!("Warning: backup {}: its chunk list cannot be read ({e}); this backup stores a whole list", crate::short(&id));
            return Ok(None);
        }
    };
    let mut chain_entries = 0;
    for p in &m.chunk_patches {
        let loc = crate::repository::parse_id(p).ok().and_then(|i| index.blobs.get(&i));
        chain_entries += loc.map_or(0, |l| crate::chunk_list::patch_entries(l.entry.plain_len));
    }
    let key_map = m.key_map.map(|km| {
        let mut mini = crate::repository::Index::new(cluster);
        mini.legacy = index.legacy;
        for b in km.blobs() {
            if let Some(loc) = crate::repository::parse_id(b).ok().and_then(|i| index.blobs.get(&i).map(|l| (i, *l))) {
                mini.blobs.insert(loc.0, loc.1);
            }
        }
        (km, mini)
    });
    Ok(Some(ParentList { lists: m.chunk_lists, patches: m.chunk_patches, ids, chain_entries, key_map }))
}

/// New key map segments kept aside (in an unnamed temporary file, gone when closed) until
/// the backup knows whether it stores them or a patch.
struct SpilledSegments(std::io::BufWriter<File>);

impl SpilledSegments {
    fn new() -> Result<SpilledSegments> {
        let f = tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        Ok(SpilledSegments(std::io::BufWriter::with_capacity(1 << 20, f)))
    }

    fn push(&mut self, seg: &[u8]) -> Result<()> {
        use std::io::Write;
        let io = |e| Error::io(std::env::temp_dir(), e);
        self.0.write_all(&(seg.len() as u64).to_le_bytes()).map_err(io)?;
        self.0.write_all(seg).map_err(io)
    }

    /// The segments back, in order.
    fn segments(self) -> Result<impl Iterator<Item = Result<Vec<u8>>>> {
        use std::io::{Read, Seek};
        let io = |e| Error::io(std::env::temp_dir(), e);
        let mut f = self.0.into_inner().map_err(|e| io(e.into_error()))?;
        f.rewind().map_err(io)?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        Ok(std::iter::from_fn(move || {
            let mut len = [0u8; 8];
            match r.read_exact(&mut len) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => return Some(Err(io(e))),
                Ok(()) => {}
            }
            let mut seg = vec![0u8; u64::from_le_bytes(len) as usize];
            Some(r.read_exact(&mut seg).map(|()| seg).map_err(io))
        }))
    }
}

/// Receive the new key map's segments, kept aside, and compare them with the newest backup's
/// key map: the patch from that one to the new one, or None when the old map cannot be read
/// (a warning; the new map is then stored whole).
async fn diff_key_map(
    repo: &Repository,
    old_ref: &crate::keymap::KeyMapRef,
    mini: &crate::repository::Index,
    seg_rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(Option<crate::keymap::Patch>, SpilledSegments)> {
    let mut spilled = SpilledSegments::new()?;
    let mut patch = crate::keymap::Patch::default();
    // A store error ends the backup; damage in the old map only means a whole new one.
    let unreadable = |e: Error| match e {
        e @ Error::Store { .. } => Err(e),
        e => {
            eprintln!("Warning: the newest backup's key map cannot be read ({e}); this backup stores a whole one");
            Ok(())
        }
    };
    let mut old = match crate::keymap::OldMap::open(repo, mini, old_ref).await {
        Ok(o) => Some(o),
        Err(e) => unreadable(e).map(|()| None)?,
    };
    while let Some(seg) = seg_rx.recv().await {
        spilled.push(&seg)?;
        if let Some(o) = old.as_mut() {
            if let Err(e) = o.diff_segment(crate::keymap::decode(&seg)?, &mut patch).await {
                unreadable(e)?;
                old = None;
            }
        }
    }
    let Some(mut o) = old else { return Ok((None, spilled)) };
    match o.diff_end(&mut patch).await {
        Ok(()) => Ok((Some(patch), spilled)),
        Err(e) => unreadable(e).map(|()| (None, spilled)),
    }
}

/// The seed of the chunker's gear table: derived from the repository key, so chunk boundaries
/// do not reveal content to someone without the key.
pub fn chunker_seed(key: &MasterKey) -> u64 {
    let h = key.blob_id(b"quorum chunker seed");
    u64::from_le_bytes(h[..8].try_into().unwrap())
}

pub(crate) struct Sealed {
    pub t: BlobType,
    pub id: BlobId,
    pub plain_len: u32,
    pub sealed: Vec<u8>,
}

pub(crate) enum ToPacker {
    Blobs(Vec<Sealed>),
}

/// Called with (bytes done, bytes total).
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Run a backup under a shared lock on its cluster; `progress(done, total)` is called as
/// bytes are read. The lock is checked to be still ours before the index and the manifest
/// are written.
pub async fn backup(repo: Arc<Repository>, opts: &BackupOptions, progress: Progress) -> Result<BackupReport> {
    if opts.cluster.is_empty() {
        return Err(Error::Usage("a cluster name is required: backups, retention and drills are grouped by it".into()));
    }
    format::check_cluster_name(&opts.cluster)?;
    let lock = repo.lock(&opts.cluster, false, "backup").await?;
    let r = backup_locked(repo, opts, &lock, progress).await;
    lock.release().await;
    r
}

pub(crate) async fn backup_locked(repo: Arc<Repository>, opts: &BackupOptions, lock: &crate::lock::Lock, progress: Progress) -> Result<BackupReport> {
    let started = Instant::now();
    if !opts.includes.is_empty() || opts.openshift.is_some() {
        // --include files go into a bundle under the repository's separate bundle key.
        repo.key_for(BlobType::Bundle)?;
    }
    if !opts.includes.is_empty() && opts.openshift.is_some() {
        return Err(Error::Usage("a backup's bundle holds either included files or OpenShift static resources, not both".into()));
    }
    let size = match &opts.arriving {
        Some(a) => a.len,
        None => {
            let meta = std::fs::metadata(&opts.snapshot).map_err(|e| Error::io(&opts.snapshot, e))?;
            if !meta.is_file() {
                return Err(Error::Usage(format!("{}: not a file", opts.snapshot.display())));
            }
            meta.len()
        }
    };

    // One walk of the file beside the upload (and, for a snapshot still arriving, beside its
    // arrival: the walk reads it almost in file order) gives the status, the HashKV and the
    // key map, whose segments are handed over as they are merged.
    let (walk_path, walk_arriving) = (opts.snapshot.clone(), opts.arriving.clone());
    let (seg_tx, mut seg_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let walked = std::thread::spawn(move || -> Result<(SnapshotFacts, Option<u64>)> {
        let db = open_snapshot(&walk_path, walk_arriving.as_ref())?;
        let mut key_map = crate::keymap::Builder::default();
        let facts = snapshot_facts(&db, &mut key_map)?;
        let entries = match key_map.finish()? {
            Some(built) => {
                let handed = |seg| seg_tx.blocking_send(seg).map_err(|_| Error::Other("the backup ended before its key map".into()));
                Some(built.segments(handed)?)
            }
            None => None,
        };
        Ok((facts, entries))
    });

    // Deduplication against this cluster's blobs only: reading other clusters' indexes would
    // make every backup's cost grow with the fleet.
    let index = Arc::new(repo.load_index(&opts.cluster).await?);
    let known: HashSet<BlobId> = index.blobs.keys().copied().collect();
    // The newest backup's chunk list, read while the snapshot is cut: this one's is stored
    // as a patch of it (version 3).
    let parent = repo.patches_allowed().then(|| {
        let (repo, index, cluster) = (repo.clone(), index.clone(), opts.cluster.clone());
        tokio::spawn(async move { parent_list(&repo, &cluster, &index).await })
    });
    drop(index);

    let mut pipe = Pipeline::start(repo.clone(), &opts.cluster, known, opts.uploads.max(1));
    // Snapshot chunks.
    let (ids, sha) = pipe.chunk_file(&opts.snapshot, opts.arriving.as_ref(), BlobType::Data, size, progress).await?;
    let reused_data = pipe.reused;
    let file_sha = hex::encode(sha);
    // The chunk list: a patch of the newest backup's, or whole.
    let parent = match parent {
        Some(task) => task.await.map_err(|e| Error::Other(format!("reading the newest backup's chunk list: {e}")))??,
        None => None,
    };
    let (mut lists, mut patches) = (Vec::new(), Vec::new());
    let mut parent = parent;
    let parent_key_map = parent.as_mut().and_then(|p| p.key_map.take());
    let patch = parent.and_then(|p| {
        let blobs = crate::chunk_list::plan(Some((&p.ids, p.chain_entries, p.patches.len())), &ids)?;
        Some((blobs, p))
    });
    match patch {
        Some((blobs, p)) => {
            (lists, patches) = (p.lists, p.patches);
            for b in blobs {
                patches.push(hex::encode(pipe.put_blob(BlobType::List, b).await?));
            }
        }
        None => {
            for b in crate::chunk_list::whole(&ids) {
                lists.push(hex::encode(pipe.put_blob(BlobType::List, b).await?));
            }
        }
    }
    // The key map: a patch of the newest backup's, or whole.
    let key_map = match parent_key_map {
        None => {
            let mut segments = Vec::new();
            while let Some(seg) = seg_rx.recv().await {
                segments.push(hex::encode(pipe.put_blob(BlobType::Data, seg).await?));
            }
            let (facts, entries) = walked.join().map_err(|_| Error::Other("snapshot walk thread panicked".into()))??;
            (facts, entries.map(|entries| crate::keymap::KeyMapRef { segments, entries, patches: Vec::new(), patch_entries: 0 }))
        }
        Some((old_ref, mini)) => {
            let (patch, spilled) = diff_key_map(&repo, &old_ref, &mini, &mut seg_rx).await?;
            let (facts, entries) = walked.join().map_err(|_| Error::Other("snapshot walk thread panicked".into()))??;
            let mut key_map = None;
            if let Some(entries) = entries {
                let mut km = crate::keymap::KeyMapRef { segments: Vec::new(), entries, patches: Vec::new(), patch_entries: 0 };
                match patch.filter(|p| crate::keymap::keep_patch(&old_ref, p, entries)) {
                    Some(p) => {
                        (km.segments, km.patches, km.patch_entries) =
                            (old_ref.segments.clone(), old_ref.patches.clone(), old_ref.patch_entries + p.0.len() as u64);
                        for b in crate::keymap::patch_blobs(p) {
                            km.patches.push(hex::encode(pipe.put_blob(BlobType::Data, b).await?));
                        }
                    }
                    None => {
                        for seg in spilled.segments()? {
                            km.segments.push(hex::encode(pipe.put_blob(BlobType::Data, seg?).await?));
                        }
                    }
                }
                key_map = Some(km);
            }
            (facts, key_map)
        }
    };
    let (facts, key_map) = key_map;
    // The bundle.
    let mut openshift = None;
    let bundle = if let Some((tarball, stamp)) = &opts.openshift {
        let (bundle, facts) = pipe.put_tarball(tarball, stamp).await?;
        openshift = Some(facts);
        Some(bundle)
    } else if opts.includes.is_empty() {
        None
    } else {
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut blobs: Vec<String> = Vec::new();
        for p in expand_includes(&opts.includes)? {
            let m = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
            let (ids, sha) = pipe.chunk_file(&p, None, BlobType::Bundle, m.len(), Arc::new(|_, _| {})).await?;
            use std::os::unix::fs::PermissionsExt;
            total += m.len();
            files.push(BundleFile {
                path: p.display().to_string(),
                mode: m.permissions().mode(),
                size: m.len(),
                sha256: hex::encode(sha),
                chunks: ids.iter().map(hex::encode).collect(),
                tar: None,
            });
            blobs.extend(ids.iter().map(hex::encode));
        }
        let n = files.len() as u64;
        let table = serde_json::to_vec(&files).expect("serializable");
        let id = pipe.put_blob(BlobType::BundleList, table).await?;
        blobs.sort();
        blobs.dedup();
        Some(BundleRef { table: hex::encode(id), files: n, bytes: total, blobs })
    };
    let stats = pipe.finish().await?;
    let facts = SnapshotFacts { size, sha256: file_sha, ..facts };

    // The index for the new packs, then the manifest; only while our lock still stands (a
    // prune that judged it stale may have removed what we uploaded).
    lock.verify().await?;
    if !stats.packs.is_empty() {
        repo.write_index(&opts.cluster, &stats.packs).await?;
    }
    let manifest = Manifest {
        cluster: opts.cluster.clone(),
        cluster_id: opts.cluster_id.clone(),
        member_id: opts.member_id.clone(),
        member: opts.member.clone(),
        etcd_version: opts.etcd_version.clone().or_else(|| facts.version.clone()),
        source: opts.source.clone(),
        time: opts.time.clone().unwrap_or_else(crate::now_rfc3339),
        host: crate::hostname(),
        tags: opts.tags.clone(),
        snapshot: facts,
        chunk_lists: lists,
        chunk_patches: patches,
        chunks: ids.len() as u64,
        bundle,
        added_bytes: stats.added_bytes,
        added_blobs: stats.new_blobs,
        consolidated: opts.consolidated.clone(),
        key_map,
        openshift,
    };
    let body = repo.seal_json(&manifest, b"manifest");
    let id = format::content_name(&body);
    repo.put_new(&format::manifest_path(&opts.cluster, &id), Bytes::from(body)).await?;
    Ok(BackupReport {
        id,
        manifest,
        seconds: started.elapsed().as_secs_f64(),
        bytes: size,
        reused_chunks: reused_data,
        new_chunks: (ids.len() as u64).saturating_sub(reused_data),
        packs: stats.packs.len() as u64,
    })
}

/// Files under the given paths, as absolute paths; symbolic links to directories are not
/// followed (no loops), links to files are read.
fn expand_includes(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let p = &std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?;
        let m = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if m.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok())
                .filter(|e| !(e.file_type().map(|t| t.is_symlink()).unwrap_or(false) && e.path().is_dir()))
                .map(|e| e.path())
                .collect();
            entries.sort();
            out.extend(expand_includes(&entries)?);
        } else if m.is_file() {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `snapshot status` figures and the offline hashkv, from one walk of the file, which also
/// hands every entry to `beside`.
pub fn snapshot_facts(db: &bolt::Db, beside: &mut dyn bolt::Visitor) -> Result<SnapshotFacts> {
    let (st, hk) = etcd_data::status_and_hash_kv_beside(db, beside)?;
    let hk = hk.map_err(|e| Error::Damaged(format!("{}: {e}", db.path().display())))?;
    Ok(SnapshotFacts {
        size: 0,
        sha256: String::new(),
        hash: st.hash,
        revision: st.revision,
        total_key: st.total_key,
        version: st.version,
        hash_kv: Some(hk.hash),
        compact_revision: Some(hk.compact_revision),
        live_keys: Some(hk.live_keys.max(0) as u64),
    })
}

struct Stats {
    packs: Vec<IndexPack>,
    added_bytes: u64,
    new_blobs: u64,
}

/// The worker threads, packer and uploads of one backup.
struct Pipeline {
    repo: Arc<Repository>,
    seen: Arc<Mutex<HashSet<BlobId>>>,
    to_packer: tokio::sync::mpsc::Sender<ToPacker>,
    packer: tokio::task::JoinHandle<Result<(Vec<IndexPack>, u64, u64)>>,
    reused: u64,
}

impl Pipeline {
    fn start(repo: Arc<Repository>, cluster: &str, known: HashSet<BlobId>, uploads: usize) -> Pipeline {
        let (tx, rx) = tokio::sync::mpsc::channel::<ToPacker>(64);
        let packer = tokio::spawn(packer(repo.clone(), cluster.to_string(), rx, uploads));
        Pipeline { repo, seen: Arc::new(Mutex::new(known)), to_packer: tx, packer, reused: 0 }
    }

    /// Chunk a file (still arriving, or not) through the workers; returns the chunk ids in
    /// order and the file's sha256.
    async fn chunk_file(
        &mut self,
        path: &Path,
        arriving: Option<&ArrivingSnapshot>,
        t: BlobType,
        total: u64,
        prog: Progress,
    ) -> Result<(Vec<BlobId>, [u8; 32])> {
        let key = self.repo.key_for(t)?.clone();
        let cfg = self.repo.config.clone();
        let seed = chunker_seed(self.repo.data_key());
        let file: Box<dyn std::io::Read + Send> = match arriving {
            Some(a) => Box::new(ArrivingReader { from: a.clone(), pos: 0 }),
            None => Box::new(File::open(path).map_err(|e| Error::io(path, e))?),
        };
        // Fixed page-sized chunks for a bbolt file when the repository asks for them.
        let fixed = if t == BlobType::Data && cfg.chunker.pages > 0 {
            let db = open_snapshot(path, arriving)?;
            Some(db.page_size() as usize * cfg.chunker.pages as usize)
        } else {
            None
        };
        let seen = self.seen.clone();
        let tx = self.to_packer.clone();
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8);
        let path_buf = path.to_path_buf();
        let level = cfg.compression;
        // The CPU part runs on plain threads; the async side waits for it without blocking.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let progress_total = total;
        let handle = std::thread::spawn(move || {
            let r = std::thread::scope(|s| -> Result<(Vec<BlobId>, [u8; 32], u64)> {
                // Chunks travel in batches (up to 64 chunks or 1 MiB): one channel operation per
                // batch instead of per 8 KiB chunk.
                type Batch = Arc<Vec<Vec<u8>>>;
                let (work_tx, work_rx) = crossbeam_channel::bounded::<(usize, Batch)>(8);
                let (sha_tx, sha_rx) = crossbeam_channel::bounded::<Batch>(8);
                let (id_tx, id_rx) = crossbeam_channel::unbounded::<(usize, Vec<(BlobId, bool)>)>();
                // One pass gives both the file's hash and its body's (all but the last 32
                // bytes), to check a `snapshot save` trailer.
                let sha = s.spawn(move || {
                    let mut h = sha2::Sha256::new();
                    let mut tail: Vec<u8> = Vec::with_capacity(64);
                    for b in sha_rx.iter().flat_map(|batch| (0..batch.len()).map(move |i| (batch.clone(), i))) {
                        let b = &b.0[b.1];
                        if b.len() >= 32 {
                            h.update(&tail);
                            h.update(&b[..b.len() - 32]);
                            tail.clear();
                            tail.extend_from_slice(&b[b.len() - 32..]);
                        } else {
                            tail.extend_from_slice(b);
                            let cut = tail.len().saturating_sub(32);
                            h.update(&tail[..cut]);
                            tail.drain(..cut);
                        }
                    }
                    let body: [u8; 32] = h.clone().finalize().into();
                    h.update(&tail);
                    let full: [u8; 32] = h.finalize().into();
                    (full, body, tail)
                });
                let mut hs = Vec::new();
                for _ in 0..workers {
                    let work_rx = work_rx.clone();
                    let id_tx = id_tx.clone();
                    let seen = seen.clone();
                    let tx = tx.clone();
                    let key = key.clone();
                    hs.push(s.spawn(move || -> Result<()> {
                        let mut comp = zstd::bulk::Compressor::new(level).map_err(|e| Error::Other(format!("zstd: {e}")))?;
                        for (start, batch) in work_rx {
                            let ids: Vec<BlobId> = batch.iter().map(|d| key.blob_id(d)).collect();
                            let fresh: Vec<bool> = {
                                let mut seen = seen.lock().unwrap();
                                ids.iter().map(|id| seen.insert(*id)).collect()
                            };
                            let mut out = Vec::new();
                            for ((data, id), f) in batch.iter().zip(&ids).zip(&fresh) {
                                if *f {
                                    // One buffer: room for the nonce, the frame, the tag.
                                    let mut sealed = Vec::with_capacity(crate::crypto::OVERHEAD + 1 + zstd::zstd_safe::compress_bound(data.len()));
                                    sealed.extend_from_slice(&[0; crate::crypto::NONCE_LEN]);
                                    format::frame_into(&mut comp, data, level, &mut sealed);
                                    key.seal_in_place(&mut sealed, &format::blob_aad(t, id));
                                    out.push(Sealed { t, id: *id, plain_len: data.len() as u32, sealed });
                                }
                            }
                            let _ = id_tx.send((start, ids.into_iter().zip(fresh).collect()));
                            if !out.is_empty() && tx.blocking_send(ToPacker::Blobs(out)).is_err() {
                                return Err(Error::Other("the upload side stopped".into()));
                            }
                        }
                        Ok(())
                    }));
                }
                drop(id_tx);
                drop(work_rx);
                let chunker: Box<dyn Iterator<Item = std::io::Result<Vec<u8>>>> = match fixed {
                    // Read in 1 MiB blocks, not one read per 8 KiB chunk.
                    Some(size) => Box::new(FixedChunks { file: Box::new(std::io::BufReader::with_capacity(1 << 20, file)), size }),
                    None => Box::new(
                        StreamCDC::with_level_and_seed(
                            std::io::BufReader::with_capacity(1 << 20, file),
                            cfg.chunker.min as usize,
                            cfg.chunker.avg as usize,
                            cfg.chunker.max as usize,
                            Normalization::Level1,
                            seed,
                        )
                        .map(|c| c.map(|c| c.data).map_err(|e| std::io::Error::other(format!("{e:?}")))),
                    ),
                };
                let mut n = 0usize;
                let mut done = 0u64;
                let mut read_err = None;
                let mut batch: Vec<Vec<u8>> = Vec::with_capacity(64);
                let mut batch_bytes = 0usize;
                let mut chunker = chunker.peekable();
                while let Some(c) = chunker.next() {
                    let c = match c {
                        Ok(c) => c,
                        Err(e) => {
                            read_err = Some(Error::io(&path_buf, e));
                            break;
                        }
                    };
                    done += c.len() as u64;
                    batch_bytes += c.len();
                    batch.push(c);
                    if batch.len() < 64 && batch_bytes < (1 << 20) && chunker.peek().is_some() {
                        continue;
                    }
                    let full: Batch = Arc::new(std::mem::replace(&mut batch, Vec::with_capacity(64)));
                    batch_bytes = 0;
                    let start = n;
                    n += full.len();
                    if sha_tx.send(full.clone()).is_err() || work_tx.send((start, full)).is_err() {
                        break;
                    }
                    prog(done, progress_total);
                }
                drop(work_tx);
                drop(sha_tx);
                let mut first_err = read_err;
                for h in hs {
                    if let Err(e) = h.join().unwrap_or_else(|_| Err(Error::Other("worker panicked".into()))) {
                        first_err.get_or_insert(e);
                    }
                }
                let (digest, body, tail) = sha.join().map_err(|_| Error::Other("sha256 thread panicked".into()))?;
                if let Some(e) = first_err {
                    return Err(e);
                }
                if t == BlobType::Data && etcd_data::trailer::has_trailer(done) && tail[..] != body[..] {
                    return Err(Error::Damaged(format!(
                        "{}: the snapshot's sha256 trailer ({}) does not match its data ({}): the file was altered or damaged after it was saved; nothing was stored",
                        path_buf.display(),
                        hex::encode(&tail),
                        hex::encode(body)
                    )));
                }
                let mut ids = vec![[0u8; 32]; n];
                let mut reused = 0u64;
                for (start, got) in id_rx {
                    for (i, (id, fresh)) in got.into_iter().enumerate() {
                        ids[start + i] = id;
                        if !fresh {
                            reused += 1;
                        }
                    }
                }
                prog(done, progress_total);
                Ok((ids, digest, reused))
            });
            let _ = done_tx.send(r);
        });
        let r = done_rx.await.map_err(|_| Error::Other("chunker thread died".into()))?;
        let _ = handle.join();
        let (ids, digest, reused) = r?;
        self.reused += reused;
        Ok((ids, digest))
    }

    /// One whole blob (chunk lists, bundle tables).
    async fn put_blob(&mut self, t: BlobType, data: Vec<u8>) -> Result<BlobId> {
        let key = self.repo.key_for(t)?;
        let id = key.blob_id(&data);
        if !self.seen.lock().unwrap().insert(id) {
            return Ok(id);
        }
        let framed = format::frame(&data, self.repo.config.compression);
        let sealed = key.seal(&framed, &format::blob_aad(t, &id));
        self.to_packer
            .send(ToPacker::Blobs(vec![Sealed { t, id, plain_len: data.len() as u32, sealed }]))
            .await
            .map_err(|_| Error::Other("the upload side stopped".into()))?;
        Ok(id)
    }

    /// Store `data` as bundle blobs of at most 1 MiB each (static resources are small files; a
    /// file unchanged between backups gives the same blobs): its blob ids and sha256.
    async fn put_bytes(&mut self, t: BlobType, data: &[u8]) -> Result<(Vec<BlobId>, [u8; 32])> {
        let mut ids = Vec::new();
        for piece in data.chunks(1 << 20) {
            ids.push(self.put_blob(t, piece.to_vec()).await?);
        }
        Ok((ids, sha2::Sha256::digest(data).into()))
    }

    /// The members of an OpenShift static resources tarball as the bundle, in tarball order.
    /// The tarball is read on a thread of its own and its members handed over one at a time;
    /// a damaged tarball fails the backup before its manifest is written.
    async fn put_tarball(&mut self, tarball: &Path, stamp: &str) -> Result<(BundleRef, format::OpenshiftRef)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(crate::openshift::Member, Vec<u8>)>(16);
        let path = tarball.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            crate::openshift::read_tarball(&path, |m, data| {
                tx.blocking_send((m.clone(), data.to_vec())).map_err(|_| Error::Other("the bundle writer stopped".into()))
            })
        });
        let mut files = Vec::new();
        let mut blobs: Vec<String> = Vec::new();
        let mut total = 0u64;
        while let Some((m, data)) = rx.recv().await {
            let (ids, sha) = self.put_bytes(BlobType::Bundle, &data).await?;
            total += data.len() as u64;
            blobs.extend(ids.iter().map(hex::encode));
            files.push(BundleFile {
                path: m.path.clone(),
                mode: m.mode,
                size: data.len() as u64,
                sha256: hex::encode(sha),
                chunks: ids.iter().map(hex::encode).collect(),
                tar: Some(m),
            });
        }
        reader.await.map_err(|e| Error::Other(format!("tarball reader: {e}")))??;
        let facts = format::OpenshiftRef {
            stamp: stamp.to_string(),
            static_pods: crate::openshift::static_pod_revisions(files.iter().map(|f| f.path.as_str())),
            encryption_config: crate::openshift::encryption_config_path(files.iter().map(|f| f.path.as_str())).map(str::to_string),
        };
        let n = files.len() as u64;
        let table = serde_json::to_vec(&files).expect("serializable");
        let id = self.put_blob(BlobType::BundleList, table).await?;
        blobs.sort();
        blobs.dedup();
        Ok((BundleRef { table: hex::encode(id), files: n, bytes: total, blobs }, facts))
    }

    async fn finish(self) -> Result<Stats> {
        drop(self.to_packer);
        let (packs, added_bytes, new_blobs) = self.packer.await.map_err(|e| Error::Other(format!("packer: {e}")))??;
        Ok(Stats { packs, added_bytes, new_blobs })
    }
}

/// Fixed-size chunks of a file (the last one shorter).
struct FixedChunks {
    file: Box<dyn std::io::Read + Send>,
    size: usize,
}

impl Iterator for FixedChunks {
    type Item = std::io::Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        use std::io::Read;
        let mut buf = vec![0u8; self.size];
        let mut got = 0;
        while got < self.size {
            match self.file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        if got == 0 {
            return None;
        }
        buf.truncate(got);
        Some(Ok(buf))
    }
}

/// A pack's bytes as they are collected, in segments of up to [`PackBody::SEGMENT`]: buffers of
/// that size are reused by the allocator, where one growing 16 MiB buffer a pack is mapped and
/// faulted in afresh each time (about 100,000 page faults for a 1.26 GB snapshot).
#[derive(Default)]
struct PackBody {
    done: Vec<Bytes>,
    current: Vec<u8>,
    len: usize,
}

impl PackBody {
    const SEGMENT: usize = 1 << 20;

    fn push(&mut self, mut b: &[u8]) {
        self.len += b.len();
        while !b.is_empty() {
            if self.current.len() == Self::SEGMENT {
                self.done.push(Bytes::from(std::mem::take(&mut self.current)));
            }
            if self.current.capacity() == 0 {
                self.current.reserve_exact(Self::SEGMENT);
            }
            let n = b.len().min(Self::SEGMENT - self.current.len());
            self.current.extend_from_slice(&b[..n]);
            b = &b[n..];
        }
    }

    /// The segments, in order.
    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.done.push(Bytes::from(self.current));
        }
        self.done
    }
}

/// Collects sealed blobs into packs of `cluster` and uploads them, at most `uploads` at a time.
pub(crate) async fn packer(
    repo: Arc<Repository>,
    cluster: String,
    mut rx: tokio::sync::mpsc::Receiver<ToPacker>,
    uploads: usize,
) -> Result<(Vec<IndexPack>, u64, u64)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(uploads));
    let mut tasks: Vec<tokio::task::JoinHandle<Result<IndexPack>>> = Vec::new();
    let mut buf = PackBody::default();
    let mut entries: Vec<PackEntry> = Vec::new();
    let mut added = 0u64;
    let mut blobs = 0u64;
    let pack_size = repo.config.pack_size as usize;
    let flush = |buf: &mut PackBody,
                 entries: &mut Vec<PackEntry>,
                 tasks: &mut Vec<tokio::task::JoinHandle<Result<IndexPack>>>,
                 permit: tokio::sync::OwnedSemaphorePermit| {
        let mut body = std::mem::take(buf);
        let ents = std::mem::take(entries);
        body.push(&format::encode_pack_header(repo.data_key(), &ents));
        let (repo, cluster) = (repo.clone(), cluster.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let (id, body) = tokio::task::spawn_blocking(move || {
                let segments = body.finish();
                let mut h = blake3::Hasher::new();
                segments.iter().for_each(|s| {
                    h.update(s);
                });
                (<[u8; 32]>::from(h.finalize()), segments)
            })
            .await
            .map_err(|e| Error::Other(format!("hash pack: {e}")))?;
            let name = hex::encode(id);
            repo.put_new(&format::pack_path(&cluster, &name), object_store::PutPayload::from_iter(body)).await?;
            Ok(IndexPack { pack: id, entries: ents })
        }));
    };
    while let Some(ToPacker::Blobs(batch)) = rx.recv().await {
        for b in batch {
            let offset = buf.len as u32;
            added += b.sealed.len() as u64;
            blobs += 1;
            entries.push(PackEntry { blob_type: b.t, id: b.id, offset, length: b.sealed.len() as u32, plain_len: b.plain_len });
            buf.push(&b.sealed);
            if buf.len >= pack_size {
                let permit = sem.clone().acquire_owned().await.expect("semaphore open");
                flush(&mut buf, &mut entries, &mut tasks, permit);
            }
        }
    }
    if !entries.is_empty() {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        flush(&mut buf, &mut entries, &mut tasks, permit);
    }
    let mut packs = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(p)) => packs.push(p),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::Other(format!("upload task: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok((packs, added, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_body_is_its_bytes_in_order_in_segments() {
        let mut body = PackBody::default();
        let mut want = Vec::new();
        // Small blobs, one that fills a segment exactly, one larger than two.
        for (i, n) in [10usize, 4000, PackBody::SEGMENT - 4010, 7, 2 * PackBody::SEGMENT + 3, 1].into_iter().enumerate() {
            let blob: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            body.push(&blob);
            want.extend_from_slice(&blob);
            assert_eq!(body.len, want.len());
        }
        let segments = body.finish();
        assert!(segments.iter().all(|s| !s.is_empty() && s.len() <= PackBody::SEGMENT));
        assert_eq!(segments.len(), 4);
        assert_eq!(segments.concat(), want);
    }
}
