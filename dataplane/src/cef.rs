//! ArcSight CEF and IBM LEEF, read as the reference `cef_format.py` reads them (CEF only for
//! text without a backslash: the caller leaves escaped text to the reference, whose unescaped
//! values are not slices of the text).

use rustc_hash::FxHashMap;

const HEADER: [&str; 7] = [
    "cef.version",
    "cef.device_vendor",
    "cef.device_product",
    "cef.device_version",
    "cef.signature_id",
    "cef.name",
    "cef.severity",
];
const MAX_KEYS: usize = 256;

/// Python's `str.isspace` on ASCII (what `\s` and `strip()` take).
fn space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f)
}

fn key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']' | b'-')
}

fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && space(c as u8))
}

/// The extension's pairs: a key starts the text or follows a space, runs over key characters
/// and ends at `=`; its value runs to the next key, stripped. (key start, key, value start).
fn keys(ext: &str) -> Vec<(usize, &str, usize)> {
    let b = ext.as_bytes();
    let mut found = Vec::new();
    let mut p = 0;
    while p < b.len() {
        if p == 0 || space(b[p - 1]) {
            let mut e = p;
            while e < b.len() && key_char(b[e]) {
                e += 1;
            }
            if e > p && e < b.len() && b[e] == b'=' {
                found.push((p, &ext[p..e], e + 1));
                p = e + 1;
                continue;
            }
        }
        p += 1;
    }
    found
}

/// The `cef` step's captures in the reference's order (header, then extension keys; a
/// repeated key keeps its last value), or `None` when the text is not CEF. ASCII text
/// without backslashes only.
pub fn captures(text: &str) -> Option<Vec<(&str, &str)>> {
    let head = &text[..text.len().min(40)];
    let at = head.find("CEF:")?;
    let rest = &text[at + 4..];
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(16);
    let mut start = 0;
    for (i, c) in rest.bytes().enumerate() {
        if out.len() == 7 {
            break;
        }
        if c == b'|' {
            out.push((HEADER[out.len()], &rest[start..i]));
            start = i + 1;
        }
    }
    if out.len() < 7 {
        return None;
    }
    let ext = &rest[start..];
    let found = keys(ext);
    let mut at_index: FxHashMap<&str, usize> = FxHashMap::default();
    for (n, (_, key, from)) in found.iter().take(MAX_KEYS).enumerate() {
        let end = found.get(n + 1).map_or(ext.len(), |next| next.0);
        let value = strip(&ext[*from..end]);
        if HEADER.contains(key) {
            continue; // the header's names win (`setdefault`)
        }
        match at_index.get(key) {
            Some(&i) => out[i].1 = value,
            None => {
                at_index.insert(key, out.len());
                out.push((key, value));
            }
        }
    }
    Some(out)
}

const LEEF_HEADER: [&str; 5] = [
    "leef.version",
    "leef.vendor",
    "leef.product",
    "leef.product_version",
    "leef.event_id",
];

/// LEEF 2.0's delimiter field: a character or `xHH`/`0xHH`; tab when empty or not a number.
/// `None`: a code only the reference reads the same way (odd digits, a surrogate).
fn leef_delimiter(spec: &str) -> Option<char> {
    if spec.starts_with('x') || spec.starts_with("0x") {
        let hex = spec.strip_prefix('0').unwrap_or(spec);
        let hex = hex.strip_prefix('x').unwrap_or(hex);
        if hex.is_empty() {
            return Some('\t');
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            // Python's int(_, 16) also takes signs, "_", "0x" and spaces: with any other
            // character it fails (tab); with those, its reading decides.
            let maybe = |b: u8| b.is_ascii_hexdigit() || b"_+-xX \t\n\r\x0b\x0c".contains(&b);
            return if hex.bytes().all(maybe) {
                None
            } else {
                Some('\t')
            };
        }
        if hex.len() > 8 {
            return None;
        }
        let n = u32::from_str_radix(hex, 16).ok()?;
        if n > 0x10FFFF {
            return Some('\t');
        }
        return char::from_u32(n);
    }
    Some(spec.chars().next().unwrap_or('\t'))
}

/// The `leef` step's captures (header, then attributes; the first of a repeated key wins,
/// pairs without a value skipped). `Ok(None)`: not LEEF; `Err(())`: leave it to the reference.
#[allow(clippy::result_unit_err)]
pub fn leef_captures(text: &str) -> Result<Option<Vec<(&str, &str)>>, ()> {
    let head = &text[..text.len().min(40)];
    let Some(at) = head.find("LEEF:") else {
        return Ok(None);
    };
    let parts: Vec<&str> = text[at + 5..].splitn(7, '|').collect();
    if parts.len() < 6 {
        return Ok(None);
    }
    let mut delim = '\t';
    let ext: &str = if parts[0].starts_with('2') && parts.len() == 7 {
        delim = leef_delimiter(parts[5]).ok_or(())?;
        parts[6]
    } else {
        // "|".join(head[5:]): the rest after the fifth pipe, as one slice.
        let start = parts[..5].iter().map(|p| p.len() + 1).sum::<usize>();
        &text[at + 5 + start..]
    };
    let mut out: Vec<(&str, &str)> = LEEF_HEADER
        .iter()
        .copied()
        .zip(parts.iter().copied())
        .collect();
    let mut seen: FxHashMap<&str, ()> = out.iter().map(|(k, _)| (*k, ())).collect();
    for pair in ext.split(delim).take(MAX_KEYS) {
        if let Some((key, value)) = pair.split_once('=') {
            if !value.is_empty() && seen.insert(key, ()).is_none() {
                out.push((key, value));
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::{captures, leef_captures};

    #[test]
    fn leef_1_tab_separated() {
        let got = leef_captures("LEEF:1.0|V|P|1|42|src=10.0.0.1\tdst=10.0.0.2\tempty=")
            .unwrap()
            .unwrap();
        assert_eq!(got[4], ("leef.event_id", "42"));
        assert_eq!(&got[5..], &[("src", "10.0.0.1"), ("dst", "10.0.0.2")]);
    }

    #[test]
    fn leef_2_names_its_delimiter() {
        let got = leef_captures("LEEF:2.0|V|P|1|42|x5E|a=1^b=2^a=3")
            .unwrap()
            .unwrap();
        assert_eq!(&got[5..], &[("a", "1"), ("b", "2")]);
        let got = leef_captures("LEEF:2.0|V|P|1|42|;|a=1;b=2")
            .unwrap()
            .unwrap();
        assert_eq!(&got[5..], &[("a", "1"), ("b", "2")]);
    }

    #[test]
    fn header_and_extension_in_order() {
        let got =
            captures("CEF:0|Vendor|Prod|1.0|100|Name here|5|src=10.0.0.1 msg=two words act=x")
                .unwrap();
        assert_eq!(got[0], ("cef.version", "0"));
        assert_eq!(got[5], ("cef.name", "Name here"));
        assert_eq!(
            &got[7..],
            &[("src", "10.0.0.1"), ("msg", "two words"), ("act", "x")]
        );
    }

    #[test]
    fn too_few_pipes_is_not_cef() {
        assert!(captures("CEF:0|a|b|c").is_none());
        assert!(captures("no header here").is_none());
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_at_its_first_place() {
        let got = captures("CEF:0|a|b|c|d|e|f|k=1 j=2 k=3").unwrap();
        assert_eq!(&got[7..], &[("k", "3"), ("j", "2")]);
    }
}
