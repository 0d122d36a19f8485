//! The Redis [`Cache`]: rate limits, presence and pub/sub shared by every Chattr process
//! that points at the same Redis.
//!
//! - **Commands** go through one [`ConnectionManager`]: a multiplexed connection that
//!   reconnects by itself. A call made while Redis is away waits for one reconnection
//!   attempt and then fails; nothing is queued for later.
//! - **Rate limits** are GCRA in one Lua script, so check-and-count is atomic across
//!   processes. It reads the clock with `TIME` inside the script: only Redis' clock
//!   matters, app servers may disagree about the time. A key lives only until its bucket
//!   is full again (the same as never having been used), so idle keys cost nothing.
//! - **Presence** keeps, per user, a sorted set of connection ids scored by their expiry
//!   (Unix ms of Redis' clock), updated by Lua scripts so "was anyone live before" and
//!   the update are one atomic step. See [`RedisCache`] for the exact keys and the
//!   last-seen rules, which mirror [`MemoryCache`](crate::memory::MemoryCache).
//! - **Pub/sub** uses one dedicated connection per [`PubSub`], driven by a background
//!   task that survives Redis restarts by reconnecting and re-subscribing. Delivery is
//!   at most once: messages published while that connection is down are lost, and the
//!   gateway fills such gaps from the store.
//!
//! Every key and channel starts with `chattr:`, so Chattr can share a Redis (pub/sub
//! channels are global to a server, not per database) with other applications.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use ::redis::{Client, Msg, RedisError, RedisResult, Script, Value};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::{Cache, CacheError, CacheResult, PresenceState, PubSub, PubSubControl, RateDecision, RateLimit};

/// Namespace of every key and channel unless the URL names another (`?prefix=`).
const DEFAULT_PREFIX: &str = "chattr";
/// How long last-seen data outlives a user's last connection. Memory keeps it forever;
/// Redis forgets users idle this long so abandoned accounts do not accumulate keys.
const LAST_SEEN_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bound of one connection attempt (TCP, handshake, AUTH/SELECT).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of one command; a Redis that stops answering fails calls instead of hanging them.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of the command connection's (re)connection, after a pause of 1–2 s (the
/// `redis` crate's backoff starts at 1 s; `RETRY_MAX_DELAY_MS` caps it before jitter).
/// Calls made during an outage wait for these attempts, so there is just one: a down
/// Redis fails calls within about 2 s instead of stalling request paths, and the next
/// call starts a fresh attempt.
const CONNECT_RETRIES: usize = 1;
const RETRY_MAX_DELAY_MS: u64 = 1_000;
/// Bound of a whole call, waiting for a reconnection included (see [`bounded`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait between pub/sub reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often an idle pub/sub connection is PINGed: a half-open TCP connection (peer
/// vanished without FIN/RST) would otherwise look alive while delivering nothing.
const HEALTH_EVERY: Duration = Duration::from_secs(15);
/// Minimum time between two warnings about dropped pub/sub messages.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);
/// Users per presence script call: bounds how long one call blocks Redis.
const PRESENCE_BATCH: usize = 256;
/// Durations handed to Lua are capped here (~35 years in µs), well inside the 2^53 that
/// Lua's doubles hold exactly.
const MAX_LUA_MICROS: u64 = 1 << 50;

