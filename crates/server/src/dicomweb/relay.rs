//! A PACS's answer relayed to the client as it arrives: frame by frame, never held whole, cut
//! when the PACS pauses longer than allowed within it, when it runs past the answer's time
//! limit or past the size limit (the client sees a failed transfer, never a truncated one
//! passed as whole), and holding its slots among the PACS's requests until the last byte or
//! the cut. The PACS's trailers are dropped. In a multipart answer each part's
//! `Content-Location` (the PACS's own URL) is dropped as the parts stream by
//! ([`PartFilter`]); the parts' contents pass untouched.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Part headers dropped from a multipart answer.
const DROPPED_HEADERS: &[&str] = &["content-location:"];
/// The longest header block of one part.
const MAX_PART_HEADERS: usize = 16 * 1024;

/// Where a [`PartFilter`] is in the multipart stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In a part's body (or the preamble): looking for the next delimiter.
    Body,
    /// Just after a delimiter: reading the part's header block.
    Headers,
    /// After the closing delimiter: everything passes.
    Epilogue,
}

/// Drops the part headers that name the PACS from a `multipart/related` stream cut anywhere.
/// A part whose headers give its `Content-Length` is passed through by that length, without
/// scanning or copying its bytes; otherwise its body is scanned for the next delimiter.
#[derive(Debug)]
pub(crate) struct PartFilter {
    /// `--<boundary>`.
    delimiter: Vec<u8>,
    place: Place,
    /// Bytes of the current part's body known to remain (its `Content-Length`).
    known: u64,
    /// Bytes held: the end of a body that could begin a delimiter, or a header block so far.
    held: Vec<u8>,
}

impl PartFilter {
    /// A filter for the multipart media type `content_type` (its `boundary` parameter), `None`
    /// when it names none.
    pub(crate) fn for_type(content_type: &str) -> Option<Self> {
        let boundary = content_type.split(';').find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| value.trim().trim_matches('"').to_owned())
        })?;
        (!boundary.is_empty()).then(|| Self {
            delimiter: format!("--{boundary}").into_bytes(),
            place: Place::Body,
            known: 0,
            held: Vec::new(),
        })
    }

    /// What can be sent of everything fed so far, or why the stream is not multipart.
    pub(crate) fn feed(&mut self, chunk: Bytes) -> Result<Bytes, &'static str> {
        let mut data = if self.held.is_empty() {
            chunk
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(&chunk);
            Bytes::from(joined)
        };
        let mut out: Vec<Bytes> = Vec::new();
        while !data.is_empty() {
            match self.place {
                Place::Epilogue => {
                    out.push(std::mem::take(&mut data));
                }
                Place::Body if self.known > 0 => {
                    let take =
                        usize::try_from(self.known).map_or(data.len(), |n| n.min(data.len()));
                    out.push(data.split_to(take));
                    self.known -= take as u64;
                }
                Place::Body => match find(&data, &self.delimiter) {
                    Some(found) => {
                        out.push(data.split_to(found + self.delimiter.len()));
                        self.place = Place::Headers;
                    }
                    None => {
                        let keep = (self.delimiter.len() - 1).min(data.len());
                        out.push(data.split_to(data.len() - keep));
                        self.held = data.to_vec();
                        data = Bytes::new();
                    }
                },
                Place::Headers => {
                    if data.len() < 2 {
                        self.held = data.to_vec();
                        data = Bytes::new();
                        continue;
                    }
                    if data.starts_with(b"--") {
                        // The closing delimiter.
                        self.place = Place::Epilogue;
                        continue;
                    }
                    let Some(blank) = find(&data, b"\r\n\r\n") else {
                        if data.len() > MAX_PART_HEADERS {
                            return Err("a part's headers are too long");
                        }
                        self.held = data.to_vec();
                        data = Bytes::new();
                        continue;
                    };
                    // `\r\nName: value\r\n…\r\n\r\n`, without the lines that name the PACS.
                    let block = data.split_to(blank + 4);
                    let mut kept = Vec::with_capacity(block.len());
                    let lines: Vec<&[u8]> = block.split(|b| *b == b'\n').collect();
                    for (index, line) in lines.iter().enumerate() {
                        let lower = line.to_ascii_lowercase();
                        if DROPPED_HEADERS
                            .iter()
                            .any(|h| lower.starts_with(h.as_bytes()))
                        {
                            continue;
                        }
                        if let Some(value) = lower.strip_prefix(b"content-length:") {
                            self.known = std::str::from_utf8(value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        }
                        kept.extend_from_slice(line);
                        if index + 1 < lines.len() {
                            kept.push(b'\n');
                        }
                    }
                    out.push(Bytes::from(kept));
                    self.place = Place::Body;
                }
            }
        }
        Ok(match out.len() {
            0 => Bytes::new(),
            1 => out.remove(0),
            _ => Bytes::from(out.concat()),
        })
    }

    /// The rest, once the stream ended.
    pub(crate) fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.held))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// What holds a place among a PACS's requests until the answer is done (its permits).
