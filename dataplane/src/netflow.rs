//! NetFlow v5/v9 and IPFIX data records: a data set's bytes split into records and each
//! field's value converted, the per-record work of `appliance.protocols.netflow`.
//!
//! The template state (exporters, templates, limits, sequence numbers, sampling, held data)
//! stays in Python: it changes once per template (re)send, not per record, and one
//! implementation of it keeps the counters of both backends the same by construction. What
//! Python hands over per template is a [`RecordPlan`]: each field's wire length (or
//! variable-length) and how its bytes become a value, exactly as `template.converter` decides.
//!
//! Every length is checked against the bytes left before it is used; a malformed record
//! ends the set with the reason the reference counts (`short_data_set`, `varlen_past_end`).

use std::fmt::Write as _;

/// Wire length meaning "variable length" (RFC 7011 §7).
pub const VARLEN: u16 = 0xFFFF;

/// How a field's bytes become its value (the reference's converter for the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    /// Unsigned big-endian integer (1..=8 bytes).
    Int,
    /// Dotted quad (4 bytes).
    Ip4,
    /// RFC 5952 text as glibc's `inet_ntop` writes it (16 bytes).
    Ip6,
    /// `aa:bb:..` lower-case.
    Mac,
    /// UTF-8 text, trailing NULs removed, invalid sequences replaced.
    Text,
    /// Lower-case hex.
    Hex,
    /// paddingOctets: read past, never a value.
    Pad,
}

impl Conv {
    pub fn from_code(code: u8) -> Option<Conv> {
        Some(match code {
            0 => Conv::Int,
            1 => Conv::Ip4,
            2 => Conv::Ip6,
            3 => Conv::Mac,
            4 => Conv::Text,
            5 => Conv::Hex,
            6 => Conv::Pad,
            _ => return None,
        })
    }
}

/// One field of a template: its wire length ([`VARLEN`] for variable) and conversion.
#[derive(Clone, Copy, Debug)]
pub struct FieldPlan {
    pub len: u16,
    pub conv: Conv,
}

/// A template's record layout.
#[derive(Clone, Debug)]
pub struct RecordPlan {
    pub fields: Vec<FieldPlan>,
    /// Record size when every field has a fixed length.
    pub fixed: Option<usize>,
    /// The smallest record (a variable-length field counts one byte).
    pub min_len: usize,
}

/// Why a plan was refused (Python then keeps its own emitter for the template).
#[derive(Debug, PartialEq, Eq)]
pub struct BadPlan(pub &'static str);

impl RecordPlan {
    pub fn new(fields: Vec<FieldPlan>) -> Result<RecordPlan, BadPlan> {
        let mut min_len = 0usize;
        let mut variable = false;
        for f in &fields {
            if f.len == VARLEN {
                variable = true;
                min_len += 1;
                continue;
            }
            if f.conv == Conv::Int && !(1..=8).contains(&f.len) {
                return Err(BadPlan("integer field longer than 8 bytes"));
            }
            min_len += usize::from(f.len);
        }
        if min_len == 0 {
            return Err(BadPlan("zero-length record"));
        }
        Ok(RecordPlan {
            fields,
            fixed: if variable { None } else { Some(min_len) },
            min_len,
        })
    }

    /// Values per record (paddingOctets excluded).
    pub fn width(&self) -> usize {
        self.fields.iter().filter(|f| f.conv != Conv::Pad).count()
    }
}

/// A field's value, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw<'a> {
    Int(u64),
    Bytes(&'a [u8], Conv),
}

/// The records of a data set as flat values (`width` per record) and the reason the set
/// ended early, if it did. Records before a malformed one are kept, as in the reference.
#[derive(Debug, Default)]
pub struct Split<'a> {
    pub values: Vec<Raw<'a>>,
    pub records: usize,
    pub error: Option<&'static str>,
}

fn be_uint(b: &[u8]) -> u64 {
    // The widths templates use, each one load (a byte-at-a-time fold for the others).
    match *b {
        [x] => u64::from(x),
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
    }
}

