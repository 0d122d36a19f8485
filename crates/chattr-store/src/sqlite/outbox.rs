//! The transactional outbox table: events are appended inside the transaction of the
//! change they describe, and the relay reads and marks them in id order.

use chattr_core::events::Event;
use sqlx::SqliteConnection;

use super::rows::ms;
use super::SqliteStore;
use crate::{OutboxBacklog, OutboxRow, StoreError, StoreResult};

/// Appends `event` to the outbox on `conn`, which must be inside the write transaction of
/// the change, so the event exists if and only if the change committed.
pub(super) async fn push(conn: &mut SqliteConnection, event: &Event) -> StoreResult<()> {
    let (topic, key) = event.route();
    sqlx::query(
        "INSERT INTO outbox (topic, key, kind, payload, created_at, traceparent) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(topic)
    .bind(key)
    .bind(event.kind())
    .bind(event.to_json())
    .bind(ms(chattr_core::now()))
    .bind(chattr_core::trace::outgoing())
    .execute(conn)
    .await?;
    Ok(())
}

/// Unpublished rows, oldest first.
pub(super) async fn pending(store: &SqliteStore, limit: u32) -> StoreResult<Vec<OutboxRow>> {
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, payload, traceparent FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
    )
    .bind(limit)
    .fetch_all(&store.read)
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
/// home and nothing reads them here again, so the table stays as small as the backlog.
/// AUTOINCREMENT keeps ids monotonic after deletes. Unknown ids are ignored.
pub(super) async fn mark_published(store: &SqliteStore, ids: &[i64]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // One statement for the whole batch: each statement is a round trip on the one writer.
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Backend(e.to_string()))?;
    sqlx::query("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))")
        .bind(ids)
        .execute(&store.write)
        .await?;
    Ok(())
}

/// The pending rows (published ones are deleted).
pub(super) async fn backlog(store: &SqliteStore) -> StoreResult<OutboxBacklog> {
    let (rows, oldest_ms): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&store.read)
            .await?;
    Ok(OutboxBacklog { rows: u64::try_from(rows).unwrap_or_default(), oldest_ms })
}
