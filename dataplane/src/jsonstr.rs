//! A text as a JSON string, byte for byte as orjson writes it: the stored line is written
//! natively (`python_line`) where orjson wrote it before, and the query path's `instr()`
//! prefilters look for orjson's bytes, so the two writers must agree on every character.
//!
//! orjson's rules (serde_json's, which orjson adapted; checked against orjson 3.13 here and in
//! `tests/test_syslog_batch_equivalence.py`): `"` and `\` get a backslash; of the C0 controls,
//! BS, TAB, LF, FF and CR their short escapes (`\b \t \n \f \r`) and the rest `\u00XX` in
//! lowercase hex; everything else as its UTF-8 bytes, DEL, C1 controls, U+2028/U+2029 and
//! the BOM included (no `\u` escapes of non-ASCII, no escaped `/`).

/// The escape of each byte: 0 for none, the short escape's letter, or `u` for `\u00XX`.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A run of 16 bytes of text and 16 bytes past it (what follows, or spaces, which need no
/// escape): [`write_run`] copies 16 bytes from any offset of its first half.
type Run = [u8; 32];

/// Whether no byte of the run's text needs an escape. Branch-free over a fixed 16 bytes, so
/// it compiles to a few vector compares.
#[inline]
fn clean(run: &Run) -> bool {
    let mut bad = 0u8;
    for &b in &run[..16] {
        bad |= u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\');
    }
    bad == 0
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const LOWS: u64 = ONES * 0x7f;
const HIGHS: u64 = ONES * 0x80;

/// The high bit of each byte of `w` (little-endian) that needs an escape, exactly: the
/// sums below never carry into the next byte.
#[inline]
fn special_bits(w: u64) -> u64 {
    let below_space = !(((w & LOWS) + ONES * 0x60) | w);
    let zero = |v: u64| !(((v & LOWS) + LOWS) | v);
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    (below_space | quote | backslash) & HIGHS
}

/// The bytes of the run's text that need an escape, one bit each (bit i for `run[i]`): two
/// words' high bits gathered by one multiplication each.
#[inline]
fn specials(run: &Run) -> u16 {
    let gather = |half: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(half);
        let bits = special_bits(u64::from_le_bytes(word)) >> 7;
        (bits.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u16
    };
    gather(&run[..8]) | gather(&run[8..16]) << 8
}

/// Writes `run[..len]` at `buf[w..]` with the escapes `mask` marks; returns the new end.
/// The clean spans between escapes are written as whole 16-byte copies (the bytes past a
/// span are overwritten by what follows, or cut off): no copy of a length known only at
/// run time, so no call per span. `buf` must have 16 bytes of room past the run's escaped
/// length.
#[inline]
fn write_run(run: &Run, len: usize, mut mask: u16, buf: &mut [u8], mut w: usize) -> usize {
    let mut from = 0;
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        buf[w..w + 16].copy_from_slice(&run[from..from + 16]);
        w += i - from;
        let b = run[i];
        match ESCAPE[usize::from(b)] {
            b'u' => {
                buf[w..w + 6].copy_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
                w += 6;
            }
            esc => {
                buf[w] = b'\\';
                buf[w + 1] = esc;
                w += 2;
            }
        }
        from = i + 1;
        mask &= mask - 1;
    }
    buf[w..w + 16].copy_from_slice(&run[from..from + 16]);
    w + len - from
}

/// A JSON output buffer written through a cursor. The bytes past the cursor are room made
/// earlier (zeroed once, as the buffer grew), so a write is a store into a slice: no
/// capacity check per byte and no zero fill per string.
#[derive(Default)]
pub struct Out {
    buf: Vec<u8>,
    len: usize,
}

impl Out {
    pub fn with_capacity(n: usize) -> Self {
        Out {
            buf: vec![0; n],
            len: 0,
        }
    }

    /// At least `n` bytes of room past the cursor.
    #[inline]
    fn room(&mut self, n: usize) -> &mut [u8] {
        if self.buf.len() < self.len + n {
            let want = (self.len + n).max(2 * self.buf.len());
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.len..]
    }

