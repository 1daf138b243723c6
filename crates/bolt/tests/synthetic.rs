//! The reader on hand-built files that exercise what etcd's own files never do: a synced
//! freelist (both count formats), inline and nested buckets, big-endian files, and each kind of
//! structural fault. Real etcd files are covered by the integration tests in `crates/quorum`.

use bolt::{Db, Endian, Error, MetaProblem};

const PS: usize = 4096;

/// Builds a bbolt file page by page (test-only; mirrors `node.write` and `meta.write`).
struct File {
    e: Endian,
    pages: Vec<Vec<u8>>, // index = pgid; overflow continuation pages are empty placeholders
}

fn put16(e: Endian, b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    });
}
fn put32(e: Endian, b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    });
}
fn put64(e: Endian, b: &mut [u8], v: u64) {
    b[..8].copy_from_slice(&match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    });
}

enum Elem<'a> {
    Kv(&'a [u8], &'a [u8]),
    Bucket(&'a [u8], Vec<u8>),
}

impl File {
    fn new(e: Endian) -> File {
        File { e, pages: vec![vec![], vec![]] }
    }

    /// A leaf node's bytes (header id left 0).
    fn leaf_bytes(&self, elems: &[Elem]) -> Vec<u8> {
        let e = self.e;
        let n = elems.len();
        let mut b = vec![0u8; 16 + 16 * n];
        put16(e, &mut b[8..], 0x02);
        put16(e, &mut b[10..], n as u16);
        for (i, el) in elems.iter().enumerate() {
            let (flags, k, v): (u32, &[u8], &[u8]) = match el {
                Elem::Kv(k, v) => (0, k, v),
                Elem::Bucket(k, v) => (1, k, v),
            };
            let off = 16 + 16 * i;
            let pos = b.len() - off;
            put32(e, &mut b[off..], flags);
            put32(e, &mut b[off + 4..], pos as u32);
            put32(e, &mut b[off + 8..], k.len() as u32);
            put32(e, &mut b[off + 12..], v.len() as u32);
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        b
    }

    fn branch_bytes(&self, elems: &[(&[u8], u64)]) -> Vec<u8> {
        let e = self.e;
        let n = elems.len();
        let mut b = vec![0u8; 16 + 16 * n];
        put16(e, &mut b[8..], 0x01);
        put16(e, &mut b[10..], n as u16);
        for (i, (k, child)) in elems.iter().enumerate() {
            let off = 16 + 16 * i;
            let pos = b.len() - off;
            put32(e, &mut b[off..], pos as u32);
            put32(e, &mut b[off + 4..], k.len() as u32);
            put64(e, &mut b[off + 8..], *child);
            b.extend_from_slice(k);
        }
        b
    }

    /// Store node bytes as a page (with overflow pages as needed); returns its pgid.
    fn add(&mut self, mut node: Vec<u8>) -> u64 {
        let id = self.pages.len() as u64;
        let n = node.len().div_ceil(PS).max(1);
        put64(self.e, &mut node[0..], id);
        put32(self.e, &mut node[12..], (n - 1) as u32);
        node.resize(n * PS, 0);
        self.pages.push(node);
        for _ in 1..n {
            self.pages.push(vec![]);
        }
        id
    }

    fn bucket_value(&self, root: u64, inline: Option<Vec<u8>>) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        put64(self.e, &mut v[0..], root);
        if let Some(page) = inline {
            v.extend_from_slice(&page);
        }
        v
    }

    fn freelist_bytes(&self, ids: &[u64], extended: bool) -> Vec<u8> {
        let e = self.e;
        let mut b = vec![0u8; 16];
        put16(e, &mut b[8..], 0x10);
        if extended {
            put16(e, &mut b[10..], 0xFFFF);
            let mut c = [0u8; 8];
            put64(e, &mut c, ids.len() as u64);
            b.extend_from_slice(&c);
        } else {
            put16(e, &mut b[10..], ids.len() as u16);
        }
        for id in ids {
            let mut c = [0u8; 8];
            put64(e, &mut c, *id);
            b.extend_from_slice(&c);
        }
        b
    }

