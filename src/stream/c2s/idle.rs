//! Dead-connection detection for a bound stream: a connection that went away without a FIN
//! (a phone off the network, a NAT that forgot it) looks exactly like a quiet client. After
//! `c2s.idle_ping_secs` without a byte from the client the server asks for a sign of life,
//! and a client that sends nothing within `c2s.idle_timeout_secs` is taken for gone, as
//! Prosody's mod_smacks and ejabberd's mod_ping do.
//!
//! No timer of its own: the session loop already waits in one `select!`, and the deadline
//! from here is one more branch there, re-armed as the loop goes round. Reading a stanza
//! pushes it back without waking anything; bytes that made no stanza yet (a client's
//! whitespace keepalive) are seen from the transport's byte count when the deadline comes.

use std::time::{Duration, Instant};

use crate::config::C2sConfig;

pub(super) struct IdleWatch {
    ping_after: Duration,
    answer_within: Duration,
    /// The transport's byte count when the client was last seen alive.
    bytes_seen: u64,
    since: Instant,
    pinged: bool,
}

/// What to do when the deadline came.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Idle {
    /// The client sent something meanwhile: nothing to do.
    Alive,
    /// Quiet for `idle_ping_secs`: ask it.
    Ask,
    /// Asked, and no answer in time.
    Gone,
}

impl IdleWatch {
    /// `None` when idle detection is off.
    pub(super) fn new(config: &C2sConfig, bytes_read: u64, now: Instant) -> Option<IdleWatch> {
        (config.idle_ping_secs > 0).then(|| IdleWatch {
            ping_after: Duration::from_secs(config.idle_ping_secs),
            answer_within: Duration::from_secs(config.idle_timeout_secs),
            bytes_seen: bytes_read,
            since: now,
            pinged: false,
        })
    }

    pub(super) fn deadline(&self) -> Instant {
        let wait = if self.pinged {
            self.answer_within
        } else {
            self.ping_after
        };
        self.since + wait
    }

    /// The client sent a frame.
    pub(super) fn heard(&mut self, bytes_read: u64, now: Instant) {
        self.bytes_seen = bytes_read;
        self.since = now;
        self.pinged = false;
    }

    /// The deadline came: decide, and move the next deadline accordingly.
    pub(super) fn expired(&mut self, bytes_read: u64, now: Instant) -> Idle {
        if bytes_read != self.bytes_seen {
            self.heard(bytes_read, now);
            return Idle::Alive;
        }
        if self.pinged {
            return Idle::Gone;
        }
        self.pinged = true;
        self.since = now;
        Idle::Ask
    }
}

/// Waits for `deadline`, or forever without one.
pub(super) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_then_asked_then_gone_unless_bytes_arrive() {
        let config = C2sConfig {
            idle_ping_secs: 300,
            idle_timeout_secs: 60,
            ..C2sConfig::default()
        };
        let t0 = Instant::now();
        let mut watch = IdleWatch::new(&config, 100, t0).unwrap();
        assert_eq!(watch.deadline(), t0 + Duration::from_secs(300));
        let t1 = watch.deadline();
        assert_eq!(watch.expired(100, t1), Idle::Ask);
        assert_eq!(watch.deadline(), t1 + Duration::from_secs(60));
        // A whitespace answer (bytes, no stanza) counts.
        let t2 = watch.deadline();
        assert_eq!(watch.expired(101, t2), Idle::Alive);
        assert_eq!(watch.deadline(), t2 + Duration::from_secs(300));
        let t3 = watch.deadline();
        assert_eq!(watch.expired(101, t3), Idle::Ask);
        assert_eq!(watch.expired(101, watch.deadline()), Idle::Gone);
        let off = C2sConfig {
            idle_ping_secs: 0,
            ..C2sConfig::default()
        };
        assert!(IdleWatch::new(&off, 0, t0).is_none());
    }
}
