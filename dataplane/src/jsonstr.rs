//! A text as a JSON string, byte for byte as orjson writes it: the stored line's raw text is
//! spliced into the line orjson made of the rest of the event (`SyslogBatch`), so the two
//! writers must agree on every character.
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

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `w` needs an escape: below 0x20, `"` or `\\` (the classic SWAR tests
/// for a byte less than n and a zero byte, exact as to whether there is one).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    (below_space | zero(quote) | zero(backslash)) & HIGHS != 0
}

/// The index of the first byte at or after `from` that needs an escape, or `bytes.len()`:
/// eight bytes a step (a log line has few or none), then byte by byte within the word.
#[inline]
fn next_special(bytes: &[u8], mut from: usize) -> usize {
    while from + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[from..from + 8]);
        if word_needs_escape(u64::from_ne_bytes(word)) {
            break;
        }
        from += 8;
    }
    bytes[from..]
        .iter()
        .position(|&b| ESCAPE[usize::from(b)] != 0)
        .map_or(bytes.len(), |k| from + k)
}

/// Bytes of `text` as a JSON string, the quotes included.
pub fn quoted_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut n = 2 + bytes.len();
    let mut at = next_special(bytes, 0);
    while at < bytes.len() {
        n += if ESCAPE[usize::from(bytes[at])] == b'u' {
            5
        } else {
            1
        };
        at = next_special(bytes, at + 1);
    }
    n
}

/// Writes `text` as a JSON string (quotes included) to the start of `out`, which must hold
/// [`quoted_len`] bytes; returns how many it wrote.
pub fn write_quoted(text: &str, out: &mut [u8]) -> usize {
    let bytes = text.as_bytes();
    let mut put = |s: &[u8], at: &mut usize| {
        out[*at..*at + s.len()].copy_from_slice(s);
        *at += s.len();
    };
    let mut at = 0;
    put(b"\"", &mut at);
    let mut start = 0;
    loop {
        let i = next_special(bytes, start);
        put(&bytes[start..i], &mut at);
        let Some(&b) = bytes.get(i) else { break };
        match ESCAPE[usize::from(b)] {
            b'u' => put(
                &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ],
                &mut at,
            ),
            esc => put(&[b'\\', esc], &mut at),
        }
        start = i + 1;
    }
    put(b"\"", &mut at);
    at
}

/// `text` as a JSON string in a new buffer.
pub fn quoted(text: &str) -> Vec<u8> {
    let mut out = vec![0; quoted_len(text)];
    let n = write_quoted(text, &mut out);
    debug_assert_eq!(n, out.len());
    out
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
    fn the_word_test_finds_each_special_byte_at_each_position() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = special;
                assert!(word_needs_escape(u64::from_ne_bytes(w)));
            }
        }
        for b in (0x20u8..=0xff).filter(|b| ESCAPE[usize::from(*b)] == 0) {
            assert!(
                !word_needs_escape(u64::from_ne_bytes([b; 8])),
                "byte {b:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn the_string_reads_back_as_the_text(text in any::<String>()) {
            let out = quoted(&text);
            prop_assert_eq!(out.len(), quoted_len(&text));
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
