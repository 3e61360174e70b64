//! Decoder files, interpreted: the plan Python makes of a validated file
//! (`declarative.native_plan`) run on one message, giving the fields to set in order.
//!
//! The semantics are the Python code generator's (`declarative.py`), which the equivalence
//! tests hold this to: captures (first wins, a CSV row's columns win), value specs (first
//! non-empty capture, `keep_empty`, `requires`, `unless`, `when`, `strip`, maps with `else`, conversions)
//! and the shared contracts. Conversions whose exact text is Python's to decide (canonical IP
//! text, epochs) are asked of the caller through [`Convert`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::{smallvec, SmallVec};

use memchr::memmem;
use regex::bytes::{CaptureLocations, Regex, RegexBuilder};
use serde::Deserialize;

use crate::cef;
use crate::kv;

#[derive(Debug, Deserialize)]
pub struct Plan {
    #[serde(rename = "match")]
    matcher: Match,
    steps: Vec<StepPlan>,
    observer: Vec<(String, String)>,
    contract: Option<ContractPlan>,
    fields: Vec<(String, ValuePlan)>,
    /// The captures the device-time alternatives read, in the order the reference's
    /// `device_time` takes them (the conversion itself is the caller's: strptime and zones).
    #[serde(default)]
    time: Vec<String>,
    #[serde(skip)]
    time_slots: Vec<usize>,
}

#[derive(Debug, Deserialize)]
struct Match {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum StepPlan {
    Regex {
        from: Option<String>,
        pattern: String,
        optional: bool,
        #[serde(default)]
        contains: Option<String>,
        #[serde(default)]
        within: Option<usize>,
    },
    Cut {
        from: Option<String>,
        at: String,
        before: Option<String>,
        after: Option<String>,
    },
    Kv {
        from: Option<String>,
        style: String,
        start: String,
        #[serde(default)]
        within: Option<usize>,
        min: usize,
        max: usize,
        lower: bool,
    },
    Csv {
        from: Option<String>,
        sep: String,
        /// Fields may be quoted: text with a quote is left to the reference (Python's csv).
        #[serde(default)]
        quoted: bool,
        key: Option<usize>,
        tables: HashMap<String, Vec<String>>,
    },
    Table {
        from: Option<String>,
        key: String,
        cases: Vec<CasePlan>,
    },
    Cef {
        from: Option<String>,
    },
    Leef {
        from: Option<String>,
    },
    /// New captures, each the first non-empty of others.
    Pick {
        from: Option<String>,
        names: Vec<(String, Vec<String>)>,
    },
    /// Not this decoder's line unless these captures exist (`all`, and one of `any`).
    Require {
        from: Option<String>,
        all: Vec<String>,
        any: Vec<String>,
    },
}

/// Tests on captures (and on fields already set) that a value or a table case needs.
#[derive(Debug, Default, Deserialize)]
struct Conditions {
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    unless: Vec<String>,
    /// The capture, lower-cased, is one of the (lower-case) values.
    #[serde(default)]
    when: Vec<(String, Vec<String>)>,
    /// The capture, lower-cased, is none of them (a missing one is "").
    #[serde(default)]
    when_not: Vec<(String, Vec<String>)>,
    /// The capture is exactly one of the values.
    #[serde(default, rename = "is")]
    exactly: Vec<(String, Vec<String>)>,
    /// The capture is missing or exactly none of the values.
    #[serde(default, rename = "is_not")]
    exactly_not: Vec<(String, Vec<String>)>,
    /// The captures are numbers (as the `int` conversion reads them).
    #[serde(default)]
    numbers: Vec<String>,
    /// Fields this decoder set before.
    #[serde(default)]
    requires_field: Vec<String>,
    #[serde(skip)]
    slots: ConditionSlots,
}

#[derive(Debug, Default, Clone)]
struct ConditionSlots {
    /// No test at all (most values): `hold` answers at once. A FortiGate line asks ~27
    /// times, ~90 instructions each through the empty lists.
    none: bool,
    requires: Vec<usize>,
    unless: Vec<usize>,
    when: Vec<(usize, Vec<String>)>,
    when_not: Vec<(usize, Vec<String>)>,
    exactly: Vec<(usize, Vec<String>)>,
    exactly_not: Vec<(usize, Vec<String>)>,
    numbers: Vec<usize>,
}

impl Conditions {
    fn resolve(&mut self, slot: &mut impl FnMut(&str) -> usize) {
        let mut each = |list: &[(String, Vec<String>)]| -> Vec<(usize, Vec<String>)> {
            list.iter().map(|(n, v)| (slot(n), v.clone())).collect()
        };
        let (when, when_not, exactly, exactly_not) = (
            each(&self.when),
            each(&self.when_not),
            each(&self.exactly),
            each(&self.exactly_not),
        );
        let none = [
            &self.requires,
            &self.unless,
            &self.numbers,
            &self.requires_field,
        ]
        .iter()
        .all(|l| l.is_empty())
            && [&when, &when_not, &exactly, &exactly_not]
                .iter()
                .all(|l| l.is_empty());
        self.slots = ConditionSlots {
            none,
            requires: self.requires.iter().map(|n| slot(n)).collect(),
            unless: self.unless.iter().map(|n| slot(n)).collect(),
            numbers: self.numbers.iter().map(|n| slot(n)).collect(),
            when,
            when_not,
            exactly,
            exactly_not,
        };
    }

    fn hold(&self, caps: &Captures<'_>, out: &[(&str, Value<'_>)]) -> bool {
        if self.slots.none {
            return true;
        }
        self.slots.hold(caps)
            && self
                .requires_field
                .iter()
                .all(|f| out.iter().any(|(k, _)| k == f))
    }
}

impl ConditionSlots {
    fn hold(&self, caps: &Captures<'_>) -> bool {
        if self.none {
            return true;
        }
        let folded = |slot: usize| caps[slot].map(str::to_lowercase).unwrap_or_default();
        self.requires.iter().all(|r| caps[*r].is_some())
            && !self.unless.iter().any(|r| caps[*r].is_some())
            && self
                .numbers
                .iter()
                .all(|r| caps[*r].and_then(as_int).is_some())
            && self
                .when
                .iter()
                .all(|(s, allowed)| allowed.contains(&folded(*s)))
            && !self
                .when_not
                .iter()
                .any(|(s, banned)| banned.contains(&folded(*s)))
            && self
                .exactly
                .iter()
                .all(|(s, allowed)| caps[*s].is_some_and(|v| allowed.iter().any(|a| a == v)))
            && !self
                .exactly_not
                .iter()
                .any(|(s, banned)| caps[*s].is_some_and(|v| banned.iter().any(|b| b == v)))
    }
}

