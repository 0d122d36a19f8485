//! A bus that measures the bus it wraps ([`crate::metrics`]): publish latency and failures
//! per topic, and the delay between a record's publication and its delivery to a
//! consumer. [`crate::open`] wraps every bus it opens; consumer lag is reported by each
//! implementation, which alone knows where the end of a topic is.

use std::time::Instant;

use async_trait::async_trait;

use crate::metrics::{CONSUME_DELAY_SECONDS, PRODUCE_ERRORS, PRODUCE_SECONDS};
use crate::{Bus, BusConsumer, BusRecord, BusResult, DynBus, OutgoingRecord, StartFrom};

/// The wrapper.
pub struct Instrumented(pub DynBus);

#[async_trait]
impl Bus for Instrumented {
    async fn publish(&self, records: Vec<OutgoingRecord>) -> BusResult<()> {
        // A batch is nearly always of one topic; a mixed one counts for each of its topics.
        let mut topics: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
        topics.sort_unstable();
        topics.dedup();
        let started = Instant::now();
        let out = self.0.publish(records).await;
        let seconds = started.elapsed().as_secs_f64();
        for topic in topics {
            if out.is_err() {
                metrics::counter!(PRODUCE_ERRORS, "topic" => topic.clone()).increment(1);
            }
            metrics::histogram!(PRODUCE_SECONDS, "topic" => topic).record(seconds);
        }
        out
    }

    async fn subscribe(&self, topic: &str, group: &str, start: StartFrom) -> BusResult<Box<dyn BusConsumer>> {
        Ok(Consumer::timed(self.0.subscribe(topic, group, start).await?, topic))
    }

    async fn subscribe_unhurried(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> BusResult<Box<dyn BusConsumer>> {
        Ok(Consumer::timed(self.0.subscribe_unhurried(topic, group, start).await?, topic))
    }

    async fn ping(&self) -> BusResult<()> {
        self.0.ping().await
    }
}

/// A consumer that records how long each record waited.
struct Consumer {
    inner: Box<dyn BusConsumer>,
    delay: metrics::Histogram,
}

impl Consumer {
    /// Wraps `inner`, a consumer of `topic`.
    fn timed(inner: Box<dyn BusConsumer>, topic: &str) -> Box<dyn BusConsumer> {
        let delay = metrics::histogram!(CONSUME_DELAY_SECONDS, "topic" => topic.to_owned());
        Box::new(Self { inner, delay })
    }
}

#[async_trait]
impl BusConsumer for Consumer {
    async fn next(&mut self) -> BusResult<BusRecord> {
        let record = self.inner.next().await?;
        if let Some(published) = record.published_ms {
            let waited_ms = crate::now_ms().saturating_sub(published).max(0);
            self.delay.record(waited_ms as f64 / 1000.0);
        }
        Ok(record)
    }

    async fn commit(&mut self, record: &BusRecord) -> BusResult<()> {
        self.inner.commit(record).await
    }
}
