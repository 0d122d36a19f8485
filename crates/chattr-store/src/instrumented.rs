//! A store that times every call of the store it wraps ([`crate::metrics`]). [`crate::open`]
//! wraps every store it opens, so each backend is measured the same way.

use async_trait::async_trait;
use chattr_api::v1::{Message, User};
use chattr_core::{ConversationId, MessageId, SessionId, Timestamp, UserId};

use crate::metrics::Timer;
use crate::{
    ConversationRecord, ConversationSummary, DynStore, Lease, Membership, MessageChange, NewConversation,
    NewMessage, OutboxBacklog, OutboxRow, RotateOutcome, SessionRecord, Store, StoreResult, UserRecord,
};

/// The wrapper.
pub struct Instrumented(pub DynStore);

/// Awaits one call of the inner store and records it under `op`.
macro_rules! timed {
    ($op:literal, $call:expr) => {{
        let timer = Timer::start($op);
        let out = $call.await;
        timer.finish(out.as_ref().err());
        out
    }};
}

#[async_trait]
impl Store for Instrumented {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        timed!("create_user", self.0.create_user(user))
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        timed!("user_by_username", self.0.user_by_username(username))
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        timed!("users_by_ids", self.0.users_by_ids(ids))
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<User>> {
        timed!("search_users", self.0.search_users(prefix, limit))
    }

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        timed!("create_session", self.0.create_session(session))
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        timed!("session", self.0.session(id))
    }

    async fn sessions_by_ids(&self, ids: &[SessionId]) -> StoreResult<Vec<SessionRecord>> {
        timed!("sessions_by_ids", self.0.sessions_by_ids(ids))
    }

    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RotateOutcome> {
        timed!("rotate_refresh", self.0.rotate_refresh(id, presented_hash, new_hash, new_expires_at, now))
    }

    async fn touch_sessions(&self, ids: &[SessionId], now: Timestamp) -> StoreResult<()> {
        timed!("touch_sessions", self.0.touch_sessions(ids, now))
    }

    async fn list_sessions(&self, user_id: UserId) -> StoreResult<Vec<SessionRecord>> {
        timed!("list_sessions", self.0.list_sessions(user_id))
    }

    async fn revoke_session(&self, user_id: UserId, id: SessionId) -> StoreResult<bool> {
        timed!("revoke_session", self.0.revoke_session(user_id, id))
    }

    async fn revoke_other_sessions(&self, user_id: UserId, keep: SessionId) -> StoreResult<Vec<SessionId>> {
        timed!("revoke_other_sessions", self.0.revoke_other_sessions(user_id, keep))
    }

    async fn create_conversation(&self, new: &NewConversation) -> StoreResult<(ConversationRecord, bool)> {
        timed!("create_conversation", self.0.create_conversation(new))
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>> {
        timed!("conversation", self.0.conversation(id))
    }

    async fn membership(&self, id: ConversationId, user_id: UserId) -> StoreResult<Option<Membership>> {
        timed!("membership", self.0.membership(id, user_id))
    }

    async fn read_positions(&self, id: ConversationId) -> StoreResult<Vec<(UserId, u64)>> {
        timed!("read_positions", self.0.read_positions(id))
    }

    async fn conversations_for_user(&self, user_id: UserId) -> StoreResult<Vec<ConversationSummary>> {
        timed!("conversations_for_user", self.0.conversations_for_user(user_id))
    }

    async fn conversation_summary(
        &self,
        id: ConversationId,
        user_id: UserId,
    ) -> StoreResult<Option<ConversationSummary>> {
        timed!("conversation_summary", self.0.conversation_summary(id, user_id))
    }

    async fn add_member(&self, id: ConversationId, user_id: UserId, now: Timestamp) -> StoreResult<bool> {
        timed!("add_member", self.0.add_member(id, user_id, now))
    }

    async fn remove_member(&self, id: ConversationId, user_id: UserId) -> StoreResult<bool> {
        timed!("remove_member", self.0.remove_member(id, user_id))
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        timed!("set_title", self.0.set_title(id, title))
    }

    async fn contacts(&self, user_id: UserId) -> StoreResult<Vec<UserId>> {
        timed!("contacts", self.0.contacts(user_id))
    }

    async fn contacts_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>> {
        timed!("contacts_of", self.0.contacts_of(users))
    }

    async fn latest_seqs(&self, user_id: UserId) -> StoreResult<Vec<(ConversationId, u64)>> {
        timed!("latest_seqs", self.0.latest_seqs(user_id))
    }

    async fn latest_seqs_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, ConversationId, u64)>> {
        timed!("latest_seqs_of", self.0.latest_seqs_of(users))
    }

    async fn insert_message(&self, new: &NewMessage) -> StoreResult<(Message, bool)> {
        timed!("insert_message", self.0.insert_message(new))
    }

    async fn messages(
        &self,
        id: ConversationId,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        timed!("messages", self.0.messages(id, after, before, limit))
    }

    async fn message(&self, id: ConversationId, message_id: MessageId) -> StoreResult<Option<Message>> {
        timed!("message", self.0.message(id, message_id))
    }

    async fn change_message(
        &self,
        id: ConversationId,
        message_id: MessageId,
        change: &MessageChange,
    ) -> StoreResult<Option<Message>> {
        timed!("change_message", self.0.change_message(id, message_id, change))
    }

    async fn mark_read(&self, id: ConversationId, user_id: UserId, seq: u64) -> StoreResult<u64> {
        timed!("mark_read", self.0.mark_read(id, user_id, seq))
    }

    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        timed!("outbox_pending", self.0.outbox_pending(limit))
    }

    async fn outbox_mark_published(&self, ids: &[i64]) -> StoreResult<()> {
        timed!("outbox_mark_published", self.0.outbox_mark_published(ids))
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        timed!("outbox_backlog", self.0.outbox_backlog())
    }

    async fn ping(&self) -> StoreResult<()> {
        timed!("ping", self.0.ping())
    }

    /// Not timed: it waits for as long as another holder keeps the lease.
    async fn acquire_lease(&self, name: &str) -> StoreResult<Box<dyn Lease>> {
        self.0.acquire_lease(name).await
    }
}
