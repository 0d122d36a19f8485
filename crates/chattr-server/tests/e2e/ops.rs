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
    assert!(metrics.contains("chattr_build_info"));
    match &srv.cluster {
        // One process: the gateway's endpoint shows the messaging service's counters.
        None => assert!(metrics.contains("chattr_messaging_messages_accepted_total"), "{metrics}"),
        // Every role process answers health, readiness and metrics on its own port;
        // the messaging process counts the message.
        Some(cluster) => {
            for role in cluster.roles() {
                let base = format!("http://{}", role.http);
                let http = reqwest::Client::new();
                let ready = http.get(format!("{base}/ready")).send().await.unwrap();
                assert_eq!(ready.status().as_u16(), 200, "{} not ready", role.process.name());
                let health = http.get(format!("{base}/health")).send().await.unwrap();
                assert_eq!(health.status().as_u16(), 200);
            }
            let messaging = format!("http://{}/metrics", cluster.messaging[0].http);
            let text = reqwest::get(messaging).await.unwrap().text().await.unwrap();
            assert!(text.contains("chattr_messaging_messages_accepted_total"), "{text}");
        }
    }
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
        "/v1/calls/ice-servers",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    // Every schema a frame refers to is in the document (the call frames included).
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in ["ClientFrame", "ServerFrame", "Call", "CallParticipant", "Signal", "CallState", "CallOutcome"] {
        assert!(schemas.contains_key(s), "openapi lacks schema {s}");
    }
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling schema reference {name}");
    }
    // Unknown routes answer JSON 404 too.
    let missing = c.request_raw(Method::GET, "/v1/nope", None).await;
    assert_api_error(missing, 404, "not_found");
}

#[tokio::test]
async fn the_web_app_is_served_with_a_content_security_policy() {
    let srv = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in ["/", "/conversations/some-id"] {
        let resp = http.get(format!("{}{path}", srv.url)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let headers = resp.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(resp.text().await.unwrap().contains("<title>Chattr</title>"));
    }
    let missing = http.get(format!("{}/nope.js", srv.url)).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}