/// One case of a message-id table: the ids (or id prefixes) it takes, its pattern, and what
/// it sets after the file's own fields.
#[derive(Debug, Deserialize)]
struct CasePlan {
    ids: Vec<String>,
    prefixes: Vec<String>,
    /// Takes every id (after the cases before it).
    default: bool,
    pattern: Option<String>,
    optional: bool,
    /// Further optional searches, run when the case is chosen.
    #[serde(default)]
    also: Vec<StepPlan>,
    /// The capture its pattern reads (default: the table's input).
    #[serde(default)]
    input: Option<String>,
    #[serde(flatten)]
    cond: Conditions,
    contract: Option<ContractPlan>,
    fields: Vec<(String, ValuePlan)>,
}

#[derive(Debug, Deserialize)]
struct ContractPlan {
    kind: String,
    #[serde(rename = "type")]
    auth_type: String,
    default_action: Option<String>,
    action: Option<ValuePlan>,
    outcome: Option<ValuePlan>,
    user: Option<ValuePlan>,
}

#[derive(Debug, Deserialize)]
struct ValuePlan {
    #[serde(default)]
    names: Vec<String>,
    #[serde(rename = "const", default)]
    constant: Option<usize>,
    /// A text constant (handed back as text, so a contract can read it).
    #[serde(default)]
    text: Option<String>,
    /// Captures added as integers (all of them small decimals, or no value).
    #[serde(default)]
    sum: Vec<String>,
    /// Alternatives: the first that gives a value.
    #[serde(default)]
    alts: Vec<ValuePlan>,
    #[serde(rename = "as", default = "string")]
    convert: String,
    #[serde(default)]
    keep_empty: bool,
    /// Placeholder values that count as no value ("N/A").
    #[serde(default)]
    skip: Vec<String>,
    #[serde(flatten)]
    cond: Conditions,
    #[serde(default)]
    strip: Option<String>,
    #[serde(default)]
    first: Option<usize>,
    #[serde(default)]
    map: Option<MapPlan>,
    #[serde(rename = "else", default)]
    otherwise: Option<String>,
    /// `names` and `sum` as capture slots (resolved when the plan is loaded).
    #[serde(skip)]
    name_slots: Vec<usize>,
    #[serde(skip)]
    sum_slots: Vec<usize>,
}

fn string() -> String {
    "string".to_owned()
}

#[derive(Debug, Deserialize)]
struct MapPlan {
    #[serde(rename = "match")]
    how: String,
    case: String,
    pairs: Vec<(String, String)>,
    /// The keys normalized once (`case`), and for an exact map the index of each (the last
    /// of a repeated key, as the reference's dict keeps it).
    #[serde(skip)]
    normed: Vec<String>,
    #[serde(skip)]
    exact: FxHashMap<String, usize>,
}

impl MapPlan {
    fn norm(&self, s: &str) -> String {
        match self.case.as_str() {
            "lower" => s.to_lowercase(),
            "upper" => s.to_uppercase(),
            _ => s.to_owned(),
        }
    }