fn value(b: &[u8], conv: Conv) -> Raw<'_> {
    match conv {
        Conv::Int => Raw::Int(be_uint(b)),
        other => Raw::Bytes(b, other),
    }
}

/// Split `data` (one data set's body) into records.
pub fn split<'a>(plan: &RecordPlan, data: &'a [u8]) -> Split<'a> {
    let mut out = Split::default();
    match plan.fixed {
        Some(size) => {
            let n = data.len() / size;
            if n == 0 {
                if data.iter().any(|&b| b != 0) {
                    out.error = Some("short_data_set");
                }
                return out;
            }
            out.values.reserve(n * plan.width());
            for rec in data.chunks_exact(size).take(n) {
                let mut p = 0usize;
                for f in &plan.fields {
                    let len = usize::from(f.len);
                    if f.conv != Conv::Pad {
                        out.values.push(value(&rec[p..p + len], f.conv));
                    }
                    p += len;
                }
            }
            out.records = n;
        }
        None => split_variable(plan, data, &mut out),
    }
    out
}

/// RFC 7011 §7: a length byte, or 255 and a two-byte length, before each such value.
fn split_variable<'a>(plan: &RecordPlan, data: &'a [u8], out: &mut Split<'a>) {
    let end = data.len();
    let mut p = 0usize;
    let width = plan.width();
    while end - p >= plan.min_len {
        let start = out.values.len();
        for f in &plan.fields {
            let mut len = usize::from(f.len);
            if f.len == VARLEN {
                if p >= end {
                    out.values.truncate(start);
                    out.error = Some("varlen_past_end");
                    return;
                }
                len = usize::from(data[p]);
                p += 1;
                if len == 255 {
                    if end - p < 2 {
                        out.values.truncate(start);
                        out.error = Some("varlen_past_end");
                        return;
                    }
                    len = usize::from(u16::from_be_bytes([data[p], data[p + 1]]));
                    p += 2;
                }
            }
            if len > end - p {
                out.values.truncate(start);
                out.error = Some("varlen_past_end");
                return;
            }
            let raw = &data[p..p + len];
            p += len;
            if f.conv != Conv::Pad {
                // A variable-length value is never an integer (the reference hexes it).
                let conv = if f.len == VARLEN && f.conv == Conv::Int {
                    Conv::Hex
                } else {
                    f.conv
                };
                out.values.push(value(raw, conv));
            }
        }
        debug_assert_eq!(out.values.len() - start, width);
        out.records += 1;
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Text of a non-integer value, as the reference's converter writes it.
pub fn text(b: &[u8], conv: Conv) -> String {
    match conv {
        Conv::Ip4 if b.len() == 4 => format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]),
        Conv::Ip6 if b.len() == 16 => ip6_text(b),
        Conv::Mac if b.len() == 6 => {
            let mut s = String::with_capacity(17);
            for (i, x) in b.iter().enumerate() {
                if i > 0 {
                    s.push(':');
                }
                s.push(HEX[usize::from(x >> 4)] as char);
                s.push(HEX[usize::from(x & 15)] as char);
            }
            s
        }
        Conv::Text => {
            let mut n = b.len();
            while n > 0 && b[n - 1] == 0 {
                n -= 1;
            }
            String::from_utf8_lossy(&b[..n]).into_owned()
        }
        _ => hex(b),
    }
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

