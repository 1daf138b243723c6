//! Real object-storage servers (and an HTTP proxy) on 127.0.0.1 for integration tests: each is
//! started on a free port in its own temporary directory, waited for until it answers, and killed
//! by PID (SIGKILL, then reaped) when its handle is dropped.
//!
//! | server | what runs | client helper |
//! | --- | --- | --- |
//! | [`S3Server::start`] | moto's S3 server (`.tools/pyenv/bin/moto_server`) | [`S3Server::store`] |
//! | [`S3Server::start_write_once`] | moto behind a write-once filter (`crates/testkit/servers/worm_s3.py`) | same |
//! | [`AzureServer::start`] | Azurite's blob service (`.tools/node/node_modules/.bin/azurite-blob`) | [`AzureServer::store`] |
//! | [`GcsServer::start`] | gcp-storage-emulator (`.tools/pyenv/bin/gcp-storage-emulator`) | [`GcsServer::store`] |
//! | [`Proxy::start`] | tinyproxy (Debian's `/usr/bin/tinyproxy`) | [`Proxy::url`], [`Proxy::requests_logged`] |
//!
//! `bash scripts/setup.sh` installs all of them. The `*_builder` helpers return the configured
//! `object_store` builders so a test can add options (a proxy, retries) before building.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use object_store::{path::Path, ObjectStoreExt};
//! let s3 = testkit::servers::S3Server::start()?;
//! s3.create_bucket("backups")?;
//! let store = s3.store("backups")?;
//! store.put(&Path::from("a/b"), b"hello".to_vec().into()).await?;
//! # Ok(()) }
//! ```
//!
//! Known limits of the emulators are documented on each server type (see [`GcsServer`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::Engine as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::gcp::{GcpSigningCredential, GoogleCloudStorage, GoogleCloudStorageBuilder, ServiceAccountKey};
use object_store::{ObjectStore, StaticCredentialProvider};
use sha2::{Digest, Sha256};

use crate::tools::project_root;

/// How long a server may take to answer after it was spawned (Python imports are slow on a busy
/// 2-core machine running tests in parallel).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Spawn attempts, each on a new free port (another process may grab the port in between).
const START_ATTEMPTS: usize = 3;

const SETUP_HINT: &str = "run `bash scripts/setup.sh` to install the test servers";

/// `<workspace>/.tools`, or `QUORUM_TOOLS` if set.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("QUORUM_TOOLS").map(PathBuf::from).unwrap_or_else(|| project_root().join(".tools"))
}

fn require_exe(path: PathBuf, what: &str) -> Result<PathBuf> {
    ensure!(path.exists(), "{what} not found at {}: {SETUP_HINT}", path.display());
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A spawned server process with its temporary directory; SIGKILLed and reaped on drop.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Child,
    port: u16,
    /// Where the process's stdout and stderr go.
    output: PathBuf,
    // Declared last: removed after the process is dead.
    dir: tempfile::TempDir,
}

impl Proc {
    /// Spawn `make(port, dir)` on a free port and wait until `probe(port)` recognises the server;
    /// retried on a new port if the process dies early (e.g. the port was taken meanwhile).
    fn start(name: &'static str, make: impl Fn(u16, &Path) -> Result<Command>, probe: impl Fn(u16) -> Result<bool>) -> Result<Proc> {
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new().prefix(&format!("testkit-{name}-")).tempdir()?;
            let port = free_port()?;
            let output = dir.path().join(format!("{name}.out"));
            let mut cmd = make(port, dir.path())?;
            let out = std::fs::File::create(&output)?;
            cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
            let child = cmd.spawn().with_context(|| format!("spawn {name}: {cmd:?}"))?;
            let mut p = Proc { name, child, port, output, dir };
            match p.wait_ready(&probe) {
                Ok(()) => return Ok(p),
                Err(e) => last_err = Some(e), // `p` is killed here
            }
        }
        Err(last_err.unwrap())
    }

    fn wait_ready(&mut self, probe: &impl Fn(u16) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_probe = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up ({status}); its output:\n{}", self.name, self.output_tail());
            }
            if TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(500)).is_ok() {
                match probe(self.port) {
                    Ok(true) => return Ok(()),
                    Ok(false) => last_probe = "port answered, but not as this server (port taken?)".into(),
                    Err(e) => last_probe = format!("{e:#}"),
                }
            }
            if Instant::now() > deadline {
                bail!("{} did not answer on 127.0.0.1:{} within {:?} ({last_probe}); its output:\n{}", self.name, self.port, START_TIMEOUT, self.output_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last 8 KiB of the process's output.
    fn output_tail(&self) -> String {
        let s = std::fs::read(&self.output).unwrap_or_default();
        String::from_utf8_lossy(&s[s.len().saturating_sub(8192)..]).into_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL to the PID
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 exchange over a fresh connection (`Connection: close`).
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// The header block, as received.
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one HTTP request to 127.0.0.1:`port` (used for set-up calls and readiness probes).
pub fn http_request(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Result<HttpReply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP reply to {method} {path}"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status =
        headers.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("no status in HTTP reply to {method} {path}: {headers}"))?;
    let mut reply = HttpReply { status, headers, body: raw[split + 4..].to_vec() };
    if reply.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        reply.body = dechunk(&reply.body);
    }
    Ok(reply)
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol]).ok().and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0 && b.len() >= eol + 2 + n) else { break };
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// S3 (moto)

