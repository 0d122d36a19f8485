//! Conformance checks for conversations and membership.

use chattr_api::v1::ConversationKind;
use chattr_core::events::Event;
use uuid::Uuid;

use super::*;
use crate::{DynStore, NewConversation, StoreError};

/// A group round-trips with members in order; members start at read_seq 0.
pub async fn create_group_conversation(store: DynStore) {
    let [a, b, c] = [user(&store, "ga").await, user(&store, "gb").await, user(&store, "gc").await];
    drain(&store).await;
    // Member order is the given order, not id order.
    let new = NewConversation {
        id: Uuid::now_v7(),
        kind: ConversationKind::Group,
        title: Some("Team".into()),
        owner_id: Some(b),
        members: vec![b, c, a],
        created_at: at(42),
    };
    let (record, created) = store.create_conversation(&new).await.expect("create");
    assert!(created);
    assert_eq!(record.id, new.id);
    assert_eq!(record.kind, ConversationKind::Group);
    assert_eq!(record.title.as_deref(), Some("Team"));
    assert_eq!(record.owner_id, Some(b));
    assert_eq!(record.members, vec![b, c, a]);
    assert_eq!(record.created_at, at(42));
    assert_eq!(record.last_seq, 0);
    assert_eq!(store.conversation(new.id).await.expect("get"), Some(record));
    assert_eq!(drain(&store).await, vec![Event::ConversationCreated { conversation_id: new.id }]);
    for m in [a, b, c] {
        assert_eq!(store.membership(new.id, m).await.expect("membership").map(|m| m.read_seq), Some(0));
    }
    let stranger = user(&store, "gx").await;
    assert_eq!(store.membership(new.id, stranger).await.expect("membership"), None);
    assert_eq!(store.membership(Uuid::now_v7(), a).await.expect("membership"), None);
    assert_eq!(store.conversation(Uuid::now_v7()).await.expect("get"), None);
    // Two groups with the same members are distinct.
    let again = group(&store, &[b, c, a], 43).await;
    assert_ne!(again, new.id);
}

/// One direct conversation per pair, whatever the order of the pair.
pub async fn direct_conversation_dedupe(store: DynStore) {
    let [a, b, c] = [user(&store, "da").await, user(&store, "db").await, user(&store, "dc").await];
    drain(&store).await;
    let (ab, created) = direct(&store, a, b).await;
    assert!(created);
    let record = store.conversation(ab).await.expect("get").expect("exists");
    assert_eq!(record.kind, ConversationKind::Direct);
    assert_eq!(record.members, vec![a, b]);
    assert_eq!(drain(&store).await, vec![Event::ConversationCreated { conversation_id: ab }]);

    let new = NewConversation {
        id: Uuid::now_v7(),
        kind: ConversationKind::Direct,
        title: None,
        owner_id: None,
        members: vec![b, a],
        created_at: at(9),
    };
    let (existing, created) = store.create_conversation(&new).await.expect("again");
    assert!(!created);
    assert_eq!(existing, record, "the existing record is returned as is");
    assert_eq!(store.conversation(new.id).await.expect("get"), None, "no second conversation");
    assert!(drain(&store).await.is_empty(), "dedupe writes no event");

    let (ac, created) = direct(&store, a, c).await;
    assert!(created);
    assert_ne!(ac, ab);
    // A group of the same two users is not a direct conversation.
    let g = group(&store, &[a, b], 1).await;
    assert_ne!(g, ab);
}

/// References to unknown users are rejected (foreign keys), not silently stored.
pub async fn unknown_references_fail(store: DynStore) {
    let a = user(&store, "ua").await;
    let ghost = Uuid::now_v7();
    drain(&store).await;
    assert!(store.create_session(&session_record(ghost, "h", 0)).await.is_err());
    let new = NewConversation {
        id: Uuid::now_v7(),
        kind: ConversationKind::Group,
        title: Some("g".into()),
        owner_id: Some(a),
        members: vec![a, ghost],
        created_at: at(0),
    };
    assert!(store.create_conversation(&new).await.is_err());
    assert_eq!(store.conversation(new.id).await.expect("get"), None, "nothing half-created");
    let g = group(&store, &[a], 0).await;
    drain(&store).await;
    assert!(store.add_member(g, ghost, at(1)).await.is_err());
    assert_eq!(store.conversation(g).await.expect("get").map(|c| c.members), Some(vec![a]));
    assert!(drain(&store).await.is_empty());
}

