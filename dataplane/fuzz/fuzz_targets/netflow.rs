//! NetFlow v9/IPFIX data records with coverage from the Rust code itself: any template layout
//! (fixed and variable-length fields, padding, every converter) over any data set body splits
//! without panicking, never yields more records than the bytes allow, and every value
//! converts to text.
//!
//! Input: a field count byte, then two bytes per field (length selector, converter code),
//! then the data set body.
#![no_main]

use _dataplane::netflow::{split, text, Conv, FieldPlan, Raw, RecordPlan, VARLEN};
use libfuzzer_sys::fuzz_target;

fn layout(data: &[u8]) -> Option<(RecordPlan, &[u8])> {
    let n = usize::from(*data.first()? % 16) + 1;
    let specs = data.get(1..1 + 2 * n)?;
    let fields = specs
        .chunks_exact(2)
        .map(|s| FieldPlan {
            len: match s[0] {
                0xFF => VARLEN,
                l => u16::from(l % 20),
            },
            conv: Conv::from_code(s[1] % 7).unwrap_or(Conv::Hex),
        })
        .collect();
    Some((RecordPlan::new(fields).ok()?, &data[1 + 2 * n..]))
}

fuzz_target!(|data: &[u8]| {
    let Some((plan, body)) = layout(data) else {
        return;
    };
    let got = split(&plan, body);
    assert!(got.records * plan.min_len <= body.len());
    assert_eq!(got.values.len(), got.records * plan.width());
    for v in &got.values {
        if let Raw::Bytes(b, c) = v {
            let _ = text(b, *c);
        }
    }
});
