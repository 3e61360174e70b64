//! RFC 3339 stamps in their plain shape, `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`, to epoch
//! seconds exactly as Python's `datetime.fromisoformat(...).timestamp()` gives them. Anything
//! else that passes the reference's guard goes to the caller's [`Clock`](super::header::Clock),
//! which runs the reference itself.

/// What the plain parser made of a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stamp {
    /// Not a stamp by the reference's first test (too short, no `-` at 4, no `T` at 10).
    Rejected,
    /// A plain stamp: epoch seconds.
    Epoch(f64),
    /// Some other ISO 8601 shape: ask the reference.
    Other,
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |v, &d| v * 10 + u32::from(d - b'0')))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse `token`; see [`Stamp`].
pub fn parse_plain(token: &str) -> Stamp {
    let b = token.as_bytes();
    if !token.is_ascii() {
        return Stamp::Other; // the reference counts characters; let it decide
    }
    if b.len() < 19 || b[4] != b'-' || !matches!(b[10], b'T' | b't') {
        return Stamp::Rejected;
    }
    if b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Stamp::Other;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(&b[0..4]),
        digits(&b[5..7]),
        digits(&b[8..10]),
        digits(&b[11..13]),
        digits(&b[14..16]),
        digits(&b[17..19]),
    ) else {
        return Stamp::Other;
    };
    let year = i64::from(year);
    // Outside 1900-2200 the microsecond count may pass 2^53, where f64 and Python's exact
    // integer division could round apart; such stamps are rare enough to ask the reference.
    if !(1900..=2200).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Stamp::Other;
    }
    let mut i = 19;
    let mut micros: i64 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut k = start;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        let n = k - start;
        if n == 0 || n > 6 {
            return Stamp::Other; // the reference truncates past microseconds; let it
        }
        micros = i64::from(digits(&b[start..k]).unwrap_or(0)) * 10i64.pow(6 - n as u32);
        i = k;
    }
    let offset: i64 = match &b[i..] {
        [] => 0, // no offset: read as UTC, as the reference does
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(h), Some(m)) = (digits(&[*h1, *h2]), digits(&[*m1, *m2])) else {
                return Stamp::Other;
            };
            if h > 23 || m > 59 {
                return Stamp::Other;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Stamp::Other,
    };
    let seconds = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset;
    // Exact integer microseconds (< 2^53 in the range above) divided once: the correctly
    // rounded quotient, as Python's int / int.
    Stamp::Epoch((seconds * 1_000_000 + micros) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_stamps_give_epoch_seconds() {
        assert_eq!(parse_plain("1970-01-01T00:00:00Z"), Stamp::Epoch(0.0));
        assert_eq!(
            parse_plain("2003-10-11T22:14:15.003Z"),
            Stamp::Epoch(1_065_910_455.003)
        );
        assert_eq!(
            parse_plain("2003-08-24T05:14:15.000003-07:00"),
            Stamp::Epoch(1_061_727_255.000003)
        );
        assert_eq!(
            parse_plain("2024-02-29T00:00:00"),
            Stamp::Epoch(1_709_164_800.0)
        );
    }

    #[test]
    fn non_stamps_are_rejected_and_odd_shapes_deferred() {
        assert_eq!(parse_plain("-"), Stamp::Rejected);
        assert_eq!(parse_plain("2024/01/01T00:00:00Z"), Stamp::Rejected);
        assert_eq!(parse_plain("2023-02-29T00:00:00Z"), Stamp::Other);
        assert_eq!(parse_plain("2024-01-01T23:59:60Z"), Stamp::Other);
        assert_eq!(parse_plain("2024-01-01T10:00:00.1234567Z"), Stamp::Other);
        assert_eq!(parse_plain("2024-01-01T10:00:00+0100"), Stamp::Other);
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
