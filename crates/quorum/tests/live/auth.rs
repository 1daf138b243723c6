//! etcd with authentication on (issue 19): a root user and a user whose role covers one prefix.
//! The live commands (status with hashkv, snapshot save, alarm, defrag, member add/remove,
//! backup) work with the root user given as etcdctl's `--user` or `ETCDCTL_USER`;
//! a missing user, a wrong password and a missing permission each get an error saying which,
//! with a hint; the password never appears in anything Quorum prints.

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

#[test]
fn live_commands_with_auth_on() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
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
