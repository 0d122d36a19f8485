//! Everything durable survives a restart on the same data directory.

use std::collections::BTreeMap;

use chattr_client::Client;

use crate::harness::*;

#[tokio::test]
async fn accounts_sessions_conversations_and_messages_survive_restart() {
    let mut srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let group = alice.group("kept", &[bob.me().unwrap().id]).await.unwrap();
    for i in 1..=5 {
        alice.send(conv.id, &format!("k{i}"), &format!("persisted {i}")).await.unwrap();
    }
    let (m, _) = bob.send(group.id, "g1", "in the group").await.unwrap();
    bob.edit(group.id, m.id, "edited in the group").await.unwrap();
    bob.mark_read(conv.id, 3).await.unwrap();
    let bob_tokens = bob.auth().unwrap();
    // A socket open during shutdown is told to come back (1001, resumable).
    let (mut open_ws, _) = bob.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut open_ws).await;
    let closed = tokio::spawn(async move { wait_closed(&mut open_ws).await });

    srv.restart().await;
    assert_eq!(within(closed).await.unwrap(), chattr_api::v1::close_codes::GOING_AWAY);

    // Passwords still work.
    let alice2 = Client::new(&srv.url).unwrap();
    alice2.login(&alice.me().unwrap().username, PASSWORD).await.unwrap();
    // Bob's session survives: his access token and refresh token still work.
    let bob2 = Client::new(&srv.url).unwrap();
    bob2.set_auth(bob_tokens);
    let list = bob2.conversations().await.unwrap();
    assert_eq!(list.len(), 2);
    let direct = list.iter().find(|c| c.id == conv.id).unwrap();
    assert_eq!((direct.last_seq, direct.read_seq, direct.unread), (5, 3, 2));
    bob2.refresh().await.unwrap();
    let history = bob2.history(conv.id, None, None, None).await.unwrap();
    assert_eq!(
        history.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        (1..=5).map(|i| format!("persisted {i}")).collect::<Vec<_>>()
    );
    assert_eq!(bob2.history(group.id, None, None, None).await.unwrap()[0].body, "edited in the group");
    // Seqs continue where they stopped, and resume works against the new process.
    let (mut ws, _) = bob2.connect(BTreeMap::from([(conv.id, 4)])).await.unwrap();
    let replay = until_synced(&mut ws).await;
    assert_eq!(replay.len(), 1);
    let (next, _) = alice2.send(conv.id, "k6", "after restart").await.unwrap();
    assert_eq!(next.seq, 6);
    let _ = srv.data_dir();
}
