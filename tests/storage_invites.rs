//! The invite store (XEP-0401) against both backends, as tests/storage.rs runs its suite:
//! SQLite in a temp folder, and PostgreSQL in a fresh schema of `CORVID_TEST_POSTGRES` (skipped
//! with a line when it is not set).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use corvid::storage::*;
use futures::FutureExt;
use sqlx::Connection;

const PG_ENV: &str = "CORVID_TEST_POSTGRES";

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Storage) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("corvid.db").display());
    let backend = Arc::new(SqliteStorage::open(&url).await.unwrap());
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
    invites_roundtrip_and_need_their_inviter,
    an_invite_is_consumed_once_and_not_after_expiry,
    concurrent_uses_of_one_invite_have_one_winner,
    released_invites_are_usable_again,
    pending_invites_and_stale_ones,
    invites_go_with_their_inviter,
);

const NOW: i64 = 1_700_000_000_000;

fn invite(token: &str, inviter: Option<&str>) -> StoredInvite {
    StoredInvite {
        token: token.into(),
        domain: "example.org".into(),
        inviter: inviter.map(str::to_owned),
        username: None,
        roster: inviter.is_some(),
        created_at_ms: NOW,
        expires_at_ms: NOW + 1000,
    }
}

async fn invites_roundtrip_and_need_their_inviter(s: Storage) {
    assert_eq!(s.invites.invite("t1").await.unwrap(), None);
    let orphan = s
        .invites
        .create_invite(&invite("t0", Some("nobody@example.org")))
        .await;
    assert!(matches!(orphan, Err(StorageError::NotFound)), "{orphan:?}");
    s.accounts
        .create_account("romeo@example.org", &[])
        .await
        .unwrap();
    let mut stored = invite("t1", Some("romeo@example.org"));
    stored.username = Some("juliet".into());
    s.invites.create_invite(&stored).await.unwrap();
    let dup = s.invites.create_invite(&stored).await;
    assert!(matches!(dup, Err(StorageError::Conflict)), "{dup:?}");
    let operator = invite("t2", None);
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
        .create_invite(&invite("once", None))
        .await
        .unwrap();
    s.invites
        .create_invite(&invite("late", None))
        .await
        .unwrap();
    let first = s
        .invites
        .consume_invite("once", "a@example.org", NOW + 1)
        .await
        .unwrap();
    assert_eq!(first.map(|i| i.token).as_deref(), Some("once"));
    let second = s
        .invites
        .consume_invite("once", "b@example.org", NOW + 2)
        .await
        .unwrap();
    assert_eq!(second, None);
    let state = s.invites.invite("once").await.unwrap().expect("stored");
    assert_eq!(state.used_by.as_deref(), Some("a@example.org"));
    // Expiry is exclusive: at expires_at_ms it is no longer usable.
    let expired = s
        .invites
        .consume_invite("late", "c@example.org", NOW + 1000)
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
            .consume_invite("missing", "d@example.org", NOW)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_uses_of_one_invite_have_one_winner(s: Storage) {
    for round in 0..5 {
        let token = format!("race{round}");
        s.invites
            .create_invite(&invite(&token, None))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    s.invites
                        .consume_invite(&token, &format!("u{i}@example.org"), NOW)
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
    s.invites.create_invite(&invite("r", None)).await.unwrap();
    assert!(s
        .invites
        .consume_invite("r", "a@example.org", NOW)
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
        .consume_invite("r", "b@example.org", NOW)
        .await
        .unwrap()
        .is_some());
}

async fn pending_invites_and_stale_ones(s: Storage) {
    s.accounts
        .create_account("romeo@example.org", &[])
        .await
        .unwrap();
    let mine = invite("mine", Some("romeo@example.org"));
    let used = invite("used", Some("romeo@example.org"));
    let mut old = invite("old", Some("romeo@example.org"));
    old.expires_at_ms = NOW - 1;
    let operators = invite("ops", None);
    for i in [&mine, &used, &old, &operators] {
        s.invites.create_invite(i).await.unwrap();
    }
    s.invites
        .consume_invite("used", "x@example.org", NOW)
        .await
        .unwrap();
    let pending = s
        .invites
        .pending_invites(Some("romeo@example.org"), NOW)
        .await
        .unwrap();
    assert_eq!(pending, vec![mine.clone()]);
    let pending = s.invites.pending_invites(None, NOW).await.unwrap();
    assert_eq!(pending, vec![operators.clone()]);
    assert_eq!(s.invites.delete_stale_invites(NOW).await.unwrap(), 2);
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
        .create_invite(&invite("gone", Some("romeo@example.org")))
        .await
        .unwrap();
    s.invites
        .create_invite(&invite("kept", None))
        .await
        .unwrap();
    s.accounts
        .delete_account("romeo@example.org")
        .await
        .unwrap();
    assert!(s.invites.invite("gone").await.unwrap().is_none());
    assert!(s.invites.invite("kept").await.unwrap().is_some());
}
