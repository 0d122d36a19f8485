//! The transactional outbox on PostgreSQL, and why its id order can be trusted.
//!
//! Events are appended inside the transaction of the change they describe; the relay reads
//! pending rows in id order and deletes them once published.
//!
//! # Ordering
//!
//! A BIGSERIAL id is drawn when the row is inserted, not when its transaction commits, so
//! under concurrency ids can become visible out of order: T1 draws id 10, T2 draws 11 and
//! commits first, and a relay reading at that moment sees 11 but not 10. Nothing is lost
//! (row 10 stays pending and goes out in the next batch), but global id order is not commit
//! order.
//!
//! What consumers rely on is order *per partition key* (the bus partitions by
//! [`Event::route`]: a conversation, or a user). So [`push`] first takes a transaction-scoped
//! advisory lock on each of its events' `(topic, key)`, held until commit. Two transactions
//! writing events for the same key therefore draw their ids one after the other, and the
//! second draws only after the first has committed and become visible. Guarantee: **within
//! one key, id order equals commit order, and a snapshot that sees a row sees every earlier
//! row of its key**, so `ORDER BY id` in [`pending`] never publishes a key's event before
//! an earlier one of the same key. Across keys, order is only approximate, which no
//! consumer needs. Writers of different conversations never wait for each other; writers of
//! one conversation are already serialised by its row lock when they send messages.
//!
//! Deadlock freedom: every transaction pushes its events as its last statement, so the
//! advisory locks are the last locks it takes, and it takes them in sorted order.

use std::collections::BTreeSet;

use chattr_core::events::Event;
use sqlx::PgConnection;

use super::rows::{limit_param, ms};
use super::PostgresStore;
use crate::{OutboxBacklog, OutboxRow, StoreError, StoreResult};

/// First key of the two-key advisory locks the outbox takes ("chat" in ASCII), so they
/// cannot collide with other users of advisory locks in the same database (sqlx's migrator
/// uses the one-key form, a separate key space).
const LOCK_NAMESPACE: i32 = 0x6368_6174;

/// Appends `events` (in order) to the outbox on `conn`, which must be inside the
/// transaction of the change, as its last statement: the events exist if and only if the
/// change committed. See the module docs for the per-key lock.
pub(super) async fn push(conn: &mut PgConnection, events: &[Event]) -> StoreResult<()> {
    let routes: Vec<(&'static str, String)> = events.iter().map(Event::route).collect();
    // Sorted and deduplicated: a fixed lock order rules out deadlocks between pushers.
    let keys: BTreeSet<String> = routes.iter().map(|(topic, key)| format!("{topic}/{key}")).collect();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_NAMESPACE)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    let now = ms(chattr_core::now());
    let traceparent = chattr_core::trace::outgoing();
    for (event, (topic, key)) in events.iter().zip(routes) {
        sqlx::query("INSERT INTO outbox (topic, key, kind, payload, created_at, traceparent) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(topic)
            .bind(key)
            .bind(event.kind())
            .bind(event.to_json())
            .bind(now)
            .bind(&traceparent)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Unpublished rows, oldest first (see the module docs for what "oldest" guarantees).
pub(super) async fn pending(store: &PostgresStore, limit: u32) -> StoreResult<Vec<OutboxRow>> {
    let rows: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT id, payload, traceparent FROM outbox ORDER BY id LIMIT $1")
            .bind(limit_param(limit))
            .fetch_all(&store.pool)
            .await?;
    rows.into_iter()
        .map(|(id, payload, traceparent)| {
            let event = serde_json::from_str::<Event>(&payload)
                .map_err(|e| StoreError::Backend(format!("corrupt outbox row {id}: {e}")))?;
            Ok(OutboxRow { id, event, traceparent })
        })
        .collect()
}

/// Marks rows as published by deleting them: once on the bus, the bus is their durable
/// home, so the table stays as small as the backlog. Unknown ids are ignored.
pub(super) async fn mark_published(store: &PostgresStore, ids: &[i64]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(&store.pool).await?;
    Ok(())
}

/// The pending rows: published ones are deleted, so this is the whole table.
pub(super) async fn backlog(store: &PostgresStore) -> StoreResult<OutboxBacklog> {
    let (rows, oldest_ms): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(created_at) FROM outbox").fetch_one(&store.pool).await?;
    Ok(OutboxBacklog { rows: u64::try_from(rows).unwrap_or_default(), oldest_ms })
}
