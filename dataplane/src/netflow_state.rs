//! NetFlow v5/v9 and IPFIX decoding with its template state in Rust: the datagram walk of
//! `appliance.protocols.netflow.decoder` and the bounded state of `.state`, so a whole
//! `recvmmsg` batch is decoded in one call with no Python object per datagram or set.
//!
//! The Python modules stay the reference: every limit, eviction order, counter (family,
//! reason, amount) and the saved state are theirs, reproduced here step for step (the
//! differential test holds the two to the same records, counters and saved state). What a
//! template's fields mean (IANA names, value kinds, the ECS mapping) is still decided once
//! per template by Python, through [`Planner`]; the per-record work ([`crate::netflow`])
//! and everything per datagram happen here. Records go to a [`FlowSink`] as split values,
//! so the caller chooses what to build from them (flow dicts today, columns tomorrow).
//!
//! Every length is checked against the bytes left before it is used; a malformed part is
//! counted with the reference's reason and skipped. Nothing here panics on input (fuzzed by
//! `dataplane/fuzz/fuzz_targets/netflow_state.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::netflow::{split, Conv, RecordPlan, Split, VARLEN};

/// paddingOctets: skipped, never a field.
pub const PAD_IE: u16 = 210;
/// The enterprise number marking NetFlow v9 options scope fields (their own type space).
pub const SCOPE_PEN: i64 = -1;
pub const MAX_SAMPLERS: usize = 256;
/// The reference's cache of compiled emitters (`template._EMITTERS_MAX`), emulated so the
/// compile budget is counted the same (the native side compiles nothing).
const EMITTERS_MAX: usize = 512;

/// (IE, wire length, enterprise number; [`SCOPE_PEN`] for v9 scope fields).
pub type Field = (u16, u16, i64);
/// (exporter address, version, source id / observation domain).
pub type DomainKey = (Arc<str>, u16, u32);

/// NetFlow v5's fixed record as a template (`wire.V5_FIELDS`).
pub const V5_FIELDS: [(u16, u16); 20] = [
    (8, 4),
    (12, 4),
    (15, 4),
    (10, 2),
    (14, 2),
    (2, 4),
    (1, 4),
    (22, 4),
    (21, 4),
    (7, 2),
    (11, 2),
    (210, 1),
    (6, 1),
    (4, 1),
    (5, 1),
    (16, 2),
    (17, 2),
    (9, 1),
    (13, 1),
    (210, 2),
];

/// Bounds on the state (`DecoderLimits`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_exporters: usize,
    pub max_domains_per_exporter: usize,
    pub max_templates_per_exporter: usize,
    pub max_templates: usize,
    pub max_fields_per_template: usize,
    pub max_field_length: u16,
    pub template_lifetime: f64,
    pub pending_max_sets: usize,
    pub pending_max_age: f64,
    pub compiles_per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_exporters: 1000,
            max_domains_per_exporter: 64,
            max_templates_per_exporter: 256,
            max_templates: 10_000,
            max_fields_per_template: 256,
            max_field_length: 128,
            template_lifetime: 1800.0,
            pending_max_sets: 256,
            pending_max_age: 10.0,
            compiles_per_second: 50.0,
        }
    }
}

// ------------------------------------------------------------------------ ordered maps

/// A map in insertion order whose entries can move to the end: Python's `OrderedDict` with
/// `move_to_end`, and its plain `dict` when an entry is popped and inserted again.
#[derive(Debug)]
pub struct Ordered<K, V> {
    map: HashMap<K, (u64, V)>,
    order: BTreeMap<u64, K>,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> Default for Ordered<K, V> {
    fn default() -> Self {
        Ordered {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> Ordered<K, V> {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|e| &e.1)
    }
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|e| &mut e.1)
    }
    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }
    /// Insert at the end (a present key keeps its place, as `d[k] = v` does).
    pub fn insert(&mut self, k: K, v: V) {
        if let Some(e) = self.map.get_mut(&k) {
            e.1 = v;
            return;
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, k.clone());
        self.map.insert(k, (seq, v));
    }
    pub fn move_to_end(&mut self, k: &K) {
        if let Some(e) = self.map.get_mut(k) {
            self.order.remove(&e.0);
            e.0 = self.next;
            self.order.insert(self.next, k.clone());
            self.next += 1;
        }
    }
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (seq, v) = self.map.remove(k)?;
        self.order.remove(&seq);
        Some(v)
    }
    pub fn first_key(&self) -> Option<&K> {
        self.order.values().next()
    }
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let (_, k) = self.order.pop_first()?;
        let (_, v) = self.map.remove(&k)?;
        Some((k, v))
    }
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.order.values()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order
            .values()
            .filter_map(move |k| self.map.get(k).map(|e| (k, &e.1)))
    }
}

// ------------------------------------------------------------------------- the plan

/// Where a record's time comes from (`Template.time_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeKind {
    None,
    Uptime,
    Secs,
    Millis,
    DeltaMicros,
}

impl TimeKind {
    pub fn from_name(s: &str) -> TimeKind {
        match s {
            "uptime" => TimeKind::Uptime,
            "s" => TimeKind::Secs,
            "ms" => TimeKind::Millis,
            "delta_us" => TimeKind::DeltaMicros,
            _ => TimeKind::None,
        }
    }
}

/// What a template's fields mean, decided once per template by the [`Planner`].
#[derive(Debug)]
pub struct TemplatePlan {
    pub record: RecordPlan,
    /// IE (enterprise 0) → value index; a repeated IE: the last wins.
    pub value_of: HashMap<u16, usize>,
    pub time_kind: TimeKind,
    /// (field name, value index) in the reference's dict order (flow templates only).
    pub direct: Vec<(String, usize)>,
    /// rate, sampler, bytes, packets, protocol, start, end, init value indexes.
    pub slots: [Option<usize>; 8],
}

