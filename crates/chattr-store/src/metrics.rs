//! The store's metrics (docs/metrics.md): every call's latency and failures, by method.

use std::time::Instant;

use crate::StoreError;

/// Store call latency, by `op`.
pub const OP_SECONDS: &str = "chattr_store_op_seconds";
/// Store calls that failed (not "not found" or a conflict: the backend failed), by `op`.
pub const ERRORS: &str = "chattr_store_errors_total";
/// Transactions that committed queued sends together (SQLite's group commit); sends per
/// batch = `insert_message` calls ÷ this.
pub const SEND_BATCHES: &str = "chattr_store_send_batches_total";
/// Background WAL checkpoints that copied frames (SQLite), and how long each took.
pub const CHECKPOINT_SECONDS: &str = "chattr_store_checkpoint_seconds";

/// Every `op` label value (the [`crate::Store`] methods).
pub const OPS: &[&str] = &[
    "create_user",
    "user_by_username",
    "users_by_ids",
    "search_users",
    "create_session",
    "session",
    "sessions_by_ids",
    "rotate_refresh",
    "touch_sessions",
    "list_sessions",
    "revoke_session",
    "revoke_other_sessions",
    "create_conversation",
    "conversation",
    "membership",
    "read_positions",
    "conversations_for_user",
    "conversation_summary",
    "add_member",
    "remove_member",
    "set_title",
    "contacts",
    "contacts_of",
    "latest_seqs",
    "latest_seqs_of",
    "insert_message",
    "messages",
    "message",
    "change_message",
    "mark_read",
    "outbox_pending",
    "outbox_mark_published",
    "outbox_backlog",
    "ping",
];

/// Describes the metrics and creates the error counters at zero.
pub fn describe() {
    metrics::describe_histogram!(OP_SECONDS, metrics::Unit::Seconds, "Store call latency, by method");
    metrics::describe_counter!(ERRORS, "Store calls that failed in the backend, by method");
    metrics::describe_counter!(SEND_BATCHES, "Transactions that committed queued sends together");
    metrics::describe_histogram!(
        CHECKPOINT_SECONDS,
        metrics::Unit::Seconds,
        "Background WAL checkpoints that copied frames, by duration"
    );
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

    /// Records the call, counting it as an error when the backend failed.
    pub(crate) fn finish(mut self, error: Option<&StoreError>) {
        self.record();
        if matches!(error, Some(StoreError::Backend(_) | StoreError::Unavailable(_))) {
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
