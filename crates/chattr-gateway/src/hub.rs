//! The hub: this gateway's one shared pub/sub connection and the registry of the sockets
//! it hosts.
//!
//! The first socket of a user subscribes the user's channel, the last one unsubscribes it.
//! One dispatcher task reads every pub/sub message and offers it to the user's sockets
//! with `try_send` into their bounded queues: a socket that cannot keep up is kicked with a
//! resumable close code, never buffered without bound. Ephemeral events are dropped first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use chattr_cache::{DynCache, PubSubControl};
use chattr_core::UserId;
use chattr_proto::delivery::{user_channel, Delivery, DeliveryKind};
use chattr_proto::Principal;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use chattr_api::v1::close_codes;

use crate::metrics as m;

/// How often the per-socket gauges (sessions, users, queue depth) are sampled.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The hub handle (cheap to clone).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    control: Box<dyn PubSubControl>,
    sockets: Mutex<HashMap<UserId, Vec<Arc<Slot>>>>,
    /// Open sockets per session, for the sessions gauge (kept apart from `sockets`, which
    /// the dispatcher locks for every delivery).
    sessions: Mutex<HashMap<chattr_core::SessionId, u32>>,
    /// Serialises subscribe/unsubscribe so a socket never proceeds before its user's
    /// channel is subscribed (subscribe before snapshot).
    membership: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    queue_capacity: usize,
}

/// One hosted socket as the dispatcher sees it.
pub struct Slot {
    id: u64,
    /// The session the socket authenticated as.
    pub session_id: chattr_core::SessionId,
    /// Queue of deliveries. `Arc` keeps a queue slot at 8 bytes: tokio allocates queue
    /// blocks of 32 slots up front, and every socket has one.
    tx: mpsc::Sender<Arc<Delivery>>,
    kicked: Notify,
    kick_code: AtomicU16,
}

impl Slot {
    /// Resolves when the dispatcher kicked this socket; returns the close code.
    pub async fn kicked(&self) -> u16 {
        self.kicked.notified().await;
        self.kick_code.load(Ordering::Relaxed)
    }

    fn kick(&self, code: u16) {
        self.kick_code.store(code, Ordering::Relaxed);
        self.kicked.notify_one();
    }

    /// Offers a delivery to the socket's bounded queue.
    fn offer(&self, delivery: &Arc<Delivery>, capacity: usize) {
        if delivery.kind == DeliveryKind::Ephemeral && self.tx.capacity() < capacity / 2 {
            // Under pressure, ephemeral events are the first to go.
            metrics::counter!(m::EPHEMERAL_DROPPED).increment(1);
            return;
        }
        match self.tx.try_send(delivery.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if delivery.kind != DeliveryKind::Ephemeral {
                    metrics::counter!(m::SLOW_CONSUMER_DISCONNECTS).increment(1);
                    self.kick(close_codes::SLOW_CONSUMER);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Inner {
    /// Sets the gauges of sessions, users, queued deliveries and the fullest queue. The
    /// queues need a look at every socket: one atomic read each, nothing allocated.
    fn sample(&self) {
        let sessions = self.sessions.lock().len();
        let (users, queued, fullest) = {
            let sockets = self.sockets.lock();
            let (mut queued, mut fullest) = (0usize, 0usize);
            for slot in sockets.values().flatten() {
                let waiting = self.queue_capacity.saturating_sub(slot.tx.capacity());
                queued += waiting;
                fullest = fullest.max(waiting);
            }
            (sockets.len(), queued, fullest)
        };
        metrics::gauge!(m::USERS).set(users as f64);
        metrics::gauge!(m::SESSIONS).set(sessions as f64);
        metrics::gauge!(m::QUEUED_EVENTS).set(queued as f64);
        metrics::gauge!(m::QUEUE_DEPTH_MAX).set(fullest as f64);
    }
}

impl Hub {
    /// Opens the shared pub/sub connection and starts the dispatcher.
    pub async fn start(cache: DynCache, pubsub_capacity: usize) -> Result<Self, String> {
        Self::start_with(cache, pubsub_capacity, 256).await
    }

    /// Like [`Hub::start`] with an explicit per-socket queue capacity.
    pub async fn start_with(
        cache: DynCache,
        pubsub_capacity: usize,
        queue_capacity: usize,
    ) -> Result<Self, String> {
        let pubsub = cache.pubsub(pubsub_capacity).await.map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            control: pubsub.control,
            sockets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            membership: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            queue_capacity,
        });
        let weak = Arc::downgrade(&inner);
        let mut messages = pubsub.messages;
        tokio::spawn(async move {
            while let Some((channel, payload)) = messages.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                inner.dispatch(&channel, payload);
            }
            debug!("hub dispatcher stopped");
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.sample();
            }
        });
        Ok(Self { inner })
    }

