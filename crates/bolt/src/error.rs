//! Errors and faults of the bbolt reader.

use std::fmt;
use std::path::PathBuf;

/// A problem found at a definite place in the file: the page it concerns and the absolute
/// byte offset of the bytes at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Page id the fault concerns (for an inline bucket, the page that holds it).
    pub pgid: u64,
    /// Absolute file offset of the faulty bytes (page start when nothing more exact is known).
    pub offset: u64,
    /// What is wrong, in words.
    pub what: String,
}

impl Fault {
    pub fn new(pgid: u64, offset: u64, what: impl Into<String>) -> Self {
        Fault { pgid, offset, what: what.into() }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {} (offset {:#x}): {}", self.pgid, self.offset, self.what)
    }
}

/// Why a meta page was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaProblem {
    /// The file ends before this meta page.
    Missing,
    /// The magic number is not bbolt's.
    BadMagic(u32),
    /// The format version is not 2.
    BadVersion(u32),
    /// The FNV-1a checksum over the first 56 bytes does not match.
    BadChecksum { stored: u64, computed: u64 },
    /// The page header does not mark this page as a meta page.
    NotMetaPage { flags: u16 },
    /// Page size not a power of two in 512..=1 MiB.
    BadPageSize(u32),
}

impl fmt::Display for MetaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaProblem::Missing => write!(f, "missing (file too short)"),
            MetaProblem::BadMagic(m) => write!(f, "invalid magic {m:#010x} (want 0xed0cdaed)"),
            MetaProblem::BadVersion(v) => write!(f, "unsupported format version {v} (want 2)"),
            MetaProblem::BadChecksum { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")
            }
            MetaProblem::NotMetaPage { flags } => write!(f, "page flags {flags:#06x} are not a meta page's (0x04)"),
            MetaProblem::BadPageSize(s) => write!(f, "implausible page size {s}"),
        }
    }
}

/// Errors opening or reading a bbolt file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: is a directory, not a bbolt file", path.display())]
    IsDirectory { path: PathBuf },
    #[error("{}: file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a bbolt database: meta page 0 {meta0}; meta page 1 {meta1}", path.display())]
    NotBolt { path: PathBuf, meta0: MetaProblem, meta1: MetaProblem },
    #[error("{}: file is truncated: {len} bytes, but the meta page says {pages} pages of {page_size} bytes ({needed} bytes)", path.display())]
    Truncated { path: PathBuf, len: u64, pages: u64, page_size: u32, needed: u64 },
    #[error("{}: {fault}", path.display())]
    Corrupt { path: PathBuf, fault: Fault },
}

pub type Result<T> = std::result::Result<T, Error>;
