//! The durable event bus between services: topics split into partitions by key (order per
//! key), consumer groups with committed offsets, at-least-once delivery.
//!
//! [`inproc::InProcBus`] is the reference and embedded impl; [`kafka::KafkaBus`] runs on
//! any Kafka-protocol broker. Every impl must pass the suite in [`conformance`].

pub mod canary;
pub mod conformance;
pub mod inproc;
mod instrumented;
pub mod kafka;
pub mod metrics;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// Errors of bus calls.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus was closed (shutdown).
    #[error("bus closed")]
    Closed,
    /// The backend failed.
    #[error("bus backend: {0}")]
    Backend(String),
}

/// Result of bus calls.
pub type BusResult<T> = Result<T, BusError>;

/// A shared, dynamically chosen bus.
pub type DynBus = Arc<dyn Bus>;

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// From the oldest retained record (durable processors: relay consumers, fan-out).
    Earliest,
    /// Only records published after subscribing (per-instance broadcast listeners).
    Latest,
}

/// One record read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRecord {
    /// Topic.
    pub topic: String,
    /// Partition the key hashed to.
    pub partition: u32,
    /// Offset within the partition (0, 1, 2, …).
    pub offset: u64,
    /// Partition key.
    pub key: String,
    /// Headers (event type, schema version, trace context).
    pub headers: Vec<(String, String)>,
    /// Payload bytes.
    pub payload: Bytes,
    /// When the record was published (Unix milliseconds), if the bus knows.
    pub published_ms: Option<i64>,
}

impl BusRecord {
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A record to publish.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    /// Topic (created on first use).
    pub topic: String,
    /// Partition key: records with the same key keep their order.
    pub key: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Payload.
    pub payload: Bytes,
}

/// The event bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes records; returns once the bus has durably accepted all of them, in order
    /// per key.
    async fn publish(&self, records: Vec<OutgoingRecord>) -> BusResult<()>;
    /// Joins consumer `group` on `topic`. Consumers of different groups each see every
    /// record; consumers of one group share the partitions. A group resumes after its last
    /// committed offset (records read but not committed are delivered again).
    async fn subscribe(&self, topic: &str, group: &str, start: StartFrom) -> BusResult<Box<dyn BusConsumer>>;
    /// Like [`Bus::subscribe`], for a consumer nobody waits on (the health canary, call
    /// summaries): the backend may let its records wait longer before they are read (on
    /// Kafka, up to 500 ms a fetch) in exchange for asking the broker far less often.
    async fn subscribe_unhurried(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> BusResult<Box<dyn BusConsumer>> {
        self.subscribe(topic, group, start).await
    }
    /// Checks the backend answers (for `/ready`).
    async fn ping(&self) -> BusResult<()>;
}

/// A member of a consumer group.
#[async_trait]
pub trait BusConsumer: Send {
    /// Waits for the next record. Records of one partition come in offset order.
    async fn next(&mut self) -> BusResult<BusRecord>;
    /// Commits everything up to and including `record` in its partition.
    async fn commit(&mut self, record: &BusRecord) -> BusResult<()>;
}

/// Opens the bus named by a URL: `inproc://`, or `kafka://host:port[,host:port…][?options]`
/// (see [`kafka::settings::KafkaSettings::parse`]). Kafka connects lazily: a broker that is
/// down shows in [`Bus::ping`] and in the calls, not here.
///
/// Every bus it opens is measured ([`metrics`]).
pub fn open(url: &str) -> BusResult<DynBus> {
    let bus: DynBus = if url.starts_with("inproc://") {
        Arc::new(inproc::InProcBus::default())
    } else if url.starts_with("kafka://") {
        Arc::new(kafka::KafkaBus::open(url)?)
    } else {
        return Err(BusError::Backend(format!("unsupported bus url: {url}")));
    };
    Ok(Arc::new(instrumented::Instrumented(bus)))
}

/// The wall clock in Unix milliseconds (publication times of records).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
