//! Commands against real running clusters (etcd 3.5.16 and 3.4.23), TLS on and off: snapshot
//! save, status, rolling defrag under load, NOSPACE alarms, membership safety, and the
//! quorum-loss drill.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{run, Run};
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion, KubeKeyspace, MemberPlan};

fn q(c: &Cluster, args: &[&str]) -> Run {
    let mut cmd = crate::common::quorum();
    cmd.arg("--endpoints").arg(c.endpoints_csv());
    if let Some(t) = &c.tls {
        cmd.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client_cert).arg("--key").arg(&t.client_key);
    }
    cmd.args(args);
    run(cmd)
}

fn json(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "stdout {} stderr {}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn save_and_status(version: EtcdVersion, tls: bool) {
    let certs = tempfile::tempdir().unwrap();
    let mut opts = ClusterOptions::new(version, 3);
    if tls {
        opts.tls = Some(testkit::generate_tls(certs.path()).unwrap());
    }
    let mut c = Cluster::start(opts).unwrap();
    for i in 0..50 {
        c.etcdctl(&["put", &format!("/registry/configmaps/default/cm-{i}"), &"x".repeat(2000)]).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    let saved = json(&q(&c, &["snapshot", "save", snap.to_str().unwrap(), "--from", "follower", "-w", "json"]));
    assert!(testkit::partial_leftovers(d.path()).is_empty());
    // The saved file is a valid snapshot, equal in figures to what etcd's own tool reports.
    let mut st = version.snapshot_tool();
    st.args(["snapshot", "status", "-w", "json"]).arg(&snap);
    let theirs: serde_json::Value = serde_json::from_str(&run(st).stdout).unwrap();
    let ours = json(&crate::common::quorum_args(&["snapshot", "status", "-w", "json"], &snap));
    assert_eq!(ours, theirs);
    assert_eq!(crate::common::quorum_args(&["snapshot", "verify"], &snap).code, 0);
    assert_eq!(saved["revision"], ours["revision"]);
    let status = json(&q(&c, &["status", "-w", "json"]));
    let leader = status["leader"].as_str().unwrap().to_string();
    assert_ne!(saved["member"].as_str().unwrap(), "", "named source");
    let from_id = status["statuses"].as_array().unwrap().iter().find(|s| s["endpoint"] == saved["endpoint"]).unwrap()["id"].clone();
    assert_ne!(from_id.as_str().unwrap(), leader, "--from follower took it from the leader");
    // Never overwrite.
    let before = std::fs::read(&snap).unwrap();
    let again = q(&c, &["snapshot", "save", snap.to_str().unwrap()]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    assert_eq!(std::fs::read(&snap).unwrap(), before);
    // Status: every member, one leader, hashkv agreement.
    let sts = status["statuses"].as_array().unwrap();
    assert_eq!(sts.len(), 3);
    assert_eq!(sts.iter().filter(|s| s["is_leader"] == true).count(), 1);
    assert_eq!(status["hashkv_agree"], true);
    assert!(sts.iter().all(|s| s["db_size_in_use"].as_i64().unwrap() > 0 && !s["name"].as_str().unwrap().is_empty()));
    let table = q(&c, &["status"]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains("hashkv: all 3 members agree"), "{}", table.stdout);
    // A dead member keeps its name and ID in the table (from the member list), and its reason
    // in words: no client library dump widening the column.
    c.members[2].kill();
    let table = q(&c, &["status"]);
    assert_eq!(table.code, 1, "{}", table.stdout);
    let dead = table.stdout.lines().find(|l| l.contains(&c.members[2].client_url)).unwrap_or_else(|| panic!("{}", table.stdout));
    let id = sts.iter().find(|s| s["name"] == c.members[2].name.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    assert!(dead.contains(&c.members[2].name) && dead.contains(&id) && dead.contains("unreachable") && dead.contains("connection refused"), "{dead}");
    assert!(table.stdout.lines().all(|l| l.chars().count() < 250), "{}", table.stdout);
}

#[test]
fn save_and_status_plain_3_5() {
    save_and_status(EtcdVersion::V3_5, false)
}
#[test]
fn save_and_status_tls_3_5() {
    save_and_status(EtcdVersion::V3_5, true)
}
#[test]
fn save_and_status_tls_3_4() {
    save_and_status(EtcdVersion::V3_4, true)
}

#[test]
fn connection_errors_are_clear_and_bounded() {
    let certs = tempfile::tempdir().unwrap();
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    let tls = testkit::generate_tls(certs.path()).unwrap();
    opts.tls = Some(tls.clone());
    let c = Cluster::start(opts).unwrap();
    // Wrong CA.
    let mut cmd = crate::common::quorum();
    cmd.args(["status", "--dial-timeout", "2s", "--endpoints", &c.endpoints_csv(), "--cacert"]).arg(&tls.other_ca);
    cmd.arg("--cert").arg(&tls.client_cert).arg("--key").arg(&tls.client_key);
    let r = run(cmd);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.starts_with("Error: "), "{}", r.stderr);
    assert!(r.stderr.contains("TLS: unknown authority") && !r.stderr.contains("UnknownIssuer") && !r.stderr.contains("tonic"), "{}", r.stderr);
    // Unreachable endpoint: an error within the dial timeout (plus process start-up).
    let t0 = Instant::now();
    let mut cmd = crate::common::quorum();
    cmd.args(["status", "--dial-timeout", "1s", "--endpoints", "127.0.0.1:1"]);
    let r = run(cmd);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("127.0.0.1:1") && r.stderr.contains("Hint:"), "{}", r.stderr);
    // The operating system's reason, not the client library's debug dump of its error chain.
    assert!(r.stderr.contains("connection refused") && !r.stderr.contains("os error") && !r.stderr.contains("tonic"), "{}", r.stderr);
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
}

/// A writer on every endpoint that retries each put once; counts failures a retry did not absorb.
fn background_writer(endpoints: Vec<String>, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let key = format!("/registry/events/bg/e-{}", i % 500);
            let attempt = || testkit::put(&endpoints, &key, b"event");
            if attempt().is_ok() || {
                std::thread::sleep(Duration::from_millis(500));
                attempt().is_ok()
            } {
                ok += 1;
            } else {
                failed += 1;
            }
            i += 1;
        }
        (ok, failed)
    })
}

