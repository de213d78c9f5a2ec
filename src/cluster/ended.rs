//! The final inbound count of resumable sessions that ended on a node, kept in Redis for
//! the resumption timeout so that any node can answer a later `<resume/>` with
//! `<failed h='…'/>` (XEP-0198 §5): the process that held the session may be stopped or
//! restarted by then, and its memory of the count gone with it.
//!
//! The value names the account as well, so that a client of another account guessing the
//! id learns nothing.

use std::time::Duration;

use jid::BareJid;

use super::liveness::with_timeout;
use super::{Cluster, ClusterError};

/// `h`, a space, the account: the count parses without touching the rest.
fn encode(user: &BareJid, h: u32) -> String {
    format!("{h} {user}")
}

fn decode(value: &str, user: &BareJid) -> Option<u32> {
    let (h, owner) = value.split_once(' ')?;
    (owner == user.as_str()).then(|| h.parse().ok()).flatten()
}

impl Cluster {
    /// Notes that the resumable session `previd` of `user` ended with `h` stanzas of its
    /// client handled; kept for `ttl` (its resumption timeout).
    pub async fn remember_ended_session(
        &self,
        previd: &str,
        user: &BareJid,
        h: u32,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let mut conn = self.commands.clone();
        with_timeout(
            redis::cmd("SET")
                .arg(self.keys.ended_session(previd))
                .arg(encode(user, h))
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .query_async::<()>(&mut conn),
        )
        .await
    }

    /// The count `remember_ended_session` kept for `previd`, if the session was `user`'s.
    pub async fn ended_session_h(
        &self,
        previd: &str,
        user: &BareJid,
    ) -> Result<Option<u32>, ClusterError> {
        let mut conn = self.commands.clone();
        let value: Option<String> = with_timeout(
            redis::cmd("GET")
                .arg(self.keys.ended_session(previd))
                .query_async(&mut conn),
        )
        .await?;
        Ok(value.and_then(|v| decode(&v, user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_only_told_to_its_account() {
        let alice = BareJid::new("alice@example.org").unwrap();
        let bob = BareJid::new("bob@example.org").unwrap();
        let value = encode(&alice, 42);
        assert_eq!(decode(&value, &alice), Some(42));
        assert_eq!(decode(&value, &bob), None);
        assert_eq!(decode("junk", &alice), None);
        assert_eq!(decode("x alice@example.org", &alice), None);
    }
}
