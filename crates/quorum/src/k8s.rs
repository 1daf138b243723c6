//! `quorum k8s ...`: Kubernetes objects straight from a snapshot (printing only; the work is
//! in `kube-data`).

use std::path::PathBuf;

use clap::Subcommand;

use crate::exit::{Failure, DAMAGE, USAGE};
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum K8sCmd {
    /// List the live objects in a snapshot: resource, namespace, name, kind, revisions, encryption.
    #[command(after_help = "Examples:\n  quorum k8s ls backup.db\n  quorum k8s ls backup.db -n kube-system --resource secrets --encryption-config /etc/kubernetes/enc.yaml\n\nReads the snapshot file itself (no etcd, no API server). Encrypted values are listed with\ntheir provider and key; with --encryption-config they are decrypted to read their metadata.\nKMS-encrypted values are reported as needing the KMS plugin.")]
    Ls {
        snapshot: PathBuf,
        /// Only this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only this resource (plural, optionally with .group).
        #[arg(long)]
        resource: Option<String>,
        /// EncryptionConfiguration (apiserver.config.k8s.io/v1, YAML or JSON) to decrypt with.
        #[arg(long)]
        encryption_config: Option<PathBuf>,
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
        write_out: Format,
    },
    /// Count, per resource an EncryptionConfiguration lists, the live values by encryption state.
    #[command(after_help = ENCRYPTION_STATUS_HELP)]
    EncryptionStatus {
        snapshot: PathBuf,
        /// EncryptionConfiguration (apiserver.config.k8s.io/v1, YAML or JSON).
        #[arg(long)]
        config: PathBuf,
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
        write_out: Format,
    },
    /// Re-encrypt a snapshot offline: every revision of the configured resources, from one EncryptionConfiguration to another.
    #[command(after_help = REKEY_HELP)]
    Rekey {
        snapshot: PathBuf,
        /// The configuration the values are encrypted with now (any of its providers and keys reads).
        #[arg(long)]
        from_config: PathBuf,
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
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
        write_out: Format,
    },
}

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
writes, so `quorum snapshot restore` takes it without --skip-hash-check. It is written as
NEW.partial, fsynced and renamed; NEW is never overwritten. A value that does not decrypt stops
the rekey and names its key and revision (no output is left), unless --skip-undecryptable.
KMS-encrypted values and a KMS write provider are refused: they need the KMS plugin.\n\n\
Exit codes: 0 done, 1 a value did not decrypt or writing failed, 2 usage or configuration error,
3 the snapshot is damaged.";