    fn prepare(&mut self) {
        self.normed = self.pairs.iter().map(|(a, _)| self.norm(a)).collect();
        self.exact = self
            .normed
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i))
            .collect();
    }
}
/// A field's value, as the Python decoder would set it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    /// A conversion the caller does (its result text is the reference's): (name, input).
    Converted(&'static str, &'a str),
    /// A file constant (by index in the caller's list).
    Const(usize),
    /// A list of texts. Most have one item, kept in place: a `Vec` was an allocation and a
    /// free per list, two lists a line on sshd's.
    Texts(SmallVec<[&'a str; 1]>),
}

/// What a decoder made of a message.
#[derive(Debug, PartialEq)]
pub enum Outcome<'a> {
    /// Ours: the fields to set, in order, and the captures the device time is read from (one
    /// per name of the plan's `time`; empty when the file has no `[[time]]`).
    Fields(Vec<(&'a str, Value<'a>)>, Vec<Option<&'a str>>),
    /// Not this decoder's line.
    NotMine,
    /// Text only the reference reads the same way (non-ASCII: Unicode classes and case).
    Defer,
}

/// Conversions whose result text is the reference's: the interpreter defers them.
const DEFERRED: [&str; 4] = ["ip", "ip_port.ip", "ip_port.port", "epoch"];

/// A step ready to run: capture names resolved to slots, regexes compiled.
enum Step {
    Regex {
        from: Option<usize>,
        pattern: Pattern,
        optional: bool,
        /// Tried only when the input contains this literal.
        contains: Option<String>,
        /// Only the first characters are searched.
        within: Option<usize>,
    },
    Cut {
        from: Option<usize>,
        at: String,
        before: Option<usize>,
        after: Option<usize>,
    },
    Kv {
        from: Option<usize>,
        quoted: bool,
        start: String,
        within: Option<usize>,
        min: usize,
        max: usize,
        lower: bool,
    },
    Csv {
        from: Option<usize>,
        sep: char,
        quoted: bool,
        key: Option<usize>,
        tables: FxHashMap<String, Vec<(usize, usize)>>,
    },
    Table {
        from: Option<usize>,
        key: usize,
        cases: Vec<Case>,
        /// The cases naming each id (in order), and those taking ids by prefix or default:
        /// a line's id costs one lookup, not one per case.
        by_id: FxHashMap<String, Vec<usize>>,
        others: Vec<usize>,
    },
    Cef {
        from: Option<usize>,
    },
    Leef {
        from: Option<usize>,
    },
    Pick {
        names: Vec<(Option<usize>, Vec<usize>)>,
    },
    Require {
        all: Vec<usize>,
        any: Vec<usize>,
    },
}

/// A table case ready to run; its contract, fields and conditions stay in the plan (same
/// index).
struct Case {
    ids: FxHashSet<String>,
    prefixes: Vec<String>,
    default: bool,
    input: Option<usize>,
    cond: ConditionSlots,
    regex: Option<Pattern>,
    optional: bool,
    also: Vec<Step>,
}

impl Case {
    fn takes(&self, id: &str) -> bool {
        self.default
            || self.ids.contains(id)
            || self.prefixes.iter().any(|p| id.starts_with(p.as_str()))
    }
}

/// A compiled plan. Captures live in slots: only names something reads get one, so a step
/// stores a value with an index, and a field reads it with an index (no hashing per field).
pub struct Decoder {
    plan: Plan,
    steps: Vec<Step>,
    slots: FxHashMap<String, usize>,
    /// The matcher's `all`, `any` and `none` needles, compiled once (SIMD substring search;
    /// `str::contains` set its searcher up on every call, ~130 instructions).
    finders: Vec<memmem::Finder<'static>>,
    any_finders: Vec<memmem::Finder<'static>>,
    none_finders: Vec<memmem::Finder<'static>>,
}

/// Captures by slot (always slices of the message).
type Captures<'t> = Vec<Option<&'t str>>;

fn resolve_outputs(
    contract: &mut Option<ContractPlan>,
    fields: &mut [(String, ValuePlan)],
    slots: &mut FxHashMap<String, usize>,
) {
    for (_, spec) in fields.iter_mut() {
        resolve(spec, slots);
    }
    if let Some(c) = contract.as_mut() {
        for spec in [&mut c.action, &mut c.outcome, &mut c.user]
            .into_iter()
            .flatten()
        {
            resolve(spec, slots);
        }
    }
}

/// A table case's further search: an optional regex step, or key=value pairs.
fn also_step(plan: &StepPlan, slots: &FxHashMap<String, usize>) -> Result<Step, String> {
    if let StepPlan::Kv {
        from,
        style,
        min,
        max,
        ..
    } = plan
    {
        return Ok(Step::Kv {
            from: from.as_ref().and_then(|n| slots.get(n).copied()),
            quoted: style == "quoted",
            start: String::new(),
            within: None,
            min: *min,
            max: *max,
            lower: false,
        });
    }
    let StepPlan::Regex {
        from,
        pattern,
        contains,
        within,
        ..
    } = plan
    else {
        return Err("a table case's `also` takes regex and kv steps only".to_owned());
    };
    Ok(Step::Regex {
        from: from.as_ref().and_then(|n| slots.get(n).copied()),
        pattern: Pattern::compile(pattern, slots)?,
        optional: true,
        contains: contains.clone(),
        within: *within,
    })
}

/// A decoder file's regex, compiled, with the named groups something reads as (group, slot).
///
/// A pattern that ends in a named group of "the rest" (`(?P<body>.*)`: ASA's, IOS's and F5's
/// headers) is compiled without it, and the group is the text after the match: the same
/// value, since `.*` always matches (the match of the pattern before it is the one it has
/// alone, leftmost-first). With the group in, the `regex` crate resolves the captures with
/// its bounded backtracker over the whole match, the rest of the line included: ~1.9 µs for
/// ASA's header on a 256-byte line, ~0.2 µs without it; with this and `first_chars`'s ASCII
/// check, ASA's decode fell from 89,266 to 59,164 instructions a line
/// (`scripts/callgrind_intake.py --format asa`).
struct Pattern {
    regex: Regex,
    /// Where the last match's groups are, reused from match to match (a `captures` call
    /// allocates them each time); a second thread in the same pattern gets its own.
    locations: Mutex<CaptureLocations>,
    groups: Vec<(usize, usize)>,
    /// The slot of the last group when it is `(?P<name>.*)`, and whether `.` matches a
    /// newline in it (`(?s)`); without, the rest stops at the first one.
    rest: Option<(Option<usize>, bool)>,
}

impl Pattern {
    fn compile(pattern: &str, slots: &FxHashMap<String, usize>) -> Result<Pattern, String> {
        // The interpreter reads ASCII text only (it leaves the rest to the reference), where
        // ASCII classes, `\b` and case folding match as the Unicode ones do: compiled without
        // Unicode, the lazy DFA handles `\b` and small classes (measured several times faster).
        let build = |p: &str| {
            RegexBuilder::new(p)
                .unicode(false)
                .build()
                .map_err(|e| format!("regex {pattern:?}: {e}"))
        };
        // `rest_group` parsed the whole pattern, so only the part that runs is compiled.
        let (regex, rest) = match rest_group(pattern) {
            Some((cut, name, dot_all)) => (
                build(&pattern[..cut])?,
                Some((slots.get(name).copied(), dot_all)),
            ),
            None => (build(pattern)?, None),
        };
        let groups = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.and_then(|n| slots.get(n)).map(|s| (i, *s)))
            .collect();
        Ok(Pattern {
            locations: Mutex::new(regex.capture_locations()),
            regex,
            groups,
            rest,
        })
    }

    /// Keep the named groups of the first match in `s` (an earlier capture wins); `false`
    /// when nothing matches.
    fn capture<'t>(&self, s: &'t str, caps: &mut Captures<'t>) -> bool {
        let mut held = self.locations.try_lock();
        let mut own;
        let locations = match held.as_deref_mut() {
            Ok(locations) => locations,
            Err(_) => {
                own = self.regex.capture_locations();
                &mut own
            }
        };
        let Some(m) = self.regex.captures_read(locations, s.as_bytes()) else {
            return false;
        };
        for (group, slot) in &self.groups {
            if let Some((start, end)) = locations.get(*group) {
                keep(caps, Some(*slot), &s[start..end]);
            }
        }
        if let Some((slot, dot_all)) = self.rest {
            let end = m.end();
            let tail = &s[end..];
            let tail = match memchr::memchr(b'\n', tail.as_bytes()) {
                Some(nl) if !dot_all => &tail[..nl],
                _ => tail,
            };
            keep(caps, slot, tail);
        }
        true
    }
}

/// Where a pattern's last group starts, its name and whether its `.` matches a newline, when
/// the pattern is a sequence whose last item is a named group of a greedy `.*` and nothing
/// else (read with the `regex` crate's own parser, as it compiles the pattern), after a
/// non-empty pattern.
fn rest_group(pattern: &str) -> Option<(usize, &str, bool)> {
    use regex_syntax::ast::{self, Ast};
    use regex_syntax::hir::{Class, HirKind};
    let parsed = ast::parse::Parser::new().parse(pattern).ok()?;
    let Ast::Concat(concat) = &parsed else {
        return None;
    };
    let Some(Ast::Group(group)) = concat.asts.last() else {
        return None;
    };
    let ast::GroupKind::CaptureName { name, .. } = &group.kind else {
        return None;
    };
    let cut = group.span.start.offset;
    if cut == 0 {
        return None;
    }
    // The group's meaning under the flags in force there: translate the whole pattern and
    // read its last item.
    let hir = regex_syntax::hir::translate::TranslatorBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .translate(pattern, &parsed)
        .ok()?;
    let HirKind::Concat(items) = hir.kind() else {
        return None;
    };
    let HirKind::Capture(capture) = items.last()?.kind() else {
        return None;
    };
    let HirKind::Repetition(rep) = capture.sub.kind() else {
        return None;
    };
    if rep.min != 0 || rep.max.is_some() || !rep.greedy {
        return None;
    }
    let HirKind::Class(Class::Bytes(class)) = rep.sub.kind() else {
        return None;
    };
    let ranges: Vec<(u8, u8)> = class
        .ranges()
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect();
    let dot_all = match ranges.as_slice() {
        [(0, 255)] => true,
        [(0, 9), (11, 255)] => false,
        _ => return None,
    };
    let name = &pattern[name.span.start.offset..name.span.end.offset];
    Some((cut, name, dot_all))
}

