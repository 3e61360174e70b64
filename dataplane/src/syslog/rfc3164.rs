//! RFC 3164 as it is really sent, as `appliance/protocols/syslog/rfc3164.py` reads it: missing
//! PRI or hostname, RFC 3339 stamps in the BSD slot, Cisco sequence numbers and stamps, ASA
//! years, AIX relays. The caller passes ASCII text only (see [`super::header::decode`]), so
//! byte offsets are character offsets here.

use super::header::{Clock, Format, Message, DEFAULT_PRI, MAX_APP_NAME, MAX_HOSTNAME};
use super::rfc5424::rfc3339;

/// A month's abbreviation as its number (1-12): a match the compiler turns into a few
/// integer compares, where a search of a table compared slices month by month (~50
/// instructions more a BSD stamp, callgrind).
fn month_number(name: &[u8]) -> Option<u32> {
    Some(match name {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}
const AIX_FORWARDED: &str = "Message forwarded from ";

fn all_digits(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

fn number(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |v, &d| {
        v.wrapping_mul(10).wrapping_add(u32::from(d - b'0'))
    })
}

/// `text[from..to]` clamped to the text, as a Python slice is.
fn slice(b: &[u8], from: usize, to: usize) -> &[u8] {
    let to = to.min(b.len());
    if from >= to {
        return &[];
    }
    &b[from..to]
}

/// `str.find(needle, start, end)` for an ASCII needle: the needle must end by `end`.
fn find(b: &[u8], needle: &[u8], start: usize, end: usize) -> Option<usize> {
    let hay = slice(b, start, end);
    if hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len())
        .position(|w| w == needle)
        .map(|k| k + start)
}

/// Read `Mmm dd hh:mm:ss[.ffffff][ yyyy]` at `pos`: (epoch or `None`, index after).
pub fn parse_bsd_timestamp(text: &str, pos: usize, clock: &mut impl Clock) -> (Option<f64>, usize) {
    let b = text.as_bytes();
    let Some(month) = month_number(slice(b, pos, pos + 3)) else {
        return (None, pos);
    };
    if b.len() < pos + 15 || b[pos + 3] != b' ' {
        return (None, pos);
    }
    let mut i = pos + 4;
    if b[i] == b' ' {
        i += 1; // "Aug  7": space-padded day
    }
    let Some(mut j) = find(b, b" ", i, i + 3) else {
        return (None, pos);
    };
    let day_text = &b[i..j];
    let mut year = 0;
    if all_digits(slice(b, j + 1, j + 5)) && slice(b, j + 5, j + 6) == b" " {
        year = number(&b[j + 1..j + 5]); // Cisco ASA "Oct 03 2018 17:34:08"
        j += 5;
    }
    let clock_text = slice(b, j + 1, j + 9);
    if !all_digits(day_text)
        || clock_text.len() != 8
        || clock_text[2] != b':'
        || clock_text[5] != b':'
        || !clock_text
            .iter()
            .enumerate()
            .all(|(k, c)| k == 2 || k == 5 || c.is_ascii_digit())
    {
        return (None, pos);
    }
    let mut end = j + 9;
    let mut micros = 0;
    if b.get(end) == Some(&b'.') {
        // fractional seconds (Cisco "*Mar 1 00:00:00.123")
        let mut k = end + 1;
        while k < b.len() && b[k].is_ascii_digit() && k - end <= 6 {
            k += 1;
        }
        let frac = &b[end + 1..k];
        if !frac.is_empty() {
            micros = number(frac) * 10u32.pow(6 - frac.len() as u32);
        }
        end = k;
    }
    let (h, m, s) = (
        number(&clock_text[0..2]),
        number(&clock_text[3..5]),
        number(&clock_text[6..8]),
    );
    let day = number(day_text);
    if year != 0 {
        return (
            clock.bsd_epoch(Some(year), month, day, h, m, s.min(59), micros),
            end,
        );
    }
    // An explicit year after the clock ("Aug 7 10:00:00 2024 host ...").
    if b.get(end) == Some(&b' ')
        && b.len() >= end + 5
        && all_digits(&b[end + 1..end + 5])
        && (end + 5 == b.len() || matches!(b[end + 5], b' ' | b':'))
    {
        let year = number(&b[end + 1..end + 5]);
        return (
            clock.bsd_epoch(Some(year), month, day, h, m, s.min(59), micros),
            end + 5,
        );
    }
    let s = if s == 60 { 59 } else { s };
    (clock.bsd_epoch(None, month, day, h, m, s, micros), end)
}

/// `app[pid]:` / `app:` / `app[pid]` → (app, pid, looked like a tag). Cisco's
/// `%FAC-SEV-MNEMONIC:` is message text, not a tag: vendor decoders read it.
fn split_tag(token: &str) -> (Option<&str>, Option<&str>, bool) {
    if token.starts_with('%')
        || token
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b':' | b'.' | b'*'))
    {
        return (None, None, false); // "%LINK-3-UPDOWN:", "123:", "00:00:46:" (uptime)
    }
    let mut core = token.strip_suffix(':').unwrap_or(token);
    let mut pid = None;
    if core.ends_with(']') {
        // a byte scan, as `partition_space`'s: `find(char)`'s searcher cost ~120 instructions
        if let Some(lb) = core.bytes().position(|b| b == b'[') {
            let inner = &core[lb + 1..core.len() - 1];
            pid = (!inner.is_empty()).then_some(inner);
            core = &core[..lb];
        }
    }
    let looks = token.ends_with(':') || pid.is_some();
    if core.is_empty() || core.len() > MAX_APP_NAME * 2 {
        return (None, pid, looks);
    }
    (Some(core), pid, looks)
}

