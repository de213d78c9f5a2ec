//! What a command is to the framework: a node, a name, who may run it, the forms it asks in
//! turn and what it does with the answers. Commands keep no state of their own between
//! stages: the framework hands each call every value submitted so far.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use minidom::Element;

use super::form::Note;
use crate::admin::roles;
use crate::router::Router;
use crate::stanza::StanzaError;
use crate::xml::forms::DataForm;

/// Who may see and run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any user of a hosted domain.
    LocalUser,
    /// Admins of the domain the command is sent to (and server-wide admins).
    DomainAdmin,
    /// Server-wide admins only (stopping the service, say).
    ServerAdmin,
}

/// Who runs a command: a user at their full JID, or the server's operator (the command line
/// on the server's own machine), who has every right.
#[derive(Debug, Clone)]
pub struct Requester {
    jid: Option<Jid>,
    /// The hosted domain the command was sent to.
    domain: String,
}

impl Requester {
    pub fn user(jid: Jid, domain: String) -> Requester {
        Requester {
            jid: Some(jid),
            domain,
        }
    }

    pub fn operator(domain: String) -> Requester {
        Requester { jid: None, domain }
    }

    /// `None` for the operator.
    pub fn jid(&self) -> Option<&Jid> {
        self.jid.as_ref()
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn is_operator(&self) -> bool {
        self.jid.is_none()
    }

    /// Whether the requester administers `domain`.
    pub async fn may_administer(&self, router: &Router, domain: &str) -> bool {
        match &self.jid {
            None => true,
            Some(jid) => roles::may_administer(router, &jid.to_bare(), domain).await,
        }
    }

    pub fn is_server_admin(&self, router: &Router) -> bool {
        match &self.jid {
            None => true,
            Some(jid) => roles::is_server_admin(router, &jid.to_bare()),
        }
    }

    /// Whether the requester may see or run a command of `access`.
    pub async fn may_run(&self, router: &Router, access: Access) -> bool {
        match access {
            Access::LocalUser => match &self.jid {
                None => true,
                Some(jid) => jid.node().is_some() && router.is_hosted(jid.domain().as_str()),
            },
            Access::DomainAdmin => self.may_administer(router, &self.domain).await,
            Access::ServerAdmin => self.is_server_admin(router),
        }
    }
}

/// What a command call gets besides the values.
pub struct Context<'a> {
    pub router: &'a Arc<Router>,
    pub requester: &'a Requester,
}

impl Context<'_> {
    /// Which domains listings and announcements cover: every hosted one for a server-wide
    /// admin (and the operator), else only the domain the command was sent to.
    pub fn scope(&self) -> impl Fn(&str) -> bool + '_ {
        let all = self.requester.is_server_admin(self.router);
        let own = self.requester.domain().to_owned();
        move |domain: &str| all || domain == own
    }

    /// An account the requester names: must be a bare JID of a domain the requester
    /// administers.
    pub async fn administered_account(
        &self,
        var: &str,
        value: &str,
    ) -> Result<BareJid, CommandError> {
        let jid = BareJid::new(value.trim())
            .ok()
            .filter(|jid| jid.node().is_some())
            .ok_or_else(|| CommandError::invalid(var, format!("'{value}' is not a bare JID")))?;
        if !self
            .requester
            .may_administer(self.router, jid.domain().as_str())
            .await
        {
            return Err(CommandError::invalid(
                var,
                format!("you do not administer {}", jid.domain()),
            ));
        }
        Ok(jid)
    }
}

/// Every value submitted so far, by field var.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(BTreeMap<String, Vec<String>>);

impl Values {
    pub fn from_pairs(pairs: &[(String, Vec<String>)]) -> Values {
        Values(pairs.iter().cloned().collect())
    }

    /// Adds (replacing) the fields of a submitted form.
    pub fn merge(&mut self, form: &DataForm) {
        for field in &form.fields {
            if let Some(var) = &field.var {
                self.0.insert(var.clone(), field.values.clone());
            }
        }
    }

