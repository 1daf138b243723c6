//! Errors of repository operations, each saying what is wrong with which object or setting
//! (what to do about it is the caller's to say: the CLI adds hints in its own terms).
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or argument is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The object store refused or failed an operation.
    #[error("{what}: {source}")]
    Store { what: String, source: object_store::Error },
    /// An object the repository needs does not exist.
    #[error("{0}")]
    Missing(String),
    /// A key is needed and no secret for it was given (`purpose`: `data`, `bundle`, or `new
    /// bundle` when the repository has no bundle key yet).
    #[error("{what}")]
    SecretNeeded { purpose: &'static str, what: String },
    /// No wrapping key opens with the secret given.
    #[error("wrong {kind}: none of the {count} {purpose} key(s) in the repository opens with it")]
    WrongSecret { kind: &'static str, purpose: String, count: usize },
    /// Stored data does not authenticate or does not parse (exit 3).
    #[error("{0}")]
    Damaged(String),
    /// A malformed object or setting.
    #[error("{0}")]
    Format(String),
    /// Another process holds a conflicting lock.
    #[error("{0}")]
    Locked(String),
    /// The bucket refuses a write or delete (object lock / WORM).
    #[error("{0}")]
    Refused(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Restore(#[from] etcd_data::restore::RestoreError),
    #[error(transparent)]
    Data(#[from] etcd_data::Error),
    /// Talking to the live cluster (a backup taken from it).
    #[error(transparent)]
    Cluster(#[from] etcd_cluster::Error),
    /// A restored backup's data differs from its manifest (exit 3).
    #[error("{0}")]
    Mismatch(String),
    /// A local file given to be stored (a snapshot or tarball to import) is damaged (exit 3).
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    pub fn store(what: impl Into<String>, source: object_store::Error) -> Error {
        Error::Store { what: what.into(), source }
    }
}
