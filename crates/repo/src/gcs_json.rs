//! An [`ObjectStore`] over Google Cloud Storage's JSON API, for `gs://bucket/prefix` with
//! `--endpoint` (emulators, GCS-compatible gateways, or `https://storage.googleapis.com`).
//!
//! Why: `object_store`'s own GCS client speaks the XML API (`PUT/GET/HEAD/DELETE
//! /{bucket}/{object}`, `?list-type=2`, `?uploads`) and insists on `ETag`/`Last-Modified`
//! headers. gcp-storage-emulator (the GCS emulator our tests run) implements the JSON API but,
//! of the XML API, only object GET and PUT without those headers, so nothing but a signed GET
//! works through `object_store` there. The JSON API is a documented, supported GCS API, so this
//! client works against real GCS too. Without `--endpoint`, `object_store`'s client is used.
//!
//! | operation | request |
//! |---|---|
//! | `put_opts` | `POST /upload/storage/v1/b/B/o?uploadType=media&name=N` (empty objects: `uploadType=multipart`, which the emulator needs) |
//! | `PutMode::Create` | metadata read first (exists → `AlreadyExists`), then the upload with `ifGenerationMatch=0` (412 → `AlreadyExists`) |
//! | `PutMode::Update` | the same with `ifGenerationMatch=<version>` (412 → `Precondition`) |
//! | `put_multipart_opts` | parts are written at their offsets into an anonymous temporary file (local disk bounded by the object's size), uploaded with one media upload by `complete` |
//! | `get_opts` / `head` | metadata `GET /storage/v1/b/B/o/N` (size, `updated`, `etag`, `generation`), preconditions checked against it, then `GET ...?alt=media&generation=G` with a bounded `Range` |
//! | `delete` | `DELETE /storage/v1/b/B/o/N` (404 → `NotFound`, 403 → `PermissionDenied`) |
//! | `list`, `list_with_delimiter` | `GET /storage/v1/b/B/o?prefix=P/[&delimiter=/]`, following `nextPageToken` |
//! | `copy_opts` | `POST .../o/SRC/rewriteTo/b/B/o/DST`, repeated with `rewriteToken` until `done` |
//! | presigned URLs | [`Signer`]: `object_store`'s V4 signing with the service-account key from the environment, for `{endpoint}/{bucket}/{object}`; without one, a clear error |
//!
//! What gcp-storage-emulator lacks, and how it is handled: it ignores `ifGenerationMatch`, so
//! `Create` relies on the metadata check made before the upload (racy between two writers on
//! the emulator; authoritative on servers that honour the precondition); it fails on an empty
//! media upload (hence `uploadType=multipart` for empty objects); it understands only
//! `Range: bytes=A-B` / `bytes=A-` (we always send `bytes=A-B`, computed from the size read
//! first) and a 200 answer to a ranged request is sliced here; it does not paginate (one page).
//!
//! Requests: `Authorization: Bearer $GOOGLE_OAUTH_ACCESS_TOKEN` when that is set, no
//! authorization otherwise (emulators); the repository's proxy decision (the HTTP client never
//! reads the proxy environment); a per-request timeout (a file upload gets one more second per
//! MiB) and a read timeout (no byte for half the retry deadline, at most 30 s); retries on
//! transport errors, 429 and 5xx, 0.25 s, 1 s, 4 s, then 10 s apart, until the retry deadline.
use std::fmt;
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    Attributes, CopyMode, CopyOptions, Error, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

const STORE: &str = "GCS (JSON API)";

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct GcsJsonOptions {
    /// `http://127.0.0.1:4443`, `https://storage.googleapis.com`, ...
    pub endpoint: String,
    pub bucket: String,
    /// The proxy to use (the repository's decision for the endpoint's host), or none.
    pub proxy: Option<String>,
    pub timeout: Duration,
    /// Transient failures are retried with back-off until this long after the first try.
    pub retry_deadline: Duration,
    /// Keep idle connections for reuse (off for plain-HTTP forwarding proxies; see location.rs).
    pub pool_idle: bool,
    /// Signs presigned URLs; `None`: `backups url` explains that no key is configured.
    pub signer: Option<Arc<dyn Signer>>,
}

