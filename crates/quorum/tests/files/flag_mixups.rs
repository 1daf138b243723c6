//! Flags that look alike but mean different things: etcd's connection flags (global, as
//! etcdctl's) typed on a command that does not connect to etcd, and the object store's
//! --endpoint on a file:// repository, are refused naming what the user probably meant.

use crate::common::{quorum, run};

fn refused(args: &[&str], error: &str, hint: &str) {
    let mut c = quorum();
    c.args(args);
    let r = run(c);
    assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    assert!(r.stderr.contains(error) && r.stderr.contains(hint), "{args:?}: {}", r.stderr);
}

#[test]
fn look_alike_flags_are_refused_with_the_one_meant() {
    let d = tempfile::tempdir().unwrap();
    let repo = format!("file://{}/repo", d.path().display());
    refused(
        &["repo", "init", "--repo", &repo, "--password", "hunter2"],
        "--password is etcd's connection flag, and `quorum repo init` does not connect to etcd",
        "--password-file FILE",
    );
    assert!(!d.path().join("repo").exists(), "nothing was created");
    refused(&["backups", "list", "--repo", &repo, "--key", "/root/repo.key"], "--key is etcd's connection flag", "--key-file FILE");
    refused(&["k8s", "ls", "s.db", "--endpoints", "10.0.0.1:2379"], "`quorum k8s ls` does not connect to etcd", "--endpoint URL");
    refused(
        &["backup", "--repo", &repo, "--cluster", "c", "--endpoint", "127.0.0.1:32379"],
        "--endpoint 127.0.0.1:32379 (or QUORUM_REPO_ENDPOINT) is an object store's endpoint, and a file:// repository has none",
        "--endpoints HOST:PORT",
    );
}

/// `--parallel` outside what is done (1 to 16 requests in flight) is refused, not clamped.
#[test]
fn a_parallel_beyond_what_is_done_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let repo = format!("file://{}/repo", d.path().display());
    for n in ["0", "17"] {
        refused(
            &["backups", "get", "--repo", &repo, "latest", "-o", "x.db", "--parallel", n],
            &format!("{n}: give a number of requests from 1 to 16"),
            "--parallel",
        );
    }
}

#[test]
fn etcdctl_variables_set_for_the_shell_are_not_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut c = quorum();
    c.env("ETCDCTL_PASSWORD", "x").env("ETCDCTL_ENDPOINTS", "10.0.0.1:2379").args(["snapshot", "status"]).arg(d.path().join("missing.db"));
    let r = run(c);
    assert!(!r.stderr.contains("connection flag") && r.stderr.contains("missing.db"), "{}", r.stderr);
}

/// The hint for a missing repository is a command that works as written (once FILE is a
/// passphrase file).
#[test]
fn missing_repository_hint_works_as_written() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}/repo", d.path().display());
    let mut c = quorum();
    c.args(["backups", "list", "--repo", &url]);
    let r = run(c);
    assert_ne!(r.code, 0);
    let start = r.stderr.find("`quorum ").expect("a command in the message") + 1;
    let hinted = &r.stderr[start..start + r.stderr[start..].find('`').unwrap()];
    let pass = d.path().join("pass");
    std::fs::write(&pass, "a long enough passphrase for a test repository\n").unwrap();
    let args: Vec<String> = hinted.split_whitespace().skip(1).map(|a| if a == "FILE" { pass.display().to_string() } else { a.to_string() }).collect();
    let mut c = quorum();
    c.args(&args);
    let r = run(c);
    assert_eq!(r.code, 0, "`{hinted}` as written: {}", r.stderr);
}
