//! `CorrelationWindows`: one event_count / value_count / temporal_ordered rule's groups (`crate::windows`) behind
//! the call `CorrelationRuntime.add(rule_id, entry, fields)` makes, reading the group-by and
//! value fields from the event's dict here.
//!
//! Keys follow Python's dict equality, because the reference keys its dicts by the field
//! values themselves: `True == 1 == 1.0`, `-0.0 == 0`, a NaN equals only itself (dicts look up
//! by identity first), an unhashable value (a list) raises `TypeError` where the reference's
//! lookup does. What a snapshot shows (the key and value objects as first seen) and the
//! evidence (the entry tuples) are the Python objects themselves, held by reference, except
//! what is made again equal: a plain key or value (None, an exact `str` or `int`) from its
//! key bytes, and the entry `DetectionFeeds` builds from its parts (`Ev::Parts`).
//!
//! What this cannot mirror exactly is declined with `WindowsDeclined` before anything
//! changes (a NaN event time, a caught panic, counted in `panics()`); the runtime then turns
//! into the Python one with this state and goes on.

use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::python::PANICS;
use crate::python_flowevents::{EventFields, Read};
use crate::windows::{Entry, Kind, Op, Spec, Window, Windows};

create_exception!(
    _dataplane,
    WindowsDeclined,
    PyException,
    "The native windows cannot take this step exactly as the reference would (nothing changed)."
);

/// A group or value key normalised to Python's equality of the values a field can hold,
/// written as bytes: per value a tag and what it compares by (`None`; an int, or a float
/// equal to one, as an `i64` or, past 64 bits, its decimal digits; another float's bits, -0.0
/// being the int 0; a str's UTF-8; a tuple's length and items; anything else hashable, NaN
/// among them, Python's hash, its object kept beside in order and compared by identity or
/// `==`). Every value's bytes delimit themselves, so equal bytes are equal keys.
///
/// One byte string instead of a tree of parts: a key of up to [`INLINE`] bytes (an address,
/// a host name, a pair of them) is made without an allocation and hashed in one write. A
/// lookup of a group that exists, most events' case, allocates nothing.
pub(crate) struct Part {
    bytes: Bytes,
    /// The `Obj` values' objects in the order of their tags (usually none: no allocation).
    objs: Box<[Py<PyAny>]>,
}

const INLINE: usize = 46;

enum Bytes {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Inline(n, b) => &b[..usize::from(*n)],
            Bytes::Heap(b) => b,
        }
    }

    /// The key of an ungrouped event (the reference's `None`).
    pub(crate) fn null() -> Self {
        let mut w = PartWriter::default();
        w.push_byte(TAG_NULL);
        w.finish()
    }

    /// The tuple of values this key was written from, made again: for keys whose values are
    /// each `None`, an exact `str` or an exact `int` ([`plain_value`]), whose parts give
    /// back equal values of the same types (a text with lone surrogates, kept as its object,
    /// the object itself).
    fn values_again<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let mut r = PartReader {
            bytes: self.bytes(),
            at: 0,
        };
        let mut objs = self.objs.iter();
        if r.byte()? != TAG_TUPLE {
            return Err(not_plain());
        }
        let n = r.len()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(r.value_again(py, &mut objs)?);
        }
        PyTuple::new(py, out)
    }

    /// The value this key was written from, made again (a value_count value kept without
    /// its object: [`plain_value`]).
    fn value_again<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut r = PartReader {
            bytes: self.bytes(),
            at: 0,
        };
        r.value_again(py, &mut self.objs.iter())
    }

    /// The key of a tuple of these values (as `part` of the tuple).
    pub(crate) fn tuple(values: &[Bound<'_, PyAny>]) -> PyResult<Self> {
        let mut w = PartWriter::default();
        w.tuple(values.iter().cloned(), values.len())?;
        Ok(w.finish())
    }
}

const TAG_NULL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_BIG: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_TUPLE: u8 = 5;
const TAG_OBJ: u8 = 6;

fn not_plain() -> PyErr {
    PyValueError::new_err("a group key not made of plain values")
}

