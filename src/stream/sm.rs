//! XEP-0198 Stream Management, the per-stream part: the two counters, the queue of stanzas
//! written but not yet acknowledged, and the nonzas (`<enable/>`, `<resume/>`, `<a/>`, `<r/>`)
//! with the answers the server writes. Resumption across connections is `resumption.rs`.

use std::collections::VecDeque;

use minidom::Element;

use crate::stanza::set_attr;
use crate::xml::ns;

/// Ask for an ack once this many stanzas are unacknowledged (and no request is outstanding):
/// often enough that the unacked queue stays short, rarely enough not to double the traffic.
pub const REQUEST_EVERY: usize = 5;

/// A Stream Management nonza from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Nonza {
    /// `<enable/>`; `resume` asks for resumption, `max` is the client's preferred timeout.
    Enable { resume: bool, max: Option<u64> },
    /// `<resume previd h/>`: `h` is how many of our stanzas the client handled.
    Resume { previd: String, h: u32 },
    /// `<a h/>`.
    Ack { h: u32 },
    /// `<r/>`.
    Request,
}

/// Why a nonza in the SM namespace could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NonzaError {
    #[error("<{0}/> without a valid 'h'")]
    BadCount(&'static str),
    #[error("<resume/> without 'previd'")]
    NoPrevid,
    #[error("unknown Stream Management element <{0}/>")]
    Unknown(String),
}

/// Reads an element in the `urn:xmpp:sm:3` namespace; None if it is in another namespace.
pub fn parse(el: &Element) -> Option<Result<Nonza, NonzaError>> {
    if el.ns() != ns::SM {
        return None;
    }
    let h = |name| {
        el.attr("h")
            .and_then(|h| h.parse::<u32>().ok())
            .ok_or(NonzaError::BadCount(name))
    };
    Some(match el.name() {
        "enable" => Ok(Nonza::Enable {
            resume: matches!(el.attr("resume"), Some("true" | "1")),
            max: el.attr("max").and_then(|m| m.parse().ok()),
        }),
        "resume" => match el.attr("previd") {
            Some(previd) => h("resume").map(|h| Nonza::Resume {
                previd: previd.to_owned(),
                h,
            }),
            None => Err(NonzaError::NoPrevid),
        },
        "a" => h("a").map(|h| Nonza::Ack { h }),
        "r" => Ok(Nonza::Request),
        other => Err(NonzaError::Unknown(other.to_owned())),
    })
}

/// The client acknowledged more stanzas than were sent (XEP-0198 §4).
#[derive(Debug, PartialEq, Eq)]
pub struct CountTooHigh {
    pub h: u32,
    pub sent: u32,
}

impl CountTooHigh {
    /// The application condition that goes with the `<undefined-condition/>` stream error.
    pub fn to_element(&self) -> Element {
        let mut el = Element::bare("handled-count-too-high", ns::SM);
        set_attr(&mut el, "h", self.h.to_string());
        set_attr(&mut el, "send-count", self.sent.to_string());
        el
    }
}

/// The counters and unacked queue of one stream with SM enabled.
#[derive(Debug)]
pub struct SmState {
    /// The resumption id when resumption was granted.
    pub id: Option<String>,
    /// Resumption timeout granted, in seconds.
    pub max_secs: u64,
    /// Stanzas received from the client since `<enabled/>` (our `h`), wrapping.
    pub inbound: u32,
    /// The client's last `h`: how many of our stanzas it acknowledged, wrapping.
    pub acked: u32,
    /// Stanzas written but not acknowledged, oldest first; stanza number `acked + 1` first.
    pub unacked: VecDeque<Element>,
    /// An `<r/>` of ours is waiting for its `<a/>`.
    pub request_outstanding: bool,
}

impl SmState {
    pub fn new(id: Option<String>, max_secs: u64) -> SmState {
        SmState {
            id,
            max_secs,
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            request_outstanding: false,
        }
    }

    pub fn resumable(&self) -> bool {
        self.id.is_some()
    }

