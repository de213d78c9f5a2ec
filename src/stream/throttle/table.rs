//! A map of tracked keys that stays bounded however many keys an attack brings.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What a table needs to know of an entry to decide whether it may go.
pub trait Tracked: Default {
    /// An attempt still holds on to it: removing it would lose a concurrency slot's count.
    fn busy(&self) -> bool;
    /// How much the entry remembers at `now` (its failures); 0 means nothing worth keeping.
    fn weight(&self, now: Instant, window: Duration) -> u32;
}

pub struct Table<K, V> {
    map: HashMap<K, V>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V: Tracked> Table<K, V> {
    pub fn new(cap: usize) -> Self {
        Table {
            map: HashMap::new(),
            cap,
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The entry for `key`, made room for when the table is full: first by dropping what has
    /// nothing left to remember, then the least remembered entries, down to three quarters of
    /// the cap so that the cost is paid once per many insertions. Busy entries always stay;
    /// there are no more of them than connections in SASL.
    pub fn entry(&mut self, key: K, now: Instant, window: Duration) -> &mut V {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.shrink(now, window);
        }
        self.map.entry(key).or_default()
    }

    /// Drops the entry for `key` if it no longer remembers anything.
    pub fn forget_if_idle(&mut self, key: &K, now: Instant, window: Duration) {
        if self
            .map
            .get(key)
            .is_some_and(|v| !v.busy() && v.weight(now, window) == 0)
        {
            self.map.remove(key);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn shrink(&mut self, now: Instant, window: Duration) {
        self.map
            .retain(|_, v| v.busy() || v.weight(now, window) > 0);
        let target = self.cap / 4 * 3;
        if self.map.len() <= target {
            return;
        }
        let mut idle: Vec<(u32, K)> = self
            .map
            .iter()
            .filter(|(_, v)| !v.busy())
            .map(|(k, v)| (v.weight(now, window), k.clone()))
            .collect();
        idle.sort_unstable_by_key(|(weight, _)| *weight);
        let excess = self.map.len() - target;
        for (_, key) in idle.into_iter().take(excess) {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Entry {
        busy: bool,
        weight: u32,
    }

    impl Tracked for Entry {
        fn busy(&self) -> bool {
            self.busy
        }
        fn weight(&self, _: Instant, _: Duration) -> u32 {
            self.weight
        }
    }

    const W: Duration = Duration::from_secs(1);

    #[test]
    fn a_full_table_drops_the_idle_then_the_least_remembered() {
        let now = Instant::now();
        let mut table: Table<u32, Entry> = Table::new(8);
        for k in 0..8u32 {
            let e = table.entry(k, now, W);
            e.weight = k;
            e.busy = k == 0;
        }
        // 0 is busy though it remembers nothing; 1.. remember k failures.
        table.entry(100, now, W).weight = 100;
        assert!(table.len() <= 8);
        assert!(table.get(&0).is_some(), "busy entries stay");
        assert!(table.get(&100).is_some());
        assert!(table.get(&7).is_some(), "the most remembered stay");
        assert!(table.get(&1).is_none(), "the least remembered go first");
    }

    #[test]
    fn it_never_grows_past_its_cap_with_idle_entries() {
        let now = Instant::now();
        let mut table: Table<u32, Entry> = Table::new(100);
        for k in 0..10_000u32 {
            table.entry(k, now, W).weight = 1;
            assert!(table.len() <= 100);
        }
    }

    #[test]
    fn forgetting_spares_busy_and_remembering_entries() {
        let now = Instant::now();
        let mut table: Table<u32, Entry> = Table::new(8);
        table.entry(1, now, W).busy = true;
        table.entry(2, now, W).weight = 1;
        table.entry(3, now, W);
        for k in 1..=3 {
            table.forget_if_idle(&k, now, W);
        }
        assert!(table.get(&1).is_some() && table.get(&2).is_some());
        assert!(table.get(&3).is_none());
    }
}
