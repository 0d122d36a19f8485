//! Version 1 of the Chattr protocol. See `docs/protocol.md`.

mod auth;
mod calls;
mod conversations;
mod error;
mod ws;

pub use auth::*;
pub use calls::*;
pub use conversations::*;
pub use error::*;
pub use ws::*;

/// Identifier of a user (UUID v7 as a string on the wire). Fields use `Uuid` directly so the OpenAPI schema sees it.
pub type UserId = uuid::Uuid;
/// Identifier of a login session (one per device).
pub type SessionId = uuid::Uuid;
/// Identifier of a conversation.
pub type ConversationId = uuid::Uuid;
/// Identifier of a message.
pub type MessageId = uuid::Uuid;
/// Timestamps are RFC 3339 in UTC on the wire.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
