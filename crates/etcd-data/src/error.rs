use std::path::PathBuf;

/// Errors of the etcd-data crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bolt(#[from] bolt::Error),
    #[error("{}: snapshot file integrity check failed: {count} errors found; first: {first}", path.display())]
    Integrity { path: PathBuf, count: usize, first: bolt::Fault, faults: Vec<bolt::Fault> },
    #[error("{}: {what}", path.display())]
    Schema { path: PathBuf, what: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;