/// An S3-compatible server: moto (`moto_server`), or moto behind a write-once filter.
///
/// moto accepts any credentials; use [`S3Server::ACCESS_KEY`], [`S3Server::SECRET_KEY`] and
/// [`S3Server::REGION`]. Requests must be path-style (the builder helpers set that).
#[derive(Debug)]
pub struct S3Server {
    proc: Proc,
    write_once: bool,
}

impl S3Server {
    pub const ACCESS_KEY: &'static str = "testkit";
    pub const SECRET_KEY: &'static str = "testkit-secret";
    pub const REGION: &'static str = "us-east-1";

    /// `moto_server -H 127.0.0.1 -p PORT`.
    pub fn start() -> Result<S3Server> {
        let exe = require_exe(tools_dir().join("pyenv/bin/moto_server"), "moto_server")?;
        let proc = Proc::start(
            "moto",
            |port, dir| {
                let mut c = Command::new(&exe);
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]).current_dir(dir).env("MOTO_PORT", port.to_string());
                Ok(c)
            },
            probe_moto,
        )?;
        Ok(S3Server { proc, write_once: false })
    }

    /// An S3 server whose objects are write-once, like a bucket under object lock: a second PUT of
    /// an existing key (plain, copy, or multipart completion) answers 403 AccessDenied (412
    /// PreconditionFailed when sent with `If-None-Match: *`), and every DELETE of an object or
    /// bucket, and multi-object delete, answers 403 AccessDenied with an S3 XML error body.
    /// Aborting a multipart upload is allowed. See `crates/testkit/servers/worm_s3.py`.
    pub fn start_write_once() -> Result<S3Server> {
        let python = require_exe(tools_dir().join("pyenv/bin/python"), "the test-server Python venv")?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/worm_s3.py");
        let proc = Proc::start(
            "worm-s3",
            |port, dir| {
                let mut c = Command::new(&python);
                c.arg(&script).args(["--host", "127.0.0.1", "--port", &port.to_string()]).current_dir(dir);
                Ok(c)
            },
            probe_moto,
        )?;
        Ok(S3Server { proc, write_once: true })
    }

    pub fn is_write_once(&self) -> bool {
        self.write_once
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.proc.dir.path()
    }

    /// What the server printed so far (its request log).
    pub fn output(&self) -> String {
        self.proc.output_tail()
    }

    /// Create a bucket (a plain `PUT /NAME`; moto needs no signature for it).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let r = http_request(self.proc.port, "PUT", &format!("/{name}"), &[], b"")?;
        ensure!(r.status == 200, "create bucket {name}: HTTP {} {}", r.status, r.body_text());
        Ok(())
    }

    /// `AmazonS3Builder` for `bucket`: endpoint, `allow_http`, path-style requests (virtual
    /// hosted style off), the fixed access key/secret, region `us-east-1`.
    pub fn builder(&self, bucket: &str) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(Self::ACCESS_KEY)
            .with_secret_access_key(Self::SECRET_KEY)
            .with_region(Self::REGION)
            .with_bucket_name(bucket)
    }

    /// The concrete store (it implements `object_store::signer::Signer`).
    pub fn s3(&self, bucket: &str) -> Result<AmazonS3> {
        Ok(self.builder(bucket).build()?)
    }

    pub fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(self.s3(bucket)?))
    }
}

fn probe_moto(port: u16) -> Result<bool> {
    // moto answers `GET /` (ListBuckets) with its Werkzeug server header.
    let r = http_request(port, "GET", "/", &[], b"")?;
    Ok(r.header("server").is_some_and(|s| s.contains("Werkzeug")))
}

// ---------------------------------------------------------------------------------------------
// Azure (Azurite)

