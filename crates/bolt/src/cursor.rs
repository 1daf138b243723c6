//! Buckets and cursors: key-order iteration and point lookups without walking the whole file.

use crate::db::Db;
use crate::error::Fault;
use crate::page::{bucket_header, LeafElem, Node, PageHeader, BUCKET_LEAF_FLAG};

/// A bucket: either a tree rooted at a page, or an inline bucket whose single leaf is stored
/// in its parent's value.
#[derive(Debug, Clone)]
pub struct Bucket<'db> {
    db: &'db Db,
    root: Root,
}

#[derive(Debug, Clone)]
enum Root {
    Page(u64),
    /// The inline page bytes, the page id that holds them and their file offset.
    Inline {
        bytes: Vec<u8>,
        pgid: u64,
        base: u64,
    },
}

impl Db {
    /// The root bucket, whose entries are the top-level buckets.
    pub fn root_bucket(&self) -> Bucket<'_> {
        Bucket { db: self, root: Root::Page(self.meta().root) }
    }

    /// The bucket at `path` (names from the root), if it exists.
    pub fn bucket(&self, path: &[&[u8]]) -> Result<Option<Bucket<'_>>, Fault> {
        let mut b = self.root_bucket();
        for name in path {
            match b.bucket(name)? {
                Some(n) => b = n,
                None => return Ok(None),
            }
        }
        Ok(Some(b))
    }
}

struct Frame {
    buf: Vec<u8>,
    header: PageHeader,
    pgid: u64,
    base: u64,
    idx: usize,
    /// An inline bucket's leaf: `buf` is a copy of part of its holder's value, not a page.
    inline: bool,
}

impl Frame {
    fn node(&self, db: &Db) -> Node<'_> {
        Node { buf: &self.buf, header: self.header, pgid: self.pgid, base: self.base, endian: db.endian() }
    }
}

/// Iterates a bucket's entries in key order (or, from [`Bucket::cursor_rev`], in reverse key
/// order). Entries borrow the cursor, so read one before asking for the next.
pub struct Cursor<'db> {
    db: &'db Db,
    /// Last key first.
    reverse: bool,
    stack: Vec<Frame>,
    /// Pages loaded so far: a tree has fewer pages than the file, so more loads than that
    /// means a damaged file whose branches point back into the tree (a cycle or shared child).
    loads: u64,
    /// Page buffers of popped frames, reused for the next loads (one allocation per tree
    /// level instead of one per page).
    spare: Vec<Vec<u8>>,
}

impl<'db> Bucket<'db> {
    fn load(&self, pgid: u64) -> Result<Frame, Fault> {
        let mut buf = Vec::new();
        let header = self.db.read_node_into(pgid, &mut buf)?;
        let base = self.db.page_offset(pgid);
        Node::parse(&buf, pgid, base, self.db.endian())?;
        Ok(Frame { buf, header, pgid, base, idx: 0, inline: false })
    }

    fn root_frame(&self) -> Result<Frame, Fault> {
        match &self.root {
            Root::Page(p) => self.load(*p),
            Root::Inline { bytes, pgid, base } => {
                let n = Node::parse(bytes, *pgid, *base, self.db.endian())?;
                if !n.is_leaf() {
                    return Err(Fault::new(*pgid, *base, "inline bucket page is not a leaf"));
                }
                Ok(Frame { header: n.header, buf: bytes.clone(), pgid: *pgid, base: *base, idx: 0, inline: true })
            }
        }
    }

    /// The page id of the bucket's root node, or None for an inline bucket.
    pub fn root_page(&self) -> Option<u64> {
        match self.root {
            Root::Page(p) => Some(p),
            Root::Inline { .. } => None,
        }
    }

