//! Correlation windows of the `event_count`, `value_count` and `temporal_ordered` types, per
//! group, with the group map's LRU bound: the state machine `appliance/correlate/windows.py`
//! (`CountState`, `DistinctState`, `DistinctTupleState`, `OrderedState`) and
//! `CorrelationRuntime.add` keep in Python, which stays the reference. Same order of operations, same comparisons (written as the Python
//! writes them, so NaN and infinities fall the same way), same bounds: `max_groups` groups
//! in least-recently-used order, `keep` entries per window.
//!
//! Generic over the group/value key `K` (the binding's is a Python value normalised to
//! Python's equality), what is shown for a key `D` and an entry's payload `P` (the binding's
//! is the Python entry tuple itself), so `cargo test`, the property tests and the fuzz target
//! drive it without an interpreter.

use std::collections::VecDeque;
use std::hash::Hash;

/// No slot: the end of the order or of a bucket's chain.
const NIL: u32 = u32::MAX;

/// A slot's place in the order and in its bucket: kept apart from the key and value, in
/// one dense array. At the group bound a window holds 10,000 groups; a lookup
/// that walked the chain through the nodes, and a move to the back that rewrote both
/// neighbours' nodes, took three or four cache lines from all over the table a hit, and the
/// full ruleset makes about four such lookups a line. With the links apart, those are
/// 16-byte reads from an array a tenth of the size, and the one node read is the key's
/// compare (after its hash matched) and the value the caller goes on to change.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// The next slot in the same bucket of the index (`Lru::heads`).
    chain: u32,
    /// The key's hash, its low half (buckets are fewer than 2^32; a match is confirmed by
    /// comparing the keys).
    hash: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    chain: NIL,
    hash: 0,
};

/// A key's place in an [`Lru`] it is absent from, from [`Lru::lookup`]: its hash (none when
/// the map was small and not hashed), so the insertion that usually follows a miss does not
/// hash the key again.
#[derive(Clone, Copy)]
pub struct Vacant(Option<u32>);

/// Entries an [`Lru`] holds before it hashes its keys: up to this many, a lookup compares
/// the key with each held one (most value_count windows hold one to a few values, and most
/// groups are new on a flow stream: no hash table made, no key hashed, none freed).
const UNINDEXED: usize = 8;

/// An insertion-ordered map with move-to-back and pop-front in O(1): Python's `OrderedDict`
/// as the reference uses it. Keys come from event data, so they are hashed with a keyed
/// hash whose keys are drawn from the OS at start (aHash: no hash flooding without them).
/// std's SipHash-1-3 is keyed the same way at about twice the instructions: ~530 a flow in
/// its two lookups, ~265 with aHash. Up to [`UNINDEXED`] entries there is no hash index: a
/// lookup walks them.
///
/// The index is a power-of-two array of bucket heads, with each bucket's slots chained
/// through their links (no key held twice) and at most one slot per bucket on average. An
/// open-addressing table (the std map) leaves a tombstone for some removals, and at the
/// group bound a flow stream evicts a group nearly every flow: its tombstones forced a
/// rehash of the whole table every few ten thousand flows. Chains have no tombstones, and a
/// removal unlinks its slot from a chain of about one. Slots are `u32`: a map holds fewer
/// than 2^32 entries (the windows' bound is `max_groups`).
pub struct Lru<K, V> {
    /// Chain heads by `hash & (heads.len() - 1)`; empty and unused while `indexed` is false.
    heads: Vec<u32>,
    indexed: bool,
    /// Each slot's links (the same index as `nodes`).
    links: Vec<Link>,
    nodes: Vec<Option<(K, V)>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    len: usize,
    hasher: ahash::RandomState,
}

impl<K: Hash + Eq, V> Default for Lru<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A slot as the callers hold it.
fn slot(i: u32) -> usize {
    i as usize
}