    pub fn all(&self, var: &str) -> &[String] {
        self.0.get(var).map_or(&[], Vec::as_slice)
    }

    /// The first value, trimmed; `None` when absent or blank.
    pub fn one(&self, var: &str) -> Option<&str> {
        self.all(var)
            .first()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `one`, or a validation error naming the field.
    pub fn required(&self, var: &str) -> Result<&str, CommandError> {
        self.one(var)
            .ok_or_else(|| CommandError::invalid(var, format!("{var} is required")))
    }

    /// A text-multi field's lines joined, `None` when all blank.
    pub fn text(&self, var: &str) -> Option<String> {
        let text = self.all(var).join("\n");
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// Non-blank values, trimmed (jid-multi and list-multi fields).
    pub fn list(&self, var: &str) -> Vec<&str> {
        self.all(var)
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.0.iter()
    }
}

/// What a finished command answers.
#[derive(Debug, Default)]
pub struct Outcome {
    pub notes: Vec<Note>,
    /// A `type='result'` form with what the command reports.
    pub form: Option<DataForm>,
    /// Further payload the protocol puts beside the form (a roster `<query/>`).
    pub extra: Vec<Element>,
}

impl Outcome {
    pub fn note(note: Note) -> Outcome {
        Outcome {
            notes: vec![note],
            ..Outcome::default()
        }
    }

    pub fn form(form: DataForm) -> Outcome {
        Outcome {
            form: Some(form),
            ..Outcome::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A submitted value is wrong: the form comes back with this as an error note, and the
    /// session stays open for another try.
    #[error("{text}")]
    Invalid { field: Option<String>, text: String },
    /// No command has this node.
    #[error("no command {0}")]
    UnknownCommand(String),
    /// The command fails with this stanza error.
    #[error("{}", .0.text.as_deref().unwrap_or("command failed"))]
    Stanza(StanzaError),
}

impl CommandError {
    pub fn invalid(field: &str, text: impl Into<String>) -> CommandError {
        CommandError::Invalid {
            field: Some(field.to_owned()),
            text: text.into(),
        }
    }
}

impl From<StanzaError> for CommandError {
    fn from(e: StanzaError) -> Self {
        CommandError::Stanza(e)
    }
}

impl From<crate::admin::AdminError> for CommandError {
    fn from(e: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError;
        match e {
            AdminError::Storage(e) => {
                tracing::warn!(error = %e, "admin command storage failure");
                CommandError::Stanza(StanzaError::storage_failure())
            }
            other => CommandError::Invalid {
                field: None,
                text: other.to_string(),
            },
        }
    }
}

/// A command modules contribute (see `super::register_command`).
#[async_trait]
pub trait Command: Send + Sync {
    /// The node it is known by, e.g. `http://jabber.org/protocol/admin#add-user`.
    fn node(&self) -> &'static str;
    /// Human-readable, for command lists.
    fn name(&self) -> &'static str;
    fn access(&self) -> Access {
        Access::DomainAdmin
    }
    /// How many forms it asks in turn before running; 0 runs at once on execute.
    fn stages(&self) -> usize {
        1
    }
    /// The form of `stage` (0-based), given what was submitted at the earlier stages.
    async fn form(
        &self,
        _ctx: &Context<'_>,
        _stage: usize,
        _values: &Values,
    ) -> Result<DataForm, CommandError> {
        Err(CommandError::Stanza(StanzaError::internal_server_error()))
    }
    /// Checks what was submitted at `stage` before the next one is asked.
    async fn check(
        &self,
        _ctx: &Context<'_>,
        _stage: usize,
        _values: &Values,
    ) -> Result<(), CommandError> {
        Ok(())
    }
    /// Does the work with every value submitted.
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError>;
}

pub type SharedCommand = Arc<dyn Command>;
