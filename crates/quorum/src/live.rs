//! Commands against a running cluster: flags (etcdctl's names and env vars) and printing; the
//! work is in `etcd-cluster`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use etcd_cluster::maintenance::{DefragOptions, DefragStep};
use etcd_cluster::{ConnConfig, Secret};

use crate::exit::Failure;
use crate::output::{self, Format};

/// etcdctl's connection flags and `ETCDCTL_*` variables.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "etcd connection and TLS")]
pub struct Conn {
    /// gRPC endpoints, comma separated.
    #[arg(long, global = true, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Verify servers with this CA bundle (turns TLS on).
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    cacert: Option<PathBuf>,
    /// Client certificate.
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    key: Option<PathBuf>,
    /// username[:password]
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    user: Option<String>,
    /// Password (when --user has none).
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Dial timeout, e.g. 2s, 500ms.
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    dial_timeout: Duration,
    /// Timeout of each request, e.g. 5s.
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    command_timeout: Duration,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (want e.g. 5s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Conn {
    pub fn config(&self) -> ConnConfig {
        let user = self.user.as_ref().map(|u| match u.split_once(':') {
            Some((n, p)) => (n.to_string(), Secret(p.to_string())),
            None => (u.clone(), Secret(self.password.clone().unwrap_or_default())),
        });
        ConnConfig {
            endpoints: self.endpoints.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            user,
            dial_timeout: self.dial_timeout,
            command_timeout: self.command_timeout,
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn mib(b: i64) -> String {
    etcd_data::humanize::bytes(b.max(0) as u64)
}

// ---- snapshot save ----

pub fn snapshot_save(conn: &Conn, file: PathBuf, from: String, w: Format, quiet: bool) -> Result<(), Failure> {
    let cfg = conn.config();
    let bar = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(indicatif::ProgressStyle::with_template("{spinner} saving snapshot: {decimal_bytes} ({decimal_bytes_per_sec})").expect("template"));
        b
    });
    let saved = rt().block_on(etcd_cluster::save::save(&cfg, &file, &etcd_cluster::save::Source::parse(&from), &|n| {
        if let Some(b) = &bar {
            b.set_position(n)
        }
    }))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    output::print(w, &saved, || {
        println!("Snapshot saved at {} ({}, sha256 {}) from {} ({})", saved.path.display(), mib(saved.bytes as i64), saved.sha256, saved.member, saved.endpoint)
    });
    Ok(())
}

// ---- status ----

#[derive(Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    write_out: Format,
    /// Quota to compute "quota used" against when the server does not report it (etcd < 3.6).
    #[arg(long, default_value_t = etcd_cluster::DEFAULT_QUOTA)]
    quota_backend_bytes: i64,
}

pub fn status(conn: &Conn, a: StatusArgs) -> Result<(), Failure> {
    let cfg = conn.config();
    let rt = rt();
    let view = rt.block_on(etcd_cluster::observe(&cfg, a.quota_backend_bytes))?;
    let hashed = rt.block_on(etcd_cluster::view::hashkv_agreement(&cfg, &view));
    let hash_error = hashed.as_ref().err().map(|e| e.to_string());
    let hash = hashed.ok();
    let agree = hash.as_ref().map(|(_, hs)| hs.windows(2).all(|w| w[0].1 == w[1].1));
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(flatten)]
        view: &'a etcd_cluster::ClusterView,
        hashkv_revision: Option<i64>,
        hashkv: Option<Vec<(String, u32)>>,
        hashkv_agree: Option<bool>,
    }
    let out = Out { view: &view, hashkv_revision: hash.as_ref().map(|h| h.0), hashkv: hash.as_ref().map(|h| h.1.clone()), hashkv_agree: agree };
    output::print(a.write_out, &out, || {
        let rows: Vec<Vec<String>> = view
            .statuses
            .iter()
            .map(|s| {
                vec![
                    s.endpoint.clone(),
                    s.id.clone(),
                    s.name.clone(),
                    s.version.clone(),
                    mib(s.db_size),
                    mib(s.db_size_in_use),
                    format!("{:.1}%", s.fragmentation_percent),
                    format!("{:.1}%{}", s.quota_used_percent, if s.quota_reported { "" } else { "*" }),
                    s.is_leader.to_string(),
                    s.is_learner.to_string(),
                    s.raft_term.to_string(),
                    s.raft_index.to_string(),
                    s.raft_applied_index.to_string(),
                    s.errors.join("; "),
                ]
            })
            .chain(view.unreachable.iter().map(|(e, why)| {
                // The member list (from a member that answered) names the one that did not.
                let m = view.members.iter().find(|m| m.client_urls.iter().any(|u| u.trim_end_matches('/') == e.trim_end_matches('/')));
                let mut r = vec![e.clone(), m.map(|m| m.id.clone()).unwrap_or_else(|| "?".into()), m.map(|m| m.name.clone()).unwrap_or_else(|| "?".into())];
                r.extend(std::iter::repeat_n("-".to_string(), 10));
                r.push(format!("unreachable: {why}"));
                r
            }))
            .collect();
        print!(
            "{}",
            output::table(
                &[
                    "ENDPOINT",
                    "ID",
                    "NAME",
                    "VERSION",
                    "DB SIZE",
                    "IN USE",
                    "FRAG",
                    "QUOTA USED",
                    "LEADER",
                    "LEARNER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "APPLIED",
                    "ERRORS"
                ],
                &rows
            )
        );
        if view.statuses.iter().any(|s| !s.quota_reported) {
            println!("* quota used against --quota-backend-bytes {} (the server does not report its quota)", a.quota_backend_bytes);
        }
        let alarms = if view.alarms.is_empty() {
            "none".to_string()
        } else {
            view.alarms.iter().map(|a| format!("{} on {}", a.alarm, a.member_id)).collect::<Vec<_>>().join(", ")
        };
        println!("alarms: {alarms}");
        match (&hash, agree) {
            (Some((rev, _)), Some(true)) => println!("hashkv: all {} members agree at revision {rev}", view.statuses.len()),
            (Some((rev, hs)), _) => {
                println!("hashkv: MEMBERS DISAGREE at revision {rev}: {}", hs.iter().map(|(e, h)| format!("{e}={h}")).collect::<Vec<_>>().join(", "))
            }
            (None, _) => println!("hashkv: not compared ({})", hash_error.as_deref().unwrap_or("a member did not answer")),
        }
    });
    if !view.unreachable.is_empty() || agree == Some(false) {
        return Err(Failure::quiet(crate::exit::FAILED));
    }
    Ok(())
}