    fn meta(&self, id: u64, root: u64, freelist: u64, txid: u64) -> Vec<u8> {
        let e = self.e;
        let mut p = vec![0u8; PS];
        put64(e, &mut p[0..], id);
        put16(e, &mut p[8..], 0x04);
        let m = &mut p[16..80];
        put32(e, &mut m[0..], 0xED0CDAED);
        put32(e, &mut m[4..], 2);
        put32(e, &mut m[8..], PS as u32);
        put64(e, &mut m[16..], root);
        put64(e, &mut m[32..], freelist);
        put64(e, &mut m[40..], self.pages.len() as u64);
        put64(e, &mut m[48..], txid);
        let sum = bolt::meta::fnv1a64(&m[..56]);
        put64(e, &mut m[56..], sum);
        p
    }

    fn finish(mut self, root: u64, freelist: u64) -> Vec<u8> {
        self.pages[0] = self.meta(0, root, freelist, 10);
        self.pages[1] = self.meta(1, root, freelist, 9);
        let n = self.pages.len();
        let mut out = vec![0u8; n * PS];
        let mut i = 0;
        while i < n {
            let p = &self.pages[i];
            out[i * PS..i * PS + p.len()].copy_from_slice(p);
            i += p.len().div_ceil(PS).max(1);
        }
        out
    }
}

struct Built {
    bytes: Vec<u8>,
    free_page: u64,
    big_leaf: u64,
    big_branch: u64,
}

/// The shape: bucket "big" (branch → two leaves, one with an overflow value), bucket "nest"
/// (a tree leaf holding an inline sub-bucket), bucket "small" (inline), one free page, and a
/// freelist as asked: None (not synced), Some(false) (short count), Some(true) (0xFFFF count).
fn build(e: Endian, freelist: Option<bool>, tweak: impl FnOnce(&mut File, &mut Vec<u64>)) -> Built {
    let mut f = File::new(e);
    let big_value = vec![b'v'; 9000];
    let l1 = f.leaf_bytes(&[Elem::Kv(b"a", b"1"), Elem::Kv(b"b", b"2")]);
    let l1 = f.add(l1);
    let l2 = f.leaf_bytes(&[Elem::Kv(b"m", &big_value), Elem::Kv(b"n", b"3")]);
    let l2 = f.add(l2);
    let br = f.branch_bytes(&[(b"a", l1), (b"m", l2)]);
    let br = f.add(br);
    let free_page = f.add(f.leaf_bytes(&[Elem::Kv(b"old", b"junk")]));
    let inner = f.leaf_bytes(&[Elem::Kv(b"x", b"9")]);
    let inner_bucket = f.bucket_value(0, Some(inner));
    let nest_leaf = f.leaf_bytes(&[Elem::Kv(b"k", b"v"), Elem::Bucket(b"sub", inner_bucket)]);
    let nest_leaf = f.add(nest_leaf);
    let small = f.leaf_bytes(&[Elem::Kv(b"s1", b""), Elem::Kv(b"s2", b"two")]);
    let root_elems = vec![
        Elem::Bucket(b"big", f.bucket_value(br, None)),
        Elem::Bucket(b"nest", f.bucket_value(nest_leaf, None)),
        Elem::Bucket(b"small", f.bucket_value(0, Some(small))),
    ];
    let root = f.leaf_bytes(&root_elems);
    let root = f.add(root);
    let mut free_ids = vec![free_page];
    tweak(&mut f, &mut free_ids);
    let fl = match freelist {
        None => u64::MAX,
        Some(ext) => {
            let b = f.freelist_bytes(&free_ids, ext);
            f.add(b)
        }
    };
    Built { bytes: f.finish(root, fl), free_page, big_leaf: l2, big_branch: br }
}

fn write(b: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.db");
    std::fs::write(&p, b).unwrap();
    (d, p)
}

fn entries(db: &Db) -> (Vec<String>, bolt::CheckReport) {
    let mut v = Vec::new();
    let r = bolt::walk(db, &mut |path: &[Vec<u8>], k: &[u8], val: Option<&[u8]>| {
        let p: Vec<String> = path.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        let val = match val {
            None => "<bucket>".to_string(),
            Some(v) if v.len() > 16 => format!("<{} bytes>", v.len()),
            Some(v) => String::from_utf8_lossy(v).into_owned(),
        };
        v.push(format!("{}/{}={}", p.join("/"), String::from_utf8_lossy(k), val));
    });
    (v, r)
}

