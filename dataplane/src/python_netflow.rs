//! `NetflowBatchDecoder`: the stateful NetFlow decoder ([`crate::netflow_state`]) for Python.
//!
//! One call decodes a `recvmmsg` batch of datagrams (payload, exporter address and port,
//! receive time) and returns each datagram's flows as the reference's `(ts, fields)` tuples
//! (`decode_batch`) or kept native as the listener's `Event`s made on demand
//! (`decode_flows`, [`crate::python_flowevents`]), with their rollup columns, plus the
//! counter increments of the whole batch. Templates are planned by a Python callable
//! (`template.native_plan`: the IANA names and kinds stay in one place), once per install.
//! A panic is caught per datagram, counted (`panics()`), and that datagram comes back as
//! `None` (the source counts it as a decode error); the rest of the batch goes on.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::netflow::{text, Conv, Raw, Split};
use crate::netflow_state::{
    Decoder, DomainKey, Field, FlowSink, Limits, Planner, RecordCtx, TemplatePlan, TimeKind,
};
use crate::python::{protocol_names, FlowKeys, PANICS};
use crate::python_flowevents::{Chunk, FlowEvents, FlowRecord, FlowValue, Maker, Shape};
use crate::recent::RecentCache;
use crate::rollup::{Flow, Text};

/// Asks Python for a template's plan: (converter code per field, direct (name, index),
/// eight slot indexes (-1: absent), time kind).
struct PyPlanner {
    plan: Py<PyAny>,
}

type PlanTuple = (Vec<u8>, Vec<(String, isize)>, Vec<isize>, String);

impl Planner for PyPlanner {
    fn plan(&mut self, fields: &[Field], scope: u16) -> Option<Arc<TemplatePlan>> {
        Python::attach(|py| {
            let got = self.plan.bind(py).call1((fields.to_vec(), scope)).ok()?;
            let (codes, direct, slots, kind): PlanTuple = got.extract().ok()?;
            let convs: Option<Vec<Conv>> = codes.into_iter().map(Conv::from_code).collect();
            let direct: Option<Vec<(String, usize)>> = direct
                .into_iter()
                .map(|(n, i)| usize::try_from(i).ok().map(|i| (n, i)))
                .collect();
            if slots.len() != 8 {
                return None;
            }
            let mut s = [None; 8];
            for (o, &i) in s.iter_mut().zip(&slots) {
                *o = usize::try_from(i).ok();
            }
            TemplatePlan::new(fields, &convs?, TimeKind::from_name(&kind), direct?, s).map(Arc::new)
        })
    }
}

struct Keys {
    flow: FlowKeys,
    event_kind: Py<PyString>,
    event: Py<PyString>,
    observer: Py<PyString>,
    address: Py<PyString>,
    version: Py<PyString>,
    source_id: Py<PyString>,
    domain_id: Py<PyString>,
    port: Py<PyString>,
    /// `["network"]` and `["connection"]`, one of each for every flow kept as a record (only
    /// native readers see a record's values, and none keeps or changes a list; a flow's
    /// event gets copies).
    category_list: Py<PyList>,
    type_list: Py<PyList>,
}

/// Builds the reference's flow dicts, one list per datagram.
struct DictSink<'py, 'k> {
    py: Python<'py>,
    keys: &'k Keys,
    iana: &'k [Py<PyString>],
    transport: &'k [Option<Py<PyString>>],
    /// Text of recent IPv4 addresses: the same ones recur in every batch (as the
    /// reference's `_ip4_cache`), so each is formatted and made a Python string once while
    /// it stays in the cache ([`RecentCache`]: a sender can push entries out).
    ip4: &'k mut Ip4Cache,
    /// Rollup key text of recent integer values (ports), shared by the flows that have them.
    ints: &'k mut RecentCache<Text>,
    /// Rollup key text of the transport (its name, else the protocol number) per number.
    transport_key: &'k [Text],
    /// `Some` with `flows`: what makes the event of a flow kept whole (`FlowsOut::premade`).
    event: Option<&'k Maker>,
    /// When the datagram being decoded was received: each flow's `created` (the listener's
    /// `Event(ts, now, ...)`), also for held data it releases (whose record context keeps the
    /// time the data itself arrived, for its timestamps).
    received: f64,
    out: Vec<Bound<'py, PyAny>>,
    /// `Some`: each flow kept as a native record (`decode_flows`), else in `out` as the
    /// reference's `(ts, fields)`.
    flows: Option<FlowsOut>,
    /// The same flows as the rollup reads them (`FlowRollup.add` of their events).
    cols: Vec<Flow>,
    error: Option<PyErr>,
}

