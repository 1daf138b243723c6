//! `quorum k8s ...`: Kubernetes objects straight from a snapshot (printing only; the work is
//! in `kube-data`).

use std::path::PathBuf;

use clap::Subcommand;

use crate::exit::{Failure, DAMAGE};
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum K8sCmd {
    /// List the live objects in a snapshot: resource, namespace, name, kind, revisions, encryption.
    #[command(
        after_help = "Examples:\n  quorum k8s ls backup.db\n  quorum k8s ls backup.db -n kube-system --resource secrets --encryption-config /etc/kubernetes/enc.yaml\n  quorum k8s ls latest -n shop --repo s3://backups/etcd --cluster prod\n\nReads the snapshot file itself (no etcd, no API server). Encrypted values are listed with\ntheir provider and key; with --encryption-config they are decrypted to read their metadata.\nKMS-encrypted values are reported as needing the KMS plugin. From a repository, only the\nchunks holding the selected objects are fetched (through the backup's key map)."
    )]
    Ls {
        /// Snapshot file, a directory written by OpenShift's cluster-backup.sh, or with --repo a backup id (`latest`, an id prefix).
        snapshot: String,
        /// Only this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only this resource (plural, optionally with .group).
        #[arg(long)]
        resource: Option<String>,
        /// Output format (`-o` works too, as kubectl users type it).
        #[arg(short = 'w', short_alias = 'o', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Print objects as `kubectl get -o yaml|json` prints them, from a snapshot file or a backup.
    #[command(after_help = GET_HELP)]
    Get {
        /// Snapshot file, a directory written by OpenShift's cluster-backup.sh, or with --repo a backup id (`latest`, an id prefix).
        snapshot: String,
        /// Resource: plural, singular or kubectl short name, optionally with .group (`pods`, `deploy`, `crontabs.example.com`).
        resource: String,
        /// Only this object.
        name: Option<String>,
        /// Only this namespace (default: every namespace).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
        output: ObjectFormat,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Write the objects of namespaces as YAML files for `kubectl apply` on another cluster.
    #[command(after_help = export_help())]
    Export {
        /// Snapshot file, a directory written by OpenShift's cluster-backup.sh, or with --repo a backup id (`latest`, an id prefix).
        snapshot: String,
        /// Namespace to export (repeatable); its Namespace object comes along.
        #[arg(short = 'n', long = "namespace", required = true)]
        namespaces: Vec<String>,
        /// Directory to create (must not exist).
        #[arg(short = 'o', long = "output-dir")]
        output_dir: PathBuf,
        /// Remove what the source cluster assigned and leave out what the new cluster creates (see the rules below).
        #[arg(long)]
        sanitize: bool,
        /// With --sanitize: keep objects a controller owns (they are otherwise created again by it).
        #[arg(long)]
        keep_owned: bool,
        /// Only this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Leave out objects that cannot be read (encrypted without a key for them) instead of failing.
        #[arg(long)]
        skip_unreadable: bool,
        #[command(flatten)]
        source: SourceArgs,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
    /// Objects added, removed and changed (field by field) between two snapshots or backups.
    #[command(after_help = DIFF_HELP)]
    Diff {
        /// The older snapshot file or cluster-backup.sh directory (or with --repo a backup id).
        a: String,
        /// The newer snapshot file or cluster-backup.sh directory (or with --repo a backup id).
        b: String,
        /// Only objects of this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only this resource (plural name, e.g. secrets, deployments.apps).
        #[arg(long)]
        resource: Option<String>,
        /// EncryptionConfiguration for B when it differs from A's (--encryption-config).
        #[arg(long)]
        b_encryption_config: Option<PathBuf>,
        /// Print Secret values that changed (masked otherwise).
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        source: SourceArgs,
        /// Output format (`-o` works too, as kubectl users type it).
        #[arg(short = 'w', short_alias = 'o', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
    /// Count, per resource an EncryptionConfiguration lists, the live values by encryption state.
    #[command(after_help = ENCRYPTION_STATUS_HELP)]
    EncryptionStatus {
        /// Snapshot file, a directory written by OpenShift's cluster-backup.sh, or with --repo a backup id.
        snapshot: String,
        /// EncryptionConfiguration (apiserver.config.k8s.io/v1, YAML or JSON); found in a cluster-backup.sh directory's static resources when not given.
        #[arg(long)]
        config: Option<PathBuf>,
        /// With --repo: the cluster whose backup `latest` means.
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        repo: crate::repo_cmd::RepoFlags,
        /// Output format (`-o` works too, as kubectl users type it).
        #[arg(short = 'w', short_alias = 'o', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
    /// Re-encrypt a snapshot offline: every revision of the configured resources, from one EncryptionConfiguration to another.
    #[command(after_help = REKEY_HELP)]
    Rekey {
        /// Snapshot file, a directory written by OpenShift's cluster-backup.sh, or with --repo a backup id.
        snapshot: String,
        /// The configuration the values are encrypted with now (any of its providers and keys reads); found in a cluster-backup.sh directory's static resources when not given.
        #[arg(long)]
        from_config: Option<PathBuf>,
        /// The configuration to encrypt with (its write provider per resource).
        #[arg(long)]
        to_config: PathBuf,
        /// The new snapshot (never overwritten).
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Only this resource (repeatable; `secrets`, `configmaps`, `deployments.apps`, `crontabs.example.com`).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Copy values that do not decrypt with --from-config as they are (counted) instead of failing.
        #[arg(long)]
        skip_undecryptable: bool,
        /// With --repo: the cluster whose backup `latest` means.
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        repo: crate::repo_cmd::RepoFlags,
        /// Output format.
        #[arg(short = 'w', long = "write-out", help_heading = "Output", value_parser = output::table_formats(), default_value = "table")]
        write_out: Format,
    },
}

fn export_help() -> String {
    format!("{EXPORT_HELP}{}", kube_data::sanitize::rules_table())
}

/// Where objects are read from and how to decrypt them (get, export, diff).
#[derive(clap::Args)]
pub struct SourceArgs {
    /// EncryptionConfiguration to decrypt with (instead of the one an OpenShift backup keeps
    /// in its static resources, which is found and used without this).
    #[arg(long)]
    encryption_config: Option<PathBuf>,
    /// With --repo: the cluster whose backup `latest` means.
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    repo: crate::repo_cmd::RepoFlags,
}

/// A snapshot to read and the EncryptionConfiguration to read it with.
struct Input {
    /// Holds a fetched snapshot until the command ends.
    _tmp: Option<repo::scratch::Scratch>,
    path: PathBuf,
    config: Option<kube_data::encryption::EncryptionConfig>,
}

impl SourceArgs {
    /// What to read for the argument `arg`:
    /// * a snapshot file, as given;
    /// * a directory written by OpenShift's cluster-backup.sh: its newest snapshot, and the
    ///   kube-apiserver's EncryptionConfiguration from the static resources beside it;
    /// * with --repo, a backup: fetched into a temporary file (with `filter`, only the objects
    ///   it selects, through the backup's key map where it has one), and for a backup in
    ///   OpenShift's layout the EncryptionConfiguration from its bundle (bundle key needed;
    ///   without it an error when `need_keys`, else a warning).
    ///
    /// --encryption-config, when given, is used instead of any configuration found; the one
    /// found is named on stderr.
    fn input(&self, arg: &str, env_proxy: &repo::proxy::ProxyConfig, filter: Option<&kube_data::list::Filter>, need_keys: bool) -> Result<Input, Failure> {
        let given = self.encryption_config.as_deref().map(read_config).transpose()?;
        let p = PathBuf::from(arg);
        if p.is_dir() {
            let (path, found) = openshift_dir(&p, given.is_none())?;
            return Ok(Input { _tmp: None, path, config: given.or(found) });
        }
        if self.repo.repo.is_none() || p.exists() {
            return Ok(Input { _tmp: None, path: p, config: given });
        }
        let want = filter.map(|f| move |k: &[u8]| f.wants_key(k));
        let mut found = crate::repo_cmd::FoundConfig::default();
        let (dir, file) = crate::repo_cmd::fetch_to_temp(
            &self.repo,
            env_proxy,
            arg,
            self.cluster.as_deref(),
            false,
            want.as_ref().map(|w| w as &repo::keymap::KeyFilter<'_>),
            if given.is_some() { None } else { Some(&mut found) },
        )?;
        let config = match (given, found) {
            (Some(c), _) => Some(c),
            (None, crate::repo_cmd::FoundConfig::None) => None,
            (None, crate::repo_cmd::FoundConfig::Found { backup, member, bytes }) => {
                eprintln!("backup {backup}: decrypting with the EncryptionConfiguration {member} from its bundle");
                Some(parse_found(&member, &bytes)?)
            }
            (None, crate::repo_cmd::FoundConfig::Locked(f)) if need_keys => return Err(f),
            (None, crate::repo_cmd::FoundConfig::Locked(f)) => {
                eprintln!("Warning: {}; encrypted values are listed undecrypted", f.message.as_deref().unwrap_or("the bundle key is needed"));
                None
            }
        };
        Ok(Input { _tmp: Some(dir), path: file, config })
    }
}

/// A directory written by cluster-backup.sh: its newest snapshot and, with `find_config`, the
/// EncryptionConfiguration in the static resources beside it (named on stderr).
fn openshift_dir(dir: &std::path::Path, find_config: bool) -> Result<(PathBuf, Option<kube_data::encryption::EncryptionConfig>), Failure> {
    let pair = repo::openshift::find_pairs(dir)?.pop().expect("find_pairs returns at least one pair");
    if !find_config {
        return Ok((pair.snapshot, None));
    }
    match repo::openshift::tarball_encryption_config(&pair.tarball)? {
        Some((member, bytes)) => {
            eprintln!("reading {} with the EncryptionConfiguration {member} from {}", pair.snapshot.display(), pair.tarball.display());
            Ok((pair.snapshot, Some(parse_found(&member, &bytes)?)))
        }
        None => {
            eprintln!("reading {} ({} holds no EncryptionConfiguration)", pair.snapshot.display(), pair.tarball.display());
            Ok((pair.snapshot, None))
        }
    }
}

/// The configuration given, else the one an OpenShift backup keeps (in a cluster-backup.sh
/// directory's static resources, or with --repo in a backup's bundle); and the snapshot to
/// read (the directory's newest, the whole fetched backup, or the file given).
fn config_or_found(
    arg: &str,
    given: Option<&std::path::Path>,
    flag: &str,
    repo: &crate::repo_cmd::RepoFlags,
    cluster: Option<&str>,
    env_proxy: &repo::proxy::ProxyConfig,
) -> Result<(Option<repo::scratch::Scratch>, PathBuf, kube_data::encryption::EncryptionConfig), Failure> {
    let snapshot = PathBuf::from(arg);
    let missing = |what: &str| Failure::usage(format!("{what} holds no EncryptionConfiguration; give {flag}"));
    if snapshot.is_dir() {
        let (snap, found) = openshift_dir(&snapshot, given.is_none())?;
        let cfg = match given {
            Some(p) => read_config(p)?,
            None => found.ok_or_else(|| missing(&format!("{}: its static resources", snapshot.display())))?,
        };
        return Ok((None, snap, cfg));
    }
    if repo.repo.is_some() && !snapshot.exists() {
        let mut found = crate::repo_cmd::FoundConfig::default();
        let (dir, file) = crate::repo_cmd::fetch_to_temp(repo, env_proxy, arg, cluster, false, None, if given.is_some() { None } else { Some(&mut found) })?;
        let cfg = match (given, found) {
            (Some(p), _) => read_config(p)?,
            (None, crate::repo_cmd::FoundConfig::Found { backup, member, bytes }) => {
                eprintln!("backup {backup}: using the EncryptionConfiguration {member} from its bundle");
                parse_found(&member, &bytes)?
            }
            (None, crate::repo_cmd::FoundConfig::Locked(f)) => return Err(f),
            (None, crate::repo_cmd::FoundConfig::None) => return Err(missing(&format!("backup {arg}"))),
        };
        return Ok((Some(dir), file, cfg));
    }
    let p = given
        .ok_or_else(|| Failure::usage(format!("{flag} is needed for a snapshot file (a cluster-backup.sh directory or an OpenShift backup brings its own)")))?;
    Ok((None, snapshot, read_config(p)?))
}

/// An EncryptionConfiguration found in a backup; its text is never printed.
fn parse_found(member: &str, bytes: &[u8]) -> Result<kube_data::encryption::EncryptionConfig, Failure> {
    let text = std::str::from_utf8(bytes).map_err(|_| Failure::failed(format!("{member}: the EncryptionConfiguration is not UTF-8 text")))?;
    kube_data::encryption::parse_config(text, member).map_err(Failure::usage)
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectFormat {
    Yaml,
    Json,
    Name,
}

const GET_HELP: &str = "Examples:\n  quorum k8s get backup.db deployments -n prod\n  quorum k8s get backup.db secret db-password -n prod --encryption-config /etc/kubernetes/enc.yaml -o json\n  quorum k8s get latest cm -n kube-system --repo s3://backups/etcd --cluster prod\n  quorum k8s get /home/core/backup secret pull-secret -n openshift-config   # cluster-backup.sh output\n\n\
Objects are printed as kubectl prints them (built-in kinds decoded from protobuf with the
Kubernetes schema, custom resources as stored), metadata.resourceVersion being the key's
revision. Unlike kubectl, no -n means every namespace. Several objects print as a List.
An OpenShift backup (a cluster-backup.sh directory, or a backup imported with
--openshift-backup, given the bundle key) is decrypted with the EncryptionConfiguration in its
static resources; stderr names the file used.
Objects that cannot be read (encrypted without --encryption-config, damaged) are named on
stderr and the others are printed; exit 1 then. Exit 1 also when nothing matches.";

const EXPORT_HELP: &str =
    "Examples:\n  quorum k8s export backup.db -n shop -n payments -o ./export --sanitize --encryption-config enc.yaml\n  kubectl apply -R -f ./export/shop\n\n\
Writes OUTPUT_DIR/<namespace>/00-namespace.yaml and OUTPUT_DIR/<namespace>/<resource>/<name>.yaml
(mode 0600: Secrets are in them), into a temporary directory renamed when complete; an existing
OUTPUT_DIR is never touched. An object that cannot be read fails the export (nothing is left)
unless --skip-unreadable.\n\nSanitization rules (--sanitize):\n";

const DIFF_HELP: &str = "Examples:\n  quorum k8s diff monday.db tuesday.db -n prod\n  quorum k8s diff a.db b.db --resource configmaps -w json\n  quorum k8s diff <id1> latest --repo file:///var/backups/etcd --cluster prod\n\n\
Objects are compared as kubectl would show them, ignoring metadata.resourceVersion and
metadata.managedFields. Changed Secret data is masked unless --show-secrets.
Exit codes: 0 no differences, 1 differences, 2 usage, 3 damaged snapshot.";

const ENCRYPTION_STATUS_HELP: &str = "Examples:\n  quorum k8s encryption-status backup.db --config /etc/kubernetes/enc.yaml\n  quorum k8s encryption-status backup.db --config enc.json -w json\n\n\
For every resource the configuration lists (`secrets`, `deployments.apps`, `*.apps`, `*.`, `*.*`;
a key counts under the entry kube-apiserver would use: exact, then `*.<group>`, then `*.*`), the
values at the snapshot's latest revision (deleted keys do not count) are counted as plain, under
each configured provider and key (`aescbc:key1`, `kms:v2:name`), or under a key the configuration
does not have. Values are classified by their prefix, not decrypted. A resource is
EncryptionCompleted when every value uses its write key (the first provider of its entry; plain
when that is identity), else EncryptionInProgress.\n\n\
Exit codes: 0 EncryptionCompleted, 1 EncryptionInProgress, 2 usage or configuration error (the
file and line are named), 3 the snapshot is damaged.";

const REKEY_HELP: &str = "Examples:\n  quorum k8s rekey backup.db --from-config enc-old.yaml --to-config enc-new.yaml -o rekeyed.db\n  quorum k8s rekey backup.db --from-config a.yaml --to-config b.yaml -o new.db --resource secrets\n\n\
Every revision of every key of the resources either configuration covers is read with
--from-config (as kube-apiserver reads: any provider and key listed for the resource) and written
with --to-config's write provider for it (aescbc, aesgcm with the etcd key as authenticated data,
secretbox, or identity; a fresh IV or nonce each). All other values and buckets, revisions,
versions and leases are copied unchanged. The output gets the sha256 trailer `snapshot save`
writes, so `quorum snapshot restore` takes it without --skip-hash-check. It is written under a
temporary name beside NEW, fsynced and renamed; NEW is never overwritten. A value that does not decrypt stops
the rekey and names its key and revision (no output is left), unless --skip-undecryptable.
KMS-encrypted values and a KMS write provider are refused: they need the KMS plugin.\n\n\
Exit codes: 0 done, 1 a value did not decrypt or writing failed, 2 usage or configuration error,
3 the snapshot is damaged.";

/// A row of `k8s ls`'s table: its cells one after another in one string (one allocation an
/// object), the key first (the order; not shown).
struct Row {
    text: String,
    ends: [u32; 8],
}

impl Row {
    fn new(cells: [&str; 8]) -> Row {
        let mut text = String::with_capacity(cells.iter().map(|c| c.len()).sum());
        let ends = cells.map(|c| {
            text.push_str(c);
            text.len() as u32
        });
        Row { text, ends }
    }

    fn cell(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

pub fn run(cmd: K8sCmd, env_proxy: &repo::proxy::ProxyConfig) -> Result<(), Failure> {
    match cmd {
        K8sCmd::Ls { snapshot, namespace, resource, write_out, source } => {
            let filter = kube_data::list::Filter { namespace, resource, ..Default::default() };
            let Input { _tmp, path: snapshot, config } = source.input(&snapshot, env_proxy, Some(&filter), false)?;
            if matches!(write_out, Format::Json | Format::Yaml) {
                // Streamed newest revision first (a JSON array or a YAML sequence): memory stays
                // at the key set however many objects.
                use std::io::Write;
                let json = write_out == Format::Json;
                let out = std::io::stdout();
                let mut out = std::io::BufWriter::new(out.lock());
                let mut n = 0usize;
                let mut write_err = None;
                let warnings = kube_data::list::for_each(&snapshot, &filter, config.as_ref(), &mut |o| {
                    let item = if json { format!("{}{}", if n == 0 { "[" } else { "," }, output::json(&o)) } else { output::yaml(&[&o]) };
                    n += 1;
                    if let Err(e) = out.write_all(item.as_bytes()) {
                        write_err.get_or_insert(e);
                    }
                })?;
                let end = match (json, n) {
                    (_, 0) => "[]\n",
                    (true, _) => "]\n",
                    (false, _) => "",
                };
                let written = write_err.map_or(Ok(()), Err).and_then(|_| out.write_all(end.as_bytes())).and_then(|_| out.flush());
                output::written(written)?;
                output::warnings(&warnings);
                return damage_exit(&warnings);
            }
            // Table: one compact row per object, sorted by key.
            let mut rows: Vec<Row> = Vec::new();
            let mut failed = 0usize;
            let mut failed_by: std::collections::BTreeMap<String, usize> = Default::default();
            let warnings = kube_data::list::for_each(&snapshot, &filter, config.as_ref(), &mut |o| {
                let d = o.decoded.as_ref();
                let kind = d.and_then(|d| d.kind.clone()).unwrap_or_else(|| {
                    if o.encryption.is_some() && o.error.is_none() {
                        "(encrypted)".into()
                    } else {
                        String::new()
                    }
                });
                if o.error.is_some() {
                    failed += 1;
                    *failed_by.entry(o.encryption.clone().unwrap_or_else(|| "not encrypted".into())).or_default() += 1;
                }
                let cells = [
                    o.key.as_str(),
                    o.info.resource.as_str(),
                    o.info.namespace.as_deref().unwrap_or_default(),
                    o.info.name.as_str(),
                    kind.as_str(),
                    &o.mod_revision.to_string(),
                    o.encryption.as_deref().unwrap_or("-"),
                    o.error.as_deref().unwrap_or_default(),
                ];
                rows.push(Row::new(cells));
            })?;
            output::warnings(&warnings);
            rows.sort_unstable_by(|a, b| a.cell(0).cmp(b.cell(0)));
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            let written = output::write_table(&mut out, &["RESOURCE", "NAMESPACE", "NAME", "KIND", "REVISION", "ENCRYPTION", "ERROR"], rows.len(), |i| {
                std::array::from_fn::<&str, 7, _>(|c| rows[i].cell(c + 1))
            })
            .and_then(|_| {
                use std::io::Write;
                writeln!(
                    out,
                    "{} objects{}",
                    rows.len(),
                    if failed > 0 { format!(", {failed} unreadable (see ERROR): {}", by_key(&failed_by)) } else { String::new() }
                )?;
                out.flush()
            });
            output::written(written)?;
            damage_exit(&warnings)
        }
        K8sCmd::Get { snapshot, resource, name, namespace, output, source } => {
            let filter = kube_data::list::Filter { namespace, resource: Some(kube_data::objects::resolve_resource(&resource)), name, ..Default::default() };
            let Input { _tmp, path, config } = source.input(&snapshot, env_proxy, Some(&filter), true)?;
            get(&path, &filter, config.as_ref(), output)
        }
        K8sCmd::Export { snapshot, namespaces, output_dir, sanitize, keep_owned, resource, skip_unreadable, source, write_out } => {
            let filter = kube_data::list::Filter {
                resource: resource.as_deref().map(kube_data::objects::resolve_resource),
                namespaces,
                with_namespace_objects: true,
                ..Default::default()
            };
            let Input { _tmp, path, config } = source.input(&snapshot, env_proxy, Some(&filter), true)?;
            export(&path, &filter, config.as_ref(), &output_dir, sanitize, keep_owned, skip_unreadable, write_out)
        }
        K8sCmd::Diff { a, b, namespace, resource, b_encryption_config, show_secrets, source, write_out } => {
            let filter = kube_data::list::Filter { namespace, resource: resource.as_deref().map(kube_data::objects::resolve_resource), ..Default::default() };
            let ia = source.input(&a, env_proxy, Some(&filter), true)?;
            let ib = source.input(&b, env_proxy, Some(&filter), true)?;
            // B's own configuration (--b-encryption-config, or one found with it), else A's.
            let cb = match b_encryption_config.as_deref() {
                Some(p) => Some(read_config(p)?),
                None => ib.config.clone().or_else(|| ia.config.clone()),
            };
            diff(&ia.path, &ib.path, &filter, ia.config.as_ref(), cb.as_ref(), show_secrets, write_out)
        }
        K8sCmd::EncryptionStatus { snapshot, config, cluster, repo, write_out } => {
            let (_tmp, snapshot, cfg) = config_or_found(&snapshot, config.as_deref(), "--config", &repo, cluster.as_deref(), env_proxy)?;
            encryption_status(&snapshot, &cfg, write_out)
        }
        K8sCmd::Rekey { snapshot, from_config, to_config, output, resources, skip_undecryptable, cluster, repo, write_out } => {
            let (_tmp, snapshot, from) = config_or_found(&snapshot, from_config.as_deref(), "--from-config", &repo, cluster.as_deref(), env_proxy)?;
            rekey(snapshot, &from, &to_config, output, &resources, skip_undecryptable, write_out)
        }
    }
}

fn read_config(p: &std::path::Path) -> Result<kube_data::encryption::EncryptionConfig, Failure> {
    let text = std::fs::read_to_string(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?;
    kube_data::encryption::parse_config(&text, &p.display().to_string()).map_err(Failure::usage)
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

fn encryption_status(snapshot: &std::path::Path, cfg: &kube_data::encryption::EncryptionConfig, write_out: Format) -> Result<(), Failure> {
    use kube_data::encryption_status::{status, Condition};
    let report = status(snapshot, cfg)?;
    output::warnings(&report.warnings);
    output::print(write_out, &report, || {
        let rows: Vec<Vec<String>> = report
            .resources
            .iter()
            .map(|r| {
                vec![
                    r.resource.clone(),
                    r.write.clone(),
                    format!("{:?}", r.status),
                    r.total.to_string(),
                    r.at_write_key.to_string(),
                    r.plain.to_string(),
                    counts(&r.encrypted),
                    counts(&r.not_in_config),
                ]
            })
            .collect();
        print!("{}", output::table(&["RESOURCE", "WRITE KEY", "STATUS", "VALUES", "AT WRITE KEY", "PLAIN", "ENCRYPTED", "KEY NOT IN CONFIG"], &rows));
        let behind = report.resources.iter().filter(|r| r.status != Condition::EncryptionCompleted).count();
        match report.status {
            Condition::EncryptionCompleted => {
                println!("EncryptionCompleted at revision {}: every value of every listed resource uses its write key", report.revision)
            }
            Condition::EncryptionInProgress => println!(
                "EncryptionInProgress at revision {}: {behind} of {} listed resources have values not under their write key",
                report.revision,
                report.resources.len()
            ),
        }
    });
    match report.status {
        Condition::EncryptionCompleted => Ok(()),
        Condition::EncryptionInProgress => Err(Failure::quiet(crate::exit::FAILED)),
    }
}

fn rekey(
    snapshot: PathBuf,
    from: &kube_data::encryption::EncryptionConfig,
    to: &std::path::Path,
    output: PathBuf,
    resources: &[String],
    skip_undecryptable: bool,
    write_out: Format,
) -> Result<(), Failure> {
    use kube_data::rekey::{rekey, RekeyOptions};
    let to = read_config(to)?;
    let opts = RekeyOptions {
        snapshot,
        output,
        from,
        to: &to,
        resources: resources.iter().map(|r| kube_data::resources::GroupResource::parse_loose(r)).collect(),
        skip_undecryptable,
    };
    let report = rekey(&opts)?;
    output::warnings(&report.warnings);
    output::print(write_out, &report, || {
        let rows: Vec<Vec<String>> = report
            .resources
            .iter()
            .map(|(r, c)| {
                vec![r.clone(), if c.written_as.is_empty() { "-".into() } else { c.written_as.clone() }, c.rewritten.to_string(), c.skipped.to_string()]
            })
            .collect();
        print!("{}", output::table(&["RESOURCE", "WRITTEN WITH", "VALUES REWRITTEN", "SKIPPED"], &rows));
        for s in &report.skipped {
            println!("skipped {} at revision {}: {}", s.key, s.revision, s.reason);
        }
        println!(
            "Wrote {}: {} values rewritten of {} key revisions{}, revision {} kept, {} bytes, sha256 {}",
            report.output.display(),
            report.rewritten,
            report.key_entries,
            if report.skipped_undecryptable > 0 {
                format!(", {} copied undecrypted (--skip-undecryptable)", report.skipped_undecryptable)
            } else {
                String::new()
            },
            report.revision,
            report.bytes,
            report.sha256
        );
    });
    Ok(())
}

fn get(
    path: &std::path::Path,
    filter: &kube_data::list::Filter,
    config: Option<&kube_data::encryption::EncryptionConfig>,
    output: ObjectFormat,
) -> Result<(), Failure> {
    let (objects, warnings) = kube_data::objects::get(path, filter, config)?;
    output::warnings(&warnings);
    let mut items = Vec::new();
    let mut unreadable = 0usize;
    let mut failed_by: std::collections::BTreeMap<String, usize> = Default::default();
    for o in &objects {
        match &o.rendered {
            Ok(r) => {
                for w in &r.warnings {
                    eprintln!("Warning: {}: {w}", o.object.key);
                }
                items.push(r.value.clone());
            }
            Err(e) => {
                unreadable += 1;
                *failed_by.entry(o.object.encryption.clone().unwrap_or_else(|| "not encrypted".into())).or_default() += 1;
                eprintln!("Error: {}: {e}", o.object.key);
            }
        }
    }
    if objects.is_empty() {
        let what = match (&filter.name, &filter.namespace) {
            (Some(n), Some(ns)) => format!("{} \"{n}\" in namespace {ns}", filter.resource.as_deref().unwrap_or_default()),
            (Some(n), None) => format!("{} \"{n}\"", filter.resource.as_deref().unwrap_or_default()),
            _ => format!(
                "{} objects{}",
                filter.resource.as_deref().unwrap_or_default(),
                filter.namespace.as_ref().map(|n| format!(" in namespace {n}")).unwrap_or_default()
            ),
        };
        return Err(Failure::failed(format!("no {what} in the snapshot")).with_hint("`quorum k8s ls SNAPSHOT` lists what is there"));
    }
    let single = filter.name.is_some() && items.len() == 1;
    let doc = if single {
        items.pop().expect("one item")
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
    };
    match output {
        ObjectFormat::Yaml => print!("{}", kube_data::print::to_yaml(&doc)),
        ObjectFormat::Json => print!("{}", kube_data::print::to_json(&doc)),
        ObjectFormat::Name => {
            for o in objects.iter().filter(|o| o.rendered.is_ok()) {
                let kind = o.object.decoded.as_ref().and_then(|d| d.kind.clone()).unwrap_or_else(|| o.object.info.resource.clone());
                println!("{}/{}", kind.to_ascii_lowercase(), o.object.info.name);
            }
        }
    }
    damage_exit(&warnings)?;
    if unreadable > 0 {
        return Err(Failure::failed(format!("{unreadable} object(s) could not be read (named above): {}", by_key(&failed_by)))
            .with_hint("encrypted values need --encryption-config with their key"));
    }
    Ok(())
}

/// `12 under aescbc:key1, 1 not encrypted`: failures per provider and key, for the summary
/// that names which key failed on how many values.
fn by_key(m: &std::collections::BTreeMap<String, usize>) -> String {
    m.iter().map(|(k, n)| format!("{n} under {k}")).collect::<Vec<_>>().join(", ")
}

/// After printing what could be read: exit 3 when the key bucket had damaged pages or entries
/// (the output above is incomplete).
fn damage_exit(warnings: &[String]) -> Result<(), Failure> {
    match kube_data::list::damage_count(warnings) {
        0 => Ok(()),
        n => Err(Failure {
            code: DAMAGE,
            message: Some(format!("the snapshot's data is damaged ({n} report(s) above): objects on damaged pages are missing from this output")),
            hint: Some("`quorum snapshot verify` names every fault; restore from another backup if you need those objects".into()),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn export(
    path: &std::path::Path,
    filter: &kube_data::list::Filter,
    config: Option<&kube_data::encryption::EncryptionConfig>,
    dir: &std::path::Path,
    sanitize: bool,
    keep_owned: bool,
    skip_unreadable: bool,
    write_out: Format,
) -> Result<(), Failure> {
    use kube_data::export::{ExportError, ExportOptions};
    let opts = ExportOptions { filter, config, sanitize, keep_owned, skip_unreadable };
    // Warnings always; unreadable objects as errors when they failed the export, else as skipped
    // (a damaged snapshot fails it before they are listed).
    let problems = |r: &kube_data::export::ExportReport, label: Option<&str>| {
        output::warnings(&r.warnings);
        if let Some(label) = label {
            for u in &r.unreadable {
                eprintln!("{label}: {u}");
            }
        }
    };
    let report = kube_data::export::export(path, dir, &opts).map_err(|e| {
        if let Some(r) = e.report() {
            let label = match &e {
                ExportError::Unreadable { .. } => Some("Error"),
                ExportError::Damaged { .. } => None,
                _ => Some("Skipped"),
            };
            problems(r, label);
        }
        Failure::from(e)
    })?;
    problems(&report, Some("Skipped"));
    output::print(write_out, &report, || {
        let mut rows: Vec<Vec<String>> = report.written.iter().map(|(r, n)| vec![r.clone(), n.to_string(), "written".into()]).collect();
        rows.extend(report.skipped.iter().map(|(r, n)| vec![r.clone(), n.to_string(), "left out".into()]));
        print!("{}", output::table(&["RESOURCE", "OBJECTS", ""], &rows));
        println!(
            "Wrote {} objects to {}{}",
            report.written.values().sum::<usize>(),
            dir.display(),
            if sanitize { " (sanitized for another cluster: `kubectl apply -R -f DIR/<namespace>`)" } else { "" }
        );
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn diff(
    a: &std::path::Path,
    b: &std::path::Path,
    filter: &kube_data::list::Filter,
    ca: Option<&kube_data::encryption::EncryptionConfig>,
    cb: Option<&kube_data::encryption::EncryptionConfig>,
    show_secrets: bool,
    write_out: Format,
) -> Result<(), Failure> {
    let report = kube_data::objects::diff(a, b, filter, ca, cb, show_secrets)?;
    output::warnings(&report.warnings);
    let name = |r: &kube_data::objects::ObjectRef| match &r.namespace {
        Some(ns) => format!("{}/{}/{}", r.resource, ns, r.name),
        None => format!("{}/{}", r.resource, r.name),
    };
    let short = |v: &Option<serde_json::Value>| match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(79).collect::<String>())
            } else {
                s
            }
        }
    };
    output::print(write_out, &report, || {
        for r in &report.added {
            println!("+ {}", name(r));
        }
        for r in &report.removed {
            println!("- {}", name(r));
        }
        for c in &report.changed {
            println!("~ {}", name(&c.object));
            if let Some(n) = &c.note {
                println!("    {n}");
            }
            for f in &c.fields {
                println!("    {}: {} -> {}", f.path, short(&f.old), short(&f.new));
            }
        }
        println!("{} added, {} removed, {} changed, {} unchanged", report.added.len(), report.removed.len(), report.changed.len(), report.unchanged);
    });
    if report.damaged > 0 {
        return Err(Failure {
            code: DAMAGE,
            message: Some(format!(
                "the snapshots' data is damaged ({} report(s) above): objects on damaged pages are missing from this comparison",
                report.damaged
            )),
            hint: Some("`quorum snapshot verify` names every fault".into()),
        });
    }
    if report.differs() {
        return Err(Failure::quiet(crate::exit::FAILED));
    }
    Ok(())
}
