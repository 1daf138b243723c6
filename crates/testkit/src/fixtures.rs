//! The published test data under `../shared/fixtures` (read in place, never copied).

use std::path::PathBuf;

use crate::tools::shared_fixtures;

/// Whether the published fixtures (`../shared/fixtures`) sit beside the checkout, for a test
/// that needs them: a user's clone does not have them, so such a test is skipped with a
/// one-line notice naming it; under `CI=true` (CI always has them) their absence fails it.
pub fn fixtures_available(test: &str) -> bool {
    let dir = shared_fixtures();
    if dir.is_dir() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {} is absent, and CI=true: CI must have the published fixtures beside the checkout", dir.display());
    }
    // Written to the process's stderr directly: the test harness captures `eprintln!` of a
    // passing test, and this line must be seen.
    let line = format!("skipped {test}: the published fixtures ({}) are not beside this checkout\n", dir.display());
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// Bytes of `../shared/fixtures/kube/<path>`.
pub fn kube_fixture(path: &str) -> Vec<u8> {
    let p: PathBuf = shared_fixtures().join("kube").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (the shared fixtures must sit beside the checkout)", p.display()))
}

/// Hex vector `name` of `kube/vectors.txt`: the hex lines after its `## <name> ` header, up to
/// the next comment or blank line (a leading decimal length on the first line is skipped).
pub fn kube_vector(name: &str) -> Vec<u8> {
    let text = String::from_utf8(kube_fixture("vectors.txt")).expect("vectors.txt is text");
    let mut hex = String::new();
    for l in text.lines().skip_while(|l| !l.starts_with(&format!("## {name} "))).skip(1) {
        if l.starts_with('#') || l.trim().is_empty() || l.starts_with("->") {
            if hex.is_empty() {
                continue;
            }
            break;
        }
        let l = l.trim();
        let l = match l.split_once(' ') {
            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) && hex.is_empty() => rest,
            _ => l,
        };
        hex.push_str(l);
    }
    assert!(!hex.is_empty(), "vector {name} not found in vectors.txt");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}
