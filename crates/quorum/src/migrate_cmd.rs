//! `quorum migrate`: flags and printing; the work is in the `migrate` crate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use etcd_cluster::{ConnConfig, Secret};
use etcd_data::restore::Layout;
use migrate::{ConflictPolicy, Event};

use crate::exit::{Failure, DAMAGE, USAGE};
use crate::live::parse_duration;
use crate::output::{self, Format};
use crate::repo_cmd::RepoFlags;

pub const HELP: &str = "\
Examples:
  # three namespaces into a running cluster, re-encrypted for the target's keys
  quorum migrate --repo s3://backups/etcd --cluster prod --from-endpoints 10.0.0.1:2379 \\
    --to-endpoints 10.1.0.1:2379 -n shop -n billing -n auth --rekey prod-enc.yaml:new-enc.yaml
  quorum migrate ... -n shop --dry-run            # per namespace: create / identical / different
  quorum migrate ... --prefix /myapp/ --on-conflict overwrite
  # a whole cluster into a new one (members etcd-0..2), verified once they run
  quorum migrate --repo s3://backups/etcd --cluster hcp-a --from-endpoints 10.0.0.1:2379 \\
    --initial-cluster etcd-0=https://10.2.0.1:2380,etcd-1=https://10.2.0.2:2380,etcd-2=https://10.2.0.3:2380 \\
    --initial-cluster-token hcp-a-new --data-dir '/var/lib/etcd-{name}' \\
    --to-endpoints https://10.2.0.1:2379,https://10.2.0.2:2379,https://10.2.0.3:2379
  # the same in stages, revisions preserved: copy while the source serves, keep in step, cut over
  quorum migrate <the whole-cluster flags> --stage            # then start the new members
  quorum migrate <the whole-cluster flags> --sync             # as often as wanted
  quorum migrate <the whole-cluster flags> --follow           # until Ctrl-C / SIGTERM
  quorum migrate <the whole-cluster flags> --cutover --settle 30s   # once writers are stopped
  quorum migrate --cluster hcp-a --status                     # stages of every migration

Every migration first backs the source up into the repository (cluster --cluster) and records
which backup it works from (migrations/ in the repository). Killed at any point, the same
command resumes from that same backup: keys the target already holds with the same content
(plaintext, with --rekey) are not written again. --restart begins anew from a new snapshot.