/// A datagram's flows as `FlowEvents` records: the shapes, the records, and the events made
/// at once (a record whose key is also an exporter key: built as the reference builds it).
#[derive(Default)]
struct FlowsOut {
    shapes: Vec<Shape>,
    records: Vec<FlowRecord>,
    /// The records' own values, one after another (`Chunk::values`).
    values: Vec<FlowValue>,
    premade: Vec<(usize, Py<PyAny>)>,
}

/// log2 of the slots of the recent-address cache (32 bytes a slot, 2 MiB, allocated with
/// the first flow): the most the hash map it replaced held.
const IP4_CACHE_BITS: u32 = 16;
/// log2 of the slots of the recent-integer cache (24 bytes a slot): it holds the
/// destination ports' texts, a few thousand at most on a busy edge.
const INT_TEXT_BITS: u32 = 14;

/// An IPv4 address's Python text and its rollup key text.
type Ip4Cache = RecentCache<(Py<PyString>, Text)>;

/// Which optional keys a record has, past the plan's fixed ones (a bit each: protocol
/// number, transport name, sampling rate, start, end): with the plan, it fixes the record's
/// key sequence, so records of one shape share a prototype dict.
const SHAPES: usize = 32;

/// A rollup key part from a value, as `FlowRollup.add` reads it from the dict (`str()`):
/// `known` when the value's text is cached already (an IPv4 address), an integer's from the
/// cache of recent ones.
fn key_text(
    py: Python<'_>,
    v: &Raw<'_>,
    made: &FlowValue,
    known: Option<&Text>,
    ints: &mut RecentCache<Text>,
) -> Text {
    if let Some(t) = known {
        return t.clone();
    }
    match *v {
        Raw::Int(n) => {
            if let Some(t) = ints.get(n) {
                return t.clone();
            }
            let t: Text = n.to_string().into();
            ints.put(n, t.clone());
            t
        }
        Raw::Bytes(..) => match made {
            FlowValue::Obj(o) => o
                .bind(py)
                .cast::<PyString>()
                .ok()
                .and_then(|s| s.to_str().ok().map(Text::from))
                .unwrap_or_else(|| Text::from("")),
            FlowValue::Int(_) => Text::from(""),
        },
    }
}

/// An integer as a record holds it: its number, or the object past 64 bits.
fn int_value<T: Copy + TryInto<i64> + for<'py> IntoPyObject<'py>>(
    py: Python<'_>,
    n: T,
) -> PyResult<FlowValue> {
    match n.try_into() {
        Ok(i) => Ok(FlowValue::Int(i)),
        Err(_) => Ok(FlowValue::Obj(n.into_bound_py_any(py)?.unbind())),
    }
}

/// A value as the reference makes it (an integer kept as its number); with an IPv4
/// address, also its cached key text.
fn value<'py>(
    py: Python<'py>,
    v: &Raw<'_>,
    ip4: &mut Ip4Cache,
) -> PyResult<(FlowValue, Option<Text>)> {
    match *v {
        Raw::Int(n) => Ok((int_value(py, n)?, None)),
        Raw::Bytes(b, Conv::Ip4) if b.len() == 4 => {
            let k = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            if let Some((s, t)) = ip4.get(k) {
                return Ok((FlowValue::Obj(s.clone_ref(py).into_any()), Some(t.clone())));
            }
            let t = text(b, Conv::Ip4);
            let s = PyString::new(py, &t);
            let t: Text = t.into();
            ip4.put(k, (s.clone().unbind(), t.clone()));
            Ok((FlowValue::Obj(s.into_any().unbind()), Some(t)))
        }
        Raw::Bytes(b, c) => Ok((
            FlowValue::Obj(PyString::new(py, &text(b, c)).into_any().unbind()),
            None,
        )),
    }
}

