//! Property tests that fuzz every parser within `cargo test`'s time: arbitrary bytes never
//! panic, and the framer's output and memory do not depend on how the stream is cut.

use _dataplane::decoders::{Decoder, Outcome};
use _dataplane::kv;
use _dataplane::syslog::framing::{frames_of, Framer};
use _dataplane::syslog::header::{self, Clock};
use proptest::prelude::*;
use std::sync::OnceLock;

/// A clock that answers every conversion without Python.
struct FixedClock;

impl Clock for FixedClock {
    fn bsd_epoch(
        &mut self,
        year: Option<u32>,
        month: u32,
        day: u32,
        h: u32,
        m: u32,
        s: u32,
        us: u32,
    ) -> Option<f64> {
        let y = f64::from(year.unwrap_or(2026));
        Some(y + f64::from(month + day + h + m + s) + f64::from(us) / 1e6)
    }

    fn rfc3339(&mut self, token: &str) -> Option<f64> {
        (token.len() % 2 == 0).then_some(1.0)
    }
}

/// Bytes that look like syslog often enough to reach deep into the header parsers.
fn syslogish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"<13>".to_vec()),
        Just(b"<34>1 ".to_vec()),
        Just(b"2003-10-11T22:14:15.003Z ".to_vec()),
        Just(b"Aug  7 10:00:00 ".to_vec()),
        Just(b"Oct 03 2018 17:34:08".to_vec()),
        Just(b"[id@1 a=\"x\\\"y\"]".to_vec()),
        Just(b"123: *Mar  1 00:00:00.123 UTC: ".to_vec()),
        Just(b"host app[12]: ".to_vec()),
        Just(b"Message forwarded from ".to_vec()),
        Just(b"\xc3\xa9\xff\xef\xbb\xbf".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn header_decoding_never_panics_and_keeps_text_inside_the_message(data in syslogish()) {
        let text = header::message_text(&data);
        if let Some(msg) = header::decode(&text, &mut FixedClock) {
            prop_assert!(text.contains(msg.message));
            prop_assert!(msg.facility < 24 && msg.severity < 8);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_header_decoder(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = header::message_text(&data);
        let _ = header::decode(&text, &mut FixedClock);
    }

    #[test]
    fn frames_do_not_depend_on_how_the_stream_is_cut(
        data in prop::collection::vec(prop_oneof![
            Just(b'\n'), Just(0u8), Just(b' '), Just(b'5'), Just(b'0'), Just(b'<'), Just(b'a'), any::<u8>()
        ], 0..400),
        chunk in 1usize..64,
        max_length in 1usize..80,
        max_digits in 1usize..6,
    ) {
        let whole = frames_of(&data, data.len().max(1), max_length, max_digits);
        let cut = frames_of(&data, chunk, max_length, max_digits);
        prop_assert_eq!(whole, cut);
    }

    #[test]
    fn the_framer_holds_at_most_one_frame_of_memory(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..40),
        max_length in 1usize..100,
    ) {
        let mut framer = Framer::new(max_length, 4);
        for chunk in &chunks {
            framer.feed(chunk);
            while let Some(frame) = framer.next_frame() {
                prop_assert!(!frame.is_empty() && frame.len() <= max_length);
            }
            prop_assert!(framer.buffered() <= max_length + 4 + 1 + chunk.len());
        }
        if let Some(tail) = framer.close() {
            prop_assert!(tail.len() <= max_length);
        }
    }

    #[test]
    fn kv_pairs_never_panic_and_keys_are_key_characters(
        text in prop::collection::vec(prop_oneof![
            Just(b'='), Just(b'"'), Just(b' '), Just(b'a'), Just(b'-'), Just(b'\t'), any::<u8>()
        ], 0..300).prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
        limit in 0usize..20,
    ) {
        if let Some(found) = kv::pairs(&text, limit) {
            prop_assert!(found.len() <= limit);
            for (key, _) in found {
                prop_assert!(!key.is_empty());
                prop_assert!(key.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)));
            }
        }
    }
}

