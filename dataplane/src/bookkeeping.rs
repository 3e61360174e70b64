//! The per-event bookkeeping of the absence (silent source) and baseline (rate) rules: the
//! state `AbsenceRuntime` and `BaselineRuntime` in `appliance/correlate/engine.py` keep in
//! Python, which stays the reference. Every syslog line matches the built-in `silent_source`
//! and `log_rate_spike` rules, so this runs once per rule for nearly every event.
//!
//! Same order of operations and the same bounds: groups in least-recently-seen order, the
//! oldest evicted past `max_groups`; a baseline's buckets are Python's `ts // interval`
//! (`py_floor_div`), its mean and deviation the same EWMA arithmetic in the same order.
//! Generic over the key `K` (the binding's is a Python value normalised to Python's equality)
//! and what is shown for it `D` (the binding's is the key tuple as last / first seen, as the
//! reference's dicts hold it), so `cargo test` drives it without an interpreter.

use std::hash::Hash;

use crate::windows::Lru;

/// One group of an absence rule: when it was last seen (wall clock and event time) and
/// whether it has alerted since.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen<D> {
    pub now: f64,
    pub ts: f64,
    pub alerted: bool,
    pub display: D,
}

/// `AbsenceRuntime`: `last` and `alerted` of the reference in one map.
pub struct Absence<K, D> {
    pub groups: Lru<K, Seen<D>>,
    pub max_groups: usize,
    pub evicted: u64,
}

impl<K: Hash + Eq, D> Absence<K, D> {
    pub fn new(max_groups: usize) -> Self {
        Absence {
            groups: Lru::new(),
            max_groups,
            evicted: 0,
        }
    }

    /// `Engine._absence_seen`: the group is seen now; true when it was not armed (new, or it
    /// had alerted), so the caller schedules its deadline. What is shown for the group is
    /// `fresh()` for a new one; an existing one's is handed to `refresh` (the reference
    /// keeps the newest key object: the caller replaces it when it differs).
    pub fn seen(
        &mut self,
        key: K,
        now: f64,
        ts: f64,
        fresh: impl FnOnce() -> D,
        refresh: impl FnOnce(&mut D),
    ) -> bool {
        let armed = match self.groups.lookup(&key) {
            Ok(i) => {
                // pop + re-insert in the reference: the newest key object, at the back
                let v = self.groups.val_mut(i);
                let armed = !v.alerted;
                v.now = now;
                v.ts = ts;
                v.alerted = false;
                refresh(&mut v.display);
                self.groups.move_to_back(i);
                armed
            }
            Err(at) => {
                self.groups.push_vacant(
                    at,
                    key,
                    Seen {
                        now,
                        ts,
                        alerted: false,
                        display: fresh(),
                    },
                );
                false
            }
        };
        if self.groups.len() > self.max_groups {
            self.groups.pop_front();
            self.evicted += 1;
        }
        !armed
    }

    /// `load`: a snapshot's group (a present key keeps its place and key; alerted is sticky).
    pub fn put(&mut self, key: K, display: D, now: f64, ts: f64, alerted: bool) {
        match self.groups.find(&key) {
            Some(i) => {
                let v = self.groups.val_mut(i);
                v.now = now;
                v.ts = ts;
                v.alerted |= alerted;
            }
            None => {
                self.groups.push_back(
                    key,
                    Seen {
                        now,
                        ts,
                        alerted,
                        display,
                    },
                );
            }
        }
    }

    /// `on_timer`'s reading: (seen now, seen ts) of a group that has not alerted.
    pub fn due(&self, key: &K) -> Option<(f64, f64)> {
        let i = self.groups.find(key)?;
        let v = self.groups.val(i);
        (!v.alerted).then_some((v.now, v.ts))
    }

    pub fn mark_alerted(&mut self, key: &K) {
        if let Some(i) = self.groups.find(key) {
            self.groups.val_mut(i).alerted = true;
        }
    }
}

/// A baseline rule's parameters (`appliance.baseline` of the rule).
#[derive(Debug, Clone, Copy)]
pub struct RateSpec {
    pub interval: f64,
    pub alpha: f64,
    pub k: f64,
    pub warmup: f64,
    pub min_count: f64,
    pub max_groups: usize,
}

