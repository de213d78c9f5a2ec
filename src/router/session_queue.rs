//! The queue from the router to one session: many senders (the session table, a session
//! replacing it), one receiver (the session's task), bounded, never blocking a sender.
//!
//! Every bound session holds one for its whole life, idle or not, so it is built for size:
//! a mutex around a `VecDeque` and the receiver's waker, about a hundred bytes, where tokio's
//! `mpsc` channel takes 1.8 kB per session (cache-padded fields and a first block of 32 slots,
//! allocated whether or not anything is ever queued). The deque holds capacity only while
//! stanzas flow: drained, it gives a burst's room back. Only the session's task receives,
//! so one waker is all the waiting there is.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// A drained queue keeps this much room; beyond it, the room a burst took is given back.
const KEPT_CAPACITY: usize = 8;

/// A queue holding at most `limit` items.
pub fn channel<T>(limit: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        limit: limit.max(1),
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            senders: 1,
            closed: false,
        }),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

struct Shared<T> {
    limit: usize,
    state: Mutex<State<T>>,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver's task, while it waits for an item.
    waker: Option<Waker>,
    senders: usize,
    /// The receiver closed the queue or is gone: nothing more is taken.
    closed: bool,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here panics while holding the lock; if something ever did, the queue's
        // state is still consistent (each operation is one push, pop or flag).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why `try_send` gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// `limit` items are waiting: the session is not reading.
    Full(T),
    /// The session's task closed the queue or is gone.
    Closed(T),
}

pub struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueSender<T> {
    /// Queues `item` unless the queue is full or closed; wakes the receiver.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.shared.state();
            if state.closed {
                return Err(TrySendError::Closed(item));
            }
            if state.items.len() >= self.shared.limit {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
            state.waker.take()
        };
        // Woken outside the lock, so the receiver does not wake up only to wait for it.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.shared.state().senders += 1;
        QueueSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.state();
            state.senders -= 1;
            match state.senders {
                0 => state.waker.take(),
                _ => None,
            }
        };
        // The last sender gone: a waiting receiver learns that nothing more will come.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

pub struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueReceiver<T> {
    /// The next item, or None once the queue is closed or every sender is gone and nothing
    /// is left. Cancel-safe: an item is taken only by the poll that returns it.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.shared.state();
            if let Some(item) = pop(&mut state) {
                return Poll::Ready(Some(item));
            }
            if state.senders == 0 || state.closed {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        pop(&mut self.shared.state())
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.shared.state().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes nothing more; what is already queued can still be received.
    pub fn close(&mut self) {
        self.shared.state().closed = true;
    }
}

impl<T> std::fmt::Debug for QueueReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueReceiver")
            .field("len", &self.len())
            .finish()
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.state();
            state.closed = true;
            state.waker = None;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item's drop may be arbitrary work.
        drop(items);
    }
}

fn pop<T>(state: &mut State<T>) -> Option<T> {
    let item = state.items.pop_front()?;
    if state.items.is_empty() && state.items.capacity() > KEPT_CAPACITY {
        state.items = VecDeque::new();
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_come_out_in_order_up_to_the_limit() {
        let (tx, mut rx) = channel(3);
        for i in 0..3 {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.len(), 3);
        assert_eq!(rx.try_recv(), Some(0));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(
            std::iter::from_fn(|| rx.try_recv()).collect::<Vec<_>>(),
            [1, 2, 4]
        );
        assert!(rx.is_empty());
    }

    #[test]
    fn a_closed_queue_refuses_items_but_gives_up_what_it_holds() {
        let (tx, mut rx) = channel(8);
        tx.try_send("queued").expect("room");
        rx.close();
        assert_eq!(tx.try_send("late"), Err(TrySendError::Closed("late")));
        assert_eq!(rx.try_recv(), Some("queued"));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_dropped_receiver_closes_the_queue() {
        let (tx, rx) = channel(8);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
    }

    #[test]
    fn a_burst_gives_its_room_back_once_drained() {
        let (tx, mut rx) = channel(1000);
        for i in 0..500 {
            tx.try_send(i).expect("room");
        }
        while rx.try_recv().is_some() {}
        assert!(rx.shared.state().items.capacity() <= KEPT_CAPACITY);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_an_item_and_for_the_last_sender_leaving() {
        let (tx, mut rx) = channel(8);
        let other = tx.clone();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).expect("room");
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One sender is left: the receiver is still waiting.
        assert!(!waiting.is_finished());
        drop(other);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, (Some(7), None));
    }

    #[tokio::test]
    async fn a_dropped_wait_loses_nothing() {
        let (tx, mut rx) = channel(8);
        let wait = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(wait.is_err());
        tx.try_send(1).expect("room");
        assert_eq!(rx.recv().await, Some(1));
    }

    /// What an idle session pays for its queue (issue 16).
    #[test]
    fn the_queue_is_small() {
        let shared = std::mem::size_of::<Shared<super::super::Outbound>>();
        assert!(shared <= 128, "{shared} bytes");
    }
}
