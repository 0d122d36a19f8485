//! [`Messaging`]: the in-process implementation of the messaging service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chattr_api::v1::{
    codes, Conversation, ConversationKind, CreateConversation, Message, Presence, ReadPosition, SendMessage,
    ServerFrame, User,
};
use chattr_cache::DynCache;
use chattr_core::{
    new_id, now, ClientMsgId, ConversationId, MessageBody, MessageId, Title, UserId, ValidationError,
};
use chattr_proto::delivery::{user_channel, Delivery, DeliveryKind};
use chattr_proto::messaging::{HistoryQuery, LatestSeqsByUser, MessagingError, MessagingService};
use chattr_store::{DynStore, MessageChange, NewConversation, NewMessage, StoreError};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::metrics as m;
use crate::views::conversation_view;
use crate::MessagingSettings;

/// The messaging service over a store (durable state) and a cache (presence, pub/sub).
pub struct Messaging {
    store: DynStore,
    cache: DynCache,
    settings: MessagingSettings,
    /// Poked after every commit that wrote outbox rows, so the relay publishes at once.
    outbox: Arc<Notify>,
}

fn internal(e: StoreError) -> MessagingError {
    match e {
        StoreError::Unavailable(why) => MessagingError::Unavailable(why),
        other => MessagingError::Internal(other.to_string()),
    }
}

/// Cache failures mean Redis is unreachable or timing out: retryable.
fn cache_down(e: chattr_cache::CacheError) -> MessagingError {
    MessagingError::Unavailable(e.to_string())
}

/// `client_msg_id` prefix of call summaries, reserved: clients cannot send messages that
/// look like one.
pub const CALL_SUMMARY_PREFIX: &str = "call:";

fn invalid(message: &str) -> MessagingError {
    MessagingError::Invalid(ValidationError { code: codes::INVALID_ARGUMENT, message: message.to_owned() })
}

impl Messaging {
    /// Builds the service.
    pub fn new(store: DynStore, cache: DynCache, settings: MessagingSettings, outbox: Arc<Notify>) -> Self {
        Self { store, cache, settings, outbox }
    }

    /// Stores a message whose id and body were validated, and wakes the relay.
    async fn insert(
        &self,
        user: UserId,
        id: ConversationId,
        client_msg_id: String,
        body: String,
    ) -> Result<(Message, bool), MessagingError> {
        let new = NewMessage {
            id: new_id(),
            conversation_id: id,
            sender_id: user,
            client_msg_id,
            body,
            created_at: now(),
        };
        let started = std::time::Instant::now();
        let (message, created) = match self.store.insert_message(&new).await {
            Ok(done) => done,
            Err(StoreError::NotMember) => return Err(MessagingError::NotFound),
            Err(e) => return Err(internal(e)),
        };
        metrics::histogram!(m::SEND_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        if created {
            self.outbox.notify_one();
            metrics::counter!(m::MESSAGES_ACCEPTED).increment(1);
            if let Some(trace) = chattr_core::trace::current() {
                debug!(trace_id = %trace.trace_hex(), conversation_id = %message.conversation_id, seq = message.seq, "message committed");
            }
        } else {
            metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1);
        }
        Ok((message, created))
    }

    /// Writes the summary of an ended call into its conversation's timeline, as the
    /// caller, idempotently: the summary's `client_msg_id` is `call:<call id>`, a prefix
    /// clients may not use, so a redelivered `call.ended` event writes nothing new.
    pub async fn record_call_summary(
        &self,
        conversation_id: ConversationId,
        caller: UserId,
        call_id: uuid::Uuid,
        text: String,
    ) -> Result<(Message, bool), MessagingError> {
        self.insert(caller, conversation_id, format!("{CALL_SUMMARY_PREFIX}{call_id}"), text).await
    }

    async fn user_directory(&self, ids: &[UserId]) -> Result<HashMap<UserId, User>, MessagingError> {
        let users = self.store.users_by_ids(ids).await.map_err(internal)?;
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }

    /// Fails with `NotFound` unless `user` is a member: a non-member cannot tell a hidden
    /// conversation from a missing one.
    async fn require_member(&self, user: UserId, id: ConversationId) -> Result<u64, MessagingError> {
        match self.store.membership(id, user).await.map_err(internal)? {
            Some(m) => Ok(m.read_seq),
            None => Err(MessagingError::NotFound),
        }
    }

