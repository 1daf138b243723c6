//! A backup's chunk ids, in file order: stored whole as list blobs, or (version 3) as the
//! list blobs of an earlier backup of the cluster with a chain of patches applied in order.
//!
//! A whole list costs 32 bytes a chunk in every backup: 9.6 MB for a 1.26 GB snapshot cut
//! into 4 KiB chunks, more than the data an hourly increment adds. Ids are keyed hashes, so
//! the lists neither compress nor deduplicate (a change anywhere in a 16384-id stretch makes
//! its list blob new). A patch names only the positions whose id changed, so an increment's
//! list costs 40 bytes a changed chunk; the chain is rewritten whole ([`REBASE_SHARE`]) once
//! its patches hold a quarter as many entries as the snapshot has chunks.
//!
//! Patch blob (type `List`, plaintext, little-endian): `"QCP1"`, the chunk count after it
//! applies (u64), the entry count (u32), then that many entries in ascending position:
//! position (u64), chunk id (32 bytes). Applying it: the list is truncated or extended to the
//! count (every position it extends by must have an entry of this patch), then each entry's
//! position takes its id.
use crate::error::{Error, Result};
use crate::format::BlobId;

const PATCH_MAGIC: &[u8; 4] = b"QCP1";
/// Ids per whole list blob.
pub const LIST_IDS: usize = 16384;
/// Entries per patch blob (as large as a whole list blob, about 640 KiB).
pub const PATCH_ENTRIES: usize = 16384;
/// A chain is rewritten whole when its patches would hold more entries than this share of
/// the chunks: a reader then fetches at most 1.25 times what a whole list costs (by bytes,
/// 1.56x), and a writer rewrites the list every few dozen backups at 1% of churn.
pub const REBASE_SHARE: f64 = 0.25;
/// ... or when the chain would be longer than this many patches (each is a round trip when
/// read from a remote store, made several at a time).
pub const MAX_CHAIN: usize = 256;

/// Whole list blobs' plaintexts for `ids`.
pub fn whole(ids: &[BlobId]) -> impl Iterator<Item = Vec<u8>> + '_ {
    ids.chunks(LIST_IDS).map(|g| g.iter().flat_map(|i| i.iter().copied()).collect())
}

/// The positions where `new` differs from `old` (every position past `old`'s end included).
pub fn diff(old: &[BlobId], new: &[BlobId]) -> Vec<(u64, BlobId)> {
    new.iter().enumerate().filter(|(i, id)| old.get(*i) != Some(id)).map(|(i, id)| (i as u64, *id)).collect()
}

/// The patch blobs' plaintexts that store `ids` as a patch of the newest backup's list
/// (`parent`: its ids, the entries and the number of patches in its chain already), or None
/// when the list is to be stored whole: no parent, or a chain past [`REBASE_SHARE`] or
/// [`MAX_CHAIN`].
pub fn plan(parent: Option<(&[BlobId], u64, usize)>, ids: &[BlobId]) -> Option<Vec<Vec<u8>>> {
    let (old, chained, chain_len) = parent?;
    let entries = diff(old, ids);
    let total = chained + entries.len() as u64;
    let fits = (total as f64) <= REBASE_SHARE * ids.len() as f64 && chain_len < MAX_CHAIN;
    fits.then(|| patch_blobs(ids.len() as u64, old.len() as u64, &entries))
}

/// Patch blobs' plaintexts that turn a list into one of `count` ids by `entries` (ascending).
/// An empty patch (same count, no change) is no blob at all.
pub fn patch_blobs(count: u64, old_count: u64, entries: &[(u64, BlobId)]) -> Vec<Vec<u8>> {
    if entries.is_empty() && count == old_count {
        return Vec::new();
    }
    // Every blob of a patch carries the count; a list extends (or shrinks) at the first.
    let groups: Vec<&[(u64, BlobId)]> = if entries.is_empty() { vec![&[]] } else { entries.chunks(PATCH_ENTRIES).collect() };
    groups
        .into_iter()
        .map(|g| {
            let mut b = Vec::with_capacity(16 + g.len() * 40);
            b.extend_from_slice(PATCH_MAGIC);
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&(g.len() as u32).to_le_bytes());
            for (pos, id) in g {
                b.extend_from_slice(&pos.to_le_bytes());
                b.extend_from_slice(id);
            }
            b
        })
        .collect()
}