    /// Registers a socket; returns once the user's channel is subscribed. The receiver is
    /// the socket's bounded delivery queue.
    pub async fn register(
        &self,
        who: Principal,
    ) -> Result<(Arc<Slot>, mpsc::Receiver<Arc<Delivery>>), String> {
        let (tx, rx) = mpsc::channel(self.inner.queue_capacity);
        let slot = Arc::new(Slot {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            session_id: who.session_id,
            tx,
            kicked: Notify::new(),
            kick_code: AtomicU16::new(0),
        });
        let _guard = self.inner.membership.lock().await;
        let first = {
            let mut sockets = self.inner.sockets.lock();
            let list = sockets.entry(who.user_id).or_default();
            list.push(slot.clone());
            list.len() == 1
        };
        *self.inner.sessions.lock().entry(who.session_id).or_default() += 1;
        if first {
            if let Err(e) = self.inner.control.subscribe(&[user_channel(who.user_id)]).await {
                self.remove(who.user_id, slot.id);
                return Err(e.to_string());
            }
        }
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Ok((slot, rx))
    }

    /// Unregisters a socket; the last one of a user unsubscribes the user's channel.
    pub async fn unregister(&self, user: UserId, slot: &Slot) {
        let _guard = self.inner.membership.lock().await;
        if self.remove(user, slot.id) {
            if let Err(e) = self.inner.control.unsubscribe(&[user_channel(user)]).await {
                warn!(error = %e, "unsubscribe failed");
            }
        }
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }

    /// Removes a slot; true if it was the user's last.
    fn remove(&self, user: UserId, id: u64) -> bool {
        let (session, last) = {
            let mut sockets = self.inner.sockets.lock();
            let Some(list) = sockets.get_mut(&user) else { return false };
            let session = list.iter().find(|s| s.id == id).map(|s| s.session_id);
            list.retain(|s| s.id != id);
            let last = list.is_empty();
            if last {
                sockets.remove(&user);
            }
            (session, last)
        };
        if let Some(session) = session {
            let mut sessions = self.inner.sessions.lock();
            if let Some(count) = sessions.get_mut(&session) {
                *count -= 1;
                if *count == 0 {
                    sessions.remove(&session);
                }
            }
        }
        last
    }

    /// Number of sockets hosted.
    pub fn socket_count(&self) -> usize {
        self.inner.sockets.lock().values().map(Vec::len).sum()
    }
}

impl Inner {
    fn dispatch(&self, channel: &str, payload: bytes::Bytes) {
        let Some(user) = channel.strip_prefix("u.").and_then(|id| id.parse::<UserId>().ok()) else {
            return;
        };
        let Some(delivery) = Delivery::decode(payload) else {
            warn!(channel, "undecodable delivery dropped");
            return;
        };
        let delivery = Arc::new(delivery);
        let sockets = self.sockets.lock();
        if let Some(list) = sockets.get(&user) {
            for slot in list {
                if let DeliveryKind::ToSession { session_id } = delivery.kind {
                    if slot.session_id != session_id {
                        continue;
                    }
                }
                slot.offer(&delivery, self.queue_capacity);
            }
        }
    }
}