/// Reads a [`Part`]'s bytes back, as [`PartWriter`] wrote them.
struct PartReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> PartReader<'a> {
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(not_plain)?;
        let b = self.bytes.get(self.at..end).ok_or_else(not_plain)?;
        self.at = end;
        Ok(b)
    }

    fn byte(&mut self) -> PyResult<u8> {
        Ok(self.take(1)?[0])
    }

    /// The next value, made again as [`Part::values_again`] says.
    fn value_again<'py>(
        &mut self,
        py: Python<'py>,
        objs: &mut std::slice::Iter<'_, Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.byte()? {
            TAG_NULL => py.None().into_bound(py),
            TAG_INT => {
                let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| not_plain())?;
                i64::from_le_bytes(b).into_pyobject(py)?.into_any()
            }
            tag @ (TAG_STR | TAG_BIG) => {
                let k = self.len()?;
                let t = std::str::from_utf8(self.take(k)?).map_err(|_| not_plain())?;
                let text = PyString::new(py, t).into_any();
                if tag == TAG_STR {
                    text
                } else {
                    py.get_type::<PyInt>().call1((text,))?
                }
            }
            TAG_OBJ => {
                self.take(8)?; // its hash
                objs.next().ok_or_else(not_plain)?.bind(py).clone()
            }
            _ => return Err(not_plain()),
        })
    }

    /// A length as [`PartWriter::push_len`] wrote it.
    fn len(&mut self) -> PyResult<usize> {
        let mut n = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(not_plain())
    }
}

/// Builds a [`Part`]: on the stack while it fits [`INLINE`] bytes.
struct PartWriter {
    len: usize,
    inline: [u8; INLINE],
    /// Everything written once it outgrew `inline` (then never empty).
    heap: Vec<u8>,
    objs: Vec<Py<PyAny>>,
}

impl Default for PartWriter {
    fn default() -> Self {
        PartWriter {
            len: 0,
            inline: [0; INLINE],
            heap: Vec::new(),
            objs: Vec::new(),
        }
    }
}

impl PartWriter {
    fn push_byte(&mut self, b: u8) {
        if self.heap.is_empty() && self.len < INLINE {
            self.inline[self.len] = b;
            self.len += 1;
        } else {
            self.push(&[b]);
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() {
            if let Some(room) = self.inline.get_mut(self.len..self.len + bytes.len()) {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
                return;
            }
            self.heap.reserve(self.len + bytes.len() + 16);
            self.heap.extend_from_slice(&self.inline[..self.len]);
        }
        self.heap.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// A length as LEB128 (one byte below 128).
    fn push_len(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.push_byte((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        self.push_byte(n as u8);
    }

    fn push_text(&mut self, tag: u8, text: &str) {
        self.push_byte(tag);
        self.push_len(text.len());
        self.push(text.as_bytes());
    }

    fn push_obj(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = v.hash()?;
        self.push_byte(TAG_OBJ);
        self.push(&h.to_le_bytes());
        self.objs.push(v.clone().unbind());
        Ok(())
    }

    fn tuple<'py>(
        &mut self,
        items: impl Iterator<Item = Bound<'py, PyAny>>,
        n: usize,
    ) -> PyResult<()> {
        self.push_byte(TAG_TUPLE);
        self.push_len(n);
        for x in items {
            self.value(&x)?;
        }
        Ok(())
    }

    /// One value (raises `TypeError` for an unhashable one, as a dict does).
    fn value(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        if v.is_none() {
            self.push_byte(TAG_NULL);
            return Ok(());
        }
        if let Ok(s) = v.cast::<PyString>() {
            return match s.to_str() {
                Ok(t) => {
                    self.push_text(TAG_STR, t);
                    Ok(())
                }
                Err(_) => self.push_obj(v), // lone surrogates
            };
        }
        if v.is_instance_of::<PyBool>() {
            self.int(i64::from(v.is_truthy()?));
            return Ok(());
        }
        if v.is_instance_of::<PyInt>() {
            match v.extract::<i64>() {
                Ok(i) => self.int(i),
                Err(_) => self.push_text(TAG_BIG, v.str()?.to_str()?),
            }
            return Ok(());
        }
        if v.is_instance_of::<PyFloat>() {
            let f: f64 = v.extract()?;
            if f.is_nan() {
                return self.push_obj(v);
            }
            if f.is_finite() && f.fract() == 0.0 {
                if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                    self.int(f as i64);
                    return Ok(());
                }
                let int = v.py().get_type::<PyInt>().call1((v,))?;
                self.push_text(TAG_BIG, int.str()?.to_str()?);
                return Ok(());
            }
            self.push_byte(TAG_FLOAT);
            self.push(&f.to_bits().to_le_bytes());
            return Ok(());
        }
        if let Ok(t) = v.cast::<PyTuple>() {
            return self.tuple(t.iter(), t.len());
        }
        self.push_obj(v)
    }

    fn int(&mut self, i: i64) {
        self.push_byte(TAG_INT);
        self.push(&i.to_le_bytes());
    }

    fn finish(self) -> Part {
        let bytes = if self.heap.is_empty() {
            Bytes::Inline(self.len as u8, self.inline)
        } else {
            Bytes::Heap(self.heap.into_boxed_slice())
        };
        Part {
            bytes,
            objs: self.objs.into_boxed_slice(),
        }
    }
}

impl Hash for Part {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write(self.bytes());
    }
}

impl PartialEq for Part {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
            && self.objs.len() == other.objs.len()
            && (self.objs.is_empty()
                || Python::attach(|py| {
                    self.objs.iter().zip(other.objs.iter()).all(|(a, b)| {
                        let a = a.bind(py);
                        a.is(b) || a.eq(b.bind(py)).unwrap_or(false)
                    })
                }))
    }
}

