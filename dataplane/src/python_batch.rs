//! `SyslogBatch`: a whole `recvmmsg` batch (or the frames of one stream read) from bytes to
//! events in one call, instead of four Python-orchestrated calls per message.
//!
//! Per message it does what `SyslogIntake.datagram`/`admit`/`event` and the pipeline's line
//! encoding do, in the same order and with the same objects: the sender profile (built by
//! Python on first sight, read here), allow-list verdict, empty/oversize rule, token bucket,
//! the header (`HeaderDecoder`), the static fields, the vendor decoders (the registry's own
//! `decode`, whose declarative files run natively), device time, the clock-skew gauge, the
//! `Event` and its stored line. Counts come back per reason for Python to fold into its
//! counters. A Python error or a caught panic costs that message a `decode_error`; the rest
//! of the batch goes on.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::jsonstr;
use crate::python::{Applied, FileDecoder, HeaderDecoder, Parsed, PyFramer, SshdAuthLines, PANICS};
use crate::python_event::Event;
use crate::python_line::{line_or_reference, quoted_key, Json, Prewritten, Time};
use crate::python_record::FieldsOut;
use crate::python_udp::UdpReceiver;
use crate::syslog::batch::{admit, Admit, Bucket};

/// What Python hands over once per intake (and again when its decoders change).
#[pyclass(module = "appliance._dataplane", frozen)]
pub(crate) struct SyslogBatch {
    header: Py<HeaderDecoder>,
    /// `decode_with_fields` of the reference, for the lines the native header leaves to it.
    fallback: Py<PyAny>,
    /// `VendorRegistry.decode(msg, fields, hint) -> name`.
    vendors: Py<PyAny>,
    /// The same registry's tables, walked here in its order (no Python frame per message);
    /// `None` for a registry of another shape, which is then called.
    dispatch: Option<Dispatch>,
    /// `message.body_time(t, tz)`: a body time (`payload_time`) as epoch seconds, for a
    /// header without a time.
    body_time: Py<PyAny>,
    /// Its answers by the identity of its arguments (the time object and the sender's zone),
    /// each entry holding both, so no address is reused while it stands: a decoder file's
    /// memo hands out the same object for the same captures, so a second's lines (FortiGate's
    /// `date=`/`time=`) cost one call, not a message object and a call each (~10,000
    /// instructions a line).
    body_times: Mutex<FxHashMap<(usize, usize), BodyTime>>,
    /// `Event(timestamp, created, module, fields, raw, id, line)`.
    event_class: Py<PyAny>,
    /// `segments.encode_line_reference(ts, created, module, fields, raw)`, for the rare line
    /// the native writer leaves to it (raw bytes that are not UTF-8, a key that is not text).
    encode_line: Py<PyAny>,
    /// The clock-skew gauge's values, keyed by the profile's `key`.
    skew: Py<PyDict>,
    max_skew: usize,
    transport: Py<PyString>,
    /// `transport` as a JSON string.
    transport_json: Vec<u8>,
    module: Py<PyString>,
    /// Tests: the next message's decode panics (`inject_panic`).
    panic_next: AtomicBool,
}

/// A `body_time` answer and the arguments it was for, held so that their addresses (the
/// memo's key) stay theirs.
struct BodyTime {
    _time: Py<PyAny>,
    _zone: Py<PyAny>,
    epoch: Option<f64>,
}

/// Bodies' times remembered at most (a second's lines share one; the memo starts over past
/// it).
const BODY_TIMES_MAX: usize = 1024;

/// One vendor decoder: its `decode(msg, fields)`, its name, and whether it claims only
/// messages with structured data (`VendorDecoder.structured_only`: skipped for the others).
struct Dec {
    decode: Py<PyAny>,
    name: Py<PyString>,
    structured_only: bool,
    /// Its native part (`VendorDecoder.native`), called with the message's text; `decode`
    /// only for what that defers.
    native: Option<Native>,
    /// `VendorDecoder.prefix_needle`: a line its prefix selects is tried only when this
    /// occurs.
    prefix_needle: Option<memchr::memmem::Finder<'static>>,
}

/// A vendor decoder's native part: a decoder file's interpreter, or linux_auth's sshd lines.
enum Native {
    File(Py<FileDecoder>),
    Sshd(Py<SshdAuthLines>),
}

impl Dec {
    fn of(d: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Dec {
            decode: d.getattr("decode")?.unbind(),
            name: d.getattr("name")?.cast_into::<PyString>()?.unbind(),
            structured_only: match d.getattr("structured_only") {
                Ok(v) => v.is_truthy()?,
                Err(_) => false,
            },
            native: native_of(d),
            prefix_needle: d
                .getattr("prefix_needle")
                .and_then(|v| v.extract::<String>())
                .ok()
                .filter(|n| !n.is_empty())
                .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned()),
        })
    }
}

/// `VendorDecoder.native` when it is one of ours (a registry of another shape has none).
fn native_of(d: &Bound<'_, PyAny>) -> Option<Native> {
    let native = d.getattr(intern!(d.py(), "native")).ok()?;
    if let Ok(file) = native.cast::<FileDecoder>() {
        return Some(Native::File(file.clone().unbind()));
    }
    Some(Native::Sshd(
        native.cast_into::<SshdAuthLines>().ok()?.unbind(),
    ))
}

