//! A snapshot restored while it arrives from the repository (`quorum restore --repo`).
//!
//! The chunks are fetched into a temporary file (unsynced: it is removed once the restore is
//! done), and the native restore reads that file through [`Arriving`], a [`bolt::ReadAt`]
//! whose reads wait until the bytes they ask for have been written. So the restore does not
//! wait for the whole snapshot, and the snapshot is written once and read once, from the page
//! cache.
//!
//! The packs are fetched in the order of the bytes they hold, a few at once; a read that has
//! to wait puts the pack holding its first missing byte at the head of the queue, so the
//! restore's walk of the B+tree (whose pages can lie anywhere in the file) is served first and
//! the sequential fetch fills in the rest. Every blob is authenticated before its bytes are
//! marked present, so the restore never reads a byte the repository did not vouch for. A
//! failed fetch fails every waiting and later read with its error.
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

/// The snapshot's bytes as they arrive; see the module documentation.
pub(crate) struct Arriving {
    file: File,
    len: u64,
    /// Each chunk occurrence's `(start, end, pack)`, by start.
    owners: Vec<(u64, u64, usize)>,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Byte ranges present, merged: start -> end.
    present: BTreeMap<u64, u64>,
    /// Packs asked for by waiting reads, first first.
    wanted: VecDeque<usize>,
    /// The next pack in file order not yet handed out (or later).
    next: usize,
    taken: Vec<bool>,
    failed: Option<String>,
}

impl Arriving {
    /// `owners`: every chunk occurrence's `(start, end, pack index)`; `packs`: how many.
    pub(crate) fn new(file: File, len: u64, mut owners: Vec<(u64, u64, usize)>, packs: usize) -> Arriving {
        owners.sort_unstable_by_key(|o| o.0);
        Arriving {
            file,
            len,
            owners,
            state: Mutex::new(State { present: BTreeMap::new(), wanted: VecDeque::new(), next: 0, taken: vec![false; packs], failed: None }),
            changed: Condvar::new(),
        }
    }

    /// The next pack to fetch: one a read waits for, else the next in file order; None when
    /// every pack has been handed out or the fetch has failed.
    pub(crate) fn take(&self) -> Option<usize> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.failed.is_some() {
            return None;
        }
        while let Some(p) = s.wanted.pop_front() {
            if !s.taken[p] {
                s.taken[p] = true;
                return Some(p);
            }
        }
        while s.next < s.taken.len() {
            let p = s.next;
            s.next += 1;
            if !s.taken[p] {
                s.taken[p] = true;
                return Some(p);
            }
        }
        None
    }

    /// `data` (authenticated) is written at `off` and marked present.
    pub(crate) fn write(&self, data: &[u8], off: u64) -> std::io::Result<()> {
        self.file.write_all_at(data, off)?;
        let end = off + data.len() as u64;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        insert(&mut s.present, off, end);
        drop(s);
        self.changed.notify_all();
        Ok(())
    }

    /// The fetch failed: every waiting and later read fails with `why`.
    pub(crate) fn fail(&self, why: String) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failed.get_or_insert(why);
        drop(s);
        self.changed.notify_all();
    }

    /// Whether every byte has arrived.
    pub(crate) fn complete(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.whole(&s)
    }

    fn whole(&self, s: &State) -> bool {
        self.len == 0 || s.present.get(&0) == Some(&self.len)
    }

    /// Whether [`Arriving::fail`] was called.
    pub(crate) fn failed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).failed.is_some()
    }

    /// Wait until every byte has arrived, or the fetch has failed.
    pub(crate) fn wait_all(&self) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(why) = &s.failed {
                return Err(fetch_failed(why));
            }
            if self.whole(&s) {
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The pack holding byte `at`.
    fn owner(&self, at: u64) -> Option<usize> {
        let i = self.owners.partition_point(|o| o.0 <= at);
        let o = self.owners.get(i.checked_sub(1)?)?;
        (at < o.1).then_some(o.2)
    }
}

