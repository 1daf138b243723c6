//! Export of namespaces from a snapshot as a directory of manifests `kubectl apply -R -f`
//! takes: `DIR/<namespace>/00-namespace.yaml`, `DIR/<namespace>/<resource>/<name>.yaml`, and
//! `DIR/_cluster/<resource>/<name>.yaml` for cluster-scoped objects the filter selects.
//!
//! Files are mode 0600 (Secrets are in them), each fsynced, in a staging directory beside
//! `DIR` that gets the name `DIR` only when everything was written
//! ([`etcd_data::durable::NewDir`]); an existing `DIR` is never touched, and on any failure
//! nothing is left.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use etcd_data::durable::NewDir;
use serde::Serialize;

use crate::encryption::EncryptionConfig;
use crate::list::{Filter, ListError};

pub struct ExportOptions<'a> {
    pub filter: &'a Filter,
    pub config: Option<&'a EncryptionConfig>,
    /// Strip what belongs to the source cluster ([`crate::sanitize`]) and leave out what its
    /// controllers create again.
    pub sanitize: bool,
    /// With `sanitize`: keep objects that have a controller owner.
    pub keep_owned: bool,
    /// Export what can be read when some objects cannot (damaged pages, missing keys).
    pub skip_unreadable: bool,
}

#[derive(Serialize, Default, Debug)]
pub struct ExportReport {
    pub directory: PathBuf,
    /// Objects written, per resource.
    pub written: BTreeMap<String, usize>,
    /// Objects left out by sanitization, per `resource (reason)`.
    pub skipped: BTreeMap<String, usize>,
    /// `key: why` of every object that could not be read.
    pub unreadable: Vec<String>,
    /// Warnings of the snapshot reader (damaged pages, unknown fields).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}: exists; an export never writes into an existing directory")]
    Exists(PathBuf),
    #[error(transparent)]
    List(#[from] ListError),
    /// `report`: what was read before the failure, when the snapshot was read at all.
    #[error("writing the export: {path}: {source} (nothing was left at {dir})")]
    Io { path: PathBuf, dir: PathBuf, source: std::io::Error, report: Option<Box<ExportReport>> },
    #[error("the snapshot's data is damaged ({damaged} report(s)); nothing was written to {}", .report.directory.display())]
    Damaged { damaged: usize, report: Box<ExportReport> },
    #[error("{} object(s) could not be read; nothing was written to {}", .report.unreadable.len(), .report.directory.display())]
    Unreadable { report: Box<ExportReport> },
    #[error("no objects in namespace(s) {namespaces} in the snapshot; nothing was written")]
    Empty { namespaces: String, report: Box<ExportReport> },
}

impl ExportError {
    /// What the export read before it failed (its warnings, the objects it could not read).
    pub fn report(&self) -> Option<&ExportReport> {
        match self {
            ExportError::Damaged { report, .. } | ExportError::Unreadable { report } | ExportError::Empty { report, .. } => Some(report),
            ExportError::Io { report, .. } => report.as_deref(),
            ExportError::Exists(_) | ExportError::List(_) => None,
        }
    }
}

/// Export the objects `opts.filter` selects from `snapshot` into the new directory `dir`.
pub fn export(snapshot: &Path, dir: &Path, opts: &ExportOptions<'_>) -> Result<ExportReport, ExportError> {
    let staging = NewDir::create(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ExportError::Exists(dir.to_path_buf()),
        _ => ExportError::Io { path: etcd_data::durable::parent(dir).to_path_buf(), dir: dir.to_path_buf(), source: e, report: None },
    })?;
    let mut report = ExportReport { directory: dir.to_path_buf(), ..Default::default() };
    let mut io_error = None;
    report.warnings = crate::list::for_each_value(snapshot, opts.filter, opts.config, &mut |o, plain, _| {
        if io_error.is_some() {
            return;
        }
        let mut value = match crate::objects::render(&o, plain) {
            Ok(r) => r.value,
            Err(e) => {
                report.unreadable.push(format!("{}: {e}", o.key));
                return;
            }
        };
        if opts.sanitize {
            if let Some(why) = crate::sanitize::skip_reason(&value, opts.keep_owned) {
                *report.skipped.entry(format!("{} ({why})", o.info.resource)).or_default() += 1;
                return;
            }
            crate::sanitize::sanitize(&mut value);
        }
        let (sub, file) = match (&o.info.namespace, o.info.resource.as_str()) {
            (None, "namespaces") => (PathBuf::from(&o.info.name), "00-namespace.yaml".to_string()),
            (Some(ns), r) => (PathBuf::from(ns).join(r), format!("{}.yaml", o.info.name)),
            (None, r) => (PathBuf::from("_cluster").join(r), format!("{}.yaml", o.info.name)),
        };
        let d = staging.path().join(sub);
        let r = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).and_then(|_| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(d.join(&file))?;
            f.write_all(crate::print::to_yaml(&value).as_bytes())?;
            f.sync_all()
        });
        match r {
            Ok(()) => *report.written.entry(o.info.resource.clone()).or_default() += 1,
            Err(e) => io_error = Some((d.join(&file), e)),
        }
    })?;
    if let Some((path, source)) = io_error {
        let staged = staging.path().to_path_buf();
        let path = dir.join(path.strip_prefix(&staged).unwrap_or(&path));
        return Err(ExportError::Io { path, dir: dir.to_path_buf(), source, report: Some(Box::new(report)) });
    }
    let damaged = crate::list::damage_count(&report.warnings);
    if damaged > 0 && !opts.skip_unreadable {
        return Err(ExportError::Damaged { damaged, report: Box::new(report) });
    }
    if !report.unreadable.is_empty() && !opts.skip_unreadable {
        return Err(ExportError::Unreadable { report: Box::new(report) });
    }
    if report.written.is_empty() {
        return Err(ExportError::Empty { namespaces: opts.filter.namespaces.join(", "), report: Box::new(report) });
    }
    // The directories of the staged tree are synced before it gets its name.
    match sync_tree(staging.path()).and_then(|_| staging.publish()) {
        Ok(()) => Ok(report),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(ExportError::Exists(dir.to_path_buf())),
        Err(e) => Err(ExportError::Io { path: dir.to_path_buf(), dir: dir.to_path_buf(), source: e, report: Some(Box::new(report)) }),
    }
}

fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_tree(&e.path())?;
        }
    }
    etcd_data::durable::sync_dir(dir)
}
