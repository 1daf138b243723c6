//! The restored databases' output: one database written in order, into every member's file
//! at once, with the disk writes overlapping the walk that produces it.
//!
//! A restore writes one database per member, and every byte must be on disk before the data
//! dir is renamed into place. Two ways, chosen when the files are opened:
//!
//! - **Direct I/O** (`O_DIRECT`, where the filesystem takes it: ext4, XFS, btrfs): the walk
//!   fills 8 MiB page-aligned buffers, and a writer thread writes each buffer into every
//!   member's file straight from it, while the walk fills the next. No page cache is
//!   allocated for the databases, so a restore neither pays for fresh page-cache pages nor
//!   evicts what the host's other processes cache, and the final fsync has only metadata to
//!   write. Measured on the bench VM (1.26 GB, ext4, after the freed pages had gone back to
//!   the hypervisor): `dd oflag=direct` 1.2 s against 3.4 to 5.7 s for a buffered copy and
//!   `sync`; a restore from moto spent half its time in page-cache writes.
//! - **Buffered** (tmpfs and anything else that refuses `O_DIRECT`): the walk writes the first
//!   member's file; a helper thread, every [`KICK_BYTES`] written, `fdatasync`s it, copies what
//!   has been written since into every other member's file with `copy_file_range` (page cache
//!   to page cache, no trip through user space) and `fdatasync`s those. Writing every copy from
//!   the walk's thread instead took 7.7 to 8.0 s for three members of the bench snapshot, of
//!   which 7.5 s were the kernel copying user buffers into fresh page-cache pages; three `cp`
//!   and a `sync` took 2.6 s. (Earlier: a writer thread per file syncing inline, or a syncer
//!   thread per file, were both slower; concurrent syncs contend.) The bytes the helper copies
//!   are those of in-order writes that have returned; a write that lands below the furthest
//!   byte written so far (the bolt writer's meta pages, written last at the start of the file)
//!   is remembered and copied again at the end, so every copy ends equal to the first file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Buffered: start writeback (and the copies) after this many bytes.
pub const KICK_BYTES: u64 = 64 << 20;

/// Direct: the size of each buffer, and how many there are (one filled while the others are
/// written).
const DIRECT_BUF: usize = 8 << 20;
const DIRECT_BUFS: usize = 3;

/// What direct I/O requires of offsets, lengths and buffer addresses (the largest logical
/// block size of common devices, and the page size).
const ALIGN: usize = 4096;

/// A failure of one of the files, by its position in the list given to [`Tee::new`].
#[derive(Debug)]
pub struct TeeError {
    pub file: usize,
    pub source: io::Error,
}

type Helper = JoinHandle<Result<(u64, Vec<File>), TeeError>>;

/// The output; see the module documentation.
pub struct Tee {
    out: Out,
    /// The error that stopped the writer thread (direct I/O), for the caller to name the file.
    failure: Arc<Mutex<Option<TeeError>>>,
}

enum Out {
    Direct(Direct),
    Buffered(Buffered),
}

impl Tee {
    /// `files[0]` (open for reading too) and the others, all new and empty, get the same bytes.
    pub fn new(files: Vec<File>) -> Result<Tee, TeeError> {
        assert!(!files.is_empty(), "a tee needs a file");
        let failure = Arc::new(Mutex::new(None));
        let out = match Direct::reopen(&files) {
            Some(direct) => Out::Direct(Direct::start(files, direct, failure.clone())),
            None => Out::Buffered(Buffered::new(files)?),
        };
        Ok(Tee { out, failure })
    }

    /// Whether the files are written with direct I/O.
    pub fn direct(&self) -> bool {
        matches!(self.out, Out::Direct(_))
    }

    /// Where a write error of the writer thread is kept: a failed [`Write::write`] says only
    /// that the writer stopped; this says which file and why.
    pub fn failure(&self) -> Arc<Mutex<Option<TeeError>>> {
        self.failure.clone()
    }

    /// Complete every file and fsync them all; returns the files in the order given to
    /// [`Tee::new`].
    pub fn finish(self) -> Result<Vec<File>, TeeError> {
        match self.out {
            Out::Direct(d) => d.finish(&self.failure),
            Out::Buffered(b) => b.finish(),
        }
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Out::Direct(d) => d.write(buf),
            Out::Buffered(b) => b.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Out::Direct(_) => Ok(()),
            Out::Buffered(b) => b.file.flush(),
        }
    }
}

impl Seek for Tee {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match &mut self.out {
            Out::Direct(d) => d.seek(pos),
            Out::Buffered(b) => b.seek(pos),
        }
    }
}

