//! The rule matcher with coverage from the Rust code: any form loads or is refused without a
//! panic, any field values evaluate without a panic, and where the rule and its negation are
//! both decided they disagree.
//!
//! Input layout as `tests/fuzz/targets/rule_matcher.py` (the form's JSON, then four field
//! sections after 0xFF bytes, each typed by its first byte), so its seeds work here unchanged.
#![no_main]

use std::borrow::Cow;
use std::collections::HashMap;

use _dataplane::rules::{MapFields, RuleSet, Val};
use libfuzzer_sys::fuzz_target;

const FIELDS: [&str; 4] = ["message", "user.name", "source.ip", "destination.port"];

fn value(section: &[u8]) -> Option<Val<'static>> {
    let (&tag, body) = section.split_first()?;
    let body = String::from_utf8_lossy(body).into_owned();
    Some(match tag {
        b's' => Val::Str(Cow::Owned(body)),
        b'i' => Val::Int(body.trim().parse().unwrap_or(body.len() as i64)),
        b'f' => Val::Float(body.trim().parse().unwrap_or(body.len() as f64 / 3.0)),
        b'l' => Val::List(
            body.split(',')
                .map(|s| Val::Str(Cow::Owned(s.to_owned())))
                .collect(),
        ),
        b'n' => Val::Null,
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut sections = data.split(|&b| b == 0xff);
    let form = String::from_utf8_lossy(sections.next().unwrap_or_default());
    let mut fields = HashMap::new();
    for (name, section) in FIELDS.iter().zip(sections) {
        if let Some(v) = value(section) {
            fields.insert((*name).to_owned(), v);
        }
    }
    let Ok(form) = serde_json::from_str::<serde_json::Value>(&form) else {
        // Not one JSON value: the loader must still refuse it without a panic.
        let _ = RuleSet::from_json(&format!(r#"{{"rules": [{{"ir": {form}}}]}}"#));
        return;
    };
    let doc = serde_json::json!({"rules": [
        {"ir": form, "tokens": null},
        {"ir": ["not", form], "tokens": null},
    ]});
    let Ok(rules) = RuleSet::from_json(&doc.to_string()) else {
        return;
    };
    let f = MapFields {
        map: &fields,
        names: rules.fields().names(),
    };
    if let (Ok(yes), Ok(no)) = (rules.matches(0, &f), rules.matches(1, &f)) {
        assert_ne!(yes, no, "a rule and its negation agree");
    }
});
