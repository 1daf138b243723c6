//! Backup repository commands: flags and printing; the work is in the `repo` crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use repo::crypto::Secret;
use repo::{Error, Location, Repository, StoreOptions, Unlock};

use repo::proxy::ProxyConfig;

use crate::exit::{Failure, FAILED};
use crate::live::parse_duration;
use crate::output::{self, Format};

/// Where the repository is and how to open it.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Repository")]
pub struct RepoFlags {
    /// Repository URL: file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(long, env = "QUORUM_REPO")]
    pub(crate) repo: Option<String>,
    /// File holding the repository passphrase (or set QUORUM_PASSWORD).
    #[arg(long, env = "QUORUM_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Key file (≥ 32 random bytes) instead of a passphrase.
    #[arg(long, env = "QUORUM_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// File holding the bundle passphrase (or set QUORUM_BUNDLE_PASSWORD): the separate key for --include files.
    #[arg(long, env = "QUORUM_BUNDLE_PASSWORD_FILE")]
    bundle_password_file: Option<PathBuf>,
    /// Key file for the bundle key.
    #[arg(long, env = "QUORUM_BUNDLE_KEY_FILE")]
    bundle_key_file: Option<PathBuf>,
    /// Object store endpoint for S3-compatible stores (MinIO, Ceph RGW, MCG) or Azure (azurite).
    #[arg(long, env = "QUORUM_REPO_ENDPOINT")]
    endpoint: Option<String>,
    /// Object store region (S3).
    #[arg(long)]
    region: Option<String>,
    /// HTTP(S) proxy for the object store (default: HTTPS_PROXY / HTTP_PROXY).
    #[arg(long)]
    proxy: Option<String>,
    /// Hosts that bypass the proxy, comma separated: `.y.com` = subdomains only, `y.com` = it and its subdomains, `*` = all, CIDRs (default: NO_PROXY).
    #[arg(long)]
    no_proxy: Option<String>,
    /// Wait this long for a conflicting lock to go away (e.g. 5m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) retry_lock: Duration,
    /// Object store requests in flight, 1 to 16 (uploads; reads of up to 4 MiB each).
    #[arg(long, default_value_t = 8, value_parser = parse_parallel)]
    pub(crate) parallel: usize,
    /// Give up on an object store request that keeps failing (errors, resets, 5xx, no answer)
    /// for this long; until then it is retried with back-off [default: 3m].
    #[arg(long, env = "QUORUM_STORE_TIMEOUT", value_parser = parse_duration)]
    store_timeout: Option<Duration>,
}

impl RepoFlags {
    fn url(&self) -> Result<&str, Failure> {
        self.repo.as_deref().ok_or_else(|| Failure::usage("give the repository with --repo URL (or QUORUM_REPO)"))
    }

    /// `env_proxy`: the proxy environment variables, which main() read and cleared; the flags
    /// win over them.
    fn store_options(&self, env_proxy: &ProxyConfig) -> StoreOptions {
        let proxy = ProxyConfig {
            proxy: self.proxy.clone().filter(|p| !p.is_empty()).or_else(|| env_proxy.proxy.clone()),
            no_proxy: match &self.no_proxy {
                Some(n) => ProxyConfig::new(None, Some(n)).no_proxy,
                None => env_proxy.no_proxy.clone(),
            },
        };
        StoreOptions { endpoint: self.endpoint.clone(), region: self.region.clone(), proxy, timeout: None, retry_deadline: self.store_timeout }
    }

    fn location(&self, create: bool, env_proxy: &ProxyConfig) -> Result<Location, Failure> {
        if self.url()?.starts_with("file://") {
            if let Some(e) = &self.endpoint {
                return Err(Failure::usage(format!(
                    "--endpoint {e} (or QUORUM_REPO_ENDPOINT) is an object store's endpoint, and a file:// repository has none"
                ))
                .with_hint("etcd's endpoints are --endpoints HOST:PORT,..."));
            }
            if self.region.is_some() {
                return Err(Failure::usage("--region is an S3 region, and a file:// repository has none"));
            }
            if self.store_timeout.is_some() {
                return Err(Failure::usage("--store-timeout (or QUORUM_STORE_TIMEOUT) bounds object store retries, and a file:// repository has none"));
            }
        }
        Location::open(self.url()?, &self.store_options(env_proxy), create).map_err(Failure::from)
    }

    fn unlock(&self) -> Result<Unlock, Failure> {
        Ok(Unlock {
            data: secret(self.password_file.as_ref(), "QUORUM_PASSWORD", self.key_file.as_ref())?,
            bundle: secret(self.bundle_password_file.as_ref(), "QUORUM_BUNDLE_PASSWORD", self.bundle_key_file.as_ref())?,
        })
    }

    pub(crate) fn open(&self, rt: &tokio::runtime::Runtime, env_proxy: &ProxyConfig) -> Result<Arc<Repository>, Failure> {
        self.open_as(rt, env_proxy, repo::OpenMode::Normal)
    }

    fn open_as(&self, rt: &tokio::runtime::Runtime, env_proxy: &ProxyConfig, mode: repo::OpenMode) -> Result<Arc<Repository>, Failure> {
        let loc = self.location(false, env_proxy)?;
        let unlock = self.unlock()?;
        let mut r = rt.block_on(Repository::open_as(loc, &unlock, mode))?;
        r.lock_retry = self.retry_lock;
        Ok(Arc::new(r))
    }
}

fn secret(pass_file: Option<&PathBuf>, env: &str, key_file: Option<&PathBuf>) -> Result<Option<Secret>, Failure> {
    if let Some(k) = key_file {
        let b = std::fs::read(k).map_err(|e| Failure::usage(format!("{}: {e}", k.display())))?;
        return Secret::key_file(b).map(Some).map_err(Failure::from);
    }
    if let Some(p) = pass_file {
        let b = std::fs::read(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?;
        return Secret::passphrase(b).map(Some).map_err(Failure::from);
    }
    if let Ok(v) = std::env::var(env) {
        return Secret::passphrase(v.into_bytes()).map(Some).map_err(Failure::from);
    }
    Ok(None)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn bar(quiet: bool, what: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let b = indicatif::ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{decimal_bytes}}/{{decimal_total_bytes}} [{{bar:30}}] {{decimal_bytes_per_sec}} {{eta}}"
        ))
        .expect("template")
        .progress_chars("=> "),
    );
    Some(b)
}

/// Close the progress display: its last phase done when the operation succeeded.
fn finish_phases<T, E>(display: Option<crate::progress::PhaseDisplay>, r: Result<T, E>) -> Result<T, E> {
    if let Some(d) = display {
        if r.is_ok() {
            d.finish()
        } else {
            d.abandon()
        }
    }
    r
}

fn progress_fn(b: &Option<indicatif::ProgressBar>) -> repo::backup::Progress {
    let b = b.clone();
    Arc::new(move |done, total| {
        if let Some(b) = &b {
            b.set_length(total);
            b.set_position(done);
        }
    })
}

fn finish(b: Option<indicatif::ProgressBar>) {
    if let Some(b) = b {
        b.finish_and_clear();
    }
}

// ---- repo ----

