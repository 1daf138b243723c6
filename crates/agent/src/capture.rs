//! Continuous delta capture: a watch of the whole keyspace from a revision on, cut into sealed
//! repository segments ([`repo::delta`]) every `interval` or every `max_bytes`, whichever comes
//! first, so `quorum restore --at-revision R` can replay a full backup forward to any revision.
//!
//! ```no_run
//! # async fn f(repo: std::sync::Arc<repo::Repository>) -> Result<(), agent::capture::CaptureError> {
//! let conn = etcd_cluster::ConnConfig { endpoints: vec!["10.0.0.1:2379".into()], ..Default::default() };
//! let (stop_tx, stop) = tokio::sync::watch::channel(false);
//! let opts = agent::capture::CaptureOptions::new("prod", "<backup id>", 1234 + 1);
//! let run = tokio::spawn(async move { agent::capture::capture(&conn, repo, opts, stop).await });
//! // ... later:
//! stop_tx.send(true).ok();
//! let report = run.await.unwrap()?;
//! println!("captured up to revision {}", report.last_revision);
//! # Ok(()) }
//! ```
//!
//! Guarantees:
//! * **Whole revisions.** etcd never splits a revision across watch responses unless the watch
//!   asks for fragments (`watchable_store.go` `eventBatch.add` counts whole revisions;
//!   `v3rpc/watch.go` `sendLoop` fragments only with `fragment` set, which we never set), so a
//!   response ends on a revision boundary and segments are cut only between responses.
//! * **No gap, no duplicate.** After any stream error, end, member restart or leader change the
//!   watch is re-created from the last revision received + 1 (with back-off), and events at or
//!   below it are dropped should any arrive. Consecutive segments cover adjoining ranges.
//! * **Compaction.** A watch that starts below etcd's compact revision is cancelled by etcd with
//!   `compact_revision` set: what was captured so far is written, then
//!   [`CaptureError::Compacted`] names the lost revisions (take a full backup and capture
//!   from its revision).
//! * **Spool.** A cut segment is sealed once and written (those exact bytes) to a local spool
//!   ([`crate::spool`]: temporary file, fsync, rename) before anything is uploaded; the spool's
//!   uploader moves segments to the repository in order, retrying with back-off (up to 30 s), and
//!   deletes each only after its upload succeeded. So the capture does not stop while the
//!   repository is unavailable. When the spool holds `delta.spool_max_mib`, the capture stops
//!   reading the watch until there is room (backpressure: etcd keeps the history until it
//!   compacts; a compacted watch is the **Compaction** case above). Without
//!   [`CaptureOptions::spool`] a private temporary spool is used and drained before
//!   [`capture`] returns (at most [`CaptureOptions::drain_timeout`]).
//! * **Memory.** The events of the segment being filled, plus one sealed segment being spooled
//!   (and one read by the uploader).
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use etcd_data::replay::{encode_kv, Change};
use etcd_data::schema::KeyValue;
use repo::delta::{Event, Record, SegmentBuilder};
use repo::Repository;

use crate::spool::Spool;

/// When a segment is cut.
#[derive(Debug, Clone, Copy)]
pub struct SegmentPolicy {
    /// Cut this long after the segment's first revision arrived (the recovery point bound).
    pub interval: Duration,
    /// Cut once the segment's encoded events reach this size (a single larger revision still
    /// makes one segment: revisions are never split).
    pub max_bytes: usize,
}

impl Default for SegmentPolicy {
    fn default() -> Self {
        SegmentPolicy { interval: Duration::from_secs(5), max_bytes: 16 << 20 }
    }
}

/// One written (spooled) segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentInfo {
    pub name: String,
    pub first_revision: i64,
    pub last_revision: i64,
    pub revisions: u64,
    pub events: u64,
    /// Stored (sealed, compressed) bytes.
    pub bytes: u64,
}

/// Called after each segment is spooled (its upload is the spool's: [`crate::spool::OnUpload`]).
pub type OnSegment = Arc<dyn Fn(&SegmentInfo) + Send + Sync>;

/// A segment being sealed and spooled: the task (None: given up, the capture was stopped while
/// the spool was full), and its revision and event counts.
type Spooling = (JoinHandle<Result<Option<SegmentInfo>, CaptureError>>, u64, u64);

