//! Loaders that fill a real cluster with a Kubernetes-like keyspace through etcd's gRPC API.
//!
//! Keys follow kube-apiserver's layout (`/registry/<resource>/<namespace>/<name>`, cluster-scoped
//! resources without a namespace); values are 0.5 to 8 KiB of JSON-shaped text. Overwrites,
//! deletes and a compaction give the snapshot history, tombstones and free pages.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, CompactionOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Namespaced resources and how they appear under `/registry`.
const NAMESPACED: &[&str] = &["pods", "configmaps", "secrets", "services/specs", "deployments", "serviceaccounts", "events"];
/// Cluster-scoped resources.
const CLUSTER: &[&str] = &["namespaces", "minions", "clusterroles", "apiextensions.k8s.io/customresourcedefinitions"];

/// Operations per transaction (etcd's default `--max-txn-ops` is 128) and bytes per request
/// (default `--max-request-bytes` is 1.5 MiB).
const TXN_OPS: usize = 100;
const TXN_BYTES: usize = 1 << 20;

/// What to load.
#[derive(Debug, Clone)]
pub struct KubeKeyspace {
    pub objects: usize,
    pub namespaces: usize,
    pub min_value: usize,
    pub max_value: usize,
    /// Fraction of objects overwritten once more after creation.
    pub overwrite_fraction: f64,
    /// Fraction of objects deleted.
    pub delete_fraction: f64,
    /// Compact (physically) after the overwrites and deletes, then write a little more.
    pub compact: bool,
    pub seed: u64,
}

impl Default for KubeKeyspace {
    fn default() -> Self {
        KubeKeyspace { objects: 1000, namespaces: 10, min_value: 512, max_value: 8192, overwrite_fraction: 0.3, delete_fraction: 0.1, compact: true, seed: 1 }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    pub puts: u64,
    pub deletes: u64,
    pub value_bytes: u64,
    pub revision: i64,
    pub compacted_at: Option<i64>,
    pub live_keys: usize,
}

/// The key of object `i`.
pub fn object_key(i: usize, namespaces: usize) -> String {
    let all = NAMESPACED.len() + CLUSTER.len();
    let r = i % all;
    if r < NAMESPACED.len() {
        format!("/registry/{}/ns-{:03}/obj-{i:08}", NAMESPACED[r], (i / all) % namespaces.max(1))
    } else {
        format!("/registry/{}/obj-{i:08}", CLUSTER[r - NAMESPACED.len()])
    }
}

/// A JSON-shaped value of exactly `size` bytes (at least the header's length).
pub fn object_value(key: &str, generation: u64, size: usize, rng: &mut StdRng) -> Vec<u8> {
    let head = format!("{{\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"{key}\",\"generation\":{generation}}},\"data\":\"");
    let mut v = head.into_bytes();
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    while v.len() + 2 < size {
        v.push(ALPHA[rng.random_range(0..ALPHA.len())]);
    }
    v.extend_from_slice(b"\"}");
    v
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

async fn connect(endpoints: &[String]) -> Result<Client> {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(30)).with_connect_timeout(Duration::from_secs(5));
    Client::connect(endpoints, Some(opts)).await.context("connecting to etcd")
}

/// Send `ops` in transactions of bounded size; returns the last revision.
async fn send(client: &mut Client, ops: Vec<(TxnOp, usize)>) -> Result<i64> {
    let mut rev = 0;
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut it = ops.into_iter().peekable();
    while let Some((op, n)) = it.next() {
        batch.push(op);
        bytes += n;
        let full = batch.len() >= TXN_OPS || it.peek().is_none_or(|(_, m)| bytes + m > TXN_BYTES);
        if full {
            let resp = client.txn(Txn::new().and_then(std::mem::take(&mut batch))).await?;
            rev = resp.header().map(|h| h.revision()).unwrap_or(rev);
            bytes = 0;
        }
    }
    Ok(rev)
}

/// Load a Kubernetes-like keyspace (blocking).
pub fn load(endpoints: &[String], spec: &KubeKeyspace) -> Result<LoadSummary> {
    runtime()?.block_on(load_async(endpoints, spec))
}

pub async fn load_async(endpoints: &[String], spec: &KubeKeyspace) -> Result<LoadSummary> {
    let mut client = connect(endpoints).await?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut sum = LoadSummary::default();
    let puts = |rng: &mut StdRng, idx: &[usize], generation: u64, sum: &mut LoadSummary| {
        idx.iter()
            .map(|&i| {
                let k = object_key(i, spec.namespaces);
                let size = rng.random_range(spec.min_value..=spec.max_value.max(spec.min_value));
                let v = object_value(&k, generation, size, rng);
                sum.puts += 1;
                sum.value_bytes += v.len() as u64;
                let n = k.len() + v.len() + 16;
                (TxnOp::put(k, v, None), n)
            })
            .collect::<Vec<_>>()
    };
    let all: Vec<usize> = (0..spec.objects).collect();
    let ops = puts(&mut rng, &all, 1, &mut sum);
    sum.revision = send(&mut client, ops).await?;
    let over: Vec<usize> = all.iter().copied().filter(|_| rng.random_bool(spec.overwrite_fraction.clamp(0.0, 1.0))).collect();
    let ops = puts(&mut rng, &over, 2, &mut sum);
    sum.revision = send(&mut client, ops).await?.max(sum.revision);
    let del: Vec<usize> = all.iter().copied().filter(|_| rng.random_bool(spec.delete_fraction.clamp(0.0, 1.0))).collect();
    let ops: Vec<_> = del.iter().map(|&i| (TxnOp::delete(object_key(i, spec.namespaces), None), 64)).collect();
    sum.deletes = del.len() as u64;
    sum.revision = send(&mut client, ops).await?.max(sum.revision);
    sum.live_keys = spec.objects - del.len();
    if spec.compact && sum.revision > 0 {
        client.compact(sum.revision, Some(CompactionOptions::new().with_physical())).await?;
        sum.compacted_at = Some(sum.revision);
        // A little history after the compaction point.
        let after: Vec<usize> = over.iter().copied().filter(|i| !del.contains(i)).take(spec.objects / 20 + 1).collect();
        let ops = puts(&mut rng, &after, 3, &mut sum);
        sum.revision = send(&mut client, ops).await?.max(sum.revision);
    }
    Ok(sum)
}

/// Fill the cluster quickly with about `bytes` of values in objects of `min_value..=max_value`
/// bytes (uniformly drawn), with `concurrency` transactions in flight. Use a cluster started
/// with `big_requests`.
pub fn bulk(endpoints: &[String], bytes: u64, min_value: usize, max_value: usize, concurrency: usize) -> Result<LoadSummary> {
    let max_value = max_value.max(min_value);
    let mean = (min_value + max_value) / 2;
    runtime()?.block_on(async {
        let client = connect(endpoints).await?;
        let n = (bytes / mean.max(1) as u64) as usize;
        let per_txn = (4 << 20) / mean.max(1);
        let per_txn = per_txn.clamp(1, 5000);
        let mut tasks = Vec::new();
        for t in 0..concurrency.max(1) {
            let mut c = client.clone();
            let conc = concurrency.max(1);
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(t as u64);
                let mut rev = 0;
                let mut written = 0u64;
                let mine: Vec<usize> = (t..n).step_by(conc).collect();
                for chunk in mine.chunks(per_txn) {
                    let ops: Vec<TxnOp> = chunk
                        .iter()
                        .map(|&i| {
                            let k = object_key(i, 50);
                            let size = rng.random_range(min_value..=max_value);
                            let v = object_value(&k, 1, size, &mut rng);
                            written += v.len() as u64;
                            TxnOp::put(k, v, None)
                        })
                        .collect();
                    let r = c.txn(Txn::new().and_then(ops)).await?;
                    rev = r.header().map(|h| h.revision()).unwrap_or(rev);
                }
                anyhow::Ok((rev, written))
            }));
        }
        let (mut rev, mut value_bytes) = (0, 0);
        for t in tasks {
            let (r, w) = t.await??;
            rev = rev.max(r);
            value_bytes += w;
        }
        Ok(LoadSummary { puts: n as u64, value_bytes, revision: rev, live_keys: n, ..Default::default() })
    })
}