#[derive(Subcommand)]
pub enum RepoCmd {
    /// Create a repository: config and keys (a random master key wrapped by a passphrase or key file).
    #[command(
        after_help = "Examples:\n  echo 'long passphrase' > /root/repo.pass; chmod 600 /root/repo.pass\n  quorum repo init --repo file:///var/backups/etcd --password-file /root/repo.pass\n  quorum repo init --repo s3://backups/etcd/prod --endpoint https://minio.example:9000 --key-file /root/repo.key \\\n    --bundle-password-file /root/bundle.pass   # separate key for --include files\n\nThe snapshot data and the --include bundle (certificates, encryption config) are encrypted\nunder different master keys; keep their secrets apart."
    )]
    Init {
        #[command(flatten)]
        repo: RepoFlags,
        /// Average chunk size in KiB (content-defined chunking; min = avg/2, max = avg*4).
        #[arg(long, default_value_t = 16, hide = true)]
        chunk_avg_kib: u32,
        /// Cut snapshots into chunks of this many bbolt pages [default: 1]. 1 keeps increments
        /// smallest (measured at 1% of keys changed: each adds 2.4% of a full backup); 2 makes
        /// full backups about a fifth faster and restores from object storage about a sixth
        /// faster, for increments about 1.5 times larger. 0: content-defined chunks. Fixed for
        /// the repository's life.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=64))]
        chunk_pages: Option<u32>,
        /// zstd level of the stored data [default: -1]. Against 1, -1 (zstd's first fast level)
        /// decodes 6 times and encodes 2.5 times as fast per core, for a quarter more bytes
        /// stored and fetched (measured on two cores: backups 14% faster, restores from a
        /// file:// repository a quarter faster). Choose 1 or more when the link to the store is
        /// the slow part. 0 stores the data uncompressed. Set for the repository's life; every
        /// level reads back the same.
        #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-7..=22))]
        compression: Option<i32>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
        write_out: Format,
    },
    /// Check the repository: every backup's blobs present; with --read-data every byte decrypts and hashes.
    #[command(
        after_help = "Examples:\n  quorum repo check --repo s3://backups/etcd\n  quorum repo check --repo file:///var/backups/etcd --cluster prod --read-data -w json\n\nDelta chains are checked too: a missing revision range is damage (point-in-time restores into it\nare impossible); --read-data also opens every delta segment.\nExit 0 when clean, 3 when damage is found (each problem names the object and the backups that need it)."
    )]
    Check {
        #[command(flatten)]
        repo: RepoFlags,
        /// Check this cluster only (default: every cluster, one after another).
        #[arg(long)]
        cluster: Option<String>,
        /// Download and authenticate every pack.
        #[arg(long)]
        read_data: bool,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
        #[arg(long, hide = true)]
        quiet: bool,
    },
    /// Manage the wrapping keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Bring an older repository to version 3 (version 1: a prefix per cluster; version 2: chunk list patches).
    #[command(
        after_help = "Examples:\n  quorum repo upgrade --repo s3://backups/etcd --password-file /root/repo.pass\n\nTakes an exclusive repository-wide lock. A version-1 repository (one namespace for every\ncluster): copies every cluster's packs, index, backups, delta segments and drill records under\nclusters/<name>/, rewrites config as version 3, then deletes the version-1 objects; the\nrepository's cost per cluster no longer grows with the fleet. A version-2 repository: rewrites\nconfig as version 3, so later backups store their chunk lists and key maps as patches of the\nnewest backup's (measured at 1% of keys changed: increments of 2.4% of a full backup, not 4.9%). It can be interrupted at any point\nand run again. Older binaries refuse the repository afterwards: upgrade every host first, and\nstop older agents before (a running daemon does not read config again)."
    )]
    Upgrade {
        #[command(flatten)]
        repo: RepoFlags,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
        write_out: Format,
    },
    /// List the repository's locks (stale ones marked).
    #[command(
        after_help = "Examples:\n  quorum repo locks --repo file:///var/backups/etcd\n  quorum repo locks --repo s3://backups/etcd -w json\n\nA lock its holder stopped refreshing expires after 30 minutes (stale); the next command\nthat takes a lock removes it. --retry-lock waits for live ones."
    )]
    Locks {
        #[command(flatten)]
        repo: RepoFlags,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Add another passphrase or key file that opens the data key (or, with --bundle, the bundle key).
    #[command(
        after_help = "Examples:\n  quorum repo key add --repo file:///var/backups/etcd --password-file old.pass --new-password-file new.pass\n  quorum repo key add --repo ... --password-file p --bundle --new-key-file bundle.key"
    )]
    Add {
        #[command(flatten)]
        repo: RepoFlags,
        /// Add a wrapping of the bundle key (creates the bundle key when the repository has none).
        #[arg(long)]
        bundle: bool,
        /// File holding the passphrase to add.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// Key file to add (32 random bytes, base64; made if missing).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
    /// List the wrapping keys (no secret is shown).
    #[command(after_help = "Examples:\n  quorum repo key list --repo file:///var/backups/etcd --password-file /root/repo.pass")]
    List {
        #[command(flatten)]
        repo: RepoFlags,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
}

pub fn repo_cmd(c: RepoCmd, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let rt = rt();
    match c {
        RepoCmd::Init { repo: flags, chunk_avg_kib, chunk_pages, compression, write_out } => {
            let unlock = flags.unlock()?;
            let data = unlock
                .data
                .ok_or_else(|| Failure::usage("give the new repository a passphrase (--password-file or QUORUM_PASSWORD) or a key file (--key-file)"))?;
            let loc = flags.location(true, env_proxy)?;
            let avg = chunk_avg_kib.clamp(1, 4096) * 1024;
            let opts = repo::repository::InitOptions {
                chunker: repo::format::ChunkerParams {
                    min: avg / 2,
                    avg,
                    max: avg * 4,
                    pages: chunk_pages.unwrap_or(repo::format::ChunkerParams::default().pages),
                },
                compression: compression.unwrap_or(repo::repository::InitOptions::default().compression),
                ..Default::default()
            };
            let r = rt.block_on(repo::repository::init(loc, &data, unlock.bundle.as_ref(), &opts))?;
            output::print(write_out, &r.config, || {
                println!("created repository {} at {}", repo::short(&r.config.id), r.location.url);
                if !r.has_bundle_key() {
                    println!("no bundle key yet: `quorum repo key add --bundle` before using `backup --include`");
                }
            });
            Ok(())
        }
        RepoCmd::Check { repo: flags, cluster, read_data, write_out, quiet: q } => {
            let r = flags.open(&rt, env_proxy)?;
            let b = bar(quiet || q || !read_data, "reading packs");
            let report = rt.block_on(repo::check::check(r, cluster.as_deref(), read_data, progress_fn(&b)))?;
            finish(b);
            output::print(write_out, &report, || {
                println!(
                    "{} cluster(s), {} backups, {} index objects, {} packs, {} blobs, {} delta segments{}",
                    report.clusters,
                    report.backups,
                    report.index_files,
                    report.packs,
                    report.blobs,
                    report.segments,
                    if read_data {
                        format!("; read {} packs ({} bytes) and {} segments", report.packs_read, report.bytes_read, report.segments_read)
                    } else {
                        String::new()
                    }
                );
                for n in &report.notes {
                    println!("note: {n}");
                }
                for e in &report.errors {
                    println!("ERROR: {e}");
                }
                println!("{}", if report.is_clean() { "no errors" } else { "DAMAGED" });
            });
            if report.is_clean() {
                Ok(())
            } else {
                Err(Failure::quiet(crate::exit::DAMAGE))
            }
        }
        RepoCmd::Key(KeyCmd::Add { repo: flags, bundle, new_password_file, new_key_file }) => {
            let r = flags.open(&rt, env_proxy)?;
            let s = secret(new_password_file.as_ref(), "QUORUM_NEW_PASSWORD", new_key_file.as_ref())?
                .ok_or_else(|| Failure::usage("give the new secret with --new-password-file or --new-key-file"))?;
            let name = rt.block_on(r.add_key(if bundle { "bundle" } else { "data" }, &s, repo::crypto::Argon2Params::default()))?;
            println!("added {name}");
            Ok(())
        }
        RepoCmd::Key(KeyCmd::List { repo: flags, write_out }) => {
            let r = flags.open(&rt, env_proxy)?;
            let keys = rt.block_on(r.list_keys())?;
            #[derive(serde::Serialize)]
            struct K {
                name: String,
                purpose: String,
                kdf: String,
                created: String,
                host: String,
            }
            let ks: Vec<K> = keys.into_iter().map(|(n, w)| K { name: n, purpose: w.purpose, kdf: w.kdf, created: w.created, host: w.host }).collect();
            output::print(write_out, &ks, || {
                let rows: Vec<Vec<String>> =
                    ks.iter().map(|k| vec![k.name.clone(), k.purpose.clone(), k.kdf.clone(), k.created.clone(), k.host.clone()]).collect();
                print!("{}", output::table(&["NAME", "PURPOSE", "KDF", "CREATED", "HOST"], &rows));
            });
            Ok(())
        }
        RepoCmd::Upgrade { repo: flags, write_out } => {
            let r = flags.open_as(&rt, env_proxy, repo::OpenMode::Upgrade)?;
            let rep = rt.block_on(repo::upgrade::upgrade(r))?;
            output::print(write_out, &rep, || {
                if rep.from_version == repo::format::VERSION && rep.legacy_deleted == 0 {
                    println!("the repository is already version {}; nothing to do", repo::format::VERSION);
                } else {
                    println!(
                            "upgraded from version {}: {} cluster(s), {} backup(s), {} pack(s) ({} bytes) copied, {} delta segment(s), {} drill record(s); {} version-1 object(s) deleted",
                            rep.from_version,
                            rep.clusters.len(),
                            rep.backups,
                            rep.packs_copied,
                            rep.bytes_copied,
                            rep.segments_copied,
                            rep.verifications_copied,
                            rep.legacy_deleted
                        );
                }
            });
            Ok(())
        }
        RepoCmd::Locks { repo: flags, write_out } => {
            let r = flags.open(&rt, env_proxy)?;
            let locks = rt.block_on(repo::lock::list(&r))?;
            output::print(write_out, &locks, || {
                let rows: Vec<Vec<String>> = locks
                    .iter()
                    .map(|(n, l, stale)| {
                        vec![
                            n.clone(),
                            l.operation.clone(),
                            if l.exclusive { "exclusive" } else { "shared" }.into(),
                            format!("{}:{}", l.host, l.pid),
                            l.created.clone(),
                            if *stale { "stale" } else { "live" }.into(),
                        ]
                    })
                    .collect();
                print!("{}", output::table(&["NAME", "OPERATION", "MODE", "HOLDER", "CREATED", "STATE"], &rows));
            });
            Ok(())
        }
    }
}

// ---- backup ----

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    repo: RepoFlags,
    /// Cluster name: backups, retention and drills are grouped by it.
    #[arg(long)]
    cluster: String,
    /// Back up this snapshot file instead of saving one from --endpoints.
    #[arg(long, conflicts_with = "openshift_backup")]
    snapshot: Option<PathBuf>,
    /// Import directories written by OpenShift's cluster-backup.sh (snapshot_<stamp>.db and
    /// static_kuberesources_<stamp>.tar.gz), oldest first; the static resources go into the
    /// bundle (needs the bundle key).
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with_all = ["include", "tmp_dir"])]
    openshift_backup: Vec<PathBuf>,
    /// On an OpenShift control-plane host, back up as cluster-backup.sh does: the snapshot of
    /// the local member (--endpoints) and the newest revision of each static pod's resources
    /// under /etc/kubernetes/static-pod-resources, into the bundle (needs the bundle key).
    #[arg(long, conflicts_with_all = ["snapshot", "openshift_backup", "include"])]
    openshift_host: bool,
    /// With --openshift-host: the host's root directory (default /).
    #[arg(long, value_name = "DIR", requires = "openshift_host")]
    root: Option<PathBuf>,
    /// Which member to save from (live backups): endpoints, follower, leader, or a member name.
    #[arg(long, default_value = "endpoints")]
    from: String,
    /// Files or directories to keep with the backup, under the separate bundle key (static pod manifests, certificates, the encryption config).
    #[arg(long)]
    include: Vec<PathBuf>,
    /// Labels to attach (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// Directory for the temporary snapshot of a live backup (default: system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
    write_out: Format,
}

