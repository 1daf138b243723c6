//! etcd with authentication on (issue 19): a root user and a user whose role covers one prefix.
//! The live commands (status with hashkv, snapshot save, alarm, defrag, member add/remove,
//! backup) work with the root user given as etcdctl's `--user` or `ETCDCTL_USER`;
//! a missing user, a wrong password and a missing permission each get an error saying which,
//! with a hint; the password never appears in anything Quorum prints.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{run, Repo, Run};
use testkit::{Cluster, ClusterOptions, EtcdVersion};

const ROOT_PASSWORD: &str = "planted-Root-pw-7f3a";
const APP_PASSWORD: &str = "planted-App-pw-51c9";

fn q(c: &Cluster, user: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = crate::common::quorum();
    cmd.arg("--endpoints").arg(c.endpoints_csv()).args(args);
    if let Some(u) = user {
        cmd.env("ETCDCTL_USER", u);
    }
    let r = run(cmd);
    for secret in [ROOT_PASSWORD, APP_PASSWORD] {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "{args:?} printed a password: {} {}", r.stdout, r.stderr);
    }
    r
}

/// A cluster with a root user and an `app` user limited to /app/, auth enabled.
fn cluster_with_auth(members: usize) -> Cluster {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, members)).unwrap();
    let root = format!("root:{ROOT_PASSWORD}");
    for args in [
        vec!["user", "add", &root],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "app"],
        vec!["role", "grant-permission", "app", "readwrite", "/app/", "--prefix=true"],
        vec!["user", "add", &format!("app:{APP_PASSWORD}")],
        vec!["user", "grant-role", "app", "app"],
        vec!["auth", "enable"],
    ] {
        c.etcdctl(&args).unwrap();
    }
    c.etcdctl(&["--user", &root, "put", "/app/config", "v1"]).unwrap();
    c
}

