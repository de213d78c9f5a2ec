//! The XEP-0313 query form (`urn:xmpp:mam:2`, with the `#extended` fields) and its parsing.

use chrono::DateTime;
use jid::Jid;
use minidom::Element;

use crate::stanza::{self, StanzaError};
use crate::xml::ns;

/// What a submitted form asks for. Ids stay strings until checked against the archive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FormQuery {
    pub with: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    pub ids: Option<Vec<String>>,
}

/// (var, type, label) of each field, in the order the form lists them.
const FIELDS: [(&str, &str, &str); 6] = [
    ("with", "jid-single", "With"),
    ("start", "text-single", "Start"),
    ("end", "text-single", "End"),
    ("after-id", "text-single", "After ID"),
    ("before-id", "text-single", "Before ID"),
    ("ids", "text-multi", "IDs"),
];

/// The empty form a client fetches to learn the fields (XEP-0313 §4.1.5).
pub fn template() -> Element {
    let mut x = Element::bare("x", ns::DATA_FORMS);
    stanza::set_attr(&mut x, "type", "form");
    let mut form_type = Element::bare("field", ns::DATA_FORMS);
    stanza::set_attr(&mut form_type, "var", "FORM_TYPE");
    stanza::set_attr(&mut form_type, "type", "hidden");
    form_type.append_child(
        Element::builder("value", ns::DATA_FORMS)
            .append(ns::MAM)
            .build(),
    );
    x.append_child(form_type);
    for (var, kind, label) in FIELDS {
        let mut field = Element::bare("field", ns::DATA_FORMS);
        stanza::set_attr(&mut field, "var", var);
        stanza::set_attr(&mut field, "type", kind);
        stanza::set_attr(&mut field, "label", label);
        x.append_child(field);
    }
    let mut query = Element::bare("query", ns::MAM);
    query.append_child(x);
    query
}

fn values(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|c| c.is("value", ns::DATA_FORMS))
        .map(|c| c.text().trim().to_string())
        .collect()
}

fn single(field: &Element, var: &str) -> Result<Option<String>, StanzaError> {
    let mut values = values(field);
    match values.len() {
        0 => Ok(None),
        1 => Ok(Some(values.remove(0)).filter(|v| !v.is_empty())),
        _ => Err(StanzaError::bad_request().with_text(format!("field '{var}' takes one value"))),
    }
}

/// XEP-0082 DateTime to milliseconds since the epoch.
fn datetime_ms(var: &str, value: &str) -> Result<i64, StanzaError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| StanzaError::bad_request().with_text(format!("'{var}' is not a valid date")))
}

/// Parses the `<x xmlns='jabber:x:data' type='submit'/>` of a query, if any. Unknown fields
/// are refused with `<bad-request/>` (XEP-0313 §4.1.1 lets the server refuse what it cannot
/// filter on, and silently ignoring a filter would return the wrong messages).
pub fn parse(query: &Element) -> Result<FormQuery, StanzaError> {
    let mut out = FormQuery::default();
    let Some(x) = query.get_child("x", ns::DATA_FORMS) else {
        return Ok(out);
    };
    if !matches!(x.attr("type"), Some("submit") | None) {
        return Err(StanzaError::bad_request().with_text("the form must be of type submit"));
    }
    for field in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let var = field.attr("var").unwrap_or("");
        match var {
            "FORM_TYPE" => {
                if single(field, var)?.as_deref().is_some_and(|v| v != ns::MAM) {
                    return Err(StanzaError::bad_request().with_text("unknown FORM_TYPE"));
                }
            }
            "with" => {
                if let Some(value) = single(field, var)? {
                    let jid = Jid::new(&value).map_err(|_| {
                        StanzaError::bad_request().with_text("'with' is not a valid JID")
                    })?;
                    // The archive keeps bare JIDs: a full JID narrows to its bare JID.
                    out.with = Some(jid.to_bare().to_string());
                }
            }
            "start" => {
                if let Some(value) = single(field, var)? {
                    out.start_ms = Some(datetime_ms(var, &value)?);
                }
            }
            "end" => {
                if let Some(value) = single(field, var)? {
                    out.end_ms = Some(datetime_ms(var, &value)?);
                }
            }
            "after-id" => out.after_id = single(field, var)?,
            "before-id" => out.before_id = single(field, var)?,
            "ids" => {
                let ids: Vec<String> = values(field)
                    .into_iter()
                    .filter(|v| !v.is_empty())
                    .collect();
                out.ids = Some(ids);
            }
            other => {
                return Err(
                    StanzaError::bad_request().with_text(format!("unsupported field '{other}'"))
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(fields: &str) -> Element {
        format!(
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             {fields}</x></query>"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn fields_parse() {
        let q = parse(&query(
            "<field var='with'><value>Juliet@Capulet.lit/balcony</value></field>\
             <field var='start'><value>2010-06-07T00:00:00Z</value></field>\
             <field var='end'><value>2010-07-07T13:23:54.123+02:00</value></field>\
             <field var='after-id'><value>12</value></field>\
             <field var='ids'><value>1</value><value>2</value></field>",
        ))
        .unwrap();
        assert_eq!(q.with.as_deref(), Some("juliet@capulet.lit"));
        assert_eq!(q.start_ms, Some(1_275_868_800_000));
        assert_eq!(q.end_ms, Some(1_278_501_834_123));
        assert_eq!(q.after_id.as_deref(), Some("12"));
        assert_eq!(q.ids, Some(vec!["1".to_string(), "2".to_string()]));
    }

    #[test]
    fn unknown_fields_and_bad_dates_are_bad_requests() {
        let unknown = parse(&query("<field var='fulltext'><value>x</value></field>"));
        assert_eq!(unknown.unwrap_err().condition, "bad-request");
        let date = parse(&query(
            "<field var='start'><value>yesterday</value></field>",
        ));
        assert_eq!(date.unwrap_err().condition, "bad-request");
        let ns = "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field>";
        assert_eq!(parse(&query(ns)).unwrap_err().condition, "bad-request");
    }
}
