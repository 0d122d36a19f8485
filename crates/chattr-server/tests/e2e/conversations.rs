//! Conversations, membership, user search and the non-member rule.

use chattr_api::v1::{codes, ConversationKind};
use reqwest::Method;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn direct_conversations_are_unique_per_pair() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let a = alice.me().unwrap();
    let b = bob.me().unwrap();
    let (status, first): (_, chattr_api::v1::Conversation) = alice
        .request(
            Method::POST,
            "/v1/conversations",
            Some(&serde_json::json!({"kind":"direct","members":[b.id]})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201);
    assert_eq!(first.kind, ConversationKind::Direct);
    let (status, again): (_, chattr_api::v1::Conversation) = bob
        .request(
            Method::POST,
            "/v1/conversations",
            Some(&serde_json::json!({"kind":"direct","members":[a.id]})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    assert_eq!(again.id, first.id);
    let mut members: Vec<_> = again.members.iter().map(|m| m.username.clone()).collect();
    members.sort();
    let mut expected = vec![a.username, b.username];
    expected.sort();
    assert_eq!(members, expected);
    assert_api_error(alice.direct(a.id).await, 400, codes::INVALID_ARGUMENT);
    assert_api_error(alice.direct(Uuid::now_v7()).await, 400, codes::INVALID_ARGUMENT);
}

#[tokio::test]
async fn groups_have_an_owner_who_manages_members() {
    let srv = TestServer::start().await;
    let owner = srv.user("owner").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let (b, c) = (bob.me().unwrap().id, carol.me().unwrap().id);
    assert_api_error(owner.group("  ", &[b]).await, 400, codes::INVALID_ARGUMENT);
    let group = owner.group("Team", &[b]).await.unwrap();
    assert_eq!(group.title.as_deref(), Some("Team"));
    assert_eq!(group.owner_id, Some(owner.me().unwrap().id));
    assert_eq!(group.members.len(), 2);
    // Carol cannot see it yet: 404, like a missing conversation.
    assert_api_error(carol.conversation(group.id).await, 404, codes::NOT_FOUND);
    // Only the owner adds, renames and removes.
    assert_api_error(bob.add_member(group.id, c).await, 403, codes::FORBIDDEN);
    assert_api_error(bob.rename(group.id, "Mine").await, 403, codes::FORBIDDEN);
    let g = owner.add_member(group.id, c).await.unwrap();
    assert_eq!(g.members.len(), 3);
    assert_eq!(owner.rename(group.id, "Team 2").await.unwrap().title.as_deref(), Some("Team 2"));
    assert_eq!(carol.conversation(group.id).await.unwrap().title.as_deref(), Some("Team 2"));
    assert_api_error(bob.remove_member(group.id, c).await, 403, codes::FORBIDDEN);
    owner.remove_member(group.id, c).await.unwrap();
    assert_api_error(carol.conversation(group.id).await, 404, codes::NOT_FOUND);
    // A member leaves by removing themselves; the owner cannot leave.
    bob.remove_member(group.id, b).await.unwrap();
    assert_api_error(bob.conversation(group.id).await, 404, codes::NOT_FOUND);
    assert_api_error(owner.remove_member(group.id, owner.me().unwrap().id).await, 403, codes::FORBIDDEN);
    assert_eq!(owner.conversation(group.id).await.unwrap().members.len(), 1);
}

#[tokio::test]
async fn non_members_cannot_read_send_or_learn_existence() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let eve = srv.user("eve").await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    alice.send(conv.id, "c1", "secret").await.unwrap();
    let missing = Uuid::now_v7();
    for id in [conv.id, missing] {
        assert_api_error(eve.conversation(id).await, 404, codes::NOT_FOUND);
        assert_api_error(eve.history(id, None, None, None).await, 404, codes::NOT_FOUND);
        assert_api_error(eve.send(id, "x", "hi").await, 404, codes::NOT_FOUND);
        assert_api_error(eve.mark_read(id, 1).await, 404, codes::NOT_FOUND);
        assert_api_error(eve.add_member(id, eve.me().unwrap().id).await, 404, codes::NOT_FOUND);
        assert_api_error(eve.remove_member(id, alice.me().unwrap().id).await, 404, codes::NOT_FOUND);
        let typing = eve.request_raw(Method::POST, &format!("/v1/conversations/{id}/typing"), None).await;
        assert_api_error(typing, 404, codes::NOT_FOUND);
    }
    let msg = alice.history(conv.id, None, None, None).await.unwrap()[0].clone();
    assert_api_error(eve.edit(conv.id, msg.id, "pwned").await, 404, codes::NOT_FOUND);
    assert_api_error(eve.delete(conv.id, msg.id).await, 404, codes::NOT_FOUND);
    // Malformed ids are simply not found.
    let raw = eve.request_raw(Method::GET, "/v1/conversations/not-a-uuid", None).await;
    assert_api_error(raw, 404, codes::NOT_FOUND);
    assert!(eve.conversations().await.unwrap().is_empty());
}

#[tokio::test]
async fn user_search_by_prefix() {
    let srv = TestServer::start().await;
    let alice = srv.user("zed_search").await;
    let _bob = srv.user("zed_search").await;
    let _carol = srv.user("other").await;
    let found = alice.search_users("zed_search").await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.windows(2).all(|w| w[0].username < w[1].username));
    assert!(alice.search_users("").await.unwrap().is_empty());
    assert_eq!(alice.search_users("ZED_SEARCH").await.unwrap().len(), 2);
    assert_api_error(srv.anonymous().search_users("zed").await, 401, codes::UNAUTHORIZED);
}

#[tokio::test]
async fn conversation_list_has_unread_counts_and_activity_order() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let with_bob = alice.direct(bob.me().unwrap().id).await.unwrap();
    let with_carol = alice.direct(carol.me().unwrap().id).await.unwrap();
    bob.send(with_bob.id, "b1", "one").await.unwrap();
    bob.send(with_bob.id, "b2", "two").await.unwrap();
    alice.send(with_bob.id, "a1", "mine").await.unwrap();
    bob.send(with_bob.id, "b3", "three").await.unwrap();
    carol.send(with_carol.id, "c1", "hey").await.unwrap();
    let list = alice.conversations().await.unwrap();
    assert_eq!(list.iter().map(|c| c.id).collect::<Vec<_>>(), vec![with_carol.id, with_bob.id]);
    let bob_conv = &list[1];
    assert_eq!(bob_conv.last_seq, 4);
    // Sending moves my read position to my own message: only "three" is unread.
    assert_eq!((bob_conv.read_seq, bob_conv.unread), (3, 1));
    assert_eq!(bob_conv.last_message.as_ref().unwrap().body, "three");
    assert_eq!(alice.mark_read(with_bob.id, 100).await.unwrap(), 4);
    assert_eq!(alice.mark_read(with_bob.id, 2).await.unwrap(), 4, "never moves backwards");
    let detail = bob.conversation(with_bob.id).await.unwrap();
    let positions: Vec<(uuid::Uuid, u64)> =
        detail.read_positions.iter().map(|p| (p.user_id, p.seq)).collect();
    assert!(
        positions.contains(&(alice.me().unwrap().id, 4)) && positions.contains(&(bob.me().unwrap().id, 4))
    );
    let list = alice.conversations().await.unwrap();
    assert!(list[1].read_positions.is_empty(), "lists stay lean");
    assert_eq!(list[1].unread, 0);
    assert_eq!(list[0].unread, 1);
}
