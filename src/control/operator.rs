//! The running server's answers to `corvid ctl`.

use std::sync::Arc;

use async_trait::async_trait;

use super::listener::Operator;
use super::protocol::{Outcome, Request};
use crate::router::Router;
use crate::s2s::S2s;

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
}

#[async_trait]
impl Operator for ServerOperator {
    async fn handle(&self, request: Request) -> Result<Outcome, String> {
        match request {
            Request::Status => Ok(self.status()),
            Request::Commands | Request::Run { .. } | Request::AccountChanged { .. } => {
                Err("not available in this build".into())
            }
        }
    }
}
