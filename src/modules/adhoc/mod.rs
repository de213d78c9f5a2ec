//! XEP-0050 Ad-Hoc Commands: a framework other modules contribute commands to (see
//! `register_command`), answering `<command/>` IQs to the server's domains, listing the
//! commands each requester may run on disco node `http://jabber.org/protocol/commands`, and
//! keeping multi-stage sessions. The XEP-0133 administration commands are its first users
//! (`admin_*.rs`, one file per group); `run_as_operator` runs the same commands for the
//! command line.

mod admin_lists;
mod admin_messages;
mod admin_muc;
mod admin_reload;
mod admin_s2s;
mod admin_service;
mod admin_users;
pub mod command;
pub mod form;
mod session;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jid::FullJid;
use minidom::Element;

pub use command::{
    Access, Command, CommandError, Context, Outcome, Requester, SharedCommand, Values,
};
pub use form::{Note, NoteType, COMMANDS};

use crate::admin::{messages, sessions as admin_sessions, Lifecycle};
use crate::config::Config;
use crate::router::{
    DiscoQuery, DiscoTarget, Identity, IqHandler, IqRequest, IqResult, IqType, Item, Module,
    NodeHandler, NodeInfo, PresenceObserver, Priority, Registry, Router, SessionHook,
};
use crate::stanza::{self, StanzaError};
use crate::xml::forms::DataForm;
use crate::xml::ns;
use session::{Session, SessionRefused, Sessions};

/// Every command contributed, in registration order (shared through `Router::service`).
#[derive(Default)]
pub struct Commands {
    list: RwLock<Vec<SharedCommand>>,
}

impl Commands {
    fn add(&self, command: SharedCommand) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|known| known.node() != command.node());
        list.push(command);
    }

    pub fn find(&self, node: &str) -> Option<SharedCommand> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        list.iter().find(|c| c.node() == node).cloned()
    }

    pub fn all(&self) -> Vec<SharedCommand> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Adds a command to the server's list: modules call this from their `register`. A second
/// command with the same node replaces the first.
pub fn register_command(registry: &mut Registry, command: SharedCommand) {
    registry.disco_node(
        DiscoTarget::Server,
        command.node(),
        Arc::new(CommandNode(command.clone())),
    );
    registry.service::<Commands>().add(command);
}

/// Federation's commands (see `admin_s2s`): registered by the s2s module, which exists only
/// when federation is on.
pub fn register_s2s_commands(registry: &mut Registry, s2s: std::sync::Weak<crate::s2s::S2s>) {
    admin_s2s::register(registry, s2s);
}

pub use admin_reload::RELOAD;
pub use admin_s2s::LIST_S2S;

/// The MUC service's commands (see `admin_muc`): registered by the MUC module when it runs.
pub fn register_muc_commands(
    registry: &mut Registry,
    muc: std::sync::Weak<crate::modules::muc::Muc>,
) {
    admin_muc::register(registry, muc);
}

pub use admin_muc::{DESTROY_ROOM, LIST_ROOMS};

/// The flag of sessions that got the message of the day since they logged in.
const MOTD_SENT: &str = "admin-motd-sent";

pub struct Adhoc {
    sessions: Sessions,
}

impl Adhoc {
    pub fn new(config: &Config) -> Adhoc {
        Adhoc {
            sessions: Sessions::new(
                Duration::from_secs(config.adhoc.session_timeout_secs),
                config.adhoc.max_sessions_per_user,
            ),
        }
    }
}

impl Module for Adhoc {
    fn name(&self) -> &'static str {
        "adhoc"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.server_iq(IqType::Set, COMMANDS, "command", self.clone());
        registry.server_feature(COMMANDS);
        registry.disco_node(DiscoTarget::Server, COMMANDS, Arc::new(CommandList));
        registry.session_flag(admin_sessions::AWAY_FLAG);
        registry.session_flag(MOTD_SENT);
        registry.presence_observer(Priority::Profile, self.clone());
        registry.session_hook(Priority::Profile, self);
        registry.service::<Lifecycle>();
        admin_users::register(registry);
        admin_lists::register(registry);
        admin_messages::register(registry);
        admin_service::register(registry);
        admin_reload::register(registry);
    }
}

fn commands(router: &Router) -> Option<Arc<Commands>> {
    router.service::<Commands>()
}

/// The command list on node `http://jabber.org/protocol/commands` (XEP-0050 §2.2): only what
/// the requester may run.
struct CommandList;

