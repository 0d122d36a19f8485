//! The cache's metrics (docs/metrics.md): every call's latency and failures, by method.

use std::time::Instant;

/// Cache call latency, by `op`.
pub const OP_SECONDS: &str = "chattr_cache_op_seconds";
/// Cache calls that failed, by `op`.
pub const ERRORS: &str = "chattr_cache_errors_total";

/// Every `op` label value (the [`crate::Cache`] methods).
pub const OPS: &[&str] = &[
    "rate_limit",
    "presence_up",
    "presence_down",
    "presence",
    "publish",
    "publish_many",
    "pubsub",
    "get",
    "get_many",
    "compare_and_swap",
    "schedule",
    "due",
    "unschedule",
    "scheduled",
    "ping",
];

/// Describes the metrics and creates the error counters at zero.
pub fn describe() {
    metrics::describe_histogram!(OP_SECONDS, metrics::Unit::Seconds, "Cache call latency, by method");
    metrics::describe_counter!(ERRORS, "Cache calls that failed, by method");
    for op in OPS {
        metrics::counter!(ERRORS, "op" => *op).increment(0);
    }
}

/// Records one call.
pub(crate) fn observe(op: &'static str, started: Instant, failed: bool) {
    metrics::histogram!(OP_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
    if failed {
        metrics::counter!(ERRORS, "op" => op).increment(1);
    }
}
