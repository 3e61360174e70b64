//! An event's fields as the batch decode sets them, without the dict until Python asks.
//!
//! Messages of one header shape and priority share their header's keys in order and the
//! values that do not change (`HeaderTemplate`): a record is that template (shared, not
//! copied) with the message's own values in its slots and the items the decoders add after
//! it, in order. The native readers (the rules, the windows, the segment rows, baselines)
//! find a key by its address, as they do a flow's record; the stored line is written from
//! the pairs the decode wrote ahead (`Prewritten`). The dict, the same dict as the decode
//! made before (keys in the same order, the same objects), is made when Python first reads
//! `Event.fields`, and kept from then on. Copying the template's dict, setting ~20 items,
//! looking keys up by hash and freeing it was ~10 % of a syslog/TCP message's time.
//!
//! Only interned keys go in: a key is found by address, and an interned str is the only
//! object with its text. Whatever sets a key from elsewhere (a sender's static fields, a
//! Python vendor decoder, a key a decoder file does not list), a line the pairs cannot
//! write, and fields of more than [`MAX_ITEMS`] items have the dict made first
//! ([`FieldsOut::dict`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use smallvec::SmallVec;

use crate::python_flowevents::held_value;
use crate::rules::{Fields, Val};

/// Places in a record's table of its keys (a power of two).
const TABLE: usize = 64;

/// Keys a header template has at most for a record (a header has 22 at most).
const SLOTS: usize = 24;

/// Items past the template a record holds in place; more go to an allocation of their own.
const INLINE: usize = 12;

/// Items a record holds at most (the table stays at most three quarters full, so a probe
/// meets an empty place soon); past this the fields are a dict.
const MAX_ITEMS: usize = 48;

/// Batch events whose fields were made a dict up front because they passed a record's bound
/// (a header template of more than [`SLOTS`] keys, or more than [`MAX_ITEMS`] items): the
/// same event at more CPU, counted so that a site's wide lines show in the metrics
/// (`records_past_bound`).
pub(crate) static PAST_BOUND: AtomicU64 = AtomicU64::new(0);

/// A key's first place in the table, from its address (objects are 16-byte aligned).
#[inline(always)]
fn home(key: usize) -> usize {
    ((key >> 4) ^ (key >> 10)) & (TABLE - 1)
}

/// Each item's place by its key's address, open-addressed: `0` is an empty place, `i + 1`
/// the item `i`. The rules look up ~15 keys an event, many of them missing; a scan of the
/// keys was ~1,700 instructions a line, a hash map's lookup ~60 a key.
type Table = [u8; TABLE];

/// A header template's keys in order, and the values it holds for every message made from
/// it (`None` in the slots each message sets).
pub(crate) struct RecordTemplate {
    /// The template dict itself, copied when a record's dict is made.
    dict: Py<PyDict>,
    keys: Vec<Py<PyString>>,
    values: Vec<Py<PyAny>>,
    /// The keys' places, copied into each record made from this.
    table: Table,
}

impl RecordTemplate {
    /// From a template dict whose keys are all interned (`header_fields`' names); `None`
    /// when it has too many for a record.
    pub(crate) fn of(dict: &Bound<'_, PyDict>) -> PyResult<Option<Arc<Self>>> {
        let py = dict.py();
        if dict.len() > SLOTS {
            return Ok(None);
        }
        let mut keys: Vec<Py<PyString>> = Vec::with_capacity(dict.len());
        let mut values = Vec::with_capacity(dict.len());
        let mut table = [0; TABLE];
        for (k, v) in dict.iter() {
            // interned again: the same object when it already is, as the header's keys are
            let k = PyString::intern(py, k.cast::<PyString>()?.to_str()?);
            keys.push(k.unbind());
            values.push(v.unbind());
            place(&mut table, keys.len() - 1, |i| keys[i].as_ptr());
        }
        Ok(Some(Arc::new(RecordTemplate {
            dict: dict.clone().unbind(),
            keys,
            values,
            table,
        })))
    }
}

/// Puts item `i` in the table (`key_at` gives an item's key): at its key's home, or the next
/// empty place after it.
fn place(table: &mut Table, i: usize, key_at: impl Fn(usize) -> *mut pyo3::ffi::PyObject) {
    let mut h = home(key_at(i) as usize);
    while table[h] != 0 {
        h = (h + 1) & (TABLE - 1);
    }
    table[h] = (i + 1) as u8;
}

