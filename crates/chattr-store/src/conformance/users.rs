//! Conformance checks for users and sessions.

use std::collections::BTreeSet;

use chattr_api::v1::User;
use chattr_core::events::Event;
use chattr_core::SessionId;
use uuid::Uuid;

use super::*;
use crate::{DynStore, RotateOutcome, SessionRecord, StoreError, UserRecord};

/// `ping` answers on a fresh store.
pub async fn ping(store: DynStore) {
    store.ping().await.expect("ping");
    assert!(drain(&store).await.is_empty());
}

/// A created user can be looked up exactly; `user.registered` is written.
pub async fn create_user_and_lookup(store: DynStore) {
    let record = UserRecord {
        id: Uuid::now_v7(),
        username: "alice".into(),
        password_hash: "phc".into(),
        created_at: at(5),
    };
    store.create_user(&record).await.expect("create");
    assert_eq!(store.user_by_username("alice").await.expect("lookup"), Some(record.clone()));
    assert_eq!(store.user_by_username("Alice").await.expect("lookup"), None, "lookup is exact");
    assert_eq!(store.user_by_username("alic").await.expect("lookup"), None);
    assert_eq!(
        drain(&store).await,
        vec![Event::UserRegistered { user_id: record.id, username: "alice".into() }]
    );
}

/// A taken username is `Conflict("username")` and writes nothing.
pub async fn username_conflict(store: DynStore) {
    let first = user(&store, "bob").await;
    drain(&store).await;
    let dup = UserRecord {
        id: Uuid::now_v7(),
        username: "bob".into(),
        password_hash: "x".into(),
        created_at: at(1),
    };
    match store.create_user(&dup).await {
        Err(StoreError::Conflict("username")) => {}
        other => panic!("expected Conflict(\"username\"), got {other:?}"),
    }
    assert!(drain(&store).await.is_empty());
    assert_eq!(store.user_by_username("bob").await.expect("lookup").map(|u| u.id), Some(first));
    // Usernames are case-sensitive keys.
    user(&store, "Bob").await;
}

/// `users_by_ids` returns the public view of known users only.
pub async fn users_by_ids_returns_known_users(store: DynStore) {
    let a = user(&store, "ann").await;
    let b = user(&store, "ben").await;
    user(&store, "cid").await;
    let mut users = store.users_by_ids(&[b, Uuid::now_v7(), a]).await.expect("users_by_ids");
    users.sort_by_key(|u| u.username.clone());
    assert_eq!(users, vec![User { id: a, username: "ann".into() }, User { id: b, username: "ben".into() }]);
    assert!(store.users_by_ids(&[]).await.expect("empty").is_empty());
}

/// `search_users` is an exact, case-sensitive prefix match, ordered by username, limited.
pub async fn search_users_by_prefix(store: DynStore) {
    for name in ["carol", "car", "carl", "Carmen", "dave", "ca_t", "cab"] {
        user(&store, name).await;
    }
    let names = |users: Vec<User>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    assert_eq!(names(store.search_users("car", 10).await.expect("search")), ["car", "carl", "carol"]);
    assert_eq!(names(store.search_users("car", 2).await.expect("search")), ["car", "carl"]);
    assert_eq!(
        names(store.search_users("ca", 10).await.expect("search")),
        ["ca_t", "cab", "car", "carl", "carol"]
    );
    assert_eq!(names(store.search_users("ca_", 10).await.expect("search")), ["ca_t"], "no wildcards");
    assert_eq!(names(store.search_users("Car", 10).await.expect("search")), ["Carmen"]);
    assert_eq!(names(store.search_users("", 3).await.expect("search")), ["Carmen", "ca_t", "cab"]);
    assert!(store.search_users("zed", 10).await.expect("search").is_empty());
    assert!(store.search_users("car", 0).await.expect("search").is_empty());
}

