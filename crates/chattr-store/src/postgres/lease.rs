//! Leases on PostgreSQL: a session-level advisory lock held by a dedicated connection.
//!
//! The lock lives exactly as long as the connection: if the holder crashes, its backend
//! exits and PostgreSQL releases the lock, so a standby takes over within its retry
//! interval. If the holder's machine or network dies instead, the server finds out through
//! TCP keepalives, which the lease connection sets to a few seconds (about 11 s, up to
//! the 10 s user timeout for unacknowledged data). The holder checks its connection every [`CHECK_EVERY`]; when a check fails it
//! reports the lease lost and stops, even though the server may hold the lock a little
//! longer (until it notices the dead connection) — the safe direction: for a moment nobody
//! works, never two at once.
//!
//! One overlap remains possible, and is accepted: if the server drops the lock while the
//! holder's connection still answers (an operator's `pg_terminate_backend` on it, say),
//! a standby may lead up to one check interval before the old holder notices, and records
//! the old holder had already handed to the bus still go out. Both publish the same rows
//! in the same order, so consumers see duplicates (dropped by `(conversation, seq)`) and,
//! at worst, an edit or read position replayed once more; fencing with a transactional
//! producer would close this.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::PostgresStore;
use crate::{Lease, StoreError, StoreResult};

/// First key of the two-key advisory locks of leases ("leas"), apart from the outbox's.
const LEASE_NAMESPACE: i32 = 0x6c65_6173;
/// How often a standby retries, and how often a holder checks its connection.
const RETRY_EVERY: Duration = Duration::from_millis(500);
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Bound of one check: a connection that stops answering counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn acquire(store: &PostgresStore, name: &str) -> StoreResult<Box<dyn Lease>> {
    loop {
        match try_acquire(store, name).await {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, lease = name, "cannot try for the lease, retrying"),
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

async fn try_acquire(store: &PostgresStore, name: &str) -> StoreResult<Option<Box<dyn Lease>>> {
    // The lock dies with this connection's backend, and a backend notices a vanished
    // client only through TCP keepalives: ask for probes within seconds (PostgreSQL's
    // default leaves it to the OS, about two hours), so a standby takes over soon after
    // the holder's machine or network dies, not just its process.
    let options = store.options.clone().options([
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "2"),
        ("tcp_keepalives_count", "3"),
        ("tcp_user_timeout", "10000"),
    ]);
    let mut conn = options
        .connect()
        .await
        .map_err(|e| StoreError::Backend(format!("connecting for lease {name}: {e}")))?;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LEASE_NAMESPACE)
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if held {
        tracing::info!(lease = name, "lease acquired");
        Ok(Some(Box::new(PgLease { conn: Some(conn), name: name.to_owned() })))
    } else {
        conn.close().await?;
        Ok(None)
    }
}

struct PgLease {
    conn: Option<PgConnection>,
    name: String,
}

#[async_trait]
impl Lease for PgLease {
    async fn lost(&mut self) -> String {
        let Some(conn) = self.conn.as_mut() else { return "lease already lost".to_owned() };
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let check =
                tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&mut *conn)).await;
            let reason = match check {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => format!("lease connection failed: {e}"),
                Err(_) => format!("lease connection did not answer within {CHECK_TIMEOUT:?}"),
            };
            tracing::warn!(lease = %self.name, %reason, "lease lost");
            // Never reuse a connection in an unknown state: the lock may be gone with it.
            self.conn = None;
            return reason;
        }
    }
}