#[async_trait]
impl NodeHandler for CommandList {
    async fn info(&self, _: &Arc<Router>, _: &DiscoQuery<'_>) -> Result<NodeInfo, StanzaError> {
        Ok(NodeInfo {
            identities: vec![Identity::new("automation", "command-list")],
            features: Vec::new(),
        })
    }

    async fn items(
        &self,
        router: &Arc<Router>,
        query: &DiscoQuery<'_>,
    ) -> Result<Vec<Item>, StanzaError> {
        let requester = Requester::user(query.from.clone(), query.domain.to_owned());
        let mut items = Vec::new();
        for command in commands(router).map(|c| c.all()).unwrap_or_default() {
            if requester.may_run(router, command.access()).await {
                items.push(
                    Item::new(query.domain)
                        .with_node(command.node())
                        .named(command.name()),
                );
            }
        }
        Ok(items)
    }
}

/// disco#info on one command's node (XEP-0050 §2.3).
struct CommandNode(SharedCommand);

#[async_trait]
impl NodeHandler for CommandNode {
    async fn info(
        &self,
        router: &Arc<Router>,
        query: &DiscoQuery<'_>,
    ) -> Result<NodeInfo, StanzaError> {
        let requester = Requester::user(query.from.clone(), query.domain.to_owned());
        if !requester.may_run(router, self.0.access()).await {
            return Err(StanzaError::forbidden());
        }
        Ok(NodeInfo {
            identities: vec![Identity::new("automation", "command-node").named(self.0.name())],
            features: vec![COMMANDS.to_owned(), ns::DATA_FORMS.to_owned()],
        })
    }
}

fn bad_request_with(condition: &str) -> StanzaError {
    StanzaError::bad_request().with_app_condition(Element::bare(condition, COMMANDS))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Execute,
    Next,
    Prev,
    Complete,
    Cancel,
}

impl Action {
    fn parse(value: Option<&str>) -> Result<Action, StanzaError> {
        match value.unwrap_or("execute") {
            "execute" => Ok(Action::Execute),
            "next" => Ok(Action::Next),
            "prev" => Ok(Action::Prev),
            "complete" => Ok(Action::Complete),
            "cancel" => Ok(Action::Cancel),
            _ => Err(bad_request_with("malformed-action")),
        }
    }
}

/// The `<command/>` answer being built.
struct Reply {
    node: String,
    session: Option<String>,
    status: &'static str,
    /// (default action, whether `prev` is allowed, whether this is the last stage)
    actions: Option<(bool, bool)>,
    notes: Vec<Note>,
    form: Option<DataForm>,
    extra: Vec<Element>,
}

impl Reply {
    fn new(node: &str, session: Option<String>, status: &'static str) -> Reply {
        Reply {
            node: node.to_owned(),
            session,
            status,
            actions: None,
            notes: Vec::new(),
            form: None,
            extra: Vec::new(),
        }
    }

    fn into_element(self) -> Element {
        let mut command = Element::bare("command", COMMANDS);
        stanza::set_attr(&mut command, "node", self.node);
        if let Some(id) = self.session {
            stanza::set_attr(&mut command, "sessionid", id);
        }
        stanza::set_attr(&mut command, "status", self.status);
        if let Some((prev, last)) = self.actions {
            let default = if last { "complete" } else { "next" };
            let mut actions = Element::bare("actions", COMMANDS);
            stanza::set_attr(&mut actions, "execute", default);
            if prev {
                actions.append_child(Element::bare("prev", COMMANDS));
            }
            actions.append_child(Element::bare(default, COMMANDS));
            command.append_child(actions);
        }
        for note in &self.notes {
            command.append_child(note.to_element());
        }
        if let Some(form) = self.form {
            command.append_child(form::to_element(form));
        }
        for extra in self.extra {
            command.append_child(extra);
        }
        command
    }
}

impl Adhoc {
    /// The reply asking for `session.stage`'s form, filled with the answers so far.
    async fn ask(
        &self,
        command: &dyn Command,
        ctx: &Context<'_>,
        id: String,
        session: Session,
        error: Option<Note>,
    ) -> Result<Reply, StanzaError> {
        let form = command
            .form(ctx, session.stage, &session.values)
            .await
            .map_err(stanza_error)?;
        let mut reply = Reply::new(command.node(), Some(id.clone()), "executing");
        reply.actions = Some((session.stage > 0, session.stage + 1 >= command.stages()));
        reply.form = Some(form::fill(form, &session.values));
        reply.notes.extend(error);
        self.sessions.put_back(id, session);
        Ok(reply)
    }

