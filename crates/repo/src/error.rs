//! Errors of repository operations, each saying what is wrong and how to fix it.
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
    /// A restored backup's data differs from its manifest (exit 3).
    #[error("{0}")]
    Mismatch(String),
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

    /// A hint for the person at the terminal, when there is a useful one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::WrongSecret { .. } => Some(
                "give the repository passphrase with --password-file or QUORUM_PASSWORD, or its key file with --key-file".into(),
            ),
            Error::Locked(_) => Some(
                "wait for the other operation to finish, or pass --retry-lock 5m; a lock left by a killed process on this host is removed automatically, and one from another host after it expires (30 min without refresh)".into(),
            ),
            Error::Store { source: object_store::Error::NotFound { .. }, .. } => {
                Some("check the repository URL (and that `quorum repo init` was run for it)".into())
            }
            Error::Store { .. } => Some("check the URL, the endpoint, the credentials (the cloud's standard variables) and --proxy/--no-proxy".into()),
            Error::Damaged(_) => Some("run `quorum repo check --read-data` to list every damaged object".into()),
            _ => None,
        }
    }
}
