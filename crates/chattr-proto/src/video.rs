//! The video service seam: ICE servers (TURN credentials), the call lifecycle and
//! signaling relay.

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use chattr_api::v1::{codes, Call, IceServerList, Signal};
use chattr_core::{ConversationId, SessionId};
use uuid::Uuid;

use crate::{ErrorInfo, Principal};

/// Identifier of a call.
pub type CallId = Uuid;

/// Errors of the video service.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The call or conversation does not exist, or the caller may not know it does
    /// (a non-member of the conversation is told exactly what a missing call tells).
    #[error("not found")]
    NotFound,
    /// Input failed validation.
    #[error("{0}")]
    Invalid(String),
    /// A member of the conversation who may not do this now (e.g. signal without being in
    /// the call, or answer a call that has ended).
    #[error("{0}")]
    Forbidden(String),
    /// The user is already in another call.
    #[error("already in another call")]
    Busy,
    /// The call holds as many participants as it may.
    #[error("the call is full ({0} participants at most)")]
    Full(u32),
    /// Too many calls started; retry after this long.
    #[error("too many calls started, retry later")]
    RateLimited {
        /// Time until a call may be started again.
        retry_after: std::time::Duration,
    },
    /// A backend or service cannot be reached right now; the call may be retried.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The service failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ErrorInfo for VideoError {
    fn code(&self) -> &'static str {
        match self {
            VideoError::NotFound => codes::NOT_FOUND,
            VideoError::Invalid(_) => codes::INVALID_ARGUMENT,
            VideoError::Forbidden(_) => codes::FORBIDDEN,
            VideoError::Busy => codes::BUSY,
            VideoError::Full(_) => codes::CALL_FULL,
            VideoError::RateLimited { .. } => codes::RATE_LIMITED,
            VideoError::Unavailable(_) => codes::UNAVAILABLE,
            VideoError::Internal(_) => codes::INTERNAL,
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            VideoError::NotFound => 404,
            VideoError::Invalid(_) => 400,
            VideoError::Forbidden(_) => 403,
            VideoError::Busy | VideoError::Full(_) => 409,
            VideoError::RateLimited { .. } => 429,
            VideoError::Unavailable(_) => 503,
            VideoError::Internal(_) => 500,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            VideoError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn public_message(&self) -> String {
        match self {
            VideoError::Internal(_) => "internal error".to_owned(),
            VideoError::Unavailable(_) => "service unavailable, retry shortly".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The video service. Calls are made on behalf of one device (`who`: user and session).
/// State changes reach the members' devices as `call` frames on their pub/sub channels;
/// signals reach exactly the addressed device.
#[async_trait]
pub trait VideoService: Send + Sync + 'static {
    /// The ICE servers `who` may use, with fresh time-limited TURN credentials.
    async fn ice_servers(&self, who: Principal) -> Result<IceServerList, VideoError>;
    /// The live calls of these conversations that `who` is a member of (for a device that
    /// just connected: it rings for a call already ringing, or rejoins one it was in).
    async fn calls_of(
        &self,
        who: Principal,
        conversations: &[ConversationId],
    ) -> Result<Vec<Call>, VideoError>;
    /// Starts a call in a conversation of the caller, or joins the live one it has.
    async fn start(&self, who: Principal, conversation_id: ConversationId) -> Result<Call, VideoError>;
    /// Answers, joins or rejoins a call on this device.
    async fn answer(&self, who: Principal, call_id: CallId) -> Result<Call, VideoError>;
    /// Declines a ringing call.
    async fn decline(&self, who: Principal, call_id: CallId) -> Result<(), VideoError>;
    /// Leaves (hangs up) a call.
    async fn leave(&self, who: Principal, call_id: CallId) -> Result<(), VideoError>;
    /// Sets this device's microphone/camera state in the call.
    async fn media(
        &self,
        who: Principal,
        call_id: CallId,
        audio: bool,
        video: bool,
    ) -> Result<(), VideoError>;
    /// Relays a signal from this device to another participant's device.
    async fn signal(
        &self,
        who: Principal,
        call_id: CallId,
        to: SessionId,
        signal: Signal,
    ) -> Result<(), VideoError>;
    /// The device's socket is alive: keeps its place in its call. Returns false when the
    /// device is in no call (the gateway stops asking).
    async fn keepalive(&self, who: Principal) -> Result<bool, VideoError>;
    /// The device's socket closed: unless it comes back (answers again) within the grace
    /// period, it leaves its call.
    async fn disconnected(&self, who: Principal) -> Result<(), VideoError>;
}

/// A cloneable handle on the video service, local or remote.
#[derive(Clone)]
pub struct VideoClient(Arc<dyn VideoService>);

impl VideoClient {
    /// Wraps an in-process implementation.
    pub fn local(service: impl VideoService) -> Self {
        Self(Arc::new(service))
    }

    /// Wraps any implementation already shared (e.g. a remote adapter).
    pub fn from_arc(service: Arc<dyn VideoService>) -> Self {
        Self(service)
    }
}

impl Deref for VideoClient {
    type Target = dyn VideoService;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
