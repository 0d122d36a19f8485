//! The durable store of Chattr: users, sessions, conversations, messages and the outbox.
//!
//! [`Store`] is the one seam every backend implements; [`memory::MemoryStore`] is the
//! reference, [`sqlite::SqliteStore`] the embedded default, [`postgres::PostgresStore`] the
//! server-database backend. Every impl must pass the single conformance suite in
//! [`conformance`]. Mutations that other services must hear about write their [`Event`] to
//! the outbox in the same transaction as the change.

mod codec;
pub mod conformance;
mod instrumented;
pub mod memory;
pub mod metrics;
pub mod postgres;
pub mod sqlite;
mod types;

use std::sync::Arc;

use async_trait::async_trait;
use chattr_api::v1::{Message, User};
use chattr_core::events::Event;
use chattr_core::{ConversationId, MessageId, SessionId, Timestamp, UserId};

pub use types::*;

/// Errors of a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. username taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The caller is not a member of the conversation (or it does not exist).
    #[error("not a member")]
    NotMember,
    /// The backend failed (bad data, a failed statement).
    #[error("store backend: {0}")]
    Backend(String),
    /// The backend cannot be reached right now (connection refused or lost, pool
    /// exhausted); the call may succeed if retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// How many rotated-away refresh hashes a session remembers for reuse detection.
pub const ROTATED_KEEP: usize = 8;

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A shared, dynamically chosen store.
pub type DynStore = Arc<dyn Store>;

