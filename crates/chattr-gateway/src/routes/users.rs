//! `/v1/users` (search by prefix) and `/v1/presence`.

use axum::extract::State;
use axum::Json;
use chattr_api::v1::{codes, ErrorBody, PresenceList, UserList};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiQuery;
use crate::extract::Caller;
use crate::{ApiError, GatewayState};

/// Query of `GET /v1/users`.
#[derive(Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Username prefix (case-insensitive).
    #[serde(default)]
    pub prefix: String,
    /// At most this many (1–50, default 20).
    pub limit: Option<u32>,
}

/// Finds users by username prefix, to start a conversation.
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])), params(SearchQuery),
    responses((status = 200, body = UserList), (status = 401, body = ErrorBody)))]
pub async fn search(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<UserList>, ApiError> {
    let users = state.auth.search_users(who, &q.prefix, q.limit.unwrap_or(20)).await?;
    Ok(Json(UserList { users }))
}

/// Query of `GET /v1/presence`.
#[derive(Deserialize, IntoParams)]
pub struct PresenceQuery {
    /// Comma-separated user ids (at most 200).
    pub user_ids: String,
}

/// Presence of users who share a conversation with the caller (others are omitted).
#[utoipa::path(get, path = "/v1/presence", tag = "users", security(("bearer" = [])), params(PresenceQuery),
    responses((status = 200, body = PresenceList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn presence(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> Result<Json<PresenceList>, ApiError> {
    let ids: Result<Vec<Uuid>, _> = q.user_ids.split(',').filter(|s| !s.is_empty()).map(str::parse).collect();
    let ids = ids.map_err(|_| {
        ApiError::new(axum::http::StatusCode::BAD_REQUEST, codes::INVALID_ARGUMENT, "user_ids must be uuids")
    })?;
    if ids.len() > 200 {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            "at most 200 user_ids",
        ));
    }
    Ok(Json(PresenceList { presence: state.messaging.presence(who.user_id, &ids).await? }))
}