/// Put one key (blocking); returns the revision.
pub fn put(endpoints: &[String], key: &str, value: &[u8]) -> Result<i64> {
    runtime()?.block_on(async {
        let mut c = connect(endpoints).await?;
        let r = c.put(key, value, None).await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    })
}

/// One key as a range read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// Every key (full range read) at `revision` (0: latest), with the revision read at. Pages
/// of 200 keys at one fixed revision (gRPC responses are limited to 4 MiB).
pub fn dump(endpoints: &[String], revision: i64) -> Result<(i64, Vec<Kv>)> {
    runtime()?.block_on(async {
        let mut c = connect(endpoints).await?;
        let mut rev = revision;
        let mut from = vec![0u8];
        let mut out = Vec::new();
        loop {
            let opts = etcd_client::GetOptions::new().with_range(vec![0u8]).with_revision(rev).with_limit(200);
            let r = c.get(from.clone(), Some(opts)).await?;
            if rev == 0 {
                rev = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            out.extend(r.kvs().iter().map(|kv| Kv {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                lease: kv.lease(),
            }));
            match (r.more(), r.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((rev, out))
    })
}

/// `HashKV` of one member at `revision` (0: latest): (hash, compact revision, header revision).
pub fn hash_kv(endpoint: &str, revision: i64) -> Result<(u32, i64, i64)> {
    runtime()?.block_on(async {
        let mut c = connect(&[endpoint.to_string()]).await?;
        let r = c.hash_kv(revision).await?;
        Ok((r.hash(), r.compact_version(), r.header().map(|h| h.revision()).unwrap_or(0)))
    })
}
