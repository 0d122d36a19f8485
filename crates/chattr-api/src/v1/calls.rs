//! Calls: what a client needs to set up WebRTC media.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One ICE server, as `RTCPeerConnection`'s `iceServers` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IceServer {
    /// `turn:`/`turns:`/`stun:` URLs of one server.
    pub urls: Vec<String>,
    /// TURN username: `<expiry unix time>:<user id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password: base64 HMAC-SHA1 of the username with the server's shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Answer of `GET /v1/calls/ice-servers`: empty when no TURN server is configured (then
/// only host candidates work, i.e. peers that reach each other directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IceServerList {
    /// The servers, for `new RTCPeerConnection({iceServers})`.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid.
    pub ttl_secs: u64,
}