impl TemplatePlan {
    /// A plan from per-field converters (padding included, in wire order).
    pub fn new(
        fields: &[Field],
        convs: &[Conv],
        time_kind: TimeKind,
        direct: Vec<(String, usize)>,
        slots: [Option<usize>; 8],
    ) -> Option<TemplatePlan> {
        if convs.len() != fields.len() {
            return None;
        }
        let mut value_of = HashMap::new();
        let mut i = 0usize;
        let mut plan_fields = Vec::with_capacity(fields.len());
        for (&(ie, len, pen), &conv) in fields.iter().zip(convs) {
            let pad = ie == PAD_IE && pen == 0;
            let conv = if pad { Conv::Pad } else { conv };
            if conv == Conv::Pad && !pad {
                return None;
            }
            plan_fields.push(crate::netflow::FieldPlan { len, conv });
            if !pad {
                if pen == 0 {
                    value_of.insert(ie, i);
                }
                i += 1;
            }
        }
        let record = RecordPlan::new(plan_fields).ok()?;
        let width = record.width();
        if direct.iter().any(|&(_, j)| j >= width) || slots.iter().flatten().any(|&j| j >= width) {
            return None;
        }
        Some(TemplatePlan {
            record,
            value_of,
            time_kind,
            direct,
            slots,
        })
    }
}

/// Makes a template's plan (the reference's `Template` does it in Python).
pub trait Planner {
    fn plan(&mut self, fields: &[Field], scope: u16) -> Option<Arc<TemplatePlan>>;
}

/// Per-datagram values every record of it shares (`decoder._Context`).
#[derive(Debug)]
pub struct Context {
    /// The domain by generation (a held set's domain may have been replaced since).
    pub domain: u64,
    pub key: DomainKey,
    pub exporter: Arc<str>,
    pub port: u16,
    pub version: u16,
    pub source_id: u32,
    /// `false` for the import context, whose common fields are empty.
    pub has_common: bool,
    pub now: f64,
    pub export_time: f64,
    pub boot: Option<f64>,
    pub header_rate: u128,
}

pub type Ctx = Arc<Mutex<Context>>;

/// The context, whether or not a caught panic poisoned its lock (it holds plain values).
pub fn lock(c: &Ctx) -> MutexGuard<'_, Context> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one data set's records need besides the values.
pub struct RecordCtx<'a> {
    pub ctx: &'a Context,
    pub base: Option<f64>,
    pub scale: f64,
    pub rate: u128,
    pub samplers: &'a [(i128, u128)],
}

/// Where decoded flow records go, in the reference's order.
pub trait FlowSink {
    fn flows(&mut self, plan: &TemplatePlan, split: &Split<'_>, rc: &RecordCtx<'_>);
}

/// A sink that only counts (tests, fuzzing, the bench's decode stage).
#[derive(Default)]
pub struct CountSink {
    pub flows: usize,
}

impl FlowSink for CountSink {
    fn flows(&mut self, _plan: &TemplatePlan, split: &Split<'_>, _rc: &RecordCtx<'_>) {
        self.flows += split.records;
    }
}

// ------------------------------------------------------------------------- the state

#[derive(Debug)]
pub struct Template {
    pub tid: u16,
    pub fields: Arc<[Field]>,
    pub scope: u16,
    pub last_seen: f64,
    pub plan: Arc<TemplatePlan>,
    /// The reference's `emit` is set (compiled or generic).
    pub emit: bool,
}

#[derive(Debug)]
pub struct Domain {
    pub generation: u64,
    pub templates: Ordered<u16, Template>,
    pub next_seq: Option<u32>,
    pub default_rate: u128,
    /// In insertion order, as the reference's dict.
    pub sampler_rates: Vec<(i128, u128)>,
    pub init_time: Option<f64>,
    pub last_seen: f64,
}

struct Held {
    key: DomainKey,
    tid: u16,
    body: Vec<u8>,
    ctx: Ctx,
    at: f64,
}

