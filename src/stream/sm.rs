//! XEP-0198 Stream Management, the per-stream part: the two counters, the queue of stanzas
//! written but not yet acknowledged, and the nonzas (`<enable/>`, `<resume/>`, `<a/>`, `<r/>`)
//! with the answers the server writes. Resumption across connections is `resumption.rs`.

use std::collections::VecDeque;
use std::sync::LazyLock;

use minidom::Element;

use super::random_id::random_id;
use crate::stanza::set_attr;
use crate::stanza::Condition;
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

/// Stream management granted to a session (XEP-0198 `<enabled/>`).
#[derive(Debug)]
pub struct SmGrant {
    pub id: Option<String>,
    pub max_secs: u64,
}

impl SmGrant {
    /// What an `<enable/>` gets: a resumption id (when resumption is asked for and allowed)
    /// and the timeout granted, the smaller of the client's `max` and ours (`server_max`).
    /// `node`: this node's number on a node of a cluster, which goes into the id.
    pub fn new(resume: bool, max: Option<u64>, server_max: u64, node: Option<u16>) -> SmGrant {
        let max_secs = max.map_or(server_max, |asked| asked.min(server_max));
        let id = (resume && max_secs > 0).then(|| resumption_id(node));
        SmGrant { id, max_secs }
    }
}

/// A resumption id. On a node of a cluster it starts with the node's number, so that the
/// node a client comes back to knows whom to ask; a single node's ids stay bare random ones.
pub fn resumption_id(node: Option<u16>) -> String {
    match node {
        Some(node) => format!("{node}-{}", random_id()),
        None => random_id(),
    }
}

/// The node that made resumption id `id`; None for a single node's id (or one that is not
/// ours at all, which then is simply not found).
pub fn node_of_id(id: &str) -> Option<u16> {
    let (node, rest) = id.split_once('-')?;
    if node.is_empty() || !node.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    node.parse().ok()
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

/// `<enabled/>`; with an id, resumption is granted for `max_secs`.
pub fn enabled(id: Option<&str>, max_secs: u64) -> Element {
    let mut el = Element::bare("enabled", ns::SM);
    if let Some(id) = id {
        set_attr(&mut el, "id", id);
        set_attr(&mut el, "resume", "true");
        set_attr(&mut el, "max", max_secs.to_string());
    }
    el
}

/// `<resumed/>`: `previd` is the client's, echoed back, so it must go out as an attribute
/// value and never as markup.
pub fn resumed(previd: &str, h: u32) -> Element {
    let mut el = Element::bare("resumed", ns::SM);
    set_attr(&mut el, "previd", previd);
    set_attr(&mut el, "h", h.to_string());
    el
}

/// `<failed/>` with a stanza error condition, and our `h` when the client may learn it.
pub fn failed(condition: Condition, h: Option<u32>) -> Element {
    let mut el = Element::bare("failed", ns::SM);
    if let Some(h) = h {
        set_attr(&mut el, "h", h.to_string());
    }
    el.append_child(Element::from(condition));
    el
}

pub fn ack(h: u32) -> Element {
    let mut el = Element::bare("a", ns::SM);
    set_attr(&mut el, "h", h.to_string());
    el
}

/// `<r/>`, serialized once: it goes out with a batch of stanzas every few writes, and never
/// changes, so a batch that asks for an ack allocates nothing for it.
pub static REQUEST: LazyLock<Vec<u8>> =
    LazyLock::new(|| crate::xml::to_bytes(&Element::bare("r", ns::SM)));

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
        let r: Element = std::str::from_utf8(&REQUEST).unwrap().parse().unwrap();
        assert!(r.is("r", ns::SM));
        assert_eq!(r.attrs().len(), 0);
    }

    /// Ids are echoed back (`previd` comes from the client): whatever they hold stays inside
    /// the attribute, and a third-party XEP-0198 model reads the same values back.
    #[test]
    fn hostile_ids_are_escaped_and_read_back() {
        use crate::xml::{parse_standalone, to_string, XmlLimits};

        let hostile = "x' h='9\"/><a xmlns='urn:xmpp:sm:3' h='1'/>&amp;<";
        let reparse = |el: &Element| {
            let xml = to_string(el);
            assert!(!xml.contains("<a "), "{xml}");
            assert!(xml.contains("&apos;") && xml.contains("&quot;") && xml.contains("&lt;"));
            assert!(xml.contains("&amp;amp;"), "{xml}");
            parse_standalone(xml.as_bytes(), XmlLimits::with_max_size(4096)).unwrap()
        };

        let enabled = reparse(&enabled(Some(hostile), 300));
        assert_eq!(enabled.attr("id"), Some(hostile));
        assert_eq!(enabled.attr("max"), Some("300"));
        assert_eq!(enabled.children().count(), 0);
        let model = xmpp_parsers::sm::Enabled::try_from(enabled).unwrap();
        assert_eq!(model.id.map(|id| id.0).as_deref(), Some(hostile));
        assert!(model.resume);
        assert_eq!(model.max, Some(300));

        let resumed = reparse(&resumed(hostile, 7));
        assert_eq!(resumed.attr("previd"), Some(hostile));
        let model = xmpp_parsers::sm::Resumed::try_from(resumed).unwrap();
        assert_eq!((model.previd.0.as_str(), model.h), (hostile, 7));
    }

    #[test]
    fn failed_enabled_and_counts_read_as_xep_0198() {
        use xmpp_parsers::sm;
        use xmpp_parsers::stanza_error::DefinedCondition;

        let failed = sm::Failed::try_from(failed(Condition::ItemNotFound, Some(3))).unwrap();
        assert_eq!(failed.h, Some(3));
        assert_eq!(failed.error, Some(DefinedCondition::ItemNotFound));
        // xmpp-parsers 0.23 requires `h` on `<failed/>`, which XEP-0198 makes optional: this
        // one is read by hand.
        let bare = super::failed(Condition::UnexpectedRequest, None);
        assert_eq!(bare.attrs().len(), 0);
        assert!(bare.has_child("unexpected-request", ns::STANZAS_ERRORS));

        // Without resumption, nothing but the element: no resume='false', no max.
        let plain = enabled(None, 300);
        assert_eq!((plain.attrs().len(), plain.children().count()), (0, 0));
        assert!(plain.is("enabled", ns::SM));

        assert_eq!(sm::A::try_from(ack(u32::MAX)).unwrap().h, u32::MAX);
        let too_high = CountTooHigh { h: 5, sent: 2 }.to_element();
        let too_high = sm::HandledCountTooHigh::try_from(too_high).unwrap();
        assert_eq!((too_high.h, too_high.send_count), (5, 2));
    }

    #[test]
    fn cluster_ids_name_their_node_and_single_node_ids_none() {
        let id = resumption_id(Some(7));
        assert!(id.starts_with("7-"), "{id}");
        assert_eq!(node_of_id(&id), Some(7));
        let single = resumption_id(None);
        assert_eq!(single.len(), 24);
        assert_eq!(node_of_id(&single), None);
        for garbage in [
            "",
            "-",
            "7-",
            "-abc",
            "+7-abc",
            "x7-abc",
            "70000-abc",
            "7 -abc",
        ] {
            assert_eq!(node_of_id(garbage), None, "{garbage:?}");
        }
        assert_eq!(node_of_id("0-a-b"), Some(0));
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