impl Eq for Part {}

/// The part a value keys as (raises `TypeError` for an unhashable one, as a dict does).
pub(crate) fn part(v: &Bound<'_, PyAny>) -> PyResult<Part> {
    let mut w = PartWriter::default();
    w.value(v)?;
    Ok(w.finish())
}

fn is_scalar(v: &Bound<'_, PyAny>) -> bool {
    v.is_instance_of::<PyString>() || v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>()
}

/// `DistinctState.key`'s value: a scalar as it is, anything else as its `str()`.
fn value_of<'py>(v: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if is_scalar(&v) {
        Ok(v)
    } else {
        Ok(v.str()?.into_any())
    }
}

/// Whether a group key's value need not be kept: `None`, an exact `str` or an exact `int`,
/// which [`Part::values_again`] makes again from the key (a new group on a flow stream,
/// nearly every flow's, then makes no tuple for its display).
fn plain_value(v: &Bound<'_, PyAny>) -> bool {
    v.is_none() || v.is_exact_instance_of::<PyString>() || v.is_exact_instance_of::<PyInt>()
}

/// The key [`Part::tuple`] makes of the values of the fields `keys` (a missing one as None),
/// written as each is read, with no vector of them made (two windows a flow, nearly every
/// one a new group's): with whether every value is None (an ungrouped event, whose key is
/// [`Part::null`]) and whether all are plain ([`plain_value`]).
fn group_key<'py>(
    py: Python<'py>,
    keys: &[Py<PyString>],
    fields: &EventFields<'_, 'py>,
) -> PyResult<(Part, bool, bool)> {
    let mut w = PartWriter::default();
    w.push_byte(TAG_TUPLE);
    w.push_len(keys.len());
    let (mut all_none, mut plain) = (true, true);
    for k in keys {
        match fields.read(k.bind(py))? {
            None => w.push_byte(TAG_NULL),
            // a flow's integer: plain, written as `value` writes an int
            Some(Read::Int(n)) => {
                all_none = false;
                w.int(n);
            }
            Some(Read::Obj(v)) => {
                all_none &= v.is_none();
                plain &= plain_value(&v);
                w.value(&v)?;
            }
        }
    }
    if all_none && !keys.is_empty() {
        return Ok((Part::null(), true, true));
    }
    Ok((w.finish(), false, plain))
}

/// The values [`group_key`] read, as the reference's key tuple holds them.
fn group_values<'py>(
    py: Python<'py>,
    keys: &[Py<PyString>],
    fields: &EventFields<'_, 'py>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    keys.iter()
        .map(|k| {
            Ok(fields
                .item(k.bind(py))?
                .unwrap_or_else(|| py.None().into_bound(py)))
        })
        .collect()
}