const EXPECTED: &[&str] = &[
    "/big=<bucket>",
    "big/a=1",
    "big/b=2",
    "big/m=<9000 bytes>",
    "big/n=3",
    "/nest=<bucket>",
    "nest/k=v",
    "nest/sub=<bucket>",
    "nest/sub/x=9",
    "/small=<bucket>",
    "small/s1=",
    "small/s2=two",
];

#[test]
fn every_freelist_form_and_byte_order_reads_clean() {
    for e in [Endian::Little, Endian::Big] {
        for fl in [None, Some(false), Some(true)] {
            let b = build(e, fl, |_, _| {});
            let (_d, p) = write(&b.bytes);
            let db = Db::open(&p).unwrap();
            assert_eq!(db.endian(), e);
            let (got, r) = entries(&db);
            assert_eq!(got, EXPECTED, "{e:?} {fl:?}");
            assert!(r.is_clean(), "{e:?} {fl:?}: {:?}", r.faults);
            assert_eq!(r.pages_free, 1, "{e:?} {fl:?}");
            assert_eq!(r.pages_freelist, u64::from(fl.is_some()));
            // leaves a (1) and m (3 pages: the 9000-byte value overflows), big's branch, nest's leaf, root
            assert_eq!(r.pages_in_use, 1 + 3 + 1 + 1 + 1, "{e:?} {fl:?}");
        }
    }
}

#[test]
fn buckets_cursors_and_lookups() {
    let b = build(Endian::Little, None, |_, _| {});
    let (_d, p) = write(&b.bytes);
    let db = Db::open(&p).unwrap();
    let big = db.bucket(&[b"big"]).unwrap().unwrap();
    assert_eq!(big.get(b"m").unwrap().unwrap().len(), 9000);
    assert_eq!(big.get(b"n").unwrap().unwrap(), b"3");
    assert_eq!(big.get(b"zz").unwrap(), None);
    let mut c = big.cursor().unwrap();
    let mut keys = vec![];
    while let Some(e) = c.next().unwrap() {
        keys.push(e.key.to_vec());
    }
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"m".to_vec(), b"n".to_vec()]);
    let sub = db.bucket(&[b"nest", b"sub"]).unwrap().unwrap();
    assert_eq!(sub.root_page(), None);
    assert_eq!(sub.get(b"x").unwrap().unwrap(), b"9");
    assert_eq!(db.bucket(&[b"nest"]).unwrap().unwrap().get(b"sub").unwrap(), None, "a bucket is not a value");
    assert_eq!(db.bucket(&[b"small"]).unwrap().unwrap().get(b"s2").unwrap().unwrap(), b"two");
    assert!(db.bucket(&[b"missing"]).unwrap().is_none());
}

#[test]
fn synced_freelist_missing_a_page_is_unreachable_unfreed() {
    let b = build(Endian::Little, Some(false), |_, ids| ids.clear());
    let (_d, p) = write(&b.bytes);
    let (_, r) = entries(&Db::open(&p).unwrap());
    assert_eq!(r.fault_count, 1, "{:?}", r.faults);
    assert_eq!(r.faults[0].pgid, b.free_page);
    assert!(r.faults[0].what.contains("unreachable unfreed"));
}

#[test]
fn freed_page_in_use_and_double_free() {
    let b = build(Endian::Little, Some(true), |_, ids| ids.extend([4, 4]));
    let (_d, p) = write(&b.bytes);
    let (_, r) = entries(&Db::open(&p).unwrap());
    let all: Vec<String> = r.faults.iter().map(|f| f.to_string()).collect();
    assert!(all.iter().any(|f| f.starts_with("page 4 ") && f.contains("both reachable and free")), "{all:?}");
    assert!(all.iter().any(|f| f.starts_with("page 4 ") && f.contains("freed twice")), "{all:?}");
}

#[test]
fn key_out_of_order_names_page_and_offset() {
    let mut b = build(Endian::Little, None, |_, _| {});
    // Leaf "m","n" → swap the key "n" for "a": out of order and below the branch key "m".
    let leaf = b.big_leaf as usize;
    let page = &mut b.bytes[leaf * PS..];
    let pos = u32::from_le_bytes(page[16 + 16 + 4..16 + 16 + 8].try_into().unwrap()) as usize;
    page[16 + 16 + pos] = b'a';
    let (_d, p) = write(&b.bytes);
    let (_, r) = entries(&Db::open(&p).unwrap());
    assert_eq!(r.fault_count, 1, "{:?}", r.faults);
    let f = &r.faults[0];
    assert_eq!(f.pgid, b.big_leaf);
    assert_eq!(f.offset, (leaf * PS + 32) as u64, "offset of element 1");
    assert!(f.what.contains("out of order"), "{f}");
}

