//! A whole cluster into a new one: backup → native restore of the new members' data dirs →
//! (the members are started) → verification against the backup.
//!
//! The new cluster is described as for `snapshot restore --all-members`: `--initial-cluster`
//! (names and peer URLs), `--initial-cluster-token`, a `--data-dir` template with `{name}`.
//! `--to-endpoints` are the new members' client URLs: when given, the command waits for them to
//! answer after the restore (the operator, or systemd, or a static pod starts etcd) and
//! verifies; without it, it stops after the restore and prints how to start and verify.
//!
//! Data dirs that are not empty, and WAL dirs that exist at all, are refused. A member whose
//! dirs an earlier, killed attempt wrote counts as restored only when its db holds the backup
//! and its first WAL segment has its final name. Once the restore has
//! happened, the record's `restored` marker makes a resume skip it (the members may be running
//! on those dirs by then) and go straight to verification. A dry run only looks at the dirs:
//! no snapshot, no backup, no record, no marker; `--verify-only` (which needs `to`) writes no
//! `done` marker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use etcd_cluster::ConnConfig;
use etcd_data::cluster::ClusterSpec;
use etcd_data::restore::{Layout, RestoreOptions, Target as RestoreTarget};
use repo::Repository;

use crate::origin::{self, Begin};
use crate::select::Selection;
use crate::target::Target;
use crate::verify::{self, digest, Digests, GroupCheck, ValueDigest};
use crate::{Error, Event, Result, Sink};

