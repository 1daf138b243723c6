//! The agent's configuration file (YAML). Every field has a default except `cluster` and
//! `repo.url`; command-line flags override the file.
//!
//! ```yaml
//! cluster: prod                 # backups, retention and drills are grouped by this name
//! name: etcd-0                  # this agent (default: the host name)
//! endpoints: [https://10.0.0.1:2379]
//! cacert: /etc/etcd/ca.crt      # cert, key as etcdctl
//! user: quorum                  # with etcd auth on: the user (root role) and its password's file
//! user_password_file: /etc/quorum/etcd-user.pass
//! listen: 127.0.0.1:9479        # /metrics, /healthz, /readyz
//! election: { ttl_seconds: 10 }
//! repo: { url: s3://backups/etcd, password_file: /etc/quorum/repo.pass, endpoint: https://minio:9000, refresh_seconds: 60, store_timeout_seconds: 20 }
//! backup: { schedule: "0 * * * *", from: follower }
//! retention: { schedule: "30 3 * * *", keep_hourly: 48, keep_daily: 14, keep_weekly: 8, keep_monthly: 12, prune: true }
//! drill: { schedule: "0 4 * * *", etcd_bin: /usr/bin/etcd, max_age_hours: 48 }
//! defrag: { enabled: true, min_fragmentation: 45, min_db_size: 100000000, interval_seconds: 660 }
//! delta: { enabled: true, interval_seconds: 5, max_mib: 16, rpo_alert_seconds: 60 }
//! consolidate: { after_mib: 256, after_hours: 24 }   # full backups built offline from the deltas
//! ```
//! `retention.keep_pitr_hours` (e.g. 72) keeps the delta segments for point-in-time restores
//! into the last 72 hours only; older full backups still restore as they are.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::defrag::DefragPolicy;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// etcd user when authentication is on (etcdctl's `--user`); its password is read from
    /// `user_password_file` (or ETCDCTL_PASSWORD), never written in this file.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub user_password_file: Option<PathBuf>,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub election: Election,
    pub repo: RepoConfig,
    #[serde(default)]
    pub backup: Backup,
    #[serde(default)]
    pub retention: Option<Retention>,
    #[serde(default)]
    pub drill: Option<Drill>,
    #[serde(default)]
    pub defrag: DefragPolicy,
    /// Build a full backup offline from the newest one and the delta segments since, when the
    /// chain since it passes a size or an age (the leader does it; etcd is not touched).
    #[serde(default)]
    pub consolidate: Option<Consolidate>,
    /// Continuous delta capture (point-in-time restore), run by the leader.
    #[serde(default)]
    pub delta: Delta,
    /// Quota to compute usage against when etcd does not report it (etcd < 3.6).
    #[serde(default = "default_quota")]
    pub quota_backend_bytes: i64,
}

