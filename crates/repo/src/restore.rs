//! Getting a snapshot back: reassemble the exact file from its chunks (`backups get`), and
//! restore it into member data directories (`quorum restore`, through `etcd_data::restore`).
//!
//! Packs are fetched in pieces of whole blobs (4 MiB, 1 MiB from `file://`), `--parallel` in
//! flight (a remote store's throughput is per connection), each with one coalesced ranged read
//! of the blobs it holds for this snapshot; every blob is authenticated, decompressed and
//! checked against its id, then written at its offset (a blob that occurs several times is
//! written at each). The file is written under a temporary name beside its own, hashed in
//! file order as the bytes land and checked against the manifest's sha256, fsynced, and only
//! then given its name ([`etcd_data::durable`]).
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_data::durable::NewFile;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::format::{self, BlobId, Manifest};
use crate::repository::{BlobLoc, Index, Repository};

pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Write the snapshot of `manifest` to `out` (which must not exist), fsynced and checked
/// against the manifest's sha256; under a shared lock on its cluster.
pub async fn reassemble(repo: Arc<Repository>, id: &str, manifest: &Manifest, out: &Path, parallel: usize, progress: Progress) -> Result<()> {
    reading_backup(&repo, id, manifest, "get", reassemble_with(repo.clone(), manifest, out, parallel, progress)).await
}

/// Run `read` under a shared lock on the backup's cluster, once the backup is known to still
/// exist: a `forget` and `prune` between finding it and locking would otherwise show up as
/// missing packs, i.e. as damage. The lock is released whatever `read` returns.
pub(crate) async fn reading_backup<T>(
    repo: &Repository,
    id: &str,
    manifest: &Manifest,
    operation: &str,
    read: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let lock = repo.lock(&manifest.cluster, false, operation).await?;
    let r = match repo.backup_ids(&manifest.cluster).await.map(|ids| ids.iter().any(|i| i == id)) {
        Ok(true) => read.await,
        Ok(false) => Err(Error::Missing(format!(
            "backup {} of cluster {} was forgotten before it could be read; nothing was written (choose another backup)",
            crate::short(id),
            manifest.cluster
        ))),
        Err(e) => Err(e),
    };
    lock.release().await;
    r
}

/// The fetch writes the chunks into the new file ([`Incoming`], kept in the file) while a
/// thread hashes it in file order as the bytes land and starts the writeback of what it has
/// hashed: the sha256 and most of the disk writes overlap the fetch instead of following it
/// (a second read of the file for the sha256 took 0.6 s of a 2.5 s `backups get` of the
/// 1.26 GB bench snapshot). The caller holds a lock on the manifest's cluster.
async fn reassemble_with(repo: Arc<Repository>, manifest: &Manifest, out: &Path, parallel: usize, progress: Progress) -> Result<()> {
    let mut new = NewFile::create(out).map_err(|e| exists_or_io(out, e, "choose another path or remove it first"))?;
    let partial = new.path().to_path_buf();
    let file = new.file().try_clone().map_err(|e| Error::io(&partial, e))?;
    let incoming = Incoming::start_in(&repo, manifest, file, &partial).await?;
    let hasher = {
        let (arriving, len, file) = (incoming.arriving.clone(), incoming.total, new.file().try_clone().map_err(|e| Error::io(&partial, e))?);
        tokio::task::spawn_blocking(move || hash_as_it_lands(&*arriving, len, &file))
    };
    let fetched = incoming.fetch(repo, parallel, progress).await;
    let hashed = hasher.await.map_err(|e| Error::Other(format!("hash thread: {e}")))?;
    fetched?;
    let actual = hashed.map_err(|e| Error::io(&partial, e))?;
    if actual != manifest.snapshot.sha256 {
        return Err(Error::Damaged(format!("reassembled snapshot hashes to {actual}, the manifest says {}", manifest.snapshot.sha256)));
    }
    // publish() fsyncs before the file gets its name.
    new.publish().map_err(|e| exists_or_io(out, e, "it appeared while fetching; left it alone"))
}

