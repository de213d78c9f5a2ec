//! What an HTTP connection reads, counted below the WebSocket library, and a quota that stops
//! the reading until its owner has looked.
//!
//! The WebSocket library reads frames until a message is complete. Frames that never complete
//! one (a text frame without FIN, then empty continuations, forever) would be read at full
//! speed inside a single `next()` without the session seeing a byte of them. Counting here, at
//! the connection, lets the session's shaper charge every byte that crossed it, frame headers
//! and masks included; the quota makes the library hand control back after a bounded amount,
//! so the shaper can pause the reading as it does for a byte stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the connection (owned by hyper until the upgrade) and the WebSocket session.
#[derive(Debug)]
pub struct ReadMeter {
    read: AtomicU64,
    /// Reads stop once `read` reaches this; unlimited until the session sets a quota.
    allowed_until: AtomicU64,
}

impl ReadMeter {
    pub fn new() -> Arc<ReadMeter> {
        Arc::new(ReadMeter {
            read: AtomicU64::new(0),
            allowed_until: AtomicU64::new(u64::MAX),
        })
    }

    /// Bytes read from the connection so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Allows `quota` more bytes (and at most one read beyond, whatever the reader asks for).
    pub fn allow(&self, quota: u64) {
        let until = self.read().saturating_add(quota);
        self.allowed_until.store(until, Ordering::Relaxed);
    }

    /// The quota is used up: reading waits for the next `allow`.
    pub fn exhausted(&self) -> bool {
        self.read() >= self.allowed_until.load(Ordering::Relaxed)
    }
}

/// A connection whose reads are counted by a `ReadMeter` and stopped by its quota.
pub struct MeteredIo<S> {
    inner: S,
    meter: Arc<ReadMeter>,
}

impl<S> MeteredIo<S> {
    pub fn new(inner: S, meter: Arc<ReadMeter>) -> Self {
        MeteredIo { inner, meter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.meter.exhausted() {
            // The owner polls again after `allow`; the wake keeps any other poller from
            // waiting for a readiness event that has already been spent.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.meter.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn counts_what_it_reads_and_stops_at_the_quota() {
        let data = vec![7u8; 10_000];
        let meter = ReadMeter::new();
        let mut io = MeteredIo::new(&data[..], meter.clone());
        let mut buf = [0u8; 1000];
        assert_eq!(io.read(&mut buf).await.unwrap(), 1000);
        assert_eq!(meter.read(), 1000);

        meter.allow(1500);
        assert_eq!(io.read(&mut buf).await.unwrap(), 1000);
        // One read may cross the quota; the next waits.
        assert_eq!(io.read(&mut buf).await.unwrap(), 1000);
        assert!(meter.exhausted());
        let waiting = futures::FutureExt::now_or_never(io.read(&mut buf));
        assert!(waiting.is_none(), "no read past the quota");
        assert_eq!(meter.read(), 3000);

        meter.allow(1);
        assert_eq!(io.read(&mut buf).await.unwrap(), 1000);
        assert_eq!(meter.read(), 4000);
    }
}
