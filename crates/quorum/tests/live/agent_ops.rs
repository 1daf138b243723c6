//! What operators rely on from `quorum agent`, with real etcd 3.5, real agents and a file://
//! repository:
//! * /metrics is the Prometheus text format its Content-Type says, and the real `promtool check
//!   metrics` passes it; every metric the Grafana dashboard and the alerting rules in deploy/
//!   query is one a live agent exports;
//! * a follower exports the newest backup and drill the repository holds, not only what it
//!   did itself;
//! * a member that is killed is unhealthy in the metrics, and an agent that reaches no member
//!   says so instead of repeating what it saw last;
//! * `--log-format json` writes one JSON object per line, with the operation's fields;
//! * /healthz is 503 with the reason while the delta capture cannot write its spool;
//! * `--check` opens every file the configuration names and reports each problem.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http_get, Repo};
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

    fn child_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
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

/// Metric names of the samples in an exposition text.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(['{', ' ']).next().unwrap().to_string()).collect()
}

/// The metric names a PromQL expression selects: what is left once strings, label matchers,
/// ranges, grouping label lists, function calls, keywords and numbers are taken out.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    // Strings (Grafana variables live in them), then {...} and [...].
    let mut quote = None;
    let mut depth = 0;
    for ch in expr.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(ch),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            (None, c) if depth == 0 => s.push(c),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    let b = s.as_bytes();
    let mut i = 0;
    let mut skip_list = false;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &s[start..i];
            let next = s[i..].trim_start();
            const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
            const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
            // Aggregations take their grouping before the parenthesis: `sum by (x) (...)`.
            const AGGREGATIONS: [&str; 12] = ["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];
            if GROUPING.contains(&word) {
                skip_list = next.starts_with('(');
            } else if next.starts_with('(') || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) || AGGREGATIONS.contains(&word) {
                // a function call or a keyword
            } else {
                out.insert(word.to_string());
            }
            continue;
        }
        if c == '(' && skip_list {
            // Skip the label list of by/on/... (...).
            while i < b.len() && b[i] != b')' {
                i += 1;
            }
            skip_list = false;
        }
        if c.is_ascii_digit() || c == '.' {
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every PromQL query of the dashboard (panel targets and template variables).
fn dashboard_queries() -> Vec<String> {
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(testkit::project_root().join("deploy/grafana-dashboard.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or_default() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            // label_values(METRIC, LABEL) selects METRIC.
            let inner = q.strip_prefix("label_values(").and_then(|x| x.strip_suffix(')')).unwrap();
            out.push(inner.rsplit_once(',').unwrap().0.to_string());
        }
    }
    out
}

/// Every `expr:` of the alerting rules (block scalars included).
fn rule_queries() -> Vec<String> {
    let text = std::fs::read_to_string(testkit::project_root().join("deploy/prometheus-rules.yaml")).unwrap();
    let v: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let mut out = Vec::new();
    for g in v["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            out.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

fn promtool(tool: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new(tool).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn promql_metric_names_are_extracted() {
    let e = r#"max by (etcd_cluster, member) (sum without (x) (quorum_a > on(job, instance) group_left quorum_b) and on(job, instance, member) (quorum_c{x="y"} >= bool 1e8)) * on(job, instance) group_left(etcd_cluster) quorum_info{etcd_cluster="$c"} or time() - rate(quorum_d_total[$__rate_interval])) > 0.5"#;
    let want: BTreeSet<String> = ["quorum_a", "quorum_b", "quorum_c", "quorum_info", "quorum_d_total"].iter().map(|s| s.to_string()).collect();
    assert_eq!(promql_metrics(e), want);
}

/// A leading agent that has backed up, with etcd past its quota (NOSPACE): its scrape is served
/// as the text format 0.0.4 it is and passes `promtool check metrics`, and every metric the
/// Grafana dashboard and the alerting rules query is in it.
#[test]
fn dashboard_and_rules_query_only_exported_metrics_and_promtool_passes_the_scrape() {
    const TEST: &str = "live::agent_ops::dashboard_and_rules_query_only_exported_metrics_and_promtool_passes_the_scrape";
    let Some(promtool_bin) = testkit::setup_tool(TEST, "promtool") else { return };
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.quota_backend_bytes = 24 << 20;
    opts.big_requests = true;
    let c = Cluster::start(opts).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "backup: {{schedule: '*/4 * * * * *', from: endpoints}}\ndrill: {{schedule: '0 0 1 1 *', max_age_hours: 1}}\n\
         delta: {{interval_seconds: 0.5, spool_dir: '{}'}}\ndefrag: {{enabled: false}}\n",
        dir.path().join("spool").display()
    );
    let a = Agent::start(dir.path(), "a0", &c.endpoints(), &repo, &extra, &[]);
    a.wait_for("a backup", 40, |t| t.lines().any(|l| l.starts_with(r#"quorum_operation_runs_total{operation="backup"} "#) && !l.ends_with(" 0")));
    // NOSPACE: etcd's quota is 24 MiB; 30 MiB of values exceed it. etcd raises the alarm when a
    // request does not fit by the db size of its last commit (every 100 ms), so the bulk's last
    // batches and a put right after them can all pass: CI saw the db at 32 MB and no alarm.
    // Put until etcd refuses one.
    let _ = testkit::bulk(&c.endpoints(), 30 << 20, 4096, 65536, 4);
    let refused_by = Instant::now() + Duration::from_secs(20);
    while testkit::put(&c.endpoints(), "/registry/configmaps/default/over-quota", &[7; 4096]).is_ok() {
        assert!(Instant::now() < refused_by, "etcd took puts past its 24 MiB quota for 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    a.wait_for("the NOSPACE alarm is exported", 30, |t| has(t, r#"quorum_etcd_alarm{alarm="NOSPACE",member="m0"} 1"#));

    let (code, head, body) = http_get(a.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    assert!(!body.contains("# EOF"), "OpenMetrics in a text 0.0.4 response:\n{body}");
    let (ok, out) = promtool(&promtool_bin, &["check", "metrics"], Some(&body));
    assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}\n{body}");
    let exported = sample_names(&body);
    eprintln!("promtool check metrics: no findings on a live scrape of {} metrics", exported.len());

    let dash = dashboard_queries();
    let rules = rule_queries();
    let mut named = BTreeSet::new();
    for (what, q) in dash.iter().map(|q| ("dashboard", q)).chain(rules.iter().map(|q| ("rules", q))) {
        let names = promql_metrics(q);
        assert!(!names.is_empty(), "{what}: no metric in {q}");
        for n in &names {
            assert!(exported.contains(n), "{what} queries {n}, which the agent does not export: {q}\nexported: {exported:?}");
        }
        named.extend(names);
    }
    assert!(dash.len() >= 20 && rules.len() >= 10, "{} dashboard queries, {} rules", dash.len(), rules.len());
    eprintln!("{} dashboard queries and {} alert rules name {} metrics, all exported", dash.len(), rules.len(), named.len());

    // The dashboard's queries parse (as recording rules, with Grafana's variables filled in).
    let mut rules_file = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, q) in dash.iter().enumerate() {
        let q = q.replace("$__rate_interval", "1m").replace("$etcd_cluster", "t");
        rules_file.push_str(&format!("  - record: dashboard:query{i}\n    expr: {}\n", serde_json::to_string(&q).unwrap()));
    }
    let f = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&f, rules_file).unwrap();
    let (ok, out) = promtool(&promtool_bin, &["check", "rules", f.to_str().unwrap()], None);
    assert!(ok, "a dashboard query does not parse: {out}");
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

/// `--log-format json`: every stderr line of an agent that backs up is one JSON object with an
/// RFC 3339 UTC timestamp, and the backup's line carries cluster, operation, revision (the
/// backup's, as `backups list` has it), duration; the passphrase is nowhere. A failing backup's
/// line carries the error, in the text format too, whose lines start with an RFC 3339 UTC
/// timestamp.
#[test]
fn json_log_lines_of_a_real_backup_and_text_lines_of_a_failed_one() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let pass = std::fs::read_to_string(repo.dir().join("repo.pass")).unwrap();
    let extra = "backup: {schedule: '*/2 * * * * *', from: endpoints}\ndelta: {enabled: false}\ndefrag: {enabled: false}\n";
    let a = Agent::start(dir.path(), "a0", &c.endpoints(), &repo, extra, &["--log-format", "json"]);
    let t = Instant::now();
    let (line, backup) = loop {
        let log = a.log_text();
        let found = log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v["operation"] == "backup");
        if let Some(v) = found {
            if let Some(b) = repo.json(&["backups", "list", "--cluster", "t"])["backups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"].as_str().unwrap().starts_with(v["backup"].as_str().unwrap()))
            {
                break (v, b.clone());
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no backup line:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    };
    drop(a);
    eprintln!("a JSON log line of a real backup: {line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["cluster"], "t", "{line}");
    assert_eq!(line["revision"], backup["snapshot"]["revision"], "{line}");
    assert!(line["duration"].as_f64().is_some_and(|d| (0.0..60.0).contains(&d)), "{line}");
    assert!(line["message"].as_str().unwrap().starts_with("backup "), "{line}");
    let ts = line["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{line}");
    let log = std::fs::read_to_string(dir.path().join("a0.log")).unwrap();
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')) && v["message"].is_string(), "{l}");
    }
    assert!(!log.contains(pass.trim()), "the passphrase is in the log:\n{log}");

    // A backup that fails (no member of that name), logged as text.
    let extra = "backup: {schedule: '*/2 * * * * *', from: no-such-member}\ndelta: {enabled: false}\ndefrag: {enabled: false}\n";
    let b = Agent::start(dir.path(), "b0", &c.endpoints(), &repo, extra, &[]);
    let t = Instant::now();
    let failed = loop {
        let log = b.log_text();
        if let Some(l) = log.lines().find(|l| l.contains("backup failed")) {
            break l.to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no failed backup:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("a text log line of a failed backup: {failed}");
    assert!(failed.contains(" WARN ") && failed.contains("cluster=t") && failed.contains("operation=backup") && failed.contains("error="), "{failed}");
    for l in b.log_text().lines() {
        let ts = l.split(' ').next().unwrap();
        assert!(ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "no RFC 3339 UTC timestamp: {l}");
    }
}

/// The capture cannot run while its spool cannot take files, and /healthz says so (503 with the
/// reason) instead of "ok": the spool path's parent is a regular file (root ignores modes, so
/// no chmod); once it is a directory the spool opens, /healthz is 200 and the capture runs.
/// The spool then disappears under the agent (its parent is a file again): /healthz turns 503
/// once more, and 200 when it is back.
#[test]
fn healthz_is_unhealthy_while_the_spool_is_unwritable_and_recovers() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("state");
    std::fs::write(&parent, "a file where the spool's parent directory should be").unwrap();
    let extra = format!(
        "backup: {{schedule: '0 0 1 1 *', from: endpoints}}\ndelta: {{interval_seconds: 0.3, spool_dir: '{}'}}\ndefrag: {{enabled: false}}\n",
        parent.join("spool").display()
    );
    let a = Agent::start(dir.path(), "a0", &c.endpoints(), &repo, &extra, &[]);
    let wait_health = |code: u16, secs: u64| -> String {
        let t = Instant::now();
        loop {
            match http_get(a.port, "/healthz") {
                Some((got, _, body)) if got == code => return body,
                got => assert!(t.elapsed() < Duration::from_secs(secs), "/healthz {got:?}, want {code}; log:\n{}", a.log_text()),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let body = wait_health(503, 20);
    assert!(body.contains("the delta capture cannot run") && body.contains(&parent.display().to_string()), "{body}");
    assert!(body.contains("Not a directory"), "{body}");
    assert_eq!(a.sample("quorum_capture_running"), Some(0.0));

    // Fixed: the parent is a directory. The spool opens within its 5 s retry; the capture runs.
    std::fs::remove_file(&parent).unwrap();
    std::fs::create_dir(&parent).unwrap();
    assert_eq!(wait_health(200, 20), "ok\n");
    a.wait_for("the capture runs", 30, |t| t.lines().any(|l| l == "quorum_capture_running 1"));
    testkit::put(&c.endpoints(), "/registry/configmaps/default/x", b"1").unwrap();

    // The spool goes away under the running agent, then comes back.
    let moved = dir.path().join("state.moved");
    std::fs::rename(&parent, &moved).unwrap();
    std::fs::write(&parent, "a file again").unwrap();
    let body = wait_health(503, 20);
    assert!(body.contains("not writable"), "{body}");
    std::fs::remove_file(&parent).unwrap();
    std::fs::rename(&moved, &parent).unwrap();
    testkit::put(&c.endpoints(), "/registry/configmaps/default/x", b"2").unwrap();
    assert_eq!(wait_health(200, 20), "ok\n");
}

/// `quorum agent --check` on the shipped deploy/agent.yaml opens every file it names: on a host
/// without them (no etcd certificates, no passphrase file) it names each missing one, not just
/// the first, and exits 2; what exists here is not named.
#[test]
fn check_names_every_missing_file_of_the_shipped_config() {
    let root = testkit::project_root();
    let shipped = root.join("deploy/agent.yaml");
    let cfg: serde_json::Value = yaml_serde::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    let files = [&cfg["cacert"], &cfg["cert"], &cfg["key"], &cfg["repo"]["password_file"], &cfg["drill"]["etcd_bin"]];
    let files: Vec<&str> = files.iter().map(|v| v.as_str().unwrap()).collect();
    let missing: Vec<&str> = files.iter().copied().filter(|f| !Path::new(f).exists()).collect();
    let r = crate::common::run({
        let mut c = crate::common::quorum();
        c.args(["agent", "--check", "--config"]).arg(&shipped).env_remove("QUORUM_PASSWORD");
        c
    });
    eprintln!("quorum agent --check --config deploy/agent.yaml: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    if missing.is_empty() {
        assert_eq!(r.code, 0, "{}", r.stderr);
        return;
    }
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&format!("{} problem(s)", missing.len())), "{}", r.stderr);
    for f in &files {
        assert_eq!(r.stderr.contains(&format!(" {f}: ")), missing.contains(f), "{f}:\n{}", r.stderr);
    }
}

/// A spool directory on a read-only filesystem (a tmpfs mounted ro: root ignores modes, not
/// that) is reported by `--check`, as is one whose parent is a regular file; with both fixed it
/// says ok.
#[test]
fn check_reports_a_spool_that_cannot_be_written() {
    const TEST: &str = "live::agent_ops::check_reports_a_spool_that_cannot_be_written";
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"]).arg(&ro).status().is_ok_and(|s| s.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = mounted.then(|| Unmount(ro.clone()));
    if !mounted {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{TEST}: cannot mount a tmpfs (CI runs as root and must)");
        let _ = writeln!(std::io::stderr(), "skipped {TEST}: mounting a tmpfs needs root");
        return;
    }
    let repo = Repo::local();
    let check = |spool: &Path| {
        let p = dir.path().join("agent.yaml");
        let cfg = format!(
            "cluster: t\nrepo: {{url: '{}', password_file: '{}'}}\ndelta: {{spool_dir: '{}'}}\n",
            repo.url,
            repo.dir().join("repo.pass").display(),
            spool.display()
        );
        std::fs::write(&p, cfg).unwrap();
        let mut c = crate::common::quorum();
        c.args(["agent", "--check", "--config"]).arg(&p);
        crate::common::run(c)
    };
    let r = check(&ro.join("spool"));
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("delta.spool_dir") && r.stderr.contains("Read-only file system"), "{}", r.stderr);
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "a file").unwrap();
    let r = check(&blocker.join("spool"));
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&format!("{} is not a directory", blocker.display())), "{}", r.stderr);
    let r = check(&dir.path().join("state/spool"));
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains(": ok (cluster t"), "{}", r.stdout);
}

/// An agent stopped with SIGTERM resigns the election: with a 15 s lease, the other agent
/// leads within a few seconds (it used to wait for the lease to run out), and the stopped one
/// exits 0 saying so.
#[test]
fn a_stopped_leader_resigns_and_another_leads_at_once() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let port = free_port();
        let cfg = format!(
            "cluster: t\nname: {name}\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: 15}}\n\
             repo: {{url: '{}', password_file: '{}'}}\nbackup: {{schedule: '0 0 1 1 *'}}\ndelta: {{enabled: false}}\ndefrag: {{enabled: false}}\n",
            c.endpoints().join(", "),
            repo.url,
            repo.dir().join("repo.pass").display(),
        );
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, cfg).unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let child = crate::common::quorum()
            .args(["agent", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, port, log }
    };
    let leads = |a: &Agent| a.sample("quorum_agent_is_leader") == Some(1.0);
    let mut a = start("a0");
    let t = Instant::now();
    while !leads(&a) {
        assert!(t.elapsed() < Duration::from_secs(30), "a0 never led:\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = start("b0");
    b.wait_for("b0 serving", 30, |m| m.contains("quorum_agent_is_leader 0"));
    std::thread::sleep(Duration::from_secs(1)); // b0 is campaigning behind a0's key
    assert!(Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap().success());
    let t = Instant::now();
    let status = a.child.wait().unwrap();
    let stopped = t.elapsed();
    assert!(status.success(), "a0 exited {status:?}:\n{}", a.log_text());
    assert!(a.log_text().contains("SIGTERM: stopping; resigned the election"), "{}", a.log_text());
    while !leads(&b) {
        assert!(t.elapsed() < Duration::from_secs(10), "b0 did not take over within 10 s (the lease is 15 s):\n{}", b.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("a0 stopped in {stopped:?}; b0 led {:?} after the SIGTERM (lease TTL 15 s)", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
}

/// The spool's disk fills up (a 1 MiB tmpfs; a burst of 3 MB of incompressible values makes a
/// segment that cannot fit): the agent keeps running, says so (/healthz 503 naming "No space
/// left on device", `quorum_delta_spool_write_failing 1`), and once the filesystem has room
/// again it resumes by itself at the next change and the delta chain has no gap.
#[test]
fn a_full_spool_disk_is_reported_and_the_capture_resumes() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = testkit::Mount::tmpfs("agent_ops::a_full_spool_disk_is_reported_and_the_capture_resumes", dir.path(), 1) else { return };
    let extra = format!(
        "backup: {{schedule: '0 0 1 1 *', from: endpoints}}\ndelta: {{interval_seconds: 1, spool_dir: '{}'}}\ndefrag: {{enabled: false}}\n",
        fs.path().join("spool").display()
    );
    let mut a = Agent::start(dir.path(), "a0", &c.endpoints(), &repo, &extra, &[]);
    a.wait_for("the capture runs", 30, |t| t.lines().any(|l| l == "quorum_capture_running 1"));
    // 3 MB of random bytes in one transaction-free burst: one segment of about 3 MB.
    let mut rng = 0x2545F4914F6CDD1Du64;
    for i in 0..30 {
        let v: Vec<u8> = (0..100_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        testkit::put(&c.endpoints(), &format!("/registry/configmaps/default/big-{i}"), &v).unwrap();
    }
    let last = testkit::put(&c.endpoints(), "/registry/configmaps/default/last", b"x").unwrap();
    a.wait_for("the spool write failing", 60, |t| t.lines().any(|l| l == "quorum_delta_spool_write_failing 1"));
    let t = Instant::now();
    let body = loop {
        match http_get(a.port, "/healthz") {
            Some((503, _, body)) => break body,
            got => assert!(t.elapsed() < Duration::from_secs(20), "/healthz {got:?}; log:\n{}", a.log_text()),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("No space left on device"), "{body}");
    assert!(a.child_running(), "the agent exited on a full disk:\n{}", a.log_text());
    // Room again. The failed segment is noticed when the next one is cut, at the next change
    // in etcd (a Kubernetes control plane writes every few seconds): the capture then restarts
    // from the end of the chain and writes the revisions again.
    assert!(Command::new("mount").args(["-o", "remount,size=64m"]).arg(fs.path()).status().unwrap().success());
    let last = testkit::put(&c.endpoints(), "/registry/configmaps/default/after", b"y").unwrap().max(last);
    a.wait_for("the capture caught up", 90, |t| {
        t.lines().any(|l| l == "quorum_delta_spool_write_failing 0")
            && t.lines().filter_map(|l| l.strip_prefix("quorum_last_delta_revision ")).any(|v| v.parse::<f64>().is_ok_and(|r| r as i64 >= last))
    });
    // /healthz follows within its 5 s check.
    let t = Instant::now();
    while http_get(a.port, "/healthz").map(|r| r.0) != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(15), "/healthz still unhealthy:\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(a);
    let chain = repo.json(&["backups", "deltas", "--cluster", "t"]);
    assert!(chain["gaps"].as_array().is_none_or(|g| g.is_empty()), "{chain}");
}

/// Sends SIGCONT to a frozen process when dropped, so a failing test leaves no stopped etcd.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// An agent beside every member, each talking to its own member only (as static pods do).
/// The leading agent's member freezes (SIGSTOP: a paused VM): the leader steps down, another
/// agent takes over within a bounded time and goes on capturing what is written meanwhile;
/// after SIGCONT there is still exactly one leader and the delta chain has no gap.
#[test]
fn a_frozen_leader_member_moves_leadership() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let extra = "backup: {schedule: '0 0 1 1 *'}\ndefrag: {enabled: false}\ndelta: {interval_seconds: 0.5}\n";
    let agents: Vec<Agent> = (0..3).map(|i| Agent::start(dir.path(), &format!("a{i}"), &[c.members[i].client_url.clone()], &repo, extra, &[])).collect();
    let leaders = || -> Vec<usize> { (0..3).filter(|&i| agents[i].sample("quorum_agent_is_leader") == Some(1.0)).collect() };
    let wait_one_leader = |what: &str, secs: u64, not: Option<usize>| -> usize {
        let t = Instant::now();
        loop {
            let l = leaders();
            if l.len() == 1 && Some(l[0]) != not && agents[l[0]].sample("quorum_capture_running") == Some(1.0) {
                return l[0];
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "{what}: leaders {l:?} after {secs}s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let first = wait_one_leader("the first leader", 60, None);
    testkit::load(&c.endpoints(), &testkit::KubeKeyspace { objects: 100, ..Default::default() }).unwrap();

    let frozen = Frozen::freeze(c.members[first].pid().unwrap());
    let t = Instant::now();
    let next = wait_one_leader("a leader beside the frozen member", 30, Some(first));
    let took = t.elapsed();
    // Writes through the live members while the old leader's member is frozen.
    let live: Vec<String> = (0..3).filter(|&i| i != first).map(|i| c.members[i].client_url.clone()).collect();
    let mut rev = 0;
    for k in 0..50 {
        rev = testkit::put(&live, &format!("/frozen/{k}"), b"written while a member was frozen").unwrap();
    }
    agents[next].wait_for("the new leader captures the writes", 30, |m| {
        m.lines().find_map(|l| l.strip_prefix("quorum_last_delta_revision ")?.parse::<i64>().ok()).is_some_and(|r| r >= rev)
    });
    drop(frozen);
    std::thread::sleep(Duration::from_secs(5));
    let after = wait_one_leader("one leader after SIGCONT", 30, None);
    eprintln!("a{first}'s member frozen: a{next} led after {took:?} (lease 2 s); after SIGCONT a{after} leads");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let r = repo.q(&["backups", "deltas", "--cluster", "t"]);
    assert_eq!(r.code, 0, "the delta chain has a gap: {} {}", r.stdout, r.stderr);
}