/// What to capture and how.
#[derive(Clone)]
pub struct CaptureOptions {
    pub cluster: String,
    /// The full backup the chain continues (recorded in every segment).
    pub base: String,
    /// The first revision to capture: the base's revision + 1, or the end of the chain + 1.
    pub from_revision: i64,
    pub policy: SegmentPolicy,
    /// Ask for `prev_kv` (its mod revision is kept with each event, for audits).
    pub prev_kv: bool,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Called after each segment is spooled.
    pub on_segment: Option<OnSegment>,
    /// Where segments go before they are uploaded; its uploader runs elsewhere
    /// ([`Spool::run_uploader`]). None: a private temporary spool with its own uploader,
    /// drained before [`capture`] returns.
    pub spool: Option<Arc<Spool>>,
    /// How long [`capture`] waits for a private spool to drain when it stops.
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for CaptureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureOptions")
            .field("cluster", &self.cluster)
            .field("base", &self.base)
            .field("from_revision", &self.from_revision)
            .field("policy", &self.policy)
            .field("spool", &self.spool.as_ref().map(|s| s.dir().to_path_buf()))
            .finish()
    }
}

impl CaptureOptions {
    pub fn new(cluster: &str, base: &str, from_revision: i64) -> CaptureOptions {
        CaptureOptions {
            cluster: cluster.into(),
            base: base.into(),
            from_revision,
            policy: SegmentPolicy::default(),
            prev_kv: true,
            max_backoff: Duration::from_secs(5),
            on_segment: None,
            spool: None,
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// What a capture did (until it was stopped).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureReport {
    pub from_revision: i64,
    /// The last revision written in a segment (to the spool; `from_revision - 1` when none was).
    pub last_revision: i64,
    pub segments: u64,
    pub revisions: u64,
    pub events: u64,
    pub bytes: u64,
    /// Watches re-created after an error, a stream end or a cancellation.
    pub reconnects: u64,
    /// etcd's cluster ID (hex).
    pub cluster_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "etcd has compacted its history up to revision {compact_revision}: the events of revisions {from}..{} were never captured and are lost; \
         the delta chain of cluster {cluster} ends at revision {last}. Take a full backup and capture from its revision + 1",
        compact_revision - 1
    )]
    Compacted { cluster: String, from: i64, compact_revision: i64, last: i64 },
    #[error("the endpoints now answer for etcd cluster {now}, but the capture started on cluster {was}: refusing to mix their histories")]
    ClusterChanged { was: String, now: String },
    #[error("revision {revision}: {what}")]
    Event { revision: i64, what: String },
    #[error("storing segment {first}..{last}: {source}")]
    Store { first: i64, last: i64, source: repo::Error },
    #[error("spooling segment {first}..{last}: {what}")]
    Spool { first: i64, last: i64, what: String },
    #[error(transparent)]
    Repo(#[from] repo::Error),
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The watch's view of one response: complete revisions, grouped.
fn records(events: &[etcd_client::Event], time_ms: i64, after: i64) -> Result<Vec<Record>, CaptureError> {
    let mut out: Vec<Record> = Vec::new();
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision();
        if rev <= after {
            continue; // already captured (never expected: the watch restarts one past it)
        }
        let change = match ev.event_type() {
            EventType::Put => Change::Put {
                kv: encode_kv(&KeyValue {
                    key: kv.key().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: rev,
                    version: kv.version(),
                    value: kv.value().to_vec(),
                    lease: kv.lease(),
                }),
            },
            EventType::Delete => Change::Delete { key: kv.key().to_vec() },
        };
        let e = Event { change, prev_mod_revision: ev.prev_kv().map(|p| p.mod_revision()).unwrap_or(0) };
        match out.last_mut() {
            Some(r) if r.revision == rev => r.events.push(e),
            Some(r) if r.revision > rev => {
                return Err(CaptureError::Event { revision: rev, what: format!("arrived after revision {} in one watch response", r.revision) })
            }
            _ => out.push(Record { revision: rev, time_ms, events: vec![e] }),
        }
    }
    Ok(out)
}

struct State {
    repo: Arc<Repository>,
    opts: CaptureOptions,
    spool: Arc<Spool>,
    /// For a spool write waiting for room: gives up when the capture stops.
    stop: watch::Receiver<bool>,
    seg: SegmentBuilder,
    /// When the open segment must be cut.
    deadline: Option<Instant>,
    /// The last revision received (in the open segment or before).
    received: i64,
    spooling: Option<Spooling>,
    /// A segment was given up (stopped while the spool was full): nothing after it may be
    /// written, or the chain would have a gap.
    gave_up: bool,
    report: CaptureReport,
    known_leases: std::collections::HashSet<i64>,
    lease_client: Option<etcd_client::Client>,
}

impl State {
    /// Record in the open segment the granted TTL of every lease a put is attached to, the
    /// first time this capture sees it (the watch carries lease IDs, not leases).
    async fn note_leases(&mut self, conn: &etcd_cluster::ConnConfig, events: &[etcd_client::Event]) {
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let id = kv.lease();
            if id == 0 || ev.event_type() != EventType::Put || !self.known_leases.insert(id) {
                continue;
            }
            if self.lease_client.is_none() {
                self.lease_client = conn.connect_all().await.ok();
            }
            let Some(c) = self.lease_client.as_mut() else { continue };
            match c.lease_time_to_live(id, None).await {
                // -1: already expired or revoked; its keys' deletes follow in the watch.
                Ok(r) if r.ttl() >= 0 && r.granted_ttl() > 0 => self.seg.add_lease(id, r.granted_ttl()),
                Ok(_) => {}
                Err(_) => {
                    // Try again with the next put on it.
                    self.known_leases.remove(&id);
                    self.lease_client = None;
                }
            }
        }
    }

