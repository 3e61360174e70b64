//! RFC 6587 framing for syslog over TCP/TLS, sans-I/O, as
//! `appliance/protocols/syslog/framing.py` does it: each frame's framing is chosen by its own
//! first byte (a digit: octet counting; else LF/NUL), hostile input costs bounded memory, and
//! problems are counted by reason.

use memchr::memchr2;

/// Why bytes were dropped or cut; the names are the metrics' `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    OctetCountInvalid,
    OctetCountZero,
    FrameTooLong,
    IncompleteFrame,
}

impl FrameError {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameError::OctetCountInvalid => "octet_count_invalid",
            FrameError::OctetCountZero => "octet_count_zero",
            FrameError::FrameTooLong => "frame_too_long",
            FrameError::IncompleteFrame => "incomplete_frame",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    /// Discarding the rest of an octet-counted frame (`skip` bytes left).
    Count,
    /// Discarding up to the next LF/NUL.
    Line,
}

enum Step {
    /// Need more bytes.
    Wait,
    /// Something was dropped or skipped: look again.
    Again,
    /// The frame is `buf[start..end]`; with `clear`, the buffer is emptied once it is read
    /// (the rest of an over-long frame is being skipped).
    Frame {
        start: usize,
        end: usize,
        clear: bool,
    },
}

/// Splits a TCP byte stream into syslog messages; never holds much more than `max_length`.
#[derive(Debug)]
pub struct Framer {
    pub max_length: usize,
    pub max_digits: usize,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes already searched for the delimiter of the current frame.
    scan: usize,
    state: Skip,
    skip: usize,
    /// Problems since the caller last took them, in the order first seen.
    pub errors: Vec<(FrameError, u64)>,
    /// Frames returned so far (transports time out stalled frames with it).
    pub frames: u64,
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// Index of the first LF or NUL in `b`, whichever comes first.
fn delimiter(b: &[u8]) -> Option<usize> {
    memchr2(b'\n', b'\0', b)
}

impl Framer {
    pub fn new(max_length: usize, max_digits: usize) -> Self {
        Framer {
            max_length,
            max_digits,
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            state: Skip::None,
            skip: 0,
            errors: Vec::new(),
            frames: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        let mut data = data;
        if self.state != Skip::None {
            data = self.discard(data);
            if data.is_empty() {
                return;
            }
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes of an incomplete frame held (0 at a frame boundary).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The stream ended: an unterminated last line is a message (returned); half of an
    /// octet-counted frame is not (counted as `incomplete_frame`).
    pub fn close(&mut self) -> Option<Vec<u8>> {
        if let Some(frame) = self.next_frame() {
            return Some(frame);
        }
        let rest = self.buf.split_off(self.pos.min(self.buf.len()));
        self.buf.clear();
        self.pos = 0;
        self.scan = 0;
        if rest.is_empty() || self.state != Skip::None {
            self.state = Skip::None;
            return None;
        }
        if is_digit(rest[0]) {
            let k = rest.iter().take_while(|&&c| is_digit(c)).count();
            if k == rest.len() || rest[k] == b' ' {
                self.error(FrameError::IncompleteFrame);
                return None;
            }
        }
        let mut rest = rest;
        rest.truncate(self.max_length);
        Some(rest)
    }

    fn error(&mut self, reason: FrameError) {
        match self.errors.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((reason, 1)),
        }
    }

    /// Drop bytes of a frame being skipped; return what follows it.
    fn discard<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        if self.state == Skip::Count {
            if data.len() < self.skip {
                self.skip -= data.len();
                return &[];
            }
            let rest = &data[self.skip..];
            self.skip = 0;
            self.state = Skip::None;
            return rest;
        }
        match delimiter(data) {
            None => &[],
            Some(end) => {
                self.state = Skip::None;
                &data[end + 1..]
            }
        }
    }

    /// The next complete frame, or `None` until more bytes are fed.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        self.next_frame_with(<[u8]>::to_vec)
    }

    /// `read` of the next complete frame, read in the buffer (no copy of its own), or
    /// `None` until more bytes are fed: a caller that makes its own object of the bytes
    /// (the extension's `bytes`) saves an allocation and a copy a frame.
    pub fn next_frame_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        loop {
            let n = self.buf.len();
            let mut pos = self.pos;
            // Blank separators between frames (LF after an octet-counted frame, keep-alives).
            while pos < n && matches!(self.buf[pos], b'\n' | b'\r' | b'\0' | b' ') {
                pos += 1;
            }
            if pos >= n {
                self.buf.clear();
                self.pos = 0;
                self.scan = 0;
                return None;
            }
            if pos != self.pos {
                self.pos = pos;
                self.scan = 0;
            }
            let step = if is_digit(self.buf[pos]) {
                self.octet_counted(pos, n)
            } else {
                self.non_transparent(pos, n)
            };
            match step {
                Step::Wait => {
                    self.compact();
                    return None;
                }
                Step::Again => continue,
                Step::Frame { start, end, clear } => {
                    self.frames += 1;
                    self.scan = 0;
                    let got = read(&self.buf[start..end]);
                    if clear {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    return Some(got);
                }
            }
        }
    }

    fn compact(&mut self) {
        let pos = self.pos;
        if pos > 0 {
            self.buf.drain(..pos);
            self.pos = 0;
            self.scan = self.scan.saturating_sub(pos);
        }
    }

