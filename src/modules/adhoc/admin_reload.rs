//! Beyond XEP-0133: reload the configuration and the TLS certificates (what SIGHUP does), so
//! a renewed certificate is taken without a restart by an admin's client or `corvid ctl
//! reload`.

use std::sync::Arc;

use async_trait::async_trait;

use super::admin_users::ADMIN;
use super::command::{Access, Command, CommandError, Context, Outcome, Values};
use super::form::{self, Note};
use crate::router::Registry;
use crate::stanza::StanzaError;
use crate::xml::forms::FieldType;

pub const RELOAD: &str = "urn:corvid:admin#reload";

pub fn register(registry: &mut Registry) {
    super::register_command(registry, Arc::new(Reload));
}

struct Reload;

#[async_trait]
impl Command for Reload {
    fn node(&self) -> &'static str {
        RELOAD
    }
    fn name(&self) -> &'static str {
        "Reload Configuration and Certificates"
    }
    fn access(&self) -> Access {
        Access::ServerAdmin
    }
    fn stages(&self) -> usize {
        0
    }
    async fn run(&self, ctx: &Context<'_>, _: &Values) -> Result<Outcome, CommandError> {
        let reloader = ctx
            .router
            .reloader()
            .ok_or(CommandError::Stanza(StanzaError::service_unavailable()))?;
        // A file that does not validate changes nothing; the admin reads why.
        let report = reloader.reload().await.map_err(|e| {
            CommandError::Stanza(StanzaError::internal_server_error().with_text(e.to_string()))
        })?;
        Ok(Outcome {
            notes: vec![Note::info("reloaded")],
            form: Some(form::report(
                ADMIN,
                self.name(),
                vec![
                    form::value(
                        "reloaded",
                        FieldType::TextMulti,
                        "Applied now",
                        report.reloaded,
                    ),
                    form::value(
                        "needs_restart",
                        FieldType::TextMulti,
                        "Changed, applied at the next start",
                        report.needs_restart,
                    ),
                ],
            )),
            extra: Vec::new(),
        })
    }
}
