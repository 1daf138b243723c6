//! Where a repository lives: a URL turned into an `object_store` client.
//!
//! | URL                         | store                                   | credentials                         |
//! |-----------------------------|-----------------------------------------|-------------------------------------|
//! | `file:///path` or `/path`   | local directory (fsync on every write)  | —                                   |
//! | `s3://bucket[/prefix]`      | S3; `--endpoint` for MinIO, Ceph, MCG   | `AWS_*` variables, web identity (IRSA), ECS task role, EC2 instance metadata |
//! | `gs://bucket[/prefix]`      | Google Cloud Storage                    | `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`, ADC, metadata |
//! | `az://container[/prefix]`   | Azure Blob (`AZURE_STORAGE_ACCOUNT_NAME`) | account key, SAS, client secret, managed identity (env) |
//!
//! The credential chains are `object_store`'s `from_env` builders. The proxy decision is made
//! here from [`ProxyConfig`] for the one host the repository talks to.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore};

use crate::error::{Error, Result};
use crate::gcs_json::{self, GcsJson, GcsJsonOptions};
use crate::proxy::ProxyConfig;

/// Options that apply to the store client.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// S3-compatible or Azure endpoint (`http://127.0.0.1:9000`); plain http is allowed only
    /// when the endpoint says so.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub proxy: ProxyConfig,
    /// Per-request timeout.
    pub timeout: Option<Duration>,
    /// How long a request may keep failing (errors, resets, 5xx, no answer) before the
    /// operation gives up; failures are retried with back-off until then. Default
    /// [`DEFAULT_RETRY_DEADLINE`].
    pub retry_deadline: Option<Duration>,
}

/// How long a failing object-store request is retried by default (object_store's default).
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(180);

/// Retries bounded by time, not by count: a store cut off for a minute is ridden through
/// with the default deadline, and a stall is noticed by the read timeout. object_store checks
/// the deadline before each back-off, not during it, so the longest back-off is an eighth of
/// the deadline (0.5 s to 10 s): a command gives up at most that long after its deadline
/// (measured under load: 9.3 s for an 8 s deadline when a back-off could still be 10 s).
fn retry_config(deadline: Duration) -> object_store::RetryConfig {
    let max_backoff = (deadline / 8).clamp(Duration::from_millis(500), Duration::from_secs(10));
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff, base: 2.0 },
        max_retries: 1000,
        retry_timeout: deadline,
    }
}

/// No byte for this long, and a request is dropped and retried: a stalled store or a dead
/// connection that never said so.
fn read_timeout(deadline: Duration) -> Duration {
    (deadline / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    File,
    S3,
    Gcs,
    Azure,
}

/// An opened store location.
#[derive(Clone)]
pub struct Location {
    pub url: String,
    pub scheme: Scheme,
    /// The repository's objects, paths relative to the repository root.
    pub store: Arc<dyn ObjectStore>,
    /// For presigned URLs: the bucket-level signer and the prefix to put before our paths.
    signer: Option<Arc<dyn Signer>>,
    prefix: String,
    /// `file://` repositories: the directory.
    pub local_root: Option<PathBuf>,
    /// The proxy in use, if any (for messages).
    pub proxy: Option<String>,
    /// What a read costs, measured on this location's reads (remote stores only).
    pub link: Arc<crate::link::Link>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location").field("url", &self.url).field("proxy", &self.proxy).finish()
    }
}

impl Location {
    /// Open `url`. For `file://`, the directory is created when `create` is set.
    pub fn open(url: &str, opts: &StoreOptions, create: bool) -> Result<Location> {
        if url.starts_with('/') || url.starts_with("file://") {
            let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            if !path.is_absolute() {
                return Err(Error::Usage(format!("{url}: a file:// repository needs an absolute path (file:///var/backups/etcd)")));
            }
            if create {
                std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            } else if !path.is_dir() {
                return Err(Error::Missing(format!(
                    "{}: no repository here (the directory does not exist); create one with `quorum repo init --repo {url} --password-file FILE`",
                    path.display()
                )));
            }
            let fs = LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| Error::store(format!("open {}", path.display()), e))?
                .with_fsync(true)
                .with_automatic_cleanup(true);
            return Ok(Location {
                url: url.to_string(),
                scheme: Scheme::File,
                store: Arc::new(fs),
                signer: None,
                prefix: String::new(),
                local_root: Some(path),
                proxy: None,
                link: crate::link::Link::new(),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::Usage(format!("{url}: not a repository URL ({e}); use file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"))
        })?;
        let scheme = match parsed.scheme() {
            "s3" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "az" | "azure" => Scheme::Azure,
            other => return Err(Error::Usage(format!("{url}: unknown scheme {other}://; use file://, s3://, gs:// or az://"))),
        };
        let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| Error::Usage(format!("{url}: no bucket or container name")))?.to_string();
        let prefix = parsed.path().trim_matches('/').to_string();

