//! `GET /v1/ws`: the WebSocket endpoint. [`upgrade`] checks the origin and sizes the
//! socket's buffers; [`connection`] runs one socket in one task.

mod batch;
mod beats;
mod connection;
mod goodbyes;
mod limiter;
mod tokens;

pub(crate) use beats::Beats;
pub(crate) use goodbyes::Goodbyes;
pub(crate) use tokens::Tokens;

use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chattr_api::v1::codes;

use crate::{ApiError, GatewayState};

/// Upgrades to a WebSocket. Browsers send `Origin`; it must be an allowed origin or the
/// same host, so another site cannot open sockets with a victim's credentials.
pub async fn upgrade(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.settings.allowed_origins) {
        return ApiError::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, "origin not allowed").into_response();
    }
    let settings = state.settings.clone();
    ws.read_buffer_size(256)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(settings.max_ws_message_bytes)
        .max_frame_size(settings.max_ws_message_bytes)
        .on_upgrade({
            // Counted before the upgrade completes: shutdown must not miss a socket whose
            // handshake raced it. A failed upgrade drops the closure, and the count with it.
            let open = state.sockets.open();
            move |socket| async move {
                connection::run(socket, state).await;
                drop(open);
            }
        })
}

/// Counts the open sockets, so shutdown can wait for them to say goodbye: upgraded
/// connections live outside the HTTP server's graceful shutdown.
#[derive(Default)]
pub struct Sockets {
    open: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
}

/// One open socket; dropping it counts the socket closed.
pub struct OpenSocket(std::sync::Arc<Sockets>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

impl Sockets {
    fn open(self: &std::sync::Arc<Self>) -> OpenSocket {
        self.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenSocket(self.clone())
    }

    /// How many sockets are open.
    pub fn count(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until no socket is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Non-browser clients send no Origin; they authenticate with a token in a frame.
        return true;
    };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "chat.example:8080".parse().unwrap());
        assert!(origin_allowed(&h, &[]));
        h.insert(header::ORIGIN, "http://chat.example:8080".parse().unwrap());
        assert!(origin_allowed(&h, &[]));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!origin_allowed(&h, &[]));
        assert!(origin_allowed(&h, &["http://evil.example".to_owned()]));
    }
}
