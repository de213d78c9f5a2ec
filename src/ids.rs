//! Time-sortable 64-bit ids for stored messages (offline now, the MAM archive later): the id
//! order is the arrival order, so "everything after id X" is one indexed range query.
//!
//! Layout: 41 bits of milliseconds since 2024-01-01, 10 bits of node number (for the cluster),
//! 12 bits of sequence within the millisecond. The top bit stays clear so ids fit an `i64`.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const EPOCH_MS: u64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
/// How many node numbers there are (0 to `NODES - 1`).
pub const NODES: u16 = 1 << NODE_BITS;
const SEQ_BITS: u32 = 12;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

pub struct IdGenerator {
    node: u64,
    /// (last millisecond used, next sequence number in it)
    state: Mutex<(u64, u64)>,
}

impl IdGenerator {
    pub fn new(node: u16) -> Self {
        IdGenerator {
            node: u64::from(node) & ((1 << NODE_BITS) - 1),
            state: Mutex::new((0, 0)),
        }
    }

    /// A fresh id, strictly greater than every id this generator returned before, even if the
    /// wall clock steps backwards.
    pub fn next_id(&self) -> i64 {
        let now = now_ms().saturating_sub(EPOCH_MS);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last_ms, next_seq) = *state;
        let (ms, seq) = if now > last_ms {
            (now, 0)
        } else if next_seq <= SEQ_MASK {
            (last_ms, next_seq)
        } else {
            // Sequence exhausted in this millisecond: borrow the next one.
            (last_ms + 1, 0)
        };
        *state = (ms, seq + 1);
        ((ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | seq) as i64
    }

    /// The node number encoded in an id.
    pub fn node_of(id: i64) -> u16 {
        ((id as u64 >> SEQ_BITS) & ((1 << NODE_BITS) - 1)) as u16
    }

    /// Milliseconds since the Unix epoch encoded in an id.
    pub fn timestamp_ms(id: i64) -> i64 {
        ((id as u64 >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS) as i64
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_strictly_and_carry_their_time() {
        let gen = IdGenerator::new(3);
        let before = now_ms() as i64;
        let ids: Vec<i64> = (0..10_000).map(|_| gen.next_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|&id| id > 0));
        let ts = IdGenerator::timestamp_ms(ids[0]);
        assert!(ts >= before && ts <= before + 5_000, "{ts} vs {before}");
        assert!(ids.iter().all(|&id| IdGenerator::node_of(id) == 3));
    }

    #[test]
    fn two_nodes_never_make_the_same_id() {
        let a = IdGenerator::new(0);
        let b = IdGenerator::new(NODES - 1);
        let from_a: std::collections::HashSet<i64> = (0..20_000).map(|_| a.next_id()).collect();
        assert!((0..20_000).all(|_| !from_a.contains(&b.next_id())));
        assert_eq!(IdGenerator::node_of(b.next_id()), NODES - 1);
    }
}
