//! The extension module `appliance._dataplane`: thin PyO3 bindings over the pure modules.
//!
//! A panic inside a decoder never crosses into Python: it is caught here, counted
//! (`panics()`), and the message goes to the Python reference instead, so it is not lost.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PySet, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use rustc_hash::FxHashMap;

use crate::jsonstr;
use crate::python_event::{Attr, Event};
use crate::python_flowevents::{EventsIn, ShapeId};
use crate::python_line::{quoted_key, Json, KeptRun, Prewritten};
use crate::python_record::{owned, FieldsOut, Record, RecordTemplate, PAST_BOUND};
use crate::rules::{Fields, JsonFields, RuleSet, ShapeFields, Undecided, Val};
use crate::syslog::framing::Framer;
use crate::syslog::header::{self, Clock, Format, Message};

pub(crate) static PANICS: AtomicU64 = AtomicU64::new(0);

/// Decoder panics caught at the boundary since start (each message went to the reference).
#[pyfunction]
fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Batch events whose fields passed a record's bound and were made a dict up front, since
/// start (`python_record::PAST_BOUND`).
#[pyfunction]
fn records_past_bound() -> u64 {
    PAST_BOUND.load(Ordering::Relaxed)
}

/// Texts up to this many bytes are shared (`SharedStrs`); longer ones are rarely repeated.
const SHARED_TEXT_MAX: usize = 64;
/// Slots of the shared texts (a power of two): ~330 KB, and the strs when all are filled.
const SHARED_SLOTS: usize = 4096;

/// One Python str per short text of the header and the native decoders' values (hostname,
/// app name, PROCID, MSGID, `event.action`, a user name...), shared by the messages that
/// carry it: a sender's run of messages allocates and frees none of them, and the engine's
/// signature memo (`RuleMatcher.memo_groups`), which compares the previous event's parts by
/// identity, hits.
///
/// Direct-mapped (a text has one slot; a new text takes it over): the texts come off the
/// wire, and a lookup that inspects one slot cannot be made slow by texts that collide, at
/// worst they are made anew, as without the cache. The slot is picked by a fast hash seeded
/// per process, so two common texts that share a slot here do not share one everywhere.
static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

struct Shared {
    seed: usize,
    slots: Box<[Slot]>,
    /// One-item lists of the shared strs (`event.category`, `event.type`), by the item's
    /// address ([`SharedStrs::one_item_list`]).
    lists: Box<[Option<Py<PyList>>]>,
}

/// Slots of the shared one-item lists (a power of two).
const SHARED_LISTS: usize = 256;

struct Slot {
    len: u8,
    text: [u8; SHARED_TEXT_MAX],
    s: Option<Py<PyString>>,
}

impl Shared {
    fn new() -> Self {
        use std::hash::BuildHasher;
        Shared {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8) as usize,
            slots: (0..SHARED_SLOTS)
                .map(|_| Slot {
                    len: 0,
                    text: [0; SHARED_TEXT_MAX],
                    s: None,
                })
                .collect(),
            lists: (0..SHARED_LISTS).map(|_| None).collect(),
        }
    }
}

/// The shared texts, held for one message's fields; without them (another thread holds
/// them, or a Python call made while they are held decodes again) each text is a new str.
pub(crate) struct SharedStrs(Option<std::sync::MutexGuard<'static, Option<Shared>>>);

impl SharedStrs {
    pub(crate) fn lock() -> Self {
        SharedStrs(match SHARED.try_lock() {
            Ok(guard) => Some(guard),
            // A panic while held left nothing half-made that matters: slots of equal strs.
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        })
    }

    /// `text` as a str equal to `PyString::new(py, text)`, shared when short.
    pub(crate) fn get<'py>(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        use std::hash::Hasher;
        let Some(guard) = self
            .0
            .as_deref_mut()
            .filter(|_| text.len() <= SHARED_TEXT_MAX)
        else {
            return PyString::new(py, text);
        };
        let shared = guard.get_or_insert_with(Shared::new);
        let mut h = rustc_hash::FxHasher::with_seed(shared.seed);
        h.write(text.as_bytes());
        let slot = &mut shared.slots[h.finish() as usize & (SHARED_SLOTS - 1)];
        let n = text.len();
        if let Some(s) = &slot.s {
            if usize::from(slot.len) == n && &slot.text[..n] == text.as_bytes() {
                return s.bind(py).clone();
            }
        }
        let s = PyString::new(py, text);
        slot.len = n as u8;
        slot.text[..n].copy_from_slice(text.as_bytes());
        // The str it held is released here, with the interpreter attached.
        slot.s = Some(s.clone().unbind());
        s
    }

    /// `[text]` as a list shared by the records it is set in, or a new list where it could
    /// be seen from Python (`shared` false: a dict's value) or without the shared texts.
    /// A record is never seen from Python, and its dict copies each list
    /// (`python_record::owned`); the native readers only read it. A one-item list per
    /// message was a list made and freed per sshd line (`event.category`, `event.type`).
    pub(crate) fn one_item_list<'py>(
        &mut self,
        py: Python<'py>,
        text: &str,
        shared: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let item = self.get(py, text);
        let Some(lists) = self
            .0
            .as_deref_mut()
            .and_then(Option::as_mut)
            .filter(|_| shared)
            .map(|s| &mut s.lists)
        else {
            return PyList::new(py, [item]);
        };
        // The list holds its item: no other object has the item's address meanwhile.
        let slot = &mut lists[(item.as_ptr() as usize >> 4) & (SHARED_LISTS - 1)];
        if let Some(list) = slot {
            let list = list.bind(py);
            if list.len() == 1 && list.get_item(0)?.is(&item) {
                return Ok(list.clone());
            }
        }
        let list = PyList::new(py, [item])?;
        *slot = Some(list.clone().unbind());
        Ok(list)
    }
}

/// A BSD stamp's fields, the sender's zone (by identity) and the hour received, as the
/// bytes of their values: hashed in one write (a tuple of them took nine, ~900
/// instructions a message). The stamp comes from the sender, so the hash is keyed.
#[derive(PartialEq, Eq, Clone)]
struct StampKey([u8; 48]);

impl std::hash::Hash for StampKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(&self.0);
    }
}

impl StampKey {
    /// `fields`: month, day, hour, minute, second and microseconds as parsed.
    fn new(year: Option<u32>, fields: [u32; 6], zone: usize, hour_received: i64) -> Self {
        let pair = |a: u32, b: u32| u64::from(a) << 32 | u64::from(b);
        let [month, day, hour, minute, second, micros] = fields;
        let words = [
            year.map_or(0, |y| 1 << 32 | u64::from(y)),
            pair(month, day),
            pair(hour, minute),
            pair(second, micros),
            zone as u64,
            hour_received as u64,
        ];
        let mut b = [0u8; 48];
        for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        StampKey(b)
    }
}

/// BSD stamps already converted, as the reference memoises them per (stamp, zone, hour
/// received): a burst shares a handful of stamps and the conversion is a Python call. The
/// stamps are a sender's, so the keys hash as the windows' do (keyed, `windows::Lru`).
#[derive(Default)]
struct StampMemo {
    epochs: HashMap<StampKey, Option<f64>, ahash::RandomState>,
    /// The last stamp converted or found, checked first: a sender's lines come in bursts of
    /// the same second (a compare of the key, where hashing it and the lookup were ~250
    /// instructions a message).
    last: Option<(StampKey, Option<f64>)>,
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
        let key = StampKey::new(
            year,
            [month, day, hour, minute, second, micros],
            zone,
            (self.now / 3600.0).floor() as i64,
        );
        if let Some((last, epoch)) = &self.memo.last {
            if *last == key {
                return *epoch;
            }
        }
        if let Some(&hit) = self.memo.epochs.get(&key) {
            self.memo.last = Some((key, hit));
            return hit;
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
            memo.epochs.insert(key.clone(), epoch);
            memo.last = Some((key, epoch));
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
pub(crate) struct HeaderDecoder {
    message_class: Py<PyAny>,
    bsd_epoch: Py<PyAny>,
    rfc3339: Py<PyAny>,
    /// The reference's name tables (`message.SEVERITY_NAMES`, `FACILITY_NAMES`): one source.
    severity_names: Vec<Py<PyString>>,
    facility_names: Vec<Py<PyString>>,
    /// The names as JSON strings, for the stored line's pairs written ahead.
    names_json: NamesJson,
    memo: Mutex<StampMemo>,
    /// The header fields' templates per shape (which optional parts a header has) and
    /// priority.
    templates: Mutex<rustc_hash::FxHashMap<u32, HeaderTemplate>>,
    /// Messages whose header dict was made whole because the templates were at their bound.
    untemplated: AtomicU64,
}

/// The header fields' keys of one shape and priority, in their order, with the values all
/// such messages share (the kind, dataset and format, the priority's level, codes and names)
/// and `None` for the rest: a message's dict is a copy filled in place, not grown key by
/// key. What they share is also the stored line's pairs of those items, copied in two runs.
struct HeaderTemplate {
    dict: Py<PyDict>,
    /// The same keys and values as the batch decode's records share them (none for a
    /// template of more items than a record holds).
    record: Option<Arc<RecordTemplate>>,
    /// The shared items' pairs (`Prewritten`), once a message made from this wrote them.
    runs: Option<Arc<[KeptRun; 2]>>,
}

/// The structured data of a message as the reference's dict (`None` without any): one object
/// shared by the message's `structured_data` and the fields' `log.syslog.structured_data`.
fn sd_dict<'py>(py: Python<'py>, m: &Message<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match &m.structured_data {
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
    })
}