    fn add(&mut self, recs: Vec<Record>) -> Result<(), CaptureError> {
        for r in recs {
            if self.seg.is_empty() {
                self.deadline = Some(Instant::now() + self.opts.policy.interval);
            }
            self.received = r.revision;
            self.seg.push(&r)?;
        }
        Ok(())
    }

    async fn wait_spooled(&mut self) -> Result<(), CaptureError> {
        if let Some((h, revisions, events)) = self.spooling.take() {
            let info = h.await.map_err(|e| CaptureError::Repo(repo::Error::Other(format!("spool task: {e}"))))??;
            let Some(info) = info else {
                self.gave_up = true;
                return Ok(());
            };
            self.report.segments += 1;
            self.report.revisions += revisions;
            self.report.events += events;
            self.report.bytes += info.bytes;
            self.report.last_revision = info.last_revision;
            if let Some(cb) = &self.opts.on_segment {
                cb(&info);
            }
        }
        Ok(())
    }

    /// Seal and spool the open segment (after the previous one is spooled: while the spool is
    /// full this waits, and the watch is not read meanwhile).
    async fn cut(&mut self) -> Result<(), CaptureError> {
        self.deadline = None;
        if self.seg.is_empty() {
            return Ok(());
        }
        let mut next = SegmentBuilder::new(&self.opts.cluster, &self.opts.base, self.seg.last_revision() + 1);
        next.set_cluster_id(self.report.cluster_id.clone());
        let seg = std::mem::replace(&mut self.seg, next);
        self.wait_spooled().await?;
        if self.gave_up {
            return Ok(());
        }
        let (key, level, spool, mut stop) = (self.repo.data_key().clone(), self.repo.config.compression, self.spool.clone(), self.stop.clone());
        let (revisions, events) = (seg.revisions(), seg.events());
        let h = tokio::spawn(async move {
            let (first, last) = (seg.first_revision(), seg.last_revision());
            let sealed = tokio::task::spawn_blocking(move || seg.seal(&key, level))
                .await
                .map_err(|e| CaptureError::Repo(repo::Error::Other(format!("seal task: {e}"))))??;
            let (name, stored, h) = sealed;
            let bytes = stored.len() as u64;
            if !spool.reserve(bytes, &mut stop).await {
                return Ok(None);
            }
            let file = name.rsplit('/').next().unwrap_or(&name).to_string();
            spool.add(&file, stored).await.map_err(|what| CaptureError::Spool { first, last, what })?;
            Ok(Some(SegmentInfo { name, first_revision: h.first_revision, last_revision: h.last_revision, revisions: h.revisions, events: h.events, bytes }))
        });
        self.spooling = Some((h, revisions, events));
        Ok(())
    }
}

