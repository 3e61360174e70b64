//! Property tests for the rule matcher (`rules`): any document loads or is refused without a
//! panic, any generated form evaluates on any field values without a panic, and the answers
//! it does give obey the form's logic (`not` inverts, `and`/`or` combine their parts), and
//! what a shape's answer says holds for every record of that shape.

use std::borrow::Cow;
use std::collections::HashMap;

use _dataplane::rules::{Known, MapFields, RuleSet, ShapeFields, Val};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

const FIELDS: [&str; 4] = ["message", "user.name", "source.ip", "n"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("root".to_owned()),
        Just("ROOT".to_owned()),
        Just("10.1.2.3".to_owned()),
        Just("fe80::1%eth0".to_owned()),
        Just("\u{212a}".to_owned()),
        Just("İ".to_owned()),
        Just("a\u{b}b".to_owned()),
        Just(" 12 ".to_owned()),
        Just("inf".to_owned()),
        "[a-zA-Z0-9 .*?\\\\]{0,12}",
        any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = Val<'static>> {
    let leaf = prop_oneof![
        Just(Val::Null),
        any::<bool>().prop_map(Val::Bool),
        any::<i64>().prop_map(Val::Int),
        any::<f64>().prop_map(Val::Float),
        text().prop_map(|s| Val::Str(Cow::Owned(s))),
        Just(Val::Other),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Val::List)
    })
}

fn field() -> impl Strategy<Value = Json> {
    prop::sample::select(&FIELDS[..]).prop_map(|f| json!(f))
}

fn test_form() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["eq", "all", "contains", "starts", "ends"]),
            text(),
            any::<bool>()
        )
            .prop_map(|(k, l, c)| json!(["str", k, l, c])),
        (
            prop::collection::vec(
                prop_oneof![text().prop_map(Json::from), (0u8..2).prop_map(Json::from)],
                0..5
            ),
            any::<bool>()
        )
            .prop_map(|(p, c)| json!(["glob", p, c])),
        any::<bool>().prop_map(|b| json!(["bool", b])),
        (-5i64..5).prop_map(|n| json!(["num", n, n.to_string()])),
        (
            prop::sample::select(vec!["lt", "lte", "gt", "gte", "neq"]),
            -5.0f64..5.0
        )
            .prop_map(|(o, n)| json!(["cmp", o, n])),
        ("[a-z()|\\\\ds+*?]{0,10}", "[ims]{0,2}").prop_map(|(p, f)| json!(["re", p, f])),
        Just(json!(["net", ["10.0.0.0/8", "fc00::/7"]])),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop::collection::vec(inner, 0..3).prop_map(|v| json!(["any", v]))
    })
}

fn cond_form() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        (field(), prop::collection::vec(text(), 0..3)).prop_map(|(f, v)| {
            let lower: Vec<String> = v.iter().map(|s| s.to_lowercase()).collect();
            json!(["eq", f, v, lower])
        }),
        field().prop_map(|f| json!(["cidr", f, ["10.0.0.0/8", "::1/128"]])),
        field().prop_map(|f| json!(["null", f])),
        (field(), any::<bool>()).prop_map(|(f, b)| json!(["exists", f, b])),
        (field(), field()).prop_map(|(a, b)| json!(["ref", a, b])),
        (text(), any::<bool>()).prop_map(|(t, c)| json!(["kw", t, c])),
        test_form().prop_map(|t| json!(["msg", t])),
        (field(), test_form()).prop_map(|(f, t)| json!(["field", f, t])),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!(["and", v])),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!(["or", v])),
            inner.prop_map(|c| json!(["not", c])),
        ]
    })
}

fn event() -> impl Strategy<Value = HashMap<String, Val<'static>>> {
    prop::collection::hash_map(
        prop::sample::select(&FIELDS[..]).prop_map(str::to_owned),
        value(),
        0..4,
    )
}

/// What a generated shape fixes per field (by name): missing, one value, or present with
/// each record's own value (never None).
#[derive(Debug, Clone)]
enum Fixed {
    Missing,
    Value(Val<'static>),
    Present,
}

struct GivenShape<'a> {
    names: &'a [String],
    fixed: &'a HashMap<String, Fixed>,
}

impl ShapeFields for GivenShape<'_> {
    fn known(&self, field: usize) -> Known<'_> {
        match self.names.get(field).and_then(|n| self.fixed.get(n)) {
            None | Some(Fixed::Missing) => Known::Missing,
            Some(Fixed::Value(v)) => Known::Value(v.clone()),
            Some(Fixed::Present) => Known::Present,
        }
    }
}

