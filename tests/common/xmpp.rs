//! A logged-in raw session with the small vocabulary roster and presence tests need: send
//! XML, wait for a matching stanza, and collect everything up to a marker message so that a
//! test can assert what did *not* arrive.

use std::sync::atomic::{AtomicU64, Ordering};

use minidom::Element;

use super::{Raw, TestServer};

pub struct Session {
    pub raw: Raw,
    pub jid: String,
    /// Stanzas read while waiting for an IQ answer, handed out by `next` first.
    held: std::collections::VecDeque<Element>,
}

static MARKERS: AtomicU64 = AtomicU64::new(0);

impl Session {
    /// Logs in over STARTTLS + PLAIN and binds `resource`.
    pub async fn login(server: &TestServer, user: &str, resource: &str) -> Session {
        let (raw, jid) = Raw::login(server.c2s(), server.tls_config(), user, resource).await;
        Session {
            raw,
            jid,
            held: Default::default(),
        }
    }

    /// `login` as `user` of the hosted domain `domain`, checking its own certificate.
    pub async fn login_on(
        server: &TestServer,
        domain: &str,
        user: &str,
        resource: &str,
    ) -> Session {
        let tls = super::pinned_tls_config(server.cert_der_of(domain), vec![]);
        let (raw, jid) = Raw::login_on(server.c2s(), tls, domain, user, resource).await;
        Session {
            raw,
            jid,
            held: Default::default(),
        }
    }

    /// `online` as `user` of the hosted domain `domain`.
    pub async fn online_on(
        server: &TestServer,
        domain: &str,
        user: &str,
        resource: &str,
    ) -> Session {
        let mut session = Session::login_on(server, domain, user, resource).await;
        session.roster_get().await;
        session.send("<presence/>").await;
        let jid = session.jid.clone();
        session
            .expect(|el| el.name() == "presence" && el.attr("from") == Some(jid.as_str()))
            .await;
        session
    }

    /// Wraps a stream that is already bound as `jid` (e.g. by SASL2 + Bind2).
    pub fn from_raw(raw: Raw, jid: String) -> Session {
        Session {
            raw,
            jid,
            held: Default::default(),
        }
    }

    /// Logs in, fetches the roster (becoming an interested resource) and sends initial
    /// presence; returns once the own presence echo arrived.
    pub async fn online(server: &TestServer, user: &str, resource: &str) -> Session {
        let mut session = Session::login(server, user, resource).await;
        session.roster_get().await;
        session.send("<presence/>").await;
        let jid = session.jid.clone();
        session
            .expect(|el| el.name() == "presence" && el.attr("from") == Some(jid.as_str()))
            .await;
        session
    }

    pub fn bare(&self) -> &str {
        self.jid.split('/').next().unwrap_or(&self.jid)
    }

    pub async fn send(&mut self, xml: &str) {
        self.raw.write(xml).await;
    }

    pub async fn next(&mut self) -> Element {
        match self.held.pop_front() {
            Some(el) => el,
            None => self.raw.element().await,
        }
    }

    /// The next stanza matching `pred`, skipping any other.
    pub async fn expect(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.next().await;
            if pred(&el) {
                return el;
            }
        }
    }

    /// Sends an IQ and returns its answer; other stanzas that arrive meanwhile stay queued
    /// for `next`.
    pub async fn iq(&mut self, xml_without_id: &str) -> Element {
        let id = format!("iq-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
        let xml = xml_without_id.replacen("<iq ", &format!("<iq id='{id}' "), 1);
        self.send(&xml).await;
        let mut skipped = Vec::new();
        let answer = loop {
            let el = self.raw.element().await;
            let is_answer = el.name() == "iq"
                && el.attr("id") == Some(id.as_str())
                && matches!(el.attr("type"), Some("result" | "error"));
            if is_answer {
                break el;
            }
            skipped.push(el);
        };
        self.held.extend(skipped);
        answer
    }

    pub async fn roster_get(&mut self) -> Element {
        let answer = self
            .iq("<iq type='get'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        assert_eq!(answer.attr("type"), Some("result"), "roster get failed");
        answer
    }

    /// A unique body for `marker_to`.
    pub fn marker() -> String {
        format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a chat message with body `marker` to `to`.
    pub async fn send_marker(&mut self, to: &str, marker: &str) {
        self.send(&format!(
            "<message to='{to}' type='chat'><body>{marker}</body></message>"
        ))
        .await;
    }

    /// Everything received before the message whose body is `marker`.
    pub async fn until_marker(&mut self, marker: &str) -> Vec<Element> {
        let mut seen = Vec::new();
        loop {
            let el = self.next().await;
            let is_marker = el.name() == "message"
                && el
                    .get_child("body", "jabber:client")
                    .is_some_and(|b| b.text() == marker);
            if is_marker {
                return seen;
            }
            seen.push(el);
        }
    }

    /// Sends itself a marker and returns what arrived before it: a barrier after this
    /// session's own last stanza has been fully processed.
    pub async fn drain(&mut self) -> Vec<Element> {
        let marker = Session::marker();
        let me = self.jid.clone();
        self.send_marker(&me, &marker).await;
        self.until_marker(&marker).await
    }
}

pub fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", "jabber:client").and_then(|e| {
        e.children()
            .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
            .map(|c| c.name().to_string())
    })
}

pub fn is_presence(el: &Element, presence_type: Option<&str>, from: &str) -> bool {
    el.name() == "presence" && el.attr("type") == presence_type && el.attr("from") == Some(from)
}

pub fn is_roster_push(el: &Element) -> bool {
    el.name() == "iq" && el.attr("type") == Some("set") && el.has_child("query", "jabber:iq:roster")
}

/// The `<item/>` of a roster push.
pub fn pushed_item(el: &Element) -> Option<&Element> {
    el.get_child("query", "jabber:iq:roster")
        .and_then(|q| q.get_child("item", "jabber:iq:roster"))
}
