//! Opening a repository: config, keys, index; reading and writing its objects.
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::crypto::{self, Argon2Params, MasterKey, Secret, WrappedKey};
use crate::error::{Error, Result};
use crate::format::{self, BlobId, BlobType, ChunkerParams, Config, IndexPack, Manifest, PackEntry};
use crate::location::Location;

/// The secrets given on the command line.
#[derive(Debug, Default)]
pub struct Unlock {
    pub data: Option<Secret>,
    pub bundle: Option<Secret>,
}

/// The zstd level of new repositories: -1, zstd's first fast level, which leaves literals
/// without entropy coding. Measured on the 1.26 GB bench snapshot cut into 4 KiB chunks, against
/// level 1: 2.5 times the compression speed and 6 times the decompression speed on one core,
/// for 25% more bytes stored (895 against 713 MB). Every frame is a standard zstd frame, so
/// readers do not care which level wrote it.
pub const DEFAULT_COMPRESSION: i32 = -1;

/// Settings for `repo init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u64,
    pub compression: i32,
    pub argon2: Argon2Params,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { chunker: ChunkerParams::default(), pack_size: 16 << 20, compression: DEFAULT_COMPRESSION, argon2: Argon2Params::default() }
    }
}

/// Where a blob is.
#[derive(Debug, Clone, Copy)]
pub struct BlobLoc {
    pub pack: BlobId,
    pub entry: PackEntry,
}

/// One cluster's index objects merged: blob id → location (first seen wins), and the index
/// objects' names. Its packs live under `clusters/<cluster>/data/`.
#[derive(Debug, Default)]
pub struct Index {
    pub cluster: String,
    /// A version-1 index: packs under the top-level `data/` (`repo upgrade` only).
    pub legacy: bool,
    /// Keyed by ids that are keyed BLAKE3 hashes (random to whoever lacks the key), so a fast
    /// non-cryptographic hasher is safe; SipHash made a third of a large restore's planning.
    pub blobs: rustc_hash::FxHashMap<BlobId, BlobLoc>,
    pub files: Vec<String>,
    pub packs: rustc_hash::FxHashMap<BlobId, Vec<PackEntry>>,
}

impl Index {
    pub fn new(cluster: &str) -> Index {
        Index { cluster: cluster.to_string(), ..Default::default() }
    }

    /// Where a pack of this index is stored.
    pub fn pack_path(&self, pack: &BlobId) -> ObjPath {
        if self.legacy {
            format::v1::pack_path(&hex::encode(pack))
        } else {
            format::pack_path(&self.cluster, &hex::encode(pack))
        }
    }

    /// Add a pack's entries (a blob already known keeps its first place); the entries are
    /// kept, not copied.
    pub fn add(&mut self, p: IndexPack) {
        for e in &p.entries {
            self.blobs.entry(e.id).or_insert(BlobLoc { pack: p.pack, entry: *e });
        }
        self.packs.entry(p.pack).or_insert(p.entries);
    }
}

/// Which configs [`Repository::open_as`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The current version only.
    Normal,
    /// The current version or version 1 (`repo upgrade`).
    Upgrade,
}

/// An open repository.
pub struct Repository {
    pub location: Location,
    pub config: Config,
    /// How long an operation waits for a conflicting lock (`--retry-lock`).
    pub lock_retry: std::time::Duration,
    data: MasterKey,
    bundle: Option<MasterKey>,
    bundle_error: Option<String>,
    /// Whether the repository holds any wrapping of a bundle key.
    bundle_exists: bool,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository").field("location", &self.location).field("id", &self.config.id).finish()
    }
}

pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error {
    let what = what.into();
    move |e| Error::store(what, e)
}

