//! XEP-0050 Ad-Hoc Commands over real sockets: listing by right, execution rights, sessions
//! bound to the full JID that started them, expiry, next/prev/complete/cancel, validation
//! errors shown in the form, and commands contributed by another module.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::adhoc::{self, *};
use common::xmpp::Session;
use common::*;
use corvid::modules::adhoc::form as forms;
use corvid::modules::adhoc::{
    register_command, Access, Command, CommandError, Context, Outcome, Values,
};
use corvid::router::{Module, Registry};
use corvid::xml::forms::{DataForm, FieldType};

const WIZARD: &str = "urn:test:wizard";

/// A two-stage command any local user may run, contributed by a module of its own: a colour
/// (only red or blue), then a size; it reports both.
struct Wizard;

#[async_trait]
impl Command for Wizard {
    fn node(&self) -> &'static str {
        WIZARD
    }
    fn name(&self) -> &'static str {
        "Wizard"
    }
    fn access(&self) -> Access {
        Access::LocalUser
    }
    fn stages(&self) -> usize {
        2
    }
    async fn form(
        &self,
        _: &Context<'_>,
        stage: usize,
        _: &Values,
    ) -> Result<DataForm, CommandError> {
        let field = if stage == 0 {
            forms::list_single("color", "Colour", &["red", "blue"])
        } else {
            forms::text_single("size", "Size")
        };
        Ok(forms::ask("urn:test", "Wizard", "", vec![field]))
    }
    async fn check(
        &self,
        _: &Context<'_>,
        stage: usize,
        values: &Values,
    ) -> Result<(), CommandError> {
        if stage == 0 && !matches!(values.one("color"), Some("red" | "blue")) {
            return Err(CommandError::invalid("color", "color must be red or blue"));
        }
        Ok(())
    }
    async fn run(&self, _: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let report = |var: &str| {
            forms::value(
                var,
                FieldType::TextSingle,
                var,
                values.one(var).map(str::to_owned).into_iter().collect(),
            )
        };
        Ok(Outcome::form(forms::report(
            "urn:test",
            "Wizard",
            vec![report("color"), report("size")],
        )))
    }
}

struct WizardModule;

impl Module for WizardModule {
    fn name(&self) -> &'static str {
        "wizard"
    }
    fn register(self: Arc<Self>, registry: &mut Registry) {
        register_command(registry, Arc::new(Wizard));
    }
}

async fn server_with(timeout_secs: u64) -> TestServer {
    let server = TestServer::start_full(
        |config| {
            config.admins = vec!["admin@localhost".into()];
            config.adhoc.session_timeout_secs = timeout_secs;
        },
        |storage| storage,
        vec![Arc::new(WizardModule)],
    )
    .await;
    for user in ["admin", "alice", "bob"] {
        server.add_user(user).await;
    }
    server
}

async fn server() -> TestServer {
    server_with(600).await
}

#[tokio::test]
async fn admins_see_admin_commands_and_users_do_not() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let as_admin = listed(&mut admin).await;
    assert!(as_admin.contains(&adhoc::admin("add-user")), "{as_admin:?}");
    assert!(as_admin.contains(&adhoc::admin("shutdown")), "{as_admin:?}");
    assert!(as_admin.contains(&WIZARD.to_owned()));
    let as_user = listed(&mut alice).await;
    assert_eq!(as_user, vec![WIZARD.to_owned()]);
    // The server advertises the protocol.
    let info = alice
        .iq("<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let features: Vec<_> = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("query")
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(features.contains(&COMMANDS), "{features:?}");
}

#[tokio::test]
async fn command_node_info_only_for_those_who_may_run_it() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let query = format!(
        "<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{}'/></iq>",
        adhoc::admin("add-user")
    );
    let info = admin.iq(&query).await;
    let query_el = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("info");
    let identity = query_el.get_child("identity", "http://jabber.org/protocol/disco#info");
    assert_eq!(identity.and_then(|i| i.attr("type")), Some("command-node"));
    let refused = alice.iq(&query).await;
    assert_eq!(error(&refused).0, "forbidden");
}

#[tokio::test]
async fn a_user_executing_an_admin_command_is_forbidden() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let answer = run(&mut alice, &adhoc::admin("add-user"), None, None, &[]).await;
    assert_eq!(error(&answer).0, "forbidden");
    let answer = run(
        &mut alice,
        &adhoc::admin("delete-user"),
        Some("execute"),
        None,
        &[],
    )
    .await;
    assert_eq!(error(&answer).0, "forbidden");
    let unknown = run(&mut alice, "urn:nothing", None, None, &[]).await;
    assert_eq!(error(&unknown).0, "item-not-found");
}