Partial (-n NS or --prefix P): the selected live keys (a namespace's objects of every resource
and the Namespace object) are written into the running target in transactions of at most
--txn-ops puts, each guarded against concurrent writes. Conflicts (the target holds different
content): --on-conflict fail (default: nothing is written), skip (kept; left out of the
verification), overwrite. Keys only the target has (in the namespaces' resources the source
has, or under the prefixes) are never deleted and are no difference: TARGET ONLY counts them.
Namespace objects are written last. etcd leases are not carried: leased keys (Events) are
written without a lease. Once a migration has completed and verified, running it again only
verifies (the target's apps own those keys now); --restart migrates again.

Whole (no -n/--prefix): the backup is restored natively into the new members' data dirs
(never into non-empty ones); start the members with the printed commands; with
--to-endpoints the command waits for them (--start-timeout) and verifies revision, key count
and hashkv of every member, and per prefix counts and content hashes, against the backup.
--dry-run only checks that the data dirs are empty and --wal-dir does not exist (no backup,
no record); --verify-only needs --to-endpoints.

Staged (whole cluster): --stage is the above. Once the new members run, --sync applies every
source revision since the backup (or the last sync) to them, each as one transaction with the
same operations, so the new cluster's revision equals the source's and every revision reads
the same (Kubernetes resourceVersions and watches carry over). The new cluster must have no
other writer until the cutover: a sync checks hashkv where the last one stopped and guards
every transaction, and stops at the first sign of one. Every lease of the new cluster (restored
by --stage, or granted with the same ID by a sync) lives --lease-grace (10m) longer than the
source's, so none runs out there first: syncs may be that far apart. --revisions-from deltas
reads the revisions from the delta chain an agent captures of the source into the repository.
--follow takes checkpoints (hashkv equal on the source and every new member, a second in and
then every minute) and records them in the repository for --status. --cutover, once writers to
the source are stopped, syncs to its revision and verifies every new member: every revision
since the newest checkpoint compared event for event, or without one hashkv at the revision;
the revision must stay still meanwhile (half a second at least), else the cutover syncs on for
up to --settle and is refused after. Killed at any point, the same command goes
on from the new cluster's revision; each revision is applied once.

Staged (-n/--prefix): --stage is the copy; --sync, --follow and --cutover replay the source's
later changes to the selection from a watch, writing or deleting a key only where the target
still holds a state the source had (conflicts: --on-conflict, counted per namespace); the
cutover verifies the selection against the source at its revision.

Exit codes: 0 done and verified (or a dry run), 1 failed (conflicts, unreachable clusters,
refused dirs), 2 usage, 3 verification found a difference or the source snapshot is damaged.";

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    repo: RepoFlags,
    /// The source cluster's name in the repository (its backups are kept under it).
    #[arg(long)]
    cluster: String,
    /// Source cluster client endpoints, comma separated.
    #[arg(long, value_delimiter = ',')]
    from_endpoints: Vec<String>,
    /// CA bundle that verifies the source's servers (turns TLS on).
    #[arg(long)]
    from_cacert: Option<PathBuf>,
    /// Client certificate for the source.
    #[arg(long)]
    from_cert: Option<PathBuf>,
    /// Client certificate's key for the source.
    #[arg(long)]
    from_key: Option<PathBuf>,
    /// username[:password] for the source.
    #[arg(long)]
    from_user: Option<String>,
    /// Work from this backup of --cluster (ID, prefix, or latest) instead of a new snapshot.
    #[arg(long)]
    from_backup: Option<String>,
    /// Target client endpoints: the running cluster (partial), or the new members' client URLs (whole).
    #[arg(long, value_delimiter = ',')]
    to_endpoints: Vec<String>,
    /// CA bundle that verifies the target's servers (turns TLS on).
    #[arg(long)]
    to_cacert: Option<PathBuf>,
    /// Client certificate for the target.
    #[arg(long)]
    to_cert: Option<PathBuf>,
    /// Client certificate's key for the target.
    #[arg(long)]
    to_key: Option<PathBuf>,
    /// username[:password] for the target.
    #[arg(long)]
    to_user: Option<String>,
    /// Move this namespace (repeatable): its objects of every resource and the Namespace object.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Move the keys under this prefix (repeatable).
    #[arg(long = "prefix", value_name = "P", conflicts_with = "namespaces")]
    prefixes: Vec<String>,
    /// Re-encrypt: read with the source's EncryptionConfiguration, write with the target's.
    #[arg(long, value_name = "FROM_CONFIG:TO_CONFIG")]
    rekey: Option<String>,
    /// When the target holds a selected key with different content: fail, skip, overwrite.
    #[arg(long, default_value = "fail", value_parser = ["fail", "skip", "overwrite"])]
    on_conflict: String,
    /// Show what would change, per namespace/prefix; write nothing anywhere.
    #[arg(long)]
    dry_run: bool,
    /// Only verify a migration made earlier (same arguments).
    #[arg(long, conflicts_with = "dry_run")]
    verify_only: bool,
    /// Begin a new migration from a new snapshot even if one with these arguments exists.
    #[arg(long)]
    restart: bool,
    /// Puts per transaction (the target's --max-txn-ops, default 128).
    #[arg(long, default_value_t = 128)]
    txn_ops: usize,
    /// About this many KiB of keys and values per transaction (the target's --max-request-bytes is 1.5 MiB by default).
    #[arg(long, default_value_t = 1024)]
    txn_kib: usize,
    /// Pause between transactions, e.g. 50ms (go easy on a busy target).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    txn_pause: Duration,
    /// Whole: the new cluster's members, name=peer-url,...
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Whole: the new cluster's token.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Whole: data dir template with {name}.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Whole: WAL dir template with {name}.
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Whole: data layout to write, 3.4 or 3.5 (default: from the snapshot).
    #[arg(long, value_parser = parse_layout)]
    target_version: Option<Layout>,
    /// Whole: how long to wait for the new members to answer before verifying.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    start_timeout: Duration,
    /// Directory for the temporary snapshot (default: system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// The copy (the default): back up, then restore the new members (whole) or write the selection.
    #[arg(long, help_heading = "Stages", conflicts_with_all = ["sync", "follow", "cutover", "status"])]
    stage: bool,
    /// Apply the source's changes since the copy or the last sync to the target, up to the source's current revision.
    #[arg(long, help_heading = "Stages", conflicts_with_all = ["follow", "cutover", "status"])]
    sync: bool,
    /// As --sync, then keep applying every new change until Ctrl-C or SIGTERM.
    #[arg(long, help_heading = "Stages", conflicts_with_all = ["cutover", "status"])]
    follow: bool,
    /// Once writers to the source are stopped: sync to its last revision and verify (whole: from the follow's checkpoint, or hashkv on every new member).
    #[arg(long, help_heading = "Stages", conflicts_with = "status")]
    cutover: bool,
    /// With --cutover: how long to wait for the source's revision to stop moving (default: it must already be still).
    #[arg(long, help_heading = "Stages", value_parser = parse_duration, requires = "cutover")]
    settle: Option<Duration>,
    /// With --stage/--sync/--follow/--cutover: added to the TTL of every lease of the new cluster,
    /// so none runs out there before the source's does between syncs (see above).
    #[arg(long, help_heading = "Stages", value_parser = parse_duration)]
    lease_grace: Option<Duration>,
    /// With --sync/--follow/--cutover: read the source's revisions from a watch of it, or from
    /// the delta chain an agent captures of it into the repository (the source keeps serving
    /// reads only for the checks).
    #[arg(long, help_heading = "Stages", value_parser = ["watch", "deltas"])]
    revisions_from: Option<String>,
    /// Show the migrations in the repository and their stages; with --from/--to-endpoints and
    /// this migration's arguments, its source and target revisions and lag.
    #[arg(long)]
    status: bool,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    write_out: Format,
}

