//! The behaviour every [`Bus`](crate::Bus) impl must show, as one reusable suite.
//!
//! Each check is a `pub async fn` taking a fresh [`DynBus`]; [`bus_conformance_tests!`]
//! turns them all into `#[tokio::test]`s for one impl (the calling crate needs `tokio`).
//! Topic and group names get a unique suffix because a real broker is shared between
//! tests and runs. Every wait is bounded by [`WAIT`], so a broken impl fails, never hangs.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{BusConsumer, BusRecord, DynBus, OutgoingRecord, StartFrom};

/// Upper bound of every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for something that should *not* happen (an extra record).
pub const QUIET: Duration = Duration::from_millis(200);

/// Instantiates the conformance suite for the bus built by `$make` (an expression whose
/// `.await` yields a [`DynBus`](crate::DynBus)), one `#[tokio::test]` per check.
#[macro_export]
macro_rules! bus_conformance_tests {
    ($make:expr) => {
        $crate::__bus_conformance_cases!($make;
            publish_then_consume_in_order,
            many_keys_keep_order_per_key,
            two_groups_each_see_all,
            one_group_splits_without_duplicates,
            new_consumer_resumes_after_commit,
            uncommitted_records_are_redelivered,
            latest_skips_earlier_records,
            headers_and_payload_round_trip,
            next_waits_and_wakes_on_publish,
            next_is_cancel_safe,
            unhurried_consumers_get_every_record,
            ping_answers,
        );
    };
}

/// Implementation detail of [`bus_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __bus_conformance_cases {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let bus: $crate::DynBus = $make.await;
                $crate::conformance::$name(bus).await;
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

/// A record with a plain payload and one header.
pub fn record(topic: &str, key: &str, payload: &str) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.to_owned(),
        key: key.to_owned(),
        headers: vec![("type".to_owned(), "test".to_owned())],
        payload: Bytes::from(payload.to_owned()),
    }
}

async fn publish(bus: &DynBus, records: Vec<OutgoingRecord>) {
    within("publish", bus.publish(records)).await.expect("publish");
}

async fn subscribe(bus: &DynBus, topic: &str, group: &str, start: StartFrom) -> Box<dyn BusConsumer> {
    within("subscribe", bus.subscribe(topic, group, start)).await.expect("subscribe")
}

async fn next(consumer: &mut Box<dyn BusConsumer>) -> BusRecord {
    within("next record", consumer.next()).await.expect("next")
}

async fn next_n(consumer: &mut Box<dyn BusConsumer>, n: usize) -> Vec<BusRecord> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(consumer).await);
    }
    out
}

fn payload(record: &BusRecord) -> String {
    String::from_utf8_lossy(&record.payload).into_owned()
}

/// Asserts no record arrives within [`QUIET`].
async fn assert_quiet(consumer: &mut Box<dyn BusConsumer>) {
    if let Ok(Ok(record)) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!("unexpected record {:?}", payload(&record));
    }
}

/// Records of one key come back in publish order, with growing offsets in one partition.
pub async fn publish_then_consume_in_order(bus: DynBus) {
    let topic = unique("order");
    publish(&bus, (0..5).map(|i| record(&topic, "k", &i.to_string())).collect()).await;
    for i in 5..10 {
        publish(&bus, vec![record(&topic, "k", &i.to_string())]).await;
    }
    let mut consumer = subscribe(&bus, &topic, &unique("g"), StartFrom::Earliest).await;
    let got = next_n(&mut consumer, 10).await;
    let payloads: Vec<String> = got.iter().map(payload).collect();
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
    assert!(got.iter().all(|r| r.topic == topic && r.key == "k" && r.partition == got[0].partition));
    assert!(got.windows(2).all(|w| w[0].offset < w[1].offset), "offsets must grow");
    assert_quiet(&mut consumer).await;
}

/// An unhurried consumer may read later, but reads the same records, in the same order,
/// and commits like any other.
pub async fn unhurried_consumers_get_every_record(bus: DynBus) {
    let topic = unique("unhurried");
    let group = unique("g");
    publish(&bus, (0..5).map(|i| record(&topic, "k", &i.to_string())).collect()).await;
    let mut consumer =
        within("subscribe_unhurried", bus.subscribe_unhurried(&topic, &group, StartFrom::Earliest))
            .await
            .expect("subscribe_unhurried");
    let got = next_n(&mut consumer, 5).await;
    let payloads: Vec<String> = got.iter().map(payload).collect();
    assert_eq!(payloads, ["0", "1", "2", "3", "4"]);
    within("commit", consumer.commit(&got[4])).await.expect("commit");
    assert_quiet(&mut consumer).await;
}