pub const BACKUP_HELP: &str = "\
Examples:
  # from a running cluster (streams a snapshot from a healthy member)
  quorum backup --repo s3://backups/etcd --cluster prod --endpoints https://10.0.0.1:2379 \\
    --cacert ca.crt --cert client.crt --key client.key --password-file /root/repo.pass
  # from a snapshot file, with the files needed to rebuild the control plane
  quorum backup --repo file:///var/backups/etcd --cluster prod --snapshot snap.db \\
    --include /etc/kubernetes/manifests --include /etc/kubernetes/pki --tag pre-upgrade
  # OpenShift's cluster-backup.sh directories, the static resources under the bundle key
  quorum backup --repo s3://backups/etcd --cluster ocp --bundle-password-file b.pass \\
    --openshift-backup /home/core/backup-1 /home/core/backup-2
  # on an OpenShift control-plane host, instead of cluster-backup.sh
  quorum backup --repo s3://backups/etcd --cluster ocp --bundle-password-file b.pass \\
    --openshift-host --endpoints https://localhost:2379 --cacert ca.crt --cert c.crt --key c.key

Only chunks the repository does not have yet are uploaded (content-defined chunking), so an
hourly backup of a slowly changing cluster adds a small fraction of its size. The backup
becomes visible when its manifest, written last, exists; an interrupted backup leaves only
unreferenced packs, which `quorum prune` removes.";

pub fn backup(conn: &crate::live::Conn, a: BackupArgs, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let rt = rt();
    if !a.openshift_backup.is_empty() {
        return import_openshift(&rt, a, quiet, env_proxy);
    }
    let r = a.repo.open(&rt, env_proxy)?;
    let mut opts = repo::backup::BackupOptions {
        cluster: a.cluster.clone(),
        tags: a.tag.clone(),
        includes: a.include.clone(),
        uploads: a.repo.parallel.clamp(1, 16),
        ..Default::default()
    };
    let b = bar(quiet, "backing up");
    let report = if let Some(snap) = &a.snapshot {
        opts.snapshot = snap.clone();
        opts.source = format!("file {}", snap.display());
        rt.block_on(repo::backup::backup(r.clone(), &opts, progress_fn(&b)))?
    } else {
        let live = repo::live::LiveBackup {
            cluster: a.cluster.clone(),
            from: a.from.clone(),
            tmp_dir: a.tmp_dir.clone(),
            tags: a.tag.clone(),
            includes: a.include.clone(),
            uploads: opts.uploads,
            openshift_root: a.openshift_host.then(|| a.root.clone().unwrap_or_else(|| PathBuf::from("/"))),
        };
        rt.block_on(repo::live::live_backup(&conn.config(), r.clone(), &live, progress_fn(&b)))?
    };
    finish(b);
    output::print(a.write_out, &report, || {
        let m = &report.manifest;
        let total = report.reused_chunks + report.new_chunks;
        println!(
            "backup {} of cluster {} saved: revision {}, {}, {} chunks ({} new, {:.1}% reused), added {} in {} pack(s), {:.1}s",
            repo::short(&report.id),
            m.cluster,
            m.snapshot.revision,
            etcd_data::humanize::bytes(report.bytes),
            total,
            report.new_chunks,
            if total > 0 { report.reused_chunks as f64 * 100.0 / total as f64 } else { 0.0 },
            etcd_data::humanize::bytes(m.added_bytes),
            report.packs,
            report.seconds
        );
        if let Some(b) = &m.bundle {
            println!("bundle: {} file(s), {} (bundle key)", b.files, etcd_data::humanize::bytes(b.bytes));
        }
        if let Some(o) = &m.openshift {
            let pods: Vec<String> = o.static_pods.iter().map(|(k, v)| format!("{k}-{v}")).collect();
            println!("static resources: {} (stamp {}; backups get --openshift-layout writes cluster-backup.sh's files)", pods.join(", "), o.stamp);
        }
    });
    Ok(())
}

