//! The gateway's metrics (docs/metrics.md): sockets, frames, deliveries and their latency,
//! resumes and backpressure.

use chattr_api::v1::{ClientFrame, ServerFrame};

/// Open WebSocket connections.
pub const CONNECTIONS: &str = "chattr_gateway_connections";
/// Distinct sessions (devices) with an open socket.
pub const SESSIONS: &str = "chattr_gateway_sessions";
/// Distinct users with an open socket.
pub const USERS: &str = "chattr_gateway_users";
/// Frames received, by `type` (or `invalid`).
pub const FRAMES_IN: &str = "chattr_gateway_frames_in_total";
/// Frames sent, by `type`.
pub const FRAMES_OUT: &str = "chattr_gateway_frames_out_total";
/// Message events written to sockets.
pub const MESSAGES_DELIVERED: &str = "chattr_gateway_messages_delivered_total";
/// Commit → socket write of a message.
pub const DELIVERY_LATENCY: &str = "chattr_gateway_delivery_latency_seconds";
/// Resume results per conversation, by `result` (`ok`, `resync`).
pub const RESUMES: &str = "chattr_gateway_resume_total";
/// Deliveries dropped because the socket had them already.
pub const DUPLICATES_DROPPED: &str = "chattr_gateway_duplicates_dropped_total";
/// Gaps in live delivery filled from the store.
pub const GAPS_FILLED: &str = "chattr_gateway_gaps_filled_total";
/// Sockets closed because their queue overflowed.
pub const SLOW_CONSUMER_DISCONNECTS: &str = "chattr_gateway_slow_consumer_disconnects_total";
/// Ephemeral events dropped under backpressure.
pub const EPHEMERAL_DROPPED: &str = "chattr_gateway_ephemeral_dropped_total";
/// Sockets closed because a write stalled.
pub const WRITE_TIMEOUTS: &str = "chattr_gateway_write_timeouts_total";
/// Deliveries waiting in all socket queues.
pub const QUEUED_EVENTS: &str = "chattr_gateway_queued_events";
/// The fullest socket queue.
pub const QUEUE_DEPTH_MAX: &str = "chattr_gateway_queue_depth_max";
/// Frames refused by a rate limit, by `bucket`.
pub const RATE_LIMITED: &str = "chattr_gateway_rate_limited_total";
/// Sockets told to go elsewhere because the gateway is stopping.
pub const SHUTDOWN_CLOSES: &str = "chattr_gateway_shutdown_closes_total";
/// Socket heartbeats answered (batched: see `HEARTBEAT_BATCHES`).
pub const HEARTBEATS: &str = "chattr_gateway_heartbeats_total";
/// Batches of heartbeats asked of the services together.
pub const HEARTBEAT_BATCHES: &str = "chattr_gateway_heartbeat_batches_total";
/// How long the services took to answer a batch of heartbeats.
pub const HEARTBEAT_BATCH_SECONDS: &str = "chattr_gateway_heartbeat_batch_seconds";
/// Closed sockets whose presence was sent to the services (batched: see `GOODBYE_BATCHES`).
pub const GOODBYES: &str = "chattr_gateway_goodbyes_total";
/// Batches of closed sockets sent to the services together.
pub const GOODBYE_BATCHES: &str = "chattr_gateway_goodbye_batches_total";
/// Batches of new sockets' tokens checked together.
pub const TOKEN_BATCHES: &str = "chattr_gateway_token_batches_total";

/// Handles of the metrics touched for every message written to every socket, looked up
/// once instead of per delivery (the first use must come after the process installed its
/// recorder, which the server does before it serves anything).
pub(crate) struct PerDelivery {
    pub delivered: metrics::Counter,
    pub latency: metrics::Histogram,
    pub message_frames: metrics::Counter,
}

pub(crate) fn per_delivery() -> &'static PerDelivery {
    static HANDLES: std::sync::OnceLock<PerDelivery> = std::sync::OnceLock::new();
    HANDLES.get_or_init(|| PerDelivery {
        delivered: metrics::counter!(MESSAGES_DELIVERED),
        latency: metrics::histogram!(DELIVERY_LATENCY),
        message_frames: metrics::counter!(FRAMES_OUT, "type" => "message"),
    })
}

/// Describes the metrics and creates the counters that must read zero rather than
/// nothing on a healthy gateway.
pub fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge, Unit};
    gauge!(CONNECTIONS, "Open WebSocket connections");
    gauge!(SESSIONS, "Distinct sessions (devices) with at least one open socket");
    gauge!(USERS, "Distinct users with at least one open socket");
    counter!(FRAMES_IN, "WebSocket frames received, by type (invalid: unreadable)");
    counter!(FRAMES_OUT, "WebSocket frames sent, by type");
    counter!(MESSAGES_DELIVERED, "Message events written to sockets");
    metrics::describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From a message's commit to its write to a receiver's socket"
    );
    counter!(RESUMES, "Resume results per conversation (ok, resync)");
    counter!(DUPLICATES_DROPPED, "Duplicate message deliveries dropped");
    counter!(GAPS_FILLED, "Gaps in live delivery filled from the store");
    counter!(SLOW_CONSUMER_DISCONNECTS, "Sockets closed for overflowing their queue");
    counter!(EPHEMERAL_DROPPED, "Ephemeral events dropped under backpressure");
    counter!(WRITE_TIMEOUTS, "Sockets closed because a write stalled");
    counter!(HEARTBEATS, "Socket heartbeats answered");
    counter!(HEARTBEAT_BATCHES, "Batches of heartbeats asked of the services together");
    counter!(GOODBYES, "Closed sockets whose presence was sent to the services");
    counter!(TOKEN_BATCHES, "Batches of new sockets' tokens checked together");
    counter!(GOODBYE_BATCHES, "Batches of closed sockets sent to the services together");
    metrics::describe_histogram!(
        HEARTBEAT_BATCH_SECONDS,
        Unit::Seconds,
        "How long the services took to answer a batch of heartbeats"
    );
    gauge!(QUEUED_EVENTS, "Deliveries waiting in all socket queues");
    gauge!(QUEUE_DEPTH_MAX, "Deliveries waiting in the fullest socket queue");
    counter!(RATE_LIMITED, "Frames refused by a rate limit, by bucket");
    counter!(SHUTDOWN_CLOSES, "Sockets closed with going-away because the gateway is stopping");
    for name in
        [DUPLICATES_DROPPED, GAPS_FILLED, SLOW_CONSUMER_DISCONNECTS, EPHEMERAL_DROPPED, WRITE_TIMEOUTS]
    {
        metrics::counter!(name).increment(0);
    }
    for result in ["ok", "resync"] {
        metrics::counter!(RESUMES, "result" => result).increment(0);
    }
    metrics::counter!(RATE_LIMITED, "bucket" => "frames").increment(0);
    metrics::counter!(SHUTDOWN_CLOSES).increment(0);
    for name in [CONNECTIONS, SESSIONS, USERS, QUEUED_EVENTS, QUEUE_DEPTH_MAX] {
        metrics::gauge!(name).increment(0.0);
    }
    metrics::counter!(FRAMES_IN, "type" => "invalid").increment(0);
    for frame_type in ClientFrame::TYPES {
        metrics::counter!(FRAMES_IN, "type" => *frame_type).increment(0);
    }
    for frame_type in ServerFrame::TYPES {
        metrics::counter!(FRAMES_OUT, "type" => *frame_type).increment(0);
    }
}
