//! XEP-0077 in-band registration over a raw client stream, for tests/registration.rs and
//! tests/invites.rs.

use std::net::SocketAddr;
use std::sync::Arc;

use minidom::Element;
use rustls::ClientConfig;

use super::{open_to, Raw, DOMAIN};

pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const IBR_TOKEN: &str = "urn:xmpp:ibr-token:0";

/// A stream after STARTTLS (from `from` when given), with the features of the encrypted stream.
pub async fn encrypted(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    from: Option<std::net::IpAddr>,
) -> (Raw, Element) {
    let raw = match from {
        Some(ip) => Raw::connect_from(addr, ip).await,
        None => Raw::connect(addr).await,
    };
    let mut raw = raw.starttls(tls).await;
    raw.write(&open_to(DOMAIN)).await;
    let features = raw.element().await;
    (raw, features)
}

/// The stanza error condition of `el`, if it is an error.
pub fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", corvid::xml::ns::CLIENT)
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == corvid::xml::ns::STANZAS_ERRORS && c.name() != "text")
                .map(|c| c.name().to_string())
        })
}

pub fn error_text(el: &Element) -> String {
    el.get_child("error", corvid::xml::ns::CLIENT)
        .and_then(|e| e.get_child("text", corvid::xml::ns::STANZAS_ERRORS))
        .map(Element::text)
        .unwrap_or_default()
}

/// Sends `xml` and returns the IQ answering `id`.
pub async fn iq(raw: &mut Raw, id: &str, xml: &str) -> Element {
    raw.write(xml).await;
    loop {
        let el = raw.element().await;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return el;
        }
    }
}

/// `<iq type='set'><query><username/><password/></query></iq>`; the answer.
pub async fn register(raw: &mut Raw, username: &str, password: &str) -> Element {
    iq(
        raw,
        "reg",
        &format!(
            "<iq type='set' id='reg'><query xmlns='{REGISTER}'><username>{username}</username>\
             <password>{password}</password></query></iq>"
        ),
    )
    .await
}

/// XEP-0445: presents an invite token; the answer.
pub async fn preauth(raw: &mut Raw, token: &str) -> Element {
    iq(
        raw,
        "pre",
        &format!("<iq type='set' id='pre'><preauth xmlns='urn:xmpp:pars:0' token='{token}'/></iq>"),
    )
    .await
}

/// A PLAIN login on a fresh stream: the server's `<success/>` or `<failure/>`.
pub async fn try_login(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    user: &str,
    password: &str,
) -> Element {
    let (mut raw, _) = encrypted(addr, tls, None).await;
    raw.auth_plain(user, password).await;
    raw.element().await
}
