//! `-w` values are honoured or refused: each command accepts the formats it renders (table,
//! or etcdctl's one-line `simple`, plus json and yaml; `snapshot status` all five of
//! etcdctl's), and anything else is refused by the parser with the list it supports.

use crate::common::{quorum, run};

#[test]
fn unsupported_formats_are_refused_with_the_list() {
    let cases: [(&[&str], &str, &str); 6] = [
        (&["status", "-w", "simple"], "simple", "table, json, yaml"),
        (&["status", "-w", "fields"], "fields", "table, json, yaml"),
        (&["drill", "--repo", "file:///nonexistent", "latest", "-w", "table"], "table", "simple, json, yaml"),
        (&["backups", "show", "--repo", "file:///nonexistent", "latest", "-w", "table"], "table", "simple, json, yaml"),
        (&["k8s", "ls", "x.db", "-w", "simple"], "simple", "table, json, yaml"),
        (&["snapshot", "save", "x.db", "-w", "table"], "table", "simple, json, yaml"),
    ];
    for (args, value, list) in cases {
        let mut c = quorum();
        c.args(args);
        let r = run(c);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("invalid value '{value}'")) && r.stderr.contains(&format!("[possible values: {list}]")), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn snapshot_status_keeps_every_etcdctl_format_and_k8s_takes_dash_o() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.db");
    for w in ["simple", "table", "json", "yaml", "fields"] {
        let mut c = quorum();
        c.args(["snapshot", "status"]).arg(&missing).args(["-w", w]);
        let r = run(c);
        assert!(!r.stderr.contains("invalid value"), "-w {w} is one of etcdctl's: {}", r.stderr);
    }
    let mut c = quorum();
    c.args(["k8s", "ls"]).arg(&missing).args(["-o", "json"]);
    let r = run(c);
    assert!(!r.stderr.contains("unexpected argument") && r.stderr.contains("missing.db"), "-o is -w for k8s ls: {}", r.stderr);
}
