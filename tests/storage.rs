//! One storage test suite, run against both backends.
//!
//! Each test is written once as `async fn(Storage)`; `backend_tests!` instantiates it for SQLite
//! (a fresh file in a temp folder) and for PostgreSQL (a fresh schema in the database named by
//! `CORVID_TEST_POSTGRES`, dropped afterwards). Without that variable the PostgreSQL variants
//! print a "skipped" line and pass.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use corvid::storage::*;
use futures::FutureExt;
use sqlx::Connection;

const PG_ENV: &str = "CORVID_TEST_POSTGRES";

/// SQLite behind the in-memory roster cache the server runs with: the same suite must pass.
async fn with_cached_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Storage) -> Fut,
    Fut: Future<Output = ()>,
{
    with_sqlite(|storage| test(storage.with_roster_cache(2))).await;
}

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Storage) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    // A nested path checks that open() creates the missing folders.
    let path = dir.path().join("nested/data/corvid.db");
    let url = format!("sqlite://{}", path.display());
    let backend = Arc::new(SqliteStorage::open(&url).await.unwrap());
    assert!(path.exists(), "database file was not created");
    test(Storage::from_backend(backend.clone())).await;
    backend.close().await;
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Storage) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(url) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
        return;
    };
    let schema = format!("corvid_test_{:016x}", rand::random::<u64>());
    let backend = Arc::new(
        PostgresStorage::open_with_schema(&url, &schema)
            .await
            .unwrap(),
    );
    // Catch a failing test so its schema is still dropped, then fail with the original panic.
    let outcome = AssertUnwindSafe(test(Storage::from_backend(backend.clone())))
        .catch_unwind()
        .await;
    backend.close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_sqlite(super::$name).await;
                }
            )*
        }
        mod sqlite_with_roster_cache {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_cached_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_postgres(super::$name).await;
                }
            )*
        }
    };
}

backend_tests!(
    create_exists_and_conflict,
    list_accounts_is_sorted,
    credentials_roundtrip_for_both_hashes,
    set_credentials_replaces_all_and_needs_account,
    delete_account_and_not_found,
    offline_peek_is_in_id_order,
    offline_remove_up_to_and_count,
    offline_duplicate_id_is_conflict,
    offline_push_needs_account,
    offline_cap_is_enforced,
    offline_concurrent_pushes_stop_at_cap,
    offline_concurrent_pushes_for_different_users_are_independent,
    delete_account_removes_credentials_and_offline_messages,
    roster_items_roundtrip_and_version_grows,
    roster_cap_counts_only_new_items,
    roster_pending_in_roundtrip,
    roster_and_last_activity_go_with_the_account,
    blocklist_block_unblock_roundtrip,
    blocklist_cap_is_enforced_atomically,
    blocklist_needs_account_and_goes_with_it,
    blocklist_concurrent_blocks_stop_at_cap,
    vcard_set_replace_and_hash,
    vcard_needs_account_and_goes_with_it,
    private_xml_set_replace_and_cap,
    private_xml_needs_account_and_goes_with_it,
    pep_nodes_create_configure_delete,
    pep_publish_orders_replaces_and_trims,
    pep_retract_purge_and_last_items,
    pep_nodes_go_with_their_account,
    pep_subscriptions_cap_and_go_with_their_node,
    muc_rooms_save_replace_and_delete,
    muc_affiliations_set_remove_and_need_the_room,
    push_enable_replace_disable_and_cap,
    push_needs_account_and_goes_with_it,
    server_secret_is_created_once,
    admin_disable_and_reenable_accounts,
    admin_last_login_is_kept_and_goes_with_the_account,
    admin_logins_recorded_in_one_batch,
    login_credentials_carry_the_disabled_flag,
    admin_settings_set_replace_and_remove,
    fast_tokens_rotate_through_two_slots,
    fast_token_count_must_increase,
    fast_tokens_expire_and_go_with_password_and_account,
    archive_pages_forward_and_backward,
    archive_filters_with_time_and_ids,
    archive_count_bounds_and_contains,
    archive_trim_expire_and_delete_owner,
    archive_prefs_roundtrip,
    archive_large_batch_round_trips_exactly,
    node_numbers_are_kept_and_never_shared,
    accounts_of_a_single_domain_release_move_under_the_main_domain,
    invites_roundtrip_and_need_their_inviter,
    an_invite_is_consumed_once_and_not_after_expiry,
    concurrent_uses_of_one_invite_have_one_winner,
    released_invites_are_usable_again,
    pending_invites_and_stale_ones,
    invites_go_with_their_inviter,
);

fn creds(hash: ScramHash, seed: u8) -> ScramCredentials {
    ScramCredentials {
        hash,
        salt: vec![seed; 16],
        iterations: 4096 + u32::from(seed),
        stored_key: vec![seed.wrapping_add(1); 32],
        server_key: vec![seed.wrapping_add(2); 32],
    }
}

fn both(seed: u8) -> Vec<ScramCredentials> {
    vec![creds(ScramHash::Sha1, seed), creds(ScramHash::Sha256, seed)]
}

fn msg(id: i64) -> OfflineMessage {
    OfflineMessage {
        id,
        received_at_ms: 1_700_000_000_000 + id,
        stanza: format!("<message to='alice@example.org' id='m{id}'><body>{id}</body></message>"),
    }
}

fn ids(msgs: &[OfflineMessage]) -> Vec<i64> {
    msgs.iter().map(|m| m.id).collect()
}

async fn create_exists_and_conflict(s: Storage) {
    assert!(!s.accounts.account_exists("alice").await.unwrap());
    s.accounts.create_account("alice", &both(1)).await.unwrap();
    assert!(s.accounts.account_exists("alice").await.unwrap());
    assert!(!s.accounts.account_exists("bob").await.unwrap());

    let dup = s.accounts.create_account("alice", &both(2)).await;
    assert!(matches!(dup, Err(StorageError::Conflict)), "{dup:?}");
    // The failed attempt must not have touched the existing credentials.
    let c = s
        .accounts
        .credentials("alice", ScramHash::Sha256)
        .await
        .unwrap();
    assert_eq!(c, Some(creds(ScramHash::Sha256, 1)));

    // An account without credentials is allowed (e.g. created before a password is set).
    s.accounts.create_account("bob", &[]).await.unwrap();
    assert!(s.accounts.account_exists("bob").await.unwrap());
}

async fn list_accounts_is_sorted(s: Storage) {
    assert!(s.accounts.list_accounts().await.unwrap().is_empty());
    for name in ["mallory", "alice", "zoe", "bob", "alice2", "émile", "_x"] {
        s.accounts.create_account(name, &[]).await.unwrap();
    }
    let listed = s.accounts.list_accounts().await.unwrap();
    let mut expected = listed.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(
        listed,
        vec!["_x", "alice", "alice2", "bob", "mallory", "zoe", "émile"]
    );
}

async fn credentials_roundtrip_for_both_hashes(s: Storage) {
    let mut sha1 = creds(ScramHash::Sha1, 7);
    sha1.iterations = u32::MAX;
    sha1.salt = (0..=255).collect();
    let sha256 = creds(ScramHash::Sha256, 9);
    s.accounts
        .create_account("alice", &[sha1.clone(), sha256.clone()])
        .await
        .unwrap();
    assert_eq!(
        s.accounts
            .credentials("alice", ScramHash::Sha1)
            .await
            .unwrap(),
        Some(sha1)
    );
    assert_eq!(
        s.accounts
            .credentials("alice", ScramHash::Sha256)
            .await
            .unwrap(),
        Some(sha256)
    );
    assert_eq!(
        s.accounts
            .credentials("nobody", ScramHash::Sha1)
            .await
            .unwrap(),
        None
    );

    s.accounts
        .create_account("bob", &[creds(ScramHash::Sha256, 3)])
        .await
        .unwrap();
    assert_eq!(
        s.accounts
            .credentials("bob", ScramHash::Sha1)
            .await
            .unwrap(),
        None
    );
}

async fn set_credentials_replaces_all_and_needs_account(s: Storage) {
    s.accounts.create_account("alice", &both(1)).await.unwrap();

    s.accounts.set_credentials("alice", &both(5)).await.unwrap();
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        assert_eq!(
            s.accounts.credentials("alice", hash).await.unwrap(),
            Some(creds(hash, 5))
        );
    }

    // Replacing with fewer sets drops the others.
    s.accounts
        .set_credentials("alice", &[creds(ScramHash::Sha256, 6)])
        .await
        .unwrap();
    assert_eq!(
        s.accounts
            .credentials("alice", ScramHash::Sha1)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.accounts
            .credentials("alice", ScramHash::Sha256)
            .await
            .unwrap(),
        Some(creds(ScramHash::Sha256, 6))
    );

    let r = s.accounts.set_credentials("nobody", &both(1)).await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    assert!(!s.accounts.account_exists("nobody").await.unwrap());
}

async fn delete_account_and_not_found(s: Storage) {
    s.accounts.create_account("alice", &both(1)).await.unwrap();
    s.accounts.create_account("bob", &both(2)).await.unwrap();

    s.accounts.delete_account("alice").await.unwrap();
    assert!(!s.accounts.account_exists("alice").await.unwrap());
    assert_eq!(s.accounts.list_accounts().await.unwrap(), vec!["bob"]);

    let again = s.accounts.delete_account("alice").await;
    assert!(matches!(again, Err(StorageError::NotFound)), "{again:?}");
    let never = s.accounts.delete_account("nobody").await;
    assert!(matches!(never, Err(StorageError::NotFound)), "{never:?}");

    // The name is free again.
    s.accounts.create_account("alice", &[]).await.unwrap();
}

async fn offline_peek_is_in_id_order(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.accounts.create_account("bob", &[]).await.unwrap();
    assert!(s.offline.peek("alice").await.unwrap().is_empty());

    for id in [30, 10, 50, 20, 40] {
        assert_eq!(
            s.offline.push("alice", &msg(id), 100).await.unwrap(),
            OfflinePush::Stored
        );
    }
    s.offline.push("bob", &msg(15), 100).await.unwrap();

    let peeked = s.offline.peek("alice").await.unwrap();
    assert_eq!(ids(&peeked), vec![10, 20, 30, 40, 50]);
    assert_eq!(peeked[0], msg(10));
    // Peeking does not consume.
    assert_eq!(s.offline.count("alice").await.unwrap(), 5);
    assert_eq!(ids(&s.offline.peek("bob").await.unwrap()), vec![15]);
}

