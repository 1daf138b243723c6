//! Namespaces or prefixes into a running cluster: filtered replay of a backup, resumable,
//! verified.
//!
//! 1. The source backup ([`crate::origin`]): the record's on a resume, else a new one.
//! 2. The selected live keys of the backup, each kept as its key, where its value sits in the
//!    snapshot, and the SHA-256 of its plaintext (never the value); the target's keys in the
//!    same ranges (per namespace and resource, or per prefix; each range read at its own
//!    revision, again with the SHA-256 of the plaintext only). Each source key is classified:
//!    **create** (the target lacks it), **identical** (same plaintext), **different** (what
//!    the conflict policy is for). Keys only the target has are counted, never deleted, and
//!    are no difference.
//! 3. Unless a dry run, a verification only, or a migration that completed already (`done`;
//!    that only verifies again unless `--restart`): `fail` stops here when anything differs;
//!    else creates (and, with `overwrite`, differing keys) are read back from the snapshot in
//!    key order, sealed one at a time and written in guarded transactions
//!    ([`crate::target`]), the Namespace objects last (so a live target's controllers do not
//!    populate a namespace before its objects have arrived).
//! 4. Verification per group ([`crate::verify`]) over the source's keys; `skip`ped keys are
//!    left out on both sides.
//!
//! A kill at any point leaves whole transactions in the target; the same command finds its
//! record, works from the same backup, and classifies again: what was written is identical
//! now and is not written twice. etcd leases are not carried (the keys are written without
//! one; their count is reported).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use etcd_cluster::ConnConfig;
use repo::Repository;

use crate::codec::{resource_label, Codec};
use crate::origin::{self, Begin};
use crate::select::Selection;
use crate::target::{Batcher, Put, Target};
use crate::verify::{self, digest, Digest32, Digests, GroupCheck, ValueDigest};
use crate::{ConflictPolicy, Error, Event, Result, Sink};

/// What to move and how.
pub struct PartialOptions {
    /// The source cluster's name in the repository.
    pub cluster: String,
    pub selection: Selection,
    pub codec: Codec,
    pub policy: ConflictPolicy,
    pub dry_run: bool,
    /// Only verify (the record's backup against the target).
    pub verify_only: bool,
    /// Start a new generation (a new snapshot) even when a record exists.
    pub restart: bool,
    pub from_backup: Option<String>,
    pub tmp_dir: Option<PathBuf>,
    /// Puts per transaction (etcd's --max-txn-ops, default 128).
    pub max_ops: usize,
    /// Approximate bytes of keys and values per transaction.
    pub max_bytes: usize,
    /// Pause between transactions (go easy on a busy target).
    pub pause: Duration,
    pub parallel: usize,
    pub uploads: usize,
}

impl Default for PartialOptions {
    fn default() -> Self {
        PartialOptions {
            cluster: String::new(),
            selection: Selection::Namespaces(vec![]),
            codec: Codec::default(),
            policy: ConflictPolicy::Fail,
            dry_run: false,
            verify_only: false,
            restart: false,
            from_backup: None,
            tmp_dir: None,
            max_ops: 128,
            max_bytes: 1 << 20,
            pause: Duration::ZERO,
            parallel: 8,
            uploads: 4,
        }
    }
}

/// Per group: what the source holds and what happens to it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanRow {
    pub group: String,
    pub source_keys: u64,
    /// The target lacks the key.
    pub create: u64,
    /// The target holds the same plaintext.
    pub identical: u64,
    /// The target holds different content (policy: fail, skip, overwrite).
    pub different: u64,
    /// Keys in the group that only the target has (left alone).
    pub target_only: u64,
    /// Source keys attached to an etcd lease (written without one).
    pub leased: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartialReport {
    pub migration: String,
    pub generation: Option<String>,
    pub backup: Option<String>,
    pub source_revision: i64,
    pub resumed: bool,
    /// The migration had completed (`done`) before this run: it only verified again.
    pub completed_before: bool,
    pub selection: Selection,
    pub policy: ConflictPolicy,
    pub dry_run: bool,
    pub rekey: bool,
    pub plan: Vec<PlanRow>,
    pub written: u64,
    pub overwritten: u64,
    pub skipped: u64,
    /// Keys that changed in the target between the comparison and the write (not written).
    pub changed_meanwhile: u64,
    pub transactions: u64,
    pub target_revision: i64,
    pub verification: Vec<GroupCheck>,
    pub seconds: f64,
}

