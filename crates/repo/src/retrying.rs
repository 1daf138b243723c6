//! Listings that survive a broken response.
//!
//! `object_store` retries a request that fails (connect errors, 5xx, timeouts) and a `get`
//! whose body breaks off, but a listing whose response body breaks off mid-way ("error
//! reading a body from connection: end of file before message length reached") reaches the
//! caller as an error: one cut connection during `repo check` or a backup's lock scan failed
//! the whole command (found with the fault-injecting relay of issue 19). [`Retrying`] wraps a
//! store and resumes such a listing after the last entry it yielded (`list_with_offset`:
//! S3's `start-after`, GCS's `startOffset`; every supported store lists in key order), with
//! back-off, until the retry deadline. Reads (`get`, ranges, `head`, delimited listings) get
//! the same: `object_store` gives up at once on some transport errors ("connection was not
//! ready" when a pooled connection was reset), which made a store cut off for a second
//! fail a command at once. Errors that are not transport errors (a missing object or
//! bucket, a refused credential) are returned at once. Writes and deletes pass through to
//! `object_store`'s own retries: a write retried here after it was applied would meet its
//! own object (`PutMode::Create`) and be taken for a conflict.
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};

/// A store whose listings resume after transport errors until `deadline`.
#[derive(Debug)]
pub struct Retrying {
    inner: Arc<dyn ObjectStore>,
    deadline: Duration,
}

impl Retrying {
    pub fn new(inner: Arc<dyn ObjectStore>, deadline: Duration) -> Retrying {
        Retrying { inner, deadline }
    }
}

impl Retrying {
    /// Run a read until it succeeds, fails for another reason than the transport, or the
    /// deadline (counted from the first try: `object_store`'s own retries count too) would
    /// pass during the next back-off.
    async fn again<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        let mut result = op().await;
        loop {
            match result {
                Err(e) if is_transport_error(&e) => {
                    let wait = backoff(attempt);
                    if started.elapsed() + wait > self.deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    // A retry gets what is left of the deadline, not a deadline of its own:
                    // `object_store` retries inside each try for up to the whole deadline.
                    let left = self.deadline.saturating_sub(started.elapsed());
                    result = match tokio::time::timeout(left, op()).await {
                        Ok(r) => r,
                        Err(_) => return Err(e),
                    };
                }
                other => return other,
            }
        }
    }
}

impl fmt::Display for Retrying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// Whether `e` came from the transport (a connection cut, a body broken off, a timeout),
/// after `object_store`'s own retries: worth another try.
pub fn is_transport_error(e: &object_store::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<object_store::client::HttpError>().is_some() {
            return true;
        }
        src = s.source();
    }
    false
}

/// Listing state: where to resume, how long we have been failing.
struct ListState {
    inner: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    last: Option<Path>,
    stream: Option<BoxStream<'static, Result<ObjectMeta>>>,
    /// The start, or the last entry received: the deadline counts from there.
    progress: tokio::time::Instant,
    attempt: u32,
    deadline: Duration,
    done: bool,
    /// The error that made the listing resume, returned if the deadline passes first.
    last_error: Option<object_store::Error>,
}

impl ListState {
    fn open(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        match &self.last {
            Some(after) => self.inner.list_with_offset(self.prefix.as_ref(), after),
            None => self.inner.list(self.prefix.as_ref()),
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(7))).min(Duration::from_secs(10))
}

fn resuming_list(inner: Arc<dyn ObjectStore>, prefix: Option<Path>, after: Option<Path>, deadline: Duration) -> BoxStream<'static, Result<ObjectMeta>> {
    let state =
        ListState { inner, prefix, last: after, stream: None, progress: tokio::time::Instant::now(), attempt: 0, deadline, done: false, last_error: None };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.stream.is_none() {
                st.stream = Some(st.open());
            }
            let next = st.stream.as_mut().expect("opened above").next();
            let next = if st.attempt == 0 {
                next.await
            } else {
                // A resumed listing gets what is left of the deadline since the last entry.
                match tokio::time::timeout(st.deadline.saturating_sub(st.progress.elapsed()), next).await {
                    Ok(n) => n,
                    Err(_) => Some(Err(st.last_error.take().expect("a resumed listing follows an error"))),
                }
            };
            match next {
                None => return None,
                Some(Ok(meta)) => {
                    st.last = Some(meta.location.clone());
                    st.progress = tokio::time::Instant::now();
                    st.attempt = 0;
                    return Some((Ok(meta), st));
                }
                Some(Err(e)) => {
                    let wait = backoff(st.attempt);
                    if !is_transport_error(&e) || st.progress.elapsed() + wait > st.deadline {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    st.last_error = Some(e);
                    st.stream = None;
                    st.attempt += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    })
    .boxed()
}

#[async_trait::async_trait]
impl ObjectStore for Retrying {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.again(|| self.inner.get_opts(location, options.clone())).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.again(|| self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        resuming_list(self.inner.clone(), prefix.cloned(), None, self.deadline)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        resuming_list(self.inner.clone(), prefix.cloned(), Some(offset.clone()), self.deadline)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.again(|| self.inner.list_with_delimiter(prefix)).await
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
    use object_store::client::{HttpError, HttpErrorKind};
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    /// A store whose reads and listings each take `slow` and then fail on the transport, as
    /// `object_store` does after its own retries against a store that resets every connection.
    #[derive(Debug)]
    struct Cut {
        slow: Duration,
        inner: InMemory,
    }

    fn cut_error() -> object_store::Error {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        object_store::Error::Generic { store: "cut", source: Box::new(HttpError::new(HttpErrorKind::Connect, io)) }
    }

    impl fmt::Display for Cut {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cut")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Cut {
        async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, _: &Path, _: GetOptions) -> Result<GetResult> {
            tokio::time::sleep(self.slow).await;
            Err(cut_error())
        }
        fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, _: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            let slow = self.slow;
            futures::stream::once(async move {
                tokio::time::sleep(slow).await;
                Err(cut_error())
            })
            .boxed()
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

    /// CI of stop 25: each try took most of the deadline inside `object_store`, and a retry
    /// got a whole deadline of its own, so a command ran for up to twice `--store-timeout`.
    #[tokio::test(start_paused = true)]
    async fn retries_end_within_the_deadline() {
        let deadline = Duration::from_secs(8);
        for slow in [Duration::from_millis(300), Duration::from_secs(5), Duration::from_secs(7)] {
            let store = Retrying::new(Arc::new(Cut { slow, inner: InMemory::new() }), deadline);
            let t = tokio::time::Instant::now();
            let got = store.get(&Path::from("config")).await;
            assert!(got.is_err_and(|e| is_transport_error(&e)), "the transport error is returned");
            assert!(t.elapsed() <= deadline + Duration::from_millis(50), "get with tries of {slow:?} took {:?}", t.elapsed());

            let t = tokio::time::Instant::now();
            let listed: Vec<Result<ObjectMeta>> = store.list(None).collect().await;
            assert!(listed.len() == 1 && listed[0].as_ref().is_err_and(is_transport_error), "one error ends the listing");
            assert!(t.elapsed() <= deadline + Duration::from_millis(50), "list with tries of {slow:?} took {:?}", t.elapsed());
        }
    }
}