fn default_endpoints() -> Vec<String> {
    vec!["127.0.0.1:2379".into()]
}
fn default_listen() -> String {
    "127.0.0.1:9479".into()
}
fn default_quota() -> i64 {
    etcd_cluster::DEFAULT_QUOTA
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Election {
    pub ttl_seconds: i64,
}

impl Default for Election {
    fn default() -> Self {
        Election { ttl_seconds: 10 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub url: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub proxy: Option<String>,
    #[serde(default)]
    pub no_proxy: Option<String>,
    /// How often every agent re-reads the cluster's backup and drill records (the
    /// `quorum_last_full_backup_*` and `quorum_last_verified_*` metrics), seconds.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: f64,
    /// How long one object-store request is retried before it counts as failed, seconds (the
    /// command line's `--store-timeout`). Short: the spool retries a failed upload by itself,
    /// and counts it in `quorum_delta_spool_upload_failures_total`.
    #[serde(default = "default_store_timeout")]
    pub store_timeout_seconds: f64,
}

fn default_refresh() -> f64 {
    60.0
}

fn default_store_timeout() -> f64 {
    20.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backup {
    /// Cron; 5 fields (or 6 with seconds first).
    pub schedule: String,
    /// endpoints, follower, leader, or a member name.
    pub from: String,
    pub tmp_dir: Option<PathBuf>,
    pub tags: Vec<String>,
}

impl Default for Backup {
    fn default() -> Self {
        Backup { schedule: "0 * * * *".into(), from: "follower".into(), tmp_dir: None, tags: vec!["agent".into()] }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delta {
    pub enabled: bool,
    /// Cut and upload a segment this long after its first revision (the recovery point).
    pub interval_seconds: f64,
    /// ... or once it holds this many MiB.
    pub max_mib: u64,
    /// Alert (metric `quorum_rpo_breached`) when the newest captured change is older than this
    /// while etcd has newer revisions.
    pub rpo_alert_seconds: f64,
    /// Segments are spooled here (sealed) before they are uploaded, and kept while the
    /// repository is unavailable (default: `quorum-spool-<cluster>` in the system temporary
    /// directory; a persistent directory keeps them across reboots).
    pub spool_dir: Option<PathBuf>,
    /// The spool's bound: when it holds this many MiB, the capture pauses (etcd keeps the
    /// history until it compacts) until uploads make room.
    pub spool_max_mib: u64,
}

impl Default for Delta {
    fn default() -> Self {
        Delta { enabled: true, interval_seconds: 5.0, max_mib: 16, rpo_alert_seconds: 60.0, spool_dir: None, spool_max_mib: 1024 }
    }
}

impl Delta {
    /// The spool directory for `cluster`.
    pub fn spool_dir_for(&self, cluster: &str) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("quorum-spool-{cluster}")))
    }

    /// The spool's bound in bytes (at least 1 MiB).
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_mib.max(1).saturating_mul(1 << 20)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    pub schedule: String,
    pub keep_last: usize,
    pub keep_hourly: usize,
    pub keep_daily: usize,
    pub keep_weekly: usize,
    pub keep_monthly: usize,
    /// Keep delta segments for point-in-time restores into this many last hours only.
    pub keep_pitr_hours: Option<f64>,
    pub prune: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consolidate {
    /// When the segments since the newest full backup hold this many MiB.
    pub after_mib: Option<u64>,
    /// When the newest full backup is this many hours old and segments follow it.
    pub after_hours: Option<f64>,
    /// How often the leader looks.
    pub check_seconds: f64,
}

impl Default for Consolidate {
    fn default() -> Self {
        Consolidate { after_mib: Some(256), after_hours: Some(24.0), check_seconds: 60.0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Drill {
    pub schedule: String,
    pub etcd_bin: Option<PathBuf>,
    /// Alert (metric `quorum_drill_overdue`) when the last successful drill is older.
    pub max_age_hours: f64,
}

impl Default for Drill {
    fn default() -> Self {
        Drill { schedule: "0 4 * * *".into(), etcd_bin: None, max_age_hours: 48.0 }
    }
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Config = yaml_serde::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            format!("{}{at}: {e}", path.display())
        })?;
        c.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.cluster.trim().is_empty() {
            return Err("cluster must be set".into());
        }
        crate::schedule::Schedule::parse(&self.backup.schedule)?;
        if let Some(r) = &self.retention {
            crate::schedule::Schedule::parse(&r.schedule)?;
            if r.keep_last + r.keep_hourly + r.keep_daily + r.keep_weekly + r.keep_monthly == 0 {
                return Err("retention needs at least one keep_* rule".into());
            }
        }
        if let Some(d) = &self.drill {
            crate::schedule::Schedule::parse(&d.schedule)?;
        }
        if let Some(h) = self.retention.as_ref().and_then(|r| r.keep_pitr_hours) {
            if !(h.is_finite() && h > 0.0) {
                return Err("retention.keep_pitr_hours must be a positive number of hours".into());
            }
        }
        if let Some(c) = &self.consolidate {
            if c.after_mib.is_none() && c.after_hours.is_none() {
                return Err("consolidate needs after_mib and/or after_hours".into());
            }
            if !self.delta.enabled {
                return Err("consolidate builds full backups from delta segments: it needs delta.enabled".into());
            }
            if !(c.check_seconds.is_finite() && c.check_seconds >= 1.0) {
                return Err("consolidate.check_seconds must be at least 1".into());
            }
        }
        if !(self.repo.refresh_seconds.is_finite() && self.repo.refresh_seconds >= 1.0) {
            return Err("repo.refresh_seconds must be at least 1".into());
        }
        if !(self.repo.store_timeout_seconds.is_finite() && (1.0..=3600.0).contains(&self.repo.store_timeout_seconds)) {
            return Err("repo.store_timeout_seconds must be between 1 and 3600".into());
        }
        if self.election.ttl_seconds < 2 {
            return Err("election.ttl_seconds must be at least 2".into());
        }
        Ok(())
    }

    pub fn agent_name(&self) -> String {
        self.name.clone().unwrap_or_else(repo::hostname)
    }

    /// Every file and directory the configuration names, opened or checked as the agent will
    /// use it: the TLS files and the repository's secret file opened for reading, the drill's
    /// etcd binary found and executable, the spool, backup and drill working directories
    /// writable (or creatable: their nearest existing ancestor is a writable directory), a
    /// `file://` repository an existing directory. Returns one line per problem, all of them;
    /// `env_secret` says whether `QUORUM_PASSWORD` stands in for a secret file.
    pub fn check_files(&self, env_secret: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (what, p) in [
            ("cacert", &self.cacert),
            ("cert", &self.cert),
            ("key", &self.key),
            ("user_password_file", &self.user_password_file),
            ("repo.password_file", &self.repo.password_file),
            ("repo.key_file", &self.repo.key_file),
        ] {
            if let Some(p) = p {
                if let Err(e) = readable_file(p) {
                    out.push(format!("{what} {}: {e}", p.display()));
                }
            }
        }
        if self.user.is_some() && self.user_password_file.is_none() && std::env::var_os("ETCDCTL_PASSWORD").is_none() {
            out.push("user: its password: set user_password_file (or ETCDCTL_PASSWORD in the environment)".into());
        }
        if self.user_password_file.is_some() && self.user.is_none() {
            out.push("user_password_file is set but user is not".into());
        }
        if self.repo.password_file.is_none() && self.repo.key_file.is_none() && !env_secret {
            out.push("the repository's secret: set repo.password_file or repo.key_file (or QUORUM_PASSWORD in the environment)".into());
        }
        if let Some(d) = &self.drill {
            match repo::drill::find_etcd(d.etcd_bin.as_deref()) {
                Ok(bin) => {
                    if let Err(e) = executable_file(&bin) {
                        out.push(format!("drill.etcd_bin {}: {e}", bin.display()));
                    }
                }
                Err(e) => out.push(format!("drill.etcd_bin: {e}")),
            }
        }
        let tmp = std::env::temp_dir();
        let mut dirs = vec![("backup.tmp_dir", self.backup.tmp_dir.clone().unwrap_or_else(|| tmp.clone()))];
        if self.drill.is_some() || self.consolidate.is_some() {
            dirs.push(("the temporary directory (drills, consolidation)", tmp.clone()));
        }
        if self.delta.enabled {
            dirs.push(("delta.spool_dir", self.delta.spool_dir_for(&self.cluster)));
        }
        let mut seen = std::collections::HashSet::new();
        for (what, d) in dirs {
            if seen.insert(d.clone()) {
                if let Err(e) = writable_dir(&d) {
                    out.push(format!("{what} {}: {e}", d.display()));
                }
            }
        }
        if let Some(path) = self.repo.url.strip_prefix("file://") {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => out.push(format!("repo.url {}: {path} is not a directory", self.repo.url)),
                Err(e) => out.push(format!("repo.url {}: {e}", self.repo.url)),
            }
        }
        out
    }
}

fn readable_file(p: &std::path::Path) -> Result<(), String> {
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn executable_file(p: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    readable_file(p)?;
    let mode = std::fs::metadata(p).map_err(|e| e.to_string())?.permissions().mode();
    if mode & 0o111 == 0 {
        return Err("not executable".into());
    }
    Ok(())
}

/// `d`, or the nearest ancestor that exists (the agent creates the rest), is a directory this
/// process may create files in (access(2): modes, and a read-only mount even for root).
fn writable_dir(d: &std::path::Path) -> Result<(), String> {
    let mut at = d;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a directory", at.display())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Err(e.to_string()),
            },
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(at.as_os_str())).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if at == d { format!("not writable: {e}") } else { format!("{} (where it would be created) is not writable: {e}", at.display()) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.yaml");
        std::fs::write(&p, "cluster: prod\nrepo:\n  url: file:///var/backups/etcd\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.backup.schedule, "0 * * * *");
        assert_eq!(c.defrag.min_fragmentation, 45.0);
        std::fs::write(&p, "cluster: prod\nrepo:\n  url: x\nbackup:\n  schedul: '0 * * * *'\n").unwrap();
        let e = Config::load(&p).unwrap_err();
        assert!(e.contains("agent.yaml:5") && e.contains("schedul"), "{e}");
        std::fs::write(&p, "cluster: prod\nrepo:\n  url: x\nbackup:\n  schedule: 'hourly-ish'\n").unwrap();
        assert!(Config::load(&p).unwrap_err().contains("hourly-ish"));
    }

    #[test]
    fn check_files_names_every_problem() {
        let d = tempfile::tempdir().unwrap();
        let (ca, pass, etcd, repo_dir) = (d.path().join("ca.crt"), d.path().join("repo.pass"), d.path().join("etcd"), d.path().join("repo"));
        std::fs::write(&ca, "x").unwrap();
        std::fs::write(&pass, "x").unwrap();
        std::fs::write(&etcd, "#!/bin/sh\n").unwrap();
        std::fs::create_dir(&repo_dir).unwrap();
        let yaml = |extra: &str| {
            format!("cluster: prod\ncacert: {}\nrepo: {{url: 'file://{}', password_file: '{}'}}\n{extra}", ca.display(), repo_dir.display(), pass.display())
        };
        let p = d.path().join("agent.yaml");
        let load = |text: String| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p).unwrap()
        };
        // All there (the spool's parent is created by the agent).
        let c = load(yaml(&format!("delta: {{spool_dir: '{}'}}\n", d.path().join("state/spool").display())));
        assert_eq!(c.check_files(false), Vec::<String>::new());
        // Everything wrong at once: each named.
        let blocker = d.path().join("blocker");
        std::fs::write(&blocker, "a file").unwrap();
        let c = load(format!(
            "cluster: prod\ncacert: {0}/no-ca.crt\ncert: {0}\nkey: {0}/no.key\nrepo: {{url: 'file://{0}/no-repo', key_file: '{0}/no-key-file'}}\n\
             drill: {{etcd_bin: '{1}'}}\ndelta: {{spool_dir: '{2}'}}\n",
            d.path().display(),
            etcd.display(),
            blocker.join("spool").display()
        ));
        let got = c.check_files(true);
        let want = ["cacert ", "cert ", "key ", "repo.key_file ", "drill.etcd_bin ", "delta.spool_dir ", "repo.url "];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{got:#?}");
        }
        assert!(got[1].ends_with("not a regular file") && got[4].ends_with("not executable"), "{got:#?}");
        assert!(got[5].contains("is not a directory"), "{got:#?}");
        // No secret at all.
        let c = load(format!("cluster: prod\nrepo: {{url: 'file://{}'}}\ndelta: {{enabled: false}}\n", repo_dir.display()));
        assert_eq!(c.check_files(true), Vec::<String>::new());
        assert!(c.check_files(false)[0].contains("repo.password_file"));
    }
}