    /// How many stanzas we have written since `<enabled/>`, wrapping.
    pub fn sent(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    pub fn count_inbound(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    /// Drops the stanzas `h` acknowledges. Differences are taken modulo 2^32 (XEP-0198 §4), so
    /// a counter that wrapped is still understood; an `h` behind the last one is not "too high"
    /// but would be read as one, which is right: counts never go back.
    pub fn ack(&mut self, h: u32) -> Result<(), CountTooHigh> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(CountTooHigh {
                h,
                sent: self.sent(),
            });
        }
        self.unacked.drain(..newly);
        self.acked = h;
        Ok(())
    }

    /// Records stanzas just written.
    pub fn sent_stanzas(&mut self, written: impl IntoIterator<Item = Element>) {
        self.unacked.extend(written);
    }

    /// True when an `<r/>` should follow the `writing` stanzas about to be written.
    pub fn should_request(&mut self, writing: usize) -> bool {
        if !self.request_outstanding && self.unacked.len() + writing >= REQUEST_EVERY {
            self.request_outstanding = true;
            return true;
        }
        false
    }
}

pub fn enabled(id: Option<&str>, max_secs: u64) -> String {
    match id {
        Some(id) => format!(
            "<enabled xmlns='{}' id='{}' resume='true' max='{max_secs}'/>",
            ns::SM,
            crate::xml::escape_attr(id)
        ),
        None => format!("<enabled xmlns='{}'/>", ns::SM),
    }
}

pub fn resumed(previd: &str, h: u32) -> String {
    format!(
        "<resumed xmlns='{}' previd='{}' h='{h}'/>",
        ns::SM,
        crate::xml::escape_attr(previd)
    )
}

/// `<failed/>` with a stanza error condition, and our `h` when the client may learn it.
pub fn failed(condition: &str, h: Option<u32>) -> String {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{}'{h}><{condition} xmlns='{}'/></failed>",
        ns::SM,
        ns::STANZAS_ERRORS
    )
}

pub fn ack(h: u32) -> String {
    format!("<a xmlns='{}' h='{h}'/>", ns::SM)
}

/// `<r/>`, written with the stanzas it follows.
pub const REQUEST: &str = "<r xmlns='urn:xmpp:sm:3'/>";

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn parses_the_nonzas() {
        let sm = ns::SM;
        assert_eq!(
            parse(&el(&format!(
                "<enable xmlns='{sm}' resume='true' max='60'/>"
            ))),
            Some(Ok(Nonza::Enable {
                resume: true,
                max: Some(60)
            }))
        );
        assert_eq!(
            parse(&el(&format!("<resume xmlns='{sm}' previd='x' h='4'/>"))),
            Some(Ok(Nonza::Resume {
                previd: "x".into(),
                h: 4
            }))
        );
        assert_eq!(
            parse(&el(&format!("<a xmlns='{sm}' h='-1'/>"))),
            Some(Err(NonzaError::BadCount("a")))
        );
        assert_eq!(parse(&el("<a xmlns='jabber:client'/>")), None);
    }

    #[test]
    fn request_is_in_the_sm_namespace() {
        let r: Element = REQUEST.parse().unwrap();
        assert!(r.is("r", ns::SM));
    }

    #[test]
    fn acks_wrap_around_and_too_high_is_refused() {
        let mut sm = SmState::new(None, 0);
        sm.acked = u32::MAX - 1;
        sm.sent_stanzas((0..4).map(|i| el(&format!("<message xmlns='jabber:client' id='{i}'/>"))));
        assert_eq!(sm.sent(), 2);
        sm.ack(0).unwrap();
        assert_eq!(sm.unacked.len(), 2);
        assert_eq!(sm.unacked[0].attr("id"), Some("2"));
        assert_eq!(sm.ack(5), Err(CountTooHigh { h: 5, sent: 2 }));
        sm.ack(2).unwrap();
        assert!(sm.unacked.is_empty());
    }
}