/// Shared Lua helpers. Numbers are formatted with `%.0f` because Lua's default
/// conversion uses `%.14g`, which turns microsecond timestamps into `1.7e+15`.
const LUA_PRELUDE: &str = r"
-- Redis < 5 refuses writes after TIME unless effects are replicated; later versions
-- always do this (and keep the call as a no-op).
if redis.replicate_commands then redis.replicate_commands() end
local function num(x) return string.format('%.0f', x) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Latest expiry among connections of `pkey` that expired by `now`, or nil.
local function latest_expired(pkey, now)
  local top = redis.call('ZREVRANGEBYSCORE', pkey, num(now), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if top[2] then return tonumber(top[2]) end
  return nil
end
-- Forgets the expired connections of one user. When none is live any more, the latest
-- expiry becomes last seen (if later than the recorded one): the user vanished without
-- presence_down (crash, lost network) at most one TTL before that. Returns the number of
-- live connections.
local function settle(pkey, skey, now, keep)
  local live = redis.call('ZCOUNT', pkey, '(' .. num(now), '+inf')
  if live == 0 then
    local expired = latest_expired(pkey, now)
    if expired then
      local seen = tonumber(redis.call('GET', skey))
      if not seen or seen < expired then
        redis.call('SET', skey, num(expired), 'PX', num(keep))
      end
    end
  end
  redis.call('ZREMRANGEBYSCORE', pkey, '-inf', num(now))
  return live
end
";

/// GCRA. KEYS[1]: the limit's key. ARGV[1]: emission interval (µs), ARGV[2]: period (µs).
/// Returns 0 when the event is allowed (and counted), else the wait in µs (>= 1).
const RATE_LIMIT_LUA: &str = r"
-- Redis < 5 refuses writes after TIME unless effects are replicated; later versions
-- always do this (and keep the call as a no-op).
if redis.replicate_commands then redis.replicate_commands() end
local function num(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
-- tat: when the bucket is full again. A missing (or unreadable) key is a full bucket.
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local debt = new_tat - now
if debt <= period then
  -- After new_tat the bucket is full, the same as a missing key: let Redis drop it then.
  redis.call('SET', KEYS[1], num(new_tat), 'PX', num(math.max(1, math.ceil(debt / 1000))))
  return 0
end
return math.max(1, debt - period)
";

/// KEYS[1]: presence set, KEYS[2]: last seen. ARGV[1]: connection, ARGV[2]: TTL (ms),
/// ARGV[3]: how long to keep data after the last expiry (ms). Returns 1 if the user came
/// online.
const PRESENCE_UP_LUA: &str = r"
local now = now_ms()
local keep = tonumber(ARGV[3])
local live = settle(KEYS[1], KEYS[2], now, keep)
redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[2])), ARGV[1])
-- The set lives until its latest expiry plus `keep`, so that expired scores can still
-- yield a last-seen time when nobody settled them in between. (ZADD may have lowered a
-- score, so the latest is read back rather than assumed.)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], num(math.max(1, tonumber(top[2]) - now + keep)))
if live == 0 then return 1 end
return 0
";

/// KEYS[1]: presence set, KEYS[2]: last seen. ARGV[1]: connection, ARGV[2]: the caller's
/// now (Unix ms, stored verbatim), ARGV[3]: keep (ms). Returns 1 if the user went offline.
const PRESENCE_DOWN_LUA: &str = r"
local now = now_ms()
redis.call('ZREM', KEYS[1], ARGV[1])
local live = settle(KEYS[1], KEYS[2], now, tonumber(ARGV[3]))
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if live == 0 then return 1 end
return 0
";

