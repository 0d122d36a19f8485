//! Runs the conformance suite against [`PostgresStore`] on a real PostgreSQL server (see
//! `support`), plus what only a shared server database has: data that outlives a pool,
//! several pools (as several server processes would have) racing on one database, and the
//! outbox's per-key ordering under concurrency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chattr_core::events::Event;
use chattr_store::conformance::{at, drain, group, new_message, send, session_record, user};
use chattr_store::postgres::{self, PostgresStore};
use chattr_store::{DynStore, MessageChange, Store};
use chattr_testkit::postgres::fresh_database_url;

async fn connect(url: &str) -> PostgresStore {
    postgres::connect(url).await.expect("connect to postgres")
}

/// A store on a fresh database.
async fn make() -> DynStore {
    Arc::new(connect(&fresh_database_url().await).await)
}

/// `n` separate stores (pools) on one fresh database, like `n` server processes.
async fn stores_on_one_database(n: usize) -> Vec<DynStore> {
    let url = fresh_database_url().await;
    let mut stores: Vec<DynStore> = Vec::new();
    for _ in 0..n {
        stores.push(Arc::new(connect(&url).await));
    }
    stores
}

mod conformance {
    use super::*;

    chattr_store::store_conformance_tests!(make());
}

/// `open()` dispatches both URL schemes; `migrate()` alone prepares a database that
/// `connect()` then finds up to date.
#[tokio::test]
async fn open_and_migrate_by_url() {
    let url = fresh_database_url().await;
    postgres::migrate(&url).await.expect("migrate");
    postgres::migrate(&url).await.expect("migrate is idempotent");
    let store = chattr_store::open(&url).await.expect("postgres://");
    store.ping().await.expect("ping");
    let other = url.replacen("postgres://", "postgresql://", 1);
    chattr_store::open(&other).await.expect("postgresql://").ping().await.expect("ping");
    assert!(chattr_store::open(&format!("{url}_missing")).await.is_err(), "unknown database");
}

/// Everything written through one pool is there, unchanged, through a new one.
#[tokio::test]
async fn data_survives_reconnect() {
    let url = fresh_database_url().await;
    let first = Arc::new(connect(&url).await);
    let store: DynStore = first.clone();
    let a = user(&store, "alice").await;
    let b = user(&store, "bob").await;
    let session = session_record(a, "hash", 1);
    store.create_session(&session).await.expect("session");
    store.rotate_refresh(session.id, "hash", "hash2", at(2_000_000), at(2)).await.expect("rotate");
    let g = group(&store, &[a, b], 2).await;
    let m1 = send(&store, g, a, "1", 3).await;
    let m2 = send(&store, g, b, "2", 4).await;
    let m2 = store
        .change_message(g, m2.id, &MessageChange::Edit { body: "edited".into(), at: at(5) })
        .await
        .expect("edit")
        .expect("exists");
    store.mark_read(g, a, 2).await.expect("read");
    let pending = store.outbox_pending(100).await.expect("pending");
    let (published, unpublished) = pending.split_at(pending.len() / 2);
    let ids: Vec<i64> = published.iter().map(|r| r.id).collect();
    store.outbox_mark_published(&ids).await.expect("publish");
    let session = store.session(session.id).await.expect("session");
    let conversation = store.conversation(g).await.expect("get");
    let summaries = store.conversations_for_user(b).await.expect("list");
    drop(store);
    first.close().await;

    let store: DynStore = Arc::new(connect(&url).await);
    assert_eq!(store.outbox_pending(100).await.expect("pending"), unpublished);
    assert_eq!(store.user_by_username("alice").await.expect("user").map(|u| u.id), Some(a));
    let id = session.as_ref().map(|s| s.id).expect("session exists");
    assert_eq!(store.session(id).await.expect("session"), session);
    // The rotated-away hash is still remembered: replaying it is detected as reuse.
    let replay = store.rotate_refresh(id, "hash", "x", at(2_000_000), at(6)).await.expect("replay");
    assert_eq!(replay, chattr_store::RotateOutcome::Reused);
    assert_eq!(store.conversation(g).await.expect("get"), conversation);
    assert_eq!(store.conversations_for_user(b).await.expect("list"), summaries);
    assert_eq!(store.messages(g, None, None, 10).await.expect("page"), vec![m1, m2]);
    assert_eq!(store.membership(g, a).await.expect("membership").map(|m| m.read_seq), Some(2));
    // Counters continue where they stopped: seqs and outbox ids.
    let last_id = unpublished.last().map(|r| r.id).expect("something pending");
    assert_eq!(send(&store, g, a, "3", 7).await.seq, 3);
    let events = store.outbox_pending(100).await.expect("pending");
    assert!(events.last().map(|r| r.id).expect("new row") > last_id);
}

