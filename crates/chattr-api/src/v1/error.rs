//! The error body every REST error and WebSocket `error` frame carries.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// JSON body of every error response: a stable machine `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, documented error code (e.g. `not_found`, `invalid_username`).
    pub code: String,
    /// Human-readable explanation; may change between versions.
    pub message: String,
}

/// Stable error codes. Clients match on these strings; they are never renamed.
pub mod codes {
    /// The request body or frame is not valid JSON or has wrong field types.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The username is not 3–32 characters of `[a-z0-9_.-]`.
    pub const INVALID_USERNAME: &str = "invalid_username";
    /// The password is shorter than 8 characters (or absurdly long).
    pub const INVALID_PASSWORD: &str = "invalid_password";
    /// The message body is empty or too long.
    pub const INVALID_BODY: &str = "invalid_body";
    /// A field other than the above is invalid; the message says which.
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    /// The username is already taken.
    pub const USERNAME_TAKEN: &str = "username_taken";
    /// Wrong username or password.
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    /// Missing, malformed, expired or tampered token, or a revoked session.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The refresh token is unknown, expired, or was already used.
    pub const INVALID_REFRESH_TOKEN: &str = "invalid_refresh_token";
    /// The caller may not do this to a resource it can see.
    pub const FORBIDDEN: &str = "forbidden";
    /// The resource does not exist, or the caller may not know it exists.
    pub const NOT_FOUND: &str = "not_found";
    /// Too many requests; see `Retry-After`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A frame or body is larger than allowed.
    pub const TOO_LARGE: &str = "too_large";
    /// Unknown WebSocket frame `type`.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A frame other than `auth` arrived before authentication.
    pub const NOT_AUTHENTICATED: &str = "not_authenticated";
    /// The server failed; the request may be retried.
    pub const INTERNAL: &str = "internal";
    /// A backend is unavailable; the request may be retried.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The user (or, when starting a call, the caller) is already in another call.
    pub const BUSY: &str = "busy";
    /// The call already holds as many participants as it may (a mesh has a cap).
    pub const CALL_FULL: &str = "call_full";

    /// Every code above, so a code that crossed a process boundary as text can be turned
    /// back into the `'static` constant (`None` for a code this version does not know).
    pub fn known(code: &str) -> Option<&'static str> {
        const ALL: [&str; 19] = [
            BAD_REQUEST,
            INVALID_USERNAME,
            INVALID_PASSWORD,
            INVALID_BODY,
            INVALID_ARGUMENT,
            USERNAME_TAKEN,
            INVALID_CREDENTIALS,
            UNAUTHORIZED,
            INVALID_REFRESH_TOKEN,
            FORBIDDEN,
            NOT_FOUND,
            RATE_LIMITED,
            TOO_LARGE,
            UNKNOWN_TYPE,
            NOT_AUTHENTICATED,
            INTERNAL,
            UNAVAILABLE,
            BUSY,
            CALL_FULL,
        ];
        ALL.into_iter().find(|c| *c == code)
    }
}
