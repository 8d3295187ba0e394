//! A stream that gives up on a stalled peer: a write that makes no progress for `send_timeout`
//! (a client that stopped reading), and a read that waits longer than `keep_alive` after the
//! stream last wrote (a client that holds a kept-alive connection without a new request, or
//! a new connection that never says anything) while no write is waiting on the peer (a long
//! answer read slowly is held to the send timeout only). A read after the peer spoke — a request still
//! arriving, a handler at work — is never timed here: the protocol layer bounds those.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// What the stream did last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Wrote (or has just been opened): the peer's turn to speak.
    Wrote,
    /// Read: the peer spoke.
    Read,
}

/// A stream with a send timeout and a keep-alive timeout.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    keep_alive: Duration,
    send_timeout: Duration,
    last: Last,
    idle: Timer,
    stalled: Timer,
}

impl<S> Watched<S> {
    /// Watches `inner`; a new connection counts as having written (it must speak first).
    pub fn new(inner: S, keep_alive: Duration, send_timeout: Duration) -> Self {
        Self {
            inner,
            keep_alive,
            send_timeout,
            last: Last::Wrote,
            idle: Timer::default(),
            stalled: Timer::default(),
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// A timer that is armed when first polled after being disarmed, reusing its allocation.
#[derive(Debug, Default)]
struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Timer {
    /// Stops the timer (the next poll arms it afresh).
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Polls the timer, arming it for `after` if it is not running; true when it has fired.
    fn fired(&mut self, after: Duration, cx: &mut Context<'_>) -> bool {
        let now = tokio::time::Instant::now();
        // A limit too large to add is as good as none: a year.
        let deadline = now
            .checked_add(after)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if !self.armed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last = Last::Read;
                    this.idle.disarm();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                // While a write waits on the peer (an answer it reads slowly), the send
                // timeout is the clock, not the keep-alive one.
                if this.last == Last::Wrote
                    && !this.stalled.armed
                    && this.idle.fired(this.keep_alive, cx)
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the keep-alive timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S> Watched<S> {
    /// What a write came to: progress resets the clocks, no progress runs the send timeout.
    fn wrote(
        &mut self,
        result: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.last = Last::Wrote;
                    self.stalled.disarm();
                    self.idle.disarm();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if self.stalled.fired(self.send_timeout, cx) => {
                Poll::Ready(Err(stopped_reading()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn stopped_reading() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading")
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.stalled.fired(this.send_timeout, cx) => {
                Poll::Ready(Err(stopped_reading()))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_silent_peer_is_timed_out_only_when_it_is_its_turn() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched = Watched::new(near, Duration::from_millis(50), Duration::from_secs(5));
        let mut buffer = [0u8; 8];
        // A new connection that says nothing.
        let error = watched.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // After the peer spoke, waiting (a handler at work) is not timed.
        let (near, mut far2) = tokio::io::duplex(64);
        let mut watched = Watched::new(near, Duration::from_millis(50), Duration::from_secs(5));
        far2.write_all(b"hi").await.unwrap();
        assert_eq!(watched.read(&mut buffer).await.unwrap(), 2);
        let waited = tokio::time::timeout(Duration::from_millis(150), watched.read(&mut buffer));
        assert!(waited.await.is_err(), "still waiting, not failed");
        // After an answer, the keep-alive clock runs again.
        watched.write_all(b"ok").await.unwrap();
        let error = watched.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        far.write_all(b"x").await.ok();
    }

    #[tokio::test]
    async fn a_slow_reader_of_a_long_answer_is_held_to_the_send_timeout_only() {
        let (near, mut far) = tokio::io::duplex(16);
        let watched = Watched::new(near, Duration::from_millis(50), Duration::from_secs(5));
        let (mut reading, mut writing) = tokio::io::split(watched);
        let mut buffer = [0u8; 8];
        // An answer longer than the peer takes at once, while the server also watches for the
        // peer closing (as hyper does mid-answer): the read is not timed out meanwhile.
        let answer = async {
            writing.write_all(&[7u8; 1024]).await.unwrap();
        };
        // The peer takes its first bytes after 300 ms, three keep-alive timeouts.
        let watch = tokio::time::timeout(Duration::from_millis(250), reading.read(&mut buffer));
        let slow_peer = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = vec![0u8; 1024];
            far.read_exact(&mut got).await.unwrap();
        };
        let ((), watched, ()) = tokio::join!(answer, watch, slow_peer);
        assert!(watched.is_err(), "still watching after 250 ms: {watched:?}");
        // Once the answer is written, the keep-alive clock runs again.
        let error = reading.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write() {
        let (near, _far) = tokio::io::duplex(16);
        let mut watched = Watched::new(near, Duration::from_secs(5), Duration::from_millis(50));
        let error = watched.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
