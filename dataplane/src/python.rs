//! The extension module `appliance._dataplane`: thin PyO3 bindings over the pure modules.
//!
//! A panic inside a decoder never crosses into Python: it is caught here, counted
//! (`panics()`), and the message goes to the Python reference instead, so it is not lost.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::syslog::framing::Framer;
use crate::syslog::header::{self, Clock, Message};

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Decoder panics caught at the boundary since start (each message went to the reference).
#[pyfunction]
fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// A BSD stamp's fields, the sender's zone (by identity) and the hour received.
type StampKey = (Option<u32>, u32, u32, u32, u32, u32, u32, usize, i64);

/// BSD stamps already converted, as the reference memoises them per (stamp, zone, hour
/// received): a burst shares a handful of stamps and the conversion is a Python call.
#[derive(Default)]
struct StampMemo {
    epochs: HashMap<StampKey, Option<f64>>,
    /// The zones the keys name by address, held so no address is reused while keyed.
    zones: Vec<Py<PyAny>>,
}

const STAMP_MEMO_MAX: usize = 4096;

/// The caller's conversions for one message; the first Python error is kept and re-raised.
struct PyClock<'a, 'py> {
    bsd_epoch: &'a Bound<'py, PyAny>,
    rfc3339: &'a Bound<'py, PyAny>,
    now: f64,
    tz: &'a Bound<'py, PyAny>,
    memo: &'a mut StampMemo,
    error: Option<PyErr>,
}

impl PyClock<'_, '_> {
    fn result(&mut self, got: PyResult<Bound<'_, PyAny>>) -> Option<f64> {
        if self.error.is_some() {
            return None;
        }
        match got.and_then(|v| v.extract::<Option<f64>>()) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

impl Clock for PyClock<'_, '_> {
    fn bsd_epoch(
        &mut self,
        year: Option<u32>,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        micros: u32,
    ) -> Option<f64> {
        let zone = self.tz.as_ptr() as usize;
        let key = (
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            zone,
            (self.now / 3600.0).floor() as i64,
        );
        if let Some(hit) = self.memo.epochs.get(&key) {
            return *hit;
        }
        let got = self.bsd_epoch.call1((
            year, month, day, hour, minute, second, micros, self.now, self.tz,
        ));
        let epoch = self.result(got);
        if self.error.is_none() {
            let memo = &mut *self.memo;
            if memo.epochs.len() >= STAMP_MEMO_MAX {
                memo.epochs.clear();
                memo.zones.clear();
            }
            if !memo.zones.iter().any(|z| z.as_ptr() as usize == zone) {
                memo.zones.push(self.tz.clone().unbind());
            }
            memo.epochs.insert(key, epoch);
        }
        epoch
    }

    fn rfc3339(&mut self, token: &str) -> Option<f64> {
        let got = self.rfc3339.call1((token,));
        self.result(got)
    }
}

/// Decodes syslog headers into the reference's `SyslogMessage`.
///
/// Built once with the reference's own time conversions (`bsd_epoch`, `rfc3339`) and the
/// message class, so the per-message call passes only the bytes, the clock and the zone.
#[pyclass(module = "appliance._dataplane", frozen)]
struct HeaderDecoder {
    message_class: Py<PyAny>,
    bsd_epoch: Py<PyAny>,
    rfc3339: Py<PyAny>,
    /// The reference's name tables (`message.SEVERITY_NAMES`, `FACILITY_NAMES`): one source.
    severity_names: Vec<Py<PyString>>,
    facility_names: Vec<Py<PyString>>,
    memo: Mutex<StampMemo>,
}

fn build<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyAny>,
    m: &Message<'_>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let sd = match &m.structured_data {
        None => py.None().into_bound(py),
        Some(elements) => {
            let d = PyDict::new(py);
            for (id, params) in elements {
                let p = PyDict::new(py);
                for (k, v) in params {
                    p.set_item(k, v.as_ref())?;
                }
                d.set_item(id, p)?;
            }
            d.into_any()
        }
    };
    let errors = PyList::new(py, m.errors.iter().map(|e| PyString::intern(py, e)))?;
    fn any<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> PyResult<Bound<'py, PyAny>> {
        v.into_bound_py_any(py)
    }
    let args = PyTuple::new(
        py,
        [
            any(py, m.facility)?,
            any(py, m.severity)?,
            any(py, m.message)?,
            PyString::intern(py, m.format.as_str()).into_any(),
            any(py, m.timestamp)?,
            any(py, m.hostname)?,
            any(py, m.app_name)?,
            any(py, m.procid)?,
            any(py, m.msgid)?,
            any(py, m.version)?,
            sd.clone(),
            any(py, m.sequence)?,
            errors.into_any(),
        ],
    )?;
    Ok((cls.call1(args)?, sd))
}

