//! The seams between Chattr services.
//!
//! Each service is an async trait ([`auth::AuthService`], [`messaging::MessagingService`])
//! and a cloneable client ([`auth::AuthClient`], [`messaging::MessagingClient`]) that wraps
//! either the in-process implementation or (in the distributed shape) a remote one, so
//! callers cannot tell which. Errors are one enum per service with one mapping to a stable
//! wire code and an HTTP status ([`ErrorInfo`]). [`delivery`] is the internal envelope that
//! fan-out publishes on pub/sub for gateways.

pub mod auth;
pub mod delivery;
pub mod messaging;
pub mod video;

use std::time::Duration;

/// What an error tells the edge: a stable code, an HTTP status, an optional retry hint.
pub trait ErrorInfo: std::error::Error {
    /// Stable wire code (see `chattr_api::v1::codes`).
    fn code(&self) -> &'static str;
    /// HTTP status for REST.
    fn http_status(&self) -> u16;
    /// For rate limits: when to retry.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// The message safe to show a client (internal details are logged, never sent).
    fn public_message(&self) -> String {
        self.to_string()
    }
}

/// The authenticated caller of a request: a user and the session (device) acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user.
    pub user_id: chattr_core::UserId,
    /// The session.
    pub session_id: chattr_core::SessionId,
}