/// The reference's `SyslogMessage` of a decoded header.
fn message_object<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyAny>,
    m: &Message<'_>,
    sd: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let errors = PyList::new(py, m.errors.iter().map(|e| PyString::intern(py, e)))?;
    fn any<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> PyResult<Bound<'py, PyAny>> {
        v.into_bound_py_any(py)
    }
    let mut strs = SharedStrs::lock();
    let mut text = |t: Option<&str>| match t {
        Some(t) => strs.get(py, t).into_any(),
        None => py.None().into_bound(py),
    };
    let args = PyTuple::new(
        py,
        [
            any(py, m.facility)?,
            any(py, m.severity)?,
            any(py, m.message)?,
            PyString::intern(py, m.format.as_str()).into_any(),
            any(py, m.timestamp)?,
            text(m.hostname),
            text(m.app_name),
            text(m.procid),
            text(m.msgid),
            any(py, m.version)?,
            sd.clone(),
            any(py, m.sequence)?,
            errors.into_any(),
        ],
    )?;
    drop(strs); // the class is Python code: nothing it runs may find the map held
    cls.call1(args)
}

/// A header the batch path decoded natively: its `SyslogMessage` is made only when a Python
/// decoder is to read it (`object`), so a line no Python decoder looks at costs none.
pub(crate) struct Parsed<'a, 'py> {
    pub(crate) m: &'a Message<'a>,
    pub(crate) sd: Bound<'py, PyAny>,
    cls: Bound<'py, PyAny>,
}

impl<'py> Parsed<'_, 'py> {
    pub(crate) fn object(&self) -> PyResult<Bound<'py, PyAny>> {
        message_object(self.cls.py(), &self.cls, self.m, &self.sd)
    }
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

/// Header templates kept (shapes times priorities; each a dict of ~20 items).
const MAX_TEMPLATES: usize = 1024;

/// The severity and facility names as JSON strings, by code.
type NamesJson = (Vec<Vec<u8>>, Vec<Vec<u8>>);

fn names_json(py: Python<'_>, names: &[Py<PyString>]) -> PyResult<Vec<Vec<u8>>> {
    names
        .iter()
        .map(|n| Ok(jsonstr::quoted(n.bind(py).to_str()?)))
        .collect()
}

/// The ECS fields of the syslog header, in the reference's key order (`syslog_fields`): the
/// stored line is the dict's JSON, so the order is part of the contract.
fn header_fields<'py>(
    py: Python<'py>,
    dec: &HeaderDecoder,
    m: &Message<'_>,
    sd: &Bound<'py, PyAny>,
    peer_ip: &Bound<'py, PyAny>,
    pid: Option<i64>,
    pre: &mut Prewritten<'py>,
) -> PyResult<FieldsOut<'py>> {
    // One bit per optional part: the same bits, the same keys in the same order.
    let shape = u16::from(m.hostname.is_some())
        | u16::from(m.app_name.is_some()) << 1
        | u16::from(m.procid.is_some()) << 2
        | u16::from(pid.is_some()) << 3
        | u16::from(m.msgid.is_some()) << 4
        | u16::from(m.version.is_some()) << 5
        | u16::from(m.structured_data.is_some()) << 6
        | u16::from(m.sequence.is_some()) << 7
        | u16::from(!m.errors.is_empty()) << 8
        | u16::from(matches!(m.format, Format::Rfc5424)) << 9;
    // A sender's messages mostly share their priority too: its six items (level, codes and
    // names) stay in the template as well.
    let shape = u32::from(shape) | (m.facility * 8 + m.severity) << 16;
    let (template, runs, room) = match dec.templates.try_lock() {
        Ok(t) => {
            let got = t.get(&shape);
            let room = t.len() < MAX_TEMPLATES;
            if got.is_none() && !room {
                dec.untemplated.fetch_add(1, Ordering::Relaxed);
            }
            (
                got.map(|t| (t.dict.clone_ref(py), t.record.clone())),
                got.and_then(|t| t.runs.clone()),
                room,
            )
        }
        Err(_) => (None, None, false),
    };
    pre.begin();
    let mut f = match &template {
        // a record only where the line is written from the pairs (the batch path)
        Some((_, Some(r))) if pre.writes() => FieldsOut::Record(py, Record::new(r.clone())),
        Some((t, None)) if pre.writes() => {
            PAST_BOUND.fetch_add(1, Ordering::Relaxed); // a template too wide for a record
            FieldsOut::Dict(t.bind(py).copy()?)
        }
        Some((t, _)) => FieldsOut::Dict(t.bind(py).copy()?),
        None => FieldsOut::Dict(PyDict::new(py)),
    };
    // Each item is set in the shape's order and its pair written ahead for the stored line
    // (`Prewritten`: the template has the keys in that order already).
    macro_rules! put {
        ($name:literal, $value:expr, $json:expr) => {
            match (intern!(py, $name), $value) {
                (key, value) => {
                    let value = value.as_any();
                    f.set(key, value)?;
                    pre.expect(key, quoted_key!($name), value, $json);
                }
            }
        };
    }
    // What the template holds: only the pair is written (the first message of a template
    // sets the items, in their place).
    let mut kept: Vec<&Bound<'py, PyString>> = Vec::new();
    macro_rules! kept {
        ($name:literal, $value:expr, $json:expr) => {
            match &template {
                None => {
                    put!($name, $value, $json);
                    kept.push(intern!(py, $name));
                }
                Some(_) => pre.expect(
                    intern!(py, $name),
                    quoted_key!($name),
                    $value.as_any(),
                    $json,
                ),
            }
        };
    }
    // A run of kept items: its pairs copied once the template has them, else set (or
    // expected) one by one and recorded.
    let mut recorded: Vec<Option<KeptRun>> = Vec::new();
    macro_rules! kept_run {
        ($i:literal, $body:block) => {
            match &runs {
                Some(r) => pre.push_run(&r[$i]),
                None => {
                    let mark = pre.mark();
                    $body
                    recorded.push(pre.run_since(mark));
                }
            }
        };
    }
    let int = |n: i64| n.into_bound_py_any(py);
    let (sev, fac) = (m.severity as usize, m.facility as usize);
    let severity = dec.severity_names[sev].bind(py);
    let severity_json = &dec.names_json.0[sev];
    put!(
        "message",
        &PyString::new(py, m.message),
        Json::Text(m.message)
    );
    let format = match m.format {
        Format::Rfc5424 => intern!(py, "rfc5424"),
        Format::Rfc3164 => intern!(py, "rfc3164"),
    };
    let format_json = Json::Raw(match m.format {
        Format::Rfc5424 => b"\"rfc5424\"",
        Format::Rfc3164 => b"\"rfc3164\"",
    });
    kept_run!(0, {
        kept!("event.kind", intern!(py, "event"), Json::Raw(b"\"event\""));
        kept!(
            "event.dataset",
            intern!(py, "syslog"),
            Json::Raw(b"\"syslog\"")
        );
    });
    let ip = match peer_ip.cast_exact::<PyString>() {
        Ok(ip) => ip.to_str().map_or(Json::Later, Json::Text),
        Err(_) => Json::Later,
    };
    put!("observer.ip", peer_ip, ip);
    kept_run!(1, {
        kept!("log.level", severity, Json::Raw(severity_json));
        let priority = i64::from(m.facility * 8 + m.severity);
        kept!("log.syslog.priority", &int(priority)?, Json::Int(priority));
        let code = i64::from(m.severity);
        kept!("log.syslog.severity.code", &int(code)?, Json::Int(code));
        kept!(
            "log.syslog.severity.name",
            severity,
            Json::Raw(severity_json)
        );
        let code = i64::from(m.facility);
        kept!("log.syslog.facility.code", &int(code)?, Json::Int(code));
        kept!(
            "log.syslog.facility.name",
            dec.facility_names[fac].bind(py),
            Json::Raw(&dec.names_json.1[fac])
        );
        kept!("log.syslog.format", format, format_json);
    });
    let mut strs = SharedStrs::lock();
    if let Some(host) = m.hostname {
        let obj = strs.get(py, host);
        put!("host.hostname", &obj, Json::Text(host));
        put!("log.syslog.hostname", &obj, Json::Again);
    }
    if let Some(app) = m.app_name {
        let obj = strs.get(py, app);
        put!("process.name", &obj, Json::Text(app));
        put!("log.syslog.appname", &obj, Json::Again);
    }
    if let Some(procid) = m.procid {
        put!(
            "log.syslog.procid",
            &strs.get(py, procid),
            Json::Text(procid)
        );
        if let Some(pid) = pid {
            put!("process.pid", &int(pid)?, Json::Int(pid));
        }
    }
    if let Some(msgid) = m.msgid {
        put!("log.syslog.msgid", &strs.get(py, msgid), Json::Text(msgid));
    }
    drop(strs);
    if let Some(version) = m.version {
        let version = i64::from(version);
        put!("log.syslog.version", &int(version)?, Json::Int(version));
    }
    if m.structured_data.is_some() {
        put!("log.syslog.structured_data", sd, Json::Later);
    }
    if let Some(sequence) = m.sequence {
        put!("event.sequence", &int(sequence)?, Json::Int(sequence));
    }
    if !m.errors.is_empty() {
        let tags = PyList::empty(py);
        for e in &m.errors {
            tags.append(format!("syslog_{e}"))?;
        }
        put!("tags", &tags, Json::Later);
    }
    // Bounded: hostile senders can vary the shape and the priority, not the memory.
    if template.is_none() && room {
        let t = f.dict()?.copy()?;
        for k in t.keys() {
            if !kept.iter().any(|s| s.is(&k)) {
                t.set_item(k, py.None())?;
            }
        }
        if let Ok(mut map) = dec.templates.try_lock() {
            let runs = kept_runs(recorded);
            map.insert(
                shape,
                HeaderTemplate {
                    record: RecordTemplate::of(&t)?,
                    dict: t.unbind(),
                    runs,
                },
            );
        }
    } else if template.is_some() && runs.is_none() {
        // made first where no pairs were written (the per-message decode): they are now
        if let Some(got) = kept_runs(recorded) {
            if let Ok(mut map) = dec.templates.try_lock() {
                if let Some(t) = map.get_mut(&shape) {
                    t.runs = Some(got);
                }
            }
        }
    }
    Ok(f)
}

