//! Sigma detection matching on the compiled form `appliance/correlate/compile.py` emits.
//!
//! The Python closures built from the same form are the reference; this evaluator gives the
//! same answer or says it cannot be sure ([`Undecided`]) and the caller asks the reference.
//! It declines where Python's own string and number semantics would need re-implementing
//! (and could drift with a Unicode or CPython version): `str(float)`, `str(list)`, lower-casing
//! non-ASCII text against non-ASCII literals, regular expressions over non-ASCII text (RE2's
//! `\d`, `\w`, `\s` and `\b` are ASCII, the `regex` crate's Unicode), float() of non-ASCII
//! text, integers beyond 64 bits. Events are ASCII nearly always, so nearly every answer is
//! given here.
//!
//! Pure Rust, no interpreter: the extension binds it in `python.rs`, `cargo test` and the
//! property tests drive it directly.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::IpAddr;

use memchr::memmem;
use regex::{Regex, RegexBuilder};
use rustc_hash::FxHashSet;
use serde_json::Value as Json;

use crate::decoders::plain_ipv4;

/// A field value as Python holds it (the subset the rules can reason about).
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    List(Vec<Val<'a>>),
    /// Anything else (a tuple, a dict, bytes, an integer beyond 64 bits): only its presence
    /// is known here.
    Other,
}

/// The answer depends on Python semantics this evaluator does not reproduce: ask the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecided;

type Answer = Result<bool, Undecided>;

/// An event's fields, looked up by the index the ruleset gave each field name.
pub trait Fields {
    /// `None` when the field is missing (Python's `dict.get` default), `Some(Val::Null)` for
    /// a present `None`.
    fn get(&self, field: usize) -> Option<Val<'_>>;
}

/// What the shape of a batch's records tells of a field before any record is read (a flow's
/// template fixes which keys its records have, and the exporter's values they share).
pub enum Known<'a> {
    /// Not a key of the shape: missing from every record.
    Missing,
    /// The same value in every record.
    Value(Val<'a>),
    /// A key of every record, never None there, its value each record's own.
    Present,
}

/// A shape's fields, looked up by the ruleset's field indices.
pub trait ShapeFields {
    fn known(&self, field: usize) -> Known<'_>;
}

/// A shape's fields read as one record's, noting whether a record's own value was asked
/// for (a [`Known::Present`] field reads as [`Val::Other`]; an answer that read one is not the
/// shape's).
struct ShapeRead<'s> {
    shape: &'s dyn ShapeFields,
    own: std::cell::Cell<bool>,
}

impl ShapeRead<'_> {
    /// What `ask` answers over the shape, when it read nothing of a record's own.
    fn answer(shape: &dyn ShapeFields, ask: impl FnOnce(&dyn Fields) -> Answer) -> Option<bool> {
        let read = ShapeRead {
            shape,
            own: std::cell::Cell::new(false),
        };
        let got = ask(&read).ok();
        got.filter(|_| !read.own.get())
    }
}

impl Fields for ShapeRead<'_> {
    fn get(&self, field: usize) -> Option<Val<'_>> {
        match self.shape.known(field) {
            Known::Missing => None,
            Known::Value(v) => Some(v),
            Known::Present => {
                self.own.set(true);
                Some(Val::Other)
            }
        }
    }
}

/// Why the compiled form could not be loaded (the whole ruleset) or one rule could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, FormError> {
    Err(FormError(msg.into()))
}

// ------------------------------------------------------------------------------- the form

#[derive(Debug)]
enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Eq {
        field: usize,
        exact: FxHashSet<String>,
        lowered: FxHashSet<String>,
        ascii: bool,
    },
    Cidr {
        field: usize,
        nets: Nets,
    },
    Null(usize),
    Exists(usize, bool),
    Ref(usize, usize),
    Kw {
        needle: Box<Lit>,
        cased: bool,
    },
    Msg(Test),
    Field(usize, Test),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Eq,
    All,
    Contains,
    Starts,
    Ends,
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Lt,
    Lte,
    Gt,
    Gte,
    Neq,
}

#[derive(Debug)]
enum Test {
    Any(Vec<Test>),
    Str {
        kind: Kind,
        lit: Box<Lit>,
        cased: bool,
    },
    Glob {
        rx: Regex,
        cased: bool,
    },
    Bool(bool),
    Num {
        num: Num,
        text: String,
    },
    Cmp {
        op: CmpOp,
        num: Num,
    },
    Re {
        rx: Regex,
    },
    Net(Nets),
}

/// A literal with its substring finder (memchr's SIMD search) and whether it is ASCII.
#[derive(Debug)]
struct Lit {
    text: String,
    finder: memmem::Finder<'static>,
    ascii: bool,
}

impl Lit {
    fn new(text: &str) -> Self {
        Lit {
            text: text.to_owned(),
            finder: memmem::Finder::new(text.as_bytes()).into_owned(),
            ascii: text.is_ascii(),
        }
    }

