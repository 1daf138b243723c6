//! Cross-cluster migration of etcd data through the backup repository.
//!
//! Every migration starts the same way: a snapshot of the source cluster becomes a backup in
//! the repository (or an existing backup is named), and a migration record naming that backup
//! is written next to it (`migrations/<id>/<generation>`, [`journal`]). A migration that is
//! killed at any point and run again with the same arguments finds its record and works from
//! the *same* backup, so it never mixes two source states. Then:
//!
//! * **Whole cluster** ([`whole`]): the backup is restored natively into the new cluster's
//!   member data dirs (a new cluster; non-empty dirs are refused), the member start commands
//!   are printed, and once the new cluster answers it is verified against the backup: revision,
//!   key count and `hashkv` on every member equal the manifest's, and per prefix the key counts
//!   and content hashes equal the backup's.
//! * **Namespaces or prefixes** ([`partial`]): the selected live keys of the backup
//!   ([`select`], [`source`]) are replayed into a *running* target cluster in bounded
//!   transactions ([`target`]), values byte-identical, or with a [`codec::Rekey`] decrypted
//!   with the source's EncryptionConfiguration and encrypted with the target's. Keys already
//!   present are compared by plaintext: identical ones are left alone (this is what makes a
//!   resume write each key once), differing ones follow the conflict policy
//!   ([`ConflictPolicy`]: `fail` by default, `skip`, `overwrite`). etcd leases are not carried.
//!   Memory holds keys and 32-byte digests, never the selection's values: what is written is
//!   read back from the snapshot one transaction at a time. Once a migration is `done`, running
//!   it again only verifies (the target's apps own those keys now); `--restart` starts anew.
//!
//! Verification ([`verify`]) is per group (namespace, prefix, or top-level prefix for a whole
//! cluster): key count and a SHA-256 over the sorted keys with their plaintexts' SHA-256s,
//! source against target, over the source's keys (keys only the target has are counted apart).
//! Keys and values are never printed.
//!
//! ```no_run
//! # async fn f(repo: std::sync::Arc<repo::Repository>) -> Result<(), migrate::Error> {
//! let src = etcd_cluster::ConnConfig { endpoints: vec!["10.0.0.1:2379".into()], ..Default::default() };
//! let dst = etcd_cluster::ConnConfig { endpoints: vec!["10.1.0.1:2379".into()], ..Default::default() };
//! let opts = migrate::partial::PartialOptions {
//!     cluster: "prod".into(),
//!     selection: migrate::select::Selection::Namespaces(vec!["shop".into()]),
//!     ..Default::default()
//! };
//! let sink: migrate::Sink = std::sync::Arc::new(|_e| {});
//! let report = migrate::partial::run(Some(&src), &dst, repo, &opts, &sink).await?;
//! assert!(report.verified());
//! # Ok(()) }
//! ```

pub mod codec;
pub mod journal;
pub mod origin;
pub mod partial;
pub mod partial_sync;
pub mod select;
pub mod source;
pub mod sync;
pub mod target;
pub mod verify;
pub mod whole;

use serde::Serialize;

/// What to do with a key the target already holds with a different (plaintext) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Write nothing at all when any selected key differs (the default).
    #[default]
    Fail,
    /// Leave the target's value; the key is left out of the verification and counted.
    Skip,
    /// Replace the target's value (guarded by its mod revision).
    Overwrite,
}

impl ConflictPolicy {
    pub fn parse(s: &str) -> Option<ConflictPolicy> {
        match s {
            "fail" => Some(ConflictPolicy::Fail),
            "skip" => Some(ConflictPolicy::Skip),
            "overwrite" => Some(ConflictPolicy::Overwrite),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            ConflictPolicy::Fail => "fail",
            ConflictPolicy::Skip => "skip",
            ConflictPolicy::Overwrite => "overwrite",
        }
    }
}

/// What a running migration reports as it goes (the binary prints these; nothing here prints).
#[derive(Debug, Clone)]
pub enum Event {
    /// One line of the plan (printed before anything is written).
    Plan(String),
    /// A step starts.
    Step(String),
    /// Progress of the current step: done, total (bytes or keys, per step).
    Progress {
        done: u64,
        total: u64,
    },
    Warning(String),
}

/// Where a migration reports its events.
pub type Sink = std::sync::Arc<dyn Fn(Event) + Send + Sync>;

/// Why a migration stopped. What was already written stays; running the same command again
/// resumes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Cluster(#[from] etcd_cluster::Error),
    #[error(transparent)]
    Repo(#[from] repo::Error),
    #[error("target {endpoint}: {op}: {msg}")]
    Target { endpoint: String, op: &'static str, msg: String },
    #[error("{0}")]
    Source(String),
    /// The source snapshot is damaged (unreadable pages, malformed records).
    #[error("source snapshot damaged: {0}")]
    Damaged(String),
    /// `outcome`: what the stop left in the target.
    #[error("{count} selected key(s) already exist in the target with different content ({detail}); conflict policy `fail`: {outcome}")]
    Conflict { count: usize, detail: String, outcome: &'static str },
    #[error("{0}")]
    Refused(String),
    /// Something other than this migration wrote to the target while it synced: what the
    /// migration applied before stays, and it cannot go on.
    #[error("{0}")]
    Diverged(String),
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// The repository's record of this migration no longer fits it (another selection or
    /// target, or its backup forgotten): only a new generation can go on.
    #[error("{0}")]
    NeedsRestart(String),
    /// A cutover saw the source's revision move while it synced and verified (writers still
    /// running): the target holds what was synced, the migration is not cut over.
    #[error("{0}")]
    StillMoving(String),
    /// Verification alone was asked for, and there is nothing to verify yet.
    #[error("nothing to verify: {0}")]
    NothingToVerify(String),
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