/// `repo init`: write the keys, then the config (whose presence marks the repository).
pub async fn init(location: Location, data: &Secret, bundle: Option<&Secret>, opts: &InitOptions) -> Result<Repository> {
    let store = location.store.clone();
    match store.head(&ObjPath::from("config")).await {
        Ok(_) => return Err(Error::Usage(format!("{}: a repository already exists here; nothing was changed", location.url))),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(Error::store(format!("read {}/config", location.url), e)),
    }
    let existing: Vec<ObjectMeta> = store.list(Some(&ObjPath::from("keys"))).try_collect().await.map_err(store_err("list keys/"))?;
    if !existing.is_empty() {
        return Err(Error::Usage(format!(
            "{}: keys/ already holds {} object(s) from an earlier, unfinished `repo init`; remove them (or use another URL) before initialising",
            location.url,
            existing.len()
        )));
    }
    let data_key = MasterKey::generate();
    let bundle_key = MasterKey::generate();
    put_key(&store, &data_key, "data", data, opts.argon2).await?;
    if let Some(b) = bundle {
        put_key(&store, &bundle_key, "bundle", b, opts.argon2).await?;
    }
    let config = Config {
        format: format::FORMAT.into(),
        version: format::VERSION,
        id: format::random_name(),
        created: crate::now_rfc3339(),
        chunker: opts.chunker,
        pack_size: opts.pack_size,
        compression: opts.compression,
    };
    let body = serde_json::to_vec_pretty(&config).expect("serializable");
    let put = store.put_opts(&ObjPath::from("config"), PutPayload::from(body.clone()), PutOptions { mode: PutMode::Create, ..Default::default() }).await;
    match put {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            return Err(Error::Usage(format!("{}: another `repo init` created a repository here first", location.url)))
        }
        // Servers without conditional writes: we checked above.
        Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
            store.put(&ObjPath::from("config"), PutPayload::from(body)).await.map_err(store_err("write config"))?;
        }
        Err(e) => return Err(Error::store("write config", e)),
    }
    Ok(Repository {
        location,
        config,
        lock_retry: std::time::Duration::ZERO,
        data: data_key,
        bundle: bundle.map(|_| bundle_key),
        bundle_error: None,
        bundle_exists: bundle.is_some(),
    })
}

async fn put_key(store: &Arc<dyn ObjectStore>, key: &MasterKey, purpose: &str, secret: &Secret, argon: Argon2Params) -> Result<String> {
    let w = crypto::wrap(key, purpose, secret, argon)?;
    let name = format!("keys/{purpose}-{}", format::random_name());
    let body = serde_json::to_vec_pretty(&w).expect("serializable");
    store.put(&ObjPath::from(name.as_str()), PutPayload::from(body)).await.map_err(store_err(format!("write {name}")))?;
    Ok(name)
}

impl Repository {
    /// Open an existing repository with the secrets given.
    pub async fn open(location: Location, unlock: &Unlock) -> Result<Repository> {
        Self::open_as(location, unlock, OpenMode::Normal).await
    }

