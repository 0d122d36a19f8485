//! `/v1/auth/*`: signup, login, refresh, logout, sessions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chattr_api::v1::{AuthResponse, Credentials, ErrorBody, RefreshRequest, SessionList};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiJson, ApiPath};
use crate::extract::{Caller, Client};
use crate::{ApiError, GatewayState};

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = AuthResponse), (status = 400, body = ErrorBody),
              (status = 409, description = "username taken", body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn signup(
    State(state): State<GatewayState>,
    Client(client): Client,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let response = state.auth.signup(creds, client).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// Signs in with username and password (rate limited per username and per IP).
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody),
              (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)))]
pub async fn login(
    State(state): State<GatewayState>,
    Client(client): Client,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<Json<AuthResponse>, ApiError> {
    Ok(Json(state.auth.login(creds, client).await?))
}

/// Exchanges a refresh token for a new pair. Reusing an old refresh token revokes the session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<GatewayState>,
    Client(client): Client,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    Ok(Json(state.auth.refresh(&req.refresh_token, client).await?))
}

/// Revokes the caller's session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<GatewayState>, Caller(who): Caller) -> Result<StatusCode, ApiError> {
    state.auth.logout(who).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the caller's live sessions (devices).
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody)))]
pub async fn sessions(
    State(state): State<GatewayState>,
    Caller(who): Caller,
) -> Result<Json<SessionList>, ApiError> {
    Ok(Json(SessionList { sessions: state.auth.sessions(who).await? }))
}

/// Revokes one of the caller's sessions; its open sockets close within a second.
#[utoipa::path(delete, path = "/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "session id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_session(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_session(who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions were revoked.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    /// Number of sessions revoked.
    pub revoked: u32,
}

/// Revokes every session of the caller except the current one.
#[utoipa::path(delete, path = "/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Revoked), (status = 401, body = ErrorBody)))]
pub async fn revoke_other_sessions(
    State(state): State<GatewayState>,
    Caller(who): Caller,
) -> Result<Json<Revoked>, ApiError> {
    Ok(Json(Revoked { revoked: state.auth.revoke_other_sessions(who).await? }))
}
