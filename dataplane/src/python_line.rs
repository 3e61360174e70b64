//! The stored line (`segments.encode_line`: `[ts, created, module, fields, raw]` as orjson
//! writes it) written here from the event's Python objects, without orjson.
//!
//! orjson was 7,000 of the 29,000 instructions a loggen line's whole batch decode cost
//! (callgrind), most of it for a dozen keys and values whose bytes are already known: the
//! walk below reads each str's UTF-8 in place and writes it with `jsonstr`'s escapes, and
//! the numbers with `jsonnum`. It writes exactly the types it can write as orjson does
//! (exact str, int, float in `jsonnum`'s band, bool, None, and exact dicts with str keys,
//! lists and tuples of them, a few levels deep); for anything else (`_json_default`'s
//! types, a subclass, a key that is not text, a lone surrogate, raw bytes that are not
//! UTF-8) it answers `None` and the caller runs the reference, so the line is the same
//! either way (`tests/test_stored_line_equivalence.py`).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, TryLockError};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::jsonnum::FloatTexts;
use crate::jsonstr::Out;
use crate::python::PANICS;
use crate::python_record::{as_dict, FieldsOut, FieldsRecord};
use crate::{jsonnum, jsonstr};

/// Nesting written here; deeper values go to orjson (whose own limit is 255).
const MAX_DEPTH: usize = 8;

/// A line past this keeps no buffer behind it (a bounded raw text is at most a few KiB).
const KEEP_BUFFER: usize = 64 * 1024;

/// Slots of [`QuotedStrs`] (a power of two).
const QUOTED_SLOTS: usize = 2048;

/// The longest JSON string a slot holds.
const QUOTED_MAX: usize = 80;

/// A str's JSON string, kept while the str is: the str is held, so no other object can
/// have its address meanwhile, and strs do not change.
struct QuotedSlot {
    s: Option<Py<PyString>>,
    /// Held as a dict's key: a value does not take the slot.
    key: bool,
    len: u8,
    quoted: [u8; QUOTED_MAX],
}

/// The JSON strings of the strs that recur from line to line: the field names and the
/// shared values (the header's texts, the decoders' constants), direct-mapped by address.
/// A line's keys and values were 35 of its 38 strings, and writing each cost ~300
/// instructions (its UTF-8, the escape scan, the copies) against ~40 for a slot's copy.
/// A value never takes a key's slot: the names recur on every line, a value made for one
/// message (an address, a user name) would only evict them.
static QUOTED: Mutex<Option<Box<[QuotedSlot]>>> = Mutex::new(None);

/// [`QUOTED`], held for one line (none when another thread holds it).
struct QuotedStrs<'a>(Option<std::sync::MutexGuard<'a, Option<Box<[QuotedSlot]>>>>);

impl QuotedStrs<'_> {
    fn lock() -> Self {
        let mut guard = match QUOTED.try_lock() {
            Ok(guard) => guard,
            // A panic while held left whole slots: each is written before its str is set.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return QuotedStrs(None),
        };
        guard.get_or_insert_with(|| {
            (0..QUOTED_SLOTS)
                .map(|_| QuotedSlot {
                    s: None,
                    key: false,
                    len: 0,
                    quoted: [0; QUOTED_MAX],
                })
                .collect()
        });
        QuotedStrs(Some(guard))
    }

    /// Appends `s` (a dict's `key` or not) as a JSON string; `false` for a str that is not
    /// UTF-8 (lone surrogates).
    fn push(&mut self, out: &mut Out, s: &Bound<'_, PyString>, key: bool) -> bool {
        let addr = s.as_ptr() as usize;
        let slots = self.0.as_deref_mut().and_then(|slots| slots.as_deref_mut());
        // Objects are 16-byte aligned: the bits above those pick the slot.
        let slot = slots.map(|slots| &mut slots[(addr >> 4) & (QUOTED_SLOTS - 1)]);
        if let Some(slot) = &slot {
            if slot
                .s
                .as_ref()
                .is_some_and(|held| held.as_ptr() as usize == addr)
            {
                out.extend(&slot.quoted[..usize::from(slot.len)]);
                return true;
            }
        }
        let Ok(text) = s.to_str() else {
            return false;
        };
        let at = out.as_bytes().len();
        jsonstr::push_quoted(out, text);
        let quoted = &out.as_bytes()[at..];
        if let Some(slot) = slot {
            if quoted.len() <= QUOTED_MAX && (key || !slot.key) {
                slot.quoted[..quoted.len()].copy_from_slice(quoted);
                slot.len = quoted.len() as u8;
                slot.key = key;
                slot.s = Some(s.clone().unbind());
            }
        }
        true
    }
}