async fn open_watch(conn: &etcd_cluster::ConnConfig, from: i64, prev_kv: bool) -> Result<WatchStream, String> {
    let client = conn.connect_all().await.map_err(|e| e.to_string())?;
    let mut opts = WatchOptions::new().with_all_keys().with_start_revision(from).with_progress_notify();
    if prev_kv {
        opts = opts.with_prev_key();
    }
    // A catch-up response holds up to 1000 revisions: far above the 4 MiB default.
    let mut wc = client.watch_client().max_decoding_message_size(i32::MAX as usize);
    match tokio::time::timeout(conn.dial_timeout + conn.command_timeout, wc.watch(vec![0u8], Some(opts))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no watch stream within the dial and command timeouts".into()),
    }
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Capture until `stop` turns true (or its sender is dropped): the open segment is then
/// written and the report returned. Errors end the capture after writing what was received
/// (except a failed write).
pub async fn capture(
    conn: &etcd_cluster::ConnConfig,
    repo: Arc<Repository>,
    opts: CaptureOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<CaptureReport, CaptureError> {
    repo::delta::check_cluster_name(&opts.cluster)?;
    if opts.from_revision < 1 {
        return Err(repo::Error::Usage(format!("capture from revision {}: revisions start at 1", opts.from_revision)).into());
    }
    let from = opts.from_revision;
    // A private spool has its own uploader, for this capture only.
    let (spool, uploader) = match &opts.spool {
        Some(s) => (s.clone(), None),
        None => {
            let s = Spool::private(&opts.cluster, crate::spool::DEFAULT_MAX_BYTES).map_err(|what| CaptureError::Spool { first: from, last: from, what })?;
            let up = tokio::spawn(s.clone().run_uploader(repo.clone(), None));
            (s, Some(up))
        }
    };
    let mut st = State {
        seg: SegmentBuilder::new(&opts.cluster, &opts.base, from),
        repo,
        spool,
        stop: stop.clone(),
        deadline: None,
        received: from - 1,
        spooling: None,
        gave_up: false,
        known_leases: Default::default(),
        lease_client: None,
        report: CaptureReport { from_revision: from, last_revision: from - 1, ..Default::default() },
        opts,
    };
    let r = run(conn, &mut st, &mut stop).await;
    // Whatever ended the capture, keep what was received.
    let flushed = match st.cut().await {
        Ok(()) => st.wait_spooled().await,
        Err(e) => Err(e),
    };
    let drained = match uploader {
        Some(up) => {
            let ok = st.spool.wait_empty(st.opts.drain_timeout).await;
            up.abort();
            let left = st.spool.entries();
            match (ok, left.first(), left.last()) {
                (false, Some(a), Some(b)) => Err(CaptureError::Store {
                    first: a.first,
                    last: b.last,
                    source: repo::Error::Other(format!(
                        "{} segment(s) not uploaded within {:?}: {}",
                        left.len(),
                        st.opts.drain_timeout,
                        st.spool.failing().unwrap_or_else(|| "still uploading".into())
                    )),
                }),
                _ => Ok(()),
            }
        }
        None => Ok(()),
    };
    r?;
    flushed?;
    drained?;
    Ok(st.report)
}

async fn run(conn: &etcd_cluster::ConnConfig, st: &mut State, stop: &mut watch::Receiver<bool>) -> Result<(), CaptureError> {
    let mut backoff = Duration::from_millis(200);
    let mut first = true;
    loop {
        if stopped(stop) {
            return Ok(());
        }
        if !first {
            st.report.reconnects += 1;
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(backoff) => {}
                _ = sleep_until(st.deadline) => st.cut().await?,
            }
            backoff = (backoff * 2).min(st.opts.max_backoff);
            if stopped(stop) {
                return Ok(());
            }
        }
        first = false;
        // Segments are still cut on time while no member answers.
        let opening = open_watch(conn, st.received + 1, st.opts.prev_kv);
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                _ = stop.changed() => if stopped(stop) { return Ok(()) },
                _ = sleep_until(st.deadline) => st.cut().await?,
                s = &mut opening => break s,
            }
        };
        let Ok(mut stream) = opened else { continue };
        loop {
            tokio::select! {
                _ = stop.changed() => if stopped(stop) { return Ok(()) },
                _ = sleep_until(st.deadline) => st.cut().await?,
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) | Err(_) => break,
                    };
                    if let Some(h) = resp.header() {
                        let id = format!("{:x}", h.cluster_id());
                        match &st.report.cluster_id {
                            Some(was) if *was != id => return Err(CaptureError::ClusterChanged { was: was.clone(), now: id }),
                            Some(_) => {}
                            None => {
                                st.report.cluster_id = Some(id.clone());
                                st.seg.set_cluster_id(Some(id));
                            }
                        }
                    }
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            let from = st.received + 1;
                            st.cut().await?;
                            st.wait_spooled().await?;
                            return Err(CaptureError::Compacted {
                                cluster: st.opts.cluster.clone(),
                                from,
                                compact_revision: resp.compact_revision(),
                                last: st.report.last_revision,
                            });
                        }
                        break; // cancelled for another reason (e.g. the member lost its leader): watch again
                    }
                    st.note_leases(conn, resp.events()).await;
                    let recs = records(resp.events(), now_ms(), st.received)?;
                    if !recs.is_empty() {
                        backoff = Duration::from_millis(200);
                    }
                    st.add(recs)?;
                    if st.seg.len() >= st.opts.policy.max_bytes {
                        st.cut().await?;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults() {
        let p = SegmentPolicy::default();
        assert_eq!(p.interval, Duration::from_secs(5));
        assert_eq!(p.max_bytes, 16 << 20);
        let o = CaptureOptions::new("prod", "b", 10);
        assert!(o.prev_kv);
        assert!(format!("{o:?}").contains("from_revision: 10"));
    }
}