pub(crate) type Slots = Box<dyn Send + Sync>;

/// The limits of one relayed answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The longest pause of the PACS within the answer.
    pub(crate) stall: Duration,
    /// When the answer must be done.
    pub(crate) deadline: Instant,
    /// Its most bytes.
    pub(crate) bytes: u64,
}

/// The body of a relayed answer.
pub(crate) struct Relay {
    inner: Incoming,
    limits: Limits,
    /// Armed while the relay waits on the PACS.
    timer: Pin<Box<Sleep>>,
    waiting: bool,
    left: u64,
    filter: Option<PartFilter>,
    done: bool,
    _slots: Slots,
}

impl Relay {
    /// Relays `inner` under `limits`, filtered by `filter`, holding `slots`.
    pub(crate) fn new(
        inner: Incoming,
        limits: Limits,
        filter: Option<PartFilter>,
        slots: Slots,
    ) -> Self {
        Self {
            inner,
            limits,
            timer: Box::pin(tokio::time::sleep_until(limits.deadline)),
            waiting: false,
            left: limits.bytes,
            filter,
            done: false,
            _slots: slots,
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
            if Instant::now() >= this.limits.deadline {
                return this.fail("the image archive's answer ran past its time limit");
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.waiting = false;
                    // Trailers are the PACS's business: dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let length = data.len() as u64;
                    if length > this.left {
                        return this.fail("the image archive's answer exceeds the size limit");
                    }
                    this.left -= length;
                    let data = match &mut this.filter {
                        Some(filter) => match filter.feed(data) {
                            Ok(data) => data,
                            Err(reason) => return this.fail(reason),
                        },
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
                    let rest = this.filter.as_mut().map(PartFilter::finish);
                    return match rest {
                        Some(rest) if !rest.is_empty() => Poll::Ready(Some(Ok(Frame::data(rest)))),
                        _ => Poll::Ready(None),
                    };
                }
                Poll::Pending => {
                    // The PACS's pause is timed from when the relay began waiting on it (time
                    // the client takes to read is not the PACS's), and never past the deadline.
                    if !this.waiting {
                        this.waiting = true;
                        let pause = Instant::now()
                            .checked_add(this.limits.stall)
                            .unwrap_or(this.limits.deadline)
                            .min(this.limits.deadline);
                        this.timer.as_mut().reset(pause);
                    }
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
        match self.filter {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn through(filter: &mut PartFilter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&filter.feed(Bytes::copy_from_slice(chunk)).unwrap());
        }
        out.extend_from_slice(&filter.finish());
        out
    }

    #[test]
    fn part_locations_are_dropped_wherever_the_stream_is_cut() {
        let scanned: (&[u8], &[u8]) = (
            b"--b1\r\nContent-Location: http://pacs:8042/dicom-web/studies/1/frames/1\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01--b\r\n--b1\r\ncontent-location: http://pacs/x\r\n\r\nDICM\r\n--b1--\r\nepilogue",
            b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01--b\r\n--b1\r\n\r\nDICM\r\n--b1--\r\nepilogue",
        );
        // A part of known length passes by its length, even holding the delimiter's bytes.
        let counted: (&[u8], &[u8]) = (
            b"--b1\r\nContent-Length: 10\r\nContent-Location: http://pacs/y\r\n\r\n--b1\r\nABCD\r\n--b1\r\nContent-Location: z\r\n\r\nEF\r\n--b1--",
            b"--b1\r\nContent-Length: 10\r\n\r\n--b1\r\nABCD\r\n--b1\r\n\r\nEF\r\n--b1--",
        );
        let filter = || {
            PartFilter::for_type(
                "multipart/related; type=\"application/octet-stream\"; boundary=b1",
            )
            .unwrap()
        };
        for (answer, expected) in [scanned, counted] {
            assert_eq!(through(&mut filter(), &[answer]), expected);
            for cut in 0..answer.len() {
                for second in (cut..answer.len()).step_by(3) {
                    let got = through(
                        &mut filter(),
                        &[&answer[..cut], &answer[cut..second], &answer[second..]],
                    );
                    assert_eq!(got, expected, "cut at {cut} and {second}");
                }
            }
        }
        assert!(PartFilter::for_type("multipart/related").is_none());
        assert!(PartFilter::for_type("image/jpeg").is_none());
        let mut endless = PartFilter::for_type("multipart/related; boundary=z").unwrap();
        assert!(endless.feed(Bytes::from_static(b"--z\r\nX: ")).is_ok());
        assert!(
            endless
                .feed(Bytes::from(vec![b'a'; MAX_PART_HEADERS + 10]))
                .is_err()
        );
    }
}
