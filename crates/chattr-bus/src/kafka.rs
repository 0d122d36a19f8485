//! The Kafka [`Bus`]: any Kafka-protocol broker, through librdkafka (bundled with the
//! `rdkafka` crate: librdkafka 2.12.1, built from source, never the system's copy).
//!
//! A bus topic is a Kafka topic, created on first use; the record key is the Kafka key
//! (Kafka's default murmur2 partitioner, so the same key lands on the same partition for
//! every client); headers are Kafka headers; consumer groups are Kafka consumer groups
//! with explicit commits. Delivery is at least once: a publish that fails may still have
//! written some records, and the caller retries.
//!
//! Reconnecting after a broker restart is librdkafka's job; the settings (see
//! [`settings`]) keep its back-off short and every wait bounded, so calls fail with
//! [`BusError::Backend`] rather than hang while the brokers are away.

pub mod consumer;
pub mod settings;
mod topics;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use tracing::warn;

use self::consumer::{Departures, KafkaConsumer};
use self::settings::KafkaSettings;
use self::topics::Topics;
use crate::{Bus, BusConsumer, BusError, BusRecord, BusResult, OutgoingRecord, StartFrom};

/// Bound of admin and metadata calls (topic creation, offset look-ups).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of a `ping`: `/ready` must answer quickly, even when the brokers do not.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The Kafka [`Bus`].
pub struct KafkaBus {
    settings: KafkaSettings,
    /// Replaced after a failed delivery (see [`KafkaBus::retire`]).
    producer: Mutex<Arc<FutureProducer>>,
    topics: Topics,
    departures: Arc<Departures>,
}

impl KafkaBus {
    /// Connects lazily to the brokers of a `kafka://` URL (see [`KafkaSettings::parse`]);
    /// only a malformed URL or setting fails here.
    pub fn open(url: &str) -> BusResult<KafkaBus> {
        let settings = KafkaSettings::parse(url)?;
        let producer = settings.producer().create().map_err(backend("creating kafka producer"))?;
        let topics = Topics::new(&settings)?;
        Ok(KafkaBus {
            settings,
            producer: Mutex::new(Arc::new(producer)),
            topics,
            departures: Arc::default(),
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.lock())
    }

    /// Replaces `failed` by a fresh producer (with a new producer id), unless that happened
    /// already, and discards what it still holds.
    ///
    /// After a failed delivery librdkafka's idempotent producer bumps its epoch on its own
    /// and carries on. Apache Kafka accepts that; tansu 0.6 does not (its SQLite engine's
    /// storage task panics on the unknown epoch, and the broker then fails every produce
    /// until restarted). A new producer gets its id and epoch from the broker, which every
    /// broker accepts, and costs one round trip after a failure, which is rare.
    fn retire(&self, failed: &Arc<FutureProducer>) {
        let mut current = self.producer.lock();
        if !Arc::ptr_eq(&current, failed) {
            return; // Another failed publish retired it already.
        }
        let fresh = match self.settings.producer().create() {
            Ok(fresh) => fresh,
            Err(e) => return warn!(error = %e, "creating a replacement kafka producer failed"),
        };
        let old = std::mem::replace(&mut *current, Arc::new(fresh));
        drop(current);
        // Fails the records it still holds (their publishes return errors) so that none
        // reaches the broker under a bumped epoch.
        old.purge(PurgeConfig::default().queue().inflight());
        // The last handle flushes and joins librdkafka's threads: not on an async worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Hands one record to librdkafka, waiting while its queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        topic: &str,
        record: &OutgoingRecord,
    ) -> BusResult<DeliveryFuture> {
        let deadline = Instant::now() + self.settings.delivery_timeout;
        loop {
            let headers = record.headers.iter().fold(OwnedHeaders::new(), |headers, (name, value)| {
                headers.insert(Header { key: name, value: Some(value.as_str()) })
            });
            let kafka_record =
                FutureRecord::to(topic).key(&record.key).payload(record.payload.as_ref()).headers(headers);
            match producer.send_result(kafka_record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(backend("queueing kafka record")(e)),
            }
        }
    }
}

impl KafkaBus {
    /// The Kafka name of a bus topic or group (with the URL's `topic_prefix`).
    fn physical(&self, name: &str) -> String {
        format!("{}{name}", self.settings.topic_prefix)
    }
}

/// A consumer of a prefixed topic: hands out records under the bus topic name, as
/// published, and commits them under the Kafka name.
struct Prefixed {
    inner: KafkaConsumer,
    prefix: String,
}

#[async_trait]
impl BusConsumer for Prefixed {
    async fn next(&mut self) -> BusResult<BusRecord> {
        let mut record = self.inner.next().await?;
        if let Some(name) = record.topic.strip_prefix(&self.prefix) {
            record.topic = name.to_owned();
        }
        Ok(record)
    }