// ---- defrag ----

#[derive(Args)]
pub struct DefragArgs {
    /// Only members at least this fragmented (percent of db size not in use).
    #[arg(long, default_value_t = 0.0)]
    min_fragmentation: f64,
    /// Wait after each member is healthy again before the next (60s is the documented minimum).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pause: Duration,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Afterwards, disarm NOSPACE alarms if every member is back under its quota.
    #[arg(long)]
    disarm: bool,
    /// The members' backend quota (etcd's --quota-backend-bytes), used for the fragmentation and space checks when etcd does not report it.
    #[arg(long, default_value_t = etcd_cluster::DEFAULT_QUOTA)]
    quota_backend_bytes: i64,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    write_out: Format,
}

pub fn defrag(conn: &Conn, a: DefragArgs, quiet: bool) -> Result<(), Failure> {
    let cfg = conn.config();
    let opts = DefragOptions {
        min_fragmentation: a.min_fragmentation,
        pause: a.pause,
        dry_run: a.dry_run,
        disarm: a.disarm,
        quota_fallback: a.quota_backend_bytes,
        recover_timeout: Duration::from_secs(60).max(cfg.command_timeout * 4),
    };
    let table = !matches!(a.write_out, Format::Json | Format::Yaml);
    let waits = crate::progress::WaitDisplay::new(quiet || a.dry_run);
    let print_step = |s: &DefragStep| {
        if table && !a.dry_run {
            waits.println(&format!(
                "{} {} ({}{}): {} {}",
                if s.action == "defrag" { "defragmented" } else { "skipped" },
                s.name,
                s.endpoint,
                if s.leader { ", leader" } else { "" },
                match s.db_size_after {
                    Some(after) => format!("{} -> {}", mib(s.db_size), mib(after)),
                    None => s.action.clone(),
                },
                s.seconds.map(|t| format!("in {t:.1}s")).unwrap_or_default()
            ));
        }
    };
    let r = rt().block_on(etcd_cluster::maintenance::defrag_watched(&cfg, &opts, &print_step, &|what, left| waits.wait(what, left)));
    waits.finish();
    let r = r?;
    output::print(a.write_out, &r, || {
        if a.dry_run {
            println!("plan (dry run; nothing changed), one member at a time, leader last:");
            for (i, s) in r.steps.iter().enumerate() {
                println!(
                    "  {}. {} {} ({}{}) db {} in use {} fragmentation {:.1}%",
                    i + 1,
                    s.action,
                    s.name,
                    s.endpoint,
                    if s.leader { ", leader" } else { "" },
                    mib(s.db_size),
                    mib(s.db_size_in_use),
                    s.fragmentation_percent
                );
            }
        }
        for al in &r.alarms_disarmed {
            println!("disarmed {} on {}", al.alarm, al.member_id);
        }
        for al in &r.alarms_left {
            println!("alarm still armed: {} on {}{}", al.alarm, al.member_id, if a.disarm { "" } else { " (use --disarm)" });
        }
    });
    Ok(())
}

