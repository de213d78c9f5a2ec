//! Beyond XEP-0133: the server-to-server connections open now. Registered by federation
//! itself (`s2s::S2s::register`), so the command exists only where federation runs.

use std::sync::{Arc, Weak};

use async_trait::async_trait;

use super::admin_users::ADMIN;
use super::command::{Access, Command, CommandError, Context, Outcome, Values};
use super::form;
use crate::router::Registry;
use crate::s2s::S2s;
use crate::stanza::StanzaError;
use crate::xml::forms::FieldType;

pub const LIST_S2S: &str = "urn:corvid:admin#list-s2s-connections";

pub fn register(registry: &mut Registry, s2s: Weak<S2s>) {
    super::register_command(registry, Arc::new(ListS2s(s2s)));
}

struct ListS2s(Weak<S2s>);

#[async_trait]
impl Command for ListS2s {
    fn node(&self) -> &'static str {
        LIST_S2S
    }
    fn name(&self) -> &'static str {
        "List Server-to-Server Connections"
    }
    fn access(&self) -> Access {
        Access::ServerAdmin
    }
    fn stages(&self) -> usize {
        0
    }
    async fn run(&self, _: &Context<'_>, _: &Values) -> Result<Outcome, CommandError> {
        let s2s = self
            .0
            .upgrade()
            .ok_or(CommandError::Stanza(StanzaError::service_unavailable()))?;
        let outbound: Vec<String> = s2s
            .outbound_links()
            .into_iter()
            .map(|(local, remote)| format!("{local} -> {remote}"))
            .collect();
        let inbound: Vec<String> = s2s
            .inbound_streams()
            .into_iter()
            .map(|(remote, n)| format!("{remote} ({n})"))
            .collect();
        Ok(Outcome::form(form::report(
            ADMIN,
            self.name(),
            vec![
                form::value(
                    "outgoingnum",
                    FieldType::TextSingle,
                    "Outgoing links",
                    vec![outbound.len().to_string()],
                ),
                form::value(
                    "outgoing",
                    FieldType::TextMulti,
                    "Outgoing links (local -> remote)",
                    outbound,
                ),
                form::value(
                    "incomingnum",
                    FieldType::TextSingle,
                    "Domains with incoming streams",
                    vec![inbound.len().to_string()],
                ),
                form::value(
                    "incoming",
                    FieldType::TextMulti,
                    "Incoming streams (remote domain, streams)",
                    inbound,
                ),
            ],
        )))
    }
}
