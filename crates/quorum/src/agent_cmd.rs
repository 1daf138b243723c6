//! `quorum agent`: flags and start-up; the work is in the `agent` crate.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::exit::Failure;

#[derive(Args)]
pub struct AgentArgs {
    /// The agent's configuration file (YAML; see `deploy/agent.yaml`).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Override `listen` (address for /metrics, /healthz, /readyz).
    #[arg(long)]
    listen: Option<String>,
    /// Check the configuration and every file it names (certificates, secret files, the
    /// drill's etcd, writable spool and temporary directories), report each problem, and exit.
    #[arg(long)]
    check: bool,
    /// Log lines on stderr: text, or JSON lines (fields timestamp, level, message, cluster,
    /// operation, revision, duration, error where they apply).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub const HELP: &str = "\
Examples:
  quorum agent --config /etc/quorum/agent.yaml
  quorum agent --config agent.yaml --check
  quorum agent --config /etc/quorum/agent.yaml --log-format json

Run one agent beside each etcd member (deploy/ has a systemd unit, a static pod and a sidecar).
The agents elect one leader per cluster through etcd's election API; the leader takes the
scheduled full backups, applies retention, runs restore drills and auto-defrag (one member at
a time, leader last, never during a backup). Every agent serves Prometheus metrics on
/metrics and /healthz, /readyz. Secrets: repo.password_file or QUORUM_PASSWORD.";

pub fn run(a: AgentArgs, env_proxy: &repo::proxy::ProxyConfig) -> Result<(), Failure> {
    let usage = |m: String| Failure::usage(m);
    let mut cfg = agent::config::Config::load(&a.config).map_err(usage)?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if a.check {
        let problems = cfg.check_files(std::env::var_os("QUORUM_PASSWORD").is_some());
        if !problems.is_empty() {
            let list: String = problems.iter().map(|p| format!("\n  {p}")).collect();
            return Err(usage(format!("{}: {} problem(s) with what it names:{list}", a.config.display(), problems.len())));
        }
        println!("{}: ok (cluster {}, agent {}, backups \"{}\")", a.config.display(), cfg.cluster, cfg.agent_name(), cfg.backup.schedule);
        return Ok(());
    }
    let user = match (&cfg.user, &cfg.user_password_file) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            let pw = std::fs::read_to_string(p).map_err(|e| usage(format!("user_password_file {}: {e}", p.display())))?;
            Some((u.clone(), etcd_cluster::Secret(pw.trim_end_matches(['\n', '\r']).to_string())))
        }
        (Some(u), None) => match std::env::var("ETCDCTL_PASSWORD") {
            Ok(pw) => Some((u.clone(), etcd_cluster::Secret(pw))),
            Err(_) => return Err(usage(format!("{}: user {u} needs user_password_file (or ETCDCTL_PASSWORD)", a.config.display()))),
        },
        (None, Some(_)) => return Err(usage(format!("{}: user_password_file is set but user is not", a.config.display()))),
    };
    let conn = etcd_cluster::ConnConfig {
        endpoints: cfg.endpoints.clone(),
        cacert: cfg.cacert.clone(),
        cert: cfg.cert.clone(),
        key: cfg.key.clone(),
        user,
        ..Default::default()
    };
    let data = match (&cfg.repo.key_file, &cfg.repo.password_file) {
        (Some(k), _) => {
            Some(repo::crypto::Secret::key_file(std::fs::read(k).map_err(|e| usage(format!("{}: {e}", k.display())))?).map_err(|e| usage(e.to_string()))?)
        }
        (None, Some(p)) => {
            Some(repo::crypto::Secret::passphrase(std::fs::read(p).map_err(|e| usage(format!("{}: {e}", p.display())))?).map_err(|e| usage(e.to_string()))?)
        }
        (None, None) => {
            std::env::var("QUORUM_PASSWORD").ok().map(|p| repo::crypto::Secret::passphrase(p.into_bytes())).transpose().map_err(|e| usage(e.to_string()))?
        }
    };
    let unlock = repo::Unlock { data, bundle: None };
    let store = repo::StoreOptions {
        endpoint: cfg.repo.endpoint.clone(),
        region: cfg.repo.region.clone(),
        proxy: repo::proxy::ProxyConfig {
            proxy: cfg.repo.proxy.clone().filter(|p| !p.is_empty()).or_else(|| env_proxy.proxy.clone()),
            no_proxy: cfg.repo.no_proxy.as_deref().map_or_else(|| env_proxy.no_proxy.clone(), |n| repo::proxy::ProxyConfig::new(None, Some(n)).no_proxy),
        },
        timeout: None,
        retry_deadline: Some(std::time::Duration::from_secs_f64(cfg.repo.store_timeout_seconds)),
    };
    agent::log::init(match a.log_format {
        LogFormat::Text => agent::log::Format::Text,
        LogFormat::Json => agent::log::Format::Json,
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(agent::daemon::run(cfg, conn, unlock, store)).map_err(Failure::failed)
}