/// KEYS: presence set and last-seen key of each user, in pairs. Returns two strings per
/// user: '1' or '0' (online), and last seen in Unix ms or '' (unknown). Read-only: it
/// computes what `settle` would record without writing it.
const PRESENCE_LUA: &str = r"
local now = now_ms()
local out = {}
for i = 1, #KEYS, 2 do
  local live = redis.call('ZCOUNT', KEYS[i], '(' .. num(now), '+inf')
  local seen = redis.call('GET', KEYS[i + 1])
  if live == 0 then
    local expired = latest_expired(KEYS[i], now)
    if expired and (not seen or not tonumber(seen) or tonumber(seen) < expired) then
      seen = num(expired)
    end
  end
  out[#out + 1] = live > 0 and '1' or '0'
  out[#out + 1] = seen or ''
end
return out
";

/// The Redis [`Cache`]; cheap to share (`Arc`), one per process.
///
/// Keys (all with `LAST_SEEN_KEEP` = 30 days of retention at most):
/// - `chattr:rl:<key>` — GCRA theoretical arrival time (µs of Redis' clock); expires
///   when the bucket is full again.
/// - `chattr:presence:{<user>}` — sorted set of connection ids scored by expiry (Unix ms
///   of Redis' clock). A member whose score has passed is not live. The set lingers
///   `LAST_SEEN_KEEP` after its latest expiry so that expired scores still tell when the
///   user was last seen.
/// - `chattr:lastseen:{<user>}` — Unix ms: the `now_ms` of the latest `presence_down`,
///   or the latest expiry once all connections expired, whichever came later.
///
/// The `{<user>}` hash tag keeps both keys of a user in one Redis Cluster slot.
///
/// Presence rules (as [`MemoryCache`](crate::memory::MemoryCache)): a user is online
/// while any connection is live. An offline user's last seen is the larger of the
/// recorded last-seen value and the latest expiry of their expired connections (a user
/// whose connections all expired left at most one TTL before that). An online user's
/// last seen is whatever was recorded before (callers ignore it).
pub struct RedisCache {
    client: Client,
    names: Arc<Names>,
    con: ConnectionManager,
    scripts: Scripts,
    dropped: Arc<AtomicU64>,
}

struct Scripts {
    rate_limit: Script,
    presence_up: Script,
    presence_down: Script,
    presence: Script,
    compare_and_swap: Script,
}

/// Compare-and-swap: KEYS[1]; ARGV[1] "1" if a current value is expected, ARGV[2] that
/// value, ARGV[3] "1" to write (else delete), ARGV[4] the new value, ARGV[5] TTL in ms.
const COMPARE_AND_SWAP_LUA: &str = r#"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('DEL', KEYS[1])
end
return 1
"#;

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Scripts {
            rate_limit: Script::new(RATE_LIMIT_LUA),
            presence_up: with_prelude(PRESENCE_UP_LUA),
            presence_down: with_prelude(PRESENCE_DOWN_LUA),
            presence: with_prelude(PRESENCE_LUA),
            compare_and_swap: Script::new(COMPARE_AND_SWAP_LUA),
        }
    }
}

/// How keys and channels are named: `<prefix>:rl:…`, `<prefix>:presence:{…}`,
/// `<prefix>:ch:…`. Several deployments (or test runs) can share one Redis by prefix.
struct Names {
    keys: String,
    channels: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self { keys: format!("{prefix}:"), channels: format!("{prefix}:ch:") }
    }

    fn rate(&self, key: &str) -> String {
        format!("{}rl:{key}", self.keys)
    }

    fn presence(&self, user: &str) -> String {
        format!("{}presence:{{{user}}}", self.keys)
    }

    fn last_seen(&self, user: &str) -> String {
        format!("{}lastseen:{{{user}}}", self.keys)
    }

    fn channel(&self, channel: &str) -> String {
        format!("{}{channel}", self.channels)
    }

    fn value(&self, key: &str) -> String {
        format!("{}kv:{key}", self.keys)
    }

    fn due_set(&self, set: &str) -> String {
        format!("{}due:{set}", self.keys)
    }
}

/// Splits Chattr's own `prefix` query parameter off a Redis URL.
fn split_prefix(url: &str) -> CacheResult<(String, String)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), DEFAULT_PREFIX.to_owned()));
    };
    let mut prefix = DEFAULT_PREFIX.to_owned();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("prefix=") {
            Some(p)
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
            {
                prefix = p.to_owned();
            }
            Some(p) => return Err(CacheError::Backend(format!("invalid redis key prefix {p:?}"))),
            None => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, prefix))
}

/// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db][?prefix=P]`;
/// `prefix` namespaces keys and channels, default `chattr`; `rediss://` needs a TLS
/// feature of the `redis` crate, which this build does not enable). Fails if Redis cannot
/// be reached within two attempts (about 1–2 s when the port refuses; a host that does
/// not answer at all costs up to 3 s per attempt).
pub async fn connect(url: &str) -> CacheResult<RedisCache> {
    let (url, prefix) = split_prefix(url)?;
    let client = Client::open(url.as_str()).map_err(backend)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(COMMAND_TIMEOUT)
        .set_number_of_retries(CONNECT_RETRIES)
        .set_max_delay(RETRY_MAX_DELAY_MS);
    let con = ConnectionManager::new_with_config(client.clone(), config).await.map_err(backend)?;
    let names = Arc::new(Names::new(&prefix));
    Ok(RedisCache { client, names, con, scripts: Scripts::new(), dropped: Arc::new(AtomicU64::new(0)) })
}

impl RedisCache {
    /// Pub/sub messages dropped so far, over all its [`PubSub`]s, because a queue was full.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Runs a presence script (KEYS: the user's presence set and last-seen key; ARGV: the
    /// connection, `arg`, how long last seen is kept) for each `(user, conn)`, in one round
    /// trip: the script is loaded (a no-op when it is already), then run for each in one
    /// pipeline. True where the script answered 1.
    async fn presence_each(
        &self,
        script: &Script,
        pairs: &[(String, String)],
        arg: impl ::redis::ToRedisArgs + Copy,
    ) -> CacheResult<Vec<bool>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        pipe.load_script(script).ignore();
        let invocations: Vec<_> = pairs
            .iter()
            .map(|(user, conn)| {
                let mut call = script.prepare_invoke();
                call.key(self.names.presence(user))
                    .key(self.names.last_seen(user))
                    .arg(conn)
                    .arg(arg)
                    .arg(lua_millis_ceil(LAST_SEEN_KEEP));
                call
            })
            .collect();
        for call in &invocations {
            pipe.invoke_script(call);
        }
        let mut con = self.con.clone();
        let answers: Vec<i64> = bounded(pipe.query_async(&mut con)).await?;
        Ok(answers.into_iter().map(|n| n == 1).collect())
    }
}

fn backend(e: impl std::fmt::Display) -> CacheError {
    CacheError::Backend(e.to_string())
}

/// Runs one call through the command connection within [`CALL_TIMEOUT`]. The response
/// timeout alone does not bound a call made while the connection manager is still
/// reconnecting (calls wait for that); a blackholed Redis could otherwise hold a request
/// for every connection attempt in turn. Giving up early is safe: the reconnection goes
/// on in the background.
async fn bounded<T>(call: impl std::future::Future<Output = RedisResult<T>>) -> CacheResult<T> {
    match timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(backend),
        Err(_) => Err(CacheError::Backend(format!("redis call timed out after {CALL_TIMEOUT:?}"))),
    }
}

fn lua_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).min(MAX_LUA_MICROS)
}

/// Milliseconds, rounded up: a 0.5 ms TTL must not become "already expired".
fn lua_millis_ceil(d: Duration) -> u64 {
    lua_micros(d).div_ceil(1000)
}

#[async_trait]
impl Cache for RedisCache {
    async fn rate_limit(&self, key: &str, limit: RateLimit) -> CacheResult<RateDecision> {
        if limit.burst == 0 {
            return Ok(RateDecision::Limited { retry_after: limit.period.max(Duration::from_millis(1)) });
        }
        let period = lua_micros(limit.period);
        // µs resolution: an interval under 1 µs (more than a million events a second) is
        // rounded up to 1 µs; a zero period means "no limit", as in memory.
        let interval = if period == 0 { 0 } else { lua_micros(limit.period / limit.burst).max(1) };
        let mut con = self.con.clone();
        let wait: i64 = bounded(
            self.scripts
                .rate_limit
                .key(self.names.rate(key))
                .arg(interval)
                .arg(period)
                .invoke_async(&mut con),
        )
        .await?;
        Ok(match u64::try_from(wait) {
            Ok(micros) if micros > 0 => RateDecision::Limited { retry_after: Duration::from_micros(micros) },
            _ => RateDecision::Allowed,
        })
    }

