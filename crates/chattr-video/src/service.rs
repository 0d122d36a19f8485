//! [`Video`]: the call service around the [`Call`] state machine.
//!
//! A call lives in the cache as one record (`call:<id>`), changed only by
//! compare-and-swap, so any number of video instances can serve the same calls and a
//! crashed instance loses nothing. Next to it: `callconv:<conversation>` (one live call
//! per conversation) and `calluser:<user>` (the call a user is in: busy detection). Every
//! record expires unless touched, so nothing outlives a crash of every instance.
//!
//! Timers are a due-set in the cache (`calls`, scored by the next deadline): ring timeouts
//! and participants whose device stopped sending keepalives (its socket died, or its
//! gateway crashed) for longer than the grace period. Each instance sweeps it.
//!
//! An ended call stays recorded until its `call.ended` event is on the bus, so a crash
//! between ending and publishing only delays the event (published at least once; the
//! summary writer is idempotent).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chattr_api::v1::{self, CallParticipant, CallState, IceServerList, ServerFrame, Signal};
use chattr_bus::{DynBus, OutgoingRecord};
use chattr_cache::{CacheError, DynCache, RateDecision};
use chattr_core::events::{Event, EVENT_SCHEMA_VERSION};
use chattr_core::{ConversationId, SessionId, UserId};
use chattr_proto::delivery::{user_channel, Delivery, DeliveryKind};
use chattr_proto::messaging::{MessagingClient, MessagingError};
use chattr_proto::video::{CallId, VideoError, VideoService};
use chattr_proto::Principal;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::call::{Call, CallError, CallRules, Effect, Outcome};
use crate::metrics as m;
use crate::{TurnCredentials, VideoSettings};

/// The due-set of call deadlines.
const DUE_SET: &str = "calls";
/// Compare-and-swap attempts before a transition gives up (contention is rare: a few
/// devices act on one call).
const CAS_ATTEMPTS: usize = 32;
/// How often each instance looks for due deadlines.
const SWEEP_EVERY: Duration = Duration::from_millis(200);
/// How often the sweeper counts the live calls for the metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch, read from tokio's clock so paused-time tests move
/// it (wall time at construction plus monotonic time since).
#[derive(Clone, Copy)]
struct Clock {
    wall_at_start_ms: u64,
    started: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Clock { wall_at_start_ms: u64::try_from(wall).unwrap_or(0), started: tokio::time::Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        let since = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start_ms.saturating_add(since)
    }
}

/// One device in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Device {
    /// It leaves the call unless a keepalive arrives before this.
    alive_until_ms: u64,
    audio: bool,
    video: bool,
}

/// What the cache holds per call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: CallId,
    call: Call,
    started_at_ms: u64,
    /// Media and liveness of each participant's device.
    devices: BTreeMap<UserId, Device>,
    /// Set once the call ended, until `call.ended` is on the bus.
    ended: Option<Ended>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ended {
    outcome: Outcome,
    duration_ms: u64,
    participants: Vec<UserId>,
}

impl Record {
    /// The earliest moment something is due: ringing to stop, a silent device to drop,
    /// or the ended event to publish.
    fn next_deadline_ms(&self, now_ms: u64) -> Option<u64> {
        if self.ended.is_some() {
            return Some(now_ms);
        }
        let alive = self.devices.values().map(|d| d.alive_until_ms);
        self.call.next_deadline_ms().into_iter().chain(alive).min()
    }

    /// The call as clients see it.
    fn view(&self) -> v1::Call {
        let state = match (&self.ended, self.call.answered_at_ms()) {
            (Some(_), _) => CallState::Ended,
            (None, Some(_)) => CallState::Active,
            (None, None) => CallState::Ringing,
        };
        let participants = self
            .call
            .participants()
            .map(|(user, session)| {
                let media = self.devices.get(user);
                CallParticipant {
                    user_id: *user,
                    session_id: *session,
                    audio: media.is_none_or(|d| d.audio),
                    video: media.is_none_or(|d| d.video),
                }
            })
            .collect();
        v1::Call {
            id: self.id,
            conversation_id: self.call.conversation_id,
            caller_id: self.call.caller,
            group: self.call.group,
            state,
            participants,
            ringing: self.call.ringing().copied().collect(),
            max_participants: u32::try_from(self.call.max_participants()).unwrap_or(u32::MAX),
            started_at: datetime(self.started_at_ms),
            ring_until: datetime(self.call.ring_until_ms()),
            outcome: self.ended.as_ref().map(|e| e.outcome),
            duration_ms: self.ended.as_ref().map(|e| e.duration_ms),
        }
    }
}

