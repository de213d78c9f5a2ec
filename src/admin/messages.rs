//! Messages from the server to its users: announcements to everyone online, the message of
//! the day (a headline to each session once per login) and the welcome message (to each new
//! account). Both texts are kept per hosted domain in storage.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::{sessions, AdminResult};
use crate::router::Router;
use crate::stanza::Kind;
use crate::xml::ns;

fn motd_name(domain: &str) -> String {
    format!("motd:{domain}")
}

pub(super) fn welcome_setting(domain: &str) -> String {
    welcome_name(domain)
}

fn welcome_name(domain: &str) -> String {
    format!("welcome:{domain}")
}

pub async fn motd(router: &Router, domain: &str) -> AdminResult<Option<String>> {
    Ok(router.storage().admin.setting(&motd_name(domain)).await?)
}

/// Sets the message of the day, or removes it with `None`.
pub async fn set_motd(router: &Router, domain: &str, text: Option<&str>) -> AdminResult<()> {
    Ok(router
        .storage()
        .admin
        .set_setting(&motd_name(domain), text)
        .await?)
}

pub async fn welcome(router: &Router, domain: &str) -> AdminResult<Option<String>> {
    Ok(router
        .storage()
        .admin
        .setting(&welcome_name(domain))
        .await?)
}

pub async fn set_welcome(router: &Router, domain: &str, text: Option<&str>) -> AdminResult<()> {
    Ok(router
        .storage()
        .admin
        .set_setting(&welcome_name(domain), text)
        .await?)
}

/// A message from `domain` with `body`; `type_` is `headline` for what is only worth seeing
/// live, `normal` for what must wait in offline storage.
pub(super) fn server_message(domain: &str, type_: &str, body: &str) -> Element {
    let mut body_el = Element::bare("body", ns::CLIENT);
    body_el.append_text(body);
    let mut message = Element::bare("message", ns::CLIENT);
    crate::stanza::set_attr(&mut message, "from", domain);
    crate::stanza::set_attr(&mut message, "type", type_);
    message.append_child(body_el);
    message
}

/// A headline to one session.
pub fn send_headline(router: &Router, to: &FullJid, text: &str) {
    let mut message = server_message(to.domain().as_str(), "headline", text);
    crate::stanza::set_attr(&mut message, "to", to.to_string());
    let _ = router.deliver_to_session(to, message);
}

/// A normal message to an account: delivered to its sessions or kept offline.
pub async fn send_to_account(router: &Arc<Router>, user: &BareJid, text: &str) {
    let mut message = server_message(user.domain().as_str(), "normal", text);
    crate::stanza::set_attr(&mut message, "to", user.to_string());
    router
        .route(Kind::Message, Jid::from(user.clone()), message)
        .await;
}

/// Sends `text` as a headline to every session online on this node whose domain `visible`
/// accepts; returns how many sessions it went to.
pub fn announce(router: &Router, text: &str, visible: impl Fn(&str) -> bool) -> usize {
    let mut sent = 0;
    for session in sessions::online_sessions(router) {
        if visible(session.jid.domain().as_str()) {
            send_headline(router, &session.jid, text);
            sent += 1;
        }
    }
    sent
}