/// With many keys interleaved, each key's records keep their order.
pub async fn many_keys_keep_order_per_key(bus: DynBus) {
    let topic = unique("keys");
    let (keys, per_key) = (16, 10);
    for round in 0..per_key {
        let batch = (0..keys).map(|k| record(&topic, &format!("key{k}"), &round.to_string())).collect();
        publish(&bus, batch).await;
    }
    let mut consumer = subscribe(&bus, &topic, &unique("g"), StartFrom::Earliest).await;
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    for record in next_n(&mut consumer, keys * per_key).await {
        if let Some(prev) = last_offset.insert(record.partition, record.offset) {
            assert!(prev < record.offset, "partition {} went back", record.partition);
        }
        seen.entry(record.key.clone()).or_default().push(payload(&record).parse().expect("number"));
    }
    assert_eq!(seen.len(), keys);
    for (key, rounds) in seen {
        assert_eq!(rounds, (0..per_key as u32).collect::<Vec<_>>(), "order of {key}");
    }
}

/// Two groups each receive every record.
pub async fn two_groups_each_see_all(bus: DynBus) {
    let topic = unique("groups");
    let mut a = subscribe(&bus, &topic, &unique("ga"), StartFrom::Earliest).await;
    let mut b = subscribe(&bus, &topic, &unique("gb"), StartFrom::Earliest).await;
    publish(&bus, (0..20).map(|i| record(&topic, &format!("k{i}"), &i.to_string())).collect()).await;
    let all: HashSet<String> = (0..20).map(|i| i.to_string()).collect();
    for consumer in [&mut a, &mut b] {
        let got: HashSet<String> = next_n(consumer, 20).await.iter().map(payload).collect();
        assert_eq!(got, all);
        assert_quiet(consumer).await;
    }
}