/// The lease grace of a staged migration when --lease-grace is not given.
const DEFAULT_LEASE_GRACE: Duration = Duration::from_secs(600);

fn whole_options(a: &MigrateArgs, to: Option<ConnConfig>) -> Result<migrate::whole::WholeOptions, Failure> {
    let initial_cluster = a
        .initial_cluster
        .clone()
        .ok_or_else(|| Failure::usage("a whole-cluster migration needs --initial-cluster name=peer-url,... (or select keys with -n/--prefix)"))?;
    let data_dir = a.data_dir.clone().ok_or_else(|| Failure::usage("a whole-cluster migration needs --data-dir '/path/{name}'"))?;
    Ok(migrate::whole::WholeOptions {
        cluster: a.cluster.clone(),
        initial_cluster,
        token: a.initial_cluster_token.clone(),
        data_dir,
        wal_dir: a.wal_dir.clone(),
        target_version: a.target_version,
        to,
        verify_only: a.verify_only,
        dry_run: a.dry_run,
        restart: a.restart,
        from_backup: a.from_backup.clone(),
        tmp_dir: a.tmp_dir.clone(),
        start_timeout: a.start_timeout,
        parallel: a.repo.parallel,
        uploads: a.repo.parallel.clamp(1, 16),
        revisions_from_deltas: a.revisions_from.as_deref() == Some("deltas"),
        lease_grace: (a.stage || a.sync || a.follow || a.cutover).then(|| a.lease_grace.unwrap_or(DEFAULT_LEASE_GRACE).as_secs() as i64),
    })
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    Layout::parse(s).ok_or_else(|| format!("unsupported target version {s:?}: want 3.4 or 3.5"))
}

/// One side's connection: the global flags' timeouts and TLS, with this side's endpoints and overrides.
fn side(base: &ConnConfig, eps: &[String], cacert: &Option<PathBuf>, cert: &Option<PathBuf>, key: &Option<PathBuf>, user: &Option<String>) -> ConnConfig {
    let mut c = base.clone();
    c.endpoints = eps.to_vec();
    if cacert.is_some() {
        c.cacert = cacert.clone();
    }
    if cert.is_some() {
        c.cert = cert.clone();
    }
    if key.is_some() {
        c.key = key.clone();
    }
    if let Some(u) = user {
        c.user = Some(match u.split_once(':') {
            Some((n, p)) => (n.to_string(), Secret(p.to_string())),
            None => (u.clone(), Secret(String::new())),
        });
    }
    c
}