/// A group's key as first seen (the reference's dict key), or a value's: `None` for a group
/// whose key gives its values back ([`plain_value`]).
type Shown = Option<Py<PyAny>>;

fn shown<'py>(py: Python<'py>, kept: &Shown, key: &Part) -> PyResult<Bound<'py, PyAny>> {
    match kept {
        Some(v) => Ok(v.bind(py).clone()),
        None => Ok(key.values_again(py)?.into_any()),
    }
}

/// A distinct value as first seen, or made again from its key when it was plain.
fn shown_value<'py>(py: Python<'py>, kept: &Shown, key: &Part) -> PyResult<Bound<'py, PyAny>> {
    match kept {
        Some(v) => Ok(v.bind(py).clone()),
        None => key.value_again(py),
    }
}

/// An entry: the reference's own tuple `(ts, ids, raws)`, held by reference (a chain copies
/// the reference), or `Parts` of the one the engine builds for an event (`DetectionFeeds`):
/// its id (`ids` is `(id,)`, or `()` for none) and its raw sample (`raws` is `(raw,)`, or
/// `(b"",)` for an event with no raw line: every flow), its time the entry's own
/// ([`Entry::ts`], the tuple's exact float). The tuples are made only when Python reads the
/// entry (a snapshot; a fire's evidence reads the parts): an event feeding windows made three,
/// held while its groups lived, traversed by every collection meanwhile and freed cold; a
/// flow stream makes a new group in each scan window nearly every flow.
pub enum Ev {
    Obj(Py<PyAny>),
    Parts {
        id: Option<Py<PyAny>>,
        raw: Option<Py<PyAny>>,
    },
}

impl Clone for Ev {
    fn clone(&self) -> Self {
        Python::attach(|py| match self {
            Ev::Obj(e) => Ev::Obj(e.clone_ref(py)),
            Ev::Parts { id, raw } => Ev::Parts {
                id: id.as_ref().map(|x| x.clone_ref(py)),
                raw: raw.as_ref().map(|x| x.clone_ref(py)),
            },
        })
    }
}

/// What the reference's window holds for `e`: its tuple, made again from its parts.
fn payload<'py>(py: Python<'py>, e: &Entry<Ev>) -> PyResult<Bound<'py, PyAny>> {
    match &e.payload {
        Ev::Obj(obj) => Ok(obj.bind(py).clone()),
        Ev::Parts { id, raw } => entry_tuple(
            py,
            PyFloat::new(py, e.ts).into_any(),
            id.as_ref().map(|x| x.bind(py)),
            raw.as_ref().map(|x| x.bind(py)),
        ),
    }
}

/// The reference's entry `(ts, ids, raws)` of an event: `ids` `(id,)` or `()`, `raws`
/// `(raw,)` or `(b"",)` (no raw line).
pub(crate) fn entry_tuple<'py>(
    py: Python<'py>,
    ts: Bound<'py, PyAny>,
    id: Option<&Bound<'py, PyAny>>,
    raw: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let ids = match id {
        Some(id) => PyTuple::new(py, [id])?,
        None => PyTuple::empty(py),
    };
    let raws = match raw {
        Some(raw) => PyTuple::new(py, [raw])?,
        None => PyTuple::new(py, [PyBytes::new(py, b"")])?,
    };
    Ok(PyTuple::new(py, [ts, ids.into_any(), raws.into_any()])?.into_any())
}

/// An entry time as `evidence` compares it: an entry's own float, or a tuple's item (an
/// object only Python compares).
#[derive(Clone)]
enum Time<'py> {
    Float(f64),
    Obj(Bound<'py, PyAny>),
}

impl<'py> Time<'py> {
    /// `a < b` as Python compares them (two floats natively: no NaN reaches a window).
    fn lt(py: Python<'py>, a: &Time<'py>, b: &Time<'py>) -> PyResult<bool> {
        match (a, b) {
            (Time::Float(x), Time::Float(y)) => Ok(x < y),
            _ => a.object(py).lt(b.object(py)),
        }
    }

    /// `a > b` as Python compares them.
    fn gt(py: Python<'py>, a: &Time<'py>, b: &Time<'py>) -> PyResult<bool> {
        match (a, b) {
            (Time::Float(x), Time::Float(y)) => Ok(x > y),
            _ => a.object(py).gt(b.object(py)),
        }
    }

