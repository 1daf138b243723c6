//! A reader and a streaming bulk writer of bbolt database files, the storage format of etcd's
//! backend.
//!
//! Why hand-written: no maintained crate reads the files etcd writes. `bbolt-rs` refuses a
//! freelist that is not synced (which every etcd on Linux writes), and the other crates use
//! another format or skip validation. The format is small and fixed; it is documented byte by
//! byte in `FORMAT.md` beside this crate and in each module, with the bbolt source it came from.
//!
//! Reading uses positioned reads (`pread`) into reusable page buffers, never a whole-file map,
//! so memory stays at tree depth × page size however large the file is.
//!
//! ```no_run
//! let db = bolt::Db::open("snapshot.db")?;
//! // Every entry of every bucket in key order, with the full structural check on the way.
//! let mut entries = 0u64;
//! let report = bolt::walk(&db, &mut |_path: &[Vec<u8>], _k: &[u8], _v: Option<&[u8]>| entries += 1);
//! assert!(report.is_clean(), "{:?}", report.faults);
//! // Point lookups and cursors.
//! if let Some(meta) = db.bucket(&[b"meta"]).map_err(|f| f.to_string())? {
//!     let _ci = meta.get(b"consistent_index").map_err(|f| f.to_string())?;
//!     let mut c = meta.cursor().map_err(|f| f.to_string())?;
//!     while let Some(e) = c.next().map_err(|f| f.to_string())? { let _ = (e.key, e.value); }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cursor;
mod db;
mod endian;
mod error;
pub mod freelist;
pub mod meta;
pub mod page;
mod walk;
pub mod writer;

pub use cursor::{Bucket, Cursor};
pub use db::{Db, ReadAt};
pub use endian::Endian;
pub use error::{Error, Fault, MetaProblem, Result};
pub use meta::Meta;
pub use page::LeafElem;
pub use walk::{check, show, walk, CheckReport, Visitor};
pub use writer::{FreelistMode, WriteError, WriteStats, Writer, WriterOptions};
