//! The per-message policy of a batch of syslog messages (what `SyslogIntake.datagram` and
//! `admit` do in Python before decoding), kept free of the interpreter so it is tested and
//! fuzzed with `cargo test`: empty and oversize datagrams, and the sender's token bucket.
//!
//! The PyO3 side (`python_batch`) walks a `recvmmsg` batch (or a stream read's frames) with
//! these and decodes what is admitted, so Python makes one call per batch.

use super::header::{self, Clock, Message};

/// What becomes of one datagram before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Nothing to decode: dropped as `empty`.
    Empty,
    /// Decode `data[..len]`; `truncated` when the datagram was longer than the limit (it is
    /// kept, cut to `max_bytes`, and counted in `syslog_truncated_total`).
    Keep { len: usize, truncated: bool },
}

/// The empty / oversize rule of `SyslogIntake.datagram`.
pub fn admit(data: &[u8], max_bytes: usize) -> Admit {
    if data.is_empty() {
        Admit::Empty
    } else if data.len() > max_bytes {
        Admit::Keep {
            len: max_bytes,
            truncated: true,
        }
    } else {
        Admit::Keep {
            len: data.len(),
            truncated: false,
        }
    }
}

/// One sender's token bucket, the same arithmetic as `SyslogIntake.take` (IEEE doubles in the
/// same order, so both backends drop the same messages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub last: f64,
}

impl Bucket {
    /// Spend one token at `now`; `false` when the bucket is empty (rate limited).
    pub fn take(&mut self, now: f64, rate: f64, burst: f64) -> bool {
        let mut tokens = self.tokens + (now - self.last) * rate;
        self.last = now;
        if tokens > burst {
            tokens = burst;
        }
        if tokens < 1.0 {
            self.tokens = tokens;
            return false;
        }
        self.tokens = tokens - 1.0;
        true
    }
}

/// Per-reason tallies of one batch, folded into the Python counters after the call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub empty: u64,
    pub truncated: u64,
    pub rate_limited: u64,
}

/// The pure part of a batch, as the fuzz target and the unit tests drive it: every datagram
/// admitted or not, the bucket spent, and the header decoded. `None` per message the policy
/// dropped, `Some(None)` for a header only the reference decodes.
pub fn decode_batch<'a, C: Clock>(
    items: &[&'a [u8]],
    texts: &'a mut Vec<std::borrow::Cow<'a, str>>,
    max_bytes: usize,
    bucket: Option<(&mut Bucket, f64, f64, f64)>,
    clock: &mut C,
    tally: &mut Tally,
) -> Vec<Option<Option<Message<'a>>>> {
    let mut kept: Vec<Option<usize>> = Vec::with_capacity(items.len());
    let mut bucket = bucket;
    for data in items {
        match admit(data, max_bytes) {
            Admit::Empty => {
                tally.empty += 1;
                kept.push(None);
            }
            Admit::Keep { len, truncated } => {
                if truncated {
                    tally.truncated += 1;
                }
                if let Some((b, now, rate, burst)) = bucket.as_mut() {
                    if *rate != 0.0 && !b.take(*now, *rate, *burst) {
                        tally.rate_limited += 1;
                        kept.push(None);
                        continue;
                    }
                }
                texts.push(header::message_text(&data[..len]));
                kept.push(Some(texts.len() - 1));
            }
        }
    }
    let texts: &'a Vec<std::borrow::Cow<'a, str>> = texts;
    kept.into_iter()
        .map(|k| k.map(|i| header::decode(&texts[i], clock)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoClock;

    impl Clock for NoClock {
        fn bsd_epoch(
            &mut self,
            _: Option<u32>,
            _: u32,
            _: u32,
            _: u32,
            _: u32,
            _: u32,
            _: u32,
        ) -> Option<f64> {
            None
        }
        fn rfc3339(&mut self, _: &str) -> Option<f64> {
            None
        }
    }

    #[test]
    fn empty_is_dropped_and_oversize_is_cut_to_the_limit() {
        assert_eq!(admit(b"", 10), Admit::Empty);
        assert_eq!(
            admit(b"0123456789AB", 10),
            Admit::Keep {
                len: 10,
                truncated: true
            }
        );
        assert_eq!(
            admit(b"0123456789", 10),
            Admit::Keep {
                len: 10,
                truncated: false
            }
        );
    }

    #[test]
    fn bucket_spends_the_burst_then_refills_at_the_rate() {
        let mut b = Bucket {
            tokens: 2.0,
            last: 0.0,
        };
        assert!(b.take(0.0, 1.0, 2.0));
        assert!(b.take(0.0, 1.0, 2.0));
        assert!(!b.take(0.0, 1.0, 2.0));
        assert!(b.take(1.0, 1.0, 2.0));
        assert!(!b.take(1.0, 1.0, 2.0));
        // Never more than the burst, however long the sender was quiet.
        assert!(b.take(1000.0, 1.0, 2.0));
        assert!(b.take(1000.0, 1.0, 2.0));
        assert!(!b.take(1000.0, 1.0, 2.0));
    }

    #[test]
    fn batch_counts_each_reason_and_decodes_what_it_keeps() {
        let items: Vec<&[u8]> = vec![
            b"",
            b"<13>1 - host app - - - hello",
            b"<13>oversize message text that is long",
            b"<13>rate limited",
        ];
        let mut texts = Vec::new();
        let mut tally = Tally::default();
        let mut bucket = Bucket {
            tokens: 2.0,
            last: 0.0,
        };
        let out = decode_batch(
            &items,
            &mut texts,
            32,
            Some((&mut bucket, 0.0, 1.0, 2.0)),
            &mut NoClock,
            &mut tally,
        );
        assert_eq!(
            tally,
            Tally {
                empty: 1,
                truncated: 1,
                rate_limited: 1
            }
        );
        assert!(out[0].is_none() && out[3].is_none());
        let first = out[1].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(first.message, "hello");
        let cut = out[2].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(cut.message, &"oversize message text that is long"[..28]);
    }
}