// ---- alarms ----

#[derive(Subcommand)]
pub enum AlarmCmd {
    /// List active alarms.
    #[command(
        after_help = "Examples:\n  quorum alarm list --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379\n  quorum alarm list -w json\n\nExit 0 whether or not alarms are active; NOSPACE stays until disarmed."
    )]
    List {
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
    /// Disarm alarms (all, or one member's).
    #[command(
        after_help = "Examples:\n  quorum alarm disarm\n  quorum alarm disarm --member 8e9e05c52164694d\n\nDisarming NOSPACE before space is freed (compact, then `quorum defrag`) only lets the\nalarm fire again; `quorum defrag --disarm` does both in order."
    )]
    Disarm {
        /// Member ID in hex.
        #[arg(long)]
        member: Option<String>,
    },
}

pub fn alarm(conn: &Conn, cmd: AlarmCmd) -> Result<(), Failure> {
    let cfg = conn.config();
    match cmd {
        AlarmCmd::List { write_out } => {
            let view = rt().block_on(etcd_cluster::observe(&cfg, 0))?;
            output::print(write_out, &view.alarms, || {
                for a in &view.alarms {
                    println!("memberID:{} alarm:{}", a.member_id, a.alarm);
                }
            })
        }
        AlarmCmd::Disarm { member } => {
            let m = member.map(|m| u64::from_str_radix(&m, 16).map_err(|_| Failure::usage(format!("--member {m:?} is not a hex member ID")))).transpose()?;
            let done = rt().block_on(etcd_cluster::maintenance::alarm_disarm(&cfg, m))?;
            for a in &done {
                println!("disarmed memberID:{} alarm:{}", a.member_id, a.alarm);
            }
            if done.is_empty() {
                println!("no alarm to disarm");
            }
        }
    }
    Ok(())
}

// ---- members ----

#[derive(Subcommand)]
pub enum MemberCmd {
    /// Add a member and print how to start it.
    #[command(
        after_help = "Examples:\n  quorum member add m4 --peer-urls https://10.0.0.4:2380\n  quorum member add m4 --peer-urls https://10.0.0.4:2380 --learner --wait\n\nPrints the etcd flags to start the new member with (--initial-cluster-state existing)."
    )]
    Add {
        /// The new member's name (etcd's --name).
        name: String,
        /// The new member's peer URLs, comma separated (etcd's --initial-advertise-peer-urls).
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (non-voting until promoted).
        #[arg(long)]
        learner: bool,
        /// Wait until the new member has started and caught up.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        wait_timeout: Duration,
    },
    /// Remove a member (by name or hex ID), refusing if it would cost quorum.
    #[command(after_help = "Examples:\n  quorum member remove m3\n  quorum member remove 8e9e05c52164694d --endpoints 10.0.0.1:2379")]
    Remove {
        /// The member to remove: its name or hex ID.
        member: String,
    },
    /// Replace a dead member with a new one.
    #[command(
        after_help = "Examples:\n  quorum member replace m3 --name m3b --peer-urls https://10.0.0.5:2380 --wait\n\nRemoves the dead member, adds the successor and prints how to start it; refuses when the\nold member still answers or the removal would cost quorum."
    )]
    Replace {
        /// The dead member (name or hex ID).
        old: String,
        /// The successor's name.
        #[arg(long)]
        name: String,
        /// The new member's peer URLs, comma separated (etcd's --initial-advertise-peer-urls).
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Wait until the new member has started and caught up.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        wait_timeout: Duration,
    },
}

