//! Real etcd clusters on 127.0.0.1: free ports, a temporary directory, killed by PID on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::tools::EtcdVersion;

/// Options for a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub members: usize,
    pub version: EtcdVersion,
    /// `--quota-backend-bytes` (0: etcd's default).
    pub quota_backend_bytes: u64,
    /// `--unsafe-no-fsync` (3.5 only; ignored on 3.4), for bulk loads.
    pub no_fsync: bool,
    /// Raise `--max-request-bytes` and `--max-txn-ops` for bulk loads.
    pub big_requests: bool,
    pub extra_args: Vec<String>,
    /// Serve clients over TLS with client-certificate auth.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl ClusterOptions {
    pub fn new(version: EtcdVersion, members: usize) -> Self {
        ClusterOptions { members, version, quota_backend_bytes: 0, no_fsync: false, big_requests: false, extra_args: vec![], tls: None }
    }
}

/// One running member.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9 this member and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running cluster; every member is killed when it is dropped.
#[derive(Debug)]
pub struct Cluster {
    pub version: EtcdVersion,
    pub members: Vec<Member>,
    pub token: String,
    pub initial_cluster: String,
    pub tls: Option<crate::tls::TlsFiles>,
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

/// Where a member will run: its name, URLs (free loopback ports) and data dir.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
}

/// Plan `n` members named m0.. with free ports and data dirs `<dir>/<name>.etcd`; returns the
/// plans and the `--initial-cluster` string.
pub fn plan_members(dir: &Path, n: usize) -> Result<(Vec<MemberPlan>, String)> {
    let ports = free_ports(n * 2)?;
    let plans: Vec<MemberPlan> = (0..n)
        .map(|i| {
            let name = format!("m{i}");
            MemberPlan {
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.join(format!("{name}.etcd")),
                name,
            }
        })
        .collect();
    let initial = plans.iter().map(|p| format!("{}={}", p.name, p.peer_url)).collect::<Vec<_>>().join(",");
    Ok((plans, initial))
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<_>>()?;
    Ok(ls.iter().map(|l| l.local_addr().unwrap().port()).collect())
}

impl Cluster {
    /// Start a cluster and wait until every member answers as healthy.
    pub fn start(opts: ClusterOptions) -> Result<Cluster> {
        opts.version.require()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&opts) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    fn try_start(opts: &ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("quorum-etcd-").tempdir()?;
        let (mut plans, initial) = plan_members(dir.path(), opts.members)?;
        if opts.tls.is_some() {
            for p in &mut plans {
                p.client_url = p.client_url.replace("http://", "https://");
            }
        }
        let token = format!("quorum-test-{}", std::process::id());
        let mut c = Self::spawn(opts, dir.path(), &plans, &initial, &token)?;
        c._owned = Some(dir);
        Ok(c)
    }

    /// Start members on existing (e.g. restored) data dirs, or new ones, as planned. The caller
    /// owns `dir`.
    pub fn start_planned(opts: &ClusterOptions, dir: &Path, plans: &[MemberPlan], initial: &str, token: &str) -> Result<Cluster> {
        opts.version.require()?;
        Self::spawn(opts, dir, plans, initial, token)
    }

    fn spawn(opts: &ClusterOptions, dir: &Path, plans: &[MemberPlan], initial: &str, token: &str) -> Result<Cluster> {
        let mut members = Vec::new();
        for p in plans {
            let log = dir.join(format!("{}.log", p.name));
            let mut cmd = Command::new(opts.version.etcd());
            cmd.args(["--name", &p.name, "--data-dir"])
                .arg(&p.data_dir)
                .args(["--listen-client-urls", &p.client_url, "--advertise-client-urls", &p.client_url])
                .args(["--listen-peer-urls", &p.peer_url, "--initial-advertise-peer-urls", &p.peer_url])
                .args(["--initial-cluster", initial, "--initial-cluster-token", token])
                .args(["--initial-cluster-state", "new", "--log-level", "warn"]);
            if opts.quota_backend_bytes > 0 {
                cmd.arg(format!("--quota-backend-bytes={}", opts.quota_backend_bytes));
            }
            if opts.no_fsync && opts.version == EtcdVersion::V3_5 {
                cmd.arg("--unsafe-no-fsync");
            }
            if opts.big_requests {
                cmd.args(["--max-request-bytes", "16777216", "--max-txn-ops", "10000"]);
            }
            if let Some(t) = &opts.tls {
                cmd.arg("--cert-file").arg(&t.server_cert).arg("--key-file").arg(&t.server_key);
                cmd.arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
            }
            cmd.args(&opts.extra_args);
            let logf = std::fs::File::create(&log)?;
            cmd.stdout(Stdio::null()).stderr(logf).stdin(Stdio::null());
            let child = cmd.spawn().with_context(|| format!("starting {}", opts.version.etcd().display()))?;
            members.push(Member {
                name: p.name.clone(),
                client_url: p.client_url.clone(),
                peer_url: p.peer_url.clone(),
                data_dir: p.data_dir.clone(),
                log,
                child: Some(child),
            });
        }
        let c = Cluster {
            version: opts.version,
            members,
            token: token.to_string(),
            initial_cluster: initial.to_string(),
            tls: opts.tls.clone(),
            dir: dir.to_path_buf(),
            _owned: None,
        };
        c.wait_healthy(Duration::from_secs(30))?;
        Ok(c)
    }

    /// Client URLs of the members still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.is_running()).map(|m| m.client_url.clone()).collect()
    }

    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run `etcdctl` of this cluster's version against all running members.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl().args(["--endpoints", &self.endpoints_csv()]).args(args).output()?;
        if !out.status.success() {
            bail!("etcdctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `etcdctl` of this cluster's version with its TLS client flags.
    pub fn ctl(&self) -> Command {
        let mut c = self.version.etcdctl();
        if let Some(t) = &self.tls {
            c.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client_cert).arg("--key").arg(&t.client_key);
        }
        c
    }

    /// Poll `etcdctl endpoint health` until every running member is healthy.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.ctl().args(["--endpoints", &self.endpoints_csv(), "--command-timeout=2s", "endpoint", "health"]).output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: String = self.members.iter().map(|m| format!("--- {}:\n{}", m.name, std::fs::read_to_string(&m.log).unwrap_or_default())).collect();
                bail!("etcd cluster not healthy within {timeout:?}: {}\n{logs}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Save a snapshot with the reference tool (`etcdctl snapshot save`) from the first member.
    pub fn save_snapshot(&self, path: &Path) -> Result<()> {
        let out = self.ctl().args(["--endpoints", &self.endpoints()[0], "snapshot", "save"]).arg(path).output()?;
        if !out.status.success() {
            bail!("etcdctl snapshot save failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}