/// Two live consumers of one group together get every record exactly once.
pub async fn one_group_splits_without_duplicates(bus: DynBus) {
    let topic = unique("split");
    let group = unique("g");
    let consumers = [
        subscribe(&bus, &topic, &group, StartFrom::Earliest).await,
        subscribe(&bus, &topic, &group, StartFrom::Earliest).await,
    ];
    let count = 40;
    publish(&bus, (0..count).map(|i| record(&topic, &format!("k{i}"), &i.to_string())).collect()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut consumer| {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(record) = consumer.next().await {
                    if tx.send(payload(&record)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(within("split record", rx.recv()).await.expect("consumer task alive"));
    }
    // Anything arriving now would be a duplicate.
    if let Ok(Some(extra)) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("duplicate delivery of {extra}");
    }
    tasks.iter().for_each(|t| t.abort());
    let unique_got: HashSet<&String> = got.iter().collect();
    assert_eq!(unique_got.len(), count, "duplicates in {got:?}");
}

/// After a commit, the next consumer of the group starts right after it, whatever its
/// [`StartFrom`].
pub async fn new_consumer_resumes_after_commit(bus: DynBus) {
    let topic = unique("commit");
    let group = unique("g");
    publish(&bus, (0..6).map(|i| record(&topic, "k", &i.to_string())).collect()).await;
    let mut first = subscribe(&bus, &topic, &group, StartFrom::Earliest).await;
    let got = next_n(&mut first, 3).await;
    within("commit", first.commit(&got[2])).await.expect("commit");
    drop(first);
    let mut second = subscribe(&bus, &topic, &group, StartFrom::Latest).await;
    let rest: Vec<String> = next_n(&mut second, 3).await.iter().map(payload).collect();
    assert_eq!(rest, ["3", "4", "5"]);
}

/// Records read but not committed are delivered again to the next consumer.
pub async fn uncommitted_records_are_redelivered(bus: DynBus) {
    let topic = unique("redeliver");
    let group = unique("g");
    publish(&bus, (0..5).map(|i| record(&topic, "k", &i.to_string())).collect()).await;
    let mut first = subscribe(&bus, &topic, &group, StartFrom::Earliest).await;
    let got = next_n(&mut first, 3).await;
    within("commit", first.commit(&got[0])).await.expect("commit");
    drop(first);
    let mut second = subscribe(&bus, &topic, &group, StartFrom::Earliest).await;
    let again: Vec<String> = next_n(&mut second, 4).await.iter().map(payload).collect();
    assert_eq!(again, ["1", "2", "3", "4"]);
}

/// A new group with [`StartFrom::Latest`] skips older records; `Earliest` sees them.
pub async fn latest_skips_earlier_records(bus: DynBus) {
    let topic = unique("latest");
    publish(&bus, vec![record(&topic, "k", "old")]).await;
    let mut latest = subscribe(&bus, &topic, &unique("gl"), StartFrom::Latest).await;
    let mut earliest = subscribe(&bus, &topic, &unique("ge"), StartFrom::Earliest).await;
    publish(&bus, vec![record(&topic, "k", "new")]).await;
    assert_eq!(payload(&next(&mut latest).await), "new");
    let both: Vec<String> = next_n(&mut earliest, 2).await.iter().map(payload).collect();
    assert_eq!(both, ["old", "new"]);
    assert_quiet(&mut latest).await;
}

/// Headers (in order, repeated names allowed) and binary payloads survive the trip.
pub async fn headers_and_payload_round_trip(bus: DynBus) {
    let topic = unique("headers");
    let headers = vec![
        ("type".to_owned(), "message.created".to_owned()),
        ("v".to_owned(), "1".to_owned()),
        ("type".to_owned(), "shadowed".to_owned()),
        ("traceparent".to_owned(), "00-abc-def-01".to_owned()),
    ];
    let binary = Bytes::from_static(&[0, 159, 146, 150, 255, 0]);
    let out = |payload: Bytes| OutgoingRecord {
        topic: topic.clone(),
        key: "k".to_owned(),
        headers: headers.clone(),
        payload,
    };
    publish(&bus, vec![out(binary.clone()), out(Bytes::new())]).await;
    let mut consumer = subscribe(&bus, &topic, &unique("g"), StartFrom::Earliest).await;
    let got = next_n(&mut consumer, 2).await;
    assert_eq!(got[0].payload, binary);
    assert!(got[1].payload.is_empty());
    for record in &got {
        assert_eq!(record.headers, headers);
        assert_eq!(record.header("type"), Some("message.created"));
        assert_eq!(record.header("missing"), None);
    }
}

/// `next()` waits while there is nothing, and wakes when a record is published.
pub async fn next_waits_and_wakes_on_publish(bus: DynBus) {
    let topic = unique("wait");
    let mut consumer = subscribe(&bus, &topic, &unique("g"), StartFrom::Earliest).await;
    assert_quiet(&mut consumer).await;
    let waiter =
        tokio::spawn(async move { within("woken next", consumer.next()).await.map(|r| payload(&r)) });
    // Give the waiter a chance to park first; the assertion holds either way.
    tokio::task::yield_now().await;
    publish(&bus, vec![record(&topic, "k", "wake")]).await;
    let got = within("waiter", waiter).await.expect("waiter task");
    assert_eq!(got.expect("next"), "wake");
}

/// Cancelling `next()` (as `tokio::select!` does) never loses a record.
pub async fn next_is_cancel_safe(bus: DynBus) {
    let topic = unique("cancel");
    let mut consumer = subscribe(&bus, &topic, &unique("g"), StartFrom::Earliest).await;
    let count = 50;
    let publisher = {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            for i in 0..count {
                bus.publish(vec![record(&topic, "k", &i.to_string())]).await.expect("publish");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut got = Vec::new();
    within("all records through select", async {
        while got.len() < count {
            tokio::select! {
                record = consumer.next() => got.push(payload(&record.expect("next"))),
                () = tokio::time::sleep(Duration::from_micros(200)) => {}
            }
        }
    })
    .await;
    within("publisher", publisher).await.expect("publisher task");
    assert_eq!(got, (0..count).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// `ping` answers.
pub async fn ping_answers(bus: DynBus) {
    within("ping", bus.ping()).await.expect("ping");
}
