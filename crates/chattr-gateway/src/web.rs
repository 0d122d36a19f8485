//! The browser app: files from `web/`, embedded at build time (no Node needed to run),
//! served with a strict Content-Security-Policy. Unknown non-API paths get `index.html` so
//! the app can route on the client.

use crate::ApiError;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

fn file(path: &str) -> Option<&'static [u8]> {
    WEB_FILES.iter().find(|(p, _)| *p == path).map(|(_, bytes)| *bytes)
}

/// Scripts, styles and connections only from this origin; no framing, no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Serves a file of the app, or `index.html` for client-side routes.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("v1/") || path == "v1" {
        return ApiError::not_found().into_response();
    }
    let (contents, path) = match file(path).filter(|_| !path.is_empty()) {
        Some(f) => (f, path),
        // Paths with a file extension that do not exist are real 404s, not app routes.
        None if path.rsplit('/').next().is_some_and(|last| last.contains('.')) => {
            return ApiError::not_found().into_response()
        }
        None => match file("index.html") {
            Some(f) => (f, "index.html"),
            None => return ApiError::not_found().into_response(),
        },
    };
    let mut response = (StatusCode::OK, contents).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let cache = if path == "index.html" { "no-cache" } else { "public, max-age=300" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
