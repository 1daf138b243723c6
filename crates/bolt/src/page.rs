//! Pages and the nodes stored in them.
//!
//! Page header, 16 bytes (`bbolt/page.go` `type page`):
//!
//! | off | type | field |
//! |----:|------|-------|
//! | 0 | u64 | id: must equal the page's position (`fastCheck`) |
//! | 8 | u16 | flags: `0x01` branch, `0x02` leaf, `0x04` meta, `0x10` freelist |
//! | 10 | u16 | count of elements |
//! | 12 | u32 | overflow: extra contiguous pages the node occupies (they have no header) |
//!
//! Elements follow the header, 16 bytes each; key and value bytes follow the element array.
//! `pos` is relative to the element's own address (`node.write`).
//!
//! * leaf element: `u32 flags` (`0x01` = the value is a bucket header), `u32 pos`, `u32 ksize`, `u32 vsize`;
//!   the value follows the key.
//! * branch element: `u32 pos`, `u32 ksize`, `u64 child pgid`; the key is the first key of the child's subtree.

use crate::endian::Endian;
use crate::error::Fault;

pub const PAGE_HEADER_SIZE: usize = 16;
pub const ELEMENT_SIZE: usize = 16;
pub const BRANCH_PAGE_FLAG: u16 = 0x01;
pub const LEAF_PAGE_FLAG: u16 = 0x02;
pub const META_PAGE_FLAG: u16 = 0x04;
pub const FREELIST_PAGE_FLAG: u16 = 0x10;
/// Leaf element flag: the value is a bucket (`bucketLeafFlag`).
pub const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Size of a bucket header (`struct bucket { root pgid; sequence u64 }`).
pub const BUCKET_HEADER_SIZE: usize = 16;

/// The decoded page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(b: &[u8], e: Endian) -> PageHeader {
        PageHeader { id: e.u64(&b[0..]), flags: e.u16(&b[8..]), count: e.u16(&b[10..]), overflow: e.u32(&b[12..]) }
    }
}

/// Name a page type as bbolt's `page.typ()` does.
pub fn page_type_name(flags: u16) -> String {
    match flags {
        BRANCH_PAGE_FLAG => "branch".into(),
        LEAF_PAGE_FLAG => "leaf".into(),
        META_PAGE_FLAG => "meta".into(),
        FREELIST_PAGE_FLAG => "freelist".into(),
        f => format!("unknown<{f:02x}>"),
    }
}

/// A bucket header: the value of a leaf element flagged `BUCKET_LEAF_FLAG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketHeader {
    /// Root page id, or 0 for an inline bucket whose page follows the header in the value.
    pub root: u64,
    pub sequence: u64,
}

/// One element of a leaf node.
#[derive(Debug, Clone, Copy)]
pub struct LeafElem<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl LeafElem<'_> {
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF_FLAG != 0
    }
}

/// A branch or leaf node laid over a byte buffer (a page and its overflow, or an inline bucket value).
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub buf: &'a [u8],
    pub header: PageHeader,
    /// Page id used in fault reports (the holding page for inline buckets).
    pub pgid: u64,
    /// Absolute file offset of `buf[0]`.
    pub base: u64,
    pub endian: Endian,
}

impl<'a> Node<'a> {
    /// Lay a node over `buf`, checking the header and that the element array fits.
    pub fn parse(buf: &'a [u8], pgid: u64, base: u64, endian: Endian) -> Result<Node<'a>, Fault> {
        if buf.len() < PAGE_HEADER_SIZE {
            return Err(Fault::new(pgid, base, format!("node of {} bytes is shorter than a page header", buf.len())));
        }
        let header = PageHeader::parse(buf, endian);
        if header.flags != BRANCH_PAGE_FLAG && header.flags != LEAF_PAGE_FLAG {
            return Err(Fault::new(pgid, base + 8, format!("invalid page type {} where a branch or leaf page was expected", page_type_name(header.flags))));
        }
        let need = PAGE_HEADER_SIZE + header.count as usize * ELEMENT_SIZE;
        if need > buf.len() {
            return Err(Fault::new(pgid, base + 10, format!("element count {} does not fit in a node of {} bytes", header.count, buf.len())));
        }
        if header.flags == BRANCH_PAGE_FLAG && header.count == 0 {
            return Err(Fault::new(pgid, base + 10, "branch page with no elements"));
        }
        Ok(Node { buf, header, pgid, base, endian })
    }

    pub fn is_leaf(&self) -> bool {
        self.header.flags == LEAF_PAGE_FLAG
    }

    pub fn count(&self) -> usize {
        self.header.count as usize
    }

    fn slice(&self, elem_off: usize, pos: u32, len: usize, what: &str, i: usize) -> Result<&'a [u8], Fault> {
        let start = elem_off.checked_add(pos as usize);
        match start.and_then(|s| s.checked_add(len).map(|e| (s, e))) {
            Some((s, e)) if e <= self.buf.len() => Ok(&self.buf[s..e]),
            _ => Err(Fault::new(
                self.pgid,
                self.base + elem_off as u64,
                format!("element {i}: {what} (pos {pos}, {len} bytes) runs past the end of the node ({} bytes)", self.buf.len()),
            )),
        }
    }

    /// Leaf element `i` (caller ensures `is_leaf()` and `i < count()`).
    pub fn leaf(&self, i: usize) -> Result<LeafElem<'a>, Fault> {
        let off = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let e = self.endian;
        let b = &self.buf[off..off + ELEMENT_SIZE];
        let (flags, pos, ksize, vsize) = (e.u32(&b[0..]), e.u32(&b[4..]), e.u32(&b[8..]) as usize, e.u32(&b[12..]) as usize);
        let kv = self.slice(off, pos, ksize + vsize, "key and value", i)?;
        Ok(LeafElem { flags, key: &kv[..ksize], value: &kv[ksize..] })
    }

    /// Branch element `i`: (first key of the child, child page id).
    pub fn branch(&self, i: usize) -> Result<(&'a [u8], u64), Fault> {
        let off = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let e = self.endian;
        let b = &self.buf[off..off + ELEMENT_SIZE];
        let (pos, ksize, child) = (e.u32(&b[0..]), e.u32(&b[4..]) as usize, e.u64(&b[8..]));
        let key = self.slice(off, pos, ksize, "key", i)?;
        Ok((key, child))
    }

    /// Absolute file offset of element `i`.
    pub fn elem_offset(&self, i: usize) -> u64 {
        self.base + (PAGE_HEADER_SIZE + i * ELEMENT_SIZE) as u64
    }
}

/// Decode a bucket value: its header and, for an inline bucket, the bytes of its page.
pub fn bucket_header(value: &[u8], e: Endian) -> Option<(BucketHeader, &[u8])> {
    if value.len() < BUCKET_HEADER_SIZE {
        return None;
    }
    Some((BucketHeader { root: e.u64(&value[0..]), sequence: e.u64(&value[8..]) }, &value[BUCKET_HEADER_SIZE..]))
}
