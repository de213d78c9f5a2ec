//! XEP-0133 commands on accounts: add, delete, disable, re-enable, end sessions, change the
//! password, and read the roster, last login and statistics of one account.

use std::sync::Arc;

use async_trait::async_trait;
use jid::Jid;
use minidom::Element;

use super::command::{Command, CommandError, Context, Outcome, Values};
use super::form::{self, Note};
use crate::admin::{accounts, sessions};
use crate::router::Registry;
use crate::xml::forms::{DataForm, FieldType};
use crate::xml::{ns, StreamCondition};

/// The FORM_TYPE of every XEP-0133 form.
pub const ADMIN: &str = "http://jabber.org/protocol/admin";

pub fn register(registry: &mut Registry) {
    super::register_command(registry, Arc::new(AddUser));
    for op in [
        AccountsOp::Delete,
        AccountsOp::Disable,
        AccountsOp::Reenable,
        AccountsOp::EndSession,
    ] {
        super::register_command(registry, Arc::new(op));
    }
    super::register_command(registry, Arc::new(ChangePassword));
    for op in [AccountOp::Roster, AccountOp::LastLogin, AccountOp::Stats] {
        super::register_command(registry, Arc::new(op));
    }
}

struct AddUser;

#[async_trait]
impl Command for AddUser {
    fn node(&self) -> &'static str {
        "http://jabber.org/protocol/admin#add-user"
    }
    fn name(&self) -> &'static str {
        "Add User"
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            "Adding a User",
            "Fill out this form to add a user.",
            vec![
                form::jid_single("accountjid", "The Jabber ID for the account to be added"),
                form::text_private("password", "The password for this account"),
                form::text_private("password-verify", "Retype password"),
                form::text_single("email", "Email address"),
                form::text_single("given_name", "Given name"),
                form::text_single("surname", "Family name"),
            ],
        ))
    }
    async fn check(
        &self,
        ctx: &Context<'_>,
        _: usize,
        values: &Values,
    ) -> Result<(), CommandError> {
        ctx.administered_account("accountjid", values.required("accountjid")?)
            .await?;
        let password = values.required("password")?;
        if values.one("password-verify") != Some(password) {
            return Err(CommandError::invalid(
                "password-verify",
                "password-verify does not match the password",
            ));
        }
        Ok(())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let user = ctx
            .administered_account("accountjid", values.required("accountjid")?)
            .await?;
        accounts::create_account(ctx.router, &user, values.required("password")?).await?;
        Ok(Outcome::note(Note::info(format!("{user} was created"))))
    }
}

/// The commands that do one thing to each of a list of accounts (`accountjids`).
#[derive(Clone, Copy)]
enum AccountsOp {
    Delete,
    Disable,
    Reenable,
    EndSession,
}

impl AccountsOp {
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            AccountsOp::Delete => (
                "http://jabber.org/protocol/admin#delete-user",
                "Delete User",
                "deleted",
            ),
            AccountsOp::Disable => (
                "http://jabber.org/protocol/admin#disable-user",
                "Disable User",
                "disabled",
            ),
            AccountsOp::Reenable => (
                "http://jabber.org/protocol/admin#reenable-user",
                "Re-Enable User",
                "re-enabled",
            ),
            AccountsOp::EndSession => (
                "http://jabber.org/protocol/admin#end-user-session",
                "End User Session",
                "ended",
            ),
        }
    }
}

#[async_trait]
impl Command for AccountsOp {
    fn node(&self) -> &'static str {
        self.describe().0
    }
    fn name(&self) -> &'static str {
        self.describe().1
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            self.name(),
            "Fill out this form.",
            vec![form::jid_multi("accountjids", "The Jabber ID(s)")],
        ))
    }
    async fn check(
        &self,
        ctx: &Context<'_>,
        _: usize,
        values: &Values,
    ) -> Result<(), CommandError> {
        let jids = values.list("accountjids");
        if jids.is_empty() {
            return Err(CommandError::invalid(
                "accountjids",
                "accountjids is required",
            ));
        }
        for jid in jids {
            self.target(ctx, jid).await?;
        }
        Ok(())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        self.check(ctx, 0, values).await?;
        let mut done = Vec::new();
        for text in values.list("accountjids") {
            let jid = self.target(ctx, text).await?;
            let user = jid.to_bare();
            match self {
                AccountsOp::Delete => accounts::delete_account(ctx.router, &user).await?,
                AccountsOp::Disable => accounts::set_disabled(ctx.router, &user, true).await?,
                AccountsOp::Reenable => accounts::set_disabled(ctx.router, &user, false).await?,
                AccountsOp::EndSession => {
                    sessions::end_sessions(
                        ctx.router,
                        &jid,
                        StreamCondition::PolicyViolation,
                        "session ended by an administrator",
                    );
                }
            }
            done.push(jid.to_string());
        }
        Ok(Outcome::note(Note::info(format!(
            "{}: {}",
            self.describe().2,
            done.join(", ")
        ))))
    }
}

