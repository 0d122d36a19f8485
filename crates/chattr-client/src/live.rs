//! [`Live`]: a WebSocket that heals itself.
//!
//! A background task keeps one connection open. It tracks the last seq seen per
//! conversation and reconnects with those cursors after any drop (with backoff, refreshing
//! the access token when it expired), so the server replays what was missed. Messages are
//! handed out once each, in seq order. Sends wait for their `ack`; unacknowledged sends
//! are re-sent after a reconnect with the same `client_msg_id`, so a lost ack never makes
//! a duplicate. A heartbeat showing a newer seq than seen (a dropped live event) is
//! filled from history over REST.

use std::collections::BTreeMap;
use std::time::Duration;

use chattr_api::v1::{close_codes, ClientFrame, Message, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use uuid::Uuid;

use crate::{Client, ClientError, ClientResult, Connection};

/// What a [`Live`] connection reports.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// A new message, each exactly once, in seq order per conversation.
    Message(Message),
    /// The connection came back after a drop (missed messages follow as `Message`).
    Reconnected,
    /// Too far behind in a conversation: page its history. (Or ahead of the server, after
    /// its store was restored from a backup: drop what is past `last_seq` and reload.)
    Resync {
        /// The conversation.
        conversation_id: Uuid,
        /// Its newest seq.
        last_seq: u64,
    },
    /// Any other server frame (edits, reads, typing, presence, conversations, …).
    Frame(ServerFrame),
    /// The connection ended for good (session revoked, or closed by the caller).
    Closed(String),
}

enum Command {
    Send {
        conversation_id: Uuid,
        client_msg_id: String,
        body: String,
        reply: oneshot::Sender<ClientResult<Message>>,
    },
    Frame(ClientFrame),
    DropSocket,
}

/// A self-healing real-time connection.
pub struct Live {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<LiveEvent>,
}

struct Pending {
    req_id: String,
    conversation_id: Uuid,
    client_msg_id: String,
    body: String,
    reply: oneshot::Sender<ClientResult<Message>>,
}

impl Live {
    /// Connects (returns after the first `ready`) with optional starting cursors.
    pub async fn start(client: Client, cursors: BTreeMap<Uuid, u64>) -> ClientResult<Self> {
        let (conn, ready) = client.connect(cursors.clone()).await?;
        let (commands, command_rx) = mpsc::channel(256);
        let (event_tx, events) = mpsc::channel(4096);
        let mut worker = Worker {
            client,
            cursors,
            pending: Vec::new(),
            events: event_tx,
            commands: command_rx,
            next_req: 0,
        };
        let _ = worker.note_ready(&ready, false).await;
        tokio::spawn(async move { worker.run(conn).await });
        Ok(Self { commands, events })
    }

    /// Sends a message and waits for its durable ack (retried across reconnects).
    pub async fn send(&self, conversation_id: Uuid, body: &str) -> ClientResult<Message> {
        self.send_with_id(conversation_id, &Uuid::now_v7().to_string(), body).await
    }

    /// Sends with an explicit idempotency key.
    pub async fn send_with_id(
        &self,
        conversation_id: Uuid,
        client_msg_id: &str,
        body: &str,
    ) -> ClientResult<Message> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Send {
            conversation_id,
            client_msg_id: client_msg_id.to_owned(),
            body: body.to_owned(),
            reply,
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| ClientError::Transport("live connection ended".to_owned()))?;
        answer.await.map_err(|_| ClientError::Transport("live connection ended".to_owned()))?
    }

    /// Sends any frame without waiting for an answer (typing, read, …).
    pub async fn send_frame(&self, frame: ClientFrame) -> ClientResult<()> {
        self.commands
            .send(Command::Frame(frame))
            .await
            .map_err(|_| ClientError::Transport("live connection ended".to_owned()))
    }

    /// Cuts the current socket as a network failure would; the connection heals itself.
    pub async fn drop_socket(&self) {
        let _ = self.commands.send(Command::DropSocket).await;
    }

    /// The next event; `None` after the connection ended.
    pub async fn next(&mut self) -> Option<LiveEvent> {
        self.events.recv().await
    }
}