type Pairs<'py> = Vec<(Bound<'py, PyString>, Bound<'py, PyAny>)>;

/// A record's own pairs, its keys lent by the plan and the key table (no reference counted
/// per key and flow: most flows never make a dict).
type OwnPairs<'a, 'py> = Vec<(&'a Bound<'py, PyString>, FlowValue)>;

impl<'py, 'k> DictSink<'py, 'k> {
    /// The exporter's keys every flow of the datagram ends with, in the reference's order.
    fn common(&self, rc: &RecordCtx<'_>) -> PyResult<Pairs<'py>> {
        let py = self.py;
        let k = self.keys;
        let c = rc.ctx;
        let mut d: Pairs<'py> = Vec::with_capacity(6);
        if !c.has_common {
            return Ok(d);
        }
        let ex = PyString::new(py, &c.exporter).into_any();
        d.push((
            k.event_kind.bind(py).clone(),
            k.event.bind(py).clone().into_any(),
        ));
        d.push((k.observer.bind(py).clone(), ex.clone()));
        d.push((k.address.bind(py).clone(), ex));
        d.push((k.version.bind(py).clone(), c.version.into_bound_py_any(py)?));
        let id = if c.version == 10 {
            &k.domain_id
        } else {
            &k.source_id
        };
        d.push((id.bind(py).clone(), c.source_id.into_bound_py_any(py)?));
        if c.port != 0 {
            d.push((k.port.bind(py).clone(), c.port.into_bound_py_any(py)?));
        }
        Ok(d)
    }

    /// A record's dict: a copy of the prototype of its shape (its keys in order, the
    /// exporter's values already in), then its own values set in the reference's order, so
    /// keys keep the positions and values the reference's inserts give them, without the
    /// dict growing three times per flow. `proto` is `None` when a record key is also an
    /// exporter key (the reference's `update` then overwrites it): built as the reference
    /// builds it.
    fn dict(
        &self,
        pairs: &OwnPairs<'_, 'py>,
        common: &Pairs<'py>,
        proto: Option<&mut Option<Bound<'py, PyDict>>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        let Some(slot) = proto else {
            let d = PyDict::new(py);
            for (k, v) in pairs {
                d.set_item(k, v.object(py))?;
            }
            for (k, v) in common {
                d.set_item(k, v)?;
            }
            return Ok(d);
        };
        let base = match slot {
            Some(p) => p,
            None => {
                let p = PyDict::new(py);
                for (k, _) in pairs {
                    p.set_item(k, py.None())?;
                }
                for (k, v) in common {
                    p.set_item(k, v)?;
                }
                slot.insert(p)
            }
        };
        let d = base.copy()?;
        for (k, v) in pairs {
            d.set_item(k, v.object(py))?;
        }
        Ok(d)
    }

