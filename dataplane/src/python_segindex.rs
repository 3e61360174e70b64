//! A batch's search filters (`segindex::bloom` of each segment body) built on a thread of
//! their own that never takes the interpreter, with an eventfd the event loop watches.
//!
//! Why not a Python worker thread: a thread that must take the interpreter back (to start
//! the work and to hand the result over) waits for the busy event loop's switch interval,
//! up to 5 ms, each time. On the syslog/UDP path the filters of a 2 MiB batch were ~3 ms of
//! work and 10-18 ms of the store's wall time, the largest step of a batch's insert.

use std::os::fd::AsRawFd;
use std::panic::catch_unwind;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::python::PANICS;

/// Each body's filter, or `None` where building it panicked (counted by the caller).
fn blooms(bodies: &[PyBackedBytes]) -> Vec<Option<Vec<u8>>> {
    bodies
        .iter()
        .map(|body| {
            let body: &[u8] = body;
            catch_unwind(|| crate::segindex::bloom(body)).ok()
        })
        .collect()
}

/// The filters as Python objects (a panicked body's `None` counted).
fn filters_to_python(
    py: Python<'_>,
    filters: Vec<Option<Vec<u8>>>,
) -> Vec<Option<Bound<'_, PyBytes>>> {
    filters
        .into_iter()
        .map(|filter| match filter {
            Some(filter) => Some(PyBytes::new(py, &filter)),
            None => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                None
            }
        })
        .collect()
}

/// A finished job: the bodies (handed back, so their references are dropped with the
/// interpreter held) and their filters.
type Built = (Vec<PyBackedBytes>, Vec<Option<Vec<u8>>>);

struct Shared {
    /// Readable once `out` is set.
    done: EventFd,
    out: Mutex<Option<Built>>,
}

/// `SegmentBlooms(bodies)`: starts building the filters at once; `fileno` becomes readable
/// when they are ready, and `result()` hands them over (`None` before).
#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct SegmentBlooms {
    shared: Arc<Shared>,
}

#[pymethods]
impl SegmentBlooms {
    #[new]
    fn new(bodies: Vec<PyBackedBytes>) -> PyResult<Self> {
        let os_error = |e: std::io::Error| PyOSError::new_err(e.to_string());
        let done = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| os_error(e.into()))?;
        let shared = Arc::new(Shared {
            done,
            out: Mutex::new(None),
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("segment-blooms".into())
            .spawn(move || {
                let filters = blooms(&bodies);
                *theirs.out.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((bodies, filters));
                let _ = theirs.done.write(1);
            })
            .map_err(os_error)?;
        Ok(SegmentBlooms { shared })
    }

    /// The eventfd that becomes readable once the filters are built.
    #[getter]
    fn fileno(&self) -> i32 {
        self.shared.done.as_raw_fd()
    }

    /// Each body's filter (`None` for one whose build panicked, counted), once; `None` while
    /// they are being built or after they were handed over.
    fn result<'py>(&self, py: Python<'py>) -> Option<Vec<Option<Bound<'py, PyBytes>>>> {
        let (bodies, filters) = self
            .shared
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        drop(bodies);
        Some(filters_to_python(py, filters))
    }
}
