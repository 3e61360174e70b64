//! `DetectionFeeds`: `Engine.observe` over a slice of events in one call, for the events
//! whose matched detections only feed native windows (the NetFlow path's case: every flow
//! matches `flow_record`, which feeds two `value_count` windows) or native absence and
//! baseline groups (the syslog path's case: every line matches `silent_source` and
//! `log_rate_spike`).
//!
//! Per event, in order, it does what `observe` does: match (the `RuleMatcher`, the engine's
//! candidate group; for a flow of a native batch, what its shape decides is asked once per
//! shape and group, `RuleSet::matches_shape`), clamp the event time, decide `late` against
//! the watermark and move it, then per matched detection in order: count the hit; an
//! absence detection's group is seen (`AbsenceGroups`; a key to schedule goes into
//! `pushes`, in order, so the engine numbers the heap entries as the reference would); a
//! baseline detection's group counts the event (`BaselineGroups`; a spike goes into `fired`
//! at its place, so the alerts and the suppression state come in the reference's order); a
//! window detection, unless the event is late, feeds each window with the entry `(ts, ids,
//! raws)` (held as its parts, `FeedEntry`, the tuple made only if Python is handed it). It
//! stops, before changing anything for that event, at the first one the engine
//! must see itself: a match left undecided, a detection it has no plan for (an alert of its
//! own, a Python window, a runtime that went to Python), an event time that is not a float,
//! a raw sample the reference takes from the message. The engine observes that event and
//! calls again from the next one, so the order of every state change (watermark, windows,
//! groups, heap pushes, what fired and is then handled in Python in event order) is the
//! reference's.
//!
//! A window or group that raises or declines a step ends the call at that event with what
//! its detections did so far (`partial`); the engine finishes that event as `observe`
//! would. A window whose fire feeds one window above it (a sequence's inner step feeding the
//! sequence: `Engine._fired` then `_feed`) feeds that window here, at once, with the entry
//! and group `_fired` builds (`Chain`), and hands both fires over; where it cannot (its step
//! there raised or declined, or no chain was planned) and that window is fed here too, the
//! event ends the call as a partial one, so the engine feeds it before the rest of the event
//! and the next events, as the reference does.

use pyo3::exceptions::{PyBaseException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use rustc_hash::FxHashMap;

use crate::python::{Decision, DictFields, RuleMatcher};
use crate::python_bookkeeping::{AbsenceGroups, BaselineGroups};
use crate::python_event::Attr;
use crate::python_flowevents::{EventAt, EventFields, EventsIn, FlowFields, ShapeId, ShapeKnown};
use crate::python_record::RecordFields;
use crate::python_windows::{caught, caught_as, entry_tuple, CorrelationWindows, Ev};
use crate::rules::Fields;

/// What the engine hands over for one detection: (its id, the native windows it feeds in
/// the engine's order | its `AbsenceGroups` | its `BaselineGroups`, per window whether
/// what it fires feeds a window fed here too, per window its chain or None).
type PlanIn<'py> = (String, Bound<'py, PyAny>, Vec<bool>, Vec<Option<ChainIn>>);

/// A chain as the engine hands it over: (the window above, the id of the correlation whose
/// fire feeds it, that correlation's group-by fields).
type ChainIn = (Py<CorrelationWindows>, String, Vec<Py<PyString>>);

/// Where one window's fire goes on here: `Engine._feed` of its one parent, a native window
/// that feeds nothing itself (its own fire is handed over, and the engine raises its
/// alert).
struct Chain {
    /// its place in `DetectionFeeds::windows`
    parent: usize,
    /// The fired correlation's id, the rule id the parent is fed under.
    child: String,
    group_by: Vec<Py<PyString>>,
}

/// Each of `all` borrowed mutably (see `DetectionFeeds::windows`).
fn borrow_all<'py, T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>>(
    py: Python<'py>,
    all: &[Py<T>],
) -> PyResult<Vec<PyRefMut<'py, T>>> {
    all.iter()
        .map(|x| Ok(x.bind(py).try_borrow_mut()?))
        .collect()
}

