//! Filesystems mounted for one test and unmounted on drop: a size-limited tmpfs (full-disk
//! tests) and a loop-mounted XFS with reflinks (the copy-on-write paths, which ext4 and tmpfs
//! lack). Mounting needs root; where it is not allowed the test is skipped with a notice, and
//! under `CI=true` that is a failure, as CI runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Mount {
    dir: PathBuf,
    /// The loop device's backing file, removed after the unmount.
    image: Option<PathBuf>,
}

fn ran(c: &mut Command) -> bool {
    c.output().is_ok_and(|o| o.status.success())
}

fn unmounted(test: &str, dir: &Path, why: &str) -> Option<Mount> {
    let _ = std::fs::remove_dir(dir);
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {why} (CI runs as root and must be able to)");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped {test}: {why}\n").as_bytes());
    None
}

impl Mount {
    /// A tmpfs of `mib` MiB under `parent`.
    pub fn tmpfs(test: &str, parent: &Path, mib: u64) -> Option<Mount> {
        let dir = tempfile::tempdir_in(parent).expect("a directory for the mount point").keep();
        if ran(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"]).arg(&dir)) {
            return Some(Mount { dir, image: None });
        }
        unmounted(test, &dir, "cannot mount a tmpfs (needs root)")
    }

    /// An XFS with reflinks of `mib` MiB (mkfs.xfs wants 300 at least) in a sparse image file
    /// under `parent`, on a loop device (xfsprogs from scripts/setup.sh).
    pub fn xfs(test: &str, parent: &Path, mib: u64) -> Option<Mount> {
        let dir = tempfile::tempdir_in(parent).expect("a directory for the mount point").keep();
        let image = dir.with_extension("xfs.img");
        let made = std::fs::File::create(&image).and_then(|f| f.set_len(mib << 20)).is_ok()
            && ran(Command::new("mkfs.xfs").args(["-q", "-f", "-m", "reflink=1"]).arg(&image));
        if made && ran(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&dir)) {
            return Some(Mount { dir, image: Some(image) });
        }
        let _ = std::fs::remove_file(&image);
        unmounted(test, &dir, "cannot make and loop-mount an XFS (needs root, xfsprogs and a loop device)")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Every entry left on the filesystem (relative paths), for "nothing half-written" checks.
    pub fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A loop mount made with `-o loop` frees its device on unmount.
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}
