//! Conformance checks for messages, read positions and the conversation list.

use std::collections::BTreeSet;

use chattr_api::v1::Message;
use chattr_core::events::Event;
use chattr_core::UserId;
use uuid::Uuid;

use super::*;
use crate::{DynStore, MessageChange, StoreError};

/// Seqs are 1..=n per conversation without gaps; the message and event carry them.
pub async fn insert_message_assigns_gapless_seqs(store: DynStore) {
    let [a, b] = [user(&store, "sa").await, user(&store, "sb").await];
    let g = group(&store, &[a, b], 0).await;
    let h = group(&store, &[a, b], 0).await;
    drain(&store).await;
    let new = new_message(g, a, "c1", 100);
    let (first, created) = store.insert_message(&new).await.expect("insert");
    assert!(created);
    let expected = Message {
        id: new.id,
        conversation_id: g,
        seq: 1,
        sender_id: a,
        body: "body c1".into(),
        client_msg_id: "c1".into(),
        created_at: at(100),
        edited_at: None,
        deleted: false,
    };
    assert_eq!(first, expected);
    assert_eq!(drain(&store).await, vec![Event::MessageCreated { message: expected.clone() }]);
    for i in 2..=10 {
        let sender = if i % 2 == 0 { b } else { a };
        assert_eq!(send(&store, g, sender, &format!("c{i}"), 100 + i).await.seq, i as u64);
    }
    assert_eq!(send(&store, h, a, "c1", 200).await.seq, 1, "seqs are per conversation");
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").last_seq, 10);
    assert_eq!(seqs(&store.messages(g, None, None, 100).await.expect("page")), (1..=10).collect::<Vec<_>>());
    assert_eq!(store.message(g, new.id).await.expect("get"), Some(expected));
    // Inserting moves the sender's read position to the new message.
    assert_eq!(store.membership(g, b).await.expect("m").map(|m| m.read_seq), Some(10));
    assert_eq!(store.membership(g, a).await.expect("m").map(|m| m.read_seq), Some(9));
}

/// Only members may post; nothing is written otherwise.
pub async fn insert_message_requires_membership(store: DynStore) {
    let [a, b, c] = [user(&store, "na").await, user(&store, "nb").await, user(&store, "nc").await];
    let g = group(&store, &[a, b], 0).await;
    send(&store, g, b, "x", 1).await;
    drain(&store).await;
    assert!(matches!(store.insert_message(&new_message(g, c, "1", 2)).await, Err(StoreError::NotMember)));
    assert!(matches!(
        store.insert_message(&new_message(Uuid::now_v7(), a, "1", 2)).await,
        Err(StoreError::NotMember)
    ));
    store.remove_member(g, b).await.expect("remove");
    drain(&store).await;
    // A former member cannot post, not even a retry of an earlier send.
    assert!(matches!(store.insert_message(&new_message(g, b, "y", 3)).await, Err(StoreError::NotMember)));
    assert!(matches!(store.insert_message(&new_message(g, b, "x", 3)).await, Err(StoreError::NotMember)));
    assert!(drain(&store).await.is_empty());
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").last_seq, 1, "no seq consumed");
    assert_eq!(send(&store, g, a, "z", 4).await.seq, 2);
}

/// A repeated `(sender, client_msg_id)` returns the original message, unchanged.
pub async fn insert_message_dedupes_client_msg_id(store: DynStore) {
    let [a, b] = [user(&store, "ea").await, user(&store, "eb").await];
    let g = group(&store, &[a, b], 0).await;
    let h = group(&store, &[a, b], 0).await;
    let original = send(&store, g, a, "same", 10).await;
    drain(&store).await;
    let mut retry = new_message(g, a, "same", 20);
    retry.body = "different body".into();
    let (again, created) = store.insert_message(&retry).await.expect("retry");
    assert!(!created);
    assert_eq!(again, original);
    assert!(drain(&store).await.is_empty(), "a retry writes no event");
    // The same key from another sender, or in another conversation, is a new message.
    let from_b = send(&store, g, b, "same", 30).await;
    assert_eq!(from_b.seq, 2);
    assert_ne!(from_b.id, original.id);
    assert_eq!(send(&store, h, a, "same", 40).await.seq, 1);
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").last_seq, 2);
    // Dedupe still holds after the original was deleted.
    store.change_message(g, original.id, &MessageChange::Delete { at: at(50) }).await.expect("delete");
    let (tomb, created) = store.insert_message(&new_message(g, a, "same", 60)).await.expect("retry");
    assert!(!created);
    assert_eq!((tomb.id, tomb.deleted), (original.id, true));
}

