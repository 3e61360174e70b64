//! `key=value` pairs as vendors write them (FortiGate, ScreenOS, decoder files' `kv` step):
//! exactly what the Python reference `base.kv_pairs` finds with
//! `re.findall(r'([\w.\-]+)=(?:"([^"]*)"|(\S*))', text)`, for ASCII text (Unicode `\w` and
//! `\s` are the reference's to decide; the caller falls back to it).

use memchr::memchr;

fn is_key(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// Python's `\s` over ASCII: the C whitespace set plus the four information separators.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f)
}

/// The first `limit` pairs in order (repeats included), or `None` for non-ASCII text.
pub fn pairs(text: &str, limit: usize) -> Option<Vec<(&str, &str)>> {
    if !text.is_ascii() {
        return None;
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < limit {
        let Some(eq) = memchr(b'=', &b[i..]).map(|k| k + i) else {
            break;
        };
        let mut start = eq;
        while start > i && is_key(b[start - 1]) {
            start -= 1;
        }
        if start == eq {
            i = eq + 1; // no key before this '=': no match can use it
            continue;
        }
        let v = eq + 1;
        let quoted = if b.get(v) == Some(&b'"') {
            memchr(b'"', &b[v + 1..]).map(|k| (v + 1, v + 1 + k))
        } else {
            None
        };
        let (value, end) = match quoted {
            Some((from, to)) => (&text[from..to], to + 1),
            None => {
                let to = b[v..]
                    .iter()
                    .position(|&c| is_space(c))
                    .map_or(b.len(), |k| v + k);
                (&text[v..to], to)
            }
        };
        out.push((&text[start..eq], value));
        i = end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_bare_and_empty_values() {
        assert_eq!(
            pairs(r#"a=1 b="x y" c= d="" e"#, 10).unwrap(),
            vec![("a", "1"), ("b", "x y"), ("c", ""), ("d", "")]
        );
    }

    #[test]
    fn a_key_is_the_whole_run_before_the_equals_sign() {
        assert_eq!(pairs("x = ab-c.d=1 =z", 10).unwrap(), vec![("ab-c.d", "1")]);
        assert_eq!(
            pairs("a=b=c d=\"open", 10).unwrap(),
            vec![("a", "b=c"), ("d", "\"open")]
        );
    }

    #[test]
    fn limit_counts_repeats_and_non_ascii_is_declined() {
        assert_eq!(
            pairs("a=1 a=2 b=3", 2).unwrap(),
            vec![("a", "1"), ("a", "2")]
        );
        assert_eq!(pairs("u=\u{e9}", 10), None);
    }
}