    fn object(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Time::Float(x) => PyFloat::new(py, *x).into_any(),
            Time::Obj(o) => o.clone(),
        }
    }
}

type Win = Windows<Part, Shown, Ev>;

/// One event_count or value_count rule's windows (see the module doc).
#[pyclass(module = "appliance._dataplane")]
pub struct CorrelationWindows {
    w: Win,
    /// referenced rule id -> the fields its group-by reads (the ruleset's ids: Fx is enough)
    group_fields: rustc_hash::FxHashMap<String, Vec<Py<PyString>>>,
    /// value_count's field(s); several make the value a tuple of them
    value_fields: Vec<Py<PyString>>,
    /// temporal_ordered: each referenced rule id's places in the list, last first
    steps: rustc_hash::FxHashMap<String, Vec<usize>>,
    /// Tests only: the next add panics (to show the fallback).
    panic_next: bool,
}

pub(crate) type FiredOut<'py> =
    Option<(Bound<'py, PyTuple>, Bound<'py, PyTuple>, Bound<'py, PyAny>)>;

/// What `Engine._fired` reads of a fired group's entries (`(ts, ids, raws)` tuples, in the
/// order `entries()` lists them), gathered here instead of by its Python loops: `(ids,
/// raws, first, last)`, the ids in order of first appearance (`dict.fromkeys`, Python's
/// equality), every raw sample in order, and the smallest and largest entry time as `min`
/// and `max` pick them (None when there is no entry). The engine cuts both lists to its
/// evidence limits.
fn evidence<'py>(py: Python<'py>, entries: &[&Entry<Ev>]) -> PyResult<Bound<'py, PyTuple>> {
    let ids = PyDict::new(py);
    let raws = PyList::empty(py);
    let mut first: Option<Time<'py>> = None;
    let mut last: Option<Time<'py>> = None;
    for e in entries {
        let ts = match &e.payload {
            Ev::Obj(obj) => {
                let e = obj.bind(py);
                for id in e.get_item(1)?.try_iter()? {
                    ids.set_item(id?, py.None())?;
                }
                for raw in e.get_item(2)?.try_iter()? {
                    raws.append(raw?)?;
                }
                Time::Obj(e.get_item(0)?)
            }
            Ev::Parts { id, raw } => {
                if let Some(id) = id {
                    ids.set_item(id.bind(py), py.None())?;
                }
                match raw {
                    Some(raw) => raws.append(raw.bind(py))?,
                    None => raws.append(PyBytes::new(py, b""))?,
                }
                Time::Float(e.ts)
            }
        };
        let new_first = match &first {
            Some(f) => Time::lt(py, &ts, f)?,
            None => true,
        };
        let new_last = match &last {
            Some(l) => Time::gt(py, &ts, l)?,
            None => true,
        };
        if new_last {
            last = Some(ts.clone());
        }
        if new_first {
            first = Some(ts);
        }
    }
    let ids = PyList::new(py, ids.keys())?;
    let time = |t: Option<Time<'py>>| match t {
        Some(t) => t.object(py),
        None => py.None().into_bound(py),
    };
    PyTuple::new(
        py,
        [ids.into_any(), raws.into_any(), time(first), time(last)],
    )
}

