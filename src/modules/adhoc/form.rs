//! Forms and notes as commands write them: a few builders so each command's forms read as a
//! list of fields, plus what the framework does with forms (fill in earlier answers, turn
//! them into elements).

use minidom::Element;

use super::command::Values;
use crate::xml::forms::{self, DataForm, DataFormType, Field, FieldType};
use crate::xml::ns;

pub const COMMANDS: &str = "http://jabber.org/protocol/commands";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteType {
    Info,
    Warn,
    Error,
}

impl NoteType {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteType::Info => "info",
            NoteType::Warn => "warn",
            NoteType::Error => "error",
        }
    }
}

/// XEP-0050 `<note/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: NoteType,
    pub text: String,
}

impl Note {
    pub fn info(text: impl Into<String>) -> Note {
        Note {
            type_: NoteType::Info,
            text: text.into(),
        }
    }
    pub fn warn(text: impl Into<String>) -> Note {
        Note {
            type_: NoteType::Warn,
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Note {
        Note {
            type_: NoteType::Error,
            text: text.into(),
        }
    }

    pub fn to_element(&self) -> Element {
        let mut note = Element::bare("note", COMMANDS);
        crate::stanza::set_attr(&mut note, "type", self.type_.as_str());
        note.append_text(&self.text);
        note
    }
}

/// A form for the client to fill in, with FORM_TYPE `form_type`.
pub fn ask(form_type: &str, title: &str, instructions: &str, fields: Vec<Field>) -> DataForm {
    let mut form = DataForm::new(DataFormType::Form, form_type, fields);
    form.title = Some(title.to_owned());
    if !instructions.is_empty() {
        form.instructions = Some(instructions.to_owned());
    }
    form
}

/// A `type='result'` form reporting `fields`.
pub fn report(form_type: &str, title: &str, fields: Vec<Field>) -> DataForm {
    let mut form = forms::result(form_type, fields);
    form.title = Some(title.to_owned());
    form
}

fn make(var: &str, type_: FieldType, label: &str, required: bool) -> Field {
    let mut field = forms::blank(var, type_, label);
    field.required = required;
    field
}

pub fn jid_single(var: &str, label: &str) -> Field {
    make(var, FieldType::JidSingle, label, true)
}

pub fn jid_multi(var: &str, label: &str) -> Field {
    make(var, FieldType::JidMulti, label, true)
}

pub fn text_private(var: &str, label: &str) -> Field {
    make(var, FieldType::TextPrivate, label, true)
}

pub fn text_single(var: &str, label: &str) -> Field {
    make(var, FieldType::TextSingle, label, false)
}

pub fn text_multi(var: &str, label: &str, required: bool) -> Field {
    make(var, FieldType::TextMulti, label, required)
}

pub fn list_single(var: &str, label: &str, options: &[&str]) -> Field {
    forms::with_options(make(var, FieldType::ListSingle, label, false), options)
}

/// A field showing values (in a result form, or pre-filled in a form).
pub fn with_values(mut field: Field, values: impl IntoIterator<Item = String>) -> Field {
    field.values = values.into_iter().collect();
    field
}

/// A result field with values.
pub fn value(var: &str, type_: FieldType, label: &str, values: Vec<String>) -> Field {
    with_values(forms::blank(var, type_, label), values)
}

/// Puts earlier answers back into the form (going back a stage, or asking again after a
/// validation error); fields the command filled itself keep their values when nothing was
/// submitted for them.
pub fn fill(mut form: DataForm, values: &Values) -> DataForm {
    for field in &mut form.fields {
        let Some(var) = field.var.as_deref() else {
            continue;
        };
        if var == forms::FORM_TYPE || field.type_ == FieldType::Fixed {
            continue;
        }
        let submitted = values.all(var);
        if !submitted.is_empty() && field.type_ != FieldType::TextPrivate {
            field.values = submitted.to_vec();
        }
    }
    form
}

pub fn to_element(form: DataForm) -> Element {
    Element::from(form)
}

/// The submitted `<x xmlns='jabber:x:data'/>` of a command payload, if any.
pub fn submitted(payload: &Element) -> Option<&Element> {
    payload.get_child("x", ns::DATA_FORMS)
}
