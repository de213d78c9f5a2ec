//! RFC 6121 Appendix A, as data: the nine subscription states and what each of the four
//! subscription stanzas does to them, seen from the local user's side, for a stanza the user
//! sends (outbound) and one the user receives (inbound). The tests walk this table row by row
//! over real sockets, so the code and the RFC can only disagree here.

use crate::storage::Subscription;

/// RFC 6121 Appendix A.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    None,
    NonePendingOut,
    NonePendingIn,
    NonePendingOutIn,
    To,
    ToPendingIn,
    From,
    FromPendingOut,
    Both,
}

impl State {
    pub const ALL: [State; 9] = [
        State::None,
        State::NonePendingOut,
        State::NonePendingIn,
        State::NonePendingOutIn,
        State::To,
        State::ToPendingIn,
        State::From,
        State::FromPendingOut,
        State::Both,
    ];

    /// The state of a stored item (`ask` is Pending Out) plus a stored inbound request.
    /// Combinations the RFC rules out (To + Pending Out, From + Pending In, …) collapse to
    /// the nearest legal state: the subscription already granted wins.
    pub fn of(subscription: Subscription, pending_out: bool, pending_in: bool) -> State {
        match (subscription, pending_out, pending_in) {
            (Subscription::None, false, false) => State::None,
            (Subscription::None, true, false) => State::NonePendingOut,
            (Subscription::None, false, true) => State::NonePendingIn,
            (Subscription::None, true, true) => State::NonePendingOutIn,
            (Subscription::To, _, false) => State::To,
            (Subscription::To, _, true) => State::ToPendingIn,
            (Subscription::From, false, _) => State::From,
            (Subscription::From, true, _) => State::FromPendingOut,
            (Subscription::Both, _, _) => State::Both,
        }
    }

    pub fn subscription(self) -> Subscription {
        match self {
            State::None
            | State::NonePendingOut
            | State::NonePendingIn
            | State::NonePendingOutIn => Subscription::None,
            State::To | State::ToPendingIn => Subscription::To,
            State::From | State::FromPendingOut => Subscription::From,
            State::Both => Subscription::Both,
        }
    }

    pub fn pending_out(self) -> bool {
        matches!(
            self,
            State::NonePendingOut | State::NonePendingOutIn | State::FromPendingOut
        )
    }

