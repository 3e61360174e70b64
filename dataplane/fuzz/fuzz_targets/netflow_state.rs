//! The stateful NetFlow decoder (`netflow_state`): any sequence of datagrams from two
//! exporters, through tight limits and a clock that crosses the held-data age, decodes
//! without panicking, and the state stays within its bounds after every datagram.
//!
//! Input: the Python `netflow` target's stream (a flags byte choosing each datagram's
//! exporter, then a two-byte length before each datagram), so its seeds start both.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use _dataplane::netflow_state::{CountSink, Decoder, Limits, PlainPlanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_exporters: 4,
        max_domains_per_exporter: 2,
        max_templates_per_exporter: 4,
        max_templates: 6,
        max_fields_per_template: 32,
        max_field_length: 64,
        template_lifetime: 30.0,
        pending_max_sets: 4,
        pending_max_age: 10.0,
        compiles_per_second: 1.0,
    };
    let large: HashSet<u16> = [82, 83, 84, 94, 95].into_iter().collect();
    let Some(mut dec) = Decoder::new(limits, large, PlainPlanner) else {
        return;
    };
    let exporters: [Arc<str>; 2] = [Arc::from("192.0.2.1"), Arc::from("2001:db8::1")];
    let flags = data.first().copied().unwrap_or(0);
    let mut pos = 1usize;
    let mut i = 0usize;
    let mut sink = CountSink::default();
    let mut fed = 0usize;
    while pos + 2 <= data.len() {
        let n = usize::from(u16::from_be_bytes([data[pos], data[pos + 1]]));
        pos += 2;
        let end = (pos + n).min(data.len());
        let exporter = &exporters[usize::from((flags >> (i % 8)) & 1)];
        fed += end - pos;
        dec.decode(
            &data[pos..end],
            exporter,
            2055,
            1e9 + i as f64 * 7.0,
            &mut sink,
        );
        // Every record is at least one byte, and a held set is decoded once, when released.
        assert!(sink.flows <= fed);
        assert!(dec.template_count() <= 6);
        assert!(dec.domains.len() <= 4);
        if i % 5 == 4 {
            dec.expire(1e9 + i as f64 * 7.0);
        }
        pos = end;
        i += 1;
    }
});
