//! The MLLP framer on a byte stream cut at arbitrary places: frames come out whole, never
//! larger than the limit, and nothing panics whatever the peer sends (garbage, restarts, frames
//! within frames). The first byte picks the chunk size, as TCP segments would cut the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_hl7v2::mllp::FrameDecoder;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let mut decoder = FrameDecoder::new(LIMIT);
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => assert!(frame.len() <= LIMIT, "a frame over the limit"),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.pending() <= LIMIT + chunk, "unbounded buffering");
    }
});
