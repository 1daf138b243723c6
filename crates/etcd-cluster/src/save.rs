//! `snapshot save`: stream a snapshot from one member into a temporary beside `FILE`, check
//! the sha256 the server appends as it arrives, fsync, and give it the name `FILE` only if
//! that name is still free ([`etcd_data::durable`]). Never overwrites.
//!
//! The server sends the bbolt bytes in chunks, then one last message with the 32-byte SHA-256
//! of everything before it (`v3rpc/maintenance.go` `Snapshot`); the file keeps that digest as
//! its trailer, exactly as `etcdctl snapshot save` writes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use etcd_data::durable::NewFile;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::conn::ConnConfig;
use crate::error::{Error, Result};
use crate::view::{observe, ClusterView};

/// Which member to take the snapshot from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The first healthy endpoint in `--endpoints` order.
    Endpoints,
    /// A follower (spares the leader the I/O).
    Follower,
    Leader,
    /// The member with this name.
    Named(String),
}

impl Source {
    pub fn parse(s: &str) -> Source {
        match s {
            "follower" => Source::Follower,
            "leader" => Source::Leader,
            "endpoints" | "" => Source::Endpoints,
            name => Source::Named(name.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    pub path: PathBuf,
    pub endpoint: String,
    pub member: String,
    pub bytes: u64,
    pub sha256: String,
    pub revision: i64,
}

/// Choose the endpoint per `source` among the members that answer.
pub fn choose(view: &ClusterView, source: &Source) -> Result<(String, String)> {
    let healthy = view.statuses.iter().filter(|s| s.errors.is_empty());
    let pick = match source {
        Source::Endpoints => healthy.into_iter().next(),
        Source::Follower => healthy.into_iter().find(|s| !s.is_leader && !s.is_learner),
        Source::Leader => healthy.into_iter().find(|s| s.is_leader),
        Source::Named(n) => healthy.into_iter().find(|s| &s.name == n),
    };
    pick.map(|s| (s.endpoint.clone(), s.name.clone())).ok_or_else(|| {
        let members: Vec<String> = view
            .statuses
            .iter()
            .map(|s| {
                let role = if !s.errors.is_empty() {
                    "unhealthy"
                } else if s.is_leader {
                    "leader"
                } else if s.is_learner {
                    "learner"
                } else {
                    "follower"
                };
                format!("{} ({}, {role})", if s.name.is_empty() { "?" } else { &s.name }, s.endpoint)
            })
            .collect();
        Error::Refused(format!("no healthy member is {source}; members that answered: {}", if members.is_empty() { "none".into() } else { members.join(", ") }))
    })
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Endpoints => f.write_str("among the endpoints given"),
            Source::Follower => f.write_str("a follower"),
            Source::Leader => f.write_str("the leader"),
            Source::Named(n) => write!(f, "named {n:?}"),
        }
    }
}

/// A snapshot streaming from one member, its first message already read for the size it
/// announces.
pub struct SnapshotStream {
    pub endpoint: String,
    pub member: String,
    /// The bytes the stream will deliver: the database, then its 32-byte sha256.
    pub len: u64,
    first: Option<Vec<u8>>,
    stream: etcd_client::SnapshotStreaming,
    /// Kept for the stream's lifetime.
    _client: etcd_client::Client,
}

/// Start streaming a snapshot from the member `source` picks. Each message says how many
/// database bytes remain after it (`v3rpc/maintenance.go`), so the first one gives the size.
pub async fn stream(cfg: &ConnConfig, source: &Source) -> Result<SnapshotStream> {
    let view = observe(cfg, 0).await?;
    let (endpoint, member) = choose(&view, source)?;
    let mut c = cfg.connect_one(&endpoint).await?;
    let mut stream = cfg.timed(&endpoint, "snapshot", c.snapshot()).await?;
    let first = stream.message().await.map_err(|e| Error::Stream { endpoint: endpoint.clone(), msg: crate::conn::describe(&e) })?;
    let Some(first) = first else {
        return Err(Error::Stream { endpoint, msg: "the member sent no snapshot data".into() });
    };
    let len = first.blob().len() as u64 + first.remaining_bytes() + 32;
    Ok(SnapshotStream { endpoint, member, len, first: Some(first.blob().to_vec()), stream, _client: c })
}

impl SnapshotStream {
    /// The next bytes, None at the end. The stream's own end is not checked here: a reader
    /// compares what arrived with [`SnapshotStream::len`] and checks the sha256 trailer.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let msg = self.stream.message().await.map_err(|e| Error::Stream { endpoint: self.endpoint.clone(), msg: crate::conn::describe(&e) })?;
        Ok(msg.map(|m| m.blob().to_vec()))
    }
}

/// Save a snapshot to `path`. `progress(bytes_so_far)` is called as data arrives.
pub async fn save(cfg: &ConnConfig, path: &Path, source: &Source, progress: &(dyn Fn(u64) + Sync)) -> Result<Saved> {
    if path.symlink_metadata().is_ok() {
        return Err(Error::Refused(format!("{} exists; Quorum never overwrites a snapshot (choose a new name)", path.display())));
    }
    let mut stream = stream(cfg, source).await?;
    let endpoint = stream.endpoint.clone();
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let mut out = NewFile::create(path).map_err(io(path))?;
    let partial = out.path().to_path_buf();
    let result = async {
        let mut h = Sha256::new();
        // The last 32 bytes received are the digest, not data: hold them back from the hash.
        let mut tail: Vec<u8> = Vec::with_capacity(64);
        let mut total = 0u64;
        while let Some(blob) = stream.next().await? {
            out.file().write_all(&blob).map_err(io(path))?;
            total += blob.len() as u64;
            tail.extend_from_slice(&blob);
            if tail.len() > 32 {
                let cut = tail.len() - 32;
                h.update(&tail[..cut]);
                tail.drain(..cut);
            }
            progress(total);
        }
        if total % 512 != 32 || tail.len() != 32 {
            return Err(Error::Stream { endpoint: endpoint.clone(), msg: format!("sha256 checksum not found [bytes: {total}]") });
        }
        let got: [u8; 32] = h.finalize().into();
        if got[..] != tail[..] {
            return Err(Error::Stream {
                endpoint: endpoint.clone(),
                msg: format!("sha256 mismatch: server sent {}, data hashes to {}", hex::encode(&tail), hex::encode(got)),
            });
        }
        // The revision the snapshot holds, as `snapshot status` reports it.
        let revision = etcd_data::status(&partial)?.revision;
        Ok((total, hex::encode(got), revision))
    }
    .await;
    let (bytes, sha256, revision) = result?;
    out.publish().map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Refused(format!("{} appeared while the snapshot was saved; left it alone, nothing written", path.display()))
        } else {
            io(path)(e)
        }
    })?;
    Ok(Saved { path: path.to_path_buf(), endpoint, member: stream.member, bytes, sha256, revision })
}