/// Whether the decoder `decode` (with its native part, if any) claims the message: the
/// native part reads the text the parse holds, so no message object is made unless it
/// defers.
fn claim<'py>(
    py: Python<'py>,
    decode: &Bound<'py, PyAny>,
    native: Option<&Native>,
    msg: &mut Msg<'_, 'py>,
    fields: &mut FieldsOut<'py>,
    pre: &mut Prewritten<'py>,
) -> PyResult<bool> {
    if let Some(native) = native {
        let text = msg.text(py)?;
        let applied = match native {
            Native::File(file) => file.get().apply(py, &text, fields, pre)?,
            Native::Sshd(sshd) => {
                let app = msg.app_name(py)?.unwrap_or_default();
                sshd.get().apply(py, &app, &text, fields, pre)?
            }
        };
        match applied {
            Applied::NotMine => return Ok(false),
            Applied::Claimed(time) => {
                if let Some(time) = time {
                    msg.set_payload_time(py, time)?;
                }
                return Ok(true);
            }
            Applied::Defer => {}
        }
    }
    // Python code gets the dict: what it sets is read back by the line's walk.
    pre.lose_track();
    decode.call1((msg.object()?, fields.dict()?))?.is_truthy()
}

/// The message the vendor decoders are handed: the Python object, made on first need when
/// the header was decoded natively (what it reads before that comes from the parse).
struct Msg<'a, 'py> {
    obj: Option<Bound<'py, PyAny>>,
    parsed: Option<Parsed<'a, 'py>>,
    /// The device time a native decoder file read while no object was made
    /// (`payload_time`, set on the object when one is made).
    payload_time: Option<Bound<'py, PyAny>>,
}

