//! Domain events: written to the outbox in the same transaction as the change, published
//! on the bus by the relay, consumed by fan-out and other services. Versioned by `v`.

use serde::{Deserialize, Serialize};

use chattr_api::v1::{CallOutcome, Message};

use crate::{ConversationId, SessionId, UserId};

/// Schema version of [`Event`] payloads.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Bus topic for conversation-scoped events, keyed by conversation id (order per conversation).
pub const TOPIC_CONVERSATIONS: &str = "chattr.conversations";
/// Bus topic for user- and session-scoped events, keyed by user id.
pub const TOPIC_USERS: &str = "chattr.users";
/// Bus topic for call events, keyed by conversation id.
pub const TOPIC_CALLS: &str = "chattr.calls";

/// Identifier of a call.
pub type CallId = uuid::Uuid;

/// One domain event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A message was accepted (committed with its seq).
    #[serde(rename = "message.created")]
    MessageCreated {
        /// The message.
        message: Message,
    },
    /// A message was edited.
    #[serde(rename = "message.edited")]
    MessageEdited {
        /// The message after the edit.
        message: Message,
    },
    /// A message was deleted (tombstone).
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        /// The tombstone.
        message: Message,
    },
    /// A member's read position moved forward.
    #[serde(rename = "message.read")]
    MessageRead {
        /// Conversation.
        conversation_id: ConversationId,
        /// Reader.
        user_id: UserId,
        /// New read position.
        seq: u64,
    },
    /// A conversation was created.
    #[serde(rename = "conversation.created")]
    ConversationCreated {
        /// Conversation.
        conversation_id: ConversationId,
    },
    /// A conversation's title changed.
    #[serde(rename = "conversation.updated")]
    ConversationUpdated {
        /// Conversation.
        conversation_id: ConversationId,
    },
    /// A member joined a conversation.
    #[serde(rename = "conversation.member_added")]
    MemberAdded {
        /// Conversation.
        conversation_id: ConversationId,
        /// The new member.
        user_id: UserId,
    },
    /// A member left or was removed.
    #[serde(rename = "conversation.member_removed")]
    MemberRemoved {
        /// Conversation.
        conversation_id: ConversationId,
        /// The former member.
        user_id: UserId,
    },
    /// A user signed up.
    #[serde(rename = "user.registered")]
    UserRegistered {
        /// The user.
        user_id: UserId,
        /// Their username.
        username: String,
    },
    /// A session was revoked (logout, revoke, or refresh-token reuse).
    #[serde(rename = "session.revoked")]
    SessionRevoked {
        /// Owner of the session.
        user_id: UserId,
        /// The session.
        session_id: SessionId,
    },
    /// A call started ringing.
    #[serde(rename = "call.started")]
    CallStarted {
        /// The call.
        call_id: CallId,
        /// Its conversation.
        conversation_id: ConversationId,
        /// Who called.
        caller_id: UserId,
    },
    /// Someone joined a call (the caller too, when it starts).
    #[serde(rename = "call.participant_joined")]
    CallParticipantJoined {
        /// The call.
        call_id: CallId,
        /// Its conversation.
        conversation_id: ConversationId,
        /// Who.
        user_id: UserId,
    },
    /// Someone left a call.
    #[serde(rename = "call.participant_left")]
    CallParticipantLeft {
        /// The call.
        call_id: CallId,
        /// Its conversation.
        conversation_id: ConversationId,
        /// Who.
        user_id: UserId,
    },
    /// A call ended.
    #[serde(rename = "call.ended")]
    CallEnded {
        /// The call.
        call_id: CallId,
        /// Its conversation.
        conversation_id: ConversationId,
        /// Who called.
        caller_id: UserId,
        /// How it ended.
        outcome: CallOutcome,
        /// From the first answer to the end (0 if nobody answered).
        duration_ms: u64,
        /// Everyone who was in the call at some point, the caller included.
        participants: Vec<UserId>,
    },
}

impl Event {
    /// The event type string (`message.created`, …), also sent as a bus header.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MessageCreated { .. } => "message.created",
            Event::MessageEdited { .. } => "message.edited",
            Event::MessageDeleted { .. } => "message.deleted",
            Event::MessageRead { .. } => "message.read",
            Event::ConversationCreated { .. } => "conversation.created",
            Event::ConversationUpdated { .. } => "conversation.updated",
            Event::MemberAdded { .. } => "conversation.member_added",
            Event::MemberRemoved { .. } => "conversation.member_removed",
            Event::UserRegistered { .. } => "user.registered",
            Event::SessionRevoked { .. } => "session.revoked",
            Event::CallStarted { .. } => "call.started",
            Event::CallParticipantJoined { .. } => "call.participant_joined",
            Event::CallParticipantLeft { .. } => "call.participant_left",
            Event::CallEnded { .. } => "call.ended",
        }
    }

    /// Topic and partition key: conversation events by conversation, the rest by user.
    pub fn route(&self) -> (&'static str, String) {
        match self {
            Event::MessageCreated { message }
            | Event::MessageEdited { message }
            | Event::MessageDeleted { message } => (TOPIC_CONVERSATIONS, message.conversation_id.to_string()),
            Event::MessageRead { conversation_id, .. }
            | Event::ConversationCreated { conversation_id }
            | Event::ConversationUpdated { conversation_id }
            | Event::MemberAdded { conversation_id, .. }
            | Event::MemberRemoved { conversation_id, .. } => {
                (TOPIC_CONVERSATIONS, conversation_id.to_string())
            }
            Event::UserRegistered { user_id, .. } | Event::SessionRevoked { user_id, .. } => {
                (TOPIC_USERS, user_id.to_string())
            }
            Event::CallStarted { conversation_id, .. }
            | Event::CallParticipantJoined { conversation_id, .. }
            | Event::CallParticipantLeft { conversation_id, .. }
            | Event::CallEnded { conversation_id, .. } => (TOPIC_CALLS, conversation_id.to_string()),
        }
    }

    /// Serialises the event as its JSON payload.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
