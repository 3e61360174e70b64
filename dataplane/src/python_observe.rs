//! `DetectionFeeds`: `Engine.observe` over a slice of events in one call, for the events
//! whose matched detections only feed native windows (the NetFlow path's case: every flow
//! matches `flow_record`, which feeds two `value_count` windows).
//!
//! Per event, in order, it does what `observe` does: match (the `RuleMatcher`, the engine's
//! candidate group), clamp the event time, decide `late` against the watermark and move
//! it, count the hits, build the window entry `(ts, ids, raws)` and feed each window of each
//! matched detection. It stops, before changing anything for that event, at the first one
//! the engine must see itself: a match left undecided, a detection that is not all native
//! windows (an alert of its own, absence, baseline, a Python window), an event time that is
//! not a float, a raw sample the reference takes from the message. The engine observes that
//! event and calls again from the next one, so the order of every state change (watermark,
//! windows, what fired and is then handled in Python in event order) is the reference's.
//!
//! A window that raises or declines a step ends the call at that event with what its
//! detections did so far (`partial`); the engine finishes that event as `observe` would.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::python::{Decision, DictFields, RuleMatcher, PANICS};
use crate::python_windows::{caught, CorrelationWindows};

/// (detection id, the native windows it feeds in the engine's order).
type Plan = (String, Vec<Py<CorrelationWindows>>);

/// One detection's window results of one event: (member index, what fired or the error).
type Results<'py> = Vec<(usize, Bound<'py, PyAny>)>;

/// What one call did: (index it stopped at, newest, watermark, late events, hits as
/// (detection index, detection hits, window hits), fired as (event index, detection index,
/// member index, fired, entry), partial as (event index, entry, [(detection index,
/// results)], [detection indices not reached]), and the matcher's decisions for the event
/// it stopped at when it got that far (the engine's `observe` then uses them)).
type RunOut<'py> = (
    usize,
    f64,
    f64,
    u64,
    Vec<(usize, u64, u64)>,
    Bound<'py, PyList>,
    Option<Partial<'py>>,
    Vec<Decision>,
);
type Partial<'py> = (
    usize,
    Bound<'py, PyAny>,
    Vec<(usize, Results<'py>)>,
    Vec<usize>,
);

#[pyclass(module = "appliance._dataplane")]
pub struct DetectionFeeds {
    matcher: Py<RuleMatcher>,
    /// Per detection index of the matcher: its plan, or None when the engine handles it.
    plans: Vec<Option<Plan>>,
    lateness: f64,
    sample_chars: usize,
    /// Matching events observed here (fed or late), since built.
    observed: u64,
    a_fields: Py<PyString>,
    a_timestamp: Py<PyString>,
    a_raw: Py<PyString>,
    a_id: Py<PyString>,
    k_message: Py<PyString>,
}

impl DetectionFeeds {
    /// The entry `observe` builds for an event (None: the engine must build it).
    fn entry<'py>(
        &self,
        py: Python<'py>,
        ev: &Bound<'py, PyAny>,
        fields: &Bound<'py, PyDict>,
        ts: f64,
    ) -> Option<Bound<'py, PyAny>> {
        let raw = ev.getattr(self.a_raw.bind(py)).ok()?;
        if !raw.is_exact_instance_of::<PyBytes>() {
            return None;
        }
        let bytes = raw.cast::<PyBytes>().ok()?.as_bytes();
        let sample = if bytes.is_empty() {
            // the reference samples the message then (str() of it, encoded)
            if fields.contains(self.k_message.bind(py)).ok()? {
                return None;
            }
            raw.clone()
        } else if bytes.len() > self.sample_chars {
            PyBytes::new(py, &bytes[..self.sample_chars]).into_any()
        } else {
            raw.clone()
        };
        let id = ev.getattr(self.a_id.bind(py)).ok()?;
        let ids = if id.is_none() {
            PyTuple::empty(py)
        } else {
            PyTuple::new(py, [id]).ok()?
        };
        let raws = PyTuple::new(py, [sample]).ok()?;
        PyTuple::new(
            py,
            [
                PyFloat::new(py, ts).into_any(),
                ids.into_any(),
                raws.into_any(),
            ],
        )
        .ok()
        .map(Bound::into_any)
    }
}

#[pymethods]
impl DetectionFeeds {
    /// `plans`: per detection index of `matcher`, None or (detection id, its windows);
    /// `lateness`: the engine's allowed lateness; `sample_chars`: the raw sample's bound.
    #[new]
    fn new(
        py: Python<'_>,
        matcher: Py<RuleMatcher>,
        plans: Vec<Option<Plan>>,
        lateness: f64,
        sample_chars: usize,
    ) -> Self {
        let name = |s: &str| PyString::intern(py, s).unbind();
        DetectionFeeds {
            matcher,
            plans,
            lateness,
            sample_chars,
            observed: 0,
            a_fields: name("fields"),
            a_timestamp: name("timestamp"),
            a_raw: name("raw"),
            a_id: name("id"),
            k_message: name("message"),
        }
    }

    /// Matching events observed natively (fed or late) since built.
    #[getter]
    fn observed(&self) -> u64 {
        self.observed
    }

