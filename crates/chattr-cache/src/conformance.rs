//! The behaviour every [`Cache`](crate::Cache) impl must show, as one reusable suite.
//!
//! Each check is a `pub async fn` taking a fresh [`DynCache`];
//! [`cache_conformance_tests!`](crate::cache_conformance_tests) turns them all into
//! `#[tokio::test]`s for one impl (the calling crate needs `tokio`).
//! Keys, users and channels get a unique suffix because a real server is shared between
//! tests and runs. Every wait is bounded by [`WAIT`]; the few real sleeps are needed to
//! observe rate refills and TTL expiry, and keep wide margins.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{DynCache, PresenceState, PubSub, RateDecision, RateLimit};

/// Upper bound of every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Instantiates the conformance suite for the cache built by `$make` (an expression whose
/// `.await` yields a [`DynCache`](crate::DynCache)), one `#[tokio::test]` per check.
#[macro_export]
macro_rules! cache_conformance_tests {
    ($make:expr) => {
        $crate::__cache_conformance_cases!($make;
            rate_limit_allows_burst_then_limits,
            rate_limit_refills_and_ignores_limited_events,
            rate_limit_keys_are_independent,
            presence_up_and_down,
            presence_of_unknown_user_is_offline,
            presence_ttl_expiry_and_refresh,
            presence_up_many_matches_one_by_one,
            presence_down_many_matches_one_by_one,
            pubsub_delivers_in_order,
            pubsub_only_delivers_after_subscribe,
            pubsub_unsubscribe_stops_delivery,
            pubsub_every_connection_gets_it,
            pubsub_publish_many,
            pubsub_full_queue_drops_instead_of_blocking,
            values_compare_and_swap,
            values_expire,
            due_sets_order_and_replace,
            ping_answers,
        );
    };
}

/// Implementation detail of [`cache_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __cache_conformance_cases {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let cache: $crate::DynCache = $make.await;
                $crate::conformance::$name(cache).await;
            }
        )*
    };
}

/// A name unique across tests, processes and runs: `prefix-<pid>-<nanos>-<counter>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn limit(cache: &DynCache, key: &str, burst: u32, period: Duration) -> RateDecision {
    within("rate_limit", cache.rate_limit(key, RateLimit { burst, period })).await.expect("rate_limit")
}

async fn presence_of(cache: &DynCache, user: &str) -> PresenceState {
    let states = within("presence", cache.presence(&[user.to_owned()])).await.expect("presence");
    states[0]
}

async fn up(cache: &DynCache, user: &str, conn: &str, ttl: Duration) -> bool {
    within("presence_up", cache.presence_up(user, conn, ttl)).await.expect("presence_up")
}

async fn down(cache: &DynCache, user: &str, conn: &str, now_ms: i64) -> bool {
    within("presence_down", cache.presence_down(user, conn, now_ms)).await.expect("presence_down")
}

async fn connect(cache: &DynCache, capacity: usize, channels: &[&String]) -> PubSub {
    let pubsub = within("pubsub", cache.pubsub(capacity)).await.expect("pubsub");
    let channels: Vec<String> = channels.iter().map(|c| (*c).clone()).collect();
    within("subscribe", pubsub.control.subscribe(&channels)).await.expect("subscribe");
    pubsub
}

async fn publish(cache: &DynCache, channel: &str, payload: &str) {
    let payload = Bytes::from(payload.to_owned());
    within("publish", cache.publish(channel, payload)).await.expect("publish");
}

/// The next message as `(channel, payload)`.
async fn recv(pubsub: &mut PubSub) -> (String, String) {
    let (channel, payload) = within("message", pubsub.messages.recv()).await.expect("queue open");
    (channel, String::from_utf8_lossy(&payload).into_owned())
}

fn msg(channel: &str, payload: &str) -> (String, String) {
    (channel.to_owned(), payload.to_owned())
}

/// `burst` events pass at once, the next is limited with a retry in `(0, period]`.
pub async fn rate_limit_allows_burst_then_limits(cache: DynCache) {
    let key = unique("rl-burst");
    // A long period so a slow machine cannot refill a token mid-test.
    let period = Duration::from_secs(30);
    for i in 0..3 {
        assert_eq!(limit(&cache, &key, 3, period).await, RateDecision::Allowed, "event {i}");
    }
    match limit(&cache, &key, 3, period).await {
        RateDecision::Limited { retry_after } => {
            assert!(retry_after > Duration::ZERO && retry_after <= period, "retry_after {retry_after:?}");
        }
        RateDecision::Allowed => panic!("event over the burst was allowed"),
    }
}

