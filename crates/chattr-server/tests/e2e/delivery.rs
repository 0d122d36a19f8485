//! The delivery guarantees: resume without loss or duplicates, resync, idempotent retry
//! after a lost ack, order under concurrency, bounded queues for slow clients.

use std::collections::{BTreeMap, HashMap};

use chattr_api::v1::{close_codes, ClientFrame, ServerFrame};
use chattr_client::{Live, LiveEvent};
use uuid::Uuid;

use crate::harness::*;

fn message_seq(f: &ServerFrame) -> Option<u64> {
    match f {
        ServerFrame::Message { message } => Some(message.seq),
        _ => None,
    }
}

/// The first `resync` among `frames`: (conversation, last_seq).
fn resync_in(frames: &[ServerFrame]) -> Option<(Uuid, u64)> {
    frames.iter().find_map(|f| match f {
        ServerFrame::Resync { conversation_id, last_seq } => Some((*conversation_id, *last_seq)),
        _ => None,
    })
}

#[tokio::test]
async fn resume_after_a_dropped_socket_replays_exactly_what_was_missed() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    for i in 1..=3 {
        alice.send(conv.id, &format!("a{i}"), &format!("before {i}")).await.unwrap();
    }
    let (mut ws, _) = bob.connect(BTreeMap::from([(conv.id, 0)])).await.unwrap();
    let replayed: Vec<u64> = until_synced(&mut ws).await.iter().filter_map(message_seq).collect();
    assert_eq!(replayed, vec![1, 2, 3]);
    ws.close().await;
    // While bob is away…
    for i in 4..=10 {
        alice.send(conv.id, &format!("a{i}"), &format!("missed {i}")).await.unwrap();
    }
    // …he comes back with his cursor, on a new socket.
    let (mut ws, ready) = bob.connect(BTreeMap::from([(conv.id, 3)])).await.unwrap();
    match ready {
        ServerFrame::Ready { conversations, .. } => {
            assert_eq!(conversations.iter().find(|c| c.id == conv.id).unwrap().last_seq, 10)
        }
        other => panic!("{other:?}"),
    }
    let frames = until_synced(&mut ws).await;
    let replayed: Vec<u64> = frames.iter().filter_map(message_seq).collect();
    assert_eq!(replayed, (4..=10).collect::<Vec<_>>());
    // Live continues right after, with no duplicate of the replay.
    alice.send(conv.id, "a11", "live").await.unwrap();
    assert_eq!(wait_for(&mut ws, message_seq).await, 11);
}

#[tokio::test]
async fn too_far_behind_gets_resync() {
    let srv = TestServer::start_with(|s| s.gateway.replay_limit = 5).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    for i in 1..=12 {
        alice.send(conv.id, &format!("k{i}"), "x").await.unwrap();
    }
    let (mut ws, _) = bob.connect(BTreeMap::from([(conv.id, 2)])).await.unwrap();
    let frames = until_synced(&mut ws).await;
    assert!(frames.iter().all(|f| message_seq(f).is_none()), "no partial replay");
    let resync = resync_in(&frames);
    assert_eq!(resync, Some((conv.id, 12)));
    alice.send(conv.id, "k13", "after").await.unwrap();
    assert_eq!(wait_for(&mut ws, message_seq).await, 13);
}

/// A cursor ahead of the store (the database was restored from an older backup, so seqs
/// the client saw will be handed out again) gets `resync` with the store's position, and
/// the messages that reuse those seqs are delivered, to a raw socket and to `Live`.
#[tokio::test]
async fn a_cursor_ahead_of_the_store_gets_resync_and_then_the_reused_seqs() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    for i in 1..=3 {
        alice.send(conv.id, &format!("r{i}"), "kept").await.unwrap();
    }
    // Bob had seen up to 9 before the restore.
    let (mut ws, _) = bob.connect(BTreeMap::from([(conv.id, 9)])).await.unwrap();
    let frames = until_synced(&mut ws).await;
    let resync = resync_in(&frames);
    assert_eq!(resync, Some((conv.id, 3)), "{frames:?}");
    alice.send(conv.id, "r4", "after the restore").await.unwrap();
    assert_eq!(wait_for(&mut ws, message_seq).await, 4);

    let mut live = Live::start(bob.clone(), BTreeMap::from([(conv.id, 9)])).await.unwrap();
    alice.send(conv.id, "r5", "seen by live").await.unwrap();
    let mut events = Vec::new();
    loop {
        match within(live.next()).await {
            Some(LiveEvent::Resync { conversation_id, last_seq }) => events.push((conversation_id, last_seq)),
            Some(LiveEvent::Message(m)) => {
                assert_eq!(m.seq, 5, "the first message past the store's position is not dropped");
                break;
            }
            Some(LiveEvent::Closed(r)) => panic!("closed: {r}"),
            _ => {}
        }
    }
    assert_eq!(events.first().map(|e| e.0), Some(conv.id), "live told its caller to reload");
}