    /// A cursor positioned before the first entry.
    pub fn cursor(&self) -> Result<Cursor<'db>, Fault> {
        Ok(Cursor { db: self.db, reverse: false, stack: vec![self.root_frame()?], loads: 0, spare: Vec::new() })
    }

    /// A cursor that yields the entries from the last key to the first (etcd's key bucket is
    /// ordered by revision: newest first).
    pub fn cursor_rev(&self) -> Result<Cursor<'db>, Fault> {
        let mut root = self.root_frame()?;
        root.idx = root.header.count as usize;
        Ok(Cursor { db: self.db, reverse: true, stack: vec![root], loads: 0, spare: Vec::new() })
    }

    /// Find `key`: its leaf flags and value.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<(u32, Vec<u8>)>, Fault> {
        let mut f = self.root_frame()?;
        for _ in 0..64 {
            let n = f.node(self.db);
            if n.is_leaf() {
                for i in 0..n.count() {
                    let e = n.leaf(i)?;
                    if e.key == key {
                        return Ok(Some((e.flags, e.value.to_vec())));
                    }
                }
                return Ok(None);
            }
            // Last child whose first key is <= key (bbolt's search).
            let mut child = n.branch(0)?.1;
            for i in 1..n.count() {
                let (k, c) = n.branch(i)?;
                if k > key {
                    break;
                }
                child = c;
            }
            f = self.load(child)?;
        }
        Err(Fault::new(f.pgid, f.base, "tree deeper than 64 levels"))
    }

    /// The value of a plain key, or None (also when `key` names a nested bucket).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Fault> {
        Ok(self.lookup(key)?.filter(|(fl, _)| fl & BUCKET_LEAF_FLAG == 0).map(|(_, v)| v))
    }

    /// The nested bucket named `name`, if any.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'db>>, Fault> {
        let Some((flags, value)) = self.lookup(name)? else { return Ok(None) };
        if flags & BUCKET_LEAF_FLAG == 0 {
            return Ok(None);
        }
        let holder = match &self.root {
            Root::Page(p) => *p,
            Root::Inline { pgid, .. } => *pgid,
        };
        let base = self.db.page_offset(holder);
        let (h, inline) = bucket_header(&value, self.db.endian()).ok_or_else(|| Fault::new(holder, base, "bucket value shorter than a bucket header"))?;
        let root = if h.root != 0 { Root::Page(h.root) } else { Root::Inline { bytes: inline.to_vec(), pgid: holder, base } };
        Ok(Some(Bucket { db: self.db, root }))
    }
}

impl Cursor<'_> {
    /// The next entry in the cursor's order, or None at the end. After a fault the cursor has
    /// moved past the damaged page: calling again goes on with the rest of the tree.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<LeafElem<'_>>, Fault> {
        // Forward, `idx` is the next element; in reverse, the number of elements not yet visited.
        let leaf_index;
        loop {
            let depth = self.stack.len();
            let Some(top) = self.stack.last_mut() else { return Ok(None) };
            let count = top.header.count as usize;
            let done = if self.reverse { top.idx == 0 } else { top.idx >= count };
            if done {
                if let Some(f) = self.stack.pop() {
                    self.spare.push(f.buf);
                }
                continue;
            }
            let i = if self.reverse {
                top.idx -= 1;
                top.idx
            } else {
                top.idx += 1;
                top.idx - 1
            };
            if top.header.flags == crate::page::LEAF_PAGE_FLAG {
                leaf_index = i;
                break;
            }
            if depth > 64 {
                return Err(Fault::new(top.pgid, top.base, "tree deeper than 64 levels"));
            }
            let child = top.node(self.db).branch(i)?.1;
            self.loads += 1;
            if self.loads > self.db.meta().pgid {
                return Err(Fault::new(child, self.db.page_offset(child), "branch pages refer to more pages than the file holds (a cycle)"));
            }
            let mut buf = self.spare.pop().unwrap_or_default();
            let header = self.db.read_node_into(child, &mut buf)?;
            let base = self.db.page_offset(child);
            Node::parse(&buf, child, base, self.db.endian())?;
            let idx = if self.reverse { header.count as usize } else { 0 };
            self.stack.push(Frame { buf, header, pgid: child, base, idx, inline: false });
        }
        let top = self.stack.last().expect("leaf frame");
        Ok(Some(top.node(self.db).leaf(leaf_index)?))
    }

    /// Where in the file the value of the entry [`Cursor::next`] returned last lies: its
    /// offset and length. The bytes there are the value as stored (a page's elements, with
    /// its overflow pages, are contiguous in the file). None before the first entry, after
    /// the last, and for entries of an inline bucket (stored inside their parent's value).
    pub fn value_offset(&self) -> Option<(u64, usize)> {
        let top = self.stack.last()?;
        if top.inline || top.header.flags != crate::page::LEAF_PAGE_FLAG {
            return None;
        }
        let i = if self.reverse { top.idx } else { top.idx.checked_sub(1)? };
        let e = top.node(self.db).leaf(i).ok()?;
        let start = (e.value.as_ptr() as usize).checked_sub(top.buf.as_ptr() as usize)?;
        (start + e.value.len() <= top.buf.len()).then_some((top.base + start as u64, e.value.len()))
    }
}
