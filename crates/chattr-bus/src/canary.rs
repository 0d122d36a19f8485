//! The bus canary: proof that the bus works end to end, not just that a broker answers.
//! A probe publishes a record on [`TOPIC`] and waits until this process's own consumer
//! reads it back, so a broker that accepts connections but cannot store or deliver
//! records fails the probe (and `/ready`).
//!
//! Each process has its own consumer group (`canary.<random id>`) reading from the end of
//! the topic, so every process sees every canary record and skips those of others by their
//! nonce. Nothing is committed: the group holds no state worth keeping.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::{BusConsumer, BusError, BusResult, DynBus, OutgoingRecord, StartFrom};

/// The topic canary records go to.
pub const TOPIC: &str = "chattr.canary";

/// How long joining the canary's consumer group may take (a Kafka broker may hold a new
/// group back for `group.initial.rebalance.delay.ms`, 3 s by default).
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// One process's canary.
pub struct Canary {
    bus: DynBus,
    group: String,
    /// Joined on the first probe; joined again only after the consumer itself failed.
    consumer: Mutex<Option<Box<dyn BusConsumer>>>,
}

impl Canary {
    /// A canary on `bus` (nothing happens until the first [`Canary::probe`]).
    pub fn new(bus: DynBus) -> Self {
        Self { bus, group: format!("canary.{:032x}", rand_id()), consumer: Mutex::new(None) }
    }

    /// Publishes a record and waits, at most `timeout`, to read it back. The first probe
    /// first joins the canary's group, which may take up to [`JOIN_TIMEOUT`] on its own.
    pub async fn probe(&self, timeout: Duration) -> BusResult<()> {
        let mut slot = self.consumer.lock().await;
        let consumer = match slot.as_mut() {
            Some(consumer) => consumer,
            None => {
                let joined = tokio::time::timeout(
                    JOIN_TIMEOUT,
                    self.bus.subscribe_unhurried(TOPIC, &self.group, StartFrom::Latest),
                )
                .await
                .map_err(|_| {
                    BusError::Backend(format!("canary group not joined within {JOIN_TIMEOUT:?}"))
                })??;
                slot.insert(joined)
            }
        };
        let nonce = format!("{:032x}", rand_id());
        let record = OutgoingRecord {
            topic: TOPIC.to_owned(),
            key: self.group.clone(),
            headers: Vec::new(),
            payload: Bytes::from(nonce.clone()),
        };
        let round_trip = async {
            self.bus.publish(vec![record]).await?;
            loop {
                // A failed read means a broken member: only then is it replaced.
                let seen = consumer.next().await.map_err(Failure::Consumer)?;
                if seen.payload == nonce.as_bytes() {
                    // Committing lets the bus drop the canary's records (the in-process
                    // bus keeps what any group still needs).
                    consumer.commit(&seen).await.map_err(Failure::Consumer)?;
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(timeout, round_trip).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Failure::Consumer(e))) => {
                *slot = None;
                Err(e)
            }
            Ok(Err(Failure::Publish(e))) => Err(e),
            // The record may still arrive: the next probe skips it by its nonce.
            Err(_) => Err(BusError::Backend(format!("canary record not read back within {timeout:?}"))),
        }
    }
}

/// Why a round trip failed: publishing (the member is fine), or the member itself.
enum Failure {
    Publish(BusError),
    Consumer(BusError),
}

impl From<BusError> for Failure {
    fn from(e: BusError) -> Self {
        Failure::Publish(e)
    }
}

fn rand_id() -> u128 {
    rand::random::<u128>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_canaries_on_one_bus_each_read_their_own_records() {
        let bus = crate::open("inproc://").unwrap();
        let (a, b) = (Canary::new(bus.clone()), Canary::new(bus));
        for _ in 0..3 {
            a.probe(Duration::from_secs(5)).await.expect("a's round trip");
            b.probe(Duration::from_secs(5)).await.expect("b's round trip");
        }
        assert_ne!(a.group, b.group);
    }
}
