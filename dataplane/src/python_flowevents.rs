//! `FlowEvents`: a batch of decoded flows held as native records, with each flow's Python
//! `Event` (and its fields dict) made only when Python asks for that flow.
//!
//! The flow path's native stages (baselines, candidate groups, `DetectionFeeds` with the
//! windows and groups they feed) read a record's values in place through [`EventFields`],
//! the same accessor they use on an event's dict, so a flow that only feeds native state
//! costs no dict, no `Event` and no deallocation of either. Everything else sees a sequence
//! of `Event`s: indexing makes that flow's event (once; the same object afterwards, so what
//! a stage adds to its fields is what the next stage reads: a native reader takes a made
//! event's dict, never the record, from then on), iterating makes them all, and a slice is a
//! `FlowEvents` over the same records and made events.
//!
//! A record keeps its own values in its shape's key order, integers as numbers
//! ([`FlowValue`]); the shape holds the exporter's values every flow of the datagram shares
//! and the prototype dict the event's fields are copied from, so a made event's dict is
//! `decode_batch`'s record key for key. The records share their list values
//! (`event.category`, `event.type`): a native reader never keeps or changes a value it
//! reads, and a made event's fields get copies of the lists.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySlice, PyString};
use pyo3::IntoPyObjectExt;

use crate::python::field_value;
use crate::python_event::{Attr, Event};
use crate::python_record::{owned, FieldsRecord};
use crate::rules::{Fields, Known, ShapeFields, Val};

/// What makes a flow's `Event`, as the listener's source would:
/// `Event(ts, created, "netflow", fields, b"", None, None, listener)`.
pub(crate) struct Maker {
    class: Py<PyAny>,
    module: Py<PyString>,
    raw: Py<PyBytes>,
    listener: Py<PyAny>,
}

impl Maker {
    pub(crate) fn new(class: &Bound<'_, PyAny>, listener: &Bound<'_, PyAny>) -> Self {
        let py = class.py();
        Maker {
            class: class.clone().unbind(),
            module: PyString::intern(py, "netflow").unbind(),
            raw: PyBytes::new(py, b"").unbind(),
            listener: listener.clone().unbind(),
        }
    }

    pub(crate) fn make<'py>(
        &self,
        ts: &Bound<'py, PyAny>,
        created: &Bound<'py, PyAny>,
        fields: Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = ts.py();
        Event::make(
            self.class.bind(py),
            ts.clone(),
            created.clone(),
            self.module.bind(py).clone().into_any(),
            fields.into_any(),
            self.raw.bind(py).clone().into_any(),
            py.None().into_bound(py),
            Some(self.listener.bind(py).clone()),
        )
    }
}

/// A flow record's own value: an integer as its number, made a Python `int` only when it is
/// read as an object (a made event's dict, a reader that keeps the object); anything else
/// (a text, a list, a float, an integer past 64 bits) as the object. The decoder's integers
/// (ports, counters, flags) are most of a flow's values, and the rules and the windows read
/// them as numbers: each made an `int` with the flow (allocated past 256) and freed with its
/// chunk was ~4 % of the flow path on the bench's flows, whose counters are small.
pub(crate) enum FlowValue {
    Int(i64),
    Obj(Py<PyAny>),
}

impl FlowValue {
    /// The value as the reference holds it.
    pub(crate) fn object<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.held().object(py)
    }

    fn held(&self) -> Held<'_> {
        match self {
            FlowValue::Int(n) => Held::Int(*n),
            FlowValue::Obj(o) => Held::Obj(o),
        }
    }
}

/// A value a record or its shape holds, lent.
#[derive(Clone, Copy)]
pub(crate) enum Held<'a> {
    Int(i64),
    Obj(&'a Py<PyAny>),
}

