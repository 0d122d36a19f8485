//! WebSocket frames on `GET /v1/ws`: JSON text frames, each tagged by `type`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Conversation, Message, User};

/// WebSocket close codes the server uses. Codes marked resumable mean: reconnect with your
/// cursors and you lose nothing.
pub mod close_codes {
    /// Server shutting down or restarting (resumable).
    pub const GOING_AWAY: u16 = 1001;
    /// The frame was larger than the limit.
    pub const TOO_LARGE: u16 = 1009;
    /// A backend failed while serving the socket (resumable: reconnect with cursors).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Authentication failed, timed out, or the token expired: log in or refresh first.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Nothing was heard from the client for three heartbeat intervals (resumable).
    pub const IDLE: u16 = 4002;
    /// The session was revoked (logout or revoke from another device): do not reconnect.
    pub const SESSION_REVOKED: u16 = 4003;
    /// The client read too slowly and its bounded queue overflowed (resumable).
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The client sent frames faster than allowed for too long.
    pub const FLOOD: u16 = 4029;
}

/// A frame sent by the client.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame. `cursors` maps conversation ids to the last seq the client has.
    Auth {
        /// Access token from signup/login/refresh.
        token: String,
        /// Last seq seen per conversation; missed messages are replayed after `ready`.
        #[serde(default)]
        cursors: BTreeMap<Uuid, u64>,
    },
    /// Send a message; answered by `ack` or `error` with the same `req_id`.
    Send {
        /// Client-chosen request id echoed in the answer.
        req_id: String,
        /// Target conversation.
        conversation_id: Uuid,
        /// Idempotency key: a retry with the same key returns the first message.
        client_msg_id: String,
        /// Message text.
        body: String,
    },
    /// Edit one of the caller's messages; answered by `ack` or `error`.
    Edit {
        /// Request id echoed in the answer.
        req_id: String,
        /// Conversation of the message.
        conversation_id: Uuid,
        /// Message to edit.
        message_id: Uuid,
        /// New text.
        body: String,
    },
    /// Delete a message (own, or any as group owner); answered by `ack` or `error`.
    Delete {
        /// Request id echoed in the answer.
        req_id: String,
        /// Conversation of the message.
        conversation_id: Uuid,
        /// Message to delete.
        message_id: Uuid,
    },
    /// Mark everything up to `seq` read; answered by `ok` or `error`.
    Read {
        /// Request id echoed in the answer.
        #[serde(default)]
        req_id: Option<String>,
        /// Conversation.
        conversation_id: Uuid,
        /// Read up to and including this seq.
        seq: u64,
    },
    /// The caller is typing (send every few seconds while typing). Not answered.
    Typing {
        /// Conversation.
        conversation_id: Uuid,
    },
    /// Starts a call in a conversation (its other members ring), or joins the live call
    /// the conversation already has. Answered by `call` (with `req_id`) or `error`
    /// (`busy` when the caller is in another call).
    CallStart {
        /// Request id echoed in the answer.
        req_id: String,
        /// Conversation to call.
        conversation_id: Uuid,
    },
    /// Answers (or joins, or after a reconnect rejoins) a call on this device. Answered by
    /// `call` or `error` (`call_full`, `busy`, `not_found`).
    CallAnswer {
        /// Request id echoed in the answer.
        req_id: String,
        /// The call.
        call_id: Uuid,
    },
    /// Declines a ringing call on all of the user's devices. Answered by `ok` or `error`.
    CallDecline {
        /// Request id echoed in the answer.
        req_id: String,
        /// The call.
        call_id: Uuid,
    },
    /// Hangs up (the caller, before an answer: cancels). Answered by `ok` or `error`.
    CallLeave {
        /// Request id echoed in the answer.
        req_id: String,
        /// The call.
        call_id: Uuid,
    },
    /// Tells the other participants whether this device's microphone and camera are on.
    /// Answered by `ok` (with a `req_id`) or `error`.
    CallMedia {
        /// Request id echoed in the answer.
        #[serde(default)]
        req_id: Option<String>,
        /// The call.
        call_id: Uuid,
        /// Microphone on.
        audio: bool,
        /// Camera on.
        video: bool,
    },
    /// Relays a WebRTC signal to one other participant's device. Only participants of the
    /// call may send or receive signals. Answered by `ok` when `req_id` is set, by `error`
    /// on failure.
    CallSignal {
        /// Request id echoed in the answer.
        #[serde(default)]
        req_id: Option<String>,
        /// The call.
        call_id: Uuid,
        /// The participant device (session) to deliver to.
        to_session_id: Uuid,
        /// The payload.
        signal: super::Signal,
    },
    /// Keep-alive; answered by `pong` carrying the latest seqs.
    Ping {
        /// Request id echoed in the answer.
        #[serde(default)]
        req_id: Option<String>,
    },
}

impl ClientFrame {
    /// Every `type` value, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        "auth",
        "send",
        "edit",
        "delete",
        "read",
        "typing",
        "call_start",
        "call_answer",
        "call_decline",
        "call_leave",
        "call_media",
        "call_signal",
        "ping",
    ];

    /// The frame's `type` (for logs and metrics).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::Send { .. } => "send",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::Read { .. } => "read",
            Self::Typing { .. } => "typing",
            Self::CallStart { .. } => "call_start",
            Self::CallAnswer { .. } => "call_answer",
            Self::CallDecline { .. } => "call_decline",
            Self::CallLeave { .. } => "call_leave",
            Self::CallMedia { .. } => "call_media",
            Self::CallSignal { .. } => "call_signal",
            Self::Ping { .. } => "ping",
        }
    }
}

