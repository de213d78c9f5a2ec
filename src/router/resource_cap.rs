//! The cap on resources one account may have bound (`limits.max_resources_per_account`).
//! A resource is granted during negotiation, a little before the session enters the session
//! table, so the grant is a `Reservation` that counts until the session is in the table (or
//! the negotiation fails): logins racing each other cannot all slip under the cap.

use std::sync::Arc;

use dashmap::DashMap;
use jid::BareJid;

/// Refusal: the account has as many resources as it may have.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("this account already has {0} resources bound, the most it may have")]
pub struct TooManyResources(pub usize);

/// Grants in flight per account: granted, not yet in the session table.
#[derive(Default)]
pub(super) struct Pending {
    grants: Arc<DashMap<BareJid, usize>>,
}

impl Pending {
    /// Grants a new resource to `user` unless `bound` (its sessions in the table, counted
    /// while this account's grants are locked) plus the grants in flight reach `max`.
    pub fn reserve(
        &self,
        user: &BareJid,
        max: usize,
        bound: impl FnOnce() -> usize,
    ) -> Result<Reservation, TooManyResources> {
        let mut in_flight = self.grants.entry(user.clone()).or_insert(0);
        let total = bound() + *in_flight;
        if total >= max {
            drop(in_flight);
            self.grants.remove_if(user, |_, n| *n == 0);
            return Err(TooManyResources(total));
        }
        *in_flight += 1;
        Ok(Reservation {
            grant: Some((self.grants.clone(), user.clone())),
        })
    }
}

/// A granted resource that is not in the session table yet; drop it once it is.
#[must_use = "the resource is only held while the reservation lives"]
#[derive(Default)]
pub struct Reservation {
    /// None when nothing was counted (no cap, or a binding that replaces a session).
    grant: Option<(Arc<DashMap<BareJid, usize>>, BareJid)>,
}

impl Reservation {
    /// A grant that counts nothing.
    pub fn uncounted() -> Reservation {
        Reservation { grant: None }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("user", &self.grant.as_ref().map(|(_, user)| user))
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some((grants, user)) = self.grant.take() else {
            return;
        };
        if let Some(mut n) = grants.get_mut(&user) {
            *n = n.saturating_sub(1);
        }
        grants.remove_if(&user, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_in_flight_count_until_dropped() {
        let pending = Pending::default();
        let alice = BareJid::new("alice@d.test").unwrap();
        let first = pending.reserve(&alice, 2, || 0).unwrap();
        let second = pending.reserve(&alice, 2, || 0).unwrap();
        assert_eq!(
            pending.reserve(&alice, 2, || 0).unwrap_err(),
            TooManyResources(2)
        );
        drop(first);
        let third = pending.reserve(&alice, 2, || 0).unwrap();
        // Bound sessions count as well.
        drop((second, third));
        assert!(pending.grants.is_empty(), "nothing left behind");
        assert_eq!(
            pending.reserve(&alice, 2, || 2).unwrap_err(),
            TooManyResources(2)
        );
        assert!(pending.grants.is_empty());
        let bob = BareJid::new("bob@d.test").unwrap();
        let _one = pending.reserve(&alice, 2, || 1).unwrap();
        let _other_account = pending.reserve(&bob, 2, || 1).unwrap();
    }
}
