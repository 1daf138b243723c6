//! Opening a bbolt file and reading its pages with positioned reads.
//!
//! Pages are read with `pread` into small reusable buffers, never mapped, so memory stays at
//! (tree depth × page size) whatever the file's size, and a file shorter than its meta claims
//! gives an error instead of a bus fault. The bytes need not be a finished file: any
//! [`ReadAt`] serves, such as a snapshot still arriving from a backup repository, whose reads
//! wait for the bytes they ask for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::endian::Endian;
use crate::error::{Error, Fault, MetaProblem, Result};
use crate::meta::{self, Meta, META_SIZE};
use crate::page::{PageHeader, PAGE_HEADER_SIZE};

/// Bytes at offsets: where a [`Db`] reads its pages from.
pub trait ReadAt: Send + Sync {
    /// Like `pread`: up to `buf.len()` bytes at `off`; fewer only at the end of the bytes.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
}

/// An open, read-only bbolt file.
pub struct Db {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    len: u64,
    endian: Endian,
    page_size: u32,
    metas: [std::result::Result<Meta, MetaProblem>; 2],
    active: usize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).field("len", &self.len).field("page_size", &self.page_size).finish_non_exhaustive()
    }
}

impl Db {
    /// Open `path`, validate both meta pages and pick the valid one with the higher txid.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io { path: path.clone(), source };
        let md = std::fs::metadata(&path).map_err(io)?;
        if md.is_dir() {
            return Err(Error::IsDirectory { path });
        }
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Db::open_source(path, Arc::new(file), len)
    }

    /// Open the `len` bytes `file` reads as a bbolt file; `path` names it in errors.
    pub fn open_source(path: impl AsRef<Path>, file: Arc<dyn ReadAt>, len: u64) -> Result<Db> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io { path: path.clone(), source };
        if len == 0 {
            return Err(Error::Empty { path });
        }
        let mut head = vec![0u8; PAGE_HEADER_SIZE + META_SIZE];
        let n = read_up_to(&*file, 0, &mut head).map_err(io)?;
        head.truncate(n);

        // Byte order and page size come from meta 0; when it is damaged, probe for meta 1 at
        // 1 KiB << i as bbolt's getPageSizeFromSecondMeta does.
        let meta0 = match head.get(PAGE_HEADER_SIZE..).and_then(meta::detect_endian) {
            Some(e) => meta::parse(&head, e).map(|m| (m, e)),
            None if head.len() < PAGE_HEADER_SIZE + META_SIZE => Err(MetaProblem::Missing),
            None => Err(MetaProblem::BadMagic(Endian::Little.u32(&head[PAGE_HEADER_SIZE..]))),
        };
        let (endian, page_size, meta1) = match &meta0 {
            Ok((m, e)) => {
                let m1 = read_meta_at(&*file, m.page_size as u64, Some(*e)).map_err(io)?;
                (*e, m.page_size, m1.map(|(m, _)| m))
            }
            Err(p0) => {
                let mut found = None;
                // The most telling problem seen: anything beats a bad magic (which every
                // offset that is not a meta page gives).
                let mut seen: Option<MetaProblem> = None;
                for i in 0..=14u32 {
                    let off = 1024u64 << i;
                    match read_meta_at(&*file, off, None).map_err(io)? {
                        Ok((m, e)) if m.page_size as u64 == off => {
                            found = Some((m, e));
                            break;
                        }
                        Ok(_) => {}
                        Err(MetaProblem::Missing) => break,
                        Err(p) => {
                            let better = match &seen {
                                None => true,
                                Some(MetaProblem::BadMagic(_)) => !matches!(p, MetaProblem::BadMagic(_)),
                                Some(_) => false,
                            };
                            if better {
                                seen = Some(p)
                            }
                        }
                    }
                }
                let last = seen.unwrap_or(MetaProblem::Missing);
                match found {
                    Some((m, e)) => (e, m.page_size, Ok(m)),
                    None => return Err(Error::NotBolt { path, meta0: p0.clone(), meta1: last }),
                }
            }
        };
        let metas = [meta0.map(|(m, _)| m), meta1];
        let active = match (&metas[0], &metas[1]) {
            (Ok(a), Ok(b)) => usize::from(b.txid > a.txid),
            (Ok(_), Err(_)) => 0,
            (Err(_), Ok(_)) => 1,
            (Err(a), Err(b)) => return Err(Error::NotBolt { path, meta0: a.clone(), meta1: b.clone() }),
        };
        let db = Db { file, path, len, endian, page_size, metas, active };
        let m = *db.meta();
        let needed = m.pgid.saturating_mul(page_size as u64);
        if m.pgid < 2 || needed > len {
            return Err(Error::Truncated { path: db.path, len, pages: m.pgid, page_size, needed });
        }
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// File length in bytes (may exceed `meta().pgid * page_size`, e.g. a snapshot's sha256 trailer).
    pub fn file_len(&self) -> u64 {
        self.len
    }
    pub fn endian(&self) -> Endian {
        self.endian
    }
    pub fn page_size(&self) -> u32 {
        self.page_size
    }
    /// The active meta.
    pub fn meta(&self) -> &Meta {
        self.metas[self.active].as_ref().expect("active meta is valid")
    }
    /// Which meta page (0 or 1) is active.
    pub fn active_meta(&self) -> usize {
        self.active
    }
    /// Both meta pages as found: a damaged one is reported here while the database stays usable.
    pub fn metas(&self) -> &[std::result::Result<Meta, MetaProblem>; 2] {
        &self.metas
    }
    /// Human-readable warnings about the file that do not stop reading it.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for (i, m) in self.metas.iter().enumerate() {
            if let Err(p) = m {
                w.push(format!("meta page {i} (offset {:#x}) is damaged: {p}; using meta page {}", i as u64 * self.page_size as u64, self.active));
            }
        }
        w
    }

    /// Problems of the freelist page a reader can live with (bbolt rebuilds a freelist it
    /// cannot use, and reading data never needs it): a page of the wrong type, a count that
    /// does not fit, ids outside `2..high-water`, ids listed twice. Empty when the freelist is
    /// not synced (no page) or sound. Pages listed free while still in use (a stale list) are
    /// found only by the full walk of `snapshot verify`.
    pub fn freelist_warnings(&self) -> Vec<String> {
        let m = self.meta();
        if m.freelist_not_synced() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let ids =
            match self.read_node_into(m.freelist, &mut buf).and_then(|_| crate::freelist::parse(&buf, m.freelist, self.page_offset(m.freelist), self.endian)) {
                Ok(ids) => ids,
                Err(f) => return vec![format!("freelist unusable ({f}); it is not needed to read the data, reading goes on")],
            };
        let mut out = Vec::new();
        let outside = ids.iter().filter(|&&id| id < 2 || id >= m.pgid).count();
        if outside > 0 {
            out.push(format!(
                "freelist page {} (offset {:#x}) names {outside} page(s) outside 2..{}; it is not needed to read the data, reading goes on",
                m.freelist,
                self.page_offset(m.freelist),
                m.pgid
            ));
        }
        let mut sorted = ids;
        sorted.sort_unstable();
        let dups = sorted.windows(2).filter(|w| w[0] == w[1]).count();
        if dups > 0 {
            out.push(format!("freelist page {} lists {dups} page id(s) twice; reading goes on", m.freelist));
        }
        out
    }

    /// Total size as bbolt's `tx.Size()`: high-water mark times page size.
    pub fn size(&self) -> u64 {
        self.meta().pgid * self.page_size as u64
    }

    /// File offset of page `pgid` (saturating: ids read from a damaged file can be anything).
    pub fn page_offset(&self, pgid: u64) -> u64 {
        pgid.saturating_mul(self.page_size as u64)
    }

    /// Read page `pgid` with its overflow pages into `buf`, checking that it lies below the
    /// high-water mark and that its header id equals `pgid`.
    pub fn read_node_into(&self, pgid: u64, buf: &mut Vec<u8>) -> std::result::Result<PageHeader, Fault> {
        let hw = self.meta().pgid;
        let ps = self.page_size as usize;
        let off = self.page_offset(pgid);
        if pgid >= hw {
            return Err(Fault::new(pgid, off, format!("page id {pgid} is beyond the high-water mark {hw}")));
        }
        buf.resize(ps, 0);
        self.pread(&mut buf[..ps], off).map_err(|e| Fault::new(pgid, off, format!("read failed: {e}")))?;
        let h = PageHeader::parse(buf, self.endian);
        if h.id != pgid {
            return Err(Fault::new(pgid, off, format!("page header id is {} (want {pgid})", h.id)));
        }
        if h.overflow > 0 {
            let end = pgid.checked_add(h.overflow as u64 + 1);
            if end.is_none_or(|e| e > hw) {
                return Err(Fault::new(pgid, off + 12, format!("overflow of {} pages runs past the high-water mark {hw}", h.overflow)));
            }
            let total = (h.overflow as usize + 1) * ps;
            buf.resize(total, 0);
            self.pread(&mut buf[ps..], off + ps as u64).map_err(|e| Fault::new(pgid, off, format!("read of overflow pages failed: {e}")))?;
        }
        Ok(h)
    }

    fn pread(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let n = read_up_to(&*self.file, off, buf)?;
        if n < buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "failed to fill whole buffer"));
        }
        Ok(())
    }

    /// Read raw bytes (used for streaming hashes of the whole file).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, off)
    }
}

fn read_up_to(f: &dyn ReadAt, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_meta_at(f: &dyn ReadAt, off: u64, endian: Option<Endian>) -> std::io::Result<std::result::Result<(Meta, Endian), MetaProblem>> {
    let mut b = vec![0u8; PAGE_HEADER_SIZE + META_SIZE];
    let n = read_up_to(f, off, &mut b)?;
    if n < b.len() {
        return Ok(Err(MetaProblem::Missing));
    }
    let e = match endian.or_else(|| meta::detect_endian(&b[PAGE_HEADER_SIZE..])) {
        Some(e) => e,
        None => return Ok(Err(MetaProblem::BadMagic(Endian::Little.u32(&b[PAGE_HEADER_SIZE..])))),
    };
    Ok(meta::parse(&b, e).map(|m| (m, e)))
}
