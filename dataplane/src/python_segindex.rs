//! A batch's segments finished for the disk on a thread of their own that never takes the
//! interpreter, with an eventfd the event loop watches: each body's search filter
//! (`segindex::bloom`) and its packed form (`segpack::Packer`).
//!
//! Why not a Python worker thread: a thread that must take the interpreter back (to start
//! the work and to hand the result over) waits for the busy event loop's switch interval,
//! up to 5 ms, each time. On the syslog/UDP path the filters of a 2 MiB batch were ~3 ms of
//! work and 10-18 ms of the store's wall time, the largest step of a batch's insert.

use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::python::PANICS;

/// One body finished: its filter (`None` when not asked for) and its packed form (`None`
/// when it stays plain); `Err` where either panicked (counted by the caller).
type Finished = Result<(Option<Vec<u8>>, Option<Vec<u8>>), ()>;

fn finish(bodies: &[PyBackedBytes], filters: bool) -> Vec<Finished> {
    let mut packer = crate::segpack::Packer::new();
    bodies
        .iter()
        .map(|body| {
            let body: &[u8] = body;
            // A panic (the filter's build, the binding) leaves the context usable for the
            // next body: each compression starts a new frame on it.
            catch_unwind(AssertUnwindSafe(|| {
                let filter = filters.then(|| crate::segindex::bloom(body));
                (filter, packer.as_mut().and_then(|p| p.pack(body)))
            }))
            .map_err(|_| ())
        })
        .collect()
}

/// A body as stored (packed, or the plain object itself) and its filter.
type Stored<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyBytes>>);

/// Each body as stored and its filter, as Python objects. A body whose work panicked is
/// stored plain without a filter, and counted.
fn to_python<'py>(
    py: Python<'py>,
    bodies: Vec<PyBackedBytes>,
    finished: Vec<Finished>,
) -> PyResult<Vec<Stored<'py>>> {
    bodies
        .into_iter()
        .zip(finished)
        .map(|(body, done)| {
            let (filter, packed) = done.unwrap_or_else(|()| {
                PANICS.fetch_add(1, Ordering::Relaxed);
                (None, None)
            });
            let stored = match packed {
                Some(packed) => PyBytes::new(py, &packed).into_any(),
                None => body.into_pyobject(py)?.into_any(),
            };
            Ok((stored, filter.map(|f| PyBytes::new(py, &f))))
        })
        .collect()
}

/// A finished job: the bodies (handed back, so their references are dropped with the
/// interpreter held, or stored as they are) and what was made of each.
type Built = (Vec<PyBackedBytes>, Vec<Finished>);

struct Shared {
    /// Readable once `out` is set.
    done: EventFd,
    out: Mutex<Option<Built>>,
}

/// `FinishSegments(bodies, filters)`: starts packing the bodies (and building their filters
/// when `filters`) at once; `fileno` becomes readable when they are ready, and `result()`
/// hands them over (`None` before).
#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct FinishSegments {
    shared: Arc<Shared>,
}

#[pymethods]
impl FinishSegments {
    #[new]
    fn new(bodies: Vec<PyBackedBytes>, filters: bool) -> PyResult<Self> {
        let os_error = |e: std::io::Error| PyOSError::new_err(e.to_string());
        let done = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| os_error(e.into()))?;
        let shared = Arc::new(Shared {
            done,
            out: Mutex::new(None),
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("segment-finish".into())
            .spawn(move || {
                let finished = finish(&bodies, filters);
                *theirs.out.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((bodies, finished));
                let _ = theirs.done.write(1);
            })
            .map_err(os_error)?;
        Ok(FinishSegments { shared })
    }

    /// The eventfd that becomes readable once the bodies are finished.
    #[getter]
    fn fileno(&self) -> i32 {
        self.shared.done.as_raw_fd()
    }

    /// `(stored body, filter)` of each body in order, once; `None` while they are being
    /// finished or after they were handed over. The filter is `None` when not asked for or
    /// when its build panicked (counted, the body then stored plain).
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Option<Vec<Stored<'py>>>> {
        let taken = self
            .shared
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some((bodies, finished)) = taken else {
            return Ok(None);
        };
        to_python(py, bodies, finished).map(Some)
    }
}
