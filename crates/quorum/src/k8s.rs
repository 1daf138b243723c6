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
}

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
    }
}