    /// `OpenMode::Upgrade` also opens a version-1 repository (for `repo upgrade` only).
    pub async fn open_as(location: Location, unlock: &Unlock, mode: OpenMode) -> Result<Repository> {
        let store = location.store.clone();
        let cfg = match store.get(&ObjPath::from("config")).await {
            Ok(r) => r.bytes().await.map_err(store_err("read config"))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Missing(format!(
                    "{}: no repository here (no config object); create one with `quorum repo init --repo {} --password-file FILE`",
                    location.url, location.url
                )))
            }
            Err(e) => return Err(Error::store(format!("read {}/config", location.url), e)),
        };
        let config: Config = serde_json::from_slice(&cfg).map_err(|e| Error::Damaged(format!("config: {e}")))?;
        let readable = config.version == format::VERSION || config.version == format::VERSION_2;
        if config.format != format::FORMAT || !(readable || (config.version == format::VERSION_1 && mode == OpenMode::Upgrade)) {
            if config.format == format::FORMAT && config.version == format::VERSION_1 {
                return Err(Error::Format(format!(
                    "{}: this repository has the version-1 layout (every cluster's objects in one namespace); upgrade it once with `quorum repo upgrade` (it can be interrupted and run again; version-1 quorum binaries cannot read it afterwards)",
                    location.url
                )));
            }
            return Err(Error::Format(format!(
                "{}: repository format {} v{} is not one this quorum reads ({} v{})",
                location.url,
                config.format,
                config.version,
                format::FORMAT,
                format::VERSION
            )));
        }
        let c = &config.chunker;
        if config.pack_size < (1 << 20)
            || config.pack_size > (256 << 20)
            || c.pages > 64
            || c.min < 64
            || c.min > c.avg
            || c.avg > c.max
            || c.max > (4 << 20)
            || !(-7..=22).contains(&config.compression)
        {
            return Err(Error::Damaged(format!(
                "{}: config holds settings out of range (pack size {}, chunker {:?}, compression {})",
                location.url, config.pack_size, c, config.compression
            )));
        }
        let keys = read_keys(&store).await?;
        let data_secret = unlock
            .data
            .as_ref()
            .ok_or_else(|| Error::SecretNeeded { purpose: "data", what: "the repository is encrypted and no passphrase or key file was given".into() })?;
        let data = unwrap_any(&keys, "data", data_secret)?;
        // A bundle secret that does not open is reported when the bundle key is needed, not
        // here: restores need only the data key.
        let (bundle, bundle_error) = match &unlock.bundle {
            Some(s) => match unwrap_any(&keys, "bundle", s) {
                Ok(k) => (Some(k), None),
                Err(e) => (None, Some(e.to_string())),
            },
            None => (None, None),
        };
        let bundle_exists = keys.iter().any(|(_, w)| w.purpose == "bundle");
        Ok(Repository { location, config, lock_retry: std::time::Duration::ZERO, data, bundle, bundle_error, bundle_exists })
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.location.store
    }

    pub fn data_key(&self) -> &MasterKey {
        &self.data
    }

    pub fn key_for(&self, t: BlobType) -> Result<&MasterKey> {
        if t.uses_bundle_key() {
            self.bundle.as_ref().ok_or_else(|| match &self.bundle_error {
                // Both steps at once: making the key, then giving it.
                _ if !self.bundle_exists => Error::SecretNeeded {
                    purpose: "new bundle",
                    what: format!("this needs the bundle key, and the repository {} has none yet", self.location.url),
                },
                Some(e) => Error::Usage(format!("the bundle key: {e}")),
                None => Error::SecretNeeded { purpose: "bundle", what: "this needs the bundle key, and no bundle passphrase or key file was given".into() },
            })
        } else {
            Ok(&self.data)
        }
    }

    pub fn has_bundle_key(&self) -> bool {
        self.bundle.is_some()
    }

    /// `repo key add`: another wrapping of the data (or bundle) master key.
    pub async fn add_key(&self, purpose: &str, secret: &Secret, argon: Argon2Params) -> Result<String> {
        match purpose {
            "data" => put_key(self.store(), &self.data, "data", secret, argon).await,
            "bundle" => {
                let keys = read_keys(self.store()).await?;
                if keys.iter().any(|(_, w)| w.purpose == "bundle") {
                    let k = self.bundle.as_ref().ok_or_else(|| Error::SecretNeeded {
                        purpose: "bundle",
                        what: "the repository has a bundle key: adding another wrapping of it needs it unlocked".into(),
                    })?;
                    put_key(self.store(), k, "bundle", secret, argon).await
                } else {
                    put_key(self.store(), &MasterKey::generate(), "bundle", secret, argon).await
                }
            }
            other => Err(Error::Usage(format!("unknown key purpose {other}"))),
        }
    }

    /// Names and metadata of the wrapping keys.
    pub async fn list_keys(&self) -> Result<Vec<(String, WrappedKey)>> {
        read_keys(self.store()).await
    }

    /// Write an object under a name that is never reused. An existing object of that name has
    /// the same content (names are content hashes or fresh randomness), so it is left alone.
    pub async fn put_new(&self, path: &ObjPath, body: impl Into<PutPayload>) -> Result<()> {
        // A conditional create: a retried request whose first attempt landed finds the object
        // there (same content), and a write-once bucket never sees an overwrite.
        let body: PutPayload = body.into();
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store().put_opts(path, body.clone(), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
                self.store().put(path, body).await.map(|_| ()).map_err(|e| Error::store(format!("write {path}"), e))
            }
            Err(e) => Err(Error::store(format!("write {path}"), e)),
        }
    }

    pub async fn get(&self, path: &ObjPath) -> Result<Bytes> {
        let r = self.store().get(path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Missing(format!("{path}: object is missing")),
            e => Error::store(format!("read {path}"), e),
        })?;
        r.bytes().await.map_err(store_err(format!("read {path}")))
    }

    /// Delete; a refusal (object lock) becomes [`Error::Refused`].
    pub async fn delete(&self, path: &ObjPath) -> Result<()> {
        match self.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(
                e @ (object_store::Error::PermissionDenied { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }),
            ) => Err(Error::Refused(format!("delete {path}: {e}"))),
            Err(e) => Err(Error::store(format!("delete {path}"), e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let p = ObjPath::from(prefix);
        self.store().list(Some(&p)).try_collect().await.map_err(store_err(format!("list {prefix}/")))
    }

    /// Load the index objects of `cluster` (its packs only); the first that does not read
    /// (damaged) fails the load.
    pub async fn load_index(&self, cluster: &str) -> Result<Index> {
        let mut damage = None;
        let idx = self
            .load_index_noting(cluster, &mut |e| {
                damage.get_or_insert(e);
            })
            .await?;
        damage.map_or(Ok(idx), Err)
    }

    /// As [`Repository::load_index`], handing each index object that does not read to `note`
    /// and merging the others (`repo check` reports the damage and checks what remains).
    pub(crate) async fn load_index_noting(&self, cluster: &str, note: &mut dyn FnMut(Error)) -> Result<Index> {
        let mut idx = Index::new(cluster);
        let objects = self.read_index_objects(&format::cluster_path(cluster, "index")).await?;
        // Sized once: growing the maps step by step rehashes them and maps fresh memory each
        // time (a fifth of a restore's page faults for a 1.26 GB snapshot).
        let (packs, blobs) = objects.iter().flat_map(|(_, p)| p.iter().flatten()).fold((0, 0), |(p, b), pack| (p + 1, b + pack.entries.len()));
        idx.packs.reserve(packs);
        idx.blobs.reserve(blobs);
        for (name, packs) in objects {
            match packs {
                Ok(packs) => {
                    for p in packs {
                        idx.add(p);
                    }
                    idx.files.push(name);
                }
                Err(e) => note(e),
            }
        }
        idx.files.sort();
        Ok(idx)
    }

    /// Every index object under `dir`, by name, with its packs or the reason it does not read
    /// (name mismatch, authentication, format: damage); a store error fails the call.
    pub(crate) async fn read_index_objects(&self, dir: &str) -> Result<Vec<(String, Result<Vec<IndexPack>>)>> {
        let metas = self.list(dir).await?;
        let key = &self.data;
        futures::stream::iter(metas)
            .map(|m| async move {
                let name = m.location.filename().unwrap_or_default().to_string();
                let bytes = self.get(&m.location).await?;
                let path = format!("{dir}/{name}");
                let packs = if format::content_name(&bytes) != name {
                    Err(Error::Damaged(format!("{path}: content does not match its name (damaged)")))
                } else {
                    format::decode_index(key, &bytes, &path)
                };
                Ok::<_, Error>((name, packs))
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    /// Write an index object for `packs` of `cluster`; returns its name.
    pub async fn write_index(&self, cluster: &str, packs: &[IndexPack]) -> Result<String> {
        let body = format::encode_index(&self.data, packs);
        let name = format::content_name(&body);
        self.put_new(&ObjPath::from(format!("{}/{name}", format::cluster_path(cluster, "index"))), Bytes::from(body)).await?;
        Ok(name)
    }

    /// The clusters that have objects in the repository, sorted. One LIST request per 1,000
    /// clusters (a delimiter listing of `clusters/`).
    pub async fn clusters(&self) -> Result<Vec<String>> {
        let r = self.store().list_with_delimiter(Some(&ObjPath::from(format::CLUSTERS))).await.map_err(store_err(format!("list {}/", format::CLUSTERS)))?;
        let mut out: Vec<String> = r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        out.sort();
        Ok(out)
    }

    /// The ids of `cluster`'s backups (names under `clusters/<C>/snapshots/`), unsorted.
    pub async fn backup_ids(&self, cluster: &str) -> Result<Vec<String>> {
        format::check_cluster_name(cluster)?;
        let metas = self.list(&format::cluster_path(cluster, "snapshots")).await?;
        Ok(metas.iter().filter_map(|m| m.location.filename().map(str::to_string)).collect())
    }

    /// `cluster`'s manifests, newest first.
    pub async fn manifests(&self, cluster: &str) -> Result<Vec<(String, Manifest)>> {
        self.manifests_of(cluster, false).await
    }

    /// As [`Repository::manifests`], skipping (with a warning on stderr) manifests that do
    /// not authenticate, so `latest` still resolves past one damaged object.
    pub async fn manifests_tolerant(&self, cluster: &str) -> Result<Vec<(String, Manifest)>> {
        self.manifests_of(cluster, true).await
    }

    async fn manifests_of(&self, cluster: &str, tolerant: bool) -> Result<Vec<(String, Manifest)>> {
        let ids = self.backup_ids(cluster).await?;
        let read: Vec<(String, Result<Manifest>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let m = self.read_manifest(cluster, &id).await;
                (id, m)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut out = Vec::new();
        for (id, m) in read {
            match m {
                Ok(m) => out.push((id, m)),
                Err(Error::Damaged(why)) if tolerant => eprintln!("Warning: skipping a damaged backup manifest: {why}"),
                // Forgotten meanwhile.
                Err(Error::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Newest first. Times have second resolution: within one second the higher revision
        // is the newer backup (else `latest` could name the older of two quick backups).
        out.sort_by(|a, b| b.1.time.cmp(&a.1.time).then_with(|| b.1.snapshot.revision.cmp(&a.1.snapshot.revision)).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    pub async fn read_manifest(&self, cluster: &str, id: &str) -> Result<Manifest> {
        let path = format::manifest_path(cluster, id);
        let bytes = self.get(&path).await?;
        if format::content_name(&bytes) != id {
            return Err(Error::Damaged(format!("{path}: content does not match its name (damaged)")));
        }
        let m: Manifest = format::open_json(&self.data, &bytes, b"manifest", path.as_ref())?;
        if m.cluster != cluster {
            return Err(Error::Damaged(format!("{path}: the manifest is of cluster {}, stored under {cluster}", m.cluster)));
        }
        Ok(m)
    }

    /// The cluster to use when none was named: the only one, or an error listing them.
    pub async fn only_cluster(&self, what: &str) -> Result<String> {
        // Clusters with at least one backup (a cluster whose backups were all forgotten, or
        // an empty directory a local repository keeps, does not count); two are enough.
        let all = self.clusters().await?;
        let mut with_backups = Vec::new();
        for c in &all {
            if !self.backup_ids(c).await?.is_empty() {
                with_backups.push(c);
                if with_backups.len() > 1 {
                    break;
                }
            }
        }
        match with_backups[..] {
            [] => Err(Error::Missing("the repository holds no backup yet".into())),
            [only] => Ok(only.clone()),
            _ => Err(Error::Usage(format!("the repository holds {} clusters ({}): name the cluster for {what}", all.len(), list_names(&all)))),
        }
    }

    /// Fail unless `cluster` has any object in the repository (backups, packs, segments):
    /// one delimiter LIST of its own prefix. The error names the known clusters.
    pub async fn cluster_exists(&self, cluster: &str) -> Result<()> {
        format::check_cluster_name(cluster)?;
        let prefix = ObjPath::from(format!("{}/{cluster}", format::CLUSTERS));
        let r = self.store().list_with_delimiter(Some(&prefix)).await.map_err(store_err(format!("list {prefix}/")))?;
        let has_data = r.common_prefixes.iter().any(|p| p.filename() != Some("locks")) || !r.objects.is_empty();
        if has_data {
            return Ok(());
        }
        Err(unknown_cluster(cluster, &self.clusters().await?))
    }

    /// Fail unless `cluster` has backups in the repository, naming the known clusters.
    pub async fn known_cluster(&self, cluster: &str) -> Result<()> {
        format::check_cluster_name(cluster)?;
        if !self.backup_ids(cluster).await?.is_empty() {
            return Ok(());
        }
        let all = self.clusters().await?;
        if all.iter().any(|c| c == cluster) {
            return Err(Error::Missing(format!("cluster {cluster} has no backup in the repository (its backups were all forgotten)")));
        }
        Err(unknown_cluster(cluster, &all))
    }

    /// Find a backup by id or unique id prefix, or `latest` (of `cluster`; without one, of
    /// the repository's only cluster).
    pub async fn resolve(&self, id: &str, cluster: Option<&str>) -> Result<(String, Manifest)> {
        if id == "latest" {
            let c = match cluster {
                Some(c) => c.to_string(),
                None => self.only_cluster("latest").await?,
            };
            format::check_cluster_name(&c)?;
            if let Some(newest) = self.manifests_tolerant(&c).await?.into_iter().next() {
                return Ok(newest);
            }
            self.known_cluster(&c).await?;
            return Err(Error::Missing(format!("cluster {c} has no readable backup")));
        }
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!("{id:?} is not a backup id: give `latest` or the hex id (or a unique prefix) that `quorum backups list` shows")));
        }
        let clusters = match cluster {
            Some(c) => {
                format::check_cluster_name(c)?;
                vec![c.to_string()]
            }
            None => self.clusters().await?,
        };
        // Only the manifests whose names match are read: one damaged manifest elsewhere must
        // not stand in the way.
        let mut hits = Vec::new();
        for c in &clusters {
            for n in self.backup_ids(c).await?.into_iter().filter(|n| n.starts_with(id)) {
                hits.push((c.clone(), n));
            }
        }
        if let (0, Some(c)) = (hits.len(), cluster) {
            self.known_cluster(c).await?;
        }
        match hits.len() {
            0 => Err(Error::Missing(format!(
                "no backup with id {id}{}; `quorum backups list` shows them",
                cluster.map(|c| format!(" in cluster {c}")).unwrap_or_default()
            ))),
            1 => {
                let (c, n) = hits.into_iter().next().unwrap();
                let m = self.read_manifest(&c, &n).await?;
                Ok((n, m))
            }
            n => Err(Error::Usage(format!("backup id {id} is ambiguous ({n} match); give more characters"))),
        }
    }

    /// Take a lock on `cluster` (shared, or exclusive), waiting up to `lock_retry`.
    pub async fn lock(&self, cluster: &str, exclusive: bool, operation: &str) -> Result<crate::lock::Lock> {
        format::check_cluster_name(cluster)?;
        crate::lock::acquire(self, crate::lock::Scope::Cluster(cluster), exclusive, operation, self.lock_retry).await
    }

    /// Read and authenticate one blob of `index` (one ranged read).
    pub async fn read_blob(&self, index: &Index, loc: &BlobLoc) -> Result<Vec<u8>> {
        let pack = hex::encode(loc.pack);
        let path = index.pack_path(&loc.pack);
        let range = loc.entry.offset as u64..loc.entry.offset as u64 + loc.entry.length as u64;
        let sealed = self.store().get_range(&path, range).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Damaged(format!("pack {pack} is missing (blob {})", hex::encode(loc.entry.id))),
            e => Error::store(format!("read {path}"), e),
        })?;
        self.open_blob(&loc.entry, &sealed, &pack)
    }

    /// Decrypt, decompress and check the id of one sealed blob.
    pub fn open_blob(&self, e: &PackEntry, sealed: &[u8], pack: &str) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        self.open_blob_into(e, sealed, pack, &mut plain)?;
        let key = self.key_for(e.blob_type)?;
        if key.blob_id(&plain) != e.id {
            return Err(Error::Damaged(format!("blob {} in pack {pack}: content does not match its id", hex::encode(e.id))));
        }
        Ok(plain)
    }

    /// [`Repository::open_blob_into`], decrypting `sealed` where it lies (no copy of it).
    pub fn open_blob_in_place(&self, e: &PackEntry, sealed: &mut [u8], pack: &str, out: &mut Vec<u8>) -> Result<()> {
        let key = self.key_for(e.blob_type)?;
        let damaged = |what: String| Error::Damaged(format!("blob {} in pack {pack}: {what}", hex::encode(e.id)));
        let framed =
            key.open_in_place(sealed, &format::blob_aad(e.blob_type, &e.id)).ok_or_else(|| damaged("does not authenticate (tampered or damaged)".into()))?;
        format::unframe_into(framed, e.plain_len as usize, out).ok_or_else(|| damaged(format!("does not decompress to {} bytes", e.plain_len)))
    }

    /// [`Repository::open_blob`] without the id check (the AEAD already vouches for it: the id
    /// is its associated data), for the bulk restore path; appends the plaintext to `out`
    /// (decompressed in place); on an error `out` is as it was.
    pub fn open_blob_into(&self, e: &PackEntry, sealed: &[u8], pack: &str, out: &mut Vec<u8>) -> Result<()> {
        thread_local! {
            // The framed plaintext, decrypted into one buffer per thread: a fresh allocation
            // per 8 KiB blob costs more than the decryption.
            static FRAMED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = self.key_for(e.blob_type)?;
        let damaged = |what: String| Error::Damaged(format!("blob {} in pack {pack}: {what}", hex::encode(e.id)));
        FRAMED.with(|framed| {
            let mut framed = framed.borrow_mut();
            framed.clear();
            let r = if !key.open_into(sealed, &format::blob_aad(e.blob_type, &e.id), &mut framed) {
                Err(damaged("does not authenticate (tampered or damaged)".into()))
            } else {
                format::unframe_into(&framed, e.plain_len as usize, out).ok_or_else(|| damaged(format!("does not decompress to {} bytes", e.plain_len)))
            };
            // A rare large blob does not stay allocated.
            if framed.capacity() > 1 << 20 {
                *framed = Vec::new();
            }
            r
        })
    }

    /// Whether backups may store chunk list patches (version 3; a version-2 repository may
    /// still be shared with version-2 binaries, which would misread them).
    pub fn patches_allowed(&self) -> bool {
        self.config.version >= format::VERSION
    }

    /// The chunk ids of a manifest's snapshot, in order: its whole lists with its patches
    /// applied ([`crate::chunk_list`]).
    pub async fn chunk_ids(&self, m: &Manifest, index: &Index) -> Result<Vec<BlobId>> {
        // Several at once, in order: on a remote store each is a round trip (a 1 GiB snapshot
        // has ten to twenty lists).
        let n = m.chunk_lists.len();
        let names: Vec<(usize, String)> = m.list_blobs().cloned().enumerate().collect();
        let blobs: Vec<(usize, Vec<u8>)> = futures::stream::iter(names.into_iter().map(|(i, l)| async move {
            let id = parse_id(&l)?;
            let what = if i < n { "chunk list" } else { "chunk list patch" };
            let loc = index.blobs.get(&id).ok_or_else(|| Error::Damaged(format!("{what} blob {l} is not in any index")))?;
            Ok::<_, Error>((i, self.read_blob(index, loc).await?))
        }))
        .buffered(8)
        .try_collect()
        .await?;
        let mut r = crate::chunk_list::Resolver::with_capacity(m.chunks as usize);
        for (i, b) in &blobs {
            if *i < n {
                r.whole(&m.chunk_lists[*i], b)?;
            } else {
                r.patch(&m.chunk_patches[*i - n], b)?;
            }
        }
        r.finish(m.chunks)
    }

    /// The chunk ids at `positions` only: the whole list blobs that hold them and every
    /// patch, not the whole list (a reader of a few records of a large snapshot); with the
    /// sealed bytes read.
    pub async fn chunk_ids_at(&self, m: &Manifest, index: &Index, positions: &std::collections::BTreeSet<usize>) -> Result<(BTreeMap<usize, BlobId>, u64)> {
        use crate::chunk_list::LIST_IDS;
        let lists: std::collections::BTreeSet<usize> = positions.iter().map(|p| p / LIST_IDS).filter(|b| *b < m.chunk_lists.len()).collect();
        let mut read = 0u64;
        let mut got: BTreeMap<usize, Option<BlobId>> = positions.iter().map(|p| (*p, None)).collect();
        let names: Vec<(Option<usize>, String)> =
            lists.iter().map(|b| (Some(*b), m.chunk_lists[*b].clone())).chain(m.chunk_patches.iter().map(|p| (None, p.clone()))).collect();
        let blobs: Vec<(Option<usize>, String, Vec<u8>, u64)> = futures::stream::iter(names.into_iter().map(|(b, l)| async move {
            let loc = index.blobs.get(&parse_id(&l)?).ok_or_else(|| Error::Damaged(format!("chunk list blob {l} is not in any index")))?;
            Ok::<_, Error>((b, l.clone(), self.read_blob(index, loc).await?, loc.entry.length as u64))
        }))
        .buffered(8)
        .try_collect()
        .await?;
        for (list, name, b, sealed) in &blobs {
            read += sealed;
            match list {
                Some(k) => {
                    let ids = crate::chunk_list::parse_whole(name, b)?;
                    for (p, id) in got.range_mut(k * LIST_IDS..(k + 1) * LIST_IDS) {
                        *id = ids.get(p - k * LIST_IDS).copied();
                    }
                }
                None => {
                    let (count, entries) = crate::chunk_list::parse_patch(name, b)?;
                    for (_, id) in got.range_mut(count as usize..) {
                        *id = None;
                    }
                    for (pos, id) in entries {
                        if let Some(slot) = got.get_mut(&(pos as usize)) {
                            *slot = Some(id);
                        }
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for (p, id) in got {
            if p as u64 >= m.chunks {
                return Err(Error::Damaged(format!("chunk {p} is past the snapshot's {} chunks", m.chunks)));
            }
            out.insert(p, id.ok_or_else(|| Error::Damaged(format!("the chunk lists give no id for chunk {p}")))?);
        }
        Ok((out, read))
    }

    pub fn seal_json<T: serde::Serialize>(&self, v: &T, aad: &[u8]) -> Vec<u8> {
        format::seal_json(&self.data, v, aad)
    }

    pub fn open_json<T: for<'de> serde::Deserialize<'de>>(&self, b: &[u8], aad: &[u8], what: &str) -> Result<T> {
        format::open_json(&self.data, b, aad, what)
    }
}

pub fn parse_id(s: &str) -> Result<BlobId> {
    let v = hex::decode(s).map_err(|_| Error::Damaged(format!("bad blob id {s}")))?;
    v.try_into().map_err(|_| Error::Damaged(format!("bad blob id {s}")))
}

async fn read_keys(store: &Arc<dyn ObjectStore>) -> Result<Vec<(String, WrappedKey)>> {
    let metas: Vec<ObjectMeta> = store.list(Some(&ObjPath::from("keys"))).try_collect().await.map_err(store_err("list keys/"))?;
    let mut out = Vec::new();
    for m in metas {
        let b = store.get(&m.location).await.map_err(store_err(format!("read {}", m.location)))?.bytes().await.map_err(store_err("read key"))?;
        match serde_json::from_slice::<WrappedKey>(&b) {
            Ok(w) => out.push((m.location.to_string(), w)),
            // A stray object under keys/ must not lock everyone out.
            Err(e) => eprintln!("Warning: ignoring {}: not a key ({e})", m.location),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn unwrap_any(keys: &[(String, WrappedKey)], purpose: &str, secret: &Secret) -> Result<MasterKey> {
    let candidates: Vec<_> = keys.iter().filter(|(_, w)| w.purpose == purpose).collect();
    if candidates.is_empty() {
        return Err(Error::Missing(format!(
            "the repository has no {purpose} key; add one with `quorum repo key add{}`",
            if purpose == "bundle" { " --bundle" } else { "" }
        )));
    }
    for (_, w) in &candidates {
        // A wrapping that cannot be evaluated (bad parameters) is skipped, not fatal.
        if let Ok(Some(k)) = crypto::unwrap(w, secret) {
            return Ok(k);
        }
    }
    Err(Error::WrongSecret {
        kind: match secret {
            Secret::Passphrase(_) => "passphrase",
            Secret::KeyFile(_) => "key file",
        },
        purpose: purpose.into(),
        count: candidates.len(),
    })
}

/// "unknown cluster C", naming the clusters `all` the repository holds.
fn unknown_cluster(cluster: &str, all: &[String]) -> Error {
    Error::Missing(if all.is_empty() {
        format!("unknown cluster {cluster}: the repository holds no backup yet")
    } else {
        format!("unknown cluster {cluster}: the repository holds {}", list_names(all))
    })
}

fn list_names(all: &[String]) -> String {
    if all.len() <= 20 {
        all.join(", ")
    } else {
        format!("{}, … ({} more; `quorum backups list` shows them)", all[..20].join(", "), all.len() - 20)
    }
}
