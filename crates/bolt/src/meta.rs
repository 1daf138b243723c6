//! The meta page (pages 0 and 1).
//!
//! Layout (`bbolt/db.go` `type meta`, payload at page offset 16, 64 bytes):
//!
//! | off | type | field |
//! |----:|------|-------|
//! | 0 | u32 | magic `0xED0CDAED` |
//! | 4 | u32 | version `2` |
//! | 8 | u32 | page size |
//! | 12 | u32 | flags (0) |
//! | 16 | u64 | root bucket's root page id |
//! | 24 | u64 | root bucket's sequence |
//! | 32 | u64 | freelist page id, or `u64::MAX` when the freelist is not synced |
//! | 40 | u64 | high-water mark: number of pages in use by the file |
//! | 48 | u64 | transaction id |
//! | 56 | u64 | FNV-1a 64 checksum of bytes 0..56 (`meta.sum64`) |
//!
//! The active meta is the valid one with the higher txid (`db.meta()`); the database can
//! be opened while one of the two is valid.

use crate::endian::Endian;
use crate::error::MetaProblem;
use crate::page::{META_PAGE_FLAG, PAGE_HEADER_SIZE};

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// `pgidNoFreelist`: the meta's freelist field when the freelist is not written to disk.
pub const NO_FREELIST: u64 = u64::MAX;
/// Size of the meta payload in bytes.
pub const META_SIZE: usize = 64;

/// A decoded, validated meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

impl Meta {
    /// True when the freelist was not written (etcd on Linux sets `NoFreelistSync`).
    pub fn freelist_not_synced(&self) -> bool {
        self.freelist == NO_FREELIST
    }
}

/// FNV-1a 64 over `data`, as Go's `hash/fnv.New64a`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Detect byte order from the magic at the start of a meta payload.
pub fn detect_endian(payload: &[u8]) -> Option<Endian> {
    if payload.len() < 4 {
        return None;
    }
    if Endian::Little.u32(payload) == MAGIC {
        Some(Endian::Little)
    } else if Endian::Big.u32(payload) == MAGIC {
        Some(Endian::Big)
    } else {
        None
    }
}

/// Decode and validate the meta page held in `page` (header + payload).
pub fn parse(page: &[u8], e: Endian) -> Result<Meta, MetaProblem> {
    if page.len() < PAGE_HEADER_SIZE + META_SIZE {
        return Err(MetaProblem::Missing);
    }
    let p = &page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
    let magic = e.u32(&p[0..]);
    if magic != MAGIC {
        return Err(MetaProblem::BadMagic(magic));
    }
    let version = e.u32(&p[4..]);
    if version != VERSION {
        return Err(MetaProblem::BadVersion(version));
    }
    let stored = e.u64(&p[56..]);
    let computed = fnv1a64(&p[..56]);
    if stored != computed {
        return Err(MetaProblem::BadChecksum { stored, computed });
    }
    let flags = e.u16(&page[8..]);
    if flags & META_PAGE_FLAG == 0 {
        return Err(MetaProblem::NotMetaPage { flags });
    }
    let page_size = e.u32(&p[8..]);
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(MetaProblem::BadPageSize(page_size));
    }
    Ok(Meta {
        page_size,
        flags: e.u32(&p[12..]),
        root: e.u64(&p[16..]),
        sequence: e.u64(&p[24..]),
        freelist: e.u64(&p[32..]),
        pgid: e.u64(&p[40..]),
        txid: e.u64(&p[48..]),
        checksum: stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(e: Endian, txid: u64) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        let put32 = |b: &mut [u8], v: u32| match e {
            Endian::Little => b[..4].copy_from_slice(&v.to_le_bytes()),
            Endian::Big => b[..4].copy_from_slice(&v.to_be_bytes()),
        };
        let put64 = |b: &mut [u8], v: u64| match e {
            Endian::Little => b[..8].copy_from_slice(&v.to_le_bytes()),
            Endian::Big => b[..8].copy_from_slice(&v.to_be_bytes()),
        };
        match e {
            Endian::Little => p[8..10].copy_from_slice(&4u16.to_le_bytes()),
            Endian::Big => p[8..10].copy_from_slice(&4u16.to_be_bytes()),
        }
        let m = &mut p[16..80];
        put32(&mut m[0..], MAGIC);
        put32(&mut m[4..], 2);
        put32(&mut m[8..], 4096);
        put64(&mut m[16..], 3);
        put64(&mut m[32..], NO_FREELIST);
        put64(&mut m[40..], 4);
        put64(&mut m[48..], txid);
        let sum = fnv1a64(&m[..56]);
        put64(&mut m[56..], sum);
        p
    }

    #[test]
    fn fnv_matches_go() {
        // Go: fnv.New64a() of "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn both_byte_orders_parse() {
        for e in [Endian::Little, Endian::Big] {
            let p = page(e, 7);
            assert_eq!(detect_endian(&p[16..]), Some(e));
            let m = parse(&p, e).unwrap();
            assert_eq!((m.page_size, m.root, m.pgid, m.txid), (4096, 3, 4, 7));
            assert!(m.freelist_not_synced());
        }
    }

    #[test]
    fn flipped_byte_fails_checksum() {
        let mut p = page(Endian::Little, 7);
        p[16 + 40] ^= 1;
        assert!(matches!(parse(&p, Endian::Little), Err(MetaProblem::BadChecksum { .. })));
        let mut p = page(Endian::Little, 7);
        p[16] ^= 1;
        assert!(matches!(parse(&p, Endian::Little), Err(MetaProblem::BadMagic(_))));
    }
}
