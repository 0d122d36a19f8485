//! The PostgreSQL [`Store`], for deployments that outgrow one SQLite file or run several
//! server processes on one database.
//!
//! This module owns the pool, the migrations (`migrations-postgres/`, separate from the
//! SQLite ones) and the mapping of the trait onto SQL; the queries live in the submodules
//! by area, mirroring [`crate::sqlite`]. Transactions run at PostgreSQL's default READ
//! COMMITTED level; where a check and a write must not be interleaved with another writer
//! they take row locks (`FOR UPDATE`) or lean on unique constraints (`ON CONFLICT`), as
//! each function explains. Multi-part reads are single statements, so they see one
//! snapshot.
//!
//! Outbox order: ids come from a sequence, so concurrent transactions can commit them out of
//! order. Writers of events with the same partition key (a conversation, or a user) are
//! serialised from their outbox insert to their commit, so *within one key* id order is
//! commit order, and a reader never sees a key's row before an earlier row of that key
//! (the `outbox` submodule has the details); across keys, order is approximate.

mod conversations;
mod lease;
mod messages;
mod outbox;
mod rows;
mod users;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chattr_api::v1::{Message, User};
use chattr_core::{ConversationId, MessageId, SessionId, Timestamp, UserId};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::{
    ConversationRecord, ConversationSummary, Membership, MessageChange, NewConversation, NewMessage,
    OutboxBacklog, OutboxRow, RotateOutcome, SessionRecord, Store, StoreError, StoreResult, UserRecord,
};

/// Connections per process. Each is a server process on the database side, and with
/// message inserts serialised per conversation more connections mostly add waiting, so
/// this stays well below PostgreSQL's default `max_connections` (100) even with a few
/// server processes.
pub const POOL_SIZE: u32 = 16;
/// How long a call waits for a free connection (or a new one) before failing, so an
/// overloaded or unreachable database turns into errors instead of a hung server.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations-postgres");

/// A [`Store`] on a PostgreSQL database.
pub struct PostgresStore {
    pool: PgPool,
    /// For connections outside the pool (leases hold one for their lifetime).
    options: PgConnectOptions,
}

/// Parses a `postgres://` / `postgresql://` URL (any libpq-style parameters sqlx knows).
fn options(url: &str) -> StoreResult<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Backend(format!("invalid postgres url: {e}")))?
        // Shows up in pg_stat_activity, so operators can tell Chattr's connections apart.
        .application_name("chattr");
    Ok(options)
}

/// Connects to the database at `url` (e.g. `postgres://user:pass@host/chattr`), runs
/// pending migrations, and returns the store.
pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
    let options = options(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Connections idle for long are closed so an idle server holds few.
        .idle_timeout(Some(Duration::from_secs(600)))
        // connect_with opens one connection up front: a wrong URL fails here, not later.
        .connect_with(options.clone())
        .await
        .map_err(|e| StoreError::Backend(format!("connecting to postgres: {e}")))?;
    run_migrations(&pool).await?;
    Ok(PostgresStore { pool, options })
}

/// Runs pending migrations on the database at `url` and disconnects (for `chattr
/// migrate`). Safe to run while servers are up: sqlx's migrator holds an advisory lock, so
/// concurrent runs (another process connecting) apply each migration once.
pub async fn migrate(url: &str) -> StoreResult<()> {
    let mut conn = options(url)?
        .connect()
        .await
        .map_err(|e| StoreError::Backend(format!("connecting to postgres: {e}")))?;
    MIGRATOR.run(&mut conn).await.map_err(|e| StoreError::Backend(format!("migrating postgres: {e}")))?;
    conn.close().await?;
    Ok(())
}

async fn run_migrations(pool: &PgPool) -> StoreResult<()> {
    MIGRATOR.run(pool).await.map_err(|e| StoreError::Backend(format!("migrating postgres: {e}")))
}

