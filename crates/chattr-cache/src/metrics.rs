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
    "presence_up_many",
    "presence_down",
    "presence_down_many",
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

/// Times one call; records its latency when finished, and also when dropped before (a
/// caller gave up), so the slowest calls are not missing from the histogram.
pub(crate) struct Timer {
    op: &'static str,
    started: Instant,
    recorded: bool,
}

impl Timer {
    pub(crate) fn start(op: &'static str) -> Self {
        Self { op, started: Instant::now(), recorded: false }
    }

    /// Records the call, counting it as an error when it failed.
    pub(crate) fn finish(mut self, failed: bool) {
        self.record();
        if failed {
            metrics::counter!(ERRORS, "op" => self.op).increment(1);
        }
    }

    fn record(&mut self) {
        self.recorded = true;
        metrics::histogram!(OP_SECONDS, "op" => self.op).record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.recorded {
            self.record();
        }
    }
}
