//! A size-limited tmpfs for full-disk tests, unmounted on drop.

use std::path::{Path, PathBuf};

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `mib` MiB under `parent`. `None` (with a notice) where mounting is not
    /// allowed (not root); under `CI=true` that is a failure, as CI runs as root.
    pub fn mount(test: &str, parent: &Path, mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir_in(parent).expect("a directory for the mount point").keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir));
        }
        let _ = std::fs::remove_dir(&dir);
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: cannot mount a tmpfs (CI runs as root and must)");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped {test}: mounting a tmpfs needs root\n").as_bytes());
        None
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Every entry left on the filesystem (relative paths), for "nothing half-written" checks.
    pub fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