impl PostgresStore {
    /// Closes all connections, waiting for calls in progress to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        users::create_user(self, user).await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        users::user_by_username(self, username).await
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        users::users_by_ids(self, ids).await
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<User>> {
        users::search_users(self, prefix, limit).await
    }

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        users::create_session(self, session).await
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        users::session(self, id).await
    }

    async fn sessions_by_ids(&self, ids: &[SessionId]) -> StoreResult<Vec<SessionRecord>> {
        users::sessions_by_ids(self, ids).await
    }

    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RotateOutcome> {
        users::rotate_refresh(self, id, presented_hash, new_hash, new_expires_at, now).await
    }

    async fn touch_sessions(&self, ids: &[SessionId], now: Timestamp) -> StoreResult<()> {
        users::touch_sessions(self, ids, now).await
    }

    async fn list_sessions(&self, user_id: UserId) -> StoreResult<Vec<SessionRecord>> {
        users::list_sessions(self, user_id).await
    }

    async fn revoke_session(&self, user_id: UserId, id: SessionId) -> StoreResult<bool> {
        users::revoke_session(self, user_id, id).await
    }

    async fn revoke_other_sessions(&self, user_id: UserId, keep: SessionId) -> StoreResult<Vec<SessionId>> {
        users::revoke_other_sessions(self, user_id, keep).await
    }

    async fn create_conversation(&self, new: &NewConversation) -> StoreResult<(ConversationRecord, bool)> {
        conversations::create_conversation(self, new).await
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>> {
        let mut conn = self.pool.acquire().await?;
        rows::load_conversation(&mut conn, id).await
    }

    async fn membership(&self, id: ConversationId, user_id: UserId) -> StoreResult<Option<Membership>> {
        conversations::membership(self, id, user_id).await
    }

    async fn read_positions(&self, id: ConversationId) -> StoreResult<Vec<(UserId, u64)>> {
        conversations::read_positions(self, id).await
    }

    async fn conversations_for_user(&self, user_id: UserId) -> StoreResult<Vec<ConversationSummary>> {
        conversations::conversations_for_user(self, user_id).await
    }

    async fn conversation_summary(
        &self,
        id: ConversationId,
        user_id: UserId,
    ) -> StoreResult<Option<ConversationSummary>> {
        conversations::conversation_summary(self, id, user_id).await
    }

    async fn add_member(&self, id: ConversationId, user_id: UserId, now: Timestamp) -> StoreResult<bool> {
        conversations::add_member(self, id, user_id, now).await
    }

    async fn remove_member(&self, id: ConversationId, user_id: UserId) -> StoreResult<bool> {
        conversations::remove_member(self, id, user_id).await
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        conversations::set_title(self, id, title).await
    }

    async fn contacts(&self, user_id: UserId) -> StoreResult<Vec<UserId>> {
        conversations::contacts(self, user_id).await
    }

    async fn contacts_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>> {
        conversations::contacts_of(self, users).await
    }

    async fn latest_seqs(&self, user_id: UserId) -> StoreResult<Vec<(ConversationId, u64)>> {
        conversations::latest_seqs(self, user_id).await
    }

    async fn latest_seqs_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, ConversationId, u64)>> {
        conversations::latest_seqs_of(self, users).await
    }

    async fn insert_message(&self, new: &NewMessage) -> StoreResult<(Message, bool)> {
        messages::insert_message(self, new).await
    }

    async fn messages(
        &self,
        id: ConversationId,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        messages::messages(self, id, after, before, limit).await
    }

    async fn message(&self, id: ConversationId, message_id: MessageId) -> StoreResult<Option<Message>> {
        let mut conn = self.pool.acquire().await?;
        rows::load_message(&mut conn, id, message_id, false).await
    }

    async fn change_message(
        &self,
        id: ConversationId,
        message_id: MessageId,
        change: &MessageChange,
    ) -> StoreResult<Option<Message>> {
        messages::change_message(self, id, message_id, change).await
    }

    async fn mark_read(&self, id: ConversationId, user_id: UserId, seq: u64) -> StoreResult<u64> {
        messages::mark_read(self, id, user_id, seq).await
    }

    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        outbox::pending(self, limit).await
    }

    async fn outbox_mark_published(&self, ids: &[i64]) -> StoreResult<()> {
        outbox::mark_published(self, ids).await
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        outbox::backlog(self).await
    }

    async fn acquire_lease(&self, name: &str) -> StoreResult<Box<dyn crate::Lease>> {
        lease::acquire(self, name).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