/// Waiting `retry_after` allows again, and limited events did not count.
pub async fn rate_limit_refills_and_ignores_limited_events(cache: DynCache) {
    let key = unique("rl-refill");
    let period = Duration::from_millis(200);
    assert_eq!(limit(&cache, &key, 2, period).await, RateDecision::Allowed);
    assert_eq!(limit(&cache, &key, 2, period).await, RateDecision::Allowed);
    let RateDecision::Limited { retry_after } = limit(&cache, &key, 2, period).await else {
        panic!("third event in the burst window was allowed");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= period, "retry_after {retry_after:?}");
    // Had these been counted, the wait below would not be enough.
    for _ in 0..5 {
        assert!(matches!(limit(&cache, &key, 2, period).await, RateDecision::Limited { .. }));
    }
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert_eq!(limit(&cache, &key, 2, period).await, RateDecision::Allowed);
}

/// Limits of different keys do not affect each other.
pub async fn rate_limit_keys_are_independent(cache: DynCache) {
    let (a, b) = (unique("rl-a"), unique("rl-b"));
    let period = Duration::from_secs(30);
    assert_eq!(limit(&cache, &a, 1, period).await, RateDecision::Allowed);
    assert!(matches!(limit(&cache, &a, 1, period).await, RateDecision::Limited { .. }));
    assert_eq!(limit(&cache, &b, 1, period).await, RateDecision::Allowed);
}

/// Online while any connection is up; offline with `last_seen_ms` after the last goes.
pub async fn presence_up_and_down(cache: DynCache) {
    let user = unique("user");
    let ttl = Duration::from_secs(60);
    assert!(up(&cache, &user, "c1", ttl).await, "first connection brings the user online");
    assert!(!up(&cache, &user, "c1", ttl).await, "refresh is not a new arrival");
    assert!(!up(&cache, &user, "c2", ttl).await, "second connection is not a new arrival");
    assert_eq!(presence_of(&cache, &user).await, PresenceState { online: true, last_seen_ms: None });
    assert!(!down(&cache, &user, "c1", 1_000).await, "c2 is still live");
    assert!(presence_of(&cache, &user).await.online);
    assert!(down(&cache, &user, "c2", 2_000).await, "last connection gone");
    assert_eq!(presence_of(&cache, &user).await, PresenceState { online: false, last_seen_ms: Some(2_000) });
    assert!(up(&cache, &user, "c3", ttl).await, "coming back is a new arrival");
    let other = unique("user");
    let states = within("presence", cache.presence(&[other.clone(), user.clone(), other])).await;
    let online: Vec<bool> = states.expect("presence").iter().map(|s| s.online).collect();
    assert_eq!(online, [false, true, false], "answers follow the order asked");
}

/// A user never seen is offline with no last-seen time.
pub async fn presence_of_unknown_user_is_offline(cache: DynCache) {
    let state = presence_of(&cache, &unique("nobody")).await;
    assert_eq!(state, PresenceState { online: false, last_seen_ms: None });
}

/// A connection not refreshed within its TTL stops counting; refreshing extends it.
pub async fn presence_ttl_expiry_and_refresh(cache: DynCache) {
    let user = unique("ttl-user");
    assert!(up(&cache, &user, "c1", Duration::from_millis(150)).await);
    assert!(presence_of(&cache, &user).await.online);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!presence_of(&cache, &user).await.online, "expired connection still online");
    assert!(up(&cache, &user, "c1", Duration::from_millis(500)).await, "back after expiry");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!up(&cache, &user, "c1", Duration::from_secs(10)).await, "refresh while live");
    // Past the first TTL (500 ms) but inside the refreshed one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(presence_of(&cache, &user).await.online, "refresh did not extend the TTL");
}

/// Many connections marked live at once answer as the same calls one by one would.
pub async fn presence_up_many_matches_one_by_one(cache: DynCache) {
    let (a, b, c) = (unique("many-a"), unique("many-b"), unique("many-c"));
    let ttl = Duration::from_secs(60);
    assert!(up(&cache, &a, "a1", ttl).await);
    let live =
        [(a.clone(), "a2"), (b.clone(), "b1"), (b.clone(), "b2"), (c.clone(), "c1"), (b.clone(), "b1")]
            .map(|(u, conn)| (u, conn.to_owned()));
    let answers =
        within("presence_up_many", cache.presence_up_many(&live, ttl)).await.expect("presence_up_many");
    assert_eq!(answers, [false, true, false, true, false], "true only where a user came online");
    let states =
        within("presence", cache.presence(&[a.clone(), b.clone(), c.clone()])).await.expect("presence");
    assert!(states.iter().all(|s| s.online));
    assert!(within("none", cache.presence_up_many(&[], ttl)).await.expect("empty").is_empty());
    // b has b1 and b2 live: one going does not take b offline.
    assert!(!down(&cache, &b, "b1", 5).await);
    assert!(down(&cache, &b, "b2", 6).await);
}

