//! A long delta chain for `bench/replay.sh`: one real backup of SNAPSHOT as cluster CLUSTER,
//! then REVISIONS revisions after it, one put each (keys `/bench/key-<n % KEYS>` overwritten
//! in turn, values of VALUE_BYTES, versions and create revisions as etcd would keep them),
//! written as sealed delta segments of 20,000 revisions, as the agent's capture writes them at
//! 1,000 puts/s (one receive time per millisecond). Built offline: an hour of capture takes
//! seconds to make.
//!
//! ```text
//! cargo run --release -p repo --example fill_chain -- URL KEY_FILE CLUSTER SNAPSHOT REVISIONS KEYS VALUE_BYTES
//! ```
use std::path::PathBuf;
use std::sync::Arc;

use etcd_data::replay::Change;
use prost::Message;
use repo::delta::{Event, Record, SegmentBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        eprintln!("usage: fill_chain URL KEY_FILE CLUSTER SNAPSHOT REVISIONS KEYS VALUE_BYTES");
        std::process::exit(2);
    }
    let (url, key, cluster, snap) = (&a[1], PathBuf::from(&a[2]), a[3].clone(), PathBuf::from(&a[4]));
    let (revisions, keys, value_bytes): (i64, i64, usize) = (a[5].parse()?, a[6].parse()?, a[7].parse()?);
    let loc = repo::Location::open(url, &repo::StoreOptions::default(), false)?;
    let unlock = repo::Unlock { data: Some(repo::crypto::Secret::key_file(std::fs::read(&key)?)?), bundle: None };
    let r = Arc::new(repo::Repository::open(loc, &unlock).await?);
    let o = repo::backup::BackupOptions { snapshot: snap, cluster: cluster.clone(), source: "fill_chain".into(), uploads: 4, ..Default::default() };
    let base = repo::backup::backup(r.clone(), &o, Arc::new(|_, _| {})).await?;
    let base_rev = base.manifest.snapshot.revision;
    let t0 = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let mut seg = SegmentBuilder::new(&cluster, &base.id, base_rev + 1);
    let mut created = vec![0i64; keys as usize];
    let mut version = vec![0i64; keys as usize];
    let mut value = vec![b'v'; value_bytes];
    let mut segments = 0usize;
    for i in 0..revisions {
        let rev = base_rev + 1 + i;
        let k = (i % keys) as usize;
        if created[k] == 0 {
            created[k] = rev;
        }
        version[k] += 1;
        let n = value.len();
        value[(i as usize) % n] = b'a' + (i % 26) as u8;
        let kv = etcd_data::schema::KeyValue {
            key: format!("/bench/key-{k:07}").into_bytes(),
            create_revision: created[k],
            mod_revision: rev,
            version: version[k],
            value: value.clone(),
            lease: 0,
        };
        seg.push(&Record { revision: rev, time_ms: t0 + i, events: vec![Event { change: Change::Put { kv: kv.encode_to_vec() }, prev_mod_revision: 0 }] })?;
        if seg.revisions() >= 20_000 || i + 1 == revisions {
            repo::delta::write_segment(&r, &seg).await?;
            segments += 1;
            seg = SegmentBuilder::new(&cluster, &base.id, rev + 1);
        }
    }
    eprintln!(
        "fill_chain: backup {} at revision {base_rev}, then {revisions} revisions in {segments} segments, in {:.1}s",
        &base.id[..8],
        started.elapsed().as_secs_f64()
    );
    println!("{base_rev} {}", base_rev + revisions);
    Ok(())
}
