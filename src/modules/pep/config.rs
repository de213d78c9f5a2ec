//! Node configuration as XEP-0004 data forms: the `<publish-options/>` preconditions
//! (XEP-0060 §7.1.5), the owner's configure form (§8.2) and the defaults for new nodes.
//!
//! Supported fields: `pubsub#access_model` (open, presence, whitelist), `pubsub#max_items`
//! (1..=`pep.max_items_per_node`, or `max` for that limit), `pubsub#persist_items` and
//! `pubsub#send_last_published_item`. A field corvid does not support is an error, never
//! silently dropped: a client asking for a private node must not get a public one.

use minidom::Element;

use crate::config::PepConfig;
use crate::storage::{AccessModel, NodeConfig, SendLastItem};
use crate::xml::forms::{self, Field, FieldType, Malformed};
use crate::xml::ns;

const ACCESS_MODEL: &str = "pubsub#access_model";
const MAX_ITEMS: &str = "pubsub#max_items";
const PERSIST_ITEMS: &str = "pubsub#persist_items";
const SEND_LAST: &str = "pubsub#send_last_published_item";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the form's FORM_TYPE must be {0}")]
    FormType(&'static str),
    #[error("field {0} is not supported")]
    UnknownField(String),
    #[error("unsupported value for {0}")]
    BadValue(String),
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// The fields a form sets; the others keep their value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    access_model: Option<AccessModel>,
    max_items: Option<u32>,
    persist_items: Option<bool>,
    send_last: Option<SendLastItem>,
}

/// XEP-0163 defaults: presence access, items kept, last item sent on presence.
pub fn default_config(limits: &PepConfig) -> NodeConfig {
    NodeConfig {
        access_model: AccessModel::Presence,
        max_items: limits.default_max_items,
        persist_items: true,
        send_last_published_item: SendLastItem::OnSubAndPresence,
    }
}

/// The values of a field, trimmed: no supported field has meaningful whitespace.
fn values(field: &Field) -> Vec<String> {
    field.values.iter().map(|v| v.trim().to_owned()).collect()
}

fn parse_max_items(value: &str, limits: &PepConfig) -> Option<u32> {
    if value == "max" {
        return Some(limits.max_items_per_node);
    }
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=limits.max_items_per_node).contains(n))
}

/// Reads a submitted form. `form_type_required`: publish-options must name their FORM_TYPE;
/// a configure form may leave it out.
pub fn parse(
    form: &Element,
    form_type: &'static str,
    form_type_required: bool,
    limits: &PepConfig,
) -> Result<ConfigChange, FormError> {
    let form = forms::read(form)?;
    let mut change = ConfigChange::default();
    let mut seen_form_type = false;
    for field in &form.fields {
        // Only `fixed` fields lack a var, and they carry no setting.
        let Some(var) = field.var.as_deref() else {
            continue;
        };
        let mut found = values(field);
        if var == forms::FORM_TYPE {
            if found.len() != 1 || found[0] != form_type {
                return Err(FormError::FormType(form_type));
            }
            seen_form_type = true;
            continue;
        }
        let bad = || FormError::BadValue(var.to_owned());
        let value = match (found.pop(), found.is_empty()) {
            (Some(value), true) => value,
            _ => return Err(bad()),
        };
        match var {
            ACCESS_MODEL => change.access_model = Some(AccessModel::parse(&value).ok_or_else(bad)?),
            MAX_ITEMS => change.max_items = Some(parse_max_items(&value, limits).ok_or_else(bad)?),
            PERSIST_ITEMS => {
                change.persist_items = Some(forms::parse_bool(&value).ok_or_else(bad)?)
            }
            SEND_LAST => change.send_last = Some(SendLastItem::parse(&value).ok_or_else(bad)?),
            other => return Err(FormError::UnknownField(other.to_owned())),
        }
    }
    if form_type_required && !seen_form_type {
        return Err(FormError::FormType(form_type));
    }
    Ok(change)
}

impl ConfigChange {
    pub fn apply(&self, base: NodeConfig) -> NodeConfig {
        NodeConfig {
            access_model: self.access_model.unwrap_or(base.access_model),
            max_items: self.max_items.unwrap_or(base.max_items),
            persist_items: self.persist_items.unwrap_or(base.persist_items),
            send_last_published_item: self.send_last.unwrap_or(base.send_last_published_item),
        }
    }

    /// True if `config` already has every value the change names (publish-options
    /// preconditions).
    pub fn met_by(&self, config: &NodeConfig) -> bool {
        self.apply(*config) == *config
    }
}