    async fn handle_command(
        &self,
        router: &Arc<Router>,
        request: &IqRequest,
    ) -> Result<Reply, StanzaError> {
        let payload = request.payload();
        let node = payload
            .attr("node")
            .ok_or_else(|| StanzaError::bad_request().with_text("no node"))?;
        let action = Action::parse(payload.attr("action"))?;
        let domain = router.hosted_domain_of(request.stanza.attr("to"));
        let requester = Requester::user(request.from.clone(), domain);
        let command = commands(router)
            .and_then(|c| c.find(node))
            .ok_or_else(StanzaError::item_not_found)?;
        if !requester.may_run(router, command.access()).await {
            return Err(StanzaError::forbidden());
        }
        let ctx = Context {
            router,
            requester: &requester,
        };
        let Some(id) = payload.attr("sessionid") else {
            if action != Action::Execute {
                return Err(bad_request_with("bad-action"));
            }
            if command.stages() == 0 {
                return finish(&*command, &ctx, None, &Values::default())
                    .await
                    .map_err(stanza_error);
            }
            let id = self.sessions.start(request.from.clone(), node);
            let session = self
                .sessions
                .take(&id, &request.from, node)
                .map_err(|_| StanzaError::internal_server_error())?;
            return self.ask(&*command, &ctx, id, session, None).await;
        };
        let mut session = match self.sessions.take(id, &request.from, node) {
            Ok(session) => session,
            Err(SessionRefused::Unknown | SessionRefused::NotOwner) => {
                return Err(bad_request_with("bad-sessionid"))
            }
        };
        let id = id.to_owned();
        let last = session.stage + 1 >= command.stages();
        match action {
            Action::Cancel => Ok(Reply::new(node, Some(id), "canceled")),
            Action::Prev => {
                if session.stage == 0 {
                    self.sessions.put_back(id, session);
                    return Err(bad_request_with("bad-action"));
                }
                session.stage -= 1;
                self.ask(&*command, &ctx, id, session, None).await
            }
            Action::Complete if !last => {
                self.sessions.put_back(id, session);
                Err(bad_request_with("bad-action"))
            }
            Action::Execute | Action::Next | Action::Complete => {
                if let Some(x) = form::submitted(payload) {
                    match crate::xml::forms::read(x) {
                        Ok(submitted) => session.values.merge(&submitted),
                        Err(e) => {
                            self.sessions.put_back(id, session);
                            return Err(StanzaError::bad_request().with_text(e.to_string()));
                        }
                    }
                }
                if let Err(e) = command.check(&ctx, session.stage, &session.values).await {
                    let note = invalid_note(e)?;
                    return self.ask(&*command, &ctx, id, session, Some(note)).await;
                }
                if !last {
                    session.stage += 1;
                    return self.ask(&*command, &ctx, id, session, None).await;
                }
                // A failure the client can correct keeps the session for another try.
                match finish(&*command, &ctx, Some(id.clone()), &session.values).await {
                    Ok(reply) => Ok(reply),
                    Err(e @ CommandError::Invalid { .. }) => {
                        let note = invalid_note(e)?;
                        self.ask(&*command, &ctx, id, session, Some(note)).await
                    }
                    Err(e) => Err(stanza_error(e)),
                }
            }
        }
    }
}

/// A validation failure as the note shown in the form; any other failure as its error.
fn invalid_note(e: CommandError) -> Result<Note, StanzaError> {
    match e {
        CommandError::Invalid { field, text } => Ok(Note::error(match field {
            Some(field) if !text.contains(&field) => format!("{field}: {text}"),
            _ => text,
        })),
        CommandError::Stanza(e) => Err(e),
        CommandError::UnknownCommand(_) => Err(StanzaError::item_not_found()),
    }
}

fn stanza_error(e: CommandError) -> StanzaError {
    match invalid_note(e) {
        Ok(note) => StanzaError::bad_request().with_text(note.text),
        Err(e) => e,
    }
}

/// Runs the command to its completed reply.
async fn finish(
    command: &dyn Command,
    ctx: &Context<'_>,
    id: Option<String>,
    values: &Values,
) -> Result<Reply, CommandError> {
    let outcome = command.run(ctx, values).await?;
    let mut reply = Reply::new(command.node(), id, "completed");
    reply.notes = outcome.notes;
    reply.form = outcome.form;
    reply.extra = outcome.extra;
    Ok(reply)
}

