//! A whole-cluster migration's new cluster kept in step with its source, revision for revision:
//! `quorum migrate --sync`, `--follow` and `--cutover` (after `--stage`, [`crate::whole`]).
//!
//! The new cluster starts at the backup's revision R (restored natively, no revision bump).
//! Every later source revision comes from a watch of the source opened just past the target's
//! revision, with previous values, and is applied to the target as exactly one transaction with
//! the same operations in the same order. So after every step the target's revision equals the
//! source's, and every revision reads the same on both (`get --rev`, `hashkv`): Kubernetes
//! resourceVersions, watch caches and informers carry over.
//!
//! **Guards.** Each transaction compares every key it touches with what the source held before
//! that revision (its mod revision, or its absence): a key someone else wrote in the target
//! fails the transaction, and nothing of that revision is applied. The revision the target
//! answers with must be the source's: when it is higher, something else wrote to the target
//! (another client, or a lease of its own running out), and the sync stops with what it saw.
//!
//! **Progress lives in the target.** Its revision is the last source revision applied: a sync
//! killed at any point is run again and goes on from there, and each revision is applied once.
//! Nothing is written to the repository while syncing but a `--follow`'s checkpoints, which
//! are notes for `--status` and the cutover, not progress.
//!
//! **Leases.** A lease running out in the target would delete its keys there: a revision the
//! source does not have. So every lease the target gets lives longer than the source's by a
//! grace (`--lease-grace`, 10 minutes by default): those in the backup get it added by the
//! stage's restore; before a put attached to a lease the target lacks (the watch carries lease
//! IDs, not leases), the lease is granted in the target with the same ID and the source's
//! granted TTL plus the grace. While syncing, a target lease whose source lease lives is kept
//! alive whenever its time left falls below the source's, and one whose source lease is gone is
//! revoked once it holds no key (the source deleted its keys in a revision the sync applies; a
//! revoke of a lease without keys writes no revision). So syncs may be up to the grace apart.
//! After the cutover, a lease that existed then keeps the longer TTL for as long as its clients
//! keep it alive: the keys of a client that dies go up to the grace later than on the source.
//!
//! **Checkpoints.** A `--follow` verifies the target as it goes: once it has run a second and then
//! every [`CHECKPOINT_EVERY`] (or 30 times as long as the last one took, on a store so large that
//! hashing it takes over 2 s), `hashkv` at the last revision applied on the source and on every
//! target member, beside the sync (on connections of its own). Each equal result is a checkpoint,
//! written into the migration's note in the repository (with the totals so far, so `--status` shows
//! a running follow). Unequal stops the follow: the target differs.
//!
//! **Cutover.** With writers to the source stopped, the target is synced to the source's revision
//! and verified at it: with a checkpoint, every revision after the checkpoint's is read back from
//! the source and from each target member (a watch, which each member serves from its own store)
//! and compared event for event (key, value, create and mod revisions, version, lease;
//! [`verify_since`]): equal at the checkpoint and equal since means equal now, at the cost of the
//! revisions since rather than of a pass over every store. Without one (or when a side compacted
//! past it), every target member's `hashkv` at the cutover's revision must equal the source's. The
//! source's revision must not move meanwhile (at least half a second: `StillSource`), or the
//! cutover syncs on to the new one while `--settle` lasts. Leases the stopped writers held still
//! run out on the source afterwards (and a grace later on the target, with the same keys):
//! revisions after the cutover's are not carried, and the cutover's revision is the one a cutover
//! run again verifies.
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use etcd_cluster::ConnConfig;

use crate::{Error, Event, Result, Sink};

/// How far a sync goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// To the source's revision when the sync starts.
    Sync,
    /// On, until stopped.
    Follow,
    /// Writers are stopped: sync to the source's revision and verify, going on for up to
    /// `settle` while the revision still moves (`StillSource`).
    Cutover { settle: Duration },
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Follow => "follow",
            Mode::Cutover { .. } => "cutover",
        }
    }
}

/// One target member at the cutover revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberHash {
    pub endpoint: String,
    pub revision: i64,
    pub hash_kv: u32,
    pub ok: bool,
}

/// The cutover's verification (and a `--follow`'s checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutoverCheck {
    pub revision: i64,
    /// The source's `hashkv` at `since` when set, else at `revision`; so are the members'.
    pub source_hash_kv: u32,
    pub members: Vec<MemberHash>,
    pub ok: bool,
    /// Verified from a checkpoint: `hashkv` equal at this revision, and every revision after it
    /// up to `revision` equal event for event on every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// How often, at most, a `--follow` takes a checkpoint (see the module documentation): each
/// costs the source and every target member a pass over its store.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// A checkpoint's cost bounded to about a thirtieth of the time: the next is due no sooner
/// than this many times as long as the last one took.
const CHECKPOINT_SHARE: u32 = 30;

/// A `--follow`'s checkpoint and the run's report when it was taken.
pub type Checkpoint = (CutoverCheck, SyncReport);

