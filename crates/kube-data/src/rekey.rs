//! Offline re-encryption of a snapshot: every revision of every key of the resources two
//! EncryptionConfigurations cover is read with the first (as kube-apiserver's read path: any of
//! its providers and keys for that resource) and written with the second's write provider (as
//! kube-apiserver writes: same prefixes, a fresh IV or nonce, the etcd key as AES-GCM's
//! authenticated data). Everything else — other keys' values, tombstones, every other bucket,
//! and every revision, create/mod revision, version and lease — is copied unchanged.
//!
//! The output is a new snapshot file: the bbolt file is streamed through [`bolt::Writer`] (one
//! pass over the input, values never held beyond the one being re-encrypted), then the sha256
//! trailer `snapshot save` writes is appended, so `snapshot verify`, `etcdutl snapshot status`
//! and `snapshot restore` (without `--skip-hash-check`) accept it. It is written under a
//! temporary name beside `NEW`, fsynced and given the name `NEW` only if that is still free
//! ([`etcd_data::durable`]); on any error nothing is left. A value that does not decrypt is an
//! error naming its key and revision (or, with `skip_undecryptable`, copied as it is and
//! counted). KMS values and a KMS write
//! provider are refused: their data keys are sealed by the KMS plugin.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bolt::{WriteError, Writer, WriterOptions};
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::encryption::{os_random, DecryptError, EncryptError, EncryptionConfig, Transformer};
use crate::resources::{self, GroupResource};
use etcd_data::durable::NewFile;
use etcd_data::schema::{self, KeyValue, KeyValueRef, RevisionKey};
use etcd_data::trailer::{self, Trailer};

/// What to re-encrypt.
pub struct RekeyOptions<'a> {
    pub snapshot: PathBuf,
    pub output: PathBuf,
    /// Reads the current values (`--from-config`).
    pub from: &'a EncryptionConfig,
    /// Writes the new ones (`--to-config`).
    pub to: &'a EncryptionConfig,
    /// Only these resources (`*.group`, `*.` and `*.*` select as in a configuration); empty:
    /// every resource either configuration covers.
    pub resources: Vec<GroupResource>,
    /// Copy values that do not decrypt as they are (counted) instead of failing.
    pub skip_undecryptable: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceCounts {
    /// Values (all revisions) re-encrypted.
    pub rewritten: u64,
    /// Values that did not decrypt and were copied as they are (`--skip-undecryptable`).
    pub skipped: u64,
    /// The new write state (`aescbc:key2`, `identity`).
    pub written_as: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub key: String,
    pub revision: i64,
    pub reason: String,
}

/// What a rekey did.
#[derive(Debug, Clone, Serialize)]
pub struct RekeyReport {
    pub output: PathBuf,
    /// The snapshot's latest revision (unchanged).
    pub revision: i64,
    /// Entries of the key bucket (every revision of every key, tombstones included).
    pub key_entries: u64,
    /// Values re-encrypted, all resources.
    pub rewritten: u64,
    /// Values copied as they are because they did not decrypt (`--skip-undecryptable`).
    pub skipped_undecryptable: u64,
    /// Per resource (`secrets`, `deployments.apps`).
    pub resources: BTreeMap<String, ResourceCounts>,
    /// The first 100 skipped values.
    pub skipped: Vec<Skipped>,
    pub bytes: u64,
    /// sha256 of the bbolt bytes, as written in the trailer.
    pub sha256: String,
    /// Whether the input's own sha256 trailer was checked.
    pub input_hash_checked: bool,
    pub warnings: Vec<String>,
}

/// Why a rekey failed. No output file is left.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("{0}")]
    Usage(String),
    #[error("{}: exists; Quorum never overwrites a snapshot (choose a new name)", .0.display())]
    Exists(PathBuf),
    #[error(transparent)]
    Bolt(#[from] bolt::Error),
    #[error("{0}")]
    Damaged(String),
    #[error("{key} at revision {revision}: does not decrypt with the source configuration: {reason}")]
    Undecryptable { key: String, revision: i64, reason: DecryptError },
    #[error("{key} at revision {revision}: cannot encrypt: {reason}")]
    Encrypt { key: String, revision: i64, reason: EncryptError },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing the new snapshot: {0}")]
    Write(#[from] WriteError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RekeyError + '_ {
    move |source| RekeyError::Io { path: path.to_path_buf(), source }
}

struct Route<'a> {
    label: String,
    read: Transformer<'a>,
    write: Transformer<'a>,
}

