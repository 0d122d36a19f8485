//! Accounts, tokens, sessions and login rate limits.

use std::collections::BTreeMap;

use chattr_api::v1::{close_codes, codes, ServerFrame};
use chattr_client::ClientError;
use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn signup_validates_and_rejects_taken_names() {
    let srv = TestServer::start().await;
    let c = srv.anonymous();
    assert_api_error(c.signup("ab", PASSWORD).await, 400, codes::INVALID_USERNAME);
    assert_api_error(c.signup("Has Caps", PASSWORD).await, 400, codes::INVALID_USERNAME);
    assert_api_error(c.signup(&name("short"), "1234567").await, 400, codes::INVALID_PASSWORD);
    let username = name("taken");
    let auth = c.signup(&username, PASSWORD).await.unwrap();
    assert_eq!(auth.user.username, username);
    assert!(auth.expires_in > 0 && !auth.access_token.is_empty() && !auth.refresh_token.is_empty());
    assert_api_error(srv.anonymous().signup(&username, PASSWORD).await, 409, codes::USERNAME_TAKEN);
}

#[tokio::test]
async fn login_checks_the_password_and_logout_revokes() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let username = alice.me().unwrap().username;
    assert_api_error(
        srv.anonymous().login(&username, "wrong password").await,
        401,
        codes::INVALID_CREDENTIALS,
    );
    assert_api_error(srv.anonymous().login("nobody_here", PASSWORD).await, 401, codes::INVALID_CREDENTIALS);
    let device = srv.anonymous();
    device.login(&username, PASSWORD).await.unwrap();
    assert_eq!(device.sessions().await.unwrap().len(), 2);
    let tokens = device.auth().unwrap();
    device.logout().await.unwrap();
    // The logged-out session's access token stops working at once, and so does its refresh.
    let stale = srv.anonymous();
    stale.set_auth(tokens.clone());
    assert_api_error(stale.conversations().await, 401, codes::UNAUTHORIZED);
    assert_api_error(stale.refresh_with(&tokens.refresh_token).await, 401, codes::INVALID_REFRESH_TOKEN);
    assert_eq!(alice.sessions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn revoked_access_tokens_and_tampered_tokens_are_refused() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let other = srv.second_device(&alice).await;
    let other_session = other.auth().unwrap().session_id;
    alice.revoke_session(other_session).await.unwrap();
    assert_api_error(other.conversations().await, 401, codes::UNAUTHORIZED);
    // A session of someone else is not found (and not revealed).
    let bob = srv.user("bob").await;
    assert_api_error(bob.revoke_session(alice.auth().unwrap().session_id).await, 404, codes::NOT_FOUND);
    // Tampered token.
    let mut auth = alice.auth().unwrap();
    auth.access_token.push('x');
    let tampered = srv.anonymous();
    tampered.set_auth(auth);
    assert_api_error(tampered.conversations().await, 401, codes::UNAUTHORIZED);
    // No token at all.
    assert_api_error(srv.anonymous().conversations().await, 401, codes::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let first = alice.auth().unwrap();
    let second = alice.refresh().await.unwrap();
    assert_ne!(first.refresh_token, second.refresh_token);
    assert_eq!(first.session_id, second.session_id);
    alice.conversations().await.expect("new access token works");
    // Replaying the rotated token is theft: the whole session is revoked.
    assert_api_error(
        srv.anonymous().refresh_with(&first.refresh_token).await,
        401,
        codes::INVALID_REFRESH_TOKEN,
    );
    assert_api_error(alice.conversations().await, 401, codes::UNAUTHORIZED);
    assert_api_error(alice.refresh().await, 401, codes::INVALID_REFRESH_TOKEN);
    assert_api_error(srv.anonymous().refresh_with("garbage").await, 401, codes::INVALID_REFRESH_TOKEN);
}

#[tokio::test]
async fn a_forged_refresh_token_cannot_revoke_someone_elses_session() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    // The session id is no secret (it is in every access token), the token secret is.
    let forged = format!("{}.not-the-secret", alice.auth().unwrap().session_id);
    assert_api_error(srv.anonymous().refresh_with(&forged).await, 401, codes::INVALID_REFRESH_TOKEN);
    alice.conversations().await.expect("the session is untouched");
    alice.refresh().await.expect("and its real refresh token still works");
}