impl CorrelationWindows {
    /// `CorrelationRuntime.add` of `entry`, whose event time (`entry[0]`) is `ts`
    /// ([`checked_time`]).
    pub(crate) fn add_inner<'py>(
        &mut self,
        py: Python<'py>,
        rule_id: &str,
        entry: Ev,
        ts: f64,
        fields: &EventFields<'_, 'py>,
    ) -> PyResult<FiredOut<'py>> {
        if std::mem::take(&mut self.panic_next) {
            panic!("injected by a test");
        }
        let Some(gf) = self.group_fields.get(rule_id) else {
            return Ok(None);
        };
        let ts = checked_time(ts)?;
        let (key, ungrouped, plain) = group_key(py, gf, fields)?;
        let value = match self.w.spec.kind {
            Kind::Count | Kind::Ordered(_) => None,
            Kind::Distinct => self.value(py, fields)?,
        };
        let show_key = || {
            if plain {
                return None;
            }
            Some(
                group_values(py, gf, fields)
                    .and_then(|values| PyTuple::new(py, values))
                    .map(|t| t.into_any().unbind())
                    .unwrap_or_else(|_| py.None()),
            )
        };
        // a plain value is made again from its key when shown (no object held per value)
        let value =
            value.map(|(k, v)| (k, move || v.filter(|v| !plain_value(v)).map(Bound::unbind)));
        let steps = self.steps.get(rule_id).map_or(&[][..], Vec::as_slice);
        let got = self
            .w
            .add(key, ungrouped, show_key, ts, entry, value, steps);
        let Some((n, group)) = got else {
            return Ok(None);
        };
        let gathered = evidence(py, &group.entries())?;
        self.w.recycle(group);
        let value = match self.w.spec.kind {
            // OrderedState returns float(len(refs))
            Kind::Ordered(_) => PyFloat::new(py, n as f64).into_any(),
            _ => n.into_pyobject(py)?.into_any(),
        };
        let values = group_values(py, gf, fields)?;
        Ok(Some((PyTuple::new(py, values)?, gathered, value)))
    }

    /// The value this event adds to a value_count window, or None when it adds none: its
    /// key, and the value as shown (None for a flow's integer, which is plain: its key makes
    /// it again).
    fn value<'py>(
        &self,
        py: Python<'py>,
        fields: &EventFields<'_, 'py>,
    ) -> PyResult<Option<(Part, Option<Bound<'py, PyAny>>)>> {
        if let [f] = self.value_fields.as_slice() {
            let v = match fields.read(f.bind(py))? {
                None => return Ok(None),
                Some(Read::Int(n)) => {
                    let mut w = PartWriter::default();
                    w.int(n);
                    return Ok(Some((w.finish(), None)));
                }
                Some(Read::Obj(v)) => v,
            };
            if v.is_none() {
                return Ok(None);
            }
            let v = value_of(v)?;
            return Ok(Some((part(&v)?, Some(v))));
        }
        let mut shown = Vec::with_capacity(self.value_fields.len());
        for f in &self.value_fields {
            match fields.item(f.bind(py))? {
                Some(v) if !v.is_none() => shown.push(value_of(v)?),
                _ => return Ok(None),
            }
        }
        let k = Part::tuple(&shown)?;
        Ok(Some((k, Some(PyTuple::new(py, shown)?.into_any()))))
    }

    fn groups_inner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (k, g) in self.w.groups.iter() {
            let items = PyList::empty(py);
            match &g.window {
                Window::Count(t) => {
                    for e in t {
                        items.append(payload(py, e)?)?;
                    }
                }
                Window::Distinct(vals) => {
                    for (vk, (v, e)) in vals.iter() {
                        items.append((shown_value(py, v, vk)?, payload(py, e)?))?;
                    }
                }
                Window::Ordered(chains) => {
                    for ch in chains {
                        match ch {
                            None => items.append(py.None())?,
                            Some((start, es)) => {
                                let es = es
                                    .iter()
                                    .map(|e| payload(py, e))
                                    .collect::<PyResult<Vec<_>>>()?;
                                items.append((*start, PyList::new(py, es)?))?;
                            }
                        }
                    }
                }
            }
            out.append((shown(py, &g.display, k)?, items))?;
        }
        Ok(out)
    }

    fn put_inner(&mut self, key: &Bound<'_, PyTuple>, items: &Bound<'_, PyList>) -> PyResult<()> {
        let k = part(key.as_any())?;
        let window = match self.w.spec.kind {
            Kind::Count => {
                let mut t = std::collections::VecDeque::with_capacity(items.len());
                for e in items.iter() {
                    t.push_back(Self::entry(&e)?);
                }
                Window::Count(t)
            }
            Kind::Distinct => {
                let mut vals: crate::windows::Values<Part, (Shown, Entry<Ev>)> = Default::default();
                for item in items.iter() {
                    let (v, e): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
                    let vk = part(&v)?;
                    let entry = Self::entry(&e)?;
                    vals.put(vk, entry, || Some(v.unbind())); // the key as first seen stays
                }
                Window::Distinct(vals)
            }
            Kind::Ordered(n) => {
                if items.len() != n {
                    return Err(PyValueError::new_err("one chain per step"));
                }
                let mut chains = Vec::with_capacity(n);
                for item in items.iter() {
                    if item.is_none() {
                        chains.push(None);
                        continue;
                    }
                    let (start, es): (f64, Bound<'_, PyList>) = item.extract()?;
                    let es = es
                        .iter()
                        .map(|e| Self::entry(&e))
                        .collect::<PyResult<Vec<_>>>()?;
                    chains.push(Some((start, es)));
                }
                Window::Ordered(chains)
            }
        };
        self.w.put(k, Some(key.clone().into_any().unbind()), window);
        Ok(())
    }

    fn entry(e: &Bound<'_, PyAny>) -> PyResult<Entry<Ev>> {
        Ok(Entry {
            ts: entry_time(e)?,
            payload: Ev::Obj(e.clone().unbind()),
        })
    }
}

