//! The in-memory reference [`Store`]: plain collections behind one mutex.
//!
//! It owns nothing durable; it exists so the rules of the trait have a simple, obviously
//! correct executable form that the conformance suite can hold every other impl against,
//! and so tests and `memory://` deployments need no database. Every method takes the lock
//! once and releases it before returning, so a method is atomic like a transaction.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chattr_api::v1::{ConversationKind, Message, User};
use chattr_core::events::Event;
use chattr_core::{ConversationId, MessageId, SessionId, Timestamp, UserId};
use parking_lot::Mutex;

use crate::{
    change_event, ConversationRecord, ConversationSummary, Membership, MessageChange, NewConversation,
    NewMessage, OutboxBacklog, OutboxRow, RotateOutcome, SessionRecord, Store, StoreError, StoreResult,
    UserRecord,
};

/// The in-memory store. Cheap to create; all data is lost when it is dropped.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

/// Everything the store holds. Only touched with the lock held.
#[derive(Default)]
struct State {
    users: HashMap<UserId, UserRecord>,
    /// Username → id, ordered so prefix search is a range scan.
    usernames: BTreeMap<String, UserId>,
    sessions: HashMap<SessionId, SessionRecord>,
    /// Refresh hashes each session rotated away, newest first (at most `ROTATED_KEEP`).
    rotated: HashMap<SessionId, Vec<String>>,
    conversations: HashMap<ConversationId, Conversation>,
    /// Sorted member pair of each direct conversation, for dedupe.
    directs: HashMap<(UserId, UserId), ConversationId>,
    /// Unpublished outbox rows by id; published rows are dropped since nothing reads them.
    outbox: BTreeMap<i64, Pending>,
    /// Last outbox id handed out, so ids stay monotonic even after rows are published.
    last_outbox_id: i64,
}

/// A conversation with its members and messages.
struct Conversation {
    id: ConversationId,
    kind: ConversationKind,
    title: Option<String>,
    owner_id: Option<UserId>,
    created_at: Timestamp,
    /// Current members in insertion order.
    members: Vec<Member>,
    /// Messages by seq: `messages[i].seq == i + 1`, so seqs have no gaps by construction.
    messages: Vec<Message>,
}

/// One member's state.
/// An unpublished outbox row.
struct Pending {
    event: Event,
    traceparent: Option<String>,
    created_ms: i64,
}

struct Member {
    user_id: UserId,
    read_seq: u64,
    joined_at: Timestamp,
}

impl State {
    /// Appends an event to the outbox with the next id.
    fn push(&mut self, event: Event) {
        self.last_outbox_id += 1;
        let pending = Pending {
            event,
            traceparent: chattr_core::trace::outgoing(),
            created_ms: crate::codec::ms(chattr_core::now()),
        };
        self.outbox.insert(self.last_outbox_id, pending);
    }

    /// Mirrors the foreign keys of the SQL schemas: references to users must resolve.
    fn check_user(&self, id: UserId) -> StoreResult<()> {
        if self.users.contains_key(&id) {
            Ok(())
        } else {
            Err(StoreError::Backend(format!("unknown user {id}")))
        }
    }

    /// The live session `id` of `user_id`, if any.
    fn live_session_of(&mut self, user_id: UserId, id: SessionId) -> Option<&mut SessionRecord> {
        self.sessions.get_mut(&id).filter(|s| s.user_id == user_id && !s.revoked)
    }
}

impl Conversation {
    fn last_seq(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Time of the last message, or creation when there is none.
    fn last_activity(&self) -> Timestamp {
        self.messages.last().map_or(self.created_at, |m| m.created_at)
    }

    fn member(&self, user_id: UserId) -> Option<&Member> {
        self.members.iter().find(|m| m.user_id == user_id)
    }

    fn member_mut(&mut self, user_id: UserId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.user_id == user_id)
    }

    fn record(&self) -> ConversationRecord {
        // Join order is join time, ties (members created together) in insertion order; the
        // sort is stable, and the SQL impls order by (joined_at, insertion) the same way.
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by_key(|m| m.joined_at);
        ConversationRecord {
            id: self.id,
            kind: self.kind,
            title: self.title.clone(),
            owner_id: self.owner_id,
            members: members.into_iter().map(|m| m.user_id).collect(),
            created_at: self.created_at,
            last_seq: self.last_seq(),
        }
    }

    fn unread(&self, member: &Member) -> u64 {
        let unread = self
            .messages
            .iter()
            .filter(|m| m.seq > member.read_seq && m.sender_id != member.user_id && !m.deleted)
            .count();
        unread as u64
    }

    fn message_mut(&mut self, id: MessageId) -> Option<&mut Message> {
        self.messages.iter_mut().find(|m| m.id == id)
    }
}