/// Entries a stored patch blob of `plain_len` bytes holds (for the rebase decision without
/// reading it).
pub fn patch_entries(plain_len: u32) -> u64 {
    (plain_len as u64).saturating_sub(16) / 40
}

/// A whole list blob's ids (checked: a whole number of ids).
pub fn parse_whole<'a>(name: &str, b: &'a [u8]) -> Result<&'a [BlobId]> {
    match b.as_chunks::<32>() {
        (ids, []) => Ok(ids),
        _ => Err(Error::Damaged(format!("chunk list blob {name}: length {} is not a multiple of 32", b.len()))),
    }
}

/// A patch blob's count and entries (checked: magic, length, ascending positions below the
/// count).
pub fn parse_patch<'a>(name: &str, b: &'a [u8]) -> Result<(u64, impl ExactSizeIterator<Item = (u64, BlobId)> + 'a)> {
    let bad = |what: String| Error::Damaged(format!("chunk list patch {name}: {what}"));
    if b.len() < 16 || &b[..4] != PATCH_MAGIC {
        return Err(bad("not a chunk list patch".into()));
    }
    let count = u64::from_le_bytes(b[4..12].try_into().unwrap());
    let n = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    if b.len() != 16 + n * 40 {
        return Err(bad(format!("{} bytes for {n} entries", b.len())));
    }
    let entries = || b[16..].chunks_exact(40).map(|e| (u64::from_le_bytes(e[..8].try_into().unwrap()), <BlobId>::try_from(&e[8..]).unwrap()));
    let mut last: Option<u64> = None;
    for (pos, _) in entries() {
        if pos >= count || last.is_some_and(|l| pos <= l) {
            return Err(bad(format!("entry at position {pos} out of order or past the count {count}")));
        }
        last = Some(pos);
    }
    Ok((count, entries()))
}

/// A list being resolved: whole list blobs appended in order, then patches applied in order;
/// [`Resolver::finish`] checks every position is filled.
#[derive(Debug, Default)]
pub struct Resolver {
    ids: Vec<BlobId>,
    /// Positions added by extension and not yet given an id (ascending, deduplicated when
    /// checked): a patch that extends must fill them.
    unfilled: Vec<u64>,
}

impl Resolver {
    pub fn with_capacity(n: usize) -> Resolver {
        Resolver { ids: Vec::with_capacity(n), unfilled: Vec::new() }
    }

    /// One whole list blob.
    pub fn whole(&mut self, name: &str, b: &[u8]) -> Result<()> {
        self.ids.extend_from_slice(parse_whole(name, b)?);
        Ok(())
    }

    /// One patch blob.
    pub fn patch(&mut self, name: &str, b: &[u8]) -> Result<()> {
        let (count, entries) = parse_patch(name, b)?;
        let n = entries.len() as u64;
        // A writer extends a list by at most a third ([`plan`]: the new positions are entries,
        // at most a quarter of the count); far past that is damage, not an allocation.
        if count > 2 * self.ids.len() as u64 + n {
            return Err(Error::Damaged(format!("chunk list patch {name}: extends the list from {} to {count} ids with {n} entries", self.ids.len())));
        }
        let old = self.ids.len() as u64;
        if count < old {
            self.ids.truncate(count as usize);
            self.unfilled.retain(|p| *p < count);
        } else if count > old {
            self.ids.resize(count as usize, [0u8; 32]);
            self.unfilled.extend(old..count);
        }
        // Positions an extension (by this blob or an earlier blob of the same patch) left.
        let first_unfilled = self.unfilled.first().copied().unwrap_or(u64::MAX);
        let mut filled = Vec::new();
        for (pos, id) in entries {
            self.ids[pos as usize] = id;
            if pos >= first_unfilled {
                filled.push(pos);
            }
        }
        if !filled.is_empty() {
            // Both ascending: a merge removes what this patch filled.
            let mut f = filled.iter().peekable();
            self.unfilled.retain(|p| {
                while f.peek().is_some_and(|x| **x < *p) {
                    f.next();
                }
                f.peek() != Some(&p)
            });
        }
        Ok(())
    }