/// `[\w.\-:%]*[\w.\-%]` over ASCII, at most 255 characters.
fn is_hostname(token: &str) -> bool {
    let b = token.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'%');
    token.len() <= MAX_HOSTNAME && b.last().is_some_and(ok) && b.iter().all(|c| ok(c) || *c == b':')
}

/// Cisco IOS `123: ` before the stamp (`service sequence-numbers`): (number, index after).
fn cisco_sequence(text: &str, pos: usize) -> (Option<i64>, usize) {
    let b = text.as_bytes();
    if let Some(colon) = find(b, b": ", pos, pos + 12) {
        if colon > pos && all_digits(&b[pos..colon]) {
            let n = b[pos..colon]
                .iter()
                .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
            return (Some(n), colon + 2);
        }
    }
    (None, pos)
}

/// `*Mar  1 00:00:00.123 UTC: ` (`*`/`.`: clock not synchronised) → (epoch, index after).
fn skip_cisco_stamp(text: &str, pos: usize, clock: &mut impl Clock) -> (Option<f64>, usize) {
    let b = text.as_bytes();
    let start = if matches!(b.get(pos), Some(b'*' | b'.')) {
        pos + 1
    } else {
        pos
    };
    let (ts, after) = parse_bsd_timestamp(text, start, clock);
    if ts.is_none() {
        return (None, pos);
    }
    match find(b, b": ", after, after + 8) {
        Some(colon) => (ts, colon + 2),
        None => (None, pos),
    }
}