#[test]
fn rolling_defrag_followers_first_leader_last() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    // Churn: overwrite and delete a lot, then compact, so the db has free pages.
    let spec = KubeKeyspace { objects: 3000, overwrite_fraction: 1.0, delete_fraction: 0.5, compact: true, ..Default::default() };
    testkit::load(&c.endpoints(), &spec).unwrap();
    let rev = testkit::dump(&c.endpoints(), 0).unwrap().0;
    c.etcdctl(&["compact", &rev.to_string(), "--physical"]).unwrap();
    let plan = json(&q(&c, &["defrag", "--dry-run", "-w", "json"]));
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["leader"], true, "leader last");
    assert!(steps[..2].iter().all(|s| s["leader"] == false));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = background_writer(c.endpoints(), stop.clone());
    let run = q(&c, &["defrag", "--pause", "1s", "-w", "json"]);
    let r = json(&run);
    // Not a terminal: every wait is said as it starts (the pause with its time left).
    let names: Vec<&str> = r["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for n in &names {
        assert!(
            run.stderr.contains(&format!("defragmenting {n} (")) && run.stderr.contains(&format!("waiting for {n} to serve reads again")),
            "{}",
            run.stderr
        );
    }
    for n in &names[1..] {
        assert!(run.stderr.contains(&format!("pausing before {n} (--pause 1s): 1s left")), "{}", run.stderr);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = writer.join().unwrap();
    assert_eq!(failed, 0, "{failed} writes failed after a retry ({ok} succeeded)");
    assert!(ok > 0);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.iter().map(|s| s["leader"] == true).collect::<Vec<_>>(), vec![false, false, true]);
    assert!(steps.iter().all(|s| s["action"] == "defrag" && s["db_size_after"].as_i64().unwrap() < s["db_size"].as_i64().unwrap()));
    let status = json(&q(&c, &["status", "-w", "json"]));
    for s in status["statuses"].as_array().unwrap() {
        let (db, used) = (s["db_size"].as_f64().unwrap(), s["db_size_in_use"].as_f64().unwrap());
        assert!(db <= used * 1.10, "{}: db {db} not within 10% of in-use {used}", s["endpoint"]);
    }
    // --min-fragmentation skips members below the threshold.
    let r = json(&q(&c, &["defrag", "--dry-run", "--min-fragmentation", "90", "-w", "json"]));
    assert!(r["steps"].as_array().unwrap().iter().all(|s| s["action"].as_str().unwrap().starts_with("skip")));
}

