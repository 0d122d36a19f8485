//! Runs the cache conformance suite and the Redis-specific checks against real
//! `redis-server` processes started by this test binary. Nothing is mocked and nothing is
//! skipped: without `redis-server` on the PATH every test fails, pointing at
//! `scripts/test.sh` (which installs it).
//!
//! One private server (from `chattr-testkit`) is shared by the whole binary (the suite's
//! names are unique per test); the restart test starts its own.

use std::sync::Arc;
use std::time::Duration;

use chattr_testkit::redis::{free_port, shared, RedisServer};

use bytes::Bytes;
use chattr_cache::conformance::{unique, within};
use chattr_cache::redis::{connect, RedisCache};
use chattr_cache::{Cache, DynCache, PresenceState, PubSub, RateDecision, RateLimit};

async fn redis_cache() -> RedisCache {
    let url = shared().url();
    within("connect", connect(&url)).await.expect("connect to the test redis")
}

/// Goes through `open` so that the URL dispatch is covered too.
async fn make_cache() -> DynCache {
    let url = shared().url();
    within("open", chattr_cache::open(&url)).await.expect("open the test redis")
}

/// Bound for the pub/sub connection to come back after a restart (the backoff is capped
/// at 5 s, so this leaves room for two attempts and a slow machine).
const RECOVER_WAIT: Duration = Duration::from_secs(20);

chattr_cache::cache_conformance_tests!(make_cache());

/// A plain connection for looking at what the cache wrote.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("client");
    within("raw connection", client.get_multiplexed_async_connection()).await.expect("raw connection")
}

/// Subscribers of a channel as Redis counts them.
async fn numsub(con: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("chattr:ch:{channel}"))
        .query_async::<Vec<(String, i64)>>(con)
        .await
        .expect("PUBSUB NUMSUB")
        .pop()
        .expect("one answer");
    reply.1
}

/// Polls `check` every 50 ms until it holds, failing after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn recv_text(pubsub: &mut PubSub, limit: Duration) -> Option<(String, String)> {
    match tokio::time::timeout(limit, pubsub.messages.recv()).await {
        Ok(Some((channel, payload))) => Some((channel, String::from_utf8_lossy(&payload).into_owned())),
        Ok(None) => panic!("pub/sub queue closed"),
        Err(_) => None,
    }
}

fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    i64::try_from(now.as_millis()).expect("ms fit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_survives_a_redis_restart() {
    let mut server = RedisServer::start(None);
    let cache = within("connect", connect(&server.url())).await.expect("connect");
    let (kept, dropped_while_down, added_while_down) =
        (unique("ch-kept"), unique("ch-gone"), unique("ch-new"));
    let mut pubsub = within("pubsub", cache.pubsub(64)).await.expect("pubsub");
    let both = [kept.clone(), dropped_while_down.clone()];
    within("subscribe", pubsub.control.subscribe(&both)).await.expect("subscribe");
    within("publish", cache.publish(&kept, Bytes::from_static(b"before"))).await.expect("publish");
    assert_eq!(
        recv_text(&mut pubsub, Duration::from_secs(5)).await,
        Some((kept.clone(), "before".to_owned()))
    );

    server.stop();
    // While Redis is away, subscribing fails at once (nothing hangs) and unsubscribing
    // is remembered: that channel must not come back with the reconnection.
    let err =
        within("subscribe while down", pubsub.control.subscribe(std::slice::from_ref(&added_while_down)))
            .await;
    assert!(err.is_err(), "subscribe succeeded with Redis down");
    within("unsubscribe while down", pubsub.control.unsubscribe(std::slice::from_ref(&dropped_while_down)))
        .await
        .expect("unsubscribe while down");
    let server = RedisServer::start(Some(server.port()));

    // Pub/sub is at most once: messages published before the re-subscription are lost,
    // so keep publishing until one gets through.
    let deadline = tokio::time::Instant::now() + RECOVER_WAIT;
    let mut attempt = 0;
    let received = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message got through {RECOVER_WAIT:?} after the restart"
        );
        attempt += 1;
        // The command connection reconnects by itself; a publish may fail meanwhile.
        let _ = cache.publish(&kept, Bytes::from(format!("after-{attempt}"))).await;
        if let Some(message) = recv_text(&mut pubsub, Duration::from_millis(200)).await {
            break message;
        }
    };
    assert_eq!(received.0, kept);
    assert!(received.1.starts_with("after-"), "got {received:?}");

    let mut con = raw(&server.url()).await;
    assert_eq!(numsub(&mut con, &kept).await, 1, "kept channel re-subscribed once");
    assert_eq!(numsub(&mut con, &dropped_while_down).await, 0, "channel unsubscribed while down came back");
    assert_eq!(numsub(&mut con, &added_while_down).await, 0, "failed subscribe left a subscription");
    // And subscribing works again on the new connection.
    within("subscribe after restart", pubsub.control.subscribe(std::slice::from_ref(&added_while_down)))
        .await
        .expect("subscribe after restart");
    within("publish", cache.publish(&added_while_down, Bytes::from_static(b"new"))).await.expect("publish");
    loop {
        let message = recv_text(&mut pubsub, Duration::from_secs(5)).await.expect("message on new channel");
        if message.0 == added_while_down {
            assert_eq!(message.1, "new");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_rate_limits_and_presence() {
    let (a, b) = (redis_cache().await, redis_cache().await);
    let key = unique("shared-rl");
    let limit = RateLimit { burst: 2, period: Duration::from_secs(30) };
    assert_eq!(a.rate_limit(&key, limit).await.expect("rl"), RateDecision::Allowed);
    assert_eq!(b.rate_limit(&key, limit).await.expect("rl"), RateDecision::Allowed);
    assert!(matches!(a.rate_limit(&key, limit).await.expect("rl"), RateDecision::Limited { .. }));
    assert!(matches!(b.rate_limit(&key, limit).await.expect("rl"), RateDecision::Limited { .. }));

    let user = unique("shared-user");
    let ttl = Duration::from_secs(60);
    assert!(a.presence_up(&user, "conn-a", ttl).await.expect("up"), "first connection anywhere");
    assert!(!b.presence_up(&user, "conn-b", ttl).await.expect("up"), "already online through a");
    assert!(b.presence(std::slice::from_ref(&user)).await.expect("presence")[0].online);
    assert!(!a.presence_down(&user, "conn-a", 1_000).await.expect("down"), "conn-b is still live");
    assert!(b.presence_down(&user, "conn-b", 2_000).await.expect("down"), "last connection gone");
    let seen_by_a = a.presence(std::slice::from_ref(&user)).await.expect("presence")[0];
    assert_eq!(seen_by_a, PresenceState { online: false, last_seen_ms: Some(2_000) });

    // Pub/sub crosses instances too.
    let channel = unique("shared-ch");
    let mut pubsub = b.pubsub(8).await.expect("pubsub");
    pubsub.control.subscribe(std::slice::from_ref(&channel)).await.expect("subscribe");
    a.publish(&channel, Bytes::from_static(b"hi")).await.expect("publish");
    assert_eq!(recv_text(&mut pubsub, Duration::from_secs(5)).await, Some((channel, "hi".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_pubsub_closes_its_connection() {
    let cache = redis_cache().await;
    let mut con = raw(&shared().url()).await;
    let (whole, half) = (unique("ch-drop-whole"), unique("ch-drop-half"));

    let pubsub = cache.pubsub(4).await.expect("pubsub");
    pubsub.control.subscribe(std::slice::from_ref(&whole)).await.expect("subscribe");
    assert_eq!(numsub(&mut con, &whole).await, 1);
    drop(pubsub);
    eventually("the dropped connection to leave", Duration::from_secs(5), || {
        let mut con = con.clone();
        let whole = whole.clone();
        async move { numsub(&mut con, &whole).await == 0 }
    })
    .await;

    // Dropping only the receiver is enough (the control handle then answers Ok, as in memory).
    let PubSub { control, messages } = cache.pubsub(4).await.expect("pubsub");
    control.subscribe(std::slice::from_ref(&half)).await.expect("subscribe");
    drop(messages);
    eventually("the receiver-less connection to leave", Duration::from_secs(5), || {
        let mut con = con.clone();
        let half = half.clone();
        async move { numsub(&mut con, &half).await == 0 }
    })
    .await;
    control.subscribe(std::slice::from_ref(&half)).await.expect("subscribe after the end is a no-op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_prefixed_and_expire_when_idle() {
    let cache = redis_cache().await;
    let mut con = raw(&shared().url()).await;
    let key = unique("rl-ttl");
    let limit = RateLimit { burst: 4, period: Duration::from_secs(8) };
    cache.rate_limit(&key, limit).await.expect("rl");
    let pttl: i64 =
        redis::cmd("PTTL").arg(format!("chattr:rl:{key}")).query_async(&mut con).await.expect("pttl");
    // One event on an empty bucket: idle again (full) after one interval, 2 s.
    assert!(pttl > 1_500 && pttl <= 2_000, "rate key PTTL {pttl}");

    let user = unique("user-ttl");
    cache.presence_up(&user, "c", Duration::from_secs(60)).await.expect("up");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("chattr:presence:{{{user}}}"))
        .query_async(&mut con)
        .await
        .expect("pttl");
    let keep = 30 * 24 * 3600 * 1000_i64;
    assert!(pttl > keep && pttl <= keep + 60_000, "presence key PTTL {pttl}");
    cache.presence_down(&user, "c", 5).await.expect("down");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("chattr:lastseen:{{{user}}}"))
        .query_async(&mut con)
        .await
        .expect("pttl");
    assert!(pttl > keep - 60_000 && pttl <= keep, "last-seen key PTTL {pttl}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("chattr:presence:{{{user}}}"))
        .query_async(&mut con)
        .await
        .expect("exists");
    assert_eq!(exists, 0, "an empty presence set is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_retry_after_is_precise_and_burst_zero_limits() {
    let cache = redis_cache().await;
    let key = unique("rl-precise");
    let limit = RateLimit { burst: 2, period: Duration::from_secs(10) };
    for _ in 0..2 {
        assert_eq!(cache.rate_limit(&key, limit).await.expect("rl"), RateDecision::Allowed);
    }
    let RateDecision::Limited { retry_after } = cache.rate_limit(&key, limit).await.expect("rl") else {
        panic!("allowed over burst");
    };
    // One token (period / burst = 5 s) must come back, minus the little time elapsed.
    assert!(
        retry_after <= Duration::from_secs(5) && retry_after > Duration::from_millis(4900),
        "{retry_after:?}"
    );

    let zero = RateLimit { burst: 0, period: Duration::from_secs(1) };
    assert!(matches!(
        cache.rate_limit(&unique("rl-zero"), zero).await.expect("rl"),
        RateDecision::Limited { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_sets_last_seen_to_about_the_expiry() {
    let cache = redis_cache().await;
    let user = unique("user-expiry");
    let before = unix_ms();
    assert!(cache.presence_up(&user, "c", Duration::from_millis(50)).await.expect("up"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let state = cache.presence(std::slice::from_ref(&user)).await.expect("presence")[0];
    assert!(!state.online);
    // Redis' clock is this machine's clock here.
    let seen = state.last_seen_ms.expect("last seen after expiry");
    assert!(seen >= before + 40 && seen <= unix_ms() - 90, "last_seen {seen} not near expiry");
    // An explicit later disconnect overrides it; an earlier expiry does not.
    assert!(cache.presence_down(&user, "c", seen + 1_000).await.expect("down"));
    assert_eq!(
        cache.presence(std::slice::from_ref(&user)).await.expect("presence")[0].last_seen_ms,
        Some(seen + 1_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_counts_drops_and_many_users_are_batched() {
    let cache = Arc::new(redis_cache().await);
    let channel = unique("ch-count");
    let pubsub = cache.pubsub(2).await.expect("pubsub");
    pubsub.control.subscribe(std::slice::from_ref(&channel)).await.expect("subscribe");
    for _ in 0..5 {
        cache.publish(&channel, Bytes::from_static(b"x")).await.expect("publish");
    }
    eventually("drops to be counted", Duration::from_secs(5), || {
        let cache = Arc::clone(&cache);
        async move { cache.dropped_messages() >= 3 }
    })
    .await;

    // More users than one script call takes, in order, duplicates included.
    let online = unique("user-batch");
    cache.presence_up(&online, "c", Duration::from_secs(60)).await.expect("up");
    let mut users: Vec<String> = (0..600).map(|i| format!("{online}-nobody-{i}")).collect();
    users[0] = online.clone();
    users[300] = online.clone();
    users[599] = online.clone();
    let states = cache.presence(&users).await.expect("presence");
    let online_at: Vec<usize> = states.iter().enumerate().filter(|(_, s)| s.online).map(|(i, _)| i).collect();
    assert_eq!(online_at, [0, 300, 599]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_unsupported_urls_fail_cleanly() {
    // Nothing listens on a port just freed (a race with another process is harmless: it
    // would not speak Redis either).
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let started = std::time::Instant::now();
    let result = within("open of a closed port", chattr_cache::open(&url)).await;
    assert!(matches!(result, Err(chattr_cache::CacheError::Backend(_))), "open of a closed port succeeded");
    assert!(started.elapsed() < Duration::from_secs(4), "failing took {:?}", started.elapsed());
    // This build has no TLS support in the redis crate: a clear error, not a panic.
    let result =
        within("open of rediss", chattr_cache::open(&format!("rediss://127.0.0.1:{}/", free_port()))).await;
    assert!(result.is_err(), "rediss:// without TLS support succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_deployments_apart_on_one_redis() {
    let base = shared().url();
    let open = |prefix: &str| {
        let url = format!("{base}?prefix={prefix}");
        async move { within("connect", connect(&url)).await.expect("connect with a prefix") }
    };
    let (a, b, a_too) = (open("tenant-a").await, open("tenant-b").await, open("tenant-a").await);
    let key = unique("prefixed-rl");
    let limit = RateLimit { burst: 1, period: Duration::from_secs(30) };
    assert_eq!(a.rate_limit(&key, limit).await.expect("rl"), RateDecision::Allowed);
    assert_eq!(b.rate_limit(&key, limit).await.expect("rl"), RateDecision::Allowed, "b has its own bucket");
    assert!(matches!(a_too.rate_limit(&key, limit).await.expect("rl"), RateDecision::Limited { .. }));

    let channel = unique("prefixed-ch");
    let mut on_b = b.pubsub(8).await.expect("pubsub");
    on_b.control.subscribe(std::slice::from_ref(&channel)).await.expect("subscribe");
    let mut on_a = a_too.pubsub(8).await.expect("pubsub");
    on_a.control.subscribe(std::slice::from_ref(&channel)).await.expect("subscribe");
    a.publish(&channel, Bytes::from_static(b"for a")).await.expect("publish");
    assert_eq!(
        recv_text(&mut on_a, Duration::from_secs(5)).await,
        Some((channel.clone(), "for a".to_owned()))
    );
    assert_eq!(recv_text(&mut on_b, Duration::from_millis(300)).await, None, "b must not hear a's channel");

    assert!(connect(&format!("{base}?prefix=bad%20name")).await.is_err());
}