/// Many connections closed at once answer as the same calls one by one would, and record
/// last seen for the users they take offline.
pub async fn presence_down_many_matches_one_by_one(cache: DynCache) {
    let (a, b, c, d) = (unique("gone-a"), unique("gone-b"), unique("gone-c"), unique("gone-d"));
    let ttl = Duration::from_secs(60);
    for (user, conn) in [(&a, "a1"), (&b, "b1"), (&b, "b2"), (&c, "c1"), (&c, "c2")] {
        up(&cache, user, conn, ttl).await;
    }
    // b goes entirely (its second close takes it offline), c keeps c2, d was never seen,
    // and a repeated close changes nothing.
    let gone = [
        (a.clone(), "a1"),
        (b.clone(), "b1"),
        (c.clone(), "c1"),
        (b.clone(), "b2"),
        (a.clone(), "a1"),
        (d.clone(), "d1"),
    ]
    .map(|(u, conn)| (u, conn.to_owned()));
    let answers = within("presence_down_many", cache.presence_down_many(&gone, 7_000))
        .await
        .expect("presence_down_many");
    assert_eq!(answers, [true, false, false, true, true, true], "true where no connection is left");
    let states = within("presence", cache.presence(&[a, b, c, d])).await.expect("presence");
    assert_eq!(states[0], PresenceState { online: false, last_seen_ms: Some(7_000) });
    assert_eq!(states[1], PresenceState { online: false, last_seen_ms: Some(7_000) });
    assert!(states[2].online, "c2 is still live");
    assert!(!states[3].online);
    assert!(within("none", cache.presence_down_many(&[], 8_000)).await.expect("empty").is_empty());
}

/// A subscriber receives its channel's messages in publish order.
pub async fn pubsub_delivers_in_order(cache: DynCache) {
    let channel = unique("ch-order");
    let mut pubsub = connect(&cache, 64, &[&channel]).await;
    for i in 0..20 {
        publish(&cache, &channel, &i.to_string()).await;
    }
    for i in 0..20 {
        assert_eq!(recv(&mut pubsub).await, msg(&channel, &i.to_string()));
    }
}

/// Messages published before subscribing are not delivered (fire and forget).
pub async fn pubsub_only_delivers_after_subscribe(cache: DynCache) {
    let channel = unique("ch-late");
    let mut pubsub = connect(&cache, 64, &[]).await;
    publish(&cache, &channel, "before").await;
    within("subscribe", pubsub.control.subscribe(std::slice::from_ref(&channel))).await.expect("subscribe");
    publish(&cache, &channel, "after").await;
    assert_eq!(recv(&mut pubsub).await, msg(&channel, "after"));
}

/// After unsubscribing a channel its messages stop; other channels go on.
pub async fn pubsub_unsubscribe_stops_delivery(cache: DynCache) {
    let (a, b) = (unique("ch-a"), unique("ch-b"));
    let mut pubsub = connect(&cache, 64, &[&a, &b]).await;
    publish(&cache, &a, "1").await;
    within("unsubscribe", pubsub.control.unsubscribe(std::slice::from_ref(&a))).await.expect("unsubscribe");
    publish(&cache, &a, "2").await;
    publish(&cache, &b, "3").await;
    assert_eq!(recv(&mut pubsub).await, msg(&a, "1"));
    assert_eq!(recv(&mut pubsub).await, msg(&b, "3"), "message after unsubscribe leaked");
}

/// Every connection subscribed to a channel gets each message.
pub async fn pubsub_every_connection_gets_it(cache: DynCache) {
    let channel = unique("ch-both");
    let mut first = connect(&cache, 64, &[&channel]).await;
    let mut second = connect(&cache, 64, &[&channel]).await;
    publish(&cache, &channel, "hello").await;
    assert_eq!(recv(&mut first).await, msg(&channel, "hello"));
    assert_eq!(recv(&mut second).await, msg(&channel, "hello"));
}

/// `publish_many` delivers once per channel, to each channel's subscribers.
pub async fn pubsub_publish_many(cache: DynCache) {
    let (a, b, c) = (unique("ch-a"), unique("ch-b"), unique("ch-c"));
    let mut first = connect(&cache, 64, &[&a, &b]).await;
    let mut second = connect(&cache, 64, &[&b, &c]).await;
    let payload = Bytes::from_static(b"x");
    let channels = [a.clone(), b.clone(), c.clone()];
    within("publish_many", cache.publish_many(&channels, payload)).await.expect("publish_many");
    // Sentinels show nothing else was queued before them.
    publish(&cache, &a, "end").await;
    publish(&cache, &c, "end").await;
    let mut got = vec![recv(&mut first).await, recv(&mut first).await];
    got.sort();
    assert_eq!(got, [msg(&a, "x"), msg(&b, "x")]);
    assert_eq!(recv(&mut first).await, msg(&a, "end"));
    let mut got = vec![recv(&mut second).await, recv(&mut second).await];
    got.sort();
    assert_eq!(got, [msg(&b, "x"), msg(&c, "x")]);
    assert_eq!(recv(&mut second).await, msg(&c, "end"));
}