/// One group's `[bucket, count, mean, var, n, fired]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate<D> {
    pub bucket: f64,
    pub count: u64,
    pub mean: f64,
    pub var: f64,
    pub n: u64,
    pub fired: bool,
    pub display: D,
}

/// Why an event time gives no bucket (Python's `int()` of the floor division raises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketError {
    Infinite,
    NaN,
    /// A negative variance (only a tampered snapshot holds one): `math.sqrt` raises.
    Domain,
}

/// `x % w` (C's `fmod`, what Rust's float `%` is), by an integer division when `w` is a
/// whole number in 1..=2^53 and `|x| < 2^52`: the intervals are whole seconds, and the
/// soft-float `fmod` the crate links cost ~220 instructions a call (one a syslog line).
/// Exact, as `fmod` is: below 2^52 the whole part and the fraction of `x` split exactly,
/// the whole part's remainder is an integer below `w`, and the remainder plus the fraction
/// is a multiple of `x`'s unit in the last place smaller than `w`, so representable.
pub fn float_mod(x: f64, w: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    const TWO_53: f64 = 9_007_199_254_740_992.0;
    let ax = x.abs();
    if ax < TWO_52 && (1.0..=TWO_53).contains(&w) && (w as u64) as f64 == w {
        let whole = (ax as u64) as f64;
        let r = ((ax as u64) % (w as u64)) as f64 + (ax - whole);
        return r.copysign(x);
    }
    x % w
}

/// Python's `float // float` (CPython's `_float_div_mod`), so buckets fall exactly where
/// the reference's do.
pub fn py_floor_div(vx: f64, wx: f64) -> f64 {
    let mut m = float_mod(vx, wx);
    let mut div = (vx - m) / wx;
    if m != 0.0 {
        if (wx < 0.0) != (m < 0.0) {
            m += wx;
            div -= 1.0;
        }
    } else {
        m = 0.0_f64.copysign(wx);
    }
    let _ = m;
    if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0_f64.copysign(vx / wx)
    }
}

/// What a baseline reports when it fires: (count, mean, variance).
pub type Spike = (u64, f64, f64);

/// `BaselineRuntime`: per group, the event count of the current interval against the EWMA
/// mean and deviation of the closed ones.
pub struct Baseline<K, D> {
    pub spec: RateSpec,
    pub groups: Lru<K, Rate<D>>,
    pub evicted: u64,
}

impl<K: Hash + Eq, D> Baseline<K, D> {
    pub fn new(spec: RateSpec) -> Self {
        Baseline {
            spec,
            groups: Lru::new(),
            evicted: 0,
        }
    }

    /// The bucket of event time `ts`, or why it has none (nothing changes then).
    pub fn bucket(&self, ts: f64) -> Result<f64, BucketError> {
        let b = py_floor_div(ts, self.spec.interval);
        if b.is_nan() {
            Err(BucketError::NaN)
        } else if b.is_infinite() {
            Err(BucketError::Infinite)
        } else {
            Ok(b)
        }
    }

