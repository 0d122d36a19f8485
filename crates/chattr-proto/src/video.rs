//! The video service seam: ICE servers (TURN credentials) now; calls and signaling next.

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use chattr_api::v1::{codes, IceServerList};
use chattr_core::UserId;

use crate::ErrorInfo;

/// Errors of the video service.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The service failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ErrorInfo for VideoError {
    fn code(&self) -> &'static str {
        codes::INTERNAL
    }

    fn http_status(&self) -> u16 {
        500
    }

    fn public_message(&self) -> String {
        "internal error".to_owned()
    }
}

/// The video service.
#[async_trait]
pub trait VideoService: Send + Sync + 'static {
    /// The ICE servers `user` may use, with fresh time-limited TURN credentials.
    async fn ice_servers(&self, user: UserId) -> Result<IceServerList, VideoError>;
}

/// A cloneable handle on the video service.
#[derive(Clone)]
pub struct VideoClient(Arc<dyn VideoService>);

impl VideoClient {
    /// Wraps an in-process implementation.
    pub fn local(service: impl VideoService) -> Self {
        Self(Arc::new(service))
    }
}

impl Deref for VideoClient {
    type Target = dyn VideoService;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
