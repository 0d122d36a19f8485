//! The video service: calls and their signaling, and TURN credentials for WebRTC.
//!
//! - [`call`]: the call lifecycle as a pure state machine (no clock, no I/O).
//! - [`service::Video`]: the service around it, keeping calls in the cache (shared by
//!   every instance), running their timers, relaying signaling, publishing `call.*`
//!   events.
//! - [`turn`]: time-limited TURN credentials in the TURN REST API scheme that coturn
//!   implements with `use-auth-secret`.

pub mod call;
pub mod metrics;
pub mod service;
pub mod turn;

use serde::{Deserialize, Serialize};

pub use service::Video;
pub use turn::TurnCredentials;

/// Tunables of the video service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoSettings {
    /// TURN/STUN server URLs (`turn:host:3478?transport=udp`, …); none: no relay.
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server (`static-auth-secret`). Never written out.
    #[serde(skip_serializing)]
    pub turn_secret: Option<secrecy::SecretString>,
    /// Seconds a minted credential stays valid (default 6 h: a long call must not lose
    /// its relay, and a leaked credential must not live for days).
    pub turn_ttl_secs: Option<u64>,
    /// Seconds invitees' devices ring before the call counts as missed (default 30).
    pub ring_secs: Option<u64>,
    /// Seconds a participant whose socket went away keeps its place, so a reconnect
    /// rejoins the call (default 10; at least 4, since gateways send keepalives every 3).
    pub grace_secs: Option<u64>,
    /// Most participants of one call (a mesh; default 4, at least 2).
    pub max_participants: Option<usize>,
    /// Calls one user may start per minute (default 10): ringing someone's devices over
    /// and over is harassment, not a call.
    pub calls_per_minute: Option<u32>,
}

impl VideoSettings {
    /// Seconds a credential lives.
    pub fn ttl_secs(&self) -> u64 {
        self.turn_ttl_secs.unwrap_or(6 * 3600).max(60)
    }

    /// Milliseconds invitees' devices ring.
    pub fn ring_ms(&self) -> u64 {
        self.ring_secs.unwrap_or(30).max(1) * 1000
    }

    /// Milliseconds a silent device keeps its place in a call.
    pub fn grace_ms(&self) -> u64 {
        self.grace_secs.unwrap_or(10).max(4) * 1000
    }

    /// The limit on starting calls, per user.
    pub fn start_limit(&self) -> chattr_cache::RateLimit {
        let burst = self.calls_per_minute.unwrap_or(10).max(1);
        chattr_cache::RateLimit { burst, period: std::time::Duration::from_secs(60) }
    }

    /// The mesh cap.
    pub fn max_participants(&self) -> usize {
        self.max_participants.unwrap_or(4).max(2)
    }
}