/// `add_member` / `remove_member` are idempotent and write events only on change.
pub async fn membership_add_remove(store: DynStore) {
    let [a, b, c] = [user(&store, "ma").await, user(&store, "mb").await, user(&store, "mc").await];
    let g = group(&store, &[a, b], 0).await;
    send(&store, g, a, "1", 10).await;
    drain(&store).await;

    assert!(store.add_member(g, c, at(20)).await.expect("add"));
    assert!(!store.add_member(g, c, at(21)).await.expect("add again"));
    assert!(!store.add_member(g, a, at(22)).await.expect("add existing"));
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").members, vec![a, b, c]);
    assert_eq!(store.membership(g, c).await.expect("membership"), Some(crate::Membership { read_seq: 0 }));
    assert_eq!(drain(&store).await, vec![Event::MemberAdded { conversation_id: g, user_id: c }]);

    assert!(store.remove_member(g, b).await.expect("remove"));
    assert!(!store.remove_member(g, b).await.expect("remove again"));
    assert!(!store.remove_member(Uuid::now_v7(), a).await.expect("unknown conversation"));
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").members, vec![a, c]);
    assert_eq!(store.membership(g, b).await.expect("membership"), None);
    assert_eq!(drain(&store).await, vec![Event::MemberRemoved { conversation_id: g, user_id: b }]);

    // Re-joining puts the member last again.
    assert!(store.add_member(g, b, at(30)).await.expect("rejoin"));
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").members, vec![a, c, b]);
    assert_eq!(drain(&store).await, vec![Event::MemberAdded { conversation_id: g, user_id: b }]);

    assert!(matches!(store.add_member(Uuid::now_v7(), a, at(40)).await, Err(StoreError::NotMember)));
    assert!(drain(&store).await.is_empty());
}

/// `set_title` changes the title and writes `conversation.updated`.
pub async fn set_title_updates(store: DynStore) {
    let a = user(&store, "ta").await;
    let g = group(&store, &[a], 0).await;
    drain(&store).await;
    store.set_title(g, "Renamed").await.expect("set_title");
    assert_eq!(store.conversation(g).await.expect("get").expect("exists").title.as_deref(), Some("Renamed"));
    assert_eq!(drain(&store).await, vec![Event::ConversationUpdated { conversation_id: g }]);
    assert!(matches!(store.set_title(Uuid::now_v7(), "x").await, Err(StoreError::NotMember)));
    assert!(drain(&store).await.is_empty());
}

/// `contacts` = distinct co-members; `latest_seqs` = last seq of each of the user's conversations.
pub async fn contacts_and_latest_seqs(store: DynStore) {
    let [a, b, c, d, e] = [
        user(&store, "ca").await,
        user(&store, "cb").await,
        user(&store, "cc").await,
        user(&store, "cd").await,
        user(&store, "ce").await,
    ];
    let (ab, _) = direct(&store, a, b).await;
    let g = group(&store, &[a, b, c], 0).await;
    let other = group(&store, &[d, e], 0).await;
    assert_eq!(sorted(store.contacts(a).await.expect("contacts")), sorted(vec![b, c]));
    assert_eq!(sorted(store.contacts(c).await.expect("contacts")), sorted(vec![a, b]));
    assert_eq!(store.contacts(d).await.expect("contacts"), vec![e]);
    assert!(store.contacts(Uuid::now_v7()).await.expect("contacts").is_empty());
    let alone = user(&store, "alone").await;
    group(&store, &[alone], 0).await;
    assert!(store.contacts(alone).await.expect("contacts").is_empty());

    send(&store, g, a, "1", 1).await;
    send(&store, g, b, "2", 2).await;
    send(&store, ab, b, "3", 3).await;
    send(&store, other, d, "4", 4).await;
    assert_eq!(sorted(store.latest_seqs(a).await.expect("latest")), sorted(vec![(ab, 1), (g, 2)]));
    assert_eq!(store.latest_seqs(c).await.expect("latest"), vec![(g, 2)]);
    assert!(store.latest_seqs(Uuid::now_v7()).await.expect("latest").is_empty());
    // Many users at once: the same as asking each, unknown users and repeats included.
    let many = [a, b, c, d, e, alone, Uuid::now_v7(), a];
    let mut each = Vec::new();
    for u in [a, b, c, d, e, alone] {
        each.extend(store.latest_seqs(u).await.expect("latest").into_iter().map(|(conv, s)| (u, conv, s)));
    }
    let mut at_once = store.latest_seqs_of(&many).await.expect("latest of many");
    at_once.sort_unstable();
    at_once.dedup();
    assert_eq!(at_once, sorted(each));
    assert!(store.latest_seqs_of(&[]).await.expect("none").is_empty());
    let mut each = Vec::new();
    for u in [a, b, c, d, e, alone] {
        each.extend(store.contacts(u).await.expect("contacts").into_iter().map(|other| (u, other)));
    }
    let mut at_once = store.contacts_of(&many).await.expect("contacts of many");
    at_once.sort_unstable();
    at_once.dedup();
    assert_eq!(at_once, sorted(each));
    assert!(store.contacts_of(&[]).await.expect("none").is_empty());
    // Leaving a conversation drops it from both.
    store.remove_member(g, c).await.expect("remove");
    assert!(store.latest_seqs(c).await.expect("latest").is_empty());
    assert!(store.contacts(c).await.expect("contacts").is_empty());
}
