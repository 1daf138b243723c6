//! Namespaces or prefixes kept in step after their copy: `--sync`, `--follow` and `--cutover` of a
//! `-n`/`--prefix` migration (issue 15, item 3). The copy (`--stage`, or the one-shot migration:
//! [`crate::partial`]) worked from a backup at revision R; a sync replays the source's changes
//! to the selected keys after R (or after where the last sync stopped) from a watch of the
//! source with previous values, with the copy's guards:
//!
//! * A change is written only where the target still holds what the source held at some point
//!   of the changes being replayed (a value the key had, or its absence): then the target's key
//!   is the migration's (written by it, or identical to the source's), and it gets the source's
//!   newest state: put (create where absent, overwrite guarded by the mod revision read) or
//!   delete (guarded likewise). A key the target already holds as the source's newest state is
//!   left alone, which is what makes a rerun after a kill write nothing twice; a key that the
//!   target holds as the source's current state (a killed run got further) is left alone too.
//! * Anything else is a key changed in the target since the migration wrote it: a conflict,
//!   counted per namespace or prefix, and handled by `--on-conflict` (`fail`: the sync stops
//!   before writing it, `skip`: left alone, `overwrite`: written anyway, guarded).
//! * Keys the source did not change are not touched, so keys only the target has never are.
//!   With `--rekey`, contents are compared as plaintexts and written sealed for the target.
//!
//! Progress (the source revision synced to) is written to the repository at the end of every
//! run ([`crate::journal::SyncNote`]); a run killed before it starts again from the previous
//! note, and the rules above make that replay write nothing twice. Leases are not carried,
//! as in the copy. The cutover syncs to the source's revision and verifies the selection per
//! group (counts and content hashes) against the source at that revision, which must not move
//! meanwhile (`sync::StillSource`).
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, EventType, Txn, TxnOp};
use serde::Serialize;
use tokio::sync::watch;

use etcd_cluster::ConnConfig;

use crate::codec::Codec;
use crate::select::Selection;
use crate::sync::{revision, source_err, stopped, target_err};
use crate::verify::{digest, Digest32};
use crate::{ConflictPolicy, Error, Event, Result, Sink};

#[derive(Debug, Clone, Serialize, Default)]
pub struct PartialSyncReport {
    pub mode: String,
    /// The source revision synced to before this run, and after it.
    pub from_revision: i64,
    pub to_revision: i64,
    /// Changes to selected keys seen in the source.
    pub changes: u64,
    pub written: u64,
    pub deleted: u64,
    /// Keys whose newest state the target held already.
    pub unchanged: u64,
    /// Keys changed in the target since the migration wrote them, per group.
    pub conflicts: BTreeMap<String, u64>,
    pub overwritten: u64,
    pub skipped: u64,
    /// The cutover's verification, per group.
    pub verification: Vec<crate::verify::GroupCheck>,
    pub seconds: f64,
}

impl PartialSyncReport {
    pub fn verified(&self) -> bool {
        !self.verification.is_empty() && self.verification.iter().all(|c| c.ok)
    }
}

/// One key's changes in a batch: every state it had (plaintext digests; `absent` for no key),
/// and its newest (`None`: deleted).
#[derive(Default)]
struct KeyChanges {
    states: HashSet<Digest32>,
    absent: bool,
    /// The newest value as the source stores it, and its plaintext.
    newest: Option<(Vec<u8>, Vec<u8>)>,
    newest_digest: Option<Digest32>,
}

pub struct PartialSync<'a> {
    pub src: &'a ConnConfig,
    pub dst: &'a ConnConfig,
    pub selection: &'a Selection,
    pub codec: &'a Codec,
    pub policy: ConflictPolicy,
    /// The source revision the copy or the last sync reached.
    pub from: i64,
}

struct Run<'a> {
    o: &'a PartialSync<'a>,
    source: Client,
    target: Client,
    report: PartialSyncReport,
    /// Keys this run left alone as conflicts (`skip`).
    skipped_keys: HashSet<Vec<u8>>,
}