/// Counter increments in the order the reference makes them: (family, reason, n).
pub type Counts = HashMap<(&'static str, Arc<str>), u128>;

pub struct Decoder<P: Planner> {
    pub limits: Limits,
    pub planner: P,
    pub large_ies: HashSet<u16>,
    pub domains: Ordered<DomainKey, Domain>,
    by_address: HashMap<Arc<str>, Ordered<DomainKey, ()>>,
    lru: Ordered<(DomainKey, u16), ()>,
    pending: Ordered<u64, Held>,
    pending_seq: u64,
    generation: u64,
    pub dirty: bool,
    pub refreshed: bool,
    loss_labels: HashSet<Arc<str>>,
    compiled: Ordered<Arc<[Field]>, ()>,
    compile_tokens: f64,
    compile_at: f64,
    v5: Template,
    /// Counter increments since the last [`Decoder::take_counts`].
    pub counts: Counts,
    reasons: HashMap<&'static str, Arc<str>>,
}

struct Malformed(&'static str);

fn u16_at(d: &[u8], p: usize) -> u16 {
    u16::from_be_bytes([d[p], d[p + 1]])
}

fn u32_at(d: &[u8], p: usize) -> u32 {
    u32::from_be_bytes([d[p], d[p + 1], d[p + 2], d[p + 3]])
}

enum Item {
    Spec(u16, Vec<Field>, u16),
    Note(&'static str, &'static str),
}

impl<P: Planner> Decoder<P> {
    pub fn new(limits: Limits, large_ies: HashSet<u16>, mut planner: P) -> Option<Self> {
        let v5_fields: Arc<[Field]> = V5_FIELDS.iter().map(|&(ie, l)| (ie, l, 0)).collect();
        let plan = planner.plan(&v5_fields, 0)?;
        let tokens = limits.compiles_per_second;
        Some(Decoder {
            limits,
            planner,
            large_ies,
            domains: Ordered::default(),
            by_address: HashMap::new(),
            lru: Ordered::default(),
            pending: Ordered::default(),
            pending_seq: 0,
            generation: 0,
            dirty: false,
            refreshed: false,
            loss_labels: HashSet::new(),
            compiled: Ordered::default(),
            compile_tokens: tokens,
            compile_at: 0.0,
            v5: Template {
                tid: 0,
                fields: v5_fields,
                scope: 0,
                last_seen: 0.0,
                plan,
                emit: false,
            },
            counts: HashMap::new(),
            reasons: HashMap::new(),
        })
    }

    // ---------------------------------------------------------------------- counting

    pub fn count(&mut self, family: &'static str, reason: &'static str, n: u128) {
        let r = self
            .reasons
            .entry(reason)
            .or_insert_with(|| Arc::from(reason))
            .clone();
        *self.counts.entry((family, r)).or_insert(0) += n;
    }

    fn count_label(&mut self, family: &'static str, label: Arc<str>, n: u128) {
        *self.counts.entry((family, label)).or_insert(0) += n;
    }

    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    pub fn template_count(&self) -> usize {
        self.lru.len()
    }

    // ------------------------------------------------------------------------ domains

    /// `TemplateState.domain`: the state of `key`, made room for when new.
    pub fn domain(&mut self, key: &DomainKey, now: f64) {
        if let Some(d) = self.domains.get_mut(key) {
            d.last_seen = now;
            self.domains.move_to_end(key);
            if let Some(mine) = self.by_address.get_mut(&key.0) {
                mine.move_to_end(key);
            }
            return;
        }
        let victim = match self.by_address.get(&key.0) {
            Some(mine) if mine.len() >= self.limits.max_domains_per_exporter => {
                mine.first_key().cloned()
            }
            _ => None,
        };
        if let Some(v) = victim {
            self.drop_domain(&v);
            self.count("limit", "domains_per_exporter", 1);
        }
        if self.domains.len() >= self.limits.max_exporters {
            self.forget_idle(now);
            if self.domains.len() >= self.limits.max_exporters {
                if let Some(v) = self.domains.first_key().cloned() {
                    self.drop_domain(&v);
                }
                self.count("limit", "exporters", 1);
            }
        }
        self.generation += 1;
        self.domains.insert(
            key.clone(),
            Domain {
                generation: self.generation,
                templates: Ordered::default(),
                next_seq: None,
                default_rate: 1,
                sampler_rates: Vec::new(),
                init_time: None,
                last_seen: now,
            },
        );
        self.by_address
            .entry(key.0.clone())
            .or_default()
            .insert(key.clone(), ());
    }

    fn forget_idle(&mut self, now: f64) {
        let cutoff = now - self.limits.template_lifetime;
        while let Some(key) = self.domains.first_key().cloned() {
            let stale = self.domains.get(&key).is_some_and(|d| d.last_seen < cutoff);
            if !stale {
                break;
            }
            self.drop_domain(&key);
        }
    }

    fn drop_domain(&mut self, key: &DomainKey) {
        let Some(domain) = self.domains.remove(key) else {
            return;
        };
        if let Some(mine) = self.by_address.get_mut(&key.0) {
            mine.remove(key);
            if mine.is_empty() {
                self.by_address.remove(&key.0);
            }
        }
        for tid in domain.templates.keys() {
            self.lru.remove(&(key.clone(), *tid));
        }
        self.dirty = true;
    }

    fn sequence(&mut self, key: &DomainKey, seq: u32, advance: u32, unit: &'static str) {
        let Some(d) = self.domains.get_mut(key) else {
            return;
        };
        let expected = d.next_seq;
        d.next_seq = Some(seq.wrapping_add(advance));
        let Some(expected) = expected else {
            return;
        };
        if seq == expected {
            return;
        }
        let gap = seq.wrapping_sub(expected);
        if gap < 0x8000_0000 {
            let mut label = key.0.clone();
            if !self.loss_labels.contains(&label) {
                if self.loss_labels.len() >= self.limits.max_exporters {
                    label = Arc::from("other");
                } else {
                    self.loss_labels.insert(label.clone());
                }
            }
            let family = if unit == "flows" {
                "lost_flows"
            } else {
                "lost_packets"
            };
            self.count_label(family, label, u128::from(gap));
        } else {
            self.count("sequence", "reordered_or_reset", 1);
        }
    }

    // ---------------------------------------------------------------------- templates

    fn is_compiled(&self, fields: &Arc<[Field]>) -> bool {
        self.compiled.contains(fields)
    }

    /// `TemplateState.install`: `true` when a new or changed template now holds the id.
    fn install(
        &mut self,
        key: &DomainKey,
        tid: u16,
        fields: Vec<Field>,
        scope: u16,
        now: f64,
    ) -> bool {
        let max_field_length = self.limits.max_field_length;
        if fields.len() > self.limits.max_fields_per_template {
            self.count("limit", "fields_per_template", 1);
            return false;
        }
        let version = key.1;
        let mut total: u64 = 0;
        for &(ie, length, pen) in &fields {
            if length == VARLEN && version == 10 && pen != SCOPE_PEN {
                total += 1;
                continue;
            }
            if length > max_field_length && !(pen == 0 && self.large_ies.contains(&ie)) {
                self.count("limit", "field_length", 1);
                return false;
            }
            total += u64::from(length);
        }
        if total > 65535 - 20 {
            self.count("error", "template_too_long", 1);
            return false;
        }
        if total == 0 {
            self.count("error", "zero_length_record", 1);
            return false;
        }
        let Some(domain) = self.domains.get_mut(key) else {
            return false;
        };
        let old = domain.templates.remove(&tid);
        let held = domain.templates.len();
        let lru_key = (key.clone(), tid);
        if let Some(mut old) = old {
            if *old.fields == *fields && old.scope == scope {
                old.last_seen = now;
                if old.emit && !self.compiled.contains(&old.fields) {
                    old.emit = false;
                }
                domain.templates.insert(tid, old);
                self.lru.move_to_end(&lru_key);
                self.count("template", "refreshed", 1);
                self.refreshed = true;
                return false;
            }
            self.lru.remove(&lru_key);
            self.count("template", "changed", 1);
        } else {
            if held >= self.limits.max_templates_per_exporter {
                let victim = domain.templates.pop_first().map(|(v, _)| v);
                if let Some(victim) = victim {
                    self.lru.remove(&(key.clone(), victim));
                }
                self.count("limit", "templates_per_exporter", 1);
            }
            if self.lru.len() >= self.limits.max_templates {
                if let Some(((vkey, vtid), ())) = self.lru.pop_first() {
                    if let Some(vd) = self.domains.get_mut(&vkey) {
                        vd.templates.remove(&vtid);
                    }
                }
                self.count("limit", "templates_total", 1);
            }
            self.count("template", "new", 1);
        }
        let fields: Arc<[Field]> = fields.into();
        let Some(plan) = self.planner.plan(&fields, scope) else {
            // Only a planner bug gets here: the id is left without a template.
            self.count("error", "template_plan", 1);
            self.dirty = true;
            return false;
        };
        if let Some(domain) = self.domains.get_mut(key) {
            domain.templates.insert(
                tid,
                Template {
                    tid,
                    fields,
                    scope,
                    last_seen: now,
                    plan,
                    emit: false,
                },
            );
        }
        self.lru.insert(lru_key, ());
        self.dirty = true;
        true
    }

    /// `TemplateState.template`: the live template (one past its lifetime is dropped).
    fn live(&mut self, key: &DomainKey, tid: u16, now: f64) -> bool {
        let lifetime = self.limits.template_lifetime;
        let Some(domain) = self.domains.get_mut(key) else {
            return false;
        };
        let Some(t) = domain.templates.get(&tid) else {
            return false;
        };
        if now - t.last_seen > lifetime {
            domain.templates.remove(&tid);
            self.lru.remove(&(key.clone(), tid));
            self.count("template", "expired", 1);
            self.dirty = true;
            return false;
        }
        true
    }

    // ---------------------------------------------------------------- held data sets

    fn hold(&mut self, ctx: &Ctx, tid: u16, body: &[u8], now: f64) {
        self.count("data", "no_template", 1);
        if self.limits.pending_max_sets == 0 {
            return;
        }
        self.expire_pending(now);
        if self.pending.len() >= self.limits.pending_max_sets {
            self.pending.pop_first();
            self.count("data", "pending_evicted", 1);
        }
        self.pending_seq += 1;
        let key = lock(ctx).key.clone();
        self.pending.insert(
            self.pending_seq,
            Held {
                key,
                tid,
                body: body.to_vec(),
                ctx: ctx.clone(),
                at: now,
            },
        );
    }

    fn expire_pending(&mut self, now: f64) {
        let cutoff = now - self.limits.pending_max_age;
        while let Some(first) = self.pending.first_key().copied() {
            if self.pending.get(&first).is_some_and(|h| h.at >= cutoff) {
                break;
            }
            self.pending.pop_first();
            self.count("data", "pending_expired", 1);
        }
    }

    fn install_and_release<S: FlowSink>(
        &mut self,
        ctx: &Ctx,
        tid: u16,
        fields: Vec<Field>,
        scope: u16,
        sink: &mut S,
    ) {
        let (key, now) = {
            let c = lock(ctx);
            (c.key.clone(), c.now)
        };
        if !self.install(&key, tid, fields, scope, now) || self.pending.is_empty() {
            return;
        }
        self.expire_pending(now);
        let ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, h)| h.key == key && h.tid == tid)
            .map(|(s, _)| *s)
            .collect();
        for s in ready {
            if let Some(held) = self.pending.remove(&s) {
                self.decode_held(tid, &held.body, &held.ctx, sink);
            }
        }
    }

    fn decode_held<S: FlowSink>(&mut self, tid: u16, body: &[u8], ctx: &Ctx, sink: &mut S) {
        let (key, generation) = {
            let c = lock(ctx);
            (c.key.clone(), c.domain)
        };
        // The reference reads the held context's own domain object: one evicted since (and
        // perhaps made again) no longer has this template, so nothing is decoded.
        let Some(domain) = self.domains.get(&key) else {
            return;
        };
        if domain.generation != generation {
            return;
        }
        let Some(t) = domain.templates.get(&tid) else {
            return;
        };
        let plan = t.plan.clone();
        let scope = t.scope;
        if scope > 0 {
            self.options_records(&key, &plan, body, ctx);
            self.count("data", "pending_released_records", 0);
        } else if plan.record.width() == 0 {
            self.empty_records(&plan, body);
            self.count("data", "pending_released_records", 0);
        } else {
            let n = self.records(&key, Some(tid), &plan, body, ctx, sink);
            self.count("data", "pending_released_records", n as u128);
        }
    }

    // -------------------------------------------------------------------- maintenance

    /// `TemplateState.expire`: templates past their lifetime, idle exporters, stale held data.
    pub fn expire(&mut self, now: f64) -> usize {
        let lifetime = self.limits.template_lifetime;
        let mut expired = 0usize;
        while let Some((key, tid)) = self.lru.first_key().cloned() {
            let fresh = self
                .domains
                .get(&key)
                .and_then(|d| d.templates.get(&tid))
                .is_some_and(|t| now - t.last_seen <= lifetime);
            if fresh {
                break;
            }
            self.lru.remove(&(key.clone(), tid));
            if let Some(d) = self.domains.get_mut(&key) {
                d.templates.remove(&tid);
            }
            expired += 1;
        }
        if expired > 0 {
            self.count("template", "expired", expired as u128);
            self.dirty = true;
        }
        self.forget_idle(now);
        self.expire_pending(now);
        expired
    }

    // ------------------------------------------------------------------ persistence

    /// A saved domain (`import_state`): made, or touched, as a received one is.
    pub fn import_domain(&mut self, key: &DomainKey, now: f64) {
        self.domain(key, now);
    }

    pub fn domain_mut(&mut self, key: &DomainKey) -> Option<&mut Domain> {
        self.domains.get_mut(key)
    }

    /// `sampler_rates[k] = v`: in place when present, else at the end.
    pub fn set_sampler(d: &mut Domain, k: i128, v: u128) {
        match d.sampler_rates.iter_mut().find(|e| e.0 == k) {
            Some(e) => e.1 = v,
            None => d.sampler_rates.push((k, v)),
        }
    }

    /// The state was saved: nothing changed since.
    pub fn saved(&mut self) {
        self.dirty = false;
        self.refreshed = false;
    }

    /// One saved template (`import_state`), through the same limits as a received one.
    pub fn import_template(
        &mut self,
        key: &DomainKey,
        tid: u16,
        fields: Vec<Field>,
        scope: u16,
        last_seen: f64,
    ) {
        if !self.domains.contains(key) {
            return;
        }
        let generation = self.domains.get(key).map_or(0, |d| d.generation);
        let ctx = Arc::new(Mutex::new(Context {
            domain: generation,
            key: key.clone(),
            exporter: key.0.clone(),
            port: 0,
            version: key.1,
            source_id: key.2,
            has_common: false,
            now: last_seen,
            export_time: last_seen,
            boot: None,
            header_rate: 1,
        }));
        // Released records at import have no datagram to go to (the reference appends them
        // to a list nobody reads): counted, not emitted.
        let mut sink = CountSink::default();
        self.install_and_release(&ctx, tid, fields, scope, &mut sink);
    }

    // --------------------------------------------------------------------- decoding

    /// All flow records of one datagram from `exporter`, to `sink`; never fails on input.
    pub fn decode<S: FlowSink>(
        &mut self,
        data: &[u8],
        exporter: &Arc<str>,
        port: u16,
        now: f64,
        sink: &mut S,
    ) {
        if data.len() < 2 {
            self.count("error", "short_header", 1);
            return;
        }
        let version = u16_at(data, 0);
        let got = match version {
            9 => self.decode_v9(data, exporter, port, now, sink),
            10 => self.decode_ipfix(data, exporter, port, now, sink),
            5 => self.decode_v5(data, exporter, port, now, sink),
            _ => {
                self.count("error", "unsupported_version", 1);
                Ok(())
            }
        };
        if let Err(Malformed(reason)) = got {
            self.count("error", reason, 1);
        }
    }

    fn context(
        &self,
        key: &DomainKey,
        port: u16,
        now: f64,
        export: f64,
        boot: Option<f64>,
        rate: u128,
    ) -> Ctx {
        let generation = self.domains.get(key).map_or(0, |d| d.generation);
        Arc::new(Mutex::new(Context {
            domain: generation,
            key: key.clone(),
            exporter: key.0.clone(),
            port,
            version: key.1,
            source_id: key.2,
            has_common: true,
            now,
            export_time: export,
            boot,
            header_rate: rate,
        }))
    }

    fn decode_v5<S: FlowSink>(
        &mut self,
        data: &[u8],
        exporter: &Arc<str>,
        port: u16,
        now: f64,
        sink: &mut S,
    ) -> Result<(), Malformed> {
        if data.len() < 24 {
            return Err(Malformed("short_header"));
        }
        let n = usize::from(u16_at(data, 2));
        if !(1..=30).contains(&n) {
            return Err(Malformed("v5_count"));
        }
        if data.len() != 24 + 48 * n {
            return Err(Malformed("v5_length"));
        }
        let uptime = u32_at(data, 4);
        let secs = u32_at(data, 8);
        let nsecs = u32_at(data, 12);
        let seq = u32_at(data, 16);
        let source_id = u32::from(u16_at(data, 20));
        let sampling = u16_at(data, 22);
        let key: DomainKey = (exporter.clone(), 5, source_id);
        self.domain(&key, now);
        self.sequence(&key, seq, n as u32, "flows");
        let rate = u128::from(sampling & 0x3FFF);
        let export = f64::from(secs) + f64::from(nsecs) / 1e9;
        let boot = export - f64::from(uptime) / 1000.0;
        let ctx = self.context(
            &key,
            port,
            now,
            export,
            Some(boot),
            if rate == 0 { 1 } else { rate },
        );
        let plan = self.v5.plan.clone();
        self.records(&key, None, &plan, &data[24..], &ctx, sink);
        Ok(())
    }

    fn decode_v9<S: FlowSink>(
        &mut self,
        data: &[u8],
        exporter: &Arc<str>,
        port: u16,
        now: f64,
        sink: &mut S,
    ) -> Result<(), Malformed> {
        if data.len() < 20 {
            return Err(Malformed("short_header"));
        }
        let uptime = u32_at(data, 4);
        let secs = u32_at(data, 8);
        let seq = u32_at(data, 12);
        let source_id = u32_at(data, 16);
        let key: DomainKey = (exporter.clone(), 9, source_id);
        self.domain(&key, now);
        self.sequence(&key, seq, 1, "packets");
        let boot = f64::from(secs) - f64::from(uptime) / 1000.0;
        let ctx = self.context(&key, port, now, f64::from(secs), Some(boot), 1);
        self.sets(data, 20, data.len(), &ctx, 9, sink)?;
        Ok(())
    }

    fn decode_ipfix<S: FlowSink>(
        &mut self,
        data: &[u8],
        exporter: &Arc<str>,
        port: u16,
        now: f64,
        sink: &mut S,
    ) -> Result<(), Malformed> {
        if data.len() < 16 {
            return Err(Malformed("short_header"));
        }
        let length = usize::from(u16_at(data, 2));
        if length != data.len() {
            return Err(Malformed("length_mismatch"));
        }
        let export = u32_at(data, 4);
        let seq = u32_at(data, 8);
        let odid = u32_at(data, 12);
        let key: DomainKey = (exporter.clone(), 10, odid);
        self.domain(&key, now);
        let init = self.domains.get(&key).and_then(|d| d.init_time);
        let ctx = self.context(&key, port, now, f64::from(export), init, 1);
        let (complete, n) = self.sets(data, 16, length, &ctx, 10, sink)?;
        if complete {
            self.sequence(&key, seq, n as u32, "flows");
        } else if let Some(d) = self.domains.get_mut(&key) {
            d.next_seq = None;
        }
        Ok(())
    }

    /// Walk the sets: (every data set decoded, data records seen); the sets before one that
    /// cannot be trusted are applied, then its reason is returned.
    fn sets<S: FlowSink>(
        &mut self,
        data: &[u8],
        mut off: usize,
        end: usize,
        ctx: &Ctx,
        version: u16,
        sink: &mut S,
    ) -> Result<(bool, usize), Malformed> {
        let (template_set, options_set) = if version == 9 { (0, 1) } else { (2, 3) };
        let ipfix = version == 10;
        let mut complete = true;
        let mut records = 0usize;
        while off < end {
            if end - off < 4 {
                if data[off..end].iter().any(|&b| b != 0) {
                    return Err(Malformed("truncated_set_header"));
                }
                break;
            }
            let set_id = u16_at(data, off);
            let set_len = usize::from(u16_at(data, off + 2));
            if set_len < 4 {
                if set_id == 0 && data[off..end].iter().all(|&b| b == 0) {
                    break;
                }
                return Err(Malformed("set_length"));
            }
            if set_len > end - off {
                return Err(Malformed("set_past_end"));
            }
            let body = off + 4;
            let set_end = off + set_len;
            off += set_len;
            if set_id == template_set {
                let items = template_set_items(data, body, set_end, ipfix);
                self.templates(items, ctx, sink);
            } else if set_id == options_set {
                let items = if ipfix {
                    ipfix_options_items(data, body, set_end)
                } else {
                    v9_options_items(data, body, set_end)
                };
                self.templates(items, ctx, sink);
            } else if set_id >= 256 {
                match self.data_set(set_id, &data[body..set_end], ctx, sink) {
                    Some(n) => records += n,
                    None => complete = false,
                }
            } else {
                self.count("error", "reserved_set_id", 1);
            }
        }
        Ok((complete, records))
    }

    fn templates<S: FlowSink>(&mut self, items: Vec<Item>, ctx: &Ctx, sink: &mut S) {
        for item in items {
            match item {
                Item::Spec(tid, fields, scope) => {
                    self.install_and_release(ctx, tid, fields, scope, sink)
                }
                Item::Note(family, reason) => self.count(family, reason, 1),
            }
        }
    }

    /// One data set: how many records it held, or `None` when it could not be decoded.
    fn data_set<S: FlowSink>(
        &mut self,
        tid: u16,
        body: &[u8],
        ctx: &Ctx,
        sink: &mut S,
    ) -> Option<usize> {
        let (key, now) = {
            let c = lock(ctx);
            (c.key.clone(), c.now)
        };
        if !self.live(&key, tid, now) {
            self.hold(ctx, tid, body, now);
            return None;
        }
        let t = self.domains.get(&key)?.templates.get(&tid)?;
        let plan = t.plan.clone();
        if t.scope > 0 {
            return Some(self.options_records(&key, &plan, body, ctx));
        }
        if plan.record.width() == 0 {
            return Some(self.empty_records(&plan, body));
        }
        Some(self.records(&key, Some(tid), &plan, body, ctx, sink))
    }

    fn empty_records(&mut self, plan: &TemplatePlan, body: &[u8]) -> usize {
        let got = split(&plan.record, body);
        if let Some(e) = got.error {
            self.count("error", e, 1);
        }
        if got.records > 0 {
            self.count("data", "empty_records", got.records as u128);
        }
        got.records
    }

    /// The reference's emitter choice (`_emitter`): compiled within a budget per second,
    /// else generic and counted. Natively both are the same code; the count is kept.
    fn emitter(&mut self, key: &DomainKey, tid: Option<u16>, now: f64) {
        let (emit, fields) = match tid {
            None => (self.v5.emit, self.v5.fields.clone()),
            Some(tid) => match self.domains.get(key).and_then(|d| d.templates.get(&tid)) {
                Some(t) => (t.emit, t.fields.clone()),
                None => return,
            },
        };
        if emit {
            return;
        }
        if !self.is_compiled(&fields) {
            let rate = self.limits.compiles_per_second;
            self.compile_tokens = rate.min(self.compile_tokens + (now - self.compile_at) * rate);
            self.compile_at = now;
            if self.compile_tokens >= 1.0 {
                self.compile_tokens -= 1.0;
                if self.compiled.len() >= EMITTERS_MAX {
                    self.compiled.pop_first();
                }
                self.compiled.insert(fields, ());
            } else {
                self.count("limit", "compile_budget", 1);
            }
        }
        match tid {
            None => self.v5.emit = true,
            Some(tid) => {
                if let Some(t) = self
                    .domains
                    .get_mut(key)
                    .and_then(|d| d.templates.get_mut(&tid))
                {
                    t.emit = true;
                }
            }
        }
    }

    /// Flow records → the sink, with the domain's sampling and the template's time base.
    fn records<S: FlowSink>(
        &mut self,
        key: &DomainKey,
        tid: Option<u16>,
        plan: &TemplatePlan,
        body: &[u8],
        ctx: &Ctx,
        sink: &mut S,
    ) -> usize {
        let c = lock(ctx);
        // The held context's own domain when it still exists (else the reference's object
        // outlived the table: its rates are as they were; rare enough to use the defaults).
        let domain = self.domains.get(key).filter(|d| d.generation == c.domain);
        let mut rate = c.header_rate;
        let samplers: Vec<(i128, u128)> = match domain {
            Some(d) => {
                rate = rate.max(d.default_rate);
                d.sampler_rates.clone()
            }
            None => Vec::new(),
        };
        let (base, scale) = match plan.time_kind {
            TimeKind::Uptime => (c.boot, 0.001),
            TimeKind::Secs => (Some(0.0), 1.0),
            TimeKind::Millis => (Some(0.0), 0.001),
            TimeKind::DeltaMicros => (Some(c.export_time), -0.000001),
            TimeKind::None => (None, 1.0),
        };
        let now = c.now;
        drop(c);
        self.emitter(key, tid, now);
        let got = split(&plan.record, body);
        if let Some(e) = got.error {
            self.count("error", e, 1);
        }
        if got.records > 0 {
            let c = lock(ctx);
            sink.flows(
                plan,
                &got,
                &RecordCtx {
                    ctx: &c,
                    base,
                    scale,
                    rate,
                    samplers: &samplers,
                },
            );
        }
        got.records
    }

    /// Options data is state (sampling rates, exporter boot time), not flows.
    fn options_records(
        &mut self,
        key: &DomainKey,
        plan: &TemplatePlan,
        body: &[u8],
        ctx: &Ctx,
    ) -> usize {
        use crate::netflow::Raw;
        let name = |ies: &[u16]| ies.iter().find_map(|ie| plan.value_of.get(ie).copied());
        let interval = name(&[34, 50]);
        let (packet_interval, packet_space) = (name(&[305]), name(&[306]));
        let (size_i, population_i) = (name(&[309]), name(&[310]));
        let sampler_i = name(&[48, 302]);
        let init_i = name(&[160]);
        let got = split(&plan.record, body);
        if let Some(e) = got.error {
            self.count("error", e, 1);
        }
        let width = plan.record.width();
        let int = |v: &Raw<'_>| match v {
            Raw::Int(n) => Some(u128::from(*n)),
            Raw::Bytes(..) => None,
        };
        let mut n = 0usize;
        let mut limit_hits = 0u128;
        let generation = lock(ctx).domain;
        for rec in got.values.chunks_exact(width.max(1)).take(got.records) {
            n += 1;
            let Some(d) = self
                .domains
                .get_mut(key)
                .filter(|d| d.generation == generation)
            else {
                continue;
            };
            let mut rate: Option<u128> = Some(0);
            if let (Some(s), Some(p)) = (size_i, population_i) {
                if let (Some(size), Some(pop)) = (int(&rec[s]), int(&rec[p])) {
                    if let Some(r) = pop.checked_div(size) {
                        rate = Some(r);
                    }
                }
            } else if let Some(i) = interval {
                rate = int(&rec[i]);
            } else if let (Some(a), Some(b)) = (packet_interval, packet_space) {
                if let (Some(a), Some(b)) = (int(&rec[a]), int(&rec[b])) {
                    if let Some(r) = (a + b).checked_div(a) {
                        rate = Some(r);
                    }
                }
            }
            if let Some(rate) = rate.filter(|&r| r > 0) {
                match sampler_i.and_then(|i| int(&rec[i])) {
                    Some(sampler) => {
                        let sampler = sampler as i128;
                        if let Some(e) = d.sampler_rates.iter_mut().find(|e| e.0 == sampler) {
                            e.1 = rate;
                        } else if d.sampler_rates.len() < MAX_SAMPLERS {
                            d.sampler_rates.push((sampler, rate));
                        } else {
                            limit_hits += 1;
                        }
                    }
                    None => d.default_rate = rate,
                }
                self.dirty = true;
            }
            if let Some(v) = init_i.and_then(|i| int(&rec[i])) {
                let t = v as f64 / 1000.0;
                d.init_time = Some(t);
                lock(ctx).boot = Some(t);
            }
        }
        if limit_hits > 0 {
            self.count("limit", "samplers", limit_hits);
        }
        if n > 0 {
            self.count("data", "options_records", n as u128);
        }
        n
    }
}