/// A field name as a JSON string with its colon, after the comma that separates it from the
/// pair before (`,"name":`), for [`Prewritten`]: the names the native side sets are plain
/// ASCII, with nothing to escape.
macro_rules! quoted_key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}
pub(crate) use quoted_key;

/// A value's JSON as the code that set it knows it.
pub(crate) enum Json<'a> {
    Text(&'a str),
    Int(i64),
    /// Already JSON (a constant's, quoted once).
    Raw(&'a [u8]),
    /// The value of the pair written just before (a header text set under two names).
    Again,
    /// Not written ahead: the line writes the value object (structured data, a list).
    Later,
}

/// Consecutive pairs whose keys and values are the same for every dict made from one header
/// template (the kind and dataset; the priority's level, codes and names and the format):
/// their JSON, a comma before each, and per pair (key address, value start, end) in it.
pub(crate) struct KeptRun {
    json: Vec<u8>,
    pairs: Vec<(usize, usize, usize)>,
}

/// One entry of the fields dict as [`Prewritten`] holds it.
struct Pair<'py> {
    /// The key's address (the dict holds the key, so no other object has it meanwhile).
    key: usize,
    /// Where the value starts in `json`, and where the pair ends.
    value_at: usize,
    end: usize,
    /// The value the line writes itself: set for `Json::Later`, or when the item was
    /// replaced after its pair was written (a vendor's `event.dataset`).
    object: Option<Bound<'py, PyAny>>,
}

/// The fields dict of the event being decoded as JSON, written by the code that sets its
/// items from the texts and numbers it holds (the header's parts, the transport, a native
/// decoder's captures), so the stored line copies those bytes instead of walking the dict
/// and reading each key and value back out of Python: the walk cost ~350 instructions an
/// item, a third of a loggen line's decode.
///
/// Only the batch path's own code sets items through it, and it knows what else touches
/// the dict: a sender's static fields or a Python vendor decoder make it inexact, and the
/// line then walks the dict as before. An item replaced in place by the tracked code keeps
/// its key's bytes and has its new value written by the line. The line also checks that
/// the dict holds as many items as were tracked.
#[derive(Default)]
pub(crate) struct Prewritten<'py> {
    /// The pairs, each after the first led by a comma.
    json: Out,
    pairs: Vec<Pair<'py>>,
    /// Whether `pairs` are the dict's items in order.
    exact: bool,
    /// Whether pairs are written at all (not for a caller that writes no line from them).
    used: bool,
}

impl<'py> Prewritten<'py> {
    /// Pairs for a stored line; `default()` writes none.
    pub(crate) fn for_line() -> Self {
        Prewritten {
            used: true,
            ..Default::default()
        }
    }

    /// Whether pairs are written (for a stored line).
    pub(crate) fn writes(&self) -> bool {
        self.used
    }

    /// Forget the last event: inexact until a header starts the pairs again.
    pub(crate) fn clear(&mut self) {
        self.json.clear(KEEP_BUFFER);
        self.pairs.clear();
        self.exact = false;
    }

    /// A new fields dict whose items will all be set through this.
    pub(crate) fn begin(&mut self) {
        self.clear();
        self.exact = self.used;
    }

    /// Where the pairs are now, for [`Prewritten::run_since`].
    pub(crate) fn mark(&self) -> (usize, usize) {
        (self.json.as_bytes().len(), self.pairs.len())
    }