#[test]
fn defrag_refuses_an_unhealthy_cluster() {
    let mut c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    let all = c.endpoints_csv();
    c.members[2].kill();
    let mut cmd = crate::common::quorum();
    cmd.args(["defrag", "--dial-timeout", "1s", "--endpoints", &all]);
    let r = run(cmd);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("refused: not every member is healthy"), "{}", r.stderr);
}

#[test]
fn nospace_alarm_then_compact_defrag_disarm() {
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.quota_backend_bytes = 8 << 20;
    let c = Cluster::start(opts).unwrap();
    let value = vec![b'v'; 100_000];
    let mut filled = false;
    for i in 0..400 {
        if testkit::put(&c.endpoints(), &format!("/registry/big/{}", i % 20), &value).is_err() {
            filled = true;
            break;
        }
    }
    assert!(filled, "the quota never filled");
    let st = json(&q(&c, &["status", "-w", "json", "--quota-backend-bytes", &(8u64 << 20).to_string()]));
    assert_eq!(st["alarms"][0]["alarm"], "NOSPACE", "{st}");
    let al = q(&c, &["alarm", "list"]);
    assert!(al.stdout.contains("alarm:NOSPACE"), "{}", al.stdout);
    // Before a compaction the member's history is all live, about 8 MiB: a defrag reclaims only
    // the free pages, which against the 8 MiB quota was sometimes enough to disarm. Against
    // 4 MiB it never is: the alarms stay, and the error says what the defrag did (not that
    // nothing was changed).
    let r = q(&c, &["defrag", "--disarm", "--pause", "0s", "--quota-backend-bytes", &(4u64 << 20).to_string()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("NOSPACE alarms stay armed") && r.stderr.contains("defragmented: m0; nothing else was changed"), "{}", r.stderr);
    let rev = json(&q(&c, &["status", "-w", "json"]))["statuses"][0]["revision"].as_i64().unwrap();
    c.etcdctl(&["compact", &rev.to_string(), "--physical"]).unwrap();
    let r = json(&q(&c, &["defrag", "--disarm", "--pause", "0s", "--quota-backend-bytes", &(8u64 << 20).to_string(), "-w", "json"]));
    assert_eq!(r["alarms_disarmed"][0]["alarm"], "NOSPACE", "{r}");
    assert!(r["alarms_left"].as_array().unwrap().is_empty());
    testkit::put(&c.endpoints(), "/registry/after", b"ok").unwrap();
}

#[test]
fn member_safety() {
    let mut c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    let all = c.endpoints_csv();
    let r = q(&c, &["member", "remove", "nobody"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no member named"), "{}", r.stderr);
    let r = q(&c, &["member", "replace", "m1", "--name", "m9", "--peer-urls", "http://127.0.0.1:1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("alive"), "{}", r.stderr);
    // Two dead: removing one would leave 1 healthy of 2 voters.
    c.members[1].kill();
    c.members[2].kill();
    let mut cmd = crate::common::quorum();
    cmd.args(["member", "remove", "m1", "--dial-timeout", "1s", "--endpoints", &all]);
    let r = run(cmd);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("below the quorum"), "{}", r.stderr);
    // Replacing one of the two dead members would remove it first: the same loss, refused.
    let mut cmd = crate::common::quorum();
    cmd.args(["member", "replace", "m2", "--name", "m9", "--peer-urls", "http://127.0.0.1:1", "--dial-timeout", "1s", "--endpoints", &all]);
    let r = run(cmd);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("below the quorum"), "{}", r.stderr);
    let list = c.etcdctl(&["member", "list"]);
    assert!(list.is_err() || list.unwrap().lines().count() == 3, "nothing was removed");
}

#[test]
fn replace_a_dead_member() {
    let mut c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    c.etcdctl(&["put", "/registry/k", "v"]).unwrap();
    let all = c.endpoints_csv();
    c.members[2].kill();
    let d = tempfile::tempdir().unwrap();
    let (plans, _) = plan_members(d.path(), 1).unwrap();
    let newp = MemberPlan { name: "m3".into(), ..plans[0].clone() };
    let mut cmd = crate::common::quorum();
    cmd.args(["member", "replace", "m2", "--name", "m3", "--peer-urls", &newp.peer_url, "--dial-timeout", "1s", "--endpoints", &all]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let initial = r.stdout.lines().find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\"")).unwrap().trim_end_matches('"').to_string();
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.extra_args = vec!["--initial-cluster-state=existing".into()];
    let new = Cluster::start_planned(&opts, d.path(), &[newp], &initial, &c.token).unwrap();
    assert_eq!(new.etcdctl(&["get", "/registry/k", "--print-value-only"]).unwrap().trim(), "v");
    let list = c.etcdctl(&["member", "list"]).unwrap();
    assert!(list.contains("m3") && !list.contains("m2"), "{list}");
}

/// `member add --wait` for a member that never starts: it says the member stays in the
/// membership (not "nothing was changed"), where it stood, and how to take it out; taking it
/// out as told works. In a one-member cluster grown to two it says the cluster has no quorum
/// until the member runs instead (a removal could not commit), and starting it as told heals it.
#[test]
fn a_member_that_never_starts_is_reported_as_added() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    let d = tempfile::tempdir().unwrap();
    let (plans, _) = plan_members(d.path(), 1).unwrap();
    let plan = MemberPlan { name: "m9".into(), ..plans[0].clone() };
    let r = q(&c, &["member", "add", "m9", "--peer-urls", &plan.peer_url, "--wait", "--wait-timeout", "2s"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("was added but did not start and catch up (its etcd has not joined the cluster)"), "{}", r.stderr);
    assert!(!r.stderr.contains("nothing was changed"), "{}", r.stderr);
    let id = r.stdout.lines().find_map(|l| l.strip_prefix("Member m9 added as ")).unwrap().trim_end_matches('.').to_string();
    let remove = format!("quorum member remove {id}");
    assert!(r.stderr.contains(&remove), "{}", r.stderr);
    assert_eq!(c.etcdctl(&["member", "list"]).unwrap().lines().count(), 4);
    let r = q(&c, &["member", "remove", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.etcdctl(&["member", "list"]).unwrap().lines().count(), 3);

    let one = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    one.etcdctl(&["put", "/registry/k", "v"]).unwrap();
    let r = q(&one, &["member", "add", "m9", "--peer-urls", &plan.peer_url, "--wait", "--wait-timeout", "2s"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no quorum until this member runs") && !r.stderr.contains("member remove "), "{}", r.stderr);
    let initial = r.stdout.lines().find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\"")).unwrap().trim_end_matches('"').to_string();
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.extra_args = vec!["--initial-cluster-state=existing".into()];
    let new = Cluster::start_planned(&opts, d.path(), &[plan], &initial, &one.token).unwrap();
    assert_eq!(new.etcdctl(&["get", "/registry/k", "--print-value-only"]).unwrap().trim(), "v");
}

/// `member replace` checks the add before it removes: a successor whose name is taken, or an
/// add refused by the cluster's state (here another added member that never started), is
/// refused with the old member still in place.
#[test]
fn replace_checks_the_add_before_it_removes() {
    let mut c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 5)).unwrap();
    let all = c.endpoints_csv();
    let d = tempfile::tempdir().unwrap();
    let (plans, _) = plan_members(d.path(), 2).unwrap();
    let r = q(&c, &["member", "add", "m9", "--peer-urls", &plans[0].peer_url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    c.members[4].kill();
    let replace = |name: &str| {
        let mut cmd = crate::common::quorum();
        cmd.args(["member", "replace", "m4", "--name", name, "--peer-urls", &plans[1].peer_url, "--dial-timeout", "1s", "--endpoints", &all]);
        run(cmd)
    };
    let r = replace("m1");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = replace("m8");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("has not started") && r.stderr.contains("nothing was changed"), "{}", r.stderr);
    let list = c.etcdctl(&["member", "list"]).unwrap();
    assert_eq!(list.lines().count(), 6, "{list}");
    assert!(list.contains("m4"), "the dead member is still there: {list}");
}

/// Start `quorum member add --wait` and, once it prints the flags, start the new member with them.
fn add_member_and_start(endpoints: &str, version: EtcdVersion, dir: &Path, plan: &MemberPlan, token: &str) -> Cluster {
    let mut cmd = crate::common::quorum();
    cmd.args(["member", "add", &plan.name, "--peer-urls", &plan.peer_url, "--wait", "--wait-timeout", "60s", "--endpoints", endpoints]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let initial = loop {
        let Some(l) = lines.next() else {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("member add ended early: {err}");
        };
        let l = l.unwrap();
        if let Some(v) = l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            break v.trim_end_matches('"').to_string();
        }
    };
    let mut opts = ClusterOptions::new(version, 1);
    opts.extra_args = vec!["--initial-cluster-state=existing".into()];
    let m = Cluster::start_planned(&opts, dir, std::slice::from_ref(plan), &initial, token).unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "member add --wait failed: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("is up and caught up")), "{rest:?}");
    m
}

fn quorum_loss_drill(version: EtcdVersion, from_snapshot: bool) {
    let mut c = Cluster::start(ClusterOptions::new(version, 3)).unwrap();
    testkit::load(&c.endpoints(), &KubeKeyspace { objects: 2000, seed: 21, ..Default::default() }).unwrap();
    let work = tempfile::tempdir().unwrap();
    let snap = work.path().join("backup.db");
    c.save_snapshot(&snap).unwrap();
    if !from_snapshot {
        // Writes after the backup: recovering from the survivor keeps them.
        for i in 0..20 {
            c.etcdctl(&["put", &format!("/registry/late/k{i}"), "late"]).unwrap();
        }
    }
    let (_, before) = testkit::dump(&c.endpoints(), 0).unwrap();
    let all = c.endpoints_csv();
    let survivor = c.members[0].data_dir.clone();
    c.members[1].kill();
    c.members[2].kill();
    let mut cmd = crate::common::quorum();
    cmd.args(["recover", "plan", "--dial-timeout", "1s", "--endpoints", &all, "-w", "json", "--data-dir"]).arg(&survivor).arg("--snapshot").arg(&snap);
    let p = json(&run(cmd));
    assert_eq!(p["quorum_lost"], true, "{p}");
    assert_eq!(p["chosen"]["kind"], "survivor data dir", "{p}");
    // The plan's commands work as written, no NAME/PEER_URL placeholders: first the fast path
    // (every member rebuilt from the survivor at once, its member list from the db), then the
    // one-at-a-time alternative naming the survivor's own member (from its WAL) and the others.
    let texts = |k: &str| -> Vec<String> { p[k].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect() };
    let (steps, alternative) = (texts("steps"), texts("alternative"));
    let old_initial: Vec<String> = c.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
    assert!(
        steps.iter().any(|s| s.contains(&format!(
            "quorum recover --from-data-dir {} --initial-cluster {} --all-members --name {} --data-dir {}-recovered-{{name}}",
            survivor.display(),
            old_initial.join(","),
            c.members[0].name,
            survivor.display()
        ))),
        "{steps:?}"
    );
    let me = (&c.members[0].name, &c.members[0].peer_url);
    assert!(
        alternative.iter().any(|s| s.contains(&format!("--name {} --initial-advertise-peer-urls {} --data-dir {}-recovered", me.0, me.1, survivor.display()))),
        "{alternative:?}"
    );
    for m in &c.members[1..] {
        assert!(alternative.iter().any(|s| s.contains(&format!("quorum member add {} --peer-urls {} --wait", m.name, m.peer_url))), "{alternative:?}");
    }
    assert!(!steps.iter().chain(&alternative).any(|s| s.contains("PEER_URL") || s.contains("NAME ")), "{steps:?}");
    // Both recover lines carry the revision bump Kubernetes wants (raft index × 1.2); the fast
    // path below runs with it as printed.
    let bump: String = steps
        .iter()
        .find_map(|s| s.split_once("--bump-revision ").map(|(_, b)| b.split_whitespace().next().unwrap().to_string()))
        .unwrap_or_else(|| panic!("no --bump-revision in {steps:?}"));
    assert!(alternative.iter().any(|s| s.contains(&format!("--bump-revision {bump}"))), "{alternative:?}");
    let (plans, initial) = plan_members(work.path(), 3).unwrap();
    let token = "etcd-cluster-recovered";
    if !from_snapshot {
        // Guardrail: the survivor's db is refused while its etcd still runs; nothing is written.
        let mut cmd = crate::common::quorum();
        cmd.args(["recover", "--initial-cluster", &initial, "--all-members", "--name", "m0", "--from-data-dir"]).arg(&survivor);
        cmd.arg("--data-dir").arg(work.path().join("{name}.etcd"));
        let r = run(cmd);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("still running"), "{}", r.stderr);
        assert!(!plans[0].data_dir.exists());
    }
    c.members[0].kill(); // stop the survivor before using its data dir
    let (first, m1, m2) = if from_snapshot {
        // One member, then the others re-added one at a time.
        let mut cmd = crate::common::quorum();
        cmd.args(["recover", "--name", "m0", "--initial-advertise-peer-urls", &plans[0].peer_url, "--data-dir"]).arg(&plans[0].data_dir);
        cmd.arg("--from-snapshot").arg(&snap);
        let r = run(cmd);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("etcd --name m0"), "{}", r.stdout);
        if version == EtcdVersion::V3_5 {
            for m in &c.members[1..] {
                assert!(r.stdout.contains(&format!("quorum member add {} --peer-urls {} --wait", m.name, m.peer_url)), "{}", r.stdout);
            }
        }
        let first = Cluster::start_planned(&ClusterOptions::new(version, 1), work.path(), &plans[..1], &format!("m0={}", plans[0].peer_url), token).unwrap();
        let ep = first.endpoints_csv();
        let m1 = add_member_and_start(&ep, version, work.path(), &plans[1], token);
        let m2 = add_member_and_start(&ep, version, work.path(), &plans[2], token);
        (first, Some(m1), Some(m2))
    } else {
        // Every member at once from the survivor, started together.
        let mut cmd = crate::common::quorum();
        cmd.args(["recover", "--initial-cluster", &initial, "--all-members", "--name", "m0", "--initial-cluster-token", token, "--bump-revision", &bump])
            .arg("--from-data-dir")
            .arg(&survivor);
        cmd.arg("--data-dir").arg(work.path().join("{name}.etcd"));
        let r = run(cmd);
        assert_eq!(r.code, 0, "{}", r.stderr);
        for pl in &plans {
            assert!(
                r.stdout.contains(&format!("etcd --name {} --data-dir {} ", pl.name, pl.data_dir.display()))
                    && r.stdout.contains("--initial-cluster-state new"),
                "{}",
                r.stdout
            );
        }
        assert!(!r.stdout.contains("quorum member add"), "{}", r.stdout);
        (Cluster::start_planned(&ClusterOptions::new(version, 3), work.path(), &plans, &initial, token).unwrap(), None, None)
    };
    // From the survivor: every committed key, the writes after the backup included. From the
    // snapshot: the keyspace at the snapshot (no writes followed it in that run).
    for cl in [Some(&first), m1.as_ref(), m2.as_ref()].into_iter().flatten() {
        for ep in cl.endpoints() {
            let (_, after) = testkit::dump(std::slice::from_ref(&ep), 0).unwrap();
            assert!(after == before, "recovered keyspace at {ep} differs from the source (from_snapshot={from_snapshot})");
        }
    }
    let list = first.etcdctl(&["member", "list"]).unwrap();
    assert_eq!(list.lines().count(), 3, "{list}");
    if !from_snapshot {
        // The bump moved the revision past every one the old cluster could have handed out.
        let (rev, _) = testkit::dump(&first.endpoints(), 0).unwrap();
        let old_rev = before.iter().map(|kv| kv.mod_revision).max().unwrap();
        assert!(rev >= old_rev + bump.parse::<i64>().unwrap(), "revision {rev} after a bump of {bump} from {old_rev}");
    }
}

