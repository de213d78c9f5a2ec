//! The running server's answers to `corvid ctl`.

use std::sync::Arc;

use async_trait::async_trait;

use super::listener::Operator;
use super::protocol::{AccountChange, ClusterAction, Field, Note, Outcome, Request};
use crate::admin::sessions::end_sessions;
use crate::modules::adhoc::{self, CommandOutput};
use crate::router::Router;
use crate::s2s::S2s;
use crate::xml::StreamCondition;

pub struct ServerOperator {
    router: Arc<Router>,
    s2s: Option<Arc<S2s>>,
}

impl ServerOperator {
    pub fn new(router: Arc<Router>, s2s: Option<Arc<S2s>>) -> Self {
        ServerOperator { router, s2s }
    }

    fn status(&self) -> Outcome {
        let mut outcome = Outcome::default();
        let config = self.router.config();
        outcome.field(
            "version",
            "Version",
            vec![env!("CARGO_PKG_VERSION").to_owned()],
        );
        outcome.field(
            "domains",
            "Hosted domains",
            config
                .hosted_domains()
                .iter()
                .map(|host| host.domain.clone())
                .collect(),
        );
        outcome.field(
            "sessions",
            "Online sessions",
            vec![self.router.online_session_count().to_string()],
        );
        if let Some(s2s) = &self.s2s {
            outcome.field(
                "s2s_connections",
                "Server-to-server connections",
                vec![s2s.connection_count().to_string()],
            );
        }
        outcome
    }

    /// `corvid ctl cluster [drain|undrain]`: the nodes, after the change to this one.
    async fn cluster(&self, action: ClusterAction) -> Result<Outcome, String> {
        let report = super::cluster::apply(&self.router, action).await?;
        let mut outcome = Outcome {
            notes: report
                .notes
                .into_iter()
                .map(|text| Note {
                    kind: "info".into(),
                    text,
                })
                .collect(),
            ..Outcome::default()
        };
        if let Some(resumable) = report.resumable {
            outcome.field(
                "resumable",
                "Resumable sessions",
                vec![resumable.to_string()],
            );
        }
        outcome.rows = report
            .nodes
            .into_iter()
            .map(|node| {
                let age = node
                    .heartbeat_age_ms
                    .map_or_else(String::new, |ms| ms.to_string());
                [
                    ("name", node.name),
                    ("number", node.number.to_string()),
                    ("alive", node.alive.to_string()),
                    ("sessions", node.sessions.to_string()),
                    ("heartbeat_age_ms", age),
                    ("state", node.state),
                    ("this", node.this_node.to_string()),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), vec![value]))
                .collect()
            })
            .collect();
        Ok(outcome)
    }
}

#[async_trait]
impl Operator for ServerOperator {
    async fn handle(&self, request: Request) -> Result<Outcome, String> {
        match request {
            Request::Status => Ok(self.status()),
            Request::Cluster { action } => self.cluster(action).await,
            Request::Commands => Ok(Outcome {
                rows: adhoc::operator_commands(&self.router)
                    .into_iter()
                    .map(|(node, name)| {
                        [
                            ("node".to_owned(), vec![node.to_owned()]),
                            ("name".to_owned(), vec![name.to_owned()]),
                        ]
                        .into()
                    })
                    .collect(),
                ..Outcome::default()
            }),
            Request::Run { node, fields } => {
                let fields: Vec<(String, Vec<String>)> = fields.into_iter().collect();
                adhoc::run_as_operator(&self.router, &node, &fields)
                    .await
                    .map(outcome_of)
                    .map_err(|e| e.to_string())
            }
            Request::AccountChanged { jid, change } => {
                let jid = crate::address::parse(&jid).map_err(|e| format!("'{jid}': {e}"))?;
                let ended = match change {
                    AccountChange::Deleted => end_sessions(
                        &self.router,
                        &jid,
                        StreamCondition::NotAuthorized,
                        "account deleted",
                    ),
                    AccountChange::Disabled => end_sessions(
                        &self.router,
                        &jid,
                        StreamCondition::NotAuthorized,
                        "account disabled",
                    ),
                    // Stored credentials and FAST tokens are read at each login: nothing is
                    // cached that could still let the old password in.
                    AccountChange::Created
                    | AccountChange::PasswordChanged
                    | AccountChange::Enabled => 0,
                };
                let mut outcome = Outcome::default();
                outcome.field("ended", "Sessions ended", vec![ended.to_string()]);
                Ok(outcome)
            }
        }
    }
}

fn outcome_of(output: CommandOutput) -> Outcome {
    let mut fields: Vec<Field> = output
        .fields
        .into_iter()
        .map(|field| Field {
            name: field.var,
            label: field.label,
            values: field.values,
        })
        .collect();
    if !output.extra.is_empty() {
        fields.push(Field {
            name: "payload".into(),
            label: Some("Payload".into()),
            values: output.extra,
        });
    }
    Outcome {
        notes: output
            .notes
            .into_iter()
            .map(|note| Note {
                kind: note.type_.as_str().to_owned(),
                text: note.text,
            })
            .collect(),
        fields,
        rows: Vec::new(),
    }
}