/// An entry's event time (`entry[0]`), [`checked_time`].
fn entry_time(entry: &Bound<'_, PyAny>) -> PyResult<f64> {
    checked_time(match entry.cast::<PyTuple>() {
        Ok(t) => t.get_item(0)?.extract()?,
        Err(_) => entry.get_item(0)?.extract()?,
    })
}

/// An event time the native windows order: a NaN one is declined (only Python's sort
/// orders it).
fn checked_time(ts: f64) -> PyResult<f64> {
    if ts.is_nan() {
        return Err(WindowsDeclined::new_err("NaN event time"));
    }
    Ok(ts)
}

/// What `f` returns, or for a panic in it (counted in `panics()`) the error `declined`
/// makes: no panic crosses into Python.
pub(crate) fn caught_as<T>(
    f: impl FnOnce() -> PyResult<T>,
    declined: impl FnOnce() -> PyErr,
) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        Err(declined())
    })
}

/// `caught_as` with `WindowsDeclined`: the runtime goes on in Python with this state.
pub(crate) fn caught<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    caught_as(f, || WindowsDeclined::new_err("panic caught"))
}

#[pymethods]
impl CorrelationWindows {
    /// `kind` is the rule's type; `checks` its comparisons; `group_fields` maps each
    /// referenced rule id to the fields its group-by reads; `value_fields` is value_count's
    /// field and its more fields (empty for event_count).
    #[new]
    #[pyo3(signature = (kind, timespan, keep, max_groups, checks, group_fields, value_fields, refs=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        kind: &str,
        timespan: f64,
        keep: usize,
        max_groups: usize,
        checks: Vec<(String, f64)>,
        group_fields: std::collections::HashMap<String, Vec<String>>,
        value_fields: Vec<String>,
        refs: Vec<String>,
    ) -> PyResult<Self> {
        let mut steps: rustc_hash::FxHashMap<String, Vec<usize>> = Default::default();
        for (i, r) in refs.iter().enumerate().rev() {
            steps.entry(r.clone()).or_default().push(i);
        }
        let kind = match kind {
            "event_count" if value_fields.is_empty() => Kind::Count,
            "value_count" if !value_fields.is_empty() => Kind::Distinct,
            "temporal_ordered" if value_fields.is_empty() && !refs.is_empty() => {
                Kind::Ordered(refs.len())
            }
            other => return Err(PyValueError::new_err(format!("unsupported kind {other}"))),
        };
        if keep == 0 || max_groups == 0 || timespan.is_nan() {
            return Err(PyValueError::new_err(
                "keep, max_groups and timespan must be set",
            ));
        }
        let checks = checks
            .into_iter()
            .map(|(op, t)| {
                Op::parse(&op)
                    .map(|o| (o, t))
                    .ok_or_else(|| PyValueError::new_err(format!("unknown comparison {op}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let intern = |names: Vec<String>| -> Vec<Py<PyString>> {
            names
                .iter()
                .map(|n| PyString::intern(py, n).unbind())
                .collect()
        };
        Ok(CorrelationWindows {
            w: Windows::new(Spec {
                kind,
                timespan,
                keep,
                max_groups,
                checks,
            }),
            group_fields: group_fields
                .into_iter()
                .map(|(rid, fs)| (rid, intern(fs)))
                .collect(),
            value_fields: intern(value_fields),
            steps,
            panic_next: false,
        })
    }

    /// `CorrelationRuntime.add`: None, or (group key, the group's [`evidence`], the count)
    /// when the condition holds (the group is then forgotten, as the reference deletes it).
    /// (Also `DetectionFeeds`' step of a fire chained to the window above it.)
    pub(crate) fn add<'py>(
        &mut self,
        py: Python<'py>,
        rule_id: &str,
        entry: &Bound<'py, PyAny>,
        fields: &Bound<'py, PyDict>,
    ) -> PyResult<FiredOut<'py>> {
        let fields = EventFields::Dict(fields.clone());
        let ev = Ev::Obj(entry.clone().unbind());
        caught(|| self.add_inner(py, rule_id, ev, entry_time(entry)?, &fields))
    }

    /// Drop groups with nothing newer than the window ending at `watermark`; how many.
    fn sweep(&mut self, watermark: f64) -> PyResult<usize> {
        caught(|| Ok(self.w.sweep(watermark)))
    }

    fn __len__(&self) -> usize {
        self.w.groups.len()
    }

    /// Every group in LRU order (least recent first): (key, entries) for event_count,
    /// (key, [(value, entry)]) for value_count, values in their window order, (key, [None or
    /// (start, entries)] one per step) for temporal_ordered.
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        caught(|| self.groups_inner(py))
    }

    /// Restore one group as `groups()` lists it (a present key keeps its place).
    fn put(&mut self, key: &Bound<'_, PyTuple>, items: &Bound<'_, PyList>) -> PyResult<()> {
        caught(|| self.put_inner(key, items))
    }

    #[getter]
    fn get_evicted(&self) -> u64 {
        self.w.evicted
    }

    #[setter]
    fn set_evicted(&mut self, v: u64) {
        self.w.evicted = v;
    }

    #[getter]
    fn get_fired(&self) -> u64 {
        self.w.fired
    }

    #[setter]
    fn set_fired(&mut self, v: u64) {
        self.w.fired = v;
    }

    #[getter]
    fn get_ungrouped(&self) -> u64 {
        self.w.ungrouped
    }

    #[setter]
    fn set_ungrouped(&mut self, v: u64) {
        self.w.ungrouped = v;
    }

    /// Tests only: make the next add panic, to exercise the fallback.
    fn inject_panic(&mut self) {
        self.panic_next = true;
    }
}

