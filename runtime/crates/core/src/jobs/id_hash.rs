//! The hash of [`IdMap`](super::IdMap) and [`IdSet`](super::IdSet): ids in blocks of
//! [`BLOCK`] consecutive ones, each block's slots side by side, the blocks scattered.
//!
//! A `HashMap` (hashbrown) finds an entry's slot from the hash's low bits and filters a
//! group of 16 slots by its top seven. A job's entry is mostly looked up just after the
//! one before it (jobs start and end in the order of their ids), and a mixing hash
//! (foldhash before) sent each lookup of a million-job backlog to a cache line of its
//! own. Here an id's lowest four bits are kept as they are and the rest mixed, so a
//! block of 16 consecutive ids fills one group, read with one load of its control
//! bytes, its entries next to each other. The blocks are scattered, because a table
//! holding a long run of consecutive ids in consecutive slots (the id itself as its
//! hash) is one long cluster: a lookup of an id it does not hold, landing in that run,
//! probes group after group until it finds an empty slot. The top seven bits are mixed,
//! so the filter still tells ids apart. A key written in several parts (a tuple) is mixed
//! whole. (`nohash-hasher` keeps the id whole, with both faults above, and refuses keys
//! in several parts, which the service has: an org and a lane.)

use std::hash::{BuildHasher, Hasher};

/// Builds [`IdHasher`]s; the `S` of [`IdMap`](super::IdMap) and [`IdSet`](super::IdSet).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

/// The bits of the hash that pick a slot: all but the top seven.
const SLOT_BITS: u64 = (1 << 57) - 1;

/// Consecutive ids that share a group of slots.
const BLOCK: u64 = 16;

/// An odd constant with well-spread bits (2^64 ÷ the golden ratio).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Every bit of `n` spread over every bit of the result.
fn mix(n: u64) -> u64 {
    let h = (n ^ (n >> 29)).wrapping_mul(MIX);
    h ^ (h >> 32)
}

#[derive(Default)]
pub struct IdHasher {
    state: u64,
    parts: u32,
}

impl IdHasher {
    fn add(&mut self, part: u64) {
        self.state = match self.parts {
            0 => part,
            _ => (self.state.rotate_left(23) ^ part).wrapping_mul(MIX),
        };
        self.parts += 1;
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mixed = mix(self.state);
        match self.parts {
            // One number (an id): its block scattered, its place in the block kept.
            0 | 1 => {
                let slot = mix(self.state / BLOCK).wrapping_mul(BLOCK) | (self.state % BLOCK);
                (slot & SLOT_BITS) | (mixed & !SLOT_BITS)
            }
            _ => mixed,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// `new` and `with_capacity` for an [`IdMap`](super::IdMap) (the standard library gives
/// them only to maps with its own hasher).
pub trait HashMapExt {
    fn new() -> Self;
    fn with_capacity(capacity: usize) -> Self;
}

impl<K, V> HashMapExt for std::collections::HashMap<K, V, IdHash> {
    fn new() -> Self {
        Self::with_hasher(IdHash)
    }

    fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, IdHash)
    }
}

/// `new` and `with_capacity` for an [`IdSet`](super::IdSet).
pub trait HashSetExt {
    fn new() -> Self;
    fn with_capacity(capacity: usize) -> Self;
}

impl<K> HashSetExt for std::collections::HashSet<K, IdHash> {
    fn new() -> Self {
        Self::with_hasher(IdHash)
    }

    fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, IdHash)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;
    use crate::jobs::{IdMap, JobId, OrgId};

    #[test]
    fn a_block_of_consecutive_ids_sits_side_by_side_and_blocks_are_scattered() {
        let slot = |id: u64| IdHash.hash_one(JobId(id)) & SLOT_BITS;
        for id in 32..47 {
            assert_eq!(slot(id) + 1, slot(id + 1), "inside a block");
        }
        let blocks: std::collections::HashSet<u64> =
            (0..64).map(|block| slot(block * BLOCK) / BLOCK).collect();
        assert_eq!(blocks.len(), 64, "each block somewhere else");
        let spread =
            (0..64).filter(|block| slot((block + 1) * BLOCK) / BLOCK != slot(block * BLOCK) / BLOCK + 1);
        assert!(spread.count() > 60, "neighbouring blocks are not neighbours");
    }

    #[test]
    fn a_window_of_consecutive_ids_answers_for_the_ids_past_it() {
        // A backlog's window of consecutive ids (kept payloads), and the ids after it.
        let held: IdMap<JobId, u32> = (1_000_000..1_065_536).map(|id| (JobId(id), 0)).collect();
        assert!((2_000_000..2_100_000).all(|id| !held.contains_key(&JobId(id))));
        assert_eq!(held.len(), 65_536);
    }

    #[test]
    fn the_filter_bits_differ_between_neighbours() {
        let filters: std::collections::HashSet<u64> =
            (0..64u64).map(|id| IdHash.hash_one(JobId(id)) >> 57).collect();
        assert!(filters.len() > 32, "seven mixed bits, not a constant: {}", filters.len());
    }

    #[test]
    fn composite_keys_are_told_apart() {
        let mut map: IdMap<(OrgId, u64), u32> = HashMapExt::new();
        for org in 0..50 {
            for n in 0..50 {
                map.insert((OrgId(org), n), org * 100 + n as u32);
            }
        }
        assert_eq!(map.len(), 2_500);
        assert_eq!(map[&(OrgId(7), 9)], 709);
    }
}