/// `process.pid` of a PROCID: `None` for no number, `Err` when only the reference can say
/// (non-ASCII text, where Python's Unicode `isdigit` decides).
fn pid(procid: &str) -> Result<Option<i64>, ()> {
    if !procid.is_ascii() {
        return Err(());
    }
    if procid.is_empty() || procid.len() >= 10 || !procid.bytes().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    Ok(procid.parse().ok())
}

/// The ECS fields of the syslog header, in the reference's key order (`syslog_fields`): the
/// stored line is the dict's JSON, so the order is part of the contract.
fn header_fields<'py>(
    py: Python<'py>,
    names: (&[Py<PyString>], &[Py<PyString>]),
    m: &Message<'_>,
    sd: &Bound<'py, PyAny>,
    peer_ip: &Bound<'py, PyAny>,
    pid: Option<i64>,
) -> PyResult<Bound<'py, PyDict>> {
    let f = PyDict::new(py);
    let severity = names.0[m.severity as usize].bind(py);
    f.set_item(intern!(py, "message"), m.message)?;
    f.set_item(intern!(py, "event.kind"), intern!(py, "event"))?;
    f.set_item(intern!(py, "event.dataset"), intern!(py, "syslog"))?;
    f.set_item(intern!(py, "observer.ip"), peer_ip)?;
    f.set_item(intern!(py, "log.level"), severity)?;
    f.set_item(
        intern!(py, "log.syslog.priority"),
        m.facility * 8 + m.severity,
    )?;
    f.set_item(intern!(py, "log.syslog.severity.code"), m.severity)?;
    f.set_item(intern!(py, "log.syslog.severity.name"), severity)?;
    f.set_item(intern!(py, "log.syslog.facility.code"), m.facility)?;
    f.set_item(
        intern!(py, "log.syslog.facility.name"),
        names.1[m.facility as usize].bind(py),
    )?;
    f.set_item(
        intern!(py, "log.syslog.format"),
        PyString::intern(py, m.format.as_str()),
    )?;
    if let Some(host) = m.hostname {
        let host = PyString::new(py, host);
        f.set_item(intern!(py, "host.hostname"), &host)?;
        f.set_item(intern!(py, "log.syslog.hostname"), host)?;
    }
    if let Some(app) = m.app_name {
        let app = PyString::new(py, app);
        f.set_item(intern!(py, "process.name"), &app)?;
        f.set_item(intern!(py, "log.syslog.appname"), app)?;
    }
    if let Some(procid) = m.procid {
        f.set_item(intern!(py, "log.syslog.procid"), procid)?;
        if let Some(pid) = pid {
            f.set_item(intern!(py, "process.pid"), pid)?;
        }
    }
    if let Some(msgid) = m.msgid {
        f.set_item(intern!(py, "log.syslog.msgid"), msgid)?;
    }
    if let Some(version) = m.version {
        f.set_item(intern!(py, "log.syslog.version"), version)?;
    }
    if m.structured_data.is_some() {
        f.set_item(intern!(py, "log.syslog.structured_data"), sd)?;
    }
    if let Some(sequence) = m.sequence {
        f.set_item(intern!(py, "event.sequence"), sequence)?;
    }
    if !m.errors.is_empty() {
        let tags = PyList::empty(py);
        for e in &m.errors {
            tags.append(format!("syslog_{e}"))?;
        }
        f.set_item(intern!(py, "tags"), tags)?;
    }
    Ok(f)
}

#[pymethods]
impl HeaderDecoder {
    #[new]
    fn new(
        message_class: Py<PyAny>,
        bsd_epoch: Py<PyAny>,
        rfc3339: Py<PyAny>,
        severity_names: Vec<Py<PyString>>,
        facility_names: Vec<Py<PyString>>,
    ) -> PyResult<Self> {
        if severity_names.len() != 8 || facility_names.len() != 24 {
            return Err(PyValueError::new_err(
                "8 severity and 24 facility names are needed",
            ));
        }
        Ok(HeaderDecoder {
            message_class,
            bsd_epoch,
            rfc3339,
            severity_names,
            facility_names,
            memo: Mutex::default(),
        })
    }