/// `str.partition(" ")`. A byte scan: the tokens are a few bytes long, shorter than what
/// `split_once(' ')`'s searcher spends setting up (~150 instructions a call, callgrind).
fn partition_space(s: &str) -> (&str, &str) {
    match s.bytes().position(|b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// Decode an RFC 3164-shaped message; `pos` is the index after the PRI (0 when there is none).
pub fn decode<'t>(
    text: &'t str,
    pri: Option<u32>,
    pos: usize,
    clock: &mut impl Clock,
) -> Message<'t> {
    let b = text.as_bytes();
    let mut errors: Vec<&'static str> = Vec::new();
    let pri = pri.unwrap_or_else(|| {
        errors.push(if text.starts_with('<') {
            "pri_invalid"
        } else {
            "pri_missing"
        });
        DEFAULT_PRI
    });
    if b.get(pos).is_some_and(u8::is_ascii_digit) {
        let (sequence, seq_end) = cisco_sequence(text, pos);
        if sequence.is_some() {
            let (ts, after) = skip_cisco_stamp(text, seq_end, clock);
            let mut msg = Message::new(
                pri,
                &text[if ts.is_some() { after } else { seq_end }..],
                Format::Rfc3164,
            );
            msg.timestamp = ts;
            msg.sequence = sequence;
            if ts.is_none() {
                errors.push("timestamp_missing");
            }
            msg.errors = errors;
            return msg;
        }
    }
    let mut timestamp = None;
    let (ts, mut after) = parse_bsd_timestamp(text, pos, clock);
    if ts.is_some() {
        timestamp = ts;
    } else if let Some(sp) = find(b, b" ", pos, b.len()) {
        // RFC 3339 stamp in a 3164-shaped line (rsyslog's default since Debian 12), or none.
        if sp > pos && b[pos].is_ascii_digit() {
            if sp == pos + 10 && slice(b, pos + 4, pos + 5) == b"-" {
                // "2020-03-23 06:47:42.801612-0700": a space where RFC 3339 has "T".
                let sp2 = find(b, b" ", sp + 1, b.len()).unwrap_or(b.len());
                let token = format!("{}T{}", &text[pos..sp], &text[sp + 1..sp2]);
                if let Some(t) = rfc3339(&token, clock) {
                    timestamp = Some(t);
                    after = sp2;
                }
            } else if let Some(t) = rfc3339(&text[pos..sp], clock) {
                timestamp = Some(t);
                after = sp;
            }
        }
    }
    let mut hostname = None;
    let mut app = None;
    let mut procid = None;
    let mut sequence = None;
    // Without a stamp, spaces after the PRI ("<13>   msg") are padding, not message.
    let from = if timestamp.is_some() { after } else { pos };
    let mut rest = text[from..].trim_start_matches(' ');
    rest = rest.strip_prefix(": ").unwrap_or(rest); // Cisco puts a colon after its stamp
    if timestamp.is_none() {
        errors.push("timestamp_missing");
    } else if let Some(relayed) = rest.strip_prefix(AIX_FORWARDED) {
        // AIX relays: "Message forwarded from HOST: TAG: MSG" (CVE-2019-17041's shape).
        let (first, tail) = partition_space(relayed);
        let host = first.trim_end_matches(':');
        if is_hostname(host) {
            hostname = Some(host);
            rest = tail;
        }
    } else {
        let (first, tail) = partition_space(rest);
        if is_hostname(first) && !tail.is_empty() {
            hostname = Some(first);
            rest = tail;
        }
    }
    let (tag, tail) = partition_space(rest);
    if !tag.is_empty() {
        let (tag_app, tag_pid, looks) = split_tag(tag);
        let first_digit = tag.as_bytes()[0].is_ascii_digit();
        if looks && tag_app.is_some() {
            app = tag_app;
            procid = tag_pid;
            rest = tail;
        } else {
            let (seq, seq_end) = if first_digit {
                cisco_sequence(rest, 0)
            } else {
                (None, 0)
            };
            if seq.is_some() {
                // "HOST 123: *Mar 1 00:00:00.123: %LINK-3-UPDOWN: ..."
                sequence = seq;
                let (ts, after) = skip_cisco_stamp(rest, seq_end, clock);
                rest = &rest[if ts.is_some() { after } else { seq_end }..];
            } else if first_digit
                && tag.ends_with(':')
                && tag.bytes().all(|c| matches!(c, b'0'..=b'9' | b':' | b'.'))
            {
                rest = tail; // Cisco uptime stamp "00:00:46:" (no clock set): not content
            }
        }
    }
    let mut msg = Message::new(pri, rest, Format::Rfc3164);
    msg.timestamp = timestamp;
    msg.hostname = hostname;
    msg.app_name = app;
    msg.procid = procid;
    msg.sequence = sequence;
    msg.errors = errors;
    msg
}