    /// `BaselineRuntime.add` with the bucket already read: Some when the count of this
    /// interval goes above mean + k deviations (once per interval). `display` is taken only
    /// for a new group (an existing one keeps the key it was first seen with).
    pub fn add(
        &mut self,
        key: K,
        display: impl FnOnce() -> D,
        bucket: f64,
    ) -> Result<Option<Spike>, BucketError> {
        let s = self.spec;
        let i = match self.groups.lookup(&key) {
            Ok(i) => {
                self.groups.move_to_back(i);
                i
            }
            Err(at) => {
                if self.groups.len() >= s.max_groups {
                    self.groups.pop_front();
                    self.evicted += 1;
                }
                self.groups.push_vacant(
                    at,
                    key,
                    Rate {
                        bucket,
                        count: 0,
                        mean: 0.0,
                        var: 0.0,
                        n: 0,
                        fired: false,
                        display: display(),
                    },
                )
            }
        };
        let g = self.groups.val_mut(i);
        if bucket < g.bucket {
            return Ok(None); // late beyond the current interval: ignored for the rate
        }
        if bucket > g.bucket {
            let gap = (bucket - g.bucket - 1.0).min(1000.0) as usize;
            let mut x = g.count as f64;
            for _ in 0..=gap {
                if g.n == 0 {
                    g.mean = x;
                    g.var = 0.0;
                } else {
                    let diff = x - g.mean;
                    g.mean += s.alpha * diff;
                    g.var = (1.0 - s.alpha) * (g.var + s.alpha * diff * diff);
                }
                g.n += 1;
                x = 0.0;
            }
            g.bucket = bucket;
            g.count = 0;
            g.fired = false;
        }
        g.count += 1;
        if g.fired || (g.n as f64) < s.warmup || (g.count as f64) < s.min_count {
            return Ok(None);
        }
        if g.var < 0.0 {
            return Err(BucketError::Domain);
        }
        let limit = g.mean + s.k * g.var.sqrt();
        if (g.count as f64) > limit {
            g.fired = true;
            return Ok(Some((g.count, g.mean, g.var)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference's absence bookkeeping written plainly (a vector in seen order).
    #[derive(Default)]
    struct ModelAbsence {
        last: Vec<(u8, f64, f64)>,
        alerted: Vec<u8>,
        evicted: u64,
    }

    impl ModelAbsence {
        fn seen(&mut self, max: usize, key: u8, now: f64, ts: f64) -> bool {
            let had = self.last.iter().position(|e| e.0 == key);
            let armed = had.is_some() && !self.alerted.contains(&key);
            if let Some(p) = had {
                self.last.remove(p);
            }
            self.last.push((key, now, ts));
            self.alerted.retain(|k| *k != key);
            if self.last.len() > max {
                let (old, _, _) = self.last.remove(0);
                self.alerted.retain(|k| *k != old);
                self.evicted += 1;
            }
            !armed
        }
    }

    #[test]
    fn floor_division_is_pythons() {
        assert_eq!(py_floor_div(7.0, 2.0), 3.0);
        assert_eq!(py_floor_div(-7.0, 2.0), -4.0);
        assert_eq!(py_floor_div(1_790_000_000.5, 300.0), 5_966_666.0);
        assert_eq!(py_floor_div(-0.0, 300.0), -0.0);
        assert!(py_floor_div(f64::INFINITY, 300.0).is_nan());
        assert!(py_floor_div(f64::NAN, 300.0).is_nan());
        // Python: 0.3 // 0.1 == 2.0 (0.3 is a hair under three tenths)
        assert_eq!(py_floor_div(0.3, 0.1), 2.0);
    }

    #[test]
    fn absence_arms_once_and_rearms_after_an_alert() {
        let mut a: Absence<u8, u8> = Absence::new(10);
        assert!(a.seen(1, 0.0, 0.0, || 1, |_| ()));
        assert!(!a.seen(1, 1.0, 1.0, || 1, |_| ()));
        a.mark_alerted(&1);
        assert_eq!(a.due(&1), None);
        assert!(a.seen(1, 2.0, 2.0, || 1, |_| ()));
        assert_eq!(a.due(&1), Some((2.0, 2.0)));
    }

    #[test]
    fn baseline_fires_once_above_the_mean() {
        let spec = RateSpec {
            interval: 10.0,
            alpha: 0.5,
            k: 1.0,
            warmup: 2.0,
            min_count: 1.0,
            max_groups: 4,
        };
        let mut b: Baseline<u8, u8> = Baseline::new(spec);
        let mut fired = Vec::new();
        for (t, n) in [(0.0, 1), (10.0, 1), (20.0, 1), (30.0, 5)] {
            for _ in 0..n {
                let bucket = b.bucket(t).unwrap();
                fired.push(b.add(1, || 1, bucket).unwrap());
            }
        }
        let got: Vec<_> = fired.iter().flatten().collect();
        assert_eq!(got, vec![&(2, 1.0, 0.0)]);
    }

    #[test]
    fn float_mod_is_fmod_at_the_edges() {
        let two_52 = 4_503_599_627_370_496.0_f64;
        for (x, w) in [
            (0.0, 300.0),
            (-0.0, 300.0),
            (1_790_000_000.999_999_9, 300.0),
            (-1_790_000_000.25, 60.0),
            (two_52 - 0.5, 7.0),
            (two_52, 7.0),
            (two_52 * 2.0 + 2.0, 3.0),
            (5.5, 1.0),
            (5.5, 0.5),
            (1e-300, 1.0),
            (f64::INFINITY, 300.0),
            (f64::NAN, 300.0),
            (12.0, 9_007_199_254_740_992.0),
            (12.0, 9_007_199_254_740_994.0),
            (12.0, -5.0),
        ] {
            let (got, want) = (float_mod(x, w), x % w);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x} % {w}: {got} against {want}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Bit for bit C's `fmod` over times of any size and whole or fractional intervals.
        #[test]
        fn float_mod_agrees_with_fmod(
            x in prop_oneof![
                any::<f64>(),
                -1e10f64..1e10,
                (0u64..1 << 53).prop_map(|n| n as f64 / 1024.0),
            ],
            w in prop_oneof![
                (1u64..100_000).prop_map(|n| n as f64),
                any::<f64>(),
                0.001f64..1e6,
            ],
        ) {
            let (got, want) = (float_mod(x, w), x % w);
            prop_assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()));
        }

        /// Any mix of sightings, alerts and bounds: the same answers, order and counters as
        /// the plain model.
        #[test]
        fn absence_agrees_with_the_plain_model(
            max in 1usize..5,
            ops in proptest::collection::vec((0u8..6, any::<bool>()), 0..150),
        ) {
            let mut a: Absence<u8, u8> = Absence::new(max);
            let mut m = ModelAbsence::default();
            for (t, (key, alert)) in ops.into_iter().enumerate() {
                let now = t as f64;
                if alert {
                    a.mark_alerted(&key);
                    if m.last.iter().any(|e| e.0 == key) && !m.alerted.contains(&key) {
                        m.alerted.push(key);
                    }
                    continue;
                }
                prop_assert_eq!(
                    a.seen(key, now, -now, || key, |d| *d = key),
                    m.seen(max, key, now, -now)
                );
                let got: Vec<(u8, f64, f64, bool)> =
                    a.groups.iter().map(|(k, v)| (*k, v.now, v.ts, v.alerted)).collect();
                let want: Vec<(u8, f64, f64, bool)> = m
                    .last
                    .iter()
                    .map(|e| (e.0, e.1, e.2, m.alerted.contains(&e.0)))
                    .collect();
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(a.evicted, m.evicted);
        }

        /// Bucketing agrees with floor(ts / interval) wherever that is exact.
        #[test]
        fn buckets_follow_the_floor(ts in -1.0e9f64..1.0e10, interval in 1u32..100_000) {
            let w = f64::from(interval);
            let b = py_floor_div(ts.trunc(), w);
            prop_assert_eq!(b, (ts.trunc() / w).floor());
        }

        /// Late and out-of-order times never panic and never count a late event.
        #[test]
        fn baseline_ignores_events_before_the_current_interval(
            times in proptest::collection::vec(-50i32..50, 1..200),
        ) {
            let spec = RateSpec { interval: 7.0, alpha: 0.2, k: 2.0, warmup: 1.0, min_count: 1.0, max_groups: 3 };
            let mut b: Baseline<u8, u8> = Baseline::new(spec);
            for (i, t) in times.iter().enumerate() {
                let key = (i % 4) as u8;
                let bucket = b.bucket(f64::from(*t)).unwrap();
                let before = b.groups.find(&key).map(|j| b.groups.val(j).clone());
                b.add(key, || key, bucket).unwrap();
                if let Some(old) = before {
                    let j = b.groups.find(&key).unwrap();
                    let new = b.groups.val(j);
                    if bucket < old.bucket {
                        prop_assert_eq!(new, &old);
                    } else if bucket == old.bucket {
                        prop_assert_eq!(new.count, old.count + 1);
                    } else {
                        prop_assert_eq!(new.count, 1);
                    }
                }
                prop_assert!(b.groups.len() <= 3);
            }
        }
    }
}