fn fetch_failed(why: &str) -> std::io::Error {
    std::io::Error::other(format!("the snapshot could not be fetched: {why}"))
}

/// Add `[start, end)` to the merged ranges.
fn insert(present: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    if let Some((&s, &e)) = present.range(..=start).next_back() {
        if e >= start {
            start = s;
            end = end.max(e);
        }
    }
    let after: Vec<(u64, u64)> = present.range(start..=end).map(|(&s, &e)| (s, e)).collect();
    for (s, e) in after {
        present.remove(&s);
        end = end.max(e);
    }
    present.insert(start, end);
}

/// The first byte of `[start, end)` not present, if any.
fn first_missing(present: &BTreeMap<u64, u64>, start: u64, end: u64) -> Option<u64> {
    match present.range(..=start).next_back() {
        Some((_, &e)) if e >= end => None,
        Some((_, &e)) if e > start => Some(e),
        _ => Some(start),
    }
}

impl bolt::ReadAt for Arriving {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        if off >= self.len {
            return Ok(0);
        }
        let end = self.len.min(off + buf.len() as u64);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut asked = None;
        loop {
            if let Some(why) = &s.failed {
                return Err(fetch_failed(why));
            }
            let Some(missing) = first_missing(&s.present, off, end) else { break };
            if asked != Some(missing) {
                asked = Some(missing);
                if let Some(p) = self.owner(missing) {
                    if !s.taken[p] {
                        s.wanted.push_back(p);
                    }
                }
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        drop(s);
        let n = (end - off) as usize;
        self.file.read_exact_at(&mut buf[..n], off)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bolt::ReadAt;
    use std::sync::Arc;

    #[test]
    fn ranges_merge_and_gaps_are_found() {
        let mut p = BTreeMap::new();
        insert(&mut p, 10, 20);
        insert(&mut p, 30, 40);
        assert_eq!(first_missing(&p, 12, 18), None);
        assert_eq!(first_missing(&p, 12, 25), Some(20));
        assert_eq!(first_missing(&p, 0, 5), Some(0));
        insert(&mut p, 20, 30);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![(10, 40)]);
        let mut p = BTreeMap::new();
        insert(&mut p, 50, 60);
        insert(&mut p, 0, 10);
        insert(&mut p, 5, 55);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![(0, 60)]);
    }

    /// A read waits for its bytes, asks for the pack that holds them first, and fails when
    /// the fetch fails.
    #[test]
    fn reads_wait_for_their_bytes_and_ask_for_their_pack() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("s")).unwrap();
        // Three packs of 100 bytes each, in file order.
        let a = Arc::new(Arriving::new(f, 300, vec![(200, 300, 2), (0, 100, 0), (100, 200, 1)], 3));
        assert_eq!(a.take(), Some(0));
        let reader = {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 10];
                a.read_at(&mut buf, 250).map(|n| buf[..n].to_vec())
            })
        };
        // The waiting read puts pack 2 ahead of pack 1.
        let mut asked = None;
        for _ in 0..500 {
            if !a.state.lock().unwrap().wanted.is_empty() {
                asked = a.take();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(asked, Some(2));
        a.write(&[7u8; 100], 200).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), vec![7u8; 10]);
        assert_eq!(a.take(), Some(1));
        assert_eq!(a.take(), None);
        assert!(!a.complete());
        a.write(&[1u8; 100], 0).unwrap();
        a.write(&[2u8; 100], 100).unwrap();
        assert!(a.complete());
        let mut tail = [0u8; 8];
        assert_eq!(a.read_at(&mut tail, 296).unwrap(), 4, "a read past the end is short");

        let f = tempfile::tempfile().unwrap();
        let b = Arc::new(Arriving::new(f, 100, vec![(0, 100, 0)], 1));
        let reader = {
            let b = b.clone();
            std::thread::spawn(move || b.read_at(&mut [0u8; 4], 0))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        b.fail("pack 00ff is missing".into());
        let e = reader.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("pack 00ff is missing"), "{e}");
        assert_eq!(b.take(), None);
    }
}
