//! Sending, idempotency, editing, deleting and history paging over REST.

use chattr_api::v1::codes;
use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn send_is_idempotent_on_client_msg_id() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let (first, created) = alice.send(conv.id, "same-key", "hello").await.unwrap();
    assert!(created);
    assert_eq!(first.seq, 1);
    assert_eq!(first.sender_id, alice.me().unwrap().id);
    let (again, created) = alice.send(conv.id, "same-key", "hello (retry)").await.unwrap();
    assert!(!created);
    assert_eq!(again, first);
    // Another sender may use the same key.
    let (theirs, created) = bob.send(conv.id, "same-key", "hi").await.unwrap();
    assert!(created);
    assert_eq!(theirs.seq, 2);
    assert_eq!(alice.history(conv.id, None, None, None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn bodies_are_validated() {
    let srv = TestServer::start_with(|s| s.messaging.max_body_chars = 10).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    assert_api_error(alice.send(conv.id, "k1", "").await, 400, codes::INVALID_BODY);
    assert_api_error(alice.send(conv.id, "k2", "   ").await, 400, codes::INVALID_BODY);
    assert_api_error(alice.send(conv.id, "k3", "12345678901").await, 400, codes::INVALID_BODY);
    assert_api_error(alice.send(conv.id, "", "ok").await, 400, codes::INVALID_ARGUMENT);
    alice.send(conv.id, "k4", "héllo wörl").await.unwrap();
    let wrong = alice
        .request_raw(
            Method::POST,
            &format!("/v1/conversations/{}/messages", conv.id),
            Some(br#"{"body":1}"#.to_vec()),
        )
        .await;
    assert_api_error(wrong, 400, codes::BAD_REQUEST);
    // Nothing invalid was stored.
    assert_eq!(alice.history(conv.id, None, None, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn edit_and_delete_rules() {
    let srv = TestServer::start().await;
    let owner = srv.user("owner").await;
    let bob = srv.user("bob").await;
    let group = owner.group("g", &[bob.me().unwrap().id]).await.unwrap();
    let (mine, _) = bob.send(group.id, "b1", "typo").await.unwrap();
    let (owners, _) = owner.send(group.id, "o1", "owner's").await.unwrap();
    let edited = bob.edit(group.id, mine.id, "fixed").await.unwrap();
    assert_eq!(edited.body, "fixed");
    assert!(edited.edited_at.is_some());
    assert_eq!(edited.seq, mine.seq);
    assert_api_error(bob.edit(group.id, owners.id, "nope").await, 403, codes::FORBIDDEN);
    assert_api_error(owner.edit(group.id, mine.id, "nope").await, 403, codes::FORBIDDEN);
    assert_api_error(bob.delete(group.id, owners.id).await, 403, codes::FORBIDDEN);
    // The group owner may delete anyone's message; a tombstone remains.
    let tomb = owner.delete(group.id, mine.id).await.unwrap();
    assert!(tomb.deleted);
    assert_eq!(tomb.body, "");
    assert_api_error(bob.edit(group.id, mine.id, "undead").await, 403, codes::FORBIDDEN);
    let history = bob.history(group.id, None, None, None).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].deleted);
    assert_eq!(history[1].body, "owner's");
    assert_api_error(bob.delete(group.id, uuid::Uuid::now_v7()).await, 404, codes::NOT_FOUND);
}

#[tokio::test]
async fn history_pages_by_seq() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    for i in 1..=25 {
        alice.send(conv.id, &format!("k{i}"), &format!("m{i}")).await.unwrap();
    }
    let seqs = |v: Vec<chattr_api::v1::Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(bob.history(conv.id, None, None, Some(5)).await.unwrap()), vec![21, 22, 23, 24, 25]);
    assert_eq!(seqs(bob.history(conv.id, Some(3), None, Some(4)).await.unwrap()), vec![4, 5, 6, 7]);
    assert_eq!(seqs(bob.history(conv.id, None, Some(4), Some(10)).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(bob.history(conv.id, None, None, None).await.unwrap().len(), 25);
    assert!(bob.history(conv.id, Some(25), None, None).await.unwrap().is_empty());
    assert_api_error(bob.history(conv.id, None, None, Some(101)).await, 400, codes::INVALID_ARGUMENT);
    assert_api_error(bob.history(conv.id, None, None, Some(0)).await, 400, codes::INVALID_ARGUMENT);
    let bad = bob
        .request_raw(Method::GET, &format!("/v1/conversations/{}/messages?limit=abc", conv.id), None)
        .await;
    assert_api_error(bad, 400, codes::BAD_REQUEST);
}
