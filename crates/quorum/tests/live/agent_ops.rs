//! What operators rely on from `quorum agent`, with real etcd 3.5, real agents and a file://
//! repository:
//! * /metrics is the Prometheus text format its Content-Type says, and the real `promtool check
//!   metrics` passes it;
//! * a follower exports the newest backup and drill the repository holds, not only what it
//!   did itself;
//! * a member that is killed is unhealthy in the metrics, and an agent that reaches no member
//!   says so instead of repeating what it saw last.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Repo;
use testkit::{Cluster, ClusterOptions, EtcdVersion};

struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path`: (status, headers lower-cased, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((code, head.to_ascii_lowercase(), body.to_string()))
}

impl Agent {
    /// Start an agent of cluster `t` named `name` with `extra` YAML lines appended to its config.
    fn start(dir: &Path, name: &str, endpoints: &[String], repo: &Repo, extra: &str, args: &[&str]) -> Agent {
        let port = free_port();
        let cfg = format!(
            "cluster: t\nname: {name}\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: 2}}\n\
             repo: {{url: '{}', password_file: '{}', refresh_seconds: 1}}\n{extra}",
            endpoints.join(", "),
            repo.url,
            repo.dir().join("repo.pass").display(),
        );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = crate::common::quorum()
            .args(["agent", "--config", path.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, port, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn scrape(&self) -> String {
        http_get(self.port, "/metrics").map(|x| x.2).unwrap_or_default()
    }

    /// The sample `name{labels}` (labels as the agent writes them), if exported.
    fn sample(&self, series: &str) -> Option<f64> {
        self.scrape().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Wait until `cond` holds for the scrape.
    fn wait_for(&self, what: &str, secs: u64, cond: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let text = self.scrape();
            if cond(&text) {
                return text;
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "{what}: not within {secs}s\n{text}\nlog:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

fn promtool(tool: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new(tool).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A leading agent that has backed up: its scrape passes `promtool check metrics` and is served
/// as the text format 0.0.4 it is.
#[test]
fn a_live_scrape_passes_promtool_check_metrics() {
    const TEST: &str = "live::agent_ops::a_live_scrape_passes_promtool_check_metrics";
    let Some(promtool_bin) = testkit::setup_tool(TEST, "promtool") else { return };
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "backup: {{schedule: '*/4 * * * * *', from: endpoints}}\ndelta: {{interval_seconds: 0.5, spool_dir: '{}'}}\ndefrag: {{enabled: false}}\n",
        dir.path().join("spool").display()
    );
    let a = Agent::start(dir.path(), "a0", &c.endpoints(), &repo, &extra, &[]);
    a.wait_for("a backup", 40, |t| t.lines().any(|l| l.starts_with(r#"quorum_operation_runs_total{operation="backup"} "#) && !l.ends_with(" 0")));
    let (code, head, body) = http_get(a.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    assert!(!body.contains("# EOF"), "OpenMetrics in a text 0.0.4 response:\n{body}");
    let (ok, out) = promtool(&promtool_bin, &["check", "metrics"], Some(&body));
    assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}\n{body}");
}

/// An agent beside m2 (only m2's endpoint) and one with every endpoint; m2 is killed: both
/// say m2 is unhealthy and drop its size series; the one beside it reaches nothing and says
/// so (cluster_observed 0, every member unhealthy from where it stands, /readyz 503), while
/// the other still reports m0 and m1 healthy.
#[test]
fn a_killed_member_is_unhealthy_and_an_agent_that_reaches_nothing_says_so() {
    let mut c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let extra = "backup: {schedule: '0 0 1 1 *'}\ndelta: {enabled: false}\ndefrag: {enabled: false}\n";
    let eps = c.endpoints();
    let beside = Agent::start(dir.path(), "beside-m2", &eps[2..], &repo, extra, &[]);
    let all = Agent::start(dir.path(), "all", &eps, &repo, extra, &[]);
    for a in [&beside, &all] {
        a.wait_for("every member healthy", 30, |t| {
            (0..3).all(|i| has(t, &format!(r#"quorum_etcd_member_healthy{{member="m{i}"}} 1"#))) && has(t, "quorum_cluster_observed 1")
        });
    }
    c.members[2].kill();
    let t = beside.wait_for("the agent beside m2 sees nothing", 40, |t| has(t, "quorum_cluster_observed 0"));
    for i in 0..3 {
        assert!(has(&t, &format!(r#"quorum_etcd_member_healthy{{member="m{i}"}} 0"#)), "m{i}:\n{t}");
    }
    assert!(!t.contains("quorum_etcd_db_size_bytes{") && !t.contains("quorum_etcd_fragmentation_ratio{"), "stale status series:\n{t}");
    assert_eq!(http_get(beside.port, "/readyz").unwrap().0, 503);
    let t = all.wait_for("m2 unhealthy", 40, |t| has(t, r#"quorum_etcd_member_healthy{member="m2"} 0"#));
    assert!(has(&t, r#"quorum_etcd_member_healthy{member="m0"} 1"#) && has(&t, r#"quorum_etcd_member_healthy{member="m1"} 1"#), "{t}");
    assert!(has(&t, "quorum_cluster_observed 1"), "{t}");
    assert!(t.contains(r#"quorum_etcd_db_size_bytes{member="m0"}"#) && !t.contains(r#"quorum_etcd_db_size_bytes{member="m2"}"#), "{t}");
    assert!(beside.log_text().contains("cluster not observable"), "{}", beside.log_text());
}

/// Two agents of one cluster; only the leader backs up, and a drill is run from the CLI: the
/// follower exports the repository's newest backup (its time and revision, as `backups list`
/// shows them) and both export the drill, read from the repository.
#[test]
fn a_follower_exports_the_repositorys_newest_backup_and_drill() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdVersion::V3_5.etcd();
    let extra = format!(
        "backup: {{schedule: '*/4 * * * * *', from: endpoints}}\ndrill: {{schedule: '0 0 1 1 *', etcd_bin: '{}', max_age_hours: 1}}\n\
         delta: {{enabled: false}}\ndefrag: {{enabled: false}}\n",
        etcd.display(),
    );
    let agents = [Agent::start(dir.path(), "a0", &c.endpoints(), &repo, &extra, &[]), Agent::start(dir.path(), "a1", &c.endpoints(), &repo, &extra, &[])];
    let t = Instant::now();
    let leader = loop {
        let l: Vec<usize> = (0..2).filter(|&i| agents[i].sample("quorum_agent_is_leader") == Some(1.0)).collect();
        if l.len() == 1 {
            break l[0];
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no single leader: {l:?}; logs in {}", dir.path().display());
        std::thread::sleep(Duration::from_millis(200));
    };
    let follower = &agents[1 - leader];
    let t = Instant::now();
    while repo.backup_ids().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(40), "no backup:\n{}", agents[leader].log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    // The follower never backed up: what it exports is a backup of the repository's.
    let text = follower.wait_for("the follower exports a backup", 15, |t| {
        t.lines().any(|l| l.starts_with("quorum_last_full_backup_timestamp_seconds ") && !l.ends_with(" 0"))
    });
    let value = |name: &str| -> f64 { text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap() };
    let (rev, ts) = (value("quorum_last_full_backup_revision") as i64, value("quorum_last_full_backup_timestamp_seconds"));
    assert!(value("quorum_agent_is_leader") == 0.0 && value("quorum_last_full_backup_duration_seconds") == 0.0, "{text}");
    assert!(value("quorum_repository_read_timestamp_seconds") > 0.0, "{text}");
    let backups = repo.json(&["backups", "list", "--cluster", "t"]);
    let known: Vec<(i64, f64)> = backups["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["snapshot"]["revision"].as_i64().unwrap(), chrono::DateTime::parse_from_rfc3339(b["time"].as_str().unwrap()).unwrap().timestamp() as f64))
        .collect();
    assert!(known.contains(&(rev, ts)), "the follower exports backup (revision {rev}, time {ts}); the repository has {known:?}");
    assert_eq!(value("quorum_drill_overdue"), 1.0, "no drill yet: {text}");
    assert_eq!(value("quorum_last_verified_timestamp_seconds"), 0.0, "no drill yet: {text}");

    // A drill from the CLI: both agents read its record.
    let drill = repo.q(&["drill", "--latest", "--cluster", "t", "--etcd-bin", etcd.to_str().unwrap(), "--retry-lock", "60s", "-w", "json"]);
    assert_eq!(drill.code, 0, "{} {}", drill.stdout, drill.stderr);
    let drilled = chrono::DateTime::parse_from_rfc3339(serde_json::from_str::<serde_json::Value>(&drill.stdout).unwrap()["time"].as_str().unwrap()).unwrap();
    for a in &agents {
        a.wait_for("the drill is read from the repository", 15, |t| {
            has(t, "quorum_drill_overdue 0") && has(t, &format!("quorum_last_verified_timestamp_seconds {}", drilled.timestamp()))
        });
    }
}
