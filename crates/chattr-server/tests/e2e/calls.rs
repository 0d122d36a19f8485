//! `GET /v1/calls/ice-servers`: TURN credentials a real coturn accepts, for signed-in
//! users only.

use reqwest::Method;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_carry_turn_credentials_that_coturn_accepts() {
    let secret = "turn-shared-secret-for-the-test";
    let turn = tokio::task::block_in_place(|| chattr_testkit::coturn::TurnServer::start(secret));
    let turn_url = turn.url();
    let srv = TestServer::start_with(|s| {
        s.video.turn_urls = vec![turn_url.clone(), format!("{turn_url}?transport=tcp")];
        s.video.turn_secret = Some(secret.to_owned().into());
    })
    .await;
    let anonymous = srv.anonymous().request_raw(Method::GET, "/v1/calls/ice-servers", None).await;
    assert_api_error(anonymous, 401, "unauthorized");

    let alice = srv.user("alice").await;
    let (status, list): (_, chattr_api::v1::IceServerList) =
        alice.request::<(), _>(Method::GET, "/v1/calls/ice-servers", None).await.unwrap();
    assert_eq!(status.as_u16(), 200);
    let [server] = &list.ice_servers[..] else { panic!("one server expected: {list:?}") };
    assert_eq!(server.urls, vec![turn_url.clone(), format!("{turn_url}?transport=tcp")]);
    let username = server.username.clone().unwrap();
    let credential = server.credential.clone().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.me().unwrap().id.to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + list.ttl_secs + 5, "expiry {expiry}, now {now}");

    // coturn allocates a relay with them, and refuses a tampered or expired credential.
    let allocate = |u: String, c: String| {
        let turn = &turn;
        tokio::task::block_in_place(move || turn.allocates(&u, &c))
    };
    assert!(allocate(username.clone(), credential.clone()), "coturn refused fresh credentials");
    assert!(!allocate(username.clone(), format!("x{credential}")), "a tampered credential");
    let forged = format!("{}:{user}", expiry + 3600);
    assert!(!allocate(forged, credential), "a longer expiry under the same credential");
}

#[tokio::test]
async fn without_turn_there_are_no_ice_servers() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let (_, list): (_, chattr_api::v1::IceServerList) =
        alice.request::<(), _>(Method::GET, "/v1/calls/ice-servers", None).await.unwrap();
    assert!(list.ice_servers.is_empty());
}

// ---- Calls over the WebSocket ----

use std::collections::BTreeMap;

use chattr_api::v1::{codes, Call, CallOutcome, CallState, ClientFrame, ServerFrame, Signal};
use chattr_client::{Client, Connection};
use uuid::Uuid;

const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

async fn socket(client: &Client) -> (Connection, Uuid) {
    let (mut ws, ready) = within(client.connect(BTreeMap::new())).await.unwrap();
    until_synced(&mut ws).await;
    let ServerFrame::Ready { session_id, .. } = ready else { unreachable!() };
    (ws, session_id)
}

fn user_id(client: &Client) -> Uuid {
    client.me().unwrap().id
}

/// The next `call` event (or answer) about `id`, passing `accept`.
async fn call_where(ws: &mut Connection, accept: impl Fn(&Call) -> bool) -> Call {
    wait_for(ws, |f| match f {
        ServerFrame::Call { call, .. } if accept(call) => Some(call.clone()),
        _ => None,
    })
    .await
}

/// Sends a request frame and returns its answer (`call`, `ok` or `error`), skipping events.
async fn request(ws: &mut Connection, frame: ClientFrame, req_id: &str) -> ServerFrame {
    ws.send(&frame).await.unwrap();
    wait_for(ws, |f| match f {
        ServerFrame::Call { req_id: Some(r), .. }
        | ServerFrame::Ok { req_id: r }
        | ServerFrame::Error { req_id: Some(r), .. }
            if r == req_id =>
        {
            Some(f.clone())
        }
        _ => None,
    })
    .await
}