/// Everything Chattr persists. Implementations must be safe for concurrent use.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- users ----

    /// Creates a user and writes `user.registered` to the outbox.
    /// Fails with `Conflict("username")` when the username is taken.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    /// Looks a user up by exact username.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Public views of the given users that exist, in no particular order.
    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>>;
    /// Users whose username starts with `prefix`, ordered by username, at most `limit`.
    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<User>>;

    // ---- sessions ----

    /// Stores a new session.
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// A session by id, revoked or not.
    async fn session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>>;
    /// The sessions among `ids` that exist, revoked or not, in no particular order (what a
    /// gateway checks for all its sockets at once). The default asks one at a time.
    async fn sessions_by_ids(&self, ids: &[SessionId]) -> StoreResult<Vec<SessionRecord>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.session(*id).await?);
        }
        Ok(found)
    }
    /// Rotates the refresh token of a session.
    ///
    /// If the session is live, `presented_hash` is its current hash and it has not expired,
    /// the hash becomes `new_hash`, the expiry `new_expires_at`, last seen `now`: `Rotated`.
    /// If the session is live and `presented_hash` is one of the last [`ROTATED_KEEP`]
    /// hashes it rotated away (a stolen token replayed), the session is revoked (with
    /// `session.revoked` in the outbox): `Reused`. Otherwise (unknown, revoked, expired,
    /// or a hash the session never had): `Invalid`, and nothing changes.
    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RotateOutcome>;
    /// Updates last seen of those of the sessions that are live (unknown ids are ignored).
    async fn touch_sessions(&self, ids: &[SessionId], now: Timestamp) -> StoreResult<()>;
    /// The user's live (not revoked) sessions, newest first.
    async fn list_sessions(&self, user_id: UserId) -> StoreResult<Vec<SessionRecord>>;
    /// Revokes one live session of `user_id` (writes `session.revoked`). False if there was
    /// no such live session of that user.
    async fn revoke_session(&self, user_id: UserId, id: SessionId) -> StoreResult<bool>;
    /// Revokes every live session of `user_id` except `keep`; returns the revoked ids.
    async fn revoke_other_sessions(&self, user_id: UserId, keep: SessionId) -> StoreResult<Vec<SessionId>>;

    // ---- conversations ----

    /// Creates a conversation with its members (writes `conversation.created`).
    /// For `Direct`, if one between the same two users exists, returns it with `false`.
    async fn create_conversation(&self, new: &NewConversation) -> StoreResult<(ConversationRecord, bool)>;
    /// A conversation with its members.
    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>>;
    /// The member's read position, or `None` when `user_id` is not a member.
    async fn membership(&self, id: ConversationId, user_id: UserId) -> StoreResult<Option<Membership>>;
    /// Every member's read position in a conversation (empty if it does not exist), in the
    /// order members joined.
    async fn read_positions(&self, id: ConversationId) -> StoreResult<Vec<(UserId, u64)>>;
    /// All conversations of a user with read state and last message, most recent activity first.
    async fn conversations_for_user(&self, user_id: UserId) -> StoreResult<Vec<ConversationSummary>>;
    /// One conversation of a user with read state, or `None` if not a member. The default
    /// scans the user's list; backends may answer it directly.
    async fn conversation_summary(
        &self,
        id: ConversationId,
        user_id: UserId,
    ) -> StoreResult<Option<ConversationSummary>> {
        let all = self.conversations_for_user(user_id).await?;
        Ok(all.into_iter().find(|s| s.conversation.id == id))
    }
    /// Adds a member (writes `conversation.member_added`); false if already a member.
    async fn add_member(&self, id: ConversationId, user_id: UserId, now: Timestamp) -> StoreResult<bool>;
    /// Removes a member (writes `conversation.member_removed`); false if not a member.
    async fn remove_member(&self, id: ConversationId, user_id: UserId) -> StoreResult<bool>;
    /// Sets a group's title (writes `conversation.updated`).
    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()>;
    /// Users who share at least one conversation with `user_id` (excluding them).
    async fn contacts(&self, user_id: UserId) -> StoreResult<Vec<UserId>>;
    /// [`Store::contacts`] of many users at once, as `(user, contact)` in no particular
    /// order. The default asks one user at a time.
    async fn contacts_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>> {
        let mut all = Vec::new();
        for user in users {
            all.extend(self.contacts(*user).await?.into_iter().map(|c| (*user, c)));
        }
        Ok(all)
    }
    /// Latest seq of each conversation of the user.
    async fn latest_seqs(&self, user_id: UserId) -> StoreResult<Vec<(ConversationId, u64)>>;
    /// [`Store::latest_seqs`] of many users at once, as `(user, conversation, seq)` in no
    /// particular order. The default asks one user at a time.
    async fn latest_seqs_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, ConversationId, u64)>> {
        let mut all = Vec::new();
        for user in users {
            all.extend(self.latest_seqs(*user).await?.into_iter().map(|(c, seq)| (*user, c, seq)));
        }
        Ok(all)
    }

    // ---- messages ----

    /// In one transaction: checks the sender is a member (`NotMember` otherwise), returns
    /// the existing message if `(sender, client_msg_id)` was seen in this conversation
    /// (`false`), else assigns the next seq, inserts the message, moves the sender's read
    /// position to it and writes `message.created` to the outbox (`true`).
    async fn insert_message(&self, new: &NewMessage) -> StoreResult<(Message, bool)>;
    /// A page of messages in ascending seq order: with `after`, the first `limit` after it;
    /// else with `before`, the last `limit` before it; else the newest `limit`.
    async fn messages(
        &self,
        id: ConversationId,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// One message of a conversation.
    async fn message(&self, id: ConversationId, message_id: MessageId) -> StoreResult<Option<Message>>;
    /// Edits or deletes a message, writing `message.edited` / `message.deleted`.
    /// Returns the message after the change, or `None` if it does not exist. Editing or
    /// deleting a tombstone is a no-op that returns the tombstone.
    async fn change_message(
        &self,
        id: ConversationId,
        message_id: MessageId,
        change: &MessageChange,
    ) -> StoreResult<Option<Message>>;
    /// Moves the member's read position forward to `min(seq, last_seq)` (writes
    /// `message.read` when it moved). Returns the read position after the call, or
    /// `NotMember`.
    async fn mark_read(&self, id: ConversationId, user_id: UserId, seq: u64) -> StoreResult<u64>;

    // ---- outbox ----

    /// Unpublished outbox rows, oldest first, at most `limit`.
    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<OutboxRow>>;
    /// Marks outbox rows as published.
    async fn outbox_mark_published(&self, ids: &[i64]) -> StoreResult<()>;
    /// How far publishing is behind: the unpublished rows and when the oldest was written.
    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog>;

    /// Checks the backend answers (for `/ready`).
    async fn ping(&self) -> StoreResult<()>;

    // ---- singleton roles ----

    /// Waits until this caller holds the lease `name`, which at most one holder has at a
    /// time across every process using this store: the outbox relay runs only while it
    /// holds `"outbox-relay"`, so a second relay is a hot standby, never a competitor.
    /// The lease ends when the returned guard is dropped, or on its own when the holder's
    /// link to the store breaks ([`Lease::lost`] then resolves; stop working at once).
    ///
    /// The embedded stores serve one process, whose roles start one relay, so their
    /// lease is granted at once and never lost.
    async fn acquire_lease(&self, name: &str) -> StoreResult<Box<dyn Lease>> {
        let _ = name;
        Ok(Box::new(ProcessLease))
    }
}

/// A held lease (see [`Store::acquire_lease`]); dropping it releases it.
#[async_trait]
pub trait Lease: Send {
    /// Resolves (with the reason) once the lease may have passed to someone else.
    async fn lost(&mut self) -> String;
}

/// The lease of a store that only one process uses: never lost.
struct ProcessLease;

#[async_trait]
impl Lease for ProcessLease {
    async fn lost(&mut self) -> String {
        std::future::pending().await
    }
}

/// Opens the store named by a URL: `memory://`, `sqlite://PATH` (created if missing), or
/// `postgres://…` / `postgresql://…` (the database must exist). Durable stores are migrated.
/// Every store it opens is measured ([`metrics`]).
pub async fn open(url: &str) -> StoreResult<DynStore> {
    let store: DynStore = if url.starts_with("memory://") {
        Arc::new(memory::MemoryStore::default())
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Arc::new(sqlite::SqliteStore::open(path).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(postgres::connect(url).await?)
    } else {
        return Err(StoreError::Backend(format!("unsupported store url: {url}")));
    };
    Ok(Arc::new(instrumented::Instrumented(store)))
}

/// Builds the outbox event for a stored message change (shared by impls).
pub fn change_event(message: &Message) -> Event {
    if message.deleted {
        Event::MessageDeleted { message: message.clone() }
    } else {
        Event::MessageEdited { message: message.clone() }
    }
}
