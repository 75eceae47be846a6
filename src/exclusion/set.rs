//! A compact in-memory set of 128-bit keyed hashes: the hot path of every lookup.
//!
//! Open addressing with linear probing over one flat `Vec<u128>`, no per-entry allocation. The
//! hashes are already uniformly random (keyed blake3), so the slot index is the hash's low 64 bits
//! mapped onto the table with a multiply-shift, which lets the table be any size rather than a power
//! of two: with a maximum load of 0.8 and 1.5x growth, memory stays between 20 and 30 bytes per entry.
//! `0` marks an empty slot; a hash that is truly `0` is stored as `1` (a 2^-128 collision).
//!
//! In front of the table sits a register-blocked Bloom filter (one `u64` word per 8 slots, 4 bits set
//! per entry, chosen from the hash's high 64 bits). It is about 1/16 of the table's size, small enough
//! to stay mostly in the CPU's last-level cache, so the common case of a lookup for someone who never
//! opted out is answered without touching the big table (about 1 in 20 misses still probe it).

/// Maximum fill before the table grows, as a fraction `NUM / DEN`.
const LOAD_NUM: usize = 4;
const LOAD_DEN: usize = 5;
const MIN_SLOTS: usize = 16;

/// A set of 128-bit hashes. Not synchronised: the list wraps it in a lock.
#[derive(Debug, Clone, Default)]
pub struct HashSet128 {
    slots: Vec<u128>,
    filter: Vec<u64>,
    len: usize,
}

impl HashSet128 {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set that holds `entries` without growing.
    pub fn with_capacity(entries: usize) -> Self {
        let slots = slots_for(entries);
        Self {
            slots: vec![0; slots],
            filter: vec![0; words_for(slots)],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the table and its filter (not counting the struct itself).
    pub fn table_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u128>()
            + self.filter.len() * std::mem::size_of::<u64>()
    }

    pub fn contains(&self, hash: u128) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let hash = stored(hash);
        if !filter_has(&self.filter, hash) {
            return false;
        }
        let mut i = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == hash {
                return true;
            }
            if slot == 0 {
                return false;
            }
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
    }

    /// Inserts `hash`; `true` when it was not there before.
    pub fn insert(&mut self, hash: u128) -> bool {
        if (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow(self.len + 1);
        }
        let hash = stored(hash);
        let inserted = place(&mut self.slots, hash);
        if inserted {
            filter_add(&mut self.filter, hash);
            self.len += 1;
        }
        inserted
    }

    /// Makes room for `additional` more entries at once (one rehash instead of several).
    pub fn reserve(&mut self, additional: usize) {
        let wanted = self.len.saturating_add(additional);
        if wanted * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow(wanted);
        }
    }

    fn home(&self, hash: u128) -> usize {
        home(hash, self.slots.len())
    }

    fn grow(&mut self, at_least: usize) {
        let grown = self.slots.len() + self.slots.len() / 2;
        let size = grown.max(slots_for(at_least));
        let mut slots = vec![0u128; size];
        let mut filter = vec![0u64; words_for(size)];
        for &h in self.slots.iter().filter(|&&h| h != 0) {
            place(&mut slots, h);
            filter_add(&mut filter, h);
        }
        self.slots = slots;
        self.filter = filter;
    }
}

/// The slot count that holds `entries` at the maximum load.
fn slots_for(entries: usize) -> usize {
    (entries.saturating_mul(LOAD_DEN) / LOAD_NUM + 1).max(MIN_SLOTS)
}

/// One filter word per 8 slots: 8 filter bits per slot, 10 to 15 per entry.
fn words_for(slots: usize) -> usize {
    (slots / 8).max(1)
}

/// The filter word for `hash` and the 4 bits it sets there, both from the hash's high 64 bits (the
/// table's home slot uses the low 64, so the two are independent).
fn filter_pos(hash: u128, words: usize) -> (usize, u64) {
    let high = (hash >> 64) as u64;
    let word = ((u128::from(high >> 32) * words as u128) >> 32) as usize;
    let bits = (1u64 << (high & 63))
        | (1u64 << ((high >> 6) & 63))
        | (1u64 << ((high >> 12) & 63))
        | (1u64 << ((high >> 18) & 63));
    (word, bits)
}

fn filter_has(filter: &[u64], hash: u128) -> bool {
    let (word, bits) = filter_pos(hash, filter.len());
    filter[word] & bits == bits
}

fn filter_add(filter: &mut [u64], hash: u128) {
    let (word, bits) = filter_pos(hash, filter.len());
    filter[word] |= bits;
}

fn stored(hash: u128) -> u128 {
    if hash == 0 { 1 } else { hash }
}

/// Maps the hash's low 64 bits onto `0..len` (Lemire's multiply-shift reduction).
fn home(hash: u128, len: usize) -> usize {
    let low = hash as u64;
    ((u128::from(low) * len as u128) >> 64) as usize
}