/// What a sync knows of checkpoints: the newest one (for a cutover), and where a `--follow`
/// sends those it takes.
#[derive(Default)]
pub struct Checkpoints {
    pub newest: Option<CutoverCheck>,
    pub taken: Option<mpsc::UnboundedSender<Checkpoint>>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub mode: String,
    /// The target's revision when the sync started (the last revision an earlier run applied).
    pub from_revision: i64,
    /// The target's revision at the end: the last source revision applied.
    pub target_revision: i64,
    /// The source's revision last seen.
    pub source_revision: i64,
    pub revisions_applied: u64,
    pub puts: u64,
    pub deletes: u64,
    pub leases_granted: u64,
    pub leases_revoked: u64,
    pub leases_kept_alive: u64,
    pub verification: Option<CutoverCheck>,
    pub seconds: f64,
}

pub(crate) fn target_err<'a>(to: &'a ConnConfig, op: &'static str) -> impl Fn(etcd_client::Error) -> Error + 'a {
    move |e| Error::Target { endpoint: to.endpoints.join(","), op, msg: e.to_string() }
}

pub(crate) fn source_err(op: &'static str) -> impl Fn(etcd_client::Error) -> Error {
    move |e| Error::Source(format!("{op}: {e}"))
}

/// A cluster's current revision (a count-only range: reads no values).
pub(crate) async fn revision(c: &mut Client) -> std::result::Result<i64, etcd_client::Error> {
    let r = c.get(vec![0u8], Some(etcd_client::GetOptions::new().with_range(vec![0u8]).with_count_only())).await?;
    Ok(r.header().map(|h| h.revision()).unwrap_or(0))
}

/// One operation of a source revision: the key, `Some((value, lease))` for a put or `None`
/// for a delete, and what the key was before (`Some(mod revision)`, `None` absent).
type Op = (Vec<u8>, Option<(Vec<u8>, i64)>, Option<i64>);

/// One source revision: its operations in order.
#[derive(Debug, Default)]
struct Revision {
    ops: Vec<Op>,
}

/// The source's events grouped by revision, in order; an event without its key-value is an
/// error (a watch always carries it).
fn group(events: &[etcd_client::Event]) -> Result<BTreeMap<i64, Revision>> {
    let mut out: BTreeMap<i64, Revision> = BTreeMap::new();
    for ev in events {
        let kv = ev.kv().ok_or_else(|| Error::Source("a watch event without its key".into()))?;
        let before = ev.prev_kv().map(|p| p.mod_revision());
        let op = match ev.event_type() {
            EventType::Put => Some((kv.value().to_vec(), kv.lease())),
            EventType::Delete => None,
        };
        out.entry(kv.mod_revision()).or_default().ops.push((kv.key().to_vec(), op, before));
    }
    Ok(out)
}

struct Syncer<'a> {
    src: &'a ConnConfig,
    dst: &'a ConnConfig,
    source: Client,
    target: Client,
    report: SyncReport,
    /// Leases the target holds (as far as this sync knows).
    target_leases: HashSet<i64>,
    /// Seconds added to the TTL of a lease granted in the target.
    lease_grace: i64,
    last_relay: Instant,
    last_note: Instant,
    /// A `--follow`'s checkpoint being taken (and when it started), the revision of the last
    /// one started, when the next is due, and where they go.
    checking: Option<(Instant, tokio::task::JoinHandle<Result<CutoverCheck>>)>,
    checked_rev: i64,
    next_check: Instant,
    taken: Option<mpsc::UnboundedSender<Checkpoint>>,
}

impl Drop for Syncer<'_> {
    /// A checkpoint still being taken is of no use once the sync ends.
    fn drop(&mut self) {
        if let Some((_, t)) = self.checking.take() {
            t.abort();
        }
    }
}