#[tokio::test]
async fn next_prev_and_complete_walk_the_stages() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let first = run(&mut alice, WIZARD, None, None, &[]).await;
    assert_eq!(status(&first), "executing");
    assert_eq!(
        actions(&first),
        Some(("next".to_owned(), vec!["next".to_owned()]))
    );
    let id = session_id(&first);
    let second = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["blue"])],
    )
    .await;
    assert_eq!(status(&second), "executing");
    assert_eq!(session_id(&second), id);
    assert!(fields(&second).iter().any(|(var, _)| var == "size"));
    assert_eq!(
        actions(&second),
        Some((
            "complete".to_owned(),
            vec!["prev".to_owned(), "complete".to_owned()]
        ))
    );
    // Back to the first stage: the earlier answer is still there.
    let back = run(&mut alice, WIZARD, Some("prev"), Some(&id), &[]).await;
    assert_eq!(values(&back, "color"), ["blue"]);
    // `complete` is not offered at the first stage.
    let early = run(&mut alice, WIZARD, Some("complete"), Some(&id), &[]).await;
    assert_eq!(
        error(&early),
        ("bad-request".into(), Some("bad-action".into()))
    );
    let again = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["red"])],
    )
    .await;
    assert_eq!(status(&again), "executing");
    let done = run(
        &mut alice,
        WIZARD,
        Some("complete"),
        Some(&id),
        &[("size", &["L"])],
    )
    .await;
    assert_eq!(status(&done), "completed");
    assert_eq!(values(&done, "color"), ["red"]);
    assert_eq!(values(&done, "size"), ["L"]);
    // A finished session is gone.
    let after = run(&mut alice, WIZARD, Some("next"), Some(&id), &[]).await;
    assert_eq!(
        error(&after),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
}

#[tokio::test]
async fn execute_without_action_takes_the_default() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let id = session_id(&run(&mut alice, WIZARD, None, None, &[]).await);
    let second = run(
        &mut alice,
        WIZARD,
        Some("execute"),
        Some(&id),
        &[("color", &["red"])],
    )
    .await;
    assert!(fields(&second).iter().any(|(var, _)| var == "size"));
    let done = run(&mut alice, WIZARD, None, Some(&id), &[("size", &["S"])]).await;
    assert_eq!(status(&done), "completed");
}

#[tokio::test]
async fn cancel_ends_the_session() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let id = session_id(&run(&mut alice, WIZARD, None, None, &[]).await);
    let canceled = run(&mut alice, WIZARD, Some("cancel"), Some(&id), &[]).await;
    assert_eq!(status(&canceled), "canceled");
    let after = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["red"])],
    )
    .await;
    assert_eq!(
        error(&after),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
}

#[tokio::test]
async fn a_validation_error_comes_back_in_the_form_and_the_session_stays_open() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let id = session_id(&run(&mut alice, WIZARD, None, None, &[]).await);
    let refused = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["green"])],
    )
    .await;
    assert_eq!(status(&refused), "executing");
    assert_eq!(session_id(&refused), id);
    let notes = notes(&refused);
    assert!(
        notes
            .iter()
            .any(|(t, text)| t == "error" && text.contains("color")),
        "{notes:?}"
    );
    // The same stage is asked again, with what was sent.
    assert_eq!(values(&refused, "color"), ["green"]);
    let fixed = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["red"])],
    )
    .await;
    assert!(fields(&fixed).iter().any(|(var, _)| var == "size"));
}

#[tokio::test]
async fn another_jid_cannot_use_a_session_and_the_owner_still_can() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let mut bob = Session::login(&server, "bob", "b").await;
    let mut alice_phone = Session::login(&server, "alice", "phone").await;
    let id = session_id(&run(&mut alice, WIZARD, None, None, &[]).await);
    for thief in [&mut bob, &mut alice_phone] {
        let stolen = run(
            thief,
            WIZARD,
            Some("next"),
            Some(&id),
            &[("color", &["red"])],
        )
        .await;
        assert_eq!(
            error(&stolen),
            ("bad-request".into(), Some("bad-sessionid".into()))
        );
        let cancel = run(thief, WIZARD, Some("cancel"), Some(&id), &[]).await;
        assert_eq!(error(&cancel).1.as_deref(), Some("bad-sessionid"));
    }
    let mine = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["red"])],
    )
    .await;
    assert_eq!(status(&mine), "executing");
    assert!(fields(&mine).iter().any(|(var, _)| var == "size"));
}

