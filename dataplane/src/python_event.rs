//! `Event`: the normalized event (`appliance.event.Event`) as a native class.
//!
//! The reference is the Python dataclass in `appliance/event.py`; on the native backend this
//! class takes its name. Every batch call makes one per message and the native stages read
//! a few of its attributes per event, so both ends are worth a native layout: made here,
//! an event costs one allocation and eight stores (the dataclass's generated `__init__`
//! frame was ~2,000 instructions with its deallocation, a tenth of a message's decoding),
//! and a native reader takes an attribute from the struct instead of a dict lookup on the
//! type and a descriptor call. Python reads and writes the attributes as before.
//!
//! Behaviour is the dataclass's: the same constructor (positional or keyword; an omitted
//! `fields` is a new dict), `==` on the same class comparing the attributes in order, no
//! hash, the same `repr`, `changed`, `get`, `to_ecs`, pickling. Subclasses may be made from
//! Python; the native readers take their attributes through `getattr`, so a subclass's
//! properties are honoured.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::python_record::{as_dict, FieldsRecord};

/// One normalized event: `timestamp` (the event time), `created` (when the appliance received
/// it), `module`, `fields` (flat ECS names), `raw` (the original bytes, bounded by the
/// source), `id` (given by the store), `line` (the stored line, None once a stage changed the
/// fields) and `listener` (the source that received it). The reference is
/// `appliance.event.ReferenceEvent`; an explicit None for `fields`, `raw` or `listener` means
/// the default here (a new dict, `b""`, `""`), where the dataclass would keep the None.
#[pyclass(module = "appliance.event", name = "Event", subclass)]
pub struct Event {
    #[pyo3(get, set)]
    pub(crate) timestamp: Py<PyAny>,
    #[pyo3(get, set)]
    pub(crate) created: Py<PyAny>,
    #[pyo3(get, set)]
    pub(crate) module: Py<PyAny>,
    /// The dict, or the batch decode's record until the dict is first read
    /// (`python_record`).
    pub(crate) fields: Py<PyAny>,
    #[pyo3(get, set)]
    pub(crate) raw: Py<PyAny>,
    #[pyo3(get, set)]
    pub(crate) id: Py<PyAny>,
    #[pyo3(get, set)]
    pub(crate) line: Py<PyAny>,
    #[pyo3(get, set)]
    pub(crate) listener: Py<PyAny>,
}

/// One of the attributes, for the native readers.
#[derive(Clone, Copy)]
pub(crate) enum Attr {
    Timestamp,
    Created,
    Module,
    Fields,
    Raw,
    Id,
    Line,
    Listener,
}

/// Every attribute, in the dataclass's field order (its `__match_args__`).
const ALL: [Attr; 8] = [
    Attr::Timestamp,
    Attr::Created,
    Attr::Module,
    Attr::Fields,
    Attr::Raw,
    Attr::Id,
    Attr::Line,
    Attr::Listener,
];

impl Attr {
    fn name(self) -> &'static str {
        match self {
            Attr::Timestamp => "timestamp",
            Attr::Created => "created",
            Attr::Module => "module",
            Attr::Fields => "fields",
            Attr::Raw => "raw",
            Attr::Id => "id",
            Attr::Line => "line",
            Attr::Listener => "listener",
        }
    }
}

impl Event {
    fn slot(&self, attr: Attr) -> &Py<PyAny> {
        match attr {
            Attr::Timestamp => &self.timestamp,
            Attr::Created => &self.created,
            Attr::Module => &self.module,
            Attr::Fields => &self.fields,
            Attr::Raw => &self.raw,
            Attr::Id => &self.id,
            Attr::Line => &self.line,
            Attr::Listener => &self.listener,
        }
    }

    fn slot_mut(&mut self, attr: Attr) -> &mut Py<PyAny> {
        match attr {
            Attr::Timestamp => &mut self.timestamp,
            Attr::Created => &mut self.created,
            Attr::Module => &mut self.module,
            Attr::Fields => &mut self.fields,
            Attr::Raw => &mut self.raw,
            Attr::Id => &mut self.id,
            Attr::Line => &mut self.line,
            Attr::Listener => &mut self.listener,
        }
    }