    pub fn pending_in(self) -> bool {
        matches!(
            self,
            State::NonePendingIn | State::NonePendingOutIn | State::ToPendingIn
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The local user sent it (Appendix A.2).
    Outbound,
    /// The local user received it (Appendix A.3).
    Inbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionType {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubscriptionType {
    pub fn parse(presence_type: &str) -> Option<SubscriptionType> {
        match presence_type {
            "subscribe" => Some(SubscriptionType::Subscribe),
            "subscribed" => Some(SubscriptionType::Subscribed),
            "unsubscribe" => Some(SubscriptionType::Unsubscribe),
            "unsubscribed" => Some(SubscriptionType::Unsubscribed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionType::Subscribe => "subscribe",
            SubscriptionType::Subscribed => "subscribed",
            SubscriptionType::Unsubscribe => "unsubscribe",
            SubscriptionType::Unsubscribed => "unsubscribed",
        }
    }
}

use Direction::{Inbound as In, Outbound as Out};
use State::{
    Both as B, From as F, FromPendingOut as FO, None as N, NonePendingIn as NI,
    NonePendingOut as NO, NonePendingOutIn as NOI, To as T, ToPendingIn as TI,
};
use SubscriptionType::{
    Subscribe as Sub, Subscribed as Subd, Unsubscribe as Unsub, Unsubscribed as Unsubd,
};

/// (direction, stanza, state before, state after). "No state change" rows map a state to
/// itself. Pre-approval (§3.4) is not part of Appendix A and is handled beside it.
pub const APPENDIX_A: [(Direction, SubscriptionType, State, State); 72] = [
    // A.2.1 outbound "subscribe"
    (Out, Sub, N, NO),
    (Out, Sub, NO, NO),
    (Out, Sub, NI, NOI),
    (Out, Sub, NOI, NOI),
    (Out, Sub, T, T),
    (Out, Sub, TI, TI),
    (Out, Sub, F, FO),
    (Out, Sub, FO, FO),
    (Out, Sub, B, B),
    // A.2.2 outbound "unsubscribe"
    (Out, Unsub, N, N),
    (Out, Unsub, NO, N),
    (Out, Unsub, NI, NI),
    (Out, Unsub, NOI, NI),
    (Out, Unsub, T, N),
    (Out, Unsub, TI, NI),
    (Out, Unsub, F, F),
    (Out, Unsub, FO, F),
    (Out, Unsub, B, F),
    // A.2.3 outbound "subscribed"
    (Out, Subd, N, N),
    (Out, Subd, NO, NO),
    (Out, Subd, NI, F),
    (Out, Subd, NOI, FO),
    (Out, Subd, T, T),
    (Out, Subd, TI, B),
    (Out, Subd, F, F),
    (Out, Subd, FO, FO),
    (Out, Subd, B, B),
    // A.2.4 outbound "unsubscribed"
    (Out, Unsubd, N, N),
    (Out, Unsubd, NO, NO),
    (Out, Unsubd, NI, N),
    (Out, Unsubd, NOI, NO),
    (Out, Unsubd, T, T),
    (Out, Unsubd, TI, T),
    (Out, Unsubd, F, N),
    (Out, Unsubd, FO, NO),
    (Out, Unsubd, B, T),
    // A.3.1 inbound "subscribe"
    (In, Sub, N, NI),
    (In, Sub, NO, NOI),
    (In, Sub, NI, NI),
    (In, Sub, NOI, NOI),
    (In, Sub, T, TI),
    (In, Sub, TI, TI),
    (In, Sub, F, F),
    (In, Sub, FO, FO),
    (In, Sub, B, B),
    // A.3.2 inbound "unsubscribe"
    (In, Unsub, N, N),
    (In, Unsub, NO, NO),
    (In, Unsub, NI, N),
    (In, Unsub, NOI, NO),
    (In, Unsub, T, T),
    (In, Unsub, TI, T),
    (In, Unsub, F, N),
    (In, Unsub, FO, NO),
    (In, Unsub, B, T),
    // A.3.3 inbound "subscribed"
    (In, Subd, N, N),
    (In, Subd, NO, T),
    (In, Subd, NI, NI),
    (In, Subd, NOI, TI),
    (In, Subd, T, T),
    (In, Subd, TI, TI),
    (In, Subd, F, F),
    (In, Subd, FO, B),
    (In, Subd, B, B),
    // A.3.4 inbound "unsubscribed"
    (In, Unsubd, N, N),
    (In, Unsubd, NO, N),
    (In, Unsubd, NI, NI),
    (In, Unsubd, NOI, NI),
    (In, Unsubd, T, N),
    (In, Unsubd, TI, NI),
    (In, Unsubd, F, F),
    (In, Unsubd, FO, F),
    (In, Unsubd, B, F),
];

/// The state after `stanza` travels in `direction` in state `before`.
pub fn transition(direction: Direction, stanza: SubscriptionType, before: State) -> State {
    APPENDIX_A
        .iter()
        .find(|(d, t, b, _)| *d == direction && *t == stanza && *b == before)
        .map(|(_, _, _, after)| *after)
        .unwrap_or(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_exactly_one_row_per_direction_and_stanza() {
        for direction in [Out, In] {
            for stanza in [Sub, Subd, Unsub, Unsubd] {
                for before in State::ALL {
                    let rows = APPENDIX_A
                        .iter()
                        .filter(|(d, t, b, _)| *d == direction && *t == stanza && *b == before)
                        .count();
                    assert_eq!(rows, 1, "{direction:?} {stanza:?} {before:?}");
                }
            }
        }
    }

    #[test]
    fn state_round_trips_through_its_parts() {
        for state in State::ALL {
            assert_eq!(
                State::of(
                    state.subscription(),
                    state.pending_out(),
                    state.pending_in()
                ),
                state
            );
        }
    }
}