fn slot_of(slots: &mut FxHashMap<String, usize>, name: &str) -> usize {
    let n = slots.len();
    *slots.entry(name.to_owned()).or_insert(n)
}

fn resolve(spec: &mut ValuePlan, slots: &mut FxHashMap<String, usize>) {
    if let Some(map) = spec.map.as_mut() {
        map.prepare();
    }
    for alt in spec.alts.iter_mut() {
        resolve(alt, slots);
    }
    spec.name_slots = spec.names.iter().map(|n| slot_of(slots, n)).collect();
    spec.sum_slots = spec.sum.iter().map(|n| slot_of(slots, n)).collect();
    spec.cond.resolve(&mut |n| slot_of(slots, n));
}

impl Decoder {
    pub fn new(mut plan: Plan) -> Result<Self, String> {
        // Names something reads: value specs and steps' inputs.
        let mut slots: FxHashMap<String, usize> = FxHashMap::default();
        resolve_outputs(&mut plan.contract, &mut plan.fields, &mut slots);
        plan.time_slots = plan.time.iter().map(|n| slot_of(&mut slots, n)).collect();
        for step in plan.steps.iter_mut() {
            match step {
                StepPlan::Pick { names, .. } => {
                    for (name, from) in names.iter() {
                        slot_of(&mut slots, name);
                        for n in from {
                            slot_of(&mut slots, n);
                        }
                    }
                }
                StepPlan::Require { all, any, .. } => {
                    for n in all.iter().chain(any.iter()) {
                        slot_of(&mut slots, n);
                    }
                }
                _ => {}
            }
            if let StepPlan::Table { key, cases, .. } = step {
                let n = slots.len();
                slots.entry(key.clone()).or_insert(n);
                for case in cases.iter_mut() {
                    case.cond.resolve(&mut |n| slot_of(&mut slots, n));
                    if let Some(input) = &case.input {
                        slot_of(&mut slots, input);
                    }
                    resolve_outputs(&mut case.contract, &mut case.fields, &mut slots);
                    for step in &case.also {
                        if let StepPlan::Regex {
                            from: Some(name), ..
                        }
                        | StepPlan::Kv {
                            from: Some(name), ..
                        } = step
                        {
                            let n = slots.len();
                            slots.entry(name.clone()).or_insert(n);
                        }
                    }
                }
            }
            let from = match step {
                StepPlan::Regex { from, .. }
                | StepPlan::Cut { from, .. }
                | StepPlan::Kv { from, .. }
                | StepPlan::Csv { from, .. }
                | StepPlan::Table { from, .. }
                | StepPlan::Cef { from }
                | StepPlan::Leef { from }
                | StepPlan::Pick { from, .. }
                | StepPlan::Require { from, .. } => from,
            };
            if let Some(name) = from {
                let n = slots.len();
                slots.entry(name.clone()).or_insert(n);
            }
        }
        let at = |name: &Option<String>| name.as_ref().and_then(|n| slots.get(n).copied());
        let mut steps = Vec::new();
        for step in &plan.steps {
            steps.push(match step {
                StepPlan::Regex {
                    from,
                    pattern,
                    optional,
                    contains,
                    within,
                } => Step::Regex {
                    from: at(from),
                    pattern: Pattern::compile(pattern, &slots)?,
                    optional: *optional,
                    contains: contains.clone(),
                    within: *within,
                },
                StepPlan::Cut {
                    from,
                    at: needle,
                    before,
                    after,
                } => Step::Cut {
                    from: at(from),
                    at: needle.clone(),
                    before: at(before),
                    after: at(after),
                },
                StepPlan::Kv {
                    from,
                    style,
                    start,
                    within,
                    min,
                    max,
                    lower,
                } => Step::Kv {
                    from: at(from),
                    quoted: style == "quoted",
                    start: start.clone(),
                    within: *within,
                    min: *min,
                    max: *max,
                    lower: *lower,
                },
                StepPlan::Csv {
                    from,
                    sep,
                    quoted,
                    key,
                    tables,
                } => Step::Csv {
                    from: at(from),
                    sep: sep.chars().next().unwrap_or(','),
                    quoted: *quoted,
                    key: *key,
                    tables: tables
                        .iter()
                        .map(|(k, names)| {
                            let cols = names
                                .iter()
                                .enumerate()
                                .filter(|(_, n)| n.as_str() != "_")
                                .filter_map(|(i, n)| slots.get(n).map(|s| (i, *s)))
                                .collect();
                            (k.clone(), cols)
                        })
                        .collect(),
                },
                StepPlan::Cef { from } => Step::Cef { from: at(from) },
                StepPlan::Leef { from } => Step::Leef { from: at(from) },
                StepPlan::Pick { names, .. } => Step::Pick {
                    names: names
                        .iter()
                        .map(|(n, from)| {
                            (
                                slots.get(n).copied(),
                                from.iter().map(|f| slots[f]).collect(),
                            )
                        })
                        .collect(),
                },
                StepPlan::Require { all, any, .. } => Step::Require {
                    all: all.iter().map(|n| slots[n]).collect(),
                    any: any.iter().map(|n| slots[n]).collect(),
                },
                StepPlan::Table { from, key, cases } => Step::Table {
                    from: at(from),
                    key: slots[key],
                    by_id: {
                        let mut by_id: FxHashMap<String, Vec<usize>> = FxHashMap::default();
                        for (i, c) in cases.iter().enumerate() {
                            for id in &c.ids {
                                let list = by_id.entry(id.clone()).or_default();
                                if list.last() != Some(&i) {
                                    list.push(i);
                                }
                            }
                        }
                        by_id
                    },
                    others: cases
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.default || !c.prefixes.is_empty())
                        .map(|(i, _)| i)
                        .collect(),
                    cases: cases
                        .iter()
                        .map(|c| {
                            Ok(Case {
                                ids: c.ids.iter().cloned().collect(),
                                prefixes: c.prefixes.clone(),
                                default: c.default,
                                input: c.input.as_ref().map(|n| slots[n]),
                                cond: c.cond.slots.clone(),
                                regex: match &c.pattern {
                                    Some(p) => Some(Pattern::compile(p, &slots)?),
                                    None => None,
                                },
                                optional: c.optional,
                                also: c
                                    .also
                                    .iter()
                                    .map(|a| also_step(a, &slots))
                                    .collect::<Result<_, String>>()?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                },
            });
        }
        let compile = |needles: &[String]| -> Vec<memmem::Finder<'static>> {
            needles
                .iter()
                .map(|n| memmem::Finder::new(n.as_bytes()).into_owned())
                .collect()
        };
        let finders = compile(&plan.matcher.all);
        let any_finders = compile(&plan.matcher.any);
        let none_finders = compile(&plan.matcher.none);
        Ok(Decoder {
            plan,
            steps,
            slots,
            finders,
            any_finders,
            none_finders,
        })
    }

    pub fn from_json(json: &str) -> Result<Self, String> {
        let plan: Plan = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Decoder::new(plan)
    }

    /// Every field name a decode can set (for the caller to prepare once).
    pub fn field_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.plan.observer.iter().map(|(k, _)| k.as_str()).collect();
        names.extend([
            "event.kind",
            "event.category",
            "event.type",
            "event.action",
            "event.outcome",
            "user.name",
        ]);
        names.extend(self.plan.fields.iter().map(|(k, _)| k.as_str()));
        for step in &self.plan.steps {
            if let StepPlan::Table { cases, .. } = step {
                for case in cases {
                    names.extend(case.fields.iter().map(|(k, _)| k.as_str()));
                }
            }
        }
        names
    }

    pub fn decode<'a>(&'a self, text: &'a str) -> Outcome<'a> {
        if !text.is_ascii() {
            return Outcome::Defer;
        }
        let found = |f: &memmem::Finder<'static>| f.find(text.as_bytes()).is_some();
        if !self.finders.iter().all(found)
            || (!self.any_finders.is_empty() && !self.any_finders.iter().any(found))
            || self.none_finders.iter().any(found)
        {
            return Outcome::NotMine;
        }
        let mut caps: Captures<'a> = vec![None; self.slots.len()];
        // (step, case) of each message-id table that chose a case.
        let mut chosen: Vec<(usize, usize)> = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            if let Step::Table {
                from,
                key,
                cases,
                by_id,
                others,
            } = step
            {
                if let Some(c) = table_step(*from, *key, cases, (by_id, others), text, &mut caps) {
                    for also in &cases[c].also {
                        run_step(also, &self.slots, text, &mut caps);
                    }
                    chosen.push((i, c));
                }
            } else if let Step::Cef { from } = step {
                let Some(s) = input(*from, text, &caps) else {
                    return Outcome::NotMine;
                };
                if s.contains('\\') {
                    return Outcome::Defer; // escapes: values that are not slices of the text
                }
                let Some(pairs) = cef::captures(s) else {
                    return Outcome::NotMine;
                };
                for (k, v) in pairs {
                    keep(&mut caps, self.slots.get(k).copied(), v);
                }
            } else if let Step::Leef { from } = step {
                let Some(s) = input(*from, text, &caps) else {
                    return Outcome::NotMine;
                };
                let Ok(found) = cef::leef_captures(s) else {
                    return Outcome::Defer;
                };
                let Some(pairs) = found else {
                    return Outcome::NotMine;
                };
                for (k, v) in pairs {
                    keep(&mut caps, self.slots.get(k).copied(), v);
                }
            } else if let Step::Csv {
                from, quoted: true, ..
            } = step
            {
                if input(*from, text, &caps).is_some_and(|s| s.contains('"')) {
                    return Outcome::Defer; // quoted fields: Python's csv module reads them
                }
                if !run_step(step, &self.slots, text, &mut caps) {
                    return Outcome::NotMine;
                }
            } else if !run_step(step, &self.slots, text, &mut caps) {
                return Outcome::NotMine;
            }
        }
        let mut out: Vec<(&'a str, Value<'a>)> = Vec::new();
        let time = self.plan.time_slots.iter().map(|s| caps[*s]).collect();
        for (key, value) in &self.plan.observer {
            out.push((key.as_str(), Value::Text(Cow::Borrowed(value.as_str()))));
        }
        outputs(
            self.plan.contract.as_ref(),
            &self.plan.fields,
            &caps,
            &mut out,
        );
        for (step, case) in chosen {
            if let StepPlan::Table { cases, .. } = &self.plan.steps[step] {
                let case = &cases[case];
                outputs(case.contract.as_ref(), &case.fields, &caps, &mut out);
            }
        }
        Outcome::Fields(out, time)
    }
}