fn print_added(a: &etcd_cluster::members::Added) {
    println!("Member {} added as {}.", a.name, a.id);
    println!("Start it with an empty data dir and these settings:\n");
    for (k, v) in &a.env {
        println!("{k}=\"{v}\"");
    }
    println!("\nor flags: {}", a.flags.join(" "));
}

/// `--wait`: wait until the added member has started and caught up, saying where it stands
/// every [`etcd_cluster::members::REPORT_EVERY`].
fn wait_joined(rt: &tokio::runtime::Runtime, cfg: &etcd_cluster::ConnConfig, a: &etcd_cluster::members::Added, timeout: Duration) -> Result<(), Failure> {
    eprintln!("waiting for {} to start and catch up...", a.name);
    let report = |after: Duration, state: &etcd_cluster::members::Joining| eprintln!("still waiting for {} after {}s: {state}", a.name, after.as_secs());
    rt.block_on(etcd_cluster::members::wait_caught_up(cfg, &a.id, timeout, &report))?;
    println!("member {} is up and caught up", a.name);
    Ok(())
}

pub fn member(conn: &Conn, cmd: MemberCmd) -> Result<(), Failure> {
    let cfg = conn.config();
    let rt = rt();
    match cmd {
        MemberCmd::Add { name, peer_urls, learner, wait, wait_timeout } => {
            let a = rt.block_on(etcd_cluster::members::add(&cfg, &name, &peer_urls, learner))?;
            print_added(&a);
            if wait {
                wait_joined(&rt, &cfg, &a, wait_timeout)?;
            }
        }
        MemberCmd::Remove { member } => {
            let id = rt.block_on(etcd_cluster::members::remove(&cfg, &member))?;
            println!("Member {id} removed.");
        }
        MemberCmd::Replace { old, name, peer_urls, wait, wait_timeout } => {
            let (removed, a) = rt.block_on(etcd_cluster::members::replace(&cfg, &old, &name, &peer_urls))?;
            println!("Member {removed} removed.");
            print_added(&a);
            if wait {
                wait_joined(&rt, &cfg, &a, wait_timeout)?;
            }
        }
    }
    Ok(())
}

// ---- recover ----

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RecoverArgs {
    #[command(subcommand)]
    plan: Option<RecoverSub>,
    /// A survivor's data dir (its etcd must be stopped).
    #[arg(long)]
    from_data_dir: Option<PathBuf>,
    /// A snapshot file.
    #[arg(long)]
    from_snapshot: Option<PathBuf>,
    /// Name of the member built here (the one-member cluster's, or with --initial-cluster this host's).
    #[arg(long, default_value = "default")]
    name: String,
    /// The member's peer URL (etcd's --initial-advertise-peer-urls); with --initial-cluster it comes from there.
    #[arg(long, conflicts_with = "initial_cluster")]
    initial_advertise_peer_urls: Option<String>,
    /// Client URL for the printed start command.
    #[arg(long)]
    advertise_client_urls: Option<String>,
    /// New data dir (must not exist or be empty). With --all-members, a template with {name}.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Every member of the new cluster (NAME=PEER_URL,...): all start at once from the same data,
    /// with no `member add` (the fast path; `recover plan` prints it filled in).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// With --initial-cluster: build every member's data dir here (--data-dir with {name}), to start
    /// here or copy to each member's host.
    #[arg(long, requires = "initial_cluster")]
    all_members: bool,
    /// Token of the new cluster (etcd's --initial-cluster-token); a new one keeps old members from joining.
    #[arg(long, default_value = "etcd-cluster-recovered")]
    initial_cluster_token: String,
    /// Revision bump for Kubernetes watch caches (with an implied --mark-compacted).
    #[arg(long)]
    bump_revision: Option<u64>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    write_out: Format,
}