fn shape() -> impl Strategy<Value = HashMap<String, Fixed>> {
    let fixed = prop_oneof![
        Just(Fixed::Missing),
        value().prop_map(Fixed::Value),
        Just(Fixed::Present),
    ];
    prop::collection::hash_map(
        prop::sample::select(&FIELDS[..]).prop_map(str::to_owned),
        fixed,
        0..4,
    )
}

/// A record of the shape: its fixed values, any value but None where it is present.
fn record_of(
    shape: &HashMap<String, Fixed>,
    own: &[Val<'static>],
) -> HashMap<String, Val<'static>> {
    let mut own = own.iter().cycle();
    shape
        .iter()
        .filter_map(|(k, f)| match f {
            Fixed::Missing => None,
            Fixed::Value(v) => Some((k.clone(), v.clone())),
            Fixed::Present => Some((k.clone(), own.next().cloned().unwrap_or(Val::Int(0)))),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_document_loads_or_is_refused_without_a_panic(doc in any::<String>()) {
        let _ = RuleSet::from_json(&doc);
    }

    #[test]
    fn broken_forms_are_refused_or_left_to_the_reference(form in prop_oneof![
        Just(json!([])), Just(json!(["eq"])), Just(json!(["and", 3])), Just(json!(["re", "(", ""])),
        Just(json!(["field", "x", ["glob", [7], true]])), Just(json!(["cidr", "x", ["1.2.3.4/99"]])),
        any::<String>().prop_map(Json::from),
    ]) {
        let rs = RuleSet::from_json(&json!({"rules": [{"ir": form, "tokens": null}]}).to_string()).unwrap();
        prop_assert_eq!(rs.unsupported().len(), 1);
    }

    #[test]
    fn answers_given_obey_not_and_or(c in cond_form(), d in cond_form(), ev in event()) {
        let doc = json!({"rules": [
            {"ir": c, "tokens": null},
            {"ir": d, "tokens": null},
            {"ir": ["not", c], "tokens": null},
            {"ir": ["and", [c, d]], "tokens": null},
            {"ir": ["or", [c, d]], "tokens": null},
        ]});
        let rs = RuleSet::from_json(&doc.to_string()).unwrap();
        let f = MapFields { map: &ev, names: rs.fields().names() };
        let a: Vec<_> = (0..5).map(|i| rs.matches(i, &f)).collect();
        if let (Ok(x), Ok(n)) = (a[0], a[2]) {
            prop_assert_eq!(x, !n);
        }
        if let (Ok(x), Ok(y)) = (a[0], a[1]) {
            prop_assert_eq!(a[3], Ok(x && y));
            prop_assert_eq!(a[4], Ok(x || y));
        }
        // A false part decides an "and", a true part an "or", whatever the other part is and
        // wherever it stands, undecided too (when the other part loaded: a rule with a part
        // refused is refused whole). The parts are evaluated cheapest first, not in order.
        let refused: Vec<usize> = rs.unsupported().into_iter().map(|(i, _)| i).collect();
        for (part, other) in [(0, 1), (1, 0)] {
            if !refused.contains(&other) {
                if a[part] == Ok(false) { prop_assert_eq!(a[3], Ok(false)); }
                if a[part] == Ok(true) { prop_assert_eq!(a[4], Ok(true)); }
            }
        }
    }

    #[test]
    fn a_shapes_answer_holds_for_each_of_its_records(
        c in cond_form(),
        tokens in prop::option::of(prop::collection::vec("[a-z ]{0,3}", 1..3)),
        sh in shape(),
        own in prop::collection::vec(value().prop_filter("never None", |v| *v != Val::Null), 1..4),
    ) {
        let doc = json!({"rules": [{"ir": c, "tokens": tokens}]});
        let rs = RuleSet::from_json(&doc.to_string()).unwrap();
        let names = rs.fields().names();
        let given = GivenShape { names, fixed: &sh };
        if let Some(b) = rs.matches_shape(0, &given) {
            let rec = record_of(&sh, &own);
            let f = MapFields { map: &rec, names };
            let got = rs.matches(0, &f);
            prop_assert!(got == Ok(b) || got.is_err(), "shape {:?} said {}, the record {:?}", sh, b, got);
        }
    }
}
