//! `BaselineBatch`: the per-event loop of the baselines stage (`BaselineStage.observe_batch`
//! in `appliance/analysis/baselines.py`, which stays the reference) in one call per batch.
//!
//! The state stays the stage's Python objects (the new-term tables and their sets, the
//! learning starts, the action counts), so snapshots, the API, `reload` and the reference
//! read and write what they always did. The call reads each event's fields dict, counts the
//! rate keys by their text, and works out the new-term lookups and learning with their
//! bounds and the rarity counts over an overlay of what the batch adds; only when the whole
//! batch is decided does it write the overlay into the Python objects (the new keys and
//! values, the counts, the stamps on the few events that get fields) and hand back the rate
//! counts per key, the positions of the stamped events and the new terms. So a common event
//! costs dict probes and makes no Python object; and a flow of a native batch whose shape's
//! first flow read nothing of its own record and changed no state (a flow's usual case: its
//! rates only) costs three counts, that first flow's again.
//!
//! What it cannot mirror exactly (a value that is not an exact `str` or `int` where the
//! reference takes its text, a `str` subclass, a `fields` that is not a dict, a number beyond
//! 2**53, a caught panic, counted in `panics()`) declines the batch before anything changed:
//! `None`, and the stage runs the reference on it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PySet, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::baselines::{is_rare, rarity, EXACT_INT};
use crate::python::PANICS;
use crate::python_event::{Attr, Event};
use crate::python_flowevents::{EventsIn, ShapeId};

/// The batch goes to the reference; nothing was changed.
struct Declined;

impl From<PyErr> for Declined {
    fn from(_: PyErr) -> Self {
        Declined
    }
}

type Step<T> = Result<T, Declined>;

/// A field's value as far as the stage uses it.
#[derive(Clone)]
enum V<'py> {
    /// Absent or `None` (`dict.get` gives `None` for both).
    Null,
    Str(Bound<'py, PyString>),
    Int(i64),
    /// A value whose `==` with a `str` is `False` and whose truth has no side effect (bool,
    /// float, a bigger int, list, tuple, dict); the reference never needs its text here
    /// without the batch being declined.
    Other(Bound<'py, PyAny>),
}

fn classify<'py>(v: Option<Bound<'py, PyAny>>) -> Step<V<'py>> {
    let Some(v) = v else {
        return Ok(V::Null);
    };
    if v.is_none() {
        return Ok(V::Null);
    }
    if v.is_exact_instance_of::<PyString>() {
        return Ok(V::Str(v.cast_into::<PyString>().map_err(|_| Declined)?));
    }
    if v.is_exact_instance_of::<PyInt>() {
        return Ok(match v.extract::<i64>() {
            Ok(n) => V::Int(n),
            Err(_) => V::Other(v),
        });
    }
    if v.is_exact_instance_of::<PyBool>()
        || v.is_exact_instance_of::<PyFloat>()
        || v.is_exact_instance_of::<PyList>()
        || v.is_exact_instance_of::<PyTuple>()
        || v.is_exact_instance_of::<PyDict>()
    {
        return Ok(V::Other(v));
    }
    Err(Declined)
}

impl<'py> V<'py> {
    fn truthy(&self) -> Step<bool> {
        Ok(match self {
            V::Null => false,
            V::Str(s) => s.len()? > 0,
            V::Int(n) => *n != 0,
            V::Other(v) => v.is_truthy()?,
        })
    }

    /// `value == s`.
    fn eq_str(&self, s: &str) -> Step<bool> {
        Ok(match self {
            V::Str(v) => v.to_str()? == s,
            _ => false,
        })
    }