impl<'a, 'py> Msg<'a, 'py> {
    fn object(&mut self) -> PyResult<Bound<'py, PyAny>> {
        if let Some(obj) = &self.obj {
            return Ok(obj.clone());
        }
        let parsed = self.parsed.as_ref().expect("a message or its parse");
        let obj = parsed.object()?;
        if let Some(time) = self.payload_time.take() {
            obj.setattr(intern!(obj.py(), "payload_time"), time)?;
        }
        self.obj = Some(obj.clone());
        Ok(obj)
    }

    fn set_payload_time(&mut self, py: Python<'py>, time: Bound<'py, PyAny>) -> PyResult<()> {
        match &self.obj {
            Some(obj) => obj.setattr(intern!(py, "payload_time"), time),
            None => {
                self.payload_time = Some(time);
                Ok(())
            }
        }
    }

    /// The APP-NAME as the decoders read it: the parse's own text until a message object
    /// exists (a Python decoder may have changed it), then the object's. Borrowed from the
    /// datagram, not from `self`, so the caller may hand `self` on meanwhile: a copy a
    /// message was a `malloc` and a `free`.
    fn app_name(&self, py: Python<'py>) -> PyResult<Option<Cow<'a, str>>> {
        match (&self.obj, &self.parsed) {
            (None, Some(p)) => Ok(p.m.app_name.map(Cow::Borrowed)),
            (Some(obj), _) => {
                let app = obj.getattr(intern!(py, "app_name"))?;
                if app.is_none() {
                    return Ok(None);
                }
                Ok(Some(Cow::Owned(
                    app.cast_into::<PyString>()?.to_cow()?.into_owned(),
                )))
            }
            (None, None) => Ok(None),
        }
    }

    /// The message text, read as [`Msg::app_name`] is.
    fn text(&self, py: Python<'py>) -> PyResult<Cow<'a, str>> {
        match (&self.obj, &self.parsed) {
            (None, Some(p)) => Ok(Cow::Borrowed(p.m.message)),
            (Some(obj), _) => Ok(Cow::Owned(
                obj.getattr(intern!(py, "message"))?
                    .cast_into::<PyString>()?
                    .to_cow()?
                    .into_owned(),
            )),
            (None, None) => Ok(Cow::Borrowed("")),
        }
    }

    /// Whether `structured_data` is truthy, as the `structured_only` decoders test it.
    fn has_structured_data(&self, py: Python<'py>) -> PyResult<bool> {
        match (&self.obj, &self.parsed) {
            (None, Some(p)) => p.sd.is_truthy(),
            (Some(obj), _) => obj.getattr(intern!(py, "structured_data"))?.is_truthy(),
            (None, None) => Ok(false),
        }
    }
}

/// `VendorRegistry`'s selection tables (`by_program`, `by_first`, the fallbacks' needles,
/// `last_resort`), read once; `VendorRegistry.decode` is the order they are tried in.
///
/// The two maps are keyed by the registry's own names and only looked up per message (a
/// sender's program name cannot add keys), so they hash with Fx: SipHash was ~450
/// instructions a message.
struct Dispatch {
    by_program: FxHashMap<String, Vec<Dec>>,
    by_first: FxHashMap<char, Vec<(String, Dec)>>,
    /// The fallbacks' needles, compiled once (SIMD substring search: five plain `contains`
    /// scans were 1,100 instructions of a message that had none of them).
    needles: Vec<memchr::memmem::Finder<'static>>,
    fallbacks: Vec<Dec>,
    last_resort: Vec<Dec>,
    /// Every decoder of `by_name` (what a sender's `vendor` hint is), keyed by the object's
    /// address (the object is held, so the address is not reused): no attribute of the hint
    /// is read per message.
    by_hint: FxHashMap<usize, (Py<PyAny>, Dec)>,
}

impl Dispatch {
    fn read(registry: &Bound<'_, PyAny>) -> PyResult<Self> {
        let decs = |v: Bound<'_, PyAny>| -> PyResult<Vec<Dec>> {
            v.try_iter()?.map(|d| Dec::of(&d?)).collect()
        };
        let mut by_program = FxHashMap::default();
        for (k, v) in registry
            .getattr("by_program")?
            .cast_into::<PyDict>()?
            .iter()
        {
            by_program.insert(k.extract::<String>()?, decs(v)?);
        }
        let mut by_first = FxHashMap::default();
        for (k, v) in registry.getattr("by_first")?.cast_into::<PyDict>()?.iter() {
            let k: String = k.extract()?;
            let mut chars = k.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(pyo3::exceptions::PyValueError::new_err("by_first key"));
            };
            let mut list = Vec::new();
            for item in v.try_iter()? {
                let (prefix, d): (String, Bound<'_, PyAny>) = item?.extract()?;
                list.push((prefix, Dec::of(&d)?));
            }
            by_first.insert(c, list);
        }
        let mut by_hint = FxHashMap::default();
        for d in registry.getattr("by_name")?.cast_into::<PyDict>()?.values() {
            by_hint.insert(d.as_ptr() as usize, (d.clone().unbind(), Dec::of(&d)?));
        }
        Ok(Dispatch {
            by_program,
            by_first,
            by_hint,
            needles: registry
                .getattr("_needles")?
                .extract::<Vec<String>>()?
                .iter()
                .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                .collect(),
            fallbacks: decs(registry.getattr("fallbacks")?)?,
            last_resort: decs(registry.getattr("last_resort")?)?,
        })
    }

    /// `VendorRegistry.decode`: the name of the decoder that claimed the message, or `""`.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        msg: &mut Msg<'_, 'py>,
        fields: &mut FieldsOut<'py>,
        hint: &Bound<'py, PyAny>,
        pre: &mut Prewritten<'py>,
    ) -> PyResult<Bound<'py, PyString>> {
        let claims = |d: &Dec,
                      msg: &mut Msg<'_, 'py>,
                      fields: &mut FieldsOut<'py>,
                      pre: &mut Prewritten<'py>| {
            if d.structured_only && !msg.has_structured_data(py)? {
                return Ok(false);
            }
            claim(py, d.decode.bind(py), d.native.as_ref(), msg, fields, pre)
        };
        let resolved = match hint.is_none() {
            true => None,
            false => Some(self.by_hint.get(&(hint.as_ptr() as usize))),
        };
        if let Some(Some((_, d))) = resolved {
            if claims(d, msg, fields, pre)? {
                return Ok(d.name.bind(py).clone());
            }
        } else if resolved.is_some() {
            // A hint from elsewhere than the registry (none in the intake): read as it comes.
            let skip = hint
                .getattr(intern!(py, "structured_only"))
                .map_or(Ok(false), |v| v.is_truthy())?
                && !msg.has_structured_data(py)?;
            let native = if skip { None } else { native_of(hint) };
            if !skip
                && claim(
                    py,
                    &hint.getattr(intern!(py, "decode"))?,
                    native.as_ref(),
                    msg,
                    fields,
                    pre,
                )?
            {
                return Ok(hint.getattr(intern!(py, "name"))?.cast_into::<PyString>()?);
            }
        }
        if let Some(app) = msg.app_name(py)? {
            let mut cands = self.by_program.get(app.as_ref());
            if cands.is_none() {
                if let Some(i) = app.find('(') {
                    cands = self.by_program.get(&app[..i]);
                }
            }
            for d in cands.into_iter().flatten() {
                if claims(d, msg, fields, pre)? {
                    return Ok(d.name.bind(py).clone());
                }
            }
        }
        let text = msg.text(py)?;
        if let Some(first) = text.chars().next() {
            for (prefix, d) in self.by_first.get(&first).into_iter().flatten() {
                let needled = || {
                    d.prefix_needle
                        .as_ref()
                        .is_none_or(|n| n.find(text.as_bytes()).is_some())
                };
                if text.starts_with(prefix.as_str()) && needled() && claims(d, msg, fields, pre)? {
                    return Ok(d.name.bind(py).clone());
                }
            }
            if self
                .needles
                .iter()
                .any(|n| n.find(text.as_bytes()).is_some())
            {
                for d in &self.fallbacks {
                    if claims(d, msg, fields, pre)? {
                        return Ok(d.name.bind(py).clone());
                    }
                }
            }
        }
        for d in &self.last_resort {
            if claims(d, msg, fields, pre)? {
                return Ok(d.name.bind(py).clone());
            }
        }
        Ok(intern!(py, "").clone())
    }
}

