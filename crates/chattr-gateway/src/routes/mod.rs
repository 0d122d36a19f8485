//! REST routes and the router that ties them to the WebSocket and ops endpoints.

pub(crate) mod auth;
pub(crate) mod calls;
pub(crate) mod conversations;
pub(crate) mod messages;
pub(crate) mod ops;
pub(crate) mod users;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};
use axum::Router;

use crate::{ws, GatewayState};

/// Builds the full router.
pub fn router(state: GatewayState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let v1 = Router::new()
        .route("/auth/signup", post(auth::signup))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/sessions", get(auth::sessions).delete(auth::revoke_other_sessions))
        .route("/auth/sessions/{id}", delete(auth::revoke_session))
        .route("/users", get(users::search))
        .route("/presence", get(users::presence))
        .route("/conversations", post(conversations::create).get(conversations::list))
        .route("/conversations/{id}", get(conversations::get).patch(conversations::rename))
        .route("/conversations/{id}/members", post(conversations::add_member))
        .route("/conversations/{id}/members/{user_id}", delete(conversations::remove_member))
        .route("/conversations/{id}/messages", get(messages::history).post(messages::send))
        .route("/conversations/{id}/messages/{message_id}", patch(messages::edit).delete(messages::delete))
        .route("/conversations/{id}/read", post(messages::mark_read))
        .route("/conversations/{id}/typing", post(messages::typing))
        .route("/calls/ice-servers", get(calls::ice_servers))
        .route("/ws", get(ws::upgrade));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(crate::web::serve)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(state)
}

/// Runs each request in a trace: the caller's (a child of its `traceparent` header) or a
/// new one, so the services it calls and the events it causes carry the same trace id.
async fn trace_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use chattr_core::trace::{self, TraceContext};
    let context = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |c| c.child());
    // Only built when spans are exported.
    let detail = if trace::exporting() {
        format!("{} {}", request.method(), request.uri().path())
    } else {
        String::new()
    };
    trace::span("http request", move || detail, context, next.run(request)).await
}