#[tokio::test]
async fn retrying_a_send_after_a_lost_ack_creates_one_message() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    let send = ClientFrame::Send {
        req_id: "1".into(),
        conversation_id: conv.id,
        client_msg_id: "once".into(),
        body: "only once".into(),
    };
    ws.send(&send).await.unwrap();
    // The connection dies before the ack is read.
    ws.close().await;
    let (mut ws, _) = alice.connect(BTreeMap::new()).await.unwrap();
    until_synced(&mut ws).await;
    ws.send(&send).await.unwrap();
    let acked = wait_for(&mut ws, |f| match f {
        ServerFrame::Ack { message, .. } => Some(message.clone()),
        _ => None,
    })
    .await;
    let history = bob.history(conv.id, None, None, None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0], acked);
}

#[tokio::test]
async fn live_client_heals_itself_and_delivers_everything_once() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let mut live = Live::start(bob.clone(), BTreeMap::new()).await.unwrap();
    let mut seen = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            alice.send(conv.id, &format!("r{round}m{i}"), &format!("{round}/{i}")).await.unwrap();
        }
        live.drop_socket().await;
        for i in 5..10 {
            alice.send(conv.id, &format!("r{round}m{i}"), &format!("{round}/{i}")).await.unwrap();
        }
        while seen.len() < (round + 1) * 10 {
            match within(live.next()).await {
                Some(LiveEvent::Message(m)) => seen.push(m.seq),
                Some(LiveEvent::Closed(r)) => panic!("closed: {r}"),
                _ => {}
            }
        }
    }
    assert_eq!(seen, (1..=30).collect::<Vec<u64>>());
    // Sends through the healing connection are acked once, even across a drop.
    let sent = live.send(conv.id, "from bob").await.unwrap();
    assert_eq!(sent.seq, 31);
}