    /// `str(value)` (a `str` is itself).
    fn text(&self, py: Python<'py>) -> Step<Bound<'py, PyString>> {
        match self {
            V::Str(s) => Ok(s.clone()),
            V::Int(n) => Ok(PyString::new(py, &n.to_string())),
            _ => Err(Declined),
        }
    }

    /// The text a rate key counts under, without a copy for a `str`.
    fn with_text<T>(&self, f: impl FnOnce(&str) -> T) -> Step<T> {
        match self {
            V::Str(s) => Ok(f(s.to_str()?)),
            V::Int(n) => Ok(f(&n.to_string())),
            _ => Err(Declined),
        }
    }
}

/// A time or duration the reference computes with: a float, or an int `f64` holds exactly.
fn number(v: &Bound<'_, PyAny>) -> Step<f64> {
    if v.is_exact_instance_of::<PyFloat>() {
        return Ok(v.extract::<f64>()?);
    }
    if v.is_exact_instance_of::<PyInt>() {
        let n: i64 = v.extract()?;
        if n.abs() <= EXACT_INT {
            return Ok(n as f64);
        }
    }
    Err(Declined)
}

/// A count the reference keeps: an exact int that `f64` holds exactly.
fn count(v: &Bound<'_, PyAny>) -> Step<i64> {
    if v.is_exact_instance_of::<PyInt>() {
        let n: i64 = v.extract()?;
        if (0..EXACT_INT).contains(&n) {
            return Ok(n);
        }
    }
    Err(Declined)
}

#[derive(Clone, Copy)]
enum When {
    AuthSuccess,
    AllowedConnection,
    Always,
}

struct Kind {
    name: Py<PyString>,
    keys: Vec<usize>,
    value: usize,
    value_name: Py<PyString>,
    when: When,
}

/// Counts per text in the order each text was first seen.
#[derive(Default)]
struct Tally {
    at: FxHashMap<String, usize>,
    counts: Vec<(String, u64)>,
}

impl Tally {
    /// Count `text` once; its place in `counts`.
    fn add(&mut self, text: &str) -> usize {
        match self.at.get(text) {
            Some(&i) => {
                self.counts[i].1 += 1;
                i
            }
            None => {
                self.at.insert(text.to_owned(), self.counts.len());
                self.counts.push((text.to_owned(), 1));
                self.counts.len() - 1
            }
        }
    }
}

/// What the first flow of a shape did that each later flow of the shape does again: the
/// place of the text it counted in each rate tally (it read nothing a record holds of its
/// own, and changed no new-term or rarity state).
type Replay = [Option<usize>; 3];

/// A new-term key the batch touched: its set in the table (None: the batch adds the key)
/// and the values the batch adds to it.
struct TermKey<'py> {
    key: Bound<'py, PyString>,
    existing: Option<Bound<'py, PySet>>,
    added: Vec<Bound<'py, PyString>>,
    added_text: rustc_hash::FxHashSet<String>,
}

/// One kind's overlay over its table.
struct TermOverlay<'py> {
    table: Bound<'py, PyDict>,
    started: Option<f64>,
    at: FxHashMap<String, usize>,
    keys: Vec<TermKey<'py>>,
    new_keys: usize,
}

/// An action the batch counted, and its count after it.
struct Action<'py> {
    key: Bound<'py, PyString>,
    n: i64,
}

/// The fields one event gets: its last new term (kind, index in `new_terms`; an earlier
/// kind's are overwritten, as the reference writes them) and its rarity score.
struct Stamp {
    event: usize,
    term: Option<(usize, usize)>,
    score: Option<i64>,
}

/// What the batch does, worked out before anything is written.
struct Plan<'py> {
    rates: [Tally; 3],
    terms: Vec<TermOverlay<'py>>,
    started: Vec<usize>,
    actions_at: FxHashMap<String, usize>,
    actions: Vec<Action<'py>>,
    new_actions: usize,
    total: i64,
    terms_refused: u64,
    actions_refused: u64,
    stamps: Vec<Stamp>,
    new_terms: Vec<(usize, Bound<'py, PyString>, Bound<'py, PyString>)>,
}

/// The stage's per-event loop for one batch (see the module's docs).
#[pyclass(module = "appliance._dataplane")]
pub struct BaselineBatch {
    /// Every field read, interned; `kinds` and the fixed reads index into it.
    names: Vec<Py<PyString>>,
    kinds: Vec<Kind>,
    observer_ip: usize,
    host_hostname: usize,
    dataset: usize,
    category: usize,
    outcome: usize,
    action: usize,
    module: usize,
    /// Batches left to the reference since start (panics included).
    declined: u64,
    /// Tests only: the next batch panics (to show the fallback).
    panic_next: bool,
}

