//! A member of a Kafka consumer group, shaped like the in-process one.
//!
//! Each [`KafkaConsumer`] owns a librdkafka consumer driven by its own thread: the thread
//! polls (which also runs the rebalance callbacks, where blocking look-ups are fine) and
//! hands records over a bounded channel, so [`BusConsumer::next`] is a channel receive,
//! hence cancel safe, and the async runtime never blocks on librdkafka.
//!
//! Like the in-process bus, a record is handed out only while this member still owns its
//! partition: records buffered before a partition was revoked are dropped, and come again
//! from the group's committed offset to whoever owns the partition next. And like there, a
//! consumer dropped before a new one of its group subscribes has left the group by then
//! (see [`Departures`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::settings::KafkaSettings;
use super::{backend, ADMIN_TIMEOUT};
use crate::{BusConsumer, BusError, BusRecord, BusResult, StartFrom};

/// How long `subscribe` waits for the group to hand this member its partitions.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the polling thread notices that its consumer was dropped.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long `subscribe` waits for dropped consumers of its group to leave it.
const LEAVE_WAIT: Duration = Duration::from_secs(10);
/// Records fetched ahead of `next()`.
const BUFFER: usize = 256;

/// A member of a Kafka consumer group on one topic; leaves the group when dropped.
pub struct KafkaConsumer {
    topic: String,
    /// Declared (so dropped) before `records`: the polling thread must hold the last
    /// handle, because closing the consumer blocks.
    consumer: Arc<BaseConsumer<GroupContext>>,
    records: mpsc::Receiver<Fetched>,
    commit_timeout: Duration,
    /// Closed once the polling thread has closed the consumer.
    left: watch::Receiver<()>,
    group: String,
    departures: Arc<Departures>,
}

/// Dropped consumers still leaving their group, by group.
///
/// Leaving takes a round trip to the broker, done by the consumer's thread after the drop.
/// A new member joining before that makes the group rebalance around the leaving one,
/// which costs seconds on some brokers (tansu pauses a joining follower for 3 s), so
/// `subscribe` first waits for this bus's own leavers of the group.
#[derive(Default)]
pub(super) struct Departures(Mutex<HashMap<String, Vec<watch::Receiver<()>>>>);

impl Departures {
    /// Waits (bounded) until the dropped consumers of `group` have left it.
    async fn wait(&self, group: &str) {
        let leaving = self.0.lock().remove(group).unwrap_or_default();
        for mut left in leaving {
            // `changed` fails once the thread dropped the sender, after closing.
            let _ = tokio::time::timeout(LEAVE_WAIT, left.changed()).await;
        }
    }
}

/// A record with the ownership generation of its partition when it was fetched.
struct Fetched {
    record: BusRecord,
    generation: u64,
}

impl KafkaConsumer {
    /// Joins `group` on `topic` and returns once the group has given this member its
    /// partitions, with every start position resolved: a record published after this
    /// returns is seen.
    pub(super) async fn join(
        settings: &KafkaSettings,
        departures: &Arc<Departures>,
        topic: &str,
        group: &str,
        start: StartFrom,
        lag: metrics::Gauge,
    ) -> BusResult<KafkaConsumer> {
        departures.wait(group).await;
        let (assigned_tx, mut assigned) = watch::channel(false);
        let context = GroupContext {
            topic: topic.to_owned(),
            start,
            owned: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            assigned: assigned_tx,
            lag,
        };
        let consumer: BaseConsumer<GroupContext> = settings
            .consumer(group, start)
            .create_with_context(context)
            .map_err(backend("creating kafka consumer"))?;
        consumer.subscribe(&[topic]).map_err(backend("subscribing to kafka topic"))?;
        let consumer = Arc::new(consumer);
        let (tx, records) = mpsc::channel(BUFFER);
        let (left_tx, left) = watch::channel(());
        let polled = Arc::clone(&consumer);
        std::thread::Builder::new()
            .name("chattr-kafka-consumer".to_owned())
            .spawn(move || {
                poll_loop(&polled, &tx);
                // Normally the last handle (a commit in flight may hold another): closes
                // the consumer, which leaves the group.
                drop(polled);
                drop(left_tx);
            })
            .map_err(|e| BusError::Backend(format!("starting kafka consumer thread: {e}")))?;
        let consumer = KafkaConsumer {
            topic: topic.to_owned(),
            consumer,
            records,
            commit_timeout: settings.delivery_timeout,
            left,
            group: group.to_owned(),
            departures: Arc::clone(departures),
        };
        let joined = tokio::time::timeout(JOIN_TIMEOUT, assigned.wait_for(|&done| done)).await;
        match joined.map(|waited| waited.map(drop)) {
            Ok(Ok(())) => Ok(consumer),
            Ok(Err(_)) => Err(BusError::Backend("kafka consumer stopped while joining".to_owned())),
            Err(_) => Err(BusError::Backend(format!(
                "kafka group {group:?} gave no partitions of {topic:?} within {JOIN_TIMEOUT:?}"
            ))),
        }
    }
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    async fn next(&mut self) -> BusResult<BusRecord> {
        loop {
            let fetched = self.records.recv().await.ok_or(BusError::Closed)?;
            if self.consumer.context().owns(fetched.record.partition, fetched.generation) {
                return Ok(fetched.record);
            }
        }
    }