    /// The ids, after checking none is left unfilled and the count is the manifest's.
    pub fn finish(self, chunks: u64) -> Result<Vec<BlobId>> {
        if let Some(p) = self.unfilled.first() {
            return Err(Error::Damaged(format!("chunk list patches leave position {p} without an id")));
        }
        if self.ids.len() as u64 != chunks {
            return Err(Error::Damaged(format!("chunk lists hold {} ids, the manifest says {chunks}", self.ids.len())));
        }
        Ok(self.ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        b[31] = 1;
        b
    }

    fn resolve(base: &[BlobId], patches: &[Vec<u8>], chunks: u64) -> Result<Vec<BlobId>> {
        let mut r = Resolver::default();
        for w in whole(base) {
            r.whole("w", &w)?;
        }
        for p in patches {
            r.patch("p", p)?;
        }
        r.finish(chunks)
    }

    /// A chain of patches gives back every list it was made from: growing, shrinking,
    /// changed in place, unchanged, across several patch blobs.
    #[test]
    fn chains_reproduce_each_list() {
        let base: Vec<BlobId> = (0..40_000).map(id).collect();
        let mut lists = vec![base.clone()];
        let mut l = base.clone();
        for i in (0..l.len()).step_by(7) {
            l[i] = id(1_000_000 + i as u32);
        }
        lists.push(l.clone());
        l.truncate(30_000);
        l[29_999] = id(7);
        lists.push(l.clone());
        lists.push(l.clone());
        l.extend((0..20_000).map(|i| id(2_000_000 + i)));
        lists.push(l.clone());
        let mut patches: Vec<Vec<u8>> = Vec::new();
        for w in lists.windows(2) {
            let e = diff(&w[0], &w[1]);
            patches.extend(patch_blobs(w[1].len() as u64, w[0].len() as u64, &e));
            assert_eq!(resolve(&base, &patches, w[1].len() as u64).unwrap(), w[1]);
        }
        // An unchanged list adds no blob; the 40,000-entry extension took several.
        assert!(patch_blobs(30_000, 30_000, &[]).is_empty());
        assert!(patches.len() >= 4, "{}", patches.len());
    }

    /// A chain grows while its entries stay within a quarter of the chunks and it is not too
    /// long; past either, or without a parent, the list is stored whole.
    #[test]
    fn chains_are_rewritten_whole_when_they_grow() {
        let old: Vec<BlobId> = (0..1000).map(id).collect();
        let mut new = old.clone();
        for i in 0..100 {
            new[i * 10] = id(5000 + i as u32);
        }
        assert!(plan(None, &new).is_none());
        assert_eq!(plan(Some((&old, 0, 0)), &new).unwrap().len(), 1);
        assert_eq!(plan(Some((&old, 150, 3)), &new).unwrap().len(), 1, "250 entries of 1000 fit");
        assert!(plan(Some((&old, 151, 3)), &new).is_none(), "251 do not");
        assert!(plan(Some((&old, 0, MAX_CHAIN)), &new).is_none());
        assert!(plan(Some((&old, 0, 0)), &old).unwrap().is_empty(), "no change, no blob");
    }

    /// Damage is reported, never turned into a list: an extension left unfilled, an entry
    /// out of order, a truncated blob, a count past the manifest's.
    #[test]
    fn damaged_patches_are_refused() {
        let base: Vec<BlobId> = (0..100).map(id).collect();
        let grow = patch_blobs(102, 100, &[(100, id(500))]);
        assert!(matches!(resolve(&base, &grow, 102), Err(Error::Damaged(m)) if m.contains("position 101")));
        let mut swapped = patch_blobs(100, 100, &[(5, id(1)), (6, id(2))]).remove(0);
        swapped[16..24].copy_from_slice(&9u64.to_le_bytes());
        assert!(resolve(&base, &[swapped], 100).is_err());
        let mut cut = patch_blobs(100, 100, &[(5, id(1))]).remove(0);
        cut.pop();
        assert!(resolve(&base, &[cut], 100).is_err());
        let mut huge = patch_blobs(100, 100, &[(5, id(1))]).remove(0);
        huge[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(resolve(&base, &[huge], 100).is_err());
        let ok = patch_blobs(100, 100, &[(5, id(1))]);
        assert!(matches!(resolve(&base, &ok, 99), Err(Error::Damaged(_))));
        assert_eq!(patch_entries(ok[0].len() as u32), 1);
    }
}