/// Whether the environment names a Google service-account key (or application-default
/// credentials) that `object_store` can sign URLs with.
pub fn signing_key_configured() -> bool {
    ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "SERVICE_ACCOUNT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The store; cheap to clone.
#[derive(Debug, Clone)]
pub struct GcsJson {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    base: String,
    bucket: String,
    token: Option<String>,
    timeout: Duration,
    retry_deadline: Duration,
    signer: Option<Arc<dyn Signer>>,
}

/// Percent-encode all but RFC 3986 unreserved characters (object names contain `/`).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn generic(msg: impl Into<String>) -> Error {
    Error::Generic { store: STORE, source: msg.into().into() }
}

/// Turn a non-success answer into the matching `object_store` error.
async fn check(resp: Response, path: &Path, op: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let mut body = resp.text().await.unwrap_or_default();
    if body.len() > 300 {
        let mut cut = 300;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push('…');
    }
    let source = format!("{op}: HTTP {status}: {}", body.trim()).into();
    let path = path.to_string();
    Err(match status {
        StatusCode::NOT_FOUND => Error::NotFound { path, source },
        StatusCode::FORBIDDEN => Error::PermissionDenied { path, source },
        StatusCode::UNAUTHORIZED => Error::Unauthenticated { path, source },
        StatusCode::PRECONDITION_FAILED => Error::Precondition { path, source },
        StatusCode::NOT_MODIFIED => Error::NotModified { path, source },
        _ => Error::Generic { store: STORE, source },
    })
}

