//! `corvid invite create` as an operator uses it: offline against storage, printing the
//! landing page and the `xmpp:` URI of an invite that then works.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn corvid(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corvid runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("corvid exits")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn invite_create_prints_a_link_that_storage_knows() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        "domain = 'example.org'\nregistration = 'invite'\n\
         [storage]\nurl = 'sqlite://corvid.db'\n\
         [http]\npublic_url = 'https://chat.example.org/'\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let added = corvid(
        &["user", "add", "romeo", "--password-stdin", "-c", config],
        Some("pw\n"),
    );
    assert!(added.status.success(), "{}", text(&added));

    let out = corvid(
        &[
            "invite", "create", "--for", "romeo", "--roster", "-c", config,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = stdout.lines();
    let url = lines.next().expect("the page");
    let uri = lines.next().expect("the uri");
    let token = url
        .strip_prefix("https://chat.example.org/invite/")
        .unwrap_or_else(|| panic!("{url}"));
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert_eq!(
        uri,
        format!("xmpp:romeo@example.org?roster;preauth={token};ibr=y")
    );

    let storage = corvid::storage::Storage::open(&format!(
        "sqlite://{}",
        dir.path().join("corvid.db").display()
    ))
    .await
    .unwrap();
    let state = storage
        .invites
        .invite(token)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(state.invite.inviter.as_deref(), Some("romeo@example.org"));
    assert!(state.invite.roster);
    assert_eq!(state.used_by, None);
    storage.close().await;

    // An operator's invite, and the mistakes an operator can make.
    let out = corvid(&["invite", "create", "-c", config], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("xmpp:example.org?register;preauth="));
    let out = corvid(&["invite", "create", "--roster", "-c", config], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("--for"), "{}", text(&out));
    let out = corvid(&["invite", "create", "--for", "nobody", "-c", config], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("nobody@example.org"), "{}", text(&out));
}
