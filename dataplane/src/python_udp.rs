//! `UdpReceiver`: the native UDP receiver (udp_receiver.rs) as the event loop sees it, and the
//! step that turns a slice of its backlog into the `(bytes, sender ip)` a decode needs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::python::PANICS;
use crate::udp_receiver::{ip_text, Config, Receiver};

/// Sender texts kept per receiver; past it the cache starts over (senders are few and repeat).
const MAX_SENDERS: usize = 65_536;

#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct UdpReceiver {
    rx: Receiver,
    /// The sender's ip as a Python str, made once per sender: the intake's profile cache is
    /// probed with the same object every datagram.
    ips: Mutex<HashMap<IpAddr, Py<PyString>>>,
}

impl UdpReceiver {
    /// Up to `n` datagrams off the backlog as `(payload, sender ip)`, in arrival order. A
    /// panic here (none is expected) is caught and counted: the slice is then lost, counted
    /// as taken.
    pub(crate) fn take_py<'py>(
        &self,
        py: Python<'py>,
        n: usize,
    ) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyString>, u16)> {
        let batches = match catch_unwind(AssertUnwindSafe(|| self.rx.take(n))) {
            Ok(b) => b,
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
        };
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(batches.iter().map(|b| b.len()).sum());
        for batch in &batches {
            for (data, from) in batch.iter() {
                let ip = match ips.get(&from.ip()) {
                    Some(ip) => ip.bind(py).clone(),
                    None => {
                        if ips.len() >= MAX_SENDERS {
                            ips.clear();
                        }
                        let ip = PyString::new(py, &ip_text(from.ip()));
                        ips.insert(from.ip(), ip.clone().unbind());
                        ip
                    }
                };
                out.push((PyBytes::new(py, data), ip, from.port()));
            }
        }
        out
    }
}

#[pymethods]
impl UdpReceiver {
    /// Read `fd` (a `dup` of the listener's socket, in blocking mode with `SO_RCVTIMEO` set;
    /// closed by the caller after `close`) on a thread of its own.
    #[new]
    #[pyo3(signature = (fd, max_bytes, backlog_bytes, batch = 256))]
    fn new(fd: i32, max_bytes: usize, backlog_bytes: usize, batch: usize) -> PyResult<Self> {
        let cfg = Config {
            max_bytes,
            backlog_bytes,
            batch,
        };
        let rx =
            Receiver::start(fd, cfg, &PANICS).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(UdpReceiver {
            rx,
            ips: Mutex::new(HashMap::new()),
        })
    }

    /// The eventfd that becomes readable when the backlog goes non-empty.
    #[getter]
    fn wake_fd(&self) -> i32 {
        self.rx.wake_fd()
    }

    /// Reset the wake-up: call when woken, before taking.
    fn ack(&self) {
        self.rx.ack();
    }

    /// Datagrams waiting in the backlog.
    #[getter]
    fn pending(&self) -> usize {
        self.rx.pending()
    }

    /// Payload bytes waiting in the backlog.
    #[getter]
    fn held(&self) -> usize {
        self.rx.held()
    }

    /// Times the backlog reached `backlog_bytes` and reading paused.
    #[getter]
    fn full(&self) -> u64 {
        self.rx.stats().full.load(Ordering::Relaxed)
    }

    /// Datagrams read from the socket since start.
    #[getter]
    fn received(&self) -> u64 {
        self.rx.stats().received.load(Ordering::Relaxed)
    }

    /// `recvmmsg` errors other than "nothing yet".
    #[getter]
    fn errors(&self) -> u64 {
        self.rx.stats().errors.load(Ordering::Relaxed)
    }

    /// Panics caught on the reading thread.
    #[getter]
    fn panics(&self) -> u64 {
        self.rx.stats().panics.load(Ordering::Relaxed)
    }

    /// Whether the thread is reading.
    #[getter]
    fn alive(&self) -> bool {
        self.rx.alive()
    }

    /// Up to `n` datagrams as `(payload, (ip, port))`: what the Python reader hands its
    /// consumers (readers other than syslog's, and the tests).
    fn take<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyList>> {
        let items = self.take_py(py, n);
        PyList::new(py, items.into_iter().map(|(d, ip, port)| (d, (ip, port))))
    }

    /// Stop reading and join the thread (the GIL released meanwhile). What was read stays
    /// for `take`.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.rx.close());
    }

    /// Tests: make the reading thread's next read panic (caught, counted, reading goes on).
    fn inject_panic(&self) {
        self.rx.inject_panic();
    }
}
