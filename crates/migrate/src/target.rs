//! The target cluster: paged range reads at one revision, and guarded batched writes.
//!
//! Writes go in transactions of at most `max_ops` puts (etcd's `--max-txn-ops`, default 128,
//! counts compares and puts separately) and about `max_bytes` of keys and values (etcd's
//! `--max-request-bytes` is 1.5 MiB by default; gRPC's message limit is 4 MiB). Every put is
//! guarded: a key written as new must still not exist (`create_revision == 0`), an overwritten
//! key must still be at the mod revision that was compared (`mod_revision == m`). A batch
//! whose guard fails (someone wrote meanwhile) is retried key by key, and the keys whose own
//! guard fails are reported, never written blindly.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use etcd_cluster::ConnConfig;

use crate::{Error, Result};

/// One key as the target holds it.
#[derive(Debug, Clone)]
pub struct TargetKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// A guarded put.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// 0: the key must not exist; else the mod revision it must still have.
    pub expect_mod: i64,
}

impl Put {
    fn cost(&self) -> usize {
        2 * self.key.len() + self.value.len() + 32
    }
}

/// Cuts a stream of puts into transactions of at most `max_ops` puts and about `max_bytes`
/// (a put larger than `max_bytes` goes alone), holding one transaction at a time.
pub struct Batcher {
    max_ops: usize,
    max_bytes: usize,
    cur: Vec<Put>,
    bytes: usize,
}

impl Batcher {
    pub fn new(max_ops: usize, max_bytes: usize) -> Batcher {
        Batcher { max_ops: max_ops.max(1), max_bytes, cur: Vec::new(), bytes: 0 }
    }

    /// Add `p`; returns the transaction it closed when `p` did not fit into it.
    pub fn push(&mut self, p: Put) -> Option<Vec<Put>> {
        let full = if !self.cur.is_empty() && (self.cur.len() >= self.max_ops || self.bytes + p.cost() > self.max_bytes) {
            self.bytes = 0;
            Some(std::mem::take(&mut self.cur))
        } else {
            None
        };
        self.bytes += p.cost();
        self.cur.push(p);
        full
    }

    /// The last, partly filled transaction.
    pub fn finish(self) -> Option<Vec<Put>> {
        (!self.cur.is_empty()).then_some(self.cur)
    }
}

/// Cut `puts` into transactions as a [`Batcher`] does.
pub fn batches(puts: Vec<Put>, max_ops: usize, max_bytes: usize) -> Vec<Vec<Put>> {
    let mut b = Batcher::new(max_ops, max_bytes);
    let mut out: Vec<Vec<Put>> = puts.into_iter().filter_map(|p| b.push(p)).collect();
    out.extend(b.finish());
    out
}

/// A connection to the target cluster.
pub struct Target {
    cfg: ConnConfig,
    client: Client,
    label: String,
}

impl Target {
    pub async fn connect(cfg: &ConnConfig) -> Result<Target> {
        let client = cfg.connect_all().await?;
        Ok(Target { cfg: cfg.clone(), client, label: cfg.endpoints.join(",") })
    }

    fn err(&self, op: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Target { endpoint: self.label.clone(), op, msg: e.to_string() }
    }

    /// Every key in `[start, end)` at `revision` (0: the current one), in key order, paged;
    /// returns the revision read at.
    pub async fn scan(&mut self, start: &[u8], end: &[u8], revision: i64, f: &mut dyn FnMut(TargetKv) -> Result<()>) -> Result<i64> {
        let mut rev = revision;
        let mut from = start.to_vec();
        let mut page = 256i64;
        loop {
            let opts = GetOptions::new().with_range(end.to_vec()).with_revision(rev).with_limit(page);
            let r = match tokio::time::timeout(self.cfg.command_timeout, self.client.get(from.clone(), Some(opts))).await {
                Ok(Ok(r)) => r,
                // Large values: a page over gRPC's 4 MiB message limit. Smaller pages.
                Ok(Err(e)) if e.to_string().contains("too large") && page > 1 => {
                    page = (page / 4).max(1);
                    continue;
                }
                Ok(Err(e)) => return Err(self.err("range read", e)),
                Err(_) => return Err(self.err("range read", format!("no answer within the command timeout ({:?})", self.cfg.command_timeout))),
            };
            if rev == 0 {
                rev = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in r.kvs() {
                f(TargetKv {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    version: kv.version(),
                    lease: kv.lease(),
                })?;
            }
            match (r.more(), r.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(rev),
            }
        }
    }

    async fn txn(&mut self, batch: &[Put]) -> Result<bool> {
        let cmps: Vec<Compare> = batch
            .iter()
            .map(|p| {
                if p.expect_mod == 0 {
                    Compare::create_revision(p.key.clone(), CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(p.key.clone(), CompareOp::Equal, p.expect_mod)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = batch.iter().map(|p| TxnOp::put(p.key.clone(), p.value.clone(), None)).collect();
        match tokio::time::timeout(self.cfg.command_timeout, self.client.txn(Txn::new().when(cmps).and_then(ops))).await {
            Ok(Ok(r)) => Ok(r.succeeded()),
            Ok(Err(e)) => Err(self.err("txn", e)),
            Err(_) => Err(self.err("txn", format!("no answer within the command timeout ({:?})", self.cfg.command_timeout))),
        }
    }

    /// Write one batch atomically; when its guard fails, key by key. Returns the puts whose
    /// own guard failed (the key changed in the target after it was compared).
    pub async fn apply(&mut self, batch: &[Put]) -> Result<Vec<Vec<u8>>> {
        if self.txn(batch).await? {
            return Ok(vec![]);
        }
        let mut changed = Vec::new();
        for p in batch {
            if !self.txn(std::slice::from_ref(p)).await? {
                changed.push(p.key.clone());
            }
        }
        Ok(changed)
    }

    /// Current revision and number of keys.
    pub async fn count(&mut self) -> Result<(i64, i64)> {
        let r = self.cfg.timed(&self.label, "count", self.client.get(vec![0u8], Some(GetOptions::new().with_range(vec![0u8]).with_count_only()))).await?;
        Ok((r.header().map(|h| h.revision()).unwrap_or(0), r.count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(n: usize) -> Put {
        Put { key: vec![b'k'; 10], value: vec![0; n], expect_mod: 0 }
    }

    #[test]
    fn batches_respect_ops_and_bytes() {
        let b = batches((0..300).map(|_| put(10)).collect(), 128, 1 << 20);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![128, 128, 44]);
        let b = batches(vec![put(600_000), put(600_000), put(2_000_000), put(1)], 128, 1 << 20);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
        let b = batches(vec![put(100), put(100)], 128, 1 << 20);
        assert_eq!(b.len(), 1);
        assert!(batches(vec![], 128, 1).is_empty());
    }
}
