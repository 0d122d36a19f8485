//! The remote clients against real gRPC servers over TCP: the same results and the same
//! error codes as in one process, failover between instances, deadlines.

use std::sync::Arc;
use std::time::Duration;

use chattr_api::v1::{codes, ConversationKind, CreateConversation, Credentials, SendMessage};
use chattr_auth::{Auth, AuthSettings, TokenKeys};
use chattr_messaging::{Messaging, MessagingSettings};
use chattr_proto::auth::{AuthClient, ClientInfo};
use chattr_proto::messaging::{HistoryQuery, MessagingClient};
use chattr_proto::ErrorInfo;
use chattr_rpc::{RemoteAuth, RemoteMessaging, RemoteSettings};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

/// One instance of auth + messaging on a shared store, served over gRPC.
struct Instance {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(store: chattr_store::DynStore, cache: chattr_cache::DynCache) -> Self {
        Self::start_with_secret(store, cache, None).await
    }

    async fn start_with_secret(
        store: chattr_store::DynStore,
        cache: chattr_cache::DynCache,
        secret: Option<&'static str>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let settings =
            AuthSettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..AuthSettings::default() };
        let outbox = Arc::new(Notify::new());
        let keys = TokenKeys::new(&SecretString::from("a test secret that is long enough".to_owned()));
        let auth = Auth::new(store.clone(), cache.clone(), keys, settings, outbox.clone()).unwrap();
        let messaging = Messaging::new(store, cache, MessagingSettings::default(), outbox);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            chattr_rpc::serve(
                listener,
                chattr_rpc::Services {
                    auth: Some(AuthClient::local(auth)),
                    messaging: Some(MessagingClient::local(messaging)),
                    video: None,
                },
                secret,
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        Self { addr, stop: Some(stop), task }
    }