    /// Loads a group the caller belongs to and checks the caller owns it.
    async fn require_owned_group(
        &self,
        user: UserId,
        id: ConversationId,
    ) -> Result<chattr_store::ConversationRecord, MessagingError> {
        let conv = self.store.conversation(id).await.map_err(internal)?.ok_or(MessagingError::NotFound)?;
        if !conv.members.contains(&user) {
            return Err(MessagingError::NotFound);
        }
        if conv.kind != ConversationKind::Group {
            return Err(MessagingError::forbidden("direct conversations have fixed members"));
        }
        if conv.owner_id != Some(user) {
            return Err(MessagingError::forbidden("only the group owner can do this"));
        }
        Ok(conv)
    }

    /// Publishes one ephemeral frame to users' channels (typing, presence): pub/sub only,
    /// never the durable log.
    async fn publish_ephemeral(&self, recipients: &[UserId], frame: &ServerFrame) {
        if recipients.is_empty() {
            return;
        }
        let Ok(payload) = Delivery::serialize(DeliveryKind::Ephemeral, frame) else { return };
        let channels: Vec<String> = recipients.iter().map(|u| user_channel(*u)).collect();
        if let Err(e) = self.cache.publish_many(&channels, payload).await {
            warn!(error = %e, "ephemeral publish failed");
        }
    }

    fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.settings.presence_ttl_secs)
    }

    /// Tells the contacts of each of `users` (distinct) that the user came online or went
    /// offline, `frame` making each user's `presence` frame: one contacts query for all of
    /// them, and the publishes sent together.
    async fn announce(
        &self,
        users: &[UserId],
        frame: impl Fn(UserId) -> ServerFrame,
    ) -> Result<(), MessagingError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut contacts: HashMap<UserId, Vec<UserId>> = HashMap::new();
        for (user, contact) in self.store.contacts_of(users).await.map_err(internal)? {
            contacts.entry(user).or_default().push(contact);
        }
        futures_util::future::join_all(contacts.iter().map(|(user, to)| {
            let frame = frame(*user);
            async move { self.publish_ephemeral(to, &frame).await }
        }))
        .await;
        Ok(())
    }
}

#[async_trait]
impl MessagingService for Messaging {
    async fn create_conversation(
        &self,
        user: UserId,
        req: CreateConversation,
    ) -> Result<(Conversation, bool), MessagingError> {
        let mut members = vec![user];
        for m in req.members {
            if !members.contains(&m) {
                members.push(m);
            }
        }
        let (title, owner_id) = match req.kind {
            ConversationKind::Direct => {
                if members.len() != 2 {
                    return Err(invalid("a direct conversation has exactly one other member"));
                }
                (None, None)
            }
            ConversationKind::Group => {
                let title = Title::parse(req.title.as_deref().unwrap_or_default())?;
                if members.len() > self.settings.max_group_members {
                    return Err(invalid("too many members"));
                }
                (Some(title.as_str().to_owned()), Some(user))
            }
        };
        let known = self.user_directory(&members).await?;
        if known.len() != members.len() {
            return Err(invalid("unknown user in members"));
        }
        let new =
            NewConversation { id: new_id(), kind: req.kind, title, owner_id, members, created_at: now() };
        let (record, created) = self.store.create_conversation(&new).await.map_err(internal)?;
        if created {
            self.outbox.notify_one();
            metrics::counter!(m::CONVERSATIONS_CREATED).increment(1);
        }
        let conv = self.conversation(user, record.id).await?;
        Ok((conv, created))
    }

