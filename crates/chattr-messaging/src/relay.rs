//! The outbox relay: publishes committed outbox rows to the bus, then marks them published.
//!
//! A crash between publish and mark republishes the rows (at least once); consumers dedupe
//! by `(conversation_id, seq)`. Rows go out in id order, so per-conversation order holds.
//! Exactly one relay may run per store (the distributed shape will elect one).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chattr_bus::{DynBus, OutgoingRecord};
use chattr_core::events::EVENT_SCHEMA_VERSION;
use chattr_store::DynStore;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// Rows published per batch.
const BATCH: u32 = 256;
/// Poll interval when nothing pokes the relay (rows written by another process).
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Back-off after a failed publish or store call.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Runs the relay until `shutdown` resolves. `poke` is notified by local writers.
pub async fn run(store: DynStore, bus: DynBus, poke: Arc<Notify>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = poke.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
        loop {
            match drain_once(&store, &bus).await {
                Ok(0) => break,
                Ok(n) => debug!(rows = n, "outbox rows published"),
                Err(e) => {
                    warn!(error = %e, "outbox relay failed, retrying");
                    metrics::counter!("chattr_outbox_relay_errors_total").increment(1);
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
    }
}

/// Publishes one batch; returns how many rows went out.
async fn drain_once(store: &DynStore, bus: &DynBus) -> Result<usize, String> {
    let rows = store.outbox_pending(BATCH).await.map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let records = rows
        .iter()
        .map(|row| {
            let (topic, key) = row.event.route();
            OutgoingRecord {
                topic: topic.to_owned(),
                key,
                headers: vec![
                    ("event_type".to_owned(), row.event.kind().to_owned()),
                    ("schema_version".to_owned(), EVENT_SCHEMA_VERSION.to_string()),
                ],
                payload: Bytes::from(row.event.to_json()),
            }
        })
        .collect();
    bus.publish(records).await.map_err(|e| e.to_string())?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.outbox_mark_published(&ids).await.map_err(|e| e.to_string())?;
    metrics::counter!("chattr_outbox_published_total").increment(ids.len() as u64);
    Ok(ids.len())
}