/// The sha256 of `len` bytes read from `bytes` in order (each read waits for its bytes), with
/// the writeback of each hashed stretch of `file` started (`sync_file_range`, a hint: the
/// final fsync is what makes the file durable).
fn hash_as_it_lands(bytes: &dyn bolt::ReadAt, len: u64, file: &File) -> std::io::Result<String> {
    use std::os::unix::io::AsRawFd;
    const STEP: usize = 1 << 20;
    const WRITEBACK: u64 = 64 << 20;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; STEP];
    let (mut at, mut flushed) = (0u64, 0u64);
    while at < len {
        let want = (len - at).min(STEP as u64) as usize;
        let n = bytes.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("the fetched bytes end at {at} of {len}")));
        }
        h.update(&buf[..n]);
        at += n as u64;
        if at - flushed >= WRITEBACK || at == len {
            // SAFETY: a valid descriptor and a byte range of it; the call only starts writeback.
            unsafe { libc::sync_file_range(file.as_raw_fd(), flushed as libc::off64_t, (at - flushed) as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE) };
            flushed = at;
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A publish that found its name taken is the user's to resolve; anything else is I/O.
fn exists_or_io(out: &Path, e: std::io::Error, what_then: &str) -> Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Error::Usage(format!("{}: already exists; {what_then}", out.display()))
    } else {
        Error::io(out, e)
    }
}

pub fn sha256_file(p: &Path) -> Result<String> {
    sha256_file_with(p, &|_, _| {})
}

/// [`sha256_file`], telling `progress(done, total)` as it reads.
pub fn sha256_file_with(p: &Path, progress: &dyn Fn(u64, u64)) -> Result<String> {
    let mut f = File::open(p).map_err(|e| Error::io(p, e))?;
    let total = f.metadata().map_err(|e| Error::io(p, e))?.len();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done, total);
    }
    Ok(hex::encode(h.finalize()))
}

/// Where a fetched pack's bytes go: `(bytes, file offset)`.
type Sink = Arc<dyn Fn(Vec<u8>, u64) -> Result<()> + Send + Sync>;

/// Fetch one pack's blobs of the snapshot (one coalesced ranged read), authenticate and
/// decompress each, and hand it to `sink` at each of its offsets; the bytes handed over.
async fn fetch_pack(repo: Arc<Repository>, index: &Index, pack: BlobId, blobs: Arc<PackPlan>, sink: Sink) -> Result<u64> {
    let name = hex::encode(pack);
    let path = index.pack_path(&pack);
    let ranges: Vec<std::ops::Range<u64>> = blobs.iter().map(|(l, _)| l.entry.offset as u64..l.entry.offset as u64 + l.entry.length as u64).collect();
    let not_found = |e| match e {
        object_store::Error::NotFound { .. } => Error::Damaged(format!("pack {name} is missing")),
        e => Error::store(format!("read {path}"), e),
    };
    // Blobs that follow each other without a gap (a whole pack of a fresh backup, the common
    // case) come as one buffer of our own, decrypted where it lies; otherwise as parts.
    let contiguous = ranges.windows(2).all(|w| w[0].end == w[1].start);
    let mut fetched = match (contiguous, ranges.first(), ranges.last()) {
        (true, Some(first), Some(last)) => {
            use object_store::ObjectStoreExt;
            let whole = repo.store().get_range(&path, first.start..last.end).await.map_err(not_found)?;
            if whole.len() as u64 != last.end - first.start {
                return Err(Error::Damaged(format!("pack {name} is shorter than its index says")));
            }
            Fetched::Whole(Vec::from(whole), first.start)
        }
        _ => Fetched::Parts(repo.store().get_ranges(&path, &ranges).await.map_err(not_found)?),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut decode = move || -> Result<u64> {
        // A pack's blobs mostly follow each other in the file: they are handed over in runs of
        // up to 4 MiB (each allocated at its exact size), not one per chunk.
        let mut sizes = run_sizes(&blobs).into_iter();
        let mut run = Run::default();
        let hand_over = |r: &mut Run| -> Result<()> {
            if !r.buf.is_empty() {
                sink(std::mem::take(&mut r.buf), r.start)?;
            }
            Ok(())
        };
        let mut n = 0u64;
        for (i, (loc, offsets)) in blobs.iter().enumerate() {
            // Each blob is opened once (decryption in place cannot be repeated): a chunk met
            // once (nearly all) straight into its run, one met more often into a copy first.
            let mut open = |out: &mut Vec<u8>| match &mut fetched {
                Fetched::Whole(buf, start) => {
                    let at = (loc.entry.offset as u64 - *start) as usize;
                    repo.open_blob_in_place(&loc.entry, &mut buf[at..at + loc.entry.length as usize], &name, out)
                }
                Fetched::Parts(parts) => repo.open_blob_into(&loc.entry, &parts[i], &name, out),
            };
            let plain = if offsets.len() > 1 {
                let mut p = Vec::new();
                open(&mut p)?;
                Some(p)
            } else {
                None
            };
            for off in offsets {
                if !extends(run.start, run.buf.len(), *off) {
                    hand_over(&mut run)?;
                    run.start = *off;
                    run.buf = Vec::with_capacity(sizes.next().unwrap_or(0));
                }
                match &plain {
                    Some(p) => run.buf.extend_from_slice(p),
                    None => open(&mut run.buf)?,
                }
                n += loc.entry.plain_len as u64;
            }
        }
        hand_over(&mut run)?;
        Ok(n)
    };
    // On a thread of its own at a lower priority: the restore's walk, which waits for these
    // bytes but must also write them all out, goes first when the CPUs are busy (measured on
    // two cores: three decoders beside the walk gave it half a core). At most one decoder
    // more than there are CPUs at once, however many requests are in flight.
    let permit = decoders().acquire_owned().await.map_err(|e| Error::Other(format!("decode slots: {e}")))?;
    std::thread::Builder::new()
        .name("decode".into())
        .spawn(move || {
            let _permit = permit;
            // SAFETY: get/setpriority of this thread only (PRIO_PROCESS with a thread id, as
            // Linux reads it). A failure leaves the priority as it was, which is harmless.
            unsafe {
                let me = libc::gettid() as libc::id_t;
                let now = libc::getpriority(libc::PRIO_PROCESS, me);
                libc::setpriority(libc::PRIO_PROCESS, me, now + DECODE_NICE);
            }
            let _ = done_tx.send(decode());
        })
        .map_err(|e| Error::Other(format!("start a decode thread: {e}")))?;
    done_rx.await.map_err(|_| Error::Other("a decode thread stopped without an answer".into()))?
}

/// The decode slots: one more than the CPUs this process may use.
fn decoders() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()) + 1))).clone()
}