/// What one detection does natively.
enum Plan {
    /// (detection id, the windows it feeds in the engine's order, per window: whether its
    /// fire feeds a window this call feeds too (unless chained, the engine must handle it
    /// before anything else feeds that one: the event ends the call as a partial one after
    /// this detection), per window: the window above it that this call feeds its fires to
    /// (`Chain`), if any); the windows as their places in `DetectionFeeds::windows`
    Windows(String, Vec<usize>, Vec<bool>, Vec<Option<Chain>>),
    /// its place in `DetectionFeeds::absences`
    Absence(usize),
    /// its place in `DetectionFeeds::baselines`
    Baseline(usize),
}

/// One detection's window results of one event: (member index, what fired or the error,
/// and for a chained fire `(what the parent's step gave or raised,)`).
type Results<'py> = Vec<(usize, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>;

/// One detection's step of one event, kept until the whole event went through.
enum Step<'py> {
    Windows(Results<'py>),
    /// Absence: the key to schedule (or None); baseline: the spike (or None); either: the
    /// error it raised (then the event ends here).
    Groups(Bound<'py, PyAny>),
}

/// What one call did: (index it stopped at, newest, watermark, late events, hits as
/// (detection index, detection hits, window hits), fired as (event index, detection index,
/// member index, fired, entry, the chain's `(result,)` or None) for a window and (event
/// index, detection index, None, spike, event time, None) for a baseline, absence pushes as
/// (detection index, key), partial as (event
/// index, event time, late, entry or None, [(detection index, window results or the
/// absence/baseline result)], [detection indices not reached]), and the matcher's decisions
/// for the event it stopped at when it got that far (the engine's `observe` then uses them;
/// after a partial, whether a late event counts as late follows from them)).
type RunOut<'py> = (
    usize,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    u64,
    Vec<(usize, u64, u64)>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Option<Partial<'py>>,
    Vec<Decision>,
);
type Partial<'py> = (
    usize,
    Bound<'py, PyAny>,
    bool,
    Option<Bound<'py, PyAny>>,
    Vec<(usize, Bound<'py, PyAny>)>,
    Vec<usize>,
);

/// An absence or baseline group's step as `Step::Groups` holds it: what it returned (None,
/// a key, a spike) or the error it raised, which makes decision `j` the one after which the
/// engine takes the event over.
fn group_step<'py, T: IntoPyObject<'py>>(
    py: Python<'py>,
    got: PyResult<T>,
    j: usize,
    failed: &mut Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    match got {
        Ok(v) => v.into_bound_py_any(py),
        Err(e) => {
            *failed = Some(j);
            Ok(e.into_value(py).into_bound(py).into_any())
        }
    }
}

#[pyclass(module = "appliance._dataplane")]
pub struct DetectionFeeds {
    matcher: Py<RuleMatcher>,
    /// Per detection index of the matcher: its plan, or None when the engine handles it.
    plans: Vec<Option<Plan>>,
    /// What the plans step, each once (a window two detections feed, or one fed and a
    /// chain's parent, is one object; an absence or baseline object is one detection's).
    /// A call borrows each once, at its start: a borrow that fails then fails before the
    /// call changed anything, as the engine's fallback assumes. (Per step, as before, the
    /// call took five to eight borrows a line on the rules bench, each a pair of atomic
    /// read-modify-writes of the object's flag; without them it ran within the VM's spread
    /// of before, +1.1 % and +0.3 %.)
    windows: Vec<Py<CorrelationWindows>>,
    absences: Vec<Py<AbsenceGroups>>,
    baselines: Vec<Py<BaselineGroups>>,
    lateness: f64,
    /// The engine's `allowed_lateness` as it holds it (`now + lateness` is a clamped time).
    lateness_obj: Py<PyAny>,
    sample_chars: usize,
    /// The engine's `evidence_events` and `evidence_samples`: how much of a fire's ids and
    /// raws a chained entry keeps, as `Engine._fired` cuts them.
    evidence: (usize, usize),
    /// Matching events observed here (fed or late), since built.
    observed: u64,
    k_message: Py<PyString>,
}

/// The entry an event feeds its windows: for an event time that is an exact float (any
/// event the engine's `observe` sees in this call), its parts ([`Ev::Parts`]), the tuple
/// `(ts, ids, raws)` made only when Python is handed it (a fire, a partial event); else the
/// tuple itself.
enum FeedEntry<'py> {
    Tuple(Bound<'py, PyAny>),
    Parts {
        ts: Bound<'py, PyAny>,
        id: Option<Bound<'py, PyAny>>,
        raw: Option<Bound<'py, PyAny>>,
    },
}

