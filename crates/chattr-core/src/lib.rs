//! Chattr's domain: validated values (parse, don't validate), ids and the domain events
//! that travel through the outbox and the bus, and the trace context that follows a
//! request across hops. No I/O lives here.

pub mod events;
pub mod trace;
pub mod validate;

pub use validate::{ClientMsgId, MessageBody, Password, Title, Username, ValidationError};

/// Identifier of a user.
pub type UserId = uuid::Uuid;
/// Identifier of a session.
pub type SessionId = uuid::Uuid;
/// Identifier of a conversation.
pub type ConversationId = uuid::Uuid;
/// Identifier of a message.
pub type MessageId = uuid::Uuid;
/// A point in time (UTC).
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// A new time-ordered id (UUID v7), so ids sort by creation and index well.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Current time, truncated to milliseconds so it round-trips through every store.
pub fn now() -> Timestamp {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
