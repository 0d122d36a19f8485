//! One WebSocket connection, run in one task (no task per direction).
//!
//! Order of events: the first frame must be `auth`; the socket is then registered with
//! the hub (its user's channel subscribed) BEFORE the snapshot of latest seqs is taken and
//! missed messages are replayed, so nothing committed in between can be missed. Live
//! message deliveries are then deduped and ordered per conversation by seq; a gap (an
//! event dropped on the way) is filled from the store, or answered with `resync`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use chattr_api::v1::{close_codes, codes, ClientFrame, ConversationCursor, SendMessage, ServerFrame, User};
use chattr_core::trace::TraceContext;
use chattr_core::ConversationId;
use chattr_proto::delivery::{Delivery, DeliveryKind};
use chattr_proto::messaging::{HistoryQuery, MessagingError};
use chattr_proto::{ErrorInfo, Principal};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use uuid::Uuid;

use super::beats::Beat;
use super::limiter::FrameLimiter;
use crate::hub::Slot;
use crate::metrics as m;
use crate::GatewayState;

/// Deliveries written per flush at most (coalesced writes).
const COALESCE: usize = 64;
/// Page size when replaying or filling gaps.
const PAGE: u32 = 100;
/// A write that makes no progress for this long means the peer stopped reading: the
/// socket is dropped (it could not even receive a close frame).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat intervals without any frame from the client before it counts as gone.
const IDLE_HEARTBEATS: u32 = 3;
/// How long a closing socket waits for the peer's close answer.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Refused frames in a row before a flooding socket is closed.
const FLOOD_LIMIT: u32 = 100;

/// Why a connection ends.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer went away or the socket failed.
    Gone,
}

/// What a read produced.
enum Incoming {
    Frame(ClientFrame),
    /// Invalid input: answered with an `error` frame, the connection stays.
    Bad {
        req_id: Option<String>,
        code: &'static str,
        message: String,
    },
}

impl Incoming {
    /// The frame's `type`, or `invalid` (for metrics, logs and spans).
    fn type_name(&self) -> &'static str {
        match self {
            Incoming::Frame(frame) => frame.type_name(),
            Incoming::Bad { .. } => "invalid",
        }
    }
}

/// Runs a socket to completion.
pub async fn run(socket: WebSocket, state: GatewayState) {
    let (sink, stream) = socket.split();
    let limiter = FrameLimiter::new(state.settings.frames_per_second, state.settings.frame_burst);
    let mut conn = Conn {
        sink,
        stream,
        state,
        limiter,
        delivered: HashMap::new(),
        last_heard: tokio::time::Instant::now(),
        slot: None,
        in_call: false,
        goodbye: None,
    };
    let end = conn.run().await;
    if let End::Close(code, reason) = end {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        let sent = tokio::time::timeout(CLOSE_GRACE, conn.sink.send(WsMessage::Close(Some(frame)))).await;
        if matches!(sent, Ok(Ok(()))) {
            // Keep reading (and discarding) until the peer answers the close: dropping a
            // socket with unread input makes the kernel send a reset, and the peer might
            // never see our close code.
            let drain = async { while let Some(Ok(_)) = conn.stream.next().await {} };
            let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, conn.sink.close()).await;
    // The socket counts as open until its presence is gone (a shutdown waits for that).
    if let Some(sent) = conn.goodbye.take() {
        let _ = sent.await;
    }
}

struct Conn {
    sink: SplitSink<WebSocket, WsMessage>,
    stream: SplitStream<WebSocket>,
    state: GatewayState,
    limiter: FrameLimiter,
    /// Last seq delivered per conversation: dedupe, order and gap detection.
    delivered: HashMap<ConversationId, u64>,
    /// When the client last sent anything (frames, pongs): dead peers are closed.
    last_heard: tokio::time::Instant,
    /// This socket's hub slot once registered (writes give up when it is kicked).
    slot: Option<Arc<Slot>>,
    /// This device joined a call: keepalives go to the video service, and a goodbye
    /// when the socket ends.
    in_call: bool,
    /// Answered once this connection's presence was taken down (batched: [`Goodbyes`]).
    ///
    /// [`Goodbyes`]: super::Goodbyes
    goodbye: Option<oneshot::Receiver<()>>,
}

/// The `type` and `req_id` of a frame, read before the full parse so errors can say
/// which request failed and tell an unknown type from wrong field types.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    req_id: Option<serde_json::Value>,
}

