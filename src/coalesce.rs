//! Write coalescing for accepted connections.
//!
//! HTTP/2 (the `h2` crate) writes every DATA frame larger than 256 bytes to
//! the socket on its own: it keeps such a payload aside instead of copying it,
//! and must flush before it can take the next frame. With a thousand watch
//! streams on a few connections, every watch event became one `writev` and one
//! TCP segment (about 100,000 system calls a second at 1,000 watchers and 100
//! writes/s), and the kernel's TCP path was the largest cost in the server
//! (see docs/BENCHMARKS.md).
//!
//! [`CoalescingStream`] sits between the socket and HTTP/2. Writes are copied
//! into one buffer, and a flush does not reach the socket while frames are
//! still coming in. HTTP/2's connection task reads the socket at the start of
//! each of its turns, so a read marks a new turn. The rule, per connection:
//!
//! - every flush in the turn that buffered new bytes is *deferred*: it returns
//!   at once and wakes the connection's task, which tokio then runs again
//!   behind the tasks already queued, among them the other streams' tasks
//!   producing frames for this connection;
//! - in the next turn, a flush writes the buffer unless that turn buffered
//!   new bytes again, and it always writes after [`MAX_TURNS`] deferred turns
//!   (or [`MAX_CALLS`] deferred flushes, should reads ever stop marking turns);
//! - a buffer past [`HIGH_WATER`] is written before more is accepted, which is
//!   also where a slow reader pushes back.
//!
//! So bytes wait a few turns of the connection's task at most, never for a
//! timer, and a burst of events leaves in a few large writes.
//!
//! Deferring is only sound when the writer flushes again on every turn, as
//! HTTP/2 does. A TLS handshake flushes once and waits for the peer, so under
//! TLS (which tonic layers *above* this stream) the server uses
//! [`CoalescingStream::passthrough`], which writes on every flush.
//!
//! Invariant: everything accepted by `poll_write` reaches the socket before
//! `poll_flush` or `poll_shutdown` returns `Ready` without a deferral, in the
//! order it was written.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Buffered bytes past which the buffer is written before more is accepted.
pub const HIGH_WATER: usize = 64 * 1024;
/// Most turns of the connection's task a buffer waits through.
pub const MAX_TURNS: u32 = 8;
/// Most flushes deferred in a row, whatever the turns.
pub const MAX_CALLS: u32 = 1024;
/// A drained buffer bigger than this is released rather than kept.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A stream whose writes are coalesced until HTTP/2 has nothing more to send.
pub struct CoalescingStream<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` has reached `inner`.
    written: usize,
    /// Bytes arrived since the last deferred flush.
    fresh: bool,
    /// Counts reads: each turn of HTTP/2's connection task starts with one.
    turn: u64,
    /// The turn of the last deferred flush.
    deferred_in: Option<u64>,
    turns_deferred: u32,
    calls_deferred: u32,
    /// Whether flushes may be deferred at all.
    defer: bool,
}

impl<S> CoalescingStream<S> {
    /// Wraps `inner`, coalescing writes under HTTP/2.
    pub fn new(inner: S) -> CoalescingStream<S> {
        CoalescingStream {
            defer: true,
            ..CoalescingStream::passthrough(inner)
        }
    }

    /// Wraps `inner` without deferring any flush (for streams under TLS).
    pub fn passthrough(inner: S) -> CoalescingStream<S> {
        CoalescingStream {
            defer: false,
            inner,
            buf: Vec::new(),
            written: 0,
            fresh: false,
            turn: 0,
            deferred_in: None,
            turns_deferred: 0,
            calls_deferred: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> CoalescingStream<S> {
    /// Writes the whole buffer to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether a flush now may leave the buffer for a later turn.
    fn may_defer(&self) -> bool {
        if !self.defer {
            return false;
        }
        let within_limits = self.calls_deferred < MAX_CALLS && self.buf.len() < HIGH_WATER;
        let same_turn = self.deferred_in == Some(self.turn);
        within_limits && (same_turn || (self.fresh && self.turns_deferred < MAX_TURNS))
    }

    /// Makes room for more bytes: drains first if the buffer is past [`HIGH_WATER`].
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() >= HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.turn += 1;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.buf.extend_from_slice(data);
        self.fresh = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut total = 0;
        for slice in bufs {
            self.buf.extend_from_slice(slice);
            total += slice.len();
        }
        self.fresh = true;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() && this.may_defer() {
            if this.deferred_in != Some(this.turn) {
                this.deferred_in = Some(this.turn);
                this.turns_deferred += 1;
            }
            this.calls_deferred += 1;
            this.fresh = false;
            // The wake guarantees another turn, hence another flush.
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        this.fresh = false;
        this.deferred_in = None;
        this.turns_deferred = 0;
        this.calls_deferred = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for CoalescingStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    #[tokio::test]
    async fn flushed_bytes_arrive_whole_and_in_order() {
        let (near, mut far) = tokio::io::duplex(1 << 22);
        let mut stream = CoalescingStream::new(near);
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let chunk = vec![(i % 251) as u8; 300 + i as usize];
            stream.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
            if i % 7 == 0 {
                stream.flush().await.unwrap();
            }
        }
        // Flushes without reads (no turns) are deferred; shutting down
        // writes everything.
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    /// One turn of a connection task: a read attempt, then writes and flushes.
    fn turn(stream: &mut CoalescingStream<DuplexStream>, frames: &[&[u8]]) -> bool {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut scratch = [0u8; 16];
        let mut read_buf = ReadBuf::new(&mut scratch);
        assert!(Pin::new(&mut *stream)
            .poll_read(&mut cx, &mut read_buf)
            .is_pending());
        for frame in frames {
            let written = Pin::new(&mut *stream).poll_write(&mut cx, frame);
            assert!(matches!(written, Poll::Ready(Ok(n)) if n == frame.len()));
            assert!(Pin::new(&mut *stream).poll_flush(&mut cx).is_ready());
        }
        assert!(Pin::new(&mut *stream).poll_flush(&mut cx).is_ready());
        stream.buf.is_empty()
    }

    #[test]
    fn a_burst_waits_one_quiet_turn_and_never_more_than_max_turns() {
        let (near, _far) = tokio::io::duplex(1 << 20);
        let mut stream = CoalescingStream::new(near);
        // New frames every turn: held for MAX_TURNS turns, then written.
        for i in 0..MAX_TURNS {
            assert!(!turn(&mut stream, &[b"frame"]), "written early, turn {i}");
        }
        assert!(turn(&mut stream, &[b"frame"]), "held past MAX_TURNS");
        // A burst, then a turn with nothing new: written on the quiet turn.
        assert!(!turn(&mut stream, &[b"one", b"two", b"three"]));
        assert!(turn(&mut stream, &[]));
    }

    #[tokio::test]
    async fn past_high_water_the_buffer_is_written_before_more_is_taken() {
        let (near, mut far) = tokio::io::duplex(4 * HIGH_WATER);
        let mut stream = CoalescingStream::new(near);
        let chunk = vec![7u8; HIGH_WATER];
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"next").await.unwrap();
        // No flush: the first chunk went out when the second was accepted.
        let mut got = vec![0; HIGH_WATER];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, chunk);
    }

    #[test]
    fn passthrough_writes_on_every_flush() {
        let (near, _far) = tokio::io::duplex(1 << 20);
        let mut stream = CoalescingStream::passthrough(near);
        assert!(turn(&mut stream, &[b"hello"]));
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_buffered() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut stream = CoalescingStream::new(near);
        stream.write_all(b"last words").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }
}