    /// Stops serving (in-flight calls finish) and waits until the port is closed.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

async fn backends() -> (tempfile::TempDir, chattr_store::DynStore, chattr_cache::DynCache) {
    let dir = tempfile::tempdir().unwrap();
    let store = chattr_store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let cache = chattr_cache::open("memory://").await.unwrap();
    (dir, store, cache)
}

fn creds(name: &str) -> Credentials {
    Credentials { username: name.to_owned(), password: "correct horse battery".to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_calls_behave_like_local_ones() {
    let (_dir, store, cache) = backends().await;
    let server = Instance::start(store, cache).await;
    let settings = RemoteSettings::default();
    let auth = AuthClient::from_arc(Arc::new(
        RemoteAuth::new(std::slice::from_ref(&server.addr), &settings).unwrap(),
    ));
    let messaging = MessagingClient::from_arc(Arc::new(
        RemoteMessaging::new(std::slice::from_ref(&server.addr), &settings).unwrap(),
    ));

    let client = ClientInfo { user_agent: Some("test".into()), ip: Some("127.0.0.9".parse().unwrap()) };
    let alice = auth.signup(creds("alice"), client.clone()).await.unwrap();
    let bob = auth.signup(creds("bob"), client.clone()).await.unwrap();
    let who = auth.authenticate(&alice.access_token).await.unwrap();
    assert_eq!(who.user_id, alice.user.id);
    assert_eq!(auth.user(bob.user.id).await.unwrap().username, "bob");

    // Typed errors cross the hop with their stable codes.
    let taken = auth.signup(creds("alice"), client.clone()).await.unwrap_err();
    assert_eq!(taken.code(), codes::USERNAME_TAKEN);
    let bad_name = auth.signup(creds("A!"), client.clone()).await.unwrap_err();
    assert_eq!(bad_name.code(), codes::INVALID_USERNAME);
    assert_eq!(bad_name.http_status(), 400);
    let wrong = Credentials { username: "alice".into(), password: "wrong password!".into() };
    assert_eq!(auth.login(wrong, client.clone()).await.unwrap_err().code(), codes::INVALID_CREDENTIALS);
    assert_eq!(auth.authenticate("garbage").await.unwrap_err().code(), codes::UNAUTHORIZED);

    // Messaging round trip, and NotFound/Forbidden as in one process.
    let req = CreateConversation {
        kind: ConversationKind::Group,
        members: vec![bob.user.id],
        title: Some("team".into()),
    };
    let (conv, created) = messaging.create_conversation(alice.user.id, req).await.unwrap();
    assert!(created);
    assert_eq!(conv.members.len(), 2);
    let send = SendMessage { client_msg_id: "m-1".into(), body: "hello over gRPC".into() };
    let (first, new) = messaging.send(alice.user.id, conv.id, send.clone()).await.unwrap();
    assert!(new);
    let (again, new_again) = messaging.send(alice.user.id, conv.id, send).await.unwrap();
    assert_eq!((again.id, new_again), (first.id, false));
    let history = messaging.history(bob.user.id, conv.id, HistoryQuery::default()).await.unwrap();
    assert_eq!(history, vec![first.clone()]);
    let stranger = auth.signup(creds("mallory"), client.clone()).await.unwrap();
    let hidden = messaging.history(stranger.user.id, conv.id, HistoryQuery::default()).await.unwrap_err();
    assert_eq!(hidden.code(), codes::NOT_FOUND);
    let rename = messaging.rename(bob.user.id, conv.id, "mine").await.unwrap_err();
    assert_eq!(rename.code(), codes::FORBIDDEN);
    assert_eq!(rename.public_message(), "only the group owner can do this");
    assert_eq!(messaging.mark_read(bob.user.id, conv.id, first.seq).await.unwrap(), first.seq);
    assert_eq!(messaging.latest_seqs(bob.user.id).await.unwrap(), vec![(conv.id, first.seq)]);
    // A gateway's batched heartbeat: presence for each connection, seqs for each user.
    let live =
        [(alice.user.id, "a1".to_owned()), (bob.user.id, "b1".to_owned()), (alice.user.id, "a2".to_owned())];
    let latest = messaging.heartbeat(&live).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[&alice.user.id], vec![(conv.id, first.seq)]);
    assert_eq!(latest[&bob.user.id], vec![(conv.id, first.seq)]);
    let seen = messaging.presence(alice.user.id, &[bob.user.id]).await.unwrap();
    assert!(seen[0].online, "the heartbeat marked bob's connection live");
    // A gateway's closed sockets at once: bob's only connection takes him offline, alice
    // keeps a2.
    let gone = [(alice.user.id, "a1".to_owned()), (bob.user.id, "b1".to_owned())];
    messaging.presence_down_many(&gone).await.unwrap();
    let seen = messaging.presence(alice.user.id, &[bob.user.id]).await.unwrap();
    assert!(!seen[0].online && seen[0].last_seen_at.is_some(), "bob's last connection closed");
    let seen = messaging.presence(bob.user.id, &[alice.user.id]).await.unwrap();
    assert!(seen[0].online, "alice still has a2");
    messaging.presence_down_many(&[]).await.unwrap();
    let bob_who = auth.authenticate(&bob.access_token).await.unwrap();
    let sessions = auth.sessions(who).await.unwrap();
    assert_eq!(sessions.len(), 1);
    // Many tokens at once: one answer each, in order; garbage authenticates no one.
    let tokens = [alice.access_token.clone(), "garbage".to_owned(), bob.access_token.clone()];
    assert_eq!(auth.authenticate_many(&tokens).await.unwrap(), [Some(who), None, Some(bob_who)]);
    assert!(auth.authenticate_many(&[]).await.unwrap().is_empty());
    auth.logout(who).await.unwrap();
    assert_eq!(auth.authenticate_many(&tokens).await.unwrap(), [None, None, Some(bob_who)], "logged out");
    assert_eq!(auth.check_session(who).await.unwrap_err().code(), codes::UNAUTHORIZED);
    // Many sessions at once: answers in order; a forged principal (bob's user, alice's
    // session) is not live either.
    let forged = chattr_proto::Principal { user_id: bob.user.id, session_id: who.session_id };
    assert_eq!(auth.check_sessions(&[bob_who, who, forged]).await.unwrap(), [true, false, false]);
    assert!(auth.check_sessions(&[]).await.unwrap().is_empty());
    // Many profiles at once: those that exist, whatever the order; an unknown id is left out.
    let mut users = auth.users(&[bob.user.id, uuid::Uuid::now_v7(), alice.user.id]).await.unwrap();
    users.sort_by_key(|u| u.username.clone());
    assert_eq!(users, vec![alice.user.clone(), bob.user.clone()]);
    assert!(auth.users(&[]).await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_to_a_live_instance() {
    let (_dir, store, cache) = backends().await;
    let one = Instance::start(store.clone(), cache.clone()).await;
    let two = Instance::start(store, cache).await;
    // A third address where nothing listens: a crashed instance. The port stays bound
    // (never listening), so no other test can take it meanwhile.
    let (dead, _held) = refusing_address();
    let addrs = vec![dead, one.addr.clone(), two.addr.clone()];
    let settings = RemoteSettings::default();
    let auth = RemoteAuth::new(&addrs, &settings).unwrap();
    let messaging = MessagingClient::from_arc(Arc::new(RemoteMessaging::new(&addrs, &settings).unwrap()));
    let auth = AuthClient::from_arc(Arc::new(auth));

    // Signup must not repeat, yet it fails over from the dead address: it never left.
    let alice = auth.signup(creds("alice"), ClientInfo::default()).await.unwrap();
    let (conv, _) = messaging
        .create_conversation(
            alice.user.id,
            CreateConversation { kind: ConversationKind::Group, members: vec![], title: Some("solo".into()) },
        )
        .await
        .unwrap();
    for i in 0..20 {
        let send = SendMessage { client_msg_id: format!("a-{i}"), body: format!("n{i}") };
        messaging.send(alice.user.id, conv.id, send).await.unwrap();
    }
    // Kill one live instance; every later call still succeeds on the other.
    one.stop().await;
    for i in 20..40 {
        let send = SendMessage { client_msg_id: format!("a-{i}"), body: format!("n{i}") };
        messaging.send(alice.user.id, conv.id, send).await.unwrap();
    }
    let q = HistoryQuery { limit: Some(100), ..HistoryQuery::default() };
    let history = messaging.history(alice.user.id, conv.id, q).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    two.stop().await;

    // With no instance left, calls fail as `unavailable` (retryable), and quickly.
    let started = std::time::Instant::now();
    let err = messaging.latest_seqs(alice.user.id).await.unwrap_err();
    assert_eq!(err.code(), codes::UNAVAILABLE);
    assert_eq!(err.http_status(), 503);
    assert!(started.elapsed() < settings.deadline, "gave up after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_instance_hits_the_deadline() {
    // A listener that accepts connections and never answers: the call must end at the
    // deadline with `unavailable`, not hang.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let settings = RemoteSettings { deadline: Duration::from_millis(300), ..RemoteSettings::default() };
    let messaging = RemoteMessaging::new(&[addr], &settings).unwrap();
    let messaging = MessagingClient::from_arc(Arc::new(messaging));
    let started = std::time::Instant::now();
    let err = messaging.latest_seqs(uuid::Uuid::now_v7()).await.unwrap_err();
    assert_eq!(err.code(), codes::UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_crosses_the_hop_into_the_outbox() {
    use chattr_core::trace::{self, TraceContext};
    let (_dir, store, cache) = backends().await;
    let server = Instance::start(store.clone(), cache).await;
    let auth = RemoteAuth::new(std::slice::from_ref(&server.addr), &RemoteSettings::default()).unwrap();
    let auth = AuthClient::from_arc(Arc::new(auth));
    let request = TraceContext::new_root();
    let alice = trace::scope(request, auth.signup(creds("alice"), ClientInfo::default())).await.unwrap();
    let rows = store.outbox_pending(100).await.unwrap();
    let row = rows
        .iter()
        .find(|r| matches!(&r.event, chattr_core::events::Event::UserRegistered { user_id, .. } if *user_id == alice.user.id))
        .expect("user.registered row");
    let written = TraceContext::parse(row.traceparent.as_deref().expect("traceparent")).unwrap();
    assert_eq!(written.trace_id, request.trace_id, "the server's write joined the caller's trace");
    // A call made outside any trace starts one on the server.
    let bob = auth.signup(creds("bob"), ClientInfo::default()).await.unwrap();
    let rows = store.outbox_pending(100).await.unwrap();
    let bob_row = rows
        .iter()
        .find(|r| matches!(&r.event, chattr_core::events::Event::UserRegistered { user_id, .. } if *user_id == bob.user.id))
        .unwrap();
    let fresh = TraceContext::parse(bob_row.traceparent.as_deref().unwrap()).unwrap();
    assert_ne!(fresh.trace_id, request.trace_id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_with_a_secret_refuse_callers_without_it() {
    let (_dir, store, cache) = backends().await;
    let server = Instance::start_with_secret(store, cache, Some("s3cret-between-services")).await;
    let addrs = std::slice::from_ref(&server.addr);
    let client = |secret: Option<&str>| {
        let settings = RemoteSettings { secret: secret.map(str::to_owned), ..RemoteSettings::default() };
        AuthClient::from_arc(Arc::new(RemoteAuth::new(addrs, &settings).unwrap()))
    };
    for wrong in [None, Some("guess"), Some("s3cret-between-service")] {
        let err = client(wrong).signup(creds("mallory"), ClientInfo::default()).await.unwrap_err();
        assert_eq!(err.code(), codes::INTERNAL, "{wrong:?}: {err}");
        assert!(err.to_string().contains("Unauthenticated"), "{err}");
    }
    let ok = client(Some("s3cret-between-services")).signup(creds("alice"), ClientInfo::default()).await;
    assert_eq!(ok.unwrap().user.username, "alice");
    let messaging = RemoteMessaging::new(addrs, &RemoteSettings::default()).unwrap();
    let refused = MessagingClient::from_arc(Arc::new(messaging)).latest_seqs(uuid::Uuid::now_v7()).await;
    assert_eq!(refused.unwrap_err().code(), codes::INTERNAL, "messaging checks the secret too");
    server.stop().await;
}

/// An address that refuses connections: bound, never listening, held by the returned
/// socket for as long as the caller keeps it.
fn refusing_address() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().to_string(), socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_dying_under_a_call_fails_it_over_when_safe() {
    // An "instance" that takes the request and dies before answering (kill -9 mid-call).
    let dying = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying_addr = dying.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = dying.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(socket);
            });
        }
    });
    let (_dir, store, cache) = backends().await;
    let live = Instance::start(store, cache).await;
    let addrs = vec![dying_addr, live.addr.clone()];
    let settings = RemoteSettings::default();
    let auth =
        AuthClient::from_arc(Arc::new(RemoteAuth::new(std::slice::from_ref(&live.addr), &settings).unwrap()));
    let alice = auth.signup(creds("alice"), ClientInfo::default()).await.unwrap();
    let messaging = MessagingClient::from_arc(Arc::new(RemoteMessaging::new(&addrs, &settings).unwrap()));
    // Idempotent: the first call goes to the dying instance and is repeated on the live one.
    let seqs = messaging.latest_seqs(alice.user.id).await.expect("failed over");
    assert!(seqs.is_empty());
    // Not idempotent (a group created twice is two groups): reported, not repeated. The
    // balancer has moved on after the failure, so point a fresh one at the dying instance.
    let once = RemoteMessaging::new(&addrs[..1], &settings).unwrap();
    let once = MessagingClient::from_arc(Arc::new(once));
    let group =
        CreateConversation { kind: ConversationKind::Group, members: vec![], title: Some("g".into()) };
    let err = once.create_conversation(alice.user.id, group).await.unwrap_err();
    assert_eq!(err.code(), codes::UNAVAILABLE, "{err}");
    live.stop().await;
}
