//! A backup of a running cluster: a snapshot saved from a healthy member (through
//! `etcd_cluster::save`), then backed up with the member's identity. The agent schedules it,
//! `quorum backup` and `quorum migrate` run it once.
use std::path::PathBuf;
use std::sync::Arc;

use crate::backup::{ArrivingSnapshot, BackupOptions, BackupReport, Progress};
use crate::error::{Error, Result};
use crate::Repository;

/// What a live backup takes.
#[derive(Debug, Clone, Default)]
pub struct LiveBackup {
    pub cluster: String,
    /// endpoints, follower, leader, or a member name.
    pub from: String,
    pub tmp_dir: Option<PathBuf>,
    pub tags: Vec<String>,
    pub includes: Vec<PathBuf>,
    pub uploads: usize,
    /// A control-plane host's root (`/`): back up as cluster-backup.sh does, the newest
    /// revision of each static pod's resources under `etc/kubernetes/static-pod-resources`
    /// into the bundle, taken before the snapshot ([`crate::openshift`]).
    pub openshift_root: Option<PathBuf>,
}

/// Back up a snapshot from a healthy member while it streams in: the bytes go to a temporary
/// file (in a [`crate::scratch::Scratch`] directory), and the backup (chunks, the sha256
/// trailer check, status, hashkv and the key map) reads them as they land instead of after the
/// whole snapshot is saved. The backup takes the
/// cluster's shared lock. A stream that fails or ends short fails the backup's reads, so no
/// manifest is written; the file is never published and is removed with its directory.
pub async fn live_backup(cfg: &etcd_cluster::ConnConfig, repo: Arc<Repository>, b: &LiveBackup, progress: Progress) -> Result<BackupReport> {
    let dir = b.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = crate::scratch::Scratch::new(&dir, "quorum-backup-")?;
    let path = tmp.path().join("snapshot.db");
    // As cluster-backup.sh: the static resources first, then the snapshot.
    let openshift = match &b.openshift_root {
        Some(root) => {
            let base = root.join("etc/kubernetes");
            let resources = root.join(crate::openshift::RESOURCES_DIR);
            let dirs: Vec<String> =
                crate::openshift::latest_static_pod_dirs(&resources)?.into_iter().map(|(_, d)| format!("static-pod-resources/{d}")).collect();
            let stamp = crate::openshift::stamp_now();
            let tarball = tmp.path().join(crate::openshift::tarball_name(&stamp));
            crate::openshift::write_host_tarball(&base, &dirs, &tarball)?;
            Some((tarball, stamp))
        }
        None => None,
    };
    let mut stream = etcd_cluster::save::stream(cfg, &etcd_cluster::save::Source::parse(&b.from)).await?;
    let file = crate::scratch::private_file(&path).map_err(|e| Error::io(&path, e))?;
    let arriving = Arc::new(Growing::new(file, stream.len));
    let (endpoint, member, len) = (stream.endpoint.clone(), stream.member.clone(), stream.len);
    let feed = {
        let (arriving, path) = (arriving.clone(), path.clone());
        tokio::spawn(async move {
            let r = async {
                while let Some(bytes) = stream.next().await? {
                    arriving.append(&bytes).map_err(|e| Error::io(&path, e))?;
                }
                arriving.finish().map_err(|e| Error::io(&path, e))
            }
            .await;
            if let Err(e) = &r {
                arriving.fail(e.to_string());
            }
            r
        })
    };
    let mut opts = BackupOptions {
        cluster: b.cluster.clone(),
        tags: b.tags.clone(),
        includes: b.includes.clone(),
        uploads: b.uploads.max(1),
        snapshot: path.clone(),
        source: endpoint.clone(),
        member: Some(member),
        openshift,
        arriving: Some(ArrivingSnapshot { bytes: arriving.clone(), len }),
        ..Default::default()
    };
    if let Ok(view) = etcd_cluster::observe(cfg, etcd_cluster::DEFAULT_QUOTA).await {
        if let Some(s) = view.statuses.iter().find(|s| s.endpoint == endpoint) {
            opts.member_id = Some(s.id.clone());
            opts.etcd_version = Some(s.version.clone());
            opts.cluster_id = Some(s.cluster_id.clone());
        }
    }
    let report = crate::backup::backup(repo.clone(), &opts, progress).await;
    if report.is_err() && !feed.is_finished() {
        // The backup stopped on its own (a lock, the store): nothing more to stream.
        feed.abort();
        arriving.fail("the backup stopped".into());
        return report;
    }
    let fed = feed.await.map_err(|e| Error::Other(format!("snapshot stream task: {e}")))?;
    drop(tmp);
    match (report, fed) {
        // The stream's error says more than the reads it failed.
        (Err(_), Err(e)) => Err(e),
        (report, _) => report,
    }
}

/// The snapshot file while the stream writes it: [`bolt::ReadAt`] reads wait until the bytes
/// they ask for are written. The last 32 bytes (the sha256 trailer) are served only once the
/// stream has ended with exactly the length it announced, so a backup cannot finish on a
/// stream that goes on to fail.
struct Growing {
    file: std::fs::File,
    len: u64,
    state: std::sync::Mutex<GrowingState>,
    changed: std::sync::Condvar,
}