#[derive(Subcommand)]
pub enum RecoverSub {
    /// Look at what answers and what is on disk; say which path applies and what it loses.
    #[command(
        after_help = "Examples:\n  quorum recover plan --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --data-dir /var/lib/etcd\n  quorum recover plan --data-dir /var/lib/etcd --snapshot /backup/latest.db -w json\n  quorum recover plan --openshift --hosts master-0,master-1,master-2 --repo s3://backups/etcd --cluster ocp --backup latest\n  quorum recover plan --hosted-cluster clusters/hc1 --repo s3://backups/etcd\n\nWith --openshift or --hosted-cluster it prints OpenShift's documented procedure filled in for\nthis cluster (-w json for automation) and connects to nothing.\n\nChanges nothing. Exit 0 when a path applies, 1 when none does (the steps to get one are printed)."
    )]
    Plan {
        /// A survivor's data dir to consider (repeatable).
        #[arg(long = "data-dir")]
        data_dirs: Vec<PathBuf>,
        /// A snapshot file to consider (repeatable).
        #[arg(long = "snapshot")]
        snapshots: Vec<PathBuf>,
        /// Print OpenShift's restore procedure (control-plane hosts lost) as numbered commands for this cluster.
        #[arg(long, requires_all = ["hosts", "backup"], conflicts_with_all = ["data_dirs", "snapshots", "hosted_cluster"])]
        openshift: bool,
        /// With --openshift: the control-plane hosts, as ssh reaches them (comma-separated).
        #[arg(long, value_delimiter = ',', requires = "openshift")]
        hosts: Vec<String>,
        /// With --openshift: the host that kept its data and runs the restore (default: the first of --hosts).
        #[arg(long, requires = "openshift")]
        recovery_host: Option<String>,
        /// With --openshift: a cluster-backup.sh directory on the recovery host, or with --repo a backup ID (or latest).
        #[arg(long, value_name = "ID|DIR")]
        backup: Option<String>,
        /// Print the hosted control plane (HyperShift) etcd backup and restore procedure for HostedCluster NS/NAME.
        #[arg(long, value_name = "NS/NAME", requires = "repo", conflicts_with_all = ["data_dirs", "snapshots"])]
        hosted_cluster: Option<String>,
        /// The repository the runbook's backups live in (--openshift with a backup ID, --hosted-cluster).
        #[arg(long, value_name = "URL")]
        repo: Option<String>,
        /// The repository's name for the cluster (default: the HostedCluster's name; with --openshift required with --repo).
        #[arg(long)]
        cluster: Option<String>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
}

