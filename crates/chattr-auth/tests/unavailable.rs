//! A backend outage is `unavailable` (HTTP 503, retry), not an internal error: Redis
//! (rate limits live there) stopped under a running auth service, with a real
//! `redis-server` from the test kit.

use std::sync::Arc;

use chattr_api::v1::{codes, Credentials};
use chattr_auth::{Auth, AuthSettings, TokenKeys};
use chattr_proto::auth::{AuthService, ClientInfo};
use chattr_proto::ErrorInfo;
use chattr_testkit::redis::RedisServer;
use secrecy::SecretString;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_while_redis_is_down_are_unavailable_and_work_again_after() {
    let mut redis = tokio::task::block_in_place(|| RedisServer::start(None));
    let port = redis.port();
    let store = chattr_store::open("memory://").await.unwrap();
    let cache = chattr_cache::open(&redis.url()).await.unwrap();
    let settings = AuthSettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..AuthSettings::default() };
    let keys = TokenKeys::new(&SecretString::from("a test secret that is long enough".to_owned()));
    let auth = Auth::new(store, cache, keys, settings, Arc::new(Notify::new())).unwrap();
    let creds = || Credentials { username: "alice".into(), password: "correct horse battery".into() };
    auth.signup(creds(), ClientInfo::default()).await.unwrap();

    tokio::task::block_in_place(|| redis.stop());
    let err = auth.login(creds(), ClientInfo::default()).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), (codes::UNAVAILABLE, 503), "{err}");
    assert_eq!(err.public_message(), "service unavailable, retry shortly", "no internals leak");

    let _back = tokio::task::block_in_place(|| RedisServer::start(Some(port)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match auth.login(creds(), ClientInfo::default()).await {
            Ok(session) => break assert_eq!(session.user.username, "alice"),
            Err(e) if e.code() == codes::UNAVAILABLE && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("login after Redis came back: {e}"),
        }
    }
}