/// Prints events: plan and steps on stderr, progress as a bar on a terminal (plain lines at
/// quarter marks otherwise), nothing of either with --quiet except the plan and steps.
struct Printer {
    quiet: bool,
    tty: bool,
    bar: Mutex<(Option<indicatif::ProgressBar>, u64)>,
}

impl Printer {
    fn event(&self, e: Event) {
        let mut g = self.bar.lock().unwrap();
        match e {
            Event::Plan(l) => Self::line(&g.0, &l),
            Event::Step(l) => {
                if let Some(b) = g.0.take() {
                    b.finish_and_clear();
                }
                g.1 = 0;
                Self::line(&None, &format!("==> {l}"));
            }
            Event::Warning(l) => Self::line(&g.0, &format!("Warning: {l}")),
            Event::Progress { done, total } => {
                if self.quiet {
                    return;
                }
                if self.tty {
                    let b = g.0.get_or_insert_with(|| {
                        let b = indicatif::ProgressBar::new(total);
                        b.set_style(
                            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} [{bar:30}] {per_sec} {eta}")
                                .expect("template")
                                .progress_chars("=> "),
                        );
                        b
                    });
                    b.set_length(total.max(done));
                    b.set_position(done);
                } else if let Some(quarter) = (done * 4).checked_div(total) {
                    if quarter > g.1 || (done == total && g.1 < 4) {
                        g.1 = quarter.max(1);
                        eprintln!("    {done}/{total}");
                    }
                }
            }
        }
    }

    fn line(bar: &Option<indicatif::ProgressBar>, l: &str) {
        match bar {
            Some(b) => b.suspend(|| eprintln!("{l}")),
            None => eprintln!("{l}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().0.take() {
            b.finish_and_clear();
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn read_config(path: &str) -> Result<kube_data::encryption::EncryptionConfig, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("--rekey {path}: {e}")))?;
    kube_data::encryption::parse_config(&text, path).map_err(|e| Failure::usage(format!("--rekey: {e}")))
}

