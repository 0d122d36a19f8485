//! A cache that times every call of the cache it wraps ([`crate::metrics`]). [`crate::open`]
//! wraps every cache it opens.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::metrics::Timer;
use crate::{Cache, CacheResult, DynCache, PresenceState, PubSub, RateDecision, RateLimit};

/// The wrapper.
pub struct Instrumented(pub DynCache);

/// Awaits one call of the inner cache and records it under `op`.
macro_rules! timed {
    ($op:literal, $call:expr) => {{
        let timer = Timer::start($op);
        let out = $call.await;
        timer.finish(out.is_err());
        out
    }};
}

#[async_trait]
impl Cache for Instrumented {
    async fn rate_limit(&self, key: &str, limit: RateLimit) -> CacheResult<RateDecision> {
        timed!("rate_limit", self.0.rate_limit(key, limit))
    }

    async fn presence_up(&self, user: &str, conn: &str, ttl: Duration) -> CacheResult<bool> {
        timed!("presence_up", self.0.presence_up(user, conn, ttl))
    }

    async fn presence_up_many(&self, live: &[(String, String)], ttl: Duration) -> CacheResult<Vec<bool>> {
        timed!("presence_up_many", self.0.presence_up_many(live, ttl))
    }

    async fn presence_down(&self, user: &str, conn: &str, now_ms: i64) -> CacheResult<bool> {
        timed!("presence_down", self.0.presence_down(user, conn, now_ms))
    }

    async fn presence_down_many(&self, gone: &[(String, String)], now_ms: i64) -> CacheResult<Vec<bool>> {
        timed!("presence_down_many", self.0.presence_down_many(gone, now_ms))
    }

    async fn presence(&self, users: &[String]) -> CacheResult<Vec<PresenceState>> {
        timed!("presence", self.0.presence(users))
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> CacheResult<()> {
        timed!("publish", self.0.publish(channel, payload))
    }

    async fn publish_many(&self, channels: &[String], payload: Bytes) -> CacheResult<()> {
        timed!("publish_many", self.0.publish_many(channels, payload))
    }

    async fn pubsub(&self, capacity: usize) -> CacheResult<PubSub> {
        timed!("pubsub", self.0.pubsub(capacity))
    }

    async fn get(&self, key: &str) -> CacheResult<Option<Bytes>> {
        timed!("get", self.0.get(key))
    }

    async fn get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Bytes>>> {
        timed!("get_many", self.0.get_many(keys))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> CacheResult<bool> {
        timed!("compare_and_swap", self.0.compare_and_swap(key, expected, new, ttl))
    }

    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> CacheResult<()> {
        timed!("schedule", self.0.schedule(set, member, at_ms))
    }

    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> CacheResult<Vec<String>> {
        timed!("due", self.0.due(set, now_ms, limit))
    }

    async fn unschedule(&self, set: &str, member: &str) -> CacheResult<()> {
        timed!("unschedule", self.0.unschedule(set, member))
    }

    async fn scheduled(&self, set: &str) -> CacheResult<u64> {
        timed!("scheduled", self.0.scheduled(set))
    }

    async fn ping(&self) -> CacheResult<()> {
        timed!("ping", self.0.ping())
    }
}