/// Latest seq of one conversation, in `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationCursor {
    /// Conversation id.
    pub id: Uuid,
    /// Seq of its newest message.
    pub last_seq: u64,
}

/// A frame sent by the server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Authentication succeeded. Replayed `message`s (or `resync`s) follow, then `synced`.
    Ready {
        /// The authenticated user.
        user: User,
        /// The session of the token.
        session_id: Uuid,
        /// Every conversation of the user with its latest seq.
        conversations: Vec<ConversationCursor>,
        /// Seconds between server heartbeats.
        heartbeat_interval_secs: u64,
    },
    /// Replay after `ready` is complete; live events follow.
    Synced,
    /// Answer to `send`, `edit` or `delete`: the message as stored.
    Ack {
        /// Request id of the answered frame.
        req_id: String,
        /// The durable message.
        message: Message,
    },
    /// Answer to `read` (and other frames without a payload to return).
    Ok {
        /// Request id of the answered frame.
        req_id: String,
    },
    /// A request failed, or a frame was invalid. `req_id` is set when the frame had one.
    Error {
        /// Request id of the failed frame, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<String>,
        /// Stable error code.
        code: String,
        /// Human-readable text.
        message: String,
    },
    /// A new message (live, or replayed after `ready`). Delivered in seq order, once.
    Message {
        /// The message.
        message: Message,
    },
    /// A message was edited.
    MessageEdited {
        /// The message after the edit.
        message: Message,
    },
    /// A message was deleted; `message` is its tombstone.
    MessageDeleted {
        /// The tombstone.
        message: Message,
    },
    /// A member's read position moved.
    Read {
        /// Conversation.
        conversation_id: Uuid,
        /// Reader.
        user_id: Uuid,
        /// New read position.
        seq: u64,
    },
    /// A member is typing (ephemeral; may be dropped under load).
    Typing {
        /// Conversation.
        conversation_id: Uuid,
        /// Who types.
        user_id: Uuid,
    },
    /// A contact's presence changed (ephemeral).
    Presence {
        /// The user.
        user_id: Uuid,
        /// Online now?
        online: bool,
        /// When they went offline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen_at: Option<DateTime<Utc>>,
    },
    /// A conversation the caller belongs to was created or changed (title, members).
    Conversation {
        /// The conversation as it is now.
        conversation: Conversation,
    },
    /// The caller was removed from (or left) a conversation.
    ConversationRemoved {
        /// Conversation the caller no longer belongs to.
        conversation_id: Uuid,
    },
    /// The client is too far behind in this conversation to replay: page history instead.
    Resync {
        /// Conversation to page with `GET /v1/conversations/{id}/messages`.
        conversation_id: Uuid,
        /// Its newest seq.
        last_seq: u64,
    },
    /// Periodic heartbeat with the latest seq of every conversation, to detect gaps.
    Heartbeat {
        /// Latest seq per conversation.
        latest: BTreeMap<Uuid, u64>,
    },
    /// Answer to `ping`.
    Pong {
        /// Request id of the ping.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<String>,
    },
    /// A call in one of the user's conversations changed (started, someone answered,
    /// joined, left, muted, or it ended), or the answer to a `call_start`/`call_answer`
    /// (then `req_id` is set).
    Call {
        /// Request id of the answered frame, if this is an answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<String>,
        /// The call as it is now.
        call: super::Call,
    },
    /// A WebRTC signal from another participant's device, for this device.
    CallSignal {
        /// The call.
        call_id: Uuid,
        /// Sender.
        from_user_id: Uuid,
        /// Sender's device: address answers and candidates to it.
        from_session_id: Uuid,
        /// The payload.
        signal: super::Signal,
    },
    /// This session was revoked; the server closes the socket with code 4003 next.
    SessionRevoked {
        /// The revoked session.
        session_id: Uuid,
    },
}

impl ServerFrame {
    /// Every `type` value, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        "ready",
        "synced",
        "ack",
        "ok",
        "error",
        "message",
        "message_edited",
        "message_deleted",
        "read",
        "typing",
        "presence",
        "conversation",
        "conversation_removed",
        "resync",
        "heartbeat",
        "pong",
        "call",
        "call_signal",
        "session_revoked",
    ];

    /// The frame's `type` (for logs and metrics).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "ready",
            Self::Synced => "synced",
            Self::Ack { .. } => "ack",
            Self::Ok { .. } => "ok",
            Self::Error { .. } => "error",
            Self::Message { .. } => "message",
            Self::MessageEdited { .. } => "message_edited",
            Self::MessageDeleted { .. } => "message_deleted",
            Self::Read { .. } => "read",
            Self::Typing { .. } => "typing",
            Self::Presence { .. } => "presence",
            Self::Conversation { .. } => "conversation",
            Self::ConversationRemoved { .. } => "conversation_removed",
            Self::Resync { .. } => "resync",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Pong { .. } => "pong",
            Self::Call { .. } => "call",
            Self::CallSignal { .. } => "call_signal",
            Self::SessionRevoked { .. } => "session_revoked",
        }
    }
}
