//! One database written in order, its copies made by the kernel as it grows, and writeback
//! started early for all of them.
//!
//! A restore writes one database per member, and every byte must be on disk before the data
//! dir is renamed into place. The walk writes the first member's file; a helper thread, every
//! [`KICK_BYTES`] written, `fdatasync`s it, copies what has been written since the last kick
//! into every other member's file with `copy_file_range` (page cache to page cache, no trip
//! through user space) and `fdatasync`s those. The disk writes of all copies overlap the walk
//! instead of being left to the final fsync, and the walk's thread writes each byte once.
//!
//! Measured with `bench/restore.sh` on ext4 (three members of a 1.26 GB snapshot): writing
//! every copy from the walk's thread took 7.7 to 8.0 s of which 7.5 s were the kernel copying
//! user buffers into fresh page-cache pages, three `cp` + `sync` 2.6 s, kernel copies of the
//! finished first db 2.9 to 3.1 s. (Earlier: a writer thread per file syncing inline, or a
//! syncer thread per file, were both slower; concurrent syncs contend.)
//!
//! Writing the dbs with direct I/O (`O_DIRECT`, no page cache) was tried and reverted: the
//! restore alone got faster (1.26 GB: 1.1 to 1.3 s against 1.2 to 3.9 s on the bench VM), but
//! etcd, started on the restored dbs, then read them from disk instead of the page cache, and
//! the quorum-loss drill at 1 GiB (`bench/recover.sh MIB=1024`) took 11.4 to 15.6 s against
//! 8.0 to 8.2 s. A restore is followed by a start; that is the time users wait for.
//!
//! The bytes the helper copies are those of in-order writes that have returned; a write that
//! lands below the furthest byte written so far (the bolt writer's meta pages, written last at
//! the start of the file) is remembered and copied again by [`Tee::finish`], so every copy ends
//! equal to the first file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Start writeback (and the copies) after this many bytes.
pub const KICK_BYTES: u64 = 64 << 20;

/// A failure of one of the files, by its position in the list given to [`Tee::new`].
#[derive(Debug)]
pub struct TeeError {
    pub file: usize,
    pub source: io::Error,
}

type Helper = JoinHandle<Result<(u64, Vec<File>), TeeError>>;

pub struct Tee {
    file: File,
    /// Where the next write lands.
    pos: u64,
    /// The end of the in-order writes: every byte below it has been written at least once.
    high: u64,
    /// Writes that landed below `high` (offset, length): copied again at the end.
    patches: Vec<(u64, u64)>,
    kick: Option<SyncSender<u64>>,
    helper: Option<Helper>,
    since_kick: u64,
}

impl Tee {
    /// `files[0]` is written through the `Tee` (and must be open for reading too); the others,
    /// empty, become copies of it.
    pub fn new(mut files: Vec<File>) -> Result<Tee, TeeError> {
        assert!(!files.is_empty(), "a tee needs a file");
        let copies = files.split_off(1);
        let file = files.pop().expect("one file");
        let source = file.try_clone().map_err(|source| TeeError { file: 0, source })?;
        let (tx, rx) = sync_channel::<u64>(1);
        let helper = std::thread::spawn(move || {
            let mut copied = 0;
            while let Ok(high) = rx.recv() {
                source.sync_data().map_err(|source| TeeError { file: 0, source })?;
                for (i, c) in copies.iter().enumerate() {
                    copy_range(&source, c, copied, high).map_err(|source| TeeError { file: i + 1, source })?;
                    c.sync_data().map_err(|source| TeeError { file: i + 1, source })?;
                }
                copied = high;
            }
            Ok((copied, copies))
        });
        Ok(Tee { file, pos: 0, high: 0, patches: Vec::new(), kick: Some(tx), helper: Some(helper), since_kick: 0 })
    }

