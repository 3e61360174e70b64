//! A stored batch's `event_segments` rows made in one pass over its events (ids given, lines
//! joined, time bounds taken), as `appliance.store.segments.segment_rows` makes them.
//!
//! Why: on the syslog/TCP path the pipeline's event loop is the limit, and the reference's
//! three list comprehensions, four `min`/`max` calls and the id loop were ~0.8 µs of its
//! ~8 µs a message (cProfile, 1M lines). Only what the reference would store the same way
//! is taken here: every line an exact `bytes`, every time an exact `float`; any other batch
//! (a line to encode, an int time) is left to the reference, after its ids are given.

use std::io::Write;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyList, PyTuple};

use crate::python_event::{Attr, Event};

/// One segment's rows being made: its first id, count and time bounds, and its lines.
struct Segment<'py> {
    first: i64,
    lines: Vec<Bound<'py, PyBytes>>,
    bytes: usize,
    ts: (f64, f64),
    created: (f64, f64),
}

/// Python's `min`/`max` over floats: the first value stays unless a later one compares
/// below (above) it, so a NaN decides nothing it would not decide there.
fn widen(bounds: &mut (f64, f64), x: f64) {
    if x < bounds.0 {
        bounds.0 = x;
    }
    if x > bounds.1 {
        bounds.1 = x;
    }
}

impl<'py> Segment<'py> {
    fn row(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let n = self.lines.len();
        let size = self.bytes + n.saturating_sub(1);
        let body = PyBytes::new_with(py, size, |mut buf: &mut [u8]| {
            // Writing into the slice fails rather than panics if the sizes ever disagree.
            let overflow = |_| PyValueError::new_err("segment body larger than its lines");
            for (i, line) in self.lines.iter().enumerate() {
                if i > 0 {
                    buf.write_all(b"\n").map_err(overflow)?;
                }
                buf.write_all(line.as_bytes()).map_err(overflow)?;
            }
            Ok(())
        })?;
        (
            self.first,
            self.first.wrapping_add(n as i64 - 1),
            n as i64,
            self.ts.0,
            self.ts.1,
            self.created.0,
            self.created.1,
            body,
        )
            .into_pyobject(py)
    }
}

/// Give `events` the ids from `first_id` on, then make their rows of at most `per_segment`
/// events each; `None` (ids given) when a line is not `bytes` or a time not a `float`.
#[pyfunction]
pub(crate) fn segment_rows_with_ids<'py>(
    events: &Bound<'py, PyList>,
    first_id: i64,
    per_segment: usize,
) -> PyResult<Option<Vec<Bound<'py, PyTuple>>>> {
    let py = events.py();
    let per_segment = per_segment.max(1);
    let mut segments: Vec<Segment<'py>> = Vec::new();
    let mut plain = true;
    for (i, ev) in events.iter().enumerate() {
        let this = first_id.wrapping_add(i as i64);
        Event::write(&ev, Attr::Id, this.into_pyobject(py)?.into_any())?;
        if !plain {
            continue;
        }
        let (Ok(l), Ok(t), Ok(c)) = (
            Event::read(&ev, Attr::Line)?.cast_into_exact::<PyBytes>(),
            Event::read(&ev, Attr::Timestamp)?.cast_into_exact::<PyFloat>(),
            Event::read(&ev, Attr::Created)?.cast_into_exact::<PyFloat>(),
        ) else {
            plain = false;
            continue;
        };
        let (t, c) = (t.value(), c.value());
        if i % per_segment == 0 {
            segments.push(Segment {
                first: this,
                lines: Vec::with_capacity(per_segment.min(events.len().saturating_sub(i))),
                bytes: 0,
                ts: (t, t),
                created: (c, c),
            });
        }
        let Some(s) = segments.last_mut() else {
            continue; // unreachable: the first event begins a segment
        };
        s.bytes += l.as_bytes().len();
        s.lines.push(l);
        widen(&mut s.ts, t);
        widen(&mut s.created, c);
    }
    if !plain {
        return Ok(None);
    }
    segments
        .into_iter()
        .map(|s| s.row(py))
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

/// A batch's stored-line bytes (the lines that are exactly `bytes`) and the indices of the
/// events whose line is anything else (None: a stage dropped it, to be encoded again).
/// The pipeline reads this once a batch; as a Python loop it was two attribute reads an
/// event.
#[pyfunction]
pub(crate) fn line_census(events: &Bound<'_, PyList>) -> PyResult<(usize, Vec<usize>)> {
    let mut total = 0usize;
    let mut odd = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        match Event::read(&ev, Attr::Line)?.cast_into_exact::<PyBytes>() {
            Ok(line) => total += line.as_bytes().len(),
            Err(_) => odd.push(i),
        }
    }
    Ok((total, odd))
}