/// The node configuration form (XEP-0060 §8.2.1) with the node's current values.
pub fn form(config: &NodeConfig) -> Element {
    let access = [
        AccessModel::Open,
        AccessModel::Presence,
        AccessModel::Whitelist,
    ]
    .map(AccessModel::as_str);
    let send_last = [
        SendLastItem::Never,
        SendLastItem::OnSub,
        SendLastItem::OnSubAndPresence,
    ]
    .map(SendLastItem::as_str);
    let fields = vec![
        forms::with_options(
            forms::field(
                ACCESS_MODEL,
                FieldType::ListSingle,
                "Who may retrieve items",
                config.access_model.as_str(),
            ),
            &access,
        ),
        forms::field(
            MAX_ITEMS,
            FieldType::TextSingle,
            "Max # of items to persist",
            &config.max_items.to_string(),
        ),
        forms::field(
            PERSIST_ITEMS,
            FieldType::Boolean,
            "Persist items to storage",
            forms::bool_value(config.persist_items),
        ),
        forms::with_options(
            forms::field(
                SEND_LAST,
                FieldType::ListSingle,
                "When to send the last published item",
                config.send_last_published_item.as_str(),
            ),
            &send_last,
        ),
    ];
    forms::form(ns::PUBSUB_NODE_CONFIG, None, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PepConfig {
        PepConfig::default()
    }

    fn submitted(fields: &str) -> Element {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>{}</value></field>{fields}</x>",
            ns::PUBSUB_PUBLISH_OPTIONS
        )
        .parse()
        .expect("test form")
    }

    #[test]
    fn max_means_the_configured_limit() {
        let change = parse(
            &submitted(
                "<field var='pubsub#max_items'><value>max</value></field>\
                   <field var='pubsub#access_model'><value>open</value></field>",
            ),
            ns::PUBSUB_PUBLISH_OPTIONS,
            true,
            &limits(),
        )
        .expect("parses");
        let config = change.apply(default_config(&limits()));
        assert_eq!(config.max_items, limits().max_items_per_node);
        assert_eq!(config.access_model, AccessModel::Open);
        assert!(change.met_by(&config));
        assert!(!change.met_by(&default_config(&limits())));
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        let unknown = submitted("<field var='pubsub#title'><value>x</value></field>");
        assert_eq!(
            parse(&unknown, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Err(FormError::UnknownField("pubsub#title".into()))
        );
        let roster = submitted("<field var='pubsub#access_model'><value>roster</value></field>");
        assert!(matches!(
            parse(&roster, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Err(FormError::BadValue(_))
        ));
        let too_many = submitted("<field var='pubsub#max_items'><value>100000</value></field>");
        assert!(parse(&too_many, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()).is_err());
    }

    #[test]
    fn wrong_form_type_is_refused() {
        let x: Element = "<x xmlns='jabber:x:data' type='submit'/>"
            .parse()
            .expect("xml");
        assert!(parse(&x, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()).is_err());
        assert!(parse(&x, ns::PUBSUB_NODE_CONFIG, false, &limits()).is_ok());
    }

    #[test]
    fn malformed_forms_are_refused_and_fixed_fields_skipped() {
        let no_var = submitted("<field><value>open</value></field>");
        assert!(matches!(
            parse(&no_var, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Err(FormError::Malformed(_))
        ));
        let twice = submitted(&format!(
            "<field var='FORM_TYPE' type='hidden'><value>{}</value></field>",
            ns::PUBSUB_PUBLISH_OPTIONS
        ));
        assert!(matches!(
            parse(&twice, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Err(FormError::Malformed(_))
        ));
        let fixed = submitted("<field type='fixed'><value>note</value></field>");
        assert_eq!(
            parse(&fixed, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Ok(ConfigChange::default())
        );
    }

    #[test]
    fn an_empty_value_is_a_bad_value() {
        let empty = submitted("<field var='pubsub#persist_items'><value/></field>");
        assert_eq!(
            parse(&empty, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Err(FormError::BadValue(PERSIST_ITEMS.into()))
        );
    }

    /// The FORM_TYPE is read first wherever the client put it: the form type gives the
    /// other fields their meaning (xmpp-parsers moves it to the front).
    #[test]
    fn form_type_is_checked_before_the_fields() {
        let x: Element = "<x xmlns='jabber:x:data' type='submit'>\
             <field var='pubsub#access_model'><value>roster</value></field>\
             <field var='FORM_TYPE' type='hidden'><value>urn:other</value></field></x>"
            .parse()
            .expect("xml");
        assert_eq!(
            parse(&x, ns::PUBSUB_PUBLISH_OPTIONS, true, &limits()),
            Err(FormError::FormType(ns::PUBSUB_PUBLISH_OPTIONS))
        );
    }

    #[test]
    fn the_configure_form_reads_back_as_the_config() {
        let config = NodeConfig {
            access_model: AccessModel::Whitelist,
            max_items: 7,
            persist_items: false,
            send_last_published_item: SendLastItem::OnSub,
        };
        let change = parse(&form(&config), ns::PUBSUB_NODE_CONFIG, true, &limits())
            .expect("our own form parses");
        assert_eq!(change.apply(default_config(&limits())), config);
    }
}