    async fn commit(&mut self, record: &BusRecord) -> BusResult<()> {
        let physical = BusRecord { topic: format!("{}{}", self.prefix, record.topic), ..record.clone() };
        self.inner.commit(&physical).await
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, records: Vec<OutgoingRecord>) -> BusResult<()> {
        let physical: Vec<String> = records.iter().map(|r| self.physical(&r.topic)).collect();
        for topic in physical.iter().collect::<BTreeSet<_>>() {
            self.topics.ensure(topic).await?;
        }
        // Queue everything in order first (librdkafka batches, and its idempotent producer
        // keeps the order of each partition even across retries), then wait for every ack.
        let producer = self.producer();
        let mut deliveries = Vec::with_capacity(records.len());
        for (record, topic) in records.iter().zip(&physical) {
            match self.enqueue(&producer, topic, record).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    self.retire(&producer);
                    return Err(e);
                }
            }
        }
        // Wait for all of them even after a failure: returning early would let the caller's
        // retry race records of this call that are still in flight.
        let mut failure = None;
        for delivery in deliveries {
            let error = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => format!("kafka delivery failed: {e}"),
                Err(_) => "kafka producer dropped a delivery".to_owned(),
            };
            failure.get_or_insert(error);
        }
        match failure {
            None => Ok(()),
            Some(error) => {
                self.retire(&producer);
                Err(BusError::Backend(error))
            }
        }
    }

    async fn subscribe(&self, topic: &str, group: &str, start: StartFrom) -> BusResult<Box<dyn BusConsumer>> {
        self.join(topic, group, start, self.settings.clone()).await
    }

    async fn subscribe_unhurried(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> BusResult<Box<dyn BusConsumer>> {
        self.join(topic, group, start, unhurried(&self.settings)).await
    }

    async fn ping(&self) -> BusResult<()> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, PING_TIMEOUT).map(drop))
            .await
            .map_err(|e| BusError::Backend(format!("kafka ping task: {e}")))?
            .map_err(backend("kafka metadata request"))
    }
}

impl KafkaBus {
    /// A member of `group` on `topic`, its consumer configured by `settings`.
    async fn join(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
        settings: KafkaSettings,
    ) -> BusResult<Box<dyn BusConsumer>> {
        // The lag metric names the topic and group as callers know them, without the prefix.
        let lag = crate::metrics::consumer_lag(topic, group);
        let (topic, group) = (self.physical(topic), self.physical(group));
        self.topics.ensure(&topic).await?;
        let consumer = KafkaConsumer::join(&settings, &self.departures, &topic, &group, start, lag).await?;
        if self.settings.topic_prefix.is_empty() {
            return Ok(Box::new(consumer));
        }
        Ok(Box::new(Prefixed { inner: consumer, prefix: self.settings.topic_prefix.clone() }))
    }
}

/// How long an unhurried consumer's fetches wait at least ([`Bus::subscribe_unhurried`]).
/// Such consumers run for the life of the process but read a record every few seconds at
/// most; at the default wait each would ask the broker fifty times a second for nothing.
/// On tansu, which answers an empty fetch by polling its storage, each such consumer cost
/// the broker a share of a core while idle (docs/operations.md).
const UNHURRIED_FETCH_WAIT: Duration = Duration::from_millis(500);

/// `settings` for an unhurried consumer: fetches wait at least [`UNHURRIED_FETCH_WAIT`].
fn unhurried(settings: &KafkaSettings) -> KafkaSettings {
    let mut settings = settings.clone();
    settings.fetch_wait = settings.fetch_wait.max(UNHURRIED_FETCH_WAIT);
    settings
}

/// Maps an rdkafka error to [`BusError::Backend`], saying what was being done.
fn backend(what: &'static str) -> impl Fn(KafkaError) -> BusError {
    move |e| BusError::Backend(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhurried_consumers_wait_longer_for_records() {
        let settings = KafkaSettings::parse("kafka://127.0.0.1:9092").expect("url");
        let relaxed = unhurried(&settings);
        assert_eq!(relaxed.fetch_wait, UNHURRIED_FETCH_WAIT);
        assert_eq!(
            KafkaSettings { fetch_wait: settings.fetch_wait, ..relaxed },
            settings,
            "nothing else changes"
        );
        let slow = KafkaSettings::parse("kafka://127.0.0.1:9092?fetch_wait_ms=900").expect("url");
        assert_eq!(unhurried(&slow).fetch_wait, Duration::from_millis(900), "never shorter than configured");
    }
}
