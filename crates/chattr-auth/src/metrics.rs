//! Auth's metrics (docs/metrics.md): logins, signups, refreshes, rate limits and the cost
//! of password hashing.

/// Logins, by `result` (`success`, `failure`).
pub const ATTEMPTS: &str = "chattr_auth_attempts_total";
/// Accounts created.
pub const SIGNUPS: &str = "chattr_auth_signups_total";
/// Token refreshes, by `result` (`success`, `failure`).
pub const REFRESHES: &str = "chattr_auth_refreshes_total";
/// Refresh tokens presented twice (the session is revoked).
pub const REFRESH_REUSE: &str = "chattr_auth_refresh_reuse_total";
/// Requests refused by a rate limit, by `bucket`.
pub const RATE_LIMITED: &str = "chattr_auth_rate_limited_total";
/// Argon2id hashing and verification time, by `op` (`hash`, `verify`).
pub const PASSWORD_HASH_SECONDS: &str = "chattr_auth_password_hash_seconds";

/// Every `bucket` of [`RATE_LIMITED`].
pub const BUCKETS: &[&str] = &["login_user", "login_ip", "signup_ip"];

/// Describes the metrics and creates the counters at zero.
pub fn describe() {
    use metrics::describe_counter as counter;
    counter!(ATTEMPTS, "Logins, by result");
    counter!(SIGNUPS, "Accounts created");
    counter!(REFRESHES, "Token refreshes, by result");
    counter!(REFRESH_REUSE, "Refresh tokens reused (their sessions are revoked)");
    counter!(RATE_LIMITED, "Auth requests refused by a rate limit, by bucket");
    metrics::describe_histogram!(
        PASSWORD_HASH_SECONDS,
        metrics::Unit::Seconds,
        "Argon2id time per password hash or verification, by op (hash, verify)"
    );
    for result in ["success", "failure"] {
        metrics::counter!(ATTEMPTS, "result" => result).increment(0);
        metrics::counter!(REFRESHES, "result" => result).increment(0);
    }
    for bucket in BUCKETS {
        metrics::counter!(RATE_LIMITED, "bucket" => *bucket).increment(0);
    }
    metrics::counter!(SIGNUPS).increment(0);
    metrics::counter!(REFRESH_REUSE).increment(0);
}
