//! XEP-0004 data forms, read and written through xmpp-parsers' typed [`DataForm`], so that every
//! module taking a form (MUC room configuration and voice requests, PEP node configuration, MAM
//! queries) agrees on what a well-formed form is. A form is converted only when a payload
//! carries one; routing never looks inside it.

use minidom::Element;
pub use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType, Option_};

use crate::xml::ns;

/// The var of the field naming what a form is for (XEP-0068).
pub const FORM_TYPE: &str = "FORM_TYPE";

/// A form xmpp-parsers refuses: a field without `var` that is not `fixed`, an unknown field
/// type, options on a field that is not a list, text outside `<value/>`, two hidden `FORM_TYPE`
/// fields, or a `FORM_TYPE` without exactly one value. Unknown attributes and children are
/// ignored, as they were before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed data form: {0}")]
pub struct Malformed(String);

/// Reads a submitted `<x xmlns='jabber:x:data'/>`. XEP-0004 requires `type`, but corvid has
/// always taken a form without one as a submission, and clients rely on what they got away
/// with; any other `type` is left for the caller to judge.
pub fn read(x: &Element) -> Result<DataForm, Malformed> {
    if !x.is("x", ns::DATA_FORMS) {
        return Err(Malformed("not a jabber:x:data form".to_owned()));
    }
    let mut x = x.clone();
    if x.attr("type").is_none() {
        super::attrs::set_attr(&mut x, "type", "submit");
    }
    DataForm::try_from(x).map_err(|e| Malformed(e.to_string()))
}

/// The fields named `var`, in document order. `FORM_TYPE` is an ordinary var here: callers
/// check it against what they expect, whatever type the client gave the field.
pub fn fields<'f>(form: &'f DataForm, var: &'f str) -> impl Iterator<Item = &'f Field> {
    form.fields
        .iter()
        .filter(move |f| f.var.as_deref() == Some(var))
}

/// The first value of the first field named `var`, as sent (not trimmed).
pub fn first_value<'f>(form: &'f DataForm, var: &'f str) -> Option<&'f str> {
    fields(form, var)
        .next()
        .and_then(|f| f.values.first())
        .map(String::as_str)
}

/// XEP-0004 §3.3 booleans; surrounding whitespace is tolerated.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The lexical form corvid writes booleans in.
pub fn bool_value(value: bool) -> &'static str {
    if value {
        "1"
    } else {
        "0"
    }
}

/// A field carrying one value; an empty `label` is left out.
pub fn field(var: &str, type_: FieldType, label: &str, value: &str) -> Field {
    let mut field = Field::new(var, type_).with_value(value);
    if !label.is_empty() {
        field.label = Some(label.to_owned());
    }
    field
}

/// A field with no value yet, as in a blank form a client fills in.
pub fn blank(var: &str, type_: FieldType, label: &str) -> Field {
    let mut field = Field::new(var, type_);
    field.label = Some(label.to_owned());
    field
}

/// Adds the choices of a list field.
pub fn with_options<S: AsRef<str>>(mut field: Field, options: &[S]) -> Field {
    field.options.extend(options.iter().map(|option| Option_ {
        label: None,
        value: option.as_ref().to_owned(),
    }));
    field
}

/// A `type='form'` form for clients to fill in: the hidden FORM_TYPE first, then `fields`.
pub fn form(form_type: &str, title: Option<&str>, fields: Vec<Field>) -> Element {
    let mut form = DataForm::new(DataFormType::Form, form_type, fields);
    form.title = title.map(str::to_owned);
    to_element(form)
}

/// A `type='result'` form reporting values, such as the extended disco#info of XEP-0128.
pub fn result(form_type: &str, fields: Vec<Field>) -> DataForm {
    DataForm::new(DataFormType::Result_, form_type, fields)
}

