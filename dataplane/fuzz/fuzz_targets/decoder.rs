//! The decoder-file interpreter with coverage from the Rust code itself: any text through a
//! plan that uses every step kind, value option, condition, contract and the device-time
//! inputs (`tests/plans/every_option.json`, the property tests' plan) decodes without a panic;
//! non-ASCII text is always left to the reference; a claimed line hands over one device-time
//! input per name of the plan's `time`, and every field it sets is one the plan names.
//!
//! Input layout as `tests/fuzz/targets/syslog_vendors.py` (one vendor byte, then the line),
//! so its seeds and crash inputs work here unchanged; the vendor byte is ignored.
#![no_main]

use std::sync::OnceLock;

use _dataplane::decoders::{Decoder, Outcome};
use libfuzzer_sys::fuzz_target;

const PLAN: &str = include_str!("../../tests/plans/every_option.json");

fuzz_target!(|data: &[u8]| {
    static DECODER: OnceLock<Decoder> = OnceLock::new();
    let decoder = DECODER.get_or_init(|| Decoder::from_json(PLAN).expect("the plan loads"));
    let Some((_, line)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(line);
    match decoder.decode(&text) {
        Outcome::Fields(fields, time) => {
            assert!(text.is_ascii());
            assert_eq!(time.len(), 3);
            let names = decoder.field_names();
            for (key, _) in &fields {
                assert!(names.contains(key), "{key} is not a field the plan names");
            }
        }
        Outcome::NotMine => assert!(text.is_ascii()),
        Outcome::Defer => assert!(!text.is_ascii()),
    };
});