    /// The pairs written since `mark`, to be repeated by [`Prewritten::push_run`]: None
    /// unless they are exact, none is the line's first (the run holds its leading comma) and
    /// every value is written (no object for the line).
    pub(crate) fn run_since(&self, (at, first): (usize, usize)) -> Option<KeptRun> {
        let pairs = self.pairs.get(first..)?;
        if !self.exact || first == 0 || pairs.iter().any(|p| p.object.is_some()) {
            return None;
        }
        Some(KeptRun {
            json: self.json.as_bytes().get(at..)?.to_vec(),
            pairs: pairs
                .iter()
                .map(|p| (p.key, p.value_at - at, p.end - at))
                .collect(),
        })
    }

    /// The items of a `run` are the dict's next ones, already in place (a header template's
    /// constants): their pairs are written as they were for the template's first message.
    pub(crate) fn push_run(&mut self, run: &KeptRun) {
        if !self.exact {
            return;
        }
        if self.pairs.is_empty() {
            // the run's pairs lead with a comma: as the line's first they would not
            self.exact = false;
            return;
        }
        let at = self.json.as_bytes().len();
        self.json.extend(&run.json);
        self.pairs
            .extend(run.pairs.iter().map(|&(key, value_at, end)| Pair {
                key,
                value_at: at + value_at,
                end: at + end,
                object: None,
            }));
    }

    /// Something outside the tracked code changes (or may change) the dict.
    pub(crate) fn lose_track(&mut self) {
        self.exact = false;
    }

    /// The dict's next item is `key: value`, already set by the caller (a shape's template
    /// has its keys in place before the values are set); `quoted_key` is the key as a JSON
    /// string with a comma before it and its colon after.
    pub(crate) fn expect(
        &mut self,
        key: &Bound<'py, PyString>,
        quoted_key: &[u8],
        value: &Bound<'py, PyAny>,
        json: Json<'_>,
    ) {
        if !self.exact {
            return;
        }
        let json = match (json, self.pairs.last()) {
            (Json::Again, Some(last)) if last.object.is_none() => Json::Again,
            (Json::Again, _) => Json::Later,
            (json, _) => json,
        };
        let out = &mut self.json;
        match self.pairs.is_empty() {
            true => out.extend(&quoted_key[1..]),
            false => out.extend(quoted_key),
        }
        let value_at = out.as_bytes().len();
        let mut object = None;
        match json {
            Json::Text(text) => jsonstr::push_quoted(out, text),
            Json::Int(n) => jsonnum::push_int(out, n),
            Json::Raw(bytes) => out.extend(bytes),
            Json::Again => {
                if let Some(last) = self.pairs.last() {
                    out.repeat(last.value_at, last.end);
                }
            }
            Json::Later => object = Some(value.clone()),
        }
        self.pairs.push(Pair {
            key: key.as_ptr() as usize,
            value_at,
            end: out.as_bytes().len(),
            object,
        });
    }

    /// `fields[key] = value`, tracked: a new item's pair is written, a replaced one's
    /// value noted.
    pub(crate) fn set(
        &mut self,
        fields: &mut FieldsOut<'py>,
        key: &Bound<'py, PyString>,
        quoted_key: &[u8],
        value: &Bound<'py, PyAny>,
        json: Json<'_>,
    ) -> PyResult<()> {
        if !self.exact {
            return fields.set(key, value);
        }
        let before = fields.len();
        fields.set(key, value)?;
        if fields.len() > before {
            match before == self.pairs.len() {
                true => self.expect(key, quoted_key, value, json),
                false => self.exact = false,
            }
            return Ok(());
        }
        let addr = key.as_ptr() as usize;
        match self.pairs.iter_mut().find(|p| p.key == addr) {
            Some(pair) => pair.object = Some(value.clone()),
            None => self.exact = false,
        }
        Ok(())
    }

    /// Whether the pairs are the items of fields of `len` items (what `write` writes).
    pub(crate) fn are(&self, len: usize) -> bool {
        self.exact && len == self.pairs.len()
    }

    /// Writes the fields (`{...}`, `len` items) when the pairs are them; `None` when the
    /// walk must.
    fn write(&self, out: &mut Out, strs: &mut QuotedStrs<'_>, len: usize) -> Option<bool> {
        if !self.are(len) {
            return None;
        }
        let json = self.json.as_bytes();
        out.push(b'{');
        let mut from = 0;
        for pair in &self.pairs {
            if let Some(v) = &pair.object {
                out.extend(&json[from..pair.value_at]);
                if !push_value(out, strs, v, 1) {
                    return Some(false);
                }
                from = pair.end;
            }
        }
        out.extend(&json[from..]);
        out.push(b'}');
        Some(true)
    }
}

