//! The bus's metrics (docs/metrics.md): publish latency and failures, how long records
//! wait before a consumer gets them, and how far each consumer group is behind.

/// Time to publish a batch until the bus acknowledged it, by `topic`.
pub const PRODUCE_SECONDS: &str = "chattr_bus_produce_seconds";
/// Failed publishes, by `topic`.
pub const PRODUCE_ERRORS: &str = "chattr_bus_produce_errors_total";
/// From a record's publication to its delivery to a consumer, by `topic`.
pub const CONSUME_DELAY_SECONDS: &str = "chattr_bus_consume_delay_seconds";
/// Records behind the end of the topic, by `topic` and `group`.
pub const CONSUMER_LAG: &str = "chattr_bus_consumer_lag";

/// Describes the metrics and creates the error counters of `topics` at zero.
pub fn describe(topics: &[&'static str]) {
    use metrics::Unit::Seconds;
    metrics::describe_histogram!(PRODUCE_SECONDS, Seconds, "Time to publish a batch to the bus, by topic");
    metrics::describe_counter!(PRODUCE_ERRORS, "Failed bus publishes, by topic");
    metrics::describe_histogram!(
        CONSUME_DELAY_SECONDS,
        Seconds,
        "From a record's publication to its delivery to a consumer, by topic"
    );
    metrics::describe_gauge!(CONSUMER_LAG, "Records a consumer group is behind, by topic and group");
    for topic in topics {
        metrics::counter!(PRODUCE_ERRORS, "topic" => *topic).increment(0);
    }
}

/// The lag gauge of one consumer, by the topic's name without any deployment prefix.
/// The canary's groups (one per process, with a random name) report none.
pub(crate) fn consumer_lag(topic: &str, group: &str) -> metrics::Gauge {
    if topic == crate::canary::TOPIC {
        return metrics::Gauge::noop();
    }
    metrics::gauge!(CONSUMER_LAG, "topic" => topic.to_owned(), "group" => group.to_owned())
}