    fn test(&self, kind: Kind, hay: &str) -> bool {
        match kind {
            Kind::Eq => hay == self.text,
            Kind::All => true,
            Kind::Contains => self.finder.find(hay.as_bytes()).is_some(),
            Kind::Starts => hay.starts_with(self.text.as_str()),
            Kind::Ends => hay.ends_with(self.text.as_str()),
        }
    }
}

impl Cond {
    /// A rough rank of what evaluating this costs an event, to order `and` / `or` by: a
    /// field's presence or a set lookup, a number, a text compared, an address parsed, a text
    /// searched or matched (the message's most of all).
    fn cost(&self) -> u8 {
        match self {
            Cond::Null(_) | Cond::Exists(..) => 0,
            Cond::Eq { .. } => 1,
            Cond::Ref(..) => 2,
            Cond::Field(_, t) => t.cost(),
            Cond::Cidr { .. } => 3,
            Cond::Kw { .. } | Cond::Msg(_) => 5,
            Cond::Not(k) => k.cost(),
            Cond::And(kids) | Cond::Or(kids) => kids.iter().map(Cond::cost).max().unwrap_or(0),
        }
    }
}

impl Test {
    fn cost(&self) -> u8 {
        match self {
            Test::Bool(_) | Test::Num { .. } | Test::Cmp { .. } => 1,
            Test::Str { kind, .. } => match kind {
                Kind::Eq | Kind::All | Kind::Starts | Kind::Ends => 2,
                Kind::Contains => 4,
            },
            Test::Net(_) => 3,
            Test::Glob { .. } | Test::Re { .. } => 4,
            Test::Any(kids) => kids.iter().map(Test::cost).max().unwrap_or(0),
        }
    }
}

/// IP networks as (base, mask), IPv4 and IPv6 apart: most addresses tested are IPv4, and a
/// 32-bit test of the IPv4 networks alone is a fraction of one over every network in 128 bits.
#[derive(Debug, Clone)]
struct Nets {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Nets {
    fn parse(list: &Json) -> Result<Self, FormError> {
        let mut out = Nets {
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for item in strings(list)? {
            let (addr, len) = item
                .split_once('/')
                .ok_or_else(|| FormError(format!("network {item:?} has no prefix length")))?;
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| FormError(format!("bad network address {item:?}")))?;
            let len: u32 = len
                .parse()
                .map_err(|_| FormError(format!("bad prefix length {item:?}")))?;
            let (v6, value, bits) = ip_value(addr);
            if len > bits {
                return err(format!("prefix longer than the address {item:?}"));
            }
            let mask = if len == 0 {
                0
            } else {
                (u128::MAX << (128 - len)) >> (128 - bits)
            };
            if v6 {
                out.v6.push((value & mask, mask));
            } else {
                // an IPv4 value and mask fit 32 bits (`ip_value`, `bits` = 32)
                out.v4.push(((value & mask) as u32, mask as u32));
            }
        }
        Ok(out)
    }

    fn contains(&self, text: &str) -> Answer {
        // Most addresses are plain dotted quads, read at a fraction of std's parser's cost
        // (which, with the scope check, was most of a flow's `|cidr` test).
        if let Some(v4) = plain_ipv4(text) {
            return Ok(self.holds4(v4));
        }
        if text.contains('%') {
            return Err(Undecided); // a scoped IPv6 address: Python's parser accepts them
        }
        Ok(match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => self.holds4(u32::from(a)),
            Ok(IpAddr::V6(a)) => {
                let value = u128::from(a);
                self.v6.iter().any(|&(base, mask)| value & mask == base)
            }
            Err(_) => false,
        })
    }

    fn holds4(&self, value: u32) -> bool {
        self.v4.iter().any(|&(base, mask)| value & mask == base)
    }
}

fn ip_value(addr: IpAddr) -> (bool, u128, u32) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (true, u128::from(a), 128),
    }
}

// ------------------------------------------------------------------------------- loading