    async fn presence_up(&self, user: &str, conn: &str, ttl: Duration) -> CacheResult<bool> {
        let mut con = self.con.clone();
        let came_online: i64 = bounded(
            self.scripts
                .presence_up
                .key(self.names.presence(user))
                .key(self.names.last_seen(user))
                .arg(conn)
                .arg(lua_millis_ceil(ttl))
                .arg(lua_millis_ceil(LAST_SEEN_KEEP))
                .invoke_async(&mut con),
        )
        .await?;
        Ok(came_online == 1)
    }

    async fn presence_up_many(&self, live: &[(String, String)], ttl: Duration) -> CacheResult<Vec<bool>> {
        self.presence_each(&self.scripts.presence_up, live, lua_millis_ceil(ttl)).await
    }

    async fn presence_down(&self, user: &str, conn: &str, now_ms: i64) -> CacheResult<bool> {
        let mut con = self.con.clone();
        let went_offline: i64 = bounded(
            self.scripts
                .presence_down
                .key(self.names.presence(user))
                .key(self.names.last_seen(user))
                .arg(conn)
                .arg(now_ms)
                .arg(lua_millis_ceil(LAST_SEEN_KEEP))
                .invoke_async(&mut con),
        )
        .await?;
        Ok(went_offline == 1)
    }

    async fn presence_down_many(&self, gone: &[(String, String)], now_ms: i64) -> CacheResult<Vec<bool>> {
        self.presence_each(&self.scripts.presence_down, gone, now_ms).await
    }

    async fn presence(&self, users: &[String]) -> CacheResult<Vec<PresenceState>> {
        let mut con = self.con.clone();
        let mut states = Vec::with_capacity(users.len());
        for batch in users.chunks(PRESENCE_BATCH) {
            let mut invocation = self.scripts.presence.prepare_invoke();
            for user in batch {
                invocation.key(self.names.presence(user)).key(self.names.last_seen(user));
            }
            let flat: Vec<String> = bounded(invocation.invoke_async(&mut con)).await?;
            if flat.len() != batch.len() * 2 {
                return Err(CacheError::Backend(format!(
                    "presence script answered {} values for {} users",
                    flat.len(),
                    batch.len()
                )));
            }
            // An unreadable last-seen value (not written by us) counts as unknown.
            states.extend(
                flat.chunks_exact(2)
                    .map(|pair| PresenceState { online: pair[0] == "1", last_seen_ms: pair[1].parse().ok() }),
            );
        }
        Ok(states)
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> CacheResult<()> {
        let mut con = self.con.clone();
        bounded(
            ::redis::cmd("PUBLISH")
                .arg(self.names.channel(channel))
                .arg(payload.as_ref())
                .query_async::<()>(&mut con),
        )
        .await
    }

    async fn publish_many(&self, channels: &[String], payload: Bytes) -> CacheResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for channel in channels {
            pipe.cmd("PUBLISH").arg(self.names.channel(channel)).arg(payload.as_ref()).ignore();
        }
        let mut con = self.con.clone();
        bounded(pipe.query_async::<()>(&mut con)).await
    }

    async fn pubsub(&self, capacity: usize) -> CacheResult<PubSub> {
        let connection = open_pubsub(&self.client).await.map_err(backend)?;
        // `mpsc::channel` panics on 0; a one-slot queue is the closest meaning.
        let (out, messages) = mpsc::channel(capacity.max(1));
        let (commands_tx, commands) = mpsc::channel(16);
        let worker = Worker {
            client: self.client.clone(),
            names: Arc::clone(&self.names),
            commands,
            out,
            channels: HashSet::new(),
            dropped: Arc::clone(&self.dropped),
            last_drop_warning: None,
        };
        tokio::spawn(worker.run(connection));
        let control = RedisPubSubControl { commands: commands_tx, names: Arc::clone(&self.names) };
        Ok(PubSub { control: Box::new(control), messages })
    }

    async fn get(&self, key: &str) -> CacheResult<Option<Bytes>> {
        let mut con = self.con.clone();
        let value: Option<Vec<u8>> =
            bounded(::redis::cmd("GET").arg(self.names.value(key)).query_async(&mut con)).await?;
        Ok(value.map(Bytes::from))
    }

