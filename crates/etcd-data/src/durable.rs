//! Publishing a file or directory that must survive a crash and must never replace anything:
//! write it under a private temporary name beside its destination, fsync it, give it its name
//! only if that name is still free (an atomic no-clobber rename, so a file that appears
//! meanwhile is left alone and the write fails), then fsync the directory.
//!
//! Every writer of results (snapshot save, `backups get`, rekey, the Kubernetes export, the
//! agent's spool) goes through here; a kill -9 at any point leaves either nothing under the
//! destination's name or the complete, synced result, plus at most a `NAME.partial-XXXXXX`
//! temporary that a reader never takes for a result.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A new file being written beside `dest`; dropped unpublished, the temporary is removed.
pub struct NewFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl NewFile {
    /// Create `DEST.partial-XXXXXX` (mode 0600) in `dest`'s directory. Fails with
    /// [`io::ErrorKind::AlreadyExists`] when `dest` exists already.
    pub fn create(dest: &Path) -> io::Result<NewFile> {
        let prefix = partial_prefix(dest)?;
        let tmp = tempfile::Builder::new().prefix(&prefix).rand_bytes(6).tempfile_in(parent(dest))?;
        Ok(NewFile { tmp, dest: dest.to_path_buf() })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temporary's path, for reading back what was written and for error messages.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// fsync the file, give it its name unless that name was taken meanwhile
    /// ([`io::ErrorKind::AlreadyExists`], the temporary removed), fsync the directory.
    pub fn publish(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        let dest = self.dest.clone();
        self.publish_unsynced()?;
        sync_dir(parent(&dest))
    }

    /// Give it its name without any fsync: for a temporary that is read at once and never
    /// needs to survive a crash.
    pub fn publish_unsynced(self) -> io::Result<()> {
        let tmp = self.tmp.into_temp_path();
        match rename_noclobber(&tmp, &self.dest) {
            Ok(()) => {
                // The temporary's name is gone: nothing left for its guard to remove.
                let _ = tmp.keep();
                Ok(())
            }
            Err(e) => Err(e), // the guard removes the temporary
        }
    }
}

/// A new directory being filled beside `dest` (mode 0700); dropped unpublished, it is removed
/// with everything in it. The caller fsyncs the files it writes into it.
pub struct NewDir {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl NewDir {
    /// Create `DEST.partial-XXXXXX` in `dest`'s directory. Fails with
    /// [`io::ErrorKind::AlreadyExists`] when `dest` exists already.
    pub fn create(dest: &Path) -> io::Result<NewDir> {
        let prefix = partial_prefix(dest)?;
        let tmp = tempfile::Builder::new().prefix(&prefix).rand_bytes(6).tempdir_in(parent(dest))?;
        Ok(NewDir { tmp, dest: dest.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Give it its name unless that name was taken meanwhile (then it is removed), and fsync
    /// the parent directory.
    pub fn publish(self) -> io::Result<()> {
        let staged = self.tmp.keep();
        match publish_dir(&staged, &self.dest) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                Err(e)
            }
        }
    }
}

/// Rename `from` (a file or a directory) to `to` unless `to` exists: atomic on Linux
/// (`renameat2(RENAME_NOREPLACE)`); where the filesystem lacks that, files are hard-linked and
/// unlinked, directories renamed after a check (a rename never replaces a non-empty directory).
pub fn rename_noclobber(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"));
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths relative to the working directory.
        let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(exists(to));
        }
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    if from.is_dir() {
        if to.symlink_metadata().is_ok() {
            return Err(exists(to));
        }
        return std::fs::rename(from, to);
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => std::fs::remove_file(from),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists(to)),
        Err(e) => Err(e),
    }
}

/// Publish a directory staged beside `dest`: renamed without replacing anything, then the
/// parent fsynced (fsyncing what it holds is the caller's).
pub fn publish_dir(staged: &Path, dest: &Path) -> io::Result<()> {
    rename_noclobber(staged, dest)?;
    sync_dir(parent(dest))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory a path is in (`.` for a bare name).
pub fn parent(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `NAME.partial-` for a destination that does not exist yet (else AlreadyExists), in a
/// directory that does (else NotFound naming that directory, not the temporary).
fn partial_prefix(dest: &Path) -> io::Result<String> {
    if dest.symlink_metadata().is_ok() {
        return Err(exists(dest));
    }
    let dir = parent(dest);
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            // Callers name the destination; this says what is wrong with it.
            format!("{} is not an existing directory (create it first, or choose another path)", dir.display()),
        ));
    }
    let name = dest.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a name to publish under", dest.display())))?;
    Ok(format!("{}.partial-", name.to_string_lossy()))
}

