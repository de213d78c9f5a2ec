//! The `corvid` binary as an operator uses it: check-config and user management.

mod common;

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

#[test]
fn check_config_accepts_the_example_and_names_mistakes() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/corvid.toml");
    let ok = corvid(&["check-config", "-c", example], None);
    assert!(ok.status.success(), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "domain = 'localhost'\n[c2s]\nprot = 5222\n").unwrap();
    let out = corvid(&["check-config", "-c", bad.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("prot"), "{}", text(&out));

    std::fs::write(&bad, "[c2s]\nmax_stanza_size = 10\n").unwrap();
    let out = corvid(&["check-config", "-c", bad.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("max_stanza_size"), "{}", text(&out));

    // A federation route the server could not use is reported before it starts.
    std::fs::write(&bad, "[s2s.routes]\n'example.net' = 'tls://10.0.0.7'\n").unwrap();
    let out = corvid(&["check-config", "-c", bad.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("example.net"), "{}", text(&out));

    let missing = dir.path().join("missing.toml");
    let out = corvid(&["check-config", "-c", missing.to_str().unwrap()], None);
    assert!(!out.status.success());
}

#[test]
fn user_add_list_passwd_del() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = 'sqlite://{}'\n",
            dir.path().join("db.sqlite").display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let add = corvid(
        &["user", "add", "Alice", "--password-stdin", "-c", c],
        Some("pw1\n"),
    );
    assert!(add.status.success(), "{}", text(&add));
    assert!(
        text(&add).contains("alice@localhost"),
        "usernames are normalised: {}",
        text(&add)
    );
    let again = corvid(
        &[
            "user",
            "add",
            "alice@localhost",
            "--password-stdin",
            "-c",
            c,
        ],
        Some("pw\n"),
    );
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"));
    let add = corvid(
        &["user", "add", "bob", "--password-stdin", "-c", c],
        Some("pw2\n"),
    );
    assert!(add.status.success());
    let list = corvid(&["user", "list", "-c", c], None);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "alice@localhost\nbob@localhost\n"
    );
    let passwd = corvid(
        &["user", "passwd", "bob", "--password-stdin", "-c", c],
        Some("new\n"),
    );
    assert!(passwd.status.success(), "{}", text(&passwd));
    let wrong_domain = corvid(&["user", "del", "bob@elsewhere", "-c", c], None);
    assert!(!wrong_domain.status.success());
    let del = corvid(&["user", "del", "bob", "-c", c], None);
    assert!(del.status.success(), "{}", text(&del));
    let del = corvid(&["user", "del", "bob", "-c", c], None);
    assert!(text(&del).contains("does not exist"));
    let empty = corvid(
        &["user", "add", "carol", "--password-stdin", "-c", c],
        Some("\n"),
    );
    assert!(!empty.status.success());
    let list = corvid(&["user", "list", "-c", c], None);
    assert_eq!(String::from_utf8_lossy(&list.stdout), "alice@localhost\n");
    let import = corvid(
        &["user", "import", "-c", c],
        Some("u1 pw\n# comment\nu2 pw two\nalice x\n"),
    );
    assert!(import.status.success(), "{}", text(&import));
    assert!(
        text(&import).contains("imported 2 accounts (1 already existed)"),
        "{}",
        text(&import)
    );
    let list = corvid(&["user", "list", "-c", c], None);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "alice@localhost\nu1@localhost\nu2@localhost\n"
    );
}

/// `user del` removes the account's message archive too (it is keyed by JID, not account).
#[tokio::test]
async fn user_del_removes_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    std::fs::write(&config, format!("[storage]\nurl = '{url}'\n")).unwrap();
    let c = config.to_str().unwrap();
    for user in ["bob", "carol"] {
        let add = corvid(
            &["user", "add", user, "--password-stdin", "-c", c],
            Some("pw\n"),
        );
        assert!(add.status.success(), "{}", text(&add));
    }
    let storage = corvid::storage::Storage::open(&url).await.unwrap();
    let record = |owner: &str, id: i64| corvid::storage::ArchivedMessage {
        owner: owner.into(),
        id,
        timestamp_ms: 1_700_000_000_000,
        with: "alice@localhost".into(),
        outgoing: false,
        stanza: "<message xmlns='jabber:client'><body>x</body></message>".into(),
    };
    storage
        .archive
        .archive_append(&[record("bob@localhost", 1), record("carol@localhost", 2)])
        .await
        .unwrap();
    let del = corvid(&["user", "del", "bob", "-c", c], None);
    assert!(del.status.success(), "{}", text(&del));
    assert_eq!(
        storage
            .archive
            .archive_count("bob@localhost", &Default::default())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        storage
            .archive
            .archive_count("carol@localhost", &Default::default())
            .await
            .unwrap(),
        1
    );
}