impl Run<'_> {
    fn plain(&self, key: &[u8], value: &[u8], target: bool) -> Result<Vec<u8>> {
        let plain = if target { self.o.codec.target_plain(key, value) } else { self.o.codec.source_plain(key, value) };
        plain.map_err(|e| Error::Source(format!("a value of {} does not decrypt: {e}", crate::codec::resource_label(key))))
    }

    fn plain_digest(&self, key: &[u8], value: &[u8], target: bool) -> Result<Digest32> {
        Ok(digest(&self.plain(key, value, target)?))
    }

    /// Apply one batch of source events (all of some revisions).
    async fn apply(&mut self, events: &[etcd_client::Event]) -> Result<()> {
        let mut keys: BTreeMap<Vec<u8>, KeyChanges> = BTreeMap::new();
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            if self.o.selection.group_of(kv.key()).is_none() {
                continue;
            }
            self.report.changes += 1;
            let first = !keys.contains_key(kv.key());
            let prev = match (first, ev.prev_kv()) {
                (true, Some(p)) => Some(Some(self.plain_digest(p.key(), p.value(), false)?)),
                (true, None) => Some(None),
                (false, _) => None,
            };
            let newest = match ev.event_type() {
                EventType::Put => {
                    let plain = self.plain(kv.key(), kv.value(), false)?;
                    let d = digest(&plain);
                    Some((kv.value().to_vec(), plain, d))
                }
                EventType::Delete => None,
            };
            let k = keys.entry(kv.key().to_vec()).or_default();
            match prev {
                Some(Some(d)) => {
                    k.states.insert(d);
                }
                Some(None) => k.absent = true,
                None => {}
            }
            match newest {
                Some((v, plain, d)) => {
                    k.states.insert(d);
                    k.newest = Some((v, plain));
                    k.newest_digest = Some(d);
                }
                None => {
                    k.absent = true;
                    k.newest = None;
                    k.newest_digest = None;
                }
            }
        }
        for (key, k) in keys {
            self.reconcile(&key, k).await?;
        }
        Ok(())
    }

    /// The target's key and its plaintext digest.
    async fn target_key(&mut self, key: &[u8]) -> Result<Option<(i64, Digest32)>> {
        let r = self.target.get(key, None).await.map_err(target_err(self.o.dst, "read a key"))?;
        match r.kvs().first() {
            Some(kv) => Ok(Some((kv.mod_revision(), self.plain_digest(key, kv.value(), true)?))),
            None => Ok(None),
        }
    }

    async fn reconcile(&mut self, key: &[u8], k: KeyChanges) -> Result<()> {
        let group = self.o.selection.group_of(key).unwrap_or_default();
        let t = self.target_key(key).await?;
        if t.map(|t| t.1) == k.newest_digest {
            self.report.unchanged += 1;
            return Ok(());
        }
        let mine = match t {
            None => k.absent,
            Some((_, d)) => k.states.contains(&d),
        };
        if !mine {
            // A killed run may have got further: the target holding the source's current state
            // is the migration's too.
            let now = self.source.get(key, None).await.map_err(source_err("read a key"))?;
            let current = match now.kvs().first() {
                Some(kv) => Some(self.plain_digest(key, kv.value(), false)?),
                None => None,
            };
            if t.map(|t| t.1) == current {
                self.report.unchanged += 1;
                return Ok(());
            }
            *self.report.conflicts.entry(group.clone()).or_default() += 1;
            match self.o.policy {
                ConflictPolicy::Fail => {
                    return Err(Error::Conflict {
                        count: 1,
                        detail: format!("a key of {group} ({}) changed in the target since the migration wrote it", crate::codec::resource_label(key)),
                        outcome: "the sync stopped before writing it; what was synced before it stays",
                    })
                }
                ConflictPolicy::Skip => {
                    self.report.skipped += 1;
                    self.skipped_keys.insert(key.to_vec());
                    return Ok(());
                }
                ConflictPolicy::Overwrite => self.report.overwritten += 1,
            }
        }
        let guard = match t {
            Some((m, _)) => Compare::mod_revision(key.to_vec(), CompareOp::Equal, m),
            None => Compare::create_revision(key.to_vec(), CompareOp::Equal, 0),
        };
        let op = match &k.newest {
            Some((v, plain)) => {
                // Decrypted once, when the event was read.
                let value = self.o.codec.target_value(key, v, plain).map_err(|e| {
                    Error::Usage(format!(
                        "cannot encrypt {} for the target with --rekey's second configuration: {e}; the keys synced before it stay, \
                         and running the same command again with a configuration that can resumes",
                        String::from_utf8_lossy(key)
                    ))
                })?;
                TxnOp::put(key.to_vec(), value, None)
            }
            None if t.is_none() => return Ok(()),
            None => TxnOp::delete(key.to_vec(), None),
        };
        let r = self.target.txn(Txn::new().when(vec![guard]).and_then(vec![op])).await.map_err(target_err(self.o.dst, "write a key"))?;
        if !r.succeeded() {
            // Changed in the target between the read and the write.
            *self.report.conflicts.entry(group).or_default() += 1;
            self.report.skipped += 1;
            self.skipped_keys.insert(key.to_vec());
            return Ok(());
        }
        if k.newest.is_some() {
            self.report.written += 1;
        } else {
            self.report.deleted += 1;
        }
        Ok(())
    }
}