fn place(slots: &mut [u128], hash: u128) -> bool {
    let len = slots.len();
    let mut i = home(hash, len);
    loop {
        let slot = slots[i];
        if slot == hash {
            return false;
        }
        if slot == 0 {
            slots[i] = hash;
            return true;
        }
        i += 1;
        if i == len {
            i = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of well-mixed 128-bit values (splitmix64 pairs).
    fn hashes(seed: u64, n: usize) -> Vec<u128> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| (u128::from(next()) << 64) | u128::from(next()))
            .collect()
    }

    #[test]
    fn inserted_hashes_are_found_and_others_are_not() {
        let mut set = HashSet128::new();
        let present = hashes(1, 10_000);
        for &h in &present {
            assert!(set.insert(h));
        }
        assert_eq!(set.len(), present.len());
        assert!(present.iter().all(|&h| set.contains(h)));
        assert!(hashes(2, 10_000).iter().all(|&h| !set.contains(h)));
    }

    #[test]
    fn duplicates_are_not_counted_twice() {
        let mut set = HashSet128::new();
        assert!(set.insert(42));
        assert!(!set.insert(42));
        assert_eq!(set.len(), 1);
        assert!(!set.is_empty());
    }

    #[test]
    fn zero_hash_is_a_member_not_an_empty_slot() {
        let mut set = HashSet128::new();
        assert!(!set.contains(0));
        set.insert(0);
        assert!(set.contains(0));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn empty_set_contains_nothing() {
        let set = HashSet128::new();
        assert!(!set.contains(7));
        assert!(set.is_empty());
    }

    #[test]
    fn memory_stays_within_thirty_three_bytes_per_entry_after_growth() {
        let mut set = HashSet128::new();
        for h in hashes(3, 100_000) {
            set.insert(h);
        }
        let per_entry = set.table_bytes() as f64 / set.len() as f64;
        // 16-byte slots at a load of at most 0.8 cannot take less than 20 bytes an entry.
        assert!(
            (20.0..=32.5).contains(&per_entry),
            "{per_entry} bytes per entry"
        );
    }

    /// Each of four 6-bit fields of the hash's high half names one bit of the filter word; fields
    /// that coincide set that bit once.
    #[test]
    fn the_filter_sets_the_bit_each_of_four_fields_names() {
        let with_fields = |fields: [u64; 4]| -> u128 {
            let high = fields[0] | fields[1] << 6 | fields[2] << 12 | fields[3] << 18;
            u128::from(high) << 64
        };
        let bits = |fields| filter_pos(with_fields(fields), 8).1;
        assert_eq!(bits([1, 2, 3, 4]), 0b11110);
        assert_eq!(bits([5, 5, 7, 9]), 1 << 5 | 1 << 7 | 1 << 9);
        assert_eq!(bits([63, 9, 9, 0]), 1 << 63 | 1 << 9 | 1);
        assert_eq!(bits([1, 2, 40, 40]), 1 << 1 | 1 << 2 | 1 << 40);
    }

    /// The home slot spreads the hash's low 64 bits evenly over the table, whatever its size.
    #[test]
    fn the_home_slot_scales_the_low_half_onto_the_table() {
        assert_eq!(home(0, 1000), 0);
        assert_eq!(home(1 << 63, 1000), 500);
        assert_eq!(home(u128::from(u64::MAX), 1000), 999);
        assert_eq!(
            home(u128::MAX << 64, 1000),
            0,
            "the high half plays no part"
        );
    }

    #[test]
    fn the_filter_turns_away_most_misses() {
        let mut set = HashSet128::new();
        for h in hashes(5, 100_000) {
            set.insert(h);
        }
        let absent = hashes(6, 100_000);
        let passed = absent
            .iter()
            .filter(|&&h| filter_has(&set.filter, stored(h)))
            .count();
        assert!(
            passed < 8_000,
            "{passed} of 100000 misses passed the filter"
        );
    }

    /// `reserve` grows the table once for what is coming, and only when it has no room for it.
    #[test]
    fn reserve_grows_once_and_only_when_needed() {
        let mut set = HashSet128::with_capacity(1000);
        let sized = set.table_bytes();
        set.reserve(900);
        assert_eq!(set.table_bytes(), sized, "room for 900 already");
        set.reserve(1100);
        let grown = set.table_bytes();
        assert!(grown > sized, "no room for 1100");
        for h in hashes(7, 1100) {
            set.insert(h);
        }
        assert_eq!(set.table_bytes(), grown, "one rehash for all 1100");
        let mut empty = HashSet128::new();
        empty.reserve(1000);
        assert_eq!(empty.table_bytes(), sized);
    }

    #[test]
    fn reserve_avoids_regrowth() {
        let mut set = HashSet128::with_capacity(1000);
        let before = set.table_bytes();
        // 1000 entries at a load of 0.8 take 1251 slots of 16 bytes and 156 filter words of 8.
        assert_eq!(before, 1251 * 16 + 156 * 8);
        for h in hashes(4, 1000) {
            set.insert(h);
        }
        assert_eq!(set.table_bytes(), before);
    }
}