/// 16 concurrent sends of one `client_msg_id` (through 4 pools) store one message, and
/// every caller gets that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_store_one_message() {
    let stores = stores_on_one_database(4).await;
    let a = user(&stores[0], "retry").await;
    let g = group(&stores[0], &[a], 0).await;
    drain(&stores[0]).await;
    let mut handles = Vec::new();
    for i in 0..16 {
        let store = stores[i % stores.len()].clone();
        // Same key, different ids and bodies: only the first one to commit may win.
        handles.push(tokio::spawn(async move {
            let mut new = new_message(g, a, "same-key", i as i64);
            new.body = format!("attempt {i}");
            store.insert_message(&new).await.expect("insert")
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1, "exactly one insert");
    let winner = results.iter().find(|(_, created)| *created).map(|(m, _)| m.clone()).expect("winner");
    assert!(results.iter().all(|(m, _)| *m == winner), "every caller gets the stored message");
    let store = &stores[0];
    assert_eq!(store.messages(g, None, None, 100).await.expect("page"), vec![winner.clone()]);
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").last_seq, 1);
    assert_eq!(drain(store).await, vec![Event::MessageCreated { message: winner }]);
}

/// 8 tasks × 25 distinct sends, each task on its own pool: seqs 1..=200, each once, each
/// task's own seqs increasing, and the outbox in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_across_pools_get_gapless_seqs() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let stores = stores_on_one_database(TASKS).await;
    let mut senders = Vec::new();
    for i in 0..TASKS {
        senders.push(user(&stores[0], &format!("s{i}")).await);
    }
    let g = group(&stores[0], &senders, 0).await;
    drain(&stores[0]).await;
    let mut handles = Vec::new();
    for (store, sender) in stores.iter().cloned().zip(senders) {
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..PER_TASK {
                seqs.push(send(&store, g, sender, &format!("m{n}"), n as i64).await.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        let seqs = handle.await.expect("task");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one sender's seqs increase: {seqs:?}");
        all.extend(seqs);
    }
    all.sort_unstable();
    let total = (TASKS * PER_TASK) as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let created: Vec<u64> = drain(&stores[0])
        .await
        .into_iter()
        .map(|e| match e {
            Event::MessageCreated { message } => message.seq,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(created, (1..=total).collect::<Vec<_>>());
}

/// The outbox's ordering guarantee, checked the way the relay consumes it: while writers
/// on several pools make changes to a few conversations that mostly do not conflict (read
/// positions and guest memberships of different users, besides messages), a relay loop
/// drains the outbox. Once it has seen
/// an id for a key, no later batch may contain a lower id for that key; and every event
/// comes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_never_reveals_a_keys_rows_out_of_order() {
    const CONVERSATIONS: usize = 3;
    const WRITERS: usize = 6;
    const ROUNDS: usize = 30;
    let stores = stores_on_one_database(WRITERS + 1).await;
    let relay_store = stores[WRITERS].clone();
    let (mut members, mut guests) = (Vec::new(), Vec::new());
    for i in 0..WRITERS {
        members.push(user(&stores[0], &format!("w{i}")).await);
        guests.push(user(&stores[0], &format!("guest{i}")).await);
    }
    let mut conversations = Vec::new();
    for i in 0..CONVERSATIONS {
        conversations.push(group(&stores[0], &members, i as i64).await);
    }
    drain(&stores[0]).await;

    let done = Arc::new(AtomicBool::new(false));
    let relay = tokio::spawn({
        let (store, done) = (relay_store.clone(), done.clone());
        async move {
            let mut seen: HashMap<String, i64> = HashMap::new();
            let mut published = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let rows = store.outbox_pending(16).await.expect("pending");
                for row in &rows {
                    let (_, key) = row.event.route();
                    let last = seen.entry(key.clone()).or_insert(i64::MIN);
                    assert!(row.id > *last, "row {} of {key} revealed after row {}", row.id, *last);
                    *last = row.id;
                }
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                store.outbox_mark_published(&ids).await.expect("publish");
                published.extend(rows.into_iter().map(|r| r.event));
                if finished && ids.is_empty() {
                    return published;
                }
            }
        }
    });

    let mut writers = Vec::new();
    for (w, ((store, member), guest)) in stores.iter().cloned().zip(members).zip(guests).enumerate() {
        let conversations = conversations.clone();
        writers.push(tokio::spawn(async move {
            let mut expected = 0;
            for round in 0..ROUNDS {
                let g = conversations[(w + round) % conversations.len()];
                send(&store, g, member, &format!("{w}-{round}"), round as i64).await;
                // Changes to the same conversation that take no row lock any other writer
                // takes: only the outbox's per-key lock orders their ids.
                assert!(store.add_member(g, guest, at(round as i64)).await.expect("add"));
                assert!(store.remove_member(g, guest).await.expect("remove"));
                expected += 3;
                let last = store.conversation(g).await.expect("get").expect("exists").last_seq;
                // Moves only if others sent since; the events that result are counted below.
                store.mark_read(g, member, last).await.expect("read");
            }
            expected
        }));
    }
    let mut expected = 0;
    for writer in writers {
        expected += writer.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let published = relay.await.expect("relay");
    let reads = published.iter().filter(|e| matches!(e, Event::MessageRead { .. })).count();
    assert_eq!(published.len(), expected + reads, "every event published once");
    let mut created: HashMap<_, Vec<u64>> = HashMap::new();
    for event in &published {
        if let Event::MessageCreated { message } = event {
            created.entry(message.conversation_id).or_default().push(message.seq);
        }
    }
    for (conversation, seqs) in created {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "messages of {conversation} published in seq order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_across_stores_and_passes_on_when_released_or_killed() {
    use std::time::Duration;
    let url = fresh_database_url().await;
    let (one, two) = (connect(&url).await, connect(&url).await);
    let mut first = one.acquire_lease("outbox-relay").await.expect("first holder");
    // A second store (another process, in production) waits while the lease is held.
    let waiting = tokio::spawn(async move {
        let lease = two.acquire_lease("outbox-relay").await.expect("second holder");
        (two, lease)
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!waiting.is_finished(), "two holders at once");
    // Another name is independent.
    let _other = one.acquire_lease("something-else").await.expect("other lease");
    drop(first);
    let (_two, mut second) =
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("handover").unwrap();
    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");

    // Killing the holder's connection (a crashed or partitioned holder) ends its lease:
    // it notices, and a standby takes over.
    let standby = tokio::spawn(async move { one.acquire_lease("outbox-relay").await.expect("standby") });
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND pid <> pg_backend_pid() AND classid = 1818583411",
    )
    .execute(&admin)
    .await
    .expect("terminate the holder's backend");
    let reason = tokio::time::timeout(Duration::from_secs(5), second.lost()).await.expect("loss noticed");
    assert!(reason.contains("lease connection"), "{reason}");
    first = tokio::time::timeout(Duration::from_secs(5), standby).await.expect("standby takes over").unwrap();
    drop(first);
}
