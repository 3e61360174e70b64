//! The syslog batch path's pure part (`syslog::batch::decode_batch`): any bytes, cut into
//! datagrams, go through the empty/oversize rule, the token bucket and the header decoder
//! without a panic, and every datagram is accounted for exactly once (kept, or counted as
//! empty or rate limited).
//!
//! Input layout: one parameter byte (bits 0-5: the size limit in units of 16 bytes, bit 6:
//! a rate limit on, bit 7: conversions fail), then the datagrams separated by 0x1e (ASCII
//! record separator), so the header target's seeds (one datagram each) work here unchanged.
#![no_main]

use _dataplane::syslog::batch::{decode_batch, Bucket, Tally};
use _dataplane::syslog::header::Clock;
use libfuzzer_sys::fuzz_target;

struct FuzzClock(bool);

impl Clock for FuzzClock {
    fn bsd_epoch(
        &mut self,
        year: Option<u32>,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        _micros: u32,
    ) -> Option<f64> {
        (!self.0).then(|| {
            f64::from(year.unwrap_or(2026)) * 1e7
                + f64::from(month * 31 + day) * 86_400.0
                + f64::from(hour * 3600 + minute * 60 + second)
        })
    }

    fn rfc3339(&mut self, token: &str) -> Option<f64> {
        (!self.0).then_some(token.len() as f64)
    }
}

fuzz_target!(|data: &[u8]| {
    let (param, raw) = match data.split_first() {
        Some((p, rest)) => (*p, rest),
        None => (0, data),
    };
    let max_bytes = 1 + usize::from(param & 0x3f) * 16;
    let items: Vec<&[u8]> = raw.split(|&b| b == 0x1e).collect();
    let mut bucket = Bucket {
        tokens: 3.0,
        last: 0.0,
    };
    let rate = if param & 0x40 != 0 { 1.0 } else { 0.0 };
    let mut texts = Vec::new();
    let mut tally = Tally::default();
    let out = decode_batch(
        &items,
        &mut texts,
        max_bytes,
        Some((&mut bucket, 0.0, rate, 3.0)),
        &mut FuzzClock(param & 0x80 != 0),
        &mut tally,
    );
    assert_eq!(out.len(), items.len());
    let dropped = out.iter().filter(|o| o.is_none()).count() as u64;
    assert_eq!(dropped, tally.empty + tally.rate_limited);
    assert!(tally.truncated <= items.iter().filter(|i| i.len() > max_bytes).count() as u64);
    for (item, got) in items.iter().zip(&out) {
        if let Some(Some(msg)) = got {
            assert!(msg.facility < 24 && msg.severity < 8);
            assert!(msg.message.len() <= 3 * item.len().min(max_bytes));
        }
    }
});
