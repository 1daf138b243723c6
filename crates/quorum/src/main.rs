//! The `quorum` command: flag parsing and printing over the library crates.

mod exit;
mod k8s;
mod live;
mod numa_cmd;
mod output;
mod restore;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Format;

#[derive(Parser)]
#[command(
    name = "quorum",
    version,
    about = "Keep etcd-backed control planes alive: inspect, verify and recover etcd data.",
    after_help = "Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 verification found damage."
)]
struct Cli {
    /// Silence progress bars.
    #[arg(long, global = true)]
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
    #[command(after_help = "Examples:\n  quorum status --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379\n  ETCDCTL_ENDPOINTS=https://10.0.0.1:2379 quorum status --cacert ca.crt --cert client.crt --key client.key -w json\n\nExit 1 when a member does not answer or members' hashkv disagree.")]
    Status(live::StatusArgs),
    /// Rolling defrag: one member at a time, followers first, leader last, health-gated.
    #[command(after_help = "Examples:\n  quorum defrag --dry-run\n  quorum defrag --min-fragmentation 45 --pause 60s\n  quorum defrag --disarm        # then disarm NOSPACE alarms if space is back\n\nRefuses to start when any member is unhealthy.")]
    Defrag(live::DefragArgs),
    /// List or disarm alarms.
    #[command(subcommand)]
    Alarm(live::AlarmCmd),
    /// Add, remove or replace members without costing quorum.
    #[command(subcommand)]
    Member(live::MemberCmd),
    /// Recover from quorum loss: `recover plan`, then `recover --from-data-dir DIR | --from-snapshot FILE`.
    #[command(after_help = "Examples:\n  quorum recover plan --endpoints ... --data-dir /var/lib/etcd --snapshot /backup/latest.db\n  quorum recover --from-data-dir /var/lib/etcd --name m1 --initial-advertise-peer-urls https://10.0.0.1:2380 --data-dir /var/lib/etcd-recovered\n  quorum member add m2 --peer-urls https://10.0.0.2:2380 --wait")]
    Recover(live::RecoverArgs),
    /// NUMA and hugepage placement on OpenStack compute hosts: nova's fit, and diagnosis of OVS-DPDK reservations.
    #[command(subcommand)]
    Numa(numa_cmd::NumaCmd),
    /// Kubernetes objects inside a snapshot (no API server, no etcd).
    #[command(subcommand)]
    K8s(k8s::K8sCmd),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Print a snapshot's hash, revision, total keys and size, exactly as `etcdutl snapshot status`.
    #[command(after_help = "Examples:\n  quorum snapshot status backup.db\n  quorum snapshot status backup.db -w table\n  quorum snapshot status /var/lib/etcd/member/snap/db -w json\n\nThe figures equal etcdctl 3.4's and etcdutl 3.5's for the same file; a file that fails\nbbolt's integrity check is refused (exit 3), as etcd refuses it.")]
    Status {
        /// Snapshot file (from `snapshot save`) or a data dir's member/snap/db.
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: Format,
    },
    /// Check a snapshot completely: sha256 trailer, every page, etcd's schema.
    #[command(after_help = "Examples:\n  quorum snapshot verify backup.db\n  quorum snapshot verify backup.db -w json\n\nChecks: the sha256 trailer that `snapshot save` appends; bbolt's structural check (every\npage reached once, none both free and used, keys sorted, ids below the high-water mark);\netcd's schema (revision keys, every value decodes). Every fault is named with its page id\nand file offset. Exit 0 when clean, 3 when damage is found.")]
    Verify {
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
        write_out: Format,
    },
    /// Stream a snapshot from a running member into FILE (sha256 checked, never overwrites).
    #[command(after_help = "Examples:\n  quorum snapshot save backup.db --endpoints 10.0.0.1:2379,10.0.0.2:2379\n  quorum snapshot save backup.db --from follower\n\nWrites FILE.partial, checks the sha256 the server sends, fsyncs, renames to FILE.")]
    Save {
        file: PathBuf,
        /// Which member: endpoints (first healthy in --endpoints order), follower, leader, or a member name.
        #[arg(long, default_value = "endpoints")]
        from: String,
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: Format,
    },
    /// Write etcd member data dirs (db, WAL, raft snapshot) from a snapshot, natively.
    #[command(after_help = restore::HELP)]
    Restore(restore::RestoreArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Snapshot(SnapshotCmd::Status { file, write_out }) => snapshot::status(&file, write_out),
        Command::Snapshot(SnapshotCmd::Verify { file, write_out }) => snapshot::verify(&file, write_out, cli.quiet),
        Command::Snapshot(SnapshotCmd::Restore(args)) => restore::run(args, cli.quiet),
        Command::Snapshot(SnapshotCmd::Save { file, from, write_out }) => live::snapshot_save(&cli.conn, file, from, write_out, cli.quiet),
        Command::Status(a) => live::status(&cli.conn, a),
        Command::Defrag(a) => live::defrag(&cli.conn, a),
        Command::Alarm(a) => live::alarm(&cli.conn, a),
        Command::Member(a) => live::member(&cli.conn, a),
        Command::Recover(a) => live::recover(&cli.conn, a),
        Command::Numa(c) => numa_cmd::run(c),
        Command::K8s(c) => k8s::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Some(m) = f.message {
                eprintln!("Error: {m}");
            }
            if let Some(h) = f.hint {
                eprintln!("Hint: {h}");
            }
            ExitCode::from(f.code as u8)
        }
    }
}