fn to_element(form: DataForm) -> Element {
    // xmpp-parsers' `From` panics only if serialising fails, and a form of plain strings
    // cannot fail there (not even with a character XML forbids: the writer deals with that).
    Element::from(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(inner: &str) -> Element {
        format!("<x xmlns='jabber:x:data' type='submit'>{inner}</x>")
            .parse()
            .expect("test xml")
    }

    #[test]
    fn values_are_kept_as_sent_and_an_empty_value_is_an_empty_string() {
        let form = read(&x("<field var='a'><value> v </value><value/></field>")).unwrap();
        assert_eq!(form.fields[0].values, vec![" v ".to_owned(), String::new()]);
        assert_eq!(first_value(&form, "a"), Some(" v "));
        assert_eq!(first_value(&form, "b"), None);
    }

    #[test]
    fn a_form_without_type_is_a_submission() {
        let el: Element = "<x xmlns='jabber:x:data'><field var='a'/></x>"
            .parse()
            .unwrap();
        assert_eq!(read(&el).unwrap().type_, DataFormType::Submit);
        let bogus: Element = "<x xmlns='jabber:x:data' type='bogus'/>".parse().unwrap();
        assert!(read(&bogus).is_err());
        let other: Element = "<x xmlns='urn:other'/>".parse().unwrap();
        assert!(read(&other).is_err());
    }

    #[test]
    fn a_field_without_var_is_malformed_unless_fixed() {
        assert!(read(&x("<field><value>1</value></field>")).is_err());
        let form = read(&x("<field type='fixed'><value>note</value></field>")).unwrap();
        assert_eq!(form.fields[0].var, None);
    }

    #[test]
    fn unknown_field_types_and_stray_text_are_malformed() {
        assert!(read(&x("<field var='a' type='bogus'/>")).is_err());
        assert!(read(&x("<field var='a'>text</field>")).is_err());
        assert!(read(&x(
            "<field var='a'><option><value>1</value></option></field>"
        ))
        .is_err());
    }

    #[test]
    fn form_type_is_one_field_with_one_value() {
        let two = "<field var='FORM_TYPE' type='hidden'><value>a</value></field>";
        assert!(read(&x(&two.repeat(2))).is_err());
        assert!(read(&x("<field var='FORM_TYPE'/>")).is_err());
        assert!(read(&x(
            "<field var='FORM_TYPE'><value>a</value><value>a</value></field>"
        ))
        .is_err());
        // A FORM_TYPE of another type is no FORM_TYPE to xmpp-parsers (XEP-0068), but still a
        // field named FORM_TYPE to the modules, which check it like the real one.
        let list = "<field var='FORM_TYPE' type='list-single'><value>b</value></field>";
        let form = read(&x(&format!("{list}{two}"))).unwrap();
        assert_eq!(form.form_type(), Some("a"));
        assert_eq!(fields(&form, FORM_TYPE).count(), 2);
    }

    #[test]
    fn written_forms_read_back() {
        let el = form(
            "urn:example",
            Some("Title"),
            vec![
                with_options(field("l", FieldType::ListSingle, "L", "a"), &["a", "b"]),
                blank("t", FieldType::TextSingle, "T"),
                field("b", FieldType::Boolean, "", bool_value(true)),
            ],
        );
        assert_eq!(el.attr("type"), Some("form"));
        let back = read(&el).unwrap();
        assert_eq!(back.type_, DataFormType::Form);
        assert_eq!(back.title.as_deref(), Some("Title"));
        assert_eq!(back.form_type(), Some("urn:example"));
        let vars: Vec<_> = back
            .fields
            .iter()
            .filter_map(|f| f.var.as_deref())
            .collect();
        assert_eq!(vars, ["FORM_TYPE", "l", "t", "b"]);
        assert_eq!(back.fields[0].type_, FieldType::Hidden);
        assert_eq!(back.fields[1].options.len(), 2);
        assert!(back.fields[2].values.is_empty());
        assert_eq!(first_value(&back, "b").and_then(parse_bool), Some(true));
        let info = read(&to_element(result(
            "urn:example",
            vec![field("n", FieldType::TextSingle, "", "3")],
        )));
        let info = info.unwrap();
        assert_eq!(info.type_, DataFormType::Result_);
        assert_eq!(info.form_type(), Some("urn:example"));
        assert_eq!(first_value(&info, "n"), Some("3"));
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool(" true "), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_bool(""), None);
    }
}