/// A plan that exercises every step kind, value option and contract of the interpreter.
// (`tests/plans/every_option.json`, shared with the cargo-fuzz target `decoder`)
const PLAN: &str = include_str!("plans/every_option.json");

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn decoder_plans_never_panic_on_any_text(
        text in prop::collection::vec(prop_oneof![
            Just("IN=".to_owned()), Just(" ".to_owned()), Just("src=203.0.113.7".to_owned()),
            Just("[1.2]".to_owned()), Just("DROP:".to_owned()), Just("list=4,1.2.3.4,x,80".to_owned()),
            Just("proto=tcp/443".to_owned()), Just("spt=1".to_owned()), Just("dpt=".to_owned()),
            Just("\"".to_owned()), Just("=".to_owned()), Just("é".to_owned()),
            "[ -~]{0,12}".prop_map(|s| s),
        ], 0..16).prop_map(|v| v.concat()),
    ) {
        static DECODER: OnceLock<Decoder> = OnceLock::new();
        let decoder = DECODER.get_or_init(|| Decoder::from_json(PLAN).expect("the plan loads"));
        match decoder.decode(&text) {
            Outcome::Fields(fields, time) => {
                // cut needs IN=, the csv step reads the quoted kv step's "list" capture
                prop_assert!(text.contains("IN=") && text.contains("list="));
                prop_assert!(fields.iter().any(|(k, _)| *k == "observer.vendor"));
                // the device time's inputs are handed over, one per name of the plan's `time`
                prop_assert_eq!(time.len(), 3);
                // a value spec's alternatives end with a constant: always a value
                prop_assert!(fields.iter().any(|(k, _)| *k == "labels.e"));
            }
            Outcome::NotMine => prop_assert!(text.is_ascii()),
            Outcome::Defer => prop_assert!(!text.is_ascii()),
        }
    }
}

/// A template layout: up to 16 fields of any fixed length (0..20) or variable, any converter.
fn flow_layout() -> impl Strategy<Value = Vec<(u16, u8)>> {
    prop::collection::vec((prop_oneof![0u16..20, Just(0xFFFFu16)], 0u8..7), 1..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any layout over any body: no panic, records bounded by the bytes, values per record
    /// as the layout says, every value printable.
    #[test]
    fn netflow_records_split_within_their_bytes(
        layout in flow_layout(),
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        use _dataplane::netflow::{split, text, Conv, FieldPlan, Raw, RecordPlan};
        let fields = layout
            .iter()
            .map(|&(len, code)| FieldPlan { len, conv: Conv::from_code(code).unwrap() })
            .collect();
        if let Ok(plan) = RecordPlan::new(fields) {
            let got = split(&plan, &body);
            prop_assert!(got.records * plan.min_len <= body.len());
            prop_assert_eq!(got.values.len(), got.records * plan.width());
            for v in &got.values {
                if let Raw::Bytes(b, c) = v {
                    let _ = text(b, *c);
                }
            }
        }
    }
}

/// Bytes shaped like stored segment lines: brackets, quotes, escapes, keys and newlines.
fn segmentish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"[1.5,2.5,\"syslog\",{".to_vec()),
        Just(b"\"message\":\"".to_vec()),
        Just(b"\"user.name\":".to_vec()),
        Just(b"\\\"".to_vec()),
        Just(b"\\\\".to_vec()),
        Just(b"[\"a\",\"b\"]".to_vec()),
        Just(b"},\"raw\"]\n".to_vec()),
        Just(b",".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn a_segment_filter_never_panics_and_holds_its_terms(body in segmentish()) {
        let filter = _dataplane::segindex::bloom(&body);
        for h in _dataplane::segindex::terms(&body) {
            prop_assert!(_dataplane::segindex::may_hold(&filter, h));
        }
    }
}