    fn build(
        &mut self,
        plan: &TemplatePlan,
        split: &Split<'_>,
        rc: &RecordCtx<'_>,
    ) -> PyResult<()> {
        let py = self.py;
        let keys = self.keys;
        let common = self.common(rc)?;
        let direct: Vec<(Bound<'_, PyString>, usize)> = plan
            .direct
            .iter()
            .map(|(n, i)| (PyString::intern(py, n), *i))
            .collect();
        // A direct name that is also an exporter key: no prototype (see `dict`).
        let shared = common.iter().any(|(k, _)| {
            let k = k.to_str().unwrap_or_default();
            plan.direct.iter().any(|(n, _)| n == k)
        });
        let mut protos: [Option<Bound<'py, PyDict>>; SHAPES] = Default::default();
        let [rate_i, sampler_i, bytes_i, packets_i, proto_i, start_i, end_i, init_i] = plan.slots;
        let int = |v: &Raw<'_>| -> Option<u64> {
            match v {
                Raw::Int(n) => Some(*n),
                Raw::Bytes(..) => None,
            }
        };
        let times = |v: u64, r: u128| -> PyResult<FlowValue> {
            match u128::from(v).checked_mul(r) {
                // pyo3 makes any u128 through its slow 128-bit path (~340 instructions);
                // counters times a sampling rate almost always fit 64 bits
                Some(x) => int_value(py, x),
                None => Ok(FlowValue::Obj(v.into_bound_py_any(py)?.mul(r)?.unbind())),
            }
        };
        let timed = start_i.is_some() || end_i.is_some();
        let width = plan.record.width();
        let now = rc.ctx.now;
        let created = self.received.into_bound_py_any(py)?;
        let named = |name: &str| {
            plan.direct
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|e| e.1)
        };
        let (src_i, dst_i, port_i) = (
            named("source.ip"),
            named("destination.ip"),
            named("destination.port"),
        );
        let key = |k: &'k Py<PyString>| k.bind(py);
        let mut pairs: OwnPairs<'_, 'py> = Vec::with_capacity(direct.len() + 9);
        if let Some(out) = self.flows.as_mut() {
            // the most values the records take (grown one by one, it reallocated per datagram)
            out.values.reserve(split.records * pairs.capacity());
        }
        // decode_flows: each shape's index among the datagram's shapes, once made
        let mut shape_at: [Option<usize>; SHAPES] = [None; SHAPES];
        for rec in split.values.chunks_exact(width).take(split.records) {
            let r: u128 = if let Some(i) = rate_i {
                match int(&rec[i]) {
                    Some(0) | None => rc.rate,
                    Some(v) => u128::from(v),
                }
            } else if let Some(i) = sampler_i {
                match int(&rec[i]) {
                    Some(n) => rc
                        .samplers
                        .iter()
                        .find(|e| e.0 == i128::from(n))
                        .map_or(rc.rate, |e| e.1),
                    None => rc.rate,
                }
            } else {
                rc.rate
            };
            pairs.clear();
            let mut shape = 0usize;
            // A total past u128 is a Python int the rollup reads as 0, as `counter()` does.
            let mut flow = Flow {
                created: self.received,
                src: None,
                dst: None,
                port: None,
                transport: None,
                bytes: 0,
                packets: 0,
            };
            for (name, i) in &direct {
                let (v, known) = value(py, &rec[*i], self.ip4)?;
                let known = known.as_ref();
                if Some(*i) == src_i {
                    flow.src = Some(key_text(py, &rec[*i], &v, known, self.ints));
                }
                if Some(*i) == dst_i {
                    flow.dst = Some(key_text(py, &rec[*i], &v, known, self.ints));
                }
                if Some(*i) == port_i {
                    flow.port = Some(key_text(py, &rec[*i], &v, known, self.ints));
                }
                pairs.push((name, v));
            }
            if let Some(i) = bytes_i {
                let v = int(&rec[i]).unwrap_or(0);
                flow.bytes = u128::from(v).checked_mul(r).unwrap_or(0);
                pairs.push((key(&keys.flow.bytes), times(v, r)?));
            }
            if let Some(i) = packets_i {
                let v = int(&rec[i]).unwrap_or(0);
                flow.packets = u128::from(v).checked_mul(r).unwrap_or(0);
                pairs.push((key(&keys.flow.packets), times(v, r)?));
            }
            let (network, connection) = match (&self.flows, shared) {
                (Some(_), false) => (
                    keys.category_list.clone_ref(py),
                    keys.type_list.clone_ref(py),
                ),
                _ => (
                    PyList::new(py, [keys.flow.network.bind(py)])?.unbind(),
                    PyList::new(py, [keys.flow.connection.bind(py)])?.unbind(),
                ),
            };
            pairs.push((key(&keys.flow.category), FlowValue::Obj(network.into_any())));
            pairs.push((key(&keys.flow.kind), FlowValue::Obj(connection.into_any())));
            if let Some(i) = proto_i {
                let proto = int(&rec[i]).unwrap_or(u64::MAX);
                if proto < 256 {
                    let proto = proto as usize;
                    shape |= 1;
                    pairs.push((
                        key(&keys.flow.iana),
                        FlowValue::Obj(self.iana[proto].clone_ref(py).into_any()),
                    ));
                    if let Some(t) = &self.transport[proto] {
                        shape |= 2;
                        pairs.push((
                            key(&keys.flow.transport),
                            FlowValue::Obj(t.clone_ref(py).into_any()),
                        ));
                    }
                    flow.transport = Some(self.transport_key[proto].clone());
                }
            }
            if r != 1 {
                shape |= 4;
                pairs.push((key(&keys.flow.rate), int_value(py, r)?));
            }
            let mut ts = now;
            // the event time's float, when it is event.end's (one object for both)
            let mut ts_obj: Option<Bound<'py, PyAny>> = None;
            if timed {
                let b = match init_i {
                    Some(i) => Some(int(&rec[i]).unwrap_or(0) as f64 * 0.001),
                    None => rc.base,
                };
                if let Some(b) = b {
                    if let Some(i) = start_i {
                        let v = int(&rec[i]).unwrap_or(0) as f64;
                        shape |= 8;
                        pairs.push((
                            key(&keys.flow.start),
                            FlowValue::Obj((b + v * rc.scale).into_bound_py_any(py)?.unbind()),
                        ));
                    }
                    if let Some(i) = end_i {
                        let v = int(&rec[i]).unwrap_or(0) as f64;
                        ts = b + v * rc.scale;
                        shape |= 16;
                        let end = ts.into_bound_py_any(py)?;
                        ts_obj = Some(end.clone());
                        pairs.push((key(&keys.flow.end), FlowValue::Obj(end.unbind())));
                    }
                }
            }
            let ts = match ts_obj {
                Some(t) => t,
                None => ts.into_bound_py_any(py)?,
            };
            if let (Some(out), false) = (self.flows.as_mut(), shared) {
                let at = match shape_at[shape] {
                    Some(at) => at,
                    None => {
                        out.shapes.push(Shape::new(
                            pairs.iter().map(|(k, _)| (*k).clone().unbind()).collect(),
                            common
                                .iter()
                                .map(|(k, v)| (k.clone().unbind(), v.clone().unbind()))
                                .collect(),
                        ));
                        *shape_at[shape].insert(out.shapes.len() - 1)
                    }
                };
                out.records.push(FlowRecord {
                    ts: ts.unbind(),
                    shape: at,
                    start: out.values.len(),
                });
                out.values.extend(pairs.drain(..).map(|(_, v)| v));
                self.cols.push(flow);
                continue;
            }
            let slot = (!shared).then(|| &mut protos[shape]);
            let d = self.dict(&pairs, &common, slot)?;
            self.cols.push(flow);
            let item = match self.event {
                Some(m) => m.make(&ts, &created, d)?,
                None => PyTuple::new(py, [ts, d.into_any()])?.into_any(),
            };
            if let Some(out) = self.flows.as_mut() {
                // a flow's record stands in for it, its event made already
                out.premade.push((out.records.len(), item.unbind()));
                out.records.push(FlowRecord {
                    ts: py.None(),
                    shape: usize::MAX,
                    start: 0,
                });
                continue;
            }
            self.out.push(item);
        }
        Ok(())
    }
}

