//! Syslog header decode with coverage from the Rust code itself: any bytes decode without a
//! panic, and the message keeps the contract the Python side relies on (facility and severity
//! in range, header fields within RFC 5424's maxima, the message text taken from the input).
//!
//! Input layout as `tests/fuzz/targets/syslog_header.py` (one parameter byte, then the
//! datagram), so its seeds and crash inputs work here unchanged.
#![no_main]

use _dataplane::syslog::header::{
    self, Clock, Format, MAX_APP_NAME, MAX_HOSTNAME, MAX_MSGID, MAX_PROCID,
};
use libfuzzer_sys::fuzz_target;

/// Answers conversions without Python; the parameter byte decides whether they succeed, so
/// both the "stamp converted" and "stamp rejected" paths are reached.
struct FuzzClock(u8);

impl Clock for FuzzClock {
    fn bsd_epoch(
        &mut self,
        year: Option<u32>,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        micros: u32,
    ) -> Option<f64> {
        (self.0 & 1 == 0).then(|| {
            let y = f64::from(year.unwrap_or(2026));
            y * 1e7
                + f64::from(month * 31 + day) * 86_400.0
                + f64::from(hour * 3600 + minute * 60 + second)
                + f64::from(micros) / 1e6
        })
    }

    fn rfc3339(&mut self, token: &str) -> Option<f64> {
        (self.0 & 2 == 0).then_some(token.len() as f64)
    }
}

fn chars(value: Option<&str>) -> usize {
    value.map_or(0, |v| v.chars().count())
}

fuzz_target!(|data: &[u8]| {
    let (param, raw) = match data.split_first() {
        Some((p, rest)) => (*p, rest),
        None => (0, data),
    };
    let text = header::message_text(raw);
    let Some(msg) = header::decode(&text, &mut FuzzClock(param)) else {
        assert!(!text.is_ascii(), "declined an ASCII line");
        return;
    };
    assert!(msg.facility < 24 && msg.severity < 8);
    assert!(chars(msg.hostname) <= MAX_HOSTNAME);
    if msg.format == Format::Rfc5424 {
        assert!(chars(msg.app_name) <= MAX_APP_NAME);
        assert!(chars(msg.procid) <= MAX_PROCID);
        assert!(chars(msg.msgid) <= MAX_MSGID);
    } else {
        // RFC 3164 has no maxima: a tag of up to twice MAX_APP_NAME is taken as sent (a longer
        // one is not a tag), the PID is bounded by the message only (as the reference does).
        assert!(chars(msg.app_name) <= 2 * MAX_APP_NAME);
    }
    assert!(
        text.contains(msg.message),
        "message text is not from the input"
    );
    if let Some(t) = msg.timestamp {
        assert!(t.is_finite());
    }
    assert!(msg.errors.iter().all(|e| !e.is_empty()));
});
