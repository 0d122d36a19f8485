//! Accounts and sessions: signup, login, refresh, sessions, user search.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// `POST /v1/auth/signup` and `POST /v1/auth/login` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    /// 3–32 characters of `[a-z0-9_.-]`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
}

/// `POST /v1/auth/refresh` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token returned by the last signup, login or refresh.
    pub refresh_token: String,
}

/// A user as other users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// The user's id.
    pub id: Uuid,
    /// The user's unique username.
    pub username: String,
}

/// Response of signup, login and refresh: the user and a fresh token pair.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    /// The signed-in user.
    pub user: User,
    /// Short-lived signed token for `Authorization: Bearer` and the WebSocket `auth` frame.
    pub access_token: String,
    /// Opaque single-use token for `POST /v1/auth/refresh`; rotated on every use.
    pub refresh_token: String,
    /// The session (device) these tokens belong to.
    pub session_id: Uuid,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// One login session (device) of the caller, from `GET /v1/auth/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// Session id, for `DELETE /v1/auth/sessions/{id}`.
    pub id: Uuid,
    /// The `User-Agent` the session logged in with.
    pub user_agent: Option<String>,
    /// When the session was created.
    pub created_at: DateTime<Utc>,
    /// Last time the session refreshed its tokens or connected.
    pub last_seen_at: DateTime<Utc>,
    /// True for the session making this request.
    pub current: bool,
}

/// `GET /v1/auth/sessions` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// The caller's active sessions, newest first.
    pub sessions: Vec<SessionInfo>,
}

/// `GET /v1/users?prefix=` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    /// Users whose username starts with the prefix, alphabetically, at most 20.
    pub users: Vec<User>,
}
