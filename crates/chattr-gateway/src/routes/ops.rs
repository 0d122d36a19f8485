//! `/health`, `/ready`, `/metrics`, `/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::Ops;

/// Alive: the process answers.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready: every backend this process uses answers.
pub async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    match (ops.ready)().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": reason})))
        }
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (ops.render_metrics)())
}

/// The OpenAPI document, generated from the code.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi_json())
}
