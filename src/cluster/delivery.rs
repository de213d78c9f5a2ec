//! At-least-once delivery between nodes. Redis counts a publish as taken once it is in the
//! receiving node's socket, not once that node handed it to a session: a node killed at that
//! moment would lose what it had read. So stanzas are numbered per destination node, the
//! destination acknowledges what it handled (a few times a second, one message per peer), and
//! the sender keeps what is unacknowledged. When the destination dies, those stanzas are
//! handled on the sender as undeliverable: offline storage for messages. One the dead node
//! did write to its client may be stored as well: a duplicate, never a gap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use super::wire::Envelope;
use super::Cluster;
use crate::router::NodeId;

/// How often a node acknowledges what it received.
const ACK_PERIOD: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Delivery {
    /// The last number given per destination.
    numbers: Mutex<HashMap<NodeId, u64>>,
    sent: Mutex<HashMap<NodeId, Unacknowledged>>,
    /// The highest number received per sender, to acknowledge at the next tick.
    due: Mutex<HashMap<NodeId, u64>>,
}

#[derive(Default)]
struct Unacknowledged {
    stanzas: VecDeque<(u64, Vec<u8>)>,
    /// The highest number acknowledged: an acknowledgement may come before the publish's
    /// own reply, and what it covers must not be kept afterwards.
    acknowledged: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Delivery {
    /// The next number for `node` (the writer numbers what it publishes, in order).
    pub fn next(&self, node: NodeId) -> u64 {
        let mut numbers = lock(&self.numbers);
        let number = numbers.entry(node).or_insert(0);
        *number += 1;
        *number
    }

    /// A stanza `node` took from Redis: kept until it acknowledges it.
    pub fn track(&self, node: NodeId, seq: u64, bytes: Vec<u8>, limit: usize) {
        let mut sent = lock(&self.sent);
        let pending = sent.entry(node).or_default();
        if seq <= pending.acknowledged {
            return;
        }
        if pending.stanzas.len() >= limit {
            // A node that takes but never acknowledges: keep memory bounded.
            warn!(
                node = node.0,
                "a node acknowledges nothing; its oldest stanzas are no longer kept"
            );
            pending.stanzas.pop_front();
        }
        pending.stanzas.push_back((seq, bytes));
    }

    pub fn acknowledged(&self, node: NodeId, upto: u64) {
        let mut sent = lock(&self.sent);
        let pending = sent.entry(node).or_default();
        pending.acknowledged = pending.acknowledged.max(upto);
        while pending.stanzas.front().is_some_and(|(seq, _)| *seq <= upto) {
            pending.stanzas.pop_front();
        }
    }

    /// What `node` did not acknowledge, forgotten here.
    pub fn take(&self, node: NodeId) -> Vec<Vec<u8>> {
        lock(&self.sent)
            .get_mut(&node)
            .map(|pending| pending.stanzas.drain(..).map(|(_, bytes)| bytes).collect())
            .unwrap_or_default()
    }

    /// The nodes something is kept for.
    pub fn nodes(&self) -> Vec<NodeId> {
        lock(&self.sent).keys().copied().collect()
    }

    /// A stanza numbered `seq` from `node` was handled here.
    pub fn received(&self, node: NodeId, seq: u64) {
        let mut due = lock(&self.due);
        let highest = due.entry(node).or_insert(0);
        *highest = (*highest).max(seq);
    }

    fn take_due(&self) -> Vec<(NodeId, u64)> {
        lock(&self.due).drain().collect()
    }
}

/// Acknowledges, a few times a second, what each node sent here.
pub async fn acknowledge(cluster: Arc<Cluster>) {
    let mut ticks = tokio::time::interval(ACK_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for (node, upto) in cluster.delivery.take_due() {
            let envelope = Envelope::Ack {
                from: cluster.me,
                upto,
            };
            cluster.send_reply(node, &envelope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_acknowledged_is_forgotten_even_before_it_is_tracked() {
        let delivery = Delivery::default();
        let node = NodeId(2);
        for seq in 1..=3 {
            assert_eq!(delivery.next(node), seq);
        }
        delivery.track(node, 1, b"one".to_vec(), 10);
        delivery.acknowledged(node, 2);
        // The reply to 2's publish came after its acknowledgement.
        delivery.track(node, 2, b"two".to_vec(), 10);
        delivery.track(node, 3, b"three".to_vec(), 10);
        assert_eq!(delivery.take(node), vec![b"three".to_vec()]);
        assert!(delivery.take(node).is_empty());
    }

    #[test]
    fn the_kept_stanzas_are_bounded() {
        let delivery = Delivery::default();
        let node = NodeId(1);
        for seq in 1..=5 {
            delivery.track(node, seq, vec![seq as u8], 3);
        }
        assert_eq!(delivery.take(node), vec![vec![3], vec![4], vec![5]]);
    }
}
