//! Frames from a byte stream (TCP, TLS; later s2s and any other transport that carries an XML
//! stream as bytes), read fairly: one poll does a bounded amount of work and then yields, so a
//! peer that sends bytes completing no frame (whitespace, text, a stanza growing toward the size
//! limit) cannot hold a worker thread.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::stream::transport::TransportError;
use crate::xml::{Frame, StreamParser};

/// Bytes read per call to the socket. The buffer lives on the stack of one poll, so a
/// connection waiting for data holds none.
pub const READ_CHUNK: usize = 4096;

/// Reads one poll may do before it yields to other connections. tokio's cooperative budget
/// would stop a plain socket after 128 reads, but decrypted TLS records can be served from
/// rustls's buffer without touching the socket, and so without spending that budget.
pub const MAX_READS_PER_POLL: usize = 16;

/// Reads from `source` and parses until at least one frame is in `frames`. Returns `Pending`
/// when the source has nothing more (its waker registered by `poll_read`) or when this poll has
/// done `MAX_READS_PER_POLL` reads (waker woken, so the task runs again after the others).
/// Adds what it read to `read`, for the session's traffic shaper.
pub fn poll_frames<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    source: &mut R,
    parser: &mut StreamParser,
    frames: &mut VecDeque<Frame>,
    read: &mut u64,
) -> Poll<Result<(), TransportError>> {
    for _ in 0..MAX_READS_PER_POLL {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *source).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Ready(Ok(())) => {}
        }
        let filled = buf.filled();
        if filled.is_empty() {
            return Poll::Ready(Err(TransportError::Disconnected));
        }
        *read += filled.len() as u64;
        let mut out = Vec::new();
        if let Err(e) = parser.feed(filled, &mut out) {
            return Poll::Ready(Err(e.into()));
        }
        frames.extend(out);
        if !frames.is_empty() {
            return Poll::Ready(Ok(()));
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use proptest::prelude::*;

    use super::*;
    use crate::xml::XmlLimits;

    /// A peer faster than the server: every read is answered at once with up to `burst`
    /// bytes, never `Pending`, the way a buffered TLS session or a full socket behaves.
    struct Firehose {
        data: Vec<u8>,
        at: usize,
        burst: usize,
        reads: usize,
    }

    impl AsyncRead for Firehose {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let end = (self.at + self.burst.min(buf.remaining())).min(self.data.len());
            let at = self.at;
            buf.put_slice(&self.data[at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    const OPEN: &str = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn filler() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0usize..300_000).prop_map(|n| vec![b' '; n]),
            (0usize..300_000).prop_map(|n| vec![b'x'; n]),
            (0usize..2_000).prop_map(|n| b"<a>".repeat(n)),
            Just(b"<presence/>".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..256),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the peer sends and however fast, each poll reads at most
        /// `MAX_READS_PER_POLL` times and then yields a frame, an error or `Pending` with the
        /// task woken again: never an endless loop, never a poll that keeps the worker.
        #[test]
        fn every_poll_is_bounded_and_progress_is_made(
            fill in proptest::collection::vec(filler(), 1..4),
            burst in 1usize..=READ_CHUNK,
        ) {
            let mut data = OPEN.as_bytes().to_vec();
            data.extend(fill.concat());
            let total = data.len();
            let mut source = Firehose { data, at: 0, burst, reads: 0 };
            let mut parser = StreamParser::new(XmlLimits::with_max_size(256 * 1024));
            let mut frames = VecDeque::new();
            let mut read = 0u64;
            let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
            let waker = Waker::from(wakes.clone());
            let mut cx = Context::from_waker(&waker);
            loop {
                let reads_before = source.reads;
                let woken_before = wakes.0.load(Ordering::Relaxed);
                let at_before = source.at;
                let poll = poll_frames(&mut cx, &mut source, &mut parser, &mut frames, &mut read);
                prop_assert!(source.reads - reads_before <= MAX_READS_PER_POLL);
                // Every byte taken from the source is counted for the shaper.
                prop_assert_eq!(read, source.at as u64);
                prop_assert!(source.at - at_before <= MAX_READS_PER_POLL * READ_CHUNK);
                match poll {
                    Poll::Ready(Ok(())) => frames.clear(),
                    Poll::Ready(Err(_)) => break,
                    Poll::Pending => {
                        // The source is never pending, so this is a voluntary yield: it must
                        // have asked to run again.
                        prop_assert_eq!(wakes.0.load(Ordering::Relaxed), woken_before + 1);
                    }
                }
                prop_assert!(source.at <= total);
            }
        }
    }
}
