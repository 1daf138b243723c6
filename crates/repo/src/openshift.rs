//! OpenShift's own backup layout, in and out of the repository.
//!
//! `cluster-backup.sh` (openshift/cluster-etcd-operator, `bindata/etcd/cluster-backup.sh`)
//! writes into a directory two files named after one local time stamp
//! (`date "+%F_%H%M%S"`, e.g. `2026-12-04_031500`):
//! * `snapshot_<stamp>.db`: `etcdctl snapshot save` of the local member;
//! * `static_kuberesources_<stamp>.tar.gz`: `tar -cpzf` of the newest revision directory of
//!   each of `kube-apiserver-pod`, `kube-controller-manager-pod`, `kube-scheduler-pod` and
//!   `etcd-pod` under `/etc/kubernetes/static-pod-resources`, with member paths relative to
//!   `/etc/kubernetes` (`static-pod-resources/kube-apiserver-pod-7/...`). "Newest" is the last
//!   line of `ls -trd DIR/NAME-[0-9]*`: the directory modified last, not the highest number.
//!
//! `cluster-restore.sh DIR` takes the last `static_kuberesources*.tar.gz` and the last
//! `snapshot*.db` of `ls -v` (version order) in DIR, so an exported directory holds exactly
//! one pair.
//!
//! When encryption at rest is on, the kube-apiserver's EncryptionConfiguration is inside the
//! tarball at `static-pod-resources/kube-apiserver-pod-N/secrets/encryption-config/
//! encryption-config` (the path the kube-apiserver operator gives `--encryption-provider-config`),
//! which is why the tarball's files are kept under the repository's bundle key.
//!
//! The tarball is read and written with the `tar` and `flate2` crates; this module only knows
//! the layout. On import every member keeps its path, type, mode, owner (ids and names),
//! modification time and link target, so the exported tarball lists (`tar tvzf`) as the
//! imported one did.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::backup::{BackupOptions, BackupReport, Progress};
use crate::error::{Error, Result};
use crate::format::{BlobType, Manifest};
use crate::repository::Repository;

/// The static pods whose newest resource directory `cluster-backup.sh` keeps, in its order.
pub const STATIC_PODS: [&str; 4] = ["kube-apiserver-pod", "kube-controller-manager-pod", "kube-scheduler-pod", "etcd-pod"];

/// Where the static resources live on a control-plane host, relative to its root.
pub const RESOURCES_DIR: &str = "etc/kubernetes/static-pod-resources";

/// The EncryptionConfiguration inside a kube-apiserver revision directory.
pub const ENCRYPTION_CONFIG: &str = "secrets/encryption-config/encryption-config";

/// One backup as `cluster-backup.sh` leaves it: a snapshot and a tarball of one stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPair {
    pub stamp: String,
    pub snapshot: PathBuf,
    pub tarball: PathBuf,
}

pub fn snapshot_name(stamp: &str) -> String {
    format!("snapshot_{stamp}.db")
}

pub fn tarball_name(stamp: &str) -> String {
    format!("static_kuberesources_{stamp}.tar.gz")
}

/// The stamp's time. The script writes the host's local time without a zone; control-plane
/// hosts (RHCOS) keep UTC, so it is read as UTC.
pub fn stamp_time(stamp: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d_%H%M%S").ok()?;
    // %H%M%S parses loosely; insist on the script's exact width.
    (stamp.len() == 17).then(|| t.and_utc())
}

