//! The auth service seam: accounts, tokens, sessions, login rate limits, user search.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chattr_api::v1::{codes, AuthResponse, Credentials, SessionInfo, User};
use chattr_core::{SessionId, UserId, ValidationError};

use crate::{ErrorInfo, Principal};

/// Errors of the auth service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Input failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The username is taken.
    #[error("username is already taken")]
    UsernameTaken,
    /// Wrong username or password.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Missing, malformed, expired or tampered token, or a revoked session.
    #[error("authentication required")]
    Unauthorized,
    /// The refresh token is unknown, expired, revoked or was reused.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// The session does not exist or is not the caller's.
    #[error("not found")]
    NotFound,
    /// Too many attempts.
    #[error("too many attempts, retry later")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// A backend failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// A service or backend cannot be reached right now; the call may be retried.
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

impl ErrorInfo for AuthError {
    fn code(&self) -> &'static str {
        match self {
            AuthError::Invalid(e) => e.code,
            AuthError::UsernameTaken => codes::USERNAME_TAKEN,
            AuthError::InvalidCredentials => codes::INVALID_CREDENTIALS,
            AuthError::Unauthorized => codes::UNAUTHORIZED,
            AuthError::InvalidRefreshToken => codes::INVALID_REFRESH_TOKEN,
            AuthError::NotFound => codes::NOT_FOUND,
            AuthError::RateLimited { .. } => codes::RATE_LIMITED,
            AuthError::Internal(_) => codes::INTERNAL,
            AuthError::Unavailable(_) => codes::UNAVAILABLE,
        }
    }

    fn http_status(&self) -> u16 {
        match self {
            AuthError::Invalid(_) => 400,
            AuthError::UsernameTaken => 409,
            AuthError::InvalidCredentials | AuthError::Unauthorized | AuthError::InvalidRefreshToken => 401,
            AuthError::NotFound => 404,
            AuthError::RateLimited { .. } => 429,
            AuthError::Internal(_) => 500,
            AuthError::Unavailable(_) => 503,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn public_message(&self) -> String {
        match self {
            AuthError::Internal(_) => "internal error".to_owned(),
            AuthError::Unavailable(_) => "service unavailable, retry shortly".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Where a request comes from, for sessions and rate limits.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The peer IP address.
    pub ip: Option<std::net::IpAddr>,
}

/// The auth service.
#[async_trait]
pub trait AuthService: Send + Sync + 'static {
    /// Creates an account and a first session.
    async fn signup(&self, creds: Credentials, client: ClientInfo) -> Result<AuthResponse, AuthError>;
    /// Checks credentials (rate limited per username and per IP) and opens a session.
    async fn login(&self, creds: Credentials, client: ClientInfo) -> Result<AuthResponse, AuthError>;
    /// Rotates a refresh token. Reusing a rotated one revokes its session.
    async fn refresh(&self, refresh_token: &str, client: ClientInfo) -> Result<AuthResponse, AuthError>;
    /// Revokes the caller's session.
    async fn logout(&self, who: Principal) -> Result<(), AuthError>;
    /// Verifies an access token (signature, expiry) and that its session is live, and
    /// marks the session seen (written at most once a minute).
    async fn authenticate(&self, access_token: &str) -> Result<Principal, AuthError>;
    /// [`AuthService::authenticate`] for many tokens at once (a gateway's new sockets): one
    /// answer each, in order, `None` where the token does not authenticate. The default
    /// goes one at a time.
    async fn authenticate_many(&self, access_tokens: &[String]) -> Result<Vec<Option<Principal>>, AuthError> {
        let mut who = Vec::with_capacity(access_tokens.len());
        for token in access_tokens {
            who.push(match self.authenticate(token).await {
                Ok(principal) => Some(principal),
                Err(AuthError::Unauthorized) => None,
                Err(e) => return Err(e),
            });
        }
        Ok(who)
    }
    /// Checks that a session is still live (not revoked); `Unauthorized` otherwise. Sockets
    /// call it periodically so a revocation whose event was lost still closes them.
    async fn check_session(&self, who: Principal) -> Result<(), AuthError>;
    /// [`AuthService::check_session`] for many sessions at once (a gateway checks all its
    /// sockets in one call): one answer each, in order, true while the session is live.
    /// The default checks one at a time.
    async fn check_sessions(&self, who: &[Principal]) -> Result<Vec<bool>, AuthError> {
        let mut live = Vec::with_capacity(who.len());
        for w in who {
            live.push(match self.check_session(*w).await {
                Ok(()) => true,
                Err(AuthError::Unauthorized) => false,
                Err(e) => return Err(e),
            });
        }
        Ok(live)
    }
    /// Records that a session is in use now, for "last seen". `authenticate` does this
    /// already; kept for gateways of earlier releases, which call it after each connect.
    async fn touch(&self, who: Principal) -> Result<(), AuthError>;
    /// The public view of a user.
    async fn user(&self, id: UserId) -> Result<User, AuthError>;
    /// [`AuthService::user`] for many users at once (a gateway greets a batch of new
    /// connections in one call): those that exist, in any order. The default asks one at a
    /// time.
    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>, AuthError> {
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            match self.user(*id).await {
                Ok(user) => users.push(user),
                Err(AuthError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(users)
    }
    /// The caller's live sessions.
    async fn sessions(&self, who: Principal) -> Result<Vec<SessionInfo>, AuthError>;
    /// Revokes one of the caller's sessions (`NotFound` if not theirs).
    async fn revoke_session(&self, who: Principal, id: SessionId) -> Result<(), AuthError>;
    /// Revokes all the caller's other sessions; returns how many.
    async fn revoke_other_sessions(&self, who: Principal) -> Result<u32, AuthError>;
    /// Users whose username starts with `prefix` (at most `limit`, ≤ 50).
    async fn search_users(&self, who: Principal, prefix: &str, limit: u32) -> Result<Vec<User>, AuthError>;
}

/// A cloneable handle on the auth service, local or remote; callers cannot tell which.
#[derive(Clone)]
pub struct AuthClient(Arc<dyn AuthService>);

impl AuthClient {
    /// Wraps an in-process implementation.
    pub fn local(service: impl AuthService) -> Self {
        Self(Arc::new(service))
    }

    /// Wraps any implementation already shared (e.g. a remote adapter).
    pub fn from_arc(service: Arc<dyn AuthService>) -> Self {
        Self(service)
    }
}

impl Deref for AuthClient {
    type Target = dyn AuthService;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
