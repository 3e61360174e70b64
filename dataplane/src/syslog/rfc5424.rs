//! RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]`, as
//! `appliance/protocols/syslog/rfc5424.py` reads it (same errors, same order, same cuts).

use std::borrow::Cow;

use memchr::memchr;

use super::header::{
    chars_over, cut_chars, Clock, Format, Message, StructuredData, MAX_APP_NAME, MAX_HOSTNAME,
    MAX_MSGID, MAX_PROCID,
};
use super::rfc3339::{parse_plain, Stamp};

const NIL: &str = "-";
pub const MAX_SD_ELEMENTS: usize = 32;
pub const MAX_SD_PARAMS: usize = 128;
pub const MAX_SD_VALUE: usize = 2048;
const MAX_SD_NAME: usize = 32;

/// Epoch seconds of an RFC 3339 token, or `None` when it is not one.
pub fn rfc3339(token: &str, clock: &mut impl Clock) -> Option<f64> {
    match parse_plain(token) {
        Stamp::Epoch(t) => Some(t),
        Stamp::Rejected => None,
        Stamp::Other => clock.rfc3339(token),
    }
}

/// Epoch seconds (`1700000000`, `1700000000.123`) or milliseconds (`1700000000123`) where
/// RFC 5424 wants RFC 3339, as some devices write them (the reference's `parse_epoch`).
pub fn epoch(token: &str) -> Option<f64> {
    let (whole, frac) = match token.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (token, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(whole) {
        return None;
    }
    match frac {
        Some(f) if (9..=10).contains(&whole.len()) && digits(f) && f.len() <= 9 => {
            token.parse().ok()
        }
        Some(_) => None,
        None if (9..=10).contains(&whole.len()) => whole.parse::<u64>().ok().map(|n| n as f64),
        None if (12..=13).contains(&whole.len()) => {
            whole.parse::<u64>().ok().map(|n| n as f64 / 1000.0)
        }
        None => None,
    }
}

fn field<'t>(
    value: &'t str,
    limit: usize,
    too_long: &'static str,
    errors: &mut Vec<&'static str>,
) -> Option<&'t str> {
    if value == NIL || value.is_empty() {
        return None;
    }
    let (kept, cut) = cut_chars(value, limit);
    if cut {
        errors.push(too_long);
    }
    Some(kept)
}

/// True when the quote at `quote` is preceded by an odd run of backslashes (not before `start`).
fn escaped(b: &[u8], start: usize, quote: usize) -> bool {
    let run = b[start..quote]
        .iter()
        .rev()
        .take_while(|&&c| c == b'\\')
        .count();
    run % 2 == 1
}