/// How much nicer than the process the decode threads run.
const DECODE_NICE: libc::c_int = 5;

/// A pack's sealed blobs as fetched: one buffer from a file offset, or one part per blob.
enum Fetched {
    Whole(Vec<u8>, u64),
    Parts(Vec<bytes::Bytes>),
}

/// Bytes bound for consecutive file offsets from `start`, written at once.
#[derive(Default)]
struct Run {
    start: u64,
    buf: Vec<u8>,
}

const RUN_MAX: usize = 4 << 20;

/// Whether a chunk at `off` goes on the run of `len` bytes from `start` (else a run starts).
fn extends(start: u64, len: usize, off: u64) -> bool {
    len > 0 && start + len as u64 == off && len < RUN_MAX
}

/// The length of each run [`fetch_pack`] hands over for `blobs`, in order.
fn run_sizes(blobs: &PackPlan) -> Vec<usize> {
    let mut sizes: Vec<usize> = Vec::new();
    let mut start = 0u64;
    for (loc, offsets) in blobs {
        let len = loc.entry.plain_len as usize;
        for &off in offsets {
            match sizes.last_mut() {
                Some(cur) if extends(start, *cur, off) => *cur += len,
                _ => {
                    start = off;
                    sizes.push(len);
                }
            }
        }
    }
    sizes
}

/// The blobs to fetch from one pack, each with the file offsets it is written at.
type PackPlan = Vec<(BlobLoc, Offsets)>;

/// The file offsets a blob is written at: nearly always one.
type Offsets = smallvec::SmallVec<[u64; 1]>;

/// The most sealed bytes fetched with one request (and decoded at once) from a remote store:
/// a request there costs a round trip.
const PIECE: u64 = 4 << 20;

/// The same from a `file://` repository, where a read costs little: buffers of this size are
/// reused by the allocator instead of mapped and faulted in afresh (measured on the 1.26 GB
/// bench snapshot: 1 MiB gave the fastest restores and 190 against 265 MiB peak RSS for 4 MiB;
/// from moto on loopback, 1 MiB was a third slower than 4 MiB).
const PIECE_LOCAL: u64 = 1 << 20;

/// The piece size for `repo`'s store.
fn piece_for(repo: &Repository) -> u64 {
    if repo.location.local_root.is_some() {
        PIECE_LOCAL
    } else {
        PIECE
    }
}

/// The most requests in flight, whatever `--parallel` asks (as for uploads).
pub const MAX_PARALLEL: usize = 16;

struct Plan {
    total: u64,
    by_pack: Vec<(BlobId, PackPlan)>,
}