fn exists(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", p.display()))
}

/// Allocate `len` bytes for `f` now (as etcd preallocates a WAL segment), so that a filesystem
/// without room fails before anything is written instead of midway, or, for a sparse file, only
/// when a reader touches it. A full filesystem is reported with the space needed and free
/// (still saying "No space left on device").
pub fn reserve(f: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let off = libc::off_t::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length out of range"))?;
    // SAFETY: a valid open file descriptor; posix_fallocate only allocates blocks.
    match unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, off) } {
        0 => Ok(()),
        // A filesystem that cannot allocate ahead (glibc emulates it elsewhere): size it.
        libc::EOPNOTSUPP => f.set_len(len),
        libc::ENOSPC => {
            let free = free_bytes(f).map(|b| format!(", {} free", crate::humanize::bytes(b))).unwrap_or_default();
            Err(io::Error::new(io::ErrorKind::StorageFull, format!("not enough space: {} needed{free} (No space left on device)", crate::humanize::bytes(len))))
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Make `dst` (an empty file) share `src`'s blocks copy-on-write, as `cp --reflink` does: the
/// `FICLONE` ioctl of XFS (with reflink, mkfs.xfs's default since xfsprogs 5.1), btrfs,
/// bcachefs and OCFS2. It writes no data and takes no space until one of the files changes;
/// `dst` then holds `src`'s bytes as of the call. `src` must be open for reading, `dst` for
/// writing, both on one filesystem. Fails with `EOPNOTSUPP` (ext4, tmpfs), `EXDEV` (two
/// filesystems) or `EINVAL` where the filesystem cannot.
pub fn clone_file(dst: &File, src: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: two valid open file descriptors; FICLONE takes the source descriptor by value.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes an unprivileged writer can still use on `f`'s filesystem.
pub fn free_bytes(f: &File) -> Option<u64> {
    use std::os::unix::io::AsRawFd;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a statvfs struct to fill.
    (unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_missing_directory_is_named() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("nonexist/dir/s.db");
        let e = NewFile::create(&dest).err().expect("no directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let m = e.to_string();
        assert!(m.contains("nonexist/dir is not an existing directory") && !m.contains("partial"), "{m}");
    }

    #[test]
    fn publishes_and_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.db");
        let mut f = NewFile::create(&dest).unwrap();
        f.file().write_all(b"first").unwrap();
        // Someone else takes the name while we write: ours fails, theirs stays.
        std::fs::write(&dest, b"theirs").unwrap();
        let e = f.publish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "the temporary is removed");
        std::fs::remove_file(&dest).unwrap();

        let mut f = NewFile::create(&dest).unwrap();
        f.file().write_all(b"second").unwrap();
        f.publish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert_eq!(NewFile::create(&dest).err().map(|e| e.kind()), Some(io::ErrorKind::AlreadyExists));
    }

    #[test]
    fn dropped_unpublished_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut f = NewFile::create(&d.path().join("x")).unwrap();
        f.file().write_all(b"half").unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn directories_are_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let (staged, dest) = (d.path().join(".staged"), d.path().join("export"));
        std::fs::create_dir(&staged).unwrap();
        std::fs::create_dir(&dest).unwrap();
        assert_eq!(publish_dir(&staged, &dest).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir(&dest).unwrap();
        publish_dir(&staged, &dest).unwrap();
        assert!(dest.is_dir() && !staged.exists());
    }
}