/// Undo `\"`, `\\` and `\]`; a backslash before anything else stays, as the RFC says.
fn unescape(value: &str) -> Cow<'_, str> {
    if memchr(b'\\', value.as_bytes()).is_none() {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next @ ('"' | '\\' | ']')) = chars.peek() {
                out.push(next);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

fn find_from(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    memchr(needle, &b[from..]).map(|k| k + from)
}

/// Parse SD-ELEMENTs at `pos`; (elements or `None`, index after them). Malformed SD stops
/// parsing: what follows is the message.
pub fn parse_structured_data<'t>(
    text: &'t str,
    mut pos: usize,
    errors: &mut Vec<&'static str>,
) -> (Option<StructuredData<'t>>, usize) {
    let b = text.as_bytes();
    let n = b.len();
    if pos >= n {
        return (None, pos);
    }
    if b[pos] == b'-' {
        return (None, pos + 1);
    }
    let mut elements: StructuredData<'t> = Vec::new();
    let done = |elements: StructuredData<'t>| {
        if elements.is_empty() {
            None
        } else {
            Some(elements)
        }
    };
    while pos < n && b[pos] == b'[' {
        let mut end_id = pos + 1;
        while end_id < n && b[end_id] != b' ' && b[end_id] != b']' {
            end_id += 1;
        }
        let sd_id = &text[pos + 1..end_id];
        if sd_id.is_empty() || chars_over(sd_id, 32) || sd_id.contains(['=', '"']) {
            errors.push("sd_invalid");
            return (done(elements), pos);
        }
        let mut params: Vec<(&'t str, Cow<'t, str>)> = Vec::new();
        let mut i = end_id;
        while i < n && b[i] == b' ' {
            i += 1;
            let eq = find_from(b, i, b'=');
            let bad = match eq {
                None => true,
                Some(eq) => {
                    eq == i
                        || chars_over(&text[i..eq], MAX_SD_NAME)
                        || eq + 1 >= n
                        || b[eq + 1] != b'"'
                }
            };
            if bad {
                errors.push("sd_invalid");
                return (done(elements), pos);
            }
            let eq = eq.unwrap_or_default();
            let name = &text[i..eq];
            i = eq + 2;
            let mut j = find_from(b, i, b'"');
            while let Some(q) = j {
                if q > 0 && b[q - 1] == b'\\' && escaped(b, i, q) {
                    j = find_from(b, q + 1, b'"');
                } else {
                    break;
                }
            }
            let Some(j) = j else {
                errors.push("sd_unterminated");
                return (done(elements), pos);
            };
            let mut value = unescape(&text[i..j]);
            i = j;
            let (kept, cut) = cut_chars(&value, MAX_SD_VALUE);
            if cut {
                value = Cow::Owned(kept.to_owned());
                errors.push("sd_value_too_long");
            }
            if params.len() < MAX_SD_PARAMS {
                if !params.iter().any(|(k, _)| *k == name) {
                    params.push((name, value));
                }
            } else if !errors.contains(&"sd_too_many_params") {
                errors.push("sd_too_many_params");
            }
            i += 1; // closing quote
        }
        if i >= n || b[i] != b']' {
            errors.push("sd_unterminated");
            return (done(elements), pos);
        }
        if elements.iter().any(|(id, _)| *id == sd_id) {
            errors.push("sd_duplicate_id");
        } else if elements.len() < MAX_SD_ELEMENTS {
            elements.push((sd_id, params));
        } else if !errors.contains(&"sd_too_many_elements") {
            errors.push("sd_too_many_elements");
        }
        pos = i + 1;
    }
    (done(elements), pos)
}

/// Decode the part of an RFC 5424 message after `<PRI>1 ` (`pos` indexes into `text`).
pub fn decode<'t>(text: &'t str, pri: u32, pos: usize, clock: &mut impl Clock) -> Message<'t> {
    let mut errors: Vec<&'static str> = Vec::new();
    // `splitn(6, ' ')` by hand: five short tokens, each a byte scan (the searcher
    // `splitn` builds cost ~150 instructions a token), then the rest.
    let mut rest = Some(&text[pos..]);
    let mut taken = 0;
    let mut next = || {
        taken += 1;
        let Some(r) = rest else {
            if !errors.contains(&"header_truncated") {
                errors.push("header_truncated");
            }
            return NIL;
        };
        match r.bytes().position(|b| b == b' ') {
            Some(i) if taken < 6 => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            _ => {
                rest = None;
                r
            }
        }
    };
    let (ts_text, host, app, procid, msgid, rest) =
        (next(), next(), next(), next(), next(), next());
    let mut msg = Message::new(pri, "", Format::Rfc5424);
    if ts_text != NIL {
        msg.timestamp = rfc3339(ts_text, clock).or_else(|| epoch(ts_text));
        if msg.timestamp.is_none() {
            errors.push("timestamp_invalid");
        }
    }
    let (sd, after) = parse_structured_data(rest, 0, &mut errors);
    let mut message = &rest[after..];
    message = message.strip_prefix(' ').unwrap_or(message);
    message = message.strip_prefix('\u{feff}').unwrap_or(message);
    msg.message = message;
    msg.hostname = field(host, MAX_HOSTNAME, "hostname_too_long", &mut errors);
    msg.app_name = field(app, MAX_APP_NAME, "app_name_too_long", &mut errors);
    msg.procid = field(procid, MAX_PROCID, "procid_too_long", &mut errors);
    msg.msgid = field(msgid, MAX_MSGID, "msgid_too_long", &mut errors);
    msg.version = Some(1);
    msg.structured_data = sd;
    msg.errors = errors;
    msg
}