/// The JSON body of a successful answer.
async fn json(resp: Response, path: &Path, what: &str) -> Result<Value> {
    let body = resp.bytes().await.map_err(|e| generic(format!("{path}: {what}: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| generic(format!("{path}: {what}: {e}")))
}

/// `ObjectMeta` from a JSON object resource.
fn meta_from(v: &Value, location: Path) -> Result<ObjectMeta> {
    let field = |k: &str| v.get(k).and_then(|x| x.as_str().map(str::to_string).or_else(|| x.as_u64().map(|n| n.to_string())));
    let size = field("size").and_then(|s| s.parse().ok()).ok_or_else(|| generic(format!("{location}: object resource without a size")))?;
    let updated = field("updated").or_else(|| field("timeCreated")).unwrap_or_default();
    let last_modified = chrono::DateTime::parse_from_rfc3339(&updated)
        .map_err(|e| generic(format!("{location}: object resource with updated={updated:?}: {e}")))?
        .with_timezone(&chrono::Utc);
    let version = field("generation");
    let e_tag = field("etag").or_else(|| version.clone());
    Ok(ObjectMeta { location, last_modified, size, e_tag, version })
}

/// What an upload sends.
enum Body {
    Bytes(Bytes),
    /// The multipart temporary file and its length.
    File(Arc<std::fs::File>, u64),
}

impl GcsJson {
    pub fn new(o: GcsJsonOptions) -> Result<GcsJson> {
        let read_timeout = (o.retry_deadline / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut b = reqwest::Client::builder().timeout(o.timeout).connect_timeout(o.timeout.min(read_timeout)).read_timeout(read_timeout);
        b = match &o.proxy {
            Some(p) => b.proxy(reqwest::Proxy::all(p).map_err(|e| generic(format!("proxy {p}: {e}")))?),
            None => b.no_proxy(),
        };
        if !o.pool_idle {
            b = b.pool_max_idle_per_host(0);
        }
        let client = b.build().map_err(|e| generic(format!("HTTP client: {e}")))?;
        let token = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN").ok().filter(|t| !t.is_empty());
        let inner = Inner {
            client,
            base: o.endpoint.trim_end_matches('/').to_string(),
            bucket: o.bucket,
            token,
            timeout: o.timeout,
            retry_deadline: o.retry_deadline,
            signer: o.signer,
        };
        Ok(GcsJson { inner: Arc::new(inner) })
    }
}

impl fmt::Display for GcsJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcsJson({}/{})", self.inner.base, self.inner.bucket)
    }
}

impl Inner {
    fn object_url(&self, path: &Path) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.base, enc(&self.bucket), enc(path.as_ref()))
    }

    /// Send what `build` makes, retrying transport errors, 429 and 5xx.
    async fn send(&self, path: &Path, op: &str, build: impl Fn() -> Result<RequestBuilder>) -> Result<Response> {
        let mut attempt = 0u32;
        let started = tokio::time::Instant::now();
        loop {
            let mut req = build()?;
            if let Some(t) = &self.token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let outcome = req.send().await;
            let transient = match &outcome {
                Ok(r) => r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error(),
                Err(e) => !e.is_builder(),
            };
            let backoff = Duration::from_millis(250u64 << (2 * attempt.min(3))).min(Duration::from_secs(10));
            if !transient || started.elapsed() + backoff > self.retry_deadline {
                return outcome.map_err(|e| {
                    let mut msg = format!("{op} {path}: {e}");
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    generic(msg)
                });
            }
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// The object's metadata (`version`: a generation to read instead of the live one).
    async fn meta(&self, path: &Path, version: Option<&str>) -> Result<(ObjectMeta, Value)> {
        let url = match version {
            Some(g) => format!("{}?generation={}", self.object_url(path), enc(g)),
            None => self.object_url(path),
        };
        let resp = check(self.send(path, "read metadata of", || Ok(self.client.get(&url))).await?, path, "read metadata").await?;
        let v = json(resp, path, "metadata").await?;
        Ok((meta_from(&v, path.clone())?, v))
    }

    async fn upload(&self, path: &Path, body: Body, mode: PutMode) -> Result<PutResult> {
        let name = path.as_ref();
        let mut cond = String::new();
        match &mode {
            PutMode::Overwrite => {}
            PutMode::Create => {
                // The emulator ignores ifGenerationMatch=0; this check is what makes Create work there.
                match self.meta(path, None).await {
                    Ok(_) => return Err(Error::AlreadyExists { path: path.to_string(), source: "the object exists".into() }),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                cond = "&ifGenerationMatch=0".into();
            }
            PutMode::Update(v) => {
                let Some(g) = v.version.as_deref() else {
                    return Err(Error::NotSupported { source: "a conditional update needs the object's generation (ObjectMeta::version)".into() });
                };
                let current = self.meta(path, None).await?.0.version;
                if current.as_deref() != Some(g) {
                    return Err(Error::Precondition { path: path.to_string(), source: format!("generation is {current:?}, not {g}").into() });
                }
                cond = format!("&ifGenerationMatch={}", enc(g));
            }
        }
        let base = format!("{}/upload/storage/v1/b/{}/o", self.base, enc(&self.bucket));
        let resp = match body {
            Body::Bytes(b) if b.is_empty() => {
                // A multipart (metadata + media) upload: the emulator fails on an empty media upload.
                let boundary = "quorum-gcs-json-boundary";
                let meta = serde_json::json!({ "name": name }).to_string();
                let text = format!(
                    "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n"
                );
                let url = format!("{base}?uploadType=multipart{cond}");
                self.send(path, "upload", || {
                    Ok(self.client.post(&url).header(CONTENT_TYPE, format!("multipart/related; boundary={boundary}")).body(text.clone()))
                })
                .await?
            }
            Body::Bytes(b) => {
                let url = format!("{base}?uploadType=media&name={}{cond}", enc(name));
                self.send(path, "upload", || Ok(self.client.post(&url).header(CONTENT_TYPE, "application/octet-stream").body(b.clone()))).await?
            }
            Body::File(f, len) => {
                let url = format!("{base}?uploadType=media&name={}{cond}", enc(name));
                let timeout = self.timeout + Duration::from_secs(len >> 20);
                self.send(path, "upload", || {
                    let mut f = f.try_clone().map_err(|e| generic(format!("temporary file: {e}")))?;
                    f.seek(SeekFrom::Start(0)).map_err(|e| generic(format!("temporary file: {e}")))?;
                    Ok(self
                        .client
                        .post(&url)
                        .timeout(timeout)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len)
                        .body(reqwest::Body::from(tokio::fs::File::from_std(f))))
                })
                .await?
            }
        };
        let resp = match check(resp, path, "upload").await {
            Err(Error::Precondition { path, source }) if matches!(mode, PutMode::Create) => return Err(Error::AlreadyExists { path, source }),
            r => r?,
        };
        let v = json(resp, path, "upload answer").await?;
        let m = meta_from(&v, path.clone())?;
        Ok(PutResult { e_tag: m.e_tag, version: m.version, extensions: Default::default() })
    }

    async fn delete(&self, path: &Path) -> Result<()> {
        let url = self.object_url(path);
        check(self.send(path, "delete", || Ok(self.client.delete(&url))).await?, path, "delete").await.map(|_| ())
    }

    /// One page of a listing: (objects, prefixes, next page token).
    async fn list_page(&self, prefix: &str, delimiter: bool, token: Option<&str>) -> Result<(Vec<ObjectMeta>, Vec<Path>, Option<String>)> {
        let mut url = format!("{}/storage/v1/b/{}/o?prefix={}", self.base, enc(&self.bucket), enc(prefix));
        if delimiter {
            url.push_str("&delimiter=%2F");
        }
        if let Some(t) = token {
            url.push_str(&format!("&pageToken={}", enc(t)));
        }
        let p = Path::from(prefix);
        let v = json(check(self.send(&p, "list", || Ok(self.client.get(&url))).await?, &p, "list").await?, &p, "list").await?;
        let mut objects = Vec::new();
        for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() || name.ends_with('/') {
                continue; // "folder" placeholders are not objects here
            }
            objects.push(meta_from(item, Path::parse(name)?)?);
        }
        let mut prefixes = Vec::new();
        for p in v.get("prefixes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            prefixes.push(Path::parse(p.trim_end_matches('/'))?);
        }
        let next = v.get("nextPageToken").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string);
        Ok((objects, prefixes, next))
    }
}