/// A template's two runs, when both were recorded.
fn kept_runs(recorded: Vec<Option<KeptRun>>) -> Option<Arc<[KeptRun; 2]>> {
    let [Some(a), Some(b)] = <[Option<KeptRun>; 2]>::try_from(recorded).ok()? else {
        return None;
    };
    Some(Arc::new([a, b]))
}

#[pymethods]
impl HeaderDecoder {
    #[new]
    fn new(
        py: Python<'_>,
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
            names_json: (
                names_json(py, &severity_names)?,
                names_json(py, &facility_names)?,
            ),
            severity_names,
            facility_names,
            memo: Mutex::default(),
            templates: Mutex::default(),
            untemplated: AtomicU64::new(0),
        })
    }

    /// (header templates held, messages made without one because they were at their
    /// bound), for the metrics.
    fn templates(&self) -> (usize, u64) {
        let held = match self.templates.lock() {
            Ok(t) => t.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        };
        (held, self.untemplated.load(Ordering::Relaxed))
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
    /// The header of `data` decoded natively and handed to `f` (whose `None`, like the
    /// decoder's, leaves the message to the reference), the memo released first.
    fn decode_text<'py, R>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: f64,
        tz: Option<Bound<'py, PyAny>>,
        f: impl FnOnce(&Message<'_>) -> PyResult<Option<R>>,
    ) -> PyResult<Option<R>> {
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
        let error = clock.error.take();
        drop(shared);
        let msg = match decoded {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        };
        if let Some(err) = error {
            return Err(err);
        }
        f(&msg)
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn run<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: f64,
        tz: Option<Bound<'py, PyAny>>,
        peer_ip: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Option<Bound<'py, PyDict>>)>> {
        self.decode_text(py, data, now, tz, |msg| {
            let pid = match msg.procid.filter(|_| peer_ip.is_some()).map(pid) {
                None => None,
                Some(Ok(pid)) => pid,
                Some(Err(())) => return Ok(None),
            };
            let sd = sd_dict(py, msg)?;
            let obj = message_object(py, self.message_class.bind(py), msg, &sd)?;
            let fields = match peer_ip {
                Some(ip) => Some(
                    header_fields(py, self, msg, &sd, ip, pid, &mut Prewritten::default())?
                        .dict()?,
                ),
                None => None,
            };
            Ok(Some((obj, fields)))
        })
    }

    /// The batch path's header: `f` gets the parsed header (its `SyslogMessage` made on
    /// demand) and the ECS header fields, as `run` would give them; `None` when the
    /// reference should decode the message.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_fields<'py, R>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: f64,
        tz: Option<Bound<'py, PyAny>>,
        peer_ip: &Bound<'py, PyAny>,
        pre: &mut Prewritten<'py>,
        f: impl FnOnce(Parsed<'_, 'py>, FieldsOut<'py>, &mut Prewritten<'py>) -> PyResult<R>,
    ) -> PyResult<Option<R>> {
        self.decode_text(py, data, now, tz, |msg| {
            let pid = match msg.procid.map(pid) {
                None => None,
                Some(Ok(pid)) => pid,
                Some(Err(())) => return Ok(None),
            };
            let sd = sd_dict(py, msg)?;
            let fields = header_fields(py, self, msg, &sd, peer_ip, pid, pre)?;
            let parsed = Parsed {
                m: msg,
                sd,
                cls: self.message_class.bind(py).clone(),
            };
            f(parsed, fields, pre).map(Some)
        })
    }
}

/// RFC 6587 framing; the API of the reference `SyslogFramer` (`errors` is a dict the transport
/// reads and clears).
#[pyclass(name = "SyslogFramer", module = "appliance._dataplane")]
pub(crate) struct PyFramer {
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