fn datetime(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(i64::try_from(ms).unwrap_or(i64::MAX)).single().unwrap_or_default()
}

fn cache_down(e: CacheError) -> VideoError {
    VideoError::Unavailable(e.to_string())
}

fn refused(e: CallError, max: usize) -> VideoError {
    match e {
        CallError::Ended => VideoError::Forbidden("the call has ended".to_owned()),
        // Not a member of its conversation: exactly what a missing call says.
        CallError::NotInvited => VideoError::NotFound,
        CallError::NotInCall => VideoError::Forbidden("not in this call".to_owned()),
        CallError::Full => VideoError::Full(u32::try_from(max).unwrap_or(u32::MAX)),
    }
}

/// The call id an index key (`callconv:…`, `calluser:…`) holds.
fn call_id_of(raw: &[u8]) -> Option<CallId> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

fn call_key(id: CallId) -> String {
    format!("call:{id}")
}

fn conversation_key(id: ConversationId) -> String {
    format!("callconv:{id}")
}

fn user_key(id: UserId) -> String {
    format!("calluser:{id}")
}

/// The video service.
pub struct Video {
    settings: VideoSettings,
    cache: DynCache,
    bus: DynBus,
    messaging: MessagingClient,
    clock: Clock,
}

impl Video {
    /// Builds the service. Call [`Video::run_timers`] on at least one instance.
    pub fn new(settings: VideoSettings, cache: DynCache, bus: DynBus, messaging: MessagingClient) -> Self {
        Self { settings, cache, bus, messaging, clock: Clock::new() }
    }

    fn rules(&self) -> CallRules {
        CallRules { ring_ms: self.settings.ring_ms(), max_participants: self.settings.max_participants() }
    }

    /// How long cache entries of a call live without being touched: far longer than any
    /// deadline, so only a call nobody serves any more expires.
    fn record_ttl(&self) -> Duration {
        Duration::from_millis(2 * (self.settings.ring_ms() + self.settings.grace_ms()))
            + Duration::from_secs(60)
    }

    /// Reads a call record; `None` if absent (ended and gone, expired, or never existed).
    async fn load(&self, id: CallId) -> Result<Option<(Bytes, Record)>, VideoError> {
        let Some(raw) = self.cache.get(&call_key(id)).await.map_err(cache_down)? else {
            return Ok(None);
        };
        match serde_json::from_slice(&raw) {
            Ok(record) => Ok(Some((raw, record))),
            Err(e) => Err(VideoError::Internal(format!("unreadable call record {id}: {e}"))),
        }
    }

    /// Applies `change` to a call record atomically (re-reading and retrying on a
    /// concurrent change), then carries out its effects. `change` sees the record and the
    /// time and returns the effects, or refuses.
    async fn transition<F>(&self, id: CallId, mut change: F) -> Result<Record, VideoError>
    where
        F: FnMut(&mut Record, u64) -> Result<Vec<Effect>, VideoError> + Send,
    {
        for _ in 0..CAS_ATTEMPTS {
            let Some((raw, mut record)) = self.load(id).await? else {
                return Err(VideoError::NotFound);
            };
            let now = self.clock.now_ms();
            let before = record.view();
            let effects = change(&mut record, now)?;
            if let Some(Effect::Ended { outcome, duration_ms, participants }) =
                effects.iter().find(|e| matches!(e, Effect::Ended { .. })).cloned()
            {
                record.ended = Some(Ended { outcome, duration_ms, participants });
            }
            let new = serde_json::to_vec(&record).map_err(|e| VideoError::Internal(e.to_string()))?;
            if new == raw {
                return Ok(record); // Nothing changed (e.g. answering twice on one device).
            }
            let swapped = self
                .cache
                .compare_and_swap(&call_key(id), Some(&raw), Some(&new), self.record_ttl())
                .await
                .map_err(cache_down)?;
            if swapped {
                // Liveness (keepalives) is nobody else's business: members hear only about
                // what they can see change.
                let announce = record.view() != before;
                self.carry_out(&record, &effects, now, announce).await?;
                return Ok(record);
            }
            metrics::counter!(m::TRANSITION_CONFLICTS).increment(1);
        }
        Err(VideoError::Unavailable("the call is changing too fast, retry".to_owned()))
    }

