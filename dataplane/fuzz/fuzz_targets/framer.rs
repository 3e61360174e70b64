//! RFC 6587 framing with coverage from the Rust code itself: a stream cut at arbitrary points
//! frames exactly as the whole stream does, frames stay within `max_length`, and the bytes held
//! between reads stay bounded.
//!
//! Input layout and cutting as `tests/fuzz/targets/syslog_framing.py` (`max_length` selector,
//! `max_digits` selector, chunking seed, stream), so seeds and crash inputs work in both.
#![no_main]

use _dataplane::syslog::framing::{FrameError, Framer};
use libfuzzer_sys::fuzz_target;

type Run = (Vec<Vec<u8>>, Vec<(FrameError, u64)>);

fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B1);
    if state == 0 {
        state = 1;
    }
    let top = u32::from(seed) % 64 + 1;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state % top + 1) as usize;
        out.push(&stream[pos..stream.len().min(pos + size)]);
        pos += size;
    }
    out
}

fn run(data: &[u8], cut: bool) -> Run {
    let mut head = [0u8; 3];
    for (h, d) in head.iter_mut().zip(data) {
        *h = *d;
    }
    let max_length = if head[0] >= 250 {
        65536
    } else {
        usize::from(head[0]) + 1
    };
    let max_digits = usize::from(head[1] % 10) + 1;
    let stream = data.get(3..).unwrap_or_default();
    let mut framer = Framer::new(max_length, max_digits);
    let mut frames = Vec::new();
    for piece in chunks(stream, if cut { head[2] } else { 0 }) {
        framer.feed(piece);
        while let Some(frame) = framer.next_frame() {
            assert!(!frame.is_empty() && frame.len() <= max_length);
            frames.push(frame);
        }
        assert!(framer.buffered() <= max_length + max_digits + 1);
    }
    assert_eq!(framer.frames, frames.len() as u64);
    if let Some(last) = framer.close() {
        assert!(!last.is_empty() && last.len() <= max_length);
        frames.push(last);
    }
    assert_eq!(framer.buffered(), 0);
    let mut errors = framer.errors;
    errors.sort_by_key(|(reason, _)| reason.as_str());
    (frames, errors)
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(run(data, true), run(data, false));
});