thread_local! {
    /// The line is written here and copied out at its exact size (one allocation a line).
    static BUFFER: RefCell<Out> = RefCell::new(Out::with_capacity(4096));
    /// The head's recent times as text (a batch's receive time, a second's event time).
    static TIMES: RefCell<FloatTexts> = RefCell::new(FloatTexts::default());
}

/// Appends `v` as orjson writes it; `false` when it holds a value left to orjson (then
/// `out` holds a partial write the caller discards).
fn push_value(
    out: &mut Out,
    strs: &mut QuotedStrs<'_>,
    v: &Bound<'_, PyAny>,
    depth: usize,
) -> bool {
    if let Ok(s) = v.cast_exact::<PyString>() {
        return strs.push(out, s, false); // lone surrogates: orjson's error, the reference's to report
    }
    if v.is_exact_instance_of::<PyInt>() {
        if let Ok(n) = v.extract::<i64>() {
            jsonnum::push_int(out, n);
        } else if let Ok(n) = v.extract::<u64>() {
            jsonnum::push_int(out, n);
        } else {
            return false;
        }
        return true;
    }
    if v.is_none() {
        out.extend(b"null");
        return true;
    }
    if let Ok(f) = v.cast_exact::<PyFloat>() {
        return jsonnum::push_f64(out, f.value());
    }
    if let Ok(b) = v.cast_exact::<PyBool>() {
        out.extend(if b.is_true() { b"true" } else { b"false" });
        return true;
    }
    if depth >= MAX_DEPTH {
        return false;
    }
    if let Ok(d) = v.cast_exact::<PyDict>() {
        return push_dict(out, strs, d, depth + 1);
    }
    if let Ok(l) = v.cast_exact::<PyList>() {
        return push_items(out, strs, l.iter(), depth + 1);
    }
    if let Ok(t) = v.cast_exact::<PyTuple>() {
        return push_items(out, strs, t.iter(), depth + 1);
    }
    false
}

fn push_items<'py>(
    out: &mut Out,
    strs: &mut QuotedStrs<'_>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> bool {
    out.push(b'[');
    let mut first = true;
    for item in items {
        if !first {
            out.push(b',');
        }
        first = false;
        if !push_value(out, strs, &item, depth) {
            return false;
        }
    }
    out.push(b']');
    true
}

/// A dict in its insertion order, as orjson writes it (its keys exact strs).
fn push_dict(
    out: &mut Out,
    strs: &mut QuotedStrs<'_>,
    d: &Bound<'_, PyDict>,
    depth: usize,
) -> bool {
    out.push(b'{');
    let mut first = true;
    for (k, v) in d.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        let Ok(key) = k.cast_exact::<PyString>() else {
            return false;
        };
        if !strs.push(out, key, true) {
            return false;
        }
        out.push(b':');
        if !push_value(out, strs, &v, depth) {
            return false;
        }
    }
    out.push(b'}');
    true
}

/// A number of the line's head (`ts`, `created`): a float as the decode made it, or what
/// an event from elsewhere holds.
#[derive(Clone, Copy)]
pub(crate) enum Time<'a, 'py> {
    Float(f64),
    Object(&'a Bound<'py, PyAny>),
}

impl<'a, 'py> Time<'a, 'py> {
    /// The number as the reference takes it.
    fn object(self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Time::Float(x) => PyFloat::new(py, x).into_any(),
            Time::Object(v) => v.clone(),
        }
    }
}

