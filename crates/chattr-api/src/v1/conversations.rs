//! Conversations, membership, messages and read positions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Kind of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    /// Exactly two users; at most one per pair.
    Direct,
    /// A titled group with an owner who manages membership.
    Group,
}

/// `POST /v1/conversations` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateConversation {
    /// `direct` or `group`.
    pub kind: ConversationKind,
    /// Other members (the caller is always added). Exactly one for `direct`.
    pub members: Vec<Uuid>,
    /// Group title (required for `group`, 1–100 characters; ignored for `direct`).
    #[serde(default)]
    pub title: Option<String>,
}

/// `PATCH /v1/conversations/{id}` body (owner only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateConversation {
    /// New group title, 1–100 characters.
    pub title: String,
}

/// `POST /v1/conversations/{id}/members` body (owner only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMember {
    /// The user to add.
    pub user_id: Uuid,
}

/// A conversation as its members see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    /// Conversation id.
    pub id: Uuid,
    /// `direct` or `group`.
    pub kind: ConversationKind,
    /// Group title; `null` for direct conversations.
    pub title: Option<String>,
    /// Group owner; `null` for direct conversations.
    pub owner_id: Option<Uuid>,
    /// Current members.
    pub members: Vec<super::User>,
    /// When the conversation was created.
    pub created_at: DateTime<Utc>,
    /// Seq of the newest message (0 when empty).
    pub last_seq: u64,
    /// Seq up to which the caller has read.
    pub read_seq: u64,
    /// Messages after `read_seq` not sent by the caller.
    pub unread: u64,
    /// Newest message, for previews.
    pub last_message: Option<Message>,
    /// Every member's read position ("read by" marks). Filled by
    /// `GET /v1/conversations/{id}` only; absent in lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_positions: Vec<ReadPosition>,
}

/// How far one member has read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadPosition {
    /// The member.
    pub user_id: Uuid,
    /// Read up to and including this seq.
    pub seq: u64,
}

/// `GET /v1/conversations` response, most recently active first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// The caller's conversations.
    pub conversations: Vec<Conversation>,
}

/// `POST /v1/conversations/{id}/messages` body and the WebSocket `send` payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendMessage {
    /// Client-chosen id (1–64 characters) that makes retries idempotent.
    pub client_msg_id: String,
    /// Message text, 1–4000 characters by default.
    pub body: String,
}

/// `PATCH /v1/conversations/{id}/messages/{message_id}` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EditMessage {
    /// New text.
    pub body: String,
}

/// A message. A deleted message is a tombstone: `deleted` is true and `body` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Message id.
    pub id: Uuid,
    /// The conversation it belongs to.
    pub conversation_id: Uuid,
    /// Position in the conversation: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Author.
    pub sender_id: Uuid,
    /// Text (empty when deleted).
    pub body: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// When the server accepted it.
    pub created_at: DateTime<Utc>,
    /// When it was last edited, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// True once deleted (tombstone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// `GET /v1/conversations/{id}/messages` response, ascending by seq.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    /// The page of messages.
    pub messages: Vec<Message>,
}

/// `POST /v1/conversations/{id}/read` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MarkRead {
    /// Everything up to and including this seq is read. Never moves backwards.
    pub seq: u64,
}

/// Presence of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Presence {
    /// The user.
    pub user_id: Uuid,
    /// True while any of the user's sessions has a live connection.
    pub online: bool,
    /// When the user's last connection closed (absent while online or never seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// `GET /v1/presence?user_ids=a,b` response (only users sharing a conversation with the caller).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceList {
    /// Presence of the requested users the caller may see.
    pub presence: Vec<Presence>,
}