/// The profile of the sender being decoded, read once per change of sender.
struct Profile<'py> {
    ip: Bound<'py, PyString>,
    obj: Bound<'py, PyAny>,
    allowed: bool,
    statics: Option<Bound<'py, PyDict>>,
    tz: Bound<'py, PyAny>,
    decoder: Bound<'py, PyAny>,
    key: Bound<'py, PyAny>,
}

/// What the call returns besides the events: counts by reason, for Python's counters
/// (Fx-hashed: `decoded` is looked up once a message, and its keys are decoder names).
#[derive(Default)]
struct Counts {
    dropped: FxHashMap<&'static str, u64>,
    truncated: u64,
    parse_errors: FxHashMap<String, u64>,
    decoded: FxHashMap<String, u64>,
    denied: Option<String>,
    /// (sender, exception) of each message a decoder raised on (panics count as `None`).
    bugs: Vec<(String, Option<PyErr>)>,
    /// The clock skew of the run of messages from one sender being decoded: (its profile's
    /// key, the last message's skew), written to the gauge's dict when the sender changes
    /// and at the end of the call (`SyslogBatch::put_skew`). The reference writes it a
    /// message; a dict write and a float a message were ~200 instructions of a syslog
    /// line's decode (callgrind), and the dict ends the same (its keys added in the same
    /// order, the last value of each standing, nothing else writing it during the call).
    skew: Option<(Py<PyAny>, f64)>,
}

/// The per-batch settings `run` takes from the intake.
struct Policy<'a, 'py> {
    now: f64,
    raw_max: usize,
    rate: f64,
    burst: f64,
    profiles: &'a Bound<'py, PyDict>,
    profile_of: &'a Bound<'py, PyAny>,
    /// Whether the allow-list and the empty/oversize rule apply (datagrams) or were applied
    /// by the stream already (frames).
    datagram: bool,
    max_bytes: usize,
    /// `Event.listener` set at construction (the stream path), else left to the pipeline.
    listener: Option<&'a Bound<'py, PyString>>,
    /// Bytes of the stored lines of the events made (the pipeline's queue bound).
    line_bytes: std::cell::Cell<usize>,
    /// The pairs written ahead for each event's stored line (kept for the next).
    pre: std::cell::RefCell<Prewritten<'py>>,
    /// The events' time objects, shared where the values are (`Policy::times`).
    times: std::cell::RefCell<TimeObjects<'py>>,
}

/// The receive time as one object for the call's events, and the last event time made, for
/// the next event of the same second (a sender's burst under one BSD stamp): two float
/// objects an event, allocated and freed, were ~250 instructions of its decode (callgrind)
/// and 48 bytes of its memory.
#[derive(Default)]
struct TimeObjects<'py> {
    now: Option<Bound<'py, PyFloat>>,
    last: Option<(u64, Bound<'py, PyFloat>)>,
}

impl<'py> Policy<'_, 'py> {
    /// An event's `timestamp` and `created` objects: `created` the call's receive time,
    /// `timestamp` that object again when equal, else the last event's when equal, else new.
    fn times(&self, py: Python<'py>, ts: f64) -> (Bound<'py, PyFloat>, Bound<'py, PyFloat>) {
        let mut t = self.times.borrow_mut();
        let now = t
            .now
            .get_or_insert_with(|| PyFloat::new(py, self.now))
            .clone();
        let bits = ts.to_bits();
        let ts = match &t.last {
            _ if bits == self.now.to_bits() => now.clone(),
            Some((b, obj)) if *b == bits => obj.clone(),
            _ => t.last.insert((bits, PyFloat::new(py, ts))).1.clone(),
        };
        (ts, now)
    }
}

impl<'py> Profile<'py> {
    fn read(ip: Bound<'py, PyString>, obj: Bound<'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        let statics = obj.getattr(intern!(py, "static"))?;
        Ok(Profile {
            allowed: obj.getattr(intern!(py, "allowed"))?.is_truthy()?,
            statics: if statics.is_none() {
                None
            } else {
                Some(statics.cast_into::<PyDict>()?)
            },
            tz: obj.getattr(intern!(py, "tz"))?,
            decoder: obj.getattr(intern!(py, "decoder"))?,
            key: obj.getattr(intern!(py, "key"))?,
            ip,
            obj,
        })
    }
}

