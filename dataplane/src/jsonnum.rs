//! Numbers as JSON, byte for byte as orjson writes them, for the stored line (`python_line`).
//!
//! Integers are their decimal digits. A float is the shortest digits that read back as the
//! same value and, of those, the closest to it, as Python's `repr` and orjson write them
//! (zmij's; Rust's `Display` is shortest but not always closest: it wrote
//! 73506903427256.13 for orjson's 73506903427256.12). orjson has its own notation though:
//! always a fraction (`1.0`), and an exponent (`1e+16`, `1.5e-7`) outside a band of
//! magnitudes whose edges are not documented. So only floats whose notation is certain are
//! written here (zero, and a magnitude in `[1e-4, 1e15)`, where orjson writes plain decimals:
//! every timestamp); [`push_f64`] says `false` for the others (and for NaN and the infinities,
//! which orjson writes as `null`), and the caller leaves that line to orjson.

use crate::jsonstr::Out;

/// Appends `x` as orjson writes it, or returns `false` (nothing appended) for a float whose
/// notation is left to orjson.
pub fn push_f64(out: &mut Out, x: f64) -> bool {
    if x == 0.0 {
        out.extend(if x.is_sign_negative() {
            b"-0.0"
        } else {
            b"0.0"
        });
        return true;
    }
    if !(1e-4..1e15).contains(&x.abs()) {
        return false;
    }
    let mut buffer = zmij::Buffer::new();
    let digits = buffer.format_finite(x).as_bytes();
    if digits.contains(&b'e') {
        return false; // zmij's notation differs from orjson's there: not in the band today
    }
    out.extend(digits);
    if !digits.contains(&b'.') {
        out.extend(b".0");
    }
    true
}

/// The JSON text of the last floats written, by their bits: the events of a batch share
/// their receive time, and second-resolution stamps their event time, so each is formatted
/// once (a float's digits cost ~650 instructions, a copy ~20).
#[derive(Default)]
pub struct FloatTexts {
    /// (bits, text length (0: empty), text)
    slots: [(u64, usize, [u8; FloatTexts::TEXT]); 2],
    next: usize,
}

impl FloatTexts {
    /// The longest text kept (a float in the band is at most 17 digits, a point and a zero).
    const TEXT: usize = 24;

    /// [`push_f64`], the text of a float met in the last two taken from here.
    pub fn push(&mut self, out: &mut Out, x: f64) -> bool {
        let bits = x.to_bits();
        for (b, n, text) in &self.slots {
            if *n > 0 && *b == bits {
                out.extend(&text[..*n]);
                return true;
            }
        }
        let start = out.as_bytes().len();
        if !push_f64(out, x) {
            return false;
        }
        let written = &out.as_bytes()[start..];
        if written.len() <= Self::TEXT {
            let slot = &mut self.slots[self.next];
            slot.0 = bits;
            slot.1 = written.len();
            slot.2[..written.len()].copy_from_slice(written);
            self.next ^= 1;
        }
        true
    }
}

/// Appends an integer's decimal digits.
pub fn push_int<I: itoa::Integer>(out: &mut Out, n: I) {
    out.extend(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(x: f64) -> Option<String> {
        let mut out = Out::default();
        push_f64(&mut out, x).then(|| String::from_utf8(out.as_bytes().to_vec()).unwrap())
    }

    /// The memo writes what push_f64 writes, for repeated, alternating and new floats.
    #[test]
    fn float_texts_write_what_push_f64_writes() {
        let mut memo = FloatTexts::default();
        let xs = [
            1.5,
            1.5,
            1790000000.25,
            1.5,
            2.0,
            1790000000.25,
            -0.0,
            0.0,
            1e20,
            1e20,
            1.5,
            f64::NAN,
            123456789012.34567,
            123456789012.34567,
        ];
        for x in xs {
            let (mut a, mut b) = (Out::default(), Out::default());
            assert_eq!(memo.push(&mut a, x), push_f64(&mut b, x));
            assert_eq!(a.as_bytes(), b.as_bytes());
        }
    }

    /// What orjson 3.13 writes for these floats (printed by the interpreter).
    #[test]
    fn floats_in_the_band_are_written_as_orjson_writes_them() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (1e15 - 0.125, "999999999999999.9"),
            (1_000_000_000_000.0, "1000000000000.0"),
            (1_764_912_766.123_456, "1764912766.123456"),
            (-2.5, "-2.5"),
            (73_506_903_427_256.12, "73506903427256.12"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(f(x).as_deref(), Some(want), "{x}");
        }
    }

    #[test]
    fn floats_outside_the_band_are_left_to_orjson() {
        // orjson: 1e+16, 1e+15 is "1000000000000000.0" (left anyway), 1.5e-7, 0.00001.
        for x in [
            1e16,
            1e15,
            1.5e-7,
            1e-5,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
        ] {
            assert_eq!(f(x), None, "{x}");
        }
    }

    #[test]
    fn integers_are_their_digits() {
        let mut out = Out::default();
        push_int(&mut out, i64::MIN);
        out.push(b',');
        push_int(&mut out, u64::MAX);
        assert_eq!(out.as_bytes(), b"-9223372036854775808,18446744073709551615");
    }

    proptest! {
        #[test]
        fn a_float_in_the_band_reads_back_as_itself(x in 1e-4f64..1e15) {
            let text = f(x).unwrap();
            prop_assert!(text.contains('.'));
            prop_assert_eq!(text.parse::<f64>().unwrap(), x);
            let neg = f(-x).unwrap();
            prop_assert_eq!(neg, format!("-{text}"));
        }
    }
}
