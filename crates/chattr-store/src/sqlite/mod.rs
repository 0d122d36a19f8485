//! The embedded SQLite [`Store`], Chattr's default backend.
//!
//! This module owns the connection setup (pragmas, pools, migrations) and the mapping of
//! the trait onto SQL; the queries live in the submodules by area. Reads go through a small
//! pool; every write goes through a separate pool of exactly one connection, so write
//! transactions queue inside the process instead of fighting over SQLite's single writer
//! lock (which would surface as `SQLITE_BUSY` under load).

mod checkpoints;
mod conversations;
mod messages;
mod outbox;
mod rows;
mod sends;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chattr_api::v1::{Message, User};
use chattr_core::{ConversationId, MessageId, SessionId, Timestamp, UserId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::{
    ConversationRecord, ConversationSummary, Membership, MessageChange, NewConversation, NewMessage,
    OutboxBacklog, OutboxRow, RotateOutcome, SessionRecord, Store, StoreError, StoreResult, UserRecord,
};

/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages (4 KiB each) at which the writer checkpoints inline and the WAL starts over:
/// 40 MiB, ten times SQLite's default, so the writer's own checkpoints (each with two
/// fsyncs it waits for) come ten times less often.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// Bytes the WAL file is cut back to when it starts over (it keeps its largest size
/// otherwise).
const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;
/// Upper bound on read connections (each SQLite connection has its own worker thread).
const MAX_READERS: usize = 8;

/// A [`Store`] on one SQLite database file (or a private in-memory database).
pub struct SqliteStore {
    /// Pool for plain reads.
    read: SqlitePool,
    /// Single-connection pool that runs every write transaction, one at a time.
    /// For `:memory:` this is the same pool as `read`.
    write: SqlitePool,
    /// Sends wait here to be committed together on `write` ([`sends`]).
    sends: sends::SendQueue,
    /// Copies the WAL into the database ahead of the writer's own checkpoints
    /// ([`checkpoints`]); none for `:memory:`.
    checkpoints: Option<checkpoints::Checkpointer>,
}

/// Every sqlx error is a backend failure; the few constraint violations that mean something
/// to callers (a taken username) are recognised where they can happen.
impl From<sqlx::Error> for StoreError {
    /// Errors of reaching the database are `Unavailable` (retryable); the rest `Backend`.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if missing) the database at `path`,
    /// e.g. `./data/chattr.db`, and migrates it. `:memory:` opens a private in-memory
    /// database that lives as long as the store.
    pub async fn open(path: &str) -> StoreResult<Self> {
        let store =
            if path == ":memory:" { Self::open_memory().await? } else { Self::open_file(path).await? };
        sqlx::migrate!("./migrations")
            .run(&store.write)
            .await
            .map_err(|e| StoreError::Backend(format!("migrating {path}: {e}")))?;
        Ok(store)
    }

    async fn open_file(path: &str) -> StoreResult<Self> {
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", parent.display())))?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // WAL lets readers run concurrently with the writer. With WAL, synchronous=NORMAL
            // fsyncs only at checkpoints: a committed transaction survives a crash of the
            // process (it is in the WAL file, i.e. in the OS page cache), and only an OS
            // crash or power loss can roll back the last few commits, never corrupt the
            // database. That is the right trade for chat at a fraction of FULL's fsyncs.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // The writer checkpoints itself once the WAL holds this many pages; the
            // background checkpointer has copied nearly all of them by then (ADR 0011).
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            // After a burst, the WAL file is cut back to this size when it starts over.
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
        // The writer connection is opened first (and kept open forever) so the WAL switch
        // happens once, before any reader exists.
        // It checkpoints the WAL itself on commit, past WAL_AUTOCHECKPOINT_PAGES, which
        // keeps the WAL bounded; the checkpointer does most of that work
        // beforehand on its own connection, so the writer's checkpoints are short
        // ([`checkpoints`], ADR 0011).
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone())
            .await?;
        let readers = std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(2, MAX_READERS);
        let read = SqlitePoolOptions::new()
            .max_connections(u32::try_from(readers).unwrap_or(4))
            .connect_with(base.clone())
            .await?;
        let checkpoints = Some(checkpoints::Checkpointer::start(&base).await?);
        let kick = checkpoints.as_ref().map(checkpoints::Checkpointer::kick);
        Ok(Self { sends: sends::start(write.clone(), kick)?, read, write, checkpoints })
    }

    async fn open_memory() -> StoreResult<Self> {
        // Every in-memory connection would be its own database, so one connection serves
        // reads and writes, and it must never be closed while the store lives.
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true).busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Self {
            read: pool.clone(),
            sends: sends::start(pool.clone(), None)?,
            write: pool,
            checkpoints: None,
        })
    }

    /// Closes all connections, waiting for them to finish (checkpointing the WAL).
    pub async fn close(&self) {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.stop().await;
        }
        self.read.close().await;
        self.write.close().await;
    }

    /// Starts a write transaction on the writer connection.
    ///
    /// `BEGIN IMMEDIATE` takes SQLite's write lock up front: a deferred transaction that
    /// reads first and then writes can fail with `SQLITE_BUSY` without waiting if another
    /// process wrote in between, while an immediate one simply waits (busy_timeout).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Starts a read transaction, so multi-query reads see one consistent snapshot.
    async fn begin_read(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.read.begin().await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
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
        let mut tx = self.begin_read().await?;
        let record = rows::load_conversation(&mut tx, id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn membership(&self, id: ConversationId, user_id: UserId) -> StoreResult<Option<Membership>> {
        conversations::membership(self, id, user_id).await
    }

    async fn conversations_for_user(&self, user_id: UserId) -> StoreResult<Vec<ConversationSummary>> {
        conversations::conversations_for_user(self, user_id).await
    }

    async fn read_positions(&self, id: ConversationId) -> StoreResult<Vec<(UserId, u64)>> {
        conversations::read_positions(self, id).await
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
        sends::insert_message(&self.sends, new).await
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
        let mut conn = self.read.acquire().await?;
        rows::load_message(&mut conn, id, message_id).await
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

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        outbox::backlog(self).await
    }

    async fn outbox_mark_published(&self, ids: &[i64]) -> StoreResult<()> {
        outbox::mark_published(self, ids).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_errors_are_unavailable_and_others_backend() {
        use super::StoreError;
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(StoreError::from(sqlx::Error::Io(refused)), StoreError::Unavailable(_)));
        assert!(matches!(StoreError::from(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        assert!(matches!(StoreError::from(sqlx::Error::RowNotFound), StoreError::Backend(_)));
    }

    use super::*;

    /// The pragmas every connection of `pool` runs with.
    async fn pragmas(pool: &SqlitePool) -> (String, i64, i64, i64) {
        let mut conn = pool.acquire().await.expect("connection");
        let journal: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await.expect("pragma");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await.expect("pragma");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut *conn).await.expect("pragma");
        let busy: i64 =
            sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *conn).await.expect("pragma");
        (journal, sync, fk, busy)
    }

    #[tokio::test]
    async fn file_store_uses_wal_normal_sync_fk_and_busy_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("chattr.db");
        let store = SqliteStore::open(path.to_str().expect("utf-8")).await.expect("open");
        // synchronous: 1 = NORMAL.
        let expected = ("wal".to_owned(), 1, 1, 5000);
        assert_eq!(pragmas(&store.write).await, expected);
        assert_eq!(pragmas(&store.read).await, expected);
        assert_eq!(store.write.options().get_max_connections(), 1, "one writer");
        let mut writer = store.write.acquire().await.expect("writer");
        let autocheckpoint: i64 =
            sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&mut *writer).await.expect("pragma");
        assert_eq!(autocheckpoint, i64::from(WAL_AUTOCHECKPOINT_PAGES));
        drop(writer);
        store.close().await;
    }

    /// Under sustained writes with readers alongside, the WAL still starts over from its
    /// beginning again and again (its header's checkpoint sequence number moves), so the
    /// file cannot grow without bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_wal_starts_over_under_sustained_writes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chattr.db");
        let store = Arc::new(SqliteStore::open(path.to_str().expect("utf-8")).await.expect("open"));
        let now = chattr_core::now();
        let user = UserRecord {
            id: uuid::Uuid::now_v7(),
            username: "w".into(),
            password_hash: "h".into(),
            created_at: now,
        };
        store.create_user(&user).await.expect("user");
        let new = NewConversation {
            id: uuid::Uuid::now_v7(),
            kind: chattr_api::v1::ConversationKind::Group,
            title: None,
            owner_id: Some(user.id),
            members: vec![user.id],
            created_at: now,
        };
        store.create_conversation(&new).await.expect("conversation");
        // The WAL header's checkpoint sequence number (bytes 12..16), bumped at each restart.
        let wal = dir.path().join("chattr.db-wal");
        let restarts = move || {
            let bytes = std::fs::read(&wal).unwrap_or_default();
            bytes.get(12..16).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for w in 0..4 {
            let (store, stop) = (store.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let message = NewMessage {
                        id: uuid::Uuid::now_v7(),
                        conversation_id: new.id,
                        sender_id: user.id,
                        client_msg_id: format!("{w}-{n}"),
                        body: "x".repeat(1000),
                        created_at: now,
                    };
                    store.insert_message(&message).await.expect("send");
                    n += 1;
                }
            }));
        }
        for _ in 0..2 {
            let (store, stop) = (store.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    store.messages(new.id, None, None, 50).await.expect("read");
                }
            }));
        }
        let first = restarts();
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        let last = restarts();
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.expect("task");
        }
        assert!(last >= first + 2, "the WAL started over {} times in 4 s of writes", last - first);
        store.close().await;
    }

    /// Frames the writer leaves in the WAL are copied into the database by the background
    /// checkpointer, long before the writer checkpoints itself (at `WAL_AUTOCHECKPOINT_PAGES`).
    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chattr.db");
        let store = SqliteStore::open(path.to_str().expect("utf-8")).await.expect("open");
        for n in 0..20 {
            let user = UserRecord {
                id: uuid::Uuid::now_v7(),
                username: format!("u{n}"),
                password_hash: "h".into(),
                created_at: chattr_core::now(),
            };
            store.create_user(&user).await.expect("user");
        }
        // The wal-index (-shm) holds the WAL's frame count at bytes 16..20 of its header and
        // the frames copied so far (nBackfill) at 96..100, in native byte order.
        let shm = dir.path().join("chattr.db-shm");
        let frames = |at: usize| {
            let bytes = std::fs::read(&shm).expect("shm");
            u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
        };
        let written = frames(16);
        assert!(
            written > 0 && written < WAL_AUTOCHECKPOINT_PAGES,
            "{written} frames: in the WAL, short of the writer's own checkpoint"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while frames(96) < written && std::time::Instant::now() < deadline {
            tokio::time::sleep(checkpoints::INTERVAL).await;
        }
        assert_eq!(frames(96), written, "every frame copied into the database");
        store.close().await;
    }

    #[tokio::test]
    async fn memory_store_shares_one_connection() {
        let store = SqliteStore::open(":memory:").await.expect("open");
        assert_eq!(store.read.options().get_max_connections(), 1);
        let (_, _, fk, busy) = pragmas(&store.read).await;
        assert_eq!((fk, busy), (1, 5000));
    }
}