    /// The message, or `None` when the reference should decode it (see `header::decode`).
    #[pyo3(signature = (data, now, tz=None))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: f64,
        tz: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.run(py, data, now, tz, None)?.map(|(msg, _)| msg))
    }

    /// `(message, ECS header fields)` as the reference's `decode_syslog` then `syslog_fields`
    /// give them, or `None` when the reference should decode the message.
    #[pyo3(signature = (data, now, tz, peer_ip))]
    fn decode_with_fields<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: f64,
        tz: Option<Bound<'py, PyAny>>,
        peer_ip: Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyDict>)>> {
        Ok(self
            .run(py, data, now, tz, Some(&peer_ip))?
            .and_then(|(msg, fields)| fields.map(|f| (msg, f))))
    }
}

impl HeaderDecoder {
    #[allow(clippy::type_complexity)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: f64,
        tz: Option<Bound<'py, PyAny>>,
        peer_ip: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Option<Bound<'py, PyDict>>)>> {
        let tz = tz.unwrap_or_else(|| py.None().into_bound(py));
        let bsd = self.bsd_epoch.bind(py);
        let rfc = self.rfc3339.bind(py);
        // The conversions call Python, which may run another thread's decode: never wait for
        // the memo while holding the interpreter; a busy memo means a private one this time.
        let mut private = StampMemo::default();
        let mut shared = self.memo.try_lock().ok();
        let memo = match shared.as_deref_mut() {
            Some(memo) => memo,
            None => &mut private,
        };
        let mut clock = PyClock {
            bsd_epoch: bsd,
            rfc3339: rfc,
            now,
            tz: &tz,
            memo,
            error: None,
        };
        let text = header::message_text(data);
        let decoded = catch_unwind(AssertUnwindSafe(|| header::decode(&text, &mut clock)));
        let msg = match decoded {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        };
        if let Some(err) = clock.error {
            return Err(err);
        }
        let pid = match msg.procid.filter(|_| peer_ip.is_some()).map(pid) {
            None => None,
            Some(Ok(pid)) => pid,
            Some(Err(())) => return Ok(None),
        };
        let (obj, sd) = build(py, self.message_class.bind(py), &msg)?;
        let fields = match peer_ip {
            Some(ip) => Some(header_fields(
                py,
                (&self.severity_names, &self.facility_names),
                &msg,
                &sd,
                ip,
                pid,
            )?),
            None => None,
        };
        Ok(Some((obj, fields)))
    }
}

/// RFC 6587 framing; the API of the reference `SyslogFramer` (`errors` is a dict the transport
/// reads and clears).
#[pyclass(name = "SyslogFramer", module = "appliance._dataplane")]
struct PyFramer {
    inner: Framer,
    errors: Py<PyDict>,
}

impl PyFramer {
    fn sync_errors(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.inner.errors.is_empty() {
            return Ok(());
        }
        let errors = self.errors.bind(py);
        for (reason, n) in self.inner.errors.drain(..) {
            let key = PyString::intern(py, reason.as_str());
            let had: u64 = match errors.get_item(&key)? {
                Some(v) => v.extract()?,
                None => 0,
            };
            errors.set_item(key, had + n)?;
        }
        Ok(())
    }

    fn step<'py>(
        &mut self,
        py: Python<'py>,
        frame: Option<Vec<u8>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.sync_errors(py)?;
        Ok(frame.map(|f| PyBytes::new(py, &f)))
    }
}

#[pymethods]
impl PyFramer {
    #[new]
    #[pyo3(signature = (max_length=65536, max_digits=8))]
    fn new(py: Python<'_>, max_length: usize, max_digits: usize) -> PyResult<Self> {
        if max_length == 0 || max_digits == 0 {
            return Err(PyValueError::new_err(
                "max_length and max_digits must be positive",
            ));
        }
        Ok(PyFramer {
            inner: Framer::new(max_length, max_digits),
            errors: PyDict::new(py).unbind(),
        })
    }

    fn feed(&mut self, data: &[u8]) {
        self.inner.feed(data);
    }

    fn next_frame<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let frame = self.inner.next_frame();
        self.step(py, frame)
    }

    fn close<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let frame = self.inner.close();
        self.step(py, frame)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.next_frame(py)
    }

    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    #[getter]
    fn frames(&self) -> u64 {
        self.inner.frames
    }

    #[getter]
    fn errors(&self, py: Python<'_>) -> Py<PyDict> {
        self.errors.clone_ref(py)
    }

    #[getter]
    fn max_length(&self) -> usize {
        self.inner.max_length
    }

    #[getter]
    fn max_digits(&self) -> usize {
        self.inner.max_digits
    }
}