impl BaselineBatch {
    fn name_index(names: &mut Vec<String>, name: &str) -> usize {
        if let Some(i) = names.iter().position(|n| n == name) {
            return i;
        }
        names.push(name.to_owned());
        names.len() - 1
    }

    fn when<'py>(&self, w: When, get: &mut impl FnMut(usize) -> Step<V<'py>>) -> Step<bool> {
        Ok(match w {
            When::Always => true,
            When::AuthSuccess => {
                let cat = get(self.category)?;
                let is_auth = cat.eq_str("authentication")?
                    || match &cat {
                        V::Other(v) if v.is_exact_instance_of::<PyList>() => {
                            let mut found = false;
                            for x in v.cast::<PyList>().map_err(|_| Declined)?.iter() {
                                if classify(Some(x))?.eq_str("authentication")? {
                                    found = true;
                                    break;
                                }
                            }
                            found
                        }
                        _ => false,
                    };
                is_auth && get(self.outcome)?.eq_str("success")?
            }
            When::AllowedConnection => {
                let action = get(self.action)?;
                action.eq_str("allow")?
                    || action.eq_str("start")?
                    || get(self.module)?.eq_str("netflow")?
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn plan<'py>(
        &self,
        py: Python<'py>,
        events: &EventsIn<'py>,
        now: f64,
        learning: f64,
        max_keys: usize,
        max_values: usize,
        max_actions: usize,
        started: &Bound<'py, PyDict>,
        seen: &Bound<'py, PyDict>,
        actions: &Bound<'py, PyDict>,
        total: i64,
        rare_after: i64,
        rare_share: f64,
    ) -> Step<Plan<'py>> {
        let mut terms = Vec::with_capacity(self.kinds.len());
        for kind in &self.kinds {
            let name = kind.name.bind(py);
            let table = seen.get_item(name)?.ok_or(Declined)?;
            let table = table.cast_into_exact::<PyDict>().map_err(|_| Declined)?;
            let began = match started.get_item(name)? {
                Some(v) => Some(number(&v)?),
                None => None,
            };
            terms.push(TermOverlay {
                table,
                started: began,
                at: FxHashMap::default(),
                keys: Vec::new(),
                new_keys: 0,
            });
        }
        let mut plan = Plan {
            rates: Default::default(),
            terms,
            started: Vec::new(),
            actions_at: FxHashMap::default(),
            actions: Vec::new(),
            new_actions: 0,
            total,
            terms_refused: 0,
            actions_refused: 0,
            stamps: Vec::new(),
            new_terms: Vec::new(),
        };
        let names: Vec<&Bound<'py, PyString>> = self.names.iter().map(|n| n.bind(py)).collect();
        let mut cache: Vec<Option<V<'py>>> = vec![None; names.len()];
        let actions_len = actions.len();
        // Flows not made an event, by shape: what their first flow did (None: each flow of
        // the shape goes through the loop). Shapes are identified while their chunks live,
        // which the events see to for this call.
        let mut replays: FxHashMap<ShapeId, Option<Replay>> = FxHashMap::default();
        for i in 0..events.len() {
            let ev = events.at(i)?;
            let shape = ev.answering_shape();
            if let Some(Some(replay)) = shape.and_then(|(id, _)| replays.get(&id)) {
                for (tally, at) in plan.rates.iter_mut().zip(replay) {
                    if let Some(at) = *at {
                        tally.counts[at].1 += 1;
                    }
                }
                continue;
            }
            let f = ev.exact_fields(py)?.ok_or(Declined)?;
            cache.iter_mut().for_each(|c| *c = None);
            // whether a value a record holds of its own was read
            let own = std::cell::Cell::new(false);
            let mut get = |at: usize| -> Step<V<'py>> {
                if let Some((_, s)) = shape {
                    own.set(own.get() || s.owns(names[at]));
                }
                if let Some(v) = &cache[at] {
                    return Ok(v.clone());
                }
                let v = classify(f.item(names[at])?)?;
                cache[at] = Some(v.clone());
                Ok(v)
            };
            let mut replay: Replay = [None; 3];
            // Rates: `observer.ip or host.hostname`, `event.dataset or module`, the listener.
            let ip = get(self.observer_ip)?;
            let device = if ip.truthy()? {
                ip
            } else {
                get(self.host_hostname)?
            };
            if !matches!(device, V::Null) {
                replay[0] = Some(device.with_text(|t| plan.rates[0].add(t))?);
            }
            let dataset = get(self.dataset)?;
            let source = if dataset.truthy()? {
                dataset
            } else {
                classify(Some(ev.attr(py, Attr::Module)?))?
            };
            replay[1] = Some(source.with_text(|t| plan.rates[1].add(t))?);
            let listener = classify(Some(ev.attr(py, Attr::Listener)?))?;
            if listener.truthy()? {
                replay[2] = Some(listener.with_text(|t| plan.rates[2].add(t))?);
            }
            // a new-term lookup or an action counted depends on the state: no replay
            let mut stateful = false;
            // New terms.
            let mut term_stamp = None;
            for (k, kind) in self.kinds.iter().enumerate() {
                // Up to `when`, only whether the value and key are None counts, which the
                // shape fixes (its records hold no None): reading a record's own here does
                // not stop the replay; what is read past here (`when`, the term) does.
                let before = own.get();
                let value = get(kind.value)?;
                if matches!(value, V::Null) {
                    own.set(before);
                    continue;
                }
                let mut key = V::Null;
                for &at in &kind.keys {
                    key = get(at)?;
                    if !matches!(key, V::Null) {
                        break;
                    }
                }
                own.set(before);
                if matches!(key, V::Null) || !self.when(kind.when, &mut get)? {
                    continue;
                }
                stateful = true;
                let (key, value) = (key.text(py)?, value.text(py)?);
                if let Some(t) =
                    plan.observe_term(k, &key, &value, now, learning, max_keys, max_values)?
                {
                    term_stamp = Some((k, t));
                }
            }
            // Rarity.
            let mut score = None;
            if let V::Str(action) = get(self.action)? {
                stateful = true;
                score = plan.count_action(
                    action,
                    actions,
                    actions_len,
                    max_actions,
                    rare_after,
                    rare_share,
                )?;
            } // (a str subclass, which isinstance() takes for a str, declined in classify)
            if term_stamp.is_some() || score.is_some() {
                plan.stamps.push(Stamp {
                    event: i,
                    term: term_stamp,
                    score,
                });
            }
            if let Some((id, _)) = shape {
                replays.insert(id, (!own.get() && !stateful).then_some(replay));
            }
        }
        Ok(plan)
    }
}

