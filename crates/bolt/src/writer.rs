//! A streaming bulk loader: writes a fresh, compact bbolt file from buckets whose keys arrive
//! in ascending order.
//!
//! Why hand-written: no crate writes bbolt files; and a restore never needs in-place updates,
//! only a bulk load, which is far simpler than a B+tree with splits. Pages are written in one
//! pass, children before parents (leaves as they fill, then branch levels as they fill), so
//! memory stays at one pending node per tree level (plus any single oversized value) whatever
//! the file's size.
//!
//! Layout decisions, each valid for bbolt (`tx_check.go`) and etcd:
//! * leaves and branches are filled to the page (bbolt splits at 50% only as a write
//!   heuristic; readers accept any fill); a node that does not fit a page gets overflow pages;
//! * a bucket is inlined where bbolt would inline it (`bucket.go` `inlineable`: one leaf, no
//!   sub-buckets, `16 + Σ(16 + k + v) <= pageSize / 4`); the root bucket never is;
//! * the freelist is an empty page (what a freshly initialised bbolt file has), or absent
//!   (`pgidNoFreelist`, what etcd on Linux writes): [`FreelistMode`];
//! * both meta pages carry the same root; meta 0 has txid `T`, meta 1 `T - 1`, as a snapshot's
//!   `Tx.WriteTo` writes them. Integers are little-endian (the byte order of every platform
//!   this tool is built for except s390x; the writer uses the build target's order).

use std::io::{self, Seek, SeekFrom, Write};

use crate::meta::{fnv1a64, MAGIC, NO_FREELIST, VERSION};
use crate::page::{BRANCH_PAGE_FLAG, BUCKET_LEAF_FLAG, ELEMENT_SIZE, FREELIST_PAGE_FLAG, LEAF_PAGE_FLAG, META_PAGE_FLAG, PAGE_HEADER_SIZE};

/// bbolt's limits (`bucket.go`).
pub const MAX_KEY_SIZE: usize = 32768;
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

/// How the freelist is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreelistMode {
    /// An empty freelist page (portable: any bbolt opens it as is).
    EmptyPage,
    /// No freelist page (`meta.freelist = u64::MAX`), as etcd on Linux writes.
    NotSynced,
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub page_size: u32,
    pub freelist: FreelistMode,
    /// Transaction id of meta 0 (meta 1 gets one less); at least 1.
    pub txid: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { page_size: 4096, freelist: FreelistMode::EmptyPage, txid: 2 }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub pages: u64,
    pub bytes: u64,
    pub root: u64,
}

/// Errors of the writer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("key {key} is not after the previous key in bucket {bucket}")]
    Unsorted { bucket: String, key: String },
    #[error("empty key in bucket {bucket}")]
    EmptyKey { bucket: String },
    #[error("key of {0} bytes exceeds bbolt's limit of 32768")]
    KeyTooLarge(usize),
    #[error("value of {0} bytes exceeds bbolt's limit")]
    ValueTooLarge(usize),
    #[error("end_bucket without a matching begin_bucket")]
    NoOpenBucket,
}

struct Entry {
    flags: u32,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[derive(Default)]
struct Builder {
    name: Vec<u8>,
    sequence: u64,
    leaf: Vec<Entry>,
    leaf_size: usize,
    has_sub_bucket: bool,
    /// Pending branch entries per level: (first key of child, child pgid).
    levels: Vec<Vec<(Vec<u8>, u64)>>,
    level_sizes: Vec<usize>,
    pages_written: bool,
    last_key: Option<Vec<u8>>,
}

/// Streams a bbolt file into `out` (which must start empty at offset 0).
pub struct Writer<W: Write + Seek> {
    out: W,
    opts: WriterOptions,
    ps: usize,
    next: u64,
    stack: Vec<Builder>,
    scratch: Vec<u8>,
}

impl<W: Write + Seek> Writer<W> {
    pub fn new(mut out: W, opts: WriterOptions) -> Result<Self, WriteError> {
        let ps = opts.page_size as usize;
        assert!(ps.is_power_of_two() && ps >= 1024, "page size must be a power of two >= 1024");
        // Pages 0 and 1 (metas) are written last; reserve them.
        out.write_all(&vec![0u8; 2 * ps])?;
        Ok(Writer { out, opts, ps, next: 2, stack: vec![Builder::default()], scratch: Vec::new() })
    }

    fn bucket_name(&self) -> String {
        let names: Vec<String> = self.stack.iter().skip(1).map(|b| crate::walk::show(&b.name)).collect();
        if names.is_empty() {
            "<root>".into()
        } else {
            names.join("/")
        }
    }

