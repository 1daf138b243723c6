//! The freelist page (`flags = 0x10`), `bbolt/freelist.go` `read`/`write`.
//!
//! After the page header: when `count < 0xFFFF`, `count` u64 page ids; otherwise the first u64
//! is the real count and the ids follow it. Free and pending ids are merged and sorted on write.
//! The in-memory `array`/`hashmap` freelist types share this one on-disk format.
//! When the meta's freelist field is `u64::MAX` no page exists ("not synced", etcd on Linux):
//! every page below the high-water mark that is unreachable from the root counts as free.

use crate::endian::Endian;
use crate::error::Fault;
use crate::page::{PageHeader, FREELIST_PAGE_FLAG, PAGE_HEADER_SIZE};

/// Decode the ids of a freelist node held in `buf` (page and overflow). Ids are returned as stored.
pub fn parse(buf: &[u8], pgid: u64, base: u64, e: Endian) -> Result<Vec<u64>, Fault> {
    let h = PageHeader::parse(buf, e);
    if h.flags != FREELIST_PAGE_FLAG {
        return Err(Fault::new(pgid, base + 8, format!("meta names page {pgid} as the freelist, but its type is {}", crate::page::page_type_name(h.flags))));
    }
    let mut start = PAGE_HEADER_SIZE;
    let mut count = h.count as usize;
    if count == 0xFFFF {
        if buf.len() < PAGE_HEADER_SIZE + 8 {
            return Err(Fault::new(pgid, base, "freelist page too short for its extended count"));
        }
        count = e.u64(&buf[PAGE_HEADER_SIZE..]) as usize;
        start += 8;
    }
    let end = count.checked_mul(8).and_then(|n| n.checked_add(start));
    match end {
        Some(end) if end <= buf.len() => Ok(buf[start..end].chunks_exact(8).map(|c| e.u64(c)).collect()),
        _ => Err(Fault::new(pgid, base + 10, format!("freelist count {count} does not fit in {} bytes (page plus overflow)", buf.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[u64], extended: bool) -> Vec<u8> {
        let mut p = vec![0u8; 4096 * 2];
        p[8..10].copy_from_slice(&FREELIST_PAGE_FLAG.to_le_bytes());
        let mut at = 16;
        if extended {
            p[10..12].copy_from_slice(&0xFFFFu16.to_le_bytes());
            p[16..24].copy_from_slice(&(ids.len() as u64).to_le_bytes());
            at = 24;
        } else {
            p[10..12].copy_from_slice(&(ids.len() as u16).to_le_bytes());
        }
        for id in ids {
            p[at..at + 8].copy_from_slice(&id.to_le_bytes());
            at += 8;
        }
        p
    }

    #[test]
    fn short_and_extended_counts() {
        assert_eq!(parse(&page(&[5, 9, 12], false), 3, 0, Endian::Little).unwrap(), vec![5, 9, 12]);
        assert_eq!(parse(&page(&[5, 9], true), 3, 0, Endian::Little).unwrap(), vec![5, 9]);
    }

    #[test]
    fn count_past_end_is_a_fault() {
        let mut p = page(&[], true);
        p[16..24].copy_from_slice(&10_000u64.to_le_bytes());
        let f = parse(&p, 3, 3 * 4096, Endian::Little).unwrap_err();
        assert!(f.what.contains("does not fit"), "{f}");
    }
}
