//! The XEP-0313 query form (`urn:xmpp:mam:2`, with the `#extended` fields) and its parsing.

use chrono::DateTime;
use jid::Jid;
use minidom::Element;

use crate::stanza::StanzaError;
use crate::xml::forms::{self, DataFormType, Field, FieldType};
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
const FIELDS: [(&str, FieldType, &str); 6] = [
    ("with", FieldType::JidSingle, "With"),
    ("start", FieldType::TextSingle, "Start"),
    ("end", FieldType::TextSingle, "End"),
    ("after-id", FieldType::TextSingle, "After ID"),
    ("before-id", FieldType::TextSingle, "Before ID"),
    ("ids", FieldType::TextMulti, "IDs"),
];

/// The empty form a client fetches to learn the fields (XEP-0313 §4.1.5).
pub fn template() -> Element {
    let fields = FIELDS
        .iter()
        .map(|(var, type_, label)| forms::blank(var, type_.clone(), label))
        .collect();
    let mut query = Element::bare("query", ns::MAM);
    query.append_child(forms::form(ns::MAM, None, fields));
    query
}

/// The values of a field, trimmed: ids and dates never carry meaningful whitespace.
fn values(field: &Field) -> Vec<String> {
    field.values.iter().map(|v| v.trim().to_owned()).collect()
}

fn single(field: &Field, var: &str) -> Result<Option<String>, StanzaError> {
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
    let form = forms::read(x).map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?;
    if form.type_ != DataFormType::Submit {
        return Err(StanzaError::bad_request().with_text("the form must be of type submit"));
    }
    for field in &form.fields {
        // Only a `fixed` field may lack a var, and a submission has no use for one.
        let var = field.var.as_deref().unwrap_or("");
        match var {
            forms::FORM_TYPE => {
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
    use crate::stanza::Condition;

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
        assert_eq!(unknown.unwrap_err().condition, Condition::BadRequest);
        let date = parse(&query(
            "<field var='start'><value>yesterday</value></field>",
        ));
        assert_eq!(date.unwrap_err().condition, Condition::BadRequest);
        let ns = "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field>";
        assert_eq!(
            parse(&query(ns)).unwrap_err().condition,
            Condition::BadRequest
        );
    }

    fn raw(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn empty_values_filter_nothing() {
        let q = parse(&query(
            "<field var='with'><value/></field>\
             <field var='after-id'><value>  </value></field>\
             <field var='ids'><value/><value>3</value></field>",
        ))
        .unwrap();
        assert_eq!(q.with, None);
        assert_eq!(q.after_id, None);
        assert_eq!(q.ids, Some(vec!["3".to_string()]));
        // An empty FORM_TYPE claims nothing, as before.
        let empty = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
                     <field var='FORM_TYPE'><value/></field></x></query>";
        assert_eq!(parse(&raw(empty)), Ok(FormQuery::default()));
    }

    #[test]
    fn malformed_forms_are_bad_requests() {
        // Two FORM_TYPEs, even equal ones: xmpp-parsers refuses the form (XEP-0068 allows one).
        let twice = parse(&query(
            "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>",
        ));
        assert_eq!(twice.unwrap_err().condition, Condition::BadRequest);
        let no_var = parse(&query("<field><value>x</value></field>"));
        assert_eq!(no_var.unwrap_err().condition, Condition::BadRequest);
        // A fixed field may lack a var, but a query has no such field.
        let fixed = parse(&query("<field type='fixed'><value>x</value></field>"));
        assert_eq!(fixed.unwrap_err().condition, Condition::BadRequest);
        let two = parse(&query(
            "<field var='start'><value>a</value><value>b</value></field>",
        ));
        assert_eq!(two.unwrap_err().condition, Condition::BadRequest);
    }

    #[test]
    fn only_submissions_are_read() {
        let untyped = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'>\
                       <field var='after-id'><value>7</value></field></x></query>";
        assert_eq!(parse(&raw(untyped)).unwrap().after_id.as_deref(), Some("7"));
        let form = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='form'/></query>";
        assert_eq!(
            parse(&raw(form)).unwrap_err().condition,
            Condition::BadRequest
        );
    }

    #[test]
    fn the_template_lists_every_field() {
        let template = template();
        let x = template.get_child("x", ns::DATA_FORMS).unwrap();
        let form = forms::read(x).unwrap();
        assert_eq!(form.type_, DataFormType::Form);
        assert_eq!(form.form_type(), Some(ns::MAM));
        let vars: Vec<_> = form.fields[1..]
            .iter()
            .map(|f| (f.var.as_deref().unwrap(), f.type_.clone()))
            .collect();
        let expected: Vec<_> = FIELDS.iter().map(|(v, t, _)| (*v, t.clone())).collect();
        assert_eq!(vars, expected);
    }
}