impl Syncer<'_> {
    /// Grant in the target every lease `rev` attaches a key to that the target lacks.
    async fn leases_for(&mut self, rev: &Revision) -> Result<()> {
        for (_, op, _) in &rev.ops {
            let Some((_, lease)) = op else { continue };
            if *lease == 0 || self.target_leases.contains(lease) {
                continue;
            }
            // The source's granted TTL; a lease already gone there gets a minute, its keys'
            // deletions follow in the watch.
            let ttl = match self.source.lease_time_to_live(*lease, None).await {
                Ok(r) if r.ttl() > 0 && r.granted_ttl() > 0 => r.granted_ttl(),
                _ => 60,
            };
            match self.target.lease_grant(ttl.saturating_add(self.lease_grace), Some(LeaseGrantOptions::new().with_id(*lease))).await {
                Ok(_) => self.report.leases_granted += 1,
                // Granted by an earlier, killed run.
                Err(e) if e.to_string().contains("lease already exists") => {}
                Err(e) => return Err(target_err(self.dst, "grant a lease")(e)),
            }
            self.target_leases.insert(*lease);
        }
        Ok(())
    }

    /// Apply source revision `r` as one guarded transaction.
    async fn apply(&mut self, r: i64, rev: Revision) -> Result<()> {
        self.leases_for(&rev).await?;
        let mut compares = Vec::with_capacity(rev.ops.len());
        let mut ops = Vec::with_capacity(rev.ops.len());
        let mut guarded: HashSet<&[u8]> = HashSet::new();
        for (key, op, before) in &rev.ops {
            // A key is compared once, with what it was before this revision.
            if guarded.insert(key) {
                compares.push(match before {
                    Some(m) => Compare::mod_revision(key.clone(), CompareOp::Equal, *m),
                    None => Compare::version(key.clone(), CompareOp::Equal, 0),
                });
            }
            ops.push(match op {
                Some((value, lease)) => {
                    self.report.puts += 1;
                    TxnOp::put(key.clone(), value.clone(), (*lease != 0).then(|| PutOptions::new().with_lease(*lease)))
                }
                None => {
                    self.report.deletes += 1;
                    TxnOp::delete(key.clone(), None)
                }
            });
        }
        let resp = self.target.txn(Txn::new().when(compares).and_then(ops)).await.map_err(target_err(self.dst, "apply a revision"))?;
        let got = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.succeeded() {
            return Err(Error::Diverged(format!(
                "source revision {r}: {} key(s) it changes are not in the target as the source had them before it: another writer changed \
                 the target (its revision is {got}); nothing of revision {r} was applied. Stop that writer; the migration cannot go on \
                 (stage again with --restart)",
                guarded.len()
            )));
        }
        if got != r {
            return Err(another_writer(r, got));
        }
        self.report.revisions_applied += 1;
        self.report.target_revision = r;
        self.report.source_revision = self.report.source_revision.max(r);
        Ok(())
    }

    /// Once a second while syncing: the lease relay every 2 s, a progress line every 10 s
    /// while following.
    async fn tick(&mut self, mode: Mode, on: &Sink) -> Result<()> {
        if self.last_relay.elapsed() >= Duration::from_secs(2) {
            self.relay_leases().await?;
            self.last_relay = Instant::now();
        }
        if mode == Mode::Follow && self.last_note.elapsed() >= Duration::from_secs(10) {
            let now = revision(&mut self.source).await.unwrap_or(self.report.source_revision);
            self.report.source_revision = now;
            on(Event::Plan(format!("synced to revision {} (source at {now}, {} behind)", self.report.target_revision, now - self.report.target_revision)));
            self.last_note = Instant::now();
        }
        if mode == Mode::Follow {
            self.checkpoint(on).await?;
        }
        Ok(())
    }

    /// A `--follow`'s checkpoints (see the module documentation): collect the one being taken
    /// when it is done, start the next when it is due.
    async fn checkpoint(&mut self, on: &Sink) -> Result<()> {
        let Some(taken) = self.taken.clone() else { return Ok(()) };
        if let Some((started, task)) = self.checking.take_if(|(_, t)| t.is_finished()) {
            self.next_check = Instant::now() + CHECKPOINT_EVERY.max(started.elapsed() * CHECKPOINT_SHARE);
            match task.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                Ok(check) if check.ok => {
                    on(Event::Plan(format!("checkpoint: hashkv at revision {} is the same on the source and every target member", check.revision)));
                    let _ = taken.send((check, self.report.clone()));
                }
                Ok(check) => {
                    let differ: Vec<String> = check.members.iter().filter(|m| !m.ok).map(|m| m.endpoint.clone()).collect();
                    // Noted too: no cutover may verify from an earlier checkpoint now.
                    let _ = taken.send((check.clone(), self.report.clone()));
                    return Err(Error::Diverged(format!(
                        "the target differs from the source at revision {} (hashkv on {} differs from the source's {}): something else \
                         wrote to the target; stage again with --restart",
                        check.revision,
                        differ.join(", "),
                        check.source_hash_kv
                    )));
                }
                Err(e) => on(Event::Warning(format!("checkpoint at revision {} not taken: {e}", self.checked_rev))),
            }
        }
        if self.checking.is_none() && Instant::now() >= self.next_check && self.report.target_revision > self.checked_rev {
            let (src, dst, rev) = (self.src.clone(), self.dst.clone(), self.report.target_revision);
            self.checked_rev = rev;
            self.checking = Some((Instant::now(), tokio::spawn(async move { verify(&src, &dst, rev).await })));
        }
        Ok(())
    }

    /// Keep the target's leases in step with the source's (see the module documentation).
    async fn relay_leases(&mut self) -> Result<()> {
        let leases = self.target.leases().await.map_err(target_err(self.dst, "list leases"))?;
        for id in leases.leases().iter().map(|l| l.id()) {
            self.target_leases.insert(id);
            let source_left = match self.source.lease_time_to_live(id, None).await {
                Ok(r) => r.ttl(),
                Err(_) => continue,
            };
            let t = self.target.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.map_err(target_err(self.dst, "read a lease"))?;
            if source_left > 0 {
                if t.ttl() >= 0 && t.ttl() < source_left {
                    let (mut keeper, mut stream) = self.target.lease_keep_alive(id).await.map_err(target_err(self.dst, "keep a lease alive"))?;
                    keeper.keep_alive().await.map_err(target_err(self.dst, "keep a lease alive"))?;
                    let _ = stream.message().await;
                    self.report.leases_kept_alive += 1;
                }
            } else if t.keys().is_empty() && t.ttl() >= 0 {
                self.target.lease_revoke(id).await.map_err(target_err(self.dst, "revoke a lease"))?;
                self.target_leases.remove(&id);
                self.report.leases_revoked += 1;
            }
        }
        Ok(())
    }
}

fn another_writer(r: i64, got: i64) -> Error {
    Error::Diverged(format!(
        "another writer on the target: it answered revision {got} for source revision {r}; the target must have no writer but this \
         migration (a client, or one of its own leases running out) until the cutover. Its revisions no longer match the source's: \
         stage again with --restart"
    ))
}

pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A `hashkv` is a pass over the member's whole store (seconds for a gigabyte, more on a busy
/// member): it gets this long, whatever the command timeout.
const HASH_TIMEOUT: Duration = Duration::from_secs(600);

/// `cfg` with room for a `hashkv`.
pub(crate) fn for_hashing(cfg: &ConnConfig) -> ConnConfig {
    let mut c = cfg.clone();
    c.command_timeout = c.command_timeout.max(HASH_TIMEOUT);
    c
}

/// How long, at least, the source's revision must stand still for a cutover to take it as final.
const QUIET: Duration = Duration::from_millis(500);

/// A cutover's check that the source stands still, overlapped with the work it guards rather
/// than waited out before it: the source's revision is read once, the target is synced to it
/// and verified, and the revision is read again, no sooner than [`QUIET`] after the first read.
/// Unchanged, it is final; moved, the cutover syncs on to the new one while `--settle` lasts,
/// and is refused after. The window in which a writer would be seen is the whole sync and
/// verification, never less than [`QUIET`], and the cutover no longer waits for it on top.
pub(crate) struct StillSource {
    deadline: Instant,
    read_at: Instant,
}

impl StillSource {
    /// The first read: the revision the cutover goes to unless the source moves.
    pub(crate) async fn start(source: &mut Client, settle: Duration, on: &Sink) -> Result<(StillSource, i64)> {
        on(Event::Step("reading the source's revision (writers stopped; it must stay still through the cutover)".into()));
        let read_at = Instant::now();
        let r = revision(source).await.map_err(source_err("read the revision"))?;
        Ok((StillSource { deadline: read_at + settle, read_at }, r))
    }

    /// Once the target holds `goal` and is verified at it: None when the source is still at
    /// `goal` (the cutover's revision), else the revision to go on to.
    pub(crate) async fn moved(&mut self, source: &mut Client, goal: i64, on: &Sink) -> Result<Option<i64>> {
        tokio::time::sleep(QUIET.saturating_sub(self.read_at.elapsed())).await;
        let since = self.read_at.elapsed();
        let read_at = Instant::now();
        let now = revision(source).await.map_err(source_err("read the revision"))?;
        if now == goal {
            return Ok(None);
        }
        if read_at >= self.deadline {
            return Err(Error::StillMoving(format!(
                "the source's revision still moves ({goal} -> {now} within {:.1} s of the cutover): stop every writer to the source, \
                 or give --settle a longer wait",
                since.as_secs_f64()
            )));
        }
        on(Event::Plan(format!("the source's revision moved ({goal} -> {now}); syncing on to it")));
        self.read_at = read_at;
        Ok(Some(now))
    }
}

/// A cutover's first reads and verification, done while the repository is still being opened
/// (deriving its key takes a good part of a second): the source's revision, and, when the
/// target already holds it (a `--follow` ran until the writers stopped) and its store is small
/// ([`EARLY_HASH_MAX`]), hashkv at it on every member. They only read; [`run`] uses them once
/// the migration's record allows a cutover, and the target's revision is checked again before
/// they count.
pub struct EarlyCutover {
    still: StillSource,
    goal: i64,
    verification: Option<CutoverCheck>,
}

/// The largest store hashed before the repository is open. A larger one is left to the
/// cutover proper, which, after a `--follow`, compares only the revisions since its last
/// checkpoint: hashing every store would cost more than the key derivation it overlaps (seconds
/// a gigabyte, on every member at once).
pub const EARLY_HASH_MAX: i64 = 128 << 20;

/// [`EarlyCutover`]; None when anything fails (the cutover then does it all itself, and
/// reports the failure where it belongs).
pub async fn early_cutover(src: &ConnConfig, dst: &ConnConfig, settle: Duration) -> Option<EarlyCutover> {
    let quiet: Sink = std::sync::Arc::new(|_| {});
    let (mut source, mut target) = (src.connect_all().await.ok()?, dst.connect_all().await.ok()?);
    let (still, goal) = StillSource::start(&mut source, settle, &quiet).await.ok()?;
    let at = target.status().await.ok()?;
    let small = at.db_size() <= EARLY_HASH_MAX;
    let at = at.header().map(|h| h.revision()).unwrap_or(0);
    let verification = if at == goal && small { verify(src, dst, goal).await.ok() } else { None };
    Some(EarlyCutover { still, goal, verification })
}

