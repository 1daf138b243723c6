//! What a read from the store costs, measured from this process's own reads: the round trip
//! (time from a GET sent to its response headers) and the throughput of one response body.
//!
//! Readers that pick scattered blobs out of packs (`k8s ls --repo -n NS`) choose between one
//! request per blob and one request spanning several blobs with the bytes between them. The
//! break-even gap is the bandwidth-delay product of one connection: skipping `gap` bytes costs
//! `gap / throughput`, another request costs the round trip. With requests in flight side by
//! side, both costs shrink by the same factor while the store's aggregate throughput scales,
//! so the product holds. Measured rather than configured, because it spans three orders of
//! magnitude: a local disk (below 64 KiB), a single-threaded S3 emulator on loopback (about
//! 1 MiB), a cloud bucket from another region (several MiB).
//!
//! [`Metered`] wraps the remote stores' clients; `file://` repositories are not wrapped and
//! read with the smallest gap. No crate measures this for an `object_store`; it is a small
//! wrapper of our own.
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};

/// The smallest gap worth spanning: below it the request costs nothing measurable either way.
pub const MIN_GAP: u64 = 64 << 10;
/// The largest: past it a read fetches much more than it needs on any link seen.
pub const MAX_GAP: u64 = 8 << 20;
/// Bodies shorter than this say more about the round trip than about throughput.
const MIN_BODY: u64 = 256 << 10;
/// Round trips kept (the most recent ones).
const KEPT: usize = 256;

/// Measurements of one store's link.
#[derive(Debug, Default)]
pub struct Link {
    inner: Mutex<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    /// Round trips, newest last, at most [`KEPT`].
    round_trips: Vec<Duration>,
    /// The best throughput of one body, bytes per second.
    throughput: Option<f64>,
}

impl Link {
    pub fn new() -> Arc<Link> {
        Arc::new(Link::default())
    }

    fn round_trip(&self, d: Duration) {
        let mut s = self.inner.lock().expect("link samples");
        if s.round_trips.len() == KEPT {
            s.round_trips.remove(0);
        }
        s.round_trips.push(d);
    }

    fn body(&self, bytes: u64, took: Duration) {
        if bytes < MIN_BODY || took.is_zero() {
            return;
        }
        let rate = bytes as f64 / took.as_secs_f64();
        let mut s = self.inner.lock().expect("link samples");
        s.throughput = Some(s.throughput.map_or(rate, |t| t.max(rate)));
    }

    /// The median round trip and the best throughput seen, once both were measured.
    pub fn measured(&self) -> Option<(Duration, f64)> {
        let s = self.inner.lock().expect("link samples");
        let mut rt = s.round_trips.clone();
        if rt.is_empty() {
            return None;
        }
        rt.sort();
        Some((rt[rt.len() / 2], s.throughput?))
    }

    /// The gap between two wanted ranges of one object below which one request should span
    /// both: round trip × throughput, within [`MIN_GAP`, `MAX_GAP`]; `MIN_GAP` until measured.
    pub fn coalesce_gap(&self) -> u64 {
        match self.measured() {
            Some((rt, rate)) => ((rt.as_secs_f64() * rate) as u64).clamp(MIN_GAP, MAX_GAP),
            None => MIN_GAP,
        }
    }
}

/// A store whose reads are measured into a [`Link`].
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn ObjectStore>,
    link: Arc<Link>,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>, link: Arc<Link>) -> Metered {
        Metered { inner, link }
    }
}

impl fmt::Display for Metered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// A body that reports its length and how long it took once it has been read to the end.
fn timed_body(body: BoxStream<'static, Result<Bytes>>, link: Arc<Link>) -> BoxStream<'static, Result<Bytes>> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut body = Some(body);
    futures::stream::poll_fn(move |cx| {
        let Some(b) = body.as_mut() else { return std::task::Poll::Ready(None) };
        let next = b.poll_next_unpin(cx);
        match &next {
            std::task::Poll::Ready(Some(Ok(chunk))) => bytes += chunk.len() as u64,
            std::task::Poll::Ready(None) => {
                link.body(bytes, started.elapsed());
                body = None;
            }
            std::task::Poll::Ready(Some(Err(_))) => body = None,
            std::task::Poll::Pending => {}
        }
        next
    })
    .boxed()
}