/// Which blobs to fetch from which pack, packs in the order of the first byte each holds (so
/// the pack with the snapshot's first bytes, which the restore reads first, comes first).
fn plan(ids: &[BlobId], index: &Index, piece: u64) -> Result<Plan> {
    // Every chunk occurrence with its file offset, sorted by pack and by place in it, then
    // cut into pieces: one sort of small items instead of maps keyed by id (which took 128 ms
    // for 153,000 chunks). The sort key is held in the item (the pack's number in order of
    // first use, the blob's offset in it), and a blob met once (nearly all) keeps its offset
    // inline, with no vector of its own; packs are cut into pieces in the same pass (310,000
    // chunks: 58 ms, against 85 ms with keys read through the index and a vector per blob).
    let mut pack_no: rustc_hash::FxHashMap<BlobId, u32> = Default::default();
    let mut occurrences: Vec<(u64, u64, &BlobLoc)> = Vec::with_capacity(ids.len());
    let mut off = 0u64;
    for (i, id) in ids.iter().enumerate() {
        let loc = index.blobs.get(id).ok_or_else(|| Error::Damaged(format!("chunk {} ({} of the snapshot) is not in any index", hex::encode(id), i)))?;
        let next = pack_no.len() as u32;
        let p = *pack_no.entry(loc.pack).or_insert(next);
        occurrences.push(((p as u64) << 32 | loc.entry.offset as u64, off, loc));
        off += loc.entry.plain_len as u64;
    }
    occurrences.sort_unstable_by_key(|&(key, o, _)| (key, o));
    // Each pack's blobs in pieces of at most `piece` sealed bytes (a blob is never split): the
    // unit fetched with one ranged read and decoded at once, so that many requests can be in
    // flight (a remote store's throughput is per connection) with little memory each.
    // (pack, its blobs, the first file offset it holds, sealed bytes)
    let mut by_pack: Vec<(BlobId, PackPlan, u64, u64)> = Vec::new();
    let mut last_key = None;
    for (key, o, loc) in occurrences {
        let len = loc.entry.length as u64;
        match by_pack.last_mut() {
            Some((_, blobs, first, _)) if last_key == Some(key) => {
                *first = (*first).min(o);
                if let Some((_, offs)) = blobs.last_mut() {
                    offs.push(o);
                }
            }
            Some((pack, blobs, first, sealed)) if *pack == loc.pack && *sealed + len <= piece => {
                *first = (*first).min(o);
                *sealed += len;
                blobs.push((*loc, smallvec::smallvec![o]));
            }
            _ => by_pack.push((loc.pack, vec![(*loc, smallvec::smallvec![o])], o, len)),
        }
        last_key = Some(key);
    }
    by_pack.sort_unstable_by_key(|(_, _, first, _)| *first);
    // Right after its meta pages a restore reads the file's last pages: bbolt writes the pages
    // a commit rewrites (the root, the upper branches) at the end of the file (strace of
    // `snapshot restore` on the bench snapshot: offsets 0, 4096, then the last page). So the
    // pack holding the last byte comes second, not last.
    let last = by_pack.iter().position(|(_, blobs, _, _)| blobs.iter().any(|(l, offs)| offs.iter().any(|o| o + l.entry.plain_len as u64 == off)));
    if let Some(i) = last.filter(|i| *i > 1) {
        let pack = by_pack.remove(i);
        by_pack.insert(1, pack);
    }
    Ok(Plan { total: off, by_pack: by_pack.into_iter().map(|(p, b, _, _)| (p, b)).collect() })
}

/// Restore a backup into member data directories while its snapshot arrives: the chunks are
/// fetched into memory (up to [`MEMORY_BUDGET`]; beyond it into a temporary file next to the
/// first target) and the native restore reads them as they land (the `arriving` module); the
/// data dirs are published only once every chunk has arrived and been authenticated.
/// Under a shared lock on the backup's cluster while its data is read.
pub async fn restore(
    repo: Arc<Repository>,
    id: &str,
    manifest: &Manifest,
    opts: etcd_data::restore::RestoreOptions,
    parallel: usize,
    phases: &crate::progress::Phases,
) -> Result<etcd_data::restore::RestoreReport> {
    let first = opts.targets.first().ok_or_else(|| Error::Usage("nothing to restore into".into()))?;
    for t in &opts.targets {
        if std::fs::read_dir(&t.data_dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(Error::Restore(etcd_data::restore::RestoreError::DataDirNotEmpty { path: t.data_dir.clone() }));
        }
    }
    let parent = first.data_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = crate::scratch::Scratch::new(&parent, ".quorum-restore-")?;
    reading_backup(&repo, id, manifest, "restore", restore_arriving(repo.clone(), manifest, opts, &tmp.path().join("snapshot.db"), true, parallel, phases))
        .await
}

