//! The `kafka://` URL and the librdkafka settings derived from it, in one place so the
//! producer, the admin client and every consumer agree on timeouts and reconnects.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::{BusError, BusResult, StartFrom};

/// Partitions of a topic the bus creates, unless the URL says otherwise (the same as the
/// in-process bus).
pub const DEFAULT_PARTITIONS: i32 = 8;
/// How long a record may wait for the broker's acknowledgement before `publish` fails.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fetch waits for new records by default. Kafka answers a fetch as soon as
/// records arrive, so there this only sets how often an idle consumer asks (a longer wait,
/// fewer requests). tansu holds each fetch for the whole wait, so there the wait is added
/// to every delivery: at 100 ms the bus alone added 100–170 ms.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(20);

/// Where the brokers are and how topics are made, parsed from
/// `kafka://host:port[,host:port…][?partitions=N&replication=R&delivery_timeout_ms=T&topic_prefix=P]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port` of each bootstrap broker.
    pub brokers: Vec<String>,
    /// Partitions of topics created by the bus.
    pub partitions: i32,
    /// Replication factor of topics created by the bus.
    pub replication: i32,
    /// Upper bound of one `publish` while brokers are unreachable.
    pub delivery_timeout: Duration,
    /// How long a consumer's fetch may wait for new records (`fetch_wait_ms`).
    pub fetch_wait: Duration,
    /// Prepended to every topic and consumer group name, so several deployments (or test
    /// runs) can share one Kafka cluster without seeing each other's events.
    pub topic_prefix: String,
}

impl KafkaSettings {
    /// Parses a `kafka://` URL; unknown options are errors, so a typo cannot pass silently.
    pub fn parse(url: &str) -> BusResult<KafkaSettings> {
        let invalid = |why: String| BusError::Backend(format!("invalid kafka url {url:?}: {why}"));
        let rest = url.strip_prefix("kafka://").ok_or_else(|| invalid("expected kafka://".into()))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let brokers = hosts
            .trim_end_matches('/')
            .split(',')
            .map(|broker| match broker.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(broker.to_owned())
                }
                _ => Err(invalid(format!("broker {broker:?} is not host:port"))),
            })
            .collect::<BusResult<Vec<_>>>()?;
        let mut settings = KafkaSettings {
            brokers,
            partitions: DEFAULT_PARTITIONS,
            replication: 1,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            fetch_wait: DEFAULT_FETCH_WAIT,
            topic_prefix: String::new(),
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == "topic_prefix" {
                // Kafka topic names are [a-zA-Z0-9._-]{1,249}.
                if value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(invalid("topic_prefix may only hold [a-zA-Z0-9._-]".into()));
                }
                settings.topic_prefix = value.to_owned();
                continue;
            }
            let number = value
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| invalid(format!("{name} must be a positive number")))?;
            let small = || i32::try_from(number).map_err(|_| invalid(format!("{name} is too large")));
            match name {
                "partitions" => settings.partitions = small()?,
                "replication" => settings.replication = small()?,
                "delivery_timeout_ms" => settings.delivery_timeout = Duration::from_millis(number.into()),
                "fetch_wait_ms" => settings.fetch_wait = Duration::from_millis(number.into()),
                _ => return Err(invalid(format!("unknown option {name:?}"))),
            }
        }
        Ok(settings)
    }

    /// What every client shares: brokers, and reconnects fast enough that a broker restart
    /// costs seconds (librdkafka's defaults back off up to 10 s and wait 60 s for replies).
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", "chattr")
            .set("socket.keepalive.enable", "true")
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000")
            .set("allow.auto.create.topics", "false");
        config
    }

    /// The producer: idempotent (no duplicates or reordering from its own retries), acks
    /// from all in-sync replicas, a few ms of batching, and a bounded delivery time.
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("request.timeout.ms", "5000")
            .set("message.timeout.ms", self.delivery_timeout.as_millis().to_string())
            // Java clients' default partitioner, so every Kafka client agrees where a key goes.
            .set("partitioner", "murmur2_random");
        config
    }

    /// The admin client that creates topics.
    pub fn admin(&self) -> ClientConfig {
        self.client()
    }

    /// A member of consumer group `group`. Commits are explicit; `start` applies only where
    /// the group has no committed offset. A short session and frequent heartbeats make joins,
    /// leaves and crashes rebalance within a second or so; cooperative-sticky assignment
    /// keeps partitions in place on rebalances, so only moved partitions are re-read.
    pub fn consumer(&self, group: &str, start: StartFrom) -> ClientConfig {
        let mut config = self.client();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match start {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "200")
            // See DEFAULT_FETCH_WAIT.
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string())
            .set("fetch.error.backoff.ms", "100")
            // Statistics (every 5 s) carry the consumer lag the metrics report.
            .set("statistics.interval.ms", "5000");
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_brokers_and_defaults() {
        let settings = KafkaSettings::parse("kafka://a:9092,b.example:19092").expect("parse");
        assert_eq!(settings.brokers, ["a:9092", "b.example:19092"]);
        assert_eq!((settings.partitions, settings.replication), (DEFAULT_PARTITIONS, 1));
        assert_eq!(settings.delivery_timeout, DEFAULT_DELIVERY_TIMEOUT);
        assert_eq!(settings.fetch_wait, DEFAULT_FETCH_WAIT);
        let consumer = settings.consumer("g", StartFrom::Latest);
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("20"));
    }

    #[test]
    fn parses_options() {
        let settings = KafkaSettings::parse(
            "kafka://127.0.0.1:9092/?partitions=3&replication=2&delivery_timeout_ms=1500&fetch_wait_ms=250",
        )
        .expect("parse");
        assert_eq!(settings.brokers, ["127.0.0.1:9092"]);
        assert_eq!((settings.partitions, settings.replication), (3, 2));
        assert_eq!(settings.delivery_timeout, Duration::from_millis(1500));
        assert_eq!(settings.fetch_wait, Duration::from_millis(250));
        assert_eq!(settings.consumer("g", StartFrom::Earliest).get("fetch.wait.max.ms"), Some("250"));
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "redis://a:1",
            "kafka://",
            "kafka://a",
            "kafka://a:notaport",
            "kafka://:9092",
            "kafka://a:1,",
            "kafka://a:1?partitions=0",
            "kafka://a:1?partitions=x",
            "kafka://a:1?partitons=3",
            "kafka://a:1?fetch_wait_ms=0",
        ] {
            assert!(KafkaSettings::parse(url).is_err(), "{url} should be rejected");
        }
    }
}