    #[inline]
    pub fn push(&mut self, b: u8) {
        self.room(1)[0] = b;
        self.len += 1;
    }

    #[inline]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends a copy of what was written at `from..to`.
    #[inline]
    pub fn repeat(&mut self, from: usize, to: usize) {
        let n = to - from;
        self.room(n);
        self.buf.copy_within(from..to, self.len);
        self.len += n;
    }

    /// What was written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Empties the buffer; one that grew past `keep` bytes gives its memory back.
    pub fn clear(&mut self, keep: usize) {
        self.len = 0;
        if self.buf.len() > keep {
            self.buf = vec![0; keep];
        }
    }
}

/// Text written per step of [`push_quoted`]: room for its worst case is made once a step,
/// so a long text never asks for six times its size at once.
const STEP: usize = 4096;

/// Appends `text` as a JSON string, quotes included.
///
/// Room for a step's worst case (every byte a `\u00XX`, plus a 16-byte copy's overhang) is
/// made first, so the writes below are stores into a slice. Sixteen bytes a run: a run that
/// needs no escape (nearly all) is one copy; in the others (a FortiGate line's quoted values
/// put a `"` in most runs) the mask of the bytes to escape says where, without a step per
/// byte.
pub fn push_quoted(out: &mut Out, text: &str) {
    let bytes = text.as_bytes();
    if bytes.len() <= 16 {
        // A short text (a host, a program, an address) in one run: one room check and one
        // 16-byte copy when nothing needs an escape, the general path otherwise.
        let mut run: Run = [b' '; 32];
        run[..bytes.len()].copy_from_slice(bytes);
        if clean(&run) {
            let buf = out.room(18);
            buf[0] = b'"';
            buf[1..17].copy_from_slice(&run[..16]);
            buf[bytes.len() + 1] = b'"';
            out.len += bytes.len() + 2;
            return;
        }
    }
    out.push(b'"');
    let mut run: Run = [b' '; 32];
    for step in text.as_bytes().chunks(STEP) {
        let buf = out.room(6 * step.len() + 16);
        let mut w = 0;
        let mut runs = step.chunks_exact(16);
        for whole in &mut runs {
            run[..16].copy_from_slice(whole);
            if clean(&run) {
                buf[w..w + 16].copy_from_slice(&run[..16]);
                w += 16;
            } else {
                w = write_run(&run, 16, specials(&run), buf, w);
            }
        }
        let tail = runs.remainder();
        run = [b' '; 32];
        run[..tail.len()].copy_from_slice(tail);
        let mask = if clean(&run) { 0 } else { specials(&run) };
        w = write_run(&run, tail.len(), mask, buf, w);
        out.len += w;
    }
    out.push(b'"');
}