/// How much of an arriving snapshot `restore --repo` keeps in memory: up to this many bytes
/// not yet read (the fetch runs ahead by this much; up to twice this for packs that reads ask
/// for), and as many of runs partly read; beyond, it spills (see the `arriving` module).
pub const MEMORY_BUDGET: u64 = 64 << 20;

/// The snapshot at `snap` (a path in a temporary directory): the bytes are kept in memory when
/// `memory` (`snap` is then only where they spill, if they must), else in that file.
pub(crate) async fn restore_arriving(
    repo: Arc<Repository>,
    manifest: &Manifest,
    mut opts: etcd_data::restore::RestoreOptions,
    snap: &Path,
    memory: bool,
    parallel: usize,
    phases: &crate::progress::Phases,
) -> Result<etcd_data::restore::RestoreReport> {
    let incoming = Incoming::start(&repo, manifest, snap, memory).await?;

    // Progress: "fetching" while chunks arrive, then the restore's own phases for what is left.
    let shown = Arc::new(std::sync::Mutex::new((false, 0u64, 0u64)));
    let (fetching, restoring_bytes, restoring) = (phases.bytes("fetching"), phases.bytes("restoring"), phases.restoring());
    let on_fetch: Progress = {
        let shown = shown.clone();
        Arc::new(move |d, t| {
            if !shown.lock().unwrap_or_else(|e| e.into_inner()).0 {
                fetching(d, t)
            }
        })
    };
    let on_restore: Progress = {
        let (shown, restoring) = (shown.clone(), restoring.clone());
        Arc::new(move |d, t| {
            let mut s = shown.lock().unwrap_or_else(|e| e.into_inner());
            (s.1, s.2) = (d, t);
            if s.0 {
                restoring(d, t)
            }
        })
    };

    opts.snapshot = snap.to_path_buf();
    // Every backup's trailer was checked when it was stored (`backup` refuses a mismatch), and
    // the bytes read are those bytes: every chunk is authenticated, and the chunk list comes
    // from the sealed manifest. Hashing 1 GB again would only repeat that proof.
    opts.proven_by = Some("sha256 trailer checked at backup; every chunk authenticated on fetch".into());
    opts.source = Some(incoming.source());
    let restore_task = {
        let (abandon, finished) = (incoming.abandon(), incoming.finished());
        let on_restore = on_restore.clone();
        tokio::task::spawn_blocking(move || {
            let r = etcd_data::restore::restore(&opts, &|d, t| on_restore(d, t));
            if r.is_err() {
                // Nothing more to fetch for a restore that stopped.
                abandon();
            } else {
                finished();
            }
            r
        })
    };
    let fetch = async {
        let r = incoming.fetch(repo, parallel, on_fetch).await;
        // Under the lock, so that the restore's next report comes after these.
        let mut s = shown.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = true;
        restoring_bytes(s.1, s.2);
        if s.2 > 0 && s.1 >= s.2 {
            restoring(s.1, s.2);
        }
        drop(s);
        r
    };
    let (fetched, restored) = tokio::join!(fetch, restore_task);
    let restored = restored.map_err(|e| Error::Other(format!("restore task: {e}")))?;
    // The fetch's own error says more than the restore's "could not be fetched".
    fetched?;
    Ok(restored?)
}

/// Where [`Incoming`] keeps the bytes.
enum KeepIn {
    Memory,
    /// A file it creates.
    NewFile,
    /// A file the caller created (new and empty, open for reading and writing).
    Opened(File),
}

/// A snapshot about to arrive, its chunks planned: into memory, or into a temporary file
/// created at full size with its space reserved (a full filesystem fails there, before
/// anything is read).
pub(crate) struct Incoming {
    arriving: Arc<crate::arriving::Arriving>,
    /// The temporary (or spill) file's path, for errors.
    path: PathBuf,
    total: u64,
    index: Arc<Index>,
    by_pack: Vec<(BlobId, Arc<PackPlan>)>,
}

impl Incoming {
    /// `memory`: keep the bytes in memory ([`MEMORY_BUDGET`]), spilling to `snap` only if
    /// they must; else in the file `snap`.
    pub(crate) async fn start(repo: &Repository, manifest: &Manifest, snap: &Path, memory: bool) -> Result<Incoming> {
        Incoming::start_keeping(repo, manifest, snap, if memory { KeepIn::Memory } else { KeepIn::NewFile }).await
    }

    /// Kept in `file` (new and empty, open for reading and writing), whose path is `path`.
    pub(crate) async fn start_in(repo: &Repository, manifest: &Manifest, file: File, path: &Path) -> Result<Incoming> {
        Incoming::start_keeping(repo, manifest, path, KeepIn::Opened(file)).await
    }

