//! Discussion history (XEP-0045 §7.2.14): the last groupchat messages of a room, kept in
//! memory up to a fixed count, and the selection a joiner asks for with `<history/>`.

use std::collections::VecDeque;

use chrono::{DateTime, SecondsFormat, Utc};
use minidom::Element;

use crate::stanza;
use crate::xml::{self, ns};

struct Entry {
    /// The message as broadcast (from `room/nick`, with stanza-id), without `to`.
    stanza: Element,
    at: DateTime<Utc>,
    /// Length of the serialized stanza, what `maxchars` counts.
    chars: usize,
}

pub struct History {
    entries: VecDeque<Entry>,
    capacity: usize,
}

/// What a joiner asked for; every limit applies at once (§7.2.14).
#[derive(Debug, Default, Clone, Copy)]
pub struct HistoryRequest {
    pub max_stanzas: Option<usize>,
    pub max_chars: Option<usize>,
    pub seconds: Option<i64>,
    pub since: Option<DateTime<Utc>>,
}

impl HistoryRequest {
    /// Reads `<history/>` from the join's `<x xmlns='…muc'/>`. Unreadable attributes are
    /// ignored rather than refused: the join itself matters more than the history.
    pub fn parse(x: Option<&Element>) -> HistoryRequest {
        let Some(history) = x.and_then(|x| x.get_child("history", ns::MUC)) else {
            return HistoryRequest::default();
        };
        let number = |name| {
            history
                .attr(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        HistoryRequest {
            max_stanzas: number("maxstanzas").map(|n| n.max(0) as usize),
            max_chars: number("maxchars").map(|n| n.max(0) as usize),
            seconds: number("seconds").map(|n| n.max(0)),
            since: history
                .attr("since")
                .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            entries: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    pub fn push(&mut self, stanza: Element) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        let chars = xml::to_string(&stanza).chars().count();
        self.entries.push_back(Entry {
            stanza,
            at: Utc::now(),
            chars,
        });
    }

    /// The kept message the room gave the stanza-id `id`.
    pub fn find(&self, id: &str) -> Option<&Element> {
        self.entries
            .iter()
            .find(|entry| stanza_id(&entry.stanza) == Some(id))
            .map(|entry| &entry.stanza)
    }

    /// Replaces the kept message with stanza-id `id` by what `with` makes of it (a retraction
    /// tombstone); its place and time stay.
    pub fn replace(&mut self, id: &str, with: impl FnOnce(&Element) -> Element) -> bool {
        let Some(entry) = self
            .entries
            .iter_mut()
            .find(|entry| stanza_id(&entry.stanza) == Some(id))
        else {
            return false;
        };
        entry.stanza = with(&entry.stanza);
        entry.chars = xml::to_string(&entry.stanza).chars().count();
        true
    }

    /// The messages to send a joiner, oldest first, each with a `<delay/>` from the room.
    /// `room_limit` is the room's `muc#maxhistoryfetch`.
    pub fn select(&self, request: &HistoryRequest, room_limit: usize, room: &str) -> Vec<Element> {
        let now = Utc::now();
        let max_stanzas = request.max_stanzas.unwrap_or(room_limit).min(room_limit);
        let mut chars_left = request.max_chars.unwrap_or(usize::MAX);
        let mut picked = Vec::new();
        // Newest first, so that the limits keep the most recent messages.
        for entry in self.entries.iter().rev() {
            if picked.len() >= max_stanzas {
                break;
            }
            if let Some(seconds) = request.seconds {
                if (now - entry.at).num_seconds() > seconds {
                    break;
                }
            }
            if request.since.is_some_and(|since| entry.at <= since) {
                break;
            }
            if entry.chars > chars_left {
                break;
            }
            chars_left -= entry.chars;
            picked.push(entry);
        }
        picked
            .into_iter()
            .rev()
            .map(|entry| {
                let mut message = entry.stanza.clone();
                let mut delay = Element::bare("delay", ns::DELAY);
                stanza::set_attr(&mut delay, "from", room);
                stanza::set_attr(
                    &mut delay,
                    "stamp",
                    entry.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                );
                message.append_child(delay);
                message
            })
            .collect()
    }
}

/// The id the room stamped on a message it broadcast.
fn stanza_id(message: &Element) -> Option<&str> {
    message
        .get_child("stanza-id", ns::STANZA_ID)
        .and_then(|s| s.attr("id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Element {
        format!("<message xmlns='jabber:client' type='groupchat'><body>{body}</body></message>")
            .parse()
            .unwrap()
    }

    fn bodies(messages: &[Element]) -> Vec<String> {
        messages
            .iter()
            .map(|m| m.get_child("body", ns::CLIENT).unwrap().text())
            .collect()
    }

    #[test]
    fn capacity_and_limits_keep_the_newest() {
        let mut history = History::new(3);
        for body in ["a", "b", "c", "d"] {
            history.push(message(body));
        }
        let all = history.select(&HistoryRequest::default(), 20, "r@c");
        assert_eq!(bodies(&all), ["b", "c", "d"]);
        assert!(all[0].has_child("delay", ns::DELAY));
        let two = HistoryRequest {
            max_stanzas: Some(2),
            ..Default::default()
        };
        assert_eq!(bodies(&history.select(&two, 20, "r@c")), ["c", "d"]);
        assert_eq!(
            bodies(&history.select(&HistoryRequest::default(), 1, "r@c")),
            ["d"]
        );
        let none = HistoryRequest {
            max_chars: Some(0),
            ..Default::default()
        };
        assert!(history.select(&none, 20, "r@c").is_empty());
        let future = HistoryRequest {
            since: Some(Utc::now() + chrono::Duration::seconds(5)),
            ..Default::default()
        };
        assert!(history.select(&future, 20, "r@c").is_empty());
    }
}