/// `text` as a JSON string in a new buffer.
pub fn quoted(text: &str) -> Vec<u8> {
    let mut out = Out::default();
    push_quoted(&mut out, text);
    out.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What orjson 3.13 writes for `orjson.dumps(chr(c))`, c < 0x80, where it differs from
    /// the character itself in quotes (printed by the interpreter, not derived from the table).
    const ORJSON_ASCII: [(u8, &str); 34] = [
        (0x00, "\\u0000"),
        (0x01, "\\u0001"),
        (0x02, "\\u0002"),
        (0x03, "\\u0003"),
        (0x04, "\\u0004"),
        (0x05, "\\u0005"),
        (0x06, "\\u0006"),
        (0x07, "\\u0007"),
        (0x08, "\\b"),
        (0x09, "\\t"),
        (0x0a, "\\n"),
        (0x0b, "\\u000b"),
        (0x0c, "\\f"),
        (0x0d, "\\r"),
        (0x0e, "\\u000e"),
        (0x0f, "\\u000f"),
        (0x10, "\\u0010"),
        (0x11, "\\u0011"),
        (0x12, "\\u0012"),
        (0x13, "\\u0013"),
        (0x14, "\\u0014"),
        (0x15, "\\u0015"),
        (0x16, "\\u0016"),
        (0x17, "\\u0017"),
        (0x18, "\\u0018"),
        (0x19, "\\u0019"),
        (0x1a, "\\u001a"),
        (0x1b, "\\u001b"),
        (0x1c, "\\u001c"),
        (0x1d, "\\u001d"),
        (0x1e, "\\u001e"),
        (0x1f, "\\u001f"),
        (0x22, "\\\""),
        (0x5c, "\\\\"),
    ];

    fn q(text: &str) -> String {
        String::from_utf8(quoted(text)).unwrap()
    }

    #[test]
    fn every_ascii_character_is_written_as_orjson_writes_it() {
        for c in 0u8..0x80 {
            let want = match ORJSON_ASCII.iter().find(|(b, _)| *b == c) {
                Some((_, esc)) => format!("\"{esc}\""),
                None => format!("\"{}\"", c as char),
            };
            assert_eq!(q(&(c as char).to_string()), want, "byte {c:#x}");
        }
    }

    #[test]
    fn non_ascii_is_written_as_its_utf8_bytes() {
        // DEL, a C1 control, NBSP, the BOM, the line and paragraph separators, U+FFFD and the
        // last code point: orjson escapes none of them.
        for s in [
            "\x7f", "\u{85}", "\u{a0}", "\u{feff}", "\u{2028}", "\u{2029}", "\u{fffd}",
        ] {
            assert_eq!(q(s), format!("\"{s}\""));
        }
        assert_eq!(q("\u{10ffff}"), "\"\u{10ffff}\"");
    }

    #[test]
    fn a_loggen_line_with_its_bom_and_newline() {
        // orjson.dumps("<38>1 - localhost prg00000 1234 - - \ufeffseq: 1, \"q\" \\ PADD\n")
        let got = q("<38>1 - localhost prg00000 1234 - - \u{feff}seq: 1, \"q\" \\ PADD\n");
        assert_eq!(
            got,
            "\"<38>1 - localhost prg00000 1234 - - \u{feff}seq: 1, \\\"q\\\" \\\\ PADD\\n\""
        );
        assert_eq!(q(""), "\"\"");
    }

    #[test]
    fn the_run_test_finds_each_special_byte_at_each_position() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for pos in 0..16 {
                let mut run = [b'a'; 32];
                run[pos] = special;
                run[16 + pos] = special; // past the text: not looked at
                assert_eq!(specials(&run), 1 << pos);
                assert!(!clean(&run));
            }
        }
        for b in (0x20u8..=0xff).filter(|b| ESCAPE[usize::from(*b)] == 0) {
            let mut run = [b; 32];
            run[16..].fill(b'"');
            assert_eq!(specials(&run), 0, "byte {b:#x}");
            assert!(clean(&run), "byte {b:#x}");
        }
    }

    #[test]
    fn a_text_longer_than_a_step_is_written_whole() {
        let text = "a\"b\n".repeat(STEP) + "tail";
        assert_eq!(quoted(&text), serde_json::to_vec(&text).unwrap());
        let mut out = Out::default();
        push_quoted(&mut out, &text);
        // Room was made a step at a time, not for six times the whole text.
        assert!(out.buf.len() <= 2 * (out.len + 6 * STEP + 16));
    }

    #[test]
    fn escapes_in_runs_and_tails_of_every_length() {
        for len in 0..40 {
            for pos in 0..len {
                let mut text = vec![b'x'; len];
                text[pos] = b'\n';
                let text = String::from_utf8(text).unwrap();
                assert_eq!(quoted(&text), serde_json::to_vec(&text).unwrap());
            }
        }
    }

    proptest! {
        #[test]
        fn the_string_reads_back_as_the_text(text in any::<String>()) {
            let out = quoted(&text);
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, text);
        }

        #[test]
        fn the_string_is_serde_jsons_whose_escapes_orjson_adopted(text in any::<String>()) {
            prop_assert_eq!(quoted(&text), serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn ascii_lines_with_escapes_anywhere_are_serde_jsons_too(
            text in "[\\x00-\\x7f\u{feff}\u{2028}]{0,80}"
        ) {
            prop_assert_eq!(quoted(&text), serde_json::to_vec(&text).unwrap());
        }
    }
}
