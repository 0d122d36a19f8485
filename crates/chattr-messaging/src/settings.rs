//! Messaging settings.

use serde::{Deserialize, Serialize};

/// Tunables of the messaging service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingSettings {
    /// Maximum message body length in characters (default 4000).
    pub max_body_chars: usize,
    /// Maximum members of a group.
    pub max_group_members: usize,
    /// Seconds a connection counts as present without a refresh.
    pub presence_ttl_secs: u64,
    /// How often the outbox relay looks for rows that writers in other processes
    /// committed, in milliseconds (writers in the relay's own process wake it at once).
    pub relay_poll_ms: u64,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        Self { max_body_chars: 4000, max_group_members: 1000, presence_ttl_secs: 60, relay_poll_ms: 20 }
    }
}