    async fn list_conversations(&self, user: UserId) -> Result<Vec<Conversation>, MessagingError> {
        let summaries = self.store.conversations_for_user(user).await.map_err(internal)?;
        let mut ids: Vec<UserId> =
            summaries.iter().flat_map(|s| s.conversation.members.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        let users = self.user_directory(&ids).await?;
        Ok(summaries.into_iter().map(|s| conversation_view(s, &users)).collect())
    }

    async fn conversation(&self, user: UserId, id: ConversationId) -> Result<Conversation, MessagingError> {
        let summary = self
            .store
            .conversation_summary(id, user)
            .await
            .map_err(internal)?
            .ok_or(MessagingError::NotFound)?;
        let users = self.user_directory(&summary.conversation.members).await?;
        let mut view = conversation_view(summary, &users);
        let positions = self.store.read_positions(id).await.map_err(internal)?;
        view.read_positions =
            positions.into_iter().map(|(user_id, seq)| ReadPosition { user_id, seq }).collect();
        Ok(view)
    }

    async fn rename(
        &self,
        user: UserId,
        id: ConversationId,
        title: &str,
    ) -> Result<Conversation, MessagingError> {
        let title = Title::parse(title)?;
        self.require_owned_group(user, id).await?;
        self.store.set_title(id, title.as_str()).await.map_err(internal)?;
        self.outbox.notify_one();
        self.conversation(user, id).await
    }

    async fn add_member(
        &self,
        user: UserId,
        id: ConversationId,
        member: UserId,
    ) -> Result<Conversation, MessagingError> {
        let conv = self.require_owned_group(user, id).await?;
        if conv.members.len() >= self.settings.max_group_members {
            return Err(invalid("the group is full"));
        }
        if self.user_directory(&[member]).await?.is_empty() {
            return Err(invalid("unknown user"));
        }
        if self.store.add_member(id, member, now()).await.map_err(internal)? {
            self.outbox.notify_one();
        }
        self.conversation(user, id).await
    }

    async fn remove_member(
        &self,
        user: UserId,
        id: ConversationId,
        member: UserId,
    ) -> Result<(), MessagingError> {
        let conv = self.store.conversation(id).await.map_err(internal)?.ok_or(MessagingError::NotFound)?;
        if !conv.members.contains(&user) {
            return Err(MessagingError::NotFound);
        }
        if conv.kind != ConversationKind::Group {
            return Err(MessagingError::forbidden("direct conversations have fixed members"));
        }
        let is_owner = conv.owner_id == Some(user);
        if member == user && is_owner {
            return Err(MessagingError::forbidden("the owner cannot leave the group"));
        }
        if member != user && !is_owner {
            return Err(MessagingError::forbidden("only the group owner can remove members"));
        }
        if !conv.members.contains(&member) {
            return Err(MessagingError::NotFound);
        }
        if self.store.remove_member(id, member).await.map_err(internal)? {
            self.outbox.notify_one();
        }
        Ok(())
    }

    async fn send(
        &self,
        user: UserId,
        id: ConversationId,
        msg: SendMessage,
    ) -> Result<(Message, bool), MessagingError> {
        let client_msg_id = ClientMsgId::parse(&msg.client_msg_id)?;
        if client_msg_id.as_str().starts_with(CALL_SUMMARY_PREFIX) {
            return Err(invalid("client_msg_id must not start with \"call:\" (reserved for call summaries)"));
        }
        let body = MessageBody::parse(&msg.body, self.settings.max_body_chars)?;
        self.insert(user, id, client_msg_id.as_str().to_owned(), body.into_string()).await
    }

    async fn history(
        &self,
        user: UserId,
        id: ConversationId,
        q: HistoryQuery,
    ) -> Result<Vec<Message>, MessagingError> {
        let limit = q.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(invalid("limit must be between 1 and 100"));
        }
        self.require_member(user, id).await?;
        self.store.messages(id, q.after_seq, q.before_seq, limit).await.map_err(internal)
    }

    async fn edit(
        &self,
        user: UserId,
        id: ConversationId,
        message_id: MessageId,
        body: &str,
    ) -> Result<Message, MessagingError> {
        let body = MessageBody::parse(body, self.settings.max_body_chars)?;
        self.require_member(user, id).await?;
        let existing =
            self.store.message(id, message_id).await.map_err(internal)?.ok_or(MessagingError::NotFound)?;
        if existing.sender_id != user {
            return Err(MessagingError::forbidden("only the sender can edit a message"));
        }
        if existing.deleted {
            return Err(MessagingError::forbidden("a deleted message cannot be edited"));
        }
        let change = MessageChange::Edit { body: body.into_string(), at: now() };
        let updated = self
            .store
            .change_message(id, message_id, &change)
            .await
            .map_err(internal)?
            .ok_or(MessagingError::NotFound)?;
        self.outbox.notify_one();
        Ok(updated)
    }

    async fn delete(
        &self,
        user: UserId,
        id: ConversationId,
        message_id: MessageId,
    ) -> Result<Message, MessagingError> {
        self.require_member(user, id).await?;
        let existing =
            self.store.message(id, message_id).await.map_err(internal)?.ok_or(MessagingError::NotFound)?;
        if existing.sender_id != user {
            let conv =
                self.store.conversation(id).await.map_err(internal)?.ok_or(MessagingError::NotFound)?;
            if conv.owner_id != Some(user) {
                return Err(MessagingError::forbidden(
                    "only the sender or the group owner can delete a message",
                ));
            }
        }
        if existing.deleted {
            return Ok(existing);
        }
        let updated = self
            .store
            .change_message(id, message_id, &MessageChange::Delete { at: now() })
            .await
            .map_err(internal)?
            .ok_or(MessagingError::NotFound)?;
        self.outbox.notify_one();
        Ok(updated)
    }

