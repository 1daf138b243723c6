//! Namespaces or prefixes into a running cluster: filtered replay of a backup, resumable,
//! verified.
//!
//! 1. The source backup ([`crate::origin`]): the record's on a resume, else a new one.
//! 2. The selected live keys of the backup and the target's keys in the same namespaces or
//!    prefixes (one consistent read); each source key is classified: **create** (the target
//!    lacks it), **identical** (same plaintext), **different** (what the conflict policy is
//!    for). Keys only the target has are reported, never deleted.
//! 3. Unless a dry run: `fail` stops here when anything differs; else creates (and, with
//!    `overwrite`, differing keys) are written in guarded transactions ([`crate::target`]).
//! 4. Verification per group ([`crate::verify`]); `skip`ped keys are left out on both sides.
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
use crate::select::{root_of, Selection};
use crate::target::{batches, Put, Target, TargetKv};
use crate::verify::{self, Digests, GroupCheck};
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
    pub retry_lock: Duration,
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
            retry_lock: Duration::ZERO,
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

struct Source {
    key: Vec<u8>,
    value: Vec<u8>,
    plain: Vec<u8>,
    group: String,
}

/// The target's keys in the selection, at one revision.
async fn read_target(t: &mut Target, sel: &Selection, roots: &[String]) -> Result<(i64, BTreeMap<Vec<u8>, (TargetKv, String)>)> {
    let mut out = BTreeMap::new();
    let mut rev = 0;
    for (start, end) in sel.target_ranges(roots) {
        rev = t
            .scan(&start, &end, rev, &mut |kv| {
                if let Some(g) = sel.group_of(&kv.key) {
                    out.insert(kv.key.clone(), (kv, g));
                }
                Ok(())
            })
            .await?;
    }
    Ok((rev, out))
}