pub fn recover(conn: &Conn, a: RecoverArgs) -> Result<(), Failure> {
    let cfg = conn.config();
    if let Some(RecoverSub::Plan { openshift, hosts, recovery_host, backup, hosted_cluster, repo, cluster, write_out, .. }) = &a.plan {
        if *openshift || hosted_cluster.is_some() {
            let chosen = match (*openshift, recovery_host) {
                (true, None) => Some(choose_recovery_host(&cfg, hosts)),
                _ => None,
            };
            let book = runbook(
                *openshift,
                hosts,
                recovery_host.as_deref(),
                chosen,
                backup.as_deref(),
                hosted_cluster.as_deref(),
                repo.as_deref(),
                cluster.as_deref(),
            )?;
            output::print(*write_out, &book, || print_runbook(&book));
            return Ok(());
        }
    }
    if let Some(RecoverSub::Plan { data_dirs, snapshots, write_out, .. }) = a.plan {
        let p = rt().block_on(etcd_cluster::recover::plan(&cfg, &data_dirs, &snapshots));
        output::print(write_out, &p, || {
            println!("{} of {} members answer: {}", p.members_answering, p.members_known, if p.quorum_lost { "QUORUM LOST" } else { "quorum intact" });
            for c in &p.candidates {
                println!(
                    "  {} {}: {}{}",
                    c.kind,
                    c.path.display(),
                    if c.usable { "usable" } else { "NOT usable" },
                    c.revision.map(|r| format!(", revision {r}")).unwrap_or_else(|| format!(" ({})", c.note))
                );
            }
            if let Some(c) = &p.chosen {
                println!("recover from: {} {}", c.kind, c.path.display());
            }
            println!("cost: {}", p.loss);
            for (i, s) in p.steps.iter().enumerate() {
                println!("  {}. {s}", i + 1);
            }
            if !p.alternative.is_empty() {
                println!("or, slower, one member first and the others re-added one at a time:");
                for (i, s) in p.alternative.iter().enumerate() {
                    println!("  {}. {s}", i + 1);
                }
            }
        });
        if p.quorum_lost && p.chosen.is_none() {
            return Err(Failure::failed("quorum is lost and no usable source was given: nothing to recover from yet (the steps above say where to look)"));
        }
        return Ok(());
    }
    let data_dir =
        a.data_dir.clone().ok_or_else(|| Failure::usage("recover needs --data-dir (the new member's data dir; with --all-members a template with {name})"))?;
    let p = etcd_cluster::recover::Prepare {
        from_data_dir: a.from_data_dir,
        from_snapshot: a.from_snapshot,
        name: a.name,
        peer_url: a.initial_advertise_peer_urls.unwrap_or_else(|| "http://localhost:2380".into()),
        client_url: a.advertise_client_urls,
        data_dir,
        initial_cluster: a.initial_cluster,
        all_members: a.all_members,
        token: a.initial_cluster_token,
        bump_revision: a.bump_revision,
    };
    let r = etcd_cluster::recover::prepare(&p)?;
    output::warnings(&r.restore.warnings);
    output::print(a.write_out, &r, || {
        if p.initial_cluster.is_none() {
            println!("one-member cluster prepared at revision {} in {}", r.restore.restored_revision, p.data_dir.display());
            println!("next:\n  1. start it:\n     {}", r.start_commands.join("\n     "));
            println!("  2. for each other member, with its old data dir wiped, add it and start it with the printed flags:");
            if r.others.is_empty() {
                println!("     quorum member add NAME --peer-urls URL --wait");
            }
            for m in &r.others {
                println!("     quorum member add {} --peer-urls {} --wait", m.name, m.peer_urls.join(","));
            }
            return;
        }
        let dirs: Vec<String> = r.restore.members.iter().map(|m| format!("{} ({})", m.data_dir.display(), m.name)).collect();
        println!("{}-member cluster prepared at revision {}: {}", r.restore.members.len() + r.elsewhere.len(), r.restore.restored_revision, dirs.join(", "));
        println!("next:");
        let mut n = 1;
        if !r.elsewhere.is_empty() {
            println!(
                "  {n}. on the hosts of {}: wipe the old data dir, then copy there the source this command read ({}) and run this command with --name set to that member (the same --initial-cluster and --initial-cluster-token); or build every member here with --all-members and copy each data dir to its host",
                r.elsewhere.join(", "),
                p.from_data_dir.as_ref().map(|d| format!("{}/member/snap/db, as DIR/member/snap/db", d.display())).or_else(|| p.from_snapshot.as_ref().map(|s| s.display().to_string())).unwrap_or_default()
            );
            n += 1;
        }
        println!("  {n}. start every member at once (they elect a leader; no member add):");
        for c in &r.start_commands {
            println!("     {c}");
        }
    });
    Ok(())
}