/// A subscriber that does not read loses messages; publishers never wait for it.
pub async fn pubsub_full_queue_drops_instead_of_blocking(cache: DynCache) {
    let channel = unique("ch-full");
    let mut pubsub = connect(&cache, 4, &[&channel]).await;
    let total = 100;
    for i in 0..total {
        publish(&cache, &channel, &i.to_string()).await;
    }
    // Let an impl with a network reader settle, then drain what was kept; the sentinel
    // goes out once the queue has room, and collects anything still in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut kept = Vec::new();
    while let Ok((_, payload)) = pubsub.messages.try_recv() {
        kept.push(String::from_utf8_lossy(&payload).into_owned());
    }
    publish(&cache, &channel, "end").await;
    loop {
        let (_, payload) = recv(&mut pubsub).await;
        if payload == "end" {
            break;
        }
        kept.push(payload);
    }
    let kept: Vec<u32> = kept.iter().map(|p| p.parse().expect("number")).collect();
    assert!(!kept.is_empty() && kept.len() < total as usize, "kept {} of {total}", kept.len());
    assert_eq!(kept[0], 0, "the first message fit in the empty queue");
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "kept messages out of order: {kept:?}");
}

/// `ping` answers.
pub async fn ping_answers(cache: DynCache) {
    within("ping", cache.ping()).await.expect("ping");
}

/// `compare_and_swap` writes only over the expected value (or absence) and deletes.
pub async fn values_compare_and_swap(cache: DynCache) {
    let key = unique("cas");
    let ttl = Duration::from_secs(60);
    assert_eq!(cache.get(&key).await.unwrap(), None);
    assert!(!cache.compare_and_swap(&key, Some(b"x"), Some(b"y"), ttl).await.unwrap(), "absent is not x");
    assert!(cache.compare_and_swap(&key, None, Some(b"one"), ttl).await.unwrap());
    assert!(!cache.compare_and_swap(&key, None, Some(b"two"), ttl).await.unwrap(), "present is not absent");
    assert!(!cache.compare_and_swap(&key, Some(b"two"), Some(b"three"), ttl).await.unwrap());
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"one"[..]));
    let missing = unique("cas-missing");
    let many = cache.get_many(&[missing.clone(), key.clone(), missing]).await.unwrap();
    assert_eq!(many, vec![None, Some(Bytes::from_static(b"one")), None]);
    assert!(cache.get_many(&[]).await.unwrap().is_empty());
    assert!(cache.compare_and_swap(&key, Some(b"one"), Some(b"\x00binary\xff"), ttl).await.unwrap());
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"\x00binary\xff"[..]));
    assert!(cache.compare_and_swap(&key, Some(b"\x00binary\xff"), None, ttl).await.unwrap());
    assert_eq!(cache.get(&key).await.unwrap(), None);
}

/// A written value is gone after its TTL.
pub async fn values_expire(cache: DynCache) {
    let key = unique("ttl");
    assert!(cache.compare_and_swap(&key, None, Some(b"v"), Duration::from_millis(200)).await.unwrap());
    assert!(cache.get(&key).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(cache.get(&key).await.unwrap(), None);
    assert!(cache.compare_and_swap(&key, None, Some(b"again"), Duration::from_secs(5)).await.unwrap());
}

/// Due-sets answer members due by a time, earliest first; scheduling again moves a member.
pub async fn due_sets_order_and_replace(cache: DynCache) {
    let set = unique("due");
    assert_eq!(cache.scheduled(&set).await.unwrap(), 0);
    cache.schedule(&set, "late", 3_000).await.unwrap();
    cache.schedule(&set, "early", 1_000).await.unwrap();
    cache.schedule(&set, "middle", 2_000).await.unwrap();
    assert_eq!(cache.due(&set, 999, 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(cache.due(&set, 2_000, 10).await.unwrap(), ["early", "middle"]);
    assert_eq!(cache.scheduled(&set).await.unwrap(), 3, "due members stay until taken out");
    assert_eq!(cache.due(&set, 5_000, 2).await.unwrap(), ["early", "middle"], "limit");
    cache.schedule(&set, "early", 4_000).await.unwrap();
    assert_eq!(cache.due(&set, 3_500, 10).await.unwrap(), ["middle", "late"]);
    cache.unschedule(&set, "middle").await.unwrap();
    cache.unschedule(&set, "never-there").await.unwrap();
    assert_eq!(cache.due(&set, 10_000, 10).await.unwrap(), ["late", "early"]);
    assert_eq!(cache.scheduled(&set).await.unwrap(), 2);
}
