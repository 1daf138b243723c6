//! The help as a user meets it: completion scripts a shell loads, manual pages `man` renders,
//! and offline commands whose help carries no etcd connection flags.

use crate::common::{quorum, run};

#[test]
fn bash_loads_the_completion_script_and_completes_subcommands() {
    if testkit::setup_tool("help_pages::bash_loads_the_completion_script", "bash").is_none() {
        return;
    }
    let mut c = quorum();
    c.args(["completions", "bash"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("quorum.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    // Load it, then ask the completion function for `quorum snap<TAB>` and `quorum backups <TAB>`.
    let probe = format!(
        r#"source {s}
f=$(complete -p quorum | sed -E 's/.*-F ([^ ]+).*/\1/')
COMP_WORDS=(quorum snap); COMP_CWORD=1; COMP_LINE="quorum snap"; COMP_POINT=${{#COMP_LINE}}
$f quorum snap quorum; echo "one: ${{COMPREPLY[*]}}"
COMP_WORDS=(quorum backups ""); COMP_CWORD=2; COMP_LINE="quorum backups "; COMP_POINT=${{#COMP_LINE}}
$f quorum "" backups; echo "two: ${{COMPREPLY[*]}}""#,
        s = script.display()
    );
    let out = std::process::Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("one: snapshot"), "{text}");
    let two = text.lines().find(|l| l.starts_with("two:")).unwrap();
    for sub in ["list", "show", "get", "url", "consolidate", "deltas"] {
        assert!(two.split_whitespace().any(|w| w == sub), "backups {sub} not offered: {two}");
    }
    for shell in ["zsh", "fish"] {
        let mut c = quorum();
        c.args(["completions", shell]);
        let r = run(c);
        assert!(r.code == 0 && r.stdout.contains("snapshot") && r.stdout.contains("backups"), "{shell}: {}", r.stderr);
    }
}

#[test]
fn man_renders_the_pages() {
    if testkit::setup_tool("help_pages::man_renders_the_pages", "man").is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut c = quorum();
    c.args(["man", "--dir"]).arg(d.path());
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for page in ["quorum.1", "quorum-status.1", "quorum-snapshot-restore.1", "quorum-backups-show.1"] {
        let p = d.path().join(page);
        assert!(p.is_file(), "{page} not written");
        let out = std::process::Command::new("man").arg("-l").arg(&p).env("MANPAGER", "cat").env("MANWIDTH", "100").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("SYNOPSIS"), "{page}: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let status = std::process::Command::new("man").arg("-l").arg(d.path().join("quorum-status.1")).env("MANPAGER", "cat").output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("--endpoints") && text.contains("Examples:"), "{text}");
    // Without --dir, quorum(1) on stdout; a missing directory is named.
    let mut c = quorum();
    c.arg("man");
    let r = run(c);
    assert!(r.code == 0 && r.stdout.contains(".TH quorum 1"), "{}", &r.stdout[..r.stdout.len().min(300)]);
    let mut c = quorum();
    c.args(["man", "--dir"]).arg(d.path().join("nosuch"));
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nosuch is not a directory") && r.stderr.contains("mkdir -p"), "{}", r.stderr);
}

#[test]
fn offline_help_has_no_etcd_flags_and_ends_with_examples() {
    for args in [&["snapshot", "restore", "--help"][..], &["repo", "init", "--help"], &["k8s", "get", "--help"]] {
        let mut c = quorum();
        c.args(args);
        let r = run(c);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(!r.stdout.contains("--endpoints") && !r.stdout.contains("--cacert") && r.stdout.contains("Examples:"), "{args:?}:\n{}", r.stdout);
    }
    let mut c = quorum();
    c.arg("--help");
    let r = run(c);
    assert!(r.stdout.contains("Examples:") && r.stdout.contains("quorum completions bash"), "{}", r.stdout);
}
