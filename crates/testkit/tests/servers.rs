//! The object-storage test servers, exercised through `object_store`: S3 (moto), a write-once S3,
//! Azure (Azurite), GCS (gcp-storage-emulator) and an HTTP proxy (tinyproxy). Each test starts
//! its own server(s) on free loopback ports; they are killed when the handles drop.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{ClientOptions, Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig, WriteMultipart};
use testkit::servers::{AzureServer, GcsServer, Proxy, S3Server};

/// Deterministic bytes (xorshift), distinct per seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const BIG: usize = 12 * 1024 * 1024;
const PART: usize = 5 * 1024 * 1024;

async fn put_small(store: &dyn ObjectStore, key: &str, bytes: &[u8]) -> Result<()> {
    store.put(&Path::from(key), PutPayload::from(bytes.to_vec())).await.with_context(|| format!("put {key}"))?;
    Ok(())
}

/// A multipart upload of `bytes` in 5 MiB parts (12 MiB -> 3 parts).
async fn put_multipart(store: &dyn ObjectStore, key: &str, bytes: &[u8]) -> Result<()> {
    let upload = store.put_multipart(&Path::from(key)).await.with_context(|| format!("start multipart upload of {key}"))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
    w.write(bytes);
    w.finish().await.with_context(|| format!("finish multipart upload of {key}"))?;
    Ok(())
}

async fn get_all(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>> {
    Ok(store.get(&Path::from(key)).await.with_context(|| format!("get {key}"))?.bytes().await?.to_vec())
}

async fn list_keys(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> = store.list(Some(&Path::from(prefix))).map_ok(|m| m.location.to_string()).try_collect().await.context("list")?;
    keys.sort();
    Ok(keys)
}

/// put (small and multipart), get (whole and a range), head, list (prefix, delimiter, offset),
/// delete.
async fn exercise(store: &dyn ObjectStore) -> Result<()> {
    let small = data(1000, 1);
    let big = data(BIG, 2);
    put_small(store, "backups/a/small.bin", &small).await?;
    put_small(store, "backups/b/other.bin", b"other").await?;
    put_small(store, "elsewhere/x.bin", b"x").await?;
    put_multipart(store, "backups/a/big.bin", &big).await?;

    ensure!(get_all(store, "backups/a/small.bin").await? == small, "small object differs");
    ensure!(get_all(store, "backups/a/big.bin").await? == big, "multipart object differs");
    let range = store.get_range(&Path::from("backups/a/big.bin"), 7_000_000..7_000_100).await.context("get_range")?;
    ensure!(range.as_ref() == &big[7_000_000..7_000_100], "range differs");
    let range = store.get_range(&Path::from("backups/a/small.bin"), 10..20).await.context("get_range small")?;
    ensure!(range.as_ref() == &small[10..20], "small range differs");

    let meta = store.head(&Path::from("backups/a/big.bin")).await.context("head")?;
    ensure!(meta.size == BIG as u64, "head size {} != {BIG}", meta.size);
    ensure!(meta.e_tag.is_some(), "head without an ETag");

    ensure!(
        list_keys(store, "backups").await? == ["backups/a/big.bin", "backups/a/small.bin", "backups/b/other.bin"],
        "list backups: {:?}",
        list_keys(store, "backups").await?
    );
    ensure!(list_keys(store, "backups/a").await? == ["backups/a/big.bin", "backups/a/small.bin"]);
    let d = store.list_with_delimiter(Some(&Path::from("backups"))).await.context("list_with_delimiter")?;
    let mut dirs: Vec<String> = d.common_prefixes.iter().map(|p| p.to_string()).collect();
    dirs.sort();
    ensure!(dirs == ["backups/a", "backups/b"] && d.objects.is_empty(), "list_with_delimiter: {d:?}");

    store.delete(&Path::from("backups/a/small.bin")).await.context("delete")?;
    ensure!(matches!(store.get(&Path::from("backups/a/small.bin")).await, Err(StoreError::NotFound { .. })), "deleted object still readable");
    ensure!(list_keys(store, "backups/a").await? == ["backups/a/big.bin"]);
    let after: Vec<String> = store
        .list_with_offset(Some(&Path::from("backups")), &Path::from("backups/a/big.bin"))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .context("list_with_offset")?;
    ensure!(after == ["backups/b/other.bin"], "list_with_offset: {after:?}");
    let missing = store.head(&Path::from("backups/nope")).await;
    ensure!(matches!(missing, Err(StoreError::NotFound { .. })), "head of a missing key: {missing:?}");
    Ok(())
}

/// `PutMode::Create` on a new key succeeds, on an existing key fails with AlreadyExists.
async fn create_mode(store: &dyn ObjectStore, key: &str) -> Result<()> {
    let path = Path::from(key);
    store.put_opts(&path, PutPayload::from_static(b"first"), PutMode::Create.into()).await.context("create new")?;
    let again = store.put_opts(&path, PutPayload::from_static(b"second"), PutMode::Create.into()).await;
    ensure!(matches!(again, Err(StoreError::AlreadyExists { .. })), "create over an existing key: {again:?}");
    ensure!(get_all(store, key).await? == b"first");
    Ok(())
}

/// `r` failed, and its error mentions `needle`.
fn expect_err<T: std::fmt::Debug, E: std::fmt::Debug>(what: &str, r: &Result<T, E>, needle: &str) -> Result<()> {
    match r {
        Err(e) if format!("{e:?}").contains(needle) => Ok(()),
        other => anyhow::bail!("{what}: expected an error mentioning {needle:?}, got {other:?}"),
    }
}

/// GET `url` with curl (never through a proxy) and return the body.
fn curl(url: &str) -> Result<Vec<u8>> {
    let out = Command::new("curl").args(["-sS", "--fail", "--noproxy", "*", "-o", "-"]).arg(url).output().context("run curl")?;
    ensure!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out.stdout)
}

