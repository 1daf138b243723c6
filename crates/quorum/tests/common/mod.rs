//! Helpers shared by the integration tests: run the built `quorum` binary and the reference tools.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn quorum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quorum"))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command) -> Run {
    let Output { status, stdout, stderr } = c.output().expect("spawn");
    Run { code: status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
}

pub fn quorum_args(args: &[&str], file: &Path) -> Run {
    let mut c = quorum();
    c.args(args).arg(file);
    run(c)
}

/// A repository for `quorum` commands: its URL, passphrase file, and the flags every call needs.
pub struct Repo {
    pub url: String,
    pub flags: Vec<String>,
    pub envs: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Repo {
    /// A new `file://` repository in a temporary directory, initialised.
    pub fn local() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("repo").display());
        Repo::init(url, vec![], vec![], dir)
    }

    /// Initialise a repository at `url` with a data passphrase and a bundle passphrase.
    pub fn init(url: String, extra: Vec<String>, envs: Vec<(String, String)>, dir: tempfile::TempDir) -> Repo {
        let pass = dir.path().join("repo.pass");
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        let bpass = dir.path().join("bundle.pass");
        std::fs::write(&bpass, "a different bundle secret\n").unwrap();
        let mut flags = vec!["--repo".to_string(), url.clone(), "--password-file".into(), pass.display().to_string()];
        flags.extend(extra);
        let r = Repo { url, flags, envs, _dir: dir };
        let out = r.q(&["repo", "init", "--bundle-password-file", bpass.to_str().unwrap()]);
        assert_eq!(out.code, 0, "init: {} {}", out.stdout, out.stderr);
        r
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn bundle_flags(&self) -> Vec<String> {
        vec!["--bundle-password-file".into(), self.dir().join("bundle.pass").display().to_string()]
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = quorum();
        // Subcommand words first, then the repository flags (they belong to the leaf command).
        c.args(args).args(&self.flags);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    pub fn q(&self, args: &[&str]) -> Run {
        run(self.cmd(args))
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.q(args);
        assert_eq!(r.code, 0, "quorum {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
        r
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        let r = self.ok(&a);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    /// Backup ids, newest first.
    pub fn backup_ids(&self) -> Vec<String> {
        let v = self.json(&["backups", "list"]);
        v["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect()
    }
}

/// A tokio runtime for tests that call the libraries directly.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

impl Repo {
    /// The repository opened through the `repo` library (for what the CLI does not show).
    pub async fn open_lib(&self) -> repo::Repository {
        let loc = repo::Location::open(&self.url, &repo::StoreOptions::default(), false).unwrap();
        let pass = std::fs::read(self.dir().join("repo.pass")).unwrap();
        let unlock = repo::Unlock { data: Some(repo::crypto::Secret::passphrase(pass).unwrap()), bundle: None };
        repo::Repository::open(loc, &unlock).await.unwrap()
    }
}

/// Every file below `p`, sorted.
pub fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// Standard base64 with padding (how EncryptionConfiguration files give keys).
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A free TCP port on 127.0.0.1 (for an agent's `listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` from 127.0.0.1:`port`: (status, headers lower-cased, body), or None when nothing
/// answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((code, head.to_ascii_lowercase(), body.to_string()))
}