/// A page-aligned buffer of [`DIRECT_BUF`] bytes, of which the first `len` are filled.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned memory, moved between threads whole.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(DIRECT_BUF, ALIGN).expect("a valid layout")
    }

    fn new() -> AlignedBuf {
        // SAFETY: a non-zero size; a null result is handled.
        let ptr = unsafe { std::alloc::alloc(Self::layout()) };
        let ptr = std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout()));
        AlignedBuf { ptr, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: `len` bytes of the allocation have been written.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Append what fits of `data`; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(DIRECT_BUF - self.len);
        // SAFETY: `n` bytes fit after `len` in the allocation, and `data` does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n) };
        self.len += n;
        n
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout()) };
    }
}

/// Direct I/O: see the module documentation.
struct Direct {
    files: Vec<File>,
    /// The buffer being filled, and the file offset of its first byte.
    cur: AlignedBuf,
    start: u64,
    to_writer: Option<SyncSender<(u64, AlignedBuf)>>,
    free: Receiver<AlignedBuf>,
    writer: Option<JoinHandle<()>>,
}

impl Direct {
    /// Every file opened again with `O_DIRECT` for writing, or None where any of them cannot
    /// be (the buffered way is then taken for all).
    fn reopen(files: &[File]) -> Option<Vec<File>> {
        use std::os::unix::fs::OpenOptionsExt;
        files
            .iter()
            .map(|f| std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(format!("/proc/self/fd/{}", f.as_raw_fd())).ok())
            .collect()
    }

    fn start(files: Vec<File>, direct: Vec<File>, failure: Arc<Mutex<Option<TeeError>>>) -> Direct {
        let (to_writer, work) = sync_channel::<(u64, AlignedBuf)>(DIRECT_BUFS);
        let (give_back, free) = sync_channel::<AlignedBuf>(DIRECT_BUFS);
        for _ in 1..DIRECT_BUFS {
            give_back.send(AlignedBuf::new()).expect("room for every buffer");
        }
        let buffered: Vec<File> = files.iter().filter_map(|f| f.try_clone().ok()).collect();
        let slot = failure.clone();
        let writer = std::thread::spawn(move || {
            for (off, mut buf) in work {
                if let Err(e) = write_everywhere(&direct, &buffered, off, buf.filled()) {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
                buf.len = 0;
                let _ = give_back.send(buf);
            }
        });
        Direct { files, cur: AlignedBuf::new(), start: 0, to_writer: Some(to_writer), free, writer: Some(writer) }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let took = self.cur.push(data);
            data = &data[took..];
            if self.cur.len == DIRECT_BUF {
                self.send()?;
            }
        }
        Ok(n)
    }

    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = match pos {
            SeekFrom::Start(at) => at,
            SeekFrom::Current(d) => self.start.checked_add_signed(self.cur.len as i64 + d).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?,
            SeekFrom::End(_) => return Err(io::Error::new(io::ErrorKind::Unsupported, "a seek from the end of a restored db")),
        };
        if at != self.start + self.cur.len as u64 {
            self.send()?;
            self.start = at;
        }
        Ok(at)
    }

    /// Hand the filled buffer to the writer and take an empty one.
    fn send(&mut self) -> io::Result<()> {
        if self.cur.len == 0 {
            return Ok(());
        }
        let stopped = || io::Error::other("the db writer stopped on an error");
        let next = self.free.recv().map_err(|_| stopped())?;
        let full = std::mem::replace(&mut self.cur, next);
        let at = self.start;
        self.start += full.len as u64;
        self.to_writer.as_ref().ok_or_else(stopped)?.send((at, full)).map_err(|_| stopped())
    }

    fn finish(mut self, failure: &Mutex<Option<TeeError>>) -> Result<Vec<File>, TeeError> {
        let sent = self.send();
        drop(self.to_writer.take());
        if let Some(w) = self.writer.take() {
            w.join().map_err(|_| TeeError { file: 0, source: io::Error::other("db writer thread panicked") })?;
        }
        if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        sent.map_err(|source| TeeError { file: 0, source })?;
        let files = std::mem::take(&mut self.files);
        std::thread::scope(|s| {
            let hs: Vec<_> = files.iter().enumerate().map(|(i, f)| s.spawn(move || f.sync_all().map_err(|source| TeeError { file: i, source }))).collect();
            hs.into_iter().enumerate().try_for_each(|(i, h)| h.join().map_err(|_| TeeError { file: i, source: io::Error::other("fsync thread panicked") })?)
        })?;
        Ok(files)
    }
}

