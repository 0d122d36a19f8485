//! Video's metrics (docs/metrics.md): calls by outcome, liveness drops, signaling.

/// Live calls in the cluster (every instance reports the same number).
pub const CALLS_ACTIVE: &str = "chattr_video_calls_active";
/// Calls started.
pub const CALLS_STARTED: &str = "chattr_video_calls_started_total";
/// Calls ended, by `outcome`.
pub const CALLS_ENDED: &str = "chattr_video_calls_ended_total";
/// Devices dropped after going silent for the grace period.
pub const PARTICIPANTS_DROPPED: &str = "chattr_video_participants_dropped_total";
/// Offers, answers and candidates relayed.
pub const SIGNALS_RELAYED: &str = "chattr_video_signals_relayed_total";
/// Call starts refused by the rate limit, by `bucket`.
pub const RATE_LIMITED: &str = "chattr_video_rate_limited_total";
/// Compare-and-swap retries on a call record.
pub const TRANSITION_CONFLICTS: &str = "chattr_video_transition_conflicts_total";

/// Every `outcome` of [`CALLS_ENDED`].
pub const OUTCOMES: &[&str] = &["completed", "missed", "declined", "cancelled"];

/// Describes the metrics and creates them at zero.
pub fn describe() {
    use metrics::describe_counter as counter;
    metrics::describe_gauge!(CALLS_ACTIVE, "Live calls in the cluster (take max over instances)");
    counter!(CALLS_STARTED, "Calls started");
    counter!(CALLS_ENDED, "Calls ended, by outcome");
    counter!(PARTICIPANTS_DROPPED, "Devices dropped after going silent for the grace period");
    counter!(SIGNALS_RELAYED, "WebRTC offers, answers and candidates relayed");
    counter!(RATE_LIMITED, "Call starts refused by the rate limit, by bucket");
    counter!(TRANSITION_CONFLICTS, "Compare-and-swap retries on a call record");
    for outcome in OUTCOMES {
        metrics::counter!(CALLS_ENDED, "outcome" => *outcome).increment(0);
    }
    for name in [CALLS_STARTED, PARTICIPANTS_DROPPED, SIGNALS_RELAYED, TRANSITION_CONFLICTS] {
        metrics::counter!(name).increment(0);
    }
    metrics::counter!(RATE_LIMITED, "bucket" => "call_start").increment(0);
}
