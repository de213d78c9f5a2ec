//! `corvid ctl` against a live server: the control socket, its answers as text and as JSON,
//! and who may use it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use tokio::process::Command;

use common::xmpp::Session;
use common::{body, online, TestServer};

/// Runs `corvid -c <dir>/ctl.toml ctl <args>`, the file naming the server's control socket.
/// Asynchronously: the server answering runs on the test's own runtime.
async fn ctl(server: &TestServer, args: &[&str]) -> Output {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    corvid_beside(server, &all).await
}

/// `corvid <args>` with a configuration naming the running server's storage and socket, as
/// an operator's /etc/corvid/corvid.toml would.
async fn corvid_beside(server: &TestServer, args: &[&str]) -> Output {
    let config = server.dir.path().join("ctl.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = '{}'\n[control]\nsocket = '{}'\n",
            server.config().storage.url,
            server.config().control.socket.display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_corvid"))
        .arg("-c")
        .arg(&config)
        .args(args)
        .output()
        .await
        .expect("corvid runs")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "corvid ctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON object")
}

fn field<'a>(outcome: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    outcome["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {outcome}"))["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect()
}

#[tokio::test]
async fn status_counts_the_sessions_of_the_running_server() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let before = json(&ctl(&server, &["status", "--json"]).await);
    assert_eq!(field(&before, "sessions"), ["0"]);
    assert_eq!(field(&before, "domains"), ["localhost"]);

    let mut alice = server.client("alice", "phone", false);
    online(&mut alice).await;
    let after = json(&ctl(&server, &["--json", "status"]).await);
    assert_eq!(field(&after, "sessions"), ["1"]);

    let text = ctl(&server, &["status"]).await;
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Online sessions: 1"), "{text}");
}

#[tokio::test]
async fn the_socket_is_for_the_servers_user_alone() {
    let server = TestServer::start().await;
    let socket = &server.config().control.socket;
    let mode = std::fs::metadata(socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
}

#[tokio::test]
async fn no_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(&config, "[control]\nsocket = './nobody.sock'\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["-c", config.to_str().unwrap(), "ctl", "status"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no running server answers on"), "{stderr}");
    assert!(stderr.contains("nobody.sock"), "{stderr}");
}

/// A socket file left by a server that died is replaced at the next start; one a running
/// server answers on is not taken over.
#[tokio::test]
async fn a_stale_socket_is_replaced_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("corvid.sock");
    // What a crash leaves: the file, nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let first = start_with_socket(&socket)
        .await
        .expect("starts over a stale socket");
    let again = start_with_socket(&socket).await;
    let error = again.err().expect("a second server on a live socket fails");
    assert!(error.contains("InUse"), "{error}");
    let out = ctl(&first, &["--json", "status"]).await;
    assert_eq!(field(&json(&out), "sessions"), ["0"]);
    let TestServer { server, .. } = first;
    server.shutdown().await;
    assert!(!socket.exists(), "shutdown removes the socket file");
}

async fn start_with_socket(socket: &Path) -> Result<TestServer, String> {
    let socket = socket.to_owned();
    let attempt = tokio::spawn(async move {
        TestServer::start_with(move |config| config.control.socket = socket).await
    })
    .await;
    attempt.map_err(|panic| {
        panic
            .into_panic()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    })
}

async fn admin_server() -> TestServer {
    let server = TestServer::start().await;
    for user in ["alice", "bob"] {
        server.add_user(user).await;
    }
    server
}

#[tokio::test]
async fn users_online_announce_and_kick() {
    let server = admin_server().await;
    let mut alice = Session::online(&server, "alice", "phone").await;

    let users = json(&ctl(&server, &["users", "--json"]).await);
    assert_eq!(
        field(&users, "registereduserjids"),
        ["alice@localhost", "bob@localhost"]
    );
    let online = json(&ctl(&server, &["online", "--json"]).await);
    assert_eq!(field(&online, "onlineuserjids"), ["alice@localhost"]);

    let out = ctl(&server, &["announce", "maintenance at noon"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let announced = alice
        .expect(|el| el.name() == "message" && body(el) == "maintenance at noon")
        .await;
    assert_eq!(announced.attr("from"), Some("localhost"));

    let kicked = json(&ctl(&server, &["kick", "alice@localhost", "--json"]).await);
    assert!(
        kicked["notes"]
            .to_string()
            .contains("ended: alice@localhost"),
        "{kicked}"
    );
    assert_eq!(alice.raw.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn disable_and_enable_from_the_command_line() {
    let server = admin_server().await;
    let mut bob = Session::online(&server, "bob", "desk").await;
    json(&ctl(&server, &["disable", "bob@localhost", "--json"]).await);
    assert_eq!(bob.raw.stream_error().await, "not-authorized");
    let disabled = json(
        &ctl(
            &server,
            &[
                "run",
                "http://jabber.org/protocol/admin#get-disabled-users-list",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(field(&disabled, "disableduserjids"), ["bob@localhost"]);
    json(&ctl(&server, &["enable", "bob@localhost", "--json"]).await);
    Session::online(&server, "bob", "desk").await;
}

/// `corvid user del` on the server's storage while it runs: the account's sessions end at
/// once instead of lingering until they reconnect.
#[tokio::test]
async fn corvid_user_del_and_disable_take_effect_in_the_running_server() {
    let server = admin_server().await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let out = corvid_beside(&server, &["user", "del", "alice"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alice.raw.stream_error().await, "not-authorized");

    let mut bob = Session::online(&server, "bob", "desk").await;
    let out = corvid_beside(&server, &["user", "disable", "bob"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bob.raw.stream_error().await, "not-authorized");
    let out = corvid_beside(&server, &["user", "enable", "bob"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Session::login(&server, "bob", "desk").await;
}

#[tokio::test]
async fn commands_reload_and_shutdown() {
    let server = admin_server().await;
    let commands = json(&ctl(&server, &["commands", "--json"]).await);
    let nodes: Vec<&str> = commands["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["node"][0].as_str().unwrap())
        .collect();
    for node in [
        "http://jabber.org/protocol/admin#add-user",
        "http://jabber.org/protocol/admin#shutdown",
        "urn:corvid:admin#reload",
    ] {
        assert!(nodes.contains(&node), "{node} not in {nodes:?}");
    }

    let rooms = json(&ctl(&server, &["rooms", "--json"]).await);
    assert_eq!(field(&rooms, "roomsnum"), ["0"]);

    let reloaded = json(&ctl(&server, &["reload", "--json"]).await);
    assert!(
        field(&reloaded, "reloaded").contains(&"certificates"),
        "{reloaded}"
    );

    let unknown = ctl(&server, &["run", "urn:example:nothing"]).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no command urn:example:nothing"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    let mut alice = Session::online(&server, "alice", "phone").await;
    let out = ctl(&server, &["shutdown", "--message", "back soon"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alice
        .expect(|el| el.name() == "message" && body(el) == "back soon")
        .await;
    let stop = tokio::time::timeout(common::WAIT, server.server.stop_requested())
        .await
        .expect("the server is asked to stop");
    assert_eq!(stop, corvid::admin::Stop::Shutdown);
}