/// The backups in a directory written by `cluster-backup.sh` (one per run into it), oldest
/// first. A snapshot without its tarball (or the reverse), or a name whose stamp is not the
/// script's, is refused: the pair is what a restore needs.
pub fn find_pairs(dir: &Path) -> Result<Vec<BackupPair>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut snaps = BTreeMap::new();
    let mut tars = BTreeMap::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let (map, stamp) = if let Some(s) = name.strip_prefix("snapshot_").and_then(|s| s.strip_suffix(".db")) {
            (&mut snaps, s)
        } else if let Some(s) = name.strip_prefix("static_kuberesources_").and_then(|s| s.strip_suffix(".tar.gz")) {
            (&mut tars, s)
        } else {
            continue;
        };
        if stamp_time(stamp).is_none() {
            return Err(Error::Usage(format!(
                "{}: not a name cluster-backup.sh gives (its stamp is date +%F_%H%M%S, e.g. snapshot_2026-12-04_031500.db)",
                e.path().display()
            )));
        }
        map.insert(stamp.to_string(), e.path());
    }
    if snaps.is_empty() && tars.is_empty() {
        return Err(Error::Usage(format!(
            "{}: holds no snapshot_<stamp>.db and static_kuberesources_<stamp>.tar.gz (the files cluster-backup.sh writes)",
            dir.display()
        )));
    }
    let mut pairs = Vec::new();
    for (stamp, snapshot) in &snaps {
        let Some(tarball) = tars.get(stamp) else {
            return Err(Error::Usage(format!(
                "{}: its static resources {} are missing from {}; both files of a backup are needed",
                snapshot.display(),
                tarball_name(stamp),
                dir.display()
            )));
        };
        pairs.push(BackupPair { stamp: stamp.clone(), snapshot: snapshot.clone(), tarball: tarball.clone() });
    }
    if let Some((stamp, tarball)) = tars.iter().find(|(s, _)| !snaps.contains_key(*s)) {
        return Err(Error::Usage(format!(
            "{}: its snapshot {} is missing from {}; both files of a backup are needed",
            tarball.display(),
            snapshot_name(stamp),
            dir.display()
        )));
    }
    Ok(pairs)
}

/// What a tar member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// One member of a static resources tarball, without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub path: String,
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    #[serde(default)]
    pub uname: String,
    #[serde(default)]
    pub gname: String,
    /// Seconds since the epoch.
    pub mtime: u64,
    /// The target of a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::BadInput(format!("{}: {what}; refused (a truncated or altered tarball cannot be restored from)", path.display()))
}

/// The largest member read: static resources are certificates, keys, configs and manifests.
pub const MAX_MEMBER: u64 = 64 << 20;

/// Read every member of `tarball` in order, giving `each` the member and its content (empty
/// for all but files). The gzip stream is read to its end, so its CRC and length are checked:
/// a truncated or altered tarball is an error naming the file, after `each` may have seen
/// members (callers keep what they build unpublished until this returns Ok).
pub fn read_tarball(tarball: &Path, mut each: impl FnMut(&Member, &[u8]) -> Result<()>) -> Result<usize> {
    let f = std::fs::File::open(tarball).map_err(|e| Error::io(tarball, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut n = 0;
    for entry in archive.entries().map_err(|e| damaged(tarball, e))? {
        let mut entry = entry.map_err(|e| damaged(tarball, e))?;
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            other => {
                return Err(damaged(
                    tarball,
                    format!("member {} is a {other:?}, which static resources never hold", String::from_utf8_lossy(&entry.path_bytes())),
                ))
            }
        };
        let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| damaged(tarball, "a member path is not UTF-8"))?;
        let link = match kind {
            Kind::Symlink | Kind::Hardlink => Some(
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| damaged(tarball, format!("link {path} has no target")))?,
            ),
            _ => None,
        };
        let m = Member {
            path,
            kind,
            mode: h.mode().map_err(|e| damaged(tarball, e))? & 0o7777,
            uid: h.uid().map_err(|e| damaged(tarball, e))?,
            gid: h.gid().map_err(|e| damaged(tarball, e))?,
            uname: h.username().ok().flatten().unwrap_or_default().to_string(),
            gname: h.groupname().ok().flatten().unwrap_or_default().to_string(),
            mtime: h.mtime().map_err(|e| damaged(tarball, e))?,
            link,
        };
        let size = entry.size();
        if size > MAX_MEMBER {
            return Err(damaged(tarball, format!("member {} claims {size} bytes, more than static resources ever hold ({MAX_MEMBER})", m.path)));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(|e| damaged(tarball, e))?;
        each(&m, &data)?;
        n += 1;
    }
    // The end-of-archive blocks come before the gzip trailer: read on to check it.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| damaged(tarball, e))?;
    if n == 0 {
        return Err(damaged(tarball, "no members"));
    }
    Ok(n)
}