async fn presigned_get(signer: &dyn Signer, store: &dyn ObjectStore, key: &str) -> Result<String> {
    let bytes = data(4096, 9);
    put_small(store, key, &bytes).await?;
    let url = signer.signed_url(Method::GET, &Path::from(key), Duration::from_secs(300)).await.context("signed_url")?;
    ensure!(curl(url.as_str())? == bytes, "presigned GET returned other bytes");
    Ok(url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_moto() -> Result<()> {
    let s3 = S3Server::start()?;
    s3.create_bucket("testkit-bucket")?;
    let store = s3.s3("testkit-bucket")?;
    exercise(&store).await?;
    // Plain S3 overwrites.
    put_small(&store, "over", b"one").await?;
    put_small(&store, "over", b"two").await?;
    ensure!(get_all(&store, "over").await? == b"two");
    create_mode(&store, "created").await?;
    let url = presigned_get(&store, &store, "signed/obj.bin").await?;
    ensure!(url.contains("X-Amz-Signature="), "{url}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_write_once() -> Result<()> {
    let s3 = S3Server::start_write_once()?;
    ensure!(s3.is_write_once());
    s3.create_bucket("worm")?;
    let store = s3.s3("worm")?;
    let key = Path::from("locked/obj");

    put_small(&store, "locked/obj", b"original").await?;
    let again = store.put(&key, PutPayload::from_static(b"replacement")).await;
    ensure!(matches!(again, Err(StoreError::PermissionDenied { .. })), "second put: {again:?}");
    ensure!(format!("{:?}", again.unwrap_err()).contains("AccessDenied"));
    let del = store.delete(&key).await;
    ensure!(matches!(del, Err(StoreError::PermissionDenied { .. })), "delete: {del:?}");
    // A multipart upload completing over the key is refused too.
    let mp = put_multipart(&store, "locked/obj", &data(6 * 1024 * 1024, 3)).await;
    ensure!(mp.is_err(), "multipart over an existing key succeeded");
    ensure!(format!("{:?}", mp.unwrap_err()).contains("AccessDenied"));
    ensure!(get_all(&store, "locked/obj").await? == b"original", "object changed");

    // New keys are writable once, by either path.
    put_multipart(&store, "locked/big", &data(BIG, 4)).await?;
    ensure!(get_all(&store, "locked/big").await? == data(BIG, 4));
    ensure!(store.put(&Path::from("locked/big"), PutPayload::from_static(b"x")).await.is_err());
    // Conditional create: fine on a new key, AlreadyExists (412) on an existing one.
    create_mode(&store, "locked/created").await?;
    let over = store.put_opts(&key, PutPayload::from_static(b"x"), PutMode::Create.into()).await;
    ensure!(matches!(over, Err(StoreError::AlreadyExists { .. })), "create over locked key: {over:?}");
    // Reads and listings are untouched.
    ensure!(list_keys(&store, "locked").await? == ["locked/big", "locked/created", "locked/obj"]);
    let meta = store.head(&key).await?;
    ensure!(meta.size == 8);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_azurite() -> Result<()> {
    let az = AzureServer::start()?;
    az.create_container("testkit-container")?;
    let store = az.azure("testkit-container")?;
    exercise(&store).await?;
    create_mode(&store, "created").await?;
    let url = presigned_get(&store, &store, "signed/obj.bin").await?;
    ensure!(url.contains("sig="), "{url}");
    // Azurite checks SAS signatures: a tampered one is refused.
    let tampered = url.replacen("sig=", "sig=AAAA", 1);
    ensure!(curl(&tampered).is_err(), "Azurite accepted a tampered SAS");
    // Telemetry stays off (Azurite would otherwise try to reach Application Insights).
    ensure!(!az.output().contains("ApplicationInsights"), "{}", az.output());
    Ok(())
}

/// What object_store can do against gcp-storage-emulator (see `GcsServer`). The emulator lacks most
/// of the XML API object_store speaks, and its answers lack the ETag/Last-Modified headers
/// object_store requires, so this test pins the current outcome of each operation: it fails when
/// an emulator upgrade changes one, which is the moment to widen the GCS coverage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_emulator() -> Result<()> {
    let gcs = GcsServer::start()?;
    let bucket = "testkitbucket"; // alphanumeric only: object_store percent-encodes '-', '.', '_'
    gcs.create_bucket(bucket)?;
    // No retries: most failures are 501s, which object_store would retry for ~10 s each.
    let no_retry = RetryConfig { max_retries: 0, ..Default::default() };
    let store = gcs.builder(bucket).with_retry(no_retry.clone()).build()?;
    let small = data(1000, 1);
    let key = Path::from("backups/a/small.bin");

    let put = store.put(&key, PutPayload::from(small.clone())).await;
    let stored = gcs.download(bucket, "backups/a/small.bin")?;
    let get = store.get(&key).await.map(|_| ());
    let range = store.get_range(&key, 10..20).await;
    let head = store.head(&key).await;
    let list = list_keys(&store, "backups").await;
    let multipart = put_multipart(&store, "backups/a/big.bin", &data(BIG, 2)).await;
    let copy = store.copy(&key, &Path::from("backups/a/copy.bin")).await;
    let copied = gcs.download(bucket, "backups/a/copy.bin");
    let delete = store.delete(&key).await;
    let signing = gcs.signing_gcs(bucket)?;
    let url = signing.signed_url(Method::GET, &key, Duration::from_secs(300)).await?;
    let fetched = curl(url.as_str())?;
    eprintln!(
        "gcp-storage-emulator via object_store:\n put={put:?}\n stored_ok={}\n get={get:?}\n range={range:?}\n head={head:?}\n \
         list={list:?}\n multipart={multipart:?}\n copy={copy:?} copied={copied:?}\n delete={delete:?}\n signed_url={url} fetched_ok={}",
        stored == small,
        fetched == small
    );
    // put: the bytes are stored, but the answer has no ETag, so object_store reports an error.
    expect_err("put", &put, "MissingEtag")?;
    ensure!(stored == small, "emulator stored other bytes");
    // get and ranged get: the emulator serves the bytes but sends no ETag/Last-Modified.
    expect_err("get", &get, "MissingLastModified")?;
    expect_err("get_range", &range, "MissingLastModified")?;
    // Not implemented by the emulator's XML API: HEAD, bucket listing, DELETE, POST ?uploads.
    expect_err("head", &head, "501")?;
    expect_err("list", &list, "501")?;
    expect_err("delete", &delete, "501")?;
    expect_err("put_multipart", &multipart, "501")?;
    // copy (PUT with x-goog-copy-source): the emulator drops the connection; nothing is created.
    ensure!(copy.is_err() && copied.is_err(), "copy: {copy:?} {copied:?}");
    // Signed URLs are computed locally (RSA key) and the emulator serves them; it does not check
    // the signature, so this proves the URL's shape and path, not its validity.
    ensure!(fetched == small, "signed GET URL returned other bytes");
    ensure!(url.as_str().contains("X-Goog-Signature="), "{url}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_tinyproxy() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = Proxy::start()?;
    s3.create_bucket("proxied")?;
    let via_proxy: Arc<dyn ObjectStore> = Arc::new(
        s3.builder("proxied")
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_proxy_url(proxy.url())
                    // tinyproxy serves one request per client connection (see `Proxy`).
                    .with_pool_max_idle_per_host(0),
            )
            .build()?,
    );
    let direct = s3.store("proxied")?;

    put_small(via_proxy.as_ref(), "through/proxy.bin", b"via proxy").await?;
    ensure!(get_all(via_proxy.as_ref(), "through/proxy.bin").await? == b"via proxy");
    let logged = proxy.requests_logged();
    let base = format!("{}/proxied/through/proxy.bin", s3.endpoint());
    ensure!(logged.contains(&format!("PUT {base}")), "PUT not in proxy log: {logged:?}");
    ensure!(logged.contains(&format!("GET {base}")), "GET not in proxy log: {logged:?}");

    put_small(direct.as_ref(), "direct/only.bin", b"direct").await?;
    ensure!(get_all(direct.as_ref(), "direct/only.bin").await? == b"direct");
    ensure!(get_all(direct.as_ref(), "through/proxy.bin").await? == b"via proxy");
    let after = proxy.requests_logged();
    ensure!(after == logged, "direct requests reached the proxy: {:?}", &after[logged.len()..]);
    ensure!(!proxy.log().contains("direct/only.bin"));
    // The testkit helper gives the same options.
    let helper = s3.builder("proxied").with_client_options(proxy.client_options()).build()?;
    ensure!(get_all(&helper, "direct/only.bin").await? == b"direct");
    ensure!(proxy.requests_logged().last().is_some_and(|r| r.ends_with("/proxied/direct/only.bin")));
    Ok(())
}