impl<'py> Plan<'py> {
    /// `NewTerms.observe` over the overlay: Some(index in `new_terms`) when the value is new
    /// after the learning period.
    #[allow(clippy::too_many_arguments)]
    fn observe_term(
        &mut self,
        k: usize,
        key: &Bound<'py, PyString>,
        value: &Bound<'py, PyString>,
        now: f64,
        learning: f64,
        max_keys: usize,
        max_values: usize,
    ) -> Step<Option<usize>> {
        let (key_text, value_text) = (key.to_str()?, value.to_str()?);
        let o = &mut self.terms[k];
        let began = match o.started {
            Some(t) => t,
            None => {
                o.started = Some(now);
                self.started.push(k);
                now
            }
        };
        let at = match o.at.get(key_text) {
            Some(&at) => at,
            None => {
                let existing = match o.table.get_item(key)? {
                    Some(set) => Some(set.cast_into_exact::<PySet>().map_err(|_| Declined)?),
                    None => None,
                };
                if existing.is_none() {
                    if o.table.len() + o.new_keys >= max_keys {
                        self.terms_refused += 1;
                        return Ok(None);
                    }
                    o.new_keys += 1;
                }
                o.at.insert(key_text.to_owned(), o.keys.len());
                o.keys.push(TermKey {
                    key: key.clone(),
                    existing,
                    added: Vec::new(),
                    added_text: Default::default(),
                });
                o.keys.len() - 1
            }
        };
        let entry = &mut o.keys[at];
        if entry.added_text.contains(value_text) {
            return Ok(None);
        }
        let had = match &entry.existing {
            Some(set) => {
                if set.contains(value)? {
                    return Ok(None);
                }
                set.len()
            }
            None => 0,
        };
        if had + entry.added.len() >= max_values {
            self.terms_refused += 1;
            return Ok(None);
        }
        entry.added.push(value.clone());
        entry.added_text.insert(value_text.to_owned());
        if now - began < learning {
            return Ok(None);
        }
        self.new_terms.push((k, key.clone(), value.clone()));
        Ok(Some(self.new_terms.len() - 1))
    }