/// Field names to indices, shared by every rule of a ruleset.
#[derive(Debug, Default)]
pub struct FieldTable {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl FieldTable {
    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

fn arr(v: &Json) -> Result<&Vec<Json>, FormError> {
    v.as_array()
        .ok_or_else(|| FormError(format!("expected a list, got {v}")))
}

fn string(v: &Json) -> Result<&str, FormError> {
    v.as_str()
        .ok_or_else(|| FormError(format!("expected text, got {v}")))
}

fn strings(v: &Json) -> Result<Vec<&str>, FormError> {
    arr(v)?.iter().map(string).collect()
}

fn boolean(v: &Json) -> Result<bool, FormError> {
    v.as_bool()
        .ok_or_else(|| FormError(format!("expected true or false, got {v}")))
}

fn at(node: &[Json], i: usize) -> Result<&Json, FormError> {
    node.get(i)
        .ok_or_else(|| FormError(format!("node {node:?} is too short")))
}

fn number(v: &Json) -> Result<Num, FormError> {
    if let Some(i) = v.as_i64() {
        return Ok(Num::Int(i));
    }
    if v.is_u64() {
        return err("integer beyond 64 bits");
    }
    v.as_f64()
        .map(Num::Float)
        .ok_or_else(|| FormError(format!("expected a number, got {v}")))
}

/// Nesting deeper than this is refused (recursion depth stays bounded on hostile input).
const MAX_DEPTH: usize = 64;
/// The size limit for one compiled regular expression (RE2's default program budget is
/// similar); larger patterns stay with the reference.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

fn build_regex(pattern: &str) -> Result<Regex, FormError> {
    // Syntax the two engines read differently: class set operations (`&&`, `--`, `~~`),
    // word-edge escapes, `{,n}`. RE2 accepted the pattern; the reference evaluates it.
    for odd in ["&&", "--", "~~", "\\<", "\\>", "\\b{", "{,"] {
        if pattern.contains(odd) {
            return err(format!("pattern syntax read differently here ({odd})"));
        }
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| FormError(format!("regex: {e}")))
}

fn condition(v: &Json, fields: &mut FieldTable, depth: usize) -> Result<Cond, FormError> {
    if depth > MAX_DEPTH {
        return err("condition nested too deeply");
    }
    let node = arr(v)?;
    let tag = string(at(node, 0)?)?;
    let mut field =
        |i: usize| -> Result<usize, FormError> { Ok(fields.intern(string(at(node, i)?)?)) };
    Ok(match tag {
        "and" | "or" => {
            let mut kids = Vec::new();
            for k in arr(at(node, 1)?)? {
                kids.push(condition(k, fields, depth + 1)?);
            }
            // Cheap tests first: `and` stops at the first false, `or` at the first true, and
            // which test stops it changes nothing but the cost (a test the core cannot decide
            // hands the rule to the reference, which evaluates it in the rule's own order).
            kids.sort_by_key(Cond::cost);
            if tag == "and" {
                Cond::And(kids)
            } else {
                Cond::Or(kids)
            }
        }
        "not" => Cond::Not(Box::new(condition(at(node, 1)?, fields, depth + 1)?)),
        "eq" => {
            let f = field(1)?;
            let exact: FxHashSet<String> = strings(at(node, 2)?)?
                .into_iter()
                .map(str::to_owned)
                .collect();
            let lowered: FxHashSet<String> = strings(at(node, 3)?)?
                .into_iter()
                .map(str::to_owned)
                .collect();
            let ascii = lowered.iter().all(|s| s.is_ascii());
            Cond::Eq {
                field: f,
                exact,
                lowered,
                ascii,
            }
        }
        "cidr" => Cond::Cidr {
            field: field(1)?,
            nets: Nets::parse(at(node, 2)?)?,
        },
        "null" => Cond::Null(field(1)?),
        "exists" => Cond::Exists(field(1)?, boolean(at(node, 2)?)?),
        "ref" => {
            let a = field(1)?;
            Cond::Ref(a, field(2)?)
        }
        "kw" => Cond::Kw {
            needle: Box::new(Lit::new(string(at(node, 1)?)?)),
            cased: boolean(at(node, 2)?)?,
        },
        "msg" => Cond::Msg(test(at(node, 1)?, depth + 1)?),
        "field" => {
            let f = field(1)?;
            Cond::Field(f, test(at(node, 2)?, depth + 1)?)
        }
        other => return err(format!("unknown condition {other:?}")),
    })
}

fn test(v: &Json, depth: usize) -> Result<Test, FormError> {
    if depth > MAX_DEPTH {
        return err("value test nested too deeply");
    }
    let node = arr(v)?;
    let tag = string(at(node, 0)?)?;
    Ok(match tag {
        "any" => {
            let mut kids = Vec::new();
            for k in arr(at(node, 1)?)? {
                kids.push(test(k, depth + 1)?);
            }
            Test::Any(kids)
        }
        "str" => {
            let kind = match string(at(node, 1)?)? {
                "eq" => Kind::Eq,
                "all" => Kind::All,
                "contains" => Kind::Contains,
                "starts" => Kind::Starts,
                "ends" => Kind::Ends,
                other => return err(format!("unknown string test {other:?}")),
            };
            Test::Str {
                kind,
                lit: Box::new(Lit::new(string(at(node, 2)?)?)),
                cased: boolean(at(node, 3)?)?,
            }
        }
        "glob" => {
            let cased = boolean(at(node, 2)?)?;
            let mut pattern = String::from(if cased { "(?s)^" } else { "(?i)(?s)^" });
            for part in arr(at(node, 1)?)? {
                match part {
                    Json::String(s) => pattern.push_str(&regex::escape(s)),
                    Json::Number(n) if n.as_u64() == Some(0) => pattern.push_str(".*"),
                    Json::Number(n) if n.as_u64() == Some(1) => pattern.push('.'),
                    other => return err(format!("unknown glob part {other}")),
                }
            }
            pattern.push('$');
            Test::Glob {
                rx: build_regex(&pattern)?,
                cased,
            }
        }
        "bool" => Test::Bool(boolean(at(node, 1)?)?),
        "num" => Test::Num {
            num: number(at(node, 1)?)?,
            text: string(at(node, 2)?)?.to_owned(),
        },
        "cmp" => {
            let op = match string(at(node, 1)?)? {
                "lt" => CmpOp::Lt,
                "lte" => CmpOp::Lte,
                "gt" => CmpOp::Gt,
                "gte" => CmpOp::Gte,
                "neq" => CmpOp::Neq,
                other => return err(format!("unknown comparison {other:?}")),
            };
            Test::Cmp {
                op,
                num: number(at(node, 2)?)?,
            }
        }
        "re" => {
            let flags = string(at(node, 2)?)?;
            if !flags.chars().all(|c| "ims".contains(c)) {
                return err(format!("unknown regex flags {flags:?}"));
            }
            let pattern = if flags.is_empty() {
                string(at(node, 1)?)?.to_owned()
            } else {
                format!("(?{flags}){}", string(at(node, 1)?)?)
            };
            Test::Re {
                rx: build_regex(&pattern)?,
            }
        }
        "net" => Test::Net(Nets::parse(at(node, 1)?)?),
        other => return err(format!("unknown value test {other:?}")),
    })
}

/// One detection: its condition (or why it stays with the reference) and the message tokens
/// of which one must occur (the engine's pre-filter), lower-cased.
#[derive(Debug)]
struct Rule {
    cond: Result<Cond, FormError>,
    tokens: Option<(Vec<Lit>, bool)>,
}

/// A ruleset's detections, compiled once from the form; evaluated per (event, rule).
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    fields: FieldTable,
    message: usize,
}

impl RuleSet {
    /// `{"rules": [{"ir": <form>, "tokens": [..] | null}, ...]}`. A rule this evaluator
    /// cannot take (a regex the `regex` crate reads differently) is kept as unsupported and
    /// answered by the reference; a malformed document is an error.
    pub fn from_json(text: &str) -> Result<Self, FormError> {
        let doc: Json = serde_json::from_str(text).map_err(|e| FormError(format!("json: {e}")))?;
        let list = arr(doc
            .get("rules")
            .ok_or_else(|| FormError("no rules".into()))?)?;
        let mut fields = FieldTable::default();
        let message = fields.intern("message");
        let mut rules = Vec::with_capacity(list.len());
        for r in list {
            let ir = r
                .get("ir")
                .ok_or_else(|| FormError("a rule without ir".into()))?;
            let tokens = match r.get("tokens") {
                None | Some(Json::Null) => None,
                Some(t) => {
                    let lits: Vec<Lit> = strings(t)?.into_iter().map(Lit::new).collect();
                    let ascii = lits.iter().all(|l| l.ascii);
                    Some((lits, ascii))
                }
            };
            rules.push(Rule {
                cond: condition(ir, &mut fields, 0),
                tokens,
            });
        }
        Ok(RuleSet {
            rules,
            fields,
            message,
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn fields(&self) -> &FieldTable {
        &self.fields
    }

    /// Rules left to the reference, with the reason.
    pub fn unsupported(&self) -> Vec<(usize, String)> {
        self.rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.cond.as_ref().err().map(|e| (i, e.0.clone())))
            .collect()
    }

    /// Whether rule `rule` matches the event: the engine's token pre-filter, then the
    /// condition. An index out of range is undecided (the reference knows its rules).
    pub fn matches(&self, rule: usize, f: &dyn Fields) -> Answer {
        let Some(r) = self.rules.get(rule) else {
            return Err(Undecided);
        };
        let cond = r.cond.as_ref().map_err(|_| Undecided)?;
        if !self.prefilter(r, f)? {
            return Ok(false);
        }
        self.eval(cond, f)
    }

    /// Whether rule `rule` matches every record of a shape (`Some(true)`), none of them
    /// (`Some(false)`), or that depends on the records' own values (`None`). An answer given
    /// is [`RuleSet::matches`]' (or the reference's, where that one is undecided) for each
    /// record: it read only what the shape fixes, or a field's presence where the shape
    /// says every record has it and none holds None.
    pub fn matches_shape(&self, rule: usize, s: &dyn ShapeFields) -> Option<bool> {
        let r = self.rules.get(rule)?;
        let cond = r.cond.as_ref().ok()?;
        let pre = ShapeRead::answer(s, |f| self.prefilter(r, f));
        if pre == Some(false) {
            return Some(false);
        }
        match self.eval_shape(cond, s) {
            Some(false) => Some(false),
            Some(true) => pre,
            None => None,
        }
    }

    /// The engine's pre-filter: one of the rule's tokens in str(message).lower() ("" when
    /// missing or None).
    fn prefilter(&self, r: &Rule, f: &dyn Fields) -> Answer {
        let Some((toks, ascii)) = &r.tokens else {
            return Ok(true);
        };
        let m = f.get(self.message);
        let text: Cow<str> = match &m {
            None | Some(Val::Null) => Cow::Borrowed(""),
            Some(Val::Bool(true)) => Cow::Borrowed("true"),
            Some(Val::Bool(false)) => Cow::Borrowed("false"),
            Some(v) => lower(text_of(v)?, *ascii)?,
        };
        Ok(toks
            .iter()
            .any(|t| t.finder.find(text.as_bytes()).is_some()))
    }

    /// `eval` over a shape, three-valued as Kleene's: a part that reads a record's own value
    /// is unknown (`None`), save a presence test of a field every record has.
    fn eval_shape(&self, c: &Cond, s: &dyn ShapeFields) -> Option<bool> {
        match c {
            Cond::And(kids) | Cond::Or(kids) => {
                // the answer of a part that decides the whole: false for an `and`
                let deciding = matches!(c, Cond::Or(_));
                let mut answer = Some(!deciding);
                for k in kids {
                    match self.eval_shape(k, s) {
                        Some(b) if b == deciding => return Some(deciding),
                        Some(_) => {}
                        None => answer = None,
                    }
                }
                answer
            }
            Cond::Not(k) => self.eval_shape(k, s).map(|b| !b),
            Cond::Exists(field, want) if matches!(s.known(*field), Known::Present) => Some(*want),
            leaf => ShapeRead::answer(s, |f| self.eval(leaf, f)),
        }
    }

    fn eval(&self, c: &Cond, f: &dyn Fields) -> Answer {
        match c {
            // A part left undecided does not stop the walk: a later false part still
            // decides an `and` (a true one an `or`), as it would in the rule's own order.
            Cond::And(kids) => {
                let mut answer = Ok(true);
                for k in kids {
                    match self.eval(k, f) {
                        Ok(false) => return Ok(false),
                        Ok(true) => {}
                        Err(u) => answer = Err(u),
                    }
                }
                answer
            }
            Cond::Or(kids) => {
                let mut answer = Ok(false);
                for k in kids {
                    match self.eval(k, f) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(u) => answer = Err(u),
                    }
                }
                answer
            }
            Cond::Not(k) => Ok(!self.eval(k, f)?),
            Cond::Eq {
                field,
                exact,
                lowered,
                ascii,
            } => match f.get(*field) {
                None | Some(Val::Null) => Ok(false),
                Some(Val::Str(s)) if exact.contains(s.as_ref()) => Ok(true),
                Some(v) => any_item(&v, &mut |x| {
                    Ok(lowered.contains(lower(text_of(x)?, *ascii)?.as_ref()))
                }),
            },
            Cond::Cidr { field, nets } => match f.get(*field) {
                None | Some(Val::Null) => Ok(false),
                Some(v) => any_item(&v, &mut |x| nets.contains(&text_of(x)?)),
            },
            Cond::Null(field) => match f.get(*field) {
                None | Some(Val::Null) => Ok(true),
                Some(Val::Str(s)) => Ok(s.is_empty()),
                Some(Val::List(l)) => Ok(l.is_empty()),
                // A str subclass compares equal to "": only the reference can tell.
                Some(Val::Other) => Err(Undecided),
                Some(_) => Ok(false),
            },
            Cond::Exists(field, want) => {
                Ok(!matches!(f.get(*field), None | Some(Val::Null)) == *want)
            }
            Cond::Ref(a, b) => match (f.get(*a), f.get(*b)) {
                (None, _) | (_, None) => Ok(false),
                (Some(x), Some(y)) => py_eq(&x, &y),
            },
            Cond::Kw { needle, cased } => {
                let m = f.get(self.message);
                if *cased {
                    let text = match &m {
                        None => Cow::Borrowed(""),
                        Some(v) => text_of(v)?,
                    };
                    return Ok(needle.test(Kind::Contains, &text));
                }
                match &m {
                    None | Some(Val::Null) => Ok(false),
                    Some(v) => Ok(needle.test(Kind::Contains, &lower(text_of(v)?, needle.ascii)?)),
                }
            }
            Cond::Msg(t) => match f.get(self.message) {
                None | Some(Val::Null) => Ok(false),
                Some(v) => value_test(t, &v),
            },
            Cond::Field(field, t) => match f.get(*field) {
                None | Some(Val::Null) => Ok(false),
                Some(v) => any_item(&v, &mut |x| value_test(t, x)),
            },
        }
    }
}

/// Sigma's list semantics: a list matches when any item does (one level, as the reference).
fn any_item(v: &Val<'_>, test: &mut dyn FnMut(&Val<'_>) -> Answer) -> Answer {
    if let Val::List(items) = v {
        for x in items {
            if test(x)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    test(v)
}

/// Python's `_as_text`: text as is, booleans as `true`/`false`, integers in decimal, None as
/// `None`; the rest (floats, lists) would need Python's repr.
fn text_of<'v>(v: &'v Val<'_>) -> Result<Cow<'v, str>, Undecided> {
    match v {
        Val::Str(s) => Ok(Cow::Borrowed(s.as_ref())),
        Val::Bool(true) => Ok(Cow::Borrowed("true")),
        Val::Bool(false) => Ok(Cow::Borrowed("false")),
        Val::Int(i) => Ok(Cow::Owned(i.to_string())),
        Val::Null => Ok(Cow::Borrowed("None")),
        Val::Float(_) | Val::List(_) | Val::Other => Err(Undecided),
    }
}

/// Python's `str.lower()` where the answer is only compared with literals: exact for ASCII
/// text; for other text exact only against ASCII literals (`ascii_literals`), because no
/// character but U+212A (KELVIN SIGN -> k) lower-cases to ASCII alone, and Rust's mapping of
/// that one agrees; anything else is left to the reference (Unicode versions differ).
fn lower(s: Cow<'_, str>, ascii_literals: bool) -> Result<Cow<'_, str>, Undecided> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(Cow::Owned(s.to_ascii_lowercase()));
        }
        return Ok(s);
    }
    if !ascii_literals {
        return Err(Undecided);
    }
    Ok(Cow::Owned(s.to_lowercase()))
}

/// Text the regular expressions may read here: ASCII without vertical tab (RE2's `\s` leaves
/// it out, the `regex` crate's takes it).
fn regex_safe(s: &str) -> bool {
    s.is_ascii() && !s.as_bytes().contains(&0x0b)
}

fn value_test(t: &Test, v: &Val<'_>) -> Answer {
    match t {
        Test::Any(kids) => {
            for k in kids {
                if value_test(k, v)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Test::Str { kind, lit, cased } => {
            if *kind == Kind::All {
                return Ok(true);
            }
            let text = text_of(v)?;
            if *cased {
                return Ok(lit.test(*kind, &text));
            }
            Ok(lit.test(*kind, &lower(text, lit.ascii)?))
        }
        Test::Glob { rx, cased } => {
            let text = text_of(v)?;
            if !*cased && !regex_safe(&text) {
                return Err(Undecided);
            }
            Ok(rx.is_match(&text))
        }
        Test::Re { rx } => {
            let text = text_of(v)?;
            if !regex_safe(&text) {
                return Err(Undecided);
            }
            Ok(rx.is_match(&text))
        }
        Test::Bool(want) => Ok(match v {
            Val::Bool(b) => b == want,
            Val::Other => return Err(Undecided), // a str subclass is text to the reference
            Val::Str(s) => {
                s.eq_ignore_ascii_case(if *want { "true" } else { "false" }) && s.is_ascii()
            }
            _ => false,
        }),
        Test::Num { num, text } => match v {
            Val::Int(i) => Ok(num_cmp(Num::Int(*i), *num)? == Some(Ordering::Equal)),
            Val::Float(x) => Ok(num_cmp(Num::Float(*x), *num)? == Some(Ordering::Equal)),
            Val::Str(s) => Ok(s.as_ref() == text),
            Val::Other => Err(Undecided),
            _ => Ok(false),
        },
        Test::Cmp { op, num } => {
            let Some(x) = to_num(v)? else {
                return Ok(false);
            };
            let ord = num_cmp(x, *num)?;
            Ok(match op {
                CmpOp::Lt => ord == Some(Ordering::Less),
                CmpOp::Lte => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                CmpOp::Gt => ord == Some(Ordering::Greater),
                CmpOp::Gte => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                CmpOp::Neq => ord != Some(Ordering::Equal),
            })
        }
        Test::Net(nets) => nets.contains(&text_of(v)?),
    }
}

/// Python's `float(v)` for the comparison modifiers (`None` where Python raises).
fn to_num(v: &Val<'_>) -> Result<Option<Num>, Undecided> {
    match v {
        Val::Bool(_) | Val::Null | Val::List(_) => Ok(None),
        Val::Int(i) => Ok(Some(Num::Int(*i))),
        Val::Float(x) => Ok(Some(Num::Float(*x))),
        Val::Other => Err(Undecided),
        Val::Str(s) => {
            if !s.is_ascii() || s.contains('_') {
                return Err(Undecided); // Unicode digits and spaces, digit grouping
            }
            let t = s.trim_matches(|c: char| {
                matches!(
                    c,
                    '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ' | '\x1c'..='\x1f'
                )
            });
            if t.is_empty() {
                return Ok(None);
            }
            let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
            let negative = t.starts_with('-');
            let named = match unsigned.to_ascii_lowercase().as_str() {
                "inf" | "infinity" => Some(f64::INFINITY),
                "nan" => Some(f64::NAN),
                _ => None,
            };
            if let Some(x) = named {
                return Ok(Some(Num::Float(if negative { -x } else { x })));
            }
            // Beside the names, a Python float literal has digits, '.', an exponent, signs.
            if t.bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            {
                return Ok(None);
            }
            Ok(t.parse::<f64>().ok().map(Num::Float))
        }
    }
}

/// 2^53: integers within it convert to f64 exactly.
const EXACT: i64 = 1 << 53;

/// Python's mixed int/float ordering (`None` when a NaN is involved).
fn num_cmp(a: Num, b: Num) -> Result<Option<Ordering>, Undecided> {
    Ok(match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => {
            if !(-EXACT..=EXACT).contains(&x) {
                return Err(Undecided);
            }
            (x as f64).partial_cmp(&y)
        }
        (Num::Float(x), Num::Int(y)) => {
            if !(-EXACT..=EXACT).contains(&y) {
                return Err(Undecided);
            }
            x.partial_cmp(&(y as f64))
        }
    })
}

/// Python's `==` between two field values (the `fieldref` modifier).
fn py_eq(a: &Val<'_>, b: &Val<'_>) -> Answer {
    let num = |v: &Val<'_>| match v {
        Val::Bool(b) => Some(Num::Int(i64::from(*b))),
        Val::Int(i) => Some(Num::Int(*i)),
        Val::Float(x) => Some(Num::Float(*x)),
        _ => None,
    };
    match (a, b) {
        (Val::Other, _) | (_, Val::Other) => Err(Undecided),
        (Val::Null, Val::Null) => Ok(true),
        (Val::Str(x), Val::Str(y)) => Ok(x == y),
        (Val::List(x), Val::List(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (p, q) in x.iter().zip(y) {
                if matches!(p, Val::Float(n) if n.is_nan())
                    || matches!(q, Val::Float(n) if n.is_nan())
                {
                    return Err(Undecided); // list equality tries identity first
                }
                if !py_eq(p, q)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => Ok(num_cmp(x, y)? == Some(Ordering::Equal)),
            _ => Ok(false),
        },
    }
}

// ---------------------------------------------------------------------- fields from JSON

/// A JSON value as a field value (the stored line's form of the fields).
pub fn from_json(v: &Json) -> Val<'_> {
    match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Val::Int(i),
            (None, Some(_)) if n.is_u64() => Val::Other,
            (None, Some(x)) => Val::Float(x),
            (None, None) => Val::Other,
        },
        Json::String(s) => Val::Str(Cow::Borrowed(s)),
        Json::Array(items) => Val::List(items.iter().map(from_json).collect()),
        Json::Object(_) => Val::Other,
    }
}