#[test]
fn bad_child_reference_names_the_referrer() {
    let mut b = build(Endian::Little, None, |_, _| {});
    // Point the second child of "big"'s branch at an overflow continuation page of its first
    // real leaf's neighbour (the big leaf spans 3 pages; its second page has no header).
    let br = b.big_branch as usize;
    let cont = b.big_leaf + 1;
    assert_eq!(u16::from_le_bytes([b.bytes[br * PS + 8], b.bytes[br * PS + 9]]), 0x01);
    b.bytes[br * PS + 16 + 16 + 8..br * PS + 16 + 16 + 16].copy_from_slice(&cont.to_le_bytes());
    let (_d, p) = write(&b.bytes);
    let (_, r) = entries(&Db::open(&p).unwrap());
    let all: Vec<String> = r.faults.iter().map(|f| f.to_string()).collect();
    let want = format!("referenced by branch page {br} element 1");
    assert!(all[0].starts_with(&format!("page {cont} ")) && all[0].contains(&want), "{all:?}");
}

#[test]
fn damaged_meta_falls_back_and_both_damaged_is_not_bolt() {
    let mut b = build(Endian::Little, None, |_, _| {});
    b.bytes[16 + 48] ^= 0xff; // meta 0 txid
    let (_d, p) = write(&b.bytes);
    let db = Db::open(&p).unwrap();
    assert_eq!(db.active_meta(), 1);
    assert!(matches!(db.metas()[0], Err(MetaProblem::BadChecksum { .. })));
    assert_eq!(db.warnings().len(), 1);
    let (got, r) = entries(&db);
    assert_eq!(got, EXPECTED);
    assert!(r.is_clean());
    b.bytes[PS + 16] ^= 0xff; // meta 1 magic
    let (_d, p) = write(&b.bytes);
    match Db::open(&p) {
        Err(Error::NotBolt { meta0, meta1, .. }) => {
            assert!(matches!(meta0, MetaProblem::BadChecksum { .. }));
            assert!(matches!(meta1, MetaProblem::BadMagic(_)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn newer_txid_wins() {
    let mut b = build(Endian::Little, None, |_, _| {});
    // Make meta 1 newer, pointing at the same root.
    let m = &mut b.bytes[PS + 16..PS + 80];
    m[48..56].copy_from_slice(&11u64.to_le_bytes());
    let sum = bolt::meta::fnv1a64(&m[..56]);
    m[56..64].copy_from_slice(&sum.to_le_bytes());
    let (_d, p) = write(&b.bytes);
    assert_eq!(Db::open(&p).unwrap().active_meta(), 1);
}

#[test]
fn truncated_file_is_refused() {
    let b = build(Endian::Little, None, |_, _| {});
    let (_d, p) = write(&b.bytes[..b.bytes.len() - PS]);
    assert!(matches!(Db::open(&p), Err(Error::Truncated { .. })));
}

#[test]
fn trailing_bytes_are_ignored() {
    let mut b = build(Endian::Little, None, |_, _| {});
    b.bytes.extend_from_slice(&[0xAB; 32]);
    let (_d, p) = write(&b.bytes);
    let db = Db::open(&p).unwrap();
    assert_eq!(db.size() + 32, db.file_len());
    assert!(entries(&db).1.is_clean());
}

#[test]
fn child_id_far_beyond_the_file_is_a_fault() {
    // Found by the fuzzer: a child id near u64::MAX overflowed the offset computation.
    let mut b = build(Endian::Little, None, |_, _| {});
    let br = b.big_branch as usize;
    b.bytes[br * PS + 16 + 8..br * PS + 16 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    let (_d, p) = write(&b.bytes);
    let db = Db::open(&p).unwrap();
    let (_, r) = entries(&db);
    assert!(r.faults[0].what.contains("beyond the high-water mark"), "{:?}", r.faults);
    assert_eq!(r.faults[0].offset, u64::MAX);
    let mut c = db.bucket(&[b"big"]).unwrap().unwrap().cursor().unwrap();
    assert!(c.next().is_err());
}