/// The stored line of an event whose `raw` is already bounded, or `None` when it holds
/// something left to the reference (see the module's docs).
pub(crate) fn stored_line<'py>(
    py: Python<'py>,
    times: [Time<'_, 'py>; 2],
    module: &Bound<'py, PyAny>,
    fields: &Bound<'py, PyAny>,
    raw: &[u8],
    pre: Option<&Prewritten<'py>>,
) -> Option<Bound<'py, PyBytes>> {
    let text = match raw {
        [] => None,
        _ => Some(std::str::from_utf8(raw).ok()?),
    };
    BUFFER.with(|cell| {
        let mut out = cell.try_borrow_mut().ok()?;
        let mut strs = QuotedStrs::lock();
        out.clear(KEEP_BUFFER);
        out.push(b'[');
        for t in &times {
            let float = match t {
                Time::Float(x) => Ok(*x),
                Time::Object(v) => v.cast_exact::<PyFloat>().map(|f| f.value()).map_err(|_| *v),
            };
            let ok = match float {
                Ok(x) => TIMES.with(|memo| match memo.try_borrow_mut() {
                    Ok(mut memo) => memo.push(&mut out, x),
                    Err(_) => jsonnum::push_f64(&mut out, x),
                }),
                Err(v) => push_value(&mut out, &mut strs, v, 0),
            };
            if !ok {
                return None;
            }
            out.push(b',');
        }
        if !push_value(&mut out, &mut strs, module, 0) {
            return None;
        }
        out.push(b',');
        let len = match fields.cast_exact::<PyDict>() {
            Ok(d) => Some(d.len()),
            Err(_) => fields
                .cast_exact::<FieldsRecord>()
                .ok()
                .map(|r| r.get().record.len()),
        };
        let ahead = match (pre, len) {
            (Some(pre), Some(len)) => pre.write(&mut out, &mut strs, len),
            _ => None,
        };
        let written = match ahead {
            Some(written) => written,
            None => push_value(&mut out, &mut strs, fields, 0),
        };
        if !written {
            return None;
        }
        out.push(b',');
        match text {
            Some(text) => jsonstr::push_quoted(&mut out, text),
            None => out.extend(b"null"),
        }
        out.push(b']');
        let line = PyBytes::new(py, out.as_bytes());
        out.clear(KEEP_BUFFER);
        Some(line)
    })
}

/// The stored line: written here when it can be (nearly always), else by `reference`
/// (`segments.encode_line_reference`). A panic in the writer is counted (`panics()`) and
/// leaves the line to the reference too, so the event is stored all the same.
pub(crate) fn line_or_reference<'py>(
    py: Python<'py>,
    times: [Time<'_, 'py>; 2],
    module: &Bound<'py, PyAny>,
    fields: &Bound<'py, PyAny>,
    raw: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
    pre: Option<&Prewritten<'py>>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(bytes) = raw.cast_exact::<PyBytes>() {
        let written = catch_unwind(AssertUnwindSafe(|| {
            stored_line(py, times, module, fields, bytes.as_bytes(), pre)
        }));
        match written {
            Ok(Some(line)) => return Ok(line.into_any()),
            Ok(None) => {}
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let [ts, created] = times.map(|t| t.object(py));
    match as_dict(fields)? {
        Some(dict) => reference.call1((ts, created, module, dict, raw)),
        None => reference.call1((ts, created, module, fields, raw)),
    }
}

/// `segments.encode_line` with the reference behind it ([`line_or_reference`]).
#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct LineEncoder {
    reference: Py<PyAny>,
}

#[pymethods]
impl LineEncoder {
    #[new]
    fn new(reference: Py<PyAny>) -> Self {
        LineEncoder { reference }
    }

    /// `encode_line(ts, created, module, fields, raw) -> bytes`.
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        ts: &Bound<'py, PyAny>,
        created: &Bound<'py, PyAny>,
        module: &Bound<'py, PyAny>,
        fields: &Bound<'py, PyAny>,
        raw: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let times = [Time::Object(ts), Time::Object(created)];
        line_or_reference(
            py,
            times,
            module,
            fields,
            raw,
            self.reference.bind(py),
            None,
        )
    }

    /// Whether this encoder wrote the line itself (tests: the reference's cases stay its).
    fn writes<'py>(
        &self,
        py: Python<'py>,
        ts: &Bound<'py, PyAny>,
        created: &Bound<'py, PyAny>,
        module: &Bound<'py, PyAny>,
        fields: &Bound<'py, PyAny>,
        raw: &Bound<'py, PyBytes>,
    ) -> bool {
        let times = [Time::Object(ts), Time::Object(created)];
        stored_line(py, times, module, fields, raw.as_bytes(), None).is_some()
    }
}