// ------------------------------------------------------------------- template sets

fn field_specs(
    data: &[u8],
    mut p: usize,
    end: usize,
    n: usize,
    ipfix: bool,
) -> Result<(Vec<Field>, usize), &'static str> {
    let mut fields = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        if end - p < 4 {
            return Err("truncated_template");
        }
        let mut ie = u16_at(data, p);
        let length = u16_at(data, p + 2);
        p += 4;
        let mut pen = 0i64;
        if ipfix && ie & 0x8000 != 0 {
            if end - p < 4 {
                return Err("truncated_enterprise");
            }
            pen = i64::from(u32_at(data, p));
            p += 4;
            ie &= 0x7FFF;
        }
        fields.push((ie, length, pen));
    }
    Ok((fields, p))
}

fn template_set_items(data: &[u8], mut p: usize, end: usize, ipfix: bool) -> Vec<Item> {
    let mut out = Vec::new();
    while end - p >= 4 {
        let tid = u16_at(data, p);
        let n = usize::from(u16_at(data, p + 2));
        p += 4;
        if n == 0 {
            if tid == 0 {
                return out;
            }
            if ipfix {
                out.push(Item::Note("template", "withdrawal_ignored"));
                continue;
            }
            out.push(Item::Note("error", "empty_template"));
            continue;
        }
        if tid < 256 {
            out.push(Item::Note("error", "bad_template_id"));
            return out;
        }
        match field_specs(data, p, end, n, ipfix) {
            Ok((fields, next)) => {
                p = next;
                out.push(Item::Spec(tid, fields, 0));
            }
            Err(reason) => {
                out.push(Item::Note("error", reason));
                return out;
            }
        }
    }
    out
}