struct GrowingState {
    written: u64,
    ended: bool,
    failed: Option<String>,
    /// The fewest bytes written that lets a waiting reader go on (u64::MAX: none waits). A
    /// member sends 32 KiB a message: waking the readers at each one (40,000 times for a
    /// 1.26 GB snapshot) cost them a context switch each for nothing.
    wanted: u64,
}

impl Growing {
    fn new(file: std::fs::File, len: u64) -> Growing {
        let state = GrowingState { written: 0, ended: false, failed: None, wanted: u64::MAX };
        Growing { file, len, state: std::sync::Mutex::new(state), changed: std::sync::Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GrowingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write the next bytes of the stream.
    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.lock().written;
        if at + bytes.len() as u64 > self.len {
            return Err(std::io::Error::other(format!("the member sent more than the {} bytes it announced", self.len)));
        }
        self.file.write_all_at(bytes, at)?;
        let mut s = self.lock();
        s.written = at + bytes.len() as u64;
        let wake = s.written >= s.wanted;
        if wake {
            // Those still short of their bytes say so again.
            s.wanted = u64::MAX;
        }
        drop(s);
        if wake {
            self.changed.notify_all();
        }
        Ok(())
    }

    /// The stream ended: it must have delivered every announced byte.
    fn finish(&self) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.written != self.len {
            return Err(std::io::Error::other(format!("the snapshot stream ended after {} of the {} bytes it announced", s.written, self.len)));
        }
        s.ended = true;
        drop(s);
        self.changed.notify_all();
        Ok(())
    }

    fn fail(&self, why: String) {
        self.lock().failed.get_or_insert(why);
        self.changed.notify_all();
    }
}

impl bolt::ReadAt for Growing {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let end = self.len.min(off + buf.len() as u64);
        if off >= end {
            return Ok(0);
        }
        let trailer = self.len.saturating_sub(32);
        let mut s = self.lock();
        loop {
            if let Some(why) = &s.failed {
                return Err(std::io::Error::other(format!("the snapshot stream failed: {why}")));
            }
            if s.written >= end && (end <= trailer || s.ended) {
                break;
            }
            // The trailer's bytes also need the end of the stream, which always wakes.
            s.wanted = s.wanted.min(end);
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
    use std::time::Duration;

    fn growing(len: u64) -> (tempfile::TempDir, Arc<Growing>) {
        let d = tempfile::tempdir().unwrap();
        let f = crate::scratch::private_file(&d.path().join("s.db")).unwrap();
        (d, Arc::new(Growing::new(f, len)))
    }

    /// A read in another thread; None if it has not returned after `wait`.
    fn read_in_thread(g: &Arc<Growing>, off: u64, n: usize) -> std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let g = g.clone();
        std::thread::spawn(move || {
            let mut b = vec![0u8; n];
            let _ = tx.send(g.read_at(&mut b, off).map(|k| b[..k].to_vec()));
        });
        rx
    }

    #[test]
    fn reads_wait_for_their_bytes_and_the_trailer_for_the_end() {
        let (_d, g) = growing(100);
        let body = read_in_thread(&g, 10, 20);
        let trailer = read_in_thread(&g, 60, 40);
        std::thread::sleep(Duration::from_millis(50));
        assert!(body.try_recv().is_err(), "a read returned before its bytes were written");
        g.append(&[1u8; 40]).unwrap();
        assert_eq!(body.recv_timeout(Duration::from_secs(5)).unwrap().unwrap(), vec![1u8; 20]);
        g.append(&[2u8; 60]).unwrap();
        // Every byte is written, but the last 32 (the sha256 trailer) wait for the stream's end.
        std::thread::sleep(Duration::from_millis(50));
        assert!(trailer.try_recv().is_err(), "the trailer was served before the stream ended");
        g.finish().unwrap();
        let t = trailer.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(t, vec![2u8; 40]);
        // At and past the end: short reads, as pread.
        let mut b = [0u8; 10];
        assert_eq!(g.read_at(&mut b, 95).unwrap(), 5);
        assert_eq!(g.read_at(&mut b, 100).unwrap(), 0);
    }

    #[test]
    fn a_stream_that_fails_ends_short_or_runs_long_fails_the_reads() {
        let (_d, g) = growing(100);
        let waiting = read_in_thread(&g, 50, 10);
        g.append(&[0u8; 30]).unwrap();
        g.fail("connection reset".into());
        let e = waiting.recv_timeout(Duration::from_secs(5)).unwrap().unwrap_err();
        assert!(e.to_string().contains("connection reset"), "{e}");
        // Bytes written before the failure are not served either: the snapshot is void.
        assert!(g.read_at(&mut [0u8; 10], 0).is_err());

        let (_d, g) = growing(100);
        g.append(&[0u8; 90]).unwrap();
        let e = g.finish().unwrap_err();
        assert!(e.to_string().contains("90 of the 100 bytes"), "{e}");
        let (_d, g) = growing(100);
        g.append(&[0u8; 90]).unwrap();
        let e = g.append(&[0u8; 11]).unwrap_err();
        assert!(e.to_string().contains("more than the 100 bytes"), "{e}");
    }
}
