//! An output that writes the same bytes to several files and starts their writeback early.
//!
//! A restore writes one database per member, and every byte must be on disk before the data
//! dir is renamed into place. Writing all copies while the snapshot is read, and having a
//! helper thread `fdatasync` them in turn every [`KICK_BYTES`] written, overlaps the disk
//! writes with the work instead of leaving them all to the final fsync. (Measured with
//! `bench/restore.sh`: a writer thread per file syncing inline, or a syncer thread per file,
//! were both slower; concurrent syncs contend.)

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Start writeback after this many bytes.
pub const KICK_BYTES: u64 = 64 << 20;

pub struct Tee {
    files: Vec<File>,
    kick: Option<SyncSender<()>>,
    syncer: Option<JoinHandle<io::Result<()>>>,
    since_kick: u64,
}

impl Tee {
    pub fn new(files: Vec<File>) -> io::Result<Tee> {
        let clones = files.iter().map(File::try_clone).collect::<io::Result<Vec<_>>>()?;
        let (tx, rx) = sync_channel::<()>(1);
        let syncer = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                for f in &clones {
                    f.sync_data()?;
                }
            }
            Ok(())
        });
        Ok(Tee { files, kick: Some(tx), syncer: Some(syncer), since_kick: 0 })
    }

    /// Stop the helper and fsync every file (in parallel); returns the files.
    pub fn finish(mut self) -> io::Result<Vec<File>> {
        drop(self.kick.take());
        if let Some(h) = self.syncer.take() {
            h.join().map_err(|_| io::Error::other("writeback thread panicked"))??;
        }
        let files = std::mem::take(&mut self.files);
        std::thread::scope(|s| {
            let hs: Vec<_> = files.iter().map(|f| s.spawn(move || f.sync_all())).collect();
            hs.into_iter().try_for_each(|h| h.join().map_err(|_| io::Error::other("fsync thread panicked"))?)
        })?;
        Ok(files)
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for f in &mut self.files {
            f.write_all(buf)?;
        }
        self.since_kick += buf.len() as u64;
        if self.since_kick >= KICK_BYTES {
            self.since_kick = 0;
            if let Some(k) = &self.kick {
                if let Err(TrySendError::Disconnected(())) = k.try_send(()) {
                    // The helper stopped on an error; finish() reports it.
                    self.kick = None;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.files.iter_mut().try_for_each(|f| f.flush())
    }
}

impl Seek for Tee {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let mut at = 0;
        for f in &mut self.files {
            at = f.seek(pos)?;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_files_get_all_bytes_and_seeks() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..3).map(|i| d.path().join(format!("f{i}"))).collect();
        let files = paths.iter().map(|p| File::create(p).unwrap()).collect();
        let mut t = Tee::new(files).unwrap();
        t.write_all(&[1u8; 10]).unwrap();
        t.write_all(b"abc").unwrap();
        t.seek(SeekFrom::Start(2)).unwrap();
        t.write_all(b"Z").unwrap();
        t.finish().unwrap();
        for p in paths {
            let mut want = vec![1u8; 10];
            want[2] = b'Z';
            want.extend_from_slice(b"abc");
            assert_eq!(std::fs::read(p).unwrap(), want);
        }
    }
}