/// `a/b` → `a/b/`; no prefix → everything.
fn dir_prefix(prefix: Option<&Path>) -> String {
    match prefix.map(|p| p.as_ref()) {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => String::new(),
    }
}

#[async_trait]
impl ObjectStore for GcsJson {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if !opts.attributes.is_empty() {
            return Err(Error::NotImplemented { operation: "put_opts with attributes".into(), implementer: STORE.into() });
        }
        self.inner.upload(location, Body::Bytes(Bytes::from(payload)), opts.mode).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            return Err(Error::NotImplemented { operation: "put_multipart_opts with attributes".into(), implementer: STORE.into() });
        }
        let file = tempfile::tempfile().map_err(|e| generic(format!("temporary file for {location}: {e}")))?;
        Ok(Box::new(Upload { inner: self.inner.clone(), location: location.clone(), file: Arc::new(file), len: 0 }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let inner = &self.inner;
        let (meta, _) = inner.meta(location, options.version.as_deref()).await?;
        options.check_preconditions(&meta)?;
        let range: Range<u64> = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(|e| generic(format!("{location}: {e}")))?,
            None => 0..meta.size,
        };
        let done = |payload: BoxStream<'static, Result<Bytes>>, range, meta| GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Attributes::default(),
            extensions: Default::default(),
        };
        if options.head || range.is_empty() {
            return Ok(done(stream::empty().boxed(), range, meta));
        }
        let mut url = format!("{}?alt=media", inner.object_url(location));
        if let Some(g) = &meta.version {
            url.push_str(&format!("&generation={}", enc(g)));
        }
        let whole = range == (0..meta.size);
        let resp = inner
            .send(location, "read", || {
                let r = inner.client.get(&url);
                Ok(if whole { r } else { r.header(RANGE, format!("bytes={}-{}", range.start, range.end - 1)) })
            })
            .await?;
        let resp = check(resp, location, "read").await?;
        if whole || resp.status() == StatusCode::PARTIAL_CONTENT {
            let s = resp.bytes_stream().map_err(|e| generic(format!("read: {e}"))).boxed();
            return Ok(done(s, range, meta));
        }
        // A server that ignored the Range header: cut the range out of the whole object.
        let all = resp.bytes().await.map_err(|e| generic(format!("read {location}: {e}")))?;
        if (all.len() as u64) < range.end {
            return Err(generic(format!("read {location}: {} bytes returned, the object has {}", all.len(), meta.size)));
        }
        let part = all.slice(range.start as usize..range.end as usize);
        Ok(done(stream::once(async move { Ok(part) }).boxed(), range, meta))
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = self.inner.clone();
        locations
            .map(move |p| {
                let inner = inner.clone();
                async move {
                    let p = p?;
                    inner.delete(&p).await.map(|_| p)
                }
            })
            .buffered(4)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = dir_prefix(prefix);
        // State: Some(token) = a page to fetch (None = the first); None = done.
        stream::try_unfold(Some(None::<String>), move |state| {
            let inner = inner.clone();
            let prefix = prefix.clone();
            async move {
                let Some(token) = state else { return Ok::<_, Error>(None) };
                let (objects, _, next) = inner.list_page(&prefix, false, token.as_deref()).await?;
                Ok(Some((stream::iter(objects.into_iter().map(Ok)), next.map(Some))))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let prefix = dir_prefix(prefix);
        let (mut objects, mut common_prefixes, mut token) = (Vec::new(), Vec::new(), None);
        loop {
            let (o, p, next) = self.inner.list_page(&prefix, true, token.as_deref()).await?;
            objects.extend(o);
            common_prefixes.extend(p);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(ListResult { common_prefixes, objects, extensions: Default::default() })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let inner = &self.inner;
        let create = matches!(options.mode, CopyMode::Create);
        if create {
            match inner.meta(to, None).await {
                Ok(_) => return Err(Error::AlreadyExists { path: to.to_string(), source: "the object exists".into() }),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let base = format!("{}/rewriteTo/b/{}/o/{}?", inner.object_url(from), enc(&inner.bucket), enc(to.as_ref()));
        let mut token: Option<String> = None;
        loop {
            let mut url = base.clone();
            if create {
                url.push_str("ifGenerationMatch=0&");
            }
            if let Some(t) = &token {
                url.push_str(&format!("rewriteToken={}", enc(t)));
            }
            let resp = inner.send(from, "copy", || Ok(inner.client.post(&url).header(CONTENT_LENGTH, 0))).await?;
            let resp = match check(resp, from, "copy").await {
                Err(Error::Precondition { source, .. }) if create => return Err(Error::AlreadyExists { path: to.to_string(), source }),
                r => r?,
            };
            let v = json(resp, from, "copy answer").await?;
            if v.get("done").and_then(Value::as_bool).unwrap_or(true) {
                return Ok(());
            }
            token = v.get("rewriteToken").and_then(Value::as_str).map(str::to_string);
            if token.is_none() {
                return Err(generic(format!("copy {from} → {to}: not done, and no rewriteToken to continue with")));
            }
        }
    }
}

#[async_trait]
impl Signer for GcsJson {
    async fn signed_url(&self, method: Method, path: &Path, expires_in: Duration) -> Result<url::Url> {
        match &self.inner.signer {
            Some(s) => s.signed_url(method, path, expires_in).await,
            None => Err(Error::NotSupported {
                source: "presigned URLs on a gs:// repository at a custom endpoint are signed with a Google service-account key, and none is \
                         configured (set GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS to its JSON file); \
                         use `quorum backups get ID -o FILE` instead"
                    .into(),
            }),
        }
    }
}

/// A multipart upload: parts go into a temporary file at their offsets (in the order
/// `put_part` was called), and `complete` uploads the file in one request.
struct Upload {
    inner: Arc<Inner>,
    location: Path,
    file: Arc<std::fs::File>,
    /// Bytes allotted to the parts so far.
    len: u64,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload").field("location", &self.location).field("len", &self.len).finish()
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let mut offset = self.len;
        self.len += data.content_length() as u64;
        let file = self.file.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for b in &data {
                    file.write_all_at(b, offset)?;
                    offset += b.len() as u64;
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| generic(format!("write part: {e}")))?
            .map_err(|e| generic(format!("temporary file: {e}")))
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let body = if self.len == 0 { Body::Bytes(Bytes::new()) } else { Body::File(self.file.clone(), self.len) };
        self.inner.upload(&self.location, body, PutMode::Overwrite).await
    }

    async fn abort(&mut self) -> Result<()> {
        Ok(()) // nothing was sent; the temporary file goes with `self`
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fully_encoded() {
        assert_eq!(enc("etcd/data/0a/x y+z"), "etcd%2Fdata%2F0a%2Fx%20y%2Bz");
        assert_eq!(enc("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(dir_prefix(Some(&Path::from("locks"))), "locks/");
        assert_eq!(dir_prefix(None), "");
    }

    #[test]
    fn object_resource() {
        let v = serde_json::json!({"name": "a/b", "size": "11", "updated": "2026-11-23T17:06:43.999471Z", "etag": "XrY7", "generation": "17954"});
        let m = meta_from(&v, Path::from("a/b")).unwrap();
        assert_eq!((m.size, m.e_tag.as_deref(), m.version.as_deref()), (11, Some("XrY7"), Some("17954")));
        assert_eq!(m.last_modified.timestamp(), 1_795_453_603);
    }

    /// Each operation against gcp-storage-emulator (the emulator's gaps are handled here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn against_the_emulator() {
        use object_store::{ObjectStoreExt, WriteMultipart};
        let gcs = testkit::servers::GcsServer::start().unwrap();
        gcs.create_bucket("unit").unwrap();
        let o = GcsJsonOptions {
            endpoint: gcs.endpoint(),
            bucket: "unit".into(),
            proxy: None,
            timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(30),
            pool_idle: true,
            signer: None,
        };
        let s = GcsJson::new(o).unwrap();
        let p = |n: &str| Path::from(n);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        s.put(&p("d/a b+c"), body.clone().into()).await.unwrap();
        assert_eq!(gcs.download("unit", "d/a b+c").unwrap(), body, "names are encoded");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let again = s.put_opts(&p("d/a b+c"), b"x".to_vec().into(), create.clone()).await;
        assert!(matches!(again, Err(Error::AlreadyExists { .. })), "{again:?}");
        s.put_opts(&p("d/empty"), PutPayload::default(), create).await.unwrap();
        assert_eq!(s.get(&p("d/empty")).await.unwrap().bytes().await.unwrap().len(), 0);

        let h = s.head(&p("d/a b+c")).await.unwrap();
        assert_eq!((h.size, h.location.as_ref()), (100_000, "d/a b+c"));
        assert!(h.e_tag.is_some() && h.version.is_some());
        assert_eq!(s.get_range(&p("d/a b+c"), 10..20).await.unwrap(), &body[10..20]);
        assert_eq!(s.get_range(&p("d/a b+c"), 99_990..200_000).await.unwrap(), &body[99_990..]);
        let tail = s.get_opts(&p("d/a b+c"), GetOptions::new().with_range(Some(object_store::GetRange::Suffix(5)))).await.unwrap();
        assert_eq!(tail.bytes().await.unwrap(), &body[99_995..]);
        let r = s.get_ranges(&p("d/a b+c"), &[0..3, 50_000..50_010]).await.unwrap();
        assert_eq!((&r[0][..], &r[1][..]), (&body[0..3], &body[50_000..50_010]));
        assert!(matches!(s.get(&p("d/none")).await, Err(Error::NotFound { .. })));
        let stale = GetOptions::new().with_if_match(Some("not-the-etag"));
        assert!(matches!(s.get_opts(&p("d/a b+c"), stale).await, Err(Error::Precondition { .. })));

        let mut w = WriteMultipart::new_with_chunk_size(s.put_multipart(&p("d/sub/big")).await.unwrap(), 30_000);
        w.write(&body);
        w.finish().await.unwrap();
        assert_eq!(s.get(&p("d/sub/big")).await.unwrap().bytes().await.unwrap(), body);
        s.copy(&p("d/sub/big"), &p("d/copy")).await.unwrap();
        assert_eq!(gcs.download("unit", "d/copy").unwrap(), body);
        assert!(matches!(s.copy_if_not_exists(&p("d/sub/big"), &p("d/copy")).await, Err(Error::AlreadyExists { .. })));

        let mut all: Vec<String> = s.list(Some(&p("d"))).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        all.sort();
        assert_eq!(all, ["d/a b+c", "d/copy", "d/empty", "d/sub/big"]);
        assert_eq!(s.list(Some(&p("d/su"))).count().await, 0, "a prefix is a directory");
        let l = s.list_with_delimiter(Some(&p("d"))).await.unwrap();
        assert_eq!(l.common_prefixes, [p("d/sub")]);
        assert_eq!(l.objects.len(), 3);

        s.delete(&p("d/copy")).await.unwrap();
        assert!(matches!(s.delete(&p("d/copy")).await, Err(Error::NotFound { .. })));
        assert!(matches!(s.signed_url(Method::GET, &p("d/empty"), Duration::from_secs(60)).await, Err(Error::NotSupported { .. })));
    }
}
