//! The call service over the real in-memory cache and bus, with tokio's clock paused: ring
//! timeouts, grace periods and record expiry are exercised in simulated time, exactly.

use std::sync::Arc;
use std::time::Duration;

use chattr_api::v1::{Call, CallOutcome, CallState, ConversationKind, CreateConversation, ServerFrame};
use chattr_bus::{inproc::InProcBus, DynBus, StartFrom};
use chattr_cache::{memory::MemoryCache, DynCache};
use chattr_core::events::{Event, TOPIC_CALLS};
use chattr_messaging::{Messaging, MessagingSettings};
use chattr_proto::delivery::{user_channel, Delivery};
use chattr_proto::messaging::MessagingClient;
use chattr_proto::video::{VideoError, VideoService};
use chattr_proto::Principal;
use chattr_store::{memory::MemoryStore, DynStore, UserRecord};
use chattr_video::{Video, VideoSettings};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

struct World {
    store: DynStore,
    cache: DynCache,
    bus: DynBus,
    messaging: MessagingClient,
}

impl World {
    fn new() -> Self {
        let store: DynStore = Arc::new(MemoryStore::default());
        let cache: DynCache = Arc::new(MemoryCache::default());
        let bus: DynBus = Arc::new(InProcBus::default());
        let messaging = Messaging::new(
            store.clone(),
            cache.clone(),
            MessagingSettings::default(),
            Arc::new(Notify::new()),
        );
        Self { store, cache, bus, messaging: MessagingClient::local(messaging) }
    }

    /// A video instance; `timers` runs its sweeper (a crashed instance has none).
    fn video(&self, timers: bool) -> Arc<Video> {
        let settings =
            VideoSettings { ring_secs: Some(30), grace_secs: Some(10), ..VideoSettings::default() };
        let video =
            Arc::new(Video::new(settings, self.cache.clone(), self.bus.clone(), self.messaging.clone()));
        if timers {
            tokio::spawn(video.clone().run_timers(std::future::pending()));
        }
        video
    }

    async fn user(&self, name: &str) -> Uuid {
        let id = Uuid::now_v7();
        let record = UserRecord {
            id,
            username: format!("{name}{}", &id.simple().to_string()[24..]),
            password_hash: "unused".into(),
            created_at: chrono::Utc::now(),
        };
        self.store.create_user(&record).await.unwrap();
        id
    }

    async fn conversation(&self, owner: Uuid, others: &[Uuid]) -> Uuid {
        let kind = if others.len() == 1 { ConversationKind::Direct } else { ConversationKind::Group };
        let title = (kind == ConversationKind::Group).then(|| "group".to_owned());
        let req = CreateConversation { kind, members: others.to_vec(), title };
        self.messaging.create_conversation(owner, req).await.unwrap().0.id
    }

    /// The `call` frames published to `user`.
    async fn frames_of(&self, user: Uuid) -> mpsc::Receiver<(String, bytes::Bytes)> {
        let pubsub = self.cache.pubsub(256).await.unwrap();
        pubsub.control.subscribe(&[user_channel(user)]).await.unwrap();
        // Keep the control alive as long as the receiver: leak it into a task.
        let control = pubsub.control;
        tokio::spawn(async move {
            let _control = control;
            std::future::pending::<()>().await;
        });
        pubsub.messages
    }
}

/// What a gateway does for a device in a call: a keepalive every 3 s while its socket
/// lives (here: until the test ends).
fn keep_alive(video: &Arc<Video>, who: Principal) {
    let video = video.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = video.keepalive(who).await;
        }
    });
}

fn device(user: Uuid) -> Principal {
    Principal { user_id: user, session_id: Uuid::now_v7() }
}

/// The next `call` frame on a user's channel.
async fn next_call(rx: &mut mpsc::Receiver<(String, bytes::Bytes)>) -> Call {
    loop {
        let (_, payload) = tokio::time::timeout(Duration::from_secs(600), rx.recv()).await.unwrap().unwrap();
        let delivery = Delivery::decode(payload).unwrap();
        if let Ok(ServerFrame::Call { call, .. }) = serde_json::from_slice(&delivery.frame) {
            return call;
        }
    }
}