/// The revision of each static pod a tarball holds (`static-pod-resources/kube-apiserver-pod-7/`
/// gives `kube-apiserver-pod` → 7), from its member paths.
pub fn static_pod_revisions<'a>(paths: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in paths {
        let Some(dir) = p.strip_prefix("static-pod-resources/").and_then(|r| r.split('/').next()) else { continue };
        for pod in STATIC_PODS {
            if let Some(n) = dir.strip_prefix(pod).and_then(|r| r.strip_prefix('-')).and_then(|r| r.parse::<u64>().ok()) {
                let e = out.entry(pod.to_string()).or_insert(n);
                *e = (*e).max(n);
            }
        }
    }
    out
}

/// The member path of the kube-apiserver's EncryptionConfiguration among `paths`, if any.
pub fn encryption_config_path<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    paths
        .into_iter()
        .filter(|p| {
            p.strip_prefix("static-pod-resources/kube-apiserver-pod-")
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(n, rest)| n.parse::<u64>().is_ok() && rest == ENCRYPTION_CONFIG)
        })
        .max_by_key(|p| p.strip_prefix("static-pod-resources/kube-apiserver-pod-").and_then(|r| r.split('/').next()).and_then(|n| n.parse::<u64>().ok()))
}

/// Writes a static resources tarball as `tar -cpzf` does (GNU headers, gzip), member by
/// member, in the order given.
pub struct TarballWriter<W: std::io::Write> {
    builder: tar::Builder<flate2::write::GzEncoder<W>>,
}

impl<W: std::io::Write> TarballWriter<W> {
    pub fn new(w: W) -> Self {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(w, flate2::Compression::default()));
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        TarballWriter { builder }
    }

    /// Append `m` with `data` (its content, empty for all but files).
    pub fn append(&mut self, m: &Member, data: &[u8]) -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(match m.kind {
            Kind::File => tar::EntryType::Regular,
            Kind::Dir => tar::EntryType::Directory,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::Hardlink => tar::EntryType::Link,
        });
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_username(&m.uname)?;
        h.set_groupname(&m.gname)?;
        h.set_mtime(m.mtime);
        match (&m.kind, &m.link) {
            (Kind::Symlink | Kind::Hardlink, Some(target)) => {
                h.set_size(0);
                self.builder.append_link(&mut h, &m.path, target)
            }
            (Kind::Symlink | Kind::Hardlink, None) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("link {} has no target", m.path))),
            (Kind::Dir, _) => {
                h.set_size(0);
                self.builder.append_data(&mut h, &m.path, std::io::empty())
            }
            (Kind::File, _) => {
                h.set_size(data.len() as u64);
                self.builder.append_data(&mut h, &m.path, data)
            }
        }
    }

    /// Write the end-of-archive blocks and the gzip trailer; returns the writer.
    pub fn finish(self) -> std::io::Result<W> {
        self.builder.into_inner()?.finish()
    }
}

/// The newest revision directory of each of [`STATIC_PODS`] under `resources`
/// (`/etc/kubernetes/static-pod-resources`), as cluster-backup.sh picks it:
/// `LATEST_RESOURCE=$(ls -trd "${CONFIG_FILE_DIR}"/static-pod-resources/${RESOURCE}-[0-9]* | tail -1)`
/// (`backup_latest_kube_static_resources`): among the names `<pod>-<digit>…`, the one modified
/// last (`ls -t` breaks a tie by name, and `-r` reverses both, so the last is the greatest name
/// among the newest). A pod with no revision directory is an error, as in the script. Returns
/// `(pod, directory name)` in the script's order.
pub fn latest_static_pod_dirs(resources: &Path) -> Result<Vec<(String, String)>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(resources).map_err(|e| Error::io(resources, e))? {
        let e = e.map_err(|e| Error::io(resources, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let mtime = e.metadata().and_then(|m| m.modified()).map_err(|err| Error::io(e.path(), err))?;
        entries.push((name, mtime));
    }
    let mut out = Vec::new();
    for pod in STATIC_PODS {
        let prefix = format!("{pod}-");
        let newest = entries
            .iter()
            .filter(|(n, _)| n.strip_prefix(&prefix).and_then(|r| r.chars().next()).is_some_and(|c| c.is_ascii_digit()))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        match newest {
            Some((n, _)) => out.push((pod.to_string(), n.clone())),
            None => {
                return Err(Error::Usage(format!(
                    "{}: no {pod}-<revision> directory (cluster-backup.sh stops here too: 'error finding static-pod-resource {pod}')",
                    resources.display()
                )))
            }
        }
    }
    Ok(out)
}

/// User and group names by id, from the running system's `/etc/passwd` and `/etc/group` (GNU
/// tar records the names of the system it runs on).
fn names(file: &str) -> BTreeMap<u64, String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((id, name.to_string()))
        })
        .collect()
}