    async fn get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con.clone();
        let mut command = ::redis::cmd("MGET");
        for key in keys {
            command.arg(self.names.value(key));
        }
        let values: Vec<Option<Vec<u8>>> = bounded(command.query_async(&mut con)).await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> CacheResult<bool> {
        let mut con = self.con.clone();
        let flag = |present: bool| if present { "1" } else { "0" };
        let written: i64 = bounded(
            self.scripts
                .compare_and_swap
                .key(self.names.value(key))
                .arg(flag(expected.is_some()))
                .arg(expected.unwrap_or_default())
                .arg(flag(new.is_some()))
                .arg(new.unwrap_or_default())
                .arg(lua_millis_ceil(ttl).max(1))
                .invoke_async(&mut con),
        )
        .await?;
        Ok(written == 1)
    }

    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> CacheResult<()> {
        let mut con = self.con.clone();
        bounded(
            ::redis::cmd("ZADD")
                .arg(self.names.due_set(set))
                .arg(at_ms)
                .arg(member)
                .query_async::<()>(&mut con),
        )
        .await
    }

    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> CacheResult<Vec<String>> {
        let mut con = self.con.clone();
        bounded(
            ::redis::cmd("ZRANGEBYSCORE")
                .arg(self.names.due_set(set))
                .arg("-inf")
                .arg(now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut con),
        )
        .await
    }

    async fn unschedule(&self, set: &str, member: &str) -> CacheResult<()> {
        let mut con = self.con.clone();
        bounded(::redis::cmd("ZREM").arg(self.names.due_set(set)).arg(member).query_async::<()>(&mut con))
            .await
    }

    async fn scheduled(&self, set: &str) -> CacheResult<u64> {
        let mut con = self.con.clone();
        bounded(::redis::cmd("ZCARD").arg(self.names.due_set(set)).query_async::<u64>(&mut con)).await
    }

    async fn ping(&self) -> CacheResult<()> {
        let mut con = self.con.clone();
        bounded(::redis::cmd("PING").query_async::<()>(&mut con)).await
    }
}

/// A pub/sub connection split into its request and message halves.
type Connection = (PubSubSink, PubSubStream);

/// Opens a dedicated pub/sub connection, bounded by [`CONNECT_TIMEOUT`].
async fn open_pubsub(client: &Client) -> RedisResult<Connection> {
    match timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(pubsub) => Ok(pubsub?.split()),
        Err(_) => Err(timeout_error("connecting pub/sub")),
    }
}