/// Sync the target `dst` with the source `src`; see the module documentation. `stop` ends a
/// `Follow` (and interrupts the others between revisions). A cutover takes what
/// [`early_cutover`] found, if given.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    src: &ConnConfig,
    dst: &ConnConfig,
    from_source: Revisions,
    mode: Mode,
    lease_grace: i64,
    early: Option<EarlyCutover>,
    checkpoints: Checkpoints,
    mut stop: watch::Receiver<bool>,
    on: &Sink,
) -> Result<SyncReport> {
    let started = Instant::now();
    let source = src.connect_all().await?;
    let target = dst.connect_all().await?;
    let mut s = Syncer {
        src,
        dst,
        source,
        target,
        report: SyncReport { mode: mode.label().into(), ..Default::default() },
        target_leases: HashSet::new(),
        lease_grace,
        last_relay: Instant::now(),
        last_note: Instant::now(),
        checking: None,
        checked_rev: 0,
        next_check: Instant::now(),
        taken: checkpoints.taken,
    };
    let from = revision(&mut s.target).await.map_err(target_err(dst, "read the revision"))?;
    s.report.from_revision = from;
    s.report.target_revision = from;
    // The first checkpoint of a follow is due once it has run a second: not at the revision
    // it starts from, which the checks below already cover.
    s.checked_rev = from;
    let mut still = None;
    let mut verified_early = None;
    let mut goal = match (mode, early) {
        (Mode::Sync, _) => Some(revision(&mut s.source).await.map_err(source_err("read the revision"))?),
        (Mode::Cutover { .. }, Some(e)) => {
            on(Event::Step(format!("the source's revision read at the start: {} (it must stay still through the cutover)", e.goal)));
            still = Some(e.still);
            // Counts only if the target still holds that revision, checked below.
            verified_early = e.verification.filter(|_| from == e.goal);
            Some(e.goal)
        }
        (Mode::Cutover { settle }, None) => {
            let (st, g) = StillSource::start(&mut s.source, settle, on).await?;
            still = Some(st);
            Some(g)
        }
        (Mode::Follow, _) => None,
    };
    let source_now = match goal {
        Some(g) => g,
        None => revision(&mut s.source).await.map_err(source_err("read the revision"))?,
    };
    s.report.source_revision = source_now;
    if from > source_now {
        return Err(Error::Refused(format!(
            "the target's revision {from} is ahead of the source's {source_now}: it has had another writer, or it is not this source's \
             migration target; nothing was written"
        )));
    }
    // Where an earlier run stopped, the target must hold what the source held then: a writer
    // between runs (or a lease of the target's own running out) shows here. A cutover checks
    // its last revision instead, which covers every earlier one.
    if !matches!(mode, Mode::Cutover { .. }) {
        on(Event::Step(format!("checking that the target holds the source's revision {from} (hashkv on both)")));
        let (mut hs, mut ht) = (for_hashing(src).connect_all().await?, for_hashing(dst).connect_all().await?);
        let (h, t) = tokio::join!(hs.hash_kv(from), ht.hash_kv(from));
        match h {
            Ok(h) => {
                let t = t.map_err(target_err(dst, "hashkv"))?;
                if t.hash() != h.hash() {
                    return Err(Error::Refused(format!(
                        "the target differs from the source at revision {from} (hashkv {} against {}): something else wrote to the \
                         target since the last sync (a client, or one of its own leases running out); nothing was written. Stage again \
                         with --restart",
                        t.hash(),
                        h.hash()
                    )));
                }
            }
            Err(e) => on(Event::Warning(format!("the source cannot hash revision {from} ({e}); the target's starting point is not checked"))),
        }
    }
    s.relay_leases().await?;
    loop {
        on(Event::Step(match goal {
            Some(g) => format!("applying source revisions {}..{g} to the target (at {})", s.report.target_revision + 1, s.report.target_revision),
            None => format!("following the source from revision {} (the target is at {from}); stop with Ctrl-C", from + 1),
        }));
        match &from_source {
            Revisions::Watch => from_watch(&mut s, mode, goal, &mut stop, on).await?,
            Revisions::Deltas { repo, cluster } => {
                from_deltas(&mut s, repo, cluster, mode, goal, &mut stop, on).await?;
                // A cutover takes the chain as it stands and the rest from a watch of the stopped
                // source: it does not wait for the agent's next upload.
                if goal.is_some_and(|g| s.report.target_revision < g) && !*stop.borrow() {
                    on(Event::Plan(format!(
                        "the delta chain reaches revision {}; revisions {}..{} from a watch of the source",
                        s.report.target_revision,
                        s.report.target_revision + 1,
                        goal.unwrap_or(0)
                    )));
                    from_watch(&mut s, mode, goal, &mut stop, on).await?;
                }
            }
        }
        // Whatever the target answered last must still be what was applied.
        let now = revision(&mut s.target).await.map_err(target_err(dst, "read the revision"))?;
        if now != s.report.target_revision {
            return Err(another_writer(s.report.target_revision, now));
        }
        let (Some(st), Some(g)) = (still.as_mut(), goal) else { break };
        if s.report.target_revision != g {
            break; // stopped
        }
        s.report.verification = match verified_early.take().filter(|_| now == g) {
            Some(v) => {
                on(Event::Step(format!("verified while the repository opened: hashkv at revision {g} on every target member against the source")));
                Some(v)
            }
            None => Some(verify_at(src, dst, checkpoints.newest.as_ref(), g, on).await?),
        };
        match st.moved(&mut s.source, g, on).await? {
            None => break,
            Some(n) => {
                s.report.verification = None;
                s.report.source_revision = n;
                goal = Some(n);
            }
        }
    }
    s.report.seconds = started.elapsed().as_secs_f64();
    Ok(std::mem::take(&mut s.report))
}