    async fn commit(&mut self, record: &BusRecord) -> BusResult<()> {
        if record.topic != self.topic {
            return Err(BusError::Backend(format!(
                "commit of a record of topic {:?} on a consumer of {:?}",
                record.topic, self.topic
            )));
        }
        let (partition, offset) = match (i32::try_from(record.partition), i64::try_from(record.offset + 1)) {
            (Ok(partition), Ok(offset)) => (partition, offset),
            _ => return Err(BusError::Backend(format!("commit of unknown record {record:?}"))),
        };
        if !self.consumer.context().owns_now(partition) {
            // The partition moved to another member, which may have committed further
            // already; Kafka would take this older commit and move the group backwards.
            // The in-process bus never moves a commit backwards either.
            debug!(topic = %self.topic, partition, "skipping commit of a partition this member lost");
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            .map_err(backend("building kafka commit"))?;
        let consumer = Arc::clone(&self.consumer);
        let commit = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync));
        match tokio::time::timeout(self.commit_timeout, commit).await {
            Ok(Ok(result)) => result.map_err(backend("kafka commit")),
            Ok(Err(e)) => Err(BusError::Backend(format!("kafka commit task: {e}"))),
            Err(_) => Err(BusError::Backend(format!("kafka commit took over {:?}", self.commit_timeout))),
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        let mut departures = self.departures.0.lock();
        let leaving = departures.entry(std::mem::take(&mut self.group)).or_default();
        leaving.retain(|left| left.has_changed().is_ok()); // Forget those that have left.
        leaving.push(self.left.clone());
    }
}

/// Polls until the [`KafkaConsumer`] is dropped. The caller then lets the last handle of
/// the consumer go, which closes it (leaving the group) on this thread rather than on an
/// async worker.
fn poll_loop(consumer: &BaseConsumer<GroupContext>, tx: &mpsc::Sender<Fetched>) {
    while !tx.is_closed() {
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Ok(message)) => {
                let fetched = Fetched {
                    record: to_record(&message),
                    generation: consumer.context().generation(message.partition()),
                };
                drop(message);
                if tx.blocking_send(fetched).is_err() {
                    break;
                }
            }
            // Broker connection trouble and the like: librdkafka retries by itself.
            Some(Err(e)) => warn!(error = %e, topic = %consumer.context().topic, "kafka consumer error"),
        }
    }
}

fn to_record(message: &BorrowedMessage<'_>) -> BusRecord {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers = message.headers().map_or_else(Vec::new, |headers| {
        headers.iter().map(|h| (h.key.to_owned(), h.value.map(text).unwrap_or_default())).collect()
    });
    BusRecord {
        topic: message.topic().to_owned(),
        // Kafka hands out non-negative partitions and offsets for fetched records.
        partition: u32::try_from(message.partition()).unwrap_or_default(),
        offset: u64::try_from(message.offset()).unwrap_or_default(),
        key: message.key().map(text).unwrap_or_default(),
        headers,
        payload: message.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        published_ms: message.timestamp().to_millis(),
    }
}