const KNOWN_TYPES: &[&str] = &[
    "auth",
    "send",
    "edit",
    "delete",
    "read",
    "typing",
    "ping",
    "call_start",
    "call_answer",
    "call_decline",
    "call_leave",
    "call_media",
    "call_signal",
];

/// While this device is in a call, how often the gateway tells the video service its
/// socket is alive (the service drops a device silent for its grace period, ≥ 4 s).
const CALL_KEEPALIVE: Duration = Duration::from_secs(3);

impl Conn {
    async fn run(&mut self) -> End {
        let who = match Box::pin(self.authenticate()).await {
            Ok(a) => a,
            Err(end) => return end,
        };
        let (principal, cursors) = who;
        let (slot, mut rx) = match self.state.hub.register(principal).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "hub registration failed");
                return End::Close(close_codes::TRY_AGAIN_LATER, "temporarily unavailable");
            }
        };
        self.slot = Some(slot.clone());
        let connection_id = Uuid::now_v7().to_string();
        // The session may have been revoked between the token check and the subscription
        // (its revoke event would then have found no socket): check again now. The check
        // goes with this gateway's batch of heartbeats, which also marks the connection
        // present and reads what `ready` carries: the user's profile, and the snapshot
        // (read after subscribing, so no message falls between it and the live deliveries).
        let end = match self.state.beats.greet(principal, &connection_id).await {
            Ok(Beat::Live { checked: true, latest: Some(latest), user: Some(user) }) => {
                self.serve(principal, cursors, (user, latest), &slot, &mut rx, &connection_id).await
            }
            Ok(Beat::Revoked) => End::Close(close_codes::SESSION_REVOKED, "session revoked"),
            Ok(Beat::Live { .. }) | Err(_) => {
                End::Close(close_codes::TRY_AGAIN_LATER, "temporarily unavailable")
            }
        };

        self.state.hub.unregister(principal.user_id, &slot).await;
        self.goodbye = Some(self.state.goodbyes.say(principal.user_id, connection_id));
        if self.in_call {
            if let Err(e) = self.state.video.disconnected(principal).await {
                warn!(error = %e, "call goodbye failed");
            }
        }
        end
    }

    /// Waits for the `auth` frame and verifies its token.
    async fn authenticate(&mut self) -> Result<(Principal, BTreeMap<ConversationId, u64>), End> {
        let timeout = Duration::from_secs(self.state.settings.auth_timeout_secs);
        let first = match tokio::time::timeout(timeout, self.read()).await {
            Err(_) => return Err(End::Close(close_codes::UNAUTHORIZED, "authentication timed out")),
            Ok(Err(end)) => return Err(end),
            Ok(Ok(incoming)) => incoming,
        };
        let (token, cursors) = match first {
            Incoming::Frame(ClientFrame::Auth { token, cursors }) => (token, cursors),
            Incoming::Frame(_) => {
                self.error(None, codes::NOT_AUTHENTICATED, "the first frame must be auth").await?;
                return Err(End::Close(close_codes::UNAUTHORIZED, "not authenticated"));
            }
            Incoming::Bad { req_id, code, message } => {
                self.error(req_id, code, &message).await?;
                return Err(End::Close(close_codes::UNAUTHORIZED, "not authenticated"));
            }
        };
        match self.state.tokens.check(token).await {
            // Authenticating marked the session seen.
            Ok(who) => Ok((who, cursors)),
            Err(e) => {
                self.error(None, e.code(), &e.public_message()).await?;
                Err(End::Close(close_codes::UNAUTHORIZED, "authentication failed"))
            }
        }
    }

    async fn serve(
        &mut self,
        who: Principal,
        cursors: BTreeMap<ConversationId, u64>,
        ready: (User, Vec<(ConversationId, u64)>),
        slot: &Arc<Slot>,
        rx: &mut mpsc::Receiver<Arc<Delivery>>,
        connection_id: &str,
    ) -> End {
        // Subscribed already: now the snapshot, then the replay.
        // Boxed: the rarely taken, deep code paths would otherwise size the state every idle
        // socket keeps (a future is as large as its largest suspended state).
        if let Err(end) = Box::pin(self.snapshot_and_replay(who, cursors, ready)).await {
            return end;
        }
        let period = Duration::from_secs(self.state.settings.heartbeat_secs.max(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut shutdown = self.state.shutdown.clone();
        // Only sockets in a call pay for this timer.
        let mut call_keepalive: Option<Box<tokio::time::Interval>> = None;
        // A heartbeat handed to the gateway's batcher, until it is answered.
        let mut beat: Option<oneshot::Receiver<Beat>> = None;
        loop {
            match (self.in_call, call_keepalive.is_some()) {
                (true, false) => {
                    let start = tokio::time::Instant::now() + CALL_KEEPALIVE;
                    call_keepalive = Some(Box::new(tokio::time::interval_at(start, CALL_KEEPALIVE)));
                }
                (false, true) => call_keepalive = None,
                _ => {}
            }
            let step = tokio::select! {
                incoming = self.read() => match incoming {
                    Ok(incoming) => {
                        // Each frame starts a trace that follows its work to every hop.
                        let trace = TraceContext::new_root();
                        let frame_type = incoming.type_name();
                        debug!(trace_id = %trace.trace_hex(), frame = frame_type, "frame received");
                        let handled = self.handle(who, incoming);
                        Box::pin(chattr_core::trace::span("ws frame", || frame_type.to_owned(), trace, handled)).await
                    }
                    Err(end) => Err(end),
                },
                delivery = rx.recv() => match delivery {
                    Some(d) => Box::pin(self.deliver_batch(who, d, rx)).await,
                    None => Err(End::Gone),
                },
                code = slot.kicked() => Err(End::Close(code, "too slow: reconnect and resume")),
                _ = heartbeat.tick() => self.heartbeat().map(|()| {
                    // The session check, the presence refresh and the snapshot are batched
                    // with every other socket's heartbeat on this gateway; the socket goes
                    // on serving until the answer arrives.
                    if beat.is_none() {
                        beat = Some(self.state.beats.request(who, connection_id));
                    }
                }),
                answer = async { beat.as_mut().expect("guarded by the condition").await }, if beat.is_some() => {
                    beat = None;
                    Box::pin(self.beaten(answer)).await
                }
                _ = tick(call_keepalive.as_deref_mut()) => Box::pin(self.call_keepalive(who)).await,
                _ = shutting_down(&mut shutdown) => {
                    metrics::counter!(m::SHUTDOWN_CLOSES).increment(1);
                    Err(End::Close(close_codes::GOING_AWAY, "server shutting down"))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends `ready` (the user's profile, and each conversation's last seq), replays what
    /// each cursor missed (or `resync`), then `synced`.
    async fn snapshot_and_replay(
        &mut self,
        who: Principal,
        cursors: BTreeMap<ConversationId, u64>,
        (user, latest): (User, Vec<(ConversationId, u64)>),
    ) -> Result<(), End> {
        let ready = ServerFrame::Ready {
            user,
            session_id: who.session_id,
            conversations: latest
                .iter()
                .map(|(id, last_seq)| ConversationCursor { id: *id, last_seq: *last_seq })
                .collect(),
            heartbeat_interval_secs: self.state.settings.heartbeat_secs,
        };
        self.send(&ready).await?;
        for (id, last_seq) in latest {
            // Without a cursor the client starts live from the snapshot (it pages history).
            let cursor = cursors.get(&id).copied().unwrap_or(last_seq);
            if cursor > last_seq {
                // The client has seen more than the store holds (restored from a backup):
                // what it holds past `last_seq` is gone, and new messages will reuse those
                // seqs. Tell it to start over from the store's state.
                metrics::counter!(m::RESUMES, "result" => "resync").increment(1);
                self.delivered.insert(id, last_seq);
                self.feed(&ServerFrame::Resync { conversation_id: id, last_seq }).await?;
                continue;
            }
            self.delivered.insert(id, cursor);
            if cursor < last_seq {
                // Replayed, or told to resync past the replay limit (counted there).
                self.catch_up(who, id, last_seq).await?;
            }
            let replayable = last_seq - cursor <= self.state.settings.replay_limit;
            if cursors.contains_key(&id) && replayable {
                metrics::counter!(m::RESUMES, "result" => "ok").increment(1);
            }
        }
        self.send(&ServerFrame::Synced).await?;
        // Calls already ringing or running in the user's conversations: this device rings
        // too, or can rejoin after a reconnect. (Later changes arrive as live events: the
        // socket is subscribed already.)
        let conversations: Vec<ConversationId> = self.delivered.keys().copied().collect();
        let calls = if conversations.is_empty() {
            Ok(Vec::new())
        } else {
            self.state.video.calls_of(who, &conversations).await
        };
        match calls {
            Ok(calls) => {
                for call in calls {
                    self.feed(&ServerFrame::Call { req_id: None, call }).await?;
                }
            }
            Err(e) => warn!(error = %e, "live calls not looked up"),
        }
        io(self.sink.flush(), self.slot.as_deref()).await
    }

    /// Delivers messages after `delivered[id]` up to `until` from the store, or `resync`
    /// when that is more than the replay limit.
    async fn catch_up(&mut self, who: Principal, id: ConversationId, until: u64) -> Result<(), End> {
        let mut last = self.delivered.get(&id).copied().unwrap_or(0);
        if until.saturating_sub(last) > self.state.settings.replay_limit {
            metrics::counter!(m::RESUMES, "result" => "resync").increment(1);
            self.delivered.insert(id, until);
            return self.feed(&ServerFrame::Resync { conversation_id: id, last_seq: until }).await;
        }
        while last < until {
            let q = HistoryQuery { after_seq: Some(last), before_seq: Some(until + 1), limit: Some(PAGE) };
            let page = match self.state.messaging.history(who.user_id, id, q).await {
                Ok(p) => p,
                // Removed from the conversation meanwhile: nothing more to deliver.
                Err(MessagingError::NotFound) => break,
                // Skipping would lose messages: make the client resume from its cursor.
                Err(e) => {
                    warn!(error = %e, "catch-up failed");
                    return Err(End::Close(close_codes::TRY_AGAIN_LATER, "temporarily unavailable"));
                }
            };
            let Some(newest) = page.last().map(|m| m.seq) else { break };
            for message in page {
                self.feed(&ServerFrame::Message { message }).await?;
            }
            last = newest;
        }
        self.delivered.insert(id, last.max(until));
        Ok(())
    }

    /// Handles one delivery and up to `COALESCE` more already queued, then flushes once.
    async fn deliver_batch(
        &mut self,
        who: Principal,
        first: Arc<Delivery>,
        rx: &mut mpsc::Receiver<Arc<Delivery>>,
    ) -> Result<(), End> {
        self.deliver(who, first).await?;
        for _ in 0..COALESCE {
            match rx.try_recv() {
                Ok(d) => self.deliver(who, d).await?,
                Err(_) => break,
            }
        }
        io(self.sink.flush(), self.slot.as_deref()).await
    }

    async fn deliver(&mut self, who: Principal, delivery: Arc<Delivery>) -> Result<(), End> {
        match delivery.kind {
            DeliveryKind::Message { conversation_id, seq } => {
                // A conversation this socket has not seen yet (joined after connecting)
                // starts at 0, so its first messages cannot silently go missing either.
                let last = self.delivered.get(&conversation_id).copied().unwrap_or(0);
                match last {
                    last if seq <= last => {
                        metrics::counter!(m::DUPLICATES_DROPPED).increment(1);
                        return Ok(());
                    }
                    last if seq > last + 1 => {
                        metrics::counter!(m::GAPS_FILLED).increment(1);
                        self.catch_up(who, conversation_id, seq - 1).await?;
                        if self.delivered.get(&conversation_id).copied().unwrap_or(0) >= seq {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
                self.delivered.insert(conversation_id, seq);
                let started = std::time::SystemTime::now();
                self.feed_raw(&delivery).await?;
                let hot = m::per_delivery();
                hot.delivered.increment(1);
                if let Some(committed) = delivery.meta.committed_ms {
                    let waited_ms = chattr_core::now().timestamp_millis().saturating_sub(committed).max(0);
                    hot.latency.record(waited_ms as f64 / 1000.0);
                }
                if let Some(sender) = delivery.meta.trace {
                    let hop = sender.child();
                    debug!(trace_id = %hop.trace_hex(), %conversation_id, seq, "message written to socket");
                    chattr_core::trace::record(
                        "deliver",
                        || format!("{conversation_id}/{seq}"),
                        hop,
                        started,
                    );
                }
                Ok(())
            }
            DeliveryKind::Revoke { session_id } => {
                if session_id == who.session_id {
                    self.feed_raw(&delivery).await?;
                    let _ = io(self.sink.flush(), self.slot.as_deref()).await;
                    return Err(End::Close(close_codes::SESSION_REVOKED, "session revoked"));
                }
                Ok(())
            }
            DeliveryKind::Event | DeliveryKind::Ephemeral | DeliveryKind::ToSession { .. } => {
                self.feed_raw(&delivery).await
            }
        }
    }

    /// A heartbeat is due: closes a socket the client has gone quiet on.
    fn heartbeat(&self) -> Result<(), End> {
        let period = Duration::from_secs(self.state.settings.heartbeat_secs.max(1));
        if self.last_heard.elapsed() > period * IDLE_HEARTBEATS {
            return Err(End::Close(close_codes::IDLE, "no traffic from client"));
        }
        Ok(())
    }

    /// Finishes a heartbeat once its batch is answered.
    async fn beaten(&mut self, beat: Result<Beat, oneshot::error::RecvError>) -> Result<(), End> {
        let latest = match beat {
            Ok(Beat::Revoked) => return Err(End::Close(close_codes::SESSION_REVOKED, "session revoked")),
            Ok(Beat::Live { latest, .. }) => latest,
            Err(_) => None,
        };
        // Browsers answer protocol pings by themselves, so an idle but healthy page stays.
        io(self.sink.feed(WsMessage::Ping(bytes::Bytes::new())), self.slot.as_deref()).await?;
        match latest {
            Some(latest) => self.send(&ServerFrame::Heartbeat { latest: latest.into_iter().collect() }).await,
            // The batch logged why; the next heartbeat tries again.
            None => io(self.sink.flush(), self.slot.as_deref()).await,
        }
    }

    /// Handles one client frame after authentication.
    async fn handle(&mut self, who: Principal, incoming: Incoming) -> Result<(), End> {
        // Every frame counts against the limit, invalid ones too: errors cost work as well.
        if !self.limiter.allow() {
            metrics::counter!(m::RATE_LIMITED, "bucket" => "frames").increment(1);
            if self.limiter.refused_in_a_row > FLOOD_LIMIT {
                return Err(End::Close(close_codes::FLOOD, "too many frames"));
            }
            let req_id = match &incoming {
                Incoming::Frame(frame) => req_id_of(frame),
                Incoming::Bad { req_id, .. } => req_id.clone(),
            };
            return self.error(req_id, codes::RATE_LIMITED, "too many frames, slow down").await;
        }
        let frame = match incoming {
            Incoming::Frame(f) => f,
            Incoming::Bad { req_id, code, message } => return self.error(req_id, code, &message).await,
        };
        let messaging = self.state.messaging.clone();
        let user = who.user_id;
        match frame {
            ClientFrame::Auth { .. } => self.error(None, codes::BAD_REQUEST, "already authenticated").await,
            ClientFrame::Send { req_id, conversation_id, client_msg_id, body } => {
                let result = messaging.send(user, conversation_id, SendMessage { client_msg_id, body }).await;
                match result {
                    Ok((message, _)) => self.send(&ServerFrame::Ack { req_id, message }).await,
                    Err(e) => self.error(Some(req_id), e.code(), &e.public_message()).await,
                }
            }
            ClientFrame::Edit { req_id, conversation_id, message_id, body } => {
                match messaging.edit(user, conversation_id, message_id, &body).await {
                    Ok(message) => self.send(&ServerFrame::Ack { req_id, message }).await,
                    Err(e) => self.error(Some(req_id), e.code(), &e.public_message()).await,
                }
            }
            ClientFrame::Delete { req_id, conversation_id, message_id } => {
                match messaging.delete(user, conversation_id, message_id).await {
                    Ok(message) => self.send(&ServerFrame::Ack { req_id, message }).await,
                    Err(e) => self.error(Some(req_id), e.code(), &e.public_message()).await,
                }
            }
            ClientFrame::Read { req_id, conversation_id, seq } => {
                match (messaging.mark_read(user, conversation_id, seq).await, req_id) {
                    (Ok(_), Some(req_id)) => self.send(&ServerFrame::Ok { req_id }).await,
                    (Ok(_), None) => Ok(()),
                    (Err(e), req_id) => self.error(req_id, e.code(), &e.public_message()).await,
                }
            }
            ClientFrame::Typing { conversation_id } => match messaging.typing(user, conversation_id).await {
                Ok(()) => Ok(()),
                Err(e) => self.error(None, e.code(), &e.public_message()).await,
            },
            ClientFrame::Ping { req_id } => self.send(&ServerFrame::Pong { req_id }).await,
            call => Box::pin(self.handle_call(who, call)).await,
        }
    }

    /// Handles a `call_*` frame.
    async fn handle_call(&mut self, who: Principal, frame: ClientFrame) -> Result<(), End> {
        let video = self.state.video.clone();
        let (req_id, result) = match frame {
            ClientFrame::CallStart { req_id, conversation_id } => {
                let result = video.start(who, conversation_id).await;
                return self.answer_call(Some(req_id), result).await;
            }
            ClientFrame::CallAnswer { req_id, call_id } => {
                let result = video.answer(who, call_id).await;
                return self.answer_call(Some(req_id), result).await;
            }
            ClientFrame::CallDecline { req_id, call_id } => (Some(req_id), video.decline(who, call_id).await),
            ClientFrame::CallLeave { req_id, call_id } => {
                let result = video.leave(who, call_id).await;
                if result.is_ok() {
                    self.in_call = false;
                }
                (Some(req_id), result)
            }
            ClientFrame::CallMedia { req_id, call_id, audio, video: camera } => {
                (req_id, video.media(who, call_id, audio, camera).await)
            }
            ClientFrame::CallSignal { req_id, call_id, to_session_id, signal } => {
                (req_id, video.signal(who, call_id, to_session_id, signal).await)
            }
            _ => return Ok(()),
        };
        match (result, req_id) {
            (Ok(()), Some(req_id)) => self.send(&ServerFrame::Ok { req_id }).await,
            (Ok(()), None) => Ok(()),
            (Err(e), req_id) => self.error(req_id, e.code(), &e.public_message()).await,
        }
    }

    /// Answers `call_start`/`call_answer` with the call, and notes that this device is in
    /// it (for keepalives).
    async fn answer_call(
        &mut self,
        req_id: Option<String>,
        result: Result<chattr_api::v1::Call, chattr_proto::video::VideoError>,
    ) -> Result<(), End> {
        match result {
            Ok(call) => {
                self.in_call = call.state != chattr_api::v1::CallState::Ended;
                self.send(&ServerFrame::Call { req_id, call }).await
            }
            Err(e) => self.error(req_id, e.code(), &e.public_message()).await,
        }
    }

    /// Tells the video service this device's socket is alive; stops once it is in no call.
    async fn call_keepalive(&mut self, who: Principal) -> Result<(), End> {
        match self.state.video.keepalive(who).await {
            Ok(in_call) => self.in_call = in_call,
            Err(e) => warn!(error = %e, "call keepalive failed"),
        }
        Ok(())
    }

    /// Reads the next text frame. Control frames are skipped; invalid input becomes
    /// `Incoming::Bad`; a closed or failed socket ends the connection.
    async fn read(&mut self) -> Result<Incoming, End> {
        loop {
            let message = match self.stream.next().await {
                None => return Err(End::Gone),
                Some(Err(e)) => {
                    let text = e.to_string();
                    debug!(error = %text, "websocket read failed");
                    if text.contains("too long") || text.contains("Space limit") {
                        return Err(End::Close(close_codes::TOO_LARGE, "message too large"));
                    }
                    return Err(End::Gone);
                }
                Some(Ok(m)) => m,
            };
            self.last_heard = tokio::time::Instant::now();
            let text = match message {
                WsMessage::Text(text) => text,
                WsMessage::Binary(_) => {
                    return Ok(bad(
                        None,
                        codes::BAD_REQUEST,
                        "binary frames are not supported; send JSON text",
                    ))
                }
                WsMessage::Close(_) => return Err(End::Gone),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            };
            let incoming = if text.len() > self.state.settings.max_frame_bytes {
                bad(None, codes::TOO_LARGE, "frame too large")
            } else {
                parse(text.as_str())
            };
            metrics::counter!(m::FRAMES_IN, "type" => incoming.type_name()).increment(1);
            return Ok(incoming);
        }
    }

    /// Queues a frame without flushing.
    async fn feed(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let json = serde_json::to_string(frame).map_err(|_| End::Close(1011, "internal error"))?;
        io(self.sink.feed(WsMessage::Text(Utf8Bytes::from(json))), self.slot.as_deref()).await?;
        metrics::counter!(m::FRAMES_OUT, "type" => frame.type_name()).increment(1);
        Ok(())
    }

    /// Queues pre-serialised frame bytes (fan-out serialised them once for everyone).
    async fn feed_raw(&mut self, delivery: &Delivery) -> Result<(), End> {
        let Ok(text) = Utf8Bytes::try_from(delivery.frame.clone()) else {
            warn!("non-utf8 delivery dropped");
            return Ok(());
        };
        io(self.sink.feed(WsMessage::Text(text)), self.slot.as_deref()).await?;
        match delivery.meta.frame_type {
            // The hot path: its counter handle is cached.
            Some("message") => m::per_delivery().message_frames.increment(1),
            other => metrics::counter!(m::FRAMES_OUT, "type" => other.unwrap_or("unknown")).increment(1),
        }
        Ok(())
    }

    /// Writes a frame and flushes.
    async fn send(&mut self, frame: &ServerFrame) -> Result<(), End> {
        self.feed(frame).await?;
        io(self.sink.flush(), self.slot.as_deref()).await
    }

    async fn error(&mut self, req_id: Option<String>, code: &str, message: &str) -> Result<(), End> {
        let frame = ServerFrame::Error { req_id, code: code.to_owned(), message: message.to_owned() };
        self.send(&frame).await
    }
}

/// Runs a socket write with [`WRITE_TIMEOUT`], abandoned at once if the hub kicks the
/// socket for overflowing its queue: a peer that stops reading cannot pin the connection
/// (and its queue, presence and subscription). The close frame that follows a kick gets a
/// short grace period only.
async fn io<E>(
    write: impl std::future::Future<Output = Result<(), E>>,
    slot: Option<&Slot>,
) -> Result<(), End> {
    let kicked = async {
        match slot {
            Some(slot) => slot.kicked().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = tokio::time::timeout(WRITE_TIMEOUT, write) => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                metrics::counter!(m::WRITE_TIMEOUTS).increment(1);
                Err(End::Gone)
            }
        },
        code = kicked => Err(End::Close(code, "too slow: reconnect and resume")),
    }
}

/// The next tick of an optional interval (never, without one).
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves once shutdown was signalled (the watch guard is dropped before returning, so
/// the connection future stays `Send`).
async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}

fn bad(req_id: Option<String>, code: &'static str, message: impl Into<String>) -> Incoming {
    Incoming::Bad { req_id, code, message: message.into() }
}

/// Parses a text frame into a client frame or a precise error.
fn parse(text: &str) -> Incoming {
    let head: Head = match serde_json::from_str(text) {
        Ok(h) => h,
        Err(_) => return bad(None, codes::BAD_REQUEST, "malformed JSON: expected an object with a \"type\""),
    };
    let req_id = match head.req_id {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    let Some(kind) = head.kind else {
        return bad(req_id, codes::BAD_REQUEST, "missing \"type\"");
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        let shown: String = kind.chars().take(32).collect();
        return bad(req_id, codes::UNKNOWN_TYPE, format!("unknown frame type {shown:?}"));
    }
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => Incoming::Frame(frame),
        Err(e) => bad(req_id, codes::BAD_REQUEST, format!("invalid {kind} frame: {e}")),
    }
}

fn req_id_of(frame: &ClientFrame) -> Option<String> {
    match frame {
        ClientFrame::Send { req_id, .. }
        | ClientFrame::Edit { req_id, .. }
        | ClientFrame::Delete { req_id, .. } => Some(req_id.clone()),
        ClientFrame::CallStart { req_id, .. }
        | ClientFrame::CallAnswer { req_id, .. }
        | ClientFrame::CallDecline { req_id, .. }
        | ClientFrame::CallLeave { req_id, .. } => Some(req_id.clone()),
        ClientFrame::Read { req_id, .. }
        | ClientFrame::Ping { req_id }
        | ClientFrame::CallMedia { req_id, .. }
        | ClientFrame::CallSignal { req_id, .. } => req_id.clone(),
        ClientFrame::Auth { .. } | ClientFrame::Typing { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(i: Incoming) -> &'static str {
        match i {
            Incoming::Bad { code, .. } => code,
            Incoming::Frame(_) => "frame",
        }
    }

    #[test]
    fn parse_tells_errors_apart() {
        assert_eq!(code_of(parse("{nope")), codes::BAD_REQUEST);
        assert_eq!(code_of(parse("[1,2]")), codes::BAD_REQUEST);
        assert_eq!(code_of(parse(r#"{"type":"dance"}"#)), codes::UNKNOWN_TYPE);
        assert_eq!(code_of(parse(r#"{"type":"ping"}"#)), "frame");
        match parse(r#"{"type":"send","req_id":"r1","conversation_id":5,"client_msg_id":"c","body":"x"}"#) {
            Incoming::Bad { req_id, code, .. } => {
                assert_eq!(req_id.as_deref(), Some("r1"));
                assert_eq!(code, codes::BAD_REQUEST);
            }
            Incoming::Frame(_) => panic!("wrong types must not parse"),
        }
    }
}
