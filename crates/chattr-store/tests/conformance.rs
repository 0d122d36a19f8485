//! Runs the conformance suite against every store impl of this crate, plus the checks that
//! only make sense for a durable backend (data survives a restart).

use std::path::PathBuf;
use std::sync::Arc;

use chattr_store::sqlite::SqliteStore;
use chattr_store::DynStore;

/// A fresh database path per test (tests run in parallel) under cargo's scratch directory
/// for integration tests. The directory is emptied once per run, so runs don't pile up.
fn fresh_db_path() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chattr-store-tests");
        let _ = std::fs::remove_dir_all(&root);
        root
    });
    root.join(uuid::Uuid::new_v4().to_string()).join("chattr.db")
}

async fn open_sqlite(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path.to_str().expect("utf-8 temp path")).await.expect("open sqlite store")
}

mod memory {
    use super::*;

    async fn make() -> DynStore {
        Arc::new(chattr_store::memory::MemoryStore::default())
    }

    chattr_store::store_conformance_tests!(make());
}

mod sqlite_file {
    use super::*;

    async fn make() -> DynStore {
        Arc::new(open_sqlite(&fresh_db_path()).await)
    }

    chattr_store::store_conformance_tests!(make());
}

mod sqlite_in_memory {
    use super::*;

    async fn make() -> DynStore {
        Arc::new(SqliteStore::open(":memory:").await.expect("open in-memory sqlite"))
    }

    chattr_store::store_conformance_tests!(make());
}

/// The `open()` URL dispatch reaches the embedded backends; an unreachable PostgreSQL URL
/// is an error (the PostgreSQL schemes against a real server are in tests/postgres.rs).
#[tokio::test]
async fn open_by_url() {
    let memory = chattr_store::open("memory://").await.expect("memory://");
    memory.ping().await.expect("ping");
    let path = fresh_db_path();
    let sqlite = chattr_store::open(&format!("sqlite://{}", path.display())).await.expect("sqlite://");
    sqlite.ping().await.expect("ping");
    assert!(path.exists(), "database file and parent directories are created");
    assert!(chattr_store::open("postgres://nope").await.is_err());
}

/// Everything written before a close is there after reopening the same file.
#[tokio::test]
async fn sqlite_data_survives_reopen() {
    use chattr_store::conformance::{at, drain, group, send, session_record, user};
    use chattr_store::MessageChange;

    let path = fresh_db_path();
    let first = Arc::new(open_sqlite(&path).await);
    let store: DynStore = first.clone();
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let session = session_record(a, "hash", 1);
    store.create_session(&session).await.expect("session");
    let g = group(&store, &[a, b], 2).await;
    let m1 = send(&store, g, a, "1", 3).await;
    let m2 = send(&store, g, b, "2", 4).await;
    let m2 = store
        .change_message(g, m2.id, &MessageChange::Edit { body: "edited".into(), at: at(5) })
        .await
        .expect("edit")
        .expect("exists");
    store.mark_read(g, a, 2).await.expect("read");
    // Publish the first half of the outbox; the rest must stay pending across the restart.
    let pending = store.outbox_pending(100).await.expect("pending");
    let (published, unpublished) = pending.split_at(pending.len() / 2);
    let ids: Vec<i64> = published.iter().map(|r| r.id).collect();
    store.outbox_mark_published(&ids).await.expect("publish");
    let conversation = store.conversation(g).await.expect("get").expect("exists");
    let summaries = store.conversations_for_user(b).await.expect("list");
    drop(store);
    first.close().await;

    let second = open_sqlite(&path).await;
    let store: DynStore = Arc::new(second);
    assert_eq!(store.outbox_pending(100).await.expect("pending"), unpublished);
    assert_eq!(store.user_by_username("alice").await.expect("user").map(|u| u.id), Some(a));
    assert_eq!(store.session(session.id).await.expect("session"), Some(session));
    assert_eq!(store.conversation(g).await.expect("get"), Some(conversation));
    assert_eq!(store.conversations_for_user(b).await.expect("list"), summaries);
    assert_eq!(store.messages(g, None, None, 10).await.expect("page"), vec![m1, m2]);
    assert_eq!(store.membership(g, a).await.expect("membership").map(|m| m.read_seq), Some(2));
    // Counters continue where they stopped: seqs and outbox ids.
    let last_id = unpublished.last().map(|r| r.id).expect("something pending");
    assert_eq!(send(&store, g, a, "3", 6).await.seq, 3);
    let events = store.outbox_pending(100).await.expect("pending");
    assert!(events.last().map(|r| r.id).expect("new row") > last_id);
    assert_eq!(drain(&store).await.len(), unpublished.len() + 1);
}
