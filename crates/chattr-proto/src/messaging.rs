//! The messaging service seam: conversations, membership, messages, reads, typing, presence.

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use chattr_api::v1::{codes, Conversation, CreateConversation, Message, Presence, SendMessage};
use chattr_core::{ConversationId, MessageId, UserId, ValidationError};

use crate::ErrorInfo;

/// Errors of the messaging service.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// Input failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The conversation or message does not exist, or the caller may not know it exists.
    #[error("not found")]
    NotFound,
    /// The caller can see the resource but may not do this to it.
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// A backend failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// A service or backend cannot be reached right now; the call may be retried.
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

impl MessagingError {
    /// A `Forbidden` error with this reason.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        MessagingError::Forbidden(reason.into())
    }
}

impl ErrorInfo for MessagingError {
    fn code(&self) -> &'static str {
        match self {
            MessagingError::Invalid(e) => e.code,
            MessagingError::NotFound => codes::NOT_FOUND,
            MessagingError::Forbidden(_) => codes::FORBIDDEN,
            MessagingError::Internal(_) => codes::INTERNAL,
            MessagingError::Unavailable(_) => codes::UNAVAILABLE,
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            MessagingError::Invalid(_) => 400,
            MessagingError::NotFound => 404,
            MessagingError::Forbidden(_) => 403,
            MessagingError::Internal(_) => 500,
            MessagingError::Unavailable(_) => 503,
        }
    }

    fn public_message(&self) -> String {
        match self {
            MessagingError::Internal(_) => "internal error".to_owned(),
            MessagingError::Unavailable(_) => "service unavailable, retry shortly".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Which page of history to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with a greater seq (oldest first).
    pub after_seq: Option<u64>,
    /// Only messages with a smaller seq (the newest of those).
    pub before_seq: Option<u64>,
    /// Page size, 1..=100 (default 50).
    pub limit: Option<u32>,
}

/// The messaging service. Every call is made on behalf of `user`; a conversation the user
/// is not a member of is reported as `NotFound`, exactly like a missing one.
#[async_trait]
pub trait MessagingService: Send + Sync + 'static {
    /// Creates a conversation; for an existing direct one returns it with `false`.
    async fn create_conversation(
        &self,
        user: UserId,
        req: CreateConversation,
    ) -> Result<(Conversation, bool), MessagingError>;
    /// The user's conversations, most recently active first.
    async fn list_conversations(&self, user: UserId) -> Result<Vec<Conversation>, MessagingError>;
    /// One conversation of the user.
    async fn conversation(&self, user: UserId, id: ConversationId) -> Result<Conversation, MessagingError>;
    /// Renames a group (owner only).
    async fn rename(
        &self,
        user: UserId,
        id: ConversationId,
        title: &str,
    ) -> Result<Conversation, MessagingError>;
    /// Adds a member to a group (owner only).
    async fn add_member(
        &self,
        user: UserId,
        id: ConversationId,
        member: UserId,
    ) -> Result<Conversation, MessagingError>;
    /// Removes a member from a group (owner removes anyone; anyone removes themselves = leave).
    async fn remove_member(
        &self,
        user: UserId,
        id: ConversationId,
        member: UserId,
    ) -> Result<(), MessagingError>;
    /// Sends a message; returns it and whether it is new (false for a repeated `client_msg_id`).
    async fn send(
        &self,
        user: UserId,
        id: ConversationId,
        msg: SendMessage,
    ) -> Result<(Message, bool), MessagingError>;
    /// A page of history, ascending by seq.
    async fn history(
        &self,
        user: UserId,
        id: ConversationId,
        q: HistoryQuery,
    ) -> Result<Vec<Message>, MessagingError>;
    /// Edits one's own message.
    async fn edit(
        &self,
        user: UserId,
        id: ConversationId,
        message_id: MessageId,
        body: &str,
    ) -> Result<Message, MessagingError>;
    /// Deletes a message (own; a group owner any), leaving a tombstone.
    async fn delete(
        &self,
        user: UserId,
        id: ConversationId,
        message_id: MessageId,
    ) -> Result<Message, MessagingError>;
    /// Moves the user's read position forward; returns the position after the call.
    async fn mark_read(&self, user: UserId, id: ConversationId, seq: u64) -> Result<u64, MessagingError>;
    /// Tells the other members the user is typing (ephemeral).
    async fn typing(&self, user: UserId, id: ConversationId) -> Result<(), MessagingError>;
    /// Latest seq of each of the user's conversations.
    async fn latest_seqs(&self, user: UserId) -> Result<Vec<(ConversationId, u64)>, MessagingError>;
    /// Presence of the given users, limited to those who share a conversation with `user`.
    async fn presence(&self, user: UserId, of: &[UserId]) -> Result<Vec<Presence>, MessagingError>;
    /// A connection of the user is alive (called on connect and periodically); tells the
    /// user's contacts when the user comes online.
    async fn presence_up(&self, user: UserId, connection: &str) -> Result<(), MessagingError>;
    /// A gateway's heartbeat for many connections at once: marks each `(user, connection)`
    /// live as [`MessagingService::presence_up`] does, and returns the latest seqs of each
    /// distinct user's conversations (as [`MessagingService::latest_seqs`]). A presence
    /// failure is logged and does not fail the call. The default goes one by one.
    async fn heartbeat(&self, live: &[(UserId, String)]) -> Result<LatestSeqsByUser, MessagingError> {
        let mut latest = LatestSeqsByUser::new();
        for (user, connection) in live {
            if let Err(e) = self.presence_up(*user, connection).await {
                tracing::warn!(error = %e, "presence refresh failed");
            }
            if !latest.contains_key(user) {
                latest.insert(*user, self.latest_seqs(*user).await?);
            }
        }
        Ok(latest)
    }
    /// A connection of the user closed; tells contacts when the user goes offline.
    async fn presence_down(&self, user: UserId, connection: &str) -> Result<(), MessagingError>;
    /// [`MessagingService::presence_down`] for many `(user, connection)` at once (a
    /// gateway's closed sockets). The default goes one by one and stops at the first
    /// failure.
    async fn presence_down_many(&self, gone: &[(UserId, String)]) -> Result<(), MessagingError> {
        for (user, connection) in gone {
            self.presence_down(*user, connection).await?;
        }
        Ok(())
    }
}

/// The latest seq of each conversation, by user ([`MessagingService::heartbeat`]).
pub type LatestSeqsByUser = std::collections::HashMap<UserId, Vec<(ConversationId, u64)>>;

/// A cloneable handle on the messaging service, local or remote.
#[derive(Clone)]
pub struct MessagingClient(Arc<dyn MessagingService>);

impl MessagingClient {
    /// Wraps an in-process implementation.
    pub fn local(service: impl MessagingService) -> Self {
        Self(Arc::new(service))
    }

    /// Wraps any implementation already shared (e.g. a remote adapter).
    pub fn from_arc(service: Arc<dyn MessagingService>) -> Self {
        Self(service)
    }
}

impl Deref for MessagingClient {
    type Target = dyn MessagingService;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
