//! The `quorum` command: flag parsing and printing over the library crates.
// The doc comments on clap's structs are the --help text, written for a terminal: `<stamp>`
// and `[:password]` in them are neither HTML nor links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod agent_cmd;
mod exit;
mod help;
mod k8s;
mod live;
mod migrate_cmd;
mod numa_cmd;
mod output;
mod progress;
mod repo_cmd;
mod restore;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{FromArgMatches, Parser, Subcommand};

use output::Format;

#[derive(Parser)]
#[command(
    name = "quorum",
    version,
    about = "Keep etcd-backed control planes alive: inspect, verify and recover etcd data.",
    after_help = "Examples:\n  quorum status --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --cacert ca.crt --cert client.crt --key client.key\n  quorum snapshot save backup.db --from follower\n  quorum snapshot restore backup.db --name m1 --initial-cluster m1=https://10.0.0.1:2380 --initial-advertise-peer-urls https://10.0.0.1:2380 --data-dir /var/lib/etcd\n  quorum repo init --repo file:///var/backups/etcd --password-file /root/repo.pass\n  quorum backup --repo file:///var/backups/etcd --password-file /root/repo.pass --cluster prod\n  quorum recover plan --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --data-dir /var/lib/etcd\n  quorum k8s get backup.db secrets -n kube-system\n  quorum completions bash > /etc/bash_completion.d/quorum\n\netcd's connection flags and ETCDCTL_* variables are etcdctl's; they apply to the commands that\nconnect to etcd (snapshot save, status, defrag, alarm, member, recover, backup, migrate).\nA repository is opened with --repo and --password-file or --key-file (QUORUM_REPO,\nQUORUM_PASSWORD_FILE); `quorum COMMAND --help` shows each command's flags and examples.\n\nExit codes: 0 ok, 1 operation failed, 2 usage error, 3 verification found damage."
)]
struct Cli {
    /// Silence progress bars.
    #[arg(long, global = true, help_heading = "Output")]
    quiet: bool,
    #[command(flatten)]
    conn: live::Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with etcd snapshot files (no etcd tool needed).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Per-member status of a running cluster: sizes, fragmentation, quota, leader, raft, alarms, hashkv.
    #[command(
        after_help = "Examples:\n  quorum status --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379\n  ETCDCTL_ENDPOINTS=https://10.0.0.1:2379 quorum status --cacert ca.crt --cert client.crt --key client.key -w json\n\nExit 1 when a member does not answer or members' hashkv disagree."
    )]
    Status(live::StatusArgs),
    /// Rolling defrag: one member at a time, followers first, leader last, health-gated.
    #[command(
        after_help = "Examples:\n  quorum defrag --dry-run\n  quorum defrag --min-fragmentation 45 --pause 60s\n  quorum defrag --disarm        # then disarm NOSPACE alarms if space is back\n\nRefuses to start when any member is unhealthy."
    )]
    Defrag(live::DefragArgs),
    /// List or disarm alarms.
    #[command(subcommand)]
    Alarm(live::AlarmCmd),
    /// Add, remove or replace members without costing quorum.
    #[command(subcommand)]
    Member(live::MemberCmd),
    /// Recover from quorum loss: `recover plan`, then `recover --from-data-dir DIR | --from-snapshot FILE`.
    #[command(
        after_help = "Examples:\n  quorum recover plan --endpoints ... --data-dir /var/lib/etcd --snapshot /backup/latest.db\n  # fast: every member rebuilt from the survivor at once, started together\n  quorum recover --from-data-dir /var/lib/etcd --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380 \\\n    --all-members --name m1 --data-dir '/var/lib/etcd-recovered-{name}'\n  # slower: one member, then the others re-added one at a time\n  quorum recover --from-data-dir /var/lib/etcd --name m1 --initial-advertise-peer-urls https://10.0.0.1:2380 --data-dir /var/lib/etcd-recovered\n  quorum member add m2 --peer-urls https://10.0.0.2:2380 --wait"
    )]
    Recover(live::RecoverArgs),
    /// NUMA and hugepage placement on OpenStack compute hosts: nova's fit, and diagnosis of OVS-DPDK reservations.
    #[command(subcommand)]
    Numa(numa_cmd::NumaCmd),
    /// Kubernetes objects inside a snapshot (no API server, no etcd).
    #[command(subcommand)]
    K8s(k8s::K8sCmd),
    /// Create and check a backup repository (file://, s3://, gs://, az://); manage its keys.
    #[command(subcommand)]
    Repo(repo_cmd::RepoCmd),
    /// Back up a running cluster (or a snapshot file) into a repository: deduplicated, compressed, encrypted.
    #[command(after_help = repo_cmd::BACKUP_HELP)]
    Backup(repo_cmd::BackupArgs),
    /// List, show, fetch, or hand out a URL to the backups in a repository.
    #[command(subcommand)]
    Backups(repo_cmd::BackupsCmd),
    /// Restore a backup from a repository into member data dirs (the `snapshot restore` flags apply).
    #[command(
        after_help = "Examples:\n  quorum restore --repo file:///var/backups/etcd latest --cluster prod --name m1 \\\n    --initial-cluster m1=https://10.0.0.1:2380 --initial-advertise-peer-urls https://10.0.0.1:2380 --data-dir /var/lib/etcd\n\nDownloads in parallel, authenticates every chunk, checks the snapshot's sha256, then restores natively."
    )]
    Restore(repo_cmd::RepoRestoreArgs),
    /// Remove backups a retention policy does not keep (per cluster); `--prune` to free the data too.
    #[command(
        after_help = "Examples:\n  quorum forget --repo file:///var/backups/etcd --keep-hourly 24 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run\n  quorum forget --repo s3://backups/etcd --cluster prod --keep-last 48 --prune"
    )]
    Forget(repo_cmd::ForgetArgs),
    /// Delete data no backup references (takes the exclusive lock).
    #[command(after_help = "Examples:\n  quorum prune --repo file:///var/backups/etcd --dry-run\n  quorum prune --repo s3://backups/etcd --retry-lock 10m")]
    Prune(repo_cmd::PruneArgs),
    /// Run beside etcd: leader-elected scheduled backups, retention, drills, auto-defrag, /metrics.
    #[command(after_help = agent_cmd::HELP)]
    Agent(agent_cmd::AgentArgs),
    /// Prove a backup restores: restore it into a real etcd on loopback and compare with the manifest.
    #[command(after_help = repo_cmd::DRILL_HELP)]
    Drill(repo_cmd::DrillArgs),
    /// Move a whole cluster, or namespaces/prefixes, to another cluster through the repository: resumable, verified.
    #[command(after_help = migrate_cmd::HELP)]
    Migrate(Box<migrate_cmd::MigrateArgs>),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Examples:\n  quorum completions bash > /etc/bash_completion.d/quorum\n  quorum completions zsh > \"${fpath[1]}/_quorum\"\n  quorum completions fish > ~/.config/fish/completions/quorum.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or write one per command into a directory.
    #[command(after_help = "Examples:\n  quorum man | man -l -\n  quorum man --dir /usr/local/share/man/man1    # quorum.1, quorum-status.1, ...")]
    Man {
        /// Write quorum.1 and quorum-COMMAND.1 for every command into this existing directory (pages of an older version are replaced).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Print a snapshot's hash, revision, total keys and size, exactly as `etcdutl snapshot status`.
    #[command(
        after_help = "Examples:\n  quorum snapshot status backup.db\n  quorum snapshot status backup.db -w table\n  quorum snapshot status /var/lib/etcd/member/snap/db -w json\n\nThe figures equal etcdctl 3.4's and etcdutl 3.5's for the same file; a file that fails\nbbolt's integrity check is refused (exit 3), as etcd refuses it."
    )]
    Status {
        /// Snapshot file (from `snapshot save`) or a data dir's member/snap/db.
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_enum, default_value = "simple")]
        write_out: Format,
    },
    /// Check a snapshot completely: sha256 trailer, every page, etcd's schema.
    #[command(
        after_help = "Examples:\n  quorum snapshot verify backup.db\n  quorum snapshot verify backup.db -w json\n\nChecks: the sha256 trailer that `snapshot save` appends; bbolt's structural check (every\npage reached once, none both free and used, keys sorted, ids below the high-water mark);\netcd's schema (revision keys, every value decodes). Every fault is named with its page id\nand file offset. Exit 0 when clean, 3 when damage is found."
    )]
    Verify {
        /// Snapshot file (from `snapshot save`) or a data dir's member/snap/db.
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
    /// Stream a snapshot from a running member into FILE (sha256 checked, never overwrites).
    #[command(
        after_help = "Examples:\n  quorum snapshot save backup.db --endpoints 10.0.0.1:2379,10.0.0.2:2379\n  quorum snapshot save backup.db --from follower\n\nWrites a temporary file beside FILE, checks the sha256 the server sends, fsyncs, and names\nit FILE only if FILE still does not exist."
    )]
    Save {
        /// Where to write the snapshot (must not exist).
        file: PathBuf,
        /// Which member: endpoints (first healthy in --endpoints order), follower, leader, or a member name.
        #[arg(long, default_value = "endpoints")]
        from: String,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
        write_out: Format,
    },
    /// Write etcd member data dirs (db, WAL, raft snapshot) from a snapshot, natively.
    #[command(after_help = restore::HELP)]
    Restore(restore::RestoreArgs),
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    output::quiet_on_closed_stdout();
    let env_proxy = take_proxy_env();
    let parsed = help::cli_command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    if let Err(f) = etcd_flags_apply(&matches) {
        return report(f);
    }
    let result = match cli.command {
        Command::Snapshot(SnapshotCmd::Status { file, write_out }) => snapshot::status(&file, write_out),
        Command::Snapshot(SnapshotCmd::Verify { file, write_out }) => snapshot::verify(&file, write_out, cli.quiet),
        Command::Snapshot(SnapshotCmd::Restore(args)) => restore::run(args, cli.quiet),
        Command::Snapshot(SnapshotCmd::Save { file, from, write_out }) => live::snapshot_save(&cli.conn, file, from, write_out, cli.quiet),
        Command::Status(a) => live::status(&cli.conn, a),
        Command::Defrag(a) => live::defrag(&cli.conn, a, cli.quiet),
        Command::Alarm(a) => live::alarm(&cli.conn, a),
        Command::Member(a) => live::member(&cli.conn, a),
        Command::Recover(a) => live::recover(&cli.conn, a),
        Command::Numa(c) => numa_cmd::run(c),
        Command::K8s(c) => k8s::run(c, &env_proxy),
        Command::Repo(c) => repo_cmd::repo_cmd(c, cli.quiet, &env_proxy),
        Command::Backup(a) => repo_cmd::backup(&cli.conn, a, cli.quiet, &env_proxy),
        Command::Backups(c) => repo_cmd::backups(c, cli.quiet, &env_proxy),
        Command::Restore(a) => repo_cmd::restore(a, cli.quiet, &env_proxy),
        Command::Forget(a) => repo_cmd::forget(a, cli.quiet, &env_proxy),
        Command::Prune(a) => repo_cmd::prune(a, cli.quiet, &env_proxy),
        Command::Drill(a) => repo_cmd::drill(a, cli.quiet, &env_proxy),
        Command::Agent(a) => agent_cmd::run(a, &env_proxy),
        Command::Migrate(a) => migrate_cmd::run(&cli.conn, *a, cli.quiet, &env_proxy),
        Command::Completions { shell } => help::completions(shell),
        Command::Man { dir } => help::man(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

fn report(f: exit::Failure) -> ExitCode {
    if let Some(m) = f.message {
        eprintln!("Error: {m}");
    }
    if let Some(h) = f.hint {
        eprintln!("Hint: {h}");
    }
    ExitCode::from(f.code as u8)
}

/// The commands that connect to etcd (a path prefix each). etcd's connection flags are global,
/// as etcdctl's are, so that `quorum --endpoints X status` works; the others neither show them
/// in their help nor accept them.
const ETCD_COMMANDS: [&[&str]; 8] = [&["snapshot", "save"], &["status"], &["defrag"], &["alarm"], &["member"], &["recover"], &["backup"], &["migrate"]];

const ONLY_ETCD: &str = "it applies to the commands that connect to etcd: snapshot save, status, defrag, alarm, member, recover, backup, migrate";

pub(crate) fn talks_to_etcd(path: &[&str]) -> bool {
    ETCD_COMMANDS.iter().any(|p| path.starts_with(p))
}

/// An etcd connection flag typed on the command line of a command that does not connect to etcd
/// is refused, naming the flag the user probably meant (`repo init --password x` is not the
/// repository's passphrase). Values from `ETCDCTL_*` variables are not refused: they are set
/// once for a whole shell.
fn etcd_flags_apply(m: &clap::ArgMatches) -> Result<(), exit::Failure> {
    // The subcommand path and the matches at each level (a global flag is recorded where typed).
    let (mut path, mut levels) = (Vec::new(), vec![m]);
    while let Some((name, next)) = levels[levels.len() - 1].subcommand() {
        path.push(name);
        levels.push(next);
    }
    // `backup` of files (--snapshot, --openshift-backup) does not connect either.
    let offline_backup = path == ["backup"] && ["snapshot", "openshift_backup"].iter().any(|id| levels[1].value_source(id).is_some());
    if talks_to_etcd(&path) && !offline_backup {
        return Ok(());
    }
    let given = |id: &str| levels.iter().any(|l| l.value_source(id) == Some(clap::parser::ValueSource::CommandLine));
    let meant = [
        ("password", "a repository passphrase is read from a file: --password-file FILE (or QUORUM_PASSWORD)"),
        ("key", "a repository key file is --key-file FILE"),
        ("endpoints", "an object store's endpoint is --endpoint URL"),
        ("user", ONLY_ETCD),
        ("cacert", ONLY_ETCD),
        ("cert", ONLY_ETCD),
        ("dial_timeout", ONLY_ETCD),
        ("command_timeout", ONLY_ETCD),
    ];
    for (id, hint) in meant {
        if given(id) {
            let flag = format!("--{}", id.replace('_', "-"));
            return Err(exit::Failure::usage(format!(
                "{flag} is etcd's connection flag, and `quorum {}{}` does not connect to etcd",
                path.join(" "),
                if offline_backup { " --snapshot|--openshift-backup" } else { "" }
            ))
            .with_hint(hint));
        }
    }
    Ok(())
}

/// The object store's HTTP client would read the proxy variables itself, with its own NO_PROXY
/// rules; Quorum reads them once here (the defaults of --proxy/--no-proxy and of the agent's
/// `repo.proxy`, see `repo::proxy`) and removes them, so its rules are the only ones in force.
/// The result is passed to the commands as a value.
fn take_proxy_env() -> repo::proxy::ProxyConfig {
    let cfg = repo::proxy::ProxyConfig::from_env();
    for v in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"] {
        // SAFETY: called first thing in main, before any thread is started.
        unsafe { std::env::remove_var(v) };
    }
    cfg
}

/// glibc gives every thread that allocates its own malloc arena; with tokio's blocking pool
/// that multiplies peak memory for no gain here. Two arenas keep `backups get`/`restore --repo`
/// bounded (measured: 294 MiB → 193 MiB on a 1.26 GB snapshot).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_ARENA_MAX: libc::c_int = -8;
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(M_ARENA_MAX, 2);
        }
    }
}