#[tokio::test]
async fn sessions_list_and_revoke_others() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let b = srv.second_device(&alice).await;
    let c = srv.second_device(&alice).await;
    let sessions = alice.sessions().await.unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
    assert!(sessions.iter().all(|s| s.user_agent.as_deref().unwrap_or("").starts_with("chattr-client/")));
    assert_eq!(alice.revoke_other_sessions().await.unwrap(), 2);
    assert_api_error(b.conversations().await, 401, codes::UNAUTHORIZED);
    assert_api_error(c.conversations().await, 401, codes::UNAUTHORIZED);
    assert_eq!(alice.sessions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn revoked_session_socket_is_closed_within_a_second() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let phone = srv.second_device(&alice).await;
    let (mut phone_ws, _) = phone.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut phone_ws).await;
    let (mut laptop_ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut laptop_ws).await;
    let started = std::time::Instant::now();
    alice.revoke_session(phone.auth().unwrap().session_id).await.unwrap();
    let revoked = wait_for(&mut phone_ws, |f| match f {
        ServerFrame::SessionRevoked { session_id } => Some(*session_id),
        _ => None,
    })
    .await;
    assert_eq!(revoked, phone.auth().unwrap().session_id);
    assert_eq!(wait_closed(&mut phone_ws).await, close_codes::SESSION_REVOKED);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    // The other device's socket is untouched.
    laptop_ws.send(&chattr_api::v1::ClientFrame::Ping { req_id: Some("p".into()) }).await.unwrap();
    wait_for(&mut laptop_ws, |f| matches!(f, ServerFrame::Pong { .. }).then_some(())).await;
}

#[tokio::test]
async fn login_is_rate_limited_per_username_with_retry_after() {
    let srv = TestServer::start_with(|s| {
        s.auth.login_per_username_per_minute = 3;
    })
    .await;
    let alice = srv.user("alice").await;
    let username = alice.me().unwrap().username;
    for _ in 0..3 {
        assert_api_error(
            srv.anonymous().login(&username, "bad password").await,
            401,
            codes::INVALID_CREDENTIALS,
        );
    }
    match srv.anonymous().login(&username, PASSWORD).await {
        Err(ClientError::Api { status: 429, code, retry_after, .. }) => {
            assert_eq!(code, codes::RATE_LIMITED);
            let secs = retry_after.expect("Retry-After header");
            assert!((1..=60).contains(&secs), "retry after {secs}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // Another username is not affected.
    let bob = srv.user("bob").await;
    srv.anonymous().login(&bob.me().unwrap().username, PASSWORD).await.unwrap();
}

#[tokio::test]
async fn login_is_rate_limited_per_ip() {
    let srv = TestServer::start_with(|s| {
        s.auth.login_per_ip_per_minute = 4;
    })
    .await;
    for _ in 0..4 {
        assert_api_error(
            srv.anonymous().login(&name("ghost"), PASSWORD).await,
            401,
            codes::INVALID_CREDENTIALS,
        );
    }
    assert_api_error(srv.anonymous().login(&name("ghost"), PASSWORD).await, 429, codes::RATE_LIMITED);
}

#[tokio::test]
async fn malformed_auth_bodies_get_stable_codes() {
    let srv = TestServer::start().await;
    let c = srv.anonymous();
    let err = c.request_raw(Method::POST, "/v1/auth/signup", Some(b"{not json".to_vec())).await;
    assert_api_error(err, 400, codes::BAD_REQUEST);
    let err = c
        .request_raw(Method::POST, "/v1/auth/login", Some(br#"{"username": 5, "password": []}"#.to_vec()))
        .await;
    assert_api_error(err, 400, codes::BAD_REQUEST);
    let huge = format!(r#"{{"username":"a","password":"{}"}}"#, "x".repeat(200_000));
    let err = c.request_raw(Method::POST, "/v1/auth/login", Some(huge.into_bytes())).await;
    assert_api_error(err, 413, codes::TOO_LARGE);
}

#[tokio::test]
async fn connecting_a_socket_updates_last_seen() {
    // Written on every connection when the resolution is 0.
    let srv = TestServer::start_with(|s| s.auth.last_seen_every_secs = 0).await;
    let alice = srv.user("alice").await;
    let before = alice.sessions().await.unwrap()[0].last_seen_at;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    let after = alice.sessions().await.unwrap()[0].last_seen_at;
    assert!(after > before, "{before} -> {after}");

    // By default at most once a minute: a connection right after signing up reads the
    // session but does not write it.
    let srv = TestServer::start().await;
    let bob = srv.user("bob").await;
    let before = bob.sessions().await.unwrap()[0].last_seen_at;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (mut ws, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    assert_eq!(bob.sessions().await.unwrap()[0].last_seen_at, before);
}

#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    for trusted in [false, true] {
        let srv = TestServer::start_with(|s| {
            s.auth.login_per_ip_per_minute = 2;
            s.gateway.trust_forwarded_for = trusted;
        })
        .await;
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for i in 0..3 {
            let resp = http
                .post(format!("{}/v1/auth/login", srv.url))
                .header("x-forwarded-for", format!("203.0.113.9, 10.0.0.{i}"))
                .json(&serde_json::json!({"username": name("ghost"), "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            statuses.push(resp.status().as_u16());
        }
        // Trusted: three different client IPs, none limited. Untrusted: one peer IP, limited.
        let expected = if trusted { vec![401, 401, 401] } else { vec![401, 401, 429] };
        assert_eq!(statuses, expected, "trusted = {trusted}");
    }
}