    async fn mark_read(&self, user: UserId, id: ConversationId, seq: u64) -> Result<u64, MessagingError> {
        let before = self.require_member(user, id).await?;
        match self.store.mark_read(id, user, seq).await {
            Ok(after) => {
                if after != before {
                    self.outbox.notify_one();
                }
                Ok(after)
            }
            Err(StoreError::NotMember) => Err(MessagingError::NotFound),
            Err(e) => Err(internal(e)),
        }
    }

    async fn typing(&self, user: UserId, id: ConversationId) -> Result<(), MessagingError> {
        let conv = self.store.conversation(id).await.map_err(internal)?.ok_or(MessagingError::NotFound)?;
        if !conv.members.contains(&user) {
            return Err(MessagingError::NotFound);
        }
        let others: Vec<UserId> = conv.members.iter().copied().filter(|m| *m != user).collect();
        self.publish_ephemeral(&others, &ServerFrame::Typing { conversation_id: id, user_id: user }).await;
        Ok(())
    }

    async fn latest_seqs(&self, user: UserId) -> Result<Vec<(ConversationId, u64)>, MessagingError> {
        self.store.latest_seqs(user).await.map_err(internal)
    }

    async fn presence(&self, user: UserId, of: &[UserId]) -> Result<Vec<Presence>, MessagingError> {
        let contacts = self.store.contacts(user).await.map_err(internal)?;
        let visible: Vec<UserId> =
            of.iter().copied().filter(|u| *u == user || contacts.contains(u)).collect();
        let keys: Vec<String> = visible.iter().map(|u| u.to_string()).collect();
        let states = self.cache.presence(&keys).await.map_err(cache_down)?;
        Ok(visible
            .into_iter()
            .zip(states)
            .map(|(user_id, s)| Presence {
                user_id,
                online: s.online,
                last_seen_at: if s.online {
                    None
                } else {
                    s.last_seen_ms.and_then(chrono::DateTime::from_timestamp_millis)
                },
            })
            .collect())
    }

    async fn presence_up(&self, user: UserId, connection: &str) -> Result<(), MessagingError> {
        let came_online = self
            .cache
            .presence_up(&user.to_string(), connection, self.presence_ttl())
            .await
            .map_err(cache_down)?;
        if came_online {
            self.announce(&[user], online).await?;
        }
        Ok(())
    }

    async fn heartbeat(&self, live: &[(UserId, String)]) -> Result<LatestSeqsByUser, MessagingError> {
        let keys: Vec<(String, String)> = live.iter().map(|(u, c)| (u.to_string(), c.clone())).collect();
        match self.cache.presence_up_many(&keys, self.presence_ttl()).await {
            Ok(came_online) => {
                let arrived = users_where(live, &came_online);
                if let Err(e) = self.announce(&arrived, online).await {
                    warn!(error = %e, users = arrived.len(), "announcing users online failed");
                }
            }
            Err(e) => warn!(error = %e, connections = live.len(), "presence refresh failed"),
        }
        let mut users: Vec<UserId> = live.iter().map(|(u, _)| *u).collect();
        users.sort_unstable();
        users.dedup();
        let mut latest: LatestSeqsByUser = users.iter().map(|u| (*u, Vec::new())).collect();
        for (user, conversation, seq) in self.store.latest_seqs_of(&users).await.map_err(internal)? {
            latest.entry(user).or_default().push((conversation, seq));
        }
        for seqs in latest.values_mut() {
            seqs.sort_unstable();
        }
        Ok(latest)
    }

    async fn presence_down(&self, user: UserId, connection: &str) -> Result<(), MessagingError> {
        self.presence_down_many(&[(user, connection.to_owned())]).await
    }

    async fn presence_down_many(&self, gone: &[(UserId, String)]) -> Result<(), MessagingError> {
        let at = now();
        let keys: Vec<(String, String)> = gone.iter().map(|(u, c)| (u.to_string(), c.clone())).collect();
        let went_offline =
            self.cache.presence_down_many(&keys, at.timestamp_millis()).await.map_err(cache_down)?;
        let left = users_where(gone, &went_offline);
        self.announce(&left, |user_id| ServerFrame::Presence {
            user_id,
            online: false,
            last_seen_at: Some(at),
        })
        .await
    }
}

/// The `presence` frame of a user who came online.
fn online(user_id: UserId) -> ServerFrame {
    ServerFrame::Presence { user_id, online: true, last_seen_at: None }
}

/// The distinct users of the connections whose answer is true.
fn users_where(connections: &[(UserId, String)], answers: &[bool]) -> Vec<UserId> {
    let mut users: Vec<UserId> =
        connections.iter().zip(answers).filter(|(_, yes)| **yes).map(|((user, _), _)| *user).collect();
    users.sort_unstable();
    users.dedup();
    users
}