impl<'a> Held<'a> {
    pub(crate) fn object<'py>(self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Held::Int(n) => match n.into_pyobject(py) {
                Ok(v) => v.into_any(),
                Err(e) => match e {},
            },
            Held::Obj(o) => o.bind(py).clone(),
        }
    }

    /// The value as the rules read it (`held_value` of its object).
    fn val(self, py: Python<'a>) -> Val<'a> {
        match self {
            Held::Int(n) => Val::Int(n),
            Held::Obj(o) => held_value(o.bind(py)),
        }
    }
}

/// A field's value as a native reader takes it: the object, or a record's integer as its
/// number (`EventFields::read`).
pub(crate) enum Read<'py> {
    Int(i64),
    Obj(Bound<'py, PyAny>),
}

/// The keys of the records of one shape (a template's fields and the optional keys a record
/// has), with the exporter's pairs every flow of the datagram ends with.
pub(crate) struct Shape {
    /// A record's own keys, in the order its values are kept (the reference's insert order).
    keys: Vec<Py<PyString>>,
    /// The exporter's keys and values, after the record's own (none of them a record key).
    common: Vec<(Py<PyString>, Py<PyAny>)>,
    /// The own keys (set to None) then the exporter's pairs: a made event's fields start
    /// as a copy of it (made with the shape's first event: most shapes never make one).
    proto: OnceLock<Py<PyDict>>,
    /// Open addressing on each key object's address: (address, index among own then
    /// exporter's keys), `u32::MAX` for an empty slot; at most half full. The decoder's keys
    /// are interned, and so are every native reader's: one object per text, so a key's
    /// address is the key.
    by_address: Vec<(usize, u32)>,
}

/// A key object's slot in `by_address` (its address past the allocator's alignment).
fn address_slot(p: usize, mask: usize) -> usize {
    ((p >> 4) ^ (p >> 12)) & mask
}

impl Shape {
    pub(crate) fn new(keys: Vec<Py<PyString>>, common: Vec<(Py<PyString>, Py<PyAny>)>) -> Self {
        let n = keys.len() + common.len();
        let size = (2 * n).next_power_of_two().max(8);
        let mut by_address = vec![(0usize, u32::MAX); size];
        for (i, k) in keys.iter().chain(common.iter().map(|(k, _)| k)).enumerate() {
            let p = k.as_ptr() as usize;
            let mut at = address_slot(p, size - 1);
            while by_address[at].1 != u32::MAX {
                at = (at + 1) & (size - 1);
            }
            by_address[at] = (p, i as u32);
        }
        Shape {
            keys,
            common,
            proto: OnceLock::new(),
            by_address,
        }
    }

    /// A copy of the prototype dict (made now if it was not).
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if let Some(p) = self.proto.get() {
            return p.bind(py).copy();
        }
        let p = PyDict::new(py);
        for k in &self.keys {
            p.set_item(k, py.None())?;
        }
        for (k, v) in &self.common {
            p.set_item(k, v)?;
        }
        let copy = p.copy()?;
        let _ = self.proto.set(p.unbind());
        Ok(copy)
    }

    /// A key's value in a record of this shape (own keys, then the exporter's); `key` is
    /// interned (see `by_address`).
    fn find<'a>(&'a self, values: &'a [FlowValue], key: &Bound<'_, PyString>) -> Option<Held<'a>> {
        let i = self.position(key)?;
        match i.checked_sub(self.keys.len()) {
            None => values.get(i).map(FlowValue::held),
            Some(c) => self.common.get(c).map(|(_, v)| Held::Obj(v)),
        }
    }

    /// Whether `key` (interned) is one of this shape's keys.
    pub(crate) fn has(&self, key: &Bound<'_, PyString>) -> bool {
        self.position(key).is_some()
    }

    /// Whether `key` (interned) is one of the keys a record holds a value of its own for.
    pub(crate) fn owns(&self, key: &Bound<'_, PyString>) -> bool {
        self.position(key).is_some_and(|i| i < self.keys.len())
    }

    fn position(&self, key: &Bound<'_, PyString>) -> Option<usize> {
        let mask = self.by_address.len() - 1;
        let p = key.as_ptr() as usize;
        let mut at = address_slot(p, mask);
        loop {
            let (kp, i) = self.by_address[at];
            if i == u32::MAX {
                return None;
            }
            if kp == p {
                return Some(i as usize);
            }
            at = (at + 1) & mask;
        }
    }
}