pub fn run(conn: &crate::live::Conn, a: MigrateArgs, quiet: bool, env_proxy: &repo::proxy::ProxyConfig) -> Result<(), Failure> {
    let base = conn.config();
    let src = (!a.from_endpoints.is_empty()).then(|| side(&base, &a.from_endpoints, &a.from_cacert, &a.from_cert, &a.from_key, &a.from_user));
    let dst = (!a.to_endpoints.is_empty()).then(|| side(&base, &a.to_endpoints, &a.to_cacert, &a.to_cert, &a.to_key, &a.to_user));
    if src.is_none() && a.from_backup.is_none() && !a.verify_only && !a.status {
        return Err(Failure::usage("give the source with --from-endpoints, or a backup with --from-backup"));
    }
    let printer = Arc::new(Printer { quiet, tty: std::io::IsTerminal::is_terminal(&std::io::stderr()), bar: Mutex::new((None, 0)) });
    let p2 = printer.clone();
    let sink: migrate::Sink = Arc::new(move |e| p2.event(e));
    let whole = a.namespaces.is_empty() && a.prefixes.is_empty();
    if whole && a.verify_only && dst.is_none() {
        return Err(Failure {
            code: USAGE,
            message: Some("--verify-only needs --to-endpoints: the new members' client URLs".into()),
            hint: Some("quorum migrate <the same arguments> --to-endpoints https://<member>:2379,... --verify-only".into()),
        });
    }
    let rt = rt();
    // A whole-cluster cutover reads the source's revision and verifies the target while the
    // repository's key is derived: that is inside the window in which nothing can write.
    let early = match (&src, &dst) {
        (Some(src), Some(dst)) if a.cutover && whole && !a.status => {
            let (src, dst, settle) = (src.clone(), dst.clone(), a.settle.unwrap_or_default());
            Some(rt.spawn(async move { migrate::sync::early_cutover(&src, &dst, settle).await }))
        }
        _ => None,
    };
    let r = a.repo.open(&rt, env_proxy)?;
    let staged = a.sync || a.follow || a.cutover;
    if !whole && a.lease_grace.is_some() {
        return Err(Failure::usage("--lease-grace applies to whole-cluster migrations: -n/--prefix migrations do not carry etcd leases"));
    }
    if !whole && a.revisions_from.is_some() {
        return Err(Failure::usage("--revisions-from applies to whole-cluster migrations: -n/--prefix syncs read a watch of the source"));
    }
    if a.lease_grace.is_some() && !(a.stage || staged) {
        return Err(Failure::usage("--lease-grace applies to --stage, --sync, --follow and --cutover"));
    }
    if a.revisions_from.is_some() && !staged {
        return Err(Failure::usage("--revisions-from applies to --sync, --follow and --cutover"));
    }
    if a.status {
        return status(&rt, r, &a, src.as_ref(), dst.as_ref(), whole);
    }
    let mode = if a.cutover {
        migrate::sync::Mode::Cutover { settle: a.settle.unwrap_or_default() }
    } else if a.follow {
        migrate::sync::Mode::Follow
    } else {
        migrate::sync::Mode::Sync
    };
    if staged {
        if src.is_none() {
            return Err(Failure::usage("--sync, --follow and --cutover read the source's changes: give --from-endpoints"));
        }
        if dst.is_none() {
            return Err(Failure::usage("--sync, --follow and --cutover write to the target: give --to-endpoints"));
        }
        for (set, flag) in [(a.from_backup.is_some(), "--from-backup"), (a.restart, "--restart"), (a.dry_run, "--dry-run"), (a.verify_only, "--verify-only")] {
            if set {
                return Err(Failure::usage(format!("{flag} does not apply to --sync, --follow or --cutover")));
            }
        }
    }
    if staged && whole {
        let (src, dst) = (src.expect("checked"), dst.expect("checked"));
        let o = whole_options(&a, Some(dst.clone()))?;
        let stop_rx = stop_on_signals(&rt);
        let early = early.and_then(|h| rt.block_on(h).ok().flatten());
        let rep = rt.block_on(migrate::whole::sync(&src, &dst, r, &o, mode, early, stop_rx, &sink));
        printer.finish();
        let rep = rep?;
        print_sync(&rep, a.write_out);
        return match &rep.verification {
            Some(v) if !v.ok => {
                Err(Failure { code: DAMAGE, message: Some("cutover verification failed: a new member differs from the source (see above)".into()), hint: None })
            }
            _ => Ok(()),
        };
    }
    if whole {
        if a.rekey.is_some() {
            return Err(Failure::usage(
                "--rekey applies to -n/--prefix migrations; a whole cluster moves with its keys (use `quorum k8s rekey` on the snapshot)",
            ));
        }
        let o = whole_options(&a, dst)?;
        let rep = rt.block_on(migrate::whole::run(src.as_ref(), r, &o, &sink));
        printer.finish();
        let rep = rep?;
        print_whole(&rep, a.write_out);
        return match &rep.verification {
            Some(v) if !v.ok => {
                Err(Failure { code: DAMAGE, message: Some("verification failed: the new cluster differs from the backup (see above)".into()), hint: None })
            }
            _ => Ok(()),
        };
    }

    let dst = dst.ok_or_else(|| Failure::usage("give the running target cluster with --to-endpoints"))?;
    let rekey = match &a.rekey {
        None => None,
        Some(s) => {
            let (f, t) = s.split_once(':').ok_or_else(|| Failure::usage(format!("--rekey {s:?}: want FROM_CONFIG:TO_CONFIG")))?;
            Some(migrate::codec::Rekey { from: read_config(f)?, to: read_config(t)?, from_name: f.to_string(), to_name: t.to_string() })
        }
    };
    let selection = if a.namespaces.is_empty() {
        migrate::select::Selection::Prefixes(a.prefixes.clone())
    } else {
        migrate::select::Selection::Namespaces(a.namespaces.clone())
    }
    .normalized();
    let o = migrate::partial::PartialOptions {
        cluster: a.cluster.clone(),
        selection,
        codec: migrate::codec::Codec { rekey },
        policy: ConflictPolicy::parse(&a.on_conflict).expect("clap checked"),
        dry_run: a.dry_run,
        verify_only: a.verify_only,
        restart: a.restart,
        from_backup: a.from_backup.clone(),
        tmp_dir: a.tmp_dir.clone(),
        max_ops: a.txn_ops.max(1),
        max_bytes: a.txn_kib.max(1) * 1024,
        pause: a.txn_pause,
        parallel: a.repo.parallel,
        uploads: a.repo.parallel.clamp(1, 16),
    };
    if staged {
        let stop_rx = stop_on_signals(&rt);
        let rep = rt.block_on(migrate::partial::sync(src.as_ref().expect("checked"), &dst, r, &o, mode, stop_rx, &sink));
        printer.finish();
        let rep = rep?;
        print_partial_sync(&rep, a.write_out);
        if !rep.verification.is_empty() && !rep.verified() {
            let bad: Vec<&str> = rep.verification.iter().filter(|c| !c.ok).map(|c| c.group.as_str()).collect();
            return Err(Failure {
                code: DAMAGE,
                message: Some(format!("cutover verification failed: source and target differ in {}", bad.join(", "))),
                hint: None,
            });
        }
        return Ok(());
    }
    let rep = rt.block_on(migrate::partial::run(src.as_ref(), &dst, r, &o, &sink));
    printer.finish();
    let rep = rep?;
    print_partial(&rep, &o.selection, a.write_out);
    if !rep.dry_run && !rep.verified() {
        let bad: Vec<&str> = rep.verification.iter().filter(|c| !c.ok).map(|c| c.group.as_str()).collect();
        return Err(Failure {
            code: DAMAGE,
            message: Some(format!("verification failed: source and target differ in {}", bad.join(", "))),
            hint: Some(if rep.completed_before {
                "this migration had completed: the target's keys changed since (a re-run only verifies); --restart migrates the selection again from a new snapshot".into()
            } else {
                "run the same command again to resume; `--dry-run` shows what differs per group".into()
            }),
        });
    }
    Ok(())
}