/// Write `tarball` as `tar -cpzf TARBALL -C BASE REL...` does: each named directory and
/// everything under it (directories before their contents, entries by name), with modes,
/// owners and modification times; symbolic links are stored as links.
pub fn write_host_tarball(base: &Path, rels: &[String], tarball: &Path) -> Result<usize> {
    let users = names("/etc/passwd");
    let groups = names("/etc/group");
    let mut new = etcd_data::durable::NewFile::create(tarball).map_err(|e| Error::io(tarball, e))?;
    let partial = new.path().to_path_buf();
    let mut w = TarballWriter::new(std::io::BufWriter::new(new.file().try_clone().map_err(|e| Error::io(&partial, e))?));
    let mut n = 0;
    let mut stack: Vec<String> = rels.iter().rev().cloned().collect();
    while let Some(rel) = stack.pop() {
        let path = base.join(&rel);
        let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        use std::os::unix::fs::MetadataExt;
        let mut m = Member {
            path: rel.clone(),
            kind: Kind::File,
            mode: md.mode() & 0o7777,
            uid: md.uid() as u64,
            gid: md.gid() as u64,
            uname: users.get(&(md.uid() as u64)).cloned().unwrap_or_default(),
            gname: groups.get(&(md.gid() as u64)).cloned().unwrap_or_default(),
            mtime: md.mtime().max(0) as u64,
            link: None,
        };
        let ft = md.file_type();
        if ft.is_dir() {
            m.kind = Kind::Dir;
            m.path = format!("{}/", rel.trim_end_matches('/'));
            w.append(&m, &[]).map_err(|e| Error::io(&partial, e))?;
            let mut children: Vec<String> = std::fs::read_dir(&path)
                .map_err(|e| Error::io(&path, e))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::io(&path, e))?;
            children.sort();
            stack.extend(children.into_iter().rev().map(|c| format!("{}/{c}", rel.trim_end_matches('/'))));
        } else if ft.is_symlink() {
            m.kind = Kind::Symlink;
            m.link = Some(std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?.to_string_lossy().into_owned());
            w.append(&m, &[]).map_err(|e| Error::io(&partial, e))?;
        } else if ft.is_file() {
            if md.len() > MAX_MEMBER {
                return Err(Error::Usage(format!("{}: {} bytes, more than static resources ever hold; refused", path.display(), md.len())));
            }
            let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            w.append(&m, &data).map_err(|e| Error::io(&partial, e))?;
        } else {
            // Sockets, fifos, devices: tar would store them; static resources have none.
            continue;
        }
        n += 1;
    }
    let buf = w.finish().map_err(|e| Error::io(&partial, e))?;
    buf.into_inner().map_err(|e| Error::io(&partial, e.into_error()))?;
    new.publish().map_err(|e| Error::io(tarball, e))?;
    Ok(n)
}

/// The stamp cluster-backup.sh would give a backup made now (`date "+%F_%H%M%S"`; UTC).
pub fn stamp_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d_%H%M%S").to_string()
}

/// What became of one backup directory's pair.
#[derive(Debug)]
pub enum Imported {
    Stored(Box<BackupReport>),
    /// The repository holds it already (same stamp and snapshot): the backup's id.
    AlreadyThere(String),
}