/// IPv6 text as glibc's `inet_ntop` writes it (what the reference's `socket.inet_ntop`
/// returns): the first longest run of two or more zero groups becomes `::`, and an address
/// whose first 96 bits are zero (but not `::` or `::1`-like runs of 7) or an IPv4-mapped one
/// ends in a dotted quad.
pub fn ip6_text(b: &[u8]) -> String {
    let mut w = [0u16; 8];
    for (i, item) in w.iter_mut().enumerate() {
        *item = u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
    }
    // The first longest run of zero words (length >= 2).
    let (mut best, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best = usize::MAX;
    }
    let mut s = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if i == best {
            if i == 0 {
                s.push(':');
            }
            s.push(':');
            i += best_len;
            continue;
        }
        if best == 0 && i == 6 && (best_len == 6 || (best_len == 5 && w[5] == 0xFFFF)) {
            let _ = write!(s, "{}.{}.{}.{}", b[12], b[13], b[14], b[15]);
            return s;
        }
        let _ = write!(s, "{:x}", w[i]);
        if i < 7 {
            s.push(':');
        }
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(fields: &[(u16, Conv)]) -> RecordPlan {
        RecordPlan::new(
            fields
                .iter()
                .map(|&(len, conv)| FieldPlan { len, conv })
                .collect(),
        )
        .unwrap()
    }

    proptest::proptest! {
        /// Every width reads as the big-endian fold (its low 64 bits past eight bytes).
        #[test]
        fn unsigned_fields_read_big_endian_at_every_width(b in proptest::collection::vec(0u8.., 0..12)) {
            let fold = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            proptest::prop_assert_eq!(be_uint(&b), fold);
        }
    }

    #[test]
    fn fixed_records_split_and_trailing_padding_is_ignored() {
        let p = plan(&[(4, Conv::Ip4), (2, Conv::Int), (1, Conv::Pad)]);
        let data = [10, 0, 0, 1, 0, 80, 0, 192, 168, 1, 2, 1, 187, 0, 0, 0];
        let s = split(&p, &data);
        assert_eq!(s.records, 2);
        assert_eq!(s.error, None);
        assert_eq!(s.values[1], Raw::Int(80));
        assert_eq!(s.values[3], Raw::Int(443));
    }

    #[test]
    fn a_set_shorter_than_one_record_with_data_is_short_data_set() {
        let p = plan(&[(4, Conv::Int)]);
        assert_eq!(split(&p, &[0, 0, 1]).error, Some("short_data_set"));
        assert_eq!(split(&p, &[0, 0, 0]).error, None);
    }

    #[test]
    fn variable_length_values_use_one_or_three_length_bytes() {
        let p = plan(&[(VARLEN, Conv::Text), (1, Conv::Int)]);
        let mut data = vec![2, b'h', b'i', 7, 255, 0, 1, b'x', 9];
        let s = split(&p, &data);
        assert_eq!(s.records, 2);
        assert_eq!(s.values[0], Raw::Bytes(b"hi", Conv::Text));
        assert_eq!(s.values[3], Raw::Int(9));
        data.truncate(6);
        let s = split(&p, &data);
        assert_eq!((s.records, s.error), (1, Some("varlen_past_end")));
        assert_eq!(s.values.len(), 2);
    }

    #[test]
    fn ipv6_text_matches_inet_ntop() {
        let t = |hexs: &str| {
            let v: Vec<u8> = (0..16)
                .map(|i| u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            ip6_text(&v)
        };
        assert_eq!(t("00000000000000000000000000000000"), "::");
        assert_eq!(t("00000000000000000000000000000001"), "::1");
        assert_eq!(t("20010db8000000000000000000000001"), "2001:db8::1");
        assert_eq!(t("00000000000000000000ffffc0000201"), "::ffff:192.0.2.1");
        assert_eq!(t("000000000000000000000000c0000201"), "::192.0.2.1");
        assert_eq!(t("20010db8000100000001000000000001"), "2001:db8:1:0:1::1");
        assert_eq!(t("20010db8000000010000000000000001"), "2001:db8:0:1::1");
        assert_eq!(t("00010000000000000000000000000000"), "1::");
    }

    #[test]
    fn text_strips_trailing_nuls_and_replaces_bad_utf8() {
        assert_eq!(text(b"ab\0\0", Conv::Text), "ab");
        assert_eq!(text(b"a\xffb", Conv::Text), "a\u{fffd}b");
        assert_eq!(
            text(&[0, 17, 0xab, 1, 2, 3], Conv::Mac),
            "00:11:ab:01:02:03"
        );
        assert_eq!(text(&[1, 2, 3], Conv::Ip4), "010203");
    }
}