    /// `snap`: where the bytes spill from memory, or the file's path.
    async fn start_keeping(repo: &Repository, manifest: &Manifest, snap: &Path, keep_in: KeepIn) -> Result<Incoming> {
        let index = Arc::new(repo.load_index(&manifest.cluster).await?);
        let ids = repo.chunk_ids(manifest, &index).await?;
        let plan = plan(&ids, &index, piece_for(repo))?;
        let total = plan.total;
        if total != manifest.snapshot.size {
            return Err(Error::Damaged(format!("the chunk list adds up to {total} bytes, the manifest says {}", manifest.snapshot.size)));
        }
        let sized = |file: File| -> Result<crate::arriving::Keep> {
            etcd_data::durable::reserve(&file, total).map_err(|e| Error::io(snap, e))?;
            file.set_len(total).map_err(|e| Error::io(snap, e))?;
            Ok(crate::arriving::Keep::File(file))
        };
        let keep = match keep_in {
            KeepIn::Memory => crate::arriving::Keep::Memory { budget: MEMORY_BUDGET, spill: snap.to_path_buf() },
            KeepIn::NewFile => sized(std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(snap).map_err(|e| Error::io(snap, e))?)?,
            KeepIn::Opened(f) => sized(f)?,
        };
        let owners: Vec<(u64, u64, usize)> = plan
            .by_pack
            .iter()
            .enumerate()
            .flat_map(|(i, (_, blobs))| blobs.iter().flat_map(move |(loc, offs)| offs.iter().map(move |&o| (o, o + loc.entry.plain_len as u64, i))))
            .collect();
        let arriving = Arc::new(crate::arriving::Arriving::new(keep, total, owners, plan.by_pack.len()));
        let by_pack = plan.by_pack.into_iter().map(|(p, b)| (p, Arc::new(b))).collect();
        Ok(Incoming { arriving, path: snap.to_path_buf(), total, index, by_pack })
    }

    /// The bytes as the native restore and the replay read them.
    pub(crate) fn source(&self) -> etcd_data::restore::SnapshotSource {
        let waiter = self.arriving.clone();
        etcd_data::restore::SnapshotSource { bytes: self.arriving.clone(), len: self.total, all_arrived: Arc::new(move || waiter.wait_all()) }
    }

    /// Fetch every chunk; a failure also fails every read of the bytes.
    pub(crate) async fn fetch(self, repo: Arc<Repository>, parallel: usize, progress: Progress) -> Result<()> {
        let arriving = self.arriving.clone();
        let r = fetch_arriving(repo, self.index, self.by_pack, self.arriving, &self.path, self.total, parallel, progress).await;
        if let Err(e) = &r {
            arriving.fail(e.to_string());
        }
        r
    }

    /// For a reader that stopped: nothing more needs fetching.
    pub(crate) fn abandon(&self) -> impl Fn() + Send + Sync + 'static {
        let a = self.arriving.clone();
        move || a.fail("the reader stopped".into())
    }

    /// For a reader that is done: the fetch workers stop (in memory, they wait until then in
    /// case a pack must be fetched again).
    pub(crate) fn finished(&self) -> impl Fn() + Send + Sync + 'static {
        let a = self.arriving.clone();
        move || a.close()
    }
}

/// Fetch every pack of `by_pack` (`total` bytes, as planned) into `arriving` (`path` names
/// its file), `parallel` (1 to 3) at a time, in the order [`crate::arriving::Arriving::take`]
/// gives, until it says there is nothing more.
#[allow(clippy::too_many_arguments)]
async fn fetch_arriving(
    repo: Arc<Repository>,
    index: Arc<Index>,
    by_pack: Vec<(BlobId, Arc<PackPlan>)>,
    arriving: Arc<crate::arriving::Arriving>,
    path: &Path,
    total: u64,
    parallel: usize,
    progress: Progress,
) -> Result<()> {
    use crate::arriving::Take;
    let by_pack = Arc::new(by_pack);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers = (0..parallel.clamp(1, MAX_PARALLEL)).map(|_| {
        let (repo, index, arriving, by_pack, done, progress, path) =
            (repo.clone(), index.clone(), arriving.clone(), by_pack.clone(), done.clone(), progress.clone(), path.to_path_buf());
        async move {
            loop {
                // Registered before asking, so no wake-up between the two is missed.
                let woken = arriving.work.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let i = match arriving.take() {
                    Take::Pack(i) => i,
                    Take::Wait => {
                        woken.await;
                        continue;
                    }
                    Take::Done => break,
                };
                let (pack, blobs) = by_pack[i].clone();
                let sink: Sink = {
                    let (arriving, path) = (arriving.clone(), path.clone());
                    Arc::new(move |data, off| arriving.put(data, off, i).map_err(|e| Error::io(&path, e)))
                };
                let n = fetch_pack(repo.clone(), &index, pack, blobs, sink).await?;
                arriving.pack_done(i);
                // A pack fetched again (its bytes were dropped from memory) counts once.
                let d = (done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n).min(total);
                progress(d, total);
            }
            Ok::<_, Error>(())
        }
    });
    futures::future::try_join_all(workers).await?;
    if arriving.failed() {
        // The restore stopped, and its error is the one to report.
        return Ok(());
    }
    if !arriving.complete() {
        return Err(Error::Damaged("the fetched chunks do not cover the whole snapshot".into()));
    }
    Ok(())
}