impl SyslogBatch {
    fn profile<'py>(
        &self,
        policy: &Policy<'_, 'py>,
        ip: &Bound<'py, PyString>,
        last: &mut Option<Profile<'py>>,
    ) -> PyResult<()> {
        // The cache is probed per message, as the reference does: a full cache is cleared by
        // `profile()` and the next message of a sender then gets a fresh bucket.
        let obj = match policy.profiles.get_item(ip)? {
            Some(obj) => obj,
            None => policy.profile_of.call1((ip,))?,
        };
        if let Some(p) = last.as_ref() {
            if p.obj.is(&obj) {
                return Ok(());
            }
        }
        *last = Some(Profile::read(ip.clone(), obj)?);
        Ok(())
    }

    /// One message after the policy let it through: header, fields, vendor, time, event.
    fn event<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        prof: &Profile<'py>,
        policy: &Policy<'_, 'py>,
        counts: &mut Counts,
    ) -> PyResult<Bound<'py, PyAny>> {
        let now = policy.now;
        if self.panic_next.swap(false, Ordering::Relaxed) {
            panic!("injected by a test");
        }
        // The call's buffer, held for this message (a message is never decoded within another
        // of the same call; a re-entrant batch call has a policy of its own).
        let mut held = policy.pre.borrow_mut();
        let pre = &mut *held;
        let native = self.header.get().with_fields(
            py,
            data.as_bytes(),
            now,
            Some(prof.tz.clone()),
            prof.ip.as_any(),
            pre,
            |parsed, fields, pre| {
                for reason in &parsed.m.errors {
                    *counts.parse_errors.entry((*reason).to_owned()).or_default() += 1;
                }
                let msg = Msg {
                    obj: None,
                    parsed: Some(parsed),
                    payload_time: None,
                };
                self.finish(py, data, prof, policy, counts, msg, fields, pre)
            },
        )?;
        if let Some(event) = native {
            return Ok(event);
        }
        let got = self
            .fallback
            .bind(py)
            .call1((data, now, &prof.tz, &prof.ip))?;
        let got = got.cast_into::<PyTuple>()?;
        let (msg, fields) = (got.get_item(0)?, got.get_item(1)?.cast_into::<PyDict>()?);
        let fields = FieldsOut::Dict(fields);
        let errors = msg.getattr(intern!(py, "errors"))?;
        for reason in errors.try_iter()? {
            let reason = reason?;
            *counts
                .parse_errors
                .entry(reason.cast::<PyString>()?.to_cow()?.into_owned())
                .or_default() += 1;
        }
        let msg = Msg {
            obj: Some(msg),
            parsed: None,
            payload_time: None,
        };
        pre.clear();
        self.finish(py, data, prof, policy, counts, msg, fields, pre)
    }

    /// `body_time(t, tz)`, memoised by the identity of `t` and `tz` when `remember` (a
    /// decoder file's time, shared by its lines; see `body_times`); a float is its own
    /// answer.
    fn body_time_of(
        &self,
        t: &Bound<'_, PyAny>,
        tz: &Bound<'_, PyAny>,
        remember: bool,
    ) -> PyResult<Option<f64>> {
        if t.is_none() {
            return Ok(None);
        }
        if let Ok(f) = t.cast::<PyFloat>() {
            return Ok(Some(f.value()));
        }
        if !remember {
            return self.body_time.bind(t.py()).call1((t, tz))?.extract();
        }
        let key = (t.as_ptr() as usize, tz.as_ptr() as usize);
        if let Ok(memo) = self.body_times.try_lock() {
            if let Some(hit) = memo.get(&key) {
                return Ok(hit.epoch);
            }
        }
        // The call may run another thread's decode: the memo is not held across it.
        let epoch: Option<f64> = self.body_time.bind(t.py()).call1((t, tz))?.extract()?;
        if let Ok(mut memo) = self.body_times.try_lock() {
            if memo.len() >= BODY_TIMES_MAX {
                memo.clear();
            }
            let held = BodyTime {
                _time: t.clone().unbind(),
                _zone: tz.clone().unbind(),
                epoch,
            };
            memo.insert(key, held);
        }
        Ok(epoch)
    }

    /// The rest of a message once its header and header fields are known: static fields,
    /// vendor, device time, the event and its stored line.
    #[allow(clippy::too_many_arguments)]
    fn finish<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        prof: &Profile<'py>,
        policy: &Policy<'_, 'py>,
        counts: &mut Counts,
        mut msg: Msg<'_, 'py>,
        mut fields: FieldsOut<'py>,
        pre: &mut Prewritten<'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let now = policy.now;
        let transport = self.transport.bind(py);
        pre.set(
            &mut fields,
            intern!(py, "log.source.transport"),
            quoted_key!("log.source.transport"),
            transport.as_any(),
            Json::Raw(&self.transport_json),
        )?;
        if let Some(statics) = &prof.statics {
            pre.lose_track();
            let fields = fields.dict()?;
            let tags = fields.get_item(intern!(py, "tags"))?;
            fields.update(statics.as_mapping())?;
            if let Some(tags) = tags {
                if let Some(more) = statics.get_item(intern!(py, "tags"))? {
                    fields.set_item(intern!(py, "tags"), tags.add(more)?)?;
                }
            }
        }
        let name = match &self.dispatch {
            Some(dispatch) => dispatch.decode(py, &mut msg, &mut fields, &prof.decoder, pre)?,
            None => {
                pre.lose_track();
                self.vendors
                    .bind(py)
                    .getattr(intern!(py, "decode"))?
                    .call1((msg.object()?, fields.dict()?, &prof.decoder))?
                    .cast_into::<PyString>()?
            }
        };
        let text = name.to_cow()?;
        if !text.is_empty() {
            pre.set(
                &mut fields,
                intern!(py, "event.dataset"),
                quoted_key!("event.dataset"),
                name.as_any(),
                Json::Later,
            )?;
        }
        match counts.decoded.get_mut(text.as_ref()) {
            Some(n) => *n += 1,
            None => {
                counts.decoded.insert(text.into_owned(), 1);
            }
        }
        // A message no Python decoder saw has the parse's time, and a body time only from a
        // native decoder file, which counts when the header has none.
        let mut ts: Option<f64> = match (&msg.obj, &msg.parsed, &msg.payload_time) {
            (None, Some(p), _) if p.m.timestamp.is_some() || msg.payload_time.is_none() => {
                p.m.timestamp
            }
            // The header has no time and a native decoder file read one from the body.
            (None, Some(_), Some(t)) => self.body_time_of(t, &prof.tz, true)?,
            _ => {
                let obj = msg.object()?;
                let ts: Option<f64> = obj.getattr(intern!(py, "timestamp"))?.extract()?;
                match ts {
                    Some(ts) => Some(ts),
                    // a Python decoder's time object is its message's own: nothing to remember
                    None => self.body_time_of(
                        &obj.getattr(intern!(py, "payload_time"))?,
                        &prof.tz,
                        false,
                    )?,
                }
            }
        };
        let ts = match ts.take() {
            None => now,
            Some(ts) => {
                match &mut counts.skew {
                    Some((key, skew)) if key.bind(py).is(&prof.key) => *skew = ts - now,
                    pending => {
                        let was = pending.replace((prof.key.clone().unbind(), ts - now));
                        self.put_skew(py, was)?;
                    }
                }
                ts
            }
        };
        let module = self.module.bind(py);
        let bytes = data.as_bytes();
        let raw = if bytes.len() > policy.raw_max {
            PyBytes::new(py, &bytes[..policy.raw_max])
        } else {
            data.clone()
        };
        // A record goes on only where the line is written from the pairs (no walk of it).
        if !pre.are(fields.len()) {
            fields.dict()?;
        }
        let fields = fields.into_object()?;
        let line = line_or_reference(
            py,
            [Time::Float(ts), Time::Float(now)],
            module.as_any(),
            &fields,
            raw.as_any(),
            self.encode_line.bind(py),
            Some(pre),
        )?;
        let n = line.len()?;
        let (ts_obj, now_obj) = policy.times(py, ts);
        let event = Event::make(
            self.event_class.bind(py),
            ts_obj.into_any(),
            now_obj.into_any(),
            module.clone().into_any(),
            fields,
            data.clone().into_any(),
            line,
            policy.listener.map(|l| l.clone().into_any()),
        )?;
        policy.line_bytes.set(policy.line_bytes.get() + n);
        Ok(event)
    }

    /// The policy of one message, then its event: `None` when it was dropped (counted).
    fn one<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        prof: &Profile<'py>,
        policy: &Policy<'_, 'py>,
        counts: &mut Counts,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut data = data.clone();
        if policy.datagram {
            if !prof.allowed {
                *counts.dropped.entry("not_allowed").or_default() += 1;
                if counts.denied.is_none() {
                    counts.denied = Some(prof.ip.to_cow()?.into_owned());
                }
                return Ok(None);
            }
            match admit(data.as_bytes(), policy.max_bytes) {
                Admit::Empty => {
                    *counts.dropped.entry("empty").or_default() += 1;
                    return Ok(None);
                }
                Admit::Keep { len, truncated } => {
                    if truncated {
                        counts.truncated += 1;
                        data = PyBytes::new(py, &data.as_bytes()[..len]);
                    }
                }
            }
        }
        if policy.rate != 0.0 {
            let obj = &prof.obj;
            let mut bucket = Bucket {
                tokens: obj.getattr(intern!(py, "tokens"))?.extract()?,
                last: obj.getattr(intern!(py, "last"))?.extract()?,
            };
            let ok = bucket.take(policy.now, policy.rate, policy.burst);
            obj.setattr(intern!(py, "tokens"), bucket.tokens)?;
            obj.setattr(intern!(py, "last"), bucket.last)?;
            if !ok {
                *counts.dropped.entry("rate_limited").or_default() += 1;
                return Ok(None);
            }
        }
        let got = catch_unwind(AssertUnwindSafe(|| {
            self.event(py, &data, prof, policy, counts)
        }));
        match got {
            Ok(Ok(event)) => Ok(Some(event)),
            Ok(Err(err)) => {
                *counts.dropped.entry("decode_error").or_default() += 1;
                counts
                    .bugs
                    .push((prof.ip.to_cow()?.into_owned(), Some(err)));
                Ok(None)
            }
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                *counts.dropped.entry("decode_error").or_default() += 1;
                counts.bugs.push((prof.ip.to_cow()?.into_owned(), None));
                Ok(None)
            }
        }
    }

    /// `frames` and `stream`: frames of one sender allowed at accept, so rate limit and
    /// decode only (`SyslogIntake.admit`). Returns the answer and the bytes of the events'
    /// stored lines.
    fn stream_frames<'py>(
        &self,
        py: Python<'py>,
        frames: &[Bound<'py, PyBytes>],
        (ip, prof, now, raw_max, rate, burst): StreamArgs<'py>,
        listener: Option<&Bound<'py, PyString>>,
    ) -> PyResult<(Bound<'py, PyTuple>, usize)> {
        let empty = PyDict::new(py);
        let none = py.None().into_bound(py);
        let policy = Policy {
            now,
            raw_max,
            rate,
            burst,
            profiles: &empty,
            profile_of: &none,
            datagram: false,
            max_bytes: usize::MAX,
            listener,
            line_bytes: Default::default(),
            pre: std::cell::RefCell::new(Prewritten::for_line()),
            times: Default::default(),
        };
        let prof = Profile::read(ip, prof)?;
        let events = PyList::empty(py);
        let mut counts = Counts::default();
        for data in frames {
            if let Some(event) = self.one(py, data, &prof, &policy, &mut counts)? {
                events.append(event)?;
            }
        }
        Ok((self.answer(py, events, counts)?, policy.line_bytes.get()))
    }

    /// A sender's clock skew into the gauge's dict, as the reference writes it (a sender
    /// past `max_skew` gets no series).
    fn put_skew(&self, py: Python<'_>, skew: Option<(Py<PyAny>, f64)>) -> PyResult<()> {
        let Some((key, value)) = skew else {
            return Ok(());
        };
        let dict = self.skew.bind(py);
        if dict.len() < self.max_skew || dict.contains(&key)? {
            dict.set_item(key, value)?;
        }
        Ok(())
    }

    fn answer<'py>(
        &self,
        py: Python<'py>,
        events: Bound<'py, PyList>,
        mut counts: Counts,
    ) -> PyResult<Bound<'py, PyTuple>> {
        self.put_skew(py, counts.skew.take())?;
        let dropped = PyDict::new(py);
        for (k, v) in counts.dropped {
            dropped.set_item(k, v)?;
        }
        let parse = PyDict::new(py);
        for (k, v) in counts.parse_errors {
            parse.set_item(k, v)?;
        }
        let decoded = PyDict::new(py);
        for (k, v) in counts.decoded {
            decoded.set_item(k, v)?;
        }
        let bugs = PyList::empty(py);
        for (ip, err) in counts.bugs {
            let exc = match err {
                Some(e) => e.into_value(py).into_any(),
                None => py.None(),
            };
            bugs.append((ip, exc))?;
        }
        PyTuple::new(
            py,
            [
                events.into_any(),
                dropped.into_any(),
                counts.truncated.into_pyobject(py)?.into_any(),
                parse.into_any(),
                decoded.into_any(),
                counts.denied.into_pyobject(py)?.into_any(),
                bugs.into_any(),
            ],
        )
    }

    /// The datagrams of one receive time (`datagrams`, `receiver`): the sender's profile,
    /// the policy and the decode of each. Returns the answer and the bytes of the events'
    /// stored lines.
    #[allow(clippy::type_complexity)]
    fn decode_datagrams<'py>(
        &self,
        py: Python<'py>,
        items: impl Iterator<Item = PyResult<(Bound<'py, PyBytes>, Bound<'py, PyString>)>>,
        policy: (
            f64,
            usize,
            usize,
            f64,
            f64,
            &Bound<'py, PyDict>,
            &Bound<'py, PyAny>,
        ),
        listener: Option<&Bound<'py, PyString>>,
    ) -> PyResult<(Bound<'py, PyTuple>, usize)> {
        let (now, max_bytes, raw_max, rate, burst, profiles, profile_of) = policy;
        let policy = Policy {
            now,
            raw_max,
            rate,
            burst,
            profiles,
            profile_of,
            datagram: true,
            max_bytes,
            listener,
            line_bytes: Default::default(),
            pre: std::cell::RefCell::new(Prewritten::for_line()),
            times: Default::default(),
        };
        let events = PyList::empty(py);
        let mut counts = Counts::default();
        let mut last: Option<Profile<'py>> = None;
        for item in items {
            let (data, ip) = item?;
            self.profile(&policy, &ip, &mut last)?;
            let prof = last.as_ref().expect("profile just read");
            if let Some(event) = self.one(py, &data, prof, &policy, &mut counts)? {
                events.append(event)?;
            }
        }
        Ok((self.answer(py, events, counts)?, policy.line_bytes.get()))
    }
}

