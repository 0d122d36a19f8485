//! The in-memory [`Cache`]: GCRA rate limits, presence with per-connection TTLs and
//! bounded pub/sub, all inside this process.
//!
//! Times use [`tokio::time::Instant`], so tests may pause and advance tokio's clock;
//! `last_seen_ms` values are wall-clock Unix milliseconds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use crate::{Cache, CacheResult, PresenceState, PubSub, PubSubControl, RateDecision, RateLimit};

/// Maps never purged below this many entries (purging tiny maps is not worth it).
const PURGE_FLOOR: usize = 1024;
/// Minimum time between two warnings about dropped pub/sub messages.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// The in-process, in-memory [`Cache`].
#[derive(Default)]
pub struct MemoryCache {
    limits: Mutex<Expiring<Instant>>,
    presence: Mutex<Expiring<UserPresence>>,
    hub: Arc<Mutex<Hub>>,
    dropped: AtomicU64,
    values: Mutex<Expiring<(Bytes, Instant)>>,
    due_sets: Mutex<HashMap<String, DueSet>>,
}

/// Members ordered by due time, with each member's time for replacing it.
#[derive(Default)]
struct DueSet {
    by_time: BTreeSet<(i64, String)>,
    at: HashMap<String, i64>,
}

impl MemoryCache {
    /// Pub/sub messages dropped so far because a subscriber's queue was full.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A map whose stale entries are purged lazily: whenever it has doubled since the last
/// purge, so the work is amortised O(1) per insert and the size stays bounded by twice
/// the number of live entries.
struct Expiring<V> {
    map: HashMap<String, V>,
    purge_at: usize,
}

impl<V> Default for Expiring<V> {
    fn default() -> Self {
        Expiring { map: HashMap::new(), purge_at: PURGE_FLOOR }
    }
}

impl<V> Expiring<V> {
    /// Purges entries for which `live` is false, if the map has grown enough.
    fn maybe_purge(&mut self, live: impl FnMut(&mut V) -> bool) {
        if self.map.len() >= self.purge_at {
            let mut live = live;
            self.map.retain(|_, v| live(v));
            self.purge_at = (self.map.len() * 2).max(PURGE_FLOOR);
        }
    }
}

/// The connections of one user and when the user was last seen.
#[derive(Default)]
struct UserPresence {
    /// Connection id -> expiry.
    conns: HashMap<String, Instant>,
    last_seen_ms: Option<i64>,
}

impl UserPresence {
    /// Forgets expired connections. If that leaves none, the user went offline when the
    /// last one expired, which becomes `last_seen_ms` (an approximation: the crash or
    /// disconnect happened up to one TTL earlier). Returns whether a connection is live.
    fn settle(&mut self, now: Instant) -> bool {
        let latest_expired = self.conns.values().copied().filter(|&e| e <= now).max();
        self.conns.retain(|_, &mut expiry| expiry > now);
        if let (true, Some(expired)) = (self.conns.is_empty(), latest_expired) {
            let ms = unix_ms_at(expired, now);
            self.last_seen_ms = Some(self.last_seen_ms.map_or(ms, |seen| seen.max(ms)));
        }
        !self.conns.is_empty()
    }
}

/// Unix milliseconds of `instant`, given that `now` is the present.
fn unix_ms_at(instant: Instant, now: Instant) -> i64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let ago = now.saturating_duration_since(instant).as_millis();
    i64::try_from(wall.saturating_sub(ago)).unwrap_or(i64::MAX)
}

type Message = (String, Bytes);

/// Pub/sub routing: who listens to what.
#[derive(Default)]
struct Hub {
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    channels: HashMap<String, HashSet<u64>>,
    last_drop_warning: Option<Instant>,
}

struct Subscriber {
    tx: mpsc::Sender<Message>,
    channels: HashSet<String>,
}

impl Hub {
    /// Removes a subscriber and its channel memberships; its queue then ends.
    fn remove(&mut self, id: u64) {
        let Some(subscriber) = self.subscribers.remove(&id) else { return };
        for channel in subscriber.channels {
            self.unlink(&channel, id);
        }
    }

