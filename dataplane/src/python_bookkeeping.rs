//! `AbsenceGroups` and `BaselineGroups`: the absence and baseline rules' groups
//! (`crate::bookkeeping`) behind the calls the engine makes per event (`seen(fields, now, ts)`,
//! `add(fields, ts)`), reading the `by` fields from the event's dict here.
//!
//! Keys follow Python's dict equality (`python_windows::part`); what snapshots and alerts show
//! (the key tuples, the sighting times) are the Python objects the reference would hold, so
//! an int clock stays an int. Errors are the reference's, raised before anything changes: a
//! `TypeError` for an unhashable group value, the `ValueError`/`OverflowError` of `int()` for
//! an event time with no bucket. A caught panic (counted in `panics()`) is `WindowsDeclined`:
//! the runtime then turns into the Python one with this state.

use std::cell::Cell;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};
use smallvec::SmallVec;

use crate::bookkeeping::{Absence, Baseline, BucketError, RateSpec};
use crate::python_flowevents::EventFields;
use crate::python_windows::{caught, part, Part};

/// Values of a key held in place: rules group by one to a few fields.
type KeyValues<'py> = SmallVec<[Bound<'py, PyAny>; 4]>;

/// The `by` fields' values (the items of the reference's key tuple), and that key
/// normalised. The values are held in place, not in a vector of their own: every absence
/// and baseline rule an event feeds reads one key, a `malloc` and a `free` each.
fn key_of<'py>(
    py: Python<'py>,
    by: &[Py<PyString>],
    fields: &EventFields<'_, 'py>,
) -> PyResult<(KeyValues<'py>, Part)> {
    let mut values = KeyValues::with_capacity(by.len());
    for f in by {
        let v = fields
            .item(f.bind(py))?
            .unwrap_or_else(|| py.None().into_bound(py));
        values.push(v);
    }
    let k = Part::tuple(&values)?;
    Ok((values, k))
}

/// The reference's key tuple, for a group's display.
fn shown_key(py: Python<'_>, values: &[Bound<'_, PyAny>]) -> Py<PyTuple> {
    PyTuple::new(py, values)
        .expect("a slice's length is exact")
        .unbind()
}

fn intern(py: Python<'_>, names: &[String]) -> Vec<Py<PyString>> {
    names
        .iter()
        .map(|n| PyString::intern(py, n).unbind())
        .collect()
}

/// What the reference's dict holds for a group: its key tuple and the (now, ts) objects.
struct Shown {
    key: Py<PyTuple>,
    now: Py<PyAny>,
    ts: Py<PyAny>,
}

/// One absence rule's groups (`AbsenceRuntime`'s `last` and `alerted`).
#[pyclass(module = "appliance._dataplane")]
pub struct AbsenceGroups {
    a: Absence<Part, Shown>,
    by: Vec<Py<PyString>>,
    /// Tests only: the next seen panics (to show the fallback).
    panic_next: bool,
}

#[pymethods]
impl AbsenceGroups {
    #[new]
    fn new(py: Python<'_>, by: Vec<String>, max_groups: usize) -> PyResult<Self> {
        if by.is_empty() || max_groups == 0 {
            return Err(PyValueError::new_err("by and max_groups must be set"));
        }
        Ok(AbsenceGroups {
            a: Absence::new(max_groups),
            by: intern(py, &by),
            panic_next: false,
        })
    }