/// Run a partial migration; see the module documentation.
pub async fn run(src: Option<&ConnConfig>, dst: &ConnConfig, repo: Arc<Repository>, o: &PartialOptions, on: &Sink) -> Result<PartialReport> {
    let started = Instant::now();
    o.selection.validate()?;
    if matches!(o.selection, Selection::Whole) {
        return Err(Error::Usage("a partial migration needs namespaces (-n) or prefixes (--prefix)".into()));
    }
    let mut target_eps = dst.endpoints.clone();
    target_eps.sort();
    let begin = Begin {
        kind: "partial",
        cluster: &o.cluster,
        selection: o.selection.describe(),
        target: target_eps.join(","),
        restart: o.restart,
        from_backup: o.from_backup.as_deref(),
        dry_run: o.dry_run || o.verify_only,
        tmp_dir: o.tmp_dir.clone(),
        uploads: o.uploads,
        retry_lock: o.retry_lock,
    };
    let mut t = Target::connect(dst).await?;
    let (trev, tkeys) = t.count().await?;
    on(Event::Plan(format!("target:    {} (running; revision {trev}, {tkeys} keys)", dst.endpoints.join(","))));
    on(Event::Plan(format!("selection: {}", o.selection.describe())));
    on(Event::Plan(format!("values:    {}", o.codec.describe())));
    on(Event::Plan(format!(
        "conflicts: --on-conflict {}; etcd leases are not carried (leased keys are written without a lease)",
        o.policy.label()
    )));
    let origin = origin::begin(src, repo.clone(), &begin, o.parallel, on).await?;
    if o.verify_only && origin.state.is_none() {
        return Err(Error::Usage(format!("--verify-only: no migration {} in the repository yet; run it without --verify-only first", origin.id)));
    }

    // The source's selected keys with their plaintexts.
    on(Event::Step("reading the selected keys of the backup".into()));
    let mut undecryptable: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut leased: HashMap<String, u64> = HashMap::new();
    let mut roots: BTreeSet<String> = BTreeSet::new();
    crate::source::for_each(&origin.snapshot, &o.selection, &mut |kv| {
        if kv.lease != 0 {
            *leased.entry(kv.group.clone()).or_default() += 1;
        }
        if let Some(r) = root_of(&kv.key) {
            roots.insert(r.to_string());
        }
        match o.codec.source_plain(&kv.key, &kv.value) {
            Ok(plain) => sources.push(Source { key: kv.key, value: kv.value, plain, group: kv.group }),
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
    let roots: Vec<String> = roots.into_iter().collect();

    // The target's keys in the same groups, and the classification.
    let (_, target) = read_target(&mut t, &o.selection, &roots).await?;
    let mut rows: BTreeMap<String, PlanRow> = o.selection.groups().into_iter().map(|g| (g.clone(), PlanRow { group: g, ..Default::default() })).collect();
    let mut creates: Vec<usize> = Vec::new();
    let mut different: Vec<(usize, i64)> = Vec::new();
    let source_keys: BTreeSet<&[u8]> = sources.iter().map(|s| s.key.as_slice()).collect();
    for (i, s) in sources.iter().enumerate() {
        let row = rows.entry(s.group.clone()).or_insert_with(|| PlanRow { group: s.group.clone(), ..Default::default() });
        row.source_keys += 1;
        match target.get(&s.key) {
            None => {
                row.create += 1;
                creates.push(i);
            }
            Some((tkv, _)) => match o.codec.target_plain(&tkv.key, &tkv.value) {
                Ok(p) if p == s.plain => row.identical += 1,
                _ => {
                    row.different += 1;
                    different.push((i, tkv.mod_revision));
                }
            },
        }
    }
    for (k, (_, g)) in &target {
        if !source_keys.contains(k.as_slice()) {
            rows.entry(g.clone()).or_insert_with(|| PlanRow { group: g.clone(), ..Default::default() }).target_only += 1;
        }
    }
    for (g, n) in &leased {
        if let Some(r) = rows.get_mut(g) {
            r.leased = *n;
        }
    }
    let plan: Vec<PlanRow> = rows.into_values().collect();
    let total_leased: u64 = plan.iter().map(|r| r.leased).sum();
    if total_leased > 0 {
        on(Event::Warning(format!("{total_leased} selected key(s) are attached to an etcd lease in the source (e.g. Events); they are written without a lease")));
    }

    let mut report = PartialReport {
        migration: origin.id.clone(),
        generation: origin.state.as_ref().map(|s| s.record.generation.clone()),
        backup: origin.backup.as_ref().map(|(id, _)| id.clone()),
        source_revision: origin.revision,
        resumed: origin.resumed,
        selection: o.selection.clone(),
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

    let mut skipped: BTreeSet<Vec<u8>> = BTreeSet::new();
    if !o.verify_only {
        if !different.is_empty() && o.policy == ConflictPolicy::Fail {
            let detail: Vec<String> = report.plan.iter().filter(|r| r.different > 0).map(|r| format!("{} in {}", r.different, r.group)).collect();
            return Err(Error::Conflict { count: different.len(), detail: detail.join(", ") });
        }
        let mut puts: Vec<Put> = Vec::with_capacity(creates.len() + different.len());
        let seal = |i: usize, expect_mod: i64| -> Result<Put> {
            let s = &sources[i];
            let value = o.codec.target_value(&s.key, &s.value, &s.plain).map_err(|e| Error::Source(format!("a {} value in {}: cannot encrypt for the target: {e}", resource_label(&s.key), s.group)))?;
            Ok(Put { key: s.key.clone(), value, expect_mod })
        };
        for &i in &creates {
            puts.push(seal(i, 0)?);
        }
        for &(i, m) in &different {
            match o.policy {
                ConflictPolicy::Overwrite => puts.push(seal(i, m)?),
                _ => {
                    skipped.insert(sources[i].key.clone());
                }
            }
        }
        report.skipped = skipped.len() as u64;
        let total = puts.len() as u64;
        on(Event::Step(format!(
            "writing {} key(s) into the target ({} new, {} overwritten; {} identical already)",
            total,
            creates.len(),
            if o.policy == ConflictPolicy::Overwrite { different.len() } else { 0 },
            report.plan.iter().map(|r| r.identical).sum::<u64>()
        )));
        on(Event::Progress { done: 0, total });
        let mut done = 0u64;
        let overwrite_keys: BTreeSet<Vec<u8>> = if o.policy == ConflictPolicy::Overwrite { different.iter().map(|(i, _)| sources[*i].key.clone()).collect() } else { BTreeSet::new() };
        let all = batches(puts, o.max_ops, o.max_bytes);
        let n_batches = all.len();
        for (bi, batch) in all.into_iter().enumerate() {
            let changed = t.apply(&batch).await?;
            report.transactions += 1;
            report.changed_meanwhile += changed.len() as u64;
            for p in &batch {
                if changed.contains(&p.key) {
                    continue;
                }
                if overwrite_keys.contains(&p.key) {
                    report.overwritten += 1;
                } else {
                    report.written += 1;
                }
            }
            done += batch.len() as u64;
            on(Event::Progress { done, total });
            if !o.pause.is_zero() && bi + 1 < n_batches {
                tokio::time::sleep(o.pause).await;
            }
        }
        if report.changed_meanwhile > 0 {
            on(Event::Warning(format!(
                "{} key(s) changed in the target while the migration ran and were not written; run the same command again to compare them anew",
                report.changed_meanwhile
            )));
        }
    } else {
        // Verify only: the policy's skips still apply to what differs.
        if o.policy == ConflictPolicy::Skip {
            skipped.extend(different.iter().map(|(i, _)| sources[*i].key.clone()));
            report.skipped = skipped.len() as u64;
        }
    }

    // Verification: the backup's plaintexts against the target's, per group.
    on(Event::Step("verifying: per group key counts and content hashes, source against target".into()));
    let mut sd = Digests::default();
    let mut skipped_per: BTreeMap<String, u64> = BTreeMap::new();
    for s in &sources {
        if skipped.contains(&s.key) {
            *skipped_per.entry(s.group.clone()).or_default() += 1;
            continue;
        }
        sd.add(&s.group, &s.key, Some(&s.plain), &s.value);
    }
    let (trev, target) = read_target(&mut t, &o.selection, &roots).await?;
    let mut td = Digests::default();
    for (k, (kv, g)) in &target {
        if skipped.contains(k) {
            continue;
        }
        let plain = o.codec.target_plain(k, &kv.value).ok();
        td.add(g, k, plain.as_deref(), &kv.value);
    }
    report.target_revision = trev;
    report.verification = verify::compare(&o.selection.groups(), sd, td, &skipped_per);
    if report.verified() && !o.verify_only {
        if let Some(st) = &origin.state {
            if st.done.is_none() {
                crate::journal::mark(&repo, &st.record, "done").await?;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