    fn unlink(&mut self, channel: &str, id: u64) {
        if let Some(ids) = self.channels.get_mut(channel) {
            ids.remove(&id);
            if ids.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// Offers `payload` to every subscriber of `channel` without ever waiting.
    fn publish(&mut self, channel: &str, payload: &Bytes, dropped: &AtomicU64) {
        let Some(ids) = self.channels.get(channel) else { return };
        let mut closed = Vec::new();
        let mut full = 0u64;
        for id in ids {
            let Some(subscriber) = self.subscribers.get(id) else { continue };
            match subscriber.tx.try_send((channel.to_owned(), payload.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => full += 1,
                Err(TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        // A closed queue means its `PubSub` was dropped: clean up after it.
        for id in closed {
            self.remove(id);
        }
        if full > 0 {
            let total = dropped.fetch_add(full, Ordering::Relaxed) + full;
            let now = Instant::now();
            if self.last_drop_warning.is_none_or(|at| now.duration_since(at) >= DROP_WARN_EVERY) {
                self.last_drop_warning = Some(now);
                tracing::warn!(channel, total_dropped = total, "pub/sub queue full, dropping messages");
            }
        }
    }
}

/// The control side of a [`MemoryCache`] pub/sub connection; dropping it ends the
/// connection (its subscriptions go away and its message queue closes).
struct MemoryPubSubControl {
    id: u64,
    hub: Arc<Mutex<Hub>>,
}

#[async_trait]
impl PubSubControl for MemoryPubSubControl {
    async fn subscribe(&self, channels: &[String]) -> CacheResult<()> {
        let mut hub = self.hub.lock();
        let Some(subscriber) = hub.subscribers.get_mut(&self.id) else {
            return Ok(()); // Its queue was dropped: nobody could receive anyway.
        };
        subscriber.channels.extend(channels.iter().cloned());
        for channel in channels {
            hub.channels.entry(channel.clone()).or_default().insert(self.id);
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[String]) -> CacheResult<()> {
        let mut hub = self.hub.lock();
        if let Some(subscriber) = hub.subscribers.get_mut(&self.id) {
            for channel in channels {
                subscriber.channels.remove(channel);
            }
        }
        for channel in channels {
            hub.unlink(channel, self.id);
        }
        Ok(())
    }
}

impl Drop for MemoryPubSubControl {
    fn drop(&mut self) {
        self.hub.lock().remove(self.id);
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn rate_limit(&self, key: &str, limit: RateLimit) -> CacheResult<RateDecision> {
        // GCRA: `tat` is when the bucket would be full again. An event costs one emission
        // interval `t`; it fits if, after paying, the debt is at most one period.
        let now = Instant::now();
        if limit.burst == 0 {
            return Ok(RateDecision::Limited { retry_after: limit.period.max(Duration::from_millis(1)) });
        }
        let t = limit.period / limit.burst;
        let mut limits = self.limits.lock();
        limits.maybe_purge(|tat| *tat > now);
        let tat = limits.map.get(key).copied().filter(|&tat| tat > now).unwrap_or(now);
        let new_tat = tat + t;
        let debt = new_tat - now;
        if debt <= limit.period {
            limits.map.insert(key.to_owned(), new_tat);
            Ok(RateDecision::Allowed)
        } else {
            Ok(RateDecision::Limited { retry_after: debt - limit.period })
        }
    }

    async fn presence_up(&self, user: &str, conn: &str, ttl: Duration) -> CacheResult<bool> {
        let now = Instant::now();
        let mut presence = self.presence.lock();
        presence.maybe_purge(|p| p.settle(now) || p.last_seen_ms.is_some());
        let entry = presence.map.entry(user.to_owned()).or_default();
        let was_online = entry.settle(now);
        entry.conns.insert(conn.to_owned(), now + ttl);
        Ok(!was_online)
    }

    async fn presence_down(&self, user: &str, conn: &str, now_ms: i64) -> CacheResult<bool> {
        let now = Instant::now();
        let mut presence = self.presence.lock();
        let entry = presence.map.entry(user.to_owned()).or_default();
        entry.conns.remove(conn);
        let online = entry.settle(now);
        entry.last_seen_ms = Some(now_ms);
        Ok(!online)
    }

    async fn presence(&self, users: &[String]) -> CacheResult<Vec<PresenceState>> {
        let now = Instant::now();
        let mut presence = self.presence.lock();
        Ok(users
            .iter()
            .map(|user| match presence.map.get_mut(user) {
                Some(entry) => PresenceState { online: entry.settle(now), last_seen_ms: entry.last_seen_ms },
                None => PresenceState { online: false, last_seen_ms: None },
            })
            .collect())
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> CacheResult<()> {
        self.hub.lock().publish(channel, &payload, &self.dropped);
        Ok(())
    }

    async fn publish_many(&self, channels: &[String], payload: Bytes) -> CacheResult<()> {
        let mut hub = self.hub.lock();
        for channel in channels {
            hub.publish(channel, &payload, &self.dropped);
        }
        Ok(())
    }

    async fn pubsub(&self, capacity: usize) -> CacheResult<PubSub> {
        // `mpsc::channel` panics on 0; a one-slot queue is the closest meaning.
        let (tx, messages) = mpsc::channel(capacity.max(1));
        let mut hub = self.hub.lock();
        hub.next_id += 1;
        let id = hub.next_id;
        hub.subscribers.insert(id, Subscriber { tx, channels: HashSet::new() });
        let control = MemoryPubSubControl { id, hub: Arc::clone(&self.hub) };
        Ok(PubSub { control: Box::new(control), messages })
    }

    async fn get(&self, key: &str) -> CacheResult<Option<Bytes>> {
        let now = Instant::now();
        let values = self.values.lock();
        Ok(values.map.get(key).filter(|(_, expiry)| *expiry > now).map(|(v, _)| v.clone()))
    }

    async fn get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Bytes>>> {
        let now = Instant::now();
        let values = self.values.lock();
        Ok(keys
            .iter()
            .map(|key| values.map.get(key).filter(|(_, expiry)| *expiry > now).map(|(v, _)| v.clone()))
            .collect())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> CacheResult<bool> {
        let now = Instant::now();
        let mut values = self.values.lock();
        let current = values.map.get(key).filter(|(_, expiry)| *expiry > now).map(|(v, _)| &v[..]);
        if current != expected {
            return Ok(false);
        }
        match new {
            Some(value) => {
                values.map.insert(key.to_owned(), (Bytes::copy_from_slice(value), now + ttl));
                values.maybe_purge(|(_, expiry)| *expiry > now);
            }
            None => {
                values.map.remove(key);
            }
        }
        Ok(true)
    }

    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> CacheResult<()> {
        let mut sets = self.due_sets.lock();
        let due = sets.entry(set.to_owned()).or_default();
        if let Some(old) = due.at.insert(member.to_owned(), at_ms) {
            due.by_time.remove(&(old, member.to_owned()));
        }
        due.by_time.insert((at_ms, member.to_owned()));
        Ok(())
    }

    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> CacheResult<Vec<String>> {
        let sets = self.due_sets.lock();
        let Some(due) = sets.get(set) else { return Ok(Vec::new()) };
        Ok(due
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn unschedule(&self, set: &str, member: &str) -> CacheResult<()> {
        let mut sets = self.due_sets.lock();
        if let Some(due) = sets.get_mut(set) {
            if let Some(at) = due.at.remove(member) {
                due.by_time.remove(&(at, member.to_owned()));
            }
            if due.at.is_empty() {
                sets.remove(set);
            }
        }
        Ok(())
    }

    async fn scheduled(&self, set: &str) -> CacheResult<u64> {
        Ok(self.due_sets.lock().get(set).map_or(0, |due| due.at.len() as u64))
    }

    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_after_is_precise() {
        let cache = MemoryCache::default();
        let limit = RateLimit { burst: 2, period: Duration::from_secs(10) };
        for _ in 0..2 {
            assert_eq!(cache.rate_limit("k", limit).await.expect("rl"), RateDecision::Allowed);
        }
        let RateDecision::Limited { retry_after } = cache.rate_limit("k", limit).await.expect("rl") else {
            panic!("allowed over burst");
        };
        // One token (period / burst = 5 s) must come back, minus the few µs elapsed.
        assert!(retry_after <= Duration::from_secs(5) && retry_after > Duration::from_millis(4900));
    }

    #[tokio::test]
    async fn idle_rate_keys_are_purged() {
        let cache = MemoryCache::default();
        let limit = RateLimit { burst: 1, period: Duration::from_millis(1) };
        for i in 0..PURGE_FLOOR {
            cache.rate_limit(&format!("k{i}"), limit).await.expect("rl");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.rate_limit("last", limit).await.expect("rl");
        assert!(cache.limits.lock().map.len() <= 1);
    }

    #[tokio::test]
    async fn expiry_sets_last_seen_to_about_the_expiry() {
        let cache = MemoryCache::default();
        let wall = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let before = wall();
        cache.presence_up("u", "c", Duration::from_millis(50)).await.expect("up");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let state = cache.presence(&["u".to_owned()]).await.expect("presence")[0];
        assert!(!state.online);
        let seen = state.last_seen_ms.expect("last seen after expiry");
        assert!(seen >= before + 40 && seen <= wall() - 90, "last_seen {seen} not near expiry");
    }

    #[tokio::test]
    async fn dropped_pubsub_is_cleaned_up() {
        let cache = MemoryCache::default();
        let channels = ["a".to_owned()];
        let whole = cache.pubsub(4).await.expect("pubsub");
        whole.control.subscribe(&channels).await.expect("sub");
        drop(whole);
        assert!(cache.hub.lock().subscribers.is_empty() && cache.hub.lock().channels.is_empty());

        // Only the receiver dropped: the next publish notices and cleans up.
        let PubSub { control, messages } = cache.pubsub(4).await.expect("pubsub");
        control.subscribe(&channels).await.expect("sub");
        drop(messages);
        cache.publish("a", Bytes::from_static(b"x")).await.expect("publish");
        assert!(cache.hub.lock().channels.is_empty());
        drop(control);
        assert!(cache.hub.lock().subscribers.is_empty());
    }

    #[tokio::test]
    async fn full_queue_counts_drops() {
        let cache = MemoryCache::default();
        let pubsub = cache.pubsub(2).await.expect("pubsub");
        pubsub.control.subscribe(&["a".to_owned()]).await.expect("sub");
        for _ in 0..5 {
            cache.publish("a", Bytes::from_static(b"x")).await.expect("publish");
        }
        assert_eq!(cache.dropped_messages(), 3);
    }
}
