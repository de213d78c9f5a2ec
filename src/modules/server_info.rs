//! The XEP-0128 forms of the server's own disco#info: XEP-0157 contact addresses
//! (`http://jabber.org/network/serverinfo`) and the XEP-0455 outage status addresses
//! (`urn:xmpp:sos:0`), both from the configuration the server started with.

use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};

use crate::config::Config;

pub const SERVERINFO: &str = "http://jabber.org/network/serverinfo";
pub const SOS: &str = "urn:xmpp:sos:0";

/// The forms `domain`'s disco#info carries; none when nothing is configured.
pub fn forms(config: &Config, domain: &str) -> Vec<DataForm> {
    let mut forms = Vec::new();
    let contact = config.contact_addresses(domain);
    if !contact.is_empty() {
        let fields = contact
            .fields()
            .into_iter()
            .map(|(var, addresses)| list(var, addresses))
            .collect();
        forms.push(DataForm::new(DataFormType::Result_, SERVERINFO, fields));
    }
    let outage = &config.outage.status_addresses;
    if !outage.is_empty() {
        forms.push(DataForm::new(
            DataFormType::Result_,
            SOS,
            vec![list("external-status-addresses", outage)],
        ));
    }
    forms
}

fn list(var: &str, values: &[String]) -> Field {
    values
        .iter()
        .fold(Field::new(var, FieldType::ListMulti), |field, value| {
            field.with_value(value)
        })
}