/// A decoder file, interpreted (see `decoders`): built once from the plan Python makes of the
/// validated file, its constants, and the reference's conversions for the ones it defers.
#[pyclass(module = "appliance._dataplane", frozen)]
struct FileDecoder {
    inner: crate::decoders::Decoder,
    consts: Vec<Py<PyAny>>,
    convert: Py<PyAny>,
    /// Field names as interned Python strings: their hash is cached, so setting a field costs
    /// no string allocation and no hashing.
    keys: rustc_hash::FxHashMap<String, Py<PyString>>,
}

#[pymethods]
impl FileDecoder {
    #[new]
    fn new(
        py: Python<'_>,
        plan: &str,
        consts: Vec<Py<PyAny>>,
        convert: Py<PyAny>,
    ) -> PyResult<Self> {
        let inner = crate::decoders::Decoder::from_json(plan).map_err(PyValueError::new_err)?;
        let keys = inner
            .field_names()
            .into_iter()
            .map(|k| (k.to_owned(), PyString::intern(py, k).unbind()))
            .collect();
        Ok(FileDecoder {
            inner,
            consts,
            convert,
            keys,
        })
    }

    /// Set the message's fields and return `True`, `False` when it is not this decoder's
    /// line, or `None` to leave it to the Python decoder (non-ASCII text, a caught panic).
    fn decode(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        fields: &Bound<'_, PyDict>,
    ) -> PyResult<Option<bool>> {
        use crate::decoders::{Outcome, Value};
        let text_obj = msg.getattr(intern!(py, "message"))?;
        let text = text_obj.cast::<PyString>()?.to_cow()?;
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.inner.decode(&text))) {
            Ok(outcome) => outcome,
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        };
        let found = match outcome {
            Outcome::Fields(found) => found,
            Outcome::NotMine => return Ok(Some(false)),
            Outcome::Defer => return Ok(None),
        };
        for (key, value) in found {
            let obj: Bound<'_, PyAny> = match value {
                Value::Text(t) => PyString::new(py, &t).into_any(),
                Value::Int(n) => n.into_bound_py_any(py)?,
                Value::Const(i) => match self.consts.get(i) {
                    // A list constant is copied: fields are mutable, events must not share it.
                    Some(c) => match c.bind(py).cast::<PyList>() {
                        Ok(list) => PyList::new(py, list.iter())?.into_any(),
                        Err(_) => c.bind(py).clone(),
                    },
                    None => continue,
                },
                Value::Texts(items) => PyList::new(py, items)?.into_any(),
                Value::Converted(name, v) => {
                    let got = self.convert.bind(py).call1((name, v))?;
                    if got.is_none() {
                        continue;
                    }
                    got
                }
            };
            match self.keys.get(key) {
                Some(k) => fields.set_item(k.bind(py), obj)?,
                None => fields.set_item(key, obj)?,
            }
        }
        Ok(Some(true))
    }
}

/// `key=value` pairs as the reference `base.kv_pairs` gives them: a dict built from the last
/// pair to the first (so the first of a repeated key wins, in the reference's key order), or
/// `None` for text only the reference can read (non-ASCII).
#[pyfunction]
fn kv_pairs<'py>(
    py: Python<'py>,
    text: &str,
    limit: usize,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let found = match catch_unwind(|| crate::kv::pairs(text, limit)) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(_) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
    };
    let out = PyDict::new(py);
    for (key, value) in found.iter().rev() {
        out.set_item(key, value)?;
    }
    Ok(Some(out))
}

/// The search-index filter of a segment body (`segindex::bloom`), or `None` after a panic
/// (counted): the segment is then stored without one and searched by scanning, as before.
#[pyfunction]
fn segment_bloom<'py>(py: Python<'py>, body: &[u8]) -> Option<Bound<'py, PyBytes>> {
    match catch_unwind(|| crate::segindex::bloom(body)) {
        Ok(filter) => Some(PyBytes::new(py, &filter)),
        Err(_) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[pymodule]
fn _dataplane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(panics, m)?)?;
    m.add_function(wrap_pyfunction!(kv_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(segment_bloom, m)?)?;
    m.add_class::<HeaderDecoder>()?;
    m.add_class::<PyFramer>()?;
    m.add_class::<FileDecoder>()?;
    Ok(())
}