fn short_hash(h: &str) -> String {
    h.chars().take(16).collect()
}

fn checks_table(label: &str, v: &[migrate::verify::GroupCheck]) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|c| {
            vec![
                c.group.clone(),
                c.source_keys.to_string(),
                c.target_keys.to_string(),
                c.skipped.to_string(),
                c.target_only.to_string(),
                short_hash(&c.source_hash),
                short_hash(&c.target_hash),
                if c.ok {
                    "ok".into()
                } else if c.target_undecryptable > 0 {
                    format!("DIFFERS ({} undecryptable)", c.target_undecryptable)
                } else {
                    "DIFFERS".into()
                },
            ]
        })
        .collect();
    output::table(&[label, "SOURCE KEYS", "TARGET KEYS", "SKIPPED", "TARGET ONLY", "SOURCE SHA256", "TARGET SHA256", "MATCH"], &rows)
}

fn print_partial(r: &migrate::partial::PartialReport, sel: &migrate::select::Selection, w: Format) {
    match w {
        Format::Json => return println!("{}", output::json(r)),
        Format::Yaml => return print!("{}", output::yaml(r)),
        _ => {}
    }
    let label = sel.group_label();
    if r.dry_run {
        let action = match r.policy {
            ConflictPolicy::Fail => "FAIL (conflict)",
            ConflictPolicy::Skip => "skip",
            ConflictPolicy::Overwrite => "overwrite",
        };
        let rows: Vec<Vec<String>> = r
            .plan
            .iter()
            .map(|p| {
                vec![
                    p.group.clone(),
                    p.source_keys.to_string(),
                    p.create.to_string(),
                    p.identical.to_string(),
                    p.different.to_string(),
                    if p.different > 0 { action.to_string() } else { "-".into() },
                    p.target_only.to_string(),
                    p.leased.to_string(),
                ]
            })
            .collect();
        print!("{}", output::table(&[label, "SOURCE KEYS", "WOULD CREATE", "IDENTICAL", "DIFFERENT", "ON DIFFERENT", "TARGET ONLY", "LEASED"], &rows));
        println!("dry run: nothing was written (source revision {})", r.source_revision);
        return;
    }
    println!(
        "migration {}: {} key(s) written, {} overwritten, {} skipped, {} changed meanwhile, in {} transaction(s); source revision {}, target revision {}, {:.1}s{}",
        r.migration,
        r.written,
        r.overwritten,
        r.skipped,
        r.changed_meanwhile,
        r.transactions,
        r.source_revision,
        r.target_revision,
        r.seconds,
        if r.resumed { " (resumed)" } else { "" }
    );
    print!("{}", checks_table(label, &r.verification));
    println!("verification: {}", if r.verified() { "OK" } else { "FAILED" });
}