/// Sync the selection; see the module documentation.
pub async fn run(o: &PartialSync<'_>, mode: crate::sync::Mode, mut stop: watch::Receiver<bool>, on: &Sink) -> Result<PartialSyncReport> {
    use crate::sync::Mode;
    let started = Instant::now();
    let mut r = Run {
        o,
        source: o.src.connect_all().await?,
        target: o.dst.connect_all().await?,
        report: PartialSyncReport { mode: mode.label().into(), from_revision: o.from, to_revision: o.from, ..Default::default() },
        skipped_keys: HashSet::new(),
    };
    let mut still = None;
    let mut goal = match mode {
        Mode::Sync => Some(revision(&mut r.source).await.map_err(source_err("read the revision"))?),
        Mode::Cutover { settle } => {
            let (st, g) = crate::sync::StillSource::start(&mut r.source, settle, on).await?;
            still = Some(st);
            Some(g)
        }
        Mode::Follow => None,
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        on(Event::Step(match goal {
            Some(g) => format!("replaying the source's changes to {} in revisions {}..{g}", o.selection.describe(), r.report.to_revision + 1),
            None => format!("following the source's changes to {} from revision {}; stop with Ctrl-C", o.selection.describe(), o.from + 1),
        }));
        'watch: while goal.is_none_or(|g| r.report.to_revision < g) {
            let Some(mut stream) = crate::sync::open_watch(&mut r.source, r.report.to_revision + 1, mode, &mut backoff, &mut stop, on).await? else {
                break 'watch;
            };
            loop {
                let msg = tokio::select! {
                    _ = stopped(&mut stop) => break 'watch,
                    m = stream.message() => m,
                };
                let resp = match msg {
                    Ok(Some(x)) => x,
                    Ok(None) | Err(_) => continue 'watch,
                };
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        return Err(Error::Source(format!(
                            "the source has compacted its history up to revision {}: the changes after revision {} can no longer be read; \
                         migrate the selection again (--restart)",
                            resp.compact_revision(),
                            r.report.to_revision
                        )));
                    }
                    continue 'watch;
                }
                backoff = Duration::from_millis(200);
                // Events up to the goal; a response holds whole revisions.
                let events: Vec<etcd_client::Event> =
                    resp.events().iter().filter(|e| e.kv().is_some_and(|kv| goal.is_none_or(|g| kv.mod_revision() <= g))).cloned().collect();
                let last = events.iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())).max();
                r.apply(&events).await?;
                if let Some(l) = last {
                    r.report.to_revision = r.report.to_revision.max(l);
                }
                // A progress notification (no events, not the creation) says every event up to its
                // header's revision has been sent: changes to keys outside the selection count.
                let progress = !resp.created() && resp.events().is_empty();
                let seen = if progress { resp.header().map(|h| h.revision()).unwrap_or(0) } else { last.unwrap_or(0) };
                if goal.is_some_and(|g| seen >= g || r.report.to_revision >= g) {
                    r.report.to_revision = goal.unwrap_or(r.report.to_revision);
                    break 'watch;
                }
            }
        }
        let (Some(st), Some(g)) = (still.as_mut(), goal) else { break };
        if r.report.to_revision < g {
            break; // stopped
        }
        on(Event::Step(format!("verifying {} against the source at revision {g}", o.selection.describe())));
        r.report.verification = verify(o, g, &r.skipped_keys).await?;
        match st.moved(&mut r.source, g, on).await? {
            None => break,
            Some(n) => {
                r.report.verification.clear();
                goal = Some(n);
            }
        }
    }
    r.report.seconds = started.elapsed().as_secs_f64();
    Ok(r.report)
}