async fn offline_remove_up_to_and_count(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.accounts.create_account("bob", &[]).await.unwrap();
    for id in 1..=5 {
        s.offline.push("alice", &msg(id), 100).await.unwrap();
    }
    s.offline.push("bob", &msg(2_000), 100).await.unwrap();
    assert_eq!(s.offline.count("alice").await.unwrap(), 5);
    assert_eq!(s.offline.count("nobody").await.unwrap(), 0);

    assert_eq!(s.offline.remove_up_to("alice", 3).await.unwrap(), 3);
    assert_eq!(ids(&s.offline.peek("alice").await.unwrap()), vec![4, 5]);
    assert_eq!(s.offline.count("alice").await.unwrap(), 2);
    // Nothing left at or below 3.
    assert_eq!(s.offline.remove_up_to("alice", 3).await.unwrap(), 0);
    // Only the named user's messages go, even if another user's ids are lower.
    assert_eq!(s.offline.remove_up_to("bob", 1).await.unwrap(), 0);
    assert_eq!(s.offline.remove_up_to("alice", i64::MAX).await.unwrap(), 2);
    assert_eq!(s.offline.count("alice").await.unwrap(), 0);
    assert_eq!(s.offline.count("bob").await.unwrap(), 1);
    assert_eq!(s.offline.remove_up_to("nobody", i64::MAX).await.unwrap(), 0);
}

async fn offline_duplicate_id_is_conflict(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.offline.push("alice", &msg(1), 10).await.unwrap();
    let dup = s.offline.push("alice", &msg(1), 10).await;
    assert!(matches!(dup, Err(StorageError::Conflict)), "{dup:?}");
    assert_eq!(s.offline.count("alice").await.unwrap(), 1);
}

async fn offline_push_needs_account(s: Storage) {
    let r = s.offline.push("nobody", &msg(1), 10).await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    assert_eq!(s.offline.count("nobody").await.unwrap(), 0);
}

async fn offline_cap_is_enforced(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.accounts.create_account("bob", &[]).await.unwrap();
    for id in 1..=3 {
        assert_eq!(
            s.offline.push("alice", &msg(id), 3).await.unwrap(),
            OfflinePush::Stored
        );
    }
    assert_eq!(
        s.offline.push("alice", &msg(4), 3).await.unwrap(),
        OfflinePush::Full
    );
    assert_eq!(ids(&s.offline.peek("alice").await.unwrap()), vec![1, 2, 3]);

    // The cap is per user.
    assert_eq!(
        s.offline.push("bob", &msg(5), 3).await.unwrap(),
        OfflinePush::Stored
    );
    // Delivering frees room.
    s.offline.remove_up_to("alice", 1).await.unwrap();
    assert_eq!(
        s.offline.push("alice", &msg(6), 3).await.unwrap(),
        OfflinePush::Stored
    );
    // A cap of zero stores nothing.
    assert_eq!(
        s.offline.push("bob", &msg(7), 0).await.unwrap(),
        OfflinePush::Full
    );
    assert_eq!(s.offline.count("bob").await.unwrap(), 1);
}

