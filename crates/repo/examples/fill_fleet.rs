//! Fill a repository with a fleet's worth of backups for `bench/fleet.sh`, in-process and fast:
//! each cluster gets one real backup (chunked, packed, indexed) of one of the given small
//! snapshots (taken in turn, so neighbouring clusters hold different data), then further
//! backups of that cluster are its manifest sealed again with a distinct time, one PUT each:
//! real, restorable backups sharing the first one's data, as the hourly backups of an idle
//! cluster do.
//!
//! ```text
//! cargo run --release -p repo --example fill_fleet -- URL KEY_FILE CLUSTERS PER_CLUSTER SNAPSHOT...
//! ```
//! S3 settings come from the environment (AWS_ENDPOINT, AWS_ACCESS_KEY_ID, …).
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: fill_fleet URL KEY_FILE CLUSTERS PER_CLUSTER SNAPSHOT...");
        std::process::exit(2);
    }
    let (url, key, clusters, per): (&str, PathBuf, usize, usize) = (&a[1], PathBuf::from(&a[2]), a[3].parse()?, a[4].parse()?);
    let snaps: Vec<PathBuf> = a[5..].iter().map(PathBuf::from).collect();
    let opts = repo::StoreOptions { endpoint: std::env::var("AWS_ENDPOINT").ok(), ..Default::default() };
    let loc = repo::Location::open(url, &opts, false)?;
    let unlock = repo::Unlock { data: Some(repo::crypto::Secret::key_file(std::fs::read(&key)?)?), bundle: None };
    let r = Arc::new(repo::Repository::open(loc, &unlock).await?);
    let started = std::time::Instant::now();
    let done = futures::stream::iter(0..clusters)
        .map(|c| {
            let r = r.clone();
            let snap = snaps[c % snaps.len()].clone();
            async move {
                let name = format!("c{c}");
                let o = repo::backup::BackupOptions { snapshot: snap, cluster: name.clone(), source: "fill_fleet".into(), uploads: 2, ..Default::default() };
                let first = repo::backup::backup(r.clone(), &o, Arc::new(|_, _| {})).await?;
                let t0 = chrono::DateTime::parse_from_rfc3339(&first.manifest.time)?.with_timezone(&chrono::Utc);
                for i in 1..per {
                    let mut m = first.manifest.clone();
                    // Older than the real one, an hour apart: `latest` stays the real backup.
                    m.time = (t0 - chrono::Duration::hours(i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    m.added_bytes = 0;
                    m.added_blobs = 0;
                    let body = r.seal_json(&m, b"manifest");
                    let id = repo::format::content_name(&body);
                    r.put_new(&repo::format::manifest_path(&name, &id), Bytes::from(body)).await?;
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(16)
        .fold(0usize, |n, res| async move {
            if let Err(e) = res {
                eprintln!("fill_fleet: {e}");
                std::process::exit(1);
            }
            if (n + 1) % 100 == 0 {
                eprintln!("fill_fleet: {} clusters", n + 1);
            }
            n + 1
        })
        .await;
    eprintln!("fill_fleet: {done} clusters x {per} backups in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