/// `recover plan --openshift | --hosted-cluster`: the runbook for the flags given.
#[allow(clippy::too_many_arguments)]
fn runbook(
    openshift: bool,
    hosts: &[String],
    recovery: Option<&str>,
    chosen: Option<(String, String)>,
    backup: Option<&str>,
    hosted: Option<&str>,
    repo: Option<&str>,
    cluster: Option<&str>,
) -> Result<repo::runbook::Runbook, Failure> {
    use repo::runbook::*;
    if let Some(nsname) = hosted {
        let (namespace, name) = nsname
            .split_once('/')
            .filter(|(n, m)| !n.is_empty() && !m.is_empty())
            .ok_or_else(|| Failure::usage(format!("--hosted-cluster {nsname}: give NAMESPACE/NAME (e.g. clusters/hc1)")))?;
        let repo = repo.expect("clap requires --repo");
        return Ok(hosted_cluster(&HostedCluster {
            namespace: namespace.into(),
            name: name.into(),
            repo: repo.into(),
            cluster: cluster.unwrap_or(name).into(),
        }));
    }
    debug_assert!(openshift);
    let hosts: Vec<String> = hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    if hosts.len() < 2 {
        return Err(Failure::usage("--hosts lists every control-plane host (the recovery host and the lost ones), comma-separated"));
    }
    let (recovery, why_recovery) = match (recovery, chosen) {
        (Some(r), _) => (r.to_string(), format!("{r}, as given with --recovery-host")),
        (None, Some((h, why))) => (h, why),
        (None, None) => (hosts[0].clone(), format!("{}, the first of --hosts", hosts[0])),
    };
    if !hosts.contains(&recovery) {
        return Err(Failure::usage(format!("--recovery-host {recovery} is not among --hosts {}", hosts.join(","))));
    }
    let backup = backup.expect("clap requires --backup");
    let backup = match repo {
        Some(url) => BackupSource::Repo {
            url: url.into(),
            cluster: cluster.ok_or_else(|| Failure::usage("--repo needs --cluster: the repository's name for this cluster"))?.into(),
            id: backup.into(),
        },
        None if backup.starts_with('/') => BackupSource::Dir(backup.into()),
        None => {
            return Err(Failure::usage(format!(
            "--backup {backup}: give the cluster-backup.sh directory on the recovery host as an absolute path, or a backup ID with --repo URL --cluster NAME"
        )))
        }
    };
    Ok(openshift_quorum_loss(&OpenshiftLoss { hosts, recovery, why_recovery, backup }))
}

/// The recovery host by what its data holds: among the control-plane hosts whose etcd member
/// answers on --endpoints (a member without quorum still answers Status), the one that has
/// applied the most raft entries; a member is matched to a host by its name or its endpoint's
/// host name. When none answers, the first of `hosts`, saying so.
fn choose_recovery_host(cfg: &etcd_cluster::ConnConfig, hosts: &[String]) -> (String, String) {
    let first = hosts.first().cloned().unwrap_or_default();
    let view = rt().block_on(etcd_cluster::observe(cfg, etcd_cluster::DEFAULT_QUOTA));
    let statuses = match &view {
        Ok(v) => &v.statuses,
        Err(_) => {
            return (
                first.clone(),
                format!(
                    "{first}, the first of --hosts: no etcd member answered on --endpoints {}; check that {first}'s /var/lib/etcd/member holds data, or choose with --recovery-host",
                    cfg.endpoints.join(",")
                ),
            )
        }
    };
    let host_of = |s: &etcd_cluster::view::EndpointStatus| {
        let url_host = s.endpoint.split("://").last().unwrap_or(&s.endpoint).split(':').next().unwrap_or("").to_string();
        hosts.iter().find(|h| **h == s.name || **h == url_host || s.name.starts_with(&format!("{h}."))).cloned()
    };
    let best = statuses.iter().filter_map(|s| host_of(s).map(|h| (h, s))).max_by(|a, b| {
        a.1.raft_applied_index.cmp(&b.1.raft_applied_index).then_with(|| hosts.iter().position(|h| *h == b.0).cmp(&hosts.iter().position(|h| *h == a.0)))
    });
    match best {
        Some((h, s)) => (
            h.clone(),
            format!(
                "{h}: its etcd member {} answered with raft applied index {} (revision {}), the most advanced of the {} member(s) that answered",
                s.name,
                s.raft_applied_index,
                s.revision,
                statuses.len()
            ),
        ),
        None => (
            first.clone(),
            format!(
                "{first}, the first of --hosts: the members that answered ({}) match none of --hosts",
                statuses.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
}

fn print_runbook(b: &repo::runbook::Runbook) {
    println!(
        "{}
(follows: {})
",
        b.title, b.follows
    );
    for l in &b.before {
        println!("- {l}");
    }
    for s in &b.steps {
        println!("\n{}. on {}: {}", s.number, s.on, s.what);
        for c in &s.commands {
            // A fragment of YAML is shown as it is; a command gets a prompt.
            let prompt = if c.contains('\n') { " " } else { "$" };
            for line in c.lines() {
                println!("   {prompt} {line}");
            }
        }
    }
}