/// A flow shape's identity while its chunk lives: the chunk's address and the shape's place
/// in it (`EventAt::flow_shape`).
pub(crate) type ShapeId = (usize, usize);

/// One flow: its event time, its shape, and where its own values start among its chunk's
/// (as many as its shape has own keys; none for a flow whose event was made at once).
pub(crate) struct FlowRecord {
    pub(crate) ts: Py<PyAny>,
    pub(crate) shape: usize,
    pub(crate) start: usize,
}

/// One datagram's flows.
pub(crate) struct Chunk {
    maker: Arc<Maker>,
    /// When the datagram was received (each event's `created`).
    created: Py<PyAny>,
    shapes: Vec<Shape>,
    records: Vec<FlowRecord>,
    /// The records' own values, one record's after another: one allocation for the
    /// datagram's flows, not one a flow.
    values: Vec<FlowValue>,
    /// Per shape: a record of it holds a None (then the shape answers no rule for it; see
    /// [`ShapeKnown`]).
    none_in: Box<[bool]>,
    /// Each flow's event once made (set once; a flow the decoder made an event for at
    /// once has it from the start).
    made: Box<[OnceLock<Py<PyAny>>]>,
}

impl Chunk {
    /// `premade`: (record index, its event) for flows whose event the decoder made itself.
    pub(crate) fn new(
        py: Python<'_>,
        maker: Arc<Maker>,
        created: Py<PyAny>,
        shapes: Vec<Shape>,
        records: Vec<FlowRecord>,
        values: Vec<FlowValue>,
        premade: Vec<(usize, Py<PyAny>)>,
    ) -> Self {
        let made: Box<[OnceLock<Py<PyAny>>]> = records.iter().map(|_| OnceLock::new()).collect();
        let mut none_in: Box<[bool]> = shapes.iter().map(|_| false).collect();
        for rec in &records {
            if let Some(flag) = none_in.get_mut(rec.shape) {
                let own = own_values(&shapes, &values, rec);
                *flag = *flag
                    || own
                        .iter()
                        .any(|v| matches!(v, FlowValue::Obj(o) if o.is_none(py)));
            }
        }
        for (i, ev) in premade {
            if let Some(slot) = made.get(i) {
                let _ = slot.set(ev);
            }
        }
        Chunk {
            maker,
            created,
            shapes,
            records,
            values,
            none_in,
            made,
        }
    }

    /// A record's own values.
    fn own(&self, rec: &FlowRecord) -> &[FlowValue] {
        own_values(&self.shapes, &self.values, rec)
    }

    /// Flow `i`'s event, made now if it was not.
    fn event<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let slot = &self.made[i];
        if let Some(ev) = slot.get() {
            return Ok(ev.bind(py).clone());
        }
        let rec = &self.records[i];
        let shape = &self.shapes[rec.shape];
        let d = shape.fields(py)?;
        for (k, v) in shape.keys.iter().zip(self.own(rec)) {
            // the records share their lists (`event.category`...): each event its own
            d.set_item(k, owned(&v.object(py))?)?;
        }
        let ev = self.maker.make(rec.ts.bind(py), self.created.bind(py), d)?;
        // Another thread may have made it meanwhile (Python ran in `call1`): theirs stands.
        let _ = slot.set(ev.clone().unbind());
        Ok(slot.get().map_or(ev, |e| e.bind(py).clone()))
    }
}