#[test]
fn quorum_loss_drill_from_survivor_3_5() {
    quorum_loss_drill(EtcdVersion::V3_5, false)
}
#[test]
fn quorum_loss_drill_from_snapshot_3_5() {
    quorum_loss_drill(EtcdVersion::V3_5, true)
}
#[test]
fn quorum_loss_drill_from_survivor_3_4() {
    quorum_loss_drill(EtcdVersion::V3_4, false)
}

/// A member alive but frozen (SIGSTOP: a paused VM, a stalled disk): every command's wait is
/// bounded by the command timeout and names that member; a snapshot from a follower comes
/// from the other follower; defrag refuses; after SIGCONT all is well again.
#[test]
fn a_frozen_member_is_named_and_waits_are_bounded() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    c.etcdctl(&["put", "/registry/configmaps/default/a", "x"]).unwrap();
    // Freeze a follower.
    let leader = json(&q(&c, &["status", "-w", "json"]))["leader"].as_str().unwrap().to_string();
    let st = json(&q(&c, &["status", "-w", "json"]));
    let frozen = st["statuses"].as_array().unwrap().iter().find(|s| s["id"] != leader.as_str()).unwrap()["name"].as_str().unwrap().to_string();
    let m = c.members.iter().find(|m| m.name == frozen).unwrap();
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &m.pid().unwrap().to_string()]).status().unwrap().success());
    signal("-STOP");
    let timed = |args: &[&str]| {
        let mut a = vec!["--command-timeout", "2s", "--dial-timeout", "2s"];
        a.extend_from_slice(args);
        let t = Instant::now();
        let r = q(&c, &a);
        (r, t.elapsed())
    };
    let (r, took) = timed(&["status"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let row = r.stdout.lines().find(|l| l.contains(&m.client_url)).unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(row.contains(&frozen) && (row.contains("command timeout") || row.contains("dial timeout")), "{row}");
    assert!(took < Duration::from_secs(15), "status took {took:?}");
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    let (r, took) = timed(&["snapshot", "save", snap.to_str().unwrap(), "--from", "follower", "-w", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let saved: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_ne!(saved["member"].as_str().unwrap(), frozen, "{saved}");
    assert!(took < Duration::from_secs(20), "snapshot save took {took:?}");
    let (r, took) = timed(&["defrag", "--pause", "0s"]);
    assert_ne!(r.code, 0, "defrag went ahead past a frozen member: {}", r.stdout);
    assert!(r.stderr.contains(&m.client_url) || r.stderr.contains(&frozen), "{}", r.stderr);
    assert!(took < Duration::from_secs(15), "defrag took {took:?}");
    eprintln!("frozen {frozen}: status, snapshot save --from follower and defrag answered; defrag said: {}", r.stderr.trim());
    signal("-CONT");
    let t = Instant::now();
    loop {
        let (r, _) = timed(&["status"]);
        if r.code == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not healthy after SIGCONT: {}", r.stdout);
        std::thread::sleep(Duration::from_millis(500));
    }
}
