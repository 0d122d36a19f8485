//! Logging and the process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the tracing subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist only if a library installed one; ours then stays local.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("chattr_build_info", "Build information (value 1)");
    describe_gauge!("chattr_gateway_connections", "Open WebSocket connections");
    describe_counter!("chattr_gateway_frames_in_total", "WebSocket frames received");
    describe_counter!("chattr_gateway_frames_out_total", "WebSocket frames sent");
    describe_counter!("chattr_gateway_messages_delivered_total", "Message events written to sockets");
    describe_counter!("chattr_gateway_duplicates_dropped_total", "Duplicate message deliveries dropped");
    describe_counter!("chattr_gateway_gaps_filled_total", "Gaps in live delivery filled from the store");
    describe_counter!("chattr_gateway_resume_total", "Resume results per conversation (ok, resync)");
    describe_counter!(
        "chattr_gateway_slow_consumer_disconnects_total",
        "Sockets closed for overflowing their queue"
    );
    describe_counter!(
        "chattr_gateway_ephemeral_dropped_total",
        "Ephemeral events dropped under backpressure"
    );
    describe_counter!("chattr_auth_attempts_total", "Login attempts by result");
    describe_counter!("chattr_auth_signups_total", "Accounts created");
    describe_counter!("chattr_auth_rate_limited_total", "Requests refused by a rate limit, by bucket");
    describe_counter!("chattr_auth_refresh_reuse_total", "Refresh tokens reused (sessions revoked)");
    describe_counter!("chattr_messaging_messages_accepted_total", "Messages committed");
    describe_counter!(
        "chattr_messaging_messages_deduplicated_total",
        "Sends answered from an earlier client_msg_id"
    );
    describe_counter!("chattr_messaging_conversations_created_total", "Conversations created");
    describe_histogram!("chattr_messaging_send_commit_seconds", "Time to commit a message");
    describe_counter!("chattr_outbox_published_total", "Outbox rows published to the bus");
    describe_counter!("chattr_outbox_relay_errors_total", "Outbox relay failures");
    describe_counter!("chattr_fanout_messages_total", "Message events fanned out");
    describe_counter!("chattr_fanout_errors_total", "Fan-out failures (retried)");
    describe_histogram!("chattr_fanout_commit_to_publish_seconds", "Time from commit to pub/sub publish");
}
