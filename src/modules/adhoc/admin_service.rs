//! XEP-0133 commands on the service itself: the admin list, restart and shut down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jid::BareJid;

use super::admin_users::ADMIN;
use super::command::{Access, Command, CommandError, Context, Outcome, Values};
use super::form::{self, Note};
use crate::admin::{messages, roles, Lifecycle, Stop};
use crate::router::Registry;
use crate::xml::forms::DataForm;

pub fn register(registry: &mut Registry) {
    super::register_command(registry, Arc::new(EditAdmins));
    super::register_command(registry, Arc::new(StopService(Stop::Restart)));
    super::register_command(registry, Arc::new(StopService(Stop::Shutdown)));
}

struct EditAdmins;

#[async_trait]
impl Command for EditAdmins {
    fn node(&self) -> &'static str {
        "http://jabber.org/protocol/admin#edit-admin"
    }
    fn name(&self) -> &'static str {
        "Edit Admin List"
    }
    async fn form(
        &self,
        ctx: &Context<'_>,
        _: usize,
        _: &Values,
    ) -> Result<DataForm, CommandError> {
        let admins = roles::admins_of(ctx.router, ctx.requester.domain()).await?;
        Ok(form::ask(
            ADMIN,
            "Editing the Admin List",
            "Server-wide admins (from the configuration) stay admins whatever this list says.",
            vec![form::with_values(
                form::jid_multi("adminjids", "The admin list"),
                admins.iter().map(|jid| jid.to_string()),
            )],
        ))
    }
    async fn check(&self, _: &Context<'_>, _: usize, values: &Values) -> Result<(), CommandError> {
        admin_list(values).map(|_| ())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let admins = admin_list(values)?;
        let domain = ctx.requester.domain();
        roles::set_domain_admins(ctx.router, domain, &admins).await?;
        Ok(Outcome::note(Note::info(format!(
            "admin list of {domain} saved"
        ))))
    }
}

fn admin_list(values: &Values) -> Result<BTreeSet<BareJid>, CommandError> {
    values
        .list("adminjids")
        .into_iter()
        .map(|text| {
            BareJid::new(text)
                .ok()
                .filter(|jid| jid.node().is_some())
                .ok_or_else(|| {
                    CommandError::invalid("adminjids", format!("'{text}' is not a bare JID"))
                })
        })
        .collect()
}

struct StopService(Stop);

/// The delays XEP-0133 offers, in seconds.
const DELAYS: &[&str] = &[
    "0", "30", "60", "90", "120", "180", "300", "600", "900", "1800", "3600",
];

#[async_trait]
impl Command for StopService {
    fn node(&self) -> &'static str {
        match self.0 {
            Stop::Restart => "http://jabber.org/protocol/admin#restart",
            Stop::Shutdown => "http://jabber.org/protocol/admin#shutdown",
        }
    }
    fn name(&self) -> &'static str {
        match self.0 {
            Stop::Restart => "Restart Service",
            Stop::Shutdown => "Shut Down Service",
        }
    }
    fn access(&self) -> Access {
        Access::ServerAdmin
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            self.name(),
            "Fill out this form.",
            vec![
                form::list_single("delay", "Time delay before the service stops", DELAYS),
                form::text_multi("announcement", "Announcement", false),
            ],
        ))
    }
    async fn check(&self, _: &Context<'_>, _: usize, values: &Values) -> Result<(), CommandError> {
        delay(values).map(|_| ())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let delay = delay(values)?;
        let lifecycle = ctx.router.service::<Lifecycle>().ok_or_else(|| {
            CommandError::Stanza(crate::stanza::StanzaError::service_unavailable())
        })?;
        let mut notes = Vec::new();
        if let Some(text) = values.text("announcement") {
            let sent = messages::announce(ctx.router, &text, |_| true);
            notes.push(Note::info(format!("announcement sent to {sent} sessions")));
        }
        let stop = self.0;
        tracing::warn!(
            ?stop,
            delay_secs = delay.as_secs(),
            "stop requested by an administrator"
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lifecycle.request(stop);
        });
        notes.push(Note::info(format!(
            "the service stops in {} seconds",
            delay.as_secs()
        )));
        Ok(Outcome {
            notes,
            ..Outcome::default()
        })
    }
}

fn delay(values: &Values) -> Result<Duration, CommandError> {
    match values.one("delay") {
        None => Ok(Duration::ZERO),
        Some(secs) => secs
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| CommandError::invalid("delay", "delay must be a number of seconds")),
    }
}