    /// The group of this event is seen now: its key when it was not armed (new, or it had
    /// alerted), so the caller schedules its deadline; else None. `DetectionFeeds` calls it
    /// from Rust too.
    fn seen<'py>(
        &mut self,
        py: Python<'py>,
        fields: &Bound<'py, PyDict>,
        now: &Bound<'py, PyAny>,
        ts: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.seen_in(py, &EventFields::Dict(fields.clone()), now, ts)
    }

    /// (seen now, seen ts) of a group that has not alerted since; None otherwise.
    fn due(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyTuple>,
    ) -> PyResult<Option<(Py<PyAny>, Py<PyAny>)>> {
        caught(|| {
            let k = part(key.as_any())?;
            Ok(self.a.groups.find(&k).and_then(|i| {
                let v = self.a.groups.val(i);
                (!v.alerted).then(|| (v.display.now.clone_ref(py), v.display.ts.clone_ref(py)))
            }))
        })
    }

    fn mark_alerted(&mut self, key: &Bound<'_, PyTuple>) -> PyResult<()> {
        caught(|| {
            let k = part(key.as_any())?;
            self.a.mark_alerted(&k);
            Ok(())
        })
    }

    /// Every sighting's wall clock moved by `step` (Python's `+`, so the types stay).
    fn shift(&mut self, py: Python<'_>, step: &Bound<'_, PyAny>) -> PyResult<()> {
        caught(|| {
            let step_f: f64 = step.extract()?;
            for i in self.a.groups.slots() {
                let v = self.a.groups.val_mut(i);
                let moved = v.display.now.bind(py).add(step)?;
                v.now += step_f;
                v.display.now = moved.unbind();
            }
            Ok(())
        })
    }

    /// A restart at `now`: each sighting becomes `max(seen, now)`.
    fn restart(&mut self, now: &Bound<'_, PyAny>) -> PyResult<()> {
        caught(|| {
            let now_f: f64 = now.extract()?;
            for i in self.a.groups.slots() {
                let v = self.a.groups.val_mut(i);
                if now_f > v.now {
                    v.now = now_f;
                    v.display.now = now.clone().unbind();
                }
            }
            Ok(())
        })
    }

    /// A snapshot's group, as the reference's `load` assigns it.
    fn put(
        &mut self,
        key: &Bound<'_, PyTuple>,
        now: &Bound<'_, PyAny>,
        ts: &Bound<'_, PyAny>,
        alerted: bool,
    ) -> PyResult<()> {
        caught(|| {
            let k = part(key.as_any())?;
            let (now_f, ts_f): (f64, f64) = (now.extract()?, ts.extract()?);
            if let Some(i) = self.a.groups.find(&k) {
                // an assignment to a present key: its place and key object stay
                let v = self.a.groups.val_mut(i);
                v.display.now = now.clone().unbind();
                v.display.ts = ts.clone().unbind();
            }
            let shown = Shown {
                key: key.clone().unbind(),
                now: now.clone().unbind(),
                ts: ts.clone().unbind(),
            };
            self.a.put(k, shown, now_f, ts_f, alerted);
            Ok(())
        })
    }

    /// Every group, least recently seen first: (key, now, ts, alerted).
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        caught(|| {
            let out = PyList::empty(py);
            for (_k, v) in self.a.groups.iter() {
                let d = &v.display;
                out.append((d.key.bind(py), d.now.bind(py), d.ts.bind(py), v.alerted))?;
            }
            Ok(out)
        })
    }

    fn __len__(&self) -> usize {
        self.a.groups.len()
    }

    #[getter]
    fn get_evicted(&self) -> u64 {
        self.a.evicted
    }

    #[setter]
    fn set_evicted(&mut self, v: u64) {
        self.a.evicted = v;
    }

    /// Tests only: make the next seen panic, to exercise the fallback.
    fn inject_panic(&mut self) {
        self.panic_next = true;
    }
}

/// One baseline rule's groups (`BaselineRuntime.groups`).
#[pyclass(module = "appliance._dataplane")]
pub struct BaselineGroups {
    b: Baseline<Part, Py<PyTuple>>,
    by: Vec<Py<PyString>>,
    /// Tests only: the next add panics (to show the fallback).
    panic_next: bool,
}

fn bucket_error(e: BucketError) -> PyErr {
    match e {
        BucketError::NaN => PyValueError::new_err("cannot convert float NaN to integer"),
        BucketError::Infinite => {
            PyOverflowError::new_err("cannot convert float infinity to integer")
        }
        BucketError::Domain => PyValueError::new_err("math domain error"),
    }
}

type SpikeOut<'py> = Option<(Bound<'py, PyTuple>, Bound<'py, PyDict>)>;

