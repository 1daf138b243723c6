//! The committed Kubernetes field table is what the generator makes of the locked sources.

#[test]
fn committed_table_is_current() {
    let fresh = xtask::k8s_fields::generate().expect("generating the table");
    let path = xtask::k8s_fields::workspace_root().join(xtask::k8s_fields::OUTPUT);
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if committed != fresh {
        let line = committed.lines().zip(fresh.lines()).position(|(a, b)| a != b).map(|i| i + 1);
        panic!(
            "{} is stale (first difference at line {}; {} vs {} lines): run `cargo run -p xtask -- k8s-fields` and commit the result",
            path.display(),
            line.map_or("end".to_string(), |l| l.to_string()),
            committed.lines().count(),
            fresh.lines().count()
        );
    }
}