struct Worker {
    client: Client,
    cursors: BTreeMap<Uuid, u64>,
    pending: Vec<Pending>,
    events: mpsc::Sender<LiveEvent>,
    commands: mpsc::Receiver<Command>,
    next_req: u64,
}

enum Drop {
    Reconnect,
    Stop(String),
}

impl Worker {
    async fn run(mut self, first: Connection) {
        let mut conn = Some(first);
        let mut backoff = Duration::from_millis(50);
        loop {
            let current = match conn.take() {
                Some(c) => c,
                None => match self.reconnect().await {
                    Ok(c) => {
                        backoff = Duration::from_millis(50);
                        if self.events.send(LiveEvent::Reconnected).await.is_err() {
                            return;
                        }
                        c
                    }
                    Err(Drop::Stop(reason)) => return self.stop(reason).await,
                    Err(Drop::Reconnect) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            match self.pump(current).await {
                Drop::Reconnect => continue,
                Drop::Stop(reason) => return self.stop(reason).await,
            }
        }
    }

    async fn stop(&mut self, reason: String) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(ClientError::Transport(reason.clone())));
        }
        let _ = self.events.send(LiveEvent::Closed(reason)).await;
    }

    async fn reconnect(&mut self) -> Result<Connection, Drop> {
        match self.client.connect(self.cursors.clone()).await {
            Ok((conn, ready)) => {
                if self.note_ready(&ready, true).await.is_err() {
                    return Err(Drop::Stop("receiver dropped".to_owned()));
                }
                Ok(conn)
            }
            Err(ClientError::Api { code, .. }) if code == chattr_api::v1::codes::UNAUTHORIZED => {
                // The access token expired (or the session is gone): refresh once and retry.
                match self.client.refresh().await {
                    Ok(_) => Err(Drop::Reconnect),
                    Err(e) => Err(Drop::Stop(format!("cannot refresh: {e}"))),
                }
            }
            Err(e) => {
                debug!(error = %e, "reconnect failed");
                Err(Drop::Reconnect)
            }
        }
    }

    /// Conversations without a cursor start live at the snapshot. After a reconnect such a
    /// conversation is one we joined while away: say so with `Resync`, so the caller pages
    /// its history instead of silently missing what came before.
    async fn note_ready(&mut self, ready: &ServerFrame, reconnect: bool) -> Result<(), ()> {
        let ServerFrame::Ready { conversations, .. } = ready else { return Ok(()) };
        for c in conversations {
            if self.cursors.contains_key(&c.id) {
                continue;
            }
            self.cursors.insert(c.id, c.last_seq);
            if reconnect {
                let event = LiveEvent::Resync { conversation_id: c.id, last_seq: c.last_seq };
                self.events.send(event).await.map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// Serves one connection until it drops.
    async fn pump(&mut self, mut conn: Connection) -> Drop {
        // Anything not acknowledged on the previous socket goes out again, same keys.
        for i in 0..self.pending.len() {
            let p = &self.pending[i];
            let frame = ClientFrame::Send {
                req_id: p.req_id.clone(),
                conversation_id: p.conversation_id,
                client_msg_id: p.client_msg_id.clone(),
                body: p.body.clone(),
            };
            if conn.send(&frame).await.is_err() {
                return Drop::Reconnect;
            }
        }
        loop {
            tokio::select! {
                frame = conn.next() => match frame {
                    Ok(frame) => {
                        if let Err(stop) = self.on_frame(frame).await {
                            return stop;
                        }
                    }
                    Err(ClientError::Closed { code, reason }) if code == close_codes::SESSION_REVOKED => {
                        return Drop::Stop(format!("session revoked: {reason}"));
                    }
                    Err(e) => {
                        debug!(error = %e, "socket dropped, reconnecting");
                        return Drop::Reconnect;
                    }
                },
                cmd = self.commands.recv() => match cmd {
                    None => return Drop::Stop("closed by caller".to_owned()),
                    Some(Command::DropSocket) => return Drop::Reconnect,
                    Some(Command::Frame(frame)) => {
                        if conn.send(&frame).await.is_err() {
                            return Drop::Reconnect;
                        }
                    }
                    Some(Command::Send { conversation_id, client_msg_id, body, reply }) => {
                        self.next_req += 1;
                        let req_id = format!("r{}", self.next_req);
                        let frame = ClientFrame::Send { req_id: req_id.clone(), conversation_id, client_msg_id: client_msg_id.clone(), body: body.clone() };
                        self.pending.push(Pending { req_id, conversation_id, client_msg_id, body, reply });
                        if conn.send(&frame).await.is_err() {
                            return Drop::Reconnect;
                        }
                    }
                },
            }
        }
    }

    async fn on_frame(&mut self, frame: ServerFrame) -> Result<(), Drop> {
        let event = match frame {
            ServerFrame::Message { message } => {
                let id = message.conversation_id;
                let seen = self.cursors.get(&id).copied().unwrap_or(0);
                if message.seq <= seen {
                    return Ok(());
                }
                if message.seq > seen + 1 {
                    // Something between was lost on the way: fetch it before going on.
                    self.fill_gap(id, seen, message.seq - 1).await?;
                    if self.cursors.get(&id).copied().unwrap_or(0) >= message.seq {
                        return Ok(());
                    }
                }
                self.cursors.insert(id, message.seq);
                LiveEvent::Message(message)
            }
            ServerFrame::Ack { req_id, message } => {
                if let Some(i) = self.pending.iter().position(|p| p.req_id == req_id) {
                    let _ = self.pending.swap_remove(i).reply.send(Ok(message));
                }
                return Ok(());
            }
            ServerFrame::Error { req_id: Some(req_id), code, message }
                if self.pending.iter().any(|p| p.req_id == req_id) =>
            {
                if let Some(i) = self.pending.iter().position(|p| p.req_id == req_id) {
                    let err = ClientError::Api { status: 0, code, message, retry_after: None };
                    let _ = self.pending.swap_remove(i).reply.send(Err(err));
                }
                return Ok(());
            }
            ServerFrame::Resync { conversation_id, last_seq } => {
                // The server's position wins, also when it is behind ours (a store restored
                // from a backup): seqs after it will be handed out again.
                self.cursors.insert(conversation_id, last_seq);
                LiveEvent::Resync { conversation_id, last_seq }
            }
            ServerFrame::Heartbeat { latest } => {
                for (id, last) in latest {
                    let seen = self.cursors.get(&id).copied();
                    if let Some(seen) = seen.filter(|s| *s < last) {
                        self.fill_gap(id, seen, last).await?;
                    }
                }
                return Ok(());
            }
            ServerFrame::Conversation { conversation } => {
                // A conversation we just joined: its messages count from the start, so
                // none of them can be skipped across a reconnect.
                self.cursors.entry(conversation.id).or_insert(0);
                LiveEvent::Frame(ServerFrame::Conversation { conversation })
            }
            ServerFrame::ConversationRemoved { conversation_id } => {
                self.cursors.remove(&conversation_id);
                LiveEvent::Frame(ServerFrame::ConversationRemoved { conversation_id })
            }
            other => LiveEvent::Frame(other),
        };
        self.events.send(event).await.map_err(|_| Drop::Stop("receiver dropped".to_owned()))
    }

    /// Pages history over REST to deliver messages a heartbeat says we missed.
    async fn fill_gap(&mut self, id: Uuid, mut seen: u64, until: u64) -> Result<(), Drop> {
        let mut refreshed = false;
        while seen < until {
            let page = match self.client.history(id, Some(seen), Some(until + 1), Some(100)).await {
                Ok(p) if !p.is_empty() => p,
                Err(ClientError::Api { status: 401, .. }) if !refreshed => {
                    // The access token expired while the socket stayed open.
                    refreshed = true;
                    if self.client.refresh().await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                _ => return Ok(()),
            };
            for message in page {
                seen = message.seq;
                self.cursors.insert(id, seen);
                self.events
                    .send(LiveEvent::Message(message))
                    .await
                    .map_err(|_| Drop::Stop("receiver dropped".to_owned()))?;
            }
        }
        Ok(())
    }
}
