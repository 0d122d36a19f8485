//! Fan-out: turns bus events into deliveries on the pub/sub channels of the users they
//! concern. Each event is serialised once and published to all recipients' channels in one
//! call; gateways subscribed to those channels write it to their sockets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chattr_api::v1::ServerFrame;
use chattr_bus::{BusConsumer, BusRecord, DynBus, StartFrom};
use chattr_cache::DynCache;
use chattr_core::events::{Event, EVENT_SCHEMA_VERSION, TOPIC_CONVERSATIONS, TOPIC_USERS};
use chattr_core::trace::TraceContext;
use chattr_core::{ConversationId, UserId};
use chattr_proto::delivery::{user_channel, Delivery, DeliveryKind};
use chattr_store::DynStore;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metrics as m;
use crate::views::conversation_view;

/// Consumer group of the fan-out role.
pub const GROUP: &str = "chattr-fanout";
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Member lists cached; cleared when it grows past this (simple and bounded).
const MEMBER_CACHE_MAX: usize = 10_000;

/// The fan-out worker's state.
struct Fanout {
    store: DynStore,
    cache: DynCache,
    /// Members per conversation. Exact while this instance sees every record of the
    /// conversation's partition: membership events arrive there, in order with its
    /// messages, and invalidate the entry. See [`Fanout::note_offset`] for when it does not.
    members: HashMap<ConversationId, Arc<[UserId]>>,
    /// The last offset handled per topic and partition.
    offsets: HashMap<String, HashMap<u32, u64>>,
}

/// Runs fan-out until `shutdown` resolves.
pub async fn run(bus: DynBus, store: DynStore, cache: DynCache, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut conversations = tokio::select! {
        _ = &mut shutdown => return,
        c = subscribe(&bus, TOPIC_CONVERSATIONS) => c,
    };
    let mut users = tokio::select! {
        _ = &mut shutdown => return,
        c = subscribe(&bus, TOPIC_USERS) => c,
    };
    let mut fanout = Fanout { store, cache, members: HashMap::new(), offsets: HashMap::new() };
    let mut uncommitted = Uncommitted::default();
    loop {
        let due = uncommitted.due();
        let (record, from_conversations) = tokio::select! {
            _ = &mut shutdown => break,
            r = conversations.next() => (r, true),
            r = users.next() => (r, false),
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                uncommitted.commit(&mut conversations, &mut users).await;
                continue;
            }
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "fan-out consumer failed");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        fanout.note_offset(&record);
        // The hop continues the trace of the request that wrote the event (Kafka header).
        let trace = record.header("traceparent").and_then(TraceContext::parse).map(|c| c.child());
        let trace = trace.unwrap_or_else(TraceContext::new_root);
        debug!(trace_id = %trace.trace_hex(), topic = %record.topic, offset = record.offset, "fanning out");
        // Retry one record until it is delivered to pub/sub: skipping it would lose it.
        // Each attempt is a span of its own (a retry is a sibling of the failed attempt).
        let mut attempt = trace;
        let topic = || record.topic.clone();
        while let Err(e) = chattr_core::trace::span("fan-out", topic, attempt, fanout.handle(&record)).await {
            warn!(error = %e, "fan-out delivery failed, retrying");
            metrics::counter!(m::FANOUT_ERRORS).increment(1);
            attempt = trace.sibling();
            tokio::select! {
                _ = &mut shutdown => return uncommitted.commit(&mut conversations, &mut users).await,
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
        if uncommitted.handled(from_conversations, record) {
            uncommitted.commit(&mut conversations, &mut users).await;
        }
    }
    uncommitted.commit(&mut conversations, &mut users).await;
}

/// Records handled since the last commit: the newest of each topic and partition (a commit
/// covers everything before it in its partition). Committing every record cost a broker
/// round trip each (commits are synchronous), which held fan-out to a few hundred events a
/// second; commits now go out every [`COMMIT_EVERY`] or [`COMMIT_AFTER`] records. A crash
/// replays at most that much, which gateways and clients drop as duplicates by seq (and
/// delivery was at least once before, too).
#[derive(Default)]
struct Uncommitted {
    /// Keyed by (from the conversations topic, partition).
    newest: HashMap<(bool, u32), BusRecord>,
    count: usize,
    since: Option<Instant>,
}

/// How long a handled record may stay uncommitted.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// How many handled records force a commit sooner.
const COMMIT_AFTER: usize = 1000;

impl Uncommitted {
    /// Notes a handled record; true when it is time to commit.
    fn handled(&mut self, from_conversations: bool, record: BusRecord) -> bool {
        self.newest.insert((from_conversations, record.partition), record);
        self.count += 1;
        self.since.get_or_insert_with(Instant::now);
        self.count >= COMMIT_AFTER
    }

    /// When the oldest uncommitted record is due, if there is one.
    fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + COMMIT_EVERY)
    }

    /// Commits the newest handled record of every partition.
    async fn commit(&mut self, conversations: &mut Box<dyn BusConsumer>, users: &mut Box<dyn BusConsumer>) {
        for ((from_conversations, _), record) in self.newest.drain() {
            let consumer = if from_conversations { &mut *conversations } else { &mut *users };
            if let Err(e) = consumer.commit(&record).await {
                warn!(error = %e, "fan-out commit failed");
            }
        }
        self.count = 0;
        self.since = None;
    }
}

