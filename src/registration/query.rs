//! The `jabber:iq:register` payload (XEP-0077 §3): what the server asks for, and what a
//! client's request says, in plain fields or in a data form (§4).

use minidom::Element;

use super::NS_REGISTER;
use crate::stanza::set_attr;
use crate::xml::{forms, ns};

/// What a `<query xmlns='jabber:iq:register'/>` set asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Create the account (before authentication) or change the password (after).
    Set {
        username: Option<String>,
        password: Option<String>,
    },
    /// `<remove/>`: delete the account.
    Remove,
}

/// Reads a set's query; a form's `username`/`password` fields win over plain elements.
pub fn parse(query: &Element) -> Request {
    if query.has_child("remove", NS_REGISTER) {
        return Request::Remove;
    }
    let plain = |name: &str| query.get_child(name, NS_REGISTER).map(Element::text);
    let mut username = plain("username");
    let mut password = plain("password");
    if let Some(form) = query
        .get_child("x", ns::DATA_FORMS)
        .and_then(|x| forms::read(x).ok())
    {
        if let Some(u) = forms::first_value(&form, "username") {
            username = Some(u.to_owned());
        }
        if let Some(p) = forms::first_value(&form, "password") {
            password = Some(p.to_owned());
        }
    }
    Request::Set { username, password }
}

/// The answer to a get before authentication: instructions and the two fields, plain and as
/// a form for clients that show forms. `username` is filled in when an invite fixes it.
pub fn fields(instructions: &str, username: Option<&str>) -> Element {
    let mut query = Element::bare("query", NS_REGISTER);
    query.append_child(
        Element::builder("instructions", NS_REGISTER)
            .append(instructions)
            .build(),
    );
    let mut user = Element::bare("username", NS_REGISTER);
    if let Some(name) = username {
        user.append_text(name);
    }
    query.append_child(user);
    query.append_child(Element::bare("password", NS_REGISTER));
    query.append_child(form(instructions, username));
    query
}

/// The answer to a get on an existing account (§3.2): `<registered/>` and its username.
pub fn registered(username: &str) -> Element {
    let mut query = Element::bare("query", NS_REGISTER);
    query.append_child(Element::bare("registered", NS_REGISTER));
    query.append_child(
        Element::builder("username", NS_REGISTER)
            .append(username)
            .build(),
    );
    query.append_child(Element::bare("password", NS_REGISTER));
    query
}

fn form(instructions: &str, username: Option<&str>) -> Element {
    let field = |var: &str, kind: &str, label: &str, value: Option<&str>| {
        let mut field = Element::bare("field", ns::DATA_FORMS);
        set_attr(&mut field, "var", var);
        set_attr(&mut field, "type", kind);
        set_attr(&mut field, "label", label);
        field.append_child(Element::bare("required", ns::DATA_FORMS));
        if let Some(value) = value {
            field.append_child(
                Element::builder("value", ns::DATA_FORMS)
                    .append(value)
                    .build(),
            );
        }
        field
    };
    let mut form_type = Element::bare("field", ns::DATA_FORMS);
    set_attr(&mut form_type, "var", forms::FORM_TYPE);
    set_attr(&mut form_type, "type", "hidden");
    form_type.append_child(
        Element::builder("value", ns::DATA_FORMS)
            .append(NS_REGISTER)
            .build(),
    );
    let mut x = Element::bare("x", ns::DATA_FORMS);
    set_attr(&mut x, "type", "form");
    x.append_child(
        Element::builder("title", ns::DATA_FORMS)
            .append("Create an account")
            .build(),
    );
    x.append_child(
        Element::builder("instructions", ns::DATA_FORMS)
            .append(instructions)
            .build(),
    );
    x.append_child(form_type);
    x.append_child(field("username", "text-single", "Username", username));
    x.append_child(field("password", "text-private", "Password", None));
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fields_and_forms_are_read() {
        let plain: Element = "<query xmlns='jabber:iq:register'><username>bill</username>\
                              <password>Calliope</password></query>"
            .parse()
            .unwrap();
        assert_eq!(
            parse(&plain),
            Request::Set {
                username: Some("bill".into()),
                password: Some("Calliope".into())
            }
        );
        let form: Element = "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' \
                             type='submit'><field var='username'><value>ann</value></field>\
                             <field var='password'><value>pw</value></field></x></query>"
            .parse()
            .unwrap();
        assert_eq!(
            parse(&form),
            Request::Set {
                username: Some("ann".into()),
                password: Some("pw".into())
            }
        );
        let remove: Element = "<query xmlns='jabber:iq:register'><remove/></query>"
            .parse()
            .unwrap();
        assert_eq!(parse(&remove), Request::Remove);
        // The fields we send parse back as what a client fills in.
        assert!(fields("hi", Some("x"))
            .get_child("x", ns::DATA_FORMS)
            .is_some());
    }
}