pub fn run(cmd: K8sCmd) -> Result<(), Failure> {
    match cmd {
        K8sCmd::Ls { snapshot, namespace, resource, encryption_config, write_out } => {
            let config = match &encryption_config {
                Some(p) => {
                    let text = std::fs::read_to_string(p).map_err(|e| Failure { code: USAGE, message: Some(format!("{}: {e}", p.display())), hint: None })?;
                    Some(kube_data::encryption::parse_config(&text, &p.display().to_string()).map_err(|m| Failure { code: USAGE, message: Some(m), hint: None })?)
                }
                None => None,
            };
            let filter = kube_data::list::Filter { namespace, resource };
            let list_failure = |e: kube_data::list::ListError| match e {
                kube_data::list::ListError::Bolt(b) => {
                    let (code, hint) = crate::exit::bolt_code(&b);
                    Failure { code, message: Some(b.to_string()), hint }
                }
                kube_data::list::ListError::Damaged(m) => Failure { code: DAMAGE, message: Some(m), hint: None },
            };
            if write_out == Format::Json {
                // Streamed in revision order: memory stays at the key index however many objects.
                use std::io::Write;
                let out = std::io::stdout();
                let mut out = std::io::BufWriter::new(out.lock());
                let mut first = true;
                let mut write_err = None;
                let warnings = kube_data::list::for_each(&snapshot, &filter, config.as_ref(), &mut |o| {
                    let sep = if first { "[" } else { "," };
                    first = false;
                    if let Err(e) = write!(out, "{sep}{}", output::json(&o)) {
                        write_err.get_or_insert(e);
                    }
                })
                .map_err(list_failure)?;
                let end = if first { "[]\n" } else { "]\n" };
                write!(out, "{end}").and_then(|_| out.flush()).map_err(|e| Failure { code: crate::exit::FAILED, message: Some(format!("writing output: {e}")), hint: None })?;
                if let Some(e) = write_err {
                    return Err(Failure { code: crate::exit::FAILED, message: Some(format!("writing output: {e}")), hint: None });
                }
                for w in &warnings {
                    eprintln!("Warning: {w}");
                }
                return Ok(());
            }
            let (objects, warnings) = kube_data::list::list(&snapshot, &filter, config.as_ref()).map_err(list_failure)?;
            for w in &warnings {
                eprintln!("Warning: {w}");
            }
            let failed = objects.iter().filter(|o| o.error.is_some()).count();
            match write_out {
                Format::Yaml => print!("{}", output::yaml(&objects)),
                _ => {
                    let rows: Vec<Vec<String>> = objects
                        .iter()
                        .map(|o| {
                            let d = o.decoded.as_ref();
                            vec![
                                o.info.resource.clone(),
                                o.info.namespace.clone().unwrap_or_default(),
                                o.info.name.clone(),
                                d.and_then(|d| d.kind.clone()).unwrap_or_else(|| if o.encryption.is_some() && o.error.is_none() { "(encrypted)".into() } else { String::new() }),
                                o.mod_revision.to_string(),
                                o.encryption.clone().unwrap_or_else(|| "-".into()),
                                o.error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print!("{}", output::table(&["RESOURCE", "NAMESPACE", "NAME", "KIND", "REVISION", "ENCRYPTION", "ERROR"], &rows));
                    println!("{} objects{}", objects.len(), if failed > 0 { format!(", {failed} unreadable (see ERROR)") } else { String::new() });
                }
            }
            Ok(())
        }
        K8sCmd::EncryptionStatus { snapshot, config, write_out } => encryption_status(&snapshot, &config, write_out),
        K8sCmd::Rekey { snapshot, from_config, to_config, output, resources, skip_undecryptable, write_out } => {
            rekey(snapshot, &from_config, &to_config, output, &resources, skip_undecryptable, write_out)
        }
    }
}

fn read_config(p: &std::path::Path) -> Result<kube_data::encryption::EncryptionConfig, Failure> {
    let text = std::fs::read_to_string(p).map_err(|e| Failure { code: USAGE, message: Some(format!("{}: {e}", p.display())), hint: None })?;
    kube_data::encryption::parse_config(&text, &p.display().to_string()).map_err(|m| Failure { code: USAGE, message: Some(m), hint: None })
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

fn encryption_status(snapshot: &std::path::Path, config: &std::path::Path, write_out: Format) -> Result<(), Failure> {
    use kube_data::encryption_status::{status, Condition, StatusError};
    let cfg = read_config(config)?;
    let report = status(snapshot, &cfg).map_err(|e| match e {
        StatusError::Bolt(b) => {
            let (code, hint) = crate::exit::bolt_code(&b);
            Failure { code, message: Some(b.to_string()), hint }
        }
        StatusError::Damaged(m) => Failure { code: DAMAGE, message: Some(m), hint: Some("run `quorum snapshot verify` for every fault".into()) },
    })?;
    for w in &report.warnings {
        eprintln!("Warning: {w}");
    }
    match write_out {
        Format::Json => println!("{}", output::json(&report)),
        Format::Yaml => print!("{}", output::yaml(&report)),
        _ => {
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
                Condition::EncryptionCompleted => println!("EncryptionCompleted at revision {}: every value of every listed resource uses its write key", report.revision),
                Condition::EncryptionInProgress => println!(
                    "EncryptionInProgress at revision {}: {behind} of {} listed resources have values not under their write key",
                    report.revision,
                    report.resources.len()
                ),
            }
        }
    }
    match report.status {
        Condition::EncryptionCompleted => Ok(()),
        Condition::EncryptionInProgress => Err(Failure { code: crate::exit::FAILED, message: None, hint: None }),
    }
}

fn rekey(
    snapshot: PathBuf,
    from: &std::path::Path,
    to: &std::path::Path,
    output: PathBuf,
    resources: &[String],
    skip_undecryptable: bool,
    write_out: Format,
) -> Result<(), Failure> {
    use kube_data::encryption::DecryptError;
    use kube_data::rekey::{rekey, RekeyError, RekeyOptions};
    let (from, to) = (read_config(from)?, read_config(to)?);
    let opts = RekeyOptions {
        snapshot,
        output,
        from: &from,
        to: &to,
        resources: resources.iter().map(|r| kube_data::resources::GroupResource::parse_loose(r)).collect(),
        skip_undecryptable,
    };
    let report = rekey(&opts).map_err(|e| {
        let message = Some(e.to_string());
        match e {
            RekeyError::Usage(_) | RekeyError::Exists(_) => Failure { code: USAGE, message, hint: None },
            RekeyError::Bolt(b) => {
                let (code, hint) = crate::exit::bolt_code(&b);
                Failure { code, message, hint }
            }
            RekeyError::Damaged(_) => Failure { code: DAMAGE, message, hint: Some("run `quorum snapshot verify` for every fault".into()) },
            RekeyError::Undecryptable { reason: DecryptError::NeedsKms { .. }, .. } => Failure {
                code: crate::exit::FAILED,
                message,
                hint: Some("KMS values can be re-encrypted only by kube-apiserver with its KMS plugin (rewrite the objects through the API); --skip-undecryptable copies them as they are".into()),
            },
            RekeyError::Undecryptable { .. } => Failure {
                code: crate::exit::FAILED,
                message,
                hint: Some("--from-config must hold every key the values were written with (old keys included); --skip-undecryptable copies such values as they are".into()),
            },
            _ => Failure { code: crate::exit::FAILED, message, hint: None },
        }
    })?;
    for w in &report.warnings {
        eprintln!("Warning: {w}");
    }
    match write_out {
        Format::Json => println!("{}", output::json(&report)),
        Format::Yaml => print!("{}", output::yaml(&report)),
        _ => {
            let rows: Vec<Vec<String>> = report
                .resources
                .iter()
                .map(|(r, c)| vec![r.clone(), if c.written_as.is_empty() { "-".into() } else { c.written_as.clone() }, c.rewritten.to_string(), c.skipped.to_string()])
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
                if report.skipped_undecryptable > 0 { format!(", {} copied undecrypted (--skip-undecryptable)", report.skipped_undecryptable) } else { String::new() },
                report.revision,
                report.bytes,
                report.sha256
            );
        }
    }
    Ok(())
}
