//! Where the real etcd binaries of each supported version live.
//!
//! 3.4.23 comes from Debian bookworm's `etcd-server`/`etcd-client` (in `/usr/bin`); 3.5.16 from
//! trixie's packages unpacked by `scripts/setup.sh` into `.tools/etcd-3.5/usr/bin` (it brings
//! `etcdutl`). `QUORUM_ETCD34_BIN` / `QUORUM_ETCD35_BIN` override the directories.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An etcd release line the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtcdVersion {
    V3_4,
    V3_5,
}

impl EtcdVersion {
    pub const ALL: [EtcdVersion; 2] = [EtcdVersion::V3_4, EtcdVersion::V3_5];

    pub fn label(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "3.4",
            EtcdVersion::V3_5 => "3.5",
        }
    }

    /// Directory holding `etcd`, `etcdctl` (and `etcdutl` for 3.5).
    pub fn bin_dir(self) -> PathBuf {
        match self {
            EtcdVersion::V3_4 => std::env::var_os("QUORUM_ETCD34_BIN").map(PathBuf::from).unwrap_or_else(|| "/usr/bin".into()),
            EtcdVersion::V3_5 => std::env::var_os("QUORUM_ETCD35_BIN").map(PathBuf::from).unwrap_or_else(|| project_root().join(".tools/etcd-3.5/usr/bin")),
        }
    }

    pub fn etcd(self) -> PathBuf {
        self.bin_dir().join("etcd")
    }

    /// `etcdctl` with `ETCDCTL_API=3`.
    pub fn etcdctl(self) -> Command {
        let mut c = Command::new(self.bin_dir().join("etcdctl"));
        c.env("ETCDCTL_API", "3");
        c
    }

    /// The tool that reads snapshot files: `etcdctl` in 3.4, `etcdutl` in 3.5.
    pub fn snapshot_tool(self) -> Command {
        match self {
            EtcdVersion::V3_4 => self.etcdctl(),
            EtcdVersion::V3_5 => Command::new(self.bin_dir().join("etcdutl")),
        }
    }

    /// Fail with a clear message when the binaries are missing.
    pub fn require(self) -> anyhow::Result<()> {
        let e = self.etcd();
        anyhow::ensure!(e.exists(), "etcd {} not found at {}: run scripts/setup.sh", self.label(), e.display());
        Ok(())
    }
}

/// The repository root (two levels above this crate).
pub fn project_root() -> PathBuf {
    if let Some(r) = std::env::var_os("QUORUM_ROOT") {
        return r.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("project root")
}

/// The shared fixtures directory beside the checkout (`../shared/fixtures`).
pub fn shared_fixtures() -> PathBuf {
    project_root().join("../shared/fixtures")
}

/// A tool `scripts/setup.sh` installs system-wide (e.g. `promtool`), found on `PATH`, for a test
/// that needs it: when it is missing the test is skipped with a one-line notice naming it and
/// `bash scripts/setup.sh`; under `CI=true` (CI runs setup.sh first) its absence fails the test.
pub fn setup_tool(test: &str, program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()));
    if found.is_some() {
        return found;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {program} is not on PATH, and CI=true: run bash scripts/setup.sh");
    }
    // Written to the process's stderr directly: the test harness captures `eprintln!` of a
    // passing test, and this line must be seen.
    let line = format!("skipped {test}: {program} is not installed (bash scripts/setup.sh installs it)\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    None
}
