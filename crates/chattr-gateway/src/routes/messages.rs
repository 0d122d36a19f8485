//! `/v1/conversations/{id}/messages`, `/read` and `/typing`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chattr_api::v1::{EditMessage, ErrorBody, MarkRead, Message, MessageList, SendMessage};
use chattr_proto::messaging::HistoryQuery;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::{ApiJson, ApiPath, ApiQuery};
use crate::extract::Caller;
use crate::{ApiError, GatewayState};

/// Query of the history endpoint.
#[derive(Deserialize, IntoParams)]
pub struct HistoryParams {
    /// Messages after this seq (oldest first).
    pub after_seq: Option<u64>,
    /// Messages before this seq (the newest of them).
    pub before_seq: Option<u64>,
    /// Page size 1–100 (default 50).
    pub limit: Option<u32>,
}

/// A page of history, ascending by seq.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path), HistoryParams),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<Json<MessageList>, ApiError> {
    let q = HistoryQuery { after_seq: p.after_seq, before_seq: p.before_seq, limit: p.limit };
    Ok(Json(MessageList { messages: state.messaging.history(who.user_id, id, q).await? }))
}

/// Sends a message: 201 when new, 200 with the original for a repeated `client_msg_id`.
/// A response means the message is durable.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = SendMessage,
    responses((status = 201, body = Message), (status = 200, description = "duplicate client_msg_id", body = Message),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn send(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let (message, created) = state.messaging.send(who.user_id, id, req).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(message)))
}

/// Edits one's own message.
#[utoipa::path(patch, path = "/v1/conversations/{id}/messages/{message_id}", tag = "messages",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("message_id" = Uuid, Path)), request_body = EditMessage,
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn edit(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(req): ApiJson<EditMessage>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(state.messaging.edit(who.user_id, id, message_id, &req.body).await?))
}

/// Deletes a message (own; a group owner any), leaving a tombstone.
#[utoipa::path(delete, path = "/v1/conversations/{id}/messages/{message_id}", tag = "messages",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("message_id" = Uuid, Path)),
    responses((status = 200, description = "the tombstone", body = Message), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(state.messaging.delete(who.user_id, id, message_id).await?))
}

/// Marks everything up to `seq` read; answers the read position after the call.
#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = MarkRead,
    responses((status = 200, body = MarkRead), (status = 404, body = ErrorBody)))]
pub async fn mark_read(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<MarkRead>,
) -> Result<Json<MarkRead>, ApiError> {
    Ok(Json(MarkRead { seq: state.messaging.mark_read(who.user_id, id, req.seq).await? }))
}

/// Signals that the caller is typing (ephemeral).
#[utoipa::path(post, path = "/v1/conversations/{id}/typing", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn typing(
    State(state): State<GatewayState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.messaging.typing(who.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