impl AccountsOp {
    /// A bare JID of an administered account; ending a session also takes a full JID.
    async fn target(&self, ctx: &Context<'_>, text: &str) -> Result<Jid, CommandError> {
        if let AccountsOp::EndSession = self {
            if let Ok(full) = jid::FullJid::new(text.trim()) {
                ctx.administered_account("accountjids", full.to_bare().as_str())
                    .await?;
                return Ok(Jid::from(full));
            }
        }
        Ok(Jid::from(
            ctx.administered_account("accountjids", text).await?,
        ))
    }
}

struct ChangePassword;

#[async_trait]
impl Command for ChangePassword {
    fn node(&self) -> &'static str {
        "http://jabber.org/protocol/admin#change-user-password"
    }
    fn name(&self) -> &'static str {
        "Change User Password"
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            "Changing a User Password",
            "Fill out this form to change a user's password.",
            vec![
                form::jid_single("accountjid", "The Jabber ID for this account"),
                form::text_private("password", "The password for this account"),
            ],
        ))
    }
    async fn check(
        &self,
        ctx: &Context<'_>,
        _: usize,
        values: &Values,
    ) -> Result<(), CommandError> {
        ctx.administered_account("accountjid", values.required("accountjid")?)
            .await?;
        values.required("password")?;
        Ok(())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let user = ctx
            .administered_account("accountjid", values.required("accountjid")?)
            .await?;
        accounts::change_password(ctx.router, &user, values.required("password")?).await?;
        Ok(Outcome::note(Note::info(format!(
            "the password of {user} was changed"
        ))))
    }
}

/// The commands that report on one account (`accountjid`).
#[derive(Clone, Copy)]
enum AccountOp {
    Roster,
    LastLogin,
    Stats,
}

#[async_trait]
impl Command for AccountOp {
    fn node(&self) -> &'static str {
        match self {
            AccountOp::Roster => "http://jabber.org/protocol/admin#get-user-roster",
            AccountOp::LastLogin => "http://jabber.org/protocol/admin#get-user-lastlogin",
            AccountOp::Stats => "http://jabber.org/protocol/admin#user-stats",
        }
    }
    fn name(&self) -> &'static str {
        match self {
            AccountOp::Roster => "Get User Roster",
            AccountOp::LastLogin => "Get User Last Login Time",
            AccountOp::Stats => "Get User Statistics",
        }
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            self.name(),
            "Fill out this form.",
            vec![form::jid_single(
                "accountjid",
                "The Jabber ID for which to retrieve",
            )],
        ))
    }
    async fn check(
        &self,
        ctx: &Context<'_>,
        _: usize,
        values: &Values,
    ) -> Result<(), CommandError> {
        ctx.administered_account("accountjid", values.required("accountjid")?)
            .await?;
        Ok(())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let user = ctx
            .administered_account("accountjid", values.required("accountjid")?)
            .await?;
        accounts::require_account(ctx.router, &user).await?;
        let account = form::value(
            "accountjid",
            FieldType::JidSingle,
            "The Jabber ID",
            vec![user.to_string()],
        );
        let storage = ctx.router.storage();
        match self {
            AccountOp::Roster => {
                let (_, items) = storage
                    .roster
                    .roster(user.as_str())
                    .await
                    .map_err(crate::admin::AdminError::from)?;
                let mut query = Element::bare("query", ns::ROSTER);
                for item in &items {
                    query.append_child(crate::modules::roster::items::item_element(item));
                }
                let mut outcome = Outcome::form(form::report(ADMIN, self.name(), vec![account]));
                outcome.extra.push(query);
                Ok(outcome)
            }
            AccountOp::LastLogin => {
                let at = storage
                    .admin
                    .last_login(user.as_str())
                    .await
                    .map_err(crate::admin::AdminError::from)?;
                let mut fields = vec![account];
                let (form_fields, notes) = match at.and_then(timestamp) {
                    Some(at) => (
                        vec![form::value(
                            "lastlogin",
                            FieldType::TextSingle,
                            "Last login",
                            vec![at],
                        )],
                        Vec::new(),
                    ),
                    None => (
                        Vec::new(),
                        vec![Note::info(format!("{user} never logged in"))],
                    ),
                };
                fields.extend(form_fields);
                let mut outcome = Outcome::form(form::report(ADMIN, self.name(), fields));
                outcome.notes = notes;
                Ok(outcome)
            }
            AccountOp::Stats => {
                let stats = accounts::user_stats(ctx.router, &user).await?;
                Ok(Outcome::form(form::report(
                    ADMIN,
                    self.name(),
                    vec![
                        account,
                        form::value(
                            "rostersize",
                            FieldType::TextSingle,
                            "Roster size",
                            vec![stats.roster_size.to_string()],
                        ),
                        form::value(
                            "onlineresources",
                            FieldType::TextMulti,
                            "Online resources",
                            stats.online_resources,
                        ),
                    ],
                )))
            }
        }
    }
}

/// XEP-0082 DateTime in UTC.
fn timestamp(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
