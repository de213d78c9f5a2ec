//! XEP-0352 Client State Indication: while the client says it is inactive (a phone in a
//! pocket), stanzas that only matter once somebody looks at the screen are held back instead
//! of waking the radio, as Prosody's mod_csi_simple does: availability presence (only the
//! latest per sender is kept, an older one would be stale anyway) and messages that carry
//! nothing but a chat state. Everything else is "important" and goes out at once, after
//! whatever was held, so the client still sees stanzas in the order they were routed.

use minidom::Element;

use crate::stanza;
use crate::xml::ns;

/// Held stanzas beyond this are flushed: a bound on memory, and the client is not far from
/// having too much to catch up on anyway (Prosody's `csi_queue_size` default is 256 too).
pub const MAX_HELD: usize = 256;

#[derive(Debug, Default)]
pub struct CsiState {
    inactive: bool,
    /// Held stanzas, in the order they were routed.
    held: Vec<Element>,
}

impl CsiState {
    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    /// `<inactive/>`.
    pub fn deactivate(&mut self) {
        self.inactive = true;
    }

    /// `<active/>`: returns what was held, to be written now.
    pub fn activate(&mut self) -> Vec<Element> {
        self.inactive = false;
        std::mem::take(&mut self.held)
    }

    /// Takes a stanza on its way to the client; `out` receives, in order, whatever must be
    /// written now.
    pub fn filter(&mut self, el: Element, mut out: impl FnMut(Element)) {
        if !self.inactive {
            return out(el);
        }
        if !can_wait(&el) {
            self.held.drain(..).for_each(&mut out);
            return out(el);
        }
        if el.name() == "presence" {
            if let Some(from) = el.attr("from") {
                // The newer presence of the same full JID supersedes the held one.
                self.held
                    .retain(|h| h.name() != "presence" || h.attr("from") != Some(from));
            }
        }
        self.held.push(el);
        if self.held.len() >= MAX_HELD {
            self.held.drain(..).for_each(out);
        }
    }

    /// Held stanzas, oldest first (when the session ends or is parked).
    pub fn take_held(&mut self) -> Vec<Element> {
        std::mem::take(&mut self.held)
    }

    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Availability presence and chat-state-only messages can wait; subscription requests, errors,
/// messages with a body (or anything else, encrypted payloads included) cannot.
fn can_wait(el: &Element) -> bool {
    match el.name() {
        "presence" => matches!(stanza::stanza_type(el), "available" | "unavailable"),
        "message" => {
            !stanza::is_error(el)
                && !el.has_child("body", ns::CLIENT)
                && el.children().any(|c| c.ns() == ns::CHATSTATES)
                && el.children().all(|c| {
                    c.ns() == ns::CHATSTATES
                        || c.ns() == ns::HINTS
                        || c.ns() == ns::DELAY
                        || c.is("thread", ns::CLIENT)
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn run(csi: &mut CsiState, xml: &str) -> Vec<String> {
        let mut out = Vec::new();
        csi.filter(el(xml), |e| {
            out.push(e.attr("id").unwrap_or_default().to_owned())
        });
        out
    }

    #[test]
    fn holds_presence_and_chat_states_until_something_important() {
        let mut csi = CsiState::default();
        assert_eq!(
            run(&mut csi, "<presence xmlns='jabber:client' id='p0'/>"),
            ["p0"]
        );
        csi.deactivate();
        assert!(run(
            &mut csi,
            "<presence xmlns='jabber:client' from='a@x/r' id='p1'/>"
        )
        .is_empty());
        assert!(run(
            &mut csi,
            "<presence xmlns='jabber:client' from='b@x/r' id='p2'/>"
        )
        .is_empty());
        assert!(run(&mut csi, "<message xmlns='jabber:client' id='c1'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").is_empty());
        assert!(run(
            &mut csi,
            "<presence xmlns='jabber:client' from='a@x/r' id='p3'/>"
        )
        .is_empty());
        assert_eq!(
            run(
                &mut csi,
                "<message xmlns='jabber:client' id='m1'><body>hi</body></message>"
            ),
            ["p2", "c1", "p3", "m1"]
        );
        assert_eq!(
            run(
                &mut csi,
                "<presence xmlns='jabber:client' type='subscribe' id='s'/>"
            ),
            ["s"]
        );
    }
}