#[pymethods]
impl SyslogBatch {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        header: Py<HeaderDecoder>,
        fallback: Py<PyAny>,
        vendors: Py<PyAny>,
        body_time: Py<PyAny>,
        event_class: Py<PyAny>,
        encode_line: Py<PyAny>,
        skew: Py<PyDict>,
        max_skew: usize,
        transport: &str,
    ) -> Self {
        // Only the registry class itself is walked here: a subclass may select otherwise.
        let dispatch = vendors
            .bind(py)
            .get_type()
            .name()
            .is_ok_and(|n| n == "VendorRegistry")
            .then(|| Dispatch::read(vendors.bind(py)).ok())
            .flatten();
        SyslogBatch {
            header,
            fallback,
            vendors,
            dispatch,
            body_time,
            body_times: Mutex::default(),
            event_class,
            encode_line,
            skew,
            max_skew,
            transport: PyString::intern(py, transport).unbind(),
            transport_json: jsonstr::quoted(transport),
            module: PyString::intern(py, "syslog").unbind(),
            panic_next: AtomicBool::new(false),
        }
    }

    /// Make the next message's decode panic (tests: the panic is caught and counted, that
    /// message costs a `decode_error`, the rest of the batch goes on).
    fn inject_panic(&self) {
        self.panic_next.store(true, Ordering::Relaxed);
    }

    /// Datagrams: `items` is the backlog's `(bytes, (ip, port))` pairs. Returns `(events,
    /// dropped by reason, truncated, parse errors by reason, decoded by decoder, a denied
    /// sender or None, [(sender, exception or None)] of decoder failures)`.
    #[allow(clippy::too_many_arguments)]
    fn datagrams<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyList>,
        now: f64,
        max_bytes: usize,
        raw_max: usize,
        rate: f64,
        burst: f64,
        profiles: &Bound<'py, PyDict>,
        profile_of: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let items = items.iter().map(|item| {
            let item = item.cast_into::<PyTuple>()?;
            let data = item.get_item(0)?.cast_into::<PyBytes>()?;
            let addr = item.get_item(1)?;
            let ip = match addr.cast::<PyTuple>() {
                Ok(t) => t.get_item(0)?,
                Err(_) => addr,
            }
            .cast_into::<PyString>()?;
            Ok((data, ip))
        });
        let policy = (now, max_bytes, raw_max, rate, burst, profiles, profile_of);
        Ok(self.decode_datagrams(py, items, policy, None)?.0)
    }

    /// `datagrams` over the next `count` datagrams of a native `UdpReceiver`'s backlog, taken
    /// here (no Python object per datagram but its payload and, per sender, its ip), each
    /// event made with its `listener`. Returns `(the answer of datagrams, datagrams taken,
    /// bytes of the events' stored lines)`.
    #[allow(clippy::too_many_arguments)]
    fn receiver<'py>(
        &self,
        py: Python<'py>,
        receiver: &Bound<'py, UdpReceiver>,
        count: usize,
        now: f64,
        max_bytes: usize,
        raw_max: usize,
        rate: f64,
        burst: f64,
        profiles: &Bound<'py, PyDict>,
        profile_of: &Bound<'py, PyAny>,
        listener: Bound<'py, PyString>,
    ) -> PyResult<(Bound<'py, PyTuple>, usize, usize)> {
        let items = receiver.get().take_py(py, count);
        let taken = items.len();
        let items = items.into_iter().map(|(data, ip, _port)| Ok((data, ip)));
        let policy = (now, max_bytes, raw_max, rate, burst, profiles, profile_of);
        let (answer, line_bytes) = self.decode_datagrams(py, items, policy, Some(&listener))?;
        Ok((answer, taken, line_bytes))
    }

    /// The frames of one stream read, all from `prof` (the connection's sender, allowed at
    /// accept): rate limit and decode only, as `SyslogIntake.admit`. Same answer as
    /// `datagrams`.
    #[allow(clippy::too_many_arguments)]
    fn frames<'py>(
        &self,
        py: Python<'py>,
        frames: &Bound<'py, PyList>,
        ip: Bound<'py, PyString>,
        prof: Bound<'py, PyAny>,
        now: f64,
        raw_max: usize,
        rate: f64,
        burst: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let frames = frames
            .iter()
            .map(|f| f.cast_into::<PyBytes>().map_err(PyErr::from))
            .collect::<PyResult<Vec<_>>>()?;
        let stream = (ip, prof, now, raw_max, rate, burst);
        Ok(self.stream_frames(py, &frames, stream, None)?.0)
    }

    /// `frames` over the next `want` frames of a stream's framer, taken here (one call per
    /// chunk of a read: no Python step per frame), each event made with its `listener`.
    /// Returns `(the answer of frames, frames taken, bytes of the events' stored lines)`.
    #[allow(clippy::too_many_arguments)]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        framer: &Bound<'py, PyFramer>,
        want: usize,
        ip: Bound<'py, PyString>,
        prof: Bound<'py, PyAny>,
        now: f64,
        raw_max: usize,
        rate: f64,
        burst: f64,
        listener: Bound<'py, PyString>,
    ) -> PyResult<(Bound<'py, PyTuple>, usize, usize)> {
        // The frames are taken before any decoder runs: no borrow of the framer is held
        // while Python code does.
        let frames = framer.borrow_mut().take(py, want)?;
        let stream = (ip, prof, now, raw_max, rate, burst);
        let (answer, line_bytes) = self.stream_frames(py, &frames, stream, Some(&listener))?;
        Ok((answer, frames.len(), line_bytes))
    }
}

/// What a stream's frames are decoded with: (sender ip, its profile, receive time, raw_max,
/// rate, burst).
type StreamArgs<'py> = (
    Bound<'py, PyString>,
    Bound<'py, PyAny>,
    f64,
    usize,
    f64,
    f64,
);