/// Write `data` at `off` of every file: with direct I/O where the offset and length are
/// aligned and the filesystem takes it, else through the page cache.
fn write_everywhere(direct: &[File], buffered: &[File], off: u64, data: &[u8]) -> Result<(), TeeError> {
    use std::os::unix::fs::FileExt;
    let aligned = off.is_multiple_of(ALIGN as u64) && data.len().is_multiple_of(ALIGN);
    for (i, (d, b)) in direct.iter().zip(buffered).enumerate() {
        let r = if aligned {
            match d.write_all_at(data, off) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => b.write_all_at(data, off),
                r => r,
            }
        } else {
            b.write_all_at(data, off)
        };
        r.map_err(|source| TeeError { file: i, source })?;
    }
    Ok(())
}

/// Buffered: see the module documentation.
struct Buffered {
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

impl Buffered {
    /// `files[0]` is written through (and must be open for reading too); the others, empty,
    /// become copies of it.
    fn new(mut files: Vec<File>) -> Result<Buffered, TeeError> {
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
        Ok(Buffered { file, pos: 0, high: 0, patches: Vec::new(), kick: Some(tx), helper: Some(helper), since_kick: 0 })
    }

    /// Stop the helper, complete every copy and fsync every file (in parallel); returns the
    /// files in the order given.
    fn finish(mut self) -> Result<Vec<File>, TeeError> {
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

impl Buffered {
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

    /// Both ways, whatever the test directory's filesystem would choose.
    fn tees(dir: &std::path::Path, n: usize) -> Vec<(&'static str, Tee, Vec<std::path::PathBuf>)> {
        ["direct", "buffered"]
            .into_iter()
            .map(|way| {
                let paths: Vec<_> = (0..n).map(|i| dir.join(format!("{way}{i}"))).collect();
                let files = open(&paths);
                let failure = Arc::new(Mutex::new(None));
                let out = match way {
                    "direct" => {
                        let direct = Direct::reopen(&files).expect("O_DIRECT in the test directory");
                        Out::Direct(Direct::start(files, direct, failure.clone()))
                    }
                    _ => Out::Buffered(Buffered::new(files).unwrap()),
                };
                (way, Tee { out, failure }, paths)
            })
            .collect()
    }

    #[test]
    fn all_files_get_all_bytes_and_seeks() {
        let d = tempfile::tempdir().unwrap();
        for (way, mut t, paths) in tees(d.path(), 3) {
            t.write_all(&[1u8; 10]).unwrap();
            t.write_all(b"abc").unwrap();
            t.seek(SeekFrom::Start(2)).unwrap();
            t.write_all(b"Z").unwrap();
            assert_eq!(t.finish().unwrap().len(), 3);
            for p in paths {
                let mut want = vec![1u8; 10];
                want[2] = b'Z';
                want.extend_from_slice(b"abc");
                assert_eq!(std::fs::read(p).unwrap(), want, "{way}");
            }
        }
    }

    /// Past several buffers and kicks (the helper copying while writes go on), a gap left by a
    /// seek forward, aligned and unaligned pieces, and patches below what was already written:
    /// every file ends with the same bytes, those written.
    #[test]
    fn every_file_gets_what_was_written_last() {
        let d = tempfile::tempdir().unwrap();
        let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut want = vec![0u8; 8192];
        for (i, _) in (0..(2 * KICK_BYTES / block.len() as u64 + 3)).enumerate() {
            want.extend_from_slice(&block[i % 7..]);
        }
        want.extend_from_slice(&[0u8; 4096]);
        want.extend_from_slice(b"after a gap");
        want[..8192].copy_from_slice(&[7u8; 8192]);
        let at = KICK_BYTES as usize + 5;
        want[at..at + 22].copy_from_slice(b"patched after its copy");
        for (way, mut t, paths) in tees(d.path(), 3) {
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
            for p in &paths {
                assert!(std::fs::read(p).unwrap() == want, "{way}: {} differs from what was written", p.display());
            }
        }
    }

    /// A full filesystem under direct I/O: the writer's error names the file, and writes after
    /// it fail instead of being lost.
    #[test]
    fn a_write_error_names_its_file() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..2).map(|i| d.path().join(format!("f{i}"))).collect();
        let mut files = open(&paths);
        // The second file cannot be written: its direct handle is a read-only one.
        let direct = vec![files[0].try_clone().unwrap(), File::open(&paths[1]).unwrap()];
        files[1] = File::open(&paths[1]).unwrap();
        let failure = Arc::new(Mutex::new(None));
        let mut t = Tee { out: Out::Direct(Direct::start(files, direct, failure.clone())), failure };
        let page = vec![1u8; ALIGN];
        let mut failed = false;
        for _ in 0..(4 * DIRECT_BUF / ALIGN) {
            if t.write_all(&page).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writes went on after the writer stopped");
        let Err(e) = t.finish() else { panic!("the error") };
        assert_eq!(e.file, 1);
    }
}
