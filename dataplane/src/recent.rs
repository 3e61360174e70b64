//! A fixed-size cache of what was made for recent keys (the flow decoder's address and port
//! texts): set-associative, so what senders choose can evict entries but never lengthen a
//! lookup.

/// What was made recently for a key (an address, an integer): a set-associative cache of
/// [`WAYS`] slots a set, the new entry taking an empty slot of its set, else one picked by
/// its hash. A cache, not a map: a lost entry is made again, so no chain or probe sequence
/// grows with what senders choose (no hash flooding, with a key-mixing hash a fraction of
/// SipHash's cost) and the memory is fixed.
pub struct RecentCache<V> {
    slots: Vec<Option<(u64, V)>>,
    seed: u64,
    /// log2 of the number of sets
    set_bits: u32,
}

/// Slots a set of a [`RecentCache`]: at the bench's ~21,000 addresses in 65,536 slots, one
/// way lost ~27 % of them to another address of the same slot; four lose ~1 %.
const WAYS: usize = 4;

impl<V> RecentCache<V> {
    /// `bits`: log2 of the slots (taken between 3 and 24).
    pub fn new(bits: u32) -> Self {
        let way_bits = WAYS.trailing_zeros();
        let set_bits = bits.clamp(way_bits + 1, 24) - way_bits;
        use std::hash::BuildHasher;
        RecentCache {
            slots: Vec::new(), // allocated at the first insert
            // random per cache: which keys share a set is not the sender's to choose
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8) | 1,
            set_bits,
        }
    }

    /// The key's set (its first slot) and the way it takes when its set is full.
    #[inline]
    fn place(&self, key: u64) -> (usize, usize) {
        let h = (key ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = (h ^ (h >> 29)).wrapping_mul(self.seed);
        (
            (h >> (64 - self.set_bits)) as usize * WAYS,
            h as usize % WAYS,
        )
    }

    #[inline]
    pub fn get(&self, key: u64) -> Option<&V> {
        let (set, _) = self.place(key);
        self.slots
            .get(set..set + WAYS)?
            .iter()
            .find_map(|s| match s {
                Some((k, v)) if *k == key => Some(v),
                _ => None,
            })
    }

    pub fn put(&mut self, key: u64, value: V) {
        if self.slots.is_empty() {
            self.slots.resize_with(WAYS << self.set_bits, || None);
        }
        let (set, way) = self.place(key);
        let ways = &mut self.slots[set..set + WAYS];
        let at = ways
            .iter()
            .position(|s| matches!(s, Some((k, _)) if *k == key))
            .or_else(|| ways.iter().position(Option::is_none))
            .unwrap_or(way);
        ways[at] = Some((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_put_is_found_and_another_is_not() {
        let mut c = RecentCache::new(8);
        assert_eq!(c.get(7), None);
        c.put(7, "seven");
        assert_eq!(c.get(7), Some(&"seven"));
        assert_eq!(c.get(8), None);
        c.put(7, "again");
        assert_eq!(c.get(7), Some(&"again"));
    }

    #[test]
    fn any_size_asked_is_usable() {
        for bits in [0, 1, 2, 3] {
            let mut c = RecentCache::new(bits);
            c.put(1, 1);
            assert_eq!(c.get(1), Some(&1), "{bits} bits");
        }
    }

    #[test]
    fn it_holds_at_most_its_slots_and_keeps_most_of_a_light_load() {
        let mut c = RecentCache::new(10);
        for k in 0..100_000u64 {
            c.put(k, k);
        }
        assert_eq!(c.slots.len(), 1024);
        let held = (0..100_000u64).filter(|&k| c.get(k) == Some(&k)).count();
        assert!(held <= 1024);
        let mut c = RecentCache::new(10);
        for k in 0..300u64 {
            c.put(k * 7919, k);
        }
        let kept = (0..300u64).filter(|&k| c.get(k * 7919) == Some(&k)).count();
        assert!(kept >= 290, "{kept} of 300 kept in 1,024 slots");
    }
}
