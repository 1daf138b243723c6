//! The sanitization rules in docs/kubernetes.md are the ones in the code.
//! `QUORUM_BLESS=1` rewrites the table in the doc.

#[test]
fn docs_table_equals_the_rules() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kubernetes.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- rules-table:start -->\n", "<!-- rules-table:end -->");
    let a = doc.find(start).expect("start marker") + start.len();
    let b = doc.find(end).expect("end marker");
    let table = kube_data::sanitize::rules_table();
    if std::env::var_os("QUORUM_BLESS").is_some() {
        std::fs::write(&path, format!("{}{}{}", &doc[..a], table, &doc[b..])).unwrap();
        return;
    }
    assert_eq!(&doc[a..b], table, "docs/kubernetes.md's rules table differs from kube_data::sanitize::RULES (QUORUM_BLESS=1 rewrites it)");
}