/// Item `i`'s key: the template's, then the items past it.
#[inline(always)]
fn key_at(
    template: &RecordTemplate,
    extra: &[(Py<PyString>, Py<PyAny>)],
    i: usize,
) -> *mut pyo3::ffi::PyObject {
    match template.keys.get(i) {
        Some(k) => k.as_ptr(),
        None => extra[i - template.keys.len()].0.as_ptr(),
    }
}

/// The fields while the decode sets them: a template's slots and the items after it.
pub(crate) struct Record {
    template: Arc<RecordTemplate>,
    /// The message's value of each template key; `None` keeps the template's. Held in
    /// place (not in an allocation of their own): a native reader reads them a pass or two
    /// after the decode, when the record's memory is no longer in cache, and the object's
    /// own lines are the ones the event's read has just brought in.
    slots: [Option<Py<PyAny>>; SLOTS],
    /// The items past the template, in place up to [`INLINE`] (a decoder sets ~5-10): a
    /// record is then one block of the interpreter's small-object allocator, where a
    /// vector of its own was a `malloc` and a `free` an event.
    extra: SmallVec<[(Py<PyString>, Py<PyAny>); INLINE]>,
    /// Every item's place, the template's first.
    table: Table,
}

// A record and its object's header fit the interpreter's small-object blocks (512 bytes).
const _: () = assert!(std::mem::size_of::<Record>() <= 480);

impl Record {
    pub(crate) fn new(template: Arc<RecordTemplate>) -> Self {
        Record {
            table: template.table,
            template,
            slots: [const { None }; SLOTS],
            extra: SmallVec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.template.keys.len() + self.extra.len()
    }

    #[inline(always)]
    fn key_at(&self, i: usize) -> *mut pyo3::ffi::PyObject {
        key_at(&self.template, &self.extra, i)
    }

    /// Where `key` (interned) is: a template slot, or past the template.
    #[inline]
    fn position(&self, key: *mut pyo3::ffi::PyObject) -> Option<usize> {
        let mut h = home(key as usize);
        loop {
            let i = usize::from(self.table[h]).checked_sub(1)?;
            if self.key_at(i) == key {
                return Some(i);
            }
            h = (h + 1) & (TABLE - 1);
        }
    }

    /// `fields[key] = value` for an interned `key`; whether the key is new, or `None` when
    /// the record is full (nothing set: the caller makes the dict).
    pub(crate) fn set(
        &mut self,
        key: &Bound<'_, PyString>,
        value: &Bound<'_, PyAny>,
    ) -> Option<bool> {
        let n = self.template.keys.len();
        match self.position(key.as_ptr()) {
            Some(i) if i < n => {
                self.slots[i] = Some(value.clone().unbind());
                Some(false)
            }
            Some(i) => {
                self.extra[i - n].1 = value.clone().unbind();
                Some(false)
            }
            None if self.len() >= MAX_ITEMS => None,
            None => {
                self.extra
                    .push((key.clone().unbind(), value.clone().unbind()));
                let at = self.len() - 1;
                let (template, extra) = (&self.template, &self.extra);
                place(&mut self.table, at, |i| key_at(template, extra, i));
                Some(true)
            }
        }
    }

    /// `fields.get(key)` for an interned `key`.
    pub(crate) fn get<'a>(&'a self, key: &Bound<'_, PyString>) -> Option<&'a Py<PyAny>> {
        let n = self.template.keys.len();
        let i = self.position(key.as_ptr())?;
        Some(match i < n {
            true => self.slots[i].as_ref().unwrap_or(&self.template.values[i]),
            false => &self.extra[i - n].1,
        })
    }

    /// The dict the decode would have made: a copy of the template's (its keys in order),
    /// the message's values set in their places, then the rest, each list a copy of its
    /// own (a decoder's list constants are shared by the records they are set in).
    pub(crate) fn dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.template;
        let d = t.dict.bind(py).copy()?;
        for (k, slot) in t.keys.iter().zip(&self.slots) {
            if let Some(v) = slot {
                d.set_item(k.bind(py), owned(v.bind(py))?)?;
            }
        }
        for (k, v) in &self.extra {
            d.set_item(k.bind(py), owned(v.bind(py))?)?;
        }
        Ok(d)
    }
}