impl<'py> FeedEntry<'py> {
    fn ev(&self) -> Ev {
        match self {
            FeedEntry::Tuple(t) => Ev::Obj(t.clone().unbind()),
            FeedEntry::Parts { id, raw, .. } => Ev::Parts {
                id: id.as_ref().map(|x| x.clone().unbind()),
                raw: raw.as_ref().map(|x| x.clone().unbind()),
            },
        }
    }

    /// The reference's tuple.
    fn object(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            FeedEntry::Tuple(t) => Ok(t.clone()),
            FeedEntry::Parts { ts, id, raw } => {
                entry_tuple(py, ts.clone(), id.as_ref(), raw.as_ref())
            }
        }
    }
}

/// `tuple(seq[-n:])` as Python slices it (all of it when `n` is 0).
fn tail<'py>(seq: &Bound<'py, PyAny>, n: usize) -> PyResult<Bound<'py, PyTuple>> {
    let list = seq.cast::<PyList>()?;
    let from = if n == 0 {
        0
    } else {
        list.len().saturating_sub(n)
    };
    PyTuple::new(seq.py(), list.iter().skip(from))
}

impl DetectionFeeds {
    /// `Engine._fired`'s feed of a window's fire to its one parent, done here: the entry
    /// `(last, ids[-evidence_events:], raws[-evidence_samples:])` (`last` the event's time
    /// when the fire had no entry), the group `{by: key}`, and the parent's step. `None`
    /// when the fire is not of the shape the engine builds these from (the engine then
    /// feeds the parent itself); else `(what the step returned or raised,)`.
    fn chain<'py>(
        &self,
        py: Python<'py>,
        windows: &mut [PyRefMut<'py, CorrelationWindows>],
        chain: &Chain,
        fired: &Bound<'py, PyAny>,
        ts: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Ok(fired) = fired.cast::<PyTuple>() else {
            return Ok(None);
        };
        let (key, state) = (fired.get_item(0)?, fired.get_item(1)?);
        let (Ok(key), Ok(state)) = (key.cast::<PyTuple>(), state.cast::<PyTuple>()) else {
            return Ok(None);
        };
        if key.len() != chain.group_by.len() || state.len() != 4 {
            return Ok(None);
        }
        let (ids, raws) = (state.get_item(0)?, state.get_item(1)?);
        if !ids.is_exact_instance_of::<PyList>() || !raws.is_exact_instance_of::<PyList>() {
            return Ok(None);
        }
        let last = match state.get_item(2)?.is_none() {
            true => ts.clone(),
            false => state.get_item(3)?,
        };
        let (events, samples) = self.evidence;
        let inner = PyTuple::new(
            py,
            [
                last,
                tail(&ids, events)?.into_any(),
                tail(&raws, samples)?.into_any(),
            ],
        )?;
        let group = PyDict::new(py);
        for (k, v) in chain.group_by.iter().zip(key.iter()) {
            group.set_item(k.bind(py), v)?;
        }
        let got = windows[chain.parent].add(py, &chain.child, inner.as_any(), &group);
        let got = match got {
            Ok(out) => out.into_pyobject(py)?.into_any(),
            Err(e) => e.into_value(py).into_bound(py).into_any(),
        };
        Ok(Some(PyTuple::new(py, [got])?))
    }

    /// The entry `observe` builds for an event (None: the engine must build it).
    fn entry<'py>(
        &self,
        py: Python<'py>,
        ev: &EventAt<'_, 'py>,
        fields: &EventFields<'_, 'py>,
        ts: &Bound<'py, PyAny>,
    ) -> Option<FeedEntry<'py>> {
        let raw = ev.attr(py, Attr::Raw).ok()?;
        if !raw.is_exact_instance_of::<PyBytes>() {
            return None;
        }
        let bytes = raw.cast::<PyBytes>().ok()?.as_bytes();
        let sample = if bytes.is_empty() {
            // the reference samples the message then (str() of it, encoded)
            if fields.contains(self.k_message.bind(py)).ok()? {
                return None;
            }
            None // the samples are (b"",)
        } else if bytes.len() > self.sample_chars {
            Some(PyBytes::new(py, &bytes[..self.sample_chars]).into_any())
        } else {
            Some(raw.clone())
        };
        let id = ev.attr(py, Attr::Id).ok()?;
        let id = (!id.is_none()).then_some(id);
        if ts.is_exact_instance_of::<PyFloat>() {
            return Some(FeedEntry::Parts {
                ts: ts.clone(),
                id,
                raw: sample,
            });
        }
        entry_tuple(py, ts.clone(), id.as_ref(), sample.as_ref())
            .ok()
            .map(FeedEntry::Tuple)
    }
}

