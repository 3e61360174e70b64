//! The arithmetic of the baselines stage (`appliance/analysis/baselines.py`) that the native
//! batch (`python_baselines.rs`) must do exactly as CPython does it: the rarity score and
//! the bounds of the numbers it is computed from. No interpreter here, so `cargo test`
//! checks it against values CPython printed.

/// Integers up to this magnitude convert to `f64` exactly, so Python's `int / int`, `int -
/// float` and `int < float` give what the same `f64` operations give.
pub const EXACT_INT: i64 = 1 << 53;

/// `min(100, round(-20 * math.log10(n / total)))`: Python's true division (correctly
/// rounded, as `f64` division of two exact operands is), the C library's `log10` (what
/// `math.log10` calls) and `round`'s ties-to-even.
pub fn rarity(n: i64, total: i64) -> i64 {
    let share = n as f64 / total as f64;
    let score = (-20.0 * share.log10()).round_ties_even();
    if score >= 100.0 {
        100
    } else {
        score as i64
    }
}

/// `n / total < share` as Python decides it for two exact integers.
pub fn is_rare(n: i64, total: i64, share: f64) -> bool {
    (n as f64 / total as f64) < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarity_scores_as_cpython_rounds_them() {
        // Printed by CPython 3.11: min(100, round(-20 * math.log10(n / t))).
        assert_eq!(rarity(1, 1_000), 60);
        assert_eq!(rarity(9, 10_000), 61);
        assert_eq!(rarity(1, 100_000), 100);
        assert_eq!(rarity(3, 1_000_000), 100);
        assert_eq!(rarity(7, 10_007), 63);
        assert_eq!(rarity(99, 100_000), 60);
    }

    #[test]
    fn a_score_exactly_between_two_integers_goes_to_the_even_one() {
        // -20 * log10(10 ** -3.025) is 60.5 only approximately; an exact half comes from a
        // share of 10 ** -k/40 for odd k, which no integer ratio hits: check the rounding
        // rule itself on the value the formula produces instead.
        assert_eq!(60.5_f64.round_ties_even(), 60.0);
        assert_eq!(61.5_f64.round_ties_even(), 62.0);
    }

    #[test]
    fn the_share_test_is_strict() {
        assert!(!is_rare(10, 10_000, 0.001));
        assert!(is_rare(9, 10_000, 0.001));
    }
}