/// The dedupe key of a direct conversation: its two members, sorted.
fn direct_pair(members: &[UserId]) -> StoreResult<(UserId, UserId)> {
    match members {
        [a, b] if a != b => Ok(if a < b { (*a, *b) } else { (*b, *a) }),
        _ => Err(StoreError::Backend("a direct conversation needs exactly two distinct members".into())),
    }
}

fn public_user(user: &UserRecord) -> User {
    User { id: user.id, username: user.username.clone() }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        let mut state = self.state.lock();
        if state.usernames.contains_key(&user.username) {
            return Err(StoreError::Conflict("username"));
        }
        if state.users.contains_key(&user.id) {
            return Err(StoreError::Backend(format!("duplicate user id {}", user.id)));
        }
        state.usernames.insert(user.username.clone(), user.id);
        state.users.insert(user.id, user.clone());
        state.push(Event::UserRegistered { user_id: user.id, username: user.username.clone() });
        Ok(())
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let state = self.state.lock();
        Ok(state.usernames.get(username).and_then(|id| state.users.get(id)).cloned())
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let state = self.state.lock();
        let mut seen = std::collections::HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| state.users.get(id))
            .map(public_user)
            .collect())
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<User>> {
        let state = self.state.lock();
        Ok(state
            .usernames
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit as usize)
            .filter_map(|(_, id)| state.users.get(id))
            .map(public_user)
            .collect())
    }

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        let mut state = self.state.lock();
        state.check_user(session.user_id)?;
        if state.sessions.contains_key(&session.id) {
            return Err(StoreError::Backend(format!("duplicate session id {}", session.id)));
        }
        state.sessions.insert(session.id, session.clone());
        Ok(())
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        Ok(self.state.lock().sessions.get(&id).cloned())
    }

    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RotateOutcome> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let Some(session) = state.sessions.get_mut(&id).filter(|s| !s.revoked) else {
            return Ok(RotateOutcome::Invalid);
        };
        let rotated = state.rotated.entry(id).or_default();
        if session.refresh_hash != presented_hash {
            if !rotated.iter().any(|h| h == presented_hash) {
                return Ok(RotateOutcome::Invalid);
            }
            // A token that was already rotated away is being replayed: treat the session as
            // stolen and kill it.
            session.revoked = true;
            let event = Event::SessionRevoked { user_id: session.user_id, session_id: id };
            state.push(event);
            return Ok(RotateOutcome::Reused);
        }
        if session.refresh_expires_at <= now {
            return Ok(RotateOutcome::Invalid);
        }
        rotated.insert(0, std::mem::take(&mut session.refresh_hash));
        rotated.truncate(crate::ROTATED_KEEP);
        session.refresh_hash = new_hash.to_owned();
        session.refresh_expires_at = new_expires_at;
        session.last_seen_at = now;
        Ok(RotateOutcome::Rotated(session.clone()))
    }

    async fn touch_sessions(&self, ids: &[SessionId], now: Timestamp) -> StoreResult<()> {
        let mut state = self.state.lock();
        for id in ids {
            if let Some(session) = state.sessions.get_mut(id).filter(|s| !s.revoked) {
                session.last_seen_at = now;
            }
        }
        Ok(())
    }

    async fn list_sessions(&self, user_id: UserId) -> StoreResult<Vec<SessionRecord>> {
        let state = self.state.lock();
        let mut sessions: Vec<SessionRecord> =
            state.sessions.values().filter(|s| s.user_id == user_id && !s.revoked).cloned().collect();
        sessions.sort_by_key(|s| Reverse((s.created_at, s.id)));
        Ok(sessions)
    }

    async fn revoke_session(&self, user_id: UserId, id: SessionId) -> StoreResult<bool> {
        let mut state = self.state.lock();
        let Some(session) = state.live_session_of(user_id, id) else {
            return Ok(false);
        };
        session.revoked = true;
        state.push(Event::SessionRevoked { user_id, session_id: id });
        Ok(true)
    }

    async fn revoke_other_sessions(&self, user_id: UserId, keep: SessionId) -> StoreResult<Vec<SessionId>> {
        let mut state = self.state.lock();
        // Same order as list_sessions (newest first) so events come out deterministically.
        let mut others: Vec<(Timestamp, SessionId)> = state
            .sessions
            .values()
            .filter(|s| s.user_id == user_id && !s.revoked && s.id != keep)
            .map(|s| (s.created_at, s.id))
            .collect();
        others.sort_by_key(|&key| Reverse(key));
        let mut revoked = Vec::with_capacity(others.len());
        for (_, id) in others {
            if let Some(session) = state.sessions.get_mut(&id) {
                session.revoked = true;
                state.push(Event::SessionRevoked { user_id, session_id: id });
                revoked.push(id);
            }
        }
        Ok(revoked)
    }

    async fn create_conversation(&self, new: &NewConversation) -> StoreResult<(ConversationRecord, bool)> {
        let mut state = self.state.lock();
        let pair = match new.kind {
            ConversationKind::Direct => Some(direct_pair(&new.members)?),
            ConversationKind::Group => None,
        };
        if let Some(existing) =
            pair.and_then(|p| state.directs.get(&p)).and_then(|id| state.conversations.get(id))
        {
            return Ok((existing.record(), false));
        }
        for (i, member) in new.members.iter().enumerate() {
            state.check_user(*member)?;
            if new.members[..i].contains(member) {
                return Err(StoreError::Backend(format!("duplicate member {member}")));
            }
        }
        if let Some(owner) = new.owner_id {
            state.check_user(owner)?;
        }
        if state.conversations.contains_key(&new.id) {
            return Err(StoreError::Backend(format!("duplicate conversation id {}", new.id)));
        }
        let conversation = Conversation {
            id: new.id,
            kind: new.kind,
            title: new.title.clone(),
            owner_id: new.owner_id,
            created_at: new.created_at,
            members: new
                .members
                .iter()
                .map(|&user_id| Member { user_id, read_seq: 0, joined_at: new.created_at })
                .collect(),
            messages: Vec::new(),
        };
        let record = conversation.record();
        state.conversations.insert(new.id, conversation);
        if let Some(pair) = pair {
            state.directs.insert(pair, new.id);
        }
        state.push(Event::ConversationCreated { conversation_id: new.id });
        Ok((record, true))
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<ConversationRecord>> {
        Ok(self.state.lock().conversations.get(&id).map(Conversation::record))
    }

    async fn membership(&self, id: ConversationId, user_id: UserId) -> StoreResult<Option<Membership>> {
        let state = self.state.lock();
        Ok(state
            .conversations
            .get(&id)
            .and_then(|c| c.member(user_id))
            .map(|m| Membership { read_seq: m.read_seq }))
    }

    async fn read_positions(&self, id: ConversationId) -> StoreResult<Vec<(UserId, u64)>> {
        let state = self.state.lock();
        Ok(state
            .conversations
            .get(&id)
            .map(|c| c.members.iter().map(|m| (m.user_id, m.read_seq)).collect())
            .unwrap_or_default())
    }

    async fn conversations_for_user(&self, user_id: UserId) -> StoreResult<Vec<ConversationSummary>> {
        let state = self.state.lock();
        let mut rows: Vec<(Timestamp, ConversationSummary)> = state
            .conversations
            .values()
            .filter_map(|c| {
                let member = c.member(user_id)?;
                let summary = ConversationSummary {
                    conversation: c.record(),
                    read_seq: member.read_seq,
                    unread: c.unread(member),
                    last_message: c.messages.last().cloned(),
                };
                Some((c.last_activity(), summary))
            })
            .collect();
        // Most recent activity first; ties by id, also descending (v7 ids sort by creation).
        rows.sort_by_key(|(activity, s)| Reverse((*activity, s.conversation.id)));
        Ok(rows.into_iter().map(|(_, s)| s).collect())
    }

    async fn add_member(&self, id: ConversationId, user_id: UserId, now: Timestamp) -> StoreResult<bool> {
        let mut state = self.state.lock();
        let conversation = state.conversations.get(&id).ok_or(StoreError::NotMember)?;
        if conversation.member(user_id).is_some() {
            return Ok(false);
        }
        state.check_user(user_id)?;
        let conversation = state.conversations.get_mut(&id).ok_or(StoreError::NotMember)?;
        conversation.members.push(Member { user_id, read_seq: 0, joined_at: now });
        state.push(Event::MemberAdded { conversation_id: id, user_id });
        Ok(true)
    }

    async fn remove_member(&self, id: ConversationId, user_id: UserId) -> StoreResult<bool> {
        let mut state = self.state.lock();
        let Some(conversation) = state.conversations.get_mut(&id) else {
            return Ok(false);
        };
        let before = conversation.members.len();
        conversation.members.retain(|m| m.user_id != user_id);
        if conversation.members.len() == before {
            return Ok(false);
        }
        state.push(Event::MemberRemoved { conversation_id: id, user_id });
        Ok(true)
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        let mut state = self.state.lock();
        let conversation = state.conversations.get_mut(&id).ok_or(StoreError::NotMember)?;
        conversation.title = Some(title.to_owned());
        state.push(Event::ConversationUpdated { conversation_id: id });
        Ok(())
    }

    async fn contacts(&self, user_id: UserId) -> StoreResult<Vec<UserId>> {
        let state = self.state.lock();
        let mut contacts: Vec<UserId> = state
            .conversations
            .values()
            .filter(|c| c.member(user_id).is_some())
            .flat_map(|c| c.members.iter().map(|m| m.user_id))
            .filter(|id| *id != user_id)
            .collect();
        contacts.sort();
        contacts.dedup();
        Ok(contacts)
    }

    async fn latest_seqs(&self, user_id: UserId) -> StoreResult<Vec<(ConversationId, u64)>> {
        let state = self.state.lock();
        let mut seqs: Vec<(ConversationId, u64)> = state
            .conversations
            .values()
            .filter(|c| c.member(user_id).is_some())
            .map(|c| (c.id, c.last_seq()))
            .collect();
        seqs.sort();
        Ok(seqs)
    }

    async fn insert_message(&self, new: &NewMessage) -> StoreResult<(Message, bool)> {
        let mut state = self.state.lock();
        let conversation = state.conversations.get_mut(&new.conversation_id).ok_or(StoreError::NotMember)?;
        if conversation.member(new.sender_id).is_none() {
            return Err(StoreError::NotMember);
        }
        if let Some(existing) = conversation
            .messages
            .iter()
            .find(|m| m.sender_id == new.sender_id && m.client_msg_id == new.client_msg_id)
        {
            return Ok((existing.clone(), false));
        }
        let message = new.stored_as(conversation.last_seq() + 1);
        conversation.messages.push(message.clone());
        if let Some(member) = conversation.member_mut(new.sender_id) {
            member.read_seq = message.seq;
        }
        state.push(Event::MessageCreated { message: message.clone() });
        Ok((message, true))
    }

    async fn messages(
        &self,
        id: ConversationId,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let state = self.state.lock();
        let Some(conversation) = state.conversations.get(&id) else {
            return Ok(Vec::new());
        };
        let limit = limit as usize;
        let in_range = |m: &&Message| before.is_none_or(|b| m.seq < b);
        let page = if let Some(after) = after {
            conversation
                .messages
                .iter()
                .filter(|m| m.seq > after)
                .filter(in_range)
                .take(limit)
                .cloned()
                .collect()
        } else {
            let matching: Vec<&Message> = conversation.messages.iter().filter(in_range).collect();
            let start = matching.len().saturating_sub(limit);
            matching[start..].iter().map(|m| (*m).clone()).collect()
        };
        Ok(page)
    }

    async fn message(&self, id: ConversationId, message_id: MessageId) -> StoreResult<Option<Message>> {
        let state = self.state.lock();
        Ok(state.conversations.get(&id).and_then(|c| c.messages.iter().find(|m| m.id == message_id)).cloned())
    }

    async fn change_message(
        &self,
        id: ConversationId,
        message_id: MessageId,
        change: &MessageChange,
    ) -> StoreResult<Option<Message>> {
        let mut state = self.state.lock();
        let Some(message) = state.conversations.get_mut(&id).and_then(|c| c.message_mut(message_id)) else {
            return Ok(None);
        };
        if message.deleted {
            return Ok(Some(message.clone()));
        }
        match change {
            MessageChange::Edit { body, at } => {
                message.body = body.clone();
                message.edited_at = Some(*at);
            }
            MessageChange::Delete { .. } => {
                message.body.clear();
                message.deleted = true;
            }
        }
        let message = message.clone();
        state.push(change_event(&message));
        Ok(Some(message))
    }

    async fn mark_read(&self, id: ConversationId, user_id: UserId, seq: u64) -> StoreResult<u64> {
        let mut state = self.state.lock();
        let conversation = state.conversations.get_mut(&id).ok_or(StoreError::NotMember)?;
        let target = seq.min(conversation.last_seq());
        let member = conversation.member_mut(user_id).ok_or(StoreError::NotMember)?;
        if target <= member.read_seq {
            return Ok(member.read_seq);
        }
        member.read_seq = target;
        state.push(Event::MessageRead { conversation_id: id, user_id, seq: target });
        Ok(target)
    }

    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        let state = self.state.lock();
        Ok(state
            .outbox
            .iter()
            .take(limit as usize)
            .map(|(id, row)| OutboxRow {
                id: *id,
                event: row.event.clone(),
                traceparent: row.traceparent.clone(),
            })
            .collect())
    }

    async fn outbox_mark_published(&self, ids: &[i64]) -> StoreResult<()> {
        let mut state = self.state.lock();
        for id in ids {
            state.outbox.remove(id);
        }
        Ok(())
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let state = self.state.lock();
        let oldest_ms = state.outbox.values().next().map(|row| row.created_ms);
        Ok(OutboxBacklog { rows: state.outbox.len() as u64, oldest_ms })
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