impl<K: Hash + Eq, V> Lru<K, V> {
    pub fn new() -> Self {
        Lru {
            heads: Vec::new(),
            indexed: false,
            links: Vec::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
            hasher: ahash::RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn node(&self, i: usize) -> &(K, V) {
        self.nodes[i].as_ref().expect("live node")
    }

    fn node_mut(&mut self, i: usize) -> &mut (K, V) {
        self.nodes[i].as_mut().expect("live node")
    }

    fn link(&mut self, i: u32) -> &mut Link {
        &mut self.links[slot(i)]
    }

    fn hash(&self, key: &K) -> u32 {
        // the hash is keyed and well mixed: its low half is as good as any
        self.hasher.hash_one(key) as u32
    }

    /// The slot of `key`, if present.
    pub fn find(&self, key: &K) -> Option<usize> {
        self.lookup(key).ok()
    }

    /// The slot of `key`, or where to insert it ([`Lru::push_vacant`]).
    pub fn lookup(&self, key: &K) -> Result<usize, Vacant> {
        if !self.indexed {
            let mut i = self.head;
            while i != NIL {
                if self.node(slot(i)).0 == *key {
                    return Ok(slot(i));
                }
                i = self.links[slot(i)].next;
            }
            return Err(Vacant(None));
        }
        let h = self.hash(key);
        let mut i = self.heads[self.bucket(h)];
        while i != NIL {
            let l = &self.links[slot(i)];
            if l.hash == h && self.node(slot(i)).0 == *key {
                return Ok(slot(i));
            }
            i = l.chain;
        }
        Err(Vacant(Some(h)))
    }

    fn bucket(&self, hash: u32) -> usize {
        hash as usize & (self.heads.len() - 1)
    }

    /// Hash every key held into the index (the map grew past [`UNINDEXED`]).
    fn index(&mut self) {
        self.indexed = true;
        let mut i = self.head;
        while i != NIL {
            let hash = self.hash(&self.node(slot(i)).0);
            let l = self.link(i);
            l.hash = hash;
            i = l.next;
        }
        self.rebucket(2 * UNINDEXED);
    }

    /// Chain every slot into `buckets` buckets (a power of two), by the hash it holds.
    fn rebucket(&mut self, buckets: usize) {
        self.heads.clear();
        self.heads.resize(buckets, NIL);
        let mut i = self.head;
        while i != NIL {
            self.hook(i);
            i = self.links[slot(i)].next;
        }
    }

    /// Chain slot `i` (its hash set) into its bucket, first.
    fn hook(&mut self, i: u32) {
        let b = self.bucket(self.links[slot(i)].hash);
        let first = std::mem::replace(&mut self.heads[b], i);
        self.link(i).chain = first;
    }

    pub fn val(&self, i: usize) -> &V {
        &self.node(i).1
    }

    pub fn val_mut(&mut self, i: usize) -> &mut V {
        &mut self.node_mut(i).1
    }

    pub fn key(&self, i: usize) -> &K {
        &self.node(i).0
    }

    pub fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(slot(self.head))
    }

    fn unlink(&mut self, i: u32) {
        let Link { prev, next, .. } = self.links[slot(i)];
        if prev == NIL {
            self.head = next;
        } else {
            self.link(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.link(next).prev = prev;
        }
    }

    fn link_back(&mut self, i: u32) {
        let tail = self.tail;
        let l = self.link(i);
        l.prev = tail;
        l.next = NIL;
        if tail == NIL {
            self.head = i;
        } else {
            self.link(tail).next = i;
        }
        self.tail = i;
    }

    pub fn move_to_back(&mut self, i: usize) {
        let i = i as u32;
        if self.tail != i {
            self.unlink(i);
            self.link_back(i);
        }
    }

    /// Append a key known to be absent; returns its slot.
    pub fn push_back(&mut self, key: K, val: V) -> usize {
        self.push_vacant(Vacant(None), key, val)
    }

    /// Append a key this map's [`Lru::lookup`] found absent (and still absent); returns its
    /// slot.
    pub fn push_vacant(&mut self, at: Vacant, key: K, val: V) -> usize {
        if !self.indexed && self.len >= UNINDEXED {
            self.index();
        }
        let hash = match (self.indexed, at) {
            (false, _) => 0,
            (true, Vacant(hash)) => hash.unwrap_or_else(|| self.hash(&key)),
        };
        let link = Link { hash, ..UNLINKED };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[slot(i)] = Some((key, val));
                *self.link(i) = link;
                i
            }
            None => {
                let i = u32::try_from(self.nodes.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("an Lru holds fewer than 2^32 - 1 entries");
                self.nodes.push(Some((key, val)));
                self.links.push(link);
                i
            }
        };
        self.link_back(i);
        self.len += 1;
        if self.indexed {
            if self.len > self.heads.len() {
                self.rebucket(2 * self.heads.len()); // chains it too
            } else {
                self.hook(i);
            }
        }
        slot(i)
    }

    /// Evict the oldest entry for `key` (which [`Lru::lookup`] found absent, `at`): the
    /// oldest's slot takes `key` and moves to the back, keeping its value for the caller to
    /// make the new one of. The same order as a `pop_front` then a `push_vacant`, without
    /// moving either node out of or into its slot (at the bound, on a flow stream, nearly
    /// every flow evicts a group). Returns the slot, or gives `key` back when the map is
    /// empty.
    pub fn replace_front(&mut self, at: Vacant, key: K) -> Result<usize, K> {
        let Some(i) = self.front() else {
            return Err(key);
        };
        if self.indexed {
            self.unhook(i as u32);
            let hash = at.0.unwrap_or_else(|| self.hash(&key));
            self.links[i].hash = hash;
            self.hook(i as u32);
        }
        self.node_mut(i).0 = key;
        self.move_to_back(i);
        Ok(i)
    }

    /// Remove the entry in slot `i`.
    pub fn remove(&mut self, i: usize) -> (K, V) {
        let s = i as u32;
        self.unlink(s);
        if self.indexed {
            self.unhook(s);
        }
        let n = self.nodes[i].take().expect("live node");
        self.free.push(s);
        self.len -= 1;
        if self.len == 0 {
            // nothing live: give the slots back (a burst of groups does not stay allocated)
            self.nodes.clear();
            self.links.clear();
            self.free.clear();
            self.heads = Vec::new();
            self.indexed = false;
        }
        n
    }

    /// Take slot `i` out of its bucket's chain.
    fn unhook(&mut self, i: u32) {
        let Link { hash, chain, .. } = self.links[slot(i)];
        let b = self.bucket(hash);
        let first = self.heads[b];
        if first == i {
            self.heads[b] = chain;
            return;
        }
        let mut j = first;
        while j != NIL {
            let next = self.links[slot(j)].chain;
            if next == i {
                self.link(j).chain = chain;
                return;
            }
            j = next;
        }
    }

    pub fn pop_front(&mut self) -> Option<(K, V)> {
        let i = self.front()?;
        Some(self.remove(i))
    }

    /// Empty, keeping what it allocated (a recycled group's values start in it).
    pub fn clear(&mut self) {
        self.heads.clear();
        self.indexed = false;
        self.nodes.clear();
        self.links.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.len = 0;
    }

    /// Entries this map has room for without allocating.
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// Slots in order, oldest first.
    pub fn slots(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.len);
        let mut i = self.head;
        while i != NIL {
            out.push(slot(i));
            i = self.links[slot(i)].next;
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        let mut i = self.head;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let (k, v) = self.node(slot(i));
            i = self.links[slot(i)].next;
            Some((k, v))
        })
    }
}