#[tokio::test]
async fn concurrent_senders_into_one_group_everyone_gets_everything_in_order() {
    const N: usize = 5;
    const M: usize = 30;
    let srv = TestServer::start().await;
    let owner = srv.user("owner").await;
    let mut clients = vec![owner.clone()];
    for _ in 1..N {
        clients.push(srv.user("member").await);
    }
    let ids: Vec<Uuid> = clients[1..].iter().map(|c| c.me().unwrap().id).collect();
    let group = owner.group("busy", &ids).await.unwrap();
    let mut lives = Vec::new();
    for c in &clients {
        lives.push(Live::start(c.clone(), BTreeMap::from([(group.id, 0)])).await.unwrap());
    }
    let senders: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            tokio::spawn(async move {
                let live = Live::start(c, BTreeMap::new()).await.unwrap();
                for i in 0..M {
                    live.send(group.id, &format!("msg {i}")).await.unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        within(s).await.unwrap();
    }
    let history = {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = owner.history(group.id, Some(after), None, Some(100)).await.unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().unwrap().seq;
            all.extend(page);
        }
        all
    };
    assert_eq!(history.len(), N * M);
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=(N * M) as u64).collect::<Vec<_>>());
    let by_seq: HashMap<u64, Uuid> = history.iter().map(|m| (m.seq, m.id)).collect();
    for live in &mut lives {
        let mut got = Vec::new();
        while got.len() < N * M {
            if let Some(LiveEvent::Message(m)) = within(live.next()).await {
                assert_eq!(by_seq[&m.seq], m.id, "delivery agrees with history");
                got.push(m.seq);
            }
        }
        assert_eq!(got, (1..=(N * M) as u64).collect::<Vec<_>>(), "exactly once, in order");
    }
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_resumably_and_loses_nothing() {
    let srv = TestServer::start_with(|s| {
        s.gateway.queue_capacity = 8;
        // Everything missed must be replayable here (no resync), to check none is lost.
        s.gateway.replay_limit = 100_000;
    })
    .await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let bob_id = bob.me().unwrap().id;
    let conv = alice.direct(bob_id).await.unwrap();
    let (mut slow, _) = bob.connect(BTreeMap::from([(conv.id, 0)])).await.unwrap();
    until_synced(&mut slow).await;
    // Bob stops reading. Alice sends until the server gives up on his socket (his presence
    // drops), however large the kernel's socket buffers are.
    let body = "z".repeat(4000);
    let mut total = 0u64;
    // How many sends that takes depends on the kernel's socket buffers, and their speed on
    // the shape (a distributed send crosses gRPC and PostgreSQL): a wide bound, not a timing.
    let wide = std::time::Duration::from_secs(120);
    tokio::time::timeout(wide, async {
        loop {
            for _ in 0..50 {
                total += 1;
                alice.send(conv.id, &format!("k{total}"), &body).await.unwrap();
            }
            if !alice.presence(&[bob_id]).await.unwrap()[0].online {
                return;
            }
            assert!(total < 50_000, "the slow socket was never disconnected");
        }
    })
    .await
    .expect("the slow socket was disconnected in time");
    // Bob reads what reached him: in order, then the end of the socket.
    let mut last = 0;
    within(async {
        loop {
            match slow.next().await {
                Ok(ServerFrame::Message { message }) => {
                    assert_eq!(message.seq, last + 1);
                    last = message.seq;
                }
                Ok(_) => {}
                Err(chattr_client::ClientError::Closed { code, .. }) => {
                    assert!([close_codes::SLOW_CONSUMER, 1006].contains(&code), "close code {code}");
                    return;
                }
                Err(chattr_client::ClientError::Transport(_)) => return,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(last < total);
    // Resume from the cursor: the rest arrives, once each, in order. Fan-out may still be
    // working through the burst (in the distributed shape it trails by a pipeline), and
    // its late deliveries can overflow this tiny queue again: then the socket is closed
    // resumably once more, and the client resumes again from where it got to, as real
    // clients do.
    let mut cursor = last;
    let mut rest = Vec::new();
    within(async {
        loop {
            // The backlog can overflow the queue even before `ready`: reconnect, as above.
            let (mut ws, _) = match bob.connect(BTreeMap::from([(conv.id, cursor)])).await {
                Ok(connected) => connected,
                Err(chattr_client::ClientError::Closed { code: close_codes::SLOW_CONSUMER, .. }) => continue,
                Err(e) => panic!("{e}"),
            };
            loop {
                match ws.next().await {
                    Ok(ServerFrame::Message { message }) if message.conversation_id == conv.id => {
                        assert_eq!(message.seq, cursor + 1, "in order, nothing skipped or repeated");
                        cursor = message.seq;
                        rest.push(message.seq);
                    }
                    Ok(ServerFrame::Synced) if cursor == total => return,
                    Ok(_) => {}
                    Err(chattr_client::ClientError::Closed { code, .. }) => {
                        assert_eq!(code, close_codes::SLOW_CONSUMER, "only a resumable close");
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    })
    .await;
    assert_eq!(rest, ((last + 1)..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn reconnecting_while_messages_flow_loses_and_repeats_nothing() {
    // Connects happen in the middle of sends, so the subscribe-before-snapshot window is
    // exercised over and over: every message must still arrive exactly once, in order.
    const TOTAL: u64 = 200;
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let mut live = Live::start(bob.clone(), BTreeMap::from([(conv.id, 0)])).await.unwrap();
    let sender = alice.clone();
    let sending = tokio::spawn(async move {
        for i in 0..TOTAL {
            sender.send(conv.id, &format!("k{i}"), &format!("m{i}")).await.unwrap();
        }
    });
    let mut seen = Vec::new();
    let mut drops = 0;
    while (seen.len() as u64) < TOTAL {
        match within(live.next()).await {
            Some(LiveEvent::Message(m)) => {
                seen.push(m.seq);
                if seen.len() % 7 == 0 {
                    live.drop_socket().await;
                    drops += 1;
                }
            }
            Some(LiveEvent::Closed(r)) => panic!("closed: {r}"),
            _ => {}
        }
    }
    within(sending).await.unwrap();
    assert!(drops > 10);
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_conversation_joined_while_connected_survives_a_reconnect() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let mut live = Live::start(bob.clone(), BTreeMap::new()).await.unwrap();
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    within(async {
        loop {
            if let Some(LiveEvent::Frame(ServerFrame::Conversation { conversation })) = live.next().await {
                if conversation.id == conv.id {
                    return;
                }
            }
        }
    })
    .await;
    // The socket drops before any message of the new conversation was seen.
    live.drop_socket().await;
    for i in 1..=3 {
        alice.send(conv.id, &format!("k{i}"), &format!("m{i}")).await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        match within(live.next()).await {
            Some(LiveEvent::Message(m)) => seqs.push(m.seq),
            Some(LiveEvent::Closed(r)) => panic!("closed: {r}"),
            _ => {}
        }
    }
    assert_eq!(seqs, vec![1, 2, 3]);
}
