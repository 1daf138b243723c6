//! What one backup added to a repository, by part: data chunks new since the backup before it,
//! key-map segments, chunk lists, with their stored (sealed) bytes. For issue 17's increments.
//!
//! ```text
//! cargo run --release -p repo --example increment_parts -- URL KEY_FILE CLUSTER OLD_ID NEW_ID
//! ```
use std::collections::HashSet;
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: increment_parts URL KEY_FILE CLUSTER OLD_ID NEW_ID");
        std::process::exit(2);
    }
    let loc = repo::Location::open(&a[1], &repo::StoreOptions::default(), false)?;
    let unlock = repo::Unlock { data: Some(repo::crypto::Secret::key_file(std::fs::read(PathBuf::from(&a[2]))?)?), bundle: None };
    let r = repo::Repository::open(loc, &unlock).await?;
    let index = r.load_index(&a[3]).await?;
    let (_, old) = r.resolve(&a[4], Some(&a[3])).await?;
    let (_, new) = r.resolve(&a[5], Some(&a[3])).await?;
    let old_chunks: HashSet<_> = r.chunk_ids(&old, &index).await?.into_iter().collect();
    let new_chunks = r.chunk_ids(&new, &index).await?;
    let size = |id: &repo::format::BlobId| index.blobs.get(id).map(|l| (l.entry.length as u64, l.entry.plain_len as u64)).unwrap_or((0, 0));
    let mut seen = HashSet::new();
    let (mut n, mut s, mut p) = (0u64, 0u64, 0u64);
    let mut positions = Vec::new();
    for (i, c) in new_chunks.iter().enumerate() {
        if !old_chunks.contains(c) && seen.insert(*c) {
            let (l, pl) = size(c);
            n += 1;
            s += l;
            p += pl;
            positions.push(i);
        }
    }
    println!("data chunks: {} of {}, new {n}, sealed {s} B, plain {p} B", new.chunks, new_chunks.len());
    let part = |name: &str, old: &[String], new: &[String]| {
        let o: HashSet<&String> = old.iter().collect();
        let (mut n, mut s) = (0u64, 0u64);
        for h in new.iter().filter(|h| !o.contains(h)) {
            let id = repo::repository::parse_id(h).unwrap();
            n += 1;
            s += size(&id).0;
        }
        let all: u64 = new.iter().map(|h| size(&repo::repository::parse_id(h).unwrap()).0).sum();
        println!("{name}: {} blobs ({all} B), new {n}, sealed {s} B", new.len());
    };
    part("chunk lists", &old.chunk_lists, &new.chunk_lists);
    let km = |m: &repo::format::Manifest| m.key_map.as_ref().map(|k| k.segments.clone()).unwrap_or_default();
    part("key map", &km(&old), &km(&new));
    let kp = |m: &repo::format::Manifest| m.key_map.as_ref().map(|k| k.patches.clone()).unwrap_or_default();
    part("key map patches", &kp(&old), &kp(&new));
    println!("added_bytes {} added_blobs {}", new.added_bytes, new.added_blobs);
    // Runs of new chunks: how clustered the changes are.
    let mut runs = 0;
    for w in positions.windows(2) {
        if w[1] != w[0] + 1 {
            runs += 1;
        }
    }
    println!("runs of new chunks: {}", runs + 1);
    Ok(())
}