/// `backup --openshift-backup DIR...`: every pair of every directory, oldest first.
fn import_openshift(rt: &tokio::runtime::Runtime, a: BackupArgs, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    if a.from != "endpoints" {
        return Err(Failure::usage("--from picks the member a live backup saves from; --openshift-backup imports files"));
    }
    let mut pairs = Vec::new();
    for d in &a.openshift_backup {
        pairs.extend(repo::openshift::find_pairs(d)?);
    }
    pairs.sort_by(|x, y| x.stamp.cmp(&y.stamp));
    let r = a.repo.open(rt, env_proxy)?;
    let mut reports = Vec::new();
    for p in &pairs {
        let b = bar(quiet, "importing");
        let imported = rt.block_on(repo::openshift::import(r.clone(), &a.cluster, p, &a.tag, a.repo.parallel.clamp(1, 16), progress_fn(&b)))?;
        finish(b);
        let (id, stored) = match &imported {
            repo::openshift::Imported::Stored(rep) => (rep.id.clone(), true),
            repo::openshift::Imported::AlreadyThere(id) => (id.clone(), false),
        };
        if a.write_out == Format::Simple {
            match &imported {
                repo::openshift::Imported::Stored(rep) => {
                    let m = &rep.manifest;
                    let pods =
                        m.openshift.as_ref().map(|o| o.static_pods.iter().map(|(k, v)| format!("{k}-{v}")).collect::<Vec<_>>().join(", ")).unwrap_or_default();
                    println!(
                        "backup {} of cluster {} imported from {}: revision {}, {}, added {}; static resources: {} files ({})",
                        repo::short(&rep.id),
                        m.cluster,
                        p.snapshot.display(),
                        m.snapshot.revision,
                        etcd_data::humanize::bytes(rep.bytes),
                        etcd_data::humanize::bytes(m.added_bytes),
                        m.bundle.as_ref().map(|b| b.files).unwrap_or(0),
                        pods
                    );
                }
                repo::openshift::Imported::AlreadyThere(id) => {
                    println!("{}: already in the repository as backup {}; not stored again", p.snapshot.display(), repo::short(id))
                }
            }
        }
        reports.push(serde_json::json!({"directory": p.snapshot.parent(), "stamp": p.stamp, "backup": id, "stored": stored}));
    }
    if a.write_out != Format::Simple {
        output::print(a.write_out, &reports, || {});
    }
    Ok(())
}

// ---- backups ----

#[derive(Subcommand)]
pub enum BackupsCmd {
    /// List backups, newest first, with the last successful drill.
    #[command(
        after_help = "Examples:\n  quorum backups list --repo file:///var/backups/etcd\n  quorum backups list --repo s3://backups/etcd --cluster prod -w json"
    )]
    List {
        #[command(flatten)]
        repo: RepoFlags,
        /// The cluster the backup belongs to (needed when the repository holds several).
        #[arg(long)]
        cluster: Option<String>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
    /// Show one backup: when and where it was made, the snapshot's figures, what it stored, its bundle's files.
    #[command(
        after_help = "Examples:\n  quorum backups show --repo file:///var/backups/etcd latest\n  quorum backups show --repo s3://backups/etcd 1a2b3c4d --bundle-password-file /root/bundle.pass\n  quorum backups show --repo ... latest -w json     # the manifest itself\n\nThe bundle's file names are listed when the bundle key is given; without it, its size."
    )]
    Show {
        #[command(flatten)]
        repo: RepoFlags,
        /// Backup ID, unique prefix, or latest.
        id: String,
        /// The cluster the backup belongs to (needed when the repository holds several).
        #[arg(long)]
        cluster: Option<String>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
        write_out: Format,
    },
    /// Write a backup's exact snapshot file (or, with --bundle, its included files into a directory; with --etcd-key, print keys).
    #[command(
        after_help = "Examples:\n  quorum backups get --repo file:///var/backups/etcd latest -o snap.db\n  quorum backups get --repo ... 1a2b3c4d --bundle -o /tmp/bundle --bundle-password-file b.pass\n  quorum backups get --repo s3://backups/etcd latest --etcd-key /registry/configmaps/kube-system/kubeadm-config\n  quorum backups get --repo ... latest --etcd-key /registry/namespaces/ --prefix\n  quorum backups get --repo ... latest --openshift-layout -o /home/core/backup \\\n    --bundle-password-file b.pass\n\nThe file is written as FILE.partial, checked against the manifest's sha256, then renamed.\n--etcd-key prints the key's latest value in the backup as `etcdctl get` prints it, fetching\nonly the chunks that hold it (named --etcd-key: --key is etcd's TLS client key)."
    )]
    Get {
        #[command(flatten)]
        repo: RepoFlags,
        /// Backup ID, unique prefix, or latest.
        id: String,
        /// Where to write the snapshot (must not exist), or the directory for --bundle.
        #[arg(short = 'o', long, required_unless_present = "etcd_key")]
        output: Option<PathBuf>,
        /// The cluster the backup belongs to (needed when the repository holds several).
        #[arg(long)]
        cluster: Option<String>,
        /// Extract the --include bundle instead (needs the bundle key).
        #[arg(long)]
        bundle: bool,
        /// Print this etcd key's value as the backup holds it, as `etcdctl get` prints it
        /// (repeatable); only the chunks holding it are fetched where the backup has a key map.
        #[arg(long = "etcd-key", value_name = "KEY", conflicts_with_all = ["output", "bundle"])]
        etcd_key: Vec<String>,
        /// With --etcd-key: every key under it (as `etcdctl get --prefix`).
        #[arg(long, requires = "etcd_key")]
        prefix: bool,
        /// Write an OpenShift backup as cluster-backup.sh lays it out into the directory -o
        /// (snapshot_<stamp>.db and static_kuberesources_<stamp>.tar.gz), for cluster-restore.sh.
        #[arg(long, conflicts_with_all = ["bundle", "etcd_key"])]
        openshift_layout: bool,
    },
    /// A presigned HTTPS URL to a single-object (unencrypted) copy of a backup's snapshot.
    #[command(
        after_help = "Examples:\n  quorum backups url --repo s3://backups/etcd latest --expires 1h\n\nFor tools that take a URL (a HostedCluster's restoreSnapshotURL). The copy is stored\nunencrypted under exports/ in the bucket: anyone with the URL can read the snapshot until it\nexpires. Remove copies with `quorum backups url --remove ID`."
    )]
    Url {
        #[command(flatten)]
        repo: RepoFlags,
        /// Backup ID, unique prefix, or latest.
        id: String,
        /// How long the URL stays valid, e.g. 1h.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        expires: Duration,
        /// The cluster the backup belongs to (needed when the repository holds several).
        #[arg(long)]
        cluster: Option<String>,
        /// Delete the exported copy instead.
        #[arg(long)]
        remove: bool,
    },
    /// Build a full backup offline from the newest backup and the delta segments since (no load on etcd).
    #[command(
        after_help = "Examples:\n  quorum backups consolidate --repo s3://backups/etcd --cluster prod\n  quorum backups consolidate --repo ... --cluster prod --at-revision 123456 -w json\n\nThe newest backup is reassembled, the segments after it replayed (as a point-in-time restore\ndoes), and the result stored as a full backup whose manifest says it was consolidated. Its\nhashkv and key count are computed from the file; `quorum drill` proves it restores. Point-in-\ntime restores after it replay only the segments that follow it."
    )]
    Consolidate {
        #[command(flatten)]
        repo: RepoFlags,
        /// The cluster (as named when its backups were made).
        #[arg(long)]
        cluster: String,
        /// Stop at this revision (default: the end of the contiguous delta chain).
        #[arg(long, value_name = "R")]
        at_revision: Option<i64>,
        /// Directory for the file being built (default: system temp dir; needs the snapshot's size free).
        #[arg(long)]
        tmp_dir: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
        write_out: Format,
    },
    /// The delta chain of a cluster after a backup: segments, how far it is contiguous, every gap.
    #[command(
        after_help = "Examples:\n  quorum backups deltas --repo file:///var/backups/etcd --cluster prod\n  quorum backups deltas --repo ... --cluster prod --base 1a2b3c4d -w json\n\nExit 3 when a revision between the backup and the last captured one is missing."
    )]
    Deltas {
        #[command(flatten)]
        repo: RepoFlags,
        /// The cluster (as named when its backups were made).
        #[arg(long)]
        cluster: String,
        /// The backup the chain starts after (default: the one with the highest revision).
        #[arg(long)]
        base: Option<String>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
}