/// Tracks which partitions this member owns, and resolves `Latest` start positions when
/// partitions arrive.
struct GroupContext {
    topic: String,
    start: StartFrom,
    /// Owned partitions, each with the generation it was assigned in.
    owned: Mutex<HashMap<i32, u64>>,
    generations: AtomicU64,
    /// Becomes true after the first assignment (possibly empty: more members than
    /// partitions).
    assigned: watch::Sender<bool>,
    /// Records behind the end of the owned partitions, from librdkafka's statistics.
    lag: metrics::Gauge,
}

impl GroupContext {
    fn generation(&self, partition: i32) -> u64 {
        self.owned.lock().get(&partition).copied().unwrap_or(0)
    }

    /// Whether this member still owns `partition` since the assignment `generation`.
    fn owns(&self, partition: u32, generation: u64) -> bool {
        i32::try_from(partition).is_ok_and(|p| generation != 0 && self.generation(p) == generation)
    }

    fn owns_now(&self, partition: i32) -> bool {
        self.generation(partition) != 0
    }

    /// Sets the start of every partition with no committed offset to the current end.
    /// librdkafka would do the same lazily, after `subscribe` returned; then a record
    /// published in between would be skipped.
    fn resolve_latest(&self, consumer: &BaseConsumer<Self>, partitions: &mut TopicPartitionList) {
        // On failure librdkafka's own lazy reset (`auto.offset.reset=latest`) still applies.
        let committed = match consumer.committed_offsets(partitions.clone(), ADMIN_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                warn!(error = %e, topic = %self.topic, "reading committed kafka offsets failed");
                return;
            }
        };
        let mut ends = TopicPartitionList::new();
        for elem in committed.elements() {
            if elem.offset() == Offset::Invalid {
                let _ = ends.add_partition_offset(elem.topic(), elem.partition(), Offset::End);
            }
        }
        if ends.count() == 0 {
            return;
        }
        match consumer.offsets_for_times(ends, ADMIN_TIMEOUT) {
            Ok(ends) => {
                for elem in ends.elements() {
                    if let Offset::Offset(end) = elem.offset() {
                        let _ = partitions.set_partition_offset(
                            elem.topic(),
                            elem.partition(),
                            Offset::Offset(end),
                        );
                    }
                }
            }
            Err(e) => warn!(error = %e, topic = %self.topic, "reading kafka end offsets failed"),
        }
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        // Partition -1 is librdkafka's internal "unassigned" one; a lag of -1 is unknown.
        let behind: i64 = statistics
            .topics
            .get(&self.topic)
            .map(|topic| {
                topic
                    .partitions
                    .iter()
                    .filter(|(&partition, p)| {
                        partition >= 0 && p.consumer_lag >= 0 && self.owns_now(partition)
                    })
                    .map(|(_, p)| p.consumer_lag)
                    .sum()
            })
            .unwrap_or(0);
        self.lag.set(behind as f64);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.start == StartFrom::Latest && partitions.count() > 0 {
                    self.resolve_latest(consumer, partitions);
                }
                let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                self.owned.lock().extend(partitions.elements().iter().map(|e| (e.partition(), generation)));
                debug!(topic = %self.topic, partitions = partitions.count(), "kafka partitions assigned");
                let result = if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                };
                self.assigned.send_replace(true);
                result
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut owned = self.owned.lock();
                for elem in partitions.elements() {
                    owned.remove(&elem.partition());
                }
                drop(owned);
                debug!(topic = %self.topic, partitions = partitions.count(), "kafka partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                }
            }
            err => {
                warn!(error = ?err, topic = %self.topic, "kafka rebalance failed");
                self.owned.lock().clear();
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            warn!(error = %e, topic = %self.topic, "applying kafka assignment failed");
        }
    }
}
