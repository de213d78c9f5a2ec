//! Ending every session of an account from outside its streams (the account was deleted).
//! The request travels as an element in the sessions' own queues, through the directory like
//! any delivery, so a session on another cluster node is reached too, and it is acted on in
//! queue order: what was queued before it (the answer to a `<remove/>`) is written first.
//! Clients cannot forge it: only stanzas (message, presence, iq) are ever routed from them.

use jid::BareJid;
use minidom::Element;

use super::Router;

const NS: &str = "urn:corvid:internal:end-session";

/// Tells each session of `user` to end with a `<not-authorized/>` stream error saying `why`.
pub fn end_account_sessions(router: &Router, user: &BareJid, why: &str) {
    for session in router.bound_resources(user) {
        let request = Element::builder("end", NS).append(why).build();
        let _ = router.deliver_to_session(&session, request);
    }
}

/// The reason, when `el` is such a request.
pub fn end_request(el: &Element) -> Option<String> {
    el.is("end", NS).then(|| el.text())
}