impl FlowSink for DictSink<'_, '_> {
    fn flows(&mut self, plan: &TemplatePlan, split: &Split<'_>, rc: &RecordCtx<'_>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.build(plan, split, rc) {
            self.error = Some(e);
        }
    }
}

/// The NetFlow listener's decoder and template state, native (see the module docs).
#[pyclass(module = "appliance._dataplane")]
pub struct NetflowBatchDecoder {
    inner: Decoder<PyPlanner>,
    exporters: HashMap<String, Arc<str>>,
    ip4: Ip4Cache,
    ints: RecentCache<Text>,
    transport_key: Vec<Text>,
    /// Tests only: the next datagram panics inside the decoder.
    panic_next: bool,
    keys: Keys,
    iana: Vec<Py<PyString>>,
    transport: Vec<Option<Py<PyString>>>,
}

type CountRows = Vec<(&'static str, String, u128)>;

impl NetflowBatchDecoder {
    fn exporter(&mut self, s: &str) -> Arc<str> {
        if let Some(e) = self.exporters.get(s) {
            return e.clone();
        }
        if self.exporters.len() >= 4 * self.inner.limits.max_exporters + 64 {
            self.exporters.clear();
        }
        let e: Arc<str> = Arc::from(s);
        self.exporters.insert(s.to_owned(), e.clone());
        e
    }

    fn key(&mut self, exporter: &str, version: u16, domain: u32) -> DomainKey {
        (self.exporter(exporter), version, domain)
    }

    /// Decode one datagram: its flows as the reference's `(ts, fields)` tuples, or kept as
    /// records (`FlowsOut`) when `kept` makes their events; and their rollup columns. `None`
    /// when it panicked or Python failed.
    #[allow(clippy::type_complexity)]
    fn sink<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        exporter: &str,
        port: u16,
        now: f64,
        kept: Option<&Maker>,
    ) -> Option<(Vec<Bound<'py, PyAny>>, Vec<Flow>, Option<FlowsOut>)> {
        let ex = self.exporter(exporter);
        let mut sink = DictSink {
            py,
            keys: &self.keys,
            iana: &self.iana,
            transport: &self.transport,
            ip4: &mut self.ip4,
            ints: &mut self.ints,
            transport_key: &self.transport_key,
            event: kept,
            received: now,
            out: Vec::new(),
            flows: kept.map(|_| FlowsOut::default()),
            cols: Vec::new(),
            error: None,
        };
        let inner = &mut self.inner;
        let inject = std::mem::take(&mut self.panic_next);
        let ok = catch_unwind(AssertUnwindSafe(|| {
            if inject {
                panic!("injected netflow decoder panic");
            }
            inner.decode(data, &ex, port, now, &mut sink)
        }))
        .is_ok();
        if !ok {
            PANICS.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if sink.error.is_some() {
            return None;
        }
        Some((sink.out, sink.cols, sink.flows))
    }

    fn counts(&mut self) -> CountRows {
        self.inner
            .take_counts()
            .into_iter()
            .map(|((f, r), n)| (f, r.to_string(), n))
            .collect()
    }
}

#[pymethods]
impl NetflowBatchDecoder {
    /// `limits`: the nine `DecoderLimits` bounds and `compiles_per_second`, in field order;
    /// `large_ies`: IEs allowed past `max_field_length`; `plan(fields, scope)`: see
    /// [`PyPlanner`]; `transport`: the transport name per protocol number.
    #[new]
    fn new(
        py: Python<'_>,
        limits: (usize, usize, usize, usize, usize, u16, f64, usize, f64, f64),
        large_ies: Vec<u16>,
        plan: Py<PyAny>,
        transport: Vec<Option<String>>,
    ) -> PyResult<Self> {
        let limits = Limits {
            max_exporters: limits.0,
            max_domains_per_exporter: limits.1,
            max_templates_per_exporter: limits.2,
            max_templates: limits.3,
            max_fields_per_template: limits.4,
            max_field_length: limits.5,
            template_lifetime: limits.6,
            pending_max_sets: limits.7,
            pending_max_age: limits.8,
            compiles_per_second: limits.9,
        };
        let large: HashSet<u16> = large_ies.into_iter().collect();
        let inner = Decoder::new(limits, large, PyPlanner { plan })
            .ok_or_else(|| PyValueError::new_err("the v5 template could not be planned"))?;
        let k = |s: &str| PyString::intern(py, s).unbind();
        let (iana, transport_names) = protocol_names(py, &transport);
        // What `FlowRollup.add` reads: network.transport, else network.iana_number.
        let transport_key: Vec<Text> = (0..256usize)
            .map(|i| match transport.get(i).cloned().flatten() {
                Some(t) if !t.is_empty() => Text::from(t),
                _ => Text::from(i.to_string()),
            })
            .collect();
        Ok(NetflowBatchDecoder {
            inner,
            exporters: HashMap::new(),
            ip4: RecentCache::new(IP4_CACHE_BITS),
            ints: RecentCache::new(INT_TEXT_BITS),
            transport_key,
            panic_next: false,
            keys: Keys {
                flow: FlowKeys::new(py),
                event_kind: k("event.kind"),
                event: k("event"),
                observer: k("observer.ip"),
                address: k("netflow.exporter.address"),
                version: k("netflow.exporter.version"),
                source_id: k("netflow.exporter.source_id"),
                domain_id: k("netflow.exporter.observation_domain_id"),
                port: k("netflow.exporter.port"),
                category_list: PyList::new(py, [PyString::intern(py, "network")])?.unbind(),
                type_list: PyList::new(py, [PyString::intern(py, "connection")])?.unbind(),
            },
            iana,
            transport: transport_names,
        })
    }

    /// One datagram: (its records or `None`, the counter increments).
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        exporter: &str,
        now: f64,
        port: u16,
    ) -> (Option<Bound<'py, PyList>>, CountRows) {
        let got = self
            .sink(py, data, exporter, port, now, None)
            .and_then(|(records, _, _)| PyList::new(py, records).ok());
        (got, self.counts())
    }

    /// A batch of (payload, exporter address, exporter port, received at): each datagram's
    /// records and their rollup columns (or `None`), and the counter increments of the
    /// whole batch.
    #[allow(clippy::type_complexity)]
    fn decode_batch<'py>(
        &mut self,
        py: Python<'py>,
        batch: Vec<(Bound<'py, PyBytes>, Bound<'py, PyString>, u16, f64)>,
    ) -> PyResult<(Vec<Option<(Bound<'py, PyList>, FlowColumns)>>, CountRows)> {
        let mut out = Vec::with_capacity(batch.len());
        for (data, exporter, port, now) in &batch {
            let got = self.sink(py, data.as_bytes(), exporter.to_str()?, *port, *now, None);
            let got = match got {
                Some((records, flows, _)) => {
                    Some((PyList::new(py, records)?, FlowColumns::new(flows)))
                }
                None => None,
            };
            out.push(got);
        }
        Ok((out, self.counts()))
    }

    /// [`Self::decode_batch`] with each datagram's flows kept as native records
    /// (`FlowEvents`): a flow's event, `event_class(ts, received at, "netflow", fields, b"",
    /// None, None, listener)`, is made when Python asks for it, and the native stages read
    /// the records in place.
    #[allow(clippy::type_complexity)]
    fn decode_flows<'py>(
        &mut self,
        py: Python<'py>,
        batch: Vec<(Bound<'py, PyBytes>, Bound<'py, PyString>, u16, f64)>,
        event_class: Bound<'py, PyAny>,
        listener: Bound<'py, PyAny>,
    ) -> PyResult<(Vec<Option<(FlowEvents, FlowColumns)>>, CountRows)> {
        let maker = Arc::new(Maker::new(&event_class, &listener));
        let mut out = Vec::with_capacity(batch.len());
        for (data, exporter, port, now) in &batch {
            let got = self.sink(
                py,
                data.as_bytes(),
                exporter.to_str()?,
                *port,
                *now,
                Some(&*maker),
            );
            let got = match got {
                Some((_, cols, Some(f))) => Some((
                    FlowEvents::of_chunk(Chunk::new(
                        py,
                        maker.clone(),
                        now.into_bound_py_any(py)?.unbind(),
                        f.shapes,
                        f.records,
                        f.values,
                        f.premade,
                    )),
                    FlowColumns::new(cols),
                )),
                _ => None,
            };
            out.push(got);
        }
        Ok((out, self.counts()))
    }

    /// Templates past their lifetime, idle exporters, stale held data: (expired, counts).
    fn expire(&mut self, now: f64) -> (usize, CountRows) {
        let n = self.inner.expire(now);
        (n, self.counts())
    }

    #[getter]
    fn template_count(&self) -> usize {
        self.inner.template_count()
    }

    /// Exporters (observation domains) held.
    #[getter]
    fn domain_count(&self) -> usize {
        self.inner.domains.len()
    }

    /// Templates held per domain, least recently heard domain first.
    fn templates_per_domain(&self) -> Vec<usize> {
        self.inner
            .domains
            .iter()
            .map(|(_, d)| d.templates.len())
            .collect()
    }

    #[getter]
    fn dirty(&self) -> bool {
        self.inner.dirty
    }

    #[getter]
    fn refreshed(&self) -> bool {
        self.inner.refreshed
    }

    /// Counter increments not yet taken (after the import calls below).
    fn take_counts(&mut self) -> CountRows {
        self.counts()
    }

    /// The saved state as `TemplateState.export` writes it (and both flags cleared).
    fn export_state<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let domains = PyList::empty(py);
        for ((addr, version, dom), d) in self.inner.domains.iter() {
            if d.templates.is_empty() && d.default_rate == 1 && d.sampler_rates.is_empty() {
                continue;
            }
            let item = PyDict::new(py);
            item.set_item("exporter", &**addr)?;
            item.set_item("version", *version)?;
            item.set_item("domain", *dom)?;
            item.set_item("default_rate", d.default_rate)?;
            let rates = PyList::empty(py);
            for (k, v) in &d.sampler_rates {
                rates.append(PyList::new(
                    py,
                    [k.into_bound_py_any(py)?, v.into_bound_py_any(py)?],
                )?)?;
            }
            item.set_item("sampler_rates", rates)?;
            item.set_item("init_time", d.init_time)?;
            let templates = PyList::empty(py);
            for (_, t) in d.templates.iter() {
                let fields = PyList::empty(py);
                for &(ie, len, pen) in t.fields.iter() {
                    fields.append(PyList::new(py, [i64::from(ie), i64::from(len), pen])?)?;
                }
                templates.append(PyList::new(
                    py,
                    [
                        t.tid.into_bound_py_any(py)?,
                        t.scope.into_bound_py_any(py)?,
                        fields.into_any(),
                        t.last_seen.into_bound_py_any(py)?,
                    ],
                )?)?;
            }
            item.set_item("templates", templates)?;
            domains.append(item)?;
        }
        self.inner.saved();
        let out = PyDict::new(py);
        out.set_item("format", 1)?;
        out.set_item("domains", domains)?;
        Ok(out)
    }

    /// `import_state`, one step at a time (Python walks the saved JSON as the reference
    /// does): make or touch a domain.
    fn import_domain(&mut self, exporter: &str, version: u16, domain: u32, now: f64) {
        let key = self.key(exporter, version, domain);
        self.inner.import_domain(&key, now);
    }

    fn set_default_rate(&mut self, exporter: &str, version: u16, domain: u32, rate: u128) {
        let key = self.key(exporter, version, domain);
        if let Some(d) = self.inner.domain_mut(&key) {
            d.default_rate = rate;
        }
    }

    fn set_sampler_rate(&mut self, exporter: &str, version: u16, domain: u32, k: i128, v: u128) {
        let key = self.key(exporter, version, domain);
        if let Some(d) = self.inner.domain_mut(&key) {
            Decoder::<PyPlanner>::set_sampler(d, k, v);
        }
    }

    fn set_init_time(&mut self, exporter: &str, version: u16, domain: u32, t: Option<f64>) {
        let key = self.key(exporter, version, domain);
        if let Some(d) = self.inner.domain_mut(&key) {
            d.init_time = t;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn import_template(
        &mut self,
        exporter: &str,
        version: u16,
        domain: u32,
        tid: u16,
        fields: Vec<(u16, u16, i64)>,
        scope: u16,
        last_seen: f64,
    ) {
        let key = self.key(exporter, version, domain);
        self.inner
            .import_template(&key, tid, fields, scope, last_seen);
    }

    /// Tests only: make the next datagram's decode panic, to exercise the boundary.
    fn inject_panic(&mut self) {
        self.panic_next = true;
    }

    /// Mark the state saved (after an import, as the reference does).
    fn mark_saved(&mut self) {
        self.inner.saved();
    }
}

/// One datagram's flows as the rollup counts them (keys as text, sampled totals), made by
/// the decoder beside the flow dicts so the rollup reads no dict: `FlowRollup.add_columns`
/// takes them (once; they are moved out).
#[pyclass(frozen, module = "appliance._dataplane")]
pub struct FlowColumns {
    pub(crate) flows: std::sync::Mutex<Vec<Flow>>,
}

#[pymethods]
impl FlowColumns {
    fn __len__(&self) -> usize {
        self.flows.lock().map_or(0, |f| f.len())
    }
}

impl FlowColumns {
    fn new(flows: Vec<Flow>) -> Self {
        FlowColumns {
            flows: std::sync::Mutex::new(flows),
        }
    }

    /// The flows, moved out (a second take gets none).
    pub(crate) fn take(&self) -> Vec<Flow> {
        match self.flows.lock() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(e) => std::mem::take(&mut *e.into_inner()),
        }
    }
}