/// Store one `cluster-backup.sh` pair as a backup of `cluster`: the snapshot (checked as
/// `snapshot verify` checks it: sha256 trailer, structure, schema), and the tarball's members
/// as the bundle (the bundle key is required: they hold the encryption keys). The backup's
/// time is the stamp's. A pair already imported is not stored twice.
pub async fn import(repo: Arc<Repository>, cluster: &str, pair: &BackupPair, tags: &[String], uploads: usize, progress: Progress) -> Result<Imported> {
    repo.key_for(BlobType::Bundle)?;
    let snap = pair.snapshot.clone();
    let tarball = pair.tarball.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let v = etcd_data::verify(&snap, &|_, _| {})?;
        if !v.is_clean() {
            let first = v.fault_lines().into_iter().next().unwrap_or_default();
            return Err(Error::BadInput(format!("{}: the snapshot is damaged: {first}; refused", snap.display())));
        }
        if matches!(v.trailer, etcd_data::Trailer::Absent) {
            return Err(Error::BadInput(format!(
                "{}: has no sha256 trailer, so it is not a snapshot `etcdctl snapshot save` wrote (a db file copied from a data dir?); refused",
                snap.display()
            )));
        }
        read_tarball(&tarball, |_, _| Ok(()))?;
        Ok(())
    })
    .await
    .map_err(|e| Error::Other(format!("checking {}: {e}", pair.snapshot.display())))??;
    let time = stamp_time(&pair.stamp).ok_or_else(|| Error::Usage(format!("{}: stamp {} is not date +%F_%H%M%S", pair.snapshot.display(), pair.stamp)))?;
    if repo.clusters().await?.iter().any(|c| c == cluster) {
        let same_stamp: Vec<_> =
            repo.manifests(cluster).await?.into_iter().filter(|(_, m)| m.openshift.as_ref().is_some_and(|o| o.stamp == pair.stamp)).collect();
        if !same_stamp.is_empty() {
            let sha = crate::restore::sha256_file(&pair.snapshot)?;
            if let Some((id, _)) = same_stamp.into_iter().find(|(_, m)| m.snapshot.sha256 == sha) {
                return Ok(Imported::AlreadyThere(id));
            }
        }
    }
    let opts = BackupOptions {
        snapshot: pair.snapshot.clone(),
        cluster: cluster.to_string(),
        tags: tags.to_vec(),
        source: format!("openshift backup {}", pair.snapshot.parent().unwrap_or(Path::new(".")).display()),
        uploads,
        openshift: Some((pair.tarball.clone(), pair.stamp.clone())),
        time: Some(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ..Default::default()
    };
    Ok(Imported::Stored(Box::new(crate::backup::backup(repo, &opts, progress).await?)))
}