impl Drop for Chunk {
    /// The datagram's objects (its values that are not numbers, and the flows' times)
    /// released under one check of the interpreter, as a record's are
    /// (`python_record::Record`): each dropped alone checked a thread-local.
    fn drop(&mut self) {
        let values = std::mem::take(&mut self.values);
        let records = std::mem::take(&mut self.records);
        Python::attach(|py| {
            for v in values {
                if let FlowValue::Obj(o) = v {
                    o.drop_ref(py);
                }
            }
            for rec in records {
                rec.ts.drop_ref(py);
            }
        });
    }
}

/// `rec`'s own values among `values` (empty for a record with no shape: its event was made).
fn own_values<'a>(shapes: &[Shape], values: &'a [FlowValue], rec: &FlowRecord) -> &'a [FlowValue] {
    let n = shapes.get(rec.shape).map_or(0, |s| s.keys.len());
    values.get(rec.start..rec.start + n).unwrap_or_default()
}

/// A run of one chunk's flows.
#[derive(Clone)]
struct Segment {
    chunk: Arc<Chunk>,
    start: usize,
    end: usize,
}

/// Flows decoded natively, each made a Python `Event` only when asked for (module doc).
#[pyclass(frozen, sequence, module = "appliance._dataplane")]
pub struct FlowEvents {
    segments: Vec<Segment>,
    /// Each segment's end in this sequence's positions.
    ends: Vec<usize>,
}

impl FlowEvents {
    pub(crate) fn of_chunk(chunk: Chunk) -> Self {
        let n = chunk.records.len();
        Self::from_segments(vec![Segment {
            chunk: Arc::new(chunk),
            start: 0,
            end: n,
        }])
    }

    fn from_segments(segments: Vec<Segment>) -> Self {
        let mut ends = Vec::with_capacity(segments.len());
        let mut at = 0;
        for s in &segments {
            at += s.end - s.start;
            ends.push(at);
        }
        FlowEvents { segments, ends }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Flow `i` of this sequence: its chunk and index there.
    fn locate(&self, i: usize) -> Option<(&Chunk, usize)> {
        self.locate_near(i, &std::cell::Cell::new(0))
    }

    /// `locate`, trying the segment `hint` names first and leaving `i`'s there: a reader
    /// walking the flows in order finds each in its predecessor's segment (or the next),
    /// without a search over the segments (a batch joins one per datagram).
    fn locate_near(&self, i: usize, hint: &std::cell::Cell<usize>) -> Option<(&Chunk, usize)> {
        let h = hint.get();
        let fits =
            |s: usize| s < self.ends.len() && self.ends[s] > i && (s == 0 || self.ends[s - 1] <= i);
        let s = if fits(h) {
            h
        } else if fits(h + 1) {
            h + 1
        } else {
            self.ends.partition_point(|&e| e <= i)
        };
        hint.set(s);
        let seg = self.segments.get(s)?;
        let before = if s == 0 { 0 } else { self.ends[s - 1] };
        Some((&seg.chunk, seg.start + (i - before)))
    }

    /// Flow `i` as a native reader takes it: its made event, else its record (`hint` as
    /// `locate_near`'s).
    pub(crate) fn at<'a, 'py>(
        &'a self,
        py: Python<'py>,
        i: usize,
        hint: &std::cell::Cell<usize>,
    ) -> Option<EventAt<'a, 'py>> {
        let (chunk, j) = self.locate_near(i, hint)?;
        Some(match chunk.made[j].get() {
            Some(ev) => EventAt::Obj(ev.bind(py).clone()),
            None => EventAt::Flow(chunk, j),
        })
    }

    fn event<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        match self.locate(i) {
            Some((chunk, j)) => chunk.event(py, j),
            None => Err(PyIndexError::new_err("FlowEvents index out of range")),
        }
    }