/// `backups get --bundle`: write the `--include` files of a backup under `out` (paths kept,
/// relative to `out`), each checked against its sha256. Needs the bundle key. Existing files
/// are never overwritten.
pub async fn extract_bundle(repo: Arc<Repository>, id: &str, manifest: &Manifest, out: &Path) -> Result<usize> {
    let b = manifest.bundle.as_ref().ok_or_else(|| Error::Usage("this backup has no bundle of included files".into()))?;
    repo.key_for(format::BlobType::BundleList)?;
    reading_backup(&repo, id, manifest, "get", extract_bundle_locked(&repo, manifest, b, out)).await
}

/// The file table of a backup's `--include` bundle (names, modes, sizes). Needs the bundle key.
pub async fn bundle_files(repo: &Repository, manifest: &Manifest) -> Result<Vec<format::BundleFile>> {
    let b = manifest.bundle.as_ref().ok_or_else(|| Error::Usage("this backup has no bundle of included files".into()))?;
    repo.key_for(format::BlobType::BundleList)?;
    let index = repo.load_index(&manifest.cluster).await?;
    bundle_table(repo, &index, b).await
}

pub(crate) async fn bundle_table(repo: &Repository, index: &crate::repository::Index, b: &format::BundleRef) -> Result<Vec<format::BundleFile>> {
    let table_id = crate::repository::parse_id(&b.table)?;
    let loc = index.blobs.get(&table_id).ok_or_else(|| Error::Damaged(format!("bundle table blob {} is not in any index", b.table)))?;
    let table = repo.read_blob(index, loc).await?;
    serde_json::from_slice(&table).map_err(|e| Error::Damaged(format!("bundle table: {e}")))
}

async fn extract_bundle_locked(repo: &Repository, manifest: &Manifest, b: &format::BundleRef, out: &Path) -> Result<usize> {
    let index = repo.load_index(&manifest.cluster).await?;
    let files = bundle_table(repo, &index, b).await?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for f in &files {
        let rel = Path::new(f.path.trim_start_matches('/'));
        if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(Error::Damaged(format!("bundle path {:?} would leave the output directory; refused", f.path)));
        }
        let dest = out.join(rel);
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let mut new = NewFile::create(&dest).map_err(|e| exists_or_io(&dest, e, "extract into an empty directory"))?;
        let partial = new.path().to_path_buf();
        let mut h = sha2::Sha256::new();
        {
            use std::io::Write;
            for c in &f.chunks {
                let id = crate::repository::parse_id(c)?;
                let loc = index.blobs.get(&id).ok_or_else(|| Error::Damaged(format!("{}: chunk {c} is not in any index", f.path)))?;
                let data = repo.read_blob(&index, loc).await?;
                h.update(&data);
                new.file().write_all(&data).map_err(|e| Error::io(&partial, e))?;
            }
        }
        if hex::encode(h.finalize()) != f.sha256 {
            return Err(Error::Damaged(format!("{}: reassembled content does not match its sha256", f.path)));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(f.mode & 0o7777)).map_err(|e| Error::io(&partial, e))?;
        new.publish().map_err(|e| exists_or_io(&dest, e, "it appeared while extracting; left it alone"))?;
    }
    Ok(files.len())
}

fn export_path(id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("exports/{id}.db"))
}

