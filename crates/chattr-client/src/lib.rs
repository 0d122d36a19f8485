//! A typed client for Chattr on the shared `chattr-api` wire types.
//!
//! - [`Client`]: REST calls, holding the access and refresh tokens.
//! - [`Connection`]: one raw WebSocket (frames in, frames out).
//! - [`Live`]: a self-healing WebSocket that reconnects with its cursors and delivers each
//!   message once, in seq order, and retries unacknowledged sends with the same
//!   `client_msg_id` (never a duplicate).

mod connection;
mod live;
mod rest;

pub use connection::Connection;
pub use live::{Live, LiveEvent};
pub use rest::Client;

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status (0 for WebSocket `error` frames).
        status: u16,
        /// Stable error code.
        code: String,
        /// Human-readable message.
        message: String,
        /// `Retry-After` in seconds, if sent.
        retry_after: Option<u64>,
    },
    /// The socket was closed by the server.
    #[error("closed by server: {code} {reason}")]
    Closed {
        /// Close code (see `chattr_api::v1::close_codes`).
        code: u16,
        /// Reason text.
        reason: String,
    },
    /// Network, protocol or decoding failure.
    #[error("transport: {0}")]
    Transport(String),
    /// Not signed in.
    #[error("not signed in")]
    NotSignedIn,
}

impl ClientError {
    /// The stable error code for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of client calls.
pub type ClientResult<T> = Result<T, ClientError>;