    fn octet_counted(&mut self, pos: usize, n: usize) -> Step {
        let end = n.min(pos + self.max_digits + 1);
        let mut k = pos;
        while k < end && is_digit(self.buf[k]) {
            k += 1;
        }
        if k == end {
            if k - pos > self.max_digits {
                return self.bad_header(pos, n, FrameError::OctetCountInvalid);
            }
            return Step::Wait; // still reading the count
        }
        if self.buf[k] != b' ' {
            // "2024-01-05T..." or "05/30-19:09:10 ...": a line that starts with a digit.
            return self.non_transparent(pos, n);
        }
        // At most max_digits digits: saturate rather than overflow on absurd caps.
        let length = self.buf[pos..k].iter().fold(0usize, |v, &d| {
            v.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
        let start = k + 1;
        if length == 0 {
            self.error(FrameError::OctetCountZero);
            self.pos = start;
            return Step::Again;
        }
        let max_length = self.max_length;
        let have = n - start;
        if length > max_length {
            if have < max_length {
                return Step::Wait; // wait for the part we keep
            }
            self.error(FrameError::FrameTooLong);
            let end = start + max_length;
            if have >= length {
                self.pos = start + length;
                return Step::Frame {
                    start,
                    end,
                    clear: false,
                };
            }
            self.skip = length - have;
            self.state = Skip::Count;
            return Step::Frame {
                start,
                end,
                clear: true,
            };
        }
        if have < length {
            return Step::Wait;
        }
        self.pos = start + length;
        Step::Frame {
            start,
            end: start + length,
            clear: false,
        }
    }

    /// Index of the LF or NUL ending the frame at `pos`, resuming the last scan.
    fn find_end(&mut self, pos: usize, n: usize) -> Option<usize> {
        let scan = if self.scan > pos { self.scan } else { pos };
        let found = delimiter(&self.buf[scan.min(n)..n]).map(|k| k + scan);
        if found.is_none() {
            self.scan = n;
        }
        found
    }

    fn non_transparent(&mut self, pos: usize, n: usize) -> Step {
        let max_length = self.max_length;
        let Some(mut end) = self.find_end(pos, n) else {
            if n - pos <= max_length {
                return Step::Wait;
            }
            // No delimiter within the limit: keep the first max_length bytes, skip to the LF.
            self.error(FrameError::FrameTooLong);
            self.state = Skip::Line;
            return Step::Frame {
                start: pos,
                end: pos + max_length,
                clear: true,
            };
        };
        self.pos = end + 1;
        if end - pos > max_length {
            self.error(FrameError::FrameTooLong);
            return Step::Frame {
                start: pos,
                end: pos + max_length,
                clear: false,
            };
        }
        if end > pos && self.buf[end - 1] == b'\r' {
            end -= 1; // CR LF
        }
        if end == pos {
            return Step::Again;
        }
        Step::Frame {
            start: pos,
            end,
            clear: false,
        }
    }

    /// Drop a frame whose header cannot be trusted, up to the next LF/NUL.
    fn bad_header(&mut self, pos: usize, n: usize, reason: FrameError) -> Step {
        self.error(reason);
        match self.find_end(pos, n) {
            None => {
                self.buf.clear();
                self.pos = 0;
                self.scan = 0;
                self.state = Skip::Line;
            }
            Some(end) => self.pos = end + 1,
        }
        Step::Again
    }
}

/// Frames of `stream` fed in chunks of `chunk` bytes (tests and fuzzing).
pub fn frames_of(
    stream: &[u8],
    chunk: usize,
    max_length: usize,
    max_digits: usize,
) -> (Vec<Vec<u8>>, Vec<(FrameError, u64)>) {
    let mut framer = Framer::new(max_length, max_digits);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        framer.feed(piece);
        while let Some(frame) = framer.next_frame() {
            out.push(frame);
        }
    }
    (out, framer.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both_ways(stream: &[u8]) -> (Vec<Vec<u8>>, Vec<(FrameError, u64)>) {
        let whole = frames_of(stream, stream.len().max(1), 65536, 8);
        let bytewise = frames_of(stream, 1, 65536, 8);
        assert_eq!(whole, bytewise);
        whole
    }

    #[test]
    fn octet_counted_and_lf_frames_mix_on_one_stream() {
        let (frames, errors) = both_ways(b"<13>lf framed\n12 <13>counted\n<13>again\n3 <1>");
        assert_eq!(
            frames,
            vec![
                b"<13>lf framed".to_vec(),
                b"<13>counted\n".to_vec(),
                b"<13>again".to_vec(),
                b"<1>".to_vec()
            ]
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn digit_run_longer_than_the_cap_is_skipped_to_next_lf() {
        let (frames, errors) = both_ways(b"99999999999999999999 <13>evil\n<13>good\n");
        assert_eq!(frames, vec![b"<13>good".to_vec()]);
        assert_eq!(errors, vec![(FrameError::OctetCountInvalid, 1)]);
    }

    #[test]
    fn half_an_octet_counted_frame_at_close_is_incomplete() {
        let mut f = Framer::new(1024, 8);
        f.feed(b"10 <13>ab");
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.close(), None);
        assert_eq!(f.errors, vec![(FrameError::IncompleteFrame, 1)]);
    }

    #[test]
    fn unterminated_last_line_at_close_is_a_message() {
        let mut f = Framer::new(1024, 8);
        f.feed(b"<13>tail");
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.close(), Some(b"<13>tail".to_vec()));
    }
}