    /// Observe `events[start:]` (candidate group numbers in `groups`, one per event) up to
    /// the first event the engine must observe itself; see the module doc and `RunOut`.
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        events: &Bound<'py, PyList>,
        groups: &Bound<'py, PyList>,
        start: usize,
        now: f64,
        newest: f64,
        watermark: f64,
    ) -> PyResult<RunOut<'py>> {
        // The windows and the matcher catch their own panics; one anywhere else ends the
        // call with an error (counted) instead of crossing into Python.
        catch_unwind(AssertUnwindSafe(|| {
            self.run_inner(py, events, groups, start, now, newest, watermark)
        }))
        .unwrap_or_else(|_| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            Err(PyRuntimeError::new_err(
                "panic caught in DetectionFeeds.run",
            ))
        })
    }
}

impl DetectionFeeds {
    #[allow(clippy::too_many_arguments)]
    fn run_inner<'py>(
        &mut self,
        py: Python<'py>,
        events: &Bound<'py, PyList>,
        groups: &Bound<'py, PyList>,
        start: usize,
        now: f64,
        mut newest: f64,
        mut watermark: f64,
    ) -> PyResult<RunOut<'py>> {
        let mut matcher = self.matcher.bind(py).try_borrow_mut()?;
        let keys: Vec<Py<PyString>> = matcher.keys.iter().map(|k| k.clone_ref(py)).collect();
        let n = events.len().min(groups.len());
        let mut det_hits = vec![0u64; self.plans.len()];
        let mut feed_hits = vec![0u64; self.plans.len()];
        let mut late_events = 0u64;
        let fired = PyList::empty(py);
        let mut partial: Option<Partial<'py>> = None;
        let mut decisions: Vec<Decision> = Vec::new();
        let mut stop = n;
        let mut decided: Vec<Decision> = Vec::new();
        let a_fields = self.a_fields.bind(py);
        let a_timestamp = self.a_timestamp.bind(py);
        let limit = now + self.lateness;
        let mut i = start;
        while i < n {
            let ev = events.get_item(i)?;
            let Ok(fields) = ev.getattr(a_fields) else {
                stop = i;
                break;
            };
            let Ok(fields) = fields.cast_into::<PyDict>() else {
                stop = i;
                break;
            };
            decisions.clear();
            let f = DictFields {
                dict: &fields,
                keys: &keys,
            };
            let group: usize = groups.get_item(i)?.extract()?;
            matcher.decide(i, group, &f, &mut decisions);
            if decisions.is_empty() {
                i += 1;
                continue;
            }
            if decisions
                .iter()
                .any(|d| d.2 || self.plans.get(d.1).is_none_or(Option::is_none))
            {
                stop = i;
                decided = std::mem::take(&mut decisions);
                break;
            }
            let Ok(t) = ev.getattr(a_timestamp) else {
                stop = i;
                decided = std::mem::take(&mut decisions);
                break;
            };
            if !t.is_exact_instance_of::<PyFloat>() {
                stop = i;
                decided = std::mem::take(&mut decisions);
                break;
            }
            let mut ts: f64 = t.extract()?;
            if ts > limit {
                ts = limit;
            } else if ts.is_nan() {
                ts = now;
            }
            let late = ts < watermark;
            let entry = if late {
                None
            } else {
                match self.entry(py, &ev, &fields, ts) {
                    Some(e) => Some(e),
                    None => {
                        stop = i;
                        decided = std::mem::take(&mut decisions);
                        break;
                    }
                }
            };
            if ts > newest {
                newest = ts;
                watermark = ts - self.lateness;
            }
            let Some(entry) = entry else {
                for d in &decisions {
                    det_hits[d.1] += 1;
                }
                late_events += 1;
                self.observed += 1;
                i += 1;
                continue;
            };
            // This event's effects, committed when every window took it.
            let mut done: Vec<(usize, Results<'py>)> = Vec::with_capacity(decisions.len());
            let mut failed = false;
            for d in &decisions {
                let r = d.1;
                det_hits[r] += 1;
                let Some(Some((rid, members))) = self.plans.get(r) else {
                    continue; // not reached: every decision's plan was checked above
                };
                let mut results: Results<'py> = Vec::new();
                for (k, m) in members.iter().enumerate() {
                    let got = {
                        let mut w = m.bind(py).try_borrow_mut()?;
                        caught(|| w.add_inner(py, rid, &entry, &fields))
                    };
                    match got {
                        Ok(None) => {}
                        Ok(Some(out)) => results.push((k, out.into_pyobject(py)?.into_any())),
                        Err(e) => {
                            results.push((k, e.into_value(py).into_bound(py).into_any()));
                            failed = true;
                            break;
                        }
                    }
                }
                done.push((r, results));
                if failed {
                    break;
                }
            }
            if failed {
                let rest = decisions[done.len()..].iter().map(|d| d.1).collect();
                partial = Some((i, entry, done, rest));
                stop = i;
                break;
            }
            for (r, results) in done {
                feed_hits[r] += 1;
                for (k, out) in results {
                    fired.append((i, r, k, out, &entry))?;
                }
            }
            self.observed += 1;
            i += 1;
        }
        let hits = (0..self.plans.len())
            .filter(|&r| det_hits[r] != 0 || feed_hits[r] != 0)
            .map(|r| (r, det_hits[r], feed_hits[r]))
            .collect();
        Ok((
            stop,
            newest,
            watermark,
            late_events,
            hits,
            fired,
            partial,
            decided,
        ))
    }
}