fn ipfix_options_items(data: &[u8], mut p: usize, end: usize) -> Vec<Item> {
    let mut out = Vec::new();
    while end - p >= 4 {
        let tid = u16_at(data, p);
        let n = usize::from(u16_at(data, p + 2));
        if n == 0 {
            if tid == 0 {
                return out;
            }
            out.push(Item::Note("template", "withdrawal_ignored"));
            p += 4;
            continue;
        }
        if end - p < 6 {
            out.push(Item::Note("error", "truncated_template"));
            return out;
        }
        let scope = u16_at(data, p + 4);
        p += 6;
        if tid < 256 {
            out.push(Item::Note("error", "bad_template_id"));
            return out;
        }
        match field_specs(data, p, end, n, true) {
            Ok((fields, next)) => {
                p = next;
                if scope == 0 || usize::from(scope) > n {
                    out.push(Item::Note("error", "bad_scope_count"));
                    continue;
                }
                out.push(Item::Spec(tid, fields, scope));
            }
            Err(reason) => {
                out.push(Item::Note("error", reason));
                return out;
            }
        }
    }
    out
}

fn v9_options_items(data: &[u8], mut p: usize, end: usize) -> Vec<Item> {
    let mut out = Vec::new();
    while end - p >= 6 {
        let tid = u16_at(data, p);
        let scope_len = usize::from(u16_at(data, p + 2));
        let opt_len = usize::from(u16_at(data, p + 4));
        if tid == 0 && scope_len == 0 {
            return out;
        }
        p += 6;
        if tid < 256 {
            out.push(Item::Note("error", "bad_template_id"));
            return out;
        }
        if scope_len % 4 != 0 || opt_len % 4 != 0 || scope_len + opt_len > end - p {
            out.push(Item::Note("error", "bad_options_template"));
            return out;
        }
        if scope_len == 0 {
            out.push(Item::Note("error", "bad_scope_count"));
            p += opt_len;
            continue;
        }
        let mut fields = Vec::with_capacity((scope_len + opt_len) / 4);
        for i in (0..scope_len).step_by(4) {
            fields.push((u16_at(data, p + i), u16_at(data, p + i + 2), SCOPE_PEN));
        }
        p += scope_len;
        for i in (0..opt_len).step_by(4) {
            fields.push((u16_at(data, p + i), u16_at(data, p + i + 2), 0));
        }
        p += opt_len;
        out.push(Item::Spec(tid, fields, (scope_len / 4) as u16));
    }
    out
}

