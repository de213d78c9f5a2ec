//! Running a XEP-0313 query: resolve the ids it names, take one page, send each message to
//! the querying session as a `<result/>`, then answer with `<fin/>`.

use std::sync::Arc;

use chrono::{SecondsFormat, TimeZone, Utc};
use jid::{FullJid, Jid};
use minidom::Element;
use tracing::warn;

use super::{form, rsm};
use crate::router::{IqResult, Router};
use crate::stanza::{self, Condition, ErrorType, Kind, StanzaError};
use crate::storage::{ArchiveFilter, ArchiveQuery, ArchiveStore, ArchivedMessage, StorageError};
use crate::xml::{self, ns};

pub fn storage_failure(e: StorageError) -> StanzaError {
    warn!(error = %e, "message archive storage failed");
    StanzaError::storage_failure()
}

/// XEP-0082 DateTime with milliseconds, UTC.
pub fn stamp(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An id the client names (`after-id`, RSM `<after/>`…) that must be in the archive:
/// `<item-not-found/>` otherwise (XEP-0313 §4.3: the client's view is out of date, e.g. the
/// message was removed by retention, and it must resynchronise).
async fn existing_id(store: &dyn ArchiveStore, owner: &str, id: &str) -> Result<i64, StanzaError> {
    let not_found =
        || StanzaError::item_not_found().with_text(format!("no message '{id}' in the archive"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    if store
        .archive_contains(owner, id)
        .await
        .map_err(storage_failure)?
    {
        Ok(id)
    } else {
        Err(not_found())
    }
}

fn tighter(a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

pub struct Limits {
    pub default_page: u32,
    pub max_page: u32,
}

/// Handles a `<query xmlns='urn:xmpp:mam:2'/>` set from `from` on `owner`'s archive (a user's
/// or a room's bare JID); the results come from `owner`.
pub async fn run(
    router: &Arc<Router>,
    query: &Element,
    from: &Jid,
    owner: &str,
    limits: &Limits,
) -> IqResult {
    let form = form::parse(query)?;
    let page = rsm::parse(query)?;
    let flip = query.has_child("flip-page", ns::MAM);
    let queryid = query.attr("queryid").map(str::to_owned);
    let Ok(session) = FullJid::try_from(from.clone()) else {
        return Err(StanzaError::bad_request().with_text("queries come from a session"));
    };
    let store = router.storage().archive.as_ref();
    let owner_str = owner;

    let mut base = ArchiveFilter {
        with: form.with,
        start_ms: form.start_ms,
        end_ms: form.end_ms,
        ..ArchiveFilter::default()
    };
    if let Some(id) = &form.after_id {
        base.after_id = Some(existing_id(store, owner_str, id).await?);
    }
    if let Some(id) = &form.before_id {
        base.before_id = Some(existing_id(store, owner_str, id).await?);
    }
    if let Some(ids) = &form.ids {
        // An id that cannot be ours simply matches nothing.
        base.ids = Some(ids.iter().filter_map(|id| id.parse().ok()).collect());
    }
    let mut paging = base.clone();
    if let Some(id) = &page.after {
        let id = existing_id(store, owner_str, id).await?;
        paging.after_id = tighter(paging.after_id, Some(id), i64::max);
    }
    if let Some(Some(id)) = &page.before {
        let id = existing_id(store, owner_str, id).await?;
        paging.before_id = tighter(paging.before_id, Some(id), i64::min);
    }
    let limit = page.max.unwrap_or(limits.default_page).min(limits.max_page);
    let backward = page.before.is_some();

    let count = store
        .archive_count(owner_str, &base)
        .await
        .map_err(storage_failure)?;
    let (rows, complete) = if limit == 0 {
        (Vec::new(), count == 0)
    } else {
        let result = store
            .archive_query(
                owner_str,
                &ArchiveQuery {
                    filter: paging,
                    limit,
                    backward,
                },
            )
            .await
            .map_err(storage_failure)?;
        (result.rows, result.complete)
    };
    // The index of the first item (optional in XEP-0059) only on pages read forwards.
    // Clients read it with forward semantics: slixmpp's iterator stops once
    // `index + items == count`, which on a page read backwards from the end is true at once
    // and cut its reverse iteration short after one page. Prosody sends no index at all.
    let index = match rows.first().filter(|_| !backward) {
        Some(first) => {
            let before_first = ArchiveFilter {
                before_id: tighter(base.before_id, Some(first.id), i64::min),
                ..base.clone()
            };
            Some(
                store
                    .archive_count(owner_str, &before_first)
                    .await
                    .map_err(storage_failure)?,
            )
        }
        None => None,
    };

    let first = rows.first().map(|r| r.id.to_string());
    let last = rows.last().map(|r| r.id.to_string());
    let mut ordered = rows;
    if flip {
        ordered.reverse();
    }
    // A room's archive is also read by occupants of other servers: their results leave
    // through the router's egress, in order and ahead of the `<fin/>` answer (the link to the
    // querier's domain is one queue), instead of looking for a local session.
    let remote = !router.is_hosted(session.domain().as_str());
    for row in ordered {
        let message = result_message(&session, owner_str, queryid.as_deref(), row);
        if remote {
            router
                .route(Kind::Message, Jid::from(session.clone()), message)
                .await;
        } else if router.deliver_to_session(&session, message).is_err() {
            return Err(
                StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                    .with_text("the session cannot take the results"),
            );
        }
    }

    let mut fin = Element::bare("fin", ns::MAM);
    if complete {
        stanza::set_attr(&mut fin, "complete", "true");
    }
    if let Some(id) = &queryid {
        stanza::set_attr(&mut fin, "queryid", id.as_str());
    }
    fin.append_child(rsm::reply(
        first.as_deref().map(|f| (f, index)),
        last.as_deref(),
        count,
    ));
    Ok(Some(fin))
}

/// One archived message, wrapped for the querying session (XEP-0313 §4.2).
fn result_message(
    session: &FullJid,
    owner: &str,
    queryid: Option<&str>,
    row: ArchivedMessage,
) -> Element {
    let mut forwarded = Element::bare("forwarded", ns::FORWARD);
    let mut delay = Element::bare("delay", ns::DELAY);
    stanza::set_attr(&mut delay, "stamp", stamp(row.timestamp_ms));
    forwarded.append_child(delay);
    match xml::parse_standalone(row.stanza.as_bytes(), xml::XmlLimits::STORED) {
        Ok(original) => {
            forwarded.append_child(original);
        }
        Err(e) => warn!(id = row.id, error = %e, "unreadable archived message"),
    }
    let mut result = Element::bare("result", ns::MAM);
    if let Some(queryid) = queryid {
        stanza::set_attr(&mut result, "queryid", queryid);
    }
    stanza::set_attr(&mut result, "id", row.id.to_string());
    result.append_child(forwarded);
    let mut message = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut message, "to", session.to_string());
    stanza::set_attr(&mut message, "from", owner);
    stanza::set_attr(&mut message, "id", format!("mam-{}", row.id));
    message.append_child(result);
    message
}