/// One migration in `--status`.
#[derive(serde::Serialize)]
struct MigrationStatus {
    id: String,
    kind: String,
    cluster: String,
    selection: String,
    target: String,
    generation: String,
    backup: String,
    backup_revision: i64,
    stage: &'static str,
    restored: Option<String>,
    done: Option<String>,
    cutover: Option<String>,
    source_revision: Option<i64>,
    target_revision: Option<i64>,
    lag_revisions: Option<i64>,
    /// From the receive times of an agent's delta chain of the source, when there is one.
    lag_seconds: Option<f64>,
    /// The newest sync's note: its outcome and the totals of every sync so far.
    last_sync: Option<migrate::journal::SyncNote>,
}

fn status(
    rt: &tokio::runtime::Runtime,
    r: Arc<repo::Repository>,
    a: &MigrateArgs,
    src: Option<&ConnConfig>,
    dst: Option<&ConnConfig>,
    whole: bool,
) -> Result<(), Failure> {
    let states = rt.block_on(migrate::journal::list(&r))?;
    // This migration's live revisions, when its arguments and both sides are given.
    let this = match (whole, &a.initial_cluster, &a.data_dir) {
        (true, Some(ic), Some(dd)) => {
            Some(migrate::journal::migration_id("whole", &a.cluster, &migrate::select::Selection::Whole.describe(), &format!("{ic} {}", dd.display())))
        }
        _ => None,
    };
    let live = match (&this, src, dst) {
        (Some(_), Some(s), Some(d)) => Some(rt.block_on(migrate::sync::revisions(s, d))?),
        _ => None,
    };
    let lag_seconds = match live {
        Some((s, t)) => rt.block_on(migrate::sync::lag_seconds(&r, &a.cluster, t, s)).unwrap_or(None),
        None => None,
    };
    let rows: Vec<MigrationStatus> = states
        .into_iter()
        .map(|st| {
            let rec = st.record;
            let stage = match (&st.cutover, &st.done, &st.restored, rec.kind.as_str()) {
                (Some(_), _, _, _) => "cut over",
                (None, Some(_), _, "whole") => "staged, verified",
                (None, Some(_), _, _) => "done, verified",
                (None, None, Some(_), _) => "staged",
                _ => "started",
            };
            let mine = this.as_deref() == Some(rec.id.as_str());
            let live = live.filter(|_| mine);
            MigrationStatus {
                lag_seconds: lag_seconds.filter(|_| mine),
                last_sync: st.last_sync,
                stage,
                source_revision: live.map(|l| l.0),
                target_revision: live.map(|l| l.1),
                lag_revisions: live.map(|l| l.0 - l.1),
                id: rec.id,
                kind: rec.kind,
                cluster: rec.cluster,
                selection: rec.selection,
                target: rec.target,
                generation: rec.generation,
                backup: rec.backup,
                backup_revision: rec.revision,
                restored: st.restored,
                done: st.done,
                cutover: st.cutover,
            }
        })
        .collect();
    match a.write_out {
        Format::Json => println!("{}", output::json(&rows)),
        Format::Yaml => print!("{}", output::yaml(&rows)),
        _ => {
            let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.kind.clone(),
                        m.cluster.clone(),
                        m.selection.clone(),
                        format!("{} @{}", repo::short(&m.backup), m.backup_revision),
                        m.stage.into(),
                        opt(m.source_revision),
                        opt(m.target_revision),
                        opt(m.lag_revisions),
                        m.lag_seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into()),
                        m.last_sync
                            .as_ref()
                            .map(|n| {
                                let checkpoint = match &n.checkpoint {
                                    Some(c) if c.ok => format!("; checkpoint at {}", c.revision),
                                    _ => String::new(),
                                };
                                format!(
                                    "{} {}: {} ({} written, {} deleted, {} conflict(s) in all{checkpoint})",
                                    n.mode, n.time, n.outcome, n.puts_total, n.deletes_total, n.conflicts_total
                                )
                            })
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["ID", "KIND", "CLUSTER", "SELECTION", "BACKUP", "STAGE", "SOURCE REV", "TARGET REV", "LAG", "LAG TIME", "LAST SYNC"], &table)
            );
        }
    }
    Ok(())
}