// --------------------------------------------------------------- a planner for tests

/// A planner without IANA tables: integers for 1..=8-byte fields, hex otherwise, no ECS
/// mapping beyond bytes and packets. For `cargo test` and the fuzz targets.
pub struct PlainPlanner;

impl Planner for PlainPlanner {
    fn plan(&mut self, fields: &[Field], scope: u16) -> Option<Arc<TemplatePlan>> {
        let convs: Vec<Conv> = fields
            .iter()
            .map(|&(_, len, _)| {
                if (1..=8).contains(&len) {
                    Conv::Int
                } else {
                    Conv::Hex
                }
            })
            .collect();
        let mut slots = [None; 8];
        let mut direct = Vec::new();
        let mut i = 0;
        for &(ie, len, pen) in fields {
            if ie == PAD_IE && pen == 0 {
                continue;
            }
            if scope == 0 {
                let int = (1..=8).contains(&len);
                match ie {
                    1 if pen == 0 && int => slots[2] = Some(i),
                    2 if pen == 0 && int => slots[3] = Some(i),
                    _ => direct.push((format!("f{ie}"), i)),
                }
            }
            i += 1;
        }
        TemplatePlan::new(fields, &convs, TimeKind::None, direct, slots).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> Decoder<PlainPlanner> {
        Decoder::new(Limits::default(), HashSet::new(), PlainPlanner).unwrap()
    }

    fn v9(sets: &[Vec<u8>], seq: u32) -> Vec<u8> {
        let mut out = vec![0, 9, 0, 1];
        out.extend_from_slice(&1000u32.to_be_bytes());
        out.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        for s in sets {
            out.extend_from_slice(s);
        }
        out
    }

    fn set(id: u16, body: &[u8]) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn template(tid: u16, fields: &[(u16, u16)]) -> Vec<u8> {
        let mut out = tid.to_be_bytes().to_vec();
        out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (ie, l) in fields {
            out.extend_from_slice(&ie.to_be_bytes());
            out.extend_from_slice(&l.to_be_bytes());
        }
        out
    }

    fn count(d: &Decoder<PlainPlanner>, family: &'static str, reason: &str) -> u128 {
        d.counts
            .get(&(family, Arc::from(reason)))
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn data_before_its_template_is_held_and_released() {
        let mut d = dec();
        let ex: Arc<str> = Arc::from("192.0.2.1");
        let mut sink = CountSink::default();
        let data = set(256, &[0, 0, 0, 5, 0, 0, 0, 7]);
        d.decode(&v9(&[data], 1), &ex, 2055, 10.0, &mut sink);
        assert_eq!(sink.flows, 0);
        assert_eq!(count(&d, "data", "no_template"), 1);
        let t = set(0, &template(256, &[(1, 4), (2, 4)]));
        d.decode(&v9(&[t], 2), &ex, 2055, 11.0, &mut sink);
        assert_eq!(sink.flows, 1);
        assert_eq!(count(&d, "data", "pending_released_records"), 1);
        assert_eq!(count(&d, "template", "new"), 1);
        assert_eq!(d.template_count(), 1);
    }

    #[test]
    fn sequence_gaps_and_a_truncated_set_are_counted() {
        let mut d = dec();
        let ex: Arc<str> = Arc::from("192.0.2.1");
        let mut sink = CountSink::default();
        d.decode(&v9(&[], 10), &ex, 0, 1.0, &mut sink);
        d.decode(&v9(&[], 15), &ex, 0, 1.0, &mut sink);
        assert_eq!(count(&d, "lost_packets", "192.0.2.1"), 4);
        let mut dg = v9(&[set(0, &template(256, &[(1, 4)]))], 16);
        dg.truncate(dg.len() - 2);
        d.decode(&dg, &ex, 0, 1.0, &mut sink);
        assert_eq!(count(&d, "error", "set_past_end"), 1);
    }

    #[test]
    fn the_exporter_table_evicts_the_least_recently_heard() {
        let limits = Limits {
            max_exporters: 2,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits, HashSet::new(), PlainPlanner).unwrap();
        let mut sink = CountSink::default();
        for (i, ex) in ["a", "b", "c"].iter().enumerate() {
            d.decode(&v9(&[], 1), &Arc::from(*ex), 0, i as f64, &mut sink);
        }
        assert_eq!(d.domains.len(), 2);
        assert_eq!(count(&d, "limit", "exporters"), 1);
        assert!(!d.domains.contains(&(Arc::from("a"), 9, 1)));
    }
}