/// Azurite's blob service, path-style: the account `devstoreaccount1` lives at
/// `http://127.0.0.1:PORT/devstoreaccount1` (see [`AzureServer::endpoint`]).
///
/// Started with `--skipApiVersionCheck --loose --disableTelemetry` and data in its temporary
/// directory. The client helpers use object_store's plain endpoint mode (`with_endpoint`), not
/// `with_use_emulator(true)`: the latter takes the address only from the process-wide
/// `AZURITE_BLOB_STORAGE_URL` variable (default port 10000), which can't differ per test.
#[derive(Debug)]
pub struct AzureServer {
    proc: Proc,
}

impl AzureServer {
    /// The well-known development account and key Azurite accepts.
    pub const ACCOUNT: &'static str = "devstoreaccount1";
    pub const KEY: &'static str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    /// The x-ms-version the set-up calls use.
    const API_VERSION: &'static str = "2021-08-06";

    /// `azurite-blob --blobHost 127.0.0.1 --blobPort PORT --location DIR/data --skipApiVersionCheck
    /// --loose --disableTelemetry`.
    pub fn start() -> Result<AzureServer> {
        let exe = require_exe(tools_dir().join("node/node_modules/.bin/azurite-blob"), "azurite-blob")?;
        let proc = Proc::start(
            "azurite",
            |port, dir| {
                let data = dir.join("data");
                std::fs::create_dir_all(&data)?;
                let mut c = Command::new(&exe);
                c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
                    .arg(&data)
                    .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
                    .current_dir(dir);
                Ok(c)
            },
            |port| {
                let r = http_request(port, "GET", "/", &[], b"")?;
                Ok(r.header("server").is_some_and(|s| s.starts_with("Azurite-Blob")))
            },
        )?;
        Ok(AzureServer { proc })
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    /// The account's blob endpoint: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.proc.port, Self::ACCOUNT)
    }

    pub fn dir(&self) -> &Path {
        self.proc.dir.path()
    }

    pub fn output(&self) -> String {
        self.proc.output_tail()
    }

    /// Create a container (Create Container, authorised with SharedKey).
    pub fn create_container(&self, name: &str) -> Result<()> {
        let date = http_date(SystemTime::now());
        let path = format!("/{}/{name}", Self::ACCOUNT);
        let string_to_sign =
            format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{}\n/{}{path}\nrestype:container", Self::API_VERSION, Self::ACCOUNT);
        let key = base64::engine::general_purpose::STANDARD.decode(Self::KEY)?;
        let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let headers = [("x-ms-date", date), ("x-ms-version", Self::API_VERSION.to_string()), ("Authorization", format!("SharedKey {}:{sig}", Self::ACCOUNT))];
        let r = http_request(self.proc.port, "PUT", &format!("{path}?restype=container"), &headers, b"")?;
        ensure!(r.status == 201, "create container {name}: HTTP {} {}", r.status, r.body_text());
        Ok(())
    }

    /// `MicrosoftAzureBuilder` for `container`: account + key, `with_endpoint(endpoint())`,
    /// `allow_http`.
    pub fn builder(&self, container: &str) -> MicrosoftAzureBuilder {
        MicrosoftAzureBuilder::new()
            .with_account(Self::ACCOUNT)
            .with_access_key(Self::KEY)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_container_name(container)
    }

    /// The concrete store (it implements `Signer`: SAS URLs signed with the account key).
    pub fn azure(&self, container: &str) -> Result<MicrosoftAzure> {
        Ok(self.builder(container).build()?)
    }

    pub fn store(&self, container: &str) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(self.azure(container)?))
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

/// RFC 1123 date, e.g. `Mon, 23 Nov 2026 15:55:32 GMT`.
fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

// ---------------------------------------------------------------------------------------------
// GCS (gcp-storage-emulator)

/// gcp-storage-emulator, in memory.
///
/// **Barely usable through object_store.** object_store's GCS client speaks the XML API
/// (`PUT/GET/HEAD/DELETE {base}/{bucket}/{object}`, `GET {base}/{bucket}?list-type=2`,
/// `POST ...?uploads` for multipart) and requires `ETag` and `Last-Modified` on answers. The
/// emulator (2026.7.19) implements the JSON API and, of the XML API, only object GET and PUT,
/// without those headers. So: `put` stores the bytes but object_store reports `MissingEtag`;
/// `get`/`get_range` fail with `MissingLastModified`; `head`, `list`, `delete` and
/// `put_multipart` get 501; `copy` gets a dropped connection. Bucket names must be alphanumeric
/// (object_store percent-encodes `-`, `.` and `_`, which the emulator's routes don't accept).
/// Signed GET URLs work with [`GcsServer::signing_gcs`] (the emulator ignores the signature).
/// [`GcsServer::upload`] / [`GcsServer::download`] reach objects through the JSON API. The
/// `gcs_emulator` test in `tests/servers.rs` pins each of these outcomes.
#[derive(Debug)]
pub struct GcsServer {
    proc: Proc,
    service_account: PathBuf,
}