        // The host the client will talk to, for the proxy decision.
        let (host, port) = match &opts.endpoint {
            Some(ep) => {
                let u = url::Url::parse(ep).map_err(|e| Error::Usage(format!("endpoint URL {ep}: {e}")))?;
                (u.host_str().unwrap_or_default().to_string(), u.port_or_known_default())
            }
            None => match scheme {
                Scheme::S3 => (format!("{bucket}.s3.amazonaws.com"), Some(443)),
                Scheme::Gcs => ("storage.googleapis.com".into(), Some(443)),
                Scheme::Azure => {
                    let acct = std::env::var("AZURE_STORAGE_ACCOUNT_NAME").unwrap_or_default();
                    (format!("{acct}.blob.core.windows.net"), Some(443))
                }
                Scheme::File => unreachable!(),
            },
        };
        let proxy = opts.proxy.proxy_for(&host, port).map(str::to_string);
        let mut client = ClientOptions::new();
        if let Some(p) = &proxy {
            client = client.with_proxy_url(p.clone());
        }
        // object_store's default (30 s per request) is too short for a 16 MiB pack on a slow
        // uplink; requests are still retried by object_store on failure.
        client = client.with_timeout(opts.timeout.unwrap_or(Duration::from_secs(300)));
        let deadline = opts.retry_deadline.unwrap_or(DEFAULT_RETRY_DEADLINE);
        client = client.with_read_timeout(read_timeout(deadline)).with_connect_timeout(read_timeout(deadline).min(Duration::from_secs(5)));
        let allow_http = opts.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        if allow_http {
            client = client.with_allow_http(true);
            if proxy.is_some() {
                // Plain-HTTP forwarding proxies (tinyproxy, squid in some setups) serve one
                // request per client connection; a reused idle connection would hang.
                client = client.with_pool_max_idle_per_host(0);
            }
        }
        let wrap = |e: object_store::Error| Error::store(format!("configure {url}"), e);
        let (store, signer): (Arc<dyn ObjectStore>, Arc<dyn Signer>) = match scheme {
            Scheme::S3 => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket).with_client_options(client).with_retry(retry_config(deadline));
                if let Some(ep) = &opts.endpoint {
                    b = b.with_endpoint(ep).with_allow_http(allow_http);
                }
                if let Some(r) = &opts.region {
                    b = b.with_region(r);
                }
                let s = Arc::new(b.build().map_err(wrap)?);
                (s.clone(), s)
            }
            Scheme::Gcs => match &opts.endpoint {
                // object_store's GCS client speaks the XML API, which emulators lack: with an
                // endpoint, the JSON API client (see gcs_json.rs).
                Some(ep) => {
                    // Presigned URLs: object_store's V4 signing, when a key is configured.
                    let signer: Option<Arc<dyn Signer>> = if gcs_json::signing_key_configured() {
                        let b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket).with_base_url(ep).with_client_options(client);
                        Some(Arc::new(b.build().map_err(wrap)?))
                    } else {
                        None
                    };
                    let s = Arc::new(
                        GcsJson::new(GcsJsonOptions {
                            endpoint: ep.clone(),
                            bucket: bucket.clone(),
                            proxy: proxy.clone(),
                            timeout: opts.timeout.unwrap_or(Duration::from_secs(300)),
                            retry_deadline: deadline,
                            pool_idle: !(allow_http && proxy.is_some()),
                            signer,
                        })
                        .map_err(wrap)?,
                    );
                    (s.clone(), s)
                }
                None => {
                    let b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket).with_client_options(client).with_retry(retry_config(deadline));
                    let s = Arc::new(b.build().map_err(wrap)?);
                    (s.clone(), s)
                }
            },
            Scheme::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&bucket).with_client_options(client).with_retry(retry_config(deadline));
                if let Some(ep) = &opts.endpoint {
                    b = b.with_endpoint(ep.clone()).with_allow_http(allow_http);
                }
                let s = Arc::new(b.build().map_err(wrap)?);
                (s.clone(), s)
            }
            Scheme::File => unreachable!(),
        };
        let link = crate::link::Link::new();
        let store: Arc<dyn ObjectStore> = Arc::new(crate::link::Metered::new(store, link.clone()));
        let store: Arc<dyn ObjectStore> = Arc::new(crate::retrying::Retrying::new(store, deadline));
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() { store } else { Arc::new(PrefixStore::new(store, prefix.as_str())) };
        Ok(Location { url: url.to_string(), scheme, store, signer: Some(signer), prefix, local_root: None, proxy, link })
    }

    /// A presigned GET URL for an object of the repository.
    pub async fn signed_get(&self, path: &ObjPath, expires: Duration) -> Result<url::Url> {
        let Some(signer) = &self.signer else {
            return Err(Error::Usage(format!("{}: a file:// repository has no URLs to hand out; use `quorum backups get ID -o FILE`", self.url)));
        };
        let full = if self.prefix.is_empty() { path.clone() } else { ObjPath::from(format!("{}/{}", self.prefix, path)) };
        signer.signed_url(object_store::signer::Method::GET, &full, expires).await.map_err(|e| Error::store(format!("presign {full}"), e))
    }
}