    fn check_key(&mut self, key: &[u8]) -> Result<(), WriteError> {
        if key.is_empty() {
            return Err(WriteError::EmptyKey { bucket: self.bucket_name() });
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(WriteError::KeyTooLarge(key.len()));
        }
        let b = self.stack.last().expect("root builder");
        if b.last_key.as_deref().is_some_and(|l| key <= l) {
            return Err(WriteError::Unsorted { bucket: self.bucket_name(), key: crate::walk::show(key) });
        }
        let b = self.stack.last_mut().expect("root builder");
        match &mut b.last_key {
            Some(l) => {
                l.clear();
                l.extend_from_slice(key)
            }
            None => b.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    /// Add a key/value to the innermost open bucket. Keys must be strictly ascending.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), WriteError> {
        if value.len() > MAX_VALUE_SIZE {
            return Err(WriteError::ValueTooLarge(value.len()));
        }
        self.check_key(key)?;
        self.add_entry(Entry { flags: 0, key: key.to_vec(), value: value.to_vec() })
    }

    /// Open a sub-bucket `name` of the innermost open bucket (top-level when none is open).
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<(), WriteError> {
        self.check_key(name)?;
        self.stack.push(Builder { name: name.to_vec(), ..Default::default() });
        Ok(())
    }

    /// Set the innermost open bucket's sequence (`NextSequence` state).
    pub fn set_sequence(&mut self, seq: u64) {
        self.stack.last_mut().expect("builder").sequence = seq;
    }

    /// Close the innermost open bucket.
    pub fn end_bucket(&mut self) -> Result<(), WriteError> {
        if self.stack.len() < 2 {
            return Err(WriteError::NoOpenBucket);
        }
        let b = self.stack.pop().expect("bucket");
        let name = b.name.clone();
        let value = self.finish_bucket(b, false)?;
        let parent = self.stack.last_mut().expect("parent");
        parent.has_sub_bucket = true;
        self.add_entry(Entry { flags: BUCKET_LEAF_FLAG, key: name, value })
    }

    /// Depth of open buckets (0: only the root is open).
    pub fn depth(&self) -> usize {
        self.stack.len() - 1
    }

    fn add_entry(&mut self, e: Entry) -> Result<(), WriteError> {
        let size = ELEMENT_SIZE + e.key.len() + e.value.len();
        let b = self.stack.last_mut().expect("builder");
        if !b.leaf.is_empty() && PAGE_HEADER_SIZE + b.leaf_size + size > self.ps {
            self.flush_leaf()?;
        }
        let b = self.stack.last_mut().expect("builder");
        b.leaf.push(e);
        b.leaf_size += size;
        if b.leaf.len() == 0xFFFE {
            self.flush_leaf()?;
        }
        Ok(())
    }

    /// Write `scratch` as a node at the next page id; returns the id.
    fn write_node(&mut self) -> Result<u64, WriteError> {
        let id = self.next;
        let pages = self.scratch.len().div_ceil(self.ps).max(1);
        self.scratch[0..8].copy_from_slice(&id.to_le_bytes());
        self.scratch[12..16].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
        self.scratch.resize(pages * self.ps, 0);
        self.out.write_all(&self.scratch)?;
        self.next += pages as u64;
        Ok(id)
    }

    fn encode_leaf(scratch: &mut Vec<u8>, entries: &[Entry]) {
        let n = entries.len();
        scratch.clear();
        scratch.resize(PAGE_HEADER_SIZE + ELEMENT_SIZE * n, 0);
        scratch[8..10].copy_from_slice(&LEAF_PAGE_FLAG.to_le_bytes());
        scratch[10..12].copy_from_slice(&(n as u16).to_le_bytes());
        for (i, e) in entries.iter().enumerate() {
            let off = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
            let pos = (scratch.len() - off) as u32;
            scratch[off..off + 4].copy_from_slice(&e.flags.to_le_bytes());
            scratch[off + 4..off + 8].copy_from_slice(&pos.to_le_bytes());
            scratch[off + 8..off + 12].copy_from_slice(&(e.key.len() as u32).to_le_bytes());
            scratch[off + 12..off + 16].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
            scratch.extend_from_slice(&e.key);
            scratch.extend_from_slice(&e.value);
        }
    }

    fn flush_leaf(&mut self) -> Result<(), WriteError> {
        let b = self.stack.last_mut().expect("builder");
        let entries = std::mem::take(&mut b.leaf);
        b.leaf_size = 0;
        b.pages_written = true;
        Self::encode_leaf(&mut self.scratch, &entries);
        let id = self.write_node()?;
        let first = entries.into_iter().next().map(|e| e.key).unwrap_or_default();
        self.push_branch(0, first, id)
    }

    fn push_branch(&mut self, level: usize, key: Vec<u8>, child: u64) -> Result<(), WriteError> {
        let size = ELEMENT_SIZE + key.len();
        let b = self.stack.last_mut().expect("builder");
        if b.levels.len() <= level {
            b.levels.resize_with(level + 1, Vec::new);
            b.level_sizes.resize(level + 1, 0);
        }
        let full = !b.levels[level].is_empty() && (PAGE_HEADER_SIZE + b.level_sizes[level] + size > self.ps || b.levels[level].len() == 0xFFFE);
        if full {
            self.flush_branch(level)?;
        }
        let b = self.stack.last_mut().expect("builder");
        b.levels[level].push((key, child));
        b.level_sizes[level] += size;
        Ok(())
    }

    fn flush_branch(&mut self, level: usize) -> Result<(), WriteError> {
        let b = self.stack.last_mut().expect("builder");
        let entries = std::mem::take(&mut b.levels[level]);
        b.level_sizes[level] = 0;
        let n = entries.len();
        let s = &mut self.scratch;
        s.clear();
        s.resize(PAGE_HEADER_SIZE + ELEMENT_SIZE * n, 0);
        s[8..10].copy_from_slice(&BRANCH_PAGE_FLAG.to_le_bytes());
        s[10..12].copy_from_slice(&(n as u16).to_le_bytes());
        for (i, (k, child)) in entries.iter().enumerate() {
            let off = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
            let pos = (s.len() - off) as u32;
            s[off..off + 4].copy_from_slice(&pos.to_le_bytes());
            s[off + 4..off + 8].copy_from_slice(&(k.len() as u32).to_le_bytes());
            s[off + 8..off + 16].copy_from_slice(&child.to_le_bytes());
            s.extend_from_slice(k);
        }
        let id = self.write_node()?;
        let first = entries.into_iter().next().map(|e| e.0).unwrap_or_default();
        self.push_branch(level + 1, first, id)
    }

    /// Finish the builder `b` (already popped, or the root when `force_page`); returns the
    /// bucket value (header, plus the inline page for an inline bucket).
    fn finish_bucket(&mut self, b: Builder, force_page: bool) -> Result<Vec<u8>, WriteError> {
        let inline_size = PAGE_HEADER_SIZE + b.leaf_size;
        let mut value = Vec::with_capacity(16);
        if !force_page && !b.pages_written && !b.has_sub_bucket && inline_size <= self.ps / 4 {
            value.extend_from_slice(&0u64.to_le_bytes());
            value.extend_from_slice(&b.sequence.to_le_bytes());
            Self::encode_leaf(&mut self.scratch, &b.leaf);
            value.extend_from_slice(&self.scratch);
            return Ok(value);
        }
        let sequence = b.sequence;
        self.stack.push(b);
        {
            let b = self.stack.last().expect("builder");
            if !b.leaf.is_empty() || !b.pages_written {
                self.flush_leaf()?;
            }
        }
        let mut level = 0;
        let root = loop {
            let b = self.stack.last().expect("builder");
            if level + 1 == b.levels.len() && b.levels[level].len() == 1 {
                break b.levels[level][0].1;
            }
            self.flush_branch(level)?;
            level += 1;
        };
        self.stack.pop();
        value.extend_from_slice(&root.to_le_bytes());
        value.extend_from_slice(&sequence.to_le_bytes());
        Ok(value)
    }

    /// Close every open bucket, write the freelist and both meta pages, and flush. Returns the
    /// output (not synced: the caller fsyncs) and what was written.
    pub fn finish(mut self) -> Result<(W, WriteStats), WriteError> {
        while self.stack.len() > 1 {
            self.end_bucket()?;
        }
        let root_builder = self.stack.pop().expect("root");
        self.stack.push(Builder::default()); // placeholder so helpers find a builder
        let value = self.finish_bucket(root_builder, true)?;
        let root = u64::from_le_bytes(value[0..8].try_into().unwrap());
        let freelist = match self.opts.freelist {
            FreelistMode::NotSynced => NO_FREELIST,
            FreelistMode::EmptyPage => {
                self.scratch.clear();
                self.scratch.resize(PAGE_HEADER_SIZE, 0);
                self.scratch[8..10].copy_from_slice(&FREELIST_PAGE_FLAG.to_le_bytes());
                self.write_node()?
            }
        };
        let txid = self.opts.txid.max(1);
        for (id, tx) in [(0u64, txid), (1, txid - 1)] {
            let mut p = vec![0u8; self.ps];
            p[0..8].copy_from_slice(&id.to_le_bytes());
            p[8..10].copy_from_slice(&META_PAGE_FLAG.to_le_bytes());
            let m = &mut p[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + 64];
            m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            m[4..8].copy_from_slice(&VERSION.to_le_bytes());
            m[8..12].copy_from_slice(&self.opts.page_size.to_le_bytes());
            m[16..24].copy_from_slice(&root.to_le_bytes());
            m[32..40].copy_from_slice(&freelist.to_le_bytes());
            m[40..48].copy_from_slice(&self.next.to_le_bytes());
            m[48..56].copy_from_slice(&tx.to_le_bytes());
            let sum = fnv1a64(&m[..56]);
            m[56..64].copy_from_slice(&sum.to_le_bytes());
            self.out.seek(SeekFrom::Start(id * self.ps as u64))?;
            self.out.write_all(&p)?;
        }
        self.out.seek(SeekFrom::Start(self.next * self.ps as u64))?;
        self.out.flush()?;
        let stats = WriteStats { pages: self.next, bytes: self.next * self.ps as u64, root };
        Ok((self.out, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn roundtrip(fill: impl FnOnce(&mut Writer<Cursor<Vec<u8>>>), mode: FreelistMode) -> (tempfile::TempDir, crate::Db, Vec<String>) {
        let mut w = Writer::new(Cursor::new(Vec::new()), WriterOptions { freelist: mode, ..Default::default() }).unwrap();
        fill(&mut w);
        let (out, stats) = w.finish().unwrap();
        let bytes = out.into_inner();
        assert_eq!(bytes.len() as u64, stats.bytes);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.db");
        std::fs::write(&p, bytes).unwrap();
        let db = crate::Db::open(&p).unwrap();
        let mut seen = Vec::new();
        let r = crate::walk(&db, &mut |path: &[Vec<u8>], k: &[u8], v: Option<&[u8]>| {
            seen.push(format!("{}:{}:{}", path.len(), String::from_utf8_lossy(k), v.map(|v| v.len() as i64).unwrap_or(-1)));
        });
        assert!(r.is_clean(), "{:?}", r.faults);
        (d, db, seen)
    }

    #[test]
    fn many_keys_make_branches_and_overflow() {
        let (_d, db, seen) = roundtrip(
            |w| {
                w.begin_bucket(b"key").unwrap();
                for i in 0..20_000u32 {
                    let v = vec![b'x'; if i % 1000 == 7 { 20_000 } else { (i % 300) as usize }];
                    w.put(&i.to_be_bytes(), &v).unwrap();
                }
                w.end_bucket().unwrap();
                w.begin_bucket(b"meta").unwrap();
                w.put(b"consistent_index", &5u64.to_be_bytes()).unwrap();
                w.end_bucket().unwrap();
            },
            FreelistMode::EmptyPage,
        );
        assert_eq!(seen.len(), 2 + 20_000 + 1);
        let key = db.bucket(&[b"key"]).unwrap().unwrap();
        assert!(key.root_page().is_some());
        assert_eq!(key.get(&7007u32.to_be_bytes()).unwrap().unwrap().len(), 20_000);
        assert_eq!(key.get(&299u32.to_be_bytes()).unwrap().unwrap().len(), 299);
        let meta = db.bucket(&[b"meta"]).unwrap().unwrap();
        assert_eq!(meta.root_page(), None, "small bucket is inline");
        assert_eq!(db.meta().freelist, db.meta().pgid - 1);
        // The reverse cursor yields exactly the forward order backwards, over branches, leaves
        // and overflow values; also on the inline bucket.
        for b in [key, meta] {
            let (mut fwd, mut rev) = (Vec::new(), Vec::new());
            let mut c = b.cursor().unwrap();
            while let Some(e) = c.next().unwrap() {
                fwd.push((e.key.to_vec(), e.value.len()));
            }
            let mut c = b.cursor_rev().unwrap();
            while let Some(e) = c.next().unwrap() {
                rev.push((e.key.to_vec(), e.value.len()));
            }
            rev.reverse();
            assert!(!fwd.is_empty());
            assert_eq!(fwd, rev);
        }
    }

    #[test]
    fn nested_empty_and_not_synced() {
        let (_d, db, seen) = roundtrip(
            |w| {
                w.begin_bucket(b"a").unwrap();
                w.begin_bucket(b"inner").unwrap();
                w.put(b"k", b"v").unwrap();
                w.end_bucket().unwrap();
                w.put(b"z", b"1").unwrap();
                w.end_bucket().unwrap();
                w.begin_bucket(b"empty").unwrap();
                w.end_bucket().unwrap();
            },
            FreelistMode::NotSynced,
        );
        assert_eq!(seen, vec!["0:a:-1", "1:inner:-1", "2:k:1", "1:z:1", "0:empty:-1"]);
        assert!(db.meta().freelist_not_synced());
        // a bucket holding a sub-bucket is not inlined (bbolt's rule)
        assert!(db.bucket(&[b"a"]).unwrap().unwrap().root_page().is_some());
        assert_eq!(db.bucket(&[b"a", b"inner"]).unwrap().unwrap().get(b"k").unwrap().unwrap(), b"v");
    }

    #[test]
    fn unsorted_and_empty_keys_are_refused() {
        let mut w = Writer::new(Cursor::new(Vec::new()), WriterOptions::default()).unwrap();
        w.begin_bucket(b"b").unwrap();
        w.put(b"2", b"").unwrap();
        assert!(matches!(w.put(b"1", b""), Err(WriteError::Unsorted { .. })));
        assert!(matches!(w.put(b"", b""), Err(WriteError::EmptyKey { .. })));
        w.end_bucket().unwrap();
        assert!(matches!(w.begin_bucket(b"a"), Err(WriteError::Unsorted { .. })));
    }

    #[test]
    fn value_offsets_point_at_the_values_in_the_file() {
        // Small values, values with overflow pages, and an inline bucket (no offsets).
        let (_d, db, _) = roundtrip(
            |w| {
                w.begin_bucket(b"big").unwrap();
                for i in 0..2000u32 {
                    let v = vec![(i % 251) as u8; if i % 97 == 0 { 9000 } else { 20 + (i % 50) as usize }];
                    w.put(format!("k{i:05}").as_bytes(), &v).unwrap();
                }
                w.end_bucket().unwrap();
                w.begin_bucket(b"small").unwrap();
                w.put(b"x", b"inline").unwrap();
                w.end_bucket().unwrap();
            },
            FreelistMode::EmptyPage,
        );
        for reverse in [false, true] {
            let b = db.bucket(&[b"big"]).unwrap().unwrap();
            let mut c = if reverse { b.cursor_rev().unwrap() } else { b.cursor().unwrap() };
            assert_eq!(c.value_offset(), None);
            let mut n = 0;
            while let Some(e) = c.next().unwrap() {
                let value = e.value.to_vec();
                let (off, len) = c.value_offset().expect("a page-based bucket's entry");
                let mut got = vec![0u8; len];
                db.read_at(&mut got, off).unwrap();
                assert_eq!(got, value);
                n += 1;
            }
            assert_eq!(n, 2000);
        }
        let b = db.bucket(&[b"small"]).unwrap().unwrap();
        let mut c = b.cursor().unwrap();
        assert!(c.next().unwrap().is_some());
        assert_eq!(c.value_offset(), None, "inline buckets have no offset of their own");

        // A walk gives each entry the offset the cursor gives.
        struct Offsets(Vec<(Vec<u8>, Vec<u8>, Option<u64>)>);
        impl crate::Visitor for Offsets {
            fn entry(&mut self, _: &[Vec<u8>], _: &[u8], value: Option<&[u8]>) {
                assert!(value.is_none(), "the walk gives values with entry_at");
            }
            fn entry_at(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>, at: Option<u64>) {
                if let [bucket] = path {
                    assert!(value.is_some());
                    self.0.push((bucket.clone(), key.to_vec(), at));
                }
            }
        }
        let mut seen = Offsets(Vec::new());
        assert!(crate::walk(&db, &mut seen).faults.is_empty());
        let b = db.bucket(&[b"big"]).unwrap().unwrap();
        let mut c = b.cursor().unwrap();
        let mut walked = seen.0.iter();
        while let Some(e) = c.next().unwrap() {
            let key = e.key.to_vec();
            let (bucket, walked_key, at) = walked.next().unwrap();
            assert_eq!((bucket.as_slice(), walked_key, *at), (&b"big"[..], &key, c.value_offset().map(|(o, _)| o)));
        }
        assert_eq!(walked.next(), Some(&(b"small".to_vec(), b"x".to_vec(), None)), "inline buckets have no offset in a walk either");
    }
}