/// Sessions round-trip exactly; unknown ids are `None`; creating one writes no event.
pub async fn sessions_create_and_get(store: DynStore) {
    let u = user(&store, "sam").await;
    drain(&store).await;
    let mut s = session_record(u, "h1", 10);
    store.create_session(&s).await.expect("create_session");
    assert_eq!(store.session(s.id).await.expect("session"), Some(s.clone()));
    let mut no_agent = session_record(u, "h2", 11);
    no_agent.user_agent = None;
    store.create_session(&no_agent).await.expect("create_session");
    let no_agent_id = no_agent.id;
    assert_eq!(store.session(no_agent.id).await.expect("session"), Some(no_agent));
    assert_eq!(store.session(Uuid::now_v7()).await.expect("session"), None);
    assert!(drain(&store).await.is_empty());
    s.revoked = true;
    s.id = Uuid::now_v7();
    store.create_session(&s).await.expect("create revoked");
    assert_eq!(
        store.session(s.id).await.expect("session"),
        Some(s.clone()),
        "revoked sessions are still returned"
    );
    // Many at once: those that exist, revoked ones too; unknown ids are left out.
    let first = store.sessions_by_ids(&[]).await.expect("none");
    assert!(first.is_empty());
    let mut found = store.sessions_by_ids(&[s.id, Uuid::now_v7(), no_agent_id]).await.expect("sessions");
    found.sort_by_key(|r| r.id);
    let mut expected = vec![s, store.session(no_agent_id).await.expect("session").expect("exists")];
    expected.sort_by_key(|r| r.id);
    assert_eq!(found, expected);
}

/// The current hash of a live, unexpired session rotates it.
pub async fn rotate_refresh_rotates(store: DynStore) {
    let u = user(&store, "rita").await;
    let s = session_record(u, "h1", 0);
    store.create_session(&s).await.expect("create_session");
    drain(&store).await;
    let outcome = store.rotate_refresh(s.id, "h1", "h2", at(2_000_000), at(50)).await.expect("rotate");
    let expected = SessionRecord {
        refresh_hash: "h2".into(),
        refresh_expires_at: at(2_000_000),
        last_seen_at: at(50),
        ..s.clone()
    };
    assert_eq!(outcome, RotateOutcome::Rotated(expected.clone()));
    assert_eq!(store.session(s.id).await.expect("session"), Some(expected));
    // And again with the new hash.
    let outcome = store.rotate_refresh(s.id, "h2", "h3", at(3_000_000), at(60)).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Rotated(ref r) if r.refresh_hash == "h3"));
    assert!(drain(&store).await.is_empty(), "rotation writes no event");
}

/// Replaying a rotated-away hash revokes the session and writes `session.revoked`.
pub async fn rotate_refresh_reuse_revokes(store: DynStore) {
    let u = user(&store, "reuse").await;
    let s = session_record(u, "h1", 0);
    store.create_session(&s).await.expect("create_session");
    store.rotate_refresh(s.id, "h1", "h2", at(2_000_000), at(10)).await.expect("rotate");
    drain(&store).await;
    assert_eq!(
        store.rotate_refresh(s.id, "h1", "h9", at(2_000_000), at(20)).await.expect("replay"),
        RotateOutcome::Reused
    );
    let after = store.session(s.id).await.expect("session").expect("exists");
    assert!(after.revoked);
    assert_eq!(after.refresh_hash, "h2", "a replay does not rotate");
    assert_eq!(drain(&store).await, vec![Event::SessionRevoked { user_id: u, session_id: s.id }]);
    // Even the legitimate current hash is now useless.
    assert_eq!(
        store.rotate_refresh(s.id, "h2", "h3", at(2_000_000), at(30)).await.expect("rotate"),
        RotateOutcome::Invalid
    );
    assert!(store.list_sessions(u).await.expect("list").is_empty());
    assert!(drain(&store).await.is_empty());
}

