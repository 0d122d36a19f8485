//! The same server on the production store and cache: PostgreSQL and Redis, started for
//! real by the test kit. One process still (the Kafka bus and gRPC come later).

use std::collections::BTreeMap;

use chattr_api::v1::{close_codes, ServerFrame};
use chattr_server::{Server, Settings};

use crate::harness::*;

async fn boot(settings: &Settings) -> (Server, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = within(Server::start(settings.clone(), listener)).await.expect("server starts");
    let url = format!("http://{}", server.addr());
    (server, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_on_postgres_and_redis_with_resume_revoke_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    settings.store = Some(chattr_testkit::postgres::fresh_database_url().await);
    settings.cache = chattr_testkit::redis::shared().url();
    let (server, url) = boot(&settings).await;

    let alice = chattr_client::Client::new(&url).unwrap();
    alice.signup(&name("pg_alice"), PASSWORD).await.unwrap();
    let bob = chattr_client::Client::new(&url).unwrap();
    bob.signup(&name("pg_bob"), PASSWORD).await.unwrap();
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();

    // Live delivery through Redis pub/sub, in order.
    let (mut ws, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    for i in 1..=20 {
        alice.send(conv.id, &format!("k{i}"), &format!("m{i}")).await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 20 {
        if let Some(seq) = wait_for(&mut ws, |f| match f {
            ServerFrame::Message { message } => Some(Some(message.seq)),
            _ => Some(None),
        })
        .await
        {
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    ws.close().await;

    // Resume from PostgreSQL after missing five.
    for i in 21..=25 {
        alice.send(conv.id, &format!("k{i}"), &format!("m{i}")).await.unwrap();
    }
    let (mut ws, _) = bob.connect(BTreeMap::from([(conv.id, 20)])).await.unwrap();
    let replay: Vec<u64> = until_synced(&mut ws)
        .await
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect();
    assert_eq!(replay, (21..=25).collect::<Vec<_>>());

    // Revoking the session closes its socket (event through the bus and Redis).
    let other = chattr_client::Client::new(&url).unwrap();
    other.login(&bob.me().unwrap().username, PASSWORD).await.unwrap();
    other.revoke_session(bob.auth().unwrap().session_id).await.unwrap();
    assert_eq!(wait_closed(&mut ws).await, close_codes::SESSION_REVOKED);

    // Everything durable is in PostgreSQL: a new process sees it.
    within(server.shutdown()).await;
    let (server, url) = boot(&settings).await;
    let again = chattr_client::Client::new(&url).unwrap();
    again.login(&alice.me().unwrap().username, PASSWORD).await.unwrap();
    let history = again.history(conv.id, None, None, Some(100)).await.unwrap();
    assert_eq!(history.len(), 25);
    assert_eq!(again.send(conv.id, "k26", "after restart").await.unwrap().0.seq, 26);
    within(server.shutdown()).await;
}
