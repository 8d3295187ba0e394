//! A PACS's answer relayed to the client as it arrives: frame by frame, never held whole, cut
//! when the PACS pauses longer than allowed or sends more than the size limit (the client sees
//! a failed transfer, never a truncated one passed as whole), and holding its slot among the
//! PACS's requests until the last byte. A metadata answer has the PACS's own URLs (its
//! `BulkDataURI`s) replaced by the gateway's as it streams.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::{
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};

/// Replaces every occurrence of one byte string by another in a stream cut anywhere.
#[derive(Debug)]
pub(crate) struct Rewrite {
    from: Vec<u8>,
    to: Vec<u8>,
    /// The end of what was fed that could begin an occurrence.
    carry: Vec<u8>,
}

impl Rewrite {
    /// Replaces `from` (not empty) by `to`.
    pub(crate) fn new(from: &str, to: &str) -> Option<Self> {
        (!from.is_empty()).then(|| Self {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
            carry: Vec::new(),
        })
    }

    /// What can be sent of everything fed so far.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut buffer = std::mem::take(&mut self.carry);
        buffer.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buffer.len());
        let mut start = 0;
        while let Some(found) = buffer[start..]
            .windows(self.from.len())
            .position(|window| window == self.from.as_slice())
        {
            out.extend_from_slice(&buffer[start..start + found]);
            out.extend_from_slice(&self.to);
            start += found + self.from.len();
        }
        let keep = (self.from.len() - 1).min(buffer.len() - start);
        let end = buffer.len() - keep;
        out.extend_from_slice(&buffer[start..end]);
        self.carry = buffer[end..].to_vec();
        Bytes::from(out)
    }

    /// The rest, once the stream ended.
    pub(crate) fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.carry))
    }
}

/// The body of a relayed answer.
pub(crate) struct Relay {
    inner: Incoming,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    left: u64,
    rewrite: Option<Rewrite>,
    done: bool,
    _slot: OwnedSemaphorePermit,
}

impl Relay {
    /// Relays `inner`, at most `limit` bytes, the PACS never pausing longer than `stall`.
    pub(crate) fn new(
        inner: Incoming,
        stall: Duration,
        limit: u64,
        rewrite: Option<Rewrite>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            left: limit,
            rewrite,
            done: false,
            _slot: slot,
        }
    }

    fn fail(&mut self, reason: &'static str) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.done = true;
        tracing::warn!(target: "tsunagi::dicomweb", reason, "a relayed answer was cut");
        Poll::Ready(Some(Err(std::io::Error::other(reason))))
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + this.stall;
                    this.timer.as_mut().reset(deadline);
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers pass as they are.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    let length = data.len() as u64;
                    if length > this.left {
                        return this.fail("the image archive's answer exceeds the size limit");
                    }
                    this.left -= length;
                    let data = match &mut this.rewrite {
                        Some(rewrite) => rewrite.feed(&data),
                        None => data,
                    };
                    if data.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(target: "tsunagi::dicomweb", %error, "reading the image archive's answer");
                    return this.fail("the image archive's answer broke off");
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.rewrite.as_mut().map(Rewrite::finish);
                    return match rest {
                        Some(rest) if !rest.is_empty() => Poll::Ready(Some(Ok(Frame::data(rest)))),
                        _ => Poll::Ready(None),
                    };
                }
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return this.fail("the image archive paused too long within its answer");
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.rewrite {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn through(rewrite: &mut Rewrite, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&rewrite.feed(chunk.as_bytes()));
        }
        out.extend_from_slice(&rewrite.finish());
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn urls_are_replaced_wherever_the_stream_is_cut() {
        let text = r#"{"BulkDataURI":"http://pacs:8042/dicom-web/studies/1/bulk/7fe00010"},{"BulkDataURI":"http://pacs:8042/dicom-web/studies/2"}"#;
        let expected = text.replace("http://pacs:8042/dicom-web", "https://gw/dicomweb");
        for cut in 0..text.len() {
            for second in cut..text.len() {
                let mut rewrite =
                    Rewrite::new("http://pacs:8042/dicom-web", "https://gw/dicomweb").unwrap();
                let got = through(
                    &mut rewrite,
                    &[&text[..cut], &text[cut..second], &text[second..]],
                );
                assert_eq!(got, expected, "cut at {cut} and {second}");
            }
        }
        assert!(Rewrite::new("", "x").is_none());
        let mut rewrite = Rewrite::new("aa", "b").unwrap();
        assert_eq!(through(&mut rewrite, &["aaa", "a"]), "bb");
    }
}
