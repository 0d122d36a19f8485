//! Authenticating marks the session seen, but writes it at most once a minute: a
//! reconnect storm reads the sessions instead of writing each one.

use std::sync::Arc;

use chattr_api::v1::Credentials;
use chattr_auth::{Auth, AuthSettings, TokenKeys};
use chattr_proto::auth::{AuthService, ClientInfo};
use secrecy::SecretString;
use tokio::sync::Notify;

#[tokio::test]
async fn touch_writes_a_stale_last_seen_and_skips_a_fresh_one() {
    let store = chattr_store::open("memory://").await.unwrap();
    let cache = chattr_cache::open("memory://").await.unwrap();
    let settings = AuthSettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..AuthSettings::default() };
    let keys = TokenKeys::new(&SecretString::from("a test secret that is long enough".to_owned()));
    let auth = Auth::new(store.clone(), cache, keys, settings, Arc::new(Notify::new())).unwrap();
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
    store.touch_session(who.session_id, old).await.unwrap();
    assert_eq!(seen().await.timestamp_millis(), old.timestamp_millis());
    auth.authenticate(&session.access_token).await.unwrap();
    let after = seen().await;
    assert!(
        after >= at_signup && after > old,
        "a stale session is marked seen again: {after} {at_signup} {old}"
    );
}