/// A channel that turns true on Ctrl-C or SIGTERM (what ends a --follow).
fn stop_on_signals(rt: &tokio::runtime::Runtime) -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut t) => {
                    t.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        let _ = stop_tx.send(true);
    });
    stop_rx
}

fn print_partial_sync(r: &migrate::partial_sync::PartialSyncReport, w: Format) {
    match w {
        Format::Json => return println!("{}", output::json(r)),
        Format::Yaml => return print!("{}", output::yaml(r)),
        _ => {}
    }
    let conflicts: u64 = r.conflicts.values().sum();
    println!(
        "{}: source revisions {}..{}: {} change(s) to the selection; {} key(s) written, {} deleted, {} already in step; {} conflict(s) ({} skipped, {} overwritten); {:.1}s",
        r.mode,
        r.from_revision + 1,
        r.to_revision,
        r.changes,
        r.written,
        r.deleted,
        r.unchanged,
        conflicts,
        r.skipped,
        r.overwritten,
        r.seconds
    );
    for (g, n) in &r.conflicts {
        println!("  conflicts in {g}: {n}");
    }
    if !r.verification.is_empty() {
        print!("{}", checks_table("GROUP", &r.verification));
        println!("cutover: {}", if r.verified() { "VERIFIED" } else { "FAILED" });
    }
}

fn print_sync(r: &migrate::sync::SyncReport, w: Format) {
    match w {
        Format::Json => return println!("{}", output::json(r)),
        Format::Yaml => return print!("{}", output::yaml(r)),
        _ => {}
    }
    println!(
        "{}: target at revision {} (was {}), source at {}: {} revision(s) applied ({} put(s), {} delete(s)); leases: {} granted, {} kept alive, {} revoked; {:.1}s",
        r.mode,
        r.target_revision,
        r.from_revision,
        r.source_revision,
        r.revisions_applied,
        r.puts,
        r.deletes,
        r.leases_granted,
        r.leases_kept_alive,
        r.leases_revoked,
        r.seconds
    );
    let Some(v) = &r.verification else { return };
    let rows: Vec<Vec<String>> = v
        .members
        .iter()
        .map(|m| vec![m.endpoint.clone(), m.revision.to_string(), m.hash_kv.to_string(), if m.ok { "ok".into() } else { "DIFFERS".into() }])
        .collect();
    print!("{}", output::table(&["MEMBER", "REVISION", "HASHKV", "MATCH"], &rows));
    match v.since {
        Some(c) => println!(
            "source: hashkv {} at revision {c} (the follow's checkpoint); revisions {}..{} compared event for event on every member",
            v.source_hash_kv,
            c + 1,
            v.revision
        ),
        None => println!("source: hashkv {} at revision {}", v.source_hash_kv, v.revision),
    }
    println!("cutover: {}", if v.ok { "VERIFIED: the new cluster holds the source's revisions; point clients at it" } else { "FAILED" });
}

fn print_whole(r: &migrate::whole::WholeReport, w: Format) {
    match w {
        Format::Json => return println!("{}", output::json(r)),
        Format::Yaml => return print!("{}", output::yaml(r)),
        _ => {}
    }
    if r.dry_run {
        println!("dry run: nothing was written (source revision {})", r.source_revision);
        return;
    }
    println!(
        "migration {}: backup {} (revision {}) {} into {} data dir(s)",
        r.migration,
        r.backup.as_deref().map(repo::short).unwrap_or("-"),
        r.source_revision,
        if r.restored_now { "restored" } else { "was already restored" },
        r.members.len()
    );
    let Some(v) = &r.verification else { return };
    let rows: Vec<Vec<String>> = v
        .members
        .iter()
        .map(|m| vec![m.endpoint.clone(), m.revision.to_string(), m.keys.to_string(), m.hash_kv.to_string(), if m.ok { "ok".into() } else { "DIFFERS".into() }])
        .collect();
    print!("{}", output::table(&["MEMBER", "REVISION", "KEYS", "HASHKV", "MATCH"], &rows));
    println!(
        "backup: revision {}, {} keys, hashkv {}",
        v.revision,
        v.want_keys.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
        v.want_hash_kv.map(|k| k.to_string()).unwrap_or_else(|| "-".into())
    );
    print!("{}", checks_table("PREFIX", &v.groups));
    println!("verification: {}", if v.ok { "OK" } else { "FAILED" });
}
