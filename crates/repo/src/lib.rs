//! The backup repository: etcd snapshots kept in object storage (`file://`, `s3://`, `gs://`,
//! `az://`), split into content-defined chunks (FastCDC) so successive backups share most of
//! their data, compressed (zstd), encrypted and authenticated (AES-256-GCM), packed into
//! content-addressed pack objects, found through index objects, and named by manifests that
//! are written last. Retention (`forget`, also of delta segments), garbage collection
//! (`prune`), locks, `check` (structure, or every byte with `read_data`), restore,
//! point-in-time restore, consolidated backups, `drill` (restore into a real etcd and compare
//! with the manifest) and the upgrade of older layouts live here too.
//!
//! Every object of a cluster lives under `clusters/<C>/`, so an operation on one cluster
//! reads and writes that cluster's objects plus `config`, `keys/` and `locks/`: its cost
//! follows the cluster, not the fleet sharing the bucket. Every function that touches the
//! repository takes the lock it needs itself.
//!
//! The format is written down in `FORMAT.md` beside this crate. Every object but the lock
//! files and the release markers is written once under a name derived from its content or
//! from fresh randomness and never rewritten, which is what write-once (object-lock) buckets
//! require.
//!
//! Everything that touches the network is async (tokio); CPU work (chunking, hashing,
//! compression, encryption) runs on plain threads fed through bounded channels, so memory
//! stays bounded by the channel depths and the pack size, not by the snapshot size.

mod arriving;
pub mod backup;
pub mod check;
pub mod chunk_list;
pub mod consolidate;
pub mod crypto;
pub mod delta;
pub mod drill;
mod error;
pub mod format;
pub mod freshness;
pub mod gcs_json;
pub mod keymap;
pub mod link;
pub mod live;
pub mod location;
pub mod lock;
pub mod openshift;
pub mod pitr;
pub mod progress;
pub mod proxy;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod retrying;
pub mod runbook;
pub mod scratch;
pub mod upgrade;

pub use error::{Error, Result};
pub use location::{Location, StoreOptions};
pub use repository::{OpenMode, Repository, Unlock};

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// This host's name (from the kernel), for locks and manifests.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "unknown".into())
}

/// Short form of an object id, as `backups list` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