/// A watch of every key of the source from revision `from`, with previous values and progress
/// notifications. While following, a failure to open it is retried with back-off (doubling up
/// to 5 s); None when stopped meanwhile.
pub(crate) async fn open_watch(
    source: &mut Client,
    from: i64,
    mode: Mode,
    backoff: &mut Duration,
    stop: &mut watch::Receiver<bool>,
    on: &Sink,
) -> Result<Option<etcd_client::WatchStream>> {
    loop {
        let opts = WatchOptions::new().with_all_keys().with_start_revision(from).with_prev_key().with_progress_notify();
        // A catch-up response holds up to 1000 revisions: far above the 4 MiB default.
        let mut wc = source.watch_client().max_decoding_message_size(i32::MAX as usize);
        match wc.watch(vec![0u8], Some(opts)).await {
            Ok(st) => return Ok(Some(st)),
            Err(e) if mode == Mode::Follow => {
                on(Event::Warning(format!("source watch: {e}; retrying in {backoff:?}")));
                tokio::select! {
                    _ = stopped(stop) => return Ok(None),
                    _ = tokio::time::sleep(*backoff) => {}
                }
                *backoff = (*backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(source_err("watch")(e)),
        }
    }
}

/// Where a sync reads the source's revisions.
pub enum Revisions {
    /// A watch of the source opened past the target's revision.
    Watch,
    /// The delta chain an agent captures of the source into the repository (cluster `cluster`).
    Deltas { repo: std::sync::Arc<repo::Repository>, cluster: String },
}

/// Apply the source's revisions from a watch until `goal` (or until stopped).
async fn from_watch(s: &mut Syncer<'_>, mode: Mode, goal: Option<i64>, stop: &mut watch::Receiver<bool>, on: &Sink) -> Result<()> {
    let mut backoff = Duration::from_millis(200);
    'watch: while goal.is_none_or(|g| s.report.target_revision < g) {
        let Some(mut stream) = open_watch(&mut s.source, s.report.target_revision + 1, mode, &mut backoff, stop, on).await? else { break 'watch };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let msg = tokio::select! {
                _ = stopped(stop) => break 'watch,
                _ = tick.tick() => {
                    s.tick(mode, on).await?;
                    continue;
                }
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => continue 'watch,
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Err(Error::Source(format!(
                        "the source has compacted its history up to revision {}: revisions {}..{} can no longer be read, so the target \
                     cannot follow it revision for revision; stage again (--restart)",
                        resp.compact_revision(),
                        s.report.target_revision + 1,
                        resp.compact_revision()
                    )));
                }
                continue 'watch;
            }
            backoff = Duration::from_millis(200);
            for (r, rev) in group(resp.events())? {
                if r <= s.report.target_revision {
                    continue;
                }
                if r != s.report.target_revision + 1 {
                    return Err(Error::Source(format!(
                        "the source's watch skipped from revision {} to {r}; nothing of {r} was applied",
                        s.report.target_revision
                    )));
                }
                s.apply(r, rev).await?;
                if goal.is_some_and(|g| r >= g) {
                    break 'watch;
                }
            }
        }
    }
    Ok(())
}

/// A delta record as one source revision to apply.
fn delta_revision(rec: &repo::delta::Record) -> Result<Revision> {
    let mut out = Revision::default();
    for ev in &rec.events {
        let before = (ev.prev_mod_revision != 0).then_some(ev.prev_mod_revision);
        out.ops.push(match &ev.change {
            etcd_data::replay::Change::Put { kv } => {
                let kv = etcd_data::schema::KeyValueRef::decode(kv)
                    .ok_or_else(|| Error::Source(format!("delta record of revision {}: a put that is not a KeyValue", rec.revision)))?;
                (kv.key.to_vec(), Some((kv.value.to_vec(), kv.lease)), before)
            }
            etcd_data::replay::Change::Delete { key } => (key.clone(), None, before),
        });
    }
    Ok(out)
}

/// Apply the source's revisions from the delta chain an agent captures into the repository,
/// until `goal` (or until stopped). A goal the chain has not reached yet is waited for (the
/// agent uploads every few seconds) for up to a minute without progress; a cutover does not
/// wait (the caller reads the rest from a watch).
async fn from_deltas(
    s: &mut Syncer<'_>,
    repo: &repo::Repository,
    cluster: &str,
    mode: Mode,
    goal: Option<i64>,
    stop: &mut watch::Receiver<bool>,
    on: &Sink,
) -> Result<()> {
    let mut progress = Instant::now();
    while goal.is_none_or(|g| s.report.target_revision < g) {
        let applied = s.report.target_revision;
        let segments = repo::delta::list_segments(repo, cluster).await?;
        let chain = repo::delta::plan_chain(&segments, applied + 1, goal);
        'chain: for seg in &chain.segments {
            let segment = repo::delta::read_segment(repo, &seg.name).await?;
            for rec in &segment.records {
                if rec.revision <= s.report.target_revision {
                    continue;
                }
                if rec.revision != s.report.target_revision + 1 {
                    return Err(Error::Source(format!(
                        "the delta chain of cluster {cluster} has no revision {} ({} follows {}): revisions the source skipped \
                         (a restore with --bump-revision) cannot be applied one by one",
                        s.report.target_revision + 1,
                        rec.revision,
                        s.report.target_revision
                    )));
                }
                s.apply(rec.revision, delta_revision(rec)?).await?;
                progress = Instant::now();
                if goal.is_some_and(|g| rec.revision >= g) {
                    break 'chain;
                }
            }
        }
        if goal.is_some_and(|g| s.report.target_revision >= g) {
            break;
        }
        if matches!(mode, Mode::Cutover { .. }) {
            break;
        }
        if let Some(gap) = chain.gaps.first() {
            return Err(Error::Source(format!(
                "the delta chain of cluster {cluster} misses {gap}: sync from a watch of the source instead (without --revisions-from deltas)"
            )));
        }
        if mode != Mode::Follow && progress.elapsed() > Duration::from_secs(60) {
            return Err(Error::Source(format!(
                "the delta chain of cluster {cluster} reaches revision {} and has not grown for a minute, the source is at {}: is an \
                 agent capturing it into this repository?",
                chain.contiguous_to.max(applied),
                goal.unwrap_or(0)
            )));
        }
        tokio::select! {
            _ = stopped(stop) => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        s.tick(mode, on).await?;
    }
    Ok(())
}

