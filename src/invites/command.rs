//! XEP-0401's ad-hoc commands (§3): `urn:xmpp:invite#invite`, an invite that makes its user the
//! inviter's contact, for admins and, with `allow_user_invites`, every local user; and
//! `urn:xmpp:invite#create-account`, an account invite for admins, optionally for one username.

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use xmpp_parsers::data_forms::DataForm;

use super::{create_invite, Invite, InviteError, InviteRequest};
use crate::modules::adhoc::command::{Access, Command, CommandError, Context, Outcome, Values};
use crate::modules::adhoc::form;
use crate::modules::adhoc::register_command;
use crate::router::{Module, Registry};
use crate::stanza::StanzaError;
use crate::xml::forms::FieldType;

pub const INVITE: &str = "urn:xmpp:invite#invite";
pub const CREATE_ACCOUNT: &str = "urn:xmpp:invite#create-account";
const FORM_TYPE: &str = "urn:xmpp:invite";

/// The module contributing the two commands.
pub struct InviteCommands {
    /// Whether users who are not admins may invite (`allow_user_invites`).
    user_invites: bool,
}

impl InviteCommands {
    pub fn new(config: &crate::config::Config) -> InviteCommands {
        InviteCommands {
            user_invites: config.allow_user_invites,
        }
    }
}

impl Module for InviteCommands {
    fn name(&self) -> &'static str {
        "invites"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let access = if self.user_invites {
            Access::LocalUser
        } else {
            Access::DomainAdmin
        };
        register_command(registry, Arc::new(InviteContact { access }));
        register_command(registry, Arc::new(CreateAccount));
    }
}

struct InviteContact {
    access: Access,
}

#[async_trait]
impl Command for InviteContact {
    fn node(&self) -> &'static str {
        INVITE
    }
    fn name(&self) -> &'static str {
        "Invite someone to join"
    }
    fn access(&self) -> Access {
        self.access
    }
    fn stages(&self) -> usize {
        0
    }
    async fn run(&self, ctx: &Context<'_>, _: &Values) -> Result<Outcome, CommandError> {
        let inviter = ctx.requester.jid().map(|jid| jid.to_bare());
        let domain = inviter
            .as_ref()
            .map_or_else(|| ctx.requester.domain().to_owned(), domain_of);
        let invite = create(
            ctx,
            InviteRequest {
                domain,
                roster: inviter.is_some(),
                inviter,
                username: None,
                expiry: None,
            },
        )
        .await?;
        Ok(answer(&invite))
    }
}

struct CreateAccount;

#[async_trait]
impl Command for CreateAccount {
    fn node(&self) -> &'static str {
        CREATE_ACCOUNT
    }
    fn name(&self) -> &'static str {
        "Create an account invite"
    }
    fn access(&self) -> Access {
        Access::DomainAdmin
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            FORM_TYPE,
            self.name(),
            "Leave the username empty to let the invited person choose one.",
            vec![form::text_single("username", "Username (optional)")],
        ))
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let username = values.one("username").filter(|name| !name.is_empty());
        let invite = create(
            ctx,
            InviteRequest {
                domain: ctx.requester.domain().to_owned(),
                inviter: None,
                username: username.map(str::to_owned),
                roster: false,
                expiry: None,
            },
        )
        .await?;
        Ok(answer(&invite))
    }
}

fn domain_of(jid: &BareJid) -> String {
    jid.domain().as_str().to_owned()
}

async fn create(ctx: &Context<'_>, request: InviteRequest) -> Result<Invite, CommandError> {
    let router = ctx.router;
    create_invite(router.storage(), router.config(), request)
        .await
        .map_err(|e| match e {
            InviteError::BadUsername(name) => {
                CommandError::invalid("username", format!("'{name}' is not a valid username"))
            }
            other => CommandError::Stanza(
                StanzaError::internal_server_error().with_text(other.to_string()),
            ),
        })
}

/// XEP-0401 §3.1's result: the `xmpp:` URI, the page for people without a client yet, and
/// when it stops working.
fn answer(invite: &Invite) -> Outcome {
    let expire = chrono::DateTime::from_timestamp_millis(invite.stored.expires_at_ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Outcome::form(form::report(
        FORM_TYPE,
        "Invite created",
        vec![
            form::value(
                "uri",
                FieldType::TextSingle,
                "Invite URI",
                vec![invite.uri.clone()],
            ),
            form::value(
                "landing-url",
                FieldType::TextSingle,
                "Invite web page",
                vec![invite.url.clone()],
            ),
            form::value("expire", FieldType::TextSingle, "Valid until", vec![expire]),
        ],
    ))
}