/// A contract, then fields, in the reference's order.
fn outputs<'a>(
    c: Option<&'a ContractPlan>,
    fields: &'a [(String, ValuePlan)],
    caps: &Captures<'a>,
    out: &mut Vec<(&'a str, Value<'a>)>,
) {
    if let Some(c) = c {
        contract(c, caps, out);
    }
    for (key, spec) in fields {
        if let Some(v) = value(spec, caps, out) {
            out.push((key.as_str(), v));
        }
    }
}

/// A message-id table: the first case that takes the key's value and whose pattern matches
/// (or that has none, or is optional); its captures are kept. `None`: no case (still ours).
fn table_step<'t>(
    from: Option<usize>,
    key: usize,
    cases: &'t [Case],
    (by_id, others): (&FxHashMap<String, Vec<usize>>, &[usize]),
    text: &'t str,
    caps: &mut Captures<'t>,
) -> Option<usize> {
    let id = caps[key]?;
    let s = input(from, text, caps);
    let direct: &[usize] = by_id.get(id).map_or(&[], Vec::as_slice);
    let (mut d, mut o) = (0, 0);
    loop {
        // The next case taking the id, in file order, from the two lists.
        while o < others.len() && !cases[others[o]].takes(id) {
            o += 1;
        }
        let i = match (direct.get(d), others.get(o)) {
            (None, None) => return None,
            (Some(&a), Some(&b)) if a <= b => {
                d += 1;
                o += usize::from(a == b);
                a
            }
            (_, Some(&b)) => {
                o += 1;
                b
            }
            (Some(&a), None) => {
                d += 1;
                a
            }
        };
        let case = &cases[i];
        if !case.cond.hold(caps) {
            continue;
        }
        let Some(pattern) = &case.regex else {
            return Some(i);
        };
        let s = match case.input {
            Some(slot) => caps[slot],
            None => s,
        };
        if s.is_some_and(|s| pattern.capture(s, caps)) {
            return Some(i);
        }
        if case.optional {
            return Some(i);
        }
    }
}

