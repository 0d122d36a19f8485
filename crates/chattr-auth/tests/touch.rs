//! Authenticating marks the session seen, but writes it at most once a minute: a
//! reconnect storm reads the sessions instead of writing each one.

use std::sync::Arc;

use chattr_api::v1::Credentials;
use chattr_auth::{Auth, AuthSettings, TokenKeys};
use chattr_proto::auth::{AuthService, ClientInfo};
use secrecy::SecretString;
use tokio::sync::Notify;

/// An auth service on in-memory backends, with cheap password hashing; and its store.
async fn auth_on_memory() -> (chattr_store::DynStore, Auth) {
    let store = chattr_store::open("memory://").await.unwrap();
    let cache = chattr_cache::open("memory://").await.unwrap();
    let settings = AuthSettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..AuthSettings::default() };
    let keys = TokenKeys::new(&SecretString::from("a test secret that is long enough".to_owned()));
    let auth = Auth::new(store.clone(), cache, keys, settings, Arc::new(Notify::new())).unwrap();
    (store, auth)
}

#[tokio::test]
async fn touch_writes_a_stale_last_seen_and_skips_a_fresh_one() {
    let (store, auth) = auth_on_memory().await;
    let creds = Credentials { username: "alice".into(), password: "correct horse battery".into() };
    let session = auth.signup(creds, ClientInfo::default()).await.unwrap();
    let who = auth.authenticate(&session.access_token).await.unwrap();
    let seen = || async { store.session(who.session_id).await.unwrap().unwrap().last_seen_at };

    // Fresh (the signup just set it): left alone.
    let at_signup = seen().await;
    auth.touch(who).await.unwrap();
    auth.authenticate(&session.access_token).await.unwrap();
    assert_eq!(seen().await, at_signup);

    // Two minutes old: written.
    let old = chattr_core::now() - chrono::TimeDelta::seconds(120);
    store.touch_sessions(&[who.session_id], old).await.unwrap();
    assert_eq!(seen().await.timestamp_millis(), old.timestamp_millis());
    auth.authenticate(&session.access_token).await.unwrap();
    let after = seen().await;
    assert!(
        after >= at_signup && after > old,
        "a stale session is marked seen again: {after} {at_signup} {old}"
    );
}

#[tokio::test]
async fn authenticating_many_marks_only_the_stale_sessions_seen() {
    let (store, auth) = auth_on_memory().await;
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let creds = Credentials { username: name.into(), password: "correct horse battery".into() };
        tokens.push(auth.signup(creds, ClientInfo::default()).await.unwrap().access_token);
    }
    let who: Vec<_> = auth.authenticate_many(&tokens).await.unwrap().into_iter().flatten().collect();
    assert_eq!(who.len(), 2);
    let seen = |i: usize| {
        let store = store.clone();
        let id = who[i].session_id;
        async move { store.session(id).await.unwrap().unwrap().last_seen_at }
    };
    // Alice's session was last seen two minutes ago, bob's just now.
    let old = chattr_core::now() - chrono::TimeDelta::seconds(120);
    store.touch_sessions(&[who[0].session_id], old).await.unwrap();
    let bob_seen = seen(1).await;
    let again = auth.authenticate_many(&tokens).await.unwrap();
    assert_eq!(again, [Some(who[0]), Some(who[1])]);
    assert!(seen(0).await > old, "the stale session is marked seen");
    assert_eq!(seen(1).await, bob_seen, "the fresh one is left alone");
}
