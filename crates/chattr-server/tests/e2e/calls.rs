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