/// The selection's keys in the source at `rev` against the target's now, per group: counts and
/// content hashes over the source's keys (keys only the target has are counted apart, and keys
/// this run left alone as conflicts are left out on both sides).
async fn verify(o: &PartialSync<'_>, rev: i64, skipped: &HashSet<Vec<u8>>) -> Result<Vec<crate::verify::GroupCheck>> {
    use crate::verify::{Digests, ValueDigest};
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = match o.selection {
        Selection::Prefixes(ps) => crate::select::merge_ranges(
            ps.iter()
                .map(|p| {
                    let mut end = p.as_bytes().to_vec();
                    while let Some(last) = end.pop() {
                        if last < 0xff {
                            end.push(last + 1);
                            break;
                        }
                    }
                    (p.as_bytes().to_vec(), if end.is_empty() { vec![0] } else { end })
                })
                .collect(),
        ),
        // A namespace's keys are spread over every resource: the whole keyspace, filtered.
        _ => vec![(vec![0], vec![0])],
    };
    let mut src = crate::target::Target::connect(o.src).await?;
    let mut dst = crate::target::Target::connect(o.dst).await?;
    let (mut sd, mut td) = (Digests::default(), Digests::default());
    let mut source_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut target_only: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped_by_group: BTreeMap<String, u64> = BTreeMap::new();
    for (start, end) in &ranges {
        src.scan(start, end, rev, &mut |kv| {
            let Some(g) = o.selection.group_of(&kv.key) else { return Ok(()) };
            if skipped.contains(&kv.key) {
                *skipped_by_group.entry(g).or_default() += 1;
                return Ok(());
            }
            let plain = o.codec.source_plain(&kv.key, &kv.value).map_err(|e| Error::Source(format!("a value does not decrypt: {e}")))?;
            sd.add(&g, &kv.key, ValueDigest::Plain(digest(&plain)));
            source_keys.insert(kv.key);
            Ok(())
        })
        .await?;
    }
    for (start, end) in &ranges {
        dst.scan(start, end, 0, &mut |kv| {
            let Some(g) = o.selection.group_of(&kv.key) else { return Ok(()) };
            if skipped.contains(&kv.key) {
                return Ok(());
            }
            if !source_keys.contains(&kv.key) {
                *target_only.entry(g).or_default() += 1;
                return Ok(());
            }
            let plain = o.codec.target_plain(&kv.key, &kv.value).map_err(|e| Error::Source(format!("a target value does not decrypt: {e}")))?;
            td.add(&g, &kv.key, ValueDigest::Plain(digest(&plain)));
            Ok(())
        })
        .await?;
    }
    Ok(crate::verify::compare(&o.selection.groups(), sd, td, &skipped_by_group, &target_only))
}