async fn offline_concurrent_pushes_stop_at_cap(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let tasks: Vec<_> = (1..=20)
        .map(|id| {
            let s = s.clone();
            tokio::spawn(async move { s.offline.push("alice", &msg(id), 10).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            OfflinePush::Stored => stored += 1,
            OfflinePush::Full => full += 1,
        }
    }
    assert_eq!((stored, full), (10, 10));
    assert_eq!(s.offline.count("alice").await.unwrap(), 10);
    assert_eq!(s.offline.peek("alice").await.unwrap().len(), 10);
}

async fn offline_concurrent_pushes_for_different_users_are_independent(s: Storage) {
    let users = ["u0", "u1", "u2", "u3"];
    for u in users {
        s.accounts.create_account(u, &[]).await.unwrap();
    }
    let tasks: Vec<_> = (0..40i64)
        .map(|id| {
            let s = s.clone();
            let user = users[(id % 4) as usize];
            tokio::spawn(async move { s.offline.push(user, &msg(id), 5).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for u in users {
        assert_eq!(s.offline.count(u).await.unwrap(), 5, "{u}");
    }
}

async fn delete_account_removes_credentials_and_offline_messages(s: Storage) {
    s.accounts.create_account("alice", &both(1)).await.unwrap();
    s.accounts.create_account("bob", &both(2)).await.unwrap();
    for id in 1..=3 {
        s.offline.push("alice", &msg(id), 10).await.unwrap();
    }
    s.offline.push("bob", &msg(4), 10).await.unwrap();

    s.accounts.delete_account("alice").await.unwrap();
    assert_eq!(s.offline.count("alice").await.unwrap(), 0);
    assert!(s.offline.peek("alice").await.unwrap().is_empty());
    assert_eq!(
        s.accounts
            .credentials("alice", ScramHash::Sha1)
            .await
            .unwrap(),
        None
    );

    // A new account with the same name starts empty.
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert_eq!(s.offline.count("alice").await.unwrap(), 0);
    assert_eq!(
        s.accounts
            .credentials("alice", ScramHash::Sha256)
            .await
            .unwrap(),
        None
    );
    // Other users are untouched.
    assert_eq!(s.offline.count("bob").await.unwrap(), 1);
    assert_eq!(
        s.accounts
            .credentials("bob", ScramHash::Sha1)
            .await
            .unwrap(),
        Some(creds(ScramHash::Sha1, 2))
    );
}

async fn roster_items_roundtrip_and_version_grows(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert_eq!(s.roster.roster("alice").await.unwrap(), (0, vec![]));
    let mut bob = RosterItem::new("bob@example.org");
    bob.name = Some("Bob".into());
    bob.groups = vec!["Friends".into(), "Ünïcode".into()];
    bob.subscription = Subscription::Both;
    let mut carol = RosterItem::new("carol@example.org");
    carol.ask = true;
    carol.approved = true;
    let v1 = s.roster.put_roster_item("alice", &carol, 10).await.unwrap();
    let v2 = s.roster.put_roster_item("alice", &bob, 10).await.unwrap();
    let (RosterWrite::Stored(v1), RosterWrite::Stored(v2)) = (v1, v2) else {
        panic!("not stored: {v1:?} {v2:?}");
    };
    assert!(v2 > v1);
    let (version, items) = s.roster.roster("alice").await.unwrap();
    assert_eq!(version, v2);
    assert_eq!(items, vec![bob.clone(), carol.clone()], "sorted by contact");
    assert_eq!(
        s.roster
            .roster_item("alice", "carol@example.org")
            .await
            .unwrap(),
        Some(carol)
    );
    assert_eq!(s.roster.roster_version("alice").await.unwrap(), v2);
    let v3 = s
        .roster
        .delete_roster_item("alice", "bob@example.org")
        .await
        .unwrap()
        .expect("deleted");
    assert!(v3 > v2);
    assert_eq!(
        s.roster
            .delete_roster_item("alice", "bob@example.org")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.roster.roster_version("alice").await.unwrap(), v3);
    // Writing for an account that does not exist is refused.
    assert!(matches!(
        s.roster.put_roster_item("nobody", &bob, 10).await,
        Err(StorageError::NotFound)
    ));
}

async fn roster_cap_counts_only_new_items(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    for contact in ["a@x", "b@x"] {
        let put = s
            .roster
            .put_roster_item("alice", &RosterItem::new(contact), 2)
            .await
            .unwrap();
        assert!(matches!(put, RosterWrite::Stored(_)));
    }
    let full = s
        .roster
        .put_roster_item("alice", &RosterItem::new("c@x"), 2)
        .await
        .unwrap();
    assert_eq!(full, RosterWrite::Full);
    let mut renamed = RosterItem::new("a@x");
    renamed.name = Some("A".into());
    let update = s
        .roster
        .put_roster_item("alice", &renamed, 2)
        .await
        .unwrap();
    assert!(matches!(update, RosterWrite::Stored(_)));
    assert_eq!(s.roster.roster("alice").await.unwrap().1.len(), 2);
}

async fn roster_pending_in_roundtrip(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(!s.roster.has_pending_in("alice", "bob@x").await.unwrap());
    s.roster
        .put_pending_in("alice", "bob@x", "<presence type='subscribe'/>")
        .await
        .unwrap();
    s.roster
        .put_pending_in(
            "alice",
            "bob@x",
            "<presence type='subscribe'><status>hi</status></presence>",
        )
        .await
        .unwrap();
    s.roster
        .put_pending_in("alice", "abe@x", "<presence/>")
        .await
        .unwrap();
    assert!(s.roster.has_pending_in("alice", "bob@x").await.unwrap());
    let pending = s.roster.pending_in("alice").await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].0, "abe@x");
    assert!(
        pending[1].1.contains("hi"),
        "the newer request replaces the older"
    );
    assert!(s.roster.delete_pending_in("alice", "bob@x").await.unwrap());
    assert!(!s.roster.delete_pending_in("alice", "bob@x").await.unwrap());
    assert!(matches!(
        s.roster
            .put_pending_in("nobody", "bob@x", "<presence/>")
            .await,
        Err(StorageError::NotFound)
    ));
}

async fn roster_and_last_activity_go_with_the_account(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.roster
        .put_roster_item("alice", &RosterItem::new("bob@x"), 10)
        .await
        .unwrap();
    s.roster
        .put_pending_in("alice", "carol@x", "<presence/>")
        .await
        .unwrap();
    let last = LastActivity {
        at_secs: 1_700_000_000,
        status: "away".into(),
    };
    s.last_activity
        .set_last_activity("alice", &last)
        .await
        .unwrap();
    assert_eq!(
        s.last_activity.last_activity("alice").await.unwrap(),
        Some(last)
    );
    let newer = LastActivity {
        at_secs: 1_700_000_100,
        status: String::new(),
    };
    s.last_activity
        .set_last_activity("alice", &newer)
        .await
        .unwrap();
    assert_eq!(
        s.last_activity.last_activity("alice").await.unwrap(),
        Some(newer)
    );

    s.accounts.delete_account("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert_eq!(s.roster.roster("alice").await.unwrap(), (0, vec![]));
    assert!(s.roster.pending_in("alice").await.unwrap().is_empty());
    assert_eq!(s.last_activity.last_activity("alice").await.unwrap(), None);
}

fn jids(list: &[&str]) -> Vec<String> {
    list.iter().map(|j| j.to_string()).collect()
}

async fn blocklist_block_unblock_roundtrip(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.accounts.create_account("bob", &[]).await.unwrap();
    assert!(s.blocklist.blocklist("alice").await.unwrap().is_empty());

    let first = jids(&[
        "romeo@example.net",
        "example.com",
        "x@y/z",
        "example.org/res",
    ]);
    assert_eq!(
        s.blocklist.block("alice", &first, 100).await.unwrap(),
        BlockWrite::Stored(4)
    );
    // Already blocked and duplicated JIDs are not errors and are not counted twice.
    assert_eq!(
        s.blocklist
            .block("alice", &jids(&["example.com", "new@a", "new@a"]), 100)
            .await
            .unwrap(),
        BlockWrite::Stored(1)
    );
    assert_eq!(
        s.blocklist.blocklist("alice").await.unwrap(),
        vec![
            "example.com",
            "example.org/res",
            "new@a",
            "romeo@example.net",
            "x@y/z"
        ]
    );
    // Lists are per user.
    assert!(s.blocklist.blocklist("bob").await.unwrap().is_empty());
    s.blocklist
        .block("bob", &jids(&["alice@localhost"]), 100)
        .await
        .unwrap();

    assert_eq!(
        s.blocklist
            .unblock("alice", &jids(&["example.com", "never@blocked"]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.blocklist.blocklist("alice").await.unwrap(),
        vec!["example.org/res", "new@a", "romeo@example.net", "x@y/z"]
    );
    assert_eq!(s.blocklist.unblock_all("alice").await.unwrap(), 4);
    assert!(s.blocklist.blocklist("alice").await.unwrap().is_empty());
    assert_eq!(s.blocklist.unblock_all("alice").await.unwrap(), 0);
    assert_eq!(
        s.blocklist.blocklist("bob").await.unwrap(),
        vec!["alice@localhost"]
    );
}

async fn blocklist_cap_is_enforced_atomically(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.blocklist
        .block("alice", &jids(&["a@x", "b@x"]), 3)
        .await
        .unwrap();
    // Two new JIDs would make four: nothing of the request is stored.
    assert_eq!(
        s.blocklist
            .block("alice", &jids(&["c@x", "d@x"]), 3)
            .await
            .unwrap(),
        BlockWrite::Full
    );
    assert_eq!(
        s.blocklist.blocklist("alice").await.unwrap(),
        vec!["a@x", "b@x"]
    );
    // Re-blocking what is already there does not count against the cap.
    assert_eq!(
        s.blocklist
            .block("alice", &jids(&["a@x", "b@x", "c@x"]), 3)
            .await
            .unwrap(),
        BlockWrite::Stored(1)
    );
    assert_eq!(
        s.blocklist
            .block("alice", &jids(&["a@x"]), 3)
            .await
            .unwrap(),
        BlockWrite::Stored(0)
    );
    assert_eq!(
        s.blocklist
            .block("alice", &jids(&["e@x"]), 3)
            .await
            .unwrap(),
        BlockWrite::Full
    );
}

async fn blocklist_needs_account_and_goes_with_it(s: Storage) {
    let r = s.blocklist.block("nobody", &jids(&["a@x"]), 10).await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    assert!(s.blocklist.blocklist("nobody").await.unwrap().is_empty());

    s.accounts.create_account("alice", &[]).await.unwrap();
    s.blocklist
        .block("alice", &jids(&["a@x"]), 10)
        .await
        .unwrap();
    s.accounts.delete_account("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(s.blocklist.blocklist("alice").await.unwrap().is_empty());
}

async fn blocklist_concurrent_blocks_stop_at_cap(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move {
                s.blocklist
                    .block("alice", &[format!("u{n}@x")], 10)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() == BlockWrite::Stored(1) {
            stored += 1;
        }
    }
    assert_eq!(stored, 10);
    assert_eq!(s.blocklist.blocklist("alice").await.unwrap().len(), 10);
}

fn vcard(xml: &str, hash: &str) -> StoredVcard {
    StoredVcard {
        xml: xml.to_string(),
        photo_hash: hash.to_string(),
    }
}

async fn vcard_set_replace_and_hash(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.accounts.create_account("bob", &[]).await.unwrap();
    assert_eq!(s.vcard.vcard("alice").await.unwrap(), None);
    assert_eq!(s.vcard.vcard_photo_hash("alice").await.unwrap(), None);

    let first = vcard("<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>", "");
    s.vcard.set_vcard("alice", &first).await.unwrap();
    assert_eq!(s.vcard.vcard("alice").await.unwrap(), Some(first));
    assert_eq!(
        s.vcard.vcard_photo_hash("alice").await.unwrap(),
        Some(String::new())
    );

    let second = vcard(
        "<vCard xmlns='vcard-temp'><FN>Älice</FN><PHOTO/></vCard>",
        "0123456789abcdef0123456789abcdef01234567",
    );
    s.vcard.set_vcard("alice", &second).await.unwrap();
    assert_eq!(s.vcard.vcard("alice").await.unwrap(), Some(second.clone()));
    assert_eq!(
        s.vcard.vcard_photo_hash("alice").await.unwrap(),
        Some(second.photo_hash)
    );
    assert_eq!(s.vcard.vcard("bob").await.unwrap(), None);
}

async fn vcard_needs_account_and_goes_with_it(s: Storage) {
    let r = s
        .vcard
        .set_vcard("nobody", &vcard("<vCard xmlns='vcard-temp'/>", ""))
        .await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    assert_eq!(s.vcard.vcard("nobody").await.unwrap(), None);

    s.accounts.create_account("alice", &[]).await.unwrap();
    s.vcard
        .set_vcard("alice", &vcard("<vCard xmlns='vcard-temp'/>", ""))
        .await
        .unwrap();
    s.accounts.delete_account("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert_eq!(s.vcard.vcard("alice").await.unwrap(), None);
}

async fn private_xml_set_replace_and_cap(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.accounts.create_account("bob", &[]).await.unwrap();
    let p = &s.private_xml;
    assert_eq!(p.private_xml("alice", "storage:a").await.unwrap(), None);

    let first = "<a xmlns='storage:a'>1</a>";
    let w = p
        .set_private_xml("alice", "storage:a", first, 2)
        .await
        .unwrap();
    assert_eq!(w, PrivateXmlWrite::Stored);
    assert_eq!(
        p.private_xml("alice", "storage:a")
            .await
            .unwrap()
            .as_deref(),
        Some(first)
    );
    let second = "<a xmlns='storage:a'>Ä2</a>";
    p.set_private_xml("alice", "storage:a", second, 2)
        .await
        .unwrap();
    assert_eq!(
        p.private_xml("alice", "storage:a")
            .await
            .unwrap()
            .as_deref(),
        Some(second)
    );
    let b = "<b xmlns='storage:b'/>";
    assert_eq!(
        p.set_private_xml("alice", "storage:b", b, 2).await.unwrap(),
        PrivateXmlWrite::Stored
    );
    // A third namespace is over the cap; replacing one of the two still works.
    assert_eq!(
        p.set_private_xml("alice", "storage:c", "<c xmlns='storage:c'/>", 2)
            .await
            .unwrap(),
        PrivateXmlWrite::Full
    );
    assert_eq!(p.private_xml("alice", "storage:c").await.unwrap(), None);
    assert_eq!(
        p.set_private_xml("alice", "storage:b", b, 2).await.unwrap(),
        PrivateXmlWrite::Stored
    );
    // Per account: bob's namespaces are his own.
    assert_eq!(p.private_xml("bob", "storage:a").await.unwrap(), None);
    assert_eq!(
        p.set_private_xml("bob", "storage:c", "<c xmlns='storage:c'/>", 2)
            .await
            .unwrap(),
        PrivateXmlWrite::Stored
    );
}

async fn private_xml_needs_account_and_goes_with_it(s: Storage) {
    let r = s
        .private_xml
        .set_private_xml("nobody", "storage:a", "<a xmlns='storage:a'/>", 8)
        .await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");

    s.accounts.create_account("alice", &[]).await.unwrap();
    s.private_xml
        .set_private_xml("alice", "storage:a", "<a xmlns='storage:a'/>", 8)
        .await
        .unwrap();
    s.delete_account_and_archive("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert_eq!(
        s.private_xml
            .private_xml("alice", "storage:a")
            .await
            .unwrap(),
        None
    );
}

const NONE: &str = "HT-SHA-256-NONE";
const LATER: i64 = 2_000_000_000_000;
const NOW: i64 = 1_700_000_000_000;

/// (slot, token) of one client's stored tokens, `new` first.
async fn fast_slots(s: &Storage, user: &str, client: &str) -> Vec<(FastSlot, String)> {
    s.fast
        .fast_tokens(user, client)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.slot, t.token))
        .collect()
}

async fn fast_tokens_rotate_through_two_slots(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let fast = &s.fast;
    fast.issue_fast_token("alice", "ua", "t1", NONE, LATER, NOW)
        .await
        .unwrap();
    // An unused token is replaced by the next one issued.
    fast.issue_fast_token("alice", "ua", "t2", NONE, LATER + 1, NOW)
        .await
        .unwrap();
    assert_eq!(
        fast_slots(&s, "alice", "ua").await,
        [(FastSlot::New, "t2".to_string())]
    );
    let stored = &fast.fast_tokens("alice", "ua").await.unwrap()[0];
    assert_eq!(
        (
            stored.mechanism.as_str(),
            stored.expires_at_ms,
            stored.last_count
        ),
        (NONE, LATER + 1, None)
    );
    assert!(!fast
        .use_fast_token("alice", "ua", "t1", None)
        .await
        .unwrap());
    assert!(fast
        .use_fast_token("alice", "ua", "t2", None)
        .await
        .unwrap());
    fast.issue_fast_token("alice", "ua", "t3", NONE, LATER + 2, NOW)
        .await
        .unwrap();
    assert_eq!(
        fast_slots(&s, "alice", "ua").await,
        [
            (FastSlot::New, "t3".to_string()),
            (FastSlot::Current, "t2".to_string())
        ]
    );
    // The current token still works while the new one is unused...
    assert!(fast
        .use_fast_token("alice", "ua", "t2", None)
        .await
        .unwrap());
    assert_eq!(fast_slots(&s, "alice", "ua").await.len(), 2);
    // ...and using the new one retires it.
    assert!(fast
        .use_fast_token("alice", "ua", "t3", None)
        .await
        .unwrap());
    assert_eq!(
        fast_slots(&s, "alice", "ua").await,
        [(FastSlot::Current, "t3".to_string())]
    );
    assert!(!fast
        .use_fast_token("alice", "ua", "t2", None)
        .await
        .unwrap());
    // Other clients and users are separate.
    assert!(fast_slots(&s, "alice", "other").await.is_empty());
    assert!(!fast
        .use_fast_token("alice", "other", "t3", None)
        .await
        .unwrap());
    fast.delete_fast_token("alice", "ua", "t3").await.unwrap();
    assert!(fast_slots(&s, "alice", "ua").await.is_empty());
}

async fn fast_token_count_must_increase(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let fast = &s.fast;
    fast.issue_fast_token("alice", "ua", "t1", NONE, LATER, NOW)
        .await
        .unwrap();
    assert!(fast
        .use_fast_token("alice", "ua", "t1", Some(3))
        .await
        .unwrap());
    assert!(!fast
        .use_fast_token("alice", "ua", "t1", Some(3))
        .await
        .unwrap());
    assert!(!fast
        .use_fast_token("alice", "ua", "t1", Some(2))
        .await
        .unwrap());
    // Without a count (no 0-RTT) the last one is kept.
    assert!(fast
        .use_fast_token("alice", "ua", "t1", None)
        .await
        .unwrap());
    assert_eq!(
        fast.fast_tokens("alice", "ua").await.unwrap()[0].last_count,
        Some(3)
    );
    // Concurrent replays of one count: exactly one wins.
    let attempts = (0..8).map(|_| fast.use_fast_token("alice", "ua", "t1", Some(9)));
    let wins = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
    // A new token starts counting afresh.
    fast.issue_fast_token("alice", "ua", "t2", NONE, LATER, NOW)
        .await
        .unwrap();
    assert!(fast
        .use_fast_token("alice", "ua", "t2", Some(1))
        .await
        .unwrap());
}

async fn fast_tokens_expire_and_go_with_password_and_account(s: Storage) {
    let r = s
        .fast
        .issue_fast_token("nobody", "ua", "t", NONE, LATER, NOW)
        .await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    s.accounts.create_account("alice", &both(1)).await.unwrap();
    let fast = &s.fast;
    fast.issue_fast_token("alice", "old", "t0", NONE, NOW + 10, NOW)
        .await
        .unwrap();
    // Issuing sweeps the user's expired tokens.
    fast.issue_fast_token("alice", "ua", "t1", NONE, LATER, NOW + 10)
        .await
        .unwrap();
    assert!(fast_slots(&s, "alice", "old").await.is_empty());
    s.accounts.set_credentials("alice", &both(2)).await.unwrap();
    assert!(fast_slots(&s, "alice", "ua").await.is_empty());
    fast.issue_fast_token("alice", "ua", "t2", NONE, LATER, NOW)
        .await
        .unwrap();
    s.accounts.delete_account("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(fast_slots(&s, "alice", "ua").await.is_empty());
}

fn push_registration(service: &str, node: &str, options: Option<&str>) -> PushRegistration {
    PushRegistration {
        service: service.into(),
        node: node.into(),
        publish_options: options.map(Into::into),
    }
}

fn push_nodes(registrations: &[PushRegistration]) -> Vec<(&str, &str)> {
    registrations
        .iter()
        .map(|r| (r.service.as_str(), r.node.as_str()))
        .collect()
}

async fn push_enable_replace_disable_and_cap(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let push = &s.push;
    push.enable_push(
        "alice",
        &push_registration("p.example", "a", Some("<x/>")),
        1,
        3,
    )
    .await
    .unwrap();
    push.enable_push("alice", &push_registration("p.example", "b", None), 2, 3)
        .await
        .unwrap();
    push.enable_push("alice", &push_registration("q.example", "a", None), 3, 3)
        .await
        .unwrap();
    // Enabling (p.example, a) again replaces it and makes it the newest.
    push.enable_push(
        "alice",
        &push_registration("p.example", "a", Some("<y/>")),
        4,
        3,
    )
    .await
    .unwrap();
    let regs = push.push_registrations("alice").await.unwrap();
    assert_eq!(
        push_nodes(&regs),
        [("p.example", "b"), ("q.example", "a"), ("p.example", "a")]
    );
    assert_eq!(regs[2].publish_options.as_deref(), Some("<y/>"));
    // A fourth registration past the cap of 3 drops the oldest.
    push.enable_push("alice", &push_registration("r.example", "z", None), 5, 3)
        .await
        .unwrap();
    let regs = push.push_registrations("alice").await.unwrap();
    assert_eq!(
        push_nodes(&regs),
        [("q.example", "a"), ("p.example", "a"), ("r.example", "z")]
    );
    assert_eq!(
        push.disable_push("alice", "p.example", Some("a"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        push.disable_push("alice", "p.example", Some("a"))
            .await
            .unwrap(),
        0
    );
    push.enable_push("alice", &push_registration("q.example", "b", None), 6, 3)
        .await
        .unwrap();
    // Without a node, every registration on that service goes.
    assert_eq!(
        push.disable_push("alice", "q.example", None).await.unwrap(),
        2
    );
    let regs = push.push_registrations("alice").await.unwrap();
    assert_eq!(push_nodes(&regs), [("r.example", "z")]);
}

async fn push_needs_account_and_goes_with_it(s: Storage) {
    let r = s
        .push
        .enable_push("nobody", &push_registration("p.example", "a", None), 1, 3)
        .await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    s.accounts.create_account("alice", &[]).await.unwrap();
    s.push
        .enable_push("alice", &push_registration("p.example", "a", None), 1, 3)
        .await
        .unwrap();
    s.accounts.delete_account("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(s.push.push_registrations("alice").await.unwrap().is_empty());
}

async fn admin_disable_and_reenable_accounts(s: Storage) {
    let admin = &s.admin;
    assert!(matches!(
        admin.set_disabled("ghost@x", true).await,
        Err(StorageError::NotFound)
    ));
    for user in ["b@x", "a@x", "c@x"] {
        s.accounts.create_account(user, &both(1)).await.unwrap();
    }
    assert!(!admin.is_disabled("a@x").await.unwrap());
    assert!(!admin.is_disabled("ghost@x").await.unwrap());
    admin.set_disabled("b@x", true).await.unwrap();
    admin.set_disabled("a@x", true).await.unwrap();
    // Disabling twice is no error.
    admin.set_disabled("a@x", true).await.unwrap();
    assert!(admin.is_disabled("a@x").await.unwrap());
    assert!(!admin.is_disabled("c@x").await.unwrap());
    assert_eq!(admin.disabled_accounts().await.unwrap(), ["a@x", "b@x"]);
    admin.set_disabled("a@x", false).await.unwrap();
    assert!(!admin.is_disabled("a@x").await.unwrap());
    assert_eq!(admin.disabled_accounts().await.unwrap(), ["b@x"]);
    // A login does not re-enable; deleting the account forgets it.
    admin.record_login("b@x", 5).await.unwrap();
    assert!(admin.is_disabled("b@x").await.unwrap());
    s.accounts.delete_account("b@x").await.unwrap();
    assert!(admin.disabled_accounts().await.unwrap().is_empty());
    s.accounts.create_account("b@x", &both(2)).await.unwrap();
    assert!(!admin.is_disabled("b@x").await.unwrap());
}

async fn admin_logins_recorded_in_one_batch(s: Storage) {
    let admin = &s.admin;
    for user in ["a@x", "b@x"] {
        s.accounts.create_account(user, &both(1)).await.unwrap();
    }
    admin.record_logins(&[]).await.unwrap();
    admin.record_login("b@x", 3).await.unwrap();
    // An account that is gone is skipped; the others in the batch are still written.
    let batch = [
        ("a@x".to_owned(), 10),
        ("ghost@x".to_owned(), 11),
        ("b@x".to_owned(), 12),
    ];
    admin.record_logins(&batch).await.unwrap();
    assert_eq!(admin.last_login("a@x").await.unwrap(), Some(10));
    assert_eq!(admin.last_login("b@x").await.unwrap(), Some(12));
    assert_eq!(admin.last_login("ghost@x").await.unwrap(), None);
}

async fn login_credentials_carry_the_disabled_flag(s: Storage) {
    s.accounts.create_account("a@x", &both(1)).await.unwrap();
    let read = |hash| {
        let s = s.clone();
        async move { s.accounts.login_credentials("a@x", hash).await.unwrap() }
    };
    let login = read(ScramHash::Sha256).await.expect("credentials");
    assert_eq!(login.credentials, creds(ScramHash::Sha256, 1));
    assert!(!login.disabled);
    s.admin.set_disabled("a@x", true).await.unwrap();
    assert!(read(ScramHash::Sha1).await.expect("credentials").disabled);
    // A login time alone (a row with disabled unset) is not a disabled account.
    s.admin.set_disabled("a@x", false).await.unwrap();
    s.admin.record_login("a@x", 5).await.unwrap();
    assert!(!read(ScramHash::Sha256).await.expect("credentials").disabled);
    let unknown = s.accounts.login_credentials("nobody@x", ScramHash::Sha256);
    assert_eq!(unknown.await.unwrap(), None);
}

async fn admin_last_login_is_kept_and_goes_with_the_account(s: Storage) {
    let admin = &s.admin;
    s.accounts.create_account("a@x", &both(1)).await.unwrap();
    assert_eq!(admin.last_login("a@x").await.unwrap(), None);
    // An account that is gone is ignored, not an error (logins race deletions).
    admin.record_login("ghost@x", 1).await.unwrap();
    assert_eq!(admin.last_login("ghost@x").await.unwrap(), None);
    admin.record_login("a@x", 1_700_000_000_000).await.unwrap();
    admin.record_login("a@x", 1_700_000_000_500).await.unwrap();
    assert_eq!(
        admin.last_login("a@x").await.unwrap(),
        Some(1_700_000_000_500)
    );
    // Disabling keeps the time.
    admin.set_disabled("a@x", true).await.unwrap();
    assert_eq!(
        admin.last_login("a@x").await.unwrap(),
        Some(1_700_000_000_500)
    );
    s.accounts.delete_account("a@x").await.unwrap();
    s.accounts.create_account("a@x", &both(1)).await.unwrap();
    assert_eq!(admin.last_login("a@x").await.unwrap(), None);
}

async fn admin_settings_set_replace_and_remove(s: Storage) {
    let admin = &s.admin;
    assert_eq!(admin.setting("motd:x").await.unwrap(), None);
    admin
        .set_setting("motd:x", Some("hello\nworld"))
        .await
        .unwrap();
    admin.set_setting("welcome:x", Some("")).await.unwrap();
    assert_eq!(
        admin.setting("motd:x").await.unwrap().as_deref(),
        Some("hello\nworld")
    );
    assert_eq!(
        admin.setting("welcome:x").await.unwrap().as_deref(),
        Some("")
    );
    admin.set_setting("motd:x", Some("replaced")).await.unwrap();
    assert_eq!(
        admin.setting("motd:x").await.unwrap().as_deref(),
        Some("replaced")
    );
    admin.set_setting("motd:x", None).await.unwrap();
    assert_eq!(admin.setting("motd:x").await.unwrap(), None);
    // Removing what is not there is no error.
    admin.set_setting("motd:x", None).await.unwrap();
    assert_eq!(
        admin.setting("welcome:x").await.unwrap().as_deref(),
        Some("")
    );
}

async fn server_secret_is_created_once(s: Storage) {
    let first = s.secrets.server_secret("k", &[1, 2, 3]).await.unwrap();
    assert_eq!(first, [1, 2, 3]);
    let again = s.secrets.server_secret("k", &[9, 9]).await.unwrap();
    assert_eq!(again, [1, 2, 3]);
    let other = s.secrets.server_secret("other", &[7]).await.unwrap();
    assert_eq!(other, [7]);
}

fn pep_config(max_items: u32) -> NodeConfig {
    NodeConfig {
        access_model: AccessModel::Presence,
        max_items,
        persist_items: true,
        send_last_published_item: SendLastItem::OnSubAndPresence,
    }
}

fn pep_item(id: &str, seq: i64) -> PepItem {
    PepItem {
        id: id.into(),
        seq,
        payload: format!("<nick xmlns='http://jabber.org/protocol/nick'>{id}</nick>"),
    }
}

fn pep_ids(items: &[PepItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

async fn pep_nodes_create_configure_delete(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let pep = &s.pep;
    assert_eq!(pep.pep_node("alice", "n").await.unwrap(), None);
    let created = pep.create_pep_node("alice", "n", &pep_config(1), 2).await;
    assert_eq!(created.unwrap(), PepCreate::Created);
    let again = pep.create_pep_node("alice", "n", &pep_config(1), 2).await;
    assert!(matches!(again, Err(StorageError::Conflict)), "{again:?}");
    let second = pep.create_pep_node("alice", "m", &pep_config(4), 2).await;
    assert_eq!(second.unwrap(), PepCreate::Created);
    // The per-account cap counts nodes.
    let third = pep.create_pep_node("alice", "o", &pep_config(1), 2).await;
    assert_eq!(third.unwrap(), PepCreate::Full);
    let missing = pep.create_pep_node("nobody", "n", &pep_config(1), 2).await;
    assert!(
        matches!(missing, Err(StorageError::NotFound)),
        "{missing:?}"
    );

    let nodes = pep.pep_nodes("alice").await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["m", "n"]);
    assert_eq!(nodes[0].config, pep_config(4));

    let open = NodeConfig {
        access_model: AccessModel::Open,
        persist_items: false,
        send_last_published_item: SendLastItem::Never,
        ..pep_config(7)
    };
    assert!(pep.configure_pep_node("alice", "n", &open).await.unwrap());
    assert_eq!(pep.pep_node("alice", "n").await.unwrap(), Some(open));
    assert!(!pep.configure_pep_node("alice", "x", &open).await.unwrap());

    assert!(pep.delete_pep_node("alice", "n").await.unwrap());
    assert!(!pep.delete_pep_node("alice", "n").await.unwrap());
    assert_eq!(pep.pep_node("alice", "n").await.unwrap(), None);
    // Room for a new node again.
    let after = pep.create_pep_node("alice", "o", &pep_config(1), 2).await;
    assert_eq!(after.unwrap(), PepCreate::Created);
}

async fn pep_publish_orders_replaces_and_trims(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let pep = &s.pep;
    pep.create_pep_node("alice", "n", &pep_config(3), 10)
        .await
        .unwrap();
    for (id, seq) in [("a", 1), ("b", 2), ("c", 3)] {
        pep.publish_pep_item("alice", "n", &pep_item(id, seq))
            .await
            .unwrap();
    }
    let all = pep.pep_items("alice", "n", None).await.unwrap();
    assert_eq!(pep_ids(&all), vec!["a", "b", "c"]);
    assert_eq!(all[0], pep_item("a", 1));
    let newest = pep.pep_items("alice", "n", Some(2)).await.unwrap();
    assert_eq!(pep_ids(&newest), vec!["b", "c"]);

    // Republishing an id replaces the item and makes it the newest.
    let mut replaced = pep_item("a", 4);
    replaced.payload = "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>".into();
    pep.publish_pep_item("alice", "n", &replaced).await.unwrap();
    let all = pep.pep_items("alice", "n", None).await.unwrap();
    assert_eq!(pep_ids(&all), vec!["b", "c", "a"]);
    assert_eq!(all[2], replaced);

    // One more than max_items drops the oldest.
    pep.publish_pep_item("alice", "n", &pep_item("d", 5))
        .await
        .unwrap();
    let all = pep.pep_items("alice", "n", None).await.unwrap();
    assert_eq!(pep_ids(&all), vec!["c", "a", "d"]);

    let ids = ["d".to_string(), "zz".to_string(), "a".to_string()];
    let by_id = pep.pep_items_by_id("alice", "n", &ids).await.unwrap();
    assert_eq!(pep_ids(&by_id), vec!["a", "d"]);
    assert!(pep
        .pep_items_by_id("alice", "n", &[])
        .await
        .unwrap()
        .is_empty());

    let missing = pep.publish_pep_item("alice", "x", &pep_item("e", 6)).await;
    assert!(
        matches!(missing, Err(StorageError::NotFound)),
        "{missing:?}"
    );

    // A smaller max_items trims at once; persist_items off drops every stored item.
    assert!(pep
        .configure_pep_node("alice", "n", &pep_config(1))
        .await
        .unwrap());
    let all = pep.pep_items("alice", "n", None).await.unwrap();
    assert_eq!(pep_ids(&all), vec!["d"]);
    let transient = NodeConfig {
        persist_items: false,
        ..pep_config(1)
    };
    assert!(pep
        .configure_pep_node("alice", "n", &transient)
        .await
        .unwrap());
    assert!(pep.pep_items("alice", "n", None).await.unwrap().is_empty());
}

async fn pep_retract_purge_and_last_items(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let pep = &s.pep;
    for node in ["n", "m", "empty"] {
        pep.create_pep_node("alice", node, &pep_config(5), 10)
            .await
            .unwrap();
    }
    for (node, id, seq) in [("n", "a", 1), ("m", "x", 2), ("n", "b", 3), ("m", "y", 4)] {
        pep.publish_pep_item("alice", node, &pep_item(id, seq))
            .await
            .unwrap();
    }
    let wanted = ["n".to_string(), "empty".to_string(), "m".to_string()];
    let last = pep.pep_last_items("alice", &wanted).await.unwrap();
    let last: Vec<(&str, &str)> = last
        .iter()
        .map(|(node, item)| (node.as_str(), item.id.as_str()))
        .collect();
    assert_eq!(last, vec![("m", "y"), ("n", "b")]);
    let only_n = pep
        .pep_last_items("alice", &["n".to_string()])
        .await
        .unwrap();
    assert_eq!(only_n.len(), 1);
    assert!(pep.pep_last_items("alice", &[]).await.unwrap().is_empty());

    assert!(pep.retract_pep_item("alice", "n", "b").await.unwrap());
    assert!(!pep.retract_pep_item("alice", "n", "b").await.unwrap());
    let all = pep.pep_items("alice", "n", None).await.unwrap();
    assert_eq!(pep_ids(&all), vec!["a"]);

    assert_eq!(pep.purge_pep_node("alice", "m").await.unwrap(), 2);
    assert!(pep.pep_items("alice", "m", None).await.unwrap().is_empty());
    // Purging keeps the node; other nodes keep their items.
    assert!(pep.pep_node("alice", "m").await.unwrap().is_some());
    assert_eq!(pep.pep_items("alice", "n", None).await.unwrap().len(), 1);
}

async fn pep_nodes_go_with_their_account(s: Storage) {
    for user in ["alice", "bob"] {
        s.accounts.create_account(user, &[]).await.unwrap();
        s.pep
            .create_pep_node(user, "n", &pep_config(1), 10)
            .await
            .unwrap();
        s.pep
            .publish_pep_item(user, "n", &pep_item(user, 1))
            .await
            .unwrap();
    }
    s.accounts.delete_account("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(s.pep.pep_nodes("alice").await.unwrap().is_empty());
    // The same node name under another owner is untouched.
    let bob = s.pep.pep_items("bob", "n", None).await.unwrap();
    assert_eq!(pep_ids(&bob), vec!["bob"]);
}

async fn pep_subscriptions_cap_and_go_with_their_node(s: Storage) {
    s.accounts.create_account("alice", &[]).await.unwrap();
    let subs = &s.pep_subscriptions;
    let r = subs.subscribe_pep("alice", "n", "bob@b", 2).await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    for node in ["n", "m"] {
        s.pep
            .create_pep_node("alice", node, &pep_config(1), 10)
            .await
            .unwrap();
    }
    for who in ["bob@b", "carol@c/phone"] {
        assert_eq!(
            subs.subscribe_pep("alice", "n", who, 2).await.unwrap(),
            PepSubscribe::Subscribed
        );
    }
    // Again: still subscribed, not a third; a third subscriber is over the cap.
    assert_eq!(
        subs.subscribe_pep("alice", "n", "bob@b", 2).await.unwrap(),
        PepSubscribe::Subscribed
    );
    assert_eq!(
        subs.subscribe_pep("alice", "n", "dave@d", 2).await.unwrap(),
        PepSubscribe::Full
    );
    subs.subscribe_pep("alice", "m", "bob@b", 2).await.unwrap();
    assert_eq!(
        subs.pep_subscribers("alice", "n").await.unwrap(),
        ["bob@b", "carol@c/phone"]
    );
    assert!(subs.unsubscribe_pep("alice", "n", "bob@b").await.unwrap());
    assert!(!subs.unsubscribe_pep("alice", "n", "bob@b").await.unwrap());
    assert_eq!(
        subs.pep_subscriptions("alice").await.unwrap(),
        [
            ("m".to_string(), "bob@b".to_string()),
            ("n".to_string(), "carol@c/phone".to_string())
        ]
    );
    s.pep.delete_pep_node("alice", "n").await.unwrap();
    s.pep
        .create_pep_node("alice", "n", &pep_config(1), 10)
        .await
        .unwrap();
    assert!(subs.pep_subscribers("alice", "n").await.unwrap().is_empty());
    s.delete_account_and_archive("alice").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(subs.pep_subscriptions("alice").await.unwrap().is_empty());
}

// Backend-specific behaviour that the shared suite cannot express.

fn muc_room(jid: &str, subject: &str) -> StoredRoom {
    StoredRoom {
        jid: jid.into(),
        config: "{\"persistent\":true}".into(),
        subject: subject.into(),
        subject_nick: "Alice".into(),
    }
}

fn muc_affs(list: &[StoredAffiliation]) -> Vec<(&str, &str)> {
    list.iter()
        .map(|a| (a.jid.as_str(), a.affiliation.as_str()))
        .collect()
}

async fn muc_rooms_save_replace_and_delete(s: Storage) {
    assert!(s.muc.muc_rooms().await.unwrap().is_empty());
    s.muc
        .save_muc_room(&muc_room("b@conf.x", "one"))
        .await
        .unwrap();
    s.muc
        .save_muc_room(&muc_room("a@conf.x", ""))
        .await
        .unwrap();
    // Saving again replaces the row, keeping its affiliations.
    s.muc
        .set_muc_affiliation("b@conf.x", "alice@x", Some("owner"))
        .await
        .unwrap();
    s.muc
        .save_muc_room(&muc_room("b@conf.x", "two"))
        .await
        .unwrap();
    let rooms = s.muc.muc_rooms().await.unwrap();
    assert_eq!(
        rooms,
        vec![muc_room("a@conf.x", ""), muc_room("b@conf.x", "two")]
    );
    assert_eq!(
        muc_affs(&s.muc.muc_affiliations("b@conf.x").await.unwrap()),
        vec![("alice@x", "owner")]
    );
    assert!(s.muc.delete_muc_room("b@conf.x").await.unwrap());
    assert!(!s.muc.delete_muc_room("b@conf.x").await.unwrap());
    assert!(s.muc.muc_affiliations("b@conf.x").await.unwrap().is_empty());
    let rooms = s.muc.muc_rooms().await.unwrap();
    assert_eq!(rooms, vec![muc_room("a@conf.x", "")]);
}

async fn muc_affiliations_set_remove_and_need_the_room(s: Storage) {
    let missing = s
        .muc
        .set_muc_affiliation("none@conf.x", "alice@x", Some("member"))
        .await;
    assert!(
        matches!(missing, Err(StorageError::NotFound)),
        "{missing:?}"
    );
    let missing = s
        .muc
        .set_muc_affiliation("none@conf.x", "alice@x", None)
        .await;
    assert!(
        matches!(missing, Err(StorageError::NotFound)),
        "{missing:?}"
    );
    s.muc
        .save_muc_room(&muc_room("r@conf.x", ""))
        .await
        .unwrap();
    for (jid, aff) in [
        ("carol@x", "outcast"),
        ("alice@x", "owner"),
        ("bob@x", "member"),
    ] {
        s.muc
            .set_muc_affiliation("r@conf.x", jid, Some(aff))
            .await
            .unwrap();
    }
    s.muc
        .set_muc_affiliation("r@conf.x", "bob@x", Some("admin"))
        .await
        .unwrap();
    assert_eq!(
        muc_affs(&s.muc.muc_affiliations("r@conf.x").await.unwrap()),
        vec![
            ("alice@x", "owner"),
            ("bob@x", "admin"),
            ("carol@x", "outcast")
        ]
    );
    s.muc
        .set_muc_affiliation("r@conf.x", "carol@x", None)
        .await
        .unwrap();
    // Removing what is not there is fine.
    s.muc
        .set_muc_affiliation("r@conf.x", "dave@x", None)
        .await
        .unwrap();
    assert_eq!(
        muc_affs(&s.muc.muc_affiliations("r@conf.x").await.unwrap()),
        vec![("alice@x", "owner"), ("bob@x", "admin")]
    );
    // Only the four stored affiliations are accepted.
    assert!(s
        .muc
        .set_muc_affiliation("r@conf.x", "erin@x", Some("none"))
        .await
        .is_err());
}

#[tokio::test]
async fn open_dispatches_on_url_scheme() {
    let s = Storage::open("sqlite::memory:").await.unwrap();
    s.accounts.create_account("alice", &[]).await.unwrap();
    assert!(s.accounts.account_exists("alice").await.unwrap());

    let r = Storage::open("mysql://localhost/corvid").await;
    assert!(matches!(r, Err(StorageError::UnsupportedUrl(_))));
}

#[tokio::test]
async fn sqlite_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("corvid.db").display());

    let first = SqliteStorage::open(&url).await.unwrap();
    first.create_account("alice", &both(1)).await.unwrap();
    first.push("alice", &msg(1), 10).await.unwrap();
    first
        .block("alice", &jids(&["mallory@evil.example"]), 10)
        .await
        .unwrap();
    first
        .set_vcard("alice", &vcard("<vCard xmlns='vcard-temp'/>", "ab"))
        .await
        .unwrap();
    first.close().await;

    // Re-running the migrations on an up-to-date file must be a no-op.
    let second = SqliteStorage::open(&url).await.unwrap();
    assert!(second.account_exists("alice").await.unwrap());
    assert_eq!(
        second.credentials("alice", ScramHash::Sha1).await.unwrap(),
        Some(creds(ScramHash::Sha1, 1))
    );
    assert_eq!(ids(&second.peek("alice").await.unwrap()), vec![1]);
    assert_eq!(
        second.blocklist("alice").await.unwrap(),
        vec!["mallory@evil.example"]
    );
    assert_eq!(
        second.vcard_photo_hash("alice").await.unwrap(),
        Some("ab".to_string())
    );
    second.close().await;
}

#[tokio::test]
async fn postgres_schema_survives_reopen() {
    let Ok(url) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
        return;
    };
    let schema = format!("corvid_test_{:016x}", rand::random::<u64>());
    let first = PostgresStorage::open_with_schema(&url, &schema)
        .await
        .unwrap();
    first.create_account("alice", &both(1)).await.unwrap();
    first
        .block("alice", &jids(&["mallory@evil.example"]), 10)
        .await
        .unwrap();
    first.close().await;

    let second = PostgresStorage::open_with_schema(&url, &schema)
        .await
        .unwrap();
    let found = second.account_exists("alice").await;
    let blocked = second.blocklist("alice").await;
    second.close().await;

    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert!(found.unwrap());
    assert_eq!(blocked.unwrap(), vec!["mallory@evil.example"]);
}

// ---- Message archive (XEP-0313) ----

const ALICE: &str = "alice@example.org";

fn archived(owner: &str, id: i64, with: &str) -> ArchivedMessage {
    ArchivedMessage {
        owner: owner.to_string(),
        id,
        timestamp_ms: 1_700_000_000_000 + id,
        with: with.to_string(),
        outgoing: id % 2 == 0,
        stanza: format!("<message xmlns='jabber:client'><body>{id}</body></message>"),
    }
}

fn page_ids(page: &ArchivePage) -> Vec<i64> {
    page.rows.iter().map(|r| r.id).collect()
}

fn query(filter: ArchiveFilter, limit: u32, backward: bool) -> ArchiveQuery {
    ArchiveQuery {
        filter,
        limit,
        backward,
    }
}

/// 25 messages for alice (ids 1..=25, with bob for odd ids, carol for even), 3 for someone else.
async fn fill_archive(s: &Storage) {
    let mut batch: Vec<_> = (1..=25)
        .map(|id| {
            archived(
                ALICE,
                id,
                if id % 2 == 1 {
                    "bob@example.org"
                } else {
                    "carol@example.org"
                },
            )
        })
        .collect();
    batch.extend(
        (100..103).map(|id| archived("room@conference.example.org", id, "bob@example.org")),
    );
    s.archive.archive_append(&batch).await.unwrap();
}

/// A batch as big as the writer sends under load (more than one statement's worth of rows on
/// SQLite, one array per column on PostgreSQL), many owners interleaved, text that needs care
/// (quotes, backslashes, braces, commas, non-ASCII, an empty `with`): every row comes back as
/// stored, once, and a retry of the whole batch adds nothing.
async fn archive_large_batch_round_trips_exactly(s: Storage) {
    let owners = ["a@x", "b@x", "c@x", "d@x", "e@x", "f@x", "g@x"];
    let batch: Vec<ArchivedMessage> = (1..=5000i64)
        .map(|id| ArchivedMessage {
            owner: owners[(id as usize) % owners.len()].to_string(),
            id,
            timestamp_ms: 1_700_000_000_000 + id,
            with: if id % 11 == 0 { String::new() } else { format!("p{}@y", id % 13) },
            outgoing: id % 3 == 0,
            stanza: format!(
                "<message xmlns='jabber:client'><body>{id} \"q\" \\ {{a,b}} NULL é ✓</body></message>"
            ),
        })
        .collect();
    s.archive.archive_append(&batch).await.unwrap();
    s.archive.archive_append(&batch).await.unwrap();
    for owner in owners {
        let want: Vec<&ArchivedMessage> = batch.iter().filter(|m| m.owner == owner).collect();
        let page = s
            .archive
            .archive_query(owner, &query(ArchiveFilter::default(), 1000, false))
            .await
            .unwrap();
        assert!(page.complete, "{owner}: one page holds it all");
        assert_eq!(page.rows.len(), want.len(), "{owner}: each row once");
        for (got, want) in page.rows.iter().zip(want) {
            assert_eq!(got, want);
        }
    }
}

async fn archive_pages_forward_and_backward(s: Storage) {
    fill_archive(&s).await;
    let a = &s.archive;
    let first = a
        .archive_query(ALICE, &query(ArchiveFilter::default(), 10, false))
        .await
        .unwrap();
    assert_eq!(page_ids(&first), (1..=10).collect::<Vec<_>>());
    assert!(!first.complete);
    let third = a
        .archive_query(
            ALICE,
            &query(
                ArchiveFilter {
                    after_id: Some(20),
                    ..Default::default()
                },
                10,
                false,
            ),
        )
        .await
        .unwrap();
    assert_eq!(page_ids(&third), (21..=25).collect::<Vec<_>>());
    assert!(third.complete);
    let exact = a
        .archive_query(
            ALICE,
            &query(
                ArchiveFilter {
                    after_id: Some(15),
                    ..Default::default()
                },
                10,
                false,
            ),
        )
        .await
        .unwrap();
    assert_eq!(page_ids(&exact), (16..=25).collect::<Vec<_>>());
    assert!(
        exact.complete,
        "a page that ends exactly at the end is complete"
    );
    // Backward: the newest rows, still in chronological order.
    let last = a
        .archive_query(ALICE, &query(ArchiveFilter::default(), 10, true))
        .await
        .unwrap();
    assert_eq!(page_ids(&last), (16..=25).collect::<Vec<_>>());
    assert!(!last.complete);
    let oldest = a
        .archive_query(
            ALICE,
            &query(
                ArchiveFilter {
                    before_id: Some(6),
                    ..Default::default()
                },
                10,
                true,
            ),
        )
        .await
        .unwrap();
    assert_eq!(page_ids(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(oldest.complete);
    let row = &oldest.rows[0];
    assert_eq!(row.owner, ALICE);
    assert_eq!(row.with, "bob@example.org");
    assert_eq!(row.timestamp_ms, 1_700_000_000_001);
    assert!(!row.outgoing);
    assert!(oldest.rows[1].outgoing);
    assert!(row.stanza.contains("<body>1</body>"));
    // Another owner's archive is separate.
    let room = a
        .archive_query(
            "room@conference.example.org",
            &query(ArchiveFilter::default(), 50, false),
        )
        .await
        .unwrap();
    assert_eq!(page_ids(&room), vec![100, 101, 102]);
    let nobody = a
        .archive_query(
            "nobody@example.org",
            &query(ArchiveFilter::default(), 5, true),
        )
        .await
        .unwrap();
    assert!(nobody.rows.is_empty() && nobody.complete);
}

async fn archive_filters_with_time_and_ids(s: Storage) {
    fill_archive(&s).await;
    let a = &s.archive;
    let with_bob = ArchiveFilter {
        with: Some("bob@example.org".into()),
        ..Default::default()
    };
    let page = a
        .archive_query(ALICE, &query(with_bob.clone(), 5, false))
        .await
        .unwrap();
    assert_eq!(page_ids(&page), vec![1, 3, 5, 7, 9]);
    let page = a
        .archive_query(ALICE, &query(with_bob.clone(), 5, true))
        .await
        .unwrap();
    assert_eq!(page_ids(&page), vec![17, 19, 21, 23, 25]);
    assert_eq!(a.archive_count(ALICE, &with_bob).await.unwrap(), 13);
    let window = ArchiveFilter {
        start_ms: Some(1_700_000_000_010),
        end_ms: Some(1_700_000_000_014),
        ..Default::default()
    };
    let page = a
        .archive_query(ALICE, &query(window.clone(), 50, false))
        .await
        .unwrap();
    assert_eq!(page_ids(&page), vec![10, 11, 12, 13, 14]);
    assert!(page.complete);
    let ids = ArchiveFilter {
        ids: Some(vec![3, 24, 101, 999]),
        ..Default::default()
    };
    let page = a
        .archive_query(ALICE, &query(ids, 50, false))
        .await
        .unwrap();
    assert_eq!(
        page_ids(&page),
        vec![3, 24],
        "ids of other archives are not visible"
    );
    let none = ArchiveFilter {
        ids: Some(vec![]),
        ..Default::default()
    };
    assert!(a
        .archive_query(ALICE, &query(none, 50, false))
        .await
        .unwrap()
        .rows
        .is_empty());
    let between = ArchiveFilter {
        after_id: Some(5),
        before_id: Some(9),
        with: Some("carol@example.org".into()),
        ..Default::default()
    };
    let page = a
        .archive_query(ALICE, &query(between, 50, false))
        .await
        .unwrap();
    assert_eq!(page_ids(&page), vec![6, 8]);
}

async fn archive_count_bounds_and_contains(s: Storage) {
    let a = &s.archive;
    assert_eq!(a.archive_bounds(ALICE).await.unwrap(), None);
    assert_eq!(
        a.archive_count(ALICE, &ArchiveFilter::default())
            .await
            .unwrap(),
        0
    );
    fill_archive(&s).await;
    assert_eq!(
        a.archive_count(ALICE, &ArchiveFilter::default())
            .await
            .unwrap(),
        25
    );
    let (first, last) = a.archive_bounds(ALICE).await.unwrap().unwrap();
    assert_eq!((first.id, first.timestamp_ms), (1, 1_700_000_000_001));
    assert_eq!((last.id, last.timestamp_ms), (25, 1_700_000_000_025));
    assert!(a.archive_contains(ALICE, 7).await.unwrap());
    assert!(
        !a.archive_contains(ALICE, 100).await.unwrap(),
        "another owner's id"
    );
    assert!(!a.archive_contains(ALICE, 26).await.unwrap());
    // A retried batch (its commit succeeded but the answer was lost) stores nothing twice:
    // ids already stored are skipped, the rest is stored.
    let retry = vec![archived(ALICE, 30, "x@y"), archived(ALICE, 7, "x@y")];
    a.archive_append(&retry).await.unwrap();
    a.archive_append(&retry).await.unwrap();
    assert!(a.archive_contains(ALICE, 30).await.unwrap());
    assert_eq!(
        a.archive_count(ALICE, &ArchiveFilter::default())
            .await
            .unwrap(),
        26,
        "one row more, none twice"
    );
    let page = a
        .archive_query(ALICE, &query(ArchiveFilter::default(), 50, false))
        .await
        .unwrap();
    let seven = page.rows.iter().find(|m| m.id == 7).expect("row 7");
    assert_ne!(seven.with, "x@y", "a stored row is not replaced");
}

async fn archive_trim_expire_and_delete_owner(s: Storage) {
    fill_archive(&s).await;
    let a = &s.archive;
    assert_eq!(a.archive_trim(ALICE, 30).await.unwrap(), 0);
    assert_eq!(a.archive_trim(ALICE, 10).await.unwrap(), 15);
    let page = a
        .archive_query(ALICE, &query(ArchiveFilter::default(), 50, false))
        .await
        .unwrap();
    assert_eq!(
        page_ids(&page),
        (16..=25).collect::<Vec<_>>(),
        "the newest are kept"
    );
    assert_eq!(
        a.archive_count("room@conference.example.org", &ArchiveFilter::default())
            .await
            .unwrap(),
        3
    );
    // Expiry by age covers every archive.
    assert_eq!(a.archive_expire(1_700_000_000_020).await.unwrap(), 4);
    assert_eq!(
        a.archive_count(ALICE, &ArchiveFilter::default())
            .await
            .unwrap(),
        6
    );
    assert_eq!(a.archive_expire(1_700_000_000_101).await.unwrap(), 6 + 1);
    let prefs = ArchivePrefs {
        default: ArchiveDefault::Never,
        always: vec![],
        never: vec![],
    };
    a.set_archive_prefs("room@conference.example.org", &prefs)
        .await
        .unwrap();
    assert_eq!(
        a.archive_delete_owner("room@conference.example.org")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        a.archive_prefs("room@conference.example.org")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        a.archive_trim(ALICE, 0).await.unwrap(),
        0,
        "an empty archive stays empty"
    );
}

async fn archive_prefs_roundtrip(s: Storage) {
    let a = &s.archive;
    assert_eq!(a.archive_prefs(ALICE).await.unwrap(), None);
    let prefs = ArchivePrefs {
        default: ArchiveDefault::Roster,
        always: vec!["bob@example.org".into()],
        never: vec!["eve@example.org".into(), "mallory@example.org".into()],
    };
    a.set_archive_prefs(ALICE, &prefs).await.unwrap();
    assert_eq!(a.archive_prefs(ALICE).await.unwrap(), Some(prefs));
    let replaced = ArchivePrefs {
        default: ArchiveDefault::Always,
        always: vec![],
        never: vec![],
    };
    a.set_archive_prefs(ALICE, &replaced).await.unwrap();
    assert_eq!(a.archive_prefs(ALICE).await.unwrap(), Some(replaced));
}

async fn node_numbers_are_kept_and_never_shared(s: Storage) {
    let a = s.nodes.node_number("a", 4).await.unwrap();
    let b = s.nodes.node_number("b", 4).await.unwrap();
    assert_eq!((a, b), (Some(0), Some(1)));
    assert_eq!(s.nodes.node_number("a", 4).await.unwrap(), Some(0));
    // Names claiming at once each get a number of their own.
    let claims: Vec<_> = ["c", "d"]
        .into_iter()
        .map(|name| {
            let s = s.clone();
            tokio::spawn(async move { s.nodes.node_number(name, 4).await.unwrap() })
        })
        .collect();
    let mut numbers = vec![a.unwrap(), b.unwrap()];
    for claim in claims {
        numbers.push(claim.await.unwrap().expect("a free number"));
    }
    numbers.sort();
    assert_eq!(numbers, [0, 1, 2, 3]);
    assert_eq!(
        s.nodes.node_number("e", 4).await.unwrap(),
        None,
        "all taken"
    );
    assert!(s.nodes.node_number("c", 4).await.unwrap().is_some());
}

/// What a single-domain release wrote (every row keyed by the localpart) is moved under
/// `localpart@domain`, each table, in one go; an account already keyed by its bare JID stays as
/// it is, and a second run moves nothing.
async fn accounts_of_a_single_domain_release_move_under_the_main_domain(s: Storage) {
    for user in ["alice", "bob", "carol@b.example"] {
        s.accounts.create_account(user, &both(1)).await.unwrap();
        s.roster
            .put_roster_item(user, &RosterItem::new("dave@x"), 10)
            .await
            .unwrap();
        s.roster
            .put_pending_in(user, "erin@x", "<presence type='subscribe'/>")
            .await
            .unwrap();
        let last = LastActivity {
            at_secs: 1_700_000_000,
            status: "gone".into(),
        };
        s.last_activity
            .set_last_activity(user, &last)
            .await
            .unwrap();
        s.blocklist
            .block(user, &["spam@x".to_owned()], 10)
            .await
            .unwrap();
        let vcard = StoredVcard {
            xml: "<vCard xmlns='vcard-temp'/>".into(),
            photo_hash: "ab".into(),
        };
        s.vcard.set_vcard(user, &vcard).await.unwrap();
        s.pep
            .create_pep_node(user, "n", &pep_config(2), 10)
            .await
            .unwrap();
        s.pep
            .publish_pep_item(user, "n", &pep_item("i", 1))
            .await
            .unwrap();
        s.fast
            .issue_fast_token(user, "ua", "t", NONE, LATER, NOW)
            .await
            .unwrap();
        s.push
            .enable_push(user, &push_registration("p.x", "d", None), 1, 5)
            .await
            .unwrap();
    }
    s.offline.push("alice", &msg(1), 10).await.unwrap();

    assert_eq!(s.accounts.qualify_accounts("a.example").await.unwrap(), 2);
    assert_eq!(
        s.accounts.list_accounts().await.unwrap(),
        ["alice@a.example", "bob@a.example", "carol@b.example"]
    );
    for user in ["alice@a.example", "bob@a.example", "carol@b.example"] {
        let sha256 = s.accounts.credentials(user, ScramHash::Sha256).await;
        assert_eq!(sha256.unwrap(), Some(creds(ScramHash::Sha256, 1)), "{user}");
        let (_, roster) = s.roster.roster(user).await.unwrap();
        assert_eq!(roster.len(), 1, "{user}");
        assert!(
            s.roster.has_pending_in(user, "erin@x").await.unwrap(),
            "{user}"
        );
        let last = s.last_activity.last_activity(user).await.unwrap();
        assert_eq!(last.map(|l| l.status), Some("gone".into()), "{user}");
        assert_eq!(
            s.blocklist.blocklist(user).await.unwrap(),
            ["spam@x"],
            "{user}"
        );
        let hash = s.vcard.vcard_photo_hash(user).await.unwrap();
        assert_eq!(hash.as_deref(), Some("ab"), "{user}");
        let items = s.pep.pep_items(user, "n", None).await.unwrap();
        assert_eq!(pep_ids(&items), ["i"], "{user}");
        assert_eq!(fast_slots(&s, user, "ua").await.len(), 1, "{user}");
        assert_eq!(
            s.push.push_registrations(user).await.unwrap().len(),
            1,
            "{user}"
        );
    }
    assert_eq!(ids(&s.offline.peek("alice@a.example").await.unwrap()), [1]);
    for old in ["alice", "bob"] {
        assert!(!s.accounts.account_exists(old).await.unwrap());
        assert!(s.pep.pep_nodes(old).await.unwrap().is_empty());
        assert!(s.offline.peek(old).await.unwrap().is_empty());
    }
    assert_eq!(s.accounts.qualify_accounts("a.example").await.unwrap(), 0);
}

// The invite store (XEP-0401).

const INVITE_NOW: i64 = 1_700_000_000_000;

fn stored_invite(token: &str, inviter: Option<&str>) -> StoredInvite {
    StoredInvite {
        token: token.into(),
        domain: "example.org".into(),
        inviter: inviter.map(str::to_owned),
        username: None,
        roster: inviter.is_some(),
        created_at_ms: INVITE_NOW,
        expires_at_ms: INVITE_NOW + 1000,
    }
}

async fn invites_roundtrip_and_need_their_inviter(s: Storage) {
    assert_eq!(s.invites.invite("t1").await.unwrap(), None);
    let orphan = s
        .invites
        .create_invite(&stored_invite("t0", Some("nobody@example.org")))
        .await;
    assert!(matches!(orphan, Err(StorageError::NotFound)), "{orphan:?}");
    s.accounts
        .create_account("romeo@example.org", &[])
        .await
        .unwrap();
    let mut stored = stored_invite("t1", Some("romeo@example.org"));
    stored.username = Some("juliet".into());
    s.invites.create_invite(&stored).await.unwrap();
    let dup = s.invites.create_invite(&stored).await;
    assert!(matches!(dup, Err(StorageError::Conflict)), "{dup:?}");
    let operator = stored_invite("t2", None);
    s.invites.create_invite(&operator).await.unwrap();
    let state = s.invites.invite("t1").await.unwrap().expect("stored");
    assert_eq!(state.invite, stored);
    assert_eq!(state.used_by, None);
    assert_eq!(
        s.invites
            .invite("t2")
            .await
            .unwrap()
            .expect("stored")
            .invite,
        operator
    );
}

async fn an_invite_is_consumed_once_and_not_after_expiry(s: Storage) {
    s.invites
        .create_invite(&stored_invite("once", None))
        .await
        .unwrap();
    s.invites
        .create_invite(&stored_invite("late", None))
        .await
        .unwrap();
    let first = s
        .invites
        .consume_invite("once", "a@example.org", INVITE_NOW + 1)
        .await
        .unwrap();
    assert_eq!(first.map(|i| i.token).as_deref(), Some("once"));
    let second = s
        .invites
        .consume_invite("once", "b@example.org", INVITE_NOW + 2)
        .await
        .unwrap();
    assert_eq!(second, None);
    let state = s.invites.invite("once").await.unwrap().expect("stored");
    assert_eq!(state.used_by.as_deref(), Some("a@example.org"));
    // Expiry is exclusive: at expires_at_ms it is no longer usable.
    let expired = s
        .invites
        .consume_invite("late", "c@example.org", INVITE_NOW + 1000)
        .await
        .unwrap();
    assert_eq!(expired, None);
    assert_eq!(
        s.invites
            .invite("late")
            .await
            .unwrap()
            .expect("stored")
            .used_by,
        None
    );
    assert_eq!(
        s.invites
            .consume_invite("missing", "d@example.org", INVITE_NOW)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_uses_of_one_invite_have_one_winner(s: Storage) {
    for round in 0..5 {
        let token = format!("race{round}");
        s.invites
            .create_invite(&stored_invite(&token, None))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    s.invites
                        .consume_invite(&token, &format!("u{i}@example.org"), INVITE_NOW)
                        .await
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if task.await.unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

async fn released_invites_are_usable_again(s: Storage) {
    s.invites
        .create_invite(&stored_invite("r", None))
        .await
        .unwrap();
    assert!(s
        .invites
        .consume_invite("r", "a@example.org", INVITE_NOW)
        .await
        .unwrap()
        .is_some());
    // Only the one who used it can give it back.
    assert!(!s
        .invites
        .release_invite("r", "b@example.org")
        .await
        .unwrap());
    assert!(s
        .invites
        .release_invite("r", "a@example.org")
        .await
        .unwrap());
    assert!(s
        .invites
        .consume_invite("r", "b@example.org", INVITE_NOW)
        .await
        .unwrap()
        .is_some());
}

async fn pending_invites_and_stale_ones(s: Storage) {
    s.accounts
        .create_account("romeo@example.org", &[])
        .await
        .unwrap();
    let mine = stored_invite("mine", Some("romeo@example.org"));
    let used = stored_invite("used", Some("romeo@example.org"));
    let mut old = stored_invite("old", Some("romeo@example.org"));
    old.expires_at_ms = INVITE_NOW - 1;
    let operators = stored_invite("ops", None);
    for i in [&mine, &used, &old, &operators] {
        s.invites.create_invite(i).await.unwrap();
    }
    s.invites
        .consume_invite("used", "x@example.org", INVITE_NOW)
        .await
        .unwrap();
    let pending = s
        .invites
        .pending_invites(Some("romeo@example.org"), INVITE_NOW)
        .await
        .unwrap();
    assert_eq!(pending, vec![mine.clone()]);
    let pending = s.invites.pending_invites(None, INVITE_NOW).await.unwrap();
    assert_eq!(pending, vec![operators.clone()]);
    assert_eq!(s.invites.delete_stale_invites(INVITE_NOW).await.unwrap(), 2);
    assert!(s.invites.invite("used").await.unwrap().is_none());
    assert!(s.invites.invite("old").await.unwrap().is_none());
    assert!(s.invites.invite("mine").await.unwrap().is_some());
}

async fn invites_go_with_their_inviter(s: Storage) {
    s.accounts
        .create_account("romeo@example.org", &[])
        .await
        .unwrap();
    s.invites
        .create_invite(&stored_invite("gone", Some("romeo@example.org")))
        .await
        .unwrap();
    s.invites
        .create_invite(&stored_invite("kept", None))
        .await
        .unwrap();
    s.accounts
        .delete_account("romeo@example.org")
        .await
        .unwrap();
    assert!(s.invites.invite("gone").await.unwrap().is_none());
    assert!(s.invites.invite("kept").await.unwrap().is_some());
}