/// The first `n` characters (Python's `s[:n]`). The interpreter's text is ASCII, where they
/// are the first `n` bytes: checked (SIMD) rather than counted a character at a time, which
/// cost FortiGate's `within = 200` ~2,400 instructions a line.
fn first_chars(s: &str, n: usize) -> &str {
    match s.as_bytes().get(..n) {
        None => s,
        Some(head) if head.is_ascii() => &s[..n],
        Some(_) => s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i]),
    }
}

fn input<'t>(from: Option<usize>, text: &'t str, caps: &Captures<'t>) -> Option<&'t str> {
    match from {
        None => Some(text),
        Some(slot) => caps[slot],
    }
}

/// Store a capture unless the slot already holds one (an earlier capture wins).
fn keep<'t>(caps: &mut Captures<'t>, slot: Option<usize>, value: &'t str) {
    if let Some(slot) = slot {
        caps[slot].get_or_insert(value);
    }
}

/// `key=value` pairs of a `kv` step, in the reference dict's order with its values.
fn kv_step<'t>(s: &'t str, quoted: bool, max: usize) -> Option<Vec<(&'t str, &'t str)>> {
    let mut pairs: Vec<(&'t str, &'t str)> = Vec::new();
    if quoted {
        // The reference's dict is built from the last pair, so the first of a key wins.
        let found = kv::pairs(s, max)?;
        // Sized once: grown pair by pair it rehashed ~1,800 instructions a FortiGate line.
        let mut seen: FxHashMap<&str, usize> =
            FxHashMap::with_capacity_and_hasher(found.len(), Default::default());
        pairs.reserve(found.len());
        for (k, v) in found.iter().rev() {
            match seen.get(k) {
                Some(&i) => pairs[i].1 = v,
                None => {
                    seen.insert(k, pairs.len());
                    pairs.push((k, v));
                }
            }
        }
    } else {
        let mut seen: FxHashMap<&str, ()> =
            FxHashMap::with_capacity_and_hasher(max.min(32), Default::default());
        for token in s.split(' ') {
            if let Some((k, v)) = token.split_once('=') {
                if seen.insert(k, ()).is_none() {
                    pairs.push((k, v));
                    if pairs.len() == max {
                        break;
                    }
                }
            }
        }
    }
    Some(pairs)
}

fn run_step<'t>(
    step: &'t Step,
    slots: &FxHashMap<String, usize>,
    text: &'t str,
    caps: &mut Captures<'t>,
) -> bool {
    match step {
        Step::Regex {
            from,
            pattern,
            optional,
            contains,
            within,
        } => {
            let Some(mut s) = input(*from, text, caps) else {
                return *optional;
            };
            if contains.as_deref().is_some_and(|lit| !s.contains(lit)) {
                return *optional;
            }
            if let Some(n) = within {
                s = first_chars(s, *n);
            }
            if !pattern.capture(s, caps) {
                return *optional;
            }
            true
        }
        Step::Cut {
            from,
            at,
            before,
            after,
        } => {
            let Some(s) = input(*from, text, caps) else {
                return false;
            };
            let Some(pos) = s.find(at.as_str()) else {
                return false;
            };
            keep(caps, *before, &s[..pos]);
            keep(caps, *after, &s[pos + at.len()..]);
            true
        }
        Step::Kv {
            from,
            quoted,
            start,
            within,
            min,
            max,
            lower,
        } => {
            let Some(mut s) = input(*from, text, caps) else {
                return false;
            };
            if !start.is_empty() {
                let head = within.map_or(s, |n| first_chars(s, n));
                let Some(at) = head.find(start.as_str()) else {
                    return false;
                };
                s = &s[at..];
            }
            let Some(pairs) = kv_step(s, *quoted, *max) else {
                return false;
            };
            if pairs.len() < *min {
                return false;
            }
            for (k, v) in pairs {
                let slot = if *lower {
                    slots.get(&k.to_lowercase())
                } else {
                    slots.get(k)
                };
                keep(caps, slot.copied(), v);
            }
            true
        }
        Step::Csv {
            from,
            sep,
            key,
            tables,
            ..
        } => {
            let Some(s) = input(*from, text, caps) else {
                return false;
            };
            let row: Vec<&'t str> = s.split(*sep).collect();
            let cols = match key {
                None => tables.get(""),
                Some(k) => match row.get(*k) {
                    None => return false,
                    Some(v) => tables.get(*v),
                },
            };
            let Some(cols) = cols else {
                return false;
            };
            // A row's columns win over earlier captures; a short row's missing ones are gone.
            for (col, slot) in cols {
                caps[*slot] = row.get(*col).copied();
            }
            true
        }
        Step::Pick { names } => {
            for (slot, from) in names {
                // The first non-empty, else the last one's value (Python's `a or b`).
                let mut v = None;
                for f in from {
                    v = caps[*f];
                    if v.is_some_and(|s| !s.is_empty()) {
                        break;
                    }
                }
                if let Some(v) = v {
                    keep(caps, *slot, v);
                }
            }
            true
        }
        Step::Require { all, any } => {
            all.iter().all(|s| caps[*s].is_some())
                && (any.is_empty() || any.iter().any(|s| caps[*s].is_some()))
        }
        Step::Table { .. } | Step::Cef { .. } | Step::Leef { .. } => true, // run by `decode`
    }
}

fn value<'a>(
    spec: &'a ValuePlan,
    caps: &Captures<'a>,
    out: &[(&'a str, Value<'a>)],
) -> Option<Value<'a>> {
    if !spec.alts.is_empty() {
        return spec.alts.iter().find_map(|alt| value(alt, caps, out));
    }
    // The conditions hold for a constant or a sum as for a capture.
    if !spec.cond.hold(caps, out) {
        return None;
    }
    if let Some(text) = &spec.text {
        return Some(Value::Text(Cow::Borrowed(text.as_str())));
    }
    if let Some(i) = spec.constant {
        return Some(Value::Const(i));
    }
    if !spec.sum_slots.is_empty() {
        // At most 8 numbers of at most 18 digits: the sum fits 64 bits.
        let mut total: i64 = 0;
        for slot in &spec.sum_slots {
            total += as_int(caps[*slot]?)?;
        }
        return Some(Value::Int(total));
    }
    let mut v: Option<&'a str> = None;
    if spec.skip.is_empty() {
        // The first non-empty capture, else the last one's value (Python's `a or b`).
        for slot in &spec.name_slots {
            v = caps[*slot];
            if v.is_some_and(|s| !s.is_empty()) {
                break;
            }
        }
    } else {
        // The first capture neither empty nor a placeholder.
        v = spec
            .name_slots
            .iter()
            .filter_map(|slot| caps[*slot])
            .find(|c| !c.is_empty() && !spec.skip.iter().any(|k| k == c));
    }
    let mut v: &'a str = v?;
    if v.is_empty() && !spec.keep_empty {
        return None;
    }
    if let Some(n) = spec.first {
        v = first_chars(v, n);
    }
    if let Some(strip) = &spec.strip {
        v = v.trim_end_matches(|c| strip.contains(c));
    }
    if let Some(map) = &spec.map {
        match (lookup(map, v), spec.otherwise.as_deref()) {
            (Some(out), _) => v = out,
            (None, Some("raw")) => {}
            (None, Some(text)) => v = text,
            (None, None) => return None,
        }
    }
    convert(&spec.convert, v)
}