impl GcsServer {
    pub const CLIENT_EMAIL: &'static str = "testkit@testkit.iam.gserviceaccount.com";

    /// `gcp-storage-emulator start --host 127.0.0.1 --port PORT --in-memory`, and a
    /// service-account file for object_store in its temporary directory.
    pub fn start() -> Result<GcsServer> {
        let exe = require_exe(tools_dir().join("pyenv/bin/gcp-storage-emulator"), "gcp-storage-emulator")?;
        let proc = Proc::start(
            "gcs",
            |port, dir| {
                let mut c = Command::new(&exe);
                c.args(["start", "--host", "127.0.0.1", "--port", &port.to_string(), "--in-memory"]).current_dir(dir).env("STORAGE_BASE", dir);
                Ok(c)
            },
            |port| {
                let r = http_request(port, "GET", "/", &[], b"")?;
                Ok(r.status == 200 && r.header("server").is_some_and(|s| s.contains("BaseHTTP")))
            },
        )?;
        // object_store reads `gcs_base_url` and `disable_oauth` from a service-account file; with
        // `disable_oauth` it sends an empty bearer token and never calls Google's OAuth endpoint.
        // `private_key`, `private_key_id` and `client_email` must be present (not defaulted).
        let service_account = proc.dir.path().join("service-account.json");
        let json = serde_json::json!({
            "gcs_base_url": format!("http://127.0.0.1:{}", proc.port),
            "disable_oauth": true,
            "client_email": Self::CLIENT_EMAIL,
            "private_key": "",
            "private_key_id": "",
        });
        std::fs::write(&service_account, serde_json::to_vec_pretty(&json)?)?;
        Ok(GcsServer { proc, service_account })
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// The service-account JSON (`gcs_base_url`, `disable_oauth: true`).
    pub fn service_account_path(&self) -> &Path {
        &self.service_account
    }

    pub fn dir(&self) -> &Path {
        self.proc.dir.path()
    }

    pub fn output(&self) -> String {
        self.proc.output_tail()
    }

    /// Create a bucket through the JSON API (`POST /storage/v1/b`).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "name": name }))?;
        let r = http_request(self.proc.port, "POST", "/storage/v1/b?project=testkit", &[("Content-Type", "application/json".into())], &body)?;
        ensure!(r.status == 200, "create bucket {name}: HTTP {} {}", r.status, r.body_text());
        Ok(())
    }

    /// Upload `bytes` as `name` through the JSON API (`uploadType=media`), bypassing object_store.
    pub fn upload(&self, bucket: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let path = format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}", percent_encode(name));
        let r = http_request(self.proc.port, "POST", &path, &[("Content-Type", "application/octet-stream".into())], bytes)?;
        ensure!(r.status == 200, "upload {bucket}/{name}: HTTP {} {}", r.status, r.body_text());
        Ok(())
    }

    /// Download `name` through the JSON API (`alt=media`), bypassing object_store.
    pub fn download(&self, bucket: &str, name: &str) -> Result<Vec<u8>> {
        let path = format!("/storage/v1/b/{bucket}/o/{}?alt=media", percent_encode(name));
        let r = http_request(self.proc.port, "GET", &path, &[], b"")?;
        ensure!(r.status == 200, "download {bucket}/{name}: HTTP {} {}", r.status, r.body_text());
        Ok(r.body)
    }

    /// `GoogleCloudStorageBuilder` for `bucket` with `with_service_account_path(...)` only (the
    /// file carries the base URL and `disable_oauth`; the builder allows plain HTTP by default).
    pub fn builder(&self, bucket: &str) -> GoogleCloudStorageBuilder {
        GoogleCloudStorageBuilder::new().with_service_account_path(self.service_account.to_string_lossy()).with_bucket_name(bucket)
    }

    pub fn gcs(&self, bucket: &str) -> Result<GoogleCloudStorage> {
        Ok(self.builder(bucket).build()?)
    }

    pub fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(self.gcs(bucket)?))
    }

    /// A store that can sign URLs: as [`GcsServer::builder`], plus signing credentials holding a
    /// freshly generated RSA key (`openssl genpkey`), so V4 signed URLs are computed locally
    /// instead of through the IAM `signBlob` API. The emulator does not check signatures.
    pub fn signing_gcs(&self, bucket: &str) -> Result<GoogleCloudStorage> {
        let key = self.proc.dir.path().join("signing-key.pem");
        if !key.exists() {
            let out = Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&key)
                .output()
                .context("run openssl (install it with `bash scripts/setup.sh`)")?;
            ensure!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
        }
        let pem = std::fs::read(&key)?;
        let credential = GcpSigningCredential { email: Self::CLIENT_EMAIL.to_string(), private_key: Some(ServiceAccountKey::from_pem(&pem)?) };
        Ok(self.builder(bucket).with_signing_credentials(Arc::new(StaticCredentialProvider::new(credential))).build()?)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP proxy (tinyproxy)