    /// After a committed transition: index updates, bus events, the `call` frame to every
    /// member's devices, and the next deadline.
    async fn carry_out(
        &self,
        record: &Record,
        effects: &[Effect],
        now: u64,
        announce: bool,
    ) -> Result<(), VideoError> {
        let conversation_id = record.call.conversation_id;
        let mut events = Vec::new();
        for effect in effects {
            match effect {
                Effect::Joined { user, .. } => {
                    self.put(&user_key(*user), record.id.to_string().as_bytes()).await?;
                    events.push(Event::CallParticipantJoined {
                        call_id: record.id,
                        conversation_id,
                        user_id: *user,
                    });
                }
                Effect::Left(user) => {
                    self.forget(&user_key(*user), record.id).await?;
                    events.push(Event::CallParticipantLeft {
                        call_id: record.id,
                        conversation_id,
                        user_id: *user,
                    });
                }
                Effect::Ring(_) | Effect::StopRinging { .. } | Effect::Ended { .. } => {}
            }
        }
        if !events.is_empty() {
            self.publish_events(events).await;
        }
        if announce {
            self.tell_members(record).await?;
        }
        if record.ended.is_some() {
            return self.finish(record).await;
        }
        self.reschedule(record, now).await
    }

    /// Puts the call's next deadline in the due-set (or takes it out when it has none).
    async fn reschedule(&self, record: &Record, now: u64) -> Result<(), VideoError> {
        let member = record.id.to_string();
        match record.next_deadline_ms(now) {
            Some(at) => self.cache.schedule(DUE_SET, &member, i64::try_from(at).unwrap_or(i64::MAX)).await,
            None => self.cache.unschedule(DUE_SET, &member).await,
        }
        .map_err(cache_down)
    }

    /// An ended call: its event goes on the bus, then the call is forgotten.
    async fn finish(&self, record: &Record) -> Result<(), VideoError> {
        let Some(ended) = &record.ended else { return Ok(()) };
        let event = Event::CallEnded {
            call_id: record.id,
            conversation_id: record.call.conversation_id,
            caller_id: record.call.caller,
            outcome: ended.outcome,
            duration_ms: ended.duration_ms,
            participants: ended.participants.clone(),
        };
        // Kept (and due) until the event is out: the sweeper of any instance retries.
        self.bus
            .publish(vec![outgoing(&event)])
            .await
            .map_err(|e| VideoError::Unavailable(format!("publishing call.ended: {e}")))?;
        metrics::counter!(m::CALLS_ENDED, "outcome" => outcome_label(ended.outcome)).increment(1);
        for user in record.call.members() {
            self.forget(&user_key(*user), record.id).await?;
        }
        self.forget(&conversation_key(record.call.conversation_id), record.id).await?;
        let key = call_key(record.id);
        if let Some(raw) = self.cache.get(&key).await.map_err(cache_down)? {
            self.cache
                .compare_and_swap(&key, Some(&raw), None, self.record_ttl())
                .await
                .map_err(cache_down)?;
        }
        self.cache.unschedule(DUE_SET, &record.id.to_string()).await.map_err(cache_down)?;
        debug!(call_id = %record.id, outcome = ?ended.outcome, "call ended");
        Ok(())
    }