/// The fields of a stored line (`[ts, created, module, {fields}, raw]`), looked up by index.
pub struct JsonFields<'a> {
    pub map: &'a serde_json::Map<String, Json>,
    pub names: &'a [String],
}

impl Fields for JsonFields<'_> {
    fn get(&self, field: usize) -> Option<Val<'_>> {
        self.map.get(self.names.get(field)?).map(from_json)
    }
}

/// Fields from a map of values (tests and fuzzing).
pub struct MapFields<'a> {
    pub map: &'a HashMap<String, Val<'a>>,
    pub names: &'a [String],
}

impl Fields for MapFields<'_> {
    fn get(&self, field: usize) -> Option<Val<'_>> {
        self.map.get(self.names.get(field)?).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ir: &str) -> RuleSet {
        RuleSet::from_json(&format!(r#"{{"rules": [{{"ir": {ir}, "tokens": null}}]}}"#)).unwrap()
    }

    fn check(rs: &RuleSet, fields: &[(&str, Val<'static>)]) -> Answer {
        let map: HashMap<String, Val<'static>> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let f = MapFields {
            map: &map,
            names: rs.fields().names(),
        };
        rs.matches(0, &f)
    }

    fn s(x: &str) -> Val<'static> {
        Val::Str(Cow::Owned(x.to_owned()))
    }

    #[test]
    fn plain_equality_folds_ascii_case_and_any_list_item() {
        let rs = rules(r#"["eq", "user.name", ["Root"], ["root"]]"#);
        assert_eq!(check(&rs, &[("user.name", s("ROOT"))]), Ok(true));
        assert_eq!(
            check(&rs, &[("user.name", Val::List(vec![s("x"), s("root")]))]),
            Ok(true)
        );
        assert_eq!(check(&rs, &[("user.name", s("rooty"))]), Ok(false));
        assert_eq!(check(&rs, &[]), Ok(false));
        // KELVIN SIGN lower-cases to ASCII k in Python too
        let rs = rules(r#"["eq", "a", ["k"], ["k"]]"#);
        assert_eq!(check(&rs, &[("a", s("\u{212a}"))]), Ok(true));
    }

    #[test]
    fn non_ascii_literals_against_non_ascii_text_are_left_to_the_reference() {
        let rs = rules(r#"["eq", "a", ["Ä"], ["ä"]]"#);
        assert_eq!(check(&rs, &[("a", s("Ö"))]), Err(Undecided));
        assert_eq!(check(&rs, &[("a", s("Ä"))]), Ok(true)); // exact
        assert_eq!(check(&rs, &[("a", s("A"))]), Ok(false));
    }

    #[test]
    fn cidr_matches_addresses_not_numbers() {
        let rs = rules(r#"["cidr", "source.ip", ["10.0.0.0/8", "fc00::/7"]]"#);
        assert_eq!(check(&rs, &[("source.ip", s("10.1.2.3"))]), Ok(true));
        assert_eq!(check(&rs, &[("source.ip", s("fd00::1"))]), Ok(true));
        assert_eq!(check(&rs, &[("source.ip", s("11.0.0.1"))]), Ok(false));
        assert_eq!(check(&rs, &[("source.ip", Val::Int(167772161))]), Ok(false));
    }

    #[test]
    fn cidr_reads_dotted_quads_as_the_address_parser_does() {
        let rs = rules(r#"["cidr", "ip", ["192.168.0.0/16", "172.16.0.0/12", "0.0.0.0/32"]]"#);
        for (ip, want) in [
            ("192.168.0.0", Ok(true)),
            ("192.168.255.255", Ok(true)),
            ("192.169.0.0", Ok(false)),
            ("172.31.255.255", Ok(true)),
            ("172.32.0.0", Ok(false)),
            ("0.0.0.0", Ok(true)),
            ("0.0.0.1", Ok(false)),
            ("192.168.01.1", Ok(false)), // a leading zero: neither parser takes it
            ("192.168.1.256", Ok(false)),
            ("::ffff:192.168.1.1", Ok(false)), // IPv6, not in an IPv4 network
            ("fe80::1%eth0", Err(Undecided)),
        ] {
            assert_eq!(check(&rs, &[("ip", s(ip))]), want, "{ip}");
        }
    }

    #[test]
    fn cidr_tests_an_address_against_the_networks_of_its_own_version() {
        let rs = rules(r#"["cidr", "ip", ["10.0.0.0/8", "fc00::/7", "2001:db8::/128"]]"#);
        for (ip, want) in [
            ("10.1.2.3", true),
            ("11.0.0.0", false),
            ("fd12::1", true),
            ("fe00::1", false),
            ("2001:db8::", true),
            ("2001:db8::1", false),
            ("::ffff:10.1.2.3", false), // an IPv4-mapped IPv6 address is IPv6
            ("::a01:203", false),       // 10.1.2.3's bits as IPv6
            ("not an address", false),
        ] {
            assert_eq!(check(&rs, &[("ip", s(ip))]), Ok(want), "{ip}");
        }
        let all = rules(r#"["cidr", "ip", ["0.0.0.0/0"]]"#);
        assert_eq!(check(&all, &[("ip", s("203.0.113.9"))]), Ok(true));
        assert_eq!(check(&all, &[("ip", s("::1"))]), Ok(false));
        let all6 = rules(r#"["cidr", "ip", ["::/0"]]"#);
        assert_eq!(check(&all6, &[("ip", s("::1"))]), Ok(true));
        assert_eq!(check(&all6, &[("ip", s("203.0.113.9"))]), Ok(false));
    }

    #[test]
    fn comparisons_follow_python_numbers() {
        let rs = rules(r#"["field", "n", ["cmp", "gte", 10]]"#);
        assert_eq!(check(&rs, &[("n", s(" 10 "))]), Ok(true));
        assert_eq!(check(&rs, &[("n", Val::Float(9.5))]), Ok(false));
        assert_eq!(check(&rs, &[("n", Val::Bool(true))]), Ok(false));
        assert_eq!(check(&rs, &[("n", s("x"))]), Ok(false));
        assert_eq!(check(&rs, &[("n", s("-Infinity"))]), Ok(false));
        assert_eq!(check(&rs, &[("n", s("inf"))]), Ok(true));
        assert_eq!(check(&rs, &[("n", s("1_0"))]), Err(Undecided));
    }

    #[test]
    fn globs_and_regexes_decline_non_ascii_text() {
        let rs = rules(r#"["field", "m", ["glob", ["a", 1, "c", 0], false]]"#);
        assert_eq!(check(&rs, &[("m", s("ABCdef"))]), Ok(true));
        assert_eq!(check(&rs, &[("m", s("äbc"))]), Err(Undecided));
        let rs = rules(r#"["msg", ["re", "\\d+ failures", ""]]"#);
        assert_eq!(check(&rs, &[("message", s("12 failures"))]), Ok(true));
        assert_eq!(check(&rs, &[("message", Val::Float(1.0))]), Err(Undecided));
    }

    #[test]
    fn values_of_other_types_are_left_to_the_reference_where_they_could_be_text() {
        let rs = rules(r#"["null", "a"]"#);
        assert_eq!(check(&rs, &[("a", Val::Other)]), Err(Undecided));
        let rs = rules(r#"["field", "a", ["bool", true]]"#);
        assert_eq!(check(&rs, &[("a", Val::Other)]), Err(Undecided));
        let rs = rules(r#"["exists", "a", true]"#);
        assert_eq!(check(&rs, &[("a", Val::Other)]), Ok(true));
    }

    #[test]
    fn malformed_forms_are_errors_not_panics() {
        for doc in [
            "",
            "{}",
            r#"{"rules": 1}"#,
            r#"{"rules": [{"ir": []}]}"#,
            r#"{"rules": [{"ir": ["cidr", "a", ["10.0.0.0/33"]]}]}"#,
        ] {
            if let Ok(rs) = RuleSet::from_json(doc) {
                assert!(!rs.unsupported().is_empty() || rs.is_empty());
            }
        }
    }
}
