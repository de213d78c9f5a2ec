//! XEP-0050 from the client's side: building `<command/>` requests and reading the answers.

use minidom::Element;

use super::xmpp::Session;

pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
pub const DATA: &str = "jabber:x:data";
pub const ADMIN: &str = "http://jabber.org/protocol/admin";

/// The node of XEP-0133 command `name` (`add-user`, …).
pub fn admin(name: &str) -> String {
    format!("{ADMIN}#{name}")
}

fn escape(s: &str) -> String {
    corvid::xml::escape_attr(s)
}

/// A `<command/>` IQ to the server; `fields` go into a submitted form when not empty.
pub fn request(
    node: &str,
    action: Option<&str>,
    session: Option<&str>,
    fields: &[(&str, &[&str])],
) -> String {
    let mut attrs = format!("node='{}'", escape(node));
    if let Some(action) = action {
        attrs.push_str(&format!(" action='{action}'"));
    }
    if let Some(id) = session {
        attrs.push_str(&format!(" sessionid='{}'", escape(id)));
    }
    let mut form = String::new();
    if !fields.is_empty() {
        form.push_str("<x xmlns='jabber:x:data' type='submit'>");
        for (var, values) in fields {
            form.push_str(&format!("<field var='{}'>", escape(var)));
            for value in *values {
                form.push_str(&format!(
                    "<value>{}</value>",
                    corvid::xml::escape_text(value)
                ));
            }
            form.push_str("</field>");
        }
        form.push_str("</x>");
    }
    format!(
        "<iq type='set' to='localhost'><command xmlns='{COMMANDS}' {attrs}>{form}</command></iq>"
    )
}

/// Sends a command request and returns the IQ answer.
pub async fn run(
    session: &mut Session,
    node: &str,
    action: Option<&str>,
    id: Option<&str>,
    fields: &[(&str, &[&str])],
) -> Element {
    session.iq(&request(node, action, id, fields)).await
}

/// The `<command/>` of a result, panicking with the answer otherwise.
pub fn command(answer: &Element) -> &Element {
    assert_eq!(
        answer.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(answer)
    );
    answer
        .get_child("command", COMMANDS)
        .unwrap_or_else(|| panic!("no command in {}", corvid::xml::to_string(answer)))
}

pub fn status(answer: &Element) -> String {
    command(answer)
        .attr("status")
        .unwrap_or_default()
        .to_owned()
}

pub fn session_id(answer: &Element) -> String {
    command(answer)
        .attr("sessionid")
        .expect("sessionid")
        .to_owned()
}

/// The form's fields as (var, values).
pub fn fields(answer: &Element) -> Vec<(String, Vec<String>)> {
    command(answer)
        .get_child("x", DATA)
        .map(|x| {
            x.children()
                .filter(|f| f.is("field", DATA))
                .map(|f| {
                    (
                        f.attr("var").unwrap_or_default().to_owned(),
                        f.children()
                            .filter(|v| v.is("value", DATA))
                            .map(Element::text)
                            .collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn values(answer: &Element, var: &str) -> Vec<String> {
    fields(answer)
        .into_iter()
        .find(|(v, _)| v == var)
        .map(|(_, values)| values)
        .unwrap_or_default()
}

/// The notes as (type, text).
pub fn notes(answer: &Element) -> Vec<(String, String)> {
    command(answer)
        .children()
        .filter(|n| n.is("note", COMMANDS))
        .map(|n| (n.attr("type").unwrap_or("info").to_owned(), n.text()))
        .collect()
}

/// The actions offered: the default first, then the allowed ones.
pub fn actions(answer: &Element) -> Option<(String, Vec<String>)> {
    command(answer).get_child("actions", COMMANDS).map(|a| {
        (
            a.attr("execute").unwrap_or_default().to_owned(),
            a.children().map(|c| c.name().to_owned()).collect(),
        )
    })
}

/// An error answer's defined condition and XEP-0050 specific condition.
pub fn error(answer: &Element) -> (String, Option<String>) {
    assert_eq!(
        answer.attr("type"),
        Some("error"),
        "{}",
        corvid::xml::to_string(answer)
    );
    let error = answer.get_child("error", "jabber:client").expect("error");
    let defined = error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let specific = error
        .children()
        .find(|c| c.ns() == COMMANDS)
        .map(|c| c.name().to_owned());
    (defined, specific)
}

/// The command nodes disco#items lists for `session`.
pub async fn listed(session: &mut Session) -> Vec<String> {
    let answer = session
        .iq(&format!(
            "<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='{COMMANDS}'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    answer
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .expect("query")
        .children()
        .filter_map(|item| item.attr("node").map(str::to_owned))
        .collect()
}
