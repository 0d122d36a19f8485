//! Calls: what a client needs to set up WebRTC media.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

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

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Started; nobody but the caller has joined yet. Invitees' devices ring.
    Ringing,
    /// Someone answered; media flows between the participants.
    Active,
    /// Over: see `outcome`. Sent once, then the call is forgotten.
    Ended,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Someone answered; the call ran and ended.
    Completed,
    /// Nobody answered before the ring timeout.
    Missed,
    /// Every invitee declined or was busy.
    Declined,
    /// The caller hung up before anyone answered.
    Cancelled,
}

/// One person in a call: the device (session) carrying their media and its mute state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallParticipant {
    /// The user.
    pub user_id: Uuid,
    /// The device (session) in the call; signaling is addressed to it.
    pub session_id: Uuid,
    /// Microphone on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
}

/// A call as every member of its conversation sees it. Pushed as a `call` frame on every
/// change; a device rings while its user is in `ringing` and none of the user's devices is
/// a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Call {
    /// Call id.
    pub id: Uuid,
    /// The conversation it belongs to (at most one live call per conversation).
    pub conversation_id: Uuid,
    /// Who started it.
    pub caller_id: Uuid,
    /// A group call runs until its last participant leaves; a direct one ends when either
    /// side hangs up.
    pub group: bool,
    /// `ringing`, `active` or `ended`.
    pub state: CallState,
    /// Who is in the call now.
    pub participants: Vec<CallParticipant>,
    /// Invitees whose devices ring.
    pub ringing: Vec<Uuid>,
    /// Most participants the call takes (a mesh: every participant sends to every other).
    pub max_participants: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When ringing stops (unanswered invitees then missed it).
    pub ring_until: DateTime<Utc>,
    /// Set once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CallOutcome>,
    /// Milliseconds from the first answer to the end; set once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A WebRTC signaling payload, relayed as is from one call participant's device to
/// another's. Renegotiation is simply another `offer`/`answer` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    /// An SDP offer.
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate; an empty `candidate` marks the end of candidates.
    Ice {
        /// `RTCIceCandidate.candidate`.
        candidate: String,
        /// `RTCIceCandidate.sdpMid`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// `RTCIceCandidate.sdpMLineIndex`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
    },
}

/// Largest SDP accepted in a signal, in bytes.
pub const MAX_SDP_BYTES: usize = 15 * 1024;
/// Largest ICE candidate line accepted, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

impl Signal {
    /// Checks sizes and shape; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Signal::Offer { sdp } | Signal::Answer { sdp } => {
                if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
                    return Err(format!("sdp must be 1–{MAX_SDP_BYTES} bytes"));
                }
                if !sdp.starts_with("v=0") {
                    return Err("sdp must be a session description (starting with v=0)".to_owned());
                }
            }
            Signal::Ice { candidate, sdp_mid, .. } => {
                if candidate.len() > MAX_CANDIDATE_BYTES {
                    return Err(format!("candidate must be at most {MAX_CANDIDATE_BYTES} bytes"));
                }
                if !candidate.is_empty() && !candidate.starts_with("candidate:") {
                    return Err("candidate must be an ICE candidate line (candidate:…)".to_owned());
                }
                if sdp_mid.as_ref().is_some_and(|m| m.len() > 64) {
                    return Err("sdp_mid must be at most 64 bytes".to_owned());
                }
            }
        }
        Ok(())
    }
}