/// The cutover's verification at `rev`: from `checkpoint` when it applies ([`verify_since`]),
/// else (or when the revisions since it can no longer be read) `hashkv` everywhere ([`verify`]).
async fn verify_at(src: &ConnConfig, dst: &ConnConfig, checkpoint: Option<&CutoverCheck>, rev: i64, on: &Sink) -> Result<CutoverCheck> {
    let mut members: Vec<String> = dst.endpoints.iter().map(|e| dst.url(e)).collect();
    members.sort();
    let usable = checkpoint.filter(|c| {
        let mut had: Vec<&str> = c.members.iter().map(|m| m.endpoint.as_str()).collect();
        had.sort();
        c.ok && c.since.is_none() && c.revision <= rev && had == members
    });
    if let Some(c) = usable {
        on(Event::Step(format!(
            "verifying: revisions {}..{rev} compared event for event on the source and every target member (hashkv was equal at the follow's checkpoint, revision {})",
            c.revision + 1,
            c.revision
        )));
        match verify_since(src, dst, c, rev).await {
            Ok(v) => return Ok(v),
            Err(e) => on(Event::Warning(format!("{e}; verifying with hashkv instead"))),
        }
    }
    on(Event::Step(format!("verifying: hashkv at revision {rev} on every target member against the source")));
    verify(src, dst, rev).await
}

/// Revisions read by one watch of [`history`]. A watch that starts behind is caught up by etcd
/// 1,000 revisions (`watchBatchMaxRevs`) every 100 ms (`watchResyncPeriod`): with one watch per
/// member over the ~16,000 revisions since a checkpoint, a cutover at 1 GiB took 2.53 s
/// against 0.94 s with windows (bench/migrate-stage.sh). Windows of 1,000 revisions, each
/// with a watch of its own, [`WINDOWS_AT_ONCE`] at a time, arrive in the same rounds.
const WINDOW_REVS: i64 = 1000;
/// Windows read at once on one member (a window's response is up to a few MiB).
const WINDOWS_AT_ONCE: usize = 8;

/// A digest of every revision in `(from, to]` of the member `c` is connected to, read from
/// watches (which a member serves from its own store): each event's type, key, value, create
/// and mod revisions, version and lease, in order. An error says why the revisions cannot be
/// read (compacted, a revision missing).
async fn history(c: &Client, from: i64, to: i64) -> std::result::Result<[u8; 32], String> {
    use futures::{StreamExt, TryStreamExt};
    let windows = (from..to).step_by(WINDOW_REVS as usize).map(|start| (start, (start + WINDOW_REVS).min(to)));
    let digests: Vec<[u8; 32]> = futures::stream::iter(windows.map(|(a, b)| history_window(c.clone(), a, b))).buffered(WINDOWS_AT_ONCE).try_collect().await?;
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    Ok(h.finalize().into())
}