    /// The inline rarity of the reference: the score when the event gets one.
    fn count_action(
        &mut self,
        action: Bound<'py, PyString>,
        actions: &Bound<'py, PyDict>,
        actions_len: usize,
        max_actions: usize,
        rare_after: i64,
        rare_share: f64,
    ) -> Step<Option<i64>> {
        let text = action.to_str()?;
        let at = match self.actions_at.get(text) {
            Some(&at) => at,
            None => {
                let before = match actions.get_item(&action)? {
                    Some(n) => Some(count(&n)?),
                    None => None,
                };
                if before.is_none() && actions_len + self.new_actions >= max_actions {
                    self.actions_refused += 1;
                    return Ok(None);
                }
                self.new_actions += usize::from(before.is_none());
                self.actions_at.insert(text.to_owned(), self.actions.len());
                self.actions.push(Action {
                    key: action.clone(),
                    n: before.unwrap_or(0),
                });
                self.actions.len() - 1
            }
        };
        let a = &mut self.actions[at];
        a.n += 1;
        self.total += 1;
        if self.total >= EXACT_INT {
            return Err(Declined);
        }
        let (n, total) = (a.n, self.total);
        Ok((total >= rare_after && is_rare(n, total, rare_share)).then(|| rarity(n, total)))
    }
}

#[pymethods]
impl BaselineBatch {
    /// `kinds`: each new-term kind as (name, key fields, value field, when), `when` one of
    /// `auth_success`, `allowed_connection`, `always` (the reference's predicates).
    #[new]
    fn new(py: Python<'_>, kinds: Vec<(String, Vec<String>, String, String)>) -> PyResult<Self> {
        let mut names: Vec<String> = Vec::new();
        let mut fixed = |n: &str| Self::name_index(&mut names, n);
        let observer_ip = fixed("observer.ip");
        let host_hostname = fixed("host.hostname");
        let dataset = fixed("event.dataset");
        let category = fixed("event.category");
        let outcome = fixed("event.outcome");
        let action = fixed("event.action");
        let module = fixed("event.module");
        let mut out = Vec::new();
        for (name, keys, value, when) in kinds {
            let when = match when.as_str() {
                "auth_success" => When::AuthSuccess,
                "allowed_connection" => When::AllowedConnection,
                "always" => When::Always,
                other => return Err(PyValueError::new_err(format!("unknown predicate {other}"))),
            };
            if keys.is_empty() {
                return Err(PyValueError::new_err("a kind needs key fields"));
            }
            out.push(Kind {
                name: PyString::intern(py, &name).unbind(),
                keys: keys
                    .iter()
                    .map(|k| Self::name_index(&mut names, k))
                    .collect(),
                value: Self::name_index(&mut names, &value),
                value_name: PyString::intern(py, &value).unbind(),
                when,
            });
        }
        Ok(BaselineBatch {
            names: names
                .iter()
                .map(|n| PyString::intern(py, n).unbind())
                .collect(),
            kinds: out,
            observer_ip,
            host_hostname,
            dataset,
            category,
            outcome,
            action,
            module,
            declined: 0,
            panic_next: false,
        })
    }