/// `value` as a dict may hold it: a list copied (a record's list may be a decoder's
/// constant, shared by the records it is set in), anything else as it is.
pub(crate) fn owned<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value.cast_exact::<PyList>() {
        Ok(list) => PyList::new(value.py(), list.iter())?.into_any(),
        Err(_) => value.clone(),
    })
}

impl Drop for Record {
    /// The references released under one check of the interpreter (a `Py` dropped alone
    /// checks a thread-local each time). The extra items are drained in place: taken out
    /// first, the ~200-byte inline vector was copied every event.
    fn drop(&mut self) {
        let n = self.template.keys.len();
        let (slots, extra) = (&mut self.slots[..n], &mut self.extra);
        Python::attach(|py| {
            slots.iter_mut().for_each(|v| {
                if let Some(v) = v.take() {
                    v.drop_ref(py)
                }
            });
            for (k, v) in extra.drain(..) {
                k.drop_ref(py);
                v.drop_ref(py);
            }
        });
    }
}

/// A record as an event holds it until its dict is made (`Event.fields`). Never seen from
/// Python: the event's `fields` reads the dict.
///
/// No `__traverse__`: nothing in a record can refer back to it (its values are made by the
/// decode before it exists, and Python never holds it), so it is never in a cycle, and the
/// collector's passes need not visit its ~30 values (they did, ~1 % of the syslog/TCP loop).
/// pyo3 still has the collector track the object (`gc.is_tracked` is true); it finds no
/// references through it.
#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct FieldsRecord {
    pub(crate) record: Record,
}

/// The fields being set by the decode: a record, or the dict once something needs one.
/// One lives on the stack per message being decoded: the record is not boxed, so making one
/// allocates only its extra items and, at the end, the object that holds it.
#[allow(clippy::large_enum_variant)]
pub(crate) enum FieldsOut<'py> {
    Dict(Bound<'py, PyDict>),
    Record(Python<'py>, Record),
}

impl<'py> FieldsOut<'py> {
    pub(crate) fn len(&self) -> usize {
        match self {
            FieldsOut::Dict(d) => d.len(),
            FieldsOut::Record(_, r) => r.len(),
        }
    }

    /// Whether the fields are still a record (no dict made yet).
    pub(crate) fn is_record(&self) -> bool {
        matches!(self, FieldsOut::Record(..))
    }

    /// `fields[key] = value`, `key` interned.
    pub(crate) fn set(
        &mut self,
        key: &Bound<'py, PyString>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        match self {
            FieldsOut::Dict(d) => d.set_item(key, value),
            FieldsOut::Record(_, r) => match r.set(key, value) {
                Some(_) => Ok(()),
                None => {
                    PAST_BOUND.fetch_add(1, Ordering::Relaxed);
                    self.dict()?.set_item(key, owned(value)?)
                }
            },
        }
    }

    /// The dict, made now from the record if there is one (and kept in its place).
    pub(crate) fn dict(&mut self) -> PyResult<Bound<'py, PyDict>> {
        let d = match self {
            FieldsOut::Dict(d) => return Ok(d.clone()),
            FieldsOut::Record(py, r) => r.dict(*py)?,
        };
        *self = FieldsOut::Dict(d.clone());
        Ok(d)
    }

    /// The object an event holds: the dict, or the record.
    pub(crate) fn into_object(self) -> PyResult<Bound<'py, PyAny>> {
        match self {
            FieldsOut::Dict(d) => Ok(d.into_any()),
            FieldsOut::Record(py, record) => {
                Ok(Bound::new(py, FieldsRecord { record })?.into_any())
            }
        }
    }
}

/// `fields` as an event may hold it: the dict itself, or the dict made from its record.
pub(crate) fn as_dict<'py>(fields: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    match fields.cast_exact::<FieldsRecord>() {
        Ok(r) => Ok(Some(r.get().record.dict(fields.py())?)),
        Err(_) => Ok(None),
    }
}

/// A record's fields as the rules read them, by the matcher's field indices (interned keys),
/// each found by address as a flow's are.
pub(crate) struct RecordFields<'a, 'py> {
    pub(crate) py: Python<'py>,
    pub(crate) record: &'a Record,
    pub(crate) keys: &'a [Py<PyString>],
}

impl Fields for RecordFields<'_, '_> {
    fn get(&self, field: usize) -> Option<Val<'_>> {
        let key = self.keys.get(field)?.bind(self.py);
        Some(held_value(self.record.get(key)?.bind(self.py)))
    }
}
