//! `quorum recover plan` when quorum is lost and nothing usable was given: it says where to
//! look (steps) and exits 1, instead of printing a cost with no steps and exiting 0.

use crate::common::{quorum, run};

#[test]
fn no_usable_source_gives_steps_and_fails() {
    let d = tempfile::tempdir().unwrap();
    let broken = d.path().join("broken.db");
    std::fs::write(&broken, b"not a bbolt file").unwrap();
    for extra in [vec![], vec!["--snapshot".to_string(), broken.display().to_string()]] {
        let mut c = quorum();
        c.args(["recover", "plan", "--endpoints", "127.0.0.1:1", "--dial-timeout", "1s"]).args(&extra);
        let r = run(c);
        assert_eq!(r.code, 1, "{extra:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains("QUORUM LOST") && r.stdout.contains("1. find a survivor") && r.stdout.contains("quorum recover plan --snapshot latest.db"),
            "{}",
            r.stdout
        );
        assert!(r.stderr.contains("no usable source was given"), "{}", r.stderr);
        if !extra.is_empty() {
            assert!(r.stdout.contains("NOT usable"), "the broken snapshot is listed: {}", r.stdout);
        }
    }
}