fn backups_deltas(
    rt: &tokio::runtime::Runtime,
    env_proxy: &ProxyConfig,
    flags: RepoFlags,
    cluster: String,
    base: Option<String>,
    write_out: Format,
) -> Result<(), Failure> {
    let r = flags.open(rt, env_proxy)?;
    let rep = rt.block_on(repo::pitr::chain_report(&r, &cluster, base.as_deref()))?;
    output::print(write_out, &rep, || {
        let c = &rep.chain;
        println!(
            "cluster {}: backup {} at revision {} ({}); deltas contiguous to revision {}, last captured {}",
            rep.cluster,
            repo::short(&rep.base),
            rep.base_revision,
            rep.base_time,
            c.contiguous_to,
            c.last_captured.max(c.contiguous_to)
        );
        let rows: Vec<Vec<String>> = c.segments.iter().map(|s| vec![s.first.to_string(), s.last.to_string(), s.size.to_string(), s.name.clone()]).collect();
        print!("{}", output::table(&["FIRST", "LAST", "BYTES", "SEGMENT"], &rows));
        for g in &c.gaps {
            println!("GAP: {g} {} missing", g.are());
        }
    });
    if rep.chain.gaps.is_empty() {
        Ok(())
    } else {
        Err(Failure::quiet(crate::exit::DAMAGE))
    }
}

pub fn backups(c: BackupsCmd, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let rt = rt();
    match c {
        BackupsCmd::Deltas { repo: flags, cluster, base, write_out } => backups_deltas(&rt, env_proxy, flags, cluster, base, write_out),
        BackupsCmd::Consolidate { repo: flags, cluster, at_revision, tmp_dir, write_out } => {
            let r = flags.open(&rt, env_proxy)?;
            let b = bar(quiet, "consolidating");
            let o = repo::consolidate::ConsolidateOptions { cluster, at_revision, work_dir: tmp_dir, parallel: flags.parallel, tags: vec![] };
            let rep = rt.block_on(repo::consolidate::consolidate(r, &o, progress_fn(&b)))?;
            finish(b);
            output::print(write_out, &rep, || {
                println!(
                    "consolidated backup {} of cluster {} at revision {}: backup {} (revision {}) + {} segment(s), {} revisions replayed; hashkv {}, {} keys; added {} in {:.1}s",
                    repo::short(&rep.backup.id),
                    rep.backup.manifest.cluster,
                    rep.backup.manifest.snapshot.revision,
                    repo::short(&rep.base),
                    rep.base_revision,
                    rep.segments,
                    rep.revisions_replayed,
                    rep.backup.manifest.snapshot.hash_kv.unwrap_or_default(),
                    rep.backup.manifest.snapshot.live_keys.unwrap_or_default(),
                    etcd_data::humanize::bytes(rep.backup.manifest.added_bytes),
                    rep.seconds
                )
            });
            Ok(())
        }
        BackupsCmd::List { repo: flags, cluster, write_out } => {
            let r = flags.open(&rt, env_proxy)?;
            // One cluster: its objects only, whatever else the repository holds.
            let (all, ver) = rt.block_on(async {
                let clusters = match &cluster {
                    Some(c) => vec![c.clone()],
                    None => r.clusters().await?,
                };
                let mut all = Vec::new();
                let mut ver = Vec::new();
                for c in &clusters {
                    let m = r.manifests(c).await?;
                    if m.is_empty() && cluster.is_some() {
                        r.known_cluster(c).await?;
                    }
                    all.extend(m);
                    ver.extend(repo::drill::verifications(&r, c).await?);
                }
                all.sort_by(|a: &(String, repo::format::Manifest), b| {
                    b.1.time.cmp(&a.1.time).then_with(|| b.1.snapshot.revision.cmp(&a.1.snapshot.revision)).then_with(|| a.0.cmp(&b.0))
                });
                ver.sort_by(|a: &repo::format::Verification, b| b.time.cmp(&a.time));
                Ok::<_, Error>((all, ver))
            })?;
            #[derive(serde::Serialize)]
            struct Row<'a> {
                id: &'a str,
                #[serde(flatten)]
                manifest: &'a repo::format::Manifest,
                last_drill: Option<&'a repo::format::Verification>,
            }
            #[derive(serde::Serialize)]
            struct ClusterVerified<'a> {
                cluster: &'a str,
                last_verified: Option<&'a repo::format::Verification>,
            }
            let rows: Vec<Row> = all.iter().map(|(id, m)| Row { id, manifest: m, last_drill: ver.iter().find(|v| &v.backup == id) }).collect();
            let mut clusters: Vec<&str> = all.iter().map(|(_, m)| m.cluster.as_str()).collect();
            clusters.sort();
            clusters.dedup();
            let per: Vec<ClusterVerified> =
                clusters.iter().map(|c| ClusterVerified { cluster: c, last_verified: ver.iter().find(|v| v.cluster == *c && v.ok) }).collect();
            match write_out {
                Format::Json => println!("{}", output::json(&serde_json::json!({"backups": rows, "clusters": per}))),
                Format::Yaml => print!("{}", output::yaml(&serde_json::json!({"backups": rows, "clusters": per}))),
                _ => {
                    let t: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            let m = r.manifest;
                            vec![
                                repo::short(r.id).to_string(),
                                m.time.clone(),
                                m.cluster.clone(),
                                m.member.clone().unwrap_or_else(|| "-".into()),
                                m.snapshot.revision.to_string(),
                                etcd_data::humanize::bytes(m.snapshot.size),
                                etcd_data::humanize::bytes(m.added_bytes),
                                m.tags.join(","),
                                match r.last_drill {
                                    Some(v) if v.ok => format!("ok {}", v.time),
                                    Some(v) => format!("FAILED {}", v.time),
                                    None => "-".into(),
                                },
                            ]
                        })
                        .collect();
                    print!("{}", output::table(&["ID", "TIME", "CLUSTER", "MEMBER", "REVISION", "SIZE", "ADDED", "TAGS", "DRILL"], &t));
                    for c in &per {
                        match c.last_verified {
                            Some(v) => println!("cluster {}: last verified {} (backup {}, {:.1}s)", c.cluster, v.time, repo::short(&v.backup), v.seconds),
                            None => println!("cluster {}: never verified; run `quorum drill --latest --cluster {}`", c.cluster, c.cluster),
                        }
                    }
                }
            }
            Ok(())
        }
        BackupsCmd::Show { repo: flags, id, cluster, write_out } => {
            let r = flags.open(&rt, env_proxy)?;
            let (id, m) = rt.block_on(r.resolve(&id, cluster.as_deref()))?;
            if write_out != Format::Simple {
                output::print(write_out, &serde_json::json!({"id": id, "manifest": m}), || {});
                return Ok(());
            }
            let files = match &m.bundle {
                Some(_) if r.has_bundle_key() => Some(rt.block_on(repo::restore::bundle_files(&r, &m))?),
                _ => None,
            };
            print!("{}", describe_backup(&id, &m, files.as_deref()));
            Ok(())
        }
        BackupsCmd::Get { repo: flags, id, output, cluster, bundle, etcd_key, prefix, openshift_layout } => {
            let Some(out) = output else { return print_keys(&flags, env_proxy, &id, cluster.as_deref(), quiet, &etcd_key, prefix) };
            let r = flags.open(&rt, env_proxy)?;
            let (id, m) = rt.block_on(r.resolve(&id, cluster.as_deref()))?;
            if openshift_layout {
                let b = bar(quiet, "fetching");
                let (snap, tarball) = rt.block_on(repo::openshift::export(r.clone(), &id, &m, &out, flags.parallel, progress_fn(&b)))?;
                finish(b);
                println!(
                    "wrote {} ({}, sha256 {}) and {} from backup {}",
                    snap.display(),
                    etcd_data::humanize::bytes(m.snapshot.size),
                    m.snapshot.sha256,
                    tarball.display(),
                    repo::short(&id)
                );
                println!("restore on the recovery host with: /usr/local/bin/cluster-restore.sh {}", out.display());
                return Ok(());
            }
            if bundle {
                let files = rt.block_on(repo::restore::extract_bundle(r.clone(), &id, &m, &out))?;
                println!("extracted {} file(s) of backup {} into {}", files, repo::short(&id), out.display());
                return Ok(());
            }
            let b = bar(quiet, "fetching");
            rt.block_on(repo::restore::reassemble(r.clone(), &id, &m, &out, flags.parallel, progress_fn(&b)))?;
            finish(b);
            println!(
                "wrote {} ({}, sha256 {}) from backup {}",
                out.display(),
                etcd_data::humanize::bytes(m.snapshot.size),
                m.snapshot.sha256,
                repo::short(&id)
            );
            Ok(())
        }
        BackupsCmd::Url { repo: flags, id, expires, cluster, remove } => {
            let r = flags.open(&rt, env_proxy)?;
            let (id, m) = rt.block_on(r.resolve(&id, cluster.as_deref()))?;
            if remove {
                rt.block_on(repo::restore::remove_export(&r, &id))?;
                println!("removed the exported copy of backup {}", repo::short(&id));
                return Ok(());
            }
            let url = rt.block_on(repo::restore::export_url(r.clone(), &id, &m, expires, flags.parallel))?;
            eprintln!("Warning: the URL gives read access to the unencrypted snapshot until it expires ({}s).", expires.as_secs());
            println!("{url}");
            Ok(())
        }
    }
}

