//! The video service. So far: TURN credentials for WebRTC (the TURN REST API scheme
//! coturn implements with `use-auth-secret`), and the call lifecycle as a pure state
//! machine ([`call`]); storing calls in the cache, signaling and events come next.

pub mod call;
pub mod turn;

use async_trait::async_trait;
use chattr_api::v1::IceServerList;
use chattr_core::UserId;
use chattr_proto::video::{VideoError, VideoService};
use serde::{Deserialize, Serialize};

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
}

impl VideoSettings {
    /// Seconds a credential lives.
    pub fn ttl_secs(&self) -> u64 {
        self.turn_ttl_secs.unwrap_or(6 * 3600).max(60)
    }
}

/// The video service.
pub struct Video {
    settings: VideoSettings,
}

impl Video {
    /// Builds the service.
    pub fn new(settings: VideoSettings) -> Self {
        Self { settings }
    }
}

#[async_trait]
impl VideoService for Video {
    async fn ice_servers(&self, user: UserId) -> Result<IceServerList, VideoError> {
        let ttl_secs = self.settings.ttl_secs();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| VideoError::Internal(format!("clock before 1970: {e}")))?
            .as_secs();
        let ice_servers = match (&self.settings.turn_secret, self.settings.turn_urls.is_empty()) {
            (Some(secret), false) => {
                let credentials = TurnCredentials::mint(secret, user, now + ttl_secs);
                vec![credentials.ice_server(self.settings.turn_urls.clone())]
            }
            _ => Vec::new(),
        };
        Ok(IceServerList { ice_servers, ttl_secs })
    }
}
