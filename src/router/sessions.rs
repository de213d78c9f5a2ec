//! What the router hands a session, and what it knows of a session's state.

use std::sync::Arc;

use jid::FullJid;
use minidom::Element;

/// One stanza going to many sessions (a room's message to its occupants), serialized once:
/// each session writes `head`, its own `to`, then `tail`, instead of a copy of the tree
/// serialized again.
#[derive(Debug)]
pub struct SharedStanza {
    /// The stanza without `to`.
    pub element: Element,
    /// The serialized stanza up to just after its element name (`<message`).
    head: Vec<u8>,
    /// The rest of the serialized stanza.
    tail: Vec<u8>,
}

impl SharedStanza {
    pub fn new(mut element: Element) -> SharedStanza {
        crate::stanza::remove_attr(&mut element, "to");
        let bytes = crate::xml::to_bytes(&element);
        let split = 1 + element.name().len();
        SharedStanza {
            head: bytes[..split].to_vec(),
            tail: bytes[split..].to_vec(),
            element,
        }
    }

    /// The serialized stanza addressed to `to`.
    pub fn bytes_to(&self, to: &FullJid) -> Vec<u8> {
        let to = crate::xml::escape_attr(to.as_str());
        let mut out = Vec::with_capacity(self.head.len() + to.len() + 6 + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b" to='");
        out.extend_from_slice(to.as_bytes());
        out.push(b'\'');
        out.extend_from_slice(&self.tail);
        out
    }

    /// The stanza as a tree addressed to `to`, for the paths that keep stanzas as trees
    /// (stream management's unacknowledged queue, CSI, re-routing at session end).
    pub fn element_to(&self, to: &FullJid) -> Element {
        let mut element = self.element.clone();
        crate::stanza::set_attr(&mut element, "to", to.to_string());
        element
    }
}

/// What the router hands a session task.
#[derive(Debug)]
pub enum Outbound {
    /// Boxed: the queue's slots are allocated in blocks per session, so their size is paid by
    /// every idle session.
    Stanza(Box<Element>),
    /// A stanza shared by many recipients, for the session `to`.
    Shared(Box<(Arc<SharedStanza>, FullJid)>),
    /// Another session bound the same full JID: end with `<conflict/>`.
    Replaced,
    /// The server ends the session (an administrator's decision: account disabled or deleted,
    /// session kicked) with this stream error and text.
    Terminate(crate::xml::StreamCondition, &'static str),
}

/// Why a session ended, for the hooks that run when it does (and anyone they route to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed its stream.
    Closed,
    /// The connection was lost (or never came back within the stream-management timeout).
    ConnectionLost,
    /// The server ended the stream: a stream error, a replacing session, shutdown.
    ByServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Bound, but no available presence sent yet (or unavailable sent since).
    Unavailable,
    /// Available with this priority.
    Available(i8),
}

impl Availability {
    pub fn is_available(self) -> bool {
        matches!(self, Availability::Available(_))
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn a_shared_stanza_writes_what_its_copy_would() {
        let message: Element = "<message xmlns='jabber:client' from='r@c.x/n&amp;m' type='groupchat' to='stale@x/y'><body>a &lt; b</body></message>"
            .parse()
            .unwrap();
        let shared = SharedStanza::new(message);
        let to = FullJid::new("u@x/it's").unwrap();
        let copy = shared.element_to(&to);
        let written: Element = String::from_utf8(shared.bytes_to(&to))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(written, copy);
        assert_eq!(written.attr("to"), Some("u@x/it's"));
    }
}