/// A float bucket as the Python int the reference stores.
fn int_of(py: Python<'_>, b: f64) -> PyResult<Bound<'_, PyAny>> {
    if (-9.0e18..9.0e18).contains(&b) {
        Ok((b as i64).into_pyobject(py)?.into_any())
    } else {
        py.get_type::<PyInt>().call1((b,))
    }
}

#[pymethods]
impl BaselineGroups {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        by: Vec<String>,
        interval: f64,
        alpha: f64,
        k: f64,
        warmup: f64,
        min_count: f64,
        max_groups: usize,
    ) -> PyResult<Self> {
        if by.is_empty() || max_groups == 0 || interval.is_nan() || interval <= 0.0 {
            return Err(PyValueError::new_err(
                "by, max_groups and a positive interval must be set",
            ));
        }
        Ok(BaselineGroups {
            b: Baseline::new(RateSpec {
                interval,
                alpha,
                k,
                warmup,
                min_count,
                max_groups,
            }),
            by: intern(py, &by),
            panic_next: false,
        })
    }

    /// This event counted in its group's interval: None, or (key, {"count", "mean",
    /// "stddev"}) when the count goes above the baseline (once per interval).
    /// `DetectionFeeds` calls it from Rust too.
    fn add<'py>(
        &mut self,
        py: Python<'py>,
        fields: &Bound<'py, PyDict>,
        ts: f64,
    ) -> PyResult<SpikeOut<'py>> {
        self.add_in(py, &EventFields::Dict(fields.clone()), ts)
    }

    /// Every group, least recently used first: (key, [bucket, count, mean, var, n, fired]).
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        caught(|| {
            let out = PyList::empty(py);
            for (_k, g) in self.b.groups.iter() {
                let row = PyList::new(
                    py,
                    [
                        int_of(py, g.bucket)?,
                        g.count.into_pyobject(py)?.into_any(),
                        g.mean.into_pyobject(py)?.into_any(),
                        g.var.into_pyobject(py)?.into_any(),
                        g.n.into_pyobject(py)?.into_any(),
                        pyo3::types::PyBool::new(py, g.fired).to_owned().into_any(),
                    ],
                )?;
                out.append((g.display.bind(py), row))?;
            }
            Ok(out)
        })
    }

    /// A snapshot's group as the reference's `load` assigns it (a present key keeps its
    /// place and key). Raises for a row it cannot hold exactly (the caller goes on in Python).
    fn put(&mut self, key: &Bound<'_, PyTuple>, row: &Bound<'_, PyList>) -> PyResult<()> {
        caught(|| {
            if row.len() != 6 {
                return Err(PyValueError::new_err("a baseline row has six members"));
            }
            for at in [0, 1, 4] {
                if !row.get_item(at)?.is_exact_instance_of::<PyInt>() {
                    return Err(PyValueError::new_err("bucket, count and n: integers"));
                }
            }
            let bucket: f64 = row.get_item(0)?.extract::<i64>()? as f64;
            let rate = crate::bookkeeping::Rate {
                bucket,
                count: row.get_item(1)?.extract()?,
                mean: row.get_item(2)?.extract()?,
                var: row.get_item(3)?.extract()?,
                n: row.get_item(4)?.extract()?,
                fired: row.get_item(5)?.extract()?,
                display: key.clone().unbind(),
            };
            if bucket.abs() >= 9.0e15
                || !row
                    .get_item(2)?
                    .is_exact_instance_of::<pyo3::types::PyFloat>()
                || !row
                    .get_item(3)?
                    .is_exact_instance_of::<pyo3::types::PyFloat>()
            {
                return Err(PyValueError::new_err("a row only Python holds exactly"));
            }
            let k = part(key.as_any())?;
            match self.b.groups.find(&k) {
                Some(i) => {
                    let g = self.b.groups.val_mut(i);
                    let display = std::mem::replace(&mut g.display, key.clone().unbind());
                    *g = crate::bookkeeping::Rate { display, ..rate };
                }
                None => {
                    self.b.groups.push_back(k, rate);
                }
            }
            Ok(())
        })
    }

    fn __len__(&self) -> usize {
        self.b.groups.len()
    }

    #[getter]
    fn get_evicted(&self) -> u64 {
        self.b.evicted
    }

    #[setter]
    fn set_evicted(&mut self, v: u64) {
        self.b.evicted = v;
    }

    /// Tests only: make the next add panic, to exercise the fallback.
    fn inject_panic(&mut self) {
        self.panic_next = true;
    }
}

impl AbsenceGroups {
    pub(crate) fn seen_in<'py>(
        &mut self,
        py: Python<'py>,
        fields: &EventFields<'_, 'py>,
        now: &Bound<'py, PyAny>,
        ts: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        caught(|| {
            if std::mem::take(&mut self.panic_next) {
                panic!("injected by a test");
            }
            let (values, k) = key_of(py, &self.by, fields)?;
            let (now_f, ts_f): (f64, f64) = (now.extract()?, ts.extract()?);
            // The group's key tuple: kept while its items are the very objects of this
            // event's (one source's events share them), else the newest, as the reference.
            let key = Cell::new(None);
            let armed = self.a.seen(
                k,
                now_f,
                ts_f,
                || {
                    let made = shown_key(py, &values);
                    key.set(Some(made.clone_ref(py)));
                    Shown {
                        key: made,
                        now: now.clone().unbind(),
                        ts: ts.clone().unbind(),
                    }
                },
                |shown| {
                    let old = shown.key.bind(py);
                    let same =
                        old.len() == values.len() && old.iter().zip(&values).all(|(a, b)| a.is(b));
                    if !same {
                        shown.key = shown_key(py, &values);
                    }
                    key.set(Some(shown.key.clone_ref(py)));
                    shown.now = now.clone().unbind();
                    shown.ts = ts.clone().unbind();
                },
            );
            Ok(armed
                .then(|| key.take().map(|k| k.into_bound(py)))
                .flatten())
        })
    }
}

impl BaselineGroups {
    pub(crate) fn add_in<'py>(
        &mut self,
        py: Python<'py>,
        fields: &EventFields<'_, 'py>,
        ts: f64,
    ) -> PyResult<SpikeOut<'py>> {
        caught(|| {
            if std::mem::take(&mut self.panic_next) {
                panic!("injected by a test");
            }
            let bucket = self.b.bucket(ts).map_err(bucket_error)?;
            let (values, k) = key_of(py, &self.by, fields)?;
            let got = self
                .b
                .add(k, || shown_key(py, &values), bucket)
                .map_err(bucket_error)?;
            let Some((count, mean, var)) = got else {
                return Ok(None);
            };
            let key = PyTuple::new(py, values)?;
            // the reference's round(), not a Rust approximation of it
            let round = py.import("builtins")?.getattr("round")?;
            let info = PyDict::new(py);
            info.set_item("count", count)?;
            info.set_item("mean", round.call1((mean, 3))?)?;
            info.set_item("stddev", round.call1((var.sqrt(), 3))?)?;
            Ok(Some((key, info)))
        })
    }
}