    /// Positions `start..end` (within bounds) as a sequence over the same flows.
    fn range(&self, start: usize, end: usize) -> FlowEvents {
        let mut out = Vec::new();
        let mut before = 0;
        for (seg, &e) in self.segments.iter().zip(&self.ends) {
            let (lo, hi) = (start.max(before), end.min(e));
            if lo < hi {
                out.push(Segment {
                    chunk: seg.chunk.clone(),
                    start: seg.start + (lo - before),
                    end: seg.start + (hi - before),
                });
            }
            before = e;
        }
        FlowEvents::from_segments(out)
    }

    fn all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for i in 0..self.len() {
            out.append(self.event(py, i)?)?;
        }
        Ok(out)
    }
}

#[pymethods]
impl FlowEvents {
    fn __len__(&self) -> usize {
        self.len()
    }

    /// An index makes that flow's event (once); a slice with step 1 is a `FlowEvents` over
    /// the same flows, any other a list of their events.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = self.len();
        if let Ok(slice) = index.cast::<PySlice>() {
            let ix = slice.indices(isize::try_from(n).unwrap_or(isize::MAX))?;
            if ix.step == 1 {
                let (lo, hi) = (ix.start.max(0) as usize, ix.stop.max(0) as usize);
                return self.range(lo, hi.max(lo)).into_bound_py_any(py);
            }
            let out = PyList::empty(py);
            let mut i = ix.start;
            for _ in 0..ix.slicelength {
                out.append(self.event(py, i as usize)?)?;
                i += ix.step;
            }
            return Ok(out.into_any());
        }
        let Ok(i) = index.extract::<isize>() else {
            return Err(PyTypeError::new_err(
                "FlowEvents indices are integers or slices",
            ));
        };
        let i = if i < 0 { i + n as isize } else { i };
        if i < 0 || i as usize >= n {
            return Err(PyIndexError::new_err("FlowEvents index out of range"));
        }
        self.event(py, i as usize)
    }

    /// Iterating makes every flow's event.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.all(py)?.try_iter()?.into_any())
    }

    /// The flows of several sequences, in order, as one (no flow copied).
    #[staticmethod]
    fn join(parts: Vec<Bound<'_, FlowEvents>>) -> FlowEvents {
        let segments = parts
            .iter()
            .flat_map(|p| p.get().segments.iter().cloned())
            .collect();
        FlowEvents::from_segments(segments)
    }

    /// How many of these flows have had their event made.
    #[getter]
    fn made(&self) -> usize {
        let made = |s: &Segment| {
            s.chunk.made[s.start..s.end]
                .iter()
                .filter(|m| m.get().is_some())
                .count()
        };
        self.segments.iter().map(made).sum()
    }
}

