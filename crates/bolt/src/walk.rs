//! A full walk of the database in key order, with bbolt's structural check done on the way.
//!
//! One pass visits every entry of every bucket (nested and inline buckets included) depth
//! first in key order, and checks what `bbolt/tx_check.go` checks:
//!
//! 1. every page reached from the root is a branch or leaf page whose header id equals its
//!    position, and is reached exactly once (overflow pages included);
//! 2. no page id lies at or beyond the high-water mark (`meta.pgid`);
//! 3. keys are strictly ascending within a page, and every key of child *i* of a branch is
//!    `>=` branch key *i* and `<` branch key *i+1*;
//! 4. no page id is twice in the freelist, no freed page is reachable, and every page below
//!    the high-water mark is reachable, free, a meta page or the freelist page. When the
//!    freelist is not synced (etcd on Linux) every unreachable page counts as free, as bbolt
//!    rebuilds it that way on open.
//!
//! A damaged node is reported and its subtree skipped; the walk goes on with its siblings, so
//! one report names every fault (grouped into ranges for runs of unreachable pages).

use crate::db::Db;
use crate::error::Fault;
use crate::freelist;
use crate::page::{bucket_header, Node};

/// Bucket nesting and tree depth beyond which the file is treated as malformed.
const MAX_DEPTH: usize = 64;
/// Faults kept in detail; further ones are only counted.
const MAX_FAULTS: usize = 1000;

/// Receives every entry of the database, depth first, in key order.
pub trait Visitor {
    /// `path` holds the names of the enclosing buckets (empty for the root bucket's entries,
    /// which are the top-level buckets). `value` is `None` for a nested bucket, whose
    /// entries follow with `path` extended by `key`.
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>);

    /// [`Visitor::entry`], with the file offset where `value` lies when the entry is in a page
    /// of its own (None in an inline bucket, stored inside its parent's value, and for a
    /// nested bucket): the same place [`crate::Cursor::value_offset`] gives.
    fn entry_at(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>, at: Option<u64>) {
        let _ = at;
        self.entry(path, key, value)
    }
}

impl<F: FnMut(&[Vec<u8>], &[u8], Option<&[u8]>)> Visitor for F {
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
        self(path, key, value)
    }
}

/// What the walk found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Faults in the order found (at most 1000 kept).
    pub faults: Vec<Fault>,
    /// Total number of faults, including those not kept.
    pub fault_count: usize,
    /// Pages below the high-water mark.
    pub pages_total: u64,
    /// Branch, leaf and overflow pages reached from the root.
    pub pages_in_use: u64,
    /// Free pages (from the freelist, or unreachable ones when it is not synced).
    pub pages_free: u64,
    /// Pages of the freelist itself.
    pub pages_freelist: u64,
    /// Entries visited (all buckets, all depths).
    pub entries: u64,
    /// Warnings that are not damage to the data: a damaged meta page with a good twin.
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.fault_count == 0
    }
}

struct Bits(Vec<u64>);
impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64)
    }
}

struct Walker<'a, V: ?Sized> {
    db: &'a Db,
    visitor: &'a mut V,
    reached: Bits,
    report: CheckReport,
    pool: Vec<Vec<u8>>,
    path: Vec<Vec<u8>>,
}

/// Walk the whole database, calling `visitor` for every entry, and check its structure.
pub fn walk<V: Visitor + ?Sized>(db: &Db, visitor: &mut V) -> CheckReport {
    let hw = db.meta().pgid;
    let mut w = Walker { db, visitor, reached: Bits::new(hw), report: CheckReport::default(), pool: Vec::new(), path: Vec::new() };
    w.report.pages_total = hw;
    w.report.warnings = db.warnings();
    w.reached.set(0);
    w.reached.set(1);
    w.tree(db.meta().root, None, None, 0, "the meta page's root".to_string());
    w.finish();
    w.report
}

/// Check the structure only.
pub fn check(db: &Db) -> CheckReport {
    walk(db, &mut |_: &[Vec<u8>], _: &[u8], _: Option<&[u8]>| {})
}