fn error_code(frame: &ServerFrame) -> &str {
    match frame {
        ServerFrame::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn answered_call(frame: ServerFrame) -> Call {
    match frame {
        ServerFrame::Call { call, .. } => call,
        other => panic!("expected a call, got {other:?}"),
    }
}

async fn start(ws: &mut Connection, conversation_id: Uuid) -> Call {
    answered_call(
        request(ws, ClientFrame::CallStart { req_id: "start".into(), conversation_id }, "start").await,
    )
}

async fn answer(ws: &mut Connection, call_id: Uuid) -> Call {
    answered_call(request(ws, ClientFrame::CallAnswer { req_id: "answer".into(), call_id }, "answer").await)
}

async fn signal(ws: &mut Connection, call_id: Uuid, to: Uuid, signal: Signal) -> ServerFrame {
    let frame = ClientFrame::CallSignal { req_id: Some("sig".into()), call_id, to_session_id: to, signal };
    request(ws, frame, "sig").await
}

/// Proves `ws` got no `call_signal` so far: a ping's pong arrives first.
async fn no_signal_pending(ws: &mut Connection) {
    ws.send(&ClientFrame::Ping { req_id: Some("probe".into()) }).await.unwrap();
    wait_for(ws, |f| match f {
        ServerFrame::CallSignal { .. } => panic!("unexpected signal: {f:?}"),
        ServerFrame::Pong { req_id: Some(r) } if r == "probe" => Some(()),
        _ => None,
    })
    .await;
}

/// Waits for the call summary line in the conversation's timeline.
async fn summary(client: &Client, conversation_id: Uuid, call_id: Uuid) -> String {
    within(async {
        loop {
            let page = client.history(conversation_id, None, None, Some(100)).await.unwrap();
            if let Some(m) = page.iter().find(|m| m.client_msg_id == format!("call:{call_id}")) {
                return m.body.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_rings_every_device_connects_one_and_relays_signals_only_to_it() {
    let srv = TestServer::start().await;
    let (alice, bob) = (srv.user("alice").await, srv.user("bob").await);
    let bob_phone = srv.second_device(&bob).await;
    let conv = alice.direct(user_id(&bob)).await.unwrap();
    let (mut a, a_session) = socket(&alice).await;
    let (mut b1, _) = socket(&bob).await;
    let (mut b2, b2_session) = socket(&bob_phone).await;

    let call = start(&mut a, conv.id).await;
    assert_eq!((call.state, call.ringing.clone()), (CallState::Ringing, vec![user_id(&bob)]));
    assert!(!call.group && call.caller_id == user_id(&alice));
    // Both of Bob's devices ring.
    for ws in [&mut b1, &mut b2] {
        let ringing = call_where(ws, |c| c.id == call.id).await;
        assert_eq!(ringing.ringing, vec![user_id(&bob)]);
    }
    // Bob answers on his phone: the call is active there, his laptop stops ringing.
    let active = answer(&mut b2, call.id).await;
    assert_eq!(active.state, CallState::Active);
    assert!(active.ringing.is_empty());
    let stopped = call_where(&mut b1, |c| c.state == CallState::Active).await;
    assert!(stopped.participants.iter().any(|p| p.session_id == b2_session));
    call_where(&mut a, |c| c.state == CallState::Active).await;

    // Signals reach the addressed device only.
    let offer = Signal::Offer { sdp: OFFER.into() };
    assert!(matches!(signal(&mut a, call.id, b2_session, offer.clone()).await, ServerFrame::Ok { .. }));
    let got = wait_for(&mut b2, |f| match f {
        ServerFrame::CallSignal { from_user_id, from_session_id, signal, .. } => {
            Some((*from_user_id, *from_session_id, signal.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(got, (user_id(&alice), a_session, offer));
    no_signal_pending(&mut b1).await;
    let ice = Signal::Ice {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    assert!(matches!(signal(&mut b2, call.id, a_session, ice.clone()).await, ServerFrame::Ok { .. }));
    wait_for(&mut a, |f| matches!(f, ServerFrame::CallSignal { signal, .. } if *signal == ice).then_some(()))
        .await;

    // Muting shows to the others.
    let media =
        ClientFrame::CallMedia { req_id: Some("mute".into()), call_id: call.id, audio: false, video: true };
    assert!(matches!(request(&mut b2, media, "mute").await, ServerFrame::Ok { .. }));
    call_where(&mut a, |c| c.participants.iter().any(|p| p.session_id == b2_session && !p.audio)).await;

    // Hanging up ends a direct call for both, with its summary in the timeline.
    let leave = ClientFrame::CallLeave { req_id: "bye".into(), call_id: call.id };
    assert!(matches!(request(&mut a, leave, "bye").await, ServerFrame::Ok { .. }));
    let ended = call_where(&mut b2, |c| c.state == CallState::Ended).await;
    assert_eq!(ended.outcome, Some(CallOutcome::Completed));
    assert!(ended.participants.is_empty());
    let line = summary(&alice, conv.id, call.id).await;
    assert!(line.starts_with("Call — ") && line.ends_with(" s"), "{line}");
    // The call is gone: signaling into it is refused.
    let late = signal(&mut b2, call.id, a_session, Signal::Offer { sdp: OFFER.into() }).await;
    assert_eq!(error_code(&late), codes::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_see_join_or_signal_and_bad_signals_are_refused() {
    let srv = TestServer::start().await;
    let (alice, bob, eve) = (srv.user("alice").await, srv.user("bob").await, srv.user("eve").await);
    let conv = alice.direct(user_id(&bob)).await.unwrap();
    let (mut a, a_session) = socket(&alice).await;
    let (mut b, b_session) = socket(&bob).await;
    let (mut e, _) = socket(&eve).await;

    // Eve cannot start a call in a conversation she is not in (nor learn it exists).
    let refused =
        request(&mut e, ClientFrame::CallStart { req_id: "s".into(), conversation_id: conv.id }, "s");
    assert_eq!(error_code(&refused.await), codes::NOT_FOUND);
    let call = start(&mut a, conv.id).await;
    answer(&mut b, call.id).await;
    for frame in [
        ClientFrame::CallAnswer { req_id: "x".into(), call_id: call.id },
        ClientFrame::CallDecline { req_id: "x".into(), call_id: call.id },
        ClientFrame::CallLeave { req_id: "x".into(), call_id: call.id },
        ClientFrame::CallSignal {
            req_id: Some("x".into()),
            call_id: call.id,
            to_session_id: a_session,
            signal: Signal::Offer { sdp: OFFER.into() },
        },
        ClientFrame::CallAnswer { req_id: "x".into(), call_id: Uuid::now_v7() },
    ] {
        assert_eq!(error_code(&request(&mut e, frame, "x").await), codes::NOT_FOUND);
    }
    // Nothing about the call reached her.
    e.send(&ClientFrame::Ping { req_id: Some("probe".into()) }).await.unwrap();
    wait_for(&mut e, |f| match f {
        ServerFrame::Call { .. } | ServerFrame::CallSignal { .. } => panic!("leaked to a stranger: {f:?}"),
        ServerFrame::Pong { .. } => Some(()),
        _ => None,
    })
    .await;

    // Participants' signals are validated.
    let bad = [
        Signal::Offer { sdp: "not an sdp".into() },
        Signal::Answer { sdp: format!("v=0\r\n{}", "a".repeat(15 * 1024)) },
        Signal::Ice { candidate: "javascript:alert(1)".into(), sdp_mid: None, sdp_m_line_index: None },
    ];
    for s in bad {
        let answer = signal(&mut a, call.id, b_session, s).await;
        assert!(matches!(error_code(&answer), codes::INVALID_ARGUMENT | codes::TOO_LARGE), "{answer:?}");
    }
    // Only to another participant's device: not to oneself, not to a stranger's session.
    let to_self = signal(&mut a, call.id, a_session, Signal::Offer { sdp: OFFER.into() }).await;
    assert_eq!(error_code(&to_self), codes::FORBIDDEN);
    let to_nobody = signal(&mut a, call.id, Uuid::now_v7(), Signal::Offer { sdp: OFFER.into() }).await;
    assert_eq!(error_code(&to_nobody), codes::FORBIDDEN);
    // Malformed frames get precise errors and the socket stays.
    a.send_text(r#"{"type":"call_signal","call_id":"nope","to_session_id":1,"signal":{}}"#.into())
        .await
        .unwrap();
    wait_for(&mut a, |f| {
        matches!(f, ServerFrame::Error { code, .. } if code == codes::BAD_REQUEST).then_some(())
    })
    .await;
    no_signal_pending(&mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_busy_missed_and_cancelled_calls_end_with_their_summary() {
    let srv = TestServer::start_with(|s| s.video.ring_secs = Some(1)).await;
    let (alice, bob, carol) = (srv.user("alice").await, srv.user("bob").await, srv.user("carol").await);
    let ab = alice.direct(user_id(&bob)).await.unwrap();
    let cb = carol.direct(user_id(&bob)).await.unwrap();
    let (mut a, _) = socket(&alice).await;
    let (mut b, _) = socket(&bob).await;
    let (mut c, _) = socket(&carol).await;

    // Declined.
    let call = start(&mut a, ab.id).await;
    call_where(&mut b, |x| x.id == call.id).await;
    let decline = ClientFrame::CallDecline { req_id: "d".into(), call_id: call.id };
    assert!(matches!(request(&mut b, decline, "d").await, ServerFrame::Ok { .. }));
    let ended = call_where(&mut a, |x| x.id == call.id && x.state == CallState::Ended).await;
    assert_eq!(ended.outcome, Some(CallOutcome::Declined));
    assert_eq!(summary(&alice, ab.id, call.id).await, "Call declined");

    // Missed: nobody answers within the ring time.
    let call = start(&mut a, ab.id).await;
    let ended = call_where(&mut b, |x| x.id == call.id && x.state == CallState::Ended).await;
    assert_eq!(ended.outcome, Some(CallOutcome::Missed));
    assert_eq!(summary(&bob, ab.id, call.id).await, "Missed call");

    // Cancelled: the caller hangs up first.
    let call = start(&mut a, ab.id).await;
    let leave = ClientFrame::CallLeave { req_id: "c".into(), call_id: call.id };
    assert!(matches!(request(&mut a, leave, "c").await, ServerFrame::Ok { .. }));
    assert_eq!(summary(&bob, ab.id, call.id).await, "Cancelled call");

    // Busy: Bob is in a call with Carol, so Alice's call to him ends at once, and he
    // cannot start another one himself.
    let with_carol = start(&mut c, cb.id).await;
    answer(&mut b, with_carol.id).await;
    let call = start(&mut a, ab.id).await;
    let call = if call.state == CallState::Ended {
        call
    } else {
        call_where(&mut a, |x| x.id == call.id && x.state == CallState::Ended).await
    };
    assert_eq!(call.outcome, Some(CallOutcome::Declined));
    let again = request(&mut b, ClientFrame::CallStart { req_id: "b".into(), conversation_id: ab.id }, "b");
    assert_eq!(error_code(&again.await), codes::BUSY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_has_a_cap_and_a_dropped_device_keeps_its_place_only_for_the_grace_period() {
    let srv = TestServer::start_with(|s| {
        s.video.max_participants = Some(3);
        s.video.grace_secs = Some(4);
    })
    .await;
    let users = [srv.user("g0").await, srv.user("g1").await, srv.user("g2").await, srv.user("g3").await];
    let others: Vec<Uuid> = users[1..].iter().map(user_id).collect();
    let group = users[0].group("standup", &others).await.unwrap();
    let mut sockets = Vec::new();
    for u in &users {
        sockets.push(socket(u).await.0);
    }
    let call = start(&mut sockets[0], group.id).await;
    assert!(call.group && call.max_participants == 3);
    assert_eq!(call.ringing.len(), 3);
    answer(&mut sockets[1], call.id).await;
    answer(&mut sockets[2], call.id).await;
    let full =
        request(&mut sockets[3], ClientFrame::CallAnswer { req_id: "f".into(), call_id: call.id }, "f");
    assert_eq!(error_code(&full.await), codes::CALL_FULL);
    // Calling into a conversation with a live call joins it rather than starting another.
    let leave = ClientFrame::CallLeave { req_id: "l".into(), call_id: call.id };
    assert!(matches!(request(&mut sockets[2], leave, "l").await, ServerFrame::Ok { .. }));
    let joined = start(&mut sockets[3], group.id).await;
    assert_eq!((joined.id, joined.participants.len()), (call.id, 3));

    // g1's socket drops and comes back within the grace period: still in the call.
    drop(sockets.remove(1));
    let (mut back, _) = socket(&users[1]).await;
    let rejoined = answer(&mut back, call.id).await;
    assert!(rejoined.participants.iter().any(|p| p.user_id == user_id(&users[1])));
    // g3's socket drops for good: after the grace period it leaves, the call goes on.
    let g3 = user_id(&users[3]);
    call_where(&mut sockets[0], |c| c.participants.iter().any(|p| p.user_id == g3)).await;
    drop(sockets.remove(2));
    let after =
        call_where(&mut sockets[0], |c| c.id == call.id && c.participants.iter().all(|p| p.user_id != g3))
            .await;
    assert_eq!(after.state, CallState::Active);
    assert_eq!(after.participants.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_connects_during_a_call_hears_of_it_after_synced() {
    let srv = TestServer::start().await;
    let (alice, bob, eve) = (srv.user("alice").await, srv.user("bob").await, srv.user("eve").await);
    let conv = alice.direct(user_id(&bob)).await.unwrap();
    eve.direct(user_id(&alice)).await.unwrap();
    let (mut a, _) = socket(&alice).await;
    let call = start(&mut a, conv.id).await;

    // Bob opens the app while Alice's call rings: his new socket rings too.
    let (mut b, _) = within(bob.connect(BTreeMap::new())).await.unwrap();
    until_synced(&mut b).await;
    let ringing = call_where(&mut b, |c| c.id == call.id).await;
    assert_eq!((ringing.state, ringing.ringing.clone()), (CallState::Ringing, vec![user_id(&bob)]));
    // Eve shares a conversation with Alice, not this one: she hears nothing of it.
    let (mut e, _) = within(eve.connect(BTreeMap::new())).await.unwrap();
    until_synced(&mut e).await;
    no_signal_pending(&mut e).await;
    e.send(&ClientFrame::Ping { req_id: Some("p".into()) }).await.unwrap();
    wait_for(&mut e, |f| match f {
        ServerFrame::Call { .. } => panic!("a stranger heard of the call: {f:?}"),
        ServerFrame::Pong { .. } => Some(()),
        _ => None,
    })
    .await;
}
