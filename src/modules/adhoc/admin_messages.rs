//! XEP-0133 commands that talk to users: the announcement to online users, the message of
//! the day (set, edit, delete) and the welcome message (set, delete), kept per hosted domain
//! (the one the command was sent to).

use std::sync::Arc;

use async_trait::async_trait;

use super::admin_users::ADMIN;
use super::command::{Command, CommandError, Context, Outcome, Values};
use super::form::{self, Note};
use crate::admin::messages;
use crate::router::Registry;
use crate::xml::forms::DataForm;

pub fn register(registry: &mut Registry) {
    for text in [
        Text::Announce,
        Text::SetMotd,
        Text::EditMotd,
        Text::SetWelcome,
    ] {
        super::register_command(registry, Arc::new(text));
    }
    for delete in [Delete::Motd, Delete::Welcome] {
        super::register_command(registry, Arc::new(delete));
    }
}

/// The commands that take one text (a text-multi field).
#[derive(Clone, Copy)]
enum Text {
    Announce,
    SetMotd,
    EditMotd,
    SetWelcome,
}

impl Text {
    fn var(self) -> &'static str {
        match self {
            Text::Announce => "announcement",
            Text::SetMotd | Text::EditMotd => "motd",
            Text::SetWelcome => "welcome",
        }
    }
}

#[async_trait]
impl Command for Text {
    fn node(&self) -> &'static str {
        match self {
            Text::Announce => "http://jabber.org/protocol/admin#announce",
            Text::SetMotd => "http://jabber.org/protocol/admin#set-motd",
            Text::EditMotd => "http://jabber.org/protocol/admin#edit-motd",
            Text::SetWelcome => "http://jabber.org/protocol/admin#set-welcome",
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Text::Announce => "Send Announcement to Online Users",
            Text::SetMotd => "Set Message of the Day",
            Text::EditMotd => "Edit Message of the Day",
            Text::SetWelcome => "Set Welcome Message",
        }
    }
    async fn form(
        &self,
        ctx: &Context<'_>,
        _: usize,
        _: &Values,
    ) -> Result<DataForm, CommandError> {
        let label = match self {
            Text::Announce => "Announcement",
            Text::SetMotd | Text::EditMotd => "Message of the day",
            Text::SetWelcome => "Welcome message",
        };
        let mut field = form::text_multi(self.var(), label, true);
        if let Text::EditMotd = self {
            let current = messages::motd(ctx.router, ctx.requester.domain()).await?;
            field = form::with_values(
                field,
                current.iter().flat_map(|t| t.lines().map(str::to_owned)),
            );
        }
        Ok(form::ask(
            ADMIN,
            self.name(),
            "Fill out this form.",
            vec![field],
        ))
    }
    async fn check(&self, _: &Context<'_>, _: usize, values: &Values) -> Result<(), CommandError> {
        values
            .text(self.var())
            .map(|_| ())
            .ok_or_else(|| CommandError::invalid(self.var(), format!("{} is required", self.var())))
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let text = values.text(self.var()).ok_or_else(|| {
            CommandError::invalid(self.var(), format!("{} is required", self.var()))
        })?;
        let domain = ctx.requester.domain();
        let note = match self {
            Text::Announce => {
                let sent = messages::announce(ctx.router, &text, ctx.scope());
                format!("announcement sent to {sent} sessions")
            }
            Text::SetMotd | Text::EditMotd => {
                messages::set_motd(ctx.router, domain, Some(&text)).await?;
                format!("message of the day of {domain} set")
            }
            Text::SetWelcome => {
                messages::set_welcome(ctx.router, domain, Some(&text)).await?;
                format!("welcome message of {domain} set")
            }
        };
        Ok(Outcome::note(Note::info(note)))
    }
}

/// The commands that remove a text; they run at once.
#[derive(Clone, Copy)]
enum Delete {
    Motd,
    Welcome,
}

#[async_trait]
impl Command for Delete {
    fn node(&self) -> &'static str {
        match self {
            Delete::Motd => "http://jabber.org/protocol/admin#delete-motd",
            Delete::Welcome => "http://jabber.org/protocol/admin#delete-welcome",
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Delete::Motd => "Delete Message of the Day",
            Delete::Welcome => "Delete Welcome Message",
        }
    }
    fn stages(&self) -> usize {
        0
    }
    async fn run(&self, ctx: &Context<'_>, _: &Values) -> Result<Outcome, CommandError> {
        let domain = ctx.requester.domain();
        match self {
            Delete::Motd => messages::set_motd(ctx.router, domain, None).await?,
            Delete::Welcome => messages::set_welcome(ctx.router, domain, None).await?,
        }
        Ok(Outcome::note(Note::info(format!(
            "{} of {domain} deleted",
            match self {
                Delete::Motd => "message of the day",
                Delete::Welcome => "welcome message",
            }
        ))))
    }
}
