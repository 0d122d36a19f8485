//! `/v1/conversations`: create, list, get, rename, members.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chattr_api::v1::{
    AddMember, Conversation, ConversationList, CreateConversation, ErrorBody, UpdateConversation,
};
use uuid::Uuid;

use crate::error::{ApiJson, ApiPath};
use crate::extract::Caller;
use crate::{ApiError, GatewayState};

/// Creates a direct conversation (returns the existing one with 200) or a group (201).
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateConversation,
    responses((status = 201, body = Conversation), (status = 200, description = "existing direct conversation", body = Conversation),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let (conv, created) = state.messaging.create_conversation(who.user_id, req).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(conv)))
}

/// Lists the caller's conversations, most recently active first, with unread counts.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = ConversationList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<GatewayState>,
    Caller(who): Caller,
) -> Result<Json<ConversationList>, ApiError> {
    Ok(Json(ConversationList { conversations: state.messaging.list_conversations(who.user_id).await? }))
}

/// One conversation (404 for non-members, exactly as for a missing one).
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(state.messaging.conversation(who.user_id, id).await?))
}

/// Renames a group (owner only).
#[utoipa::path(patch, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateConversation,
    responses((status = 200, body = Conversation), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn rename(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateConversation>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(state.messaging.rename(who.user_id, id, &req.title).await?))
}

/// Adds a member to a group (owner only).
#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = AddMember,
    responses((status = 200, body = Conversation), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn add_member(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AddMember>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(state.messaging.add_member(who.user_id, id, req.user_id).await?))
}

/// Removes a member (owner), or leaves (a member removing themselves).
#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user_id}", tag = "conversations",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath((id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    state.messaging.remove_member(who.user_id, id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