/// Every native window one detection feeds, in the engine's order, updated in one call (one
/// boundary crossing per event instead of one per correlation). The engine builds one only
/// where no member feeds another (through a chain), so running the members before the Python
/// side handles what fired is the order the reference has.
#[pyclass(module = "appliance._dataplane")]
pub struct WindowsBatch {
    members: Vec<Py<CorrelationWindows>>,
}

#[pymethods]
impl WindowsBatch {
    #[new]
    fn new(members: Vec<Py<CorrelationWindows>>) -> Self {
        WindowsBatch { members }
    }

    /// Each member's `add` in order. None when nothing fired; else a list of (member index,
    /// what fired), ending early with (member index, the exception) where a member raised or
    /// declined (the members after it were not fed).
    fn add<'py>(
        &self,
        py: Python<'py>,
        rule_id: &str,
        entry: &Bound<'py, PyAny>,
        fields: &Bound<'py, PyDict>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let fields = &EventFields::Dict(fields.clone());
        let mut out: Option<Bound<'py, PyList>> = None;
        for (i, m) in self.members.iter().enumerate() {
            let got = {
                let mut w = m.bind(py).try_borrow_mut()?;
                let ev = Ev::Obj(entry.clone().unbind());
                caught(|| w.add_inner(py, rule_id, ev, entry_time(entry)?, fields))
            };
            match got {
                Ok(None) => {}
                Ok(Some(fired)) => {
                    let list = out.get_or_insert_with(|| PyList::empty(py));
                    list.append((i, fired))?;
                }
                Err(e) => {
                    let list = out.get_or_insert_with(|| PyList::empty(py));
                    list.append((i, e.into_value(py)))?;
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn __len__(&self) -> usize {
        self.members.len()
    }
}
