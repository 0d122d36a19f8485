//! Topics are created on first use, as the in-process bus does: through the admin API,
//! with the partitions and replication of the URL, remembered once they exist.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;

use super::settings::KafkaSettings;
use super::{backend, ADMIN_TIMEOUT};
use crate::{BusError, BusResult};

/// Creates topics and remembers which exist.
pub(super) struct Topics {
    admin: Arc<AdminClient<DefaultClientContext>>,
    partitions: i32,
    replication: i32,
    known: Mutex<HashSet<String>>,
}

impl Topics {
    pub(super) fn new(settings: &KafkaSettings) -> BusResult<Topics> {
        let admin = settings.admin().create().map_err(backend("creating kafka admin client"))?;
        Ok(Topics {
            admin: Arc::new(admin),
            partitions: settings.partitions,
            replication: settings.replication,
            known: Mutex::new(HashSet::new()),
        })
    }

    /// Makes sure `topic` exists and its partitions are visible in the metadata, so that a
    /// consumer subscribing right after gets an assignment at once.
    pub(super) async fn ensure(&self, topic: &str) -> BusResult<()> {
        if self.known.lock().contains(topic) {
            return Ok(());
        }
        let new_topic = NewTopic::new(topic, self.partitions, TopicReplication::Fixed(self.replication));
        let options =
            AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)).operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(backend("creating kafka topic"))?;
        for result in results {
            match result {
                // Another process (or call) was first: just as good.
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Backend(format!("creating kafka topic {name:?}: {code}")));
                }
            }
        }
        self.await_partitions(topic).await?;
        self.known.lock().insert(topic.to_owned());
        Ok(())
    }

    /// Polls the metadata until `topic` has partitions: brokers may answer CreateTopics
    /// before every part of them knows the topic.
    async fn await_partitions(&self, topic: &str) -> BusResult<()> {
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let (admin, name) = (Arc::clone(&self.admin), topic.to_owned());
            let partitions = tokio::task::spawn_blocking(move || -> KafkaResult<usize> {
                let metadata = admin.inner().fetch_metadata(Some(&name), ADMIN_TIMEOUT)?;
                Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == name && t.error().is_none())
                    .map(|t| t.partitions().len())
                    .sum::<usize>())
            })
            .await
            .map_err(|e| BusError::Backend(format!("kafka metadata task: {e}")))?
            .map_err(backend("reading kafka topic metadata"))?;
            if partitions > 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BusError::Backend(format!("kafka topic {topic:?} has no partitions yet")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
