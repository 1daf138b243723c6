//! The capture with a spool and the repository out of reach (no uploader running), against a
//! real etcd 3.5: the capture fills the spool up to its bound and then pauses (it stops reading
//! the watch; etcd keeps the history); once the uploader runs the spool drains, the capture
//! catches up, and the repository's chain is contiguous up to the last written revision.
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::capture::{capture, CaptureOptions, SegmentPolicy};
use agent::spool::{Spool, SpoolMetrics};
use testkit::{Cluster, ClusterOptions, EtcdVersion};

const BOUND: u64 = 64 << 10;

fn value(i: u64) -> Vec<u8> {
    // Incompressible: segments stay about as large as their events.
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn chain_end(repo: &repo::Repository) -> (i64, usize) {
    let segs = repo::delta::list_segments(repo, "bp").await.unwrap();
    let c = repo::delta::plan_chain(&segs, 1, None);
    (c.contiguous_to, c.gaps.len())
}

#[test]
fn a_full_spool_pauses_the_capture_which_resumes_without_gap() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let eps = c.endpoints();
    let d = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let url = format!("file://{}", d.path().join("repo").display());
        let secret = repo::crypto::Secret::passphrase(b"pw-for-tests".to_vec()).unwrap();
        let loc = repo::Location::open(&url, &repo::StoreOptions::default(), true).unwrap();
        let iopts = repo::repository::InitOptions { argon2: repo::crypto::Argon2Params { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
        let repo = Arc::new(repo::repository::init(loc, &secret, None, &iopts).await.unwrap());
        let m = SpoolMetrics::default();
        let spool = Spool::open(&d.path().join("spool"), &repo.config.id, "bp", BOUND, m.clone()).unwrap();

        let mut opts = CaptureOptions::new("bp", "base", 1);
        opts.policy = SegmentPolicy { interval: Duration::from_millis(100), max_bytes: 16 << 10 };
        opts.spool = Some(spool.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let conn = etcd_cluster::ConnConfig { endpoints: eps.clone(), ..Default::default() };
        let (r2, cap_conn) = (repo.clone(), conn.clone());
        let cap = tokio::spawn(async move { capture(&cap_conn, r2, opts, stop_rx).await });

        // About 1.5 MiB of changes: far more than the spool holds.
        let mut cl = etcd_client::Client::connect(&eps, None).await.unwrap();
        let mut last = 0;
        for i in 0..1500u64 {
            last = cl.put(format!("/bp/{:03}", i % 100), value(i), None).await.unwrap().header().unwrap().revision();
        }
        let t = Instant::now();
        while m.full.get() != 1 {
            assert!(t.elapsed() < Duration::from_secs(20), "the spool never filled: {} bytes", spool.bytes());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let paused_at = spool.entries().last().unwrap().last;
        // Within the bound, except one segment larger than it (a catch-up response of up to
        // 1000 revisions is never split), which only an empty spool takes.
        assert!(spool.bytes() <= BOUND || spool.len() == 1, "{} bytes in {} segments spooled, bound {BOUND}", spool.bytes(), spool.len());
        assert!(paused_at < last, "the capture should be paused behind the writer");
        assert_eq!(m.segments.get() as usize, spool.len());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(spool.entries().last().unwrap().last, paused_at, "the capture went on while the spool was full");
        assert_eq!(m.full.get(), 1);
        assert_eq!(chain_end(&repo).await, (0, 0), "nothing uploaded yet");

        // The repository "comes back": the uploader drains, the capture catches up.
        let up = tokio::spawn(spool.clone().run_uploader(repo.clone(), None));
        let t = Instant::now();
        while chain_end(&repo).await.0 < last {
            assert!(t.elapsed() < Duration::from_secs(60), "the chain reached only {:?} of {last}", chain_end(&repo).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_tx.send(true).unwrap();
        let report = cap.await.unwrap().unwrap();
        assert!(spool.wait_empty(Duration::from_secs(30)).await);
        up.abort();
        assert_eq!(report.last_revision, last);
        assert_eq!(report.revisions, 1500, "{report:?}");
        assert_eq!(chain_end(&repo).await, (last, 0));
        assert_eq!(m.full.get(), 0);
        eprintln!("paused at revision {paused_at} of {last} with the spool full; {} segments in the end", report.segments);
    });
}
