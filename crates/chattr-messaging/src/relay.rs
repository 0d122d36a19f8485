//! The outbox relay: publishes committed outbox rows to the bus, then marks them published.
//!
//! A crash between publish and mark republishes the rows (at least once); consumers dedupe
//! by `(conversation_id, seq)`. Rows go out in id order, so per-conversation order holds.
//! Exactly one relay works per store: it holds the store's `outbox-relay` lease
//! ([`chattr_store::Store::acquire_lease`]); further relays wait as hot standbys and take
//! over when the holder dies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chattr_bus::{DynBus, OutgoingRecord};
use chattr_core::events::EVENT_SCHEMA_VERSION;
use chattr_core::trace::TraceContext;
use chattr_store::DynStore;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::metrics as m;

/// Rows published per batch.
const BATCH: u32 = 256;
/// The relay's lease name.
pub const LEASE: &str = "outbox-relay";
/// Back-off after a failed publish or store call.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// How often the leader reports the backlog.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Runs the relay until `shutdown` resolves: waits for the lease, then publishes while it
/// holds it. `poke` is notified by writers in this process; rows written elsewhere are
/// found by polling every `poll` (short when the writers are other processes).
pub async fn run(
    store: DynStore,
    bus: DynBus,
    poke: Arc<Notify>,
    poll: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    m::relay_gauges();
    loop {
        let mut lease = tokio::select! {
            _ = &mut shutdown => return,
            lease = store.acquire_lease(LEASE) => match lease {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(error = %e, "cannot acquire the relay lease, retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            },
        };
        metrics::gauge!(m::OUTBOX_RELAY_LEADER).set(1.0);
        tokio::select! {
            _ = &mut shutdown => return,
            reason = lease.lost() => warn!(%reason, "relay lease lost; standing by"),
            _ = publish_while_leading(&store, &bus, &poke, poll) => {}
            _ = report_backlog(&store) => {}
        }
        metrics::gauge!(m::OUTBOX_RELAY_LEADER).set(0.0);
        metrics::gauge!(m::OUTBOX_BACKLOG).set(0.0);
        metrics::gauge!(m::OUTBOX_OLDEST_AGE).set(0.0);
    }
}

/// The leader's loop (never returns; cancelled when the lease is lost or on shutdown).
/// A batch cut short by cancellation is published again by the next leader: at least
/// once, in order.
async fn publish_while_leading(store: &DynStore, bus: &DynBus, poke: &Notify, poll: Duration) {
    loop {
        loop {
            match drain_once(store, bus).await {
                Ok(0) => break,
                Ok(n) => debug!(rows = n, "outbox rows published"),
                Err(e) => {
                    warn!(error = %e, "outbox relay failed, retrying");
                    metrics::counter!(m::OUTBOX_RELAY_ERRORS).increment(1);
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
        tokio::select! {
            _ = poke.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// While leading, reports the backlog every few seconds (never returns): rows waiting and
/// the age of the oldest, which grows when publishing is stuck.
async fn report_backlog(store: &DynStore) {
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    loop {
        every.tick().await;
        match store.outbox_backlog().await {
            Ok(backlog) => {
                let age_ms =
                    backlog.oldest_ms.map_or(0, |oldest| chattr_core::now().timestamp_millis() - oldest);
                metrics::gauge!(m::OUTBOX_BACKLOG).set(backlog.rows as f64);
                metrics::gauge!(m::OUTBOX_OLDEST_AGE).set(age_ms.max(0) as f64 / 1000.0);
            }
            Err(e) => debug!(error = %e, "outbox backlog not read"),
        }
    }
}

/// Publishes one batch; returns how many rows went out.
async fn drain_once(store: &DynStore, bus: &DynBus) -> Result<usize, String> {
    let rows = store.outbox_pending(BATCH).await.map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let started = std::time::SystemTime::now();
    // Each traced row is a hop of its request's trace: the relay's span, which the
    // record's consumers continue.
    let hops: Vec<Option<TraceContext>> = rows
        .iter()
        .map(|row| row.traceparent.as_deref().and_then(TraceContext::parse).map(|t| t.child()))
        .collect();
    let records = rows
        .iter()
        .zip(&hops)
        .map(|(row, hop)| {
            let (topic, key) = row.event.route();
            let mut headers = vec![
                ("event_type".to_owned(), row.event.kind().to_owned()),
                ("schema_version".to_owned(), EVENT_SCHEMA_VERSION.to_string()),
            ];
            if let Some(hop) = hop {
                debug!(trace_id = %hop.trace_hex(), event = row.event.kind(), "relaying to the bus");
                headers.push(("traceparent".to_owned(), hop.to_string()));
            }
            OutgoingRecord {
                topic: topic.to_owned(),
                key,
                headers,
                payload: Bytes::from(row.event.to_json()),
            }
        })
        .collect();
    bus.publish(records).await.map_err(|e| e.to_string())?;
    for (row, hop) in rows.iter().zip(hops) {
        if let Some(hop) = hop {
            chattr_core::trace::record("relay publish", || row.event.kind().to_owned(), hop, started);
        }
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.outbox_mark_published(&ids).await.map_err(|e| e.to_string())?;
    metrics::counter!(m::OUTBOX_PUBLISHED).increment(ids.len() as u64);
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chattr_bus::StartFrom;
    use chattr_core::trace::{self, TraceContext};
    use chattr_store::UserRecord;

    #[tokio::test]
    async fn published_records_carry_type_version_and_the_writers_trace() {
        let store = chattr_store::open("memory://").await.unwrap();
        let bus = chattr_bus::open("inproc://").unwrap();
        let mut consumer = bus.subscribe("chattr.users", "test", StartFrom::Earliest).await.unwrap();
        let request = TraceContext::new_root();
        let record = UserRecord {
            id: uuid::Uuid::now_v7(),
            username: "traced".into(),
            password_hash: "h".into(),
            created_at: chattr_core::now(),
        };
        trace::scope(request, store.create_user(&record)).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(run(
            store.clone(),
            bus.clone(),
            Arc::new(Notify::new()),
            Duration::from_millis(5),
            async {
                let _ = stopped.await;
            },
        ));
        let published = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
        assert_eq!(published.header("event_type"), Some("user.registered"));
        assert_eq!(published.header("schema_version"), Some(EVENT_SCHEMA_VERSION.to_string().as_str()));
        let carried =
            TraceContext::parse(published.header("traceparent").expect("traceparent header")).unwrap();
        assert_eq!(carried.trace_id, request.trace_id);
        let _ = stop.send(());
        relay.await.unwrap();
        assert!(store.outbox_pending(10).await.unwrap().is_empty(), "published rows leave the outbox");
    }
}