// ------------------------------------------------------------------------------- windows

/// A comparison of the rule's condition (`gte: 10`), as `rules.make_check` binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gte,
    Gt,
    Lte,
    Lt,
    Eq,
    Neq,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "gte" => Op::Gte,
            "gt" => Op::Gt,
            "lte" => Op::Lte,
            "lt" => Op::Lt,
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            _ => return None,
        })
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gte => value >= threshold,
            Op::Gt => value > threshold,
            Op::Lte => value <= threshold,
            Op::Lt => value < threshold,
            Op::Eq => value == threshold,
            Op::Neq => value != threshold,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// event_count: entries in time order.
    Count,
    /// value_count (one field or several): distinct values with their newest entry.
    Distinct,
    /// temporal_ordered (no boolean condition) over this many steps: per step, the
    /// latest-starting chain that reached it.
    Ordered(usize),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub timespan: f64,
    /// Entries a window keeps (`CorrelationRuntime.keep`), at least 1.
    pub keep: usize,
    pub max_groups: usize,
    /// Every comparison must hold (a range is several).
    pub checks: Vec<(Op, f64)>,
}

impl Spec {
    pub fn check(&self, n: usize) -> bool {
        let v = n as f64;
        self.checks.iter().all(|&(op, t)| op.holds(v, t))
    }
}

/// One window entry: its event time and what the caller attached (the evidence).
#[derive(Clone)]
pub struct Entry<P> {
    pub ts: f64,
    pub payload: P,
}

pub enum Window<K, D, P> {
    Count(VecDeque<Entry<P>>),
    /// value key -> (the value as first seen, newest entry), oldest first ([`Values`]).
    Distinct(Values<K, (D, Entry<P>)>),
    /// per step: (start time, the chain's entries), as `OrderedState.chains`
    Ordered(Vec<Option<Chain<P>>>),
}

impl<K: Hash + Eq, D, P> Window<K, D, P> {
    /// Empty, as `Windows::empty_window` makes it, keeping what it allocated.
    pub fn clear(&mut self) {
        match self {
            Window::Count(t) => t.clear(),
            Window::Distinct(vals) => vals.clear(),
            Window::Ordered(chains) => chains.iter_mut().for_each(|c| *c = None),
        }
    }

    /// Entries the window keeps room for once cleared (a cleared chain keeps none).
    fn capacity(&self) -> usize {
        match self {
            Window::Count(t) => t.capacity(),
            Window::Distinct(vals) => vals.capacity(),
            Window::Ordered(_) => 0,
        }
    }
}

/// A partial sequence: when it started and its entries (at most `CHAIN_ENTRIES`).
pub type Chain<P> = (f64, Vec<Entry<P>>);

/// Entries a chain keeps: the reference extends `prev[1][-15:]` by one.
pub const CHAIN_ENTRIES: usize = 16;

pub struct Group<K, D, P> {
    /// The group key as first seen (what the reference's dict keeps and a snapshot shows).
    pub display: D,
    pub window: Window<K, D, P>,
}

impl<K: Hash + Eq, D, P> Group<K, D, P> {
    /// The entries in the order the reference's `entries()` lists them.
    pub fn entries(&self) -> Vec<&Entry<P>> {
        match &self.window {
            Window::Count(t) => t.iter().collect(),
            Window::Ordered(chains) => match chains.last() {
                Some(Some((_, es))) => es.iter().collect(),
                _ => Vec::new(),
            },
            Window::Distinct(vals) => {
                let mut es: Vec<&Entry<P>> = vals.iter().map(|(_, (_, e))| e).collect();
                // stable, like sorted(); no NaN reaches a window (the binding declines it)
                es.sort_by(|a, b| a.ts.partial_cmp(&b.ts).unwrap_or(std::cmp::Ordering::Equal));
                es
            }
        }
    }

    /// The newest event time held (`GroupState.newest`), -inf when empty.
    pub fn newest(&self) -> f64 {
        match &self.window {
            Window::Count(t) => t.back().map_or(f64::NEG_INFINITY, |e| e.ts),
            Window::Ordered(chains) => {
                let mut m = f64::NEG_INFINITY;
                let mut first = true;
                for (_, es) in chains.iter().flatten() {
                    if let Some(e) = es.last() {
                        // max(): the first, then any greater
                        if first || e.ts > m {
                            m = e.ts;
                            first = false;
                        }
                    }
                }
                m
            }
            Window::Distinct(vals) => {
                let mut it = vals.iter().map(|(_, (_, e))| e.ts);
                let Some(mut m) = it.next() else {
                    return f64::NEG_INFINITY;
                };
                for ts in it {
                    if ts > m {
                        m = ts;
                    }
                }
                m
            }
        }
    }
}

