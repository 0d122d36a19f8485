//! Gateway settings.

use serde::{Deserialize, Serialize};

/// Tunables of the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Largest accepted WebSocket text frame in bytes; larger ones get a `too_large` error.
    pub max_frame_bytes: usize,
    /// Hard cap of a WebSocket message; beyond it the socket is closed with 1009.
    pub max_ws_message_bytes: usize,
    /// Largest accepted REST body in bytes.
    pub max_body_bytes: usize,
    /// Deliveries queued per connection before it is disconnected as a slow consumer.
    pub queue_capacity: usize,
    /// Capacity of the process-wide pub/sub queue.
    pub pubsub_capacity: usize,
    /// Missed messages replayed per conversation on resume; more means `resync`.
    pub replay_limit: u64,
    /// Seconds between server heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds a new socket has to send `auth`.
    pub auth_timeout_secs: u64,
    /// Frames per second a socket may send on average.
    pub frames_per_second: u32,
    /// Burst of frames a socket may send at once.
    pub frame_burst: u32,
    /// Allowed `Origin` values for WebSocket upgrades (browsers). Empty: same host only.
    pub allowed_origins: Vec<String>,
    /// Take the client IP (for rate limits) from the last `X-Forwarded-For` address (the one
    /// the proxy in front of the gateway appended). Only
    /// enable behind a reverse proxy that sets it; otherwise clients could pick their IP.
    pub trust_forwarded_for: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024,
            max_ws_message_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            queue_capacity: 256,
            pubsub_capacity: 65_536,
            replay_limit: 1000,
            heartbeat_secs: 25,
            auth_timeout_secs: 10,
            frames_per_second: 20,
            frame_burst: 60,
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
        }
    }
}