    /// Sets `key` to `value` whatever it held.
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), VideoError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.cache.get(key).await.map_err(cache_down)?;
            if self
                .cache
                .compare_and_swap(key, current.as_deref(), Some(value), self.record_ttl())
                .await
                .map_err(cache_down)?
            {
                return Ok(());
            }
        }
        Err(VideoError::Unavailable(format!("cannot write {key}")))
    }

    /// Deletes `key` if it still names call `id` (another call may have taken it since).
    async fn forget(&self, key: &str, id: CallId) -> Result<(), VideoError> {
        let id = id.to_string();
        self.cache
            .compare_and_swap(key, Some(id.as_bytes()), None, self.record_ttl())
            .await
            .map_err(cache_down)?;
        Ok(())
    }

    /// The live call `key` names, if any: (id, record).
    async fn named_call(&self, key: &str) -> Result<Option<(CallId, Record)>, VideoError> {
        let Some(raw) = self.cache.get(key).await.map_err(cache_down)? else { return Ok(None) };
        let Some(id) = call_id_of(&raw) else { return Ok(None) };
        match self.load(id).await? {
            Some((_, record)) if record.ended.is_none() => Ok(Some((id, record))),
            _ => {
                // A leftover of a call that is gone.
                self.forget(key, id).await?;
                Ok(None)
            }
        }
    }

    /// Whether `user` is in a live call other than `except`.
    async fn busy(&self, user: UserId, except: Option<CallId>) -> Result<bool, VideoError> {
        Ok(match self.named_call(&user_key(user)).await? {
            Some((id, record)) => Some(id) != except && record.call.device_of(user).is_some(),
            None => false,
        })
    }

    /// Those of `users` who are in a live call now (one round trip for the common case of
    /// nobody, however large the group).
    async fn in_calls(&self, users: &[UserId]) -> Result<Vec<UserId>, VideoError> {
        let keys: Vec<String> = users.iter().map(|u| user_key(*u)).collect();
        let named = self.cache.get_many(&keys).await.map_err(cache_down)?;
        let mut busy = Vec::new();
        for (user, raw) in users.iter().zip(named) {
            let Some(id) = raw.as_deref().and_then(call_id_of) else { continue };
            if let Some((_, record)) = self.load(id).await? {
                if record.ended.is_none() && record.call.device_of(*user).is_some() {
                    busy.push(*user);
                }
            }
        }
        Ok(busy)
    }

    async fn tell_members(&self, record: &Record) -> Result<(), VideoError> {
        let frame = ServerFrame::Call { req_id: None, call: record.view() };
        let payload = Delivery::serialize(DeliveryKind::Event, &frame)
            .map_err(|e| VideoError::Internal(e.to_string()))?;
        let channels: Vec<String> = record.call.members().map(|m| user_channel(*m)).collect();
        self.cache.publish_many(&channels, payload).await.map_err(cache_down)
    }

    async fn publish_events(&self, events: Vec<Event>) {
        let records = events.iter().map(outgoing).collect();
        // Progress events are informational: a bus outage must not fail the call.
        if let Err(e) = self.bus.publish(records).await {
            warn!(error = %e, "call events not published");
        }
    }

    /// Handles one due call: ringing that ran out, devices that went silent, or an ended
    /// call whose event is still to publish.
    async fn expire(&self, id: CallId) -> Result<(), VideoError> {
        let Some((_, record)) = self.load(id).await? else {
            return self.cache.unschedule(DUE_SET, &id.to_string()).await.map_err(cache_down);
        };
        if record.ended.is_some() {
            return self.finish(&record).await;
        }
        let result = self
            .transition(id, |record, now| {
                let mut effects = record.call.tick(now);
                let silent: Vec<UserId> = record
                    .devices
                    .iter()
                    .filter(|(_, device)| device.alive_until_ms <= now)
                    .map(|(user, _)| *user)
                    .collect();
                for user in silent {
                    record.devices.remove(&user);
                    if let Ok(left) = record.call.leave(user, now) {
                        metrics::counter!(m::PARTICIPANTS_DROPPED).increment(1);
                        effects.extend(left);
                    }
                }
                Ok(effects)
            })
            .await;
        match result {
            // Nothing was due after all (another instance's clock ran slightly ahead, or a
            // keepalive came in): wait for the real deadline rather than poll.
            Ok(record) if record.ended.is_none() => self.reschedule(&record, self.clock.now_ms()).await,
            Ok(_) => Ok(()),
            Err(VideoError::NotFound) => {
                self.cache.unschedule(DUE_SET, &id.to_string()).await.map_err(cache_down)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the timers (ring timeouts, silent devices, unpublished endings) until `stop`
    /// resolves. Every instance may run it: transitions are atomic.
    pub async fn run_timers(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampled: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = every.tick() => {}
            }
            // Every live call has its next deadline in the due-set.
            if sampled.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY) {
                sampled = Some(tokio::time::Instant::now());
                if let Ok(live) = self.cache.scheduled(DUE_SET).await {
                    metrics::gauge!(m::CALLS_ACTIVE).set(live as f64);
                }
            }
            let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
            let due = match self.cache.due(DUE_SET, now, 64).await {
                Ok(due) => due,
                Err(e) => {
                    warn!(error = %e, "call timers cannot read the due-set");
                    continue;
                }
            };
            for member in due {
                let Ok(id) = member.parse::<CallId>() else {
                    let _ = self.cache.unschedule(DUE_SET, &member).await;
                    continue;
                };
                if let Err(e) = self.expire(id).await {
                    warn!(error = %e, call_id = %id, "call timer failed, retrying");
                }
            }
        }
    }

    /// The user's device joins call `id` (answer, join, rejoin after a reconnect).
    async fn join(&self, who: Principal, id: CallId) -> Result<Record, VideoError> {
        if self.busy(who.user_id, Some(id)).await? {
            return Err(VideoError::Busy);
        }
        let alive_until_ms = self.clock.now_ms() + self.settings.grace_ms();
        let max = self.settings.max_participants();
        self.transition(id, |record, now| {
            if record.ended.is_some() {
                return Err(VideoError::Forbidden("the call has ended".to_owned()));
            }
            let effects = record.call.join(who.user_id, who.session_id, now).map_err(|e| refused(e, max))?;
            let device = record.devices.entry(who.user_id).or_insert(Device {
                alive_until_ms,
                audio: true,
                video: true,
            });
            device.alive_until_ms = device.alive_until_ms.max(alive_until_ms);
            Ok(effects)
        })
        .await
    }

    /// Refreshes (or starts) the grace period of the user's device in its call.
    async fn touch(&self, who: Principal) -> Result<bool, VideoError> {
        let Some((id, record)) = self.named_call(&user_key(who.user_id)).await? else {
            return Ok(false);
        };
        if record.call.device_of(who.user_id) != Some(who.session_id) {
            return Ok(false);
        }
        let alive_until_ms = self.clock.now_ms() + self.settings.grace_ms();
        let result = self
            .transition(id, |record, _| {
                if let Some(device) = record.devices.get_mut(&who.user_id) {
                    device.alive_until_ms = device.alive_until_ms.max(alive_until_ms);
                }
                Ok(Vec::new())
            })
            .await;
        match result {
            Ok(record) => Ok(record.call.device_of(who.user_id) == Some(who.session_id)),
            Err(VideoError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "completed",
        Outcome::Missed => "missed",
        Outcome::Declined => "declined",
        Outcome::Cancelled => "cancelled",
    }
}

fn outgoing(event: &Event) -> OutgoingRecord {
    let (topic, key) = event.route();
    let mut headers = vec![
        ("event_type".to_owned(), event.kind().to_owned()),
        ("schema_version".to_owned(), EVENT_SCHEMA_VERSION.to_string()),
    ];
    if let Some(traceparent) = chattr_core::trace::outgoing() {
        headers.push(("traceparent".to_owned(), traceparent));
    }
    OutgoingRecord { topic: topic.to_owned(), key, headers, payload: Bytes::from(event.to_json()) }
}

fn messaging_error(e: MessagingError) -> VideoError {
    match e {
        MessagingError::NotFound | MessagingError::Forbidden(_) => VideoError::NotFound,
        MessagingError::Invalid(v) => VideoError::Invalid(v.message),
        MessagingError::Unavailable(why) => VideoError::Unavailable(why),
        MessagingError::Internal(why) => VideoError::Internal(why),
    }
}

#[async_trait]
impl VideoService for Video {
    async fn ice_servers(&self, who: Principal) -> Result<IceServerList, VideoError> {
        let ttl_secs = self.settings.ttl_secs();
        let now = self.clock.now_ms() / 1000;
        let ice_servers = match (&self.settings.turn_secret, self.settings.turn_urls.is_empty()) {
            (Some(secret), false) => {
                let credentials = TurnCredentials::mint(secret, who.user_id, now + ttl_secs);
                vec![credentials.ice_server(self.settings.turn_urls.clone())]
            }
            _ => Vec::new(),
        };
        Ok(IceServerList { ice_servers, ttl_secs })
    }

    async fn calls_of(
        &self,
        who: Principal,
        conversations: &[ConversationId],
    ) -> Result<Vec<v1::Call>, VideoError> {
        let keys: Vec<String> = conversations.iter().map(|c| conversation_key(*c)).collect();
        // One round trip for the common case: no call anywhere.
        let named = self.cache.get_many(&keys).await.map_err(cache_down)?;
        let mut calls = Vec::new();
        for raw in named.into_iter().flatten() {
            let Some(id) = call_id_of(&raw) else { continue };
            if let Some((_, record)) = self.load(id).await? {
                if record.ended.is_none() && record.call.members().any(|m| *m == who.user_id) {
                    calls.push(record.view());
                }
            }
        }
        Ok(calls)
    }

    async fn start(&self, who: Principal, conversation_id: ConversationId) -> Result<v1::Call, VideoError> {
        let conversation =
            self.messaging.conversation(who.user_id, conversation_id).await.map_err(messaging_error)?;
        let members: Vec<UserId> = conversation.members.iter().map(|m| m.id).collect();
        let group = conversation.kind == v1::ConversationKind::Group;
        for _ in 0..CAS_ATTEMPTS {
            // A call already running in the conversation is joined, not doubled (two people
            // calling each other at once end up in one call).
            if let Some((id, _)) = self.named_call(&conversation_key(conversation_id)).await? {
                return Ok(self.join(who, id).await?.view());
            }
            if self.busy(who.user_id, None).await? {
                return Err(VideoError::Busy);
            }
            // Counted only for calls that would ring someone (joining a live one is free).
            let key = format!("callstart:{}", who.user_id);
            if let RateDecision::Limited { retry_after } =
                self.cache.rate_limit(&key, self.settings.start_limit()).await.map_err(cache_down)?
            {
                metrics::counter!(m::RATE_LIMITED, "bucket" => "call_start").increment(1);
                return Err(VideoError::RateLimited { retry_after });
            }
            let id = uuid::Uuid::now_v7();
            let now = self.clock.now_ms();
            let (mut call, mut effects) =
                Call::start(conversation_id, group, who.user_id, who.session_id, &members, now, self.rules());
            // Invitees in another call are busy: for this call, the same as declining.
            let invitees: Vec<UserId> = members.iter().copied().filter(|m| *m != who.user_id).collect();
            for invitee in self.in_calls(&invitees).await? {
                if let Ok(more) = call.decline(invitee, now) {
                    effects.extend(more);
                }
            }
            let device = Device { alive_until_ms: now + self.settings.grace_ms(), audio: true, video: true };
            let mut record = Record {
                id,
                call,
                started_at_ms: now,
                devices: BTreeMap::from([(who.user_id, device)]),
                ended: None,
            };
            if let Some(Effect::Ended { outcome, duration_ms, participants }) =
                effects.iter().find(|e| matches!(e, Effect::Ended { .. })).cloned()
            {
                record.ended = Some(Ended { outcome, duration_ms, participants });
            }
            let claimed = self
                .cache
                .compare_and_swap(
                    &conversation_key(conversation_id),
                    None,
                    Some(id.to_string().as_bytes()),
                    self.record_ttl(),
                )
                .await
                .map_err(cache_down)?;
            if !claimed {
                continue; // Someone started a call here meanwhile: join that one.
            }
            let raw = serde_json::to_vec(&record).map_err(|e| VideoError::Internal(e.to_string()))?;
            self.cache
                .compare_and_swap(&call_key(id), None, Some(&raw), self.record_ttl())
                .await
                .map_err(cache_down)?;
            metrics::counter!(m::CALLS_STARTED).increment(1);
            self.publish_events(vec![Event::CallStarted {
                call_id: id,
                conversation_id,
                caller_id: who.user_id,
            }])
            .await;
            self.carry_out(&record, &effects, now, true).await?;
            return Ok(record.view());
        }
        Err(VideoError::Unavailable("the conversation's call is changing too fast, retry".to_owned()))
    }

    async fn answer(&self, who: Principal, call_id: CallId) -> Result<v1::Call, VideoError> {
        Ok(self.join(who, call_id).await?.view())
    }

    async fn decline(&self, who: Principal, call_id: CallId) -> Result<(), VideoError> {
        let max = self.settings.max_participants();
        self.transition(call_id, |record, now| {
            record.call.decline(who.user_id, now).map_err(|e| refused(e, max))
        })
        .await?;
        Ok(())
    }

    async fn leave(&self, who: Principal, call_id: CallId) -> Result<(), VideoError> {
        let max = self.settings.max_participants();
        self.transition(call_id, |record, now| {
            if !record.call.members().any(|m| *m == who.user_id) {
                return Err(VideoError::NotFound);
            }
            record.devices.remove(&who.user_id);
            record.call.leave(who.user_id, now).map_err(|e| refused(e, max))
        })
        .await?;
        Ok(())
    }

    async fn media(
        &self,
        who: Principal,
        call_id: CallId,
        audio: bool,
        video: bool,
    ) -> Result<(), VideoError> {
        self.transition(call_id, |record, _| {
            if !record.call.members().any(|m| *m == who.user_id) {
                return Err(VideoError::NotFound);
            }
            if record.call.device_of(who.user_id) != Some(who.session_id) {
                return Err(VideoError::Forbidden("this device is not in the call".to_owned()));
            }
            if let Some(device) = record.devices.get_mut(&who.user_id) {
                device.audio = audio;
                device.video = video;
            }
            Ok(Vec::new())
        })
        .await?;
        Ok(())
    }

    async fn signal(
        &self,
        who: Principal,
        call_id: CallId,
        to: SessionId,
        signal: Signal,
    ) -> Result<(), VideoError> {
        signal.validate().map_err(VideoError::Invalid)?;
        let Some((_, record)) = self.load(call_id).await? else { return Err(VideoError::NotFound) };
        if !record.call.members().any(|m| *m == who.user_id) {
            return Err(VideoError::NotFound);
        }
        if record.ended.is_some() {
            return Err(VideoError::Forbidden("the call has ended".to_owned()));
        }
        if record.call.device_of(who.user_id) != Some(who.session_id) {
            return Err(VideoError::Forbidden("this device is not in the call".to_owned()));
        }
        let target =
            record.call.participants().find(|(user, session)| **session == to && **user != who.user_id);
        let Some((to_user, _)) = target else {
            return Err(VideoError::Forbidden("that device is not in the call".to_owned()));
        };
        let frame = ServerFrame::CallSignal {
            call_id,
            from_user_id: who.user_id,
            from_session_id: who.session_id,
            signal,
        };
        let payload = Delivery::serialize(DeliveryKind::ToSession { session_id: to }, &frame)
            .map_err(|e| VideoError::Internal(e.to_string()))?;
        self.cache.publish(&user_channel(*to_user), payload).await.map_err(cache_down)?;
        metrics::counter!(m::SIGNALS_RELAYED).increment(1);
        Ok(())
    }

    async fn keepalive(&self, who: Principal) -> Result<bool, VideoError> {
        self.touch(who).await
    }

    async fn disconnected(&self, who: Principal) -> Result<(), VideoError> {
        // The grace period starts now; a keepalive or answer from a new socket of the
        // same device keeps it in the call.
        self.touch(who).await.map(|_| ())
    }
}