fn lookup<'m>(map: &'m MapPlan, v: &str) -> Option<&'m str> {
    let v = map.norm(v);
    if map.how == "exact" {
        return map.exact.get(&v).map(|&i| map.pairs[i].1.as_str());
    }
    map.normed
        .iter()
        .position(|a| v.contains(a.as_str()))
        .map(|i| map.pairs[i].1.as_str())
}

const IANA_TRANSPORT: [(&str, &str); 6] = [
    ("1", "icmp"),
    ("6", "tcp"),
    ("17", "udp"),
    ("58", "ipv6-icmp"),
    ("47", "gre"),
    ("50", "esp"),
];

/// A dotted quad the reference's `ipaddress` accepts and writes back unchanged (decimal
/// octets up to 255, no leading zeros): the common case of an `ip` conversion, answered here.
pub(crate) fn is_plain_ipv4(v: &str) -> bool {
    plain_ipv4(v).is_some()
}

/// The address of a plain dotted quad ([`is_plain_ipv4`]), `None` for any other text.
pub(crate) fn plain_ipv4(v: &str) -> Option<u32> {
    // Octet by octet, each one to three digits read in line: on every flow's and firewall
    // line's addresses, a `split('.')` and a `parse` per octet cost several times this, and a
    // loop over the bytes testing each for a dot, a digit and a leading zero twice this.
    let b = v.as_bytes();
    let digit = |i: usize| b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9);
    let mut i = 0;
    let mut addr = 0u32;
    for k in 0..4 {
        let first = digit(i)?;
        let mut octet = u32::from(first);
        i += 1;
        if let Some(d) = digit(i) {
            if first == 0 {
                return None; // a leading zero
            }
            octet = octet * 10 + u32::from(d);
            i += 1;
            if let Some(d) = digit(i) {
                octet = octet * 10 + u32::from(d);
                i += 1;
                if octet > 255 {
                    return None;
                }
            }
        }
        addr = addr << 8 | octet;
        if k < 3 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == b.len()).then_some(addr)
}

pub(crate) fn as_int(v: &str) -> Option<i64> {
    if v.is_empty() || v.len() >= 19 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn convert<'a>(how: &str, v: &'a str) -> Option<Value<'a>> {
    match how {
        "string" => Some(Value::Text(Cow::Borrowed(v))),
        "lower" => Some(Value::Text(Cow::Owned(v.to_lowercase()))),
        "upper" => Some(Value::Text(Cow::Owned(v.to_uppercase()))),
        "int" => as_int(v).map(Value::Int),
        "port" => as_int(v).filter(|n| *n <= 65535).map(Value::Int),
        "list" => Some(Value::Texts(smallvec![v])),
        "transport" => {
            let mut low = v.to_lowercase();
            if let Some((name, port)) = low.split_once('/') {
                if !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) {
                    low = name.to_owned();
                }
            }
            let mapped = IANA_TRANSPORT
                .iter()
                .find(|(n, _)| *n == low)
                .map(|(_, t)| *t);
            Some(Value::Text(match mapped {
                Some(t) => Cow::Borrowed(t),
                None => Cow::Owned(low),
            }))
        }
        "ip" if is_plain_ipv4(v) => Some(Value::Text(Cow::Borrowed(v))),
        other => DEFERRED
            .iter()
            .find(|d| **d == other)
            .map(|name| Value::Converted(name, v)),
    }
}

fn network_verdict<'a>(action: Value<'a>, out: &mut Vec<(&'a str, Value<'a>)>) {
    let denied = matches!(&action, Value::Text(t) if matches!(t.as_ref(), "deny" | "drop" | "reject" | "block"));
    out.push(("event.category", Value::Texts(smallvec!["network"])));
    out.push((
        "event.type",
        Value::Texts(smallvec![
            "connection",
            if denied { "denied" } else { "allowed" },
        ]),
    ));
    out.push(("event.action", action));
    out.push((
        "event.outcome",
        Value::Text(Cow::Borrowed(if denied { "failure" } else { "success" })),
    ));
}

fn contract<'a>(c: &'a ContractPlan, caps: &Captures<'a>, out: &mut Vec<(&'a str, Value<'a>)>) {
    let (action, outcome, user) = {
        let part = |p: &'a Option<ValuePlan>| p.as_ref().and_then(|spec| value(spec, caps, out));
        (part(&c.action), part(&c.outcome), part(&c.user))
    };
    match c.kind.as_str() {
        "firewall" => match action {
            Some(action) => network_verdict(action, out),
            None => {
                if let Some(default) = c.default_action.as_deref().filter(|d| !d.is_empty()) {
                    out.push(("event.category", Value::Texts(smallvec!["network"])));
                    out.push(("event.type", Value::Texts(smallvec!["connection"])));
                    out.push(("event.action", Value::Text(Cow::Borrowed(default))));
                }
            }
        },
        "authentication" => {
            let (a, o, u) = (action, outcome, user);
            if let (Some(a), Some(o)) = (a, o) {
                out.push(("event.category", Value::Texts(smallvec!["authentication"])));
                out.push(("event.type", Value::Texts(smallvec![c.auth_type.as_str()])));
                out.push(("event.action", a));
                out.push(("event.outcome", o));
                if let Some(u) = u.filter(truthy) {
                    out.push(("user.name", u));
                }
            }
        }
        "config_change" => {
            let u = user;
            out.push(("event.category", Value::Texts(smallvec!["configuration"])));
            out.push(("event.type", Value::Texts(smallvec!["change"])));
            out.push(("event.action", Value::Text(Cow::Borrowed("config_change"))));
            if let Some(u) = u.filter(truthy) {
                out.push(("user.name", u));
            }
        }
        _ => {
            out.push(("event.kind", Value::Text(Cow::Borrowed("alert"))));
            out.push((
                "event.category",
                Value::Texts(smallvec!["intrusion_detection"]),
            ));
            out.push(("event.type", Value::Texts(smallvec!["info"])));
        }
    }
}