/// tinyproxy in the foreground with its own configuration, listening on 127.0.0.1 and logging
/// every request line (`LogLevel Info`), so tests can tell which requests went through it.
///
/// Plain-HTTP proxying in tinyproxy 1.11 is one request per client connection, yet it keeps the
/// client connection open while the upstream (e.g. moto) keeps its side alive: a client that
/// reuses the pooled connection then waits for its request timeout (30 s in object_store) before
/// retrying. Clients should therefore not pool connections to it: use [`Proxy::client_options`]
/// (`with_pool_max_idle_per_host(0)`). HTTPS targets go through CONNECT tunnels, which don't
/// have this problem.
#[derive(Debug)]
pub struct Proxy {
    proc: Proc,
    log: PathBuf,
}

impl Proxy {
    /// `tinyproxy -d -c DIR/tinyproxy.conf` (`Port`, `Listen 127.0.0.1`, `Allow 127.0.0.1`,
    /// `LogFile`, `LogLevel Info`). `TESTKIT_TINYPROXY` overrides the executable.
    pub fn start() -> Result<Proxy> {
        let exe = match std::env::var_os("TESTKIT_TINYPROXY") {
            Some(p) => PathBuf::from(p),
            None => ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or_else(|| anyhow!("tinyproxy not found in /usr/bin or /usr/sbin: {SETUP_HINT}"))?,
        };
        let proc = Proc::start(
            "tinyproxy",
            |port, dir| {
                let conf = dir.join("tinyproxy.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "Port {port}\nListen 127.0.0.1\nTimeout 120\nMaxClients 100\nAllow 127.0.0.1\n\
                         DisableViaHeader Yes\nLogFile \"{}\"\nLogLevel Info\n",
                        dir.join("tinyproxy.log").display()
                    ),
                )?;
                let mut c = Command::new(&exe);
                c.arg("-d").arg("-c").arg(&conf).current_dir(dir);
                Ok(c)
            },
            |port| {
                // A direct (non-proxy) request gets tinyproxy's own error page.
                let r = http_request(port, "GET", "/", &[], b"")?;
                Ok(r.header("server").is_some_and(|s| s.starts_with("tinyproxy")))
            },
        )?;
        let log = proc.dir.path().join("tinyproxy.log");
        Ok(Proxy { proc, log })
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    /// `http://127.0.0.1:PORT`, for `ClientOptions::with_proxy_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// `ClientOptions` for an object_store client that goes through this proxy: `allow_http`,
    /// `with_proxy_url(url())`, and no idle pooled connections (see [`Proxy`]). Builders'
    /// `with_client_options` replaces all client options, so set other options on this value.
    pub fn client_options(&self) -> object_store::ClientOptions {
        object_store::ClientOptions::new().with_allow_http(true).with_proxy_url(self.url()).with_pool_max_idle_per_host(0)
    }

    /// tinyproxy's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every request tinyproxy forwarded, as `METHOD URL` (e.g. `PUT http://127.0.0.1:4000/b/k`),
    /// oldest first. The readiness probe's direct `GET /` is not among them.
    pub fn requests_logged(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("Request (file descriptor ")?.1.split_once("): "))
            .map(|(_, req)| req.trim_end().trim_end_matches(" HTTP/1.1").trim_end_matches(" HTTP/1.0").to_string())
            .filter(|r| !r.ends_with(" /"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn http_date_format() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(1_795_449_332)), "Mon, 23 Nov 2026 15:55:32 GMT");
    }

    #[test]
    fn hmac_sha256_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn dechunk_basic() {
        assert_eq!(dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), b"hello world");
    }
}