    /// Up to `want` complete frames (fewer when the buffer runs out), as `next_frame` would
    /// give them one by one, the problems met on the way counted once (`SyslogBatch.stream`).
    pub(crate) fn take<'py>(
        &mut self,
        py: Python<'py>,
        want: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let mut out = Vec::with_capacity(want.min(1024));
        while out.len() < want {
            match self.inner.next_frame_with(|f| PyBytes::new(py, f)) {
                Some(f) => out.push(f),
                None => break,
            }
        }
        self.sync_errors(py)?;
        Ok(out)
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
pub(crate) struct FileDecoder {
    inner: crate::decoders::Decoder,
    consts: Vec<Py<PyAny>>,
    convert: Py<PyAny>,
    /// The reference's device time of the file's `[[time]]` (strptime, zones), called with the
    /// captures it reads; `None` when the file has none.
    device_time: Option<Py<PyAny>>,
    /// Device times already read, by their captures: a device stamps many lines with the same
    /// second, and the conversion is a Python call (bounded; cleared when full).
    time_memo: Mutex<rustc_hash::FxHashMap<String, Py<PyAny>>>,
    /// Field names as interned Python strings: their hash is cached, so setting a field costs
    /// no string allocation and no hashing.
    keys: FieldKeys,
}

#[pymethods]
impl FileDecoder {
    #[new]
    #[pyo3(signature = (plan, consts, convert, device_time=None))]
    fn new(
        py: Python<'_>,
        plan: &str,
        consts: Vec<Py<PyAny>>,
        convert: Py<PyAny>,
        device_time: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let inner = crate::decoders::Decoder::from_json(plan).map_err(PyValueError::new_err)?;
        let keys = field_keys(py, inner.field_names());
        Ok(FileDecoder {
            inner,
            consts,
            convert,
            device_time,
            time_memo: Mutex::default(),
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
        let text_obj = msg.getattr(intern!(py, "message"))?;
        let text = text_obj.cast::<PyString>()?.to_cow()?;
        Ok(
            match self.apply(
                py,
                &text,
                &mut FieldsOut::Dict(fields.clone()),
                &mut Prewritten::default(),
            )? {
                Applied::NotMine => Some(false),
                Applied::Defer => None,
                Applied::Claimed(time) => {
                    if let Some(time) = time {
                        msg.setattr(intern!(py, "payload_time"), time)?;
                    }
                    Some(true)
                }
            },
        )
    }
}

/// What a decoder file made of a message's text (`FileDecoder::apply`).
pub(crate) enum Applied<'py> {
    /// Not this decoder's line.
    NotMine,
    /// Only the Python decoder can say (non-ASCII text, escapes, a caught panic).
    Defer,
    /// The fields are set; the device time the file read (`payload_time`), if any.
    Claimed(Option<Bound<'py, PyAny>>),
}

/// A native decoder's field names: each as an interned Python string and as the JSON
/// string its stored line's pair starts with (`"name":`).
type FieldKeys = rustc_hash::FxHashMap<String, (Py<PyString>, Vec<u8>)>;

fn field_keys<'a>(py: Python<'_>, names: impl IntoIterator<Item = &'a str>) -> FieldKeys {
    names
        .into_iter()
        .map(|k| {
            let mut quoted = vec![b','];
            quoted.extend(jsonstr::quoted(k));
            quoted.push(b':');
            (k.to_owned(), (PyString::intern(py, k).unbind(), quoted))
        })
        .collect()
}

/// Set a native decoder's fields in order, as the Python decoder would assign them: `keys`
/// the interned names, `consts` a decoder file's constants, `convert` the reference's
/// conversions for the values a file defers (a conversion that gives `None` sets nothing).
/// The pairs are written ahead for the stored line (`pre`).
#[allow(clippy::too_many_arguments)]
fn set_fields<'py>(
    py: Python<'py>,
    fields: &mut FieldsOut<'py>,
    found: Vec<(&str, crate::decoders::Value<'_>)>,
    keys: &FieldKeys,
    consts: &[Py<PyAny>],
    convert: Option<&Py<PyAny>>,
    pre: &mut Prewritten<'py>,
) -> PyResult<()> {
    use crate::decoders::Value;
    // Not held across `convert`, a Python call that may decode again.
    let mut strs = Some(SharedStrs::lock());
    for (key, value) in found {
        let mut text = |t: &str| match strs.as_mut() {
            Some(strs) => strs.get(py, t),
            None => PyString::new(py, t),
        };
        let mut json = Json::Later;
        let obj: Bound<'_, PyAny> = match &value {
            Value::Text(t) => {
                json = Json::Text(t);
                text(t).into_any()
            }
            Value::Int(n) => {
                json = Json::Int(*n);
                n.into_bound_py_any(py)?
            }
            Value::Const(i) => match consts.get(*i) {
                // A list constant goes into a record as it is (the record's dict, made when
                // Python first reads the fields, gets a copy: `Record::dict`); a dict's is
                // copied now. Fields are mutable: events must not share the list.
                Some(c) => match c.bind(py).cast::<PyList>() {
                    Ok(list) if !fields.is_record() => PyList::new(py, list.iter())?.into_any(),
                    _ => c.bind(py).clone(),
                },
                None => continue,
            },
            Value::Texts(items) => {
                let record = fields.is_record();
                match (items.as_slice(), strs.as_mut()) {
                    ([one], Some(strs)) => strs.one_item_list(py, one, record)?.into_any(),
                    (_, Some(strs)) => {
                        PyList::new(py, items.iter().map(|t| strs.get(py, t)))?.into_any()
                    }
                    (_, None) => {
                        PyList::new(py, items.iter().map(|t| PyString::new(py, t)))?.into_any()
                    }
                }
            }
            Value::Converted(name, v) => {
                let Some(convert) = convert else { continue };
                drop(strs.take());
                let got = convert.bind(py).call1((name, v))?;
                strs = Some(SharedStrs::lock());
                if got.is_none() {
                    continue;
                }
                got
            }
        };
        match keys.get(key) {
            Some((k, quoted)) => pre.set(fields, k.bind(py), quoted, &obj, json)?,
            None => {
                pre.lose_track();
                fields.dict()?.set_item(key, owned(&obj)?)?
            }
        }
    }
    Ok(())
}

/// The native part of `vendors/linux_auth.py` (`crate::linux_auth`): OpenSSH's failed,
/// accepted and invalid-user lines; the rest is the Python decoder's.
#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct SshdAuthLines {
    keys: FieldKeys,
}

#[pymethods]
impl SshdAuthLines {
    #[new]
    fn new(py: Python<'_>) -> Self {
        let keys = field_keys(py, crate::linux_auth::FIELDS);
        SshdAuthLines { keys }
    }

    /// `linux_auth.decode(msg, fields)` for the lines this decides: `True` with the fields
    /// set, `False` for a line that is not the decoder's (untouched), or `None` for a line
    /// the Python decoder must read.
    fn decode(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        fields: &Bound<'_, PyDict>,
    ) -> PyResult<Option<bool>> {
        let app = msg.getattr(intern!(py, "app_name"))?;
        let app = if app.is_none() {
            String::new()
        } else {
            app.cast::<PyString>()?.to_cow()?.into_owned()
        };
        let text_obj = msg.getattr(intern!(py, "message"))?;
        let text = text_obj.cast::<PyString>()?.to_cow()?;
        Ok(
            match self.apply(
                py,
                &app,
                &text,
                &mut FieldsOut::Dict(fields.clone()),
                &mut Prewritten::default(),
            )? {
                Applied::Claimed(_) => Some(true),
                Applied::NotMine => Some(false),
                Applied::Defer => None,
            },
        )
    }
}

impl SshdAuthLines {
    /// The line of program `app` with text `text`, without the message object.
    pub(crate) fn apply<'py>(
        &self,
        py: Python<'py>,
        app: &str,
        text: &str,
        fields: &mut FieldsOut<'py>,
        pre: &mut Prewritten<'py>,
    ) -> PyResult<Applied<'py>> {
        use crate::linux_auth::{decode, Auth};
        match catch_unwind(|| decode(app, text)) {
            Ok(Auth::Fields(found)) => {
                set_fields(py, fields, found, &self.keys, &[], None, pre)?;
                Ok(Applied::Claimed(None))
            }
            Ok(Auth::Defer) => Ok(Applied::Defer),
            Ok(Auth::NotMine) => Ok(Applied::NotMine),
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                Ok(Applied::Defer)
            }
        }
    }
}

const TIME_MEMO_MAX: usize = 4096;

impl FileDecoder {
    /// The decode of a message's text into `fields`, without the message object: the native
    /// batch path calls it for a decoder file directly (no Python frame, no `SyslogMessage`).
    pub(crate) fn apply<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        fields: &mut FieldsOut<'py>,
        pre: &mut Prewritten<'py>,
    ) -> PyResult<Applied<'py>> {
        use crate::decoders::Outcome;
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.inner.decode(text))) {
            Ok(outcome) => outcome,
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                return Ok(Applied::Defer);
            }
        };
        let (found, time) = match outcome {
            Outcome::Fields(found, time) => (found, time),
            Outcome::NotMine => return Ok(Applied::NotMine),
            Outcome::Defer => return Ok(Applied::Defer),
        };
        set_fields(
            py,
            fields,
            found,
            &self.keys,
            &self.consts,
            Some(&self.convert),
            pre,
        )?;
        let mut payload_time = None;
        if let (Some(device_time), false) = (&self.device_time, time.is_empty()) {
            let got = self.device_time_of(py, device_time, time)?;
            if !got.is_none() {
                payload_time = Some(got);
            }
        }
        Ok(Applied::Claimed(payload_time))
    }

    /// The reference's device time of these captures, memoised (the results are immutable:
    /// a float, a naive datetime or `None`).
    fn device_time_of<'py>(
        &self,
        py: Python<'py>,
        device_time: &Py<PyAny>,
        time: Vec<Option<&str>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Each capture length-prefixed: no two different tuples make the same key.
        let mut key = String::new();
        for v in &time {
            match v {
                Some(v) => key.push_str(&format!("{}:{v}", v.len())),
                None => key.push('-'),
            }
        }
        if let Ok(memo) = self.time_memo.try_lock() {
            if let Some(hit) = memo.get(&key) {
                return Ok(hit.bind(py).clone());
            }
        }
        // The call may run another thread's decode: the memo is not held across it.
        let got = device_time.bind(py).call1(PyTuple::new(py, time)?)?;
        if let Ok(mut memo) = self.time_memo.try_lock() {
            if memo.len() >= TIME_MEMO_MAX {
                memo.clear();
            }
            memo.insert(key, got.clone().unbind());
        }
        Ok(got)
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