#[tokio::test]
async fn an_admin_session_is_not_usable_by_another_admin() {
    let server = TestServer::start_with(|config| {
        config.admins = vec!["admin@localhost".into(), "root@localhost".into()];
    })
    .await;
    server.add_user("admin").await;
    server.add_user("root").await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut root = Session::login(&server, "root", "r").await;
    let node = adhoc::admin("add-user");
    let id = session_id(&run(&mut admin, &node, None, None, &[]).await);
    let stolen = run(
        &mut root,
        &node,
        Some("complete"),
        Some(&id),
        &[
            ("accountjid", &["mallory@localhost"]),
            ("password", &["pw-12345"]),
            ("password-verify", &["pw-12345"]),
        ],
    )
    .await;
    assert_eq!(
        error(&stolen),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
    assert!(!server
        .storage()
        .accounts
        .account_exists("mallory@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn unknown_and_expired_session_ids_are_refused() {
    let server = server_with(1).await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let unknown = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some("nope"),
        &[("color", &["red"])],
    )
    .await;
    assert_eq!(
        error(&unknown),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
    let id = session_id(&run(&mut alice, WIZARD, None, None, &[]).await);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let expired = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&id),
        &[("color", &["red"])],
    )
    .await;
    assert_eq!(
        error(&expired),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
}

#[tokio::test]
async fn the_operator_runs_commands_without_a_jid() {
    let server = server().await;
    let router = &server.server.ctx.router;
    let nodes: Vec<_> = corvid::modules::adhoc::operator_commands(router)
        .into_iter()
        .map(|(node, _)| node)
        .collect();
    assert!(nodes.contains(&"http://jabber.org/protocol/admin#add-user"));
    assert!(nodes.contains(&WIZARD));
    let fields = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    };
    let output = corvid::modules::adhoc::run_as_operator(
        router,
        "http://jabber.org/protocol/admin#add-user",
        &fields(&[
            ("accountjid", "carol@localhost"),
            ("password", PASSWORD),
            ("password-verify", PASSWORD),
        ]),
    )
    .await
    .expect("add-user");
    assert!(!output.notes.is_empty());
    // The new account logs in.
    let carol = Session::login(&server, "carol", "c").await;
    assert!(carol.jid.starts_with("carol@localhost/"));
    // A result form comes back as fields.
    let count = corvid::modules::adhoc::run_as_operator(
        router,
        "http://jabber.org/protocol/admin#get-registered-users-num",
        &[],
    )
    .await
    .expect("count");
    let field = count
        .fields
        .iter()
        .find(|f| f.var == "registeredusersnum")
        .expect("registeredusersnum");
    assert_eq!(field.values, ["4"]);
    // A validation failure is an error, not a half-done command.
    let bad = corvid::modules::adhoc::run_as_operator(
        router,
        "http://jabber.org/protocol/admin#add-user",
        &fields(&[
            ("accountjid", "dave@localhost"),
            ("password", "a"),
            ("password-verify", "b"),
        ]),
    )
    .await;
    assert!(matches!(bad, Err(CommandError::Invalid { .. })), "{bad:?}");
    let unknown = corvid::modules::adhoc::run_as_operator(router, "urn:none", &[]).await;
    assert!(matches!(unknown, Err(CommandError::UnknownCommand(_))));
}

#[tokio::test]
async fn opening_more_sessions_than_allowed_forgets_the_oldest() {
    let server = TestServer::start_full(
        |config| config.adhoc.max_sessions_per_user = 2,
        |storage| storage,
        vec![Arc::new(WizardModule)],
    )
    .await;
    server.add_user("alice").await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(session_id(&run(&mut alice, WIZARD, None, None, &[]).await));
    }
    let oldest = run(
        &mut alice,
        WIZARD,
        Some("next"),
        Some(&ids[0]),
        &[("color", &["red"])],
    )
    .await;
    assert_eq!(
        error(&oldest),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
    for id in &ids[1..] {
        let kept = run(
            &mut alice,
            WIZARD,
            Some("next"),
            Some(id),
            &[("color", &["red"])],
        )
        .await;
        assert_eq!(status(&kept), "executing");
    }
}
