//! `quorum snapshot restore`: flags (etcdutl's names and defaults) and printing.

use std::path::PathBuf;

use clap::Args;
use etcd_data::cluster::ClusterSpec;
use etcd_data::restore::{self, Layout, RestoreOptions, Target};

use crate::exit::Failure;
use crate::output::{self, Format};

pub const HELP: &str = "\
Examples:
  # one member, as etcdutl does (run once per member, or use --all-members)
  quorum snapshot restore backup.db --name m1 \\
    --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380 \\
    --initial-cluster-token etcd-cluster-2 --initial-advertise-peer-urls https://10.0.0.1:2380 \\
    --data-dir /var/lib/etcd
  # every member at once (the db is written once and copied): {name} in the paths
  quorum snapshot restore backup.db --all-members --initial-cluster m1=...,m2=...,m3=... \\
    --data-dir '/srv/restore/{name}.etcd'
  # for Kubernetes: move revisions past anything a watch cache has seen
  quorum snapshot restore backup.db --bump-revision 1000000000 --mark-compacted --data-dir /var/lib/etcd

Layout: etcd 3.4 and 3.5 data dirs differ (3.5 writes the new members into the db and the
ConfState into the WAL; 3.4 does neither). --target-version 3.4|3.5 chooses; without it the
snapshot's recorded cluster version decides (a 3.4 cluster's snapshot gets the 3.4 layout,
anything newer the 3.5 one). A snapshot from etcd 3.6 (it records a storage version) is
refused for 3.4, which would panic on it.

Safety: an existing non-empty --data-dir or an existing --wal-dir is refused. Each member is
built in a hidden sibling directory, fsynced, and renamed into place, so a failure or crash
leaves nothing at --data-dir. The sha256 trailer is checked unless --skip-hash-check (needed
for a raw member/snap/db copied from a data dir).";

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot file (from `snapshot save`), or a raw member/snap/db with --skip-hash-check.
    file: PathBuf,
    #[command(flatten)]
    flags: RestoreFlags,
}

/// The restore flags shared by `snapshot restore` and `restore --repo`.
#[derive(Args)]
pub struct RestoreFlags {
    /// Human-readable name of the member to restore.
    #[arg(long, default_value = "default")]
    name: String,
    /// Initial cluster configuration for restore bootstrap.
    #[arg(long, default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// This member's peer URLs (must equal its URLs in --initial-cluster).
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Output data directory (default: <name>.etcd). With --all-members, a template with {name}.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// WAL directory (default: <data-dir>/member/wal). With --all-members, a template with {name}.
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Do not check the sha256 trailer (required for a raw db copied from a data dir).
    #[arg(long)]
    pub(crate) skip_hash_check: bool,
    /// Add this much to the latest revision (requires --mark-compacted).
    #[arg(long)]
    bump_revision: Option<u64>,
    /// Mark the bumped revision as compacted (required with --bump-revision, disallowed otherwise).
    #[arg(long)]
    mark_compacted: bool,
    /// Data layout to write: 3.4 or 3.5 (default: from the snapshot; see below).
    #[arg(long, value_parser = parse_layout)]
    target_version: Option<Layout>,
    /// Restore every member of --initial-cluster; --data-dir and --wal-dir are templates with {name}.
    /// On XFS or btrfs the members' dbs share blocks copy-on-write (written once).
    #[arg(long)]
    all_members: bool,
    /// Output format of the report.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    pub write_out: Format,
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    Layout::parse(s).ok_or_else(|| format!("unsupported target version {s:?}: want 3.4 or 3.5"))
}

pub fn run(args: RestoreArgs, quiet: bool) -> Result<(), Failure> {
    let opts = options(&args.flags, args.file.clone())?;
    let report = crate::snapshot::with_progress(&args.file, quiet, "restoring", |progress| restore::restore(&opts, progress))?;
    print_report(&report, args.flags.write_out);
    Ok(())
}

/// Restore options from the flags, for the snapshot at `file`.
pub fn options(a: &RestoreFlags, file: PathBuf) -> Result<RestoreOptions, Failure> {
    let usage = |m: String| Failure::usage(m);
    let cluster = ClusterSpec::new(&a.initial_cluster, &a.initial_cluster_token).map_err(|e| usage(e.to_string()))?;
    let targets: Vec<Target> = if a.all_members {
        let dd = a.data_dir.clone().ok_or_else(|| usage("--all-members needs --data-dir with {name} in it".into()))?;
        if !dd.to_string_lossy().contains("{name}") && cluster.members.len() > 1 {
            return Err(usage("with --all-members, --data-dir must contain {name} (one directory per member)".into()));
        }
        cluster
            .members
            .iter()
            .map(|m| Target {
                name: m.name.clone(),
                data_dir: restore::expand(&dd, &m.name),
                wal_dir: a.wal_dir.as_deref().map(|w| restore::expand(w, &m.name)),
            })
            .collect()
    } else {
        cluster.member(&a.name, &a.initial_advertise_peer_urls).map_err(|e| usage(e.to_string()))?;
        let data_dir = a.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name)));
        vec![Target { name: a.name.clone(), data_dir, wal_dir: a.wal_dir.clone() }]
    };
    Ok(RestoreOptions {
        snapshot: file,
        cluster,
        targets,
        skip_hash_check: a.skip_hash_check,
        proven_by: None,
        bump_revision: a.bump_revision,
        mark_compacted: a.mark_compacted,
        target_version: a.target_version,
        lease_grace: None,
        source: None,
    })
}

pub fn print_report(report: &restore::RestoreReport, w: Format) {
    output::warnings(&report.warnings);
    output::print(w, &report, || {
        println!(
            "restored revision {} ({} layout: {}) for cluster {}{}",
            report.restored_revision,
            report.layout.label(),
            report.layout_reason,
            report.cluster_id,
            match (&report.proven_by, report.hash_checked) {
                (_, true) => "; sha256 verified".to_string(),
                (Some(why), false) => format!("; {why}"),
                (None, false) => "; sha256 not checked".to_string(),
            }
        );
        let rows: Vec<Vec<String>> =
            report.members.iter().map(|m| vec![m.name.clone(), m.id.clone(), m.data_dir.display().to_string(), m.wal_dir.display().to_string()]).collect();
        print!("{}", output::table(&["NAME", "ID", "DATA DIR", "WAL DIR"], &rows));
        let shared: Vec<&str> = report.members.iter().filter(|m| m.db_shared_with.is_some()).map(|m| m.name.as_str()).collect();
        if let Some(with) = report.members.iter().find_map(|m| m.db_shared_with.as_deref()) {
            println!(
                "the db of {} shares {with}'s blocks copy-on-write (a reflink): written once, each copy takes space as etcd changes it",
                shared.join(", ")
            );
        }
    })
}
