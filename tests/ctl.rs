//! `corvid ctl` against a live server: the control socket, its answers as text and as JSON,
//! and who may use it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use tokio::process::Command;

use common::{online, TestServer};

/// Runs `corvid -c <dir>/ctl.toml ctl <args>`, the file naming the server's control socket.
/// Asynchronously: the server answering runs on the test's own runtime.
async fn ctl(server: &TestServer, args: &[&str]) -> Output {
    let config = server.dir.path().join("ctl.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nsocket = '{}'\n",
            server.config().control.socket.display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_corvid"))
        .arg("-c")
        .arg(&config)
        .arg("ctl")
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