async fn ended(rx: &mut mpsc::Receiver<(String, bytes::Bytes)>) -> Call {
    loop {
        let call = next_call(rx).await;
        if call.state == CallState::Ended {
            return call;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn unanswered_ringing_ends_as_missed_exactly_at_the_ring_timeout() {
    let w = World::new();
    let video = w.video(true);
    let (alice, bob) = (w.user("alice").await, w.user("bob").await);
    let conv = w.conversation(alice, &[bob]).await;
    let mut events = w.bus.subscribe(TOPIC_CALLS, "test", StartFrom::Earliest).await.unwrap();
    let mut bob_frames = w.frames_of(bob).await;
    let started = tokio::time::Instant::now();
    let caller = device(alice);
    let call = video.start(caller, conv).await.unwrap();
    keep_alive(&video, caller);
    assert_eq!(next_call(&mut bob_frames).await.ringing, vec![bob]);
    let over = ended(&mut bob_frames).await;
    let waited = started.elapsed();
    assert_eq!(over.outcome, Some(CallOutcome::Missed));
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_millis(30_500), "{waited:?}");
    // The bus saw the whole story, ending with the outcome messaging summarises.
    let mut kinds = Vec::new();
    loop {
        let record = events.next().await.unwrap();
        let event: Event = serde_json::from_slice(&record.payload).unwrap();
        kinds.push(event.kind());
        if let Event::CallEnded { call_id, outcome, participants, .. } = event {
            assert_eq!((call_id, outcome, participants), (call.id, CallOutcome::Missed, vec![alice]));
            break;
        }
    }
    assert_eq!(kinds, ["call.started", "call.participant_joined", "call.participant_left", "call.ended"]);
    // Once ended, the call is forgotten.
    assert!(matches!(video.answer(device(bob), call.id).await, Err(VideoError::NotFound)));
}

#[tokio::test(start_paused = true)]
async fn every_device_rings_and_answering_on_one_stops_the_rest() {
    let w = World::new();
    let video = w.video(true);
    let (alice, bob) = (w.user("alice").await, w.user("bob").await);
    let conv = w.conversation(alice, &[bob]).await;
    let mut bob_frames = w.frames_of(bob).await;
    let caller = device(alice);
    let call = video.start(caller, conv).await.unwrap();
    keep_alive(&video, caller);
    // One frame per user channel: every device of the user gets it from the gateway.
    assert_eq!(next_call(&mut bob_frames).await.ringing, vec![bob]);
    let (phone, laptop) = (device(bob), device(bob));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let on_phone = video.answer(phone, call.id).await.unwrap();
    assert_eq!(on_phone.state, CallState::Active);
    assert!(on_phone.ringing.is_empty(), "the other devices stop ringing");
    assert!(on_phone.participants.iter().any(|p| p.session_id == phone.session_id));
    // Moving the call to the laptop replaces the phone.
    let moved = video.answer(laptop, call.id).await.unwrap();
    keep_alive(&video, laptop);
    let bob_in = moved.participants.iter().find(|p| p.user_id == bob).unwrap();
    assert_eq!(bob_in.session_id, laptop.session_id);
    // Signals to the phone are refused now; to the laptop they go through.
    let offer = chattr_api::v1::Signal::Offer { sdp: "v=0\r\n".into() };
    let to_phone = video.signal(device(alice), call.id, phone.session_id, offer.clone()).await;
    assert!(
        matches!(to_phone, Err(VideoError::Forbidden(_))),
        "the caller's new device is not in the call either"
    );
    // Long past the ring timeout the call runs on: it was answered.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(video.keepalive(laptop).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_user_in_a_call_is_busy_for_others() {
    let w = World::new();
    let video = w.video(true);
    let (alice, carol, dave) = (w.user("alice").await, w.user("carol").await, w.user("dave").await);
    let (cd, ac) = (w.conversation(carol, &[dave]).await, w.conversation(alice, &[carol]).await);
    let carol_dev = device(carol);
    let first = video.start(carol_dev, cd).await.unwrap();
    video.answer(device(dave), first.id).await.unwrap();
    let mut alice_frames = w.frames_of(alice).await;
    let second = video.start(device(alice), ac).await.unwrap();
    assert_eq!(second.state, CallState::Ended, "carol is busy: the call ends at once");
    assert_eq!(ended(&mut alice_frames).await.outcome, Some(CallOutcome::Declined));
    assert!(matches!(video.start(carol_dev, ac).await, Err(VideoError::Busy)));
    // Once carol hangs up, she can be called.
    video.leave(carol_dev, first.id).await.unwrap();
    let third = video.start(device(alice), ac).await.unwrap();
    assert_eq!((third.state, third.ringing.clone()), (CallState::Ringing, vec![carol]));
}

#[tokio::test(start_paused = true)]
async fn a_device_that_goes_silent_is_dropped_after_the_grace_period_and_keepalives_keep_it() {
    let w = World::new();
    let video = w.video(true);
    let users = [w.user("a").await, w.user("b").await, w.user("c").await];
    let group = w.conversation(users[0], &users[1..]).await;
    let devices = users.map(device);
    let mut frames = w.frames_of(users[0]).await;
    let call = video.start(devices[0], group).await.unwrap();
    video.answer(devices[1], call.id).await.unwrap();
    video.answer(devices[2], call.id).await.unwrap();
    // a and b keep their sockets alive (the gateway sends keepalives every 3 s); c's
    // socket closed.
    video.disconnected(devices[2]).await.unwrap();
    let dropped_at = tokio::time::Instant::now() + Duration::from_secs(10);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(video.keepalive(devices[0]).await.unwrap());
        assert!(video.keepalive(devices[1]).await.unwrap());
    }
    let mut without_c = None;
    while let Ok(Some((_, payload))) = tokio::time::timeout(Duration::ZERO, frames.recv()).await {
        if let Ok(ServerFrame::Call { call, .. }) =
            serde_json::from_slice(&Delivery::decode(payload).unwrap().frame)
        {
            if call.participants.len() == 2 && without_c.is_none() {
                without_c = Some(call);
            }
        }
    }
    let call_now = without_c.expect("c was dropped");
    assert!(call_now.participants.iter().all(|p| p.user_id != users[2]));
    assert_eq!(call_now.state, CallState::Active);
    assert!(tokio::time::Instant::now() > dropped_at);
    assert!(!video.keepalive(devices[2]).await.unwrap(), "c is in no call now");
    // Rejoining within the grace period would have kept the place; now c can join again.
    video.answer(devices[2], call.id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn calls_outlive_a_crashed_instance_and_ghosts_expire_when_nobody_serves_them() {
    let w = World::new();
    let (alice, bob) = (w.user("alice").await, w.user("bob").await);
    let conv = w.conversation(alice, &[bob]).await;
    let mut bob_frames = w.frames_of(bob).await;
    // The instance that started the call dies (no timers); another one's timers end it.
    let crashed = w.video(false);
    let caller = device(alice);
    let call = crashed.start(caller, conv).await.unwrap();
    drop(crashed);
    // The caller's gateway now reaches the surviving instance.
    let survivor = w.video(true);
    keep_alive(&survivor, caller);
    let over = ended(&mut bob_frames).await;
    assert_eq!((over.id, over.outcome), (call.id, Some(CallOutcome::Missed)));

    // With no instance running timers at all, the records expire: the next call in the
    // conversation is a new one, not the ghost, and nobody is left busy.
    let w = World::new();
    let (alice, bob) = (w.user("alice").await, w.user("bob").await);
    let conv = w.conversation(alice, &[bob]).await;
    let ghost = w.video(false).start(device(alice), conv).await.unwrap();
    let joined = w.video(false).start(device(bob), conv).await.unwrap();
    assert_eq!(joined.id, ghost.id, "while it lives, calling joins it");
    tokio::time::sleep(Duration::from_secs(300)).await;
    let fresh = w.video(false).start(device(bob), conv).await.unwrap();
    assert_ne!(fresh.id, ghost.id);
    assert_eq!((fresh.caller_id, fresh.state), (bob, CallState::Ringing));
}

#[tokio::test(start_paused = true)]
async fn ringing_someone_over_and_over_is_rate_limited() {
    let w = World::new();
    let video = w.video(true);
    let (alice, bob) = (w.user("alice").await, w.user("bob").await);
    let conv = w.conversation(alice, &[bob]).await;
    let caller = device(alice);
    for _ in 0..10 {
        let call = video.start(caller, conv).await.unwrap();
        video.leave(caller, call.id).await.unwrap();
    }
    let Err(VideoError::RateLimited { retry_after }) = video.start(caller, conv).await else {
        panic!("the 11th call within a minute must be refused");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(6), "{retry_after:?}");
    // Bob is not limited by Alice's calls, and Alice may call again after the wait.
    let bobs = video.start(device(bob), conv).await.unwrap();
    video.leave(device(bob), bobs.id).await.unwrap_or(());
    tokio::time::sleep(retry_after).await;
    assert!(video.start(caller, conv).await.is_ok());
}
