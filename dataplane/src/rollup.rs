//! Per-minute flow aggregates with bounded cardinality, the native twin of
//! `appliance/flows/rollup.py` (read its docstring for why: attacker-chosen keys, top keys
//! plus "other", totals exact). Same buckets, same fold (keep the largest eighth by bytes,
//! ties in arrival order), same admission threshold after a fold, same rows at flush, in
//! the same order, so the stored `flow_rollups` rows are identical.
//!
//! Keys are text (what the rows store): an address, a (source, destination) pair, a
//! (port, transport) pair; `None` where the flow had no such field. Totals are `u128` and
//! saturate (the reference's are unbounded; the store clamps them to 64 bits anyway).

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// A key part's text, shared: the decoder hands the same address or port text to many
/// flows, and a key held by three dimensions is one allocation.
pub type Text = Arc<str>;
/// (first part, second part): an address is (address, None).
pub type Key = (Option<Text>, Option<Text>);
/// bytes, packets, flows.
pub type Totals = [u128; 3];
/// (minute, dimension index, key text, bytes, packets, flows).
pub type Row = (i64, usize, String, u128, u128, u128);

pub const OTHER: &str = "other";
pub const DIMENSIONS: [&str; 4] = [
    "source.ip",
    "destination.ip",
    "conversation",
    "destination.port",
];

/// One flow's contribution: its keys and counters.
pub struct Flow {
    pub created: f64,
    pub src: Option<Text>,
    pub dst: Option<Text>,
    pub port: Option<Text>,
    pub transport: Option<Text>,
    pub bytes: u128,
    pub packets: u128,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Slot {
    Key(Key),
    Other,
}

/// One dimension of one minute: keys in first-arrival order (as a Python dict keeps them).
#[derive(Default)]
struct Dim {
    index: FxHashMap<Slot, usize>,
    entries: Vec<(Slot, Totals)>,
}

fn add_to(t: &mut Totals, b: u128, p: u128) {
    t[0] = t[0].saturating_add(b);
    t[1] = t[1].saturating_add(p);
    t[2] = t[2].saturating_add(1);
}

impl Dim {
    fn insert(&mut self, slot: Slot, t: Totals) {
        self.index.insert(slot.clone(), self.entries.len());
        self.entries.push((slot, t));
    }

    fn get_mut(&mut self, slot: &Slot) -> Option<&mut Totals> {
        let i = *self.index.get(slot)?;
        Some(&mut self.entries[i].1)
    }
}

struct Bucket {
    minute: i64,
    dims: [Dim; 4],
    folded: u64,
    admit: [u128; 4],
}

impl Bucket {
    fn new(minute: i64) -> Bucket {
        Bucket {
            minute,
            dims: Default::default(),
            folded: 0,
            admit: [0; 4],
        }
    }

    fn count(&mut self, dim: usize, key: Key, b: u128, p: u128, max_keys: usize) {
        let slot = Slot::Key(key);
        if let Some(t) = self.dims[dim].get_mut(&slot) {
            add_to(t, b, p);
            return;
        }
        if b < self.admit[dim] {
            // After a fold: small newcomers go straight to "other" (which a fold created).
            if let Some(t) = self.dims[dim].get_mut(&Slot::Other) {
                add_to(t, b, p);
            }
            self.folded += 1;
            return;
        }
        if self.dims[dim].entries.len() >= max_keys {
            self.fold(dim);
        }
        self.dims[dim].insert(slot, [b, p, 1]);
    }

    /// Keep the largest eighth of the keys by bytes (ties: earlier first); the rest joins
    /// "other", which goes last; from now on a new key needs as many bytes as the smallest kept.
    fn fold(&mut self, dim: usize) {
        let d = std::mem::take(&mut self.dims[dim]);
        let mut other: Totals = [0; 3];
        let mut items: Vec<(Slot, Totals)> = Vec::with_capacity(d.entries.len());
        for (slot, t) in d.entries {
            match slot {
                Slot::Other => other = t,
                key => items.push((key, t)),
            }
        }
        let n = std::cmp::max(1, items.len() / 8);
        items.sort_by(|a, b| b.1[0].cmp(&a.1[0])); // stable: ties keep arrival order
        let rest = items.split_off(n.min(items.len()));
        let mut folded = 0u64;
        for (_, t) in &rest {
            other[0] = other[0].saturating_add(t[0]);
            other[1] = other[1].saturating_add(t[1]);
            other[2] = other[2].saturating_add(t[2]);
            folded += 1;
        }
        self.admit[dim] = items
            .iter()
            .map(|(_, t)| t[0])
            .min()
            .map_or(1, |m| m.max(1));
        let mut fresh = Dim::default();
        for (slot, t) in items {
            fresh.insert(slot, t);
        }
        fresh.insert(Slot::Other, other);
        self.dims[dim] = fresh;
        self.folded += folded;
    }
}

fn key_text(dim: usize, key: &Key) -> Option<String> {
    let (a, b) = key;
    let a = a.as_ref()?;
    let b = b.as_deref().unwrap_or("None");
    Some(match dim {
        2 => format!("{a} > {b}"),
        3 => format!("{a}/{b}"),
        _ => a.to_string(),
    })
}

pub struct Rollup {
    pub top_k: usize,
    pub max_keys: usize,
    buckets: FxHashMap<i64, Bucket>,
    pub flows: u64,
    pub folded: u64,
    folded_closed: u64,
}

impl Rollup {
    pub fn new(top_k: usize, max_keys: usize) -> Rollup {
        Rollup {
            top_k,
            max_keys,
            buckets: FxHashMap::default(),
            flows: 0,
            folded: 0,
            folded_closed: 0,
        }
    }