impl PartialReport {
    /// Verification ran and every group matched.
    pub fn verified(&self) -> bool {
        !self.verification.is_empty() && self.verification.iter().all(|c| c.ok)
    }
}

/// How a source key relates to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Create,
    Identical,
    /// The target's value differs; its mod revision when compared.
    Different(i64),
}

/// A selected source key: where its value is, and what its plaintext hashes to.
struct SrcKey {
    rev: etcd_data::schema::Revision,
    plain: Digest32,
    group: usize,
    class: Class,
}

/// A target key in a selected group: what its plaintext hashes to.
struct TgtKey {
    value: ValueDigest,
    mod_revision: i64,
    group: usize,
}

fn group_index(groups: &[String], g: &str) -> usize {
    groups.binary_search_by(|x| x.as_str().cmp(g)).expect("group_of names a group of the selection")
}

/// The target's keys in `ranges` (each range read at one revision, again at a newer one if
/// compaction overtakes the read); returns the highest revision read at.
async fn read_target(
    t: &mut Target,
    sel: &Selection,
    groups: &[String],
    ranges: &[(Vec<u8>, Vec<u8>)],
    codec: &Codec,
) -> Result<(i64, BTreeMap<Vec<u8>, TgtKey>)> {
    let mut out = BTreeMap::new();
    let mut rev = 0;
    for (start, end) in ranges {
        let mut attempt = 0;
        loop {
            let mut part: Vec<(Vec<u8>, TgtKey)> = Vec::new();
            let r = t
                .scan(start, end, 0, &mut |kv| {
                    if let Some(g) = sel.group_of(&kv.key) {
                        let value = match codec.target_plain(&kv.key, &kv.value) {
                            Ok(p) => ValueDigest::Plain(digest(&p)),
                            Err(_) => ValueDigest::Undecryptable(digest(&kv.value)),
                        };
                        part.push((kv.key, TgtKey { value, mod_revision: kv.mod_revision, group: group_index(groups, &g) }));
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(r) => {
                    rev = rev.max(r);
                    out.extend(part);
                    break;
                }
                Err(Error::Target { msg, .. }) if msg.contains("compacted") && attempt < 3 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok((rev, out))
}

fn is_namespace_object(key: &[u8]) -> bool {
    kube_data::keys::parse(key).is_some_and(|i| i.namespace.is_none() && i.resource == "namespaces")
}

/// Run a partial migration; see the module documentation.
pub async fn run(src: Option<&ConnConfig>, dst: &ConnConfig, repo: Arc<Repository>, o: &PartialOptions, on: &Sink) -> Result<PartialReport> {
    let started = Instant::now();
    let sel = o.selection.normalized();
    sel.validate()?;
    if matches!(sel, Selection::Whole) {
        return Err(Error::Usage("a partial migration needs namespaces or key prefixes".into()));
    }
    let groups = sel.groups();
    let mut target_eps = dst.endpoints.clone();
    target_eps.sort();
    let begin = Begin {
        kind: "partial",
        cluster: &o.cluster,
        selection: sel.describe(),
        target: target_eps.join(","),
        restart: o.restart,
        from_backup: o.from_backup.as_deref(),
        dry_run: o.dry_run || o.verify_only,
        fetch: true,
        tmp_dir: o.tmp_dir.clone(),
        uploads: o.uploads,
    };
    let mut t = Target::connect(dst).await?;
    // A user whose role covers only the selection (etcd auth) may not count every key.
    let counted = match t.count().await {
        Ok((trev, tkeys)) => format!("revision {trev}, {tkeys} keys"),
        Err(Error::Cluster(e)) if e.auth_problem() == Some(etcd_cluster::AuthProblem::PermissionDenied) => {
            "keys not counted: the user's role does not cover them all".to_string()
        }
        Err(e) => return Err(e),
    };
    on(Event::Plan(format!("target:    {} (running; {counted})", dst.endpoints.join(","))));
    on(Event::Plan(format!("selection: {}", sel.describe())));
    on(Event::Plan(format!("values:    {}", o.codec.describe())));
    on(Event::Plan(format!("conflicts: --on-conflict {}; etcd leases are not carried (leased keys are written without a lease)", o.policy.label())));
    let origin = origin::begin(src, repo.clone(), &begin, o.parallel, on).await?;
    if o.verify_only && origin.state.is_none() {
        return Err(Error::NothingToVerify(format!("no migration {} in the repository yet", origin.id)));
    }
    // A migration that completed is only verified again: the target's apps may have changed
    // its keys since, and they are theirs now.
    let completed = !o.dry_run && origin.state.as_ref().is_some_and(|s| s.done.is_some());
    let verify_only = o.verify_only || completed;

    // The source's selected keys: where each value is and its plaintext's digest.
    on(Event::Step("reading the selected keys of the backup".into()));
    let mut undecryptable: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sources: BTreeMap<Vec<u8>, SrcKey> = BTreeMap::new();
    let mut leased: HashMap<String, u64> = HashMap::new();
    let mut seen: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    crate::source::for_each(&origin.snapshot, &sel, &mut |kv| {
        if kv.lease != 0 {
            *leased.entry(kv.group.clone()).or_default() += 1;
        }
        seen.extend(sel.scan_range(&kv.key));
        match o.codec.source_plain(&kv.key, &kv.value) {
            Ok(plain) => {
                let group = group_index(&groups, &kv.group);
                sources.insert(kv.key, SrcKey { rev: kv.rev, plain: digest(&plain), group, class: Class::Create });
            }
            Err(_) => *undecryptable.entry((kv.group, resource_label(&kv.key))).or_default() += 1,
        }
        Ok(())
    })?;
    if !undecryptable.is_empty() {
        let n: u64 = undecryptable.values().sum();
        let list: Vec<String> = undecryptable.iter().map(|((g, r), c)| format!("{c} {r} in {g}")).collect();
        let from = o.codec.rekey.as_ref().map(|r| r.from_name.clone()).unwrap_or_default();
        return Err(Error::Source(format!("{n} selected value(s) do not decrypt with {from}: {}; nothing was written", list.join(", "))));
    }
    let mut per_group = vec![0u64; groups.len()];
    for s in sources.values() {
        per_group[s.group] += 1;
    }
    for (g, n) in groups.iter().zip(&per_group) {
        if *n == 0 {
            let what = if matches!(sel, Selection::Namespaces(_)) { "namespace" } else { "prefix" };
            on(Event::Warning(format!("no keys for {what} {g} in the source (revision {}) — typo?", origin.revision)));
        }
    }
    let ranges = sel.target_ranges(&seen);
    drop(seen);

    // The target's keys in the same ranges, and the classification.
    let (_, target) = read_target(&mut t, &sel, &groups, &ranges, &o.codec).await?;
    let mut rows: Vec<PlanRow> = groups.iter().map(|g| PlanRow { group: g.clone(), ..Default::default() }).collect();
    let (mut n_create, mut n_different) = (0u64, 0u64);
    for (k, s) in sources.iter_mut() {
        let row = &mut rows[s.group];
        row.source_keys += 1;
        s.class = match target.get(k) {
            None => Class::Create,
            Some(tk) if tk.value == ValueDigest::Plain(s.plain) => Class::Identical,
            Some(tk) => Class::Different(tk.mod_revision),
        };
        match s.class {
            Class::Create => {
                row.create += 1;
                n_create += 1;
            }
            Class::Identical => row.identical += 1,
            Class::Different(_) => {
                row.different += 1;
                n_different += 1;
            }
        }
    }
    for (k, tk) in &target {
        if !sources.contains_key(k) {
            rows[tk.group].target_only += 1;
        }
    }
    drop(target);
    for (g, n) in &leased {
        rows[group_index(&groups, g)].leased = *n;
    }
    let plan = rows;
    let total_leased: u64 = plan.iter().map(|r| r.leased).sum();
    if total_leased > 0 {
        on(Event::Warning(format!(
            "{total_leased} selected key(s) are attached to an etcd lease in the source (e.g. Events); they are written without a lease"
        )));
    }

    let mut report = PartialReport {
        migration: origin.id.clone(),
        generation: origin.state.as_ref().map(|s| s.record.generation.clone()),
        backup: origin.backup.as_ref().map(|(id, _)| id.clone()),
        source_revision: origin.revision,
        resumed: origin.resumed,
        completed_before: completed,
        selection: sel.clone(),
        policy: o.policy,
        dry_run: o.dry_run,
        rekey: o.codec.rekey.is_some(),
        plan,
        written: 0,
        overwritten: 0,
        skipped: 0,
        changed_meanwhile: 0,
        transactions: 0,
        target_revision: 0,
        verification: vec![],
        seconds: 0.0,
    };
    if o.dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // `skip`: differing keys stay as the target has them and are left out of the verification.
    let skip = |s: &SrcKey| o.policy == ConflictPolicy::Skip && matches!(s.class, Class::Different(_));
    report.skipped = sources.values().filter(|s| skip(s)).count() as u64;
    if completed {
        on(Event::Plan(format!(
            "nothing is written: this migration completed; --restart migrates the selection again from a new snapshot ({} key(s) differ now)",
            n_different
        )));
    }
    if !verify_only {
        if n_different > 0 && o.policy == ConflictPolicy::Fail {
            let detail: Vec<String> = report.plan.iter().filter(|r| r.different > 0).map(|r| format!("{} in {}", r.different, r.group)).collect();
            return Err(Error::Conflict { count: n_different as usize, detail: detail.join(", "), outcome: "nothing was written" });
        }
        let overwrite = o.policy == ConflictPolicy::Overwrite;
        let writes = |s: &SrcKey| s.class == Class::Create || (overwrite && matches!(s.class, Class::Different(_)));
        let total = sources.values().filter(|s| writes(s)).count() as u64;
        on(Event::Step(format!(
            "writing {} key(s) into the target ({} new, {} overwritten; {} identical already)",
            total,
            n_create,
            if overwrite { n_different } else { 0 },
            report.plan.iter().map(|r| r.identical).sum::<u64>()
        )));
        on(Event::Progress { done: 0, total });
        // Values are read back from the snapshot in key order and sealed one at a time; the
        // Namespace objects go last.
        let reader = crate::source::Reader::open(&origin.snapshot)?;
        let mut batcher = Batcher::new(o.max_ops, o.max_bytes);
        let mut done = 0u64;
        let mut keys = sources
            .iter()
            .filter(|(k, s)| writes(s) && !is_namespace_object(k))
            .chain(sources.iter().filter(|(k, s)| writes(s) && is_namespace_object(k)))
            .map(|(k, _)| k.as_slice());
        loop {
            let next = keys.next();
            let batch = match next {
                Some(k) => {
                    let s = &sources[k];
                    let value = reader.value(k, s.rev)?;
                    let (value, d) =
                        o.codec.seal_source(k, value).map_err(|e| Error::Source(format!("a {} value in {}: {e}", resource_label(k), groups[s.group])))?;
                    if d != s.plain {
                        return Err(Error::Damaged(format!(
                            "{}: a {} value in {} reads differently the second time",
                            origin.snapshot.display(),
                            resource_label(k),
                            groups[s.group]
                        )));
                    }
                    let expect_mod = if let Class::Different(m) = s.class { m } else { 0 };
                    match batcher.push(Put { key: k.to_vec(), value, expect_mod }) {
                        Some(b) => b,
                        None => continue,
                    }
                }
                None => match std::mem::replace(&mut batcher, Batcher::new(o.max_ops, o.max_bytes)).finish() {
                    Some(b) => b,
                    None => break,
                },
            };
            if !o.pause.is_zero() && report.transactions > 0 {
                tokio::time::sleep(o.pause).await;
            }
            let changed = t.apply(&batch).await?;
            report.transactions += 1;
            report.changed_meanwhile += changed.len() as u64;
            for p in &batch {
                if changed.contains(&p.key) {
                    continue;
                }
                if p.expect_mod != 0 {
                    report.overwritten += 1;
                } else {
                    report.written += 1;
                }
            }
            done += batch.len() as u64;
            on(Event::Progress { done, total });
        }
        if report.changed_meanwhile > 0 {
            on(Event::Warning(format!(
                "{} key(s) changed in the target while the migration ran and were not written; run the same command again to compare them anew",
                report.changed_meanwhile
            )));
        }
    }

    // Verification: the backup's plaintexts against the target's, per group, over the
    // source's keys; keys only the target has are counted apart.
    on(Event::Step("verifying: per group key counts and content hashes, source against target".into()));
    let mut sd = Digests::default();
    let mut skipped_per: BTreeMap<String, u64> = BTreeMap::new();
    for (k, s) in &sources {
        if skip(s) {
            *skipped_per.entry(groups[s.group].clone()).or_default() += 1;
            continue;
        }
        sd.add(&groups[s.group], k, ValueDigest::Plain(s.plain));
    }
    let (trev, target) = read_target(&mut t, &sel, &groups, &ranges, &o.codec).await?;
    let mut td = Digests::default();
    let mut target_only: BTreeMap<String, u64> = BTreeMap::new();
    for (k, tk) in &target {
        match sources.get(k) {
            Some(s) if skip(s) => {}
            Some(_) => td.add(&groups[tk.group], k, tk.value),
            None => *target_only.entry(groups[tk.group].clone()).or_default() += 1,
        }
    }
    report.target_revision = trev;
    report.verification = verify::compare(&groups, sd, td, &skipped_per, &target_only);
    if report.verified() && !verify_only {
        if let Some(st) = &origin.state {
            if st.done.is_none() {
                crate::journal::mark(&repo, &st.record, "done").await?;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `--sync`, `--follow`, `--cutover` of a namespace/prefix migration whose copy has completed
/// ([`crate::partial_sync`]): from the source revision the last sync reached (its note), or the
/// copy's backup revision; a note is written at the end of every run, and a verified cutover
/// marks the migration `cutover`.
pub async fn sync(
    src: &ConnConfig,
    dst: &ConnConfig,
    repo: Arc<Repository>,
    o: &PartialOptions,
    mode: crate::sync::Mode,
    stop: tokio::sync::watch::Receiver<bool>,
    on: &Sink,
) -> Result<crate::partial_sync::PartialSyncReport> {
    let sel = o.selection.normalized();
    sel.validate()?;
    let mut target_eps = dst.endpoints.clone();
    target_eps.sort();
    let id = crate::journal::migration_id("partial", &o.cluster, &sel.describe(), &target_eps.join(","));
    let copy_first = |why: String| Error::Refused(format!("{why}: copy the selection first (the same command with --stage), then sync"));
    let st = crate::journal::load(&repo, &id).await?.ok_or_else(|| copy_first(format!("no migration {id} in the repository")))?;
    if st.done.is_none() {
        return Err(copy_first(format!("migration {id}: its copy has not completed and verified yet")));
    }
    if let Some(at) = &st.cutover {
        return Err(Error::Refused(format!("migration {id} was cut over at {at}: the target's apps own those keys now; it is not synced again")));
    }
    let was = st.last_sync.clone().unwrap_or_default();
    let from = if st.last_sync.is_some() { was.source_revision } else { st.record.revision };
    on(Event::Plan(format!(
        "migration {id}: {} of cluster {} copied from backup {} at revision {}; synced to revision {from}",
        sel.describe(),
        st.record.cluster,
        repo::short(&st.record.backup),
        st.record.revision
    )));
    on(Event::Plan(format!("values:    {}; conflicts: --on-conflict {}", o.codec.describe(), o.policy.label())));
    let ps = crate::partial_sync::PartialSync { src, dst, selection: &sel, codec: &o.codec, policy: o.policy, from };
    let result = crate::partial_sync::run(&ps, mode, stop, on).await;
    let run = result.as_ref().map(|r| crate::journal::SyncRun {
        outcome: match (r.verification.is_empty(), r.verified()) {
            (true, _) => "synced",
            (false, true) => "verified",
            (false, false) => "verification failed",
        },
        source_revision: r.to_revision,
        target_revision: None,
        changes: r.changes,
        puts: r.written,
        deletes: r.deleted,
        conflicts: r.conflicts.values().sum(),
    });
    crate::journal::note_sync(&repo, &st.record, &was.after(mode.label(), run.as_ref().map_err(|e| e.to_string())), on).await;
    let report = result?;
    if report.verified() {
        crate::journal::mark(&repo, &st.record, "cutover").await?;
    }
    Ok(report)
}
