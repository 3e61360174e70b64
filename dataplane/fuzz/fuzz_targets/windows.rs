//! The correlation windows' state machine with coverage from the Rust code: any rule shape and
//! any stream of keys, times (late, out of order) and values runs without a panic and within
//! its bounds: at most `max_groups` groups, at most `keep` entries a window, count windows in
//! time order, sequence chains of at most 16 entries, and a group that fired met its
//! condition and is gone.
//!
//! The same steps drive the absence and baseline bookkeeping (`bookkeeping.rs`): at most
//! `max_groups` groups, a group scheduled exactly when it was not armed, a spike above its
//! mean, once per interval.
//!
//! Input layout as `tests/fuzz/targets/correlation_windows.py` (five header bytes, then
//! three bytes a step), so its seeds work here unchanged.
#![no_main]

use _dataplane::bookkeeping::{Absence, Baseline, RateSpec};
use _dataplane::windows::{Kind, Op, Spec, Window, Windows};
use libfuzzer_sys::fuzz_target;

const OPS: [Op; 6] = [Op::Gte, Op::Gt, Op::Lte, Op::Lt, Op::Eq, Op::Neq];

fuzz_target!(|data: &[u8]| {
    let Some(head) = data.get(..5) else {
        return;
    };
    let spec = Spec {
        kind: match head[0] & 3 {
            1 => Kind::Distinct,
            2 | 3 => Kind::Ordered(3),
            _ => Kind::Count,
        },
        timespan: 10.0,
        keep: usize::from(head[1] % 8) + 1,
        max_groups: usize::from(head[2] % 6) + 1,
        checks: vec![(OPS[usize::from(head[3]) % 6], f64::from(head[4] % 9))],
    };
    let mut w: Windows<u8, u8, usize> = Windows::new(spec.clone());
    let mut t = 0.0f64;
    for (n, step) in data[5..].chunks_exact(3).enumerate() {
        let (k, dt, v) = (step[0], step[1] as i8, step[2]);
        t += f64::from(dt) / 2.0;
        let key = k % 8;
        let value = (v != 0xFF).then_some((v % 7, move || v % 7));
        let step = [usize::from(v % 3)];
        if let Some((count, g)) = w.add(key, k == 0xFF, || key, t, n, value, &step) {
            match spec.kind {
                Kind::Ordered(steps) => assert_eq!(count, steps),
                _ => assert!(spec.check(count)),
            }
            assert!(w.groups.iter().all(|(gk, _)| *gk != key));
            if !matches!(spec.kind, Kind::Ordered(_)) {
                assert_eq!(g.entries().len(), count);
            }
            w.recycle(g); // as the binding does: a new group opens on it
        }
        assert!(w.groups.len() <= spec.max_groups);
        for (_, g) in w.groups.iter() {
            match &g.window {
                Window::Count(es) => {
                    assert!(es.len() <= spec.keep);
                    assert!(es.iter().zip(es.iter().skip(1)).all(|(a, b)| a.ts <= b.ts));
                }
                Window::Distinct(vals) => assert!(vals.len() <= spec.keep),
                Window::Ordered(chains) => {
                    assert!(chains.iter().flatten().all(|(_, es)| es.len() <= 16));
                }
            }
        }
    }
    w.sweep(t);
    assert!(w.groups.len() <= spec.max_groups);
    bookkeeping(head, &data[5..]);
});

fn bookkeeping(head: &[u8], steps: &[u8]) {
    let max_groups = usize::from(head[2] % 6) + 1;
    let mut a: Absence<u8, u8> = Absence::new(max_groups);
    let mut b: Baseline<u8, u8> = Baseline::new(RateSpec {
        interval: 4.0,
        alpha: 0.3,
        k: f64::from(head[4] % 3) / 2.0,
        warmup: 1.0,
        min_count: 1.0,
        max_groups,
    });
    let mut t = 0.0f64;
    for step in steps.chunks_exact(3) {
        let (k, dt, v) = (step[0] % 8, step[1] as i8, step[2]);
        t += f64::from(dt) / 2.0;
        let armed = a.due(&k).is_some();
        assert_eq!(a.seen(k, t, t, || k, |d| *d = k), !armed);
        assert_eq!(a.due(&k), Some((t, t)));
        if v % 5 == 0 {
            a.mark_alerted(&k);
        }
        let bucket = b.bucket(t).expect("a finite time has a bucket");
        if let Some((count, mean, var)) = b.add(k, || k, bucket).expect("no negative variance") {
            assert!(count as f64 > mean + b.spec.k * var.sqrt());
        }
        assert!(a.groups.len() <= max_groups && b.groups.len() <= max_groups);
    }
}