/// Concurrent senders into one conversation get seqs 1..=200, each exactly once.
pub async fn concurrent_inserts_get_unique_gapless_seqs(store: DynStore) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let mut senders = Vec::new();
    for i in 0..TASKS {
        senders.push(user(&store, &format!("con{i}")).await);
    }
    let g = group(&store, &senders, 0).await;
    drain(&store).await;
    let mut handles = Vec::new();
    for sender in senders {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for n in 0..PER_TASK {
                let (m, created) = store
                    .insert_message(&new_message(g, sender, &format!("m{n}"), n as i64))
                    .await
                    .expect("insert");
                assert!(created);
                got.push(m.seq);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        let got = handle.await.expect("task");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "one sender's seqs increase: {got:?}");
        all.extend(got);
    }
    let total = (TASKS * PER_TASK) as u64;
    assert_eq!(sorted(all), (1..=total).collect::<Vec<_>>());
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").last_seq, total);
    assert_eq!(
        seqs(&store.messages(g, None, None, 1000).await.expect("page")),
        (1..=total).collect::<Vec<_>>()
    );
    // Outbox holds one message.created per message, in seq order.
    let created: Vec<u64> = drain(&store)
        .await
        .into_iter()
        .map(|e| match e {
            Event::MessageCreated { message } => message.seq,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(created, (1..=total).collect::<Vec<_>>());
}

/// Many different sends at once (new ones in two conversations, concurrent repeats of the
/// same key, non-members, an unknown conversation): each gets the answer it would get
/// alone, however a backend groups them.
pub async fn concurrent_mixed_sends_each_get_their_own_answer(store: DynStore) {
    const PER_CONVERSATION: usize = 20;
    const COPIES: usize = 3;
    let [a, b, outsider] = [user(&store, "mxa").await, user(&store, "mxb").await, user(&store, "mxc").await];
    let g = group(&store, &[a, b], 0).await;
    let h = group(&store, &[a, b], 0).await;
    drain(&store).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2 * PER_CONVERSATION * COPIES + 10));
    let mut handles = Vec::new();
    let mut spawn = |new: NewMessage| {
        let (store, start) = (store.clone(), start.clone());
        handles.push(tokio::spawn(async move {
            start.wait().await;
            (new.clone(), store.insert_message(&new).await)
        }));
    };
    for i in 0..PER_CONVERSATION {
        // Each key is sent COPIES times at once, with different bodies and ids.
        for copy in 0..COPIES {
            let mut in_g = new_message(g, a, &format!("g{i}"), i as i64);
            in_g.body = format!("g{i} copy {copy}");
            spawn(in_g);
            spawn(new_message(h, if i % 2 == 0 { a } else { b }, &format!("h{i}"), i as i64));
        }
    }
    for i in 0..5 {
        spawn(new_message(g, outsider, &format!("x{i}"), 0));
        spawn(new_message(Uuid::now_v7(), a, &format!("y{i}"), 0));
    }
    let mut by_key: std::collections::HashMap<(ConversationId, String), Vec<(Message, bool)>> =
        std::collections::HashMap::new();
    for handle in handles {
        let (new, answer) = handle.await.expect("task");
        if new.sender_id == outsider || (new.conversation_id != g && new.conversation_id != h) {
            assert!(matches!(answer, Err(StoreError::NotMember)), "{answer:?}");
            continue;
        }
        let (message, created) = answer.expect("a member's send");
        assert_eq!((message.conversation_id, message.sender_id), (new.conversation_id, new.sender_id));
        assert_eq!(message.client_msg_id, new.client_msg_id);
        by_key.entry((new.conversation_id, new.client_msg_id)).or_default().push((message, created));
    }
    assert_eq!(by_key.len(), 2 * PER_CONVERSATION);
    for (key, answers) in &by_key {
        assert_eq!(answers.len(), COPIES);
        assert_eq!(answers.iter().filter(|(_, created)| *created).count(), 1, "one copy of {key:?} is new");
        assert!(
            answers.iter().all(|(m, _)| *m == answers[0].0),
            "every copy of {key:?} gets the same message"
        );
    }
    for c in [g, h] {
        let stored = store.messages(c, None, None, 1000).await.expect("page");
        assert_eq!(seqs(&stored), (1..=PER_CONVERSATION as u64).collect::<Vec<_>>());
        for m in &stored {
            assert_eq!(by_key[&(c, m.client_msg_id.clone())][0].0, *m, "the answer is what was stored");
        }
        assert_eq!(
            store.conversation(c).await.expect("get").expect("exists").last_seq,
            PER_CONVERSATION as u64
        );
    }
    // Each sender's read position is their newest message.
    let newest = |c, u| {
        by_key.iter().filter(|((k, _), v)| *k == c && v[0].0.sender_id == u).map(|(_, v)| v[0].0.seq).max()
    };
    for (c, u) in [(g, a), (h, a), (h, b)] {
        assert_eq!(store.membership(c, u).await.expect("m").map(|m| m.read_seq), newest(c, u));
    }
    assert_eq!(store.membership(g, b).await.expect("m").map(|m| m.read_seq), Some(0));
    // One message.created per message, in seq order within each conversation.
    let mut created: std::collections::HashMap<ConversationId, Vec<u64>> = std::collections::HashMap::new();
    for event in drain(&store).await {
        match event {
            Event::MessageCreated { message } => {
                created.entry(message.conversation_id).or_default().push(message.seq)
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    for c in [g, h] {
        assert_eq!(created[&c], (1..=PER_CONVERSATION as u64).collect::<Vec<_>>());
    }
}

/// Concurrent creation of the same direct pair yields one conversation.
pub async fn concurrent_direct_creation_yields_one(store: DynStore) {
    let [a, b] = [user(&store, "pa").await, user(&store, "pb").await];
    drain(&store).await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let (x, y) = if i % 2 == 0 { (a, b) } else { (b, a) };
        handles.push(tokio::spawn(async move { direct(&store, x, y).await }));
    }
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for handle in handles {
        let (id, was_created) = handle.await.expect("task");
        ids.insert(id);
        created += usize::from(was_created);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    let id = ids.into_iter().next().expect("one id");
    assert_eq!(drain(&store).await, vec![Event::ConversationCreated { conversation_id: id }]);
    assert_eq!(store.conversations_for_user(a).await.expect("list").len(), 1);
}

/// Paging with `after`, `before`, both, and neither.
pub async fn messages_paging(store: DynStore) {
    let a = user(&store, "pg").await;
    let g = group(&store, &[a], 0).await;
    assert!(store.messages(g, None, None, 10).await.expect("empty").is_empty());
    for i in 1..=10 {
        send(&store, g, a, &format!("{i}"), i).await;
    }
    let page = |after, before, limit| {
        let store = store.clone();
        async move { seqs(&store.messages(g, after, before, limit).await.expect("page")) }
    };
    assert_eq!(page(None, None, 3).await, [8, 9, 10], "newest, ascending");
    assert_eq!(page(None, None, 100).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(page(Some(3), None, 4).await, [4, 5, 6, 7], "first after");
    assert_eq!(page(Some(0), None, 2).await, [1, 2]);
    assert_eq!(page(Some(8), None, 10).await, [9, 10]);
    assert!(page(Some(10), None, 10).await.is_empty());
    assert_eq!(page(None, Some(6), 3).await, [3, 4, 5], "last before");
    assert_eq!(page(None, Some(3), 10).await, [1, 2]);
    assert!(page(None, Some(1), 10).await.is_empty());
    assert_eq!(page(None, Some(100), 2).await, [9, 10]);
    assert_eq!(page(Some(2), Some(8), 3).await, [3, 4, 5], "both: first after, below before");
    assert_eq!(page(Some(2), Some(5), 10).await, [3, 4]);
    assert!(page(Some(5), Some(6), 10).await.is_empty());
    assert!(page(None, None, 0).await.is_empty());
    assert!(store.messages(Uuid::now_v7(), None, None, 10).await.expect("unknown").is_empty());
    // Tombstones stay in pages (with an empty body) so seqs have no holes.
    let fifth = store.messages(g, Some(4), None, 1).await.expect("page").remove(0);
    store.change_message(g, fifth.id, &MessageChange::Delete { at: at(99) }).await.expect("delete");
    let page5 = store.messages(g, Some(4), None, 1).await.expect("page");
    assert_eq!((page5[0].seq, page5[0].deleted, page5[0].body.as_str()), (5, true, ""));
}

/// `message` finds a message only in its own conversation.
pub async fn message_lookup(store: DynStore) {
    let a = user(&store, "ml").await;
    let g = group(&store, &[a], 0).await;
    let h = group(&store, &[a], 0).await;
    let m = send(&store, g, a, "1", 1).await;
    assert_eq!(store.message(g, m.id).await.expect("get"), Some(m.clone()));
    assert_eq!(store.message(h, m.id).await.expect("other conversation"), None);
    assert_eq!(store.message(g, Uuid::now_v7()).await.expect("unknown"), None);
}

/// Editing replaces the body and sets `edited_at`, writing `message.edited`.
pub async fn change_message_edit(store: DynStore) {
    let a = user(&store, "ed").await;
    let g = group(&store, &[a], 0).await;
    let h = group(&store, &[a], 0).await;
    let m = send(&store, g, a, "1", 1).await;
    drain(&store).await;
    let edit = MessageChange::Edit { body: "edited".into(), at: at(5) };
    let edited = store.change_message(g, m.id, &edit).await.expect("edit").expect("exists");
    let expected = Message { body: "edited".into(), edited_at: Some(at(5)), ..m.clone() };
    assert_eq!(edited, expected);
    assert_eq!(store.message(g, m.id).await.expect("get"), Some(expected.clone()));
    assert_eq!(drain(&store).await, vec![Event::MessageEdited { message: expected.clone() }]);
    // A second edit moves edited_at again.
    let again = MessageChange::Edit { body: "again".into(), at: at(6) };
    let edited = store.change_message(g, m.id, &again).await.expect("edit").expect("exists");
    assert_eq!((edited.body.as_str(), edited.edited_at, edited.seq), ("again", Some(at(6)), 1));
    assert_eq!(drain(&store).await, vec![Event::MessageEdited { message: edited }]);
    // Unknown message, or a message of another conversation: None, nothing written.
    assert_eq!(store.change_message(g, Uuid::now_v7(), &edit).await.expect("unknown"), None);
    assert_eq!(store.change_message(h, m.id, &edit).await.expect("wrong conversation"), None);
    assert!(drain(&store).await.is_empty());
}

/// Deleting empties the body, sets `deleted`, keeps `edited_at`, writes `message.deleted`.
pub async fn change_message_delete(store: DynStore) {
    let a = user(&store, "de").await;
    let g = group(&store, &[a], 0).await;
    let plain = send(&store, g, a, "1", 1).await;
    let edited = send(&store, g, a, "2", 2).await;
    store
        .change_message(g, edited.id, &MessageChange::Edit { body: "e".into(), at: at(3) })
        .await
        .expect("edit");
    drain(&store).await;

    let gone = store
        .change_message(g, plain.id, &MessageChange::Delete { at: at(4) })
        .await
        .expect("del")
        .expect("exists");
    let expected = Message { body: String::new(), deleted: true, ..plain.clone() };
    assert_eq!(gone, expected);
    assert_eq!(store.message(g, plain.id).await.expect("get"), Some(expected.clone()));

    let gone2 = store
        .change_message(g, edited.id, &MessageChange::Delete { at: at(5) })
        .await
        .expect("del")
        .expect("exists");
    assert_eq!(
        (gone2.body.as_str(), gone2.deleted, gone2.edited_at),
        ("", true, Some(at(3))),
        "edited_at unchanged"
    );
    assert_eq!(
        drain(&store).await,
        vec![Event::MessageDeleted { message: expected }, Event::MessageDeleted { message: gone2 }]
    );
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").last_seq, 2, "seq not reused");
    assert_eq!(send(&store, g, a, "3", 6).await.seq, 3);
}

/// A tombstone cannot be edited or deleted again; both return it unchanged, no event.
pub async fn change_message_tombstone_is_final(store: DynStore) {
    let a = user(&store, "tb").await;
    let g = group(&store, &[a], 0).await;
    let m = send(&store, g, a, "1", 1).await;
    let tomb = store
        .change_message(g, m.id, &MessageChange::Delete { at: at(2) })
        .await
        .expect("del")
        .expect("exists");
    drain(&store).await;
    let edit = MessageChange::Edit { body: "resurrect".into(), at: at(3) };
    assert_eq!(store.change_message(g, m.id, &edit).await.expect("edit"), Some(tomb.clone()));
    assert_eq!(
        store.change_message(g, m.id, &MessageChange::Delete { at: at(4) }).await.expect("del"),
        Some(tomb.clone())
    );
    assert_eq!(store.message(g, m.id).await.expect("get"), Some(tomb));
    assert!(drain(&store).await.is_empty());
}

/// `mark_read` clamps to last_seq, never moves back, writes an event only on movement.
pub async fn mark_read_rules(store: DynStore) {
    let [a, b, c] = [user(&store, "ra").await, user(&store, "rb").await, user(&store, "rc").await];
    let g = group(&store, &[a, b], 0).await;
    for i in 1..=5 {
        send(&store, g, a, &format!("{i}"), i).await;
    }
    drain(&store).await;
    assert_eq!(store.mark_read(g, b, 0).await.expect("read"), 0);
    assert!(drain(&store).await.is_empty());
    assert_eq!(store.mark_read(g, b, 3).await.expect("read"), 3);
    assert_eq!(drain(&store).await, vec![Event::MessageRead { conversation_id: g, user_id: b, seq: 3 }]);
    assert_eq!(store.mark_read(g, b, 2).await.expect("backwards"), 3);
    assert_eq!(store.mark_read(g, b, 3).await.expect("same"), 3);
    assert!(drain(&store).await.is_empty());
    assert_eq!(store.mark_read(g, b, 99).await.expect("clamped"), 5);
    assert_eq!(store.membership(g, b).await.expect("m").map(|m| m.read_seq), Some(5));
    assert_eq!(drain(&store).await, vec![Event::MessageRead { conversation_id: g, user_id: b, seq: 5 }]);
    assert_eq!(store.mark_read(g, b, u64::MAX).await.expect("clamped"), 5);
    assert!(drain(&store).await.is_empty());
    // The sender is already at the end.
    assert_eq!(store.mark_read(g, a, 5).await.expect("sender"), 5);
    assert!(drain(&store).await.is_empty());
    assert!(matches!(store.mark_read(g, c, 1).await, Err(StoreError::NotMember)));
    assert!(matches!(store.mark_read(Uuid::now_v7(), a, 1).await, Err(StoreError::NotMember)));
    assert!(drain(&store).await.is_empty());
}

/// Unread counts others' live messages after the read position.
pub async fn unread_counts(store: DynStore) {
    let [a, b, c] = [user(&store, "ua").await, user(&store, "ub").await, user(&store, "uc").await];
    let g = group(&store, &[a, b, c], 0).await;
    let unread = |u: UserId| {
        let store = store.clone();
        async move {
            let list = store.conversations_for_user(u).await.expect("list");
            list.into_iter().find(|s| s.conversation.id == g).map(|s| (s.read_seq, s.unread)).expect("listed")
        }
    };
    assert_eq!(unread(a).await, (0, 0));
    send(&store, g, a, "1", 1).await;
    let m2 = send(&store, g, b, "2", 2).await;
    send(&store, g, a, "3", 3).await;
    send(&store, g, c, "4", 4).await;
    assert_eq!(unread(a).await, (3, 1), "own messages never count; read up to own send");
    assert_eq!(unread(b).await, (2, 2));
    assert_eq!(unread(c).await, (4, 0));
    let m5 = send(&store, g, b, "5", 5).await;
    let m6 = send(&store, g, c, "6", 6).await;
    assert_eq!(unread(a).await, (3, 3));
    assert_eq!(unread(b).await, (5, 1));
    assert_eq!(unread(c).await, (6, 0));
    // Deleting an unread message removes it from the count; deleting a read one changes nothing.
    store.change_message(g, m5.id, &MessageChange::Delete { at: at(7) }).await.expect("delete");
    store.change_message(g, m2.id, &MessageChange::Delete { at: at(8) }).await.expect("delete");
    assert_eq!(unread(a).await, (3, 2), "deleted messages don't count");
    assert_eq!(unread(b).await, (5, 1));
    assert_eq!(unread(c).await, (6, 0));
    // Edits don't change counts.
    store.change_message(g, m6.id, &MessageChange::Edit { body: "e".into(), at: at(9) }).await.expect("edit");
    assert_eq!(unread(a).await, (3, 2));
    store.mark_read(g, a, 5).await.expect("read");
    assert_eq!(unread(a).await, (5, 1));
    store.mark_read(g, a, m6.seq).await.expect("read");
    assert_eq!(unread(b).await, (5, 1), "others' positions are independent");
    assert_eq!(unread(a).await, (6, 0));
}

/// Most recent activity first (last message, or creation when empty), with last_message.
pub async fn conversations_for_user_order(store: DynStore) {
    let [a, b] = [user(&store, "oa").await, user(&store, "ob").await];
    let old_empty = group(&store, &[a, b], 100).await;
    let new_empty = group(&store, &[a], 300).await;
    let busy = group(&store, &[a, b], 50).await;
    let not_mine = group(&store, &[b], 1_000).await;
    let order = |u: UserId| {
        let store = store.clone();
        async move {
            store
                .conversations_for_user(u)
                .await
                .expect("list")
                .into_iter()
                .map(|s| s.conversation.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(order(a).await, [new_empty, old_empty, busy]);
    let m = send(&store, busy, b, "1", 200).await;
    assert_eq!(order(a).await, [new_empty, busy, old_empty]);
    let last = send(&store, busy, a, "2", 400).await;
    assert_eq!(order(a).await, [busy, new_empty, old_empty]);
    assert_eq!(order(b).await, [not_mine, busy, old_empty]);

    let list = store.conversations_for_user(a).await.expect("list");
    assert_eq!(list[0].conversation, store.conversation(busy).await.expect("get").expect("exists"));
    assert_eq!(list[0].last_message, Some(last.clone()));
    assert_eq!((list[0].read_seq, list[0].unread), (2, 0));
    assert_eq!(list[1].last_message, None);
    assert_eq!(list[1].conversation.members, vec![a]);
    assert_eq!(list[2].conversation.members, vec![a, b]);
    // The last message is shown even when it is a tombstone; older messages don't matter.
    store.change_message(busy, last.id, &MessageChange::Delete { at: at(500) }).await.expect("delete");
    store
        .change_message(busy, m.id, &MessageChange::Edit { body: "x".into(), at: at(600) })
        .await
        .expect("edit");
    let list = store.conversations_for_user(a).await.expect("list");
    assert_eq!(list[0].conversation.id, busy, "edits and deletes are not activity");
    let tomb = list[0].last_message.clone().expect("last");
    assert_eq!((tomb.id, tomb.deleted, tomb.body.as_str()), (last.id, true, ""));
    // Equal activity: ties broken by id, higher (newer v7) first.
    let [t1, t2] = [group(&store, &[b], 2_000).await, group(&store, &[b], 2_000).await];
    let (hi, lo) = if t1 > t2 { (t1, t2) } else { (t2, t1) };
    assert_eq!(order(b).await[..2], [hi, lo]);
    assert!(store.conversations_for_user(Uuid::now_v7()).await.expect("list").is_empty());
}

/// Read positions of every member, in join order; empty for unknown conversations.
pub async fn read_positions_of_members(store: DynStore) {
    let [a, b] = [user(&store, "ra").await, user(&store, "rb").await];
    let conv = group(&store, &[a, b], 100).await;
    assert_eq!(store.read_positions(conv).await.expect("positions"), vec![(a, 0), (b, 0)]);
    send(&store, conv, a, "1", 200).await;
    send(&store, conv, a, "2", 210).await;
    store.mark_read(conv, b, 1).await.expect("read");
    assert_eq!(store.read_positions(conv).await.expect("positions"), vec![(a, 2), (b, 1)]);
    assert!(store.read_positions(Uuid::now_v7()).await.expect("unknown").is_empty());
}

/// A single summary agrees with the user's list, and is `None` for non-members.
pub async fn conversation_summary_matches_list(store: DynStore) {
    let [a, b, c] = [user(&store, "sa").await, user(&store, "sb").await, user(&store, "sc").await];
    let first = group(&store, &[a, b], 100).await;
    let second = group(&store, &[a, b], 200).await;
    send(&store, first, b, "1", 300).await;
    send(&store, first, b, "2", 310).await;
    send(&store, second, a, "3", 320).await;
    let list = store.conversations_for_user(a).await.expect("list");
    for expected in &list {
        let one = store.conversation_summary(expected.conversation.id, a).await.expect("summary");
        assert_eq!(one.as_ref(), Some(expected));
    }
    assert_eq!(list.iter().find(|s| s.conversation.id == first).map(|s| s.unread), Some(2));
    assert_eq!(store.conversation_summary(first, c).await.expect("non-member"), None);
    assert_eq!(store.conversation_summary(Uuid::now_v7(), a).await.expect("unknown"), None);
}