    /// Stop the helper, complete every copy and fsync every file (in parallel); returns the
    /// files in the order given to [`Tee::new`].
    pub fn finish(mut self) -> Result<Vec<File>, TeeError> {
        drop(self.kick.take());
        let helper = self.helper.take().expect("a helper until finish");
        let (copied, copies) = helper.join().map_err(|_| TeeError { file: 0, source: io::Error::other("writeback thread panicked") })??;
        let (src, high, patches) = (&self.file, self.high, &self.patches);
        std::thread::scope(|s| {
            let first = s.spawn(move || src.sync_all().map_err(|source| TeeError { file: 0, source }));
            let rest: Vec<_> = copies
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    s.spawn(move || {
                        let fail = |source| TeeError { file: i + 1, source };
                        copy_range(src, c, copied, high).map_err(fail)?;
                        for &(at, len) in patches {
                            copy_range(src, c, at, at + len).map_err(fail)?;
                        }
                        c.sync_all().map_err(fail)
                    })
                })
                .collect();
            let panicked = |file| TeeError { file, source: io::Error::other("fsync thread panicked") };
            first.join().map_err(|_| panicked(0))??;
            rest.into_iter().enumerate().try_for_each(|(i, h)| h.join().map_err(|_| panicked(i + 1))?)
        })?;
        let file = self.file.try_clone().map_err(|source| TeeError { file: 0, source })?;
        Ok(std::iter::once(file).chain(copies).collect())
    }
}

/// Copy bytes `from..to` of `src` to the same offsets of `dst`: `copy_file_range`, or where the
/// kernel cannot between these two files (two filesystems on some kernels), read and write.
fn copy_range(src: &File, dst: &File, from: u64, to: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (from as libc::loff_t, from as libc::loff_t);
    while (off_in as u64) < to {
        let want = ((to - off_in as u64).min(1 << 30)) as usize;
        // SAFETY: two valid descriptors and offsets the call advances by what it copied.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, want, 0) };
        if n > 0 {
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the file ends at {off_in}, {to} expected")));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => return copy_by_reads(src, dst, off_in as u64, to),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
    Ok(())
}

fn copy_by_reads(src: &File, dst: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; (to - from).min(8 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], at)?;
        dst.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        let end = self.pos + buf.len() as u64;
        if self.pos < self.high {
            self.patches.push((self.pos, buf.len() as u64));
        }
        self.pos = end;
        self.high = self.high.max(end);
        self.since_kick += buf.len() as u64;
        if self.since_kick >= KICK_BYTES {
            self.since_kick = 0;
            if let Some(k) = &self.kick {
                if let Err(TrySendError::Disconnected(_)) = k.try_send(self.high) {
                    // The helper stopped on an error; finish() reports it.
                    self.kick = None;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Tee {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(pos)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(paths: &[std::path::PathBuf]) -> Vec<File> {
        paths.iter().map(|p| File::options().read(true).write(true).create_new(true).open(p).unwrap()).collect()
    }

    #[test]
    fn all_files_get_all_bytes_and_seeks() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..3).map(|i| d.path().join(format!("f{i}"))).collect();
        let mut t = Tee::new(open(&paths)).unwrap();
        t.write_all(&[1u8; 10]).unwrap();
        t.write_all(b"abc").unwrap();
        t.seek(SeekFrom::Start(2)).unwrap();
        t.write_all(b"Z").unwrap();
        assert_eq!(t.finish().unwrap().len(), 3);
        for p in paths {
            let mut want = vec![1u8; 10];
            want[2] = b'Z';
            want.extend_from_slice(b"abc");
            assert_eq!(std::fs::read(p).unwrap(), want);
        }
    }

    /// Past several kicks, with the helper copying while writes go on, a gap left by a seek
    /// forward and patches below what the helper has copied: the copies equal the first file.
    #[test]
    fn copies_made_while_writing_equal_the_file() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..3).map(|i| d.path().join(format!("f{i}"))).collect();
        let mut t = Tee::new(open(&paths)).unwrap();
        let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        t.seek(SeekFrom::Start(8192)).unwrap();
        for i in 0..(2 * KICK_BYTES / block.len() as u64 + 3) {
            t.write_all(&block[i as usize % 7..]).unwrap();
        }
        t.seek(SeekFrom::Current(4096)).unwrap();
        t.write_all(b"after a gap").unwrap();
        t.seek(SeekFrom::Start(0)).unwrap();
        t.write_all(&[7u8; 8192]).unwrap();
        t.seek(SeekFrom::Start(KICK_BYTES + 5)).unwrap();
        t.write_all(b"patched after its copy").unwrap();
        t.finish().unwrap();
        let first = std::fs::read(&paths[0]).unwrap();
        assert_eq!(&first[..8192], &[7u8; 8192][..]);
        assert!(first.ends_with(b"after a gap"));
        for p in &paths[1..] {
            assert!(std::fs::read(p).unwrap() == first, "{} differs from the first file", p.display());
        }
    }
}