// ---- restore, forget, prune, drill ----

#[derive(Args)]
pub struct RepoRestoreArgs {
    #[command(flatten)]
    repo: RepoFlags,
    /// Backup ID (or unique prefix, or `latest`). With --at-revision/--at-time: the base to replay from (default: chosen).
    #[arg(required_unless_present_any = ["at_revision", "at_time"])]
    id: Option<String>,
    /// With `latest`: the newest backup of this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Point-in-time restore: the newest backup at or before R plus the captured deltas up to R (needs --cluster).
    #[arg(long, value_name = "R", requires = "cluster", conflicts_with = "at_time")]
    at_revision: Option<i64>,
    /// Point-in-time restore to the last revision the delta capture had received at T (RFC 3339; needs --cluster).
    #[arg(long, value_name = "T", requires = "cluster")]
    at_time: Option<String>,
    #[command(flatten)]
    flags: crate::restore::RestoreFlags,
}

/// `restore --at-revision R | --at-time T`: replay the delta chain onto a backup.
fn restore_pitr(a: RepoRestoreArgs, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let target = match (a.at_revision, &a.at_time) {
        (Some(r), _) if r < 1 => return Err(Failure::usage(format!("--at-revision {r}: revisions start at 1"))),
        (Some(r), _) => repo::pitr::Target::Revision(r),
        (None, Some(t)) => repo::pitr::Target::Time(repo::pitr::parse_time(t)?),
        (None, None) => unreachable!("restore_pitr without a target"),
    };
    let rt = rt();
    let r = a.repo.open(&rt, env_proxy)?;
    let p = repo::pitr::PitrOptions {
        cluster: a.cluster.clone().expect("clap requires --cluster"),
        target,
        base: a.id.clone().filter(|i| i != "latest"),
        parallel: a.repo.parallel,
    };
    let opts = crate::restore::options(&a.flags, PathBuf::new())?;
    let b = bar(quiet, "fetching");
    let report = rt.block_on(repo::pitr::restore_at(r.clone(), &p, opts, progress_fn(&b)))?;
    finish(b);
    eprintln!(
        "restored cluster {} at revision {}: backup {} (revision {}, {}) + {} revisions ({} puts, {} deletes) from {} delta segment(s)",
        report.cluster,
        report.target_revision,
        repo::short(&report.base),
        report.base_revision,
        report.base_time,
        report.replay.revisions,
        report.replay.puts,
        report.replay.deletes,
        report.segments
    );
    match a.flags.write_out {
        Format::Json => println!("{}", output::json(&report)),
        Format::Yaml => print!("{}", output::yaml(&report)),
        w => crate::restore::print_report(&report.restore, w),
    }
    Ok(())
}

pub fn restore(a: RepoRestoreArgs, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    if a.flags.skip_hash_check {
        return Err(Failure::usage(
            "--skip-hash-check is for `snapshot restore` of a file; a restore from the repository needs no trailer (the trailer was checked when the backup was stored, and every chunk is authenticated as it is fetched)",
        ));
    }
    if a.at_revision.is_some() || a.at_time.is_some() {
        return restore_pitr(a, quiet, env_proxy);
    }
    let rt = rt();
    let r = a.repo.open(&rt, env_proxy)?;
    let id_arg = a.id.clone().expect("clap requires the backup id");
    let (id, m) = rt.block_on(r.resolve(&id_arg, a.cluster.as_deref()))?;
    // A raw db backed up with --snapshot has no trailer: the repository's own hashes prove it
    // (repo::restore::restore says so in the report).
    let opts = crate::restore::options(&a.flags, PathBuf::new())?;
    let (phases, display) = crate::progress::phases(quiet);
    let report = rt.block_on(repo::restore::restore(r.clone(), &id, &m, opts, a.repo.parallel, &phases));
    let report = finish_phases(display, report)?;
    eprintln!("restored backup {} (cluster {}, {})", repo::short(&id), m.cluster, m.time);
    crate::restore::print_report(&report, a.flags.write_out);
    Ok(())
}

#[derive(Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    repo: RepoFlags,
    /// Keep the newest N backups.
    #[arg(long, default_value_t = 0)]
    keep_last: usize,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, default_value_t = 0)]
    keep_hourly: usize,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, default_value_t = 0)]
    keep_daily: usize,
    /// Keep the newest backup of each of the last N weeks that have one.
    #[arg(long, default_value_t = 0)]
    keep_weekly: usize,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, default_value_t = 0)]
    keep_monthly: usize,
    /// Keep delta segments for point-in-time restores into this last window only (e.g. 72h); older full backups still restore as they are.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    keep_pitr: Option<Duration>,
    /// Only this cluster's backups.
    #[arg(long)]
    cluster: Option<String>,
    /// Show what would be removed (backups, and the delta segments the next prune deletes).
    #[arg(long)]
    dry_run: bool,
    /// Run `prune` afterwards (on the same cluster).
    #[arg(long)]
    prune: bool,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
    write_out: Format,
}