impl<V: Visitor + ?Sized> Walker<'_, V> {
    fn fault(&mut self, f: Fault) {
        self.report.fault_count += 1;
        if self.report.faults.len() < MAX_FAULTS {
            self.report.faults.push(f);
        }
    }

    /// Mark `pgid` and its overflow as reached; false (with a fault) if any already was.
    fn mark(&mut self, pgid: u64, overflow: u32) -> bool {
        for id in pgid..=pgid + overflow as u64 {
            if self.reached.get(id) {
                let off = self.db.page_offset(id);
                self.fault(Fault::new(id, off, "page reached more than once (multiple references)"));
                return false;
            }
        }
        for id in pgid..=pgid + overflow as u64 {
            self.reached.set(id);
        }
        self.report.pages_in_use += overflow as u64 + 1;
        true
    }

    /// Walk the subtree rooted at page `pgid`; every key must lie in `[lower, upper)`.
    /// `from` says what refers to the page, for fault reports.
    fn tree(&mut self, pgid: u64, lower: Option<&[u8]>, upper: Option<&[u8]>, depth: usize, from: String) {
        if depth > MAX_DEPTH {
            let off = self.db.page_offset(pgid);
            self.fault(Fault::new(pgid, off, format!("tree deeper than {MAX_DEPTH} levels")));
            return;
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        match self.db.read_node_into(pgid, &mut buf) {
            Err(mut f) => {
                f.what = format!("{} (referenced by {from})", f.what);
                self.fault(f)
            }
            Ok(h) => {
                if self.mark(pgid, h.overflow) {
                    match Node::parse(&buf, pgid, self.db.page_offset(pgid), self.db.endian()) {
                        Ok(node) => self.node(&node, true, lower, upper, depth),
                        Err(f) => self.fault(f),
                    }
                }
            }
        }
        self.pool.push(buf);
    }

    fn key_order(&mut self, node: &Node, i: usize, key: &[u8], prev: Option<&[u8]>, lower: Option<&[u8]>, upper: Option<&[u8]>) -> bool {
        let off = node.elem_offset(i);
        let what = if let Some(p) = prev.filter(|p| key <= *p) {
            format!("key {} out of order: not after the previous key {}", show(key), show(p))
        } else if let Some(l) = lower.filter(|l| key < *l) {
            format!("key {} is below its parent branch key {}", show(key), show(l))
        } else if let Some(u) = upper.filter(|u| key >= *u) {
            format!("key {} is not below the next branch key {}", show(key), show(u))
        } else {
            return true;
        };
        self.fault(Fault::new(node.pgid, off, what));
        false
    }

    /// `paged`: the node is a page of its own (not an inline bucket's).
    fn node(&mut self, node: &Node, paged: bool, lower: Option<&[u8]>, upper: Option<&[u8]>, depth: usize) {
        let mut prev: Option<&[u8]> = None;
        for i in 0..node.count() {
            if node.is_leaf() {
                let e = match node.leaf(i) {
                    Ok(e) => e,
                    Err(f) => return self.fault(f),
                };
                if !self.key_order(node, i, e.key, prev, lower, upper) {
                    return;
                }
                prev = Some(e.key);
                self.report.entries += 1;
                if e.is_bucket() {
                    self.visitor.entry(&self.path, e.key, None);
                    let value_at = node.base + (e.value.as_ptr() as usize - node.buf.as_ptr() as usize) as u64;
                    self.path.push(e.key.to_vec());
                    self.bucket(node.pgid, value_at, e.value, depth);
                    self.path.pop();
                } else {
                    let at = paged.then(|| node.base + (e.value.as_ptr() as usize - node.buf.as_ptr() as usize) as u64);
                    self.visitor.entry_at(&self.path, e.key, Some(e.value), at);
                }
            } else {
                let (key, child) = match node.branch(i) {
                    Ok(x) => x,
                    Err(f) => return self.fault(f),
                };
                if !self.key_order(node, i, key, prev, lower, upper) {
                    return;
                }
                prev = Some(key);
                let next = if i + 1 < node.count() {
                    match node.branch(i + 1) {
                        Ok((k, _)) => Some(k),
                        Err(f) => return self.fault(f),
                    }
                } else {
                    upper
                };
                self.tree(child, Some(key), next, depth + 1, format!("branch page {} element {i}", node.pgid));
            }
        }
    }

    /// Walk a bucket whose header is `value` (found at file offset `value_at` in page `pgid`).
    fn bucket(&mut self, pgid: u64, value_at: u64, value: &[u8], depth: usize) {
        if self.path.len() > MAX_DEPTH {
            return self.fault(Fault::new(pgid, value_at, format!("buckets nested deeper than {MAX_DEPTH}")));
        }
        let Some((h, inline)) = bucket_header(value, self.db.endian()) else {
            return self.fault(Fault::new(pgid, value_at, format!("bucket value of {} bytes is shorter than a bucket header", value.len())));
        };
        if h.root != 0 {
            let from = format!("bucket {} in page {pgid}", show(self.path.last().map(|p| p.as_slice()).unwrap_or(b"")));
            return self.tree(h.root, None, None, depth + 1, from);
        }
        match Node::parse(inline, pgid, value_at + 16, self.db.endian()) {
            Ok(node) if node.is_leaf() => self.node(&node, false, None, None, depth + 1),
            Ok(_) => self.fault(Fault::new(pgid, value_at + 16, "inline bucket page is a branch page")),
            Err(f) => self.fault(f),
        }
    }

    fn finish(&mut self) {
        let db = self.db;
        let hw = db.meta().pgid;
        let mut free = Bits::new(hw);
        let synced = !db.meta().freelist_not_synced();
        if synced {
            let fl = db.meta().freelist;
            let mut buf = Vec::new();
            match db.read_node_into(fl, &mut buf) {
                Err(f) => self.fault(f),
                Ok(h) => {
                    if self.mark(fl, h.overflow) {
                        self.report.pages_in_use -= h.overflow as u64 + 1;
                        self.report.pages_freelist = h.overflow as u64 + 1;
                    }
                    match freelist::parse(&buf, fl, db.page_offset(fl), db.endian()) {
                        Err(f) => self.fault(f),
                        Ok(ids) => {
                            for id in ids {
                                let off = db.page_offset(fl);
                                if id < 2 || id >= hw {
                                    self.fault(Fault::new(fl, off, format!("freelist names page {id}, outside 2..{hw}")));
                                } else if free.get(id) {
                                    self.fault(Fault::new(id, db.page_offset(id), "page freed twice (listed twice in the freelist)"));
                                } else {
                                    free.set(id);
                                    self.report.pages_free += 1;
                                    if self.reached.get(id) {
                                        self.fault(Fault::new(id, db.page_offset(id), "page is both reachable and free"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Unreachable pages: free when the freelist is not synced, else faults grouped in runs.
        let mut run: Option<(u64, u64)> = None;
        for id in 2..=hw {
            let lost = id < hw && !self.reached.get(id) && !free.get(id);
            if lost && !synced {
                self.report.pages_free += 1;
                continue;
            }
            match (lost, run) {
                (true, None) => run = Some((id, id)),
                (true, Some((a, _))) => run = Some((a, id)),
                (false, Some((a, b))) => {
                    let what = if a == b {
                        "page is neither reachable nor free (unreachable unfreed)".to_string()
                    } else {
                        format!("pages {a}-{b} ({} pages) are neither reachable nor free (unreachable unfreed)", b - a + 1)
                    };
                    self.fault(Fault::new(a, db.page_offset(a), what));
                    run = None;
                }
                (false, None) => {}
            }
        }
    }
}

/// Render a key for a fault report: printable ASCII as text, else hex; long keys shortened.
pub fn show(key: &[u8]) -> String {
    let k = &key[..key.len().min(64)];
    let more = if key.len() > 64 { "…" } else { "" };
    if k.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}{more}", String::from_utf8_lossy(k))
    } else {
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}