struct Copier<'a, W: Write + Seek> {
    w: Writer<W>,
    opts: &'a RekeyOptions<'a>,
    routes: HashMap<GroupResource, Option<Route<'a>>>,
    error: Option<RekeyError>,
    report: RekeyReport,
}

impl<'a, W: Write + Seek> Copier<'a, W> {
    fn route(&mut self, gr: GroupResource) -> Option<&Route<'a>> {
        let opts = self.opts;
        self.routes
            .entry(gr)
            .or_insert_with_key(|gr| {
                if !opts.resources.is_empty() && !opts.resources.iter().any(|s| selects(s, gr)) {
                    return None;
                }
                let (read, write) = (opts.from.transformer_for(gr), opts.to.transformer_for(gr));
                (read.rule.is_some() || write.rule.is_some()).then(|| Route { label: gr.to_string(), read, write })
            })
            .as_ref()
    }

    fn key_entry(&mut self, k: &[u8], v: &[u8]) -> Result<(), RekeyError> {
        self.report.key_entries += 1;
        let rk = match RevisionKey::parse(k) {
            Ok(rk) => rk,
            Err(e) => return Err(RekeyError::Damaged(format!("{}: key bucket: {e}", self.opts.snapshot.display()))),
        };
        self.report.revision = self.report.revision.max(rk.rev.main);
        if rk.tombstone || v.is_empty() {
            return Ok(self.w.put(k, v)?);
        }
        let Some(kv) = KeyValueRef::decode(v) else {
            return Err(RekeyError::Damaged(format!("{}: key bucket: revision {} holds no valid KeyValue", self.opts.snapshot.display(), rk.rev.main)));
        };
        let Some(gr) = resources::of_key(kv.key) else { return Ok(self.w.put(k, v)?) };
        let skip = self.opts.skip_undecryptable;
        let Some(route) = self.route(gr) else { return Ok(self.w.put(k, v)?) };
        let name = || String::from_utf8_lossy(kv.key).into_owned();
        let plain = match route.read.read(kv.value, kv.key) {
            Ok(p) => p,
            Err(reason) if skip => {
                let label = route.label.clone();
                let c = self.report.resources.entry(label).or_default();
                c.skipped += 1;
                self.report.skipped_undecryptable += 1;
                if self.report.skipped.len() < 100 {
                    self.report.skipped.push(Skipped { key: name(), revision: rk.rev.main, reason: reason.to_string() });
                }
                return Ok(self.w.put(k, v)?);
            }
            Err(reason) => return Err(RekeyError::Undecryptable { key: name(), revision: rk.rev.main, reason }),
        };
        let value = route.write.write(&plain, kv.key, &mut os_random).map_err(|reason| RekeyError::Encrypt { key: name(), revision: rk.rev.main, reason })?;
        let (label, written_as) = (route.label.clone(), route.write.write_label());
        let new =
            KeyValue { key: kv.key.to_vec(), create_revision: kv.create_revision, mod_revision: kv.mod_revision, version: kv.version, value, lease: kv.lease };
        self.w.put(k, &new.encode_to_vec())?;
        let c = self.report.resources.entry(label).or_default();
        c.rewritten += 1;
        c.written_as = written_as;
        self.report.rewritten += 1;
        Ok(())
    }

    fn visit(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) -> Result<(), RekeyError> {
        while self.w.depth() > path.len() {
            self.w.end_bucket()?;
        }
        match (path.len(), value) {
            (_, None) => Ok(self.w.begin_bucket(key)?),
            (0, Some(_)) => Err(RekeyError::Damaged(format!("{}: top-level key {} is not a bucket", self.opts.snapshot.display(), bolt::show(key)))),
            (1, Some(v)) if path[0] == schema::KEY => self.key_entry(key, v),
            (_, Some(v)) => Ok(self.w.put(key, v)?),
        }
    }
}

impl<W: Write + Seek> bolt::Visitor for Copier<'_, W> {
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.visit(path, key, value) {
            self.error = Some(e);
        }
    }
}

/// True when the selection `s` covers `gr`.
fn selects(s: &GroupResource, gr: &GroupResource) -> bool {
    s == gr || (s.resource == "*" && (s.group == "*" || s.group == gr.group))
}