pub struct WholeOptions {
    /// The source cluster's name in the repository.
    pub cluster: String,
    /// `name=peer-url,...` of the new cluster.
    pub initial_cluster: String,
    pub token: String,
    /// Data dir per member; `{name}` is replaced by the member's name.
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
    pub target_version: Option<Layout>,
    /// The new members' client URLs (verification after they start).
    pub to: Option<ConnConfig>,
    pub verify_only: bool,
    pub dry_run: bool,
    pub restart: bool,
    pub from_backup: Option<String>,
    pub tmp_dir: Option<PathBuf>,
    /// How long to wait for the new members to answer.
    pub start_timeout: Duration,
    pub parallel: usize,
    pub uploads: usize,
    /// A sync reads the source's revisions from the delta chain an agent captures of it into
    /// the repository, not from a watch.
    pub revisions_from_deltas: bool,
    /// Seconds added to the TTL of every lease the new cluster gets (restored from the backup,
    /// or granted by a sync), so that none runs out there before the source's does (see
    /// [`crate::sync`]); None for a one-shot migration.
    pub lease_grace: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_url: Option<String>,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberCheck {
    pub endpoint: String,
    pub revision: i64,
    pub keys: i64,
    pub hash_kv: u32,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WholeVerification {
    pub revision: i64,
    pub want_keys: Option<u64>,
    pub want_hash_kv: Option<u32>,
    pub members: Vec<MemberCheck>,
    pub groups: Vec<GroupCheck>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WholeReport {
    pub migration: String,
    pub generation: Option<String>,
    pub backup: Option<String>,
    pub source_revision: i64,
    pub resumed: bool,
    pub dry_run: bool,
    pub members: Vec<NewMember>,
    /// This run wrote the data dirs.
    pub restored_now: bool,
    /// When the data dirs were written (this run or an earlier one).
    pub restored_at: Option<String>,
    pub verification: Option<WholeVerification>,
    pub seconds: f64,
}

impl WholeReport {
    pub fn verified(&self) -> bool {
        self.verification.as_ref().is_some_and(|v| v.ok)
    }
}

fn expand(template: &Path, name: &str) -> PathBuf {
    PathBuf::from(template.to_string_lossy().replace("{name}", name))
}

fn non_empty(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(false)
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Data dirs that are not empty and WAL dirs that exist at all (the restore creates the WAL
/// dir itself and refuses an existing one, even empty).
fn refuse_busy(members: &[NewMember]) -> Result<()> {
    let mut busy: Vec<String> = members.iter().map(|m| &m.data_dir).filter(|d| non_empty(d)).map(|d| format!("{} (not empty)", d.display())).collect();
    busy.extend(
        members
            .iter()
            .filter_map(|m| m.wal_dir.as_ref())
            .filter(|w| exists(w))
            .map(|w| format!("{} (the WAL dir exists; the restore creates it)", w.display())),
    );
    if busy.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!("{}; a whole-cluster migration restores a new cluster and never writes into existing data or WAL dirs", busy.join(", "))))
}

/// A restored member's db holds the backup: same revision, same hashkv at it, same key count.
fn holds_backup(data_dir: &Path, m: &repo::format::Manifest) -> bool {
    let Ok(db) = bolt::Db::open(data_dir.join("member/snap/db")) else { return false };
    match etcd_data::hashkv::hash_kv(&db, Some(m.snapshot.revision)) {
        Ok(h) => {
            h.revision == m.snapshot.revision
                && m.snapshot.hash_kv.is_some_and(|x| x == h.hash)
                && m.snapshot.live_keys.is_some_and(|k| k == h.live_keys as u64)
        }
        Err(_) => false,
    }
}

/// Where a new member's dirs stand before the restore.
#[derive(Debug, PartialEq, Eq)]
enum MemberState {
    /// Empty or absent: to restore.
    Free,
    /// Restored completely by an earlier attempt of this migration.
    Restored,
    /// Restored by an earlier attempt that was killed just before the last rename: the data
    /// dir holds the backup and the WAL dir the complete first segment under its pending name.
    FinishWal { pending: PathBuf, segment: PathBuf },
    /// Anything else: refused, with what to do.
    Busy(String),
}

fn pending_name() -> String {
    format!("{}.quorum-pending", etcd_data::wal::FIRST_SEGMENT)
}

/// What `nm`'s dirs hold. `backup` is the migration's backup when a record of it exists (only
/// then can dirs be "restored by an earlier attempt").
///
/// The restore writes and fsyncs every member's WAL segment (under its pending name when the
/// WAL has its own dir) before anything is renamed, then renames per member the WAL dir, the
/// data dir, and last the segment to its final name. So a data dir in place that holds the
/// backup, next to a pending segment of full size, is a restore that completed but for that
/// last rename; any other pending segment, or a data dir without its WAL segment, is not
/// usable.
fn member_state(nm: &NewMember, backup: Option<&repo::format::Manifest>) -> MemberState {
    let wal_dir_exists = nm.wal_dir.as_deref().is_some_and(exists);
    if !non_empty(&nm.data_dir) && !wal_dir_exists {
        return MemberState::Free;
    }
    let not_empty = || {
        let mut dirs = vec![];
        if non_empty(&nm.data_dir) {
            dirs.push(format!("{} (not empty)", nm.data_dir.display()));
        }
        if let Some(w) = nm.wal_dir.as_ref().filter(|w| exists(w)) {
            dirs.push(format!("{} (the WAL dir exists)", w.display()));
        }
        MemberState::Busy(dirs.join(", "))
    };
    let Some(m) = backup else { return not_empty() };
    let wal = nm.wal_dir.clone().unwrap_or_else(|| nm.data_dir.join("member/wal"));
    let segment = wal.join(etcd_data::wal::FIRST_SEGMENT);
    let pending = wal.join(pending_name());
    let has_segment = segment.is_file();
    let pending_len = std::fs::metadata(&pending).ok().filter(|md| md.is_file()).map(|md| md.len());
    let db_ok = holds_backup(&nm.data_dir, m);
    let remove = || match &nm.wal_dir {
        Some(w) => format!("remove {} and {} and run the same command again (it restores this member anew)", nm.data_dir.display(), w.display()),
        None => format!("remove {} and run the same command again (it restores this member anew)", nm.data_dir.display()),
    };
    match (db_ok, has_segment, pending_len) {
        (true, true, None) => MemberState::Restored,
        (true, false, Some(len)) if nm.wal_dir.is_some() && len == etcd_data::wal::SEGMENT_SIZE => MemberState::FinishWal { pending, segment },
        (_, _, Some(_)) => MemberState::Busy(format!(
            "{}: an earlier attempt of this migration was killed while restoring it: its WAL segment is still named {}{}; this member is not usable: {}",
            nm.name,
            pending.display(),
            if db_ok { "" } else { " and its data dir does not hold the backup" },
            remove()
        )),
        (true, false, None) => MemberState::Busy(format!(
            "{}: the data dir holds the backup but there is no WAL segment {}; this member is not usable: {}",
            nm.name,
            segment.display(),
            remove()
        )),
        _ => not_empty(),
    }
}

/// Give a completely written first WAL segment its final name, durably.
fn finish_wal(pending: &Path, segment: &Path) -> Result<()> {
    std::fs::rename(pending, segment).map_err(crate::io(segment))?;
    let dir = segment.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(crate::io(dir))
}

/// The new members from the flags.
pub fn new_members(o: &WholeOptions) -> Result<(ClusterSpec, Vec<NewMember>)> {
    let spec = ClusterSpec::new(&o.initial_cluster, &o.token).map_err(|e| Error::Usage(e.to_string()))?;
    if spec.members.len() > 1 && !o.data_dir.to_string_lossy().contains("{name}") {
        return Err(Error::Usage("the data dir pattern must contain {name}: one directory per member of the initial cluster".into()));
    }
    let clients = o.to.as_ref().map(|c| c.endpoints.clone()).unwrap_or_default();
    let members = spec
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| NewMember {
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_url: (clients.len() == spec.members.len()).then(|| o.to.as_ref().unwrap().url(&clients[i])),
            data_dir: expand(&o.data_dir, &m.name),
            wal_dir: o.wal_dir.as_deref().map(|w| expand(w, &m.name)),
        })
        .collect();
    Ok((spec, members))
}

/// The command that starts one restored member.
pub fn start_command(m: &NewMember, initial_cluster: &str, token: &str) -> String {
    let peer = m.peer_urls.join(",");
    let client = m.client_url.clone().unwrap_or_else(|| "<client-url>".into());
    let mut s = format!(
        "etcd --name {} --data-dir {} --listen-peer-urls {peer} --initial-advertise-peer-urls {peer} --listen-client-urls {client} --advertise-client-urls {client} --initial-cluster {initial_cluster} --initial-cluster-token {token}",
        m.name,
        m.data_dir.display()
    );
    if let Some(w) = &m.wal_dir {
        s += &format!(" --wal-dir {}", w.display());
    }
    s
}

/// Run a whole-cluster migration; see the module documentation.
pub async fn run(src: Option<&ConnConfig>, repo: Arc<Repository>, o: &WholeOptions, on: &Sink) -> Result<WholeReport> {
    let started = Instant::now();
    let (spec, members) = new_members(o)?;
    if o.verify_only && o.to.is_none() {
        return Err(Error::Usage("verifying needs the new members' client URLs, to compare them with the backup".into()));
    }
    let target_desc = format!("{} {}", o.initial_cluster, o.data_dir.display());
    on(Event::Plan(format!("target:    a new cluster of {} member(s), token {}", members.len(), o.token)));
    for m in &members {
        on(Event::Plan(format!(
            "  {}: peer {}, client {}, data dir {}",
            m.name,
            m.peer_urls.join(","),
            m.client_url.clone().unwrap_or_else(|| "-".into()),
            m.data_dir.display()
        )));
    }
    // Refuse busy data dirs before anything is written anywhere (unless this migration
    // restored them already).
    let id = crate::journal::migration_id("whole", &o.cluster, &Selection::Whole.describe(), &target_desc);
    // A recorded migration may have been killed half-way through the restore: its dirs are
    // checked against the backup below.
    let recorded = if o.restart { false } else { crate::journal::load(&repo, &id).await?.is_some() };
    if !recorded {
        refuse_busy(&members)?;
    }
    let begin = Begin {
        kind: "whole",
        cluster: &o.cluster,
        selection: Selection::Whole.describe(),
        target: target_desc,
        restart: o.restart,
        from_backup: o.from_backup.as_deref(),
        dry_run: o.dry_run || o.verify_only,
        // A dry run only looks at the data dirs.
        fetch: !o.dry_run,
        tmp_dir: o.tmp_dir.clone(),
        uploads: o.uploads,
    };
    let origin = origin::begin(src, repo.clone(), &begin, o.parallel, on).await?;
    if o.verify_only && origin.state.is_none() {
        return Err(Error::NothingToVerify(format!("no migration {} in the repository yet", origin.id)));
    }
    let manifest: Option<repo::format::Manifest> = origin.backup.as_ref().map(|(_, m)| m.clone());
    let mut report = WholeReport {
        migration: origin.id.clone(),
        generation: origin.state.as_ref().map(|s| s.record.generation.clone()),
        backup: origin.backup.as_ref().map(|(i, _)| i.clone()),
        source_revision: origin.revision,
        resumed: origin.resumed,
        dry_run: o.dry_run,
        members: members.clone(),
        restored_now: false,
        restored_at: origin.state.as_ref().and_then(|s| s.restored.clone()),
        verification: None,
        seconds: 0.0,
    };

    if report.restored_at.is_none() {
        // Members an earlier, killed attempt restored completely hold exactly the backup (and
        // their WAL); the others must be empty.
        let recorded_backup = manifest.as_ref().filter(|_| origin.state.is_some());
        let mut todo: Vec<&NewMember> = Vec::new();
        let mut finish: Vec<(&NewMember, PathBuf, PathBuf)> = Vec::new();
        let mut busy: Vec<String> = Vec::new();
        for nm in &members {
            match member_state(nm, recorded_backup) {
                MemberState::Free => todo.push(nm),
                MemberState::Restored => on(Event::Plan(format!(
                    "{}: restored by an earlier attempt of this migration (its db holds the backup's revision and hashkv, its WAL is in place); kept",
                    nm.name
                ))),
                MemberState::FinishWal { pending, segment } => finish.push((nm, pending, segment)),
                MemberState::Busy(why) => busy.push(why),
            }
        }
        if !busy.is_empty() {
            return Err(Error::Refused(format!(
                "{}; a whole-cluster migration restores a new cluster and never writes into existing data dirs",
                busy.join("; ")
            )));
        }
        if o.verify_only {
            return Err(Error::NothingToVerify("the data dirs of this migration were never restored".into()));
        }
        if o.dry_run {
            on(Event::Plan(format!(
                "dry run: {} data dir(s) are empty and would be restored{}; nothing was written",
                todo.len(),
                if finish.is_empty() {
                    String::new()
                } else {
                    format!(", {} restored but for their WAL segment's last rename would be completed", finish.len())
                }
            )));
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        let m = manifest.as_ref().ok_or_else(|| Error::Refused("no backup to restore from".into()))?;
        for (nm, pending, segment) in &finish {
            on(Event::Plan(format!(
                "{}: restored by an earlier attempt that was killed before its WAL segment got its final name; completing that rename",
                nm.name
            )));
            finish_wal(pending, segment)?;
        }
        if !todo.is_empty() {
            on(Event::Step(format!("restoring backup {} natively into {} data dir(s)", repo::short(report.backup.as_deref().unwrap_or("")), todo.len())));
            let ropts = RestoreOptions {
                snapshot: origin.snapshot.clone(),
                cluster: spec.clone(),
                targets: todo.iter().map(|m| RestoreTarget { name: m.name.clone(), data_dir: m.data_dir.clone(), wal_dir: m.wal_dir.clone() }).collect(),
                skip_hash_check: !etcd_data::trailer::has_trailer(m.snapshot.size),
                proven_by: None,
                bump_revision: None,
                mark_compacted: false,
                target_version: o.target_version,
                lease_grace: o.lease_grace,
                source: None,
            };
            let on2 = on.clone();
            tokio::task::spawn_blocking(move || etcd_data::restore::restore(&ropts, &move |d, t| on2(Event::Progress { done: d, total: t })))
                .await
                .map_err(|e| Error::Io { path: todo[0].data_dir.clone(), source: std::io::Error::other(format!("the restore stopped: {e}")) })?
                .map_err(|e| Error::Repo(repo::Error::Restore(e)))?;
        }
        report.restored_now = true;
        if let Some(st) = &origin.state {
            report.restored_at = Some(crate::journal::mark(&repo, &st.record, "restored").await?);
        }
    } else {
        on(Event::Plan(format!("the data dirs were restored at {}; they are not touched again", report.restored_at.as_deref().unwrap_or(""))));
        if o.dry_run {
            on(Event::Plan("dry run: nothing was written".into()));
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
    }
    for m in &members {
        on(Event::Plan(format!("start:     {}", start_command(m, &o.initial_cluster, &o.token))));
    }
    let Some(to) = &o.to else {
        on(Event::Plan("then verify: the same command with --to-endpoints <the new client URLs> --verify-only".into()));
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    };
    let m = manifest.as_ref().ok_or_else(|| Error::Refused("no backup to verify against".into()))?;
    report.verification = Some(verify_new(to, m, &origin.snapshot, o.start_timeout, on).await?);
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

async fn wait_up(to: &ConnConfig, timeout: Duration, on: &Sink) -> Result<()> {
    on(Event::Step(format!("waiting up to {}s for the new cluster to answer on {}", timeout.as_secs(), to.endpoints.join(","))));
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        for ep in &to.endpoints {
            let up = match to.connect_one(ep).await {
                Ok(mut c) => c.status().await.is_ok(),
                Err(_) => false,
            };
            all &= up;
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Target {
                endpoint: to.endpoints.join(","),
                op: "wait for the new cluster",
                msg: format!("not every member answered within {}s", timeout.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The new cluster against the backup: every member's revision, key count and hashkv at the
/// backup's revision; per top-level prefix, key counts and content hashes.
pub async fn verify_new(to: &ConnConfig, m: &repo::format::Manifest, snapshot: &Path, timeout: Duration, on: &Sink) -> Result<WholeVerification> {
    wait_up(to, timeout, on).await?;
    on(Event::Step("verifying: revision, key count and hashkv on every member; per prefix counts and content hashes".into()));
    let rev = m.snapshot.revision;
    let mut members = Vec::new();
    let hashing = crate::sync::for_hashing(to);
    for ep in &to.endpoints {
        let mut c = hashing.connect_one(ep).await?;
        let err = |op: &'static str| {
            let ep = ep.clone();
            move |e: etcd_client::Error| Error::Target { endpoint: ep, op, msg: e.to_string() }
        };
        let cnt =
            c.get(vec![0u8], Some(etcd_client::GetOptions::new().with_range(vec![0u8]).with_revision(rev).with_count_only())).await.map_err(err("count"))?;
        let current = cnt.header().map(|h| h.revision()).unwrap_or(0);
        let h = c.hash_kv(rev).await.map_err(err("hashkv"))?;
        let ok = current >= rev && m.snapshot.live_keys.is_none_or(|k| k == cnt.count() as u64) && m.snapshot.hash_kv.is_none_or(|x| x == h.hash());
        members.push(MemberCheck { endpoint: to.url(ep), revision: current, keys: cnt.count(), hash_kv: h.hash(), ok });
    }
    let mut sd = Digests::default();
    crate::source::for_each(snapshot, &Selection::Whole, &mut |kv| {
        sd.add(&kv.group, &kv.key, ValueDigest::Plain(digest(&kv.value)));
        Ok(())
    })?;
    let mut td = Digests::default();
    let mut t = Target::connect(to).await?;
    t.scan(&[0], &[0], rev, &mut |kv| {
        let g = Selection::Whole.group_of(&kv.key).unwrap_or_default();
        td.add(&g, &kv.key, ValueDigest::Plain(digest(&kv.value)));
        Ok(())
    })
    .await?;
    let groups = verify::compare(&[], sd, td, &Default::default(), &Default::default());
    let ok = members.iter().all(|c| c.ok) && groups.iter().all(|g| g.ok);
    Ok(WholeVerification { revision: rev, want_keys: m.snapshot.live_keys, want_hash_kv: m.snapshot.hash_kv, members, groups, ok })
}

/// `--sync`, `--follow`, `--cutover` of a staged whole-cluster migration ([`crate::sync`]),
/// with the source's revisions from a watch or ([`WholeOptions::revisions_from_deltas`]) from the delta chain an agent
/// captures of the source into the repository:
/// the migration's record must show its data dirs restored; a cut-over migration is not
/// synced again (its new cluster has writers of its own), and a cutover run again only
/// verifies. `early`: a cutover's reads done while the repository opened
/// ([`crate::sync::early_cutover`]); ignored unless the record allows the cutover.
#[allow(clippy::too_many_arguments)]
pub async fn sync(
    src: &ConnConfig,
    to: &ConnConfig,
    repo: Arc<Repository>,
    o: &WholeOptions,
    mode: crate::sync::Mode,
    early: Option<crate::sync::EarlyCutover>,
    stop: tokio::sync::watch::Receiver<bool>,
    on: &Sink,
) -> Result<crate::sync::SyncReport> {
    new_members(o)?;
    let target_desc = format!("{} {}", o.initial_cluster, o.data_dir.display());
    let id = crate::journal::migration_id("whole", &o.cluster, &Selection::Whole.describe(), &target_desc);
    let stage = |why: &str| Error::Refused(format!("{why}: stage it first (the same command with --stage), start the new members, then sync"));
    let st = crate::journal::load(&repo, &id).await?.ok_or_else(|| stage(&format!("no migration {id} in the repository")))?;
    if st.restored.is_none() {
        return Err(stage(&format!("migration {id}: its new members' data dirs were never restored")));
    }
    on(Event::Plan(format!(
        "migration {id}: cluster {} staged from backup {} at revision {}, data dirs restored at {}",
        st.record.cluster,
        repo::short(&st.record.backup),
        st.record.revision,
        st.restored.as_deref().unwrap_or("")
    )));
    if let Some(at) = &st.cutover {
        if !matches!(mode, crate::sync::Mode::Cutover { .. }) {
            return Err(Error::Refused(format!("migration {id} was cut over at {at}: the new cluster serves its own writers now and is not synced again")));
        }
        // The cutover's revision, as its note recorded it; else as far as both sides go (the
        // source may have moved on since: its leases run out after its writers stop).
        let rev = match st.last_sync.as_ref().filter(|n| n.mode == "cutover" && n.outcome == "verified") {
            Some(n) => n.target_revision,
            None => {
                let (s, t) = crate::sync::revisions(src, to).await?;
                s.min(t)
            }
        };
        on(Event::Plan(format!("cut over at {at} already; verifying the target at the cutover's revision {rev} again")));
        let check = crate::sync::verify(src, to, rev).await?;
        return Ok(crate::sync::SyncReport {
            mode: mode.label().into(),
            from_revision: rev,
            target_revision: rev,
            verification: Some(check),
            ..Default::default()
        });
    }
    let revisions = if o.revisions_from_deltas {
        crate::sync::Revisions::Deltas { repo: repo.clone(), cluster: st.record.cluster.clone() }
    } else {
        crate::sync::Revisions::Watch
    };
    let was = st.last_sync.clone().unwrap_or_default();
    let note_of = |r: &crate::sync::SyncReport, outcome: &'static str| crate::journal::SyncRun {
        outcome,
        source_revision: r.source_revision,
        target_revision: Some(r.target_revision),
        changes: r.revisions_applied,
        puts: r.puts,
        deletes: r.deletes,
        conflicts: 0,
    };
    // A follow's checkpoints become notes as they are taken (the totals so far with them).
    let (taken, mut checkpoints) = tokio::sync::mpsc::unbounded_channel::<crate::sync::Checkpoint>();
    let checkpoints_in = crate::sync::Checkpoints { newest: was.checkpoint.clone(), taken: Some(taken) };
    let mut newest = None;
    let notes = async {
        while let Some((check, report)) = checkpoints.recv().await {
            let outcome = if check.ok { "following, verified" } else { "following, verification failed" };
            let mut note = was.after(mode.label(), Ok(&note_of(&report, outcome)));
            note.checkpoint = Some(check.clone());
            crate::journal::note_sync(&repo, &st.record, &note, on).await;
            newest = Some(check);
        }
    };
    let (result, ()) = tokio::join!(crate::sync::run(src, to, revisions, mode, o.lease_grace.unwrap_or(0), early, checkpoints_in, stop, on), notes);
    let run = result.as_ref().map(|r| {
        note_of(
            r,
            match &r.verification {
                Some(v) if v.ok => "verified",
                Some(_) => "verification failed",
                None => "synced",
            },
        )
    });
    let mut note = was.after(mode.label(), run.as_ref().map_err(|e| e.to_string()));
    if newest.is_some() {
        note.checkpoint = newest;
    }
    crate::journal::note_sync(&repo, &st.record, &note, on).await;
    let report = result?;
    if report.verification.as_ref().is_some_and(|v| v.ok) {
        crate::journal::mark(&repo, &st.record, "cutover").await?;
    }
    Ok(report)
}