/// Emptied windows a [`Windows`] keeps for its next new groups.
const SPARE_WINDOWS: usize = 64;

/// Entries a spare window may keep room for: a window grown past it (a rule whose `keep` is
/// in the thousands) is freed as before, so the spares hold at most ~128 KiB of entries a
/// rule instead of up to `keep` entries each.
const SPARE_ENTRIES: usize = 64;

/// One correlation rule's groups.
pub struct Windows<K, D, P> {
    pub spec: Spec,
    pub groups: Lru<K, Group<K, D, P>>,
    pub evicted: u64,
    pub fired: u64,
    pub ungrouped: u64,
    /// Windows of removed groups (fired, swept), emptied with their allocations kept, for
    /// the next new groups: at most [`SPARE_WINDOWS`]. A group that fires is removed and
    /// its key's next event opens a new one, whose deque or map grew again from nothing (a
    /// `malloc` and a few `realloc`s) while the fired one's was freed. The rules bench's
    /// native windows fire 0.06 times a line; at the group bound an evicted group's window
    /// is reused in place already (`group_slot`).
    spare: Vec<Window<K, D, P>>,
}

/// What an event adds to a value_count window: nothing (the field is missing or null), or
/// its value key and how to show it.
pub type Value<K, F> = Option<(K, F)>;

impl<K: Hash + Eq, D, P: Clone> Windows<K, D, P> {
    pub fn new(spec: Spec) -> Self {
        Windows {
            spec,
            groups: Lru::new(),
            evicted: 0,
            fired: 0,
            ungrouped: 0,
            spare: Vec::new(),
        }
    }

    /// A new group's window: a spare one when there is one.
    pub fn empty_window(&mut self) -> Window<K, D, P> {
        if let Some(w) = self.spare.pop() {
            return w;
        }
        match self.spec.kind {
            Kind::Count => Window::Count(VecDeque::new()),
            Kind::Distinct => Window::Distinct(Values::default()),
            Kind::Ordered(steps) => Window::Ordered(vec![None; steps]),
        }
    }

    /// The slot of `key`'s group, made the most recent: found, or made with the display
    /// `display` gives. At the bound the group evicted for it becomes it, in its slot, with
    /// its window's allocations (on a flow stream at the bound nearly every flow opens a
    /// group and evicts one).
    fn group_slot<FG: FnOnce() -> D>(&mut self, key: K, display: FG) -> usize {
        let at = match self.groups.lookup(&key) {
            Ok(i) => {
                self.groups.move_to_back(i);
                return i;
            }
            Err(at) => at,
        };
        let key = if self.groups.len() >= self.spec.max_groups {
            match self.groups.replace_front(at, key) {
                Ok(i) => {
                    self.evicted += 1;
                    let group = self.groups.val_mut(i);
                    group.display = display();
                    group.window.clear();
                    return i;
                }
                Err(key) => key,
            }
        } else {
            key
        };
        let window = self.empty_window();
        self.groups.push_vacant(
            at,
            key,
            Group {
                display: display(),
                window,
            },
        )
    }

    /// `CorrelationRuntime.add` after the key is read: `ungrouped` when every group-by field
    /// is missing. Returns the condition's value and the group (removed: it fired) or None.
    /// `steps` are the places of the entry's rule in a temporal_ordered rule's list, last
    /// first (unused by the other kinds).
    #[allow(clippy::too_many_arguments)]
    pub fn add<FG, FV>(
        &mut self,
        key: K,
        ungrouped: bool,
        display: FG,
        ts: f64,
        payload: P,
        value: Value<K, FV>,
        steps: &[usize],
    ) -> Option<(usize, Group<K, D, P>)>
    where
        FG: FnOnce() -> D,
        FV: FnOnce() -> D,
    {
        if ungrouped {
            self.ungrouped += 1;
            return None;
        }
        let slot = self.group_slot(key, display);
        let spec = &self.spec;
        let entry = Entry { ts, payload };
        let n = match &mut self.groups.val_mut(slot).window {
            Window::Count(t) => count_add(t, spec.keep, spec.timespan, entry),
            Window::Distinct(vals) => match value {
                None => return None,
                Some((vk, show)) => distinct_add(vals, spec.keep, spec.timespan, vk, show, entry),
            },
            Window::Ordered(chains) => {
                // the reference returns len(refs) when the last step's chain is in the window,
                // without the condition's check
                ordered_add(chains, spec.timespan, steps, entry)?
            }
        };
        if !matches!(spec.kind, Kind::Ordered(_)) && !spec.check(n) {
            return None;
        }
        let (_k, g) = self.groups.remove(slot);
        self.fired += 1;
        Some((n, g))
    }

    /// A removed group's window kept, emptied, for a new group (up to [`SPARE_WINDOWS`],
    /// each with room for at most [`SPARE_ENTRIES`]).
    pub fn recycle(&mut self, group: Group<K, D, P>) {
        let mut window = group.window;
        if self.spare.len() < SPARE_WINDOWS && window.capacity() <= SPARE_ENTRIES {
            window.clear();
            self.spare.push(window);
        }
    }