fn timeout_error(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

/// Subscribes `channels`, one SUBSCRIBE each but pipelined (one round trip). Not one
/// multi-channel SUBSCRIBE: Redis confirms each channel separately and the `redis` crate
/// takes every confirmation as the answer to one request, so a multi-channel command
/// would answer the requests queued behind it too early.
async fn subscribe_all(sink: &PubSubSink, channels: &[String]) -> RedisResult<()> {
    try_join_all(channels.iter().map(|channel| {
        let mut sink = sink.clone();
        async move { sink.subscribe(channel).await }
    }))
    .await
    .map(drop)
}

/// Unsubscribes `channels`, one command each, pipelined (see [`subscribe_all`]).
async fn unsubscribe_all(sink: &PubSubSink, channels: &[String]) -> RedisResult<()> {
    try_join_all(channels.iter().map(|channel| {
        let mut sink = sink.clone();
        async move { sink.unsubscribe(channel).await }
    }))
    .await
    .map(drop)
}

/// A change of subscriptions, with full channel names, and where to answer it.
struct Command {
    subscribe: bool,
    channels: Vec<String>,
    reply: oneshot::Sender<CacheResult<()>>,
}

/// The control side of a [`RedisCache`] pub/sub connection: forwards requests to its
/// worker task, which owns the connection.
struct RedisPubSubControl {
    commands: mpsc::Sender<Command>,
    names: Arc<Names>,
}

impl RedisPubSubControl {
    async fn request(&self, subscribe: bool, channels: &[String]) -> CacheResult<()> {
        if channels.is_empty() {
            return Ok(()); // SUBSCRIBE without a channel is a syntax error.
        }
        let channels = channels.iter().map(|c| self.names.channel(c)).collect();
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command { subscribe, channels, reply }).await.is_err() {
            // The worker ended because the message queue was dropped: nobody could
            // receive anyway (as in memory).
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }
}

#[async_trait]
impl PubSubControl for RedisPubSubControl {
    /// Returns once Redis confirmed the subscription. Fails while the connection is down
    /// (the caller retries later); a failed subscribe leaves nothing behind.
    async fn subscribe(&self, channels: &[String]) -> CacheResult<()> {
        self.request(true, channels).await
    }

    /// Returns once Redis confirmed. While the connection is down it just forgets the
    /// channels, which are then not re-subscribed.
    async fn unsubscribe(&self, channels: &[String]) -> CacheResult<()> {
        self.request(false, channels).await
    }
}

/// Why [`Worker::serve`] stopped.
enum Ended {
    /// The [`PubSub`] was dropped: stop for good.
    Closed,
    /// The connection failed: reconnect.
    Broken,
}

/// The task that owns one pub/sub connection: applies subscription changes, forwards
/// messages into the bounded queue, and replaces the connection when it breaks.
struct Worker {
    client: Client,
    names: Arc<Names>,
    commands: mpsc::Receiver<Command>,
    out: mpsc::Sender<(String, Bytes)>,
    /// Channels (full names) subscribed, to restore after a reconnection.
    channels: HashSet<String>,
    dropped: Arc<AtomicU64>,
    last_drop_warning: Option<Instant>,
}

impl Worker {
    async fn run(mut self, first: Connection) {
        let mut connection = Some(first);
        loop {
            let (mut sink, mut stream) = match connection.take() {
                Some(connection) => connection,
                None => match self.reconnect().await {
                    Some(connection) => connection,
                    None => break,
                },
            };
            match self.serve(&mut sink, &mut stream).await {
                Ended::Closed => break,
                Ended::Broken => warn!(
                    channels = self.channels.len(),
                    "redis pub/sub connection lost; reconnecting (messages published meanwhile are lost)"
                ),
            }
            // Dropping the stream here stops the `redis` crate's driver and closes the socket.
        }
        debug!("redis pub/sub worker stopped");
    }

    /// Runs one live connection until it breaks or the [`PubSub`] goes away.
    async fn serve(&mut self, sink: &mut PubSubSink, stream: &mut PubSubStream) -> Ended {
        let mut health = tokio::time::interval_at(Instant::now() + HEALTH_EVERY, HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.out.closed() => return Ended::Closed,
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::Closed };
                    if let Err(e) = self.apply(sink, command).await {
                        warn!(error = %e, "redis pub/sub command failed");
                        return Ended::Broken;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { return Ended::Broken };
                    self.forward(&message);
                }
                _ = health.tick() => {
                    match timeout(COMMAND_TIMEOUT, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            warn!(error = %e, "redis pub/sub health check failed");
                            return Ended::Broken;
                        }
                        Err(_) => {
                            warn!("redis pub/sub health check timed out");
                            return Ended::Broken;
                        }
                    }
                }
            }
        }
    }

    /// Applies a subscription change on the live connection. Any failure is taken as a
    /// broken connection (returned as `Err`): reconnecting then restores exactly the
    /// recorded channels, so Redis' view and ours cannot drift apart after a half-done
    /// request.
    async fn apply(&mut self, sink: &PubSubSink, command: Command) -> RedisResult<()> {
        let Command { subscribe, channels, reply } = command;
        let result = if subscribe {
            let fresh: Vec<String> = channels
                .into_iter()
                .filter(|c| !self.channels.contains(c))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let result = if fresh.is_empty() {
                Ok(())
            } else {
                timeout(COMMAND_TIMEOUT, subscribe_all(sink, &fresh))
                    .await
                    .unwrap_or_else(|_| Err(timeout_error("subscribing")))
            };
            if result.is_ok() {
                self.channels.extend(fresh);
            }
            let _ = reply.send(result.as_ref().map_err(backend).copied());
            result
        } else {
            let gone: Vec<String> = channels.into_iter().filter(|c| self.channels.remove(c)).collect();
            let result = if gone.is_empty() {
                Ok(())
            } else {
                timeout(COMMAND_TIMEOUT, unsubscribe_all(sink, &gone))
                    .await
                    .unwrap_or_else(|_| Err(timeout_error("unsubscribing")))
            };
            // Done either way: on failure the connection is replaced, and the new one
            // does not subscribe what was removed from the set.
            let _ = reply.send(Ok(()));
            result
        };
        result
    }

    /// Offers a message to the queue without ever waiting.
    fn forward(&mut self, message: &Msg) {
        // Channels come from our own SUBSCRIBEs, so they carry the prefix; anything else
        // is not ours to deliver.
        let Some(channel) = message.get_channel_name().strip_prefix(self.names.channels.as_str()) else {
            return;
        };
        let payload = Bytes::copy_from_slice(message.get_payload_bytes());
        match self.out.try_send((channel.to_owned(), payload)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now = Instant::now();
                if self.last_drop_warning.is_none_or(|at| now.duration_since(at) >= DROP_WARN_EVERY) {
                    self.last_drop_warning = Some(now);
                    warn!(channel, total_dropped = total, "pub/sub queue full, dropping messages");
                }
            }
            // The receiver is gone; `serve` notices through `out.closed()` and stops.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Reconnects with capped exponential backoff and re-subscribes every recorded
    /// channel. Returns `None` when the [`PubSub`] was dropped meanwhile.
    async fn reconnect(&mut self) -> Option<Connection> {
        let mut delay = RECONNECT_MIN;
        loop {
            // Wait first: the server just went away, an immediate retry would likely fail.
            if !self.wait_offline(jittered(delay)).await {
                return None;
            }
            tokio::select! {
                () = self.out.closed() => return None,
                result = self.open_and_resubscribe() => match result {
                    Ok(connection) => {
                        info!(channels = self.channels.len(), "redis pub/sub reconnected");
                        return Some(connection);
                    }
                    Err(e) => debug!(error = %e, ?delay, "redis pub/sub reconnection failed"),
                },
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    async fn open_and_resubscribe(&self) -> RedisResult<Connection> {
        let (sink, stream) = open_pubsub(&self.client).await?;
        let channels: Vec<String> = self.channels.iter().cloned().collect();
        timeout(COMMAND_TIMEOUT, subscribe_all(&sink, &channels))
            .await
            .unwrap_or_else(|_| Err(timeout_error("re-subscribing")))?;
        Ok((sink, stream))
    }

    /// Sleeps `delay` while the connection is down, answering requests meanwhile so that
    /// callers do not hang for an outage. Returns false when the [`PubSub`] was dropped.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                () = self.out.closed() => return false,
                command = self.commands.recv() => {
                    let Some(Command { subscribe, channels, reply }) = command else { return false };
                    let result = if !subscribe {
                        for channel in &channels {
                            self.channels.remove(channel);
                        }
                        Ok(())
                    } else if channels.iter().all(|c| self.channels.contains(c)) {
                        Ok(()) // Already recorded: re-subscribed on reconnection.
                    } else {
                        Err(CacheError::Backend("redis pub/sub connection is down, reconnecting".to_owned()))
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// `delay` minus up to half of it, so that many processes losing the same Redis do not
/// reconnect in lockstep. The clock's nanoseconds are random enough for that.
fn jittered(delay: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let half = delay / 2;
    let max = u32::try_from(half.as_millis()).unwrap_or(u32::MAX).max(1);
    delay - Duration::from_millis(u64::from(nanos % max)).min(half)
}