/// Refuse what cannot work before reading anything: KMS write providers, resources neither
/// configuration covers.
fn preflight(opts: &RekeyOptions<'_>) -> Result<(), RekeyError> {
    for gr in &opts.resources {
        if opts.from.transformer_for(gr).rule.is_none() && opts.to.transformer_for(gr).rule.is_none() {
            return Err(RekeyError::Usage(format!("resource {gr}: neither configuration covers it, so nothing would change")));
        }
    }
    for listed in opts.to.listed_resources() {
        let gr = GroupResource::parse(&listed);
        let t = opts.to.transformer_for(&gr);
        let selected = opts.resources.is_empty() || opts.resources.iter().any(|s| opts.to.transformer_for(s).rule == t.rule);
        if selected && t.write_label().starts_with("kms:") {
            return Err(RekeyError::Usage(format!(
                "the target configuration writes {listed} with KMS ({}): encrypting with KMS needs the KMS plugin, which an offline rekey does not have",
                t.write_label()
            )));
        }
    }
    Ok(())
}

/// Re-encrypt `opts.snapshot` into `opts.output`.
pub fn rekey(opts: &RekeyOptions<'_>) -> Result<RekeyReport, RekeyError> {
    preflight(opts)?;
    // Refuses an existing output before the input is opened.
    let mut new = NewFile::create(&opts.output).map_err(|e| published(&opts.output, e))?;
    let db = bolt::Db::open(&opts.snapshot)?;
    let file = new.file().try_clone().map_err(io(new.path()))?;
    let partial = new.path().to_path_buf();
    // A write that failed (a full filesystem) names the output being written.
    let report = write(opts, &db, file, &partial).map_err(|e| match e {
        RekeyError::Write(WriteError::Io(source)) => io(&opts.output)(source),
        e => e,
    })?;
    new.publish().map_err(|e| published(&opts.output, e))?;
    Ok(report)
}

fn published(output: &Path, e: std::io::Error) -> RekeyError {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        RekeyError::Exists(output.to_path_buf())
    } else {
        io(output)(e)
    }
}

fn write(opts: &RekeyOptions<'_>, db: &bolt::Db, file: File, partial: &Path) -> Result<RekeyReport, RekeyError> {
    let wopts = WriterOptions { page_size: db.page_size(), freelist: bolt::FreelistMode::EmptyPage, txid: db.meta().txid.max(2) };
    let report = RekeyReport { warnings: db.warnings(), ..empty(&opts.output) };
    let mut copier = Copier { w: Writer::new(BufWriter::with_capacity(8 << 20, file), wopts)?, opts, routes: HashMap::new(), error: None, report };
    // One pass over the input, its sha256 trailer checked alongside.
    let has_trailer = trailer::has_trailer(db.file_len());
    let (hash, walk) = std::thread::scope(|s| {
        let hasher = has_trailer.then(|| s.spawn(|| trailer::check(&opts.snapshot, |_| {})));
        let walk = bolt::walk(db, &mut copier);
        (hasher.map(|h| h.join().expect("hash thread")), walk)
    });
    if let Some(e) = copier.error.take() {
        return Err(e);
    }
    if let Some(first) = walk.faults.first() {
        return Err(RekeyError::Damaged(format!("{}: snapshot is damaged: {} faults; first: {first}", opts.snapshot.display(), walk.fault_count)));
    }
    match hash.transpose() {
        Ok(Some(Trailer::Mismatch { expected, actual })) => {
            return Err(RekeyError::Damaged(format!("{}: sha256 mismatch: the trailer says {expected}, the data hashes to {actual}", opts.snapshot.display())));
        }
        Ok(_) => {}
        Err(e) => return Err(RekeyError::Damaged(format!("{}: {e}", opts.snapshot.display()))),
    }
    let mut report = std::mem::replace(&mut copier.report, empty(&opts.output));
    report.input_hash_checked = has_trailer;
    if !has_trailer {
        report.warnings.push("the input has no sha256 trailer (a raw db file), so its integrity rests on the structural check; the output has one".into());
    }
    let (out, stats) = copier.w.finish()?;
    let mut file = out.into_inner().map_err(|e| io(partial)(e.into_error()))?;
    // The trailer: sha256 of the bbolt bytes, as `snapshot save` writes it.
    file.seek(SeekFrom::Start(0)).map_err(io(partial))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = stats.bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n]).map_err(io(partial))?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    let digest: [u8; 32] = h.finalize().into();
    file.write_all(&digest).map_err(io(partial))?;
    report.bytes = stats.bytes + trailer::TRAILER_LEN;
    report.sha256 = hex::encode(digest);
    Ok(report)
}

fn empty(output: &Path) -> RekeyReport {
    RekeyReport {
        output: output.to_path_buf(),
        revision: 0,
        key_entries: 0,
        rewritten: 0,
        skipped_undecryptable: 0,
        resources: BTreeMap::new(),
        skipped: Vec::new(),
        bytes: 0,
        sha256: String::new(),
        input_hash_checked: false,
        warnings: Vec::new(),
    }
}