/// A hash the session never had is `Invalid` and changes nothing: knowing a session id
/// must not let anyone revoke it. Hashes rotated away several times ago still count.
pub async fn rotate_refresh_wrong_hash_is_invalid(store: DynStore) {
    let u = user(&store, "wrong").await;
    let s = session_record(u, "h1", 0);
    store.create_session(&s).await.expect("create_session");
    drain(&store).await;
    assert_eq!(
        store.rotate_refresh(s.id, "forged", "n", at(2_000_000), at(10)).await.expect("forged"),
        RotateOutcome::Invalid
    );
    let after = store.session(s.id).await.expect("session").expect("exists");
    assert!(!after.revoked);
    assert_eq!(after.refresh_hash, "h1");
    assert!(drain(&store).await.is_empty());
    // Rotate three times, then replay the first hash: still detected.
    for (old, new) in [("h1", "h2"), ("h2", "h3"), ("h3", "h4")] {
        let outcome = store.rotate_refresh(s.id, old, new, at(2_000_000), at(20)).await.expect("rotate");
        assert!(matches!(outcome, RotateOutcome::Rotated(_)));
    }
    assert_eq!(
        store.rotate_refresh(s.id, "h1", "n", at(2_000_000), at(30)).await.expect("replay"),
        RotateOutcome::Reused
    );
    assert!(store.session(s.id).await.expect("session").expect("exists").revoked);
}

/// Unknown, revoked and expired sessions are `Invalid` and unchanged.
pub async fn rotate_refresh_invalid(store: DynStore) {
    let u = user(&store, "ivan").await;
    assert_eq!(
        store.rotate_refresh(Uuid::now_v7(), "h", "n", at(9), at(1)).await.expect("unknown"),
        RotateOutcome::Invalid
    );

    let revoked = session_record(u, "h1", 0);
    store.create_session(&revoked).await.expect("create");
    assert!(store.revoke_session(u, revoked.id).await.expect("revoke"));
    drain(&store).await;
    assert_eq!(
        store.rotate_refresh(revoked.id, "h1", "n", at(9), at(1)).await.expect("revoked"),
        RotateOutcome::Invalid
    );

    let mut expired = session_record(u, "h1", 0);
    expired.refresh_expires_at = at(100);
    store.create_session(&expired).await.expect("create");
    assert_eq!(
        store.rotate_refresh(expired.id, "h1", "n", at(500), at(100)).await.expect("expired"),
        RotateOutcome::Invalid
    );
    assert_eq!(
        store.rotate_refresh(expired.id, "h1", "n", at(500), at(101)).await.expect("expired"),
        RotateOutcome::Invalid
    );
    assert_eq!(store.session(expired.id).await.expect("session"), Some(expired.clone()), "unchanged");
    assert!(drain(&store).await.is_empty());
    // One millisecond before expiry it still works.
    assert!(matches!(
        store.rotate_refresh(expired.id, "h1", "n", at(500), at(99)).await.expect("live"),
        RotateOutcome::Rotated(_)
    ));
}

/// `touch_sessions` moves last seen of live sessions only.
pub async fn touch_sessions_updates_live_only(store: DynStore) {
    let u = user(&store, "tom").await;
    let live = session_record(u, "h1", 0);
    let dead = session_record(u, "h2", 1);
    store.create_session(&live).await.expect("create");
    store.create_session(&dead).await.expect("create");
    store.revoke_session(u, dead.id).await.expect("revoke");
    drain(&store).await;
    let other = session_record(u, "h3", 2);
    store.create_session(&other).await.expect("create");
    drain(&store).await;
    store.touch_sessions(&[live.id], at(77)).await.expect("touch");
    store.touch_sessions(&[dead.id], at(77)).await.expect("touch revoked");
    store.touch_sessions(&[Uuid::now_v7()], at(77)).await.expect("touch unknown");
    store.touch_sessions(&[], at(77)).await.expect("touch none");
    assert_eq!(store.session(live.id).await.expect("get").map(|s| s.last_seen_at), Some(at(77)));
    assert_eq!(store.session(dead.id).await.expect("get").map(|s| s.last_seen_at), Some(at(1)));
    // Many at once: the live ones move, whatever else is in the list.
    store.touch_sessions(&[dead.id, other.id, Uuid::now_v7(), live.id], at(88)).await.expect("touch many");
    assert_eq!(store.session(live.id).await.expect("get").map(|s| s.last_seen_at), Some(at(88)));
    assert_eq!(store.session(other.id).await.expect("get").map(|s| s.last_seen_at), Some(at(88)));
    assert_eq!(store.session(dead.id).await.expect("get").map(|s| s.last_seen_at), Some(at(1)));
    assert!(drain(&store).await.is_empty());
}

