//! Health, readiness, metrics and the OpenAPI document.

use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn health_ready_metrics_and_openapi() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    alice.send(conv.id, "k", "counted").await.unwrap();
    let c = srv.anonymous();
    let (status, _) = c.request_raw(Method::GET, "/health", None).await.unwrap();
    assert_eq!(status.as_u16(), 200);
    let (status, body) = c.request_raw(Method::GET, "/ready", None).await.unwrap();
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&body));
    let (_, metrics) = c.request_raw(Method::GET, "/metrics", None).await.unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("chattr_messaging_messages_accepted_total"), "{metrics}");
    assert!(metrics.contains("chattr_build_info"));
    let (_, doc) = c.request_raw(Method::GET, "/openapi.json", None).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/sessions",
        "/v1/auth/sessions/{id}",
        "/v1/users",
        "/v1/conversations",
        "/v1/conversations/{id}/members",
        "/v1/conversations/{id}/members/{user_id}",
        "/v1/conversations/{id}/messages",
        "/v1/conversations/{id}/messages/{message_id}",
        "/v1/conversations/{id}/read",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    // Unknown routes answer JSON 404 too.
    let missing = c.request_raw(Method::GET, "/v1/nope", None).await;
    assert_api_error(missing, 404, "not_found");
}