pub fn forget(a: ForgetArgs, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let rt = rt();
    let r = a.repo.open(&rt, env_proxy)?;
    let policy = repo::retention::Policy { last: a.keep_last, hourly: a.keep_hourly, daily: a.keep_daily, weekly: a.keep_weekly, monthly: a.keep_monthly };
    let rep = rt.block_on(repo::prune::forget(&r, &policy, a.cluster.as_deref(), a.keep_pitr, a.dry_run))?;
    output::print(a.write_out, &rep, || {
        let rows: Vec<Vec<String>> = rep
            .decisions
            .iter()
            .map(|d| {
                vec![
                    repo::short(&d.id).into(),
                    d.time.clone(),
                    d.cluster.clone(),
                    if d.keep {
                        "keep".into()
                    } else if rep.refused.iter().any(|(i, _)| i == &d.id) {
                        "REFUSED".into()
                    } else if a.dry_run {
                        "would remove".into()
                    } else {
                        "removed".into()
                    },
                    d.reasons.join(","),
                ]
            })
            .collect();
        print!("{}", output::table(&["ID", "TIME", "CLUSTER", "ACTION", "KEPT BY"], &rows));
        for d in &rep.deltas {
            if d.remove.is_empty() && d.keep == 0 {
                continue;
            }
            let floor = d.floor.map(|f| format!("revision {f}")).unwrap_or_else(|| "every revision (no backup left)".into());
            println!(
                "cluster {}: delta segments up to {floor} are no longer needed: {} {} by prune, {} kept",
                d.cluster,
                d.remove.len(),
                if a.dry_run { "would be deleted" } else { "to be deleted" },
                d.keep
            );
            for s in &d.remove {
                println!("  {} (revisions {}..{})", s.name, s.first, s.last);
            }
        }
    });
    if !rep.refused.is_empty() {
        eprintln!(
            "Error: the bucket refused to delete {} backup manifest(s) (object lock / retention); they stay until their retention ends: {}",
            rep.refused.len(),
            rep.refused.iter().map(|(i, w)| format!("{} ({w})", repo::short(i))).collect::<Vec<_>>().join("; ")
        );
        return Err(Failure::quiet(crate::exit::FAILED));
    }
    if a.prune && !a.dry_run {
        return prune(
            PruneArgs {
                repo: a.repo,
                cluster: a.cluster,
                max_unused: 10.0,
                dry_run: false,
                keep_unindexed_for: Duration::from_secs(3600),
                write_out: a.write_out,
            },
            quiet,
            env_proxy,
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    repo: RepoFlags,
    /// Only this cluster (default: every cluster, one after another, each under its exclusive lock).
    #[arg(long)]
    cluster: Option<String>,
    /// Repack packs with more than this percentage of unreferenced bytes.
    #[arg(long, default_value_t = 10.0)]
    max_unused: f64,
    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove packs no index names (left by interrupted backups) only when older than this.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    keep_unindexed_for: Duration,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
    write_out: Format,
}

pub fn prune(a: PruneArgs, _quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let rt = rt();
    let r = a.repo.open(&rt, env_proxy)?;
    let rep = rt.block_on(repo::prune::prune(r, a.cluster.as_deref(), a.max_unused / 100.0, a.dry_run, a.keep_unindexed_for))?;
    output::print(a.write_out, &rep, || {
        println!(
                "{}{} cluster(s), {} backups reference the data; packs: {} total, {} deleted, {} repacked, {} left by interrupted backups; {} freed, {} rewritten; delta segments: {} deleted ({})",
                if rep.dry_run { "(dry run) " } else { "" },
                rep.clusters,
                rep.manifests,
                rep.packs_total,
                rep.packs_deleted,
                rep.packs_repacked,
                rep.packs_unindexed,
                etcd_data::humanize::bytes(rep.bytes_deleted),
                etcd_data::humanize::bytes(rep.bytes_written),
                rep.segments_deleted,
                etcd_data::humanize::bytes(rep.segment_bytes_deleted)
            );
    });
    if !rep.refused.is_empty() {
        eprintln!("Error: the bucket refused {} delete(s) (object lock / retention): {}", rep.refused.len(), rep.refused.join("; "));
        return Err(Failure { code: FAILED, message: None, hint: Some("objects under retention can be removed once it ends; run prune again then".into()) });
    }
    Ok(())
}

#[derive(Args)]
pub struct DrillArgs {
    #[command(flatten)]
    repo: RepoFlags,
    /// Backup ID or unique prefix (default: --latest).
    id: Option<String>,
    /// The newest backup (of --cluster, if given).
    #[arg(long)]
    latest: bool,
    /// The cluster the backup belongs to (needed when the repository holds several).
    #[arg(long)]
    cluster: Option<String>,
    /// etcd binary to start (default: `etcd` on PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Where to make the temporary data dir.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::simple_formats(), default_value = "simple")]
    write_out: Format,
}

pub const DRILL_HELP: &str = "\
Examples:
  quorum drill --repo file:///var/backups/etcd --latest --cluster prod
  quorum drill --repo s3://backups/etcd 1a2b3c4d --etcd-bin /usr/local/bin/etcd

Downloads the backup, restores it natively into a temporary directory, starts a real etcd
on it on 127.0.0.1 (free ports), and compares revision, key count and hashkv with what the
manifest recorded at backup time. The result and its duration are stored in the repository
(`backups list` shows the last verified backup per cluster). Exit 0 when the backup restores,
3 when it does not.";

pub fn drill(a: DrillArgs, quiet: bool, env_proxy: &ProxyConfig) -> Result<(), Failure> {
    let rt = rt();
    let r = a.repo.open(&rt, env_proxy)?;
    let id = match (&a.id, a.latest) {
        (Some(i), false) => i.clone(),
        (None, _) => "latest".into(),
        (Some(_), true) => return Err(Failure::usage("give a backup ID or --latest, not both")),
    };
    let (id, m) = rt.block_on(r.resolve(&id, a.cluster.as_deref()))?;
    let (phases, display) = crate::progress::phases(quiet);
    let opts = repo::drill::DrillOptions { etcd_bin: a.etcd_bin.clone(), work_dir: a.tmp_dir.clone(), parallel: a.repo.parallel, phases, ..Default::default() };
    let v = finish_phases(display, rt.block_on(repo::drill::drill(r.clone(), &id, &m, &opts)))?;
    output::print(a.write_out, &v, || {
        for c in &v.checks {
            println!("  ok: {c}");
        }
        if v.ok {
            println!("drill of backup {} (cluster {}) PASSED with etcd {} in {:.1}s", repo::short(&id), v.cluster, v.etcd_version, v.seconds);
        } else {
            println!("drill of backup {} (cluster {}) FAILED: {}", repo::short(&id), v.cluster, v.failure.clone().unwrap_or_default());
        }
    });
    if v.ok {
        Ok(())
    } else {
        Err(Failure::quiet(crate::exit::DAMAGE))
    }
}

/// A backup's snapshot reassembled into a private temporary file (for commands that read a
/// snapshot file: `k8s ls|get|export|diff --repo`). The file goes with the returned directory.
/// With `want`, and a backup that has a key map, the file holds only the latest records of
/// the keys `want` accepts, and only the chunks holding them are fetched (said on stderr).
/// The EncryptionConfiguration an OpenShift backup keeps in its bundle, as far as it could be read.
#[derive(Default)]
pub(crate) enum FoundConfig {
    #[default]
    None,
    Found {
        backup: String,
        member: String,
        bytes: Vec<u8>,
    },
    /// The backup has one, and the bundle key was not given (the refusal, to raise or warn of).
    Locked(Failure),
}

/// Fetch a backup's snapshot (or, with `want`, the records it selects) into a temporary
/// directory; with `config`, also the EncryptionConfiguration kept in an OpenShift backup's bundle.
pub(crate) fn fetch_to_temp(
    flags: &RepoFlags,
    env_proxy: &ProxyConfig,
    id: &str,
    cluster: Option<&str>,
    quiet: bool,
    want: Option<&repo::keymap::KeyFilter<'_>>,
    config: Option<&mut FoundConfig>,
) -> Result<(repo::scratch::Scratch, PathBuf), Failure> {
    let rt = rt();
    let r = flags.open(&rt, env_proxy)?;
    let (id, m) = rt.block_on(r.resolve(id, cluster))?;
    if let Some(slot) = config {
        *slot = match rt.block_on(repo::openshift::stored_encryption_config(&r, &id, &m)) {
            Ok(Some((member, bytes))) => FoundConfig::Found { backup: repo::short(&id).to_string(), member, bytes },
            Ok(None) => FoundConfig::None,
            Err(e @ repo::Error::SecretNeeded { .. }) => FoundConfig::Locked(e.into()),
            Err(e) => return Err(e.into()),
        };
    }
    // Locked while in use (the snapshot holds every Secret): one left by a killed command is
    // swept by the next.
    let dir = repo::scratch::Scratch::new(&std::env::temp_dir(), ".quorum-backup-")
        .map_err(|e| Failure::failed(format!("temporary directory: {e}")).with_hint("set TMPDIR to a filesystem with room for the snapshot"))?;
    let out = dir.path().join(format!("{id}.db"));
    if let Some(want) = want {
        if let Some(s) = rt.block_on(repo::keymap::fetch_selected(r.clone(), &id, &m, want, &out, flags.parallel))? {
            use etcd_data::humanize::bytes;
            if !quiet {
                eprintln!(
                    "backup {}: {} matching key(s) found in its key map; fetched {} of its {} snapshot ({:.2}%)",
                    repo::short(&id),
                    s.keys,
                    bytes(s.fetched),
                    bytes(s.snapshot),
                    100.0 * s.fetched as f64 / s.snapshot.max(1) as f64
                );
            }
            return Ok((dir, out));
        }
    }
    let b = bar(quiet, "fetching backup");
    rt.block_on(repo::restore::reassemble(r.clone(), &id, &m, &out, flags.parallel, progress_fn(&b)))?;
    if let Some(b) = b {
        b.finish_and_clear();
    }
    Ok((dir, out))
}

/// `backups get --etcd-key K [--prefix]`: the latest value of each selected key, sorted, as
/// `etcdctl get` prints them (key line, value line); nothing for keys the backup lacks.
fn print_keys(flags: &RepoFlags, env_proxy: &ProxyConfig, id: &str, cluster: Option<&str>, quiet: bool, keys: &[String], prefix: bool) -> Result<(), Failure> {
    use std::io::Write;
    let want = |k: &[u8]| keys.iter().any(|x| if prefix { k.starts_with(x.as_bytes()) } else { k == x.as_bytes() });
    let (_dir, path) = fetch_to_temp(flags, env_proxy, id, cluster, quiet, Some(&want), None)?;
    // The file is either the few records fetched or, for a backup without a key map, the whole
    // snapshot: the latest records are found the same way in both.
    let records = repo::keymap::latest_records(&path, &want)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for (key, rec) in &records {
        let kv = etcd_data::schema::KeyValueRef::decode(rec)
            .ok_or_else(|| Failure::failed(format!("the record of {} does not decode", String::from_utf8_lossy(key))))?;
        let written = out.write_all(kv.key).and_then(|_| out.write_all(b"\n")).and_then(|_| out.write_all(kv.value)).and_then(|_| out.write_all(b"\n"));
        output::written(written)?;
    }
    output::written(out.flush())
}

/// `backups show`: a backup as a person reads it (the manifest itself is `-w json|yaml`).
fn describe_backup(id: &str, m: &repo::format::Manifest, bundle: Option<&[repo::format::BundleFile]>) -> String {
    use etcd_data::humanize::bytes;
    use std::fmt::Write;
    let mut o = String::new();
    let mut line = |k: &str, v: String| writeln!(o, "{:<13} {v}", format!("{k}:")).expect("writing to a String");
    line("backup", format!("{id} (cluster {})", m.cluster));
    line("made", format!("{} on host {}", m.time, m.host));
    let mut from = m.source.clone();
    let member: Vec<String> = [
        m.member.as_ref().map(|n| format!("member {n}")),
        m.member_id.as_ref().map(|i| format!("ID {i}")),
        m.etcd_version.as_ref().map(|v| format!("etcd {v}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !member.is_empty() {
        from = format!("{from} ({})", member.join(", "));
    }
    line("source", from);
    if let Some(c) = &m.cluster_id {
        line("cluster ID", c.clone());
    }
    if !m.tags.is_empty() {
        line("tags", m.tags.join(", "));
    }
    let s = &m.snapshot;
    let mut keys = format!("{} keys", s.total_key);
    if let Some(l) = s.live_keys {
        keys = format!("{keys} ({l} live)");
    }
    line("snapshot", format!("{}, revision {}, {keys}", bytes(s.size), s.revision));
    let mut hashes = format!("hash {:x}", s.hash);
    if let Some(h) = s.hash_kv {
        hashes = format!("{hashes}, hashkv {h}");
    }
    if let Some(c) = s.compact_revision.filter(|c| *c > 0) {
        hashes = format!("{hashes}, compacted at revision {c}");
    }
    if let Some(v) = &s.version {
        hashes = format!("{hashes}, storage version {v}");
    }
    line("figures", hashes);
    line("sha256", s.sha256.clone());
    line("stored", format!("{} chunks; this backup added {} in {} blobs", m.chunks, bytes(m.added_bytes), m.added_blobs));
    line(
        "key map",
        match &m.key_map {
            Some(k) => format!(
                "{} live keys in {} blobs{} (k8s --repo and --etcd-key fetch only the chunks they need)",
                k.entries,
                k.segments.len() + k.patches.len(),
                if k.patches.is_empty() { String::new() } else { format!(", {} of them patches", k.patches.len()) }
            ),
            None => "none (made before key maps, or a key bucket too small to need one: readers of one object fetch the whole snapshot)".into(),
        },
    );
    if let Some(c) = &m.consolidated {
        line(
            "consolidated",
            format!(
                "backup {} at revision {} + {} delta segments ({} revisions) to revision {}",
                repo::short(&c.base),
                c.base_revision,
                c.segments,
                c.revisions,
                c.to_revision
            ),
        );
    }
    match (&m.bundle, bundle) {
        (None, _) => line("bundle", "none".into()),
        (Some(b), None) => {
            line("bundle", format!("{} files, {} (names need the bundle key: --bundle-password-file or --bundle-key-file)", b.files, bytes(b.bytes)))
        }
        (Some(b), Some(files)) => {
            line("bundle", format!("{} files, {}", b.files, bytes(b.bytes)));
            for f in files {
                writeln!(o, "  {:04o} {:>9}  {}", f.mode & 0o7777, bytes(f.size), f.path).expect("writing to a String");
            }
        }
    }
    o
}

fn parse_parallel(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=repo::restore::MAX_PARALLEL).contains(&n) => Ok(n),
        _ => Err(format!("{s}: give a number of requests from 1 to {}", repo::restore::MAX_PARALLEL)),
    }
}