/// `list_sessions`: the user's non-revoked sessions, newest first.
pub async fn list_sessions_live_newest_first(store: DynStore) {
    let u = user(&store, "lis").await;
    let other = user(&store, "other").await;
    let s1 = session_record(u, "a", 10);
    let s2 = session_record(u, "b", 30);
    let s3 = session_record(u, "c", 20);
    let s4 = session_record(u, "d", 40);
    for s in [&s1, &s2, &s3, &s4, &session_record(other, "e", 50)] {
        store.create_session(s).await.expect("create");
    }
    store.revoke_session(u, s4.id).await.expect("revoke");
    let listed = store.list_sessions(u).await.expect("list");
    assert_eq!(listed, vec![s2, s3, s1]);
    assert!(store.list_sessions(Uuid::now_v7()).await.expect("list").is_empty());
}

/// `revoke_session` revokes only a live session of that user, once.
pub async fn revoke_session_rules(store: DynStore) {
    let u = user(&store, "val").await;
    let mallory = user(&store, "mallory").await;
    let s = session_record(u, "h", 0);
    store.create_session(&s).await.expect("create");
    drain(&store).await;
    assert!(!store.revoke_session(mallory, s.id).await.expect("other user"), "not mallory's session");
    assert!(!store.revoke_session(u, Uuid::now_v7()).await.expect("unknown"));
    assert!(drain(&store).await.is_empty());
    assert!(store.revoke_session(u, s.id).await.expect("revoke"));
    assert!(store.session(s.id).await.expect("get").expect("exists").revoked);
    assert_eq!(drain(&store).await, vec![Event::SessionRevoked { user_id: u, session_id: s.id }]);
    assert!(!store.revoke_session(u, s.id).await.expect("again"), "already revoked");
    assert!(drain(&store).await.is_empty());
}

/// `revoke_other_sessions` revokes all live sessions but `keep`, one event each.
pub async fn revoke_other_sessions_keeps_one(store: DynStore) {
    let u = user(&store, "olga").await;
    let other = user(&store, "oscar").await;
    let keep = session_record(u, "k", 0);
    let a = session_record(u, "a", 1);
    let b = session_record(u, "b", 2);
    let dead = session_record(u, "c", 3);
    let foreign = session_record(other, "f", 4);
    for s in [&keep, &a, &b, &dead, &foreign] {
        store.create_session(s).await.expect("create");
    }
    store.revoke_session(u, dead.id).await.expect("revoke");
    drain(&store).await;
    let revoked = store.revoke_other_sessions(u, keep.id).await.expect("revoke others");
    assert_eq!(sorted(revoked), sorted(vec![a.id, b.id]));
    let events: BTreeSet<SessionId> = drain(&store)
        .await
        .into_iter()
        .map(|e| match e {
            Event::SessionRevoked { user_id, session_id } if user_id == u => session_id,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(events, BTreeSet::from([a.id, b.id]));
    assert_eq!(store.list_sessions(u).await.expect("list"), vec![keep.clone()]);
    assert_eq!(store.list_sessions(other).await.expect("list"), vec![foreign]);
    assert!(store.revoke_other_sessions(u, keep.id).await.expect("again").is_empty());
    assert!(drain(&store).await.is_empty());
}