#[test]
fn live_commands_with_auth_on() {
    let c = cluster_with_auth(3);
    let root = format!("root:{ROOT_PASSWORD}");

    // The root user: status with hashkv, snapshot save, alarms, defrag, a backup.
    let st = q(&c, Some(&root), &["status", "-w", "json"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["hashkv_agree"], true, "{v}");
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    let r = q(&c, Some(&root), &["snapshot", "save", snap.to_str().unwrap(), "--from", "follower"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(q(&c, Some(&root), &["alarm", "list"]).code, 0);
    let r = q(&c, Some(&root), &["defrag", "--pause", "0s"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Membership: a learner added and removed again (it never starts).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = q(&c, Some(&root), &["member", "add", "m9", "--learner", "--peer-urls", &format!("http://127.0.0.1:{port}")]);
    assert!(r.code == 0 && r.stdout.contains("Member m9 added"), "{} {}", r.stdout, r.stderr);
    let id = r.stdout.split_whitespace().skip_while(|w| *w != "as").nth(1).unwrap().trim_end_matches('.').to_string();
    let r = q(&c, Some(&root), &["member", "remove", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // --user NAME with --password (etcdctl's other form), for a backup into a repository.
    let repo = Repo::local();
    let mut cmd = repo.cmd(&["backup", "--cluster", "prod", "--endpoints", &c.endpoints_csv(), "--user", "root", "--password", ROOT_PASSWORD]);
    cmd.env_remove("ETCDCTL_USER");
    let r = run(cmd);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(ROOT_PASSWORD) && !r.stderr.contains(ROOT_PASSWORD));
    assert_eq!(repo.backup_ids().len(), 1);

    // No user: named, with the flags to give one.
    let r = q(&c, None, &["snapshot", "save", d.path().join("n.db").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("user name is empty") && r.stderr.contains("authentication is on") && r.stderr.contains("--user"), "{}", r.stderr);
    // A wrong password.
    let r = q(&c, Some("root:not-the-password"), &["status"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("authentication failed") && r.stderr.contains("check the user name and password"), "{}", r.stderr);
    // A user whose role covers /app/ only: maintenance calls are refused, named as such.
    let app = format!("app:{APP_PASSWORD}");
    let r = q(&c, Some(&app), &["snapshot", "save", d.path().join("a.db").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("permission denied") && r.stderr.contains("root role"), "{}", r.stderr);
    let r = q(&c, Some(&app), &["defrag", "--pause", "0s"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("permission denied") && r.stderr.contains("root role"), "{}", r.stderr);
    assert!(!d.path().join("n.db").exists() && !d.path().join("a.db").exists(), "nothing written on refusal");
    assert!(testkit::partial_leftovers(d.path()).is_empty());
}

/// The agent's config takes etcd's user and a file holding its password: it backs up and
/// captures with them, and the password is in neither its log, its /metrics, nor its config.
#[test]
fn agent_backs_up_with_auth_on() {
    let c = cluster_with_auth(1);
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("etcd-user.pass");
    std::fs::write(&pw_file, format!("{ROOT_PASSWORD}\n")).unwrap();
    let port = crate::common::free_port();
    let cfg = format!(
        "cluster: t\nname: a0\nendpoints: [{}]\nuser: root\nuser_password_file: {}\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: 2}}\n\
         repo: {{url: '{}', password_file: '{}'}}\nbackup: {{schedule: '*/2 * * * * *', from: endpoints}}\n\
         delta: {{enabled: true, interval_seconds: 1, spool_dir: '{}'}}\ndefrag: {{enabled: false}}\n",
        c.endpoints().join(", "),
        pw_file.display(),
        repo.url,
        repo.dir().join("repo.pass").display(),
        dir.path().join("spool").display()
    );
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, cfg).unwrap();
    let mut check = crate::common::quorum();
    check.args(["agent", "--config", path.to_str().unwrap(), "--check"]);
    let r = run(check);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let log = dir.path().join("agent.log");
    let mut agent = crate::common::quorum()
        .args(["agent", "--config", path.to_str().unwrap()])
        .env_remove("ETCDCTL_PASSWORD")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut metrics = String::new();
    while t.elapsed() < Duration::from_secs(40) {
        metrics = crate::common::http_get(port, "/metrics").map(|r| r.2).unwrap_or_default();
        let backed_up = !repo.backup_ids().is_empty();
        let captured = metrics.lines().any(|l| l.starts_with("quorum_last_delta_revision ") && !l.ends_with(" 0"));
        if backed_up && captured {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!repo.backup_ids().is_empty(), "no backup with auth on:\n{text}");
    assert!(metrics.lines().any(|l| l.starts_with("quorum_last_delta_revision ") && !l.ends_with(" 0")), "no delta captured:\n{metrics}\n{text}");
    for (what, body) in [("log", &text), ("/metrics", &metrics)] {
        assert!(!body.contains(ROOT_PASSWORD), "the etcd password is in the agent's {what}");
    }
    // A user without its password is named by --check.
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace(&format!("user_password_file: {}\n", pw_file.display()), "")).unwrap();
    let mut check = crate::common::quorum();
    check.args(["agent", "--config", path.to_str().unwrap(), "--check"]).env_remove("ETCDCTL_PASSWORD");
    let r = run(check);
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("user: its password"), "{}", r.stderr);
}

/// A migration between two clusters with auth on, each side with its own user, and
/// `recover plan` against a cluster with auth on: the user limited to /app/ can receive
/// /app/ keys, is refused (named) for keys outside its role, and no password is printed.
#[test]
fn migrate_and_recover_plan_with_auth_on() {
    let (src, dst) = (cluster_with_auth(1), cluster_with_auth(1));
    let root = format!("root:{ROOT_PASSWORD}");
    for k in 0..20 {
        src.etcdctl(&["--user", &root, "put", &format!("/app/k{k:02}"), "from the source"]).unwrap();
        src.etcdctl(&["--user", &root, "put", &format!("/other/k{k:02}"), "outside the app role"]).unwrap();
    }
    let repo = Repo::local();
    let migrate = |prefix: &str| {
        let mut cmd = repo.cmd(&["migrate", "--cluster", "src", "--from-endpoints", &src.endpoints_csv(), "--from-user", &root]);
        cmd.args(["--to-endpoints", &dst.endpoints_csv(), "--to-user", &format!("app:{APP_PASSWORD}"), "--prefix", prefix]);
        cmd.env_remove("ETCDCTL_USER");
        let r = run(cmd);
        for secret in [ROOT_PASSWORD, APP_PASSWORD] {
            assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "migrate printed a password: {} {}", r.stdout, r.stderr);
        }
        r
    };
    let r = migrate("/app/");
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let got = dst.etcdctl(&["--user", &root, "get", "/app/", "--prefix", "--keys-only"]).unwrap();
    assert_eq!(got.lines().filter(|l| l.starts_with("/app/k")).count(), 20, "{got}");
    let r = migrate("/other/");
    assert_ne!(r.code, 0, "the app user wrote outside its role: {}", r.stdout);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    let got = dst.etcdctl(&["--user", &root, "get", "/other/", "--prefix", "--keys-only"]).unwrap();
    assert!(got.trim().is_empty(), "nothing outside the role was written: {got}");

    let r = q(&src, Some(&root), &["recover", "plan"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("the cluster has quorum"), "{}", r.stdout);
    // etcd answers Status and the member list without a user: the plan needs none.
    let r = q(&src, None, &["recover", "plan"]);
    assert!(r.code == 0 && r.stdout.contains("the cluster has quorum"), "{} {}", r.stdout, r.stderr);
}