/// Python's truth of the optional user a contract reads (`if user:`).
fn truthy(v: &Value<'_>) -> bool {
    match v {
        Value::Text(t) => !t.is_empty(),
        Value::Int(n) => *n != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_dotted_quads_are_told_from_what_only_the_reference_reads() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "10.0.0.1",
            "203.0.113.7",
        ] {
            assert!(is_plain_ipv4(ip), "{ip}");
        }
        for ip in [
            "",
            ".",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1.2.3.4.5",
            "1..3.4",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.0004",
            "1.2.3.a",
            "1.2.3.4 ",
            "::1",
            "1.2.3.1000",
            "99999999999.1.1.1",
        ] {
            assert!(!is_plain_ipv4(ip), "{ip}");
        }
    }

    const ASA_HEAD: &str = r"(?s)^%(?P<family>ASA|FTD|PIX|FWSM)-(?:\w+-)?(?P<severity>[0-7])-(?P<code>\d{6}): ?(?P<body>.*)";
    const IOS_HEAD: &str = r"(?s)^%(?P<code>(?P<facility>[A-Z][A-Z0-9_]*(?:-[A-Z0-9_]+)?)-(?P<severity>[0-7])-(?P<mnemonic>[A-Z0-9_]+)): ?(?P<body>.*)";
    const F5_HEAD: &str = r"(?s)^(?:(?P<level>\w+) (?P<proc>[\w\-./]+)\[(?P<pid>\d+)\]: )?(?P<code>[0-9a-f]{8}):(?P<severity>[0-7]): (?P<body>.*)";

    /// Every name in the pattern, in group order, with a slot each.
    fn all_slots(pattern: &str) -> FxHashMap<String, usize> {
        let regex = Regex::new(pattern).unwrap();
        let names = regex.capture_names().flatten();
        names.enumerate().map(|(i, n)| (n.to_owned(), i)).collect()
    }

    /// The captures the compiled pattern keeps, and those the whole pattern's match has.
    fn both<'t>(pattern: &str, text: &'t str) -> (Captures<'t>, Captures<'t>) {
        let slots = all_slots(pattern);
        let compiled = Pattern::compile(pattern, &slots).unwrap();
        let mut got = vec![None; slots.len()];
        compiled.capture(text, &mut got);
        let whole = RegexBuilder::new(pattern).unicode(false).build().unwrap();
        let mut want = vec![None; slots.len()];
        if let Some(m) = whole.captures(text.as_bytes()) {
            for (name, slot) in &slots {
                want[*slot] = m.name(name).map(|g| &text[g.range()]);
            }
        }
        (got, want)
    }

    #[test]
    fn a_last_group_of_the_rest_is_cut_off_the_pattern() {
        for pattern in [ASA_HEAD, IOS_HEAD, F5_HEAD] {
            let (cut, name, dot_all) = rest_group(pattern).unwrap();
            assert_eq!((name, dot_all), ("body", true));
            assert_eq!(&pattern[cut..], "(?P<body>.*)");
        }
        assert_eq!(
            rest_group(r"^a (?P<x>.*)").map(|(_, n, d)| (n, d)),
            Some(("x", false))
        );
    }

    #[test]
    fn a_pattern_whose_last_group_is_not_the_plain_rest_is_kept_whole() {
        for pattern in [
            r"(?P<x>.*)",       // nothing before it
            r"a(?P<x>.*?)",     // lazy
            r"a(?P<x>.+)",      // at least one
            r"a(?P<x>.*)$",     // not last
            r"a|b(?P<x>.*)",    // an alternative's
            r"a(?P<x>[^ ]*)",   // not any character
            r"a\(?P<x>.*\)",    // escaped parentheses: no group
            r"a(?i:(?P<x>.*))", // inside a group
            r"a(?:(?P<x>.*))",  // inside a group
        ] {
            assert_eq!(rest_group(pattern), None, "{pattern}");
        }
        // of two groups of the rest, the last is cut
        assert_eq!(
            rest_group(r"a(?P<x>.*)(?P<y>.*)").map(|(_, n, _)| n),
            Some("y")
        );
    }

    #[test]
    fn the_rest_without_dot_all_stops_at_a_newline_as_the_whole_pattern_does() {
        let (got, want) = both(r"^(?P<a>\w+): (?P<rest>.*)", "key: value\nnext line");
        assert_eq!(got, want);
        assert_eq!(got[1], Some("value"));
    }

    #[test]
    fn asa_header_captures_are_the_whole_patterns() {
        let line = "%ASA-4-106023: Deny tcp src outside:198.51.100.7/4455 dst inside:10.0.0.5/22";
        let (got, want) = both(ASA_HEAD, line);
        assert_eq!(got, want);
        assert_eq!(
            got[3],
            Some("Deny tcp src outside:198.51.100.7/4455 dst inside:10.0.0.5/22")
        );
    }

    proptest::proptest! {
        /// The pattern with its group of the rest cut off keeps the captures the whole
        /// pattern's leftmost-first match has (the oracle), on headers and near-headers.
        #[test]
        fn a_cut_pattern_captures_what_the_whole_one_does(
            head in "(%|%ASA-|%ASA-sys-|%FTD-6-|%LINK-3-UPDOWN|err tmm\\[12\\]: |0{8}|01[0-9a-f]{6})?",
            tail in "[-0-7: a-z%\n]{0,24}",
        ) {
            let text = format!("{head}{tail}");
            for pattern in [ASA_HEAD, IOS_HEAD, F5_HEAD, r"^(?P<a>[a-z]+)-?(?P<rest>.*)"] {
                let (got, want) = both(pattern, &text);
                proptest::prop_assert_eq!(got, want, "{} on {:?}", pattern, text);
            }
        }
    }

    proptest::proptest! {
        /// What `is_plain_ipv4` accepts is what std's parser accepts (it, too, refuses
        /// leading zeros), on text made of digits and dots.
        #[test]
        fn is_plain_ipv4_accepts_what_std_parses(v in "[0-9.]{0,17}|[0-2]?[0-9]{1,2}(\\.[0-2]?[0-9]{1,2}){3}") {
            proptest::prop_assert_eq!(is_plain_ipv4(&v), v.parse::<std::net::Ipv4Addr>().is_ok(), "{}", v);
            proptest::prop_assert_eq!(plain_ipv4(&v), v.parse::<std::net::Ipv4Addr>().ok().map(u32::from), "{}", v);
        }
    }
}