    /// Count flows in the minute each was received, in every dimension.
    pub fn add(&mut self, flows: impl IntoIterator<Item = Flow>) {
        let max_keys = self.max_keys;
        for f in flows {
            self.flows += 1;
            let minute = (f.created as i64).div_euclid(60) * 60;
            let bucket = self
                .buckets
                .entry(minute)
                .or_insert_with(|| Bucket::new(minute));
            let (b, p) = (f.bytes, f.packets);
            bucket.count(0, (f.src.clone(), None), b, p, max_keys);
            bucket.count(1, (f.dst.clone(), None), b, p, max_keys);
            bucket.count(2, (f.src, f.dst), b, p, max_keys);
            bucket.count(3, (f.port, f.transport), b, p, max_keys);
        }
        self.folded = self.buckets.values().map(|b| b.folded).sum::<u64>() + self.folded_closed;
    }

    fn rows(&self, bucket: &Bucket) -> Vec<Row> {
        let mut out = Vec::new();
        let k = self.top_k;
        for (dim, d) in bucket.dims.iter().enumerate() {
            let mut other: Totals = [0; 3];
            let mut items: Vec<(String, Totals)> = Vec::new();
            for (slot, t) in &d.entries {
                match slot {
                    Slot::Other => {
                        for i in 0..3 {
                            other[i] = other[i].saturating_add(t[i]);
                        }
                    }
                    Slot::Key(key) => match key_text(dim, key) {
                        Some(text) => items.push((text, *t)),
                        None => {
                            for i in 0..3 {
                                other[i] = other[i].saturating_add(t[i]);
                            }
                        }
                    },
                }
            }
            let mut order: Vec<usize> = (0..items.len()).collect();
            let mut keep: std::collections::HashSet<&str> = std::collections::HashSet::new();
            order.sort_by(|&a, &b| items[b].1[0].cmp(&items[a].1[0]));
            keep.extend(order.iter().take(k).map(|&i| items[i].0.as_str()));
            order.sort_by_key(|&i| i);
            order.sort_by(|&a, &b| items[b].1[1].cmp(&items[a].1[1]));
            keep.extend(order.iter().take(k).map(|&i| items[i].0.as_str()));
            let mut kept = Vec::new();
            for (text, t) in &items {
                if keep.contains(text.as_str()) {
                    kept.push((bucket.minute, dim, text.clone(), t[0], t[1], t[2]));
                } else {
                    for i in 0..3 {
                        other[i] = other[i].saturating_add(t[i]);
                    }
                }
            }
            out.extend(kept);
            if other[2] != 0 {
                out.push((
                    bucket.minute,
                    dim,
                    OTHER.to_owned(),
                    other[0],
                    other[1],
                    other[2],
                ));
            }
        }
        out
    }

    fn take(&mut self, before: Option<i64>) -> Vec<Row> {
        let mut minutes: Vec<i64> = self
            .buckets
            .keys()
            .copied()
            .filter(|m| before.is_none_or(|b| *m < b))
            .collect();
        minutes.sort_unstable();
        let mut rows = Vec::new();
        for m in minutes {
            if let Some(bucket) = self.buckets.remove(&m) {
                self.folded_closed += bucket.folded;
                rows.extend(self.rows(&bucket));
            }
        }
        rows
    }

    /// Rows of every minute before the one `now` is in, removing them from memory.
    pub fn take_closed(&mut self, now: f64) -> Vec<Row> {
        self.take(Some((now as i64).div_euclid(60) * 60))
    }

    pub fn take_all(&mut self) -> Vec<Row> {
        self.take(None)
    }

    /// Rows of minutes still open (not removed).
    pub fn open_rows(&self) -> Vec<Row> {
        let mut minutes: Vec<&i64> = self.buckets.keys().collect();
        minutes.sort_unstable();
        minutes
            .into_iter()
            .flat_map(|m| self.rows(&self.buckets[m]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, port: u16, bytes: u128) -> Flow {
        Flow {
            created: 120.5,
            src: Some(src.into()),
            dst: Some(dst.into()),
            port: Some(port.to_string().into()),
            transport: Some("tcp".into()),
            bytes,
            packets: 1,
        }
    }

    #[test]
    fn flows_count_in_every_dimension_of_their_minute() {
        let mut r = Rollup::new(10, 100);
        r.add([flow("a", "b", 443, 10), flow("a", "c", 443, 5)]);
        let rows = r.take_all();
        assert!(rows.contains(&(120, 0, "a".into(), 15, 2, 2)));
        assert!(rows.contains(&(120, 2, "a > c".into(), 5, 1, 1)));
        assert!(rows.contains(&(120, 3, "443/tcp".into(), 15, 2, 2)));
        assert_eq!(r.flows, 2);
    }

    #[test]
    fn a_full_dimension_folds_and_totals_stay_exact() {
        let mut r = Rollup::new(2, 16);
        r.add((0..100u128).map(|i| flow(&format!("s{i}"), "d", 1, i + 1)));
        let rows = r.take_all();
        let src: u128 = rows.iter().filter(|r| r.1 == 0).map(|r| r.3).sum();
        assert_eq!(src, (1..=100).sum::<u128>());
        assert!(r.folded > 0);
    }
}