    /// Count and learn one batch into the stage's objects (see the module's docs). Returns
    /// `(rate counts, stamped, new terms, total, terms refused, actions refused)`: the rate
    /// counts as `[(text, n)]` for devices, sources and listeners in first-seen order, the
    /// positions of the events that got fields (in order), each new term as `(kind, key,
    /// value)`; or `None` when the batch is the reference's (nothing changed).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (events, now, learning, max_keys, max_values, max_actions, started, seen, actions, total, rare_after, rare_share))]
    fn observe<'py>(
        &mut self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        now: &Bound<'py, PyAny>,
        learning: &Bound<'py, PyAny>,
        max_keys: usize,
        max_values: usize,
        max_actions: usize,
        started: &Bound<'py, PyDict>,
        seen: &Bound<'py, PyDict>,
        actions: &Bound<'py, PyDict>,
        total: &Bound<'py, PyAny>,
        rare_after: i64,
        rare_share: f64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let events = &EventsIn::of(events)?;
        let panic_now = std::mem::take(&mut self.panic_next);
        let planned = catch_unwind(AssertUnwindSafe(|| {
            if panic_now {
                panic!("injected by a test");
            }
            let (now_f, learning_f, total_n) = (number(now)?, number(learning)?, count(total)?);
            self.plan(
                py,
                events,
                now_f,
                learning_f,
                max_keys,
                max_values,
                max_actions,
                started,
                seen,
                actions,
                total_n,
                rare_after,
                rare_share,
            )
        }));
        let plan = match planned {
            Ok(Ok(plan)) => plan,
            Ok(Err(Declined)) => {
                self.declined += 1;
                return Ok(None);
            }
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                self.declined += 1;
                return Ok(None);
            }
        };
        self.apply(py, events, now, started, actions, plan)
            .map(Some)
    }

    /// Batches left to the reference since start (each one's state untouched).
    #[getter]
    fn declined(&self) -> u64 {
        self.declined
    }

    /// Tests only: make the next batch panic, to exercise the fallback.
    fn inject_panic(&mut self) {
        self.panic_next = true;
    }
}

impl BaselineBatch {
    /// Write the decided batch into the stage's objects, in the reference's order: learning
    /// starts and new keys in first-seen order, counts, then the stamps.
    fn apply<'py>(
        &self,
        py: Python<'py>,
        events: &EventsIn<'py>,
        now: &Bound<'py, PyAny>,
        started: &Bound<'py, PyDict>,
        actions: &Bound<'py, PyDict>,
        plan: Plan<'py>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        for &k in &plan.started {
            started.set_item(self.kinds[k].name.bind(py), now)?;
        }
        for o in &plan.terms {
            for entry in &o.keys {
                match &entry.existing {
                    Some(set) => {
                        for v in &entry.added {
                            set.add(v)?;
                        }
                    }
                    None => o
                        .table
                        .set_item(&entry.key, PySet::new(py, &entry.added)?)?,
                }
            }
        }
        // New actions go in first-seen order; a count updated in place keeps its position.
        for a in &plan.actions {
            actions.set_item(&a.key, a.n)?;
        }
        let mut marked = Vec::with_capacity(plan.stamps.len());
        for Stamp { event, term, score } in &plan.stamps {
            let ev = events.object(*event)?;
            let fields = Event::read(&ev, Attr::Fields)?;
            let f = fields.cast::<PyDict>()?;
            if let Some((k, t)) = term {
                let (_, key, value) = &plan.new_terms[*t];
                let kind = &self.kinds[*k];
                f.set_item(intern!(py, "baseline.new_term.kind"), kind.name.bind(py))?;
                f.set_item(
                    intern!(py, "baseline.new_term.field"),
                    kind.value_name.bind(py),
                )?;
                f.set_item(intern!(py, "baseline.new_term.key"), key)?;
                f.set_item(intern!(py, "baseline.new_term.value"), value)?;
            }
            if let Some(score) = score {
                f.set_item(intern!(py, "baseline.rarity"), *score)?;
            }
            marked.push(*event);
        }
        let rates = PyList::empty(py);
        for tally in &plan.rates {
            let counts = tally.counts.iter().map(|(t, n)| (t.as_str(), *n));
            rates.append(PyList::new(py, counts)?)?;
        }
        let new_terms = PyList::empty(py);
        for (k, key, value) in &plan.new_terms {
            new_terms.append((self.kinds[*k].name.bind(py), key, value))?;
        }
        (
            rates,
            marked,
            new_terms,
            plan.total,
            plan.terms_refused,
            plan.actions_refused,
        )
            .into_pyobject(py)
    }
}