#[async_trait::async_trait]
impl ObjectStore for Metered {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // `get_ranges` is left to the trait's default, which comes here for each range.
        let head = options.head;
        let sent = Instant::now();
        let mut got = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(got);
        }
        self.link.round_trip(sent.elapsed());
        got.payload = match got.payload {
            GetResultPayload::Stream(body) => GetResultPayload::Stream(timed_body(body, self.link.clone())),
            other => other,
        };
        Ok(got)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[test]
    fn the_gap_is_the_bandwidth_delay_product_within_bounds() {
        let link = Link::default();
        assert_eq!(link.coalesce_gap(), MIN_GAP, "nothing measured");
        link.round_trip(Duration::from_millis(4));
        assert_eq!(link.coalesce_gap(), MIN_GAP, "no throughput measured yet");
        link.body(100 << 10, Duration::from_micros(10));
        assert_eq!(link.measured().map(|m| m.1), None, "a short body says nothing about throughput");
        // 4 ms at 250 MB/s: 1 MB.
        link.body(25_000_000, Duration::from_millis(100));
        assert_eq!(link.coalesce_gap(), 1_000_000);
        // The median round trip, the best throughput.
        link.round_trip(Duration::from_millis(2));
        link.round_trip(Duration::from_millis(400));
        link.body(2_500_000, Duration::from_millis(100));
        assert_eq!(link.measured(), Some((Duration::from_millis(4), 250e6)));
        // A far link reads at most MAX_GAP more; a fast one spans at least MIN_GAP.
        link.round_trip(Duration::from_secs(1));
        link.round_trip(Duration::from_secs(1));
        assert_eq!(link.coalesce_gap(), MAX_GAP);
        let near = Link::default();
        near.round_trip(Duration::from_micros(50));
        near.body(1 << 20, Duration::from_millis(1));
        assert_eq!(near.coalesce_gap(), MIN_GAP);
    }

    #[test]
    fn only_the_latest_round_trips_count() {
        let link = Link::default();
        for _ in 0..KEPT {
            link.round_trip(Duration::from_secs(1));
        }
        for _ in 0..KEPT / 2 + 1 {
            link.round_trip(Duration::from_millis(1));
        }
        link.body(1 << 30, Duration::from_secs(1));
        assert_eq!(link.measured().map(|m| m.0), Some(Duration::from_millis(1)));
    }

    #[tokio::test]
    async fn reads_through_the_store_are_measured() {
        let link = Link::new();
        let store = Metered::new(Arc::new(InMemory::new()), link.clone());
        let body = vec![7u8; 4 << 20];
        store.put(&Path::from("pack"), PutPayload::from(body.clone())).await.unwrap();
        store.head(&Path::from("pack")).await.unwrap();
        assert_eq!(link.inner.lock().unwrap().round_trips.len(), 0, "a HEAD is not a read");
        // A response read to the end gives a round trip and a throughput.
        let got = store.get_range(&Path::from("pack"), 0..(1 << 20)).await.unwrap();
        assert_eq!(&got[..], &body[..1 << 20]);
        let ranges = store.get_ranges(&Path::from("pack"), &[0..10, (3 << 20)..(4 << 20)]).await.unwrap();
        assert_eq!(ranges[1].len(), 1 << 20);
        let s = link.inner.lock().unwrap();
        assert_eq!(s.round_trips.len(), 3, "each range is a request");
        assert!(s.throughput.is_some_and(|t| t > 0.0));
    }

    #[tokio::test]
    async fn a_body_not_read_to_the_end_is_no_sample() {
        let link = Link::new();
        let store = Metered::new(Arc::new(InMemory::new()), link.clone());
        store.put(&Path::from("pack"), PutPayload::from(vec![1u8; 1 << 20])).await.unwrap();
        let got = store.get(&Path::from("pack")).await.unwrap();
        drop(got);
        let s = link.inner.lock().unwrap();
        assert_eq!((s.round_trips.len(), s.throughput), (1, None));
    }
}