#[pymethods]
impl DetectionFeeds {
    /// `plans`: per detection index of `matcher`, None or (detection id, its windows | its
    /// `AbsenceGroups` | its `BaselineGroups`); `lateness`: the engine's allowed lateness;
    /// `sample_chars`: the raw sample's bound.
    #[new]
    fn new(
        py: Python<'_>,
        matcher: Py<RuleMatcher>,
        plans: Vec<Option<PlanIn<'_>>>,
        lateness: &Bound<'_, PyAny>,
        sample_chars: usize,
        evidence: (usize, usize),
    ) -> PyResult<Self> {
        let name = |s: &str| PyString::intern(py, s).unbind();
        let mut windows: Vec<Py<CorrelationWindows>> = Vec::new();
        let mut place = |w: Py<CorrelationWindows>| match windows.iter().position(|h| h.is(&w)) {
            Some(i) => i,
            None => {
                windows.push(w);
                windows.len() - 1
            }
        };
        let (mut absences, mut baselines) = (Vec::new(), Vec::new());
        let plans = plans
            .into_iter()
            .map(|p| {
                let Some((rid, obj, ends, chains)) = p else {
                    return Ok(None);
                };
                Ok(Some(if let Ok(a) = obj.cast::<AbsenceGroups>() {
                    absences.push(a.clone().unbind());
                    Plan::Absence(absences.len() - 1)
                } else if let Ok(b) = obj.cast::<BaselineGroups>() {
                    baselines.push(b.clone().unbind());
                    Plan::Baseline(baselines.len() - 1)
                } else {
                    let members: Vec<Py<CorrelationWindows>> = obj.extract()?;
                    if ends.len() != members.len() || chains.len() != members.len() {
                        return Err(PyValueError::new_err("one flag and one chain per window"));
                    }
                    let chains = chains
                        .into_iter()
                        .map(|c| {
                            c.map(|(parent, child, group_by)| Chain {
                                parent: place(parent),
                                child,
                                group_by,
                            })
                        })
                        .collect();
                    let members = members.into_iter().map(&mut place).collect();
                    Plan::Windows(rid, members, ends, chains)
                }))
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(DetectionFeeds {
            matcher,
            plans,
            windows,
            absences,
            baselines,
            lateness: lateness.extract()?,
            lateness_obj: lateness.clone().unbind(),
            sample_chars,
            evidence,
            observed: 0,
            k_message: name("message"),
        })
    }

    /// Matching events observed natively (fed or late) since built.
    #[getter]
    fn observed(&self) -> u64 {
        self.observed
    }

    /// Observe `events[start:]` (candidate group numbers in `groups`, one per event) up to
    /// the first event the engine must observe itself; see the module doc and `RunOut`.
    /// `now`, `newest` and `watermark` are the engine's objects (an int clock stays an int
    /// where the reference keeps it: the absence groups' sightings, the newest time).
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        groups: &Bound<'py, PyList>,
        start: usize,
        now: &Bound<'py, PyAny>,
        newest: &Bound<'py, PyAny>,
        watermark: &Bound<'py, PyAny>,
    ) -> PyResult<RunOut<'py>> {
        // The windows, the groups and the matcher catch their own panics; one anywhere else
        // ends the call with an error (counted) instead of crossing into Python.
        caught_as(
            || self.run_inner(py, events, groups, start, now, newest, watermark),
            || PyRuntimeError::new_err("panic caught in DetectionFeeds.run"),
        )
    }
}