/// A field value from the event's dict, as the matcher reads it. Exact types only: a
/// subclass (an `IntEnum`, a `str` subclass) may print differently, so only its presence is
/// used here and the reference decides the rest.
pub(crate) fn field_value(v: &Bound<'_, PyAny>, depth: usize) -> Val<'static> {
    use std::borrow::Cow;
    if v.is_none() {
        return Val::Null;
    }
    if v.is_exact_instance_of::<PyString>() {
        return match v.cast::<PyString>().map(|s| s.to_cow()) {
            Ok(Ok(t)) => Val::Str(Cow::Owned(t.into_owned())),
            _ => Val::Other, // lone surrogates
        };
    }
    if v.is_exact_instance_of::<PyBool>() {
        return Val::Bool(v.is_truthy().unwrap_or(false));
    }
    if v.is_exact_instance_of::<PyInt>() {
        return v.extract::<i64>().map(Val::Int).unwrap_or(Val::Other);
    }
    if v.is_exact_instance_of::<PyFloat>() {
        return v.extract::<f64>().map(Val::Float).unwrap_or(Val::Other);
    }
    if let Ok(list) = v.cast::<PyList>() {
        if depth >= 2 {
            return Val::Other;
        }
        return Val::List(list.iter().map(|x| field_value(&x, depth + 1)).collect());
    }
    Val::Other
}

/// An event's fields dict, looked up by the matcher's field indices (interned keys). A
/// flow's record has its own reader (`FlowFields`), which needs no read cache.
pub(crate) struct DictFields<'a, 'py> {
    pub(crate) fields: &'a Bound<'py, PyDict>,
    pub(crate) keys: &'a [Py<PyString>],
    /// The fields read so far for this event: the candidate rules read the same few
    /// (`event.action`, `event.outcome`, ...) again and again. A text is held as the str
    /// itself and read in place, not copied per read.
    read: FieldsRead,
}

impl<'a, 'py> DictFields<'a, 'py> {
    pub(crate) fn new(fields: &'a Bound<'py, PyDict>, keys: &'a [Py<PyString>]) -> Self {
        DictFields {
            fields,
            keys,
            read: FieldsRead::default(),
        }
    }
}

/// Fields a [`DictFields`] keeps once read (past that, a field is read from the dict again).
const FIELDS_READ: usize = 12;

/// One field as read: missing, a text, or a value with nothing to borrow.
enum FieldRead {
    Missing,
    Text(pyo3::pybacked::PyBackedStr),
    Value(Val<'static>),
}

/// Set once each and never moved, so a read can lend a text for as long as the event's
/// `DictFields` lives.
#[derive(Default)]
struct FieldsRead {
    slots: [std::cell::OnceCell<(usize, FieldRead)>; FIELDS_READ],
    used: std::cell::Cell<usize>,
}

impl FieldRead {
    fn val(&self) -> Option<Val<'_>> {
        match self {
            FieldRead::Missing => None,
            FieldRead::Text(t) => Some(Val::Str(std::borrow::Cow::Borrowed(t))),
            FieldRead::Value(v) => Some(v.clone()),
        }
    }
}

impl Fields for DictFields<'_, '_> {
    fn get(&self, field: usize) -> Option<Val<'_>> {
        let read = &self.read;
        let used = read.used.get();
        for slot in &read.slots[..used] {
            if let Some((f, got)) = slot.get() {
                if *f == field {
                    return got.val();
                }
            }
        }
        let key = self.keys.get(field)?.bind(self.fields.py());
        let got = match self.fields.get_item(key) {
            Ok(Some(v)) => match v.cast_exact::<PyString>() {
                Ok(s) => match pyo3::pybacked::PyBackedStr::try_from(s.clone()) {
                    Ok(t) => FieldRead::Text(t),
                    Err(_) => FieldRead::Value(Val::Other), // lone surrogates
                },
                // a list's value holds texts of its own: read again each time
                Err(_) if v.is_instance_of::<PyList>() => return Some(field_value(&v, 0)),
                Err(_) => FieldRead::Value(field_value(&v, 0)),
            },
            Ok(None) => FieldRead::Missing,
            Err(_) => FieldRead::Value(Val::Other),
        };
        match read.slots.get(used) {
            Some(slot) => {
                read.used.set(used + 1);
                slot.get_or_init(|| (field, got)).1.val()
            }
            None => match got {
                FieldRead::Missing => None,
                FieldRead::Text(t) => Some(Val::Str(std::borrow::Cow::Owned(t.to_string()))),
                FieldRead::Value(v) => Some(v),
            },
        }
    }
}

/// One decision of a batch: (event index, rule index, left to the reference).
pub(crate) type Decision = (usize, usize, bool);

/// Sigma detections compiled once from the form `appliance/correlate/compile.py` emits,
/// matched a batch of events at a time. The engine registers each candidate set (the rules
/// its logsource/action index picked) once as a group and passes a group number per event.
#[pyclass(module = "appliance._dataplane")]
pub(crate) struct RuleMatcher {
    rules: RuleSet,
    pub(crate) keys: Vec<Py<PyString>>,
    groups: Vec<Vec<usize>>,
    /// Tests only: the next event evaluated panics (to show the fallback).
    panic_next: bool,
}

impl RuleMatcher {
    /// Every candidate of `group` for event `ev`, decided here or left to the reference;
    /// a panic leaves all of the event's candidates to the reference and is counted.
    pub(crate) fn decide(
        &mut self,
        ev: usize,
        group: usize,
        fields: &dyn Fields,
        out: &mut Vec<Decision>,
    ) {
        self.decide_known(ev, group, fields, &[], out);
    }

    /// `decide`, with what the event's shape already answers for the group's candidates
    /// (`shape_answers`, in candidate order; a candidate past its end is evaluated).
    pub(crate) fn decide_known(
        &mut self,
        ev: usize,
        group: usize,
        fields: &dyn Fields,
        known: &[Option<bool>],
        out: &mut Vec<Decision>,
    ) {
        let Some(cands) = self.groups.get(group) else {
            return;
        };
        let rules = &self.rules;
        let boom = std::mem::take(&mut self.panic_next);
        let start = out.len();
        let got = catch_unwind(AssertUnwindSafe(|| {
            if boom {
                panic!("injected by a test");
            }
            for (c, &r) in cands.iter().enumerate() {
                let answer = match known.get(c) {
                    Some(Some(b)) => Ok(*b),
                    _ => rules.matches(r, fields),
                };
                match answer {
                    Ok(true) => out.push((ev, r, false)),
                    Ok(false) => {}
                    Err(Undecided) => out.push((ev, r, true)),
                }
            }
        }));
        if got.is_err() {
            PANICS.fetch_add(1, Ordering::Relaxed);
            out.truncate(start);
            out.extend(cands.iter().map(|&r| (ev, r, true)));
        }
    }

    /// What a shape answers for each candidate of `group` (`RuleSet::matches_shape`, in
    /// candidate order); empty for an unknown group or when evaluating panicked (counted):
    /// its events are then evaluated one by one.
    pub(crate) fn shape_answers(&self, group: usize, shape: &dyn ShapeFields) -> Vec<Option<bool>> {
        let Some(cands) = self.groups.get(group) else {
            return Vec::new();
        };
        let rules = &self.rules;
        catch_unwind(AssertUnwindSafe(|| {
            cands
                .iter()
                .map(|&r| rules.matches_shape(r, shape))
                .collect()
        }))
        .unwrap_or_else(|_| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        })
    }
}

/// The most signature parts (the module, four fields, a category list's length and items)
/// `RuleMatcher::memo_groups` recognises by address; a longer signature is looked up as a
/// tuple every time.
const SIGNATURE_PARTS: usize = 8;

#[pymethods]
impl RuleMatcher {
    #[new]
    fn new(py: Python<'_>, form: &str) -> PyResult<Self> {
        let rules = catch_unwind(|| RuleSet::from_json(form))
            .map_err(|_| {
                PANICS.fetch_add(1, Ordering::Relaxed);
                PyValueError::new_err("the rule form could not be loaded (panic caught)")
            })?
            .map_err(|e| PyValueError::new_err(e.0))?;
        let keys = rules
            .fields()
            .names()
            .iter()
            .map(|k| PyString::intern(py, k).unbind())
            .collect();
        Ok(RuleMatcher {
            rules,
            keys,
            groups: Vec::new(),
            panic_next: false,
        })
    }

    fn __len__(&self) -> usize {
        self.rules.len()
    }

    /// Rules the reference evaluates instead: (rule index, reason).
    fn unsupported(&self) -> Vec<(usize, String)> {
        self.rules.unsupported()
    }

    /// Register a candidate set; returns its group number for the batch calls.
    fn group(&mut self, rules: Vec<usize>) -> usize {
        self.groups.push(rules);
        self.groups.len() - 1
    }