/// `backups url`: a presigned GET URL to `exports/<id>.db`, an unencrypted single-object copy
/// of the snapshot, uploaded first when it is not there yet.
pub async fn export_url(repo: Arc<Repository>, id: &str, manifest: &Manifest, expires: std::time::Duration, parallel: usize) -> Result<url::Url> {
    use object_store::ObjectStoreExt;
    let path = export_path(id);
    let present = match repo.store().head(&path).await {
        Ok(m) => m.size == manifest.snapshot.size,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => return Err(Error::store(format!("read {path}"), e)),
    };
    if !present {
        // Fail before the download when the store cannot sign.
        repo.location.signed_get(&path, expires).await?;
        let tmp = tempfile::tempdir().map_err(|e| Error::Other(format!("temporary directory: {e}")))?;
        let snap = tmp.path().join("snapshot.db");
        reassemble(repo.clone(), id, manifest, &snap, parallel, Arc::new(|_, _| {})).await?;
        // The copy is uploaded outside the lock: it is a plain object of its own.
        let upload = repo.store().put_multipart(&path).await.map_err(|e| Error::store(format!("upload {path}"), e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut f = File::open(&snap).map_err(|e| Error::io(&snap, e))?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&snap, e))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await.map_err(|e| Error::store(format!("upload {path}"), e))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(|e| Error::store(format!("upload {path}"), e))?;
    }
    repo.location.signed_get(&path, expires).await
}

/// Delete an exported copy.
pub async fn remove_export(repo: &Repository, id: &str) -> Result<()> {
    repo.delete(&export_path(id)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobType, PackEntry};

    /// Chunks `ids` of 100 bytes each, chunk i stored in pack `packs[i]` (its blobs in order).
    fn index(ids: &[BlobId], packs: &[u8]) -> Index {
        let mut index = Index::new("c");
        let mut at: std::collections::HashMap<u8, u32> = Default::default();
        for (id, p) in ids.iter().zip(packs) {
            if index.blobs.contains_key(id) {
                continue;
            }
            let offset = at.entry(*p).or_default();
            let entry = PackEntry { blob_type: BlobType::Data, id: *id, offset: *offset, length: 128, plain_len: 100 };
            *offset += 128;
            index.blobs.insert(*id, BlobLoc { pack: [*p; 32], entry });
        }
        index
    }

    #[test]
    fn packs_come_in_file_order_with_the_last_bytes_second() {
        let id = |n: u8| [n; 32];
        // Chunk 5 repeats chunk 1 (deduplicated); the last chunk lies in pack 4.
        let ids = [id(1), id(2), id(3), id(4), id(5), id(1), id(6)];
        let packs = [1, 1, 2, 2, 3, 1, 4];
        let plan = plan(&ids, &index(&ids, &packs), PIECE).unwrap();
        assert_eq!(plan.total, 700);
        let order: Vec<u8> = plan.by_pack.iter().map(|(p, _)| p[0]).collect();
        assert_eq!(order, [1, 4, 2, 3], "the file's first bytes, its last, then the rest in file order");
        let first: Vec<(u8, Vec<u64>)> = plan.by_pack[0].1.iter().map(|(l, o)| (l.entry.id[0], o.to_vec())).collect();
        assert_eq!(first, [(1, vec![0, 500]), (2, vec![100])], "a repeated chunk is fetched once, for both offsets");
    }

    #[test]
    fn a_pack_is_fetched_in_pieces_of_whole_blobs() {
        // One pack: nine blobs of a third of a piece and a byte (two fit in a piece, three do
        // not), then one larger than a piece.
        let mut index = Index::new("c");
        let third = (PIECE / 3 + 1) as u32;
        let ids: Vec<BlobId> = (1..=10u8).map(|n| [n; 32]).collect();
        let mut offset = 0;
        for (i, id) in ids.iter().enumerate() {
            let length = if i == 9 { PIECE as u32 + 5 } else { third };
            index.blobs.insert(*id, BlobLoc { pack: [7; 32], entry: PackEntry { blob_type: BlobType::Data, id: *id, offset, length, plain_len: 1000 } });
            offset += length;
        }
        let plan = plan(&ids, &index, PIECE).unwrap();
        let pieces: Vec<Vec<u8>> = plan
            .by_pack
            .iter()
            .map(|(p, b)| {
                assert_eq!(*p, [7; 32]);
                b.iter().map(|(l, _)| l.entry.id[0]).collect()
            })
            .collect();
        // In file order, except the piece with the last bytes, which comes second.
        assert_eq!(pieces, [vec![1, 2], vec![10], vec![3, 4], vec![5, 6], vec![7, 8], vec![9]]);
        for (_, b) in &plan.by_pack {
            let sealed: u64 = b.iter().map(|(l, _)| l.entry.length as u64).sum();
            assert!(b.len() == 1 || sealed <= PIECE, "a piece of {sealed} bytes");
        }
    }
}