/// Write backup `id` into `dir` as `cluster-backup.sh` lays it out: `snapshot_<stamp>.db`
/// (byte for byte the stored snapshot, checked against its sha256) and
/// `static_kuberesources_<stamp>.tar.gz` (the stored members, in their order, with their modes,
/// owners and times). `dir` is created when missing; an existing one must hold no other
/// `snapshot*.db` or `static_kuberesources*.tar.gz`, which `cluster-restore.sh` would pick
/// among. Both files are complete before either gets its name; on failure neither stays.
pub async fn export(repo: Arc<Repository>, id: &str, m: &Manifest, dir: &Path, parallel: usize, progress: Progress) -> Result<(PathBuf, PathBuf)> {
    let os = m.openshift.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "backup {} was not made in OpenShift's layout (imported with --openshift-backup or taken with --openshift-host); it has no static resources to write",
            crate::short(id)
        ))
    })?;
    let bundle = m.bundle.as_ref().ok_or_else(|| Error::Damaged(format!("backup {} is an OpenShift backup without its bundle", crate::short(id))))?;
    repo.key_for(BlobType::BundleList)?;
    let created = match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => {
            let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if (n.starts_with("snapshot") && n.ends_with(".db")) || (n.starts_with("static_kuberesources") && n.ends_with(".tar.gz")) {
                    return Err(Error::Usage(format!(
                        "{}: holds {n} already; cluster-restore.sh would choose among the backups there: give an empty or new directory",
                        dir.display()
                    )));
                }
            }
            false
        }
        Ok(_) => return Err(Error::Usage(format!("{}: exists and is not a directory", dir.display()))),
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            true
        }
    };
    let snap = dir.join(snapshot_name(&os.stamp));
    let tar_path = dir.join(tarball_name(&os.stamp));
    let r = async {
        let mut tarball = etcd_data::durable::NewFile::create(&tar_path).map_err(|e| Error::io(&tar_path, e))?;
        crate::restore::reading_backup(&repo, id, m, "get", write_members(&repo, m, bundle, tarball.file(), &tar_path)).await?;
        crate::restore::reassemble(repo.clone(), id, m, &snap, parallel, progress).await?;
        tarball.publish().map_err(|e| {
            let _ = std::fs::remove_file(&snap);
            Error::io(&tar_path, e)
        })
    }
    .await;
    match r {
        Ok(()) => Ok((snap, tar_path)),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

async fn write_members(repo: &Repository, m: &Manifest, bundle: &crate::format::BundleRef, file: &mut std::fs::File, path: &Path) -> Result<()> {
    let index = repo.load_index(&m.cluster).await?;
    let files = crate::restore::bundle_table(repo, &index, bundle).await?;
    let mut w = TarballWriter::new(std::io::BufWriter::new(&mut *file));
    for f in &files {
        let member = f
            .tar
            .as_ref()
            .ok_or_else(|| Error::Damaged(format!("bundle file {} has no tar header facts, so the bundle was not made from a tarball", f.path)))?;
        let data = read_bundle_file(repo, &index, f).await?;
        w.append(member, &data).map_err(|e| Error::io(path, e))?;
    }
    let buf = w.finish().map_err(|e| Error::io(path, e))?;
    buf.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// The kube-apiserver's EncryptionConfiguration kept in an OpenShift backup's bundle: its
/// bundle path and bytes, or None when the backup has none. Needs the bundle key; without it
/// the error names the file and the key.
pub async fn stored_encryption_config(repo: &Repository, id: &str, m: &Manifest) -> Result<Option<(String, Vec<u8>)>> {
    let Some(path) = m.openshift.as_ref().and_then(|o| o.encryption_config.clone()) else { return Ok(None) };
    let bundle = m.bundle.as_ref().ok_or_else(|| Error::Damaged(format!("backup {} is an OpenShift backup without its bundle", crate::short(id))))?;
    if !repo.has_bundle_key() {
        return Err(Error::SecretNeeded {
            purpose: "bundle",
            what: format!(
                "backup {} keeps the EncryptionConfiguration that decrypts its values in its bundle ({path}), under the bundle key, and no bundle passphrase or key file was given",
                crate::short(id)
            ),
        });
    }
    let index = repo.load_index(&m.cluster).await?;
    let files = crate::restore::bundle_table(repo, &index, bundle).await?;
    let f = files.iter().find(|f| f.path == path).ok_or_else(|| Error::Damaged(format!("{path} is named by the manifest but not in the bundle")))?;
    Ok(Some((path, read_bundle_file(repo, &index, f).await?)))
}

/// One bundle file's content, checked against its sha256.
async fn read_bundle_file(repo: &Repository, index: &crate::repository::Index, f: &crate::format::BundleFile) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(f.size as usize);
    for c in &f.chunks {
        let id = crate::repository::parse_id(c)?;
        let loc = index.blobs.get(&id).ok_or_else(|| Error::Damaged(format!("{}: chunk {c} is not in any index", f.path)))?;
        data.extend_from_slice(&repo.read_blob(index, loc).await?);
    }
    if hex::encode(sha2::Sha256::digest(&data)) != f.sha256 {
        return Err(Error::Damaged(format!("{}: reassembled content does not match its sha256", f.path)));
    }
    Ok(data)
}

/// The EncryptionConfiguration inside a `cluster-backup.sh` tarball on disk: its member path
/// and bytes.
pub fn tarball_encryption_config(tarball: &Path) -> Result<Option<(String, Vec<u8>)>> {
    let mut found: Option<(String, Vec<u8>)> = None;
    read_tarball(tarball, |m, data| {
        if m.kind == Kind::File && encryption_config_path([m.path.as_str()]).is_some() {
            let newer = found.as_ref().is_none_or(|(p, _)| encryption_config_path([p.as_str(), m.path.as_str()]) == Some(m.path.as_str()));
            if newer {
                found = Some((m.path.clone(), data.to_vec()));
            }
        }
        Ok(())
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_the_scripts_format() {
        assert_eq!(stamp_time("2026-12-04_031500").unwrap().to_rfc3339(), "2026-12-04T03:15:00+00:00");
        for bad in ["2026-12-04", "2026-12-04_0315", "2026-12-04_03150", "2026-13-04_031500", "x"] {
            assert!(stamp_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn pairs_are_found_and_orphans_refused() {
        let d = tempfile::tempdir().unwrap();
        let touch = |n: &str| std::fs::write(d.path().join(n), b"x").unwrap();
        touch("snapshot_2026-12-04_031500.db");
        touch("static_kuberesources_2026-12-04_031500.tar.gz");
        touch("snapshot_2026-12-03_031500.db");
        touch("static_kuberesources_2026-12-03_031500.tar.gz");
        touch("notes.txt");
        let p = find_pairs(d.path()).unwrap();
        assert_eq!(p.iter().map(|p| p.stamp.as_str()).collect::<Vec<_>>(), ["2026-12-03_031500", "2026-12-04_031500"]);
        touch("snapshot_2026-12-05_031500.db");
        let e = find_pairs(d.path()).unwrap_err().to_string();
        assert!(e.contains("static_kuberesources_2026-12-05_031500.tar.gz are missing"), "{e}");
        std::fs::remove_file(d.path().join("snapshot_2026-12-05_031500.db")).unwrap();
        touch("static_kuberesources_2026-12-06_031500.tar.gz");
        let e = find_pairs(d.path()).unwrap_err().to_string();
        assert!(e.contains("snapshot_2026-12-06_031500.db is missing"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(find_pairs(empty.path()).unwrap_err().to_string().contains("holds no snapshot_"));
    }

    #[test]
    fn revisions_and_the_encryption_config_come_from_paths() {
        let paths = [
            "static-pod-resources/kube-apiserver-pod-7/",
            "static-pod-resources/kube-apiserver-pod-7/secrets/encryption-config/encryption-config",
            "static-pod-resources/kube-controller-manager-pod-12/configmaps/config/config.yaml",
            "static-pod-resources/etcd-pod-3/etcd-pod.yaml",
            "static-pod-resources/kube-apiserver-pod-7x/secrets/encryption-config/encryption-config",
        ];
        let r = static_pod_revisions(paths);
        assert_eq!(r.get("kube-apiserver-pod"), Some(&7));
        assert_eq!(r.get("kube-controller-manager-pod"), Some(&12));
        assert_eq!(r.get("etcd-pod"), Some(&3));
        assert_eq!(r.get("kube-scheduler-pod"), None);
        assert_eq!(encryption_config_path(paths), Some(paths[1]));
        assert_eq!(encryption_config_path(["static-pod-resources/kube-apiserver-pod-7/kube-apiserver-pod.yaml"]), None);
    }

    #[test]
    fn tarballs_round_trip_and_damage_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let members = [
            (
                Member {
                    path: "static-pod-resources/kube-apiserver-pod-7/".into(),
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    uname: "root".into(),
                    gname: "root".into(),
                    mtime: 1_700_000_000,
                    link: None,
                },
                Vec::new(),
            ),
            (
                Member {
                    path: format!("static-pod-resources/kube-apiserver-pod-7/{}", "long-name-".repeat(15)),
                    kind: Kind::File,
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                    uname: "root".into(),
                    gname: "root".into(),
                    mtime: 1_700_000_001,
                    link: None,
                },
                (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>(),
            ),
            (
                Member {
                    path: "static-pod-resources/kube-apiserver-pod-7/link".into(),
                    kind: Kind::Symlink,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    uname: "root".into(),
                    gname: "root".into(),
                    mtime: 1_700_000_002,
                    link: Some("secrets".into()),
                },
                Vec::new(),
            ),
        ];
        let path = d.path().join("t.tar.gz");
        let mut w = TarballWriter::new(std::fs::File::create(&path).unwrap());
        for (m, data) in &members {
            w.append(m, data).unwrap();
        }
        w.finish().unwrap();
        let mut back = Vec::new();
        read_tarball(&path, |m, data| {
            back.push((m.clone(), data.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(back, members.to_vec());

        // Truncated, and one byte altered in the middle: refused, naming the file.
        let bytes = std::fs::read(&path).unwrap();
        let cut = d.path().join("cut.tar.gz");
        std::fs::write(&cut, &bytes[..bytes.len() - 9]).unwrap();
        let e = read_tarball(&cut, |_, _| Ok(())).unwrap_err().to_string();
        assert!(e.contains("cut.tar.gz") && e.contains("refused"), "{e}");
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let altered = d.path().join("altered.tar.gz");
        std::fs::write(&altered, &bad).unwrap();
        let e = read_tarball(&altered, |_, _| Ok(())).unwrap_err().to_string();
        assert!(e.contains("altered.tar.gz"), "{e}");
    }
}