impl DetectionFeeds {
    #[allow(clippy::too_many_arguments)]
    fn run_inner<'py>(
        &mut self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        groups: &Bound<'py, PyList>,
        start: usize,
        now: &Bound<'py, PyAny>,
        newest_in: &Bound<'py, PyAny>,
        watermark_in: &Bound<'py, PyAny>,
    ) -> PyResult<RunOut<'py>> {
        let events = EventsIn::of(events)?;
        let mut newest: f64 = newest_in.extract()?;
        let mut watermark: f64 = watermark_in.extract()?;
        // the event time object that became the newest (None: unchanged)
        let mut newest_obj: Option<Bound<'py, PyAny>> = None;
        let mut matcher = self.matcher.bind(py).try_borrow_mut()?;
        let mut held_windows = borrow_all(py, &self.windows)?;
        let mut held_absences = borrow_all(py, &self.absences)?;
        let mut held_baselines = borrow_all(py, &self.baselines)?;
        let keys: Vec<Py<PyString>> = matcher.keys.iter().map(|k| k.clone_ref(py)).collect();
        let n = events.len().min(groups.len());
        let mut det_hits = vec![0u64; self.plans.len()];
        let mut feed_hits = vec![0u64; self.plans.len()];
        let mut late_events = 0u64;
        let fired = PyList::empty(py);
        let pushes = PyList::empty(py);
        let mut partial: Option<Partial<'py>> = None;
        let mut decisions: Vec<Decision> = Vec::new();
        let mut stop = n;
        let mut decided: Vec<Decision> = Vec::new();
        // What each (flow shape, candidate group) answers, for this call (a shape's identity
        // holds while its chunk lives: the events hold it for the call).
        let mut shape_answers: FxHashMap<(ShapeId, usize), Vec<Option<bool>>> =
            FxHashMap::default();
        let now_f: f64 = now.extract()?;
        // the reference's `now + allowed_lateness`, the object it clamps a time to
        let limit_obj = now.add(self.lateness_obj.bind(py))?;
        let limit: f64 = limit_obj.extract()?;
        // Each event's effects (`done` below), in one allocation for the call.
        let mut done: Vec<(usize, Step<'py>)> = Vec::new();
        let mut i = start;
        while i < n {
            let ev = events.at(i)?;
            let Some(fields) = ev.fields(py) else {
                stop = i;
                break;
            };
            decisions.clear();
            let (dict_fields, flow_fields, record_fields);
            let f: &dyn Fields = match &fields {
                EventFields::Flow(_, shape, values) => {
                    flow_fields = FlowFields {
                        py,
                        shape,
                        values,
                        keys: &keys,
                    };
                    &flow_fields
                }
                EventFields::Dict(dict) => {
                    dict_fields = DictFields::new(dict, &keys);
                    &dict_fields
                }
                EventFields::Record(r) => {
                    record_fields = RecordFields {
                        py,
                        record: &r.get().record,
                        keys: &keys,
                    };
                    &record_fields
                }
            };
            let group: usize = groups.get_item(i)?.extract()?;
            // A flow's shape answers most of its candidates once for the shape's flows (a
            // presence test, a test of the exporter's values): those are not read per flow.
            let known: &[Option<bool>] = match ev.answering_shape() {
                Some((id, shape)) => shape_answers.entry((id, group)).or_insert_with(|| {
                    matcher.shape_answers(
                        group,
                        &ShapeKnown {
                            py,
                            shape,
                            keys: &keys,
                        },
                    )
                }),
                None => &[],
            };
            matcher.decide_known(i, group, f, known, &mut decisions);
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
            let Ok(t) = ev.attr(py, Attr::Timestamp) else {
                stop = i;
                decided = std::mem::take(&mut decisions);
                break;
            };
            if !t.is_exact_instance_of::<PyFloat>() {
                stop = i;
                decided = std::mem::take(&mut decisions);
                break;
            }
            let t_f: f64 = t.extract()?;
            let (ts, ts_obj) = if t_f > limit {
                (limit, limit_obj.clone())
            } else if t_f.is_nan() {
                (now_f, now.clone())
            } else {
                (t_f, t)
            };
            let late = ts < watermark;
            let windows = decisions
                .iter()
                .any(|d| matches!(self.plans.get(d.1), Some(Some(Plan::Windows(..)))));
            let entry = if late || !windows {
                None
            } else {
                match self.entry(py, &ev, &fields, &ts_obj) {
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
                newest_obj = Some(ts_obj.clone());
            }
            // This event's effects, committed when every step took it.
            done.clear();
            // the index of the decision after which the engine takes the event over: its
            // step raised or declined, or fired into a window fed here too
            let mut failed: Option<usize> = None;
            for (j, d) in decisions.iter().enumerate() {
                let r = d.1;
                det_hits[r] += 1;
                let step = match self.plans.get(r) {
                    Some(Some(Plan::Absence(a))) => {
                        let got = held_absences[*a].seen_in(py, &fields, now, &ts_obj);
                        Step::Groups(group_step(py, got, j, &mut failed)?)
                    }
                    Some(Some(Plan::Baseline(b))) => {
                        let got = held_baselines[*b].add_in(py, &fields, ts);
                        Step::Groups(group_step(py, got, j, &mut failed)?)
                    }
                    Some(Some(Plan::Windows(rid, members, ends, chains))) => {
                        let Some(entry) = entry.as_ref() else {
                            continue; // late: the reference feeds no window
                        };
                        let mut results: Results<'py> = Vec::new();
                        for (k, &m) in members.iter().enumerate() {
                            let got = {
                                let w = &mut held_windows[m];
                                caught(|| w.add_inner(py, rid, entry.ev(), ts, &fields))
                            };
                            match got {
                                Ok(None) => {}
                                Ok(Some(out)) => {
                                    let out = out.into_pyobject(py)?.into_any();
                                    // Chained only while the engine has nothing to feed
                                    // first (an earlier fire it feeds itself).
                                    let chained = match chains.get(k) {
                                        Some(Some(chain)) if failed.is_none() => {
                                            self.chain(py, &mut held_windows, chain, &out, &ts_obj)?
                                        }
                                        _ => None,
                                    };
                                    let raised = chained.as_ref().is_some_and(|c| {
                                        c.get_item(0)
                                            .is_ok_and(|g| g.is_instance_of::<PyBaseException>())
                                    });
                                    if ends[k] && chained.is_none() {
                                        failed = Some(j); // after this detection's windows
                                    }
                                    results.push((k, out, chained.map(Bound::into_any)));
                                    if raised {
                                        // The step above raised or declined: the engine handles
                                        // it, then this detection's windows after this one.
                                        failed = Some(j);
                                        break;
                                    }
                                }
                                Err(e) => {
                                    let e = e.into_value(py).into_bound(py).into_any();
                                    results.push((k, e, None));
                                    failed = Some(j);
                                    break;
                                }
                            }
                        }
                        Step::Windows(results)
                    }
                    _ => continue, // not reached: every decision's plan was checked above
                };
                done.push((r, step));
                if failed.is_some() {
                    break;
                }
            }
            if let Some(at) = failed {
                let rest = decisions[at + 1..].iter().map(|d| d.1).collect();
                let steps = done
                    .drain(..)
                    .map(|(r, step)| {
                        Ok((
                            r,
                            match step {
                                Step::Windows(results) => PyList::new(py, results)?.into_any(),
                                Step::Groups(v) => v,
                            },
                        ))
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                let entry = entry.map(|e| e.object(py)).transpose()?;
                partial = Some((i, ts_obj, late, entry, steps, rest));
                stop = i;
                decided = std::mem::take(&mut decisions);
                break;
            }
            // the entry's tuple, made once for what fired (None when late)
            let mut entry_obj: Option<Option<Bound<'py, PyAny>>> = None;
            for (r, step) in done.drain(..) {
                match step {
                    Step::Windows(results) => {
                        feed_hits[r] += 1;
                        for (k, out, chained) in results {
                            let obj = match &mut entry_obj {
                                Some(obj) => obj,
                                None => entry_obj
                                    .insert(entry.as_ref().map(|e| e.object(py)).transpose()?),
                            };
                            fired.append((i, r, Some(k), out, obj.as_ref(), chained))?;
                        }
                    }
                    Step::Groups(v) => {
                        if v.is_none() {
                            continue;
                        }
                        if matches!(self.plans.get(r), Some(Some(Plan::Absence(_)))) {
                            pushes.append((r, v))?;
                        } else {
                            fired.append((i, r, None::<usize>, v, &ts_obj, py.None()))?;
                        }
                    }
                }
            }
            if late && windows {
                late_events += 1;
            }
            self.observed += 1;
            i += 1;
        }
        let hits = (0..self.plans.len())
            .filter(|&r| det_hits[r] != 0 || feed_hits[r] != 0)
            .map(|r| (r, det_hits[r], feed_hits[r]))
            .collect();
        // the reference's objects: the newest time as it came, `newest - allowed_lateness`
        let (newest, watermark) = match newest_obj {
            Some(t) => {
                let w = t.sub(self.lateness_obj.bind(py))?;
                (t, w)
            }
            None => (newest_in.clone(), watermark_in.clone()),
        };
        Ok((
            stop,
            newest,
            watermark,
            late_events,
            hits,
            fired,
            pushes,
            partial,
            decided,
        ))
    }
}