#[async_trait]
impl IqHandler for Adhoc {
    fn unhandled_type(&self) -> StanzaError {
        StanzaError::bad_request()
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        self.handle_command(router, &request)
            .await
            .map(|reply| Some(reply.into_element()))
    }
}

#[async_trait]
impl PresenceObserver for Adhoc {
    /// Keeps the away flag (see `admin::sessions`) in step with the session's `<show/>`.
    async fn broadcasted(&self, router: &Arc<Router>, from: &FullJid, presence: &Element) {
        let Some(away) = router.session_flag(admin_sessions::AWAY_FLAG) else {
            return;
        };
        let is_away = presence
            .get_child("show", ns::CLIENT)
            .is_some_and(|show| matches!(show.text().trim(), "away" | "xa"));
        router.set_session_flag(from, away, is_away);
    }
}

#[async_trait]
impl SessionHook for Adhoc {
    /// The message of the day, once per login.
    async fn became_available(&self, router: &Arc<Router>, session: &FullJid) {
        let Some(sent) = router.session_flag(MOTD_SENT) else {
            return;
        };
        if router.has_session_flag(session, sent) {
            return;
        }
        router.set_session_flag(session, sent, true);
        match messages::motd(router, session.domain().as_str()).await {
            Ok(Some(text)) => messages::send_headline(router, session, &text),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "message of the day lookup failed"),
        }
    }
}

/// What a command run by the operator answered.
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    pub notes: Vec<Note>,
    /// The result form's fields (FORM_TYPE left out), with their labels and values.
    pub fields: Vec<OutputField>,
    /// Further payload, serialized (a roster `<query/>`).
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputField {
    pub var: String,
    pub label: Option<String>,
    pub values: Vec<String>,
}

/// Runs command `node` to completion as the server's operator (every admin right, no JID),
/// answering every stage's form with `fields`. For the command line. Commands that act on
/// "the domain the command was sent to" (message of the day, welcome message, admin list)
/// act on the main domain; `run_as_operator_on` names another.
pub async fn run_as_operator(
    router: &Arc<Router>,
    node: &str,
    fields: &[(String, Vec<String>)],
) -> Result<CommandOutput, CommandError> {
    run_as_operator_on(router, router.domain(), node, fields).await
}

/// `run_as_operator` as if the command had been sent to the hosted domain `domain`.
pub async fn run_as_operator_on(
    router: &Arc<Router>,
    domain: &str,
    node: &str,
    fields: &[(String, Vec<String>)],
) -> Result<CommandOutput, CommandError> {
    let command = commands(router)
        .and_then(|c| c.find(node))
        .ok_or_else(|| CommandError::UnknownCommand(node.to_owned()))?;
    let requester = Requester::operator(domain.to_owned());
    let ctx = Context {
        router,
        requester: &requester,
    };
    let values = Values::from_pairs(fields);
    for stage in 0..command.stages() {
        command.check(&ctx, stage, &values).await?;
    }
    let outcome = command.run(&ctx, &values).await?;
    let fields = outcome
        .form
        .map(|form| {
            form.fields
                .into_iter()
                .filter_map(|f| {
                    let var = f.var?;
                    (var != crate::xml::forms::FORM_TYPE).then_some(OutputField {
                        var,
                        label: f.label,
                        values: f.values,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CommandOutput {
        notes: outcome.notes,
        fields,
        extra: outcome.extra.iter().map(crate::xml::to_string).collect(),
    })
}

/// The commands the operator may run: (node, name), in registration order.
pub fn operator_commands(router: &Router) -> Vec<(&'static str, &'static str)> {
    commands(router)
        .map(|c| c.all().iter().map(|c| (c.node(), c.name())).collect())
        .unwrap_or_default()
}

/// The first form command `node` asks (what `run_as_operator` takes as `fields`), `None` for
/// a command that asks nothing.
pub async fn operator_form(
    router: &Arc<Router>,
    node: &str,
) -> Result<Option<DataForm>, CommandError> {
    let command = commands(router)
        .and_then(|c| c.find(node))
        .ok_or_else(|| CommandError::UnknownCommand(node.to_owned()))?;
    if command.stages() == 0 {
        return Ok(None);
    }
    let requester = Requester::operator(router.domain().to_owned());
    let ctx = Context {
        router,
        requester: &requester,
    };
    Ok(Some(command.form(&ctx, 0, &Values::default()).await?))
}