/// Joins the fan-out group of `topic`, retrying until the bus answers (a bus that is down
/// at start delays fan-out; it must not end it). Each topic has its own group
/// (`fanout.<topic>`), so joining one never waits for a rebalance of the other.
async fn subscribe(bus: &DynBus, topic: &str) -> Box<dyn BusConsumer> {
    let group = format!("{GROUP}.{topic}");
    loop {
        match bus.subscribe(topic, &group, StartFrom::Earliest).await {
            Ok(c) => return c,
            Err(e) => {
                warn!(error = %e, topic, "fan-out cannot subscribe, retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

impl Fanout {
    /// Forgets every cached member list when a partition's records did not all pass
    /// through here: a record that does not follow the last one handled means the
    /// partition was processed elsewhere meanwhile (it moved to another instance and back,
    /// or records are being redelivered), so membership changes may have been missed.
    fn note_offset(&mut self, record: &BusRecord) {
        // No allocation per record: the topic's entry is made once.
        let partitions = match self.offsets.get_mut(record.topic.as_str()) {
            Some(p) => p,
            None => self.offsets.entry(record.topic.clone()).or_default(),
        };
        let previous = partitions.insert(record.partition, record.offset);
        if previous.is_some_and(|last| record.offset != last + 1) && !self.members.is_empty() {
            debug!(topic = %record.topic, partition = record.partition, "partition jumped; member cache cleared");
            self.members.clear();
        }
    }

    async fn handle(&mut self, record: &BusRecord) -> Result<(), String> {
        let expected = EVENT_SCHEMA_VERSION.to_string();
        if let Some(version) = record.header("schema_version").filter(|v| *v != expected) {
            // A newer producer: skipping is safer than misreading (docs/events.md).
            warn!(version, offset = record.offset, "event of unknown schema version skipped");
            return Ok(());
        }
        let event: Event = match serde_json::from_slice(&record.payload) {
            Ok(e) => e,
            Err(e) => {
                // A payload we cannot read will never become readable: skip it loudly.
                warn!(error = %e, topic = %record.topic, offset = record.offset, "undecodable event skipped");
                return Ok(());
            }
        };
        match event {
            Event::MessageCreated { message } => {
                let kind =
                    DeliveryKind::Message { conversation_id: message.conversation_id, seq: message.seq };
                let conv = message.conversation_id;
                let created_at = message.created_at;
                self.publish_to_members(conv, kind, &ServerFrame::Message { message }).await?;
                metrics::counter!(m::FANOUT_MESSAGES).increment(1);
                let lag = (chrono::Utc::now() - created_at).to_std().unwrap_or_default();
                metrics::histogram!(m::FANOUT_COMMIT_TO_PUBLISH).record(lag.as_secs_f64());
            }
            Event::MessageEdited { message } => {
                let conv = message.conversation_id;
                self.publish_to_members(conv, DeliveryKind::Event, &ServerFrame::MessageEdited { message })
                    .await?;
            }
            Event::MessageDeleted { message } => {
                let conv = message.conversation_id;
                self.publish_to_members(conv, DeliveryKind::Event, &ServerFrame::MessageDeleted { message })
                    .await?;
            }
            Event::MessageRead { conversation_id, user_id, seq } => {
                let frame = ServerFrame::Read { conversation_id, user_id, seq };
                self.publish_to_members(conversation_id, DeliveryKind::Event, &frame).await?;
            }
            Event::ConversationCreated { conversation_id }
            | Event::ConversationUpdated { conversation_id }
            | Event::MemberAdded { conversation_id, .. } => {
                self.members.remove(&conversation_id);
                self.conversation_views(conversation_id).await?;
            }
            Event::MemberRemoved { conversation_id, user_id } => {
                self.members.remove(&conversation_id);
                let frame = ServerFrame::ConversationRemoved { conversation_id };
                self.publish(&[user_id], DeliveryKind::Event, &frame).await?;
                self.conversation_views(conversation_id).await?;
            }
            Event::SessionRevoked { user_id, session_id } => {
                let frame = ServerFrame::SessionRevoked { session_id };
                self.publish(&[user_id], DeliveryKind::Revoke { session_id }, &frame).await?;
            }
            // Not fan-out's: users see calls through the video service's own frames.
            Event::UserRegistered { .. }
            | Event::CallStarted { .. }
            | Event::CallParticipantJoined { .. }
            | Event::CallParticipantLeft { .. }
            | Event::CallEnded { .. } => {}
        }
        Ok(())
    }

    async fn members_of(&mut self, id: ConversationId) -> Result<Arc<[UserId]>, String> {
        if let Some(m) = self.members.get(&id) {
            return Ok(m.clone());
        }
        let conv = self.store.conversation(id).await.map_err(|e| e.to_string())?;
        let members: Arc<[UserId]> = conv.map(|c| c.members.into()).unwrap_or_else(|| Arc::from(Vec::new()));
        if self.members.len() >= MEMBER_CACHE_MAX {
            self.members.clear();
        }
        self.members.insert(id, members.clone());
        Ok(members)
    }

    async fn publish_to_members(
        &mut self,
        id: ConversationId,
        kind: DeliveryKind,
        frame: &ServerFrame,
    ) -> Result<(), String> {
        let members = self.members_of(id).await?;
        self.publish(&members, kind, frame).await
    }

    /// Serialises once and publishes to every recipient's channel in one call.
    async fn publish(
        &self,
        recipients: &[UserId],
        kind: DeliveryKind,
        frame: &ServerFrame,
    ) -> Result<(), String> {
        if recipients.is_empty() {
            return Ok(());
        }
        let payload: Bytes = Delivery::serialize(kind, frame).map_err(|e| e.to_string())?;
        let channels: Vec<String> = recipients.iter().map(|u| user_channel(*u)).collect();
        self.cache.publish_many(&channels, payload).await.map_err(|e| e.to_string())
    }

    /// Sends each member its own view of the conversation (read state differs per member).
    async fn conversation_views(&mut self, id: ConversationId) -> Result<(), String> {
        let members = self.members_of(id).await?;
        let users = self.store.users_by_ids(&members).await.map_err(|e| e.to_string())?;
        let users = users.into_iter().map(|u| (u.id, u)).collect();
        for member in members.iter() {
            let summary = self.store.conversation_summary(id, *member).await.map_err(|e| e.to_string())?;
            if let Some(summary) = summary {
                let frame = ServerFrame::Conversation { conversation: conversation_view(summary, &users) };
                self.publish(&[*member], DeliveryKind::Event, &frame).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chattr_api::v1::{ConversationKind, Message};
    use chattr_cache::Cache;
    use chattr_store::{NewConversation, Store, UserRecord};

    use super::*;

    fn record(version: &str, event: &Event) -> BusRecord {
        let (topic, key) = event.route();
        BusRecord {
            topic: topic.to_owned(),
            partition: 0,
            offset: 0,
            key,
            headers: vec![("schema_version".to_owned(), version.to_owned())],
            payload: bytes::Bytes::from(event.to_json()),
            published_ms: None,
        }
    }

    #[tokio::test]
    async fn delivers_known_versions_and_skips_unknown_ones() {
        let store = Arc::new(chattr_store::memory::MemoryStore::default());
        let cache = Arc::new(chattr_cache::memory::MemoryCache::default());
        let user = chattr_core::new_id();
        let now = chattr_core::now();
        let rec = UserRecord { id: user, username: "fan".into(), password_hash: "x".into(), created_at: now };
        store.create_user(&rec).await.unwrap();
        let id = chattr_core::new_id();
        let new = NewConversation {
            id,
            kind: ConversationKind::Group,
            title: Some("g".into()),
            owner_id: Some(user),
            members: vec![user],
            created_at: now,
        };
        store.create_conversation(&new).await.unwrap();
        let mut pubsub = cache.pubsub(16).await.unwrap();
        pubsub.control.subscribe(&[user_channel(user)]).await.unwrap();
        let mut fanout = Fanout { store, cache, members: HashMap::new(), offsets: HashMap::new() };
        let message = Message {
            id: chattr_core::new_id(),
            conversation_id: id,
            seq: 1,
            sender_id: user,
            body: "hi".into(),
            client_msg_id: "c".into(),
            created_at: now,
            edited_at: None,
            deleted: false,
        };
        let event = Event::MessageCreated { message };
        fanout.handle(&record("2", &event)).await.unwrap();
        let nothing = tokio::time::timeout(Duration::from_millis(100), pubsub.messages.recv()).await;
        assert!(nothing.is_err(), "an unknown schema version is not delivered");
        fanout.handle(&record("1", &event)).await.unwrap();
        let (_, payload) =
            tokio::time::timeout(Duration::from_secs(5), pubsub.messages.recv()).await.unwrap().unwrap();
        let delivery = Delivery::decode(payload).unwrap();
        assert_eq!(delivery.kind, DeliveryKind::Message { conversation_id: id, seq: 1 });
    }

    #[tokio::test]
    async fn member_lists_are_forgotten_when_a_partition_was_processed_elsewhere() {
        let store = Arc::new(chattr_store::memory::MemoryStore::default());
        let cache = Arc::new(chattr_cache::memory::MemoryCache::default());
        let mut fanout = Fanout { store, cache, members: HashMap::new(), offsets: HashMap::new() };
        let conversation = chattr_core::new_id();
        let at = |partition: u32, offset: u64| BusRecord {
            topic: "chattr.conversations".into(),
            partition,
            offset,
            key: conversation.to_string(),
            headers: Vec::new(),
            payload: bytes::Bytes::new(),
            published_ms: None,
        };
        fanout.members.insert(conversation, Arc::from(vec![chattr_core::new_id()]));
        for (partition, offset) in [(3, 10), (3, 11), (4, 0), (3, 12)] {
            fanout.note_offset(&at(partition, offset));
            assert!(!fanout.members.is_empty(), "consecutive records keep the cache ({partition}/{offset})");
        }
        // Partition 3 went to another instance for offsets 13..=19, and came back.
        fanout.note_offset(&at(3, 20));
        assert!(fanout.members.is_empty(), "a jump means membership events may have been missed");
        // A redelivery (going back) is the same.
        fanout.members.insert(conversation, Arc::from(vec![chattr_core::new_id()]));
        fanout.note_offset(&at(3, 21));
        assert!(!fanout.members.is_empty());
        fanout.note_offset(&at(3, 15));
        assert!(fanout.members.is_empty());
    }
}
