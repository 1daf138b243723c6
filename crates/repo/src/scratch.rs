//! Temporary directories that hold a snapshot while a command works: a live backup's stream, a
//! restore's or a point-in-time restore's spill, a drill's member. A snapshot holds every Secret
//! of the cluster, so the directory is the owner's only (0700), and a process killed with -9 (or
//! a crash, a power cut), which cannot remove its directory, must not leave it for good: each
//! directory holds a lock (`flock`) while in use, and making one sweeps the directories of the
//! same kind beside it whose lock no process holds (the kernel drops a dead process's locks).
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The file in a scratch directory whose lock its user holds.
const LOCK: &str = "lock";
/// A directory without a lock file (left by a version before the lock, or made this instant by
/// a process about to take its lock) is swept only once it is this old.
const UNLOCKED_STALE: Duration = Duration::from_secs(3600);

/// A scratch directory, removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
    _lock: File,
}

impl Scratch {
    /// A new directory `PREFIX*` in `parent` (mode 0700, locked), after sweeping the stale
    /// `PREFIX*` directories there.
    pub fn new(parent: &Path, prefix: &str) -> Result<Scratch> {
        sweep_stale(parent, prefix);
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir.path(), e))?;
        let lock = hold(dir.path()).map_err(|e| Error::io(dir.path(), e))?;
        Ok(Scratch { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Lock `dir` for this process: the lock is taken under another name and renamed into place,
/// so a sweeper never finds an unlocked lock file of a directory in use.
fn hold(dir: &Path) -> std::io::Result<File> {
    let taking = dir.join(".lock");
    let f = private_file(&taking)?;
    f.lock()?;
    std::fs::rename(&taking, dir.join(LOCK))?;
    Ok(f)
}

/// A new file only its owner can read (mode 0600), as etcdctl creates a snapshot; an existing
/// one is never reused.
pub(crate) fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)
}

/// Remove the `prefix*` directories in `parent` that no process uses: those whose lock no
/// process holds, and those without a lock file once `UNLOCKED_STALE` old. Errors are
/// skipped: the command does not depend on the sweep. Returns how many were removed.
pub fn sweep_stale(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let ours = e.file_name().to_str().is_some_and(|n| n.starts_with(prefix));
        if !ours || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = match File::open(path.join(LOCK)) {
            // Held by a running process: WouldBlock.
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= UNLOCKED_STALE)),
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed snapshot of a live backup and the lock files are such files.
    #[test]
    fn private_files_are_their_owners_only_and_new() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.db");
        drop(private_file(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(private_file(&p).is_err(), "an existing file is never reused");
    }

    #[test]
    fn dead_processes_directories_are_swept_running_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let made = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).unwrap();
            p
        };
        let running = Scratch::new(dir.path(), "quorum-backup-").unwrap();
        // Killed: its lock file is there, no process holds it.
        let dead = made("quorum-backup-dead");
        drop(hold(&dead).unwrap());
        std::fs::write(dead.join("snapshot.db"), b"secrets").unwrap();
        // No lock file: new ones may be about to take theirs; old ones are an older version's.
        let young = made("quorum-backup-young");
        let old = made("quorum-backup-old");
        std::fs::File::open(&old).unwrap().set_modified(std::time::SystemTime::now() - UNLOCKED_STALE * 2).unwrap();
        // Another kind's, dead too: swept only by its own kind.
        let drill = made("quorum-drill-dead");
        drop(hold(&drill).unwrap());
        let other = made("other-backup");
        assert_eq!(sweep_stale(dir.path(), "quorum-backup-"), 2);
        assert!(running.path().join(LOCK).exists() && young.exists() && other.exists() && drill.exists(), "in use or not this kind: kept");
        assert!(!dead.exists() && !old.exists(), "stale: removed");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(running.path()).unwrap().permissions().mode() & 0o777, 0o700);
        // Making the next one sweeps its kind.
        let _next = Scratch::new(dir.path(), "quorum-drill-").unwrap();
        assert!(!drill.exists());
        let path = running.path().to_path_buf();
        drop(running);
        assert!(!path.exists(), "removed when dropped");
        assert_eq!(sweep_stale(&dir.path().join("missing"), "quorum-backup-"), 0);
    }
}
