//! The shared, non-durable state of Chattr: presence with TTLs, rate limits, pub/sub for
//! fan-out and ephemeral events, and small values with TTLs and compare-and-swap plus
//! due-sets (calls and their timers).
//!
//! [`memory::MemoryCache`] is the reference and embedded impl; [`redis::RedisCache`]
//! shares the state between processes. Every impl must pass the suite in [`conformance`].

pub mod conformance;
mod instrumented;
pub mod memory;
pub mod metrics;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Errors of cache calls.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend failed.
    #[error("cache backend: {0}")]
    Backend(String),
}

/// Result of cache calls.
pub type CacheResult<T> = Result<T, CacheError>;

/// A shared, dynamically chosen cache.
pub type DynCache = Arc<dyn Cache>;

/// A rate: at most `burst` events at once, refilled evenly over `period`
/// (a GCRA / token bucket with capacity `burst` and one token every `period / burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket capacity.
    pub burst: u32,
    /// Time to refill the whole bucket.
    pub period: Duration,
}

/// Answer of [`Cache::rate_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// The event is allowed (and counted).
    Allowed,
    /// Over the limit; the event was not counted. Retry after this long.
    Limited {
        /// Time until one event would be allowed.
        retry_after: Duration,
    },
}

/// Presence of one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceState {
    /// At least one connection of the user is live (not expired).
    pub online: bool,
    /// Unix milliseconds when the user's last connection went away, if known.
    pub last_seen_ms: Option<i64>,
}

/// A pub/sub connection: one per process, shared by all its sockets. Messages for every
/// subscribed channel arrive on `messages` as `(channel, payload)`.
pub struct PubSub {
    /// Subscribe and unsubscribe channels on this connection.
    pub control: Box<dyn PubSubControl>,
    /// Incoming messages of all subscribed channels.
    pub messages: mpsc::Receiver<(String, Bytes)>,
}

/// Changes the subscriptions of a [`PubSub`] connection.
#[async_trait]
pub trait PubSubControl: Send + Sync {
    /// Subscribes to channels; returns once messages published afterwards will arrive.
    async fn subscribe(&self, channels: &[String]) -> CacheResult<()>;
    /// Unsubscribes from channels.
    async fn unsubscribe(&self, channels: &[String]) -> CacheResult<()>;
}

/// The cache.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// Counts one event against `key` under `limit`, atomically across processes.
    async fn rate_limit(&self, key: &str, limit: RateLimit) -> CacheResult<RateDecision>;

    /// Marks connection `conn` of `user` live for `ttl` (call again to extend). Returns true
    /// when the user had no live connection before (came online).
    async fn presence_up(&self, user: &str, conn: &str, ttl: Duration) -> CacheResult<bool>;
    /// [`Cache::presence_up`] for many `(user, conn)` at once (a gateway's heartbeats), in
    /// order; one answer each, true where that call brought its user online. The default
    /// calls one at a time; backends send them together.
    async fn presence_up_many(&self, live: &[(String, String)], ttl: Duration) -> CacheResult<Vec<bool>> {
        let mut came_online = Vec::with_capacity(live.len());
        for (user, conn) in live {
            came_online.push(self.presence_up(user, conn, ttl).await?);
        }
        Ok(came_online)
    }
    /// Removes connection `conn` of `user`, recording `now_ms` as last seen. Returns true when
    /// the user has no live connection left (went offline).
    async fn presence_down(&self, user: &str, conn: &str, now_ms: i64) -> CacheResult<bool>;
    /// [`Cache::presence_down`] for many `(user, conn)` at once (a gateway's closed
    /// sockets), in order; one answer each, true where that call took its user offline.
    /// The default calls one at a time; backends send them together.
    async fn presence_down_many(&self, gone: &[(String, String)], now_ms: i64) -> CacheResult<Vec<bool>> {
        let mut went_offline = Vec::with_capacity(gone.len());
        for (user, conn) in gone {
            went_offline.push(self.presence_down(user, conn, now_ms).await?);
        }
        Ok(went_offline)
    }
    /// Presence of each user, in the order given.
    async fn presence(&self, users: &[String]) -> CacheResult<Vec<PresenceState>>;

    /// Publishes a message to a channel (fire and forget: subscribers connected now get it).
    async fn publish(&self, channel: &str, payload: Bytes) -> CacheResult<()>;
    /// Publishes the same payload to many channels (one serialisation, one round trip).
    async fn publish_many(&self, channels: &[String], payload: Bytes) -> CacheResult<()>;
    /// Opens a pub/sub connection. `capacity` bounds its incoming queue; when full, the
    /// connection drops messages rather than grow (counted and logged).
    async fn pubsub(&self, capacity: usize) -> CacheResult<PubSub>;

    /// Reads a value (`None` when absent or expired).
    async fn get(&self, key: &str) -> CacheResult<Option<Bytes>>;
    /// Reads many values in one round trip, in the order given.
    async fn get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Bytes>>>;
    /// Replaces the value of `key` with `new` (deletes it when `None`) only if its current
    /// value is exactly `expected` (`None`: absent), atomically across processes. A written
    /// value expires after `ttl`. Returns whether it was written.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> CacheResult<bool>;
    /// Puts `member` in the due-set `set` at `at_ms` (Unix ms), replacing its earlier time.
    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> CacheResult<()>;
    /// Up to `limit` members of `set` due at or before `now_ms`, earliest first.
    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> CacheResult<Vec<String>>;
    /// Takes `member` out of the due-set `set`.
    async fn unschedule(&self, set: &str, member: &str) -> CacheResult<()>;
    /// How many members `set` holds.
    async fn scheduled(&self, set: &str) -> CacheResult<u64>;

    /// Checks the backend answers (for `/ready`).
    async fn ping(&self) -> CacheResult<()>;
}

/// Opens the cache named by a URL: `memory://`, or `redis://` / `rediss://` (see
/// [`redis::connect`]; async because it connects before returning).
/// Every cache it opens is measured ([`metrics`]).
pub async fn open(url: &str) -> CacheResult<DynCache> {
    let cache: DynCache = if url.starts_with("memory://") {
        Arc::new(memory::MemoryCache::default())
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Arc::new(self::redis::connect(url).await?)
    } else {
        return Err(CacheError::Backend(format!("unsupported cache url: {url}")));
    };
    Ok(Arc::new(instrumented::Instrumented(cache)))
}
