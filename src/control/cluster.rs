//! The cluster as an operator sees it: the nodes and their health, and draining this node for
//! a rolling upgrade. Offered to `corvid ctl cluster` (a table) and, as an ad-hoc command, to
//! the server admins' XMPP clients.

use std::sync::Arc;

use async_trait::async_trait;

use super::protocol::ClusterAction;
use crate::cluster::NodeStatus;
use crate::modules::adhoc::command::{Access, Command, CommandError, Context, Outcome, Values};
use crate::modules::adhoc::form::{self, Note};
use crate::router::{Registry, Router};
use crate::stanza::StanzaError;
use crate::stream::cluster_resume;
use crate::xml::forms::{DataForm, FieldType};

/// The ad-hoc command's node.
pub const CLUSTER: &str = "urn:corvid:admin#cluster";

/// The form's FORM_TYPE: corvid's own admin commands.
const FORM_TYPE: &str = "urn:corvid:admin";

const ACTIONS: &[&str] = &["list", "drain", "undrain"];

/// What an action did, and the nodes after it.
pub struct Report {
    pub notes: Vec<String>,
    /// Resumable sessions asked to move, after a drain.
    pub resumable: Option<usize>,
    pub nodes: Vec<NodeStatus>,
}

/// Applies `action` to this node and lists the nodes; Err when this server is no node of a
/// cluster or Redis cannot say.
pub async fn apply(router: &Router, action: ClusterAction) -> Result<Report, String> {
    let Some(cluster) = cluster_resume::cluster_node(router) else {
        return Err("this server is not a node of a cluster ([cluster] redis is not set)".into());
    };
    let mut notes = Vec::new();
    let mut resumable = None;
    match action {
        ClusterAction::List => {}
        ClusterAction::Drain => {
            cluster.set_draining(true);
            let asked = cluster_resume::ask_to_move(router);
            notes.push(format!(
                "this node takes no new logins; its {asked} resumable sessions were asked to \
                 resume on another node"
            ));
            resumable = Some(asked);
        }
        ClusterAction::Undrain => {
            cluster.set_draining(false);
            notes.push("this node takes logins again".into());
        }
    }
    let mut nodes = cluster.nodes().await.map_err(|e| e.to_string())?;
    // The heartbeat carries the state to the others; this node knows its own at once.
    for node in nodes.iter_mut().filter(|n| n.this_node && n.alive) {
        node.state = if cluster.is_draining() {
            "draining".into()
        } else {
            "up".into()
        };
    }
    Ok(Report {
        notes,
        resumable,
        nodes,
    })
}

/// One node as a line of text.
pub fn line(node: &NodeStatus) -> String {
    let age = node
        .heartbeat_age_ms
        .map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago"));
    format!(
        "{} (#{}){}: {}, {} sessions, heartbeat {age}",
        node.name,
        node.number,
        if node.this_node { " [this node]" } else { "" },
        node.state,
        node.sessions,
    )
}

/// On a node of a cluster: the ad-hoc command.
pub fn register(registry: &mut Registry) {
    crate::modules::adhoc::register_command(registry, Arc::new(ClusterCommand));
}

struct ClusterCommand;

#[async_trait]
impl Command for ClusterCommand {
    fn node(&self) -> &'static str {
        CLUSTER
    }
    fn name(&self) -> &'static str {
        "Cluster Nodes and Draining"
    }
    fn access(&self) -> Access {
        Access::ServerAdmin
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            FORM_TYPE,
            self.name(),
            "list the nodes; drain this node (no new logins, resumable sessions move to \
             another node); or take logins again",
            vec![form::with_values(
                form::list_single("action", "Action", ACTIONS),
                ["list".to_owned()],
            )],
        ))
    }
    async fn check(&self, _: &Context<'_>, _: usize, values: &Values) -> Result<(), CommandError> {
        action(values).map(|_| ())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let report = apply(ctx.router, action(values)?)
            .await
            .map_err(|e| CommandError::Stanza(StanzaError::service_unavailable().with_text(e)))?;
        let mut fields = vec![form::value(
            "nodes",
            FieldType::TextMulti,
            "Nodes",
            report.nodes.iter().map(line).collect(),
        )];
        if let Some(resumable) = report.resumable {
            fields.push(form::value(
                "resumable",
                FieldType::TextSingle,
                "Resumable sessions asked to move",
                vec![resumable.to_string()],
            ));
        }
        Ok(Outcome {
            notes: report.notes.into_iter().map(Note::info).collect(),
            form: Some(form::report(FORM_TYPE, self.name(), fields)),
            extra: Vec::new(),
        })
    }
}

fn action(values: &Values) -> Result<ClusterAction, CommandError> {
    match values.one("action").unwrap_or("list") {
        "list" => Ok(ClusterAction::List),
        "drain" => Ok(ClusterAction::Drain),
        "undrain" => Ok(ClusterAction::Undrain),
        other => Err(CommandError::invalid(
            "action",
            format!("'{other}': one of list, drain, undrain"),
        )),
    }
}