/// `corvid user` works on every hosted domain, and only on those.
#[test]
fn users_of_any_hosted_domain_are_managed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        format!(
            "domain = 'a.example'\n[hosts.'b.example']\n[storage]\nurl = 'sqlite://{}'\n",
            dir.path().join("db.sqlite").display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    for (user, shown) in [
        ("alice", "alice@a.example"),
        ("alice@b.example", "alice@b.example"),
        ("Bob@B.Example", "bob@b.example"),
    ] {
        let add = corvid(
            &["user", "add", user, "--password-stdin", "-c", c],
            Some("pw\n"),
        );
        assert!(add.status.success(), "{}", text(&add));
        assert!(text(&add).contains(shown), "{}", text(&add));
    }
    let elsewhere = corvid(
        &[
            "user",
            "add",
            "carol@c.example",
            "--password-stdin",
            "-c",
            c,
        ],
        Some("pw\n"),
    );
    assert!(!elsewhere.status.success());
    assert!(
        text(&elsewhere).contains("a.example, b.example"),
        "{}",
        text(&elsewhere)
    );
    let list = corvid(&["user", "list", "-c", c], None);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "alice@a.example\nalice@b.example\nbob@b.example\n"
    );
    let del = corvid(&["user", "del", "alice@b.example", "-c", c], None);
    assert!(del.status.success(), "{}", text(&del));
    let list = corvid(&["user", "list", "-c", c], None);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "alice@a.example\nbob@b.example\n"
    );
}

/// Issue 13: relative paths in a configuration file are beside the file, so `corvid -c
/// /etc/corvid/corvid.toml user add …` run from any folder writes the database the server reads.
#[test]
fn relative_paths_are_beside_the_configuration_file_wherever_corvid_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        "[storage]\nurl = 'sqlite://./data/corvid.db'\n[s2s]\nenabled = false\n",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
        .current_dir(elsewhere.path())
        .args([
            "-c",
            config.to_str().unwrap(),
            "user",
            "add",
            "alice",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pw-alice\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    assert!(dir.path().join("data/corvid.db").exists());
    assert!(!elsewhere.path().join("data").exists());
}

/// Issue 13: PostgreSQL's notices ("relation _sqlx_migrations already exists, skipping", on
/// every start and every `corvid user` call) do not reach the log.
#[test]
fn postgres_notices_stay_out_of_the_log() {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
        return;
    };
    let schema = format!("corvid_cli_{}", std::process::id());
    // The schema exists first (as the tests' other servers make theirs), so that the runs
    // below migrate into it through `search_path`.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime
        .block_on(corvid::storage::PostgresStorage::open_with_schema(
            &url, &schema,
        ))
        .expect("schema");
    runtime.block_on(backend.close());
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        format!("[storage]\nurl = '{scoped}'\n[s2s]\nenabled = false\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["-c", config.to_str().unwrap(), "user", "list"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("already exists"), "{stderr}");
    runtime.block_on(common::drop_schema(&schema));
}

/// `corvid invite create` as an operator uses it: offline against storage, printing the
/// landing page and the `xmpp:` URI of an invite that then works.
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

/// An invite on a domain where registration is closed could not be used: the operator is told
/// when creating it, not by the person who follows the link.
#[test]
fn an_invite_where_registration_is_closed_comes_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(&config, "[storage]\nurl = 'sqlite://corvid.db'\n").unwrap();
    let config = config.to_str().unwrap();
    let out = corvid(&["invite", "create", "-c", config], None);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("registration on localhost is closed"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/invite/"));
}