    /// Each event's candidate group as the engine's memo (signature -> group) has it, the
    /// signature built as `Engine._signature` builds it (module, process.name,
    /// observer.vendor, event.category with a list as a tuple, event.action); -1 where the
    /// memo has none (or the signature cannot be a key, as with a list in another of the
    /// fields): the engine works those out.
    ///
    /// Events from one kind of source carry the very same objects (interned module and
    /// field texts, shared values), so a signature whose parts are, object for object, those
    /// of one already looked up in this call has that one's group: no tuple is made and no
    /// tuple hashed for it. The parts are held until the call returns, so an address seen
    /// here stays that object's for the call; the memo itself is changed by the engine
    /// only, after the call.
    fn memo_groups(
        &self,
        py: Python<'_>,
        events: &Bound<'_, PyAny>,
        memo: &Bound<'_, PyDict>,
    ) -> PyResult<Vec<i64>> {
        let name = |s: &str| PyString::intern(py, s);
        let events = EventsIn::of(events)?;
        let keys = [
            name("process.name"),
            name("observer.vendor"),
            name("event.category"),
            name("event.action"),
        ];
        const CATEGORY: usize = 2; // the one whose list is read as its tuple
        let none = py.None().into_bound(py);
        let mut out = Vec::with_capacity(events.len());
        // Signatures met in this call by their parts' addresses (a category list as its
        // length, which no address is, then its items), and the parts themselves, held.
        let mut met: FxHashMap<[usize; SIGNATURE_PARTS], i64> = FxHashMap::default();
        let mut held: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut flat: Vec<Bound<'_, PyAny>> = Vec::with_capacity(SIGNATURE_PARTS);
        // Flows by their shape (and category list): a shape none of whose keys is a scalar
        // part of the signature gives each of its flows the same one (module, None, None,
        // the list's items, None), so one lookup serves the shape's flows in this call.
        let mut by_shape: FxHashMap<(ShapeId, usize), i64> = FxHashMap::default();
        for i in 0..events.len() {
            let ev = events.at(i)?;
            let shape = ev.flow_shape().and_then(|(id, shape)| {
                let category = ev.fields(py)?.item(&keys[CATEGORY]).ok()??;
                Some((id, category.as_ptr() as usize, shape))
            });
            if let Some(g) = shape.and_then(|(id, c, _)| by_shape.get(&(id, c))) {
                out.push(*g);
                continue;
            }
            let got = (|| -> Option<i64> {
                let module = ev.attr(py, Attr::Module).ok()?;
                let fields = ev.fields(py)?;
                let mut ids = [0; SIGNATURE_PARTS];
                let mut n = 0;
                let mut id = |x: usize| {
                    if let Some(slot) = ids.get_mut(n) {
                        *slot = x;
                    }
                    n += 1;
                };
                flat.clear();
                id(module.as_ptr() as usize);
                flat.push(module);
                let mut values: [Option<Bound<'_, PyAny>>; 4] = Default::default();
                for (i, (k, slot)) in keys.iter().zip(values.iter_mut()).enumerate() {
                    let v = fields.item(k).ok()?.unwrap_or_else(|| none.clone());
                    match v.cast::<PyList>() {
                        // another field's list makes the signature unhashable
                        Ok(_) if i != CATEGORY => return None,
                        Ok(list) => {
                            id(list.len());
                            for item in list.iter() {
                                id(item.as_ptr() as usize);
                                flat.push(item);
                            }
                        }
                        Err(_) => {
                            id(v.as_ptr() as usize);
                            flat.push(v.clone());
                        }
                    }
                    *slot = Some(v);
                }
                let ids = (n <= SIGNATURE_PARTS).then_some(ids);
                if let Some(g) = ids.as_ref().and_then(|ids| met.get(ids)) {
                    return Some(*g);
                }
                let mut parts = Vec::with_capacity(5);
                parts.push(flat[0].clone());
                for (i, v) in values.into_iter().flatten().enumerate() {
                    parts.push(match v.cast::<PyList>() {
                        Ok(list) if i == CATEGORY => list.to_tuple().into_any(),
                        _ => v,
                    });
                }
                let sig = PyTuple::new(py, parts).ok()?;
                let g = memo.get_item(sig).ok()??.extract::<i64>().ok()?;
                if let Some(ids) = ids {
                    met.insert(ids, g);
                    held.append(&mut flat);
                }
                Some(g)
            })();
            if let (Some((id, c, shape)), Some(g)) = (shape, got) {
                let scalar = |k: usize| k != CATEGORY && shape.has(&keys[k]);
                if !(0..keys.len()).any(scalar) {
                    by_shape.insert((id, c), g);
                }
            }
            out.push(got.unwrap_or(-1));
        }
        Ok(out)
    }

    /// Forget every group (the engine's candidate memo was cleared).
    fn clear_groups(&mut self) {
        self.groups.clear();
    }

    /// The matches of a batch given as the events' fields dicts: a list of (event index,
    /// rule index, undecided) in candidate order; `undecided` pairs are for the reference.
    fn match_dicts(
        &mut self,
        fields: Vec<Bound<'_, PyDict>>,
        groups: Vec<usize>,
    ) -> PyResult<Vec<Decision>> {
        if fields.len() != groups.len() {
            return Err(PyValueError::new_err("one group per event"));
        }
        let keys = std::mem::take(&mut self.keys);
        let mut out = Vec::new();
        for (ev, (dict, &group)) in fields.into_iter().zip(&groups).enumerate() {
            let f = DictFields::new(&dict, &keys);
            self.decide(ev, group, &f, &mut out);
        }
        self.keys = keys;
        Ok(out)
    }

    /// The same from the events' stored lines (`[ts, created, module, {fields}, raw]`),
    /// parsed here; a line that is not of that shape leaves its candidates undecided.
    fn match_lines(&mut self, lines: Vec<Vec<u8>>, groups: Vec<usize>) -> PyResult<Vec<Decision>> {
        if lines.len() != groups.len() {
            return Err(PyValueError::new_err("one group per event"));
        }
        let names = self.rules.fields().names().to_vec();
        let mut out = Vec::new();
        for (ev, (line, &group)) in lines.iter().zip(&groups).enumerate() {
            let doc: Option<serde_json::Value> = serde_json::from_slice(line).ok();
            match doc
                .as_ref()
                .and_then(|d| d.get(3))
                .and_then(|f| f.as_object())
            {
                Some(map) => {
                    let f = JsonFields { map, names: &names };
                    self.decide(ev, group, &f, &mut out);
                }
                None => {
                    if let Some(cands) = self.groups.get(group) {
                        out.extend(cands.iter().map(|&r| (ev, r, true)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Tests only: make the next event evaluated panic, to exercise the fallback.
    fn inject_panic(&mut self) {
        self.panic_next = true;
    }
}

/// The search-index filter of a segment body (`segindex::bloom`), or `None` after a panic
/// (counted): the segment is then stored without one and searched by scanning, as before.
/// Built without holding the interpreter (the body is an immutable `bytes`), so the store
/// can build it in a worker thread while the event loop decodes the next reads.
#[pyfunction]
fn segment_bloom<'py>(py: Python<'py>, body: &[u8]) -> Option<Bound<'py, PyBytes>> {
    match py.detach(|| catch_unwind(|| crate::segindex::bloom(body))) {
        Ok(filter) => Some(PyBytes::new(py, &filter)),
        Err(_) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The threat-intel stage's prefilter (`IntelEnricher.enrich_batch`): the indices of the
/// batch's events whose fields the ordered lookup must read. An event is passed over when
/// `first` and `second` (the two addresses) are both in `miss` (the stage's own memory of
/// values no indicator matches; `None`, in it, stands for an absent field) and none of
/// `rare` (the other looked-up fields) is present. The set is read, never copied, so the
/// Python stage keeps the one bounded memory. Anything the test cannot decide (an unhashable
/// value, `fields` not a dict) selects the event, as the reference does. A native flow
/// batch is read in place (a flow's event is made only if the stage enriches it). `None`
/// after a panic (counted), or for events neither a list nor native flows: the stage then
/// filters the batch in Python.
#[pyfunction]
fn intel_select(
    events: &Bound<'_, PyAny>,
    miss: &Bound<'_, PySet>,
    first: &Bound<'_, PyString>,
    second: &Bound<'_, PyString>,
    rare: &Bound<'_, PyTuple>,
) -> Option<Vec<usize>> {
    let py = events.py();
    let none = py.None().into_bound(py);
    let known = |v: Option<Bound<'_, PyAny>>| -> bool {
        match v {
            None => miss.contains(&none).unwrap_or(false),
            Some(v) => miss.contains(v).unwrap_or(false), // TypeError (unhashable): look
        }
    };
    let events = EventsIn::of(events).ok()?;
    // a flow's record finds its keys by address: the keys as their interned objects
    let interned = |k: &Bound<'_, PyString>| k.to_str().map(|t| PyString::intern(py, t));
    let (first, second) = (&interned(first).ok()?, &interned(second).ok()?);
    let rare: Vec<_> = rare
        .iter()
        .map(|k| k.cast::<PyString>().ok().and_then(|k| interned(k).ok()))
        .collect();
    let passed_over = |i: usize| -> bool {
        let Ok(ev) = events.at(i) else {
            return false;
        };
        let Some(f) = ev.fields(py) else {
            return false;
        };
        let (Ok(a), Ok(b)) = (f.item(first), f.item(second)) else {
            return false;
        };
        known(a)
            && known(b)
            && rare.iter().all(|k| {
                k.as_ref()
                    .is_some_and(|k| matches!(f.contains(k), Ok(false)))
            })
    };
    let picked = catch_unwind(AssertUnwindSafe(|| {
        let mut out = Vec::new();
        for i in 0..events.len() {
            if !passed_over(i) {
                out.push(i);
            }
        }
        out
    }));
    match picked {
        Ok(out) => Some(out),
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
    m.add_function(wrap_pyfunction!(records_past_bound, m)?)?;
    m.add_function(wrap_pyfunction!(kv_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(segment_bloom, m)?)?;
    m.add_function(wrap_pyfunction!(
        crate::python_segments::segment_rows_with_ids,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(crate::python_segments::line_census, m)?)?;
    m.add_function(wrap_pyfunction!(intel_select, m)?)?;
    m.add_class::<HeaderDecoder>()?;
    m.add_class::<crate::python_event::Event>()?;
    m.add_class::<crate::python_segindex::FinishSegments>()?;
    m.add_class::<PyFramer>()?;
    m.add_class::<FileDecoder>()?;
    m.add_class::<SshdAuthLines>()?;
    m.add_class::<RuleMatcher>()?;
    m.add_class::<FlowTemplate>()?;
    m.add_class::<FlowRollup>()?;
    // The syslog batch entry point (python_batch.rs).
    m.add_class::<crate::python_batch::SyslogBatch>()?;
    m.add_class::<crate::python_udp::UdpReceiver>()?;
    m.add_class::<crate::python_line::LineEncoder>()?;
    m.add_class::<crate::python_windows::CorrelationWindows>()?;
    m.add_class::<crate::python_windows::WindowsBatch>()?;
    m.add_class::<crate::python_observe::DetectionFeeds>()?;
    m.add_class::<crate::python_bookkeeping::AbsenceGroups>()?;
    m.add_class::<crate::python_bookkeeping::BaselineGroups>()?;
    m.add_class::<crate::python_baselines::BaselineBatch>()?;
    m.add(
        "WindowsDeclined",
        m.py().get_type::<crate::python_windows::WindowsDeclined>(),
    )?;
    // The NetFlow decoder with its template state, and its rollup columns (python_netflow.rs).
    m.add_class::<crate::python_netflow::NetflowBatchDecoder>()?;
    m.add_class::<crate::python_netflow::FlowColumns>()?;
    m.add_class::<crate::python_flowevents::FlowEvents>()?;
    Ok(())
}

/// A NetFlow v9/IPFIX template's records decoded into the reference's flow dicts.
///
/// Built once per installed (non-options) template from what `template.Template` computed:
/// each field's wire length and converter code, and the ECS plan (which value feeds which
/// field). `emit` turns a data set's bytes into `(event time, fields)` tuples identical to
/// the reference's generated emitter, key order included.
#[pyclass(frozen, module = "appliance._dataplane")]
struct FlowTemplate {
    plan: crate::netflow::RecordPlan,
    /// (field name, value index) in the reference's dict order.
    direct: Vec<(Py<PyString>, usize)>,
    rate_i: Option<usize>,
    sampler_i: Option<usize>,
    bytes_i: Option<usize>,
    packets_i: Option<usize>,
    proto_i: Option<usize>,
    start_i: Option<usize>,
    end_i: Option<usize>,
    init_i: Option<usize>,
    /// network.iana_number text and network.transport name per protocol number.
    iana: Vec<Py<PyString>>,
    transport: Vec<Option<Py<PyString>>>,
    keys: FlowKeys,
}

/// The interned keys of a flow's fields, shared by the record emitter here and the stateful
/// decoder (python_netflow.rs).
pub(crate) struct FlowKeys {
    pub(crate) bytes: Py<PyString>,
    pub(crate) packets: Py<PyString>,
    pub(crate) category: Py<PyString>,
    pub(crate) kind: Py<PyString>,
    pub(crate) network: Py<PyString>,
    pub(crate) connection: Py<PyString>,
    pub(crate) iana: Py<PyString>,
    pub(crate) transport: Py<PyString>,
    pub(crate) rate: Py<PyString>,
    pub(crate) start: Py<PyString>,
    pub(crate) end: Py<PyString>,
}

impl FlowKeys {
    pub(crate) fn new(py: Python<'_>) -> Self {
        let k = |s: &str| PyString::intern(py, s).unbind();
        FlowKeys {
            bytes: k("network.bytes"),
            packets: k("network.packets"),
            category: k("event.category"),
            kind: k("event.type"),
            network: k("network"),
            connection: k("connection"),
            iana: k("network.iana_number"),
            transport: k("network.transport"),
            rate: k("netflow.sampling_rate"),
            start: k("event.start"),
            end: k("event.end"),
        }
    }
}

/// `network.iana_number` text and `network.transport` name per protocol number (0-255), as
/// interned Python strings.
pub(crate) type ProtocolNames = (Vec<Py<PyString>>, Vec<Option<Py<PyString>>>);

pub(crate) fn protocol_names(py: Python<'_>, transport: &[Option<String>]) -> ProtocolNames {
    let k = |s: &str| PyString::intern(py, s).unbind();
    (
        (0..256).map(|i| k(&i.to_string())).collect(),
        (0..256)
            .map(|i| transport.get(i).cloned().flatten().map(|t| k(&t)))
            .collect(),
    )
}

fn position(i: isize) -> Option<usize> {
    usize::try_from(i).ok()
}

#[pymethods]
impl FlowTemplate {
    /// `fields`: (wire length, converter code) per template field, padding included;
    /// `direct`: (name, value index); `slots`: rate, sampler, bytes, packets, protocol,
    /// start, end and init value indexes (-1: absent); `transport`: name per protocol number.
    #[new]
    fn new(
        py: Python<'_>,
        fields: Vec<(u16, u8)>,
        direct: Vec<(String, isize)>,
        slots: [isize; 8],
        transport: Vec<Option<String>>,
    ) -> PyResult<Self> {
        use crate::netflow::{Conv, FieldPlan, RecordPlan};
        let mut plan_fields = Vec::with_capacity(fields.len());
        for (len, code) in fields {
            let conv = Conv::from_code(code)
                .ok_or_else(|| PyValueError::new_err(format!("converter code {code}")))?;
            plan_fields.push(FieldPlan { len, conv });
        }
        let plan = RecordPlan::new(plan_fields).map_err(|e| PyValueError::new_err(e.0))?;
        let width = plan.width();
        let idx = |i: isize| -> PyResult<Option<usize>> {
            match position(i) {
                Some(p) if p >= width => Err(PyValueError::new_err("value index past the record")),
                other => Ok(other),
            }
        };
        let mut direct_out = Vec::with_capacity(direct.len());
        for (name, i) in direct {
            let i = idx(i)?.ok_or_else(|| PyValueError::new_err("negative value index"))?;
            direct_out.push((PyString::intern(py, &name).unbind(), i));
        }
        let (iana, transport) = protocol_names(py, &transport);
        Ok(FlowTemplate {
            plan,
            direct: direct_out,
            rate_i: idx(slots[0])?,
            sampler_i: idx(slots[1])?,
            bytes_i: idx(slots[2])?,
            packets_i: idx(slots[3])?,
            proto_i: idx(slots[4])?,
            start_i: idx(slots[5])?,
            end_i: idx(slots[6])?,
            init_i: idx(slots[7])?,
            iana,
            transport,
            keys: FlowKeys::new(py),
        })
    }

    /// Append the records of `data[p:end]` to `out` as `(ts, fields)`; return the error the
    /// reference counts for a malformed set (`short_data_set`, `varlen_past_end`) or `None`.
    /// Raises (and appends nothing) when a value cannot be represented, or on a caught
    /// panic: the caller then decodes the set with the reference emitter.
    #[allow(clippy::too_many_arguments)]
    fn emit<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        p: usize,
        end: usize,
        common: &Bound<'py, PyDict>,
        base: Option<f64>,
        scale: f64,
        rate: u128,
        samplers: &Bound<'py, PyDict>,
        now: f64,
        out: &Bound<'py, PyList>,
    ) -> PyResult<Option<&'static str>> {
        use crate::netflow::{split, text, Raw};
        if p > end || end > data.len() {
            return Err(PyValueError::new_err("set bounds outside the datagram"));
        }
        let body = &data[p..end];
        let got = match catch_unwind(AssertUnwindSafe(|| split(&self.plan, body))) {
            Ok(got) => got,
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                return Err(PyValueError::new_err("native netflow decoder panicked"));
            }
        };
        if got.records == 0 {
            return Ok(got.error);
        }
        let width = self.plan.width();
        let int = |v: &Raw<'_>| -> Option<u64> {
            match v {
                Raw::Int(n) => Some(*n),
                Raw::Bytes(..) => None,
            }
        };
        let overflow = || pyo3::exceptions::PyOverflowError::new_err("flow value past u128");
        let keys = &self.keys;
        let timed = self.start_i.is_some() || self.end_i.is_some();
        let mut made: Vec<Bound<'py, PyTuple>> = Vec::with_capacity(got.records);
        for rec in got.values.chunks_exact(width) {
            let r: u128 = if let Some(i) = self.rate_i {
                match int(&rec[i]) {
                    Some(0) | None => rate,
                    Some(v) => u128::from(v),
                }
            } else if let Some(i) = self.sampler_i {
                let key = match rec[i] {
                    Raw::Int(n) => n.into_bound_py_any(py)?,
                    Raw::Bytes(b, c) => PyString::new(py, &text(b, c)).into_any(),
                };
                match samplers.get_item(key)? {
                    Some(v) => v.extract::<u128>()?,
                    None => rate,
                }
            } else {
                rate
            };
            let d = PyDict::new(py);
            for (name, i) in &self.direct {
                let v = match rec[*i] {
                    Raw::Int(n) => n.into_bound_py_any(py)?,
                    Raw::Bytes(b, c) => PyString::new(py, &text(b, c)).into_any(),
                };
                d.set_item(name.bind(py), v)?;
            }
            if let Some(i) = self.bytes_i {
                let v = u128::from(int(&rec[i]).unwrap_or(0));
                d.set_item(keys.bytes.bind(py), v.checked_mul(r).ok_or_else(overflow)?)?;
            }
            if let Some(i) = self.packets_i {
                let v = u128::from(int(&rec[i]).unwrap_or(0));
                d.set_item(
                    keys.packets.bind(py),
                    v.checked_mul(r).ok_or_else(overflow)?,
                )?;
            }
            d.set_item(
                keys.category.bind(py),
                PyList::new(py, [keys.network.bind(py)])?,
            )?;
            d.set_item(
                keys.kind.bind(py),
                PyList::new(py, [keys.connection.bind(py)])?,
            )?;
            if let Some(i) = self.proto_i {
                let proto = int(&rec[i]).unwrap_or(u64::MAX);
                if proto < 256 {
                    let proto = proto as usize;
                    d.set_item(keys.iana.bind(py), self.iana[proto].bind(py))?;
                    if let Some(t) = &self.transport[proto] {
                        d.set_item(keys.transport.bind(py), t.bind(py))?;
                    }
                }
            }
            if r != 1 {
                d.set_item(keys.rate.bind(py), r)?;
            }
            let mut ts = now;
            if timed {
                let b = match self.init_i {
                    Some(i) => Some(int(&rec[i]).unwrap_or(0) as f64 * 0.001),
                    None => base,
                };
                if let Some(b) = b {
                    if let Some(i) = self.start_i {
                        let v = int(&rec[i]).unwrap_or(0) as f64;
                        d.set_item(keys.start.bind(py), b + v * scale)?;
                    }
                    if let Some(i) = self.end_i {
                        let v = int(&rec[i]).unwrap_or(0) as f64;
                        ts = b + v * scale;
                        d.set_item(keys.end.bind(py), ts)?;
                    }
                }
            }
            d.update(common.as_mapping())?;
            made.push(PyTuple::new(py, [ts.into_bound_py_any(py)?, d.into_any()])?);
        }
        for item in made {
            out.append(item)?;
        }
        Ok(got.error)
    }
}

/// The per-minute flow rollups (`crate::rollup`), fed the flow path's events in batches.
/// Counting runs with the GIL released, so the flow path can hand a batch to a thread of
/// its own while the event loop decodes the next datagrams; the lock keeps the loop's reads
/// (open minutes, the folded count) from meeting a batch half counted.
#[pyclass(module = "appliance._dataplane", frozen)]
struct FlowRollup {
    inner: std::sync::Mutex<crate::rollup::Rollup>,
}

impl FlowRollup {
    fn rollup(&self) -> std::sync::MutexGuard<'_, crate::rollup::Rollup> {
        // A panic while counting is caught inside the lock, so it is never poisoned by one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `flows` without the GIL.
    fn count(&self, py: Python<'_>, flows: Vec<crate::rollup::Flow>) -> PyResult<()> {
        let counted = py.detach(|| {
            let mut rollup = self.rollup();
            catch_unwind(AssertUnwindSafe(|| rollup.add(flows))).is_ok()
        });
        if counted {
            return Ok(());
        }
        PANICS.fetch_add(1, Ordering::Relaxed);
        Err(PyValueError::new_err("native flow rollup panicked"))
    }
}

/// A field as rollup key text: `None`, the string itself, or `str()` of anything else.
fn key_part(v: Option<Bound<'_, PyAny>>) -> PyResult<Option<crate::rollup::Text>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => match v.cast::<PyString>() {
            Ok(s) => Ok(Some(s.to_str()?.into())),
            Err(_) => Ok(Some(v.str()?.to_str()?.into())),
        },
    }
}

/// `fields.get(name) or 0` as an unsigned count (0 for what is not one).
fn counter(v: Option<Bound<'_, PyAny>>) -> u128 {
    v.and_then(|v| v.extract::<u128>().ok()).unwrap_or(0)
}

fn rows_out<'py>(py: Python<'py>, rows: Vec<crate::rollup::Row>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (minute, dim, key, b, p, n) in rows {
        out.append((minute, crate::rollup::DIMENSIONS[dim], key, b, p, n))?;
    }
    Ok(out)
}

#[pymethods]
impl FlowRollup {
    #[new]
    #[pyo3(signature = (top_k = 100, max_keys = 20_000))]
    fn new(top_k: usize, max_keys: usize) -> Self {
        FlowRollup {
            inner: std::sync::Mutex::new(crate::rollup::Rollup::new(top_k, max_keys)),
        }
    }

    /// Count each flow event (`created`, `fields`) in the minute it was received.
    fn add(&self, py: Python<'_>, events: &Bound<'_, PyAny>) -> PyResult<()> {
        let names = [
            intern!(py, "source.ip"),
            intern!(py, "destination.ip"),
            intern!(py, "destination.port"),
            intern!(py, "network.transport"),
            intern!(py, "network.iana_number"),
            intern!(py, "network.bytes"),
            intern!(py, "network.packets"),
        ];
        let mut flows = Vec::new();
        for ev in events.try_iter()? {
            let ev = ev?;
            let created: f64 = Event::read(&ev, Attr::Created)?.extract()?;
            let fields = Event::read(&ev, Attr::Fields)?;
            let fields = fields.cast::<PyDict>()?;
            let get = |i: usize| fields.get_item(names[i]);
            let mut transport = get(3)?;
            if transport
                .as_ref()
                .is_none_or(|t| !t.is_truthy().unwrap_or(false))
            {
                transport = get(4)?;
            }
            flows.push(crate::rollup::Flow {
                created,
                src: key_part(get(0)?)?,
                dst: key_part(get(1)?)?,
                port: key_part(get(2)?)?,
                transport: key_part(transport)?,
                bytes: counter(get(5)?),
                packets: counter(get(6)?),
            });
        }
        self.count(py, flows)
    }

    /// Count flows the native NetFlow decoder already read (`FlowColumns`): no dict read.
    fn add_columns(
        &self,
        py: Python<'_>,
        columns: Vec<PyRef<'_, crate::python_netflow::FlowColumns>>,
    ) -> PyResult<()> {
        let flows: Vec<crate::rollup::Flow> = columns.iter().flat_map(|c| c.take()).collect();
        self.count(py, flows)
    }

    fn take_closed<'py>(&self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyList>> {
        let rows = self.rollup().take_closed(now);
        rows_out(py, rows)
    }

    fn take_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.rollup().take_all();
        rows_out(py, rows)
    }

    fn open_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.rollup().open_rows();
        rows_out(py, rows)
    }

    #[getter]
    fn flows(&self) -> u64 {
        self.rollup().flows
    }

    #[getter]
    fn folded(&self) -> u64 {
        self.rollup().folded
    }

    #[getter]
    fn top_k(&self) -> usize {
        self.rollup().top_k
    }

    #[getter]
    fn max_keys(&self) -> usize {
        self.rollup().max_keys
    }
}
