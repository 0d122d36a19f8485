//! Auth settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tunables of the auth service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Access token lifetime in seconds (default 900 = 15 min).
    pub access_ttl_secs: u64,
    /// Refresh token lifetime in seconds (default 30 days).
    pub refresh_ttl_secs: u64,
    /// Login attempts allowed per username per minute (burst).
    pub login_per_username_per_minute: u32,
    /// Login attempts allowed per client IP per minute (burst).
    pub login_per_ip_per_minute: u32,
    /// Signups allowed per client IP per hour (burst).
    pub signup_per_ip_per_hour: u32,
    /// Argon2id memory cost in KiB (default 19 MiB, the OWASP minimum for Argon2id).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// A session's "last seen" is written again only when older than this (seconds): each
    /// request and connection would otherwise write the database, and a reconnect storm
    /// would queue behind its writer.
    pub last_seen_every_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            login_per_username_per_minute: 10,
            login_per_ip_per_minute: 30,
            signup_per_ip_per_hour: 30,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            last_seen_every_secs: 60,
        }
    }
}

impl AuthSettings {
    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_ttl_secs)
    }

    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_ttl_secs)
    }
}