    /// Drop the groups whose newest entry is older than the window ending at `watermark`.
    pub fn sweep(&mut self, watermark: f64) -> usize {
        let cutoff = watermark - self.spec.timespan;
        let stale: Vec<usize> = self
            .groups
            .slots()
            .into_iter()
            .filter(|&i| self.groups.val(i).newest() < cutoff)
            .collect();
        for &i in &stale {
            let (_, group) = self.groups.remove(i);
            self.recycle(group);
        }
        stale.len()
    }

    /// A restored group (`self.groups[key] = st`): replaces the window of a present key in
    /// place, as a dict assignment does, else appends.
    pub fn put(&mut self, key: K, display: D, window: Window<K, D, P>) {
        match self.groups.find(&key) {
            Some(i) => self.groups.val_mut(i).window = window,
            None => {
                self.groups.push_back(key, Group { display, window });
            }
        }
    }
}

/// `CountState.add`: keep time order (an older entry is inserted after its equals, as
/// `bisect.insort` does), at most `keep` entries (a full deque drops its oldest), then drop
/// what is older than the window ending at the newest entry.
fn count_add<P>(t: &mut VecDeque<Entry<P>>, keep: usize, timespan: f64, entry: Entry<P>) -> usize {
    let ts = entry.ts;
    match t.back() {
        Some(back) if ts < back.ts => {
            let (mut lo, mut hi) = (0, t.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if ts < t[mid].ts {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            t.insert(lo, entry);
            while t.len() > keep {
                t.pop_front();
            }
        }
        _ => {
            if t.len() >= keep {
                t.pop_front();
            }
            t.push_back(entry);
        }
    }
    let Some(back) = t.back() else {
        return 0;
    };
    let cutoff = back.ts - timespan;
    while let Some(front) = t.front() {
        if front.ts < cutoff {
            t.pop_front();
        } else {
            break;
        }
    }
    t.len()
}

/// `OrderedState.add_rule`: for each place of the rule in the list (last first), start a
/// chain (step 0) or extend the previous step's chain when it is in the window and started no
/// earlier than the one held; fires when the last step's chain is in the window.
fn ordered_add<P: Clone>(
    chains: &mut [Option<Chain<P>>],
    timespan: f64,
    steps: &[usize],
    entry: Entry<P>,
) -> Option<usize> {
    let ts = entry.ts;
    let cutoff = ts - timespan;
    for &k in steps {
        if k >= chains.len() {
            continue;
        }
        if k == 0 {
            chains[0] = Some((ts, vec![entry.clone()]));
            continue;
        }
        let Some((start, prev)) = &chains[k - 1] else {
            continue;
        };
        if *start < cutoff {
            continue;
        }
        let take = match &chains[k] {
            None => true,
            Some((cur, _)) => *start >= *cur,
        };
        if take {
            let keep = prev.len().min(CHAIN_ENTRIES - 1);
            let mut es = Vec::with_capacity(keep + 1);
            es.extend(prev[prev.len() - keep..].iter().cloned());
            es.push(entry.clone());
            chains[k] = Some((*start, es));
        }
    }
    match chains.last() {
        Some(Some((start, _))) if *start >= cutoff => Some(chains.len()),
        _ => None,
    }
}

/// `DistinctState.add`: the value's newest entry (an older one does not replace it), the
/// value moved to the back, then the oldest values dropped while outside the window or past
/// `keep`.
fn distinct_add<K: Hash + Eq, D, P, F: FnOnce() -> D>(
    vals: &mut Values<K, (D, Entry<P>)>,
    keep: usize,
    timespan: f64,
    vk: K,
    show: F,
    entry: Entry<P>,
) -> usize {
    let ts = entry.ts;
    match vals.touch(&vk) {
        Ok((_, held)) => {
            if held.ts <= ts {
                *held = entry;
            }
        }
        Err(at) => vals.push_vacant(at, vk, (show(), entry)),
    }
    let cutoff = ts - timespan;
    vals.drop_front_while(|(_, e)| e.ts < cutoff);
    while vals.len() > keep {
        vals.pop_front();
    }
    vals.len()
}

/// Values a [`Values`] holds in a plain vector before it becomes an [`Lru`]: as many as an
/// [`Lru`] holds before it indexes them, so the map it becomes indexes at once.
const FEW_VALUES: usize = UNINDEXED;

/// A value_count window's values, oldest first: a vector while they are few, then an [`Lru`]
/// (boxed: the map is 152 bytes, and in place it would make every group's slot larger
/// whatever its kind).
///
/// Why not the map from the start: at the group bound most groups hold one value (on the
/// rules bench 89,520 of 92,773 sources are seen once), and a new group takes over the
/// evicted one's window, cold. As a boxed map, one value was three allocations on up to six
/// cache lines (the box, its nodes with room for four, its links); a vector of one value is
/// one allocation of one entry. On the rules bench, the ruleset without its value_count
/// window keyed by source address ran 12 % more lines per CPU second; with the vector the
/// whole ruleset ran 2.5-6.9 % more (three pairs side by side) in 4-6 MB less memory.
pub enum Values<K, V> {
    Few(Vec<(K, V)>),
    Many(Box<Lru<K, V>>),
}

impl<K, V> Default for Values<K, V> {
    fn default() -> Self {
        Values::Few(Vec::new())
    }
}

impl<K: Hash + Eq, V> Values<K, V> {
    pub fn len(&self) -> usize {
        match self {
            Values::Few(v) => v.len(),
            Values::Many(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empty, keeping what it allocated.
    pub fn clear(&mut self) {
        match self {
            Values::Few(v) => v.clear(),
            Values::Many(m) => m.clear(),
        }
    }

    /// Entries it has room for without allocating.
    pub fn capacity(&self) -> usize {
        match self {
            Values::Few(v) => v.capacity(),
            Values::Many(m) => m.capacity(),
        }
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        let (few, many) = match self {
            Values::Few(v) => (Some(v.iter().map(|(k, v)| (k, v))), None),
            Values::Many(m) => (None, Some(m.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// `key`'s value, made the newest; or where to append it ([`Values::push_vacant`]).
    pub fn touch(&mut self, key: &K) -> Result<&mut V, Vacant> {
        match self {
            Values::Few(v) => {
                let Some(i) = v.iter().position(|(k, _)| k == key) else {
                    return Err(Vacant(None));
                };
                v[i..].rotate_left(1);
                let last = v.len() - 1; // at least i + 1 items
                Ok(&mut v[last].1)
            }
            Values::Many(m) => {
                let i = m.lookup(key)?;
                m.move_to_back(i);
                Ok(m.val_mut(i))
            }
        }
    }

    /// Append `key`, which [`Values::touch`] found absent (`at`).
    pub fn push_vacant(&mut self, at: Vacant, key: K, val: V) {
        match self {
            Values::Few(v) if v.len() < FEW_VALUES => {
                if v.len() == v.capacity() {
                    // from room for one, doubling (1, 2, 4, 8): most groups hold one value
                    v.reserve_exact(v.len().max(1));
                }
                v.push((key, val));
            }
            Values::Few(v) => {
                let mut m = Box::new(Lru::new());
                for (k, x) in v.drain(..) {
                    m.push_back(k, x);
                }
                m.push_back(key, val);
                *self = Values::Many(m);
            }
            Values::Many(m) => {
                m.push_vacant(at, key, val);
            }
        }
    }

    pub fn pop_front(&mut self) -> Option<(K, V)> {
        match self {
            Values::Few(v) => (!v.is_empty()).then(|| v.remove(0)),
            Values::Many(m) => m.pop_front(),
        }
    }

    /// Drops the oldest values while `old` holds for them.
    pub fn drop_front_while(&mut self, old: impl Fn(&V) -> bool) {
        match self {
            Values::Few(v) => {
                let n = v.iter().take_while(|(_, x)| old(x)).count();
                v.drain(..n);
            }
            Values::Many(m) => {
                while let Some(i) = m.front() {
                    if !old(m.val(i)) {
                        break;
                    }
                    m.pop_front();
                }
            }
        }
    }
}

impl<K: Hash + Eq, D, P> Values<K, (D, Entry<P>)> {
    /// A restored snapshot's item, as its dict assignment does: a present `key`'s entry
    /// replaced in place (its order and its value as first seen kept), else `key` appended
    /// with the value as first seen that `shown` gives.
    pub fn put(&mut self, key: K, entry: Entry<P>, shown: impl FnOnce() -> D) {
        let present = match self {
            Values::Few(v) => v.iter_mut().find(|(k, _)| *k == key).map(|(_, x)| x),
            Values::Many(m) => m.find(&key).map(|i| m.val_mut(i)),
        };
        match present {
            Some(held) => held.1 = entry,
            None => self.push_vacant(Vacant(None), key, (shown(), entry)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference's algorithm written the plain way (vectors, linear scans), to hold the
    /// O(1) structures to it.
    #[derive(Default, Clone)]
    struct ModelRt {
        groups: Vec<(u8, ModelWin)>,
        evicted: u64,
        fired: u64,
        ungrouped: u64,
    }

    #[derive(Clone)]
    enum ModelWin {
        Count(Vec<(f64, u32)>),
        Distinct(Vec<(u8, (f64, u32))>),
    }

    impl ModelRt {
        fn add(
            &mut self,
            spec: &Spec,
            key: Option<u8>,
            ts: f64,
            id: u32,
            value: Option<u8>,
        ) -> Option<(usize, Vec<u32>)> {
            let Some(key) = key else {
                self.ungrouped += 1;
                return None;
            };
            let pos = match self.groups.iter().position(|(k, _)| *k == key) {
                Some(p) => {
                    let g = self.groups.remove(p);
                    self.groups.push(g);
                    self.groups.len() - 1
                }
                None => {
                    if self.groups.len() >= spec.max_groups && !self.groups.is_empty() {
                        self.groups.remove(0);
                        self.evicted += 1;
                    }
                    let w = match spec.kind {
                        Kind::Count => ModelWin::Count(Vec::new()),
                        Kind::Distinct => ModelWin::Distinct(Vec::new()),
                        Kind::Ordered(_) => unreachable!("not modelled"),
                    };
                    self.groups.push((key, w));
                    self.groups.len() - 1
                }
            };
            let n = match &mut self.groups[pos].1 {
                ModelWin::Count(t) => {
                    let at = t.iter().position(|e| ts < e.0).unwrap_or(t.len());
                    t.insert(at, (ts, id));
                    while t.len() > spec.keep {
                        t.remove(0);
                    }
                    let cutoff = t.last().unwrap().0 - spec.timespan;
                    while !t.is_empty() && t[0].0 < cutoff {
                        t.remove(0);
                    }
                    t.len()
                }
                ModelWin::Distinct(vals) => {
                    let v = value?;
                    let e = match vals.iter().position(|(k, _)| *k == v) {
                        Some(p) => {
                            let (k, old) = vals.remove(p);
                            (k, if old.0 <= ts { (ts, id) } else { old })
                        }
                        None => (v, (ts, id)),
                    };
                    vals.push(e);
                    let cutoff = ts - spec.timespan;
                    while !vals.is_empty() && vals[0].1 .0 < cutoff {
                        vals.remove(0);
                    }
                    while vals.len() > spec.keep {
                        vals.remove(0);
                    }
                    vals.len()
                }
            };
            if !spec.check(n) {
                return None;
            }
            let (_, w) = self.groups.remove(pos);
            self.fired += 1;
            let ids = match w {
                ModelWin::Count(t) => t.iter().map(|e| e.1).collect(),
                ModelWin::Distinct(vals) => {
                    let mut es: Vec<(f64, u32)> = vals.iter().map(|v| v.1).collect();
                    es.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                    es.iter().map(|e| e.1).collect()
                }
            };
            Some((n, ids))
        }
    }

    #[test]
    fn a_value_count_window_past_its_few_values_keeps_them_in_order() {
        let mut w: Windows<u8, u8, u32> = Windows::new(spec(Kind::Distinct, 20, 4, Op::Gte, 99.0));
        for v in 0..12u8 {
            w.add(
                7,
                false,
                || 7,
                f64::from(v),
                u32::from(v),
                Some((v, move || v)),
                &[],
            );
        }
        // the oldest value seen again moves to the back
        w.add(7, false, || 7, 11.0, 100, Some((0, || 0)), &[]);
        let slot = w.groups.find(&7).expect("the group");
        let Window::Distinct(vals) = &w.groups.val(slot).window else {
            panic!("a value_count window");
        };
        assert!(matches!(vals, Values::Many(_)));
        let order: Vec<u8> = vals.iter().map(|(k, _)| *k).collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0]);
        let ids: Vec<u32> = w
            .groups
            .val(slot)
            .entries()
            .iter()
            .map(|e| e.payload)
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 100]);
    }

    fn spec(kind: Kind, keep: usize, max_groups: usize, op: Op, threshold: f64) -> Spec {
        Spec {
            kind,
            timespan: 10.0,
            keep,
            max_groups,
            checks: vec![(op, threshold)],
        }
    }

    fn run(spec: &Spec, events: &[(Option<u8>, i8, Option<u8>)]) {
        let mut w: Windows<u8, u8, u32> = Windows::new(spec.clone());
        let mut m = ModelRt::default();
        for (id, &(key, t, value)) in events.iter().enumerate() {
            let ts = f64::from(t) / 2.0;
            let id = id as u32;
            let got = w
                .add(
                    key.unwrap_or(0),
                    key.is_none(),
                    || key.unwrap_or(0),
                    ts,
                    id,
                    value.map(|v| (v, move || v)),
                    &[],
                )
                .map(|(n, g)| {
                    let entries = g.entries().iter().map(|e| e.payload).collect::<Vec<_>>();
                    // as the binding does: a later new group opens on this window, emptied
                    w.recycle(g);
                    (n, entries)
                });
            let want = m.add(spec, key, ts, id, value);
            assert_eq!(got, want, "event {id}");
            assert_eq!(w.groups.len(), m.groups.len());
            let order: Vec<u8> = w.groups.iter().map(|(k, _)| *k).collect();
            let model: Vec<u8> = m.groups.iter().map(|(k, _)| *k).collect();
            assert_eq!(order, model);
        }
        assert_eq!(
            (w.evicted, w.fired, w.ungrouped),
            (m.evicted, m.fired, m.ungrouped)
        );
    }

    #[test]
    fn recycle_keeps_only_small_emptied_windows() {
        let mut w: Windows<u8, u8, u32> = Windows::new(spec(Kind::Count, 1000, 10, Op::Gte, 1.0));
        let group = |n: u32| Group {
            display: 0,
            window: Window::Count(
                (0..n)
                    .map(|p| Entry {
                        ts: 0.0,
                        payload: p,
                    })
                    .collect(),
            ),
        };
        w.recycle(group(3));
        w.recycle(group(500)); // grown past SPARE_ENTRIES: freed, not kept
        assert_eq!(w.spare.len(), 1);
        match w.empty_window() {
            Window::Count(t) => assert!(t.is_empty() && t.capacity() >= 3),
            _ => panic!("a count window"),
        }
        assert!(w.spare.is_empty());
        for _ in 0..SPARE_WINDOWS + 5 {
            w.recycle(group(1));
        }
        assert_eq!(w.spare.len(), SPARE_WINDOWS);
    }

    #[test]
    fn count_fires_at_threshold_and_forgets_the_group() {
        let s = spec(Kind::Count, 3, 10, Op::Gte, 3.0);
        let mut w: Windows<u8, u8, u32> = Windows::new(s);
        let none: Value<u8, fn() -> u8> = None;
        assert!(w.add(1, false, || 1, 1.0, 1, none, &[]).is_none());
        assert!(w
            .add(1, false, || 1, 2.0, 2, None::<(u8, fn() -> u8)>, &[])
            .is_none());
        let (n, g) = w
            .add(1, false, || 1, 3.0, 3, None::<(u8, fn() -> u8)>, &[])
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(g.entries().len(), 3);
        assert_eq!(w.groups.len(), 0);
        assert_eq!(w.fired, 1);
    }

    #[test]
    fn lru_evicts_the_least_recently_used_group() {
        let s = spec(Kind::Count, 5, 2, Op::Gte, 99.0);
        run(
            &s,
            &[
                (Some(1), 0, None),
                (Some(2), 1, None),
                (Some(1), 2, None),
                (Some(3), 3, None),
            ],
        );
        let mut w: Windows<u8, u8, u32> = Windows::new(s);
        for (k, t) in [(1u8, 0.0), (2, 1.0), (1, 2.0), (3, 3.0)] {
            w.add(k, false, || k, t, 0, None::<(u8, fn() -> u8)>, &[]);
        }
        let keys: Vec<u8> = w.groups.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![1, 3]);
        assert_eq!(w.evicted, 1);
    }

    #[test]
    fn sweep_drops_groups_older_than_the_window() {
        let s = spec(Kind::Distinct, 5, 10, Op::Gte, 99.0);
        let mut w: Windows<u8, u8, u32> = Windows::new(s);
        w.add(1, false, || 1, 0.0, 0, Some((7, || 7)), &[]);
        w.add(2, false, || 2, 20.0, 1, Some((7, || 7)), &[]);
        assert_eq!(w.sweep(25.0), 1);
        assert_eq!(w.groups.len(), 1);
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Gte),
            Just(Op::Gt),
            Just(Op::Lte),
            Just(Op::Lt),
            Just(Op::Eq),
            Just(Op::Neq)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random keys (some missing), times (late and out of order), values and bounds:
        /// the same answers, group order and counters as the plain model.
        #[test]
        fn windows_agree_with_the_plain_model(
            distinct in any::<bool>(),
            keep in 1usize..6,
            max_groups in 1usize..4,
            o in op(),
            threshold in 0u8..6,
            events in proptest::collection::vec(
                (proptest::option::weighted(0.9, 0u8..5), any::<i8>(), proptest::option::weighted(0.8, 0u8..4)),
                0..120,
            ),
        ) {
            let kind = if distinct { Kind::Distinct } else { Kind::Count };
            run(&spec(kind, keep, max_groups, o, f64::from(threshold)), &events);
        }

        /// The same, with more distinct values than a value_count window holds in its plain
        /// vector ([`FEW_VALUES`]): the values go on in order in the map they move to.
        #[test]
        fn many_values_agree_with_the_plain_model(
            keep in 6usize..20,
            max_groups in 1usize..3,
            o in op(),
            threshold in 0u8..30,
            events in proptest::collection::vec(
                // times within a window, so that the values pile up
                (proptest::option::weighted(0.95, 0u8..2), -6i8..6, proptest::option::weighted(0.9, 0u8..24)),
                0..200,
            ),
        ) {
            run(&spec(Kind::Distinct, keep, max_groups, o, f64::from(threshold)), &events);
        }

        /// The map itself: any mix of inserts, moves, removals and evictions in place keeps
        /// order and lookups, below and past the entries it holds unhashed, across its index's
        /// growth, and after it emptied.
        #[test]
        fn lru_keeps_insertion_order(ops in proptest::collection::vec((0u8..4, 0u8..48), 0..400)) {
            let mut l: Lru<u8, ()> = Lru::new();
            let mut model: Vec<u8> = Vec::new();
            for (op, k) in ops {
                match (op, l.find(&k)) {
                    (0, None) if k % 2 == 0 => { l.push_back(k, ()); model.push(k); }
                    (0, None) => {
                        let Err(at) = l.lookup(&k) else { panic!("found what find did not") };
                        l.push_vacant(at, k, ());
                        model.push(k);
                    }
                    (0, Some(i)) | (1, Some(i)) => {
                        l.move_to_back(i);
                        let p = model.iter().position(|x| *x == k).unwrap();
                        model.remove(p);
                        model.push(k);
                    }
                    (2, Some(i)) => {
                        l.remove(i);
                        model.retain(|x| *x != k);
                    }
                    (3, None) => {
                        let Err(at) = l.lookup(&k) else { panic!("found what find did not") };
                        match l.replace_front(at, k) {
                            Ok(i) => {
                                prop_assert_eq!(*l.key(i), k);
                                model.remove(0);
                                model.push(k);
                            }
                            Err(back) => {
                                prop_assert_eq!(back, k);
                                prop_assert!(model.is_empty());
                            }
                        }
                    }
                    _ => {}
                }
                let got: Vec<u8> = l.iter().map(|(k, _)| *k).collect();
                prop_assert_eq!(&got, &model);
                prop_assert_eq!(l.len(), model.len());
                for k in 0u8..48 {
                    let found = l.find(&k).map(|i| *l.key(i));
                    prop_assert_eq!(found, model.contains(&k).then_some(k));
                }
            }
        }
    }
}
