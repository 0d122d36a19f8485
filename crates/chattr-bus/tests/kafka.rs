//! Runs the bus conformance suite against [`KafkaBus`] on a real `tansu` broker started by
//! this test binary, plus what only a networked bus must survive: broker restarts. Nothing
//! is mocked and nothing is skipped: without tansu every test fails, pointing at
//! `scripts/install-tansu.sh`.
//!
//! One broker (from `chattr-testkit`) is shared by the whole binary (the suite's names are
//! unique per test); the restart tests start their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chattr_bus::conformance::{record, unique, within};
use chattr_bus::kafka::KafkaBus;
use chattr_bus::{Bus, BusConsumer, BusRecord, DynBus, StartFrom};
use chattr_testkit::kafka::{shared, KafkaServer};

/// Goes through `open` so that the URL dispatch is covered too.
async fn make_bus() -> DynBus {
    chattr_bus::open(&shared().url()).expect("open the test kafka")
}

chattr_bus::bus_conformance_tests!(make_bus());

/// Bound for clients to find a restarted broker again (reconnect back-off is capped at 1 s;
/// this leaves room for a group rejoin and a slow machine).
const RECOVER_WAIT: Duration = Duration::from_secs(20);

fn payloads(records: &[BusRecord]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect()
}

fn numbered(topic: &str, range: std::ops::Range<u32>) -> Vec<chattr_bus::OutgoingRecord> {
    range.map(|i| record(topic, "k", &i.to_string())).collect()
}

async fn next_n(consumer: &mut Box<dyn BusConsumer>, n: usize, wait: Duration) -> Vec<BusRecord> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = tokio::time::timeout(wait, consumer.next()).await;
        out.push(
            next.unwrap_or_else(|_| panic!("no record {} of {n} within {wait:?}", out.len())).expect("next"),
        );
    }
    out
}

/// Retries `publish` until it succeeds, failing after [`RECOVER_WAIT`].
async fn publish_eventually(bus: &KafkaBus, records: Vec<chattr_bus::OutgoingRecord>) {
    let deadline = Instant::now() + RECOVER_WAIT;
    loop {
        match bus.publish(records.clone()).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => eprintln!("publish not through yet: {e}"),
            Err(e) => panic!("publish still failing {RECOVER_WAIT:?} after the broker came back: {e}"),
        }
    }
}

#[test]
fn open_rejects_bad_kafka_urls() {
    assert!(chattr_bus::open("kafka://nohost").is_err());
    assert!(chattr_bus::open("kafka://127.0.0.1:9092?partitions=many").is_err());
}

/// Acknowledged records and committed offsets survive a broker restart; the producer and a
/// consumer that lived through it carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_commits_survive_a_broker_restart() {
    let mut server = tokio::task::block_in_place(KafkaServer::start);
    let bus = KafkaBus::open(&server.url()).expect("open");
    let (topic, group) = (unique("restart"), unique("g"));
    within("publish", bus.publish(numbered(&topic, 0..5))).await.expect("publish");
    let mut consumer =
        within("subscribe", bus.subscribe(&topic, &group, StartFrom::Earliest)).await.expect("sub");
    let first = next_n(&mut consumer, 3, RECOVER_WAIT).await;
    within("commit", consumer.commit(&first[2])).await.expect("commit");
    drop(consumer);
    let mut survivor =
        within("subscribe", bus.subscribe(&topic, &unique("live"), StartFrom::Earliest)).await.expect("sub");
    let seen = next_n(&mut survivor, 5, RECOVER_WAIT).await;
    assert_eq!(payloads(&seen), ["0", "1", "2", "3", "4"]);
    // Committed: the restart may make the group rebalance, after which a member resumes
    // from the group's commit (uncommitted records would rightly come again).
    within("commit", survivor.commit(&seen[4])).await.expect("commit");

    tokio::task::block_in_place(|| server.restart());

    publish_eventually(&bus, numbered(&topic, 5..10)).await;
    let after: Vec<String> = (5..10).map(|i| i.to_string()).collect();
    assert_eq!(
        payloads(&next_n(&mut survivor, 5, RECOVER_WAIT).await),
        after,
        "the live consumer carries on"
    );
    let mut resumed =
        within("subscribe", bus.subscribe(&topic, &group, StartFrom::Earliest)).await.expect("sub");
    let rest: Vec<String> = (3..10).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&next_n(&mut resumed, 7, RECOVER_WAIT).await), rest, "resumes after the commit");
    let mut fresh =
        within("subscribe", bus.subscribe(&topic, &unique("g"), StartFrom::Earliest)).await.expect("sub");
    let all: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&next_n(&mut fresh, 10, RECOVER_WAIT).await), all, "every record is retained");
}

