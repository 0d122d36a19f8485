//! The WebSocket protocol: authentication, bad input, live events, multi-device.

use std::collections::BTreeMap;

use chattr_api::v1::{close_codes, codes, ClientFrame, ServerFrame};
use chattr_client::Connection;
use url::Url;

use crate::harness::*;

fn error_code(f: &ServerFrame) -> Option<(Option<String>, String)> {
    match f {
        ServerFrame::Error { req_id, code, .. } => Some((req_id.clone(), code.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn the_first_frame_must_authenticate() {
    let srv = TestServer::start().await;
    let base = Url::parse(&srv.url).unwrap();
    let mut ws = Connection::open(&base).await.unwrap();
    ws.send(&ClientFrame::Ping { req_id: None }).await.unwrap();
    let (_, code) = wait_for(&mut ws, error_code).await;
    assert_eq!(code, codes::NOT_AUTHENTICATED);
    assert_eq!(wait_closed(&mut ws).await, close_codes::UNAUTHORIZED);

    let mut ws = Connection::open(&base).await.unwrap();
    ws.send(&ClientFrame::Auth { token: "forged.token.here".into(), cursors: BTreeMap::new() })
        .await
        .unwrap();
    let (_, code) = wait_for(&mut ws, error_code).await;
    assert_eq!(code, codes::UNAUTHORIZED);
    assert_eq!(wait_closed(&mut ws).await, close_codes::UNAUTHORIZED);

    let mut ws = Connection::open(&base).await.unwrap();
    ws.send_text("{oops".into()).await.unwrap();
    let (_, code) = wait_for(&mut ws, error_code).await;
    assert_eq!(code, codes::BAD_REQUEST);
    assert_eq!(wait_closed(&mut ws).await, close_codes::UNAUTHORIZED);
}

#[tokio::test]
async fn silent_sockets_are_closed_after_the_auth_timeout() {
    let srv = TestServer::start_with(|s| s.gateway.auth_timeout_secs = 1).await;
    let mut ws = Connection::open(&Url::parse(&srv.url).unwrap()).await.unwrap();
    assert_eq!(wait_closed(&mut ws).await, close_codes::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_frames_get_errors_and_nothing_breaks() {
    let srv = TestServer::start_with(|s| s.gateway.max_frame_bytes = 1024).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let (mut bob_ws, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut bob_ws).await;
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;

    ws.send_text("{not json".into()).await.unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await.1, codes::BAD_REQUEST);
    ws.send_text(r#"{"type":"dance","req_id":"r0"}"#.into()).await.unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await, (Some("r0".into()), codes::UNKNOWN_TYPE.into()));
    ws.send_text(
        r#"{"type":"send","req_id":"r1","conversation_id":42,"client_msg_id":"x","body":"b"}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await, (Some("r1".into()), codes::BAD_REQUEST.into()));
    ws.send_text(format!(
        r#"{{"type":"send","req_id":"r2","conversation_id":"{}","client_msg_id":"x","body":"{}"}}"#,
        conv.id,
        "y".repeat(2000)
    ))
    .await
    .unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await.1, codes::TOO_LARGE);
    ws.send_binary(vec![1, 2, 3]).await.unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await.1, codes::BAD_REQUEST);
    ws.send(&ClientFrame::Auth { token: "again".into(), cursors: BTreeMap::new() }).await.unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await.1, codes::BAD_REQUEST);
    ws.send(&ClientFrame::Send {
        req_id: "r3".into(),
        conversation_id: uuid::Uuid::now_v7(),
        client_msg_id: "x".into(),
        body: "to nowhere".into(),
    })
    .await
    .unwrap();
    assert_eq!(wait_for(&mut ws, error_code).await, (Some("r3".into()), codes::NOT_FOUND.into()));

    // The same socket still works, and so does everyone else's.
    ws.send(&ClientFrame::Send {
        req_id: "ok".into(),
        conversation_id: conv.id,
        client_msg_id: "good".into(),
        body: "still here".into(),
    })
    .await
    .unwrap();
    let acked = wait_for(&mut ws, |f| match f {
        ServerFrame::Ack { req_id, message } if req_id == "ok" => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!(acked.seq, 1);
    let got = wait_for(&mut bob_ws, |f| match f {
        ServerFrame::Message { message } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, acked);
    assert_eq!(
        alice.history(conv.id, None, None, None).await.unwrap().len(),
        1,
        "no bad frame stored anything"
    );
}

#[tokio::test]
async fn oversized_websocket_messages_close_with_1009_and_others_are_unaffected() {
    let srv = TestServer::start_with(|s| s.gateway.max_ws_message_bytes = 8 * 1024).await;
    let alice = srv.user("alice").await;
    let (mut other, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut other).await;
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    ws.send_text("x".repeat(64 * 1024)).await.unwrap();
    assert_eq!(wait_closed(&mut ws).await, close_codes::TOO_LARGE);
    other.send(&ClientFrame::Ping { req_id: Some("p".into()) }).await.unwrap();
    wait_for(&mut other, |f| matches!(f, ServerFrame::Pong { .. }).then_some(())).await;
}

/// Sends 200 frames as fast as possible on a socket allowed 1/s (burst 5) and checks the
/// server refuses some, then closes the socket as a flood.
async fn assert_flood_is_closed(frame: impl Fn(usize) -> String) {
    let srv = TestServer::start_with(|s| {
        s.gateway.frames_per_second = 1;
        s.gateway.frame_burst = 5;
    })
    .await;
    let alice = srv.user("alice").await;
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    for i in 0..200 {
        if ws.send_text(frame(i)).await.is_err() {
            break;
        }
    }
    let mut limited = 0;
    let code = within(async {
        loop {
            match ws.next().await {
                Ok(ServerFrame::Error { code, .. }) if code == codes::RATE_LIMITED => limited += 1,
                Ok(_) => {}
                Err(chattr_client::ClientError::Closed { code, .. }) => return code,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(limited > 0);
    assert_eq!(code, close_codes::FLOOD);
}

#[tokio::test]
async fn floods_are_refused_then_closed() {
    assert_flood_is_closed(|i| format!(r#"{{"type":"ping","req_id":"p{i}"}}"#)).await;
}

#[tokio::test]
async fn floods_of_invalid_frames_are_limited_too() {
    assert_flood_is_closed(|_| "{".to_owned()).await;
}

#[tokio::test]
async fn live_events_reach_members_and_every_device() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let alice_phone = srv.second_device(&alice).await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let (mut a1, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut a1).await;
    let (mut a2, _) = alice_phone.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut a2).await;
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut b).await;

    a1.send(&ClientFrame::Send {
        req_id: "1".into(),
        conversation_id: conv.id,
        client_msg_id: "m1".into(),
        body: "hi bob".into(),
    })
    .await
    .unwrap();
    let msg = |f: &ServerFrame| match f {
        ServerFrame::Message { message } => Some(message.clone()),
        _ => None,
    };
    let on_phone = wait_for(&mut a2, msg).await;
    let on_bob = wait_for(&mut b, msg).await;
    let on_sender = wait_for(&mut a1, msg).await;
    assert_eq!(on_phone.body, "hi bob");
    assert_eq!(on_phone, on_bob);
    assert_eq!(on_phone, on_sender);

    // Typing reaches the other member, not the typist.
    b.send(&ClientFrame::Typing { conversation_id: conv.id }).await.unwrap();
    let typist = wait_for(&mut a1, |f| match f {
        ServerFrame::Typing { user_id, .. } => Some(*user_id),
        _ => None,
    })
    .await;
    assert_eq!(typist, bob.me().unwrap().id);

    // Edits, deletes and reads are live too.
    bob.edit(conv.id, on_bob.id, "nope").await.expect_err("not bob's");
    alice.edit(conv.id, on_bob.id, "hi Bob").await.unwrap();
    let edited = wait_for(&mut b, |f| match f {
        ServerFrame::MessageEdited { message } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!(edited.body, "hi Bob");
    alice.delete(conv.id, on_bob.id).await.unwrap();
    let deleted = wait_for(&mut b, |f| match f {
        ServerFrame::MessageDeleted { message } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert!(deleted.deleted);
    b.send(&ClientFrame::Read { req_id: Some("r".into()), conversation_id: conv.id, seq: 1 }).await.unwrap();
    wait_for(&mut b, |f| matches!(f, ServerFrame::Ok { req_id } if req_id == "r").then_some(())).await;
    let read = wait_for(&mut a2, |f| match f {
        ServerFrame::Read { user_id, seq, .. } => Some((*user_id, *seq)),
        _ => None,
    })
    .await;
    assert_eq!(read, (bob.me().unwrap().id, 1));
}

#[tokio::test]
async fn new_conversations_and_membership_changes_are_pushed() {
    let srv = TestServer::start().await;
    let owner = srv.user("owner").await;
    let bob = srv.user("bob").await;
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut b).await;
    let group = owner.group("Pushed", &[bob.me().unwrap().id]).await.unwrap();
    let pushed = wait_for(&mut b, |f| match f {
        ServerFrame::Conversation { conversation } => Some(conversation.clone()),
        _ => None,
    })
    .await;
    assert_eq!(pushed.id, group.id);
    assert_eq!(pushed.title.as_deref(), Some("Pushed"));
    // A message in the brand-new conversation arrives live.
    owner.send(group.id, "k", "welcome").await.unwrap();
    let m = wait_for(&mut b, |f| match f {
        ServerFrame::Message { message } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!(m.body, "welcome");
    owner.remove_member(group.id, bob.me().unwrap().id).await.unwrap();
    let removed = wait_for(&mut b, |f| match f {
        ServerFrame::ConversationRemoved { conversation_id } => Some(*conversation_id),
        _ => None,
    })
    .await;
    assert_eq!(removed, group.id);
}

#[tokio::test]
async fn presence_is_shared_with_contacts_only() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let stranger = srv.user("stranger").await;
    let bob_id = bob.me().unwrap().id;
    alice.direct(bob_id).await.unwrap();
    let (mut a, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut a).await;
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut b).await;
    let online = wait_for(&mut a, |f| match f {
        ServerFrame::Presence { user_id, online, .. } if *user_id == bob_id => Some(*online),
        _ => None,
    })
    .await;
    assert!(online);
    let p = alice.presence(&[bob_id]).await.unwrap();
    assert!(p[0].online);
    assert!(stranger.presence(&[bob_id]).await.unwrap().is_empty(), "strangers see nothing");
    b.close().await;
    let (online, last_seen) = wait_for(&mut a, |f| match f {
        ServerFrame::Presence { user_id, online, last_seen_at } if *user_id == bob_id => {
            Some((*online, *last_seen_at))
        }
        _ => None,
    })
    .await;
    assert!(!online);
    assert!(last_seen.is_some());
    let p = alice.presence(&[bob_id]).await.unwrap();
    assert!(!p[0].online && p[0].last_seen_at.is_some());
}

#[tokio::test]
async fn heartbeats_carry_latest_seqs() {
    let srv = TestServer::start_with(|s| s.gateway.heartbeat_secs = 1).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    alice.send(conv.id, "k1", "one").await.unwrap();
    alice.send(conv.id, "k2", "two").await.unwrap();
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    let latest = wait_for(&mut b, |f| match f {
        ServerFrame::Heartbeat { latest } => Some(latest.clone()),
        _ => None,
    })
    .await;
    assert_eq!(latest.get(&conv.id), Some(&2));
}

/// A session revoked without its event reaching the gateway (written straight into the
/// database here, as if the event were lost) is still closed: the heartbeat checks it.
/// Two sockets of two users on the same gateway share the batched check; only the revoked
/// one closes.
#[tokio::test]
async fn a_session_revoked_behind_the_gateways_back_is_closed_at_a_heartbeat() {
    let srv = TestServer::start_with(|s| s.gateway.heartbeat_secs = 1).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let (mut a, _) = alice.connect(BTreeMap::new()).await.unwrap();
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    let session = alice.auth().unwrap().session_id;
    let url = srv.settings.store_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}")).await.unwrap();
        sqlx::query("UPDATE sessions SET revoked = 1 WHERE id = ?")
            .bind(session.hyphenated().to_string())
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("UPDATE sessions SET revoked = true WHERE id = $1::uuid")
            .bind(session.to_string())
            .execute(&pool)
            .await
            .unwrap();
    }
    assert_eq!(wait_closed(&mut a).await, close_codes::SESSION_REVOKED);
    // Bob's socket lives on through heartbeats of its own.
    for _ in 0..2 {
        wait_for(&mut b, |f| matches!(f, ServerFrame::Heartbeat { .. }).then_some(())).await;
    }
}

#[tokio::test]
async fn cross_site_websocket_upgrades_are_refused() {
    let srv = TestServer::start().await;
    let url = format!("{}/v1/ws", srv.url.replace("http://", "ws://"));
    let mut req = tokio_tungstenite_request(&url);
    req.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.expect_err("must be refused");
    assert!(err.to_string().contains("403"), "{err}");
}

fn tokio_tungstenite_request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    url.into_client_request().unwrap()
}

#[tokio::test]
async fn a_client_that_goes_silent_is_closed_after_three_heartbeats() {
    let srv = TestServer::start_with(|s| s.gateway.heartbeat_secs = 1).await;
    let alice = srv.user("alice").await;
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    // Not reading means not answering the server's pings either.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    assert_eq!(wait_closed(&mut ws).await, close_codes::IDLE);
}