/// [`history`] of one window, `(from, to]`, with one watch.
async fn history_window(c: Client, from: i64, to: i64) -> std::result::Result<[u8; 32], String> {
    let mut h = Sha256::new();
    let opts = WatchOptions::new().with_all_keys().with_start_revision(from + 1);
    let mut wc = c.watch_client().max_decoding_message_size(i32::MAX as usize);
    let mut stream = wc.watch(vec![0u8], Some(opts)).await.map_err(|e| e.to_string())?;
    let mut last = from;
    // A revision's events never straddle two responses (etcd batches whole revisions): the
    // response that holds `to` holds all of it.
    while last < to {
        let resp = stream.message().await.map_err(|e| e.to_string())?.ok_or("the watch ended")?;
        if resp.canceled() {
            return Err(match resp.compact_revision() {
                0 => format!("the watch was cancelled ({})", resp.cancel_reason()),
                c => format!("compacted up to revision {c}"),
            });
        }
        for ev in resp.events() {
            let kv = ev.kv().ok_or("a watch event without its key")?;
            let r = kv.mod_revision();
            if r > to {
                if last < to {
                    return Err(format!("revision {} is missing", last + 1));
                }
                break;
            }
            if r != last && r != last + 1 {
                return Err(format!("revision {} is missing", last + 1));
            }
            last = r;
            h.update(r.to_le_bytes());
            h.update([matches!(ev.event_type(), EventType::Put) as u8]);
            for part in [kv.key(), kv.value()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            for n in [kv.create_revision(), kv.version(), kv.lease()] {
                h.update(n.to_le_bytes());
            }
        }
    }
    Ok(h.finalize().into())
}

/// How long reading the revisions since a checkpoint may take on one member.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(120);

/// Verify at `rev` from `checkpoint` (see the module documentation): every revision after the
/// checkpoint's, up to `rev`, must read the same on every target member as on the source, and
/// every target member must hold `rev`. An error when the revisions cannot be read on a side.
pub async fn verify_since(src: &ConnConfig, dst: &ConnConfig, checkpoint: &CutoverCheck, rev: i64) -> Result<CutoverCheck> {
    let from = checkpoint.revision;
    let read = |c: Client, side: String| async move {
        match tokio::time::timeout(HISTORY_TIMEOUT, history(&c, from, rev)).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(Error::Source(format!("revisions {}..{rev} cannot be read on {side}: {e}", from + 1))),
            Err(_) => Err(Error::Source(format!("revisions {}..{rev} were not read on {side} within {HISTORY_TIMEOUT:?}", from + 1))),
        }
    };
    let source = async { read(src.connect_all().await?, "the source".into()).await };
    let members = futures::future::join_all(dst.endpoints.iter().map(|ep| async move {
        let mut c = dst.connect_one(ep).await?;
        let url = dst.url(ep);
        let now = revision(&mut c).await.map_err(|e| Error::Target { endpoint: url.clone(), op: "read the revision", msg: e.to_string() })?;
        let digest = read(c, url.clone()).await?;
        Ok::<_, Error>((url, now, digest))
    }));
    let (want, members) = tokio::join!(source, members);
    let want = want?;
    let members: Vec<MemberHash> = members
        .into_iter()
        .map(|m| {
            m.map(|(endpoint, now, digest)| {
                let at_checkpoint = checkpoint.members.iter().find(|c| c.endpoint == endpoint);
                let hash_kv = at_checkpoint.map_or(0, |c| c.hash_kv);
                let ok = now >= rev && digest == want && at_checkpoint.is_some_and(|c| c.ok);
                MemberHash { endpoint, revision: now, hash_kv, ok }
            })
        })
        .collect::<Result<_>>()?;
    let ok = members.iter().all(|m| m.ok);
    Ok(CutoverCheck { revision: rev, source_hash_kv: checkpoint.source_hash_kv, members, ok, since: Some(from) })
}

/// Every target member's revision (at least `rev`: a cut-over target may have moved on) and
/// `hashkv` at `rev` against a source member's.
pub async fn verify(src: &ConnConfig, dst: &ConnConfig, rev: i64) -> Result<CutoverCheck> {
    let (src, dst) = (&for_hashing(src), &for_hashing(dst));
    // Every member hashes at once: on a large store each takes seconds.
    let source = async {
        let mut c = src.connect_all().await?;
        Ok::<_, Error>(c.hash_kv(rev).await.map_err(source_err("hashkv"))?.hash())
    };
    let members = futures::future::join_all(dst.endpoints.iter().map(|ep| async move {
        let mut c = dst.connect_one(ep).await?;
        let err = |op: &'static str| {
            let ep = dst.url(ep);
            move |e: etcd_client::Error| Error::Target { endpoint: ep.clone(), op, msg: e.to_string() }
        };
        let now = revision(&mut c).await.map_err(err("read the revision"))?;
        let h = c.hash_kv(rev).await.map_err(err("hashkv"))?.hash();
        Ok::<_, Error>((dst.url(ep), now, h))
    }));
    let (want, members) = tokio::join!(source, members);
    let want = want?;
    let members: Vec<MemberHash> = members
        .into_iter()
        .map(|m| m.map(|(endpoint, now, h)| MemberHash { endpoint, revision: now, hash_kv: h, ok: now >= rev && h == want }))
        .collect::<Result<_>>()?;
    let ok = members.iter().all(|m| m.ok);
    Ok(CutoverCheck { revision: rev, source_hash_kv: want, members, ok, since: None })
}

/// The source's and the target's current revisions (`--status` of a whole-cluster migration).
pub async fn revisions(src: &ConnConfig, dst: &ConnConfig) -> Result<(i64, i64)> {
    // The target first: read the other way round, a revision applied in between would show the
    // target ahead.
    let t = revision(&mut dst.connect_all().await?).await.map_err(target_err(dst, "read the revision"))?;
    let s = revision(&mut src.connect_all().await?).await.map_err(source_err("read the revision"))?;
    Ok((s, t))
}

/// Seconds since the source made the first revision the target lacks, from the receive times
/// an agent's delta chain of `cluster` records (0 when in step). When the target holds the
/// whole chain (a follow of the chain waits for the agent's next upload), the revision it lacks
/// is not in the chain yet: it came after the target's own, so the time since the agent
/// received that one is the lag at most, and is given. None when the chain holds neither: no
/// agent captures the source into this repository.
pub async fn lag_seconds(repo: &repo::Repository, cluster: &str, target: i64, source: i64) -> Result<Option<f64>> {
    if target >= source {
        return Ok(Some(0.0));
    }
    let segments = repo::delta::list_segments(repo, cluster).await?;
    let holding = |rev: i64| segments.iter().find(|s| s.first <= rev && s.last >= rev);
    let Some((seg, rev)) = holding(target + 1).map(|s| (s, target + 1)).or_else(|| holding(target).map(|s| (s, target))) else { return Ok(None) };
    let segment = repo::delta::read_segment(repo, &seg.name).await?;
    let at = segment.records.iter().find(|r| r.revision >= rev).map(|r| r.time_ms);
    Ok(at.map(|ms| ((chrono::Utc::now().timestamp_millis() - ms) as f64 / 1000.0).max(0.0)))
}