/// An event as a native reader takes it: the Python object, or a flow not made one.
pub(crate) enum EventAt<'a, 'py> {
    Obj(Bound<'py, PyAny>),
    Flow(&'a Chunk, usize),
}

impl<'a, 'py> EventAt<'a, 'py> {
    /// Its fields: the event's dict (None: `fields` missing or not a dict), or the record.
    #[inline(always)]
    pub(crate) fn fields(&self, py: Python<'py>) -> Option<EventFields<'a, 'py>> {
        match self {
            EventAt::Obj(ev) => EventFields::of(Event::fields_view(ev).ok()?, false),
            EventAt::Flow(c, j) => {
                let rec = &c.records[*j];
                Some(EventFields::Flow(py, &c.shapes[rec.shape], c.own(rec)))
            }
        }
    }

    /// A flow not made an event: an identity of its shape (its chunk's address, stable
    /// while the chunk lives, and the shape's place in it) and the shape.
    #[inline(always)]
    pub(crate) fn flow_shape(&self) -> Option<(ShapeId, &'a Shape)> {
        match self {
            EventAt::Obj(_) => None,
            EventAt::Flow(c, j) => {
                let s = c.records[*j].shape;
                Some(((*c as *const Chunk as usize, s), &c.shapes[s]))
            }
        }
    }

    /// A flow not made an event whose shape answers for it (no record of the shape holds
    /// a None): an identity of its shape (as `flow_shape`'s) and the shape.
    #[inline(always)]
    pub(crate) fn answering_shape(&self) -> Option<(ShapeId, &'a Shape)> {
        match self {
            EventAt::Flow(c, j) if !c.none_in[c.records[*j].shape] => self.flow_shape(),
            _ => None,
        }
    }

    /// Its fields when they are exactly a dict (or the record); None when not.
    pub(crate) fn exact_fields(&self, py: Python<'py>) -> PyResult<Option<EventFields<'a, 'py>>> {
        if let EventAt::Obj(ev) = self {
            return Ok(EventFields::of(Event::fields_view(ev)?, true));
        }
        Ok(self.fields(py))
    }

    /// One of the event's attributes (a flow's `timestamp`, `module`, `listener`, `raw` and
    /// `id` without making its event).
    #[inline(always)]
    pub(crate) fn attr(&self, py: Python<'py>, which: Attr) -> PyResult<Bound<'py, PyAny>> {
        match self {
            EventAt::Obj(ev) => Event::read(ev, which),
            EventAt::Flow(c, j) => {
                let m = &c.maker;
                Ok(match which {
                    Attr::Timestamp => c.records[*j].ts.bind(py).clone(),
                    Attr::Module => m.module.bind(py).clone().into_any(),
                    Attr::Listener => m.listener.bind(py).clone(),
                    Attr::Raw => m.raw.bind(py).clone().into_any(),
                    Attr::Id => py.None().into_bound(py),
                    _ => Event::read(&c.event(py, *j)?, which)?,
                })
            }
        }
    }
}

/// An event's fields as the native readers look them up: its dict, or a flow's record.
pub(crate) enum EventFields<'a, 'py> {
    Dict(Bound<'py, PyDict>),
    Flow(Python<'py>, &'a Shape, &'a [FlowValue]),
    /// The batch decode's record, its dict not made (`python_record`).
    Record(Bound<'py, FieldsRecord>),
}

impl<'a, 'py> EventFields<'a, 'py> {
    /// An event's `fields` object: a dict (only exactly one if `exact`), or a record; None
    /// for anything else.
    fn of(fields: Bound<'py, PyAny>, exact: bool) -> Option<Self> {
        let fields = match fields.cast_into_exact::<FieldsRecord>() {
            Ok(r) => return Some(EventFields::Record(r)),
            Err(e) => e.into_inner(),
        };
        match exact {
            true => fields.cast_into_exact::<PyDict>().ok(),
            false => fields.cast_into::<PyDict>().ok(),
        }
        .map(EventFields::Dict)
    }

    /// `fields.get(key)`; `key` interned (`PyString::intern`), as every native reader's
    /// keys are: a flow's record finds its keys by address.
    #[inline(always)]
    pub(crate) fn item(&self, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self {
            EventFields::Dict(d) => d.get_item(key),
            EventFields::Flow(py, shape, values) => {
                Ok(shape.find(values, key).map(|v| v.object(*py)))
            }
            EventFields::Record(r) => Ok(r.get().record.get(key).map(|v| v.bind(r.py()).clone())),
        }
    }

    /// `fields.get(key)` as `item`, a flow record's integer as its number (no object made).
    #[inline(always)]
    pub(crate) fn read(&self, key: &Bound<'py, PyString>) -> PyResult<Option<Read<'py>>> {
        match self {
            EventFields::Flow(py, shape, values) => Ok(shape.find(values, key).map(|v| match v {
                Held::Int(n) => Read::Int(n),
                Held::Obj(o) => Read::Obj(o.bind(*py).clone()),
            })),
            _ => Ok(self.item(key)?.map(Read::Obj)),
        }
    }

    #[inline(always)]
    pub(crate) fn contains(&self, key: &Bound<'py, PyString>) -> PyResult<bool> {
        Ok(self.item(key)?.is_some())
    }
}

/// The events a native reader is handed: a list of `Event`s, or a `FlowEvents` (with the
/// segment the last flow read was in).
pub(crate) enum EventsIn<'py> {
    List(Bound<'py, PyList>),
    Flows(Bound<'py, FlowEvents>, std::cell::Cell<usize>),
}

impl<'py> EventsIn<'py> {
    pub(crate) fn of(events: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(f) = events.cast::<FlowEvents>() {
            return Ok(EventsIn::Flows(f.clone(), std::cell::Cell::new(0)));
        }
        Ok(EventsIn::List(events.cast::<PyList>()?.clone()))
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        match self {
            EventsIn::List(l) => l.len(),
            EventsIn::Flows(f, _) => f.get().len(),
        }
    }

    #[inline(always)]
    pub(crate) fn at(&self, i: usize) -> PyResult<EventAt<'_, 'py>> {
        match self {
            EventsIn::List(l) => Ok(EventAt::Obj(l.get_item(i)?)),
            EventsIn::Flows(f, hint) => f
                .get()
                .at(f.py(), i, hint)
                .ok_or_else(|| PyIndexError::new_err("FlowEvents index out of range")),
        }
    }

    /// Event `i` as Python sees it (a flow's made now).
    pub(crate) fn object(&self, i: usize) -> PyResult<Bound<'py, PyAny>> {
        match self {
            EventsIn::List(l) => l.get_item(i),
            EventsIn::Flows(f, _) => f.get().event(f.py(), i),
        }
    }
}

/// A shape's fields as the rules see them before a record is read, by the matcher's field
/// indices (interned keys): a key none of its records has is missing; the exporter's values
/// are the same in each; a record's own keys are present in each, never None when the chunk
/// says so (`EventAt::answering_shape`): the decoder makes ints, texts and lists.
pub(crate) struct ShapeKnown<'a, 'py> {
    pub(crate) py: Python<'py>,
    pub(crate) shape: &'a Shape,
    pub(crate) keys: &'a [Py<PyString>],
}

impl ShapeFields for ShapeKnown<'_, '_> {
    fn known(&self, field: usize) -> Known<'_> {
        let Some(key) = self.keys.get(field) else {
            return Known::Missing;
        };
        let own = self.shape.keys.len();
        match self.shape.position(key.bind(self.py)) {
            None => Known::Missing,
            Some(i) if i < own => Known::Present,
            Some(i) => match self.shape.common.get(i - own) {
                Some((_, v)) => Known::Value(field_value(v.bind(self.py), 0)),
                None => Known::Missing,
            },
        }
    }
}

/// A flow record's fields as the rules read them, by the matcher's field indices (interned
/// keys). A text is lent from the record's own str for as long as the record is borrowed, so
/// nothing is kept per read: the record's keys are found by address, and what an event's
/// dict needs remembered between reads (`DictFields`) a flow gets back at the cost of one
/// probe.
pub(crate) struct FlowFields<'a, 'py> {
    pub(crate) py: Python<'py>,
    pub(crate) shape: &'a Shape,
    pub(crate) values: &'a [FlowValue],
    pub(crate) keys: &'a [Py<PyString>],
}

impl Fields for FlowFields<'_, '_> {
    fn get(&self, field: usize) -> Option<Val<'_>> {
        let key = self.keys.get(field)?.bind(self.py);
        Some(self.shape.find(self.values, key)?.val(self.py))
    }
}

/// A field's value as the rules read it, a text lent from the str a record holds.
pub(crate) fn held_value<'a>(v: &'a Bound<'_, PyAny>) -> Val<'a> {
    match v.cast_exact::<PyString>() {
        Ok(s) => match s.to_str() {
            Ok(t) => Val::Str(Cow::Borrowed(t)),
            Err(_) => Val::Other, // lone surrogates
        },
        Err(_) => field_value(v, 0),
    }
}