/// While the broker is down, `publish` fails within its delivery timeout instead of
/// hanging; one waiting when the broker comes back either fails in time or succeeds; and
/// afterwards publishing works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_while_the_broker_is_down_is_bounded() {
    let delivery_timeout = Duration::from_secs(3);
    let bound = delivery_timeout + Duration::from_secs(5);
    let mut server = tokio::task::block_in_place(KafkaServer::start);
    let url = format!("{}?delivery_timeout_ms={}", server.url(), delivery_timeout.as_millis());
    let bus = Arc::new(KafkaBus::open(&url).expect("open"));
    let topic = unique("down");
    within("publish", bus.publish(vec![record(&topic, "k", "before")])).await.expect("publish");

    tokio::task::block_in_place(|| server.stop());
    let started = Instant::now();
    let result = tokio::time::timeout(bound, bus.publish(vec![record(&topic, "k", "while down")]))
        .await
        .unwrap_or_else(|_| panic!("publish hung for {bound:?} with the broker down"));
    assert!(result.is_err(), "publish to a stopped broker cannot succeed");
    eprintln!("publish with the broker down failed after {:?}", started.elapsed());

    let pending = {
        let (bus, topic) = (Arc::clone(&bus), topic.clone());
        tokio::spawn(async move { bus.publish(vec![record(&topic, "k", "across restart")]).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| server.restart());
    let across = tokio::time::timeout(bound, pending)
        .await
        .unwrap_or_else(|_| panic!("publish across the restart hung for {bound:?}"))
        .expect("publish task");

    publish_eventually(&bus, vec![record(&topic, "k", "after")]).await;
    let mut consumer =
        within("subscribe", bus.subscribe(&topic, &unique("g"), StartFrom::Earliest)).await.expect("sub");
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("after") {
        seen.extend(payloads(&next_n(&mut consumer, 1, RECOVER_WAIT).await));
    }
    assert_eq!(seen.first().map(String::as_str), Some("before"));
    if across.is_ok() {
        assert!(seen.iter().any(|p| p == "across restart"), "acknowledged record lost: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_prefixes_keep_deployments_apart_on_one_cluster() {
    let (tenant_a, tenant_b) = (unique("a"), unique("b"));
    let open =
        |prefix: &str| chattr_bus::open(&format!("{}?topic_prefix={prefix}.", shared().url())).expect("open");
    let (a, b) = (open(&tenant_a), open(&tenant_b));
    let topic = unique("shared-name");
    let mut on_a =
        within("subscribe a", a.subscribe(&topic, "fanout", StartFrom::Earliest)).await.expect("sub a");
    let mut on_b =
        within("subscribe b", b.subscribe(&topic, "fanout", StartFrom::Earliest)).await.expect("sub b");
    within("publish", a.publish(vec![record(&topic, "k", "for a")])).await.expect("publish");
    let got = within("a's record", on_a.next()).await.expect("next");
    // Consumers see the bus topic name, as published; the prefix is the bus's business.
    assert_eq!(
        (got.topic.as_str(), payloads(std::slice::from_ref(&got))[0].as_str()),
        (topic.as_str(), "for a")
    );
    within("commit", on_a.commit(&got)).await.expect("commit under the prefixed name");
    let leak = tokio::time::timeout(Duration::from_millis(500), on_b.next()).await;
    assert!(leak.is_err(), "b saw a's record: {leak:?}");
    assert!(chattr_bus::open(&format!("{}?topic_prefix=bad/name", shared().url())).is_err());
}

/// The canary (what `/ready` runs every few seconds) goes round on a real broker, for two
/// processes' canaries side by side; fails while the broker is down; and goes round again
/// once it is back, on the same member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_goes_round_fails_while_the_broker_is_down_and_recovers() {
    use chattr_bus::canary::Canary;
    let mut broker = KafkaServer::start();
    let bus = chattr_bus::open(&broker.url()).expect("open");
    let (a, b) = (Canary::new(bus.clone()), Canary::new(bus.clone()));
    for _ in 0..3 {
        a.probe(Duration::from_secs(10)).await.expect("a's round trip");
        b.probe(Duration::from_secs(10)).await.expect("b's round trip");
    }
    tokio::task::block_in_place(|| broker.stop());
    assert!(a.probe(Duration::from_secs(3)).await.is_err(), "no round trip without a broker");
    tokio::task::block_in_place(|| broker.restart());
    let deadline = Instant::now() + RECOVER_WAIT;
    while let Err(e) = a.probe(Duration::from_secs(3)).await {
        assert!(Instant::now() < deadline, "the canary did not recover: {e}");
    }
}
