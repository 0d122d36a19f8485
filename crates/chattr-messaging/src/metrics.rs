//! Messaging's metrics (docs/metrics.md): messages and conversations, the outbox relay and
//! fan-out.

/// Messages committed.
pub const MESSAGES_ACCEPTED: &str = "chattr_messaging_messages_accepted_total";
/// Sends answered from an earlier `client_msg_id`.
pub const MESSAGES_DEDUPLICATED: &str = "chattr_messaging_messages_deduplicated_total";
/// Conversations created.
pub const CONVERSATIONS_CREATED: &str = "chattr_messaging_conversations_created_total";
/// Time to commit a message.
pub const SEND_COMMIT_SECONDS: &str = "chattr_messaging_send_commit_seconds";
/// Call summaries written to timelines.
pub const CALL_SUMMARIES: &str = "chattr_messaging_call_summaries_total";
/// Outbox rows published to the bus.
pub const OUTBOX_PUBLISHED: &str = "chattr_outbox_published_total";
/// Relay failures.
pub const OUTBOX_RELAY_ERRORS: &str = "chattr_outbox_relay_errors_total";
/// 1 on the relay holding the lease.
pub const OUTBOX_RELAY_LEADER: &str = "chattr_outbox_relay_leader";
/// Unpublished outbox rows.
pub const OUTBOX_BACKLOG: &str = "chattr_outbox_backlog";
/// Age of the oldest unpublished row.
pub const OUTBOX_OLDEST_AGE: &str = "chattr_outbox_oldest_age_seconds";
/// Message events fanned out.
pub const FANOUT_MESSAGES: &str = "chattr_fanout_messages_total";
/// Fan-out failures.
pub const FANOUT_ERRORS: &str = "chattr_fanout_errors_total";
/// Commit → publication on the user channels.
pub const FANOUT_COMMIT_TO_PUBLISH: &str = "chattr_fanout_commit_to_publish_seconds";

/// Describes the metrics and creates the counters and gauges at zero.
pub fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge, describe_histogram, Unit};
    counter!(MESSAGES_ACCEPTED, "Messages committed");
    counter!(MESSAGES_DEDUPLICATED, "Sends answered from an earlier client_msg_id");
    counter!(CONVERSATIONS_CREATED, "Conversations created");
    describe_histogram!(SEND_COMMIT_SECONDS, Unit::Seconds, "Time to commit a message (the durable ack)");
    counter!(CALL_SUMMARIES, "Call summaries written to timelines");
    counter!(OUTBOX_PUBLISHED, "Outbox rows published to the bus");
    counter!(OUTBOX_RELAY_ERRORS, "Outbox relay failures (retried)");
    gauge!(OUTBOX_RELAY_LEADER, "1 on the relay instance holding the lease");
    gauge!(OUTBOX_BACKLOG, "Unpublished outbox rows (reported by the relay leader)");
    gauge!(OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest unpublished outbox row");
    counter!(FANOUT_MESSAGES, "Message events fanned out to user channels");
    counter!(FANOUT_ERRORS, "Fan-out failures (retried)");
    describe_histogram!(FANOUT_COMMIT_TO_PUBLISH, Unit::Seconds, "From commit to publication on pub/sub");
    for name in [
        MESSAGES_ACCEPTED,
        MESSAGES_DEDUPLICATED,
        CONVERSATIONS_CREATED,
        CALL_SUMMARIES,
        OUTBOX_PUBLISHED,
        OUTBOX_RELAY_ERRORS,
        FANOUT_MESSAGES,
        FANOUT_ERRORS,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Creates the relay's gauges at zero (a process with the relay role reports them even
/// while it stands by).
pub fn relay_gauges() {
    for name in [OUTBOX_RELAY_LEADER, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE] {
        metrics::gauge!(name).set(0.0);
    }
}