    /// The attributes in order as Python reads them (a subclass's properties included),
    /// for what the dataclass generates from them: `==`, `repr`, pickling.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let values = ALL
            .iter()
            .map(|a| slf.getattr(PyString::intern(py, a.name())))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, values)
    }

    /// `ev.<attr>`: read from the struct when `ev` is exactly this class (and not borrowed
    /// mutably, which only a caller of ours could do), else through `getattr`, so a
    /// subclass's properties and the reference dataclass are read as Python reads them.
    /// `fields` is the dict, made now if the event holds a record (as Python's read makes
    /// it); a reader that only looks keys up takes [`Event::fields_view`] instead.
    pub(crate) fn read<'py>(ev: &Bound<'py, PyAny>, attr: Attr) -> PyResult<Bound<'py, PyAny>> {
        let py = ev.py();
        if let Ok(e) = ev.cast_exact::<Event>() {
            if let Ok(e) = e.try_borrow() {
                let got = e.slot(attr).bind(py);
                if !matches!(attr, Attr::Fields) || !got.is_exact_instance_of::<FieldsRecord>() {
                    return Ok(got.clone());
                }
            }
            if let Ok(mut e) = e.try_borrow_mut() {
                return e.fields_dict(py);
            }
        }
        ev.getattr(PyString::intern(py, attr.name()))
    }

    /// `ev.fields` as the native readers take it: the dict, or the record it will be made
    /// from (`python_record`); a subclass's or the reference's through `getattr`.
    pub(crate) fn fields_view<'py>(ev: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = ev.py();
        if let Ok(e) = ev.cast_exact::<Event>() {
            if let Ok(e) = e.try_borrow() {
                return Ok(e.fields.bind(py).clone());
            }
        }
        ev.getattr(intern!(py, "fields"))
    }

    /// The fields as Python reads them: the dict, made from the record on first read.
    fn fields_dict<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(d) = as_dict(self.fields.bind(py))? {
            self.fields = d.into_any().unbind();
        }
        Ok(self.fields.bind(py).clone())
    }

    /// `ev.<attr> = value`, as [`Event::read`] reads.
    pub(crate) fn write<'py>(
        ev: &Bound<'py, PyAny>,
        attr: Attr,
        value: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let py = ev.py();
        if let Ok(e) = ev.cast_exact::<Event>() {
            if let Ok(mut e) = e.try_borrow_mut() {
                *e.slot_mut(attr) = value.unbind();
                return Ok(());
            }
        }
        ev.setattr(PyString::intern(py, attr.name()), value)
    }

    /// A new event of `class`: made here when `class` is this class, else by calling it
    /// (the reference dataclass, a subclass) with the same arguments.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make<'py>(
        class: &Bound<'py, PyAny>,
        timestamp: Bound<'py, PyAny>,
        created: Bound<'py, PyAny>,
        module: Bound<'py, PyAny>,
        fields: Bound<'py, PyAny>,
        raw: Bound<'py, PyAny>,
        line: Bound<'py, PyAny>,
        listener: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = class.py();
        if class.is(py.get_type::<Event>()) {
            let ev = Event {
                timestamp: timestamp.unbind(),
                created: created.unbind(),
                module: module.unbind(),
                fields: fields.unbind(),
                raw: raw.unbind(),
                id: py.None(),
                line: line.unbind(),
                listener: match listener {
                    Some(l) => l.unbind(),
                    None => PyString::new(py, "").into_any().unbind(),
                },
            };
            return Ok(Bound::new(py, ev)?.into_any());
        }
        // another class gets the dict (a record is this class's alone)
        let fields = as_dict(&fields)?.map_or(fields, Bound::into_any);
        match listener {
            Some(l) => class.call1((timestamp, created, module, fields, raw, py.None(), line, l)),
            None => class.call1((timestamp, created, module, fields, raw, py.None(), line)),
        }
    }
}

/// `appliance.event.to_ecs`, the nested document both classes make (imported once).
static TO_ECS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl Event {
    #[new]
    #[pyo3(signature = (timestamp, created, module, fields=None, raw=None, id=None, line=None, listener=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        timestamp: Py<PyAny>,
        created: Py<PyAny>,
        module: Py<PyAny>,
        fields: Option<Py<PyAny>>,
        raw: Option<Py<PyAny>>,
        id: Option<Py<PyAny>>,
        line: Option<Py<PyAny>>,
        listener: Option<Py<PyAny>>,
    ) -> Self {
        Event {
            timestamp,
            created,
            module,
            fields: fields.unwrap_or_else(|| PyDict::new(py).into_any().unbind()),
            raw: raw.unwrap_or_else(|| PyBytes::new(py, b"").into_any().unbind()),
            id: id.unwrap_or_else(|| py.None()),
            line: line.unwrap_or_else(|| py.None()),
            listener: listener.unwrap_or_else(|| PyString::new(py, "").into_any().unbind()),
        }
    }

    #[classattr]
    fn __match_args__(py: Python<'_>) -> PyResult<Py<PyTuple>> {
        Ok(PyTuple::new(py, ALL.map(Attr::name))?.unbind())
    }

    /// Say that `fields` changed after the stored line was encoded (enrichment): the
    /// pipeline encodes the line again before the insert.
    fn changed(&mut self, py: Python<'_>) {
        self.line = py.None();
    }

    #[getter(fields)]
    fn get_fields<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.fields_dict(py)
    }

    #[setter(fields)]
    fn set_fields(&mut self, value: Py<PyAny>) {
        self.fields = value;
    }

    /// `fields.get(name, default)`.
    #[pyo3(signature = (name, default=None))]
    fn get<'py>(
        &mut self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        let fields = self.fields_dict(py)?;
        if let Ok(d) = fields.cast_exact::<PyDict>() {
            return Ok(d.get_item(name)?.unwrap_or(default));
        }
        fields.call_method1(intern!(py, "get"), (name, default))
    }

    /// The Elastic-style nested document for the API and upstream sinks.
    #[pyo3(signature = (sensor_id=None))]
    fn to_ecs<'py>(
        slf: &Bound<'py, Self>,
        sensor_id: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let f = TO_ECS.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("appliance.event")?.getattr("to_ecs")?.unbind())
        })?;
        f.bind(py).call1((slf, sensor_id))
    }

    fn __richcmp__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) || !other.get_type().is(slf.get_type()) {
            return Ok(py.NotImplemented());
        }
        let other = other.cast::<Event>()?;
        let eq = Event::values(slf)?.eq(Event::values(other)?)?;
        Ok(
            pyo3::types::PyBool::new(py, eq == matches!(op, CompareOp::Eq))
                .to_owned()
                .into_any()
                .unbind(),
        )
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("unhashable type: 'Event'"))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let mut out = slf.get_type().qualname()?.to_string();
        out.push('(');
        for (i, (attr, value)) in ALL.iter().zip(Event::values(slf)?.iter()).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(attr.name());
            out.push('=');
            out.push_str(&value.repr()?.to_string());
        }
        out.push(')');
        Ok(out)
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, Bound<'py, PyTuple>)> {
        Ok((slf.get_type(), Event::values(slf)?))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for attr in ALL {
            visit.call(self.slot(attr))?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        Python::attach(|py| {
            for attr in ALL {
                *self.slot_mut(attr) = py.None();
            }
        });
    }
}
