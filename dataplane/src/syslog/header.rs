//! One syslog message, whichever RFC: the entry point that mirrors
//! `appliance.protocols.syslog.decode.decode_syslog`.
//!
//! Time zones stay with Python: a BSD stamp carries none, and the sender's zone is a Python
//! `tzinfo`, so its conversion to epoch seconds is asked of a [`Clock`]. So is an RFC 3339 stamp
//! outside the plain shape parsed here, so both backends agree on every odd form by
//! construction.

use std::borrow::Cow;

use super::{rfc3164, rfc5424};

/// `SEVERITY` (3 bits) and `FACILITY`: the valid `<PRI>` values.
pub const MAX_PRI: u32 = 191;
/// What RFC 3164 section 4.3.3 tells a relay to assume when the PRI is missing.
pub const DEFAULT_PRI: u32 = 13;

/// Header field maxima from RFC 5424 section 6, in characters; longer values are cut and flagged.
pub const MAX_HOSTNAME: usize = 255;
pub const MAX_APP_NAME: usize = 48;
pub const MAX_PROCID: usize = 128;
pub const MAX_MSGID: usize = 32;

/// Conversions the caller owns: the sender's zone and the receive time live there.
pub trait Clock {
    /// Epoch seconds of a BSD stamp. `year` is `Some` when the line wrote one (even `0000`);
    /// `None` asks for the year nearest the receive time.
    #[allow(clippy::too_many_arguments)]
    fn bsd_epoch(
        &mut self,
        year: Option<u32>,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        micros: u32,
    ) -> Option<f64>;

    /// Epoch seconds of an RFC 3339-looking token that [`super::rfc3339::parse_plain`] declined.
    fn rfc3339(&mut self, token: &str) -> Option<f64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
        }
    }
}

/// SD-ID → its params, both in the order first seen (duplicates dropped as the reference does).
pub type StructuredData<'t> = Vec<(&'t str, Vec<(&'t str, Cow<'t, str>)>)>;

/// One syslog message as the wire had it, before any vendor decoding; the fields of Python's
/// `SyslogMessage`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'t> {
    pub facility: u32,
    pub severity: u32,
    pub message: &'t str,
    pub format: Format,
    pub timestamp: Option<f64>,
    pub hostname: Option<&'t str>,
    pub app_name: Option<&'t str>,
    pub procid: Option<&'t str>,
    pub msgid: Option<&'t str>,
    pub version: Option<u32>,
    pub structured_data: Option<StructuredData<'t>>,
    pub sequence: Option<i64>,
    pub errors: Vec<&'static str>,
}

impl<'t> Message<'t> {
    pub(crate) fn new(pri: u32, message: &'t str, format: Format) -> Self {
        Message {
            facility: pri >> 3,
            severity: pri & 7,
            message,
            format,
            timestamp: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            version: None,
            structured_data: None,
            sequence: None,
            errors: Vec::new(),
        }
    }
}

/// The message text: BOM dropped, UTF-8 decoded with U+FFFD for bad sequences (as Python's
/// `"replace"`), trailing CR/LF/NUL (framing leftovers) removed.
pub fn message_text(data: &[u8]) -> Cow<'_, str> {
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let tail = ['\r', '\n', '\0'];
    // Valid text is the rule: `from_utf8` checks it with its ASCII fast path, where
    // `from_utf8_lossy` walks it chunk by chunk (~1 % of the receiver's samples in perf).
    if let Ok(s) = std::str::from_utf8(data) {
        return Cow::Borrowed(s.trim_end_matches(tail));
    }
    let mut s = String::from_utf8_lossy(data).into_owned();
    let keep = s.trim_end_matches(tail).len();
    s.truncate(keep);
    Cow::Owned(s)
}

/// `(<PRI> value, index after '>')`; PRI is 1-3 digits without a leading zero, at most 191.
pub fn parse_pri(text: &str) -> (Option<u32>, usize) {
    let b = text.as_bytes();
    if b.first() != Some(&b'<') {
        return (None, 0);
    }
    let limit = b.len().min(5);
    let Some(end) = b[1..limit].iter().position(|&c| c == b'>').map(|k| k + 1) else {
        return (None, 0);
    };
    let digits = &b[1..end];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return (None, 0);
    }
    let value = digits
        .iter()
        .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
    if value > MAX_PRI {
        return (None, 0);
    }
    (Some(value), end + 1)
}

/// Decode one message of either RFC, never failing on bad input; `None` hands the message to
/// the Python reference (an RFC 3164 line with non-ASCII text, where Python's Unicode `isdigit`
/// and `\w` decide the header: rare on the wire, not worth a second copy of those tables).
pub fn decode<'t>(text: &'t str, clock: &mut impl Clock) -> Option<Message<'t>> {
    let (pri, pos) = parse_pri(text);
    if let Some(pri) = pri {
        if text[pos..].starts_with("1 ") {
            return Some(rfc5424::decode(text, pri, pos + 2, clock));
        }
    }
    if !text.is_ascii() {
        return None;
    }
    let mut msg = rfc3164::decode(text, pri, pos, clock);
    let b = text.as_bytes();
    if pri.is_some() && b.get(pos).is_some_and(u8::is_ascii_digit) && b.get(pos + 1) == Some(&b' ')
    {
        msg.errors.push("version_unsupported"); // "<13>2 ...": a syslog version we do not know
    }
    Some(msg)
}

/// The first `limit` characters of `value` (a prefix slice), and whether it was cut.
pub(crate) fn cut_chars(value: &str, limit: usize) -> (&str, bool) {
    if value.len() <= limit {
        return (value, false);
    }
    match value.char_indices().nth(limit) {
        Some((at, _)) => (&value[..at], true),
        None => (value, false),
    }
}

/// Characters in `value`, counting no further than `cap + 1` (all callers compare with a cap).
pub(crate) fn chars_over(value: &str, cap: usize) -> bool {
    value.len() > cap && value.chars().nth(cap).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pri_accepts_only_canonical_values() {
        assert_eq!(parse_pri("<13>x"), (Some(13), 4));
        assert_eq!(parse_pri("<0>x"), (Some(0), 3));
        assert_eq!(parse_pri("<191>x"), (Some(191), 5));
        assert_eq!(parse_pri("<192>x"), (None, 0));
        assert_eq!(parse_pri("<013>x"), (None, 0));
        assert_eq!(parse_pri("<>x"), (None, 0));
        assert_eq!(parse_pri("<1234>"), (None, 0));
        assert_eq!(parse_pri("13>"), (None, 0));
    }

    #[test]
    fn message_text_drops_bom_and_framing_tail() {
        assert_eq!(message_text(b"\xef\xbb\xbf<13>hi\r\n\0"), "<13>hi");
        assert_eq!(message_text(b"a\xffb\n"), "a\u{fffd}b");
        assert_eq!(message_text(b"\xc3\xa9t\xc3\xa9\0\n"), "\u{e9}t\u{e9}");
        assert_eq!(message_text(b"cut \xc3\r\n"), "cut \u{fffd}");
        assert!(matches!(message_text(b"ok\n"), Cow::Borrowed("ok")));
    }

    #[test]
    fn cut_chars_counts_characters_not_bytes() {
        assert_eq!(cut_chars("h\u{e9}llo", 2), ("h\u{e9}", true));
        assert_eq!(cut_chars("ab", 2), ("ab", false));
        assert!(chars_over("abc", 2));
        assert!(!chars_over("\u{e9}\u{e9}", 2));
    }
}
