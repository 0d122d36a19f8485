//! Records the store reads and writes.

use chattr_api::v1::{ConversationKind, Message};
use chattr_core::events::Event;
use chattr_core::{ConversationId, MessageId, SessionId, Timestamp, UserId};

/// A user as stored, with the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Id.
    pub id: UserId,
    /// Unique username.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A login session (one per device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Id.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// SHA-256 (hex) of the current refresh token secret.
    pub refresh_hash: String,
    /// When the current refresh token expires.
    pub refresh_expires_at: Timestamp,
    /// Device description.
    pub user_agent: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last refresh or connection.
    pub last_seen_at: Timestamp,
    /// True once revoked.
    pub revoked: bool,
}

/// Outcome of [`crate::Store::rotate_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// Rotated; the session after the change.
    Rotated(SessionRecord),
    /// A stale token was replayed: the session is now revoked.
    Reused,
    /// Unknown, revoked or expired.
    Invalid,
}

/// A conversation to create.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Id to use.
    pub id: ConversationId,
    /// Kind.
    pub kind: ConversationKind,
    /// Title for groups.
    pub title: Option<String>,
    /// Owner for groups.
    pub owner_id: Option<UserId>,
    /// All members, creator included, without duplicates.
    pub members: Vec<UserId>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    /// Id.
    pub id: ConversationId,
    /// Kind.
    pub kind: ConversationKind,
    /// Group title.
    pub title: Option<String>,
    /// Group owner.
    pub owner_id: Option<UserId>,
    /// Current members, in the order they joined.
    pub members: Vec<UserId>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Seq of the newest message (0 if none).
    pub last_seq: u64,
}

/// A member's state in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Read up to this seq.
    pub read_seq: u64,
}

/// One row of a user's conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation: ConversationRecord,
    /// The user's read position.
    pub read_seq: u64,
    /// Messages after `read_seq` sent by others and not deleted.
    pub unread: u64,
    /// Newest message.
    pub last_message: Option<Message>,
}

/// A message to insert.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Id to use if it is new.
    pub id: MessageId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Sender.
    pub sender_id: UserId,
    /// Idempotency key.
    pub client_msg_id: String,
    /// Validated text.
    pub body: String,
    /// Acceptance time.
    pub created_at: Timestamp,
}

impl NewMessage {
    /// The message this send becomes when stored with `seq` (every backend builds it so).
    pub fn stored_as(&self, seq: u64) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            seq,
            sender_id: self.sender_id,
            body: self.body.clone(),
            client_msg_id: self.client_msg_id.clone(),
            created_at: self.created_at,
            edited_at: None,
            deleted: false,
        }
    }
}

/// A change to an existing message.
#[derive(Debug, Clone)]
pub enum MessageChange {
    /// Replace the body.
    Edit {
        /// New text.
        body: String,
        /// When.
        at: Timestamp,
    },
    /// Turn it into a tombstone.
    Delete {
        /// When.
        at: Timestamp,
    },
}

/// The unpublished part of the outbox (for metrics and alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    /// Rows waiting to be published.
    pub rows: u64,
    /// When the oldest of them was written (Unix milliseconds); `None` when there are none.
    pub oldest_ms: Option<i64>,
}

/// An outbox row waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Monotonic row id (publish order).
    pub id: i64,
    /// The event.
    pub event: Event,
    /// The W3C `traceparent` of the request that wrote the row, if it ran in one.
    pub traceparent: Option<String>,
}
