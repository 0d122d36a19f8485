//! The cluster test: Chattr in its distributed shape — 2 gateways, 2 messaging, 1 auth,
//! 2 relays (one leads, one stands by), 2 fan-out and 2 video instances, each its own
//! process — on PostgreSQL, Redis and Kafka, under a verifying chat workload, through six
//! faults:
//!
//! 1. `kill -9` of a gateway: its clients fail over to the other gateway and resume;
//! 2. `kill -9` of a messaging instance: gateways fail over; sends in flight are retried
//!    (same `client_msg_id`) and succeed once;
//! 3. `kill -9` of the relay holding the outbox lease: the standby relay takes over;
//! 4. `kill -9` of a fan-out instance: the other takes over its partitions;
//! 5. a Redis restart: pub/sub is lost meanwhile, heartbeats reveal the gap, clients fill it;
//! 6. a Kafka broker restart (durable engine): the relay and fan-out carry on.
//!
//! Every acknowledged message must reach every member exactly once, in order. The report
//! (printed; run with `--nocapture` to see it) gives per fault: lost, duplicated, out of
//! order, and the time until delivery resumed.
//!
//! Two more tests: a crashed gateway's users go offline within the presence TTL; and a call
//! whose two sides sit on different gateways keeps signaling and stays up through a
//! `kill -9` of a video instance, then ends with its summary in the timeline.

#[path = "e2e/cluster.rs"]
#[allow(dead_code)] // The e2e profile uses the rest of it.
mod cluster;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chattr_client::{Client, LiveEvent};
use chattr_server::Settings;
use chattr_testkit::kafka::KafkaServer;
use chattr_testkit::redis::RedisServer;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use uuid::Uuid;

use cluster::{Cluster, Shape};

const PASSWORD: &str = "correct horse battery";
/// Users of the workload; the first half start on gateway 0, the rest on gateway 1.
const USERS: usize = 6;
/// Pause between two sends of one user.
const SEND_EVERY: Duration = Duration::from_millis(40);
/// Bound for the whole cluster to deliver everything after the last fault.
const SETTLE: Duration = Duration::from_secs(60);

/// One acknowledged message.
#[derive(Debug, Clone)]
struct Acked {
    conversation: Uuid,
    seq: u64,
    client_msg_id: String,
    at: Instant,
}

/// Everything the workload observed, shared by its tasks.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    /// Per user: every delivery (conversation, seq, client_msg_id, when), in arrival order.
    received: HashMap<usize, Vec<(Uuid, u64, String, Instant)>>,
    /// Send attempts that failed and were retried with the same id.
    send_retries: u64,
}

/// A fault and when it happened.
struct Fault {
    name: &'static str,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_loses_nothing_through_crashes_and_restarts() {
    // ---- the cluster: own Redis and Kafka (they get restarted), a fresh database ----
    let mut redis = RedisServer::start(None);
    let mut kafka = KafkaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    settings.store = Some(chattr_testkit::postgres::fresh_database_url().await);
    settings.cache = redis.url();
    settings.bus = format!("{}?delivery_timeout_ms=10000", kafka.url());
    // Heartbeats carry each conversation's newest seq: the clients' gap detector.
    settings.gateway.heartbeat_secs = 1;
    // Generous limits: the workload is fast, and the point is faults, not floods.
    settings.gateway.frames_per_second = 1000;
    settings.gateway.frame_burst = 1000;
    let shape = Shape { messaging: 2, relays: 2, fanouts: 2, video: 2, gateways: 2, ..Shape::default() };
    let mut cluster = Cluster::start_shape(&settings, dir.path(), shape);
    let workload = Workload::start(&cluster).await;

    // ---- faults, under traffic ----
    let mut faults = Vec::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    faults.push(Fault { name: "kill -9 gateway 0", at: Instant::now() });
    blocking(|| cluster.gateways[0].process.kill());
    tokio::time::sleep(Duration::from_secs(6)).await;
    faults.push(Fault { name: "kill -9 messaging 0", at: Instant::now() });
    blocking(|| cluster.messaging[0].process.kill());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let leader = leading_relay(&cluster).await;
    faults.push(Fault { name: "kill -9 leading relay", at: Instant::now() });
    blocking(|| cluster.relay[leader].process.kill());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(leading_relay(&cluster).await, 1 - leader, "the standby relay took the lease");
    faults.push(Fault { name: "kill -9 fan-out 0", at: Instant::now() });
    blocking(|| cluster.fanout[0].process.kill());
    tokio::time::sleep(Duration::from_secs(8)).await;
    faults.push(Fault { name: "restart Redis", at: Instant::now() });
    let port = redis.port();
    blocking(|| {
        redis.stop();
        redis = RedisServer::start(Some(port));
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    faults.push(Fault { name: "restart Kafka", at: Instant::now() });
    blocking(|| kafka.restart());
    tokio::time::sleep(Duration::from_secs(8)).await;

    workload.finish(&faults, "cluster test").await;
    blocking(|| cluster.stop());
}

/// A rolling restart of every gateway, then of every messaging instance, under the
/// verifying workload: each process gets SIGTERM and must exit within the bound (a
/// gateway tells its clients to go elsewhere with a resumable close; messaging finishes
/// the calls in flight), and a new process takes its address. Nothing may be lost,
/// duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_gateways_and_messaging_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    cluster::use_shared_backends(&mut settings).await;
    settings.gateway.heartbeat_secs = 1;
    settings.gateway.frames_per_second = 1000;
    settings.gateway.frame_burst = 1000;
    let shape = Shape { messaging: 2, gateways: 2, ..Shape::default() };
    let mut cluster = Cluster::start_shape(&settings, dir.path(), shape);
    let workload = Workload::start(&cluster).await;
    let mut faults = Vec::new();
    let mut stops = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..2 {
        faults.push(Fault { name: ["restart gateway 0", "restart gateway 1"][i], at: Instant::now() });
        stops.push(("gateway", i, blocking(|| cluster.restart_gateway(i))));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for i in 0..2 {
        faults.push(Fault { name: ["restart messaging 0", "restart messaging 1"][i], at: Instant::now() });
        stops.push(("messaging", i, blocking(|| cluster.restart_messaging(i))));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for (role, i, (took, log)) in &stops {
        println!("{role} {i} exited {} ms after SIGTERM", took.as_millis());
        if *role == "gateway" {
            // It had clients and told them to go elsewhere before it exited.
            let told = log.lines().find(|l| l.contains("stopped accepting")).unwrap_or_default();
            assert!(told.contains("sockets=") && !told.contains("sockets=0"), "gateway {i}: {told:?}\n{log}");
            assert!(log.contains("every socket closed"), "gateway {i} exited with sockets open:\n{log}");
        }
    }
    workload.finish(&faults, "rolling restart").await;
    blocking(|| cluster.stop());
}

/// A verifying chat workload: [`USERS`] users spread over two gateways, in directs and
/// groups, each sending round-robin to their conversations (retrying a failed send with
/// the same id until it is acknowledged) while recording every delivery.
struct Workload {
    members: Arc<HashMap<Uuid, Vec<usize>>>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    tasks: JoinSet<()>,
}

impl Workload {
    /// Signs the users up, makes their conversations and starts sending.
    async fn start(cluster: &Cluster) -> Workload {
        let gateways: Vec<String> = cluster.gateways.iter().map(|g| format!("http://{}", g.http)).collect();
        // ---- users, spread over both gateways, in directs and groups ----
        let mut clients = Vec::new();
        for i in 0..USERS {
            let order: Vec<&str> = if i < USERS / 2 {
                vec![&gateways[0], &gateways[1]]
            } else {
                vec![&gateways[1], &gateways[0]]
            };
            let client = Client::with_servers(&order).unwrap();
            client.signup(&format!("{}u{i}", cluster::tenant_name()), PASSWORD).await.unwrap();
            clients.push(client);
        }
        let ids: Vec<Uuid> = clients.iter().map(|c| c.me().unwrap().id).collect();
        let mut members: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (a, b) in [(0, 3), (1, 4), (2, 5), (0, 1), (4, 5)] {
            let conv = clients[a].direct(ids[b]).await.unwrap();
            members.insert(conv.id, vec![a, b]);
        }
        let everyone: Vec<Uuid> = ids[1..].to_vec();
        let all = clients[0].group("everyone", &everyone).await.unwrap();
        members.insert(all.id, (0..USERS).collect());
        let some = clients[1].group("some", &[ids[2], ids[3], ids[4]]).await.unwrap();
        members.insert(some.id, vec![1, 2, 3, 4]);
        let members = Arc::new(members);

        // ---- the workload ----
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        // Every member is connected before anyone sends: a connection starts at the newest
        // seq of each conversation, so earlier messages are history, not deliveries.
        let mut lives = Vec::new();
        for client in &clients {
            lives.push(chattr_client::Live::start(client.clone(), BTreeMap::new()).await.unwrap());
        }
        for ((i, client), mut live) in clients.iter().enumerate().zip(lives) {
            let mine: Vec<Uuid> = members.iter().filter(|(_, m)| m.contains(&i)).map(|(c, _)| *c).collect();
            // Receiver: records every delivery; pages history on a resync.
            let (ledger_rx, client_rx) = (ledger.clone(), client.clone());
            let (commands, mut sends) = tokio::sync::mpsc::channel::<(
                Uuid,
                String,
                tokio::sync::oneshot::Sender<Result<chattr_api::v1::Message, String>>,
            )>(1);
            tasks.spawn(async move {
                let mut cursors: HashMap<Uuid, u64> = HashMap::new();
                let mut sending = true;
                loop {
                    tokio::select! {
                        event = live.next() => match event {
                            Some(LiveEvent::Message(m)) => {
                                cursors.insert(m.conversation_id, m.seq);
                                ledger_rx.lock().received.entry(i).or_default().push((m.conversation_id, m.seq, m.client_msg_id, Instant::now()));
                            }
                            Some(LiveEvent::Resync { conversation_id, last_seq }) => {
                                let mut after = cursors.get(&conversation_id).copied().unwrap_or(0);
                                while after < last_seq {
                                    let Ok(page) = client_rx.history(conversation_id, Some(after), None, Some(100)).await else {
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                        continue;
                                    };
                                    let now = Instant::now();
                                    let mut ledger = ledger_rx.lock();
                                    for m in page {
                                        after = m.seq;
                                        ledger.received.entry(i).or_default().push((m.conversation_id, m.seq, m.client_msg_id, now));
                                    }
                                }
                                cursors.insert(conversation_id, after);
                            }
                            Some(LiveEvent::Closed(reason)) => panic!("user {i}: live connection ended: {reason}"),
                            Some(_) => {}
                            None => return,
                        },
                        send = sends.recv(), if sending => match send {
                            Some((conversation, id, reply)) => {
                                let result = live.send_with_id(conversation, &id, &format!("body of {id}")).await;
                                let _ = reply.send(result.map_err(|e| e.to_string()));
                            }
                            // The sender is done; deliveries keep coming.
                            None => sending = false,
                        },
                    }
                }
            });
            // Sender: round-robin over the user's conversations, unique ids, every ack recorded;
            // a failed send is retried with the same id until it is acknowledged.
            let (ledger_tx, stop, stopping) = (ledger.clone(), stop.clone(), stopping.clone());
            tasks.spawn(async move {
                let mut n = 0u64;
                while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    let conversation = mine[n as usize % mine.len()];
                    let id = format!("u{i}-{n}");
                    n += 1;
                    loop {
                        let (reply, answer) = tokio::sync::oneshot::channel();
                        commands.send((conversation, id.clone(), reply)).await.expect("receiver alive");
                        match answer.await.expect("answered") {
                            Ok(m) => {
                                assert_eq!(m.client_msg_id, id);
                                ledger_tx.lock().acked.push(Acked {
                                    conversation,
                                    seq: m.seq,
                                    client_msg_id: id,
                                    at: Instant::now(),
                                });
                                break;
                            }
                            Err(_) => {
                                ledger_tx.lock().send_retries += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    tokio::select! {
                        _ = stop.notified() => {}
                        _ = tokio::time::sleep(SEND_EVERY) => {}
                    }
                }
            });
        }
        Workload { members, ledger, stop, stopping, tasks }
    }

    /// Stops sending, waits until every member has every acknowledged message, then
    /// judges: nothing lost, duplicated or out of order, per fault window, and delivery
    /// resumed after each fault. Prints the report under `title`.
    async fn finish(self, faults: &[Fault], title: &str) {
        let Workload { members, ledger, stop, stopping, mut tasks } = self;
        // ---- stop sending; wait until every member has every acknowledged message ----
        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        stop.notify_waiters();
        let expected = |ledger: &Ledger| {
            let mut want: HashMap<usize, usize> = HashMap::new();
            for a in &ledger.acked {
                for &m in &members[&a.conversation] {
                    *want.entry(m).or_default() += 1;
                }
            }
            want
        };
        let deadline = Instant::now() + SETTLE;
        loop {
            let done = {
                let ledger = ledger.lock();
                let want = expected(&ledger);
                (0..USERS).all(|u| {
                    let got: HashSet<(Uuid, u64)> = ledger
                        .received
                        .get(&u)
                        .map(|r| r.iter().map(|(c, s, _, _)| (*c, *s)).collect())
                        .unwrap_or_default();
                    got.len() >= want.get(&u).copied().unwrap_or(0)
                })
            };
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let late duplicates, if any, show up before judging.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ledger = ledger.lock();

        // ---- verdict ----
        let acked_by_conv: HashMap<(Uuid, u64), &Acked> =
            ledger.acked.iter().map(|a| ((a.conversation, a.seq), a)).collect();
        assert_eq!(acked_by_conv.len(), ledger.acked.len(), "two acks with one (conversation, seq)");
        let ids_seen: HashSet<&str> = ledger.acked.iter().map(|a| a.client_msg_id.as_str()).collect();
        assert_eq!(ids_seen.len(), ledger.acked.len(), "a client_msg_id was acknowledged twice");
        let mut report = Vec::new();
        let mut windows: Vec<(&str, Instant, Instant)> = Vec::new();
        for (k, f) in faults.iter().enumerate() {
            let end = faults.get(k + 1).map_or_else(|| Instant::now() + Duration::from_secs(3600), |n| n.at);
            windows.push((f.name, f.at, end));
        }
        let window_of = |at: Instant| windows.iter().rposition(|(_, start, _)| at >= *start);
        let mut lost = vec![0u64; faults.len() + 1];
        let mut duplicated = vec![0u64; faults.len() + 1];
        let mut disordered = vec![0u64; faults.len() + 1];
        for u in 0..USERS {
            let received = ledger.received.get(&u).cloned().unwrap_or_default();
            let mut last: HashMap<Uuid, u64> = HashMap::new();
            let mut seen: HashSet<(Uuid, u64)> = HashSet::new();
            for (conv, seq, client_msg_id, at) in &received {
                let w = window_of(*at).map_or(0, |w| w + 1);
                if !seen.insert((*conv, *seq)) {
                    duplicated[w] += 1;
                }
                if last.get(conv).is_some_and(|l| *l >= *seq) {
                    disordered[w] += 1;
                }
                last.insert(*conv, *seq);
                if let Some(a) = acked_by_conv.get(&(*conv, *seq)) {
                    assert_eq!(&a.client_msg_id, client_msg_id, "user {u} got another body at {conv}/{seq}");
                }
            }
            for a in &ledger.acked {
                if members[&a.conversation].contains(&u) && !seen.contains(&(a.conversation, a.seq)) {
                    lost[window_of(a.at).map_or(0, |w| w + 1)] += 1;
                }
            }
        }
        // Time until delivery resumed: from the fault until the last user to get one received
        // a message sent after the fault (every user is in several conversations, so each
        // one's deliveries must have recovered, not just those of unaffected conversations).
        let sent_at: HashMap<(Uuid, u64), Instant> =
            ledger.acked.iter().map(|a| ((a.conversation, a.seq), a.at)).collect();
        for (k, f) in faults.iter().enumerate() {
            let first_per_user: Option<Vec<Instant>> = (0..USERS)
                .map(|u| {
                    ledger
                        .received
                        .get(&u)?
                        .iter()
                        .filter(|(c, q, _, _)| sent_at.get(&(*c, *q)).is_some_and(|t| *t >= f.at))
                        .map(|r| r.3)
                        .min()
                })
                .collect();
            let resumed =
                first_per_user.and_then(|firsts| firsts.into_iter().max()).map(|t| t.duration_since(f.at));
            report.push(format!(
                "{:<24} lost {}, duplicated {}, out of order {}, delivery resumed after {}",
                f.name,
                lost[k + 1],
                duplicated[k + 1],
                disordered[k + 1],
                resumed.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis())),
            ));
        }
        println!(
            "{title}: {} messages acknowledged, {} deliveries, {} send retries\n  before faults            lost {}, duplicated {}, out of order {}\n  {}",
            ledger.acked.len(),
            ledger.received.values().map(Vec::len).sum::<usize>(),
            ledger.send_retries,
            lost[0],
            duplicated[0],
            disordered[0],
            report.join("\n  ")
        );
        assert!(ledger.acked.len() > 200, "the workload barely ran: {} acks", ledger.acked.len());
        assert_eq!(lost.iter().sum::<u64>(), 0, "lost messages: {report:#?}");
        assert_eq!(duplicated.iter().sum::<u64>(), 0, "duplicated messages: {report:#?}");
        assert_eq!(disordered.iter().sum::<u64>(), 0, "out of order: {report:#?}");
        for (k, f) in faults.iter().enumerate() {
            assert!(report[k].contains(" ms"), "delivery never resumed after {}", f.name);
        }
        drop(ledger);
        tasks.abort_all();
    }
}

/// Which relay holds the outbox lease (its `/metrics` says so), waiting for one to.
async fn leading_relay(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, relay) in cluster.relay.iter().enumerate() {
            let url = format!("http://{}/metrics", relay.http);
            if let Ok(response) = reqwest::get(&url).await {
                let text = response.text().await.unwrap_or_default();
                if text.lines().any(|l| l.starts_with("chattr_outbox_relay_leader") && l.ends_with(" 1")) {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no relay holds the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Alice signed up on gateway 0, Bob on gateway 1.
async fn users_on_both_gateways(cluster: &Cluster) -> (Client, Client) {
    let mut users = Vec::new();
    for (gateway, name) in cluster.gateways.iter().zip(["alice", "bob"]) {
        let client = Client::new(&format!("http://{}", gateway.http)).unwrap();
        client.signup(&format!("{}{name}", cluster::tenant_name()), PASSWORD).await.unwrap();
        users.push(client);
    }
    let bob = users.pop().unwrap();
    (users.pop().unwrap(), bob)
}

/// Runs a blocking test-kit call (process control) without stalling the runtime's workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_gateways_users_go_offline_within_the_presence_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    cluster::use_shared_backends(&mut settings).await;
    settings.messaging.presence_ttl_secs = 3;
    settings.gateway.heartbeat_secs = 1;
    let mut cluster = Cluster::start_shape(&settings, dir.path(), Shape { gateways: 2, ..Shape::default() });
    let (alice, bob) = users_on_both_gateways(&cluster).await;
    let alice_id = alice.me().unwrap().id;
    bob.direct(alice_id).await.unwrap();
    let (_socket, _) = alice.connect(BTreeMap::new()).await.unwrap();
    let online = |bob: Client| async move { bob.presence(&[alice_id]).await.unwrap()[0].online };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !online(bob.clone()).await {
        assert!(Instant::now() < deadline, "alice never showed online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Her gateway dies without a word: nobody says she left, the TTL must.
    blocking(|| cluster.gateways[0].process.kill());
    let crashed = Instant::now();
    let ttl = Duration::from_secs(settings.messaging.presence_ttl_secs);
    while online(bob.clone()).await {
        assert!(
            crashed.elapsed() < ttl * 3,
            "alice still online {:?} after her gateway crashed",
            crashed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("offline {:?} after the gateway crash (presence TTL {ttl:?})", crashed.elapsed());
    blocking(|| cluster.stop());
}

/// Reads frames until `pick` returns Some (bounded).
async fn frame_where<T>(
    ws: &mut chattr_client::Connection,
    mut pick: impl FnMut(&chattr_api::v1::ServerFrame) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(v) = pick(&ws.next().await.expect("socket open")) {
                return v;
            }
        }
    })
    .await
    .expect("timed out waiting for a frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_spans_two_gateways_and_survives_a_video_instance_crash() {
    use chattr_api::v1::{CallOutcome, CallState, ClientFrame, ServerFrame};

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    cluster::use_shared_backends(&mut settings).await;
    let shape = Shape { gateways: 2, video: 2, ..Shape::default() };
    let mut cluster = Cluster::start_shape(&settings, dir.path(), shape);
    let (alice, bob) = users_on_both_gateways(&cluster).await;
    let conv = alice.direct(bob.me().unwrap().id).await.unwrap();
    let session = |ready: ServerFrame| match ready {
        ServerFrame::Ready { session_id, .. } => session_id,
        other => panic!("expected ready, got {other:?}"),
    };
    let (mut a, ready) = alice.connect(BTreeMap::new()).await.unwrap();
    let a_session = session(ready);
    let (mut b, ready) = bob.connect(BTreeMap::new()).await.unwrap();
    let b_session = session(ready);

    // Alice (gateway 0) calls, Bob (gateway 1) rings and answers.
    a.send(&ClientFrame::CallStart { req_id: "start".into(), conversation_id: conv.id }).await.unwrap();
    let call = frame_where(&mut a, |f| match f {
        ServerFrame::Call { req_id: Some(_), call } => Some(call.clone()),
        _ => None,
    })
    .await;
    frame_where(&mut b, |f| matches!(f, ServerFrame::Call { call: c, .. } if c.id == call.id).then_some(()))
        .await;
    b.send(&ClientFrame::CallAnswer { req_id: "answer".into(), call_id: call.id }).await.unwrap();
    frame_where(&mut a, |f| {
        matches!(f, ServerFrame::Call { call: c, .. } if c.state == CallState::Active).then_some(())
    })
    .await;

    // Signals cross gateways, both ways, before and after a video instance dies.
    let ids = (call.id, a_session, b_session);
    exchange(&mut a, &mut b, ids, 1).await;
    blocking(|| cluster.video[0].process.kill());
    let crashed = Instant::now();
    exchange(&mut a, &mut b, ids, 2).await;
    println!("signaling resumed {:?} after the video instance crash", crashed.elapsed());
    // The keepalives (every 3 s) of both devices now go to the survivor: wait past the
    // grace period; the call must still be up.
    tokio::time::sleep(Duration::from_secs(12)).await;
    exchange(&mut a, &mut b, ids, 3).await;

    // Bob hangs up: both see the end, and the summary reaches the timeline.
    b.send(&ClientFrame::CallLeave { req_id: "bye".into(), call_id: call.id }).await.unwrap();
    let ended = frame_where(&mut a, |f| match f {
        ServerFrame::Call { call: c, .. } if c.state == CallState::Ended => Some(c.clone()),
        _ => None,
    })
    .await;
    assert_eq!(ended.outcome, Some(CallOutcome::Completed));
    assert!(ended.duration_ms.unwrap() >= 12_000);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let history = alice.history(conv.id, None, None, Some(50)).await.unwrap();
        if let Some(line) = history.iter().find(|m| m.client_msg_id == format!("call:{}", call.id)) {
            assert!(line.body.starts_with("Call — "), "{}", line.body);
            break;
        }
        assert!(Instant::now() < deadline, "no call summary in the timeline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    blocking(|| cluster.stop());
}

fn offer(n: u32) -> chattr_api::v1::Signal {
    chattr_api::v1::Signal::Offer { sdp: format!("v=0\r\no=- {n} 1 IN IP4 127.0.0.1\r\n") }
}

/// Alice's device signals Bob's and back; each must receive exactly what was sent.
async fn exchange(
    a: &mut chattr_client::Connection,
    b: &mut chattr_client::Connection,
    (call_id, a_session, b_session): (Uuid, Uuid, Uuid),
    round: u32,
) {
    use chattr_api::v1::{ClientFrame, ServerFrame};
    let frame =
        ClientFrame::CallSignal { req_id: None, call_id, to_session_id: b_session, signal: offer(round) };
    a.send(&frame).await.unwrap();
    frame_where(b, |f| {
        matches!(f, ServerFrame::CallSignal { from_session_id, signal, .. }
            if *from_session_id == a_session && *signal == offer(round))
        .then_some(())
    })
    .await;
    let back = ClientFrame::CallSignal {
        req_id: None,
        call_id,
        to_session_id: a_session,
        signal: offer(round + 100),
    };
    b.send(&back).await.unwrap();
    frame_where(a, |f| {
        matches!(f, ServerFrame::CallSignal { signal, .. } if *signal == offer(round + 100)).then_some(())
    })
    .await;
}

/// `/ready` follows the backends: a process on PostgreSQL, Redis and Kafka turns unready
/// (naming the backend, nothing more) within a few probes of losing any one of them, says
/// so in `chattr_backend_up`, and is ready again once the backend is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_each_backend_down_and_back() {
    let mut redis = RedisServer::start(None);
    let mut kafka = KafkaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    let store = chattr_testkit::postgres::fresh_database_url().await;
    settings.store = Some(store.clone());
    settings.cache = redis.url();
    settings.bus = kafka.url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = chattr_server::Server::start(settings, listener).await.unwrap();
    let base = format!("http://{}", server.addr());
    let ready = || async {
        let response = reqwest::get(format!("{base}/ready")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let up = |backend: &'static str| {
        let base = base.clone();
        async move {
            let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
            let line = format!("chattr_backend_up{{backend=\"{backend}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(line.as_str())).map(str::to_owned)
        }
    };
    // Probes run every 5 s and may take 4 s: a change shows within 15 s; after a Kafka
    // restart the canary may first have to join its group again (rebalance included).
    async fn within<F: std::future::Future<Output = (u16, String)>>(
        what: &str,
        mut check: impl FnMut() -> F,
        want: impl Fn(u16, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = check().await;
            if want(status, &body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{what}: still {status} {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    within("ready at start", ready, |s, _| s == 200).await;
    for backend in ["store", "cache", "bus"] {
        assert_eq!(up(backend).await.as_deref(), Some("1"), "{backend} up at start");
    }

    // Redis down, then back on its port.
    let port = redis.port();
    blocking(|| redis.stop());
    let body = within("redis down", ready, |s, _| s == 503).await;
    assert!(body.contains("cache unreachable"), "{body}");
    assert!(!body.contains("127.0.0.1") && !body.contains("refused"), "details leak: {body}");
    assert_eq!(up("cache").await.as_deref(), Some("0"));
    redis = blocking(|| RedisServer::start(Some(port)));
    within("redis back", ready, |s, _| s == 200).await;

    // Kafka down: the canary cannot go round; back: it does again.
    blocking(|| kafka.stop());
    let body = within("kafka down", ready, |s, _| s == 503).await;
    assert!(body.contains("bus unreachable"), "{body}");
    assert_eq!(up("bus").await.as_deref(), Some("0"));
    blocking(|| kafka.restart());
    within("kafka back", ready, |s, _| s == 200).await;

    // PostgreSQL refuses this database (and drops its connections), then admits it again.
    let (admin, database) = store.rsplit_once('/').unwrap();
    use sqlx::{Connection, Executor};
    let mut pg = sqlx::postgres::PgConnection::connect(&format!("{admin}/postgres")).await.unwrap();
    pg.execute(format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false").as_str()).await.unwrap();
    let kill = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'");
    pg.execute(kill.as_str()).await.unwrap();
    let body = within("postgres refusing", ready, |s, _| s == 503).await;
    assert!(body.contains("store unreachable"), "{body}");
    assert_eq!(up("store").await.as_deref(), Some("0"));
    pg.execute(format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true").as_str()).await.unwrap();
    within("postgres back", ready, |s, _| s == 200).await;
    for backend in ["store", "cache", "bus"] {
        assert_eq!(up(backend).await.as_deref(), Some("1"), "{backend} up at the end");
    }
    server.shutdown().await;
    drop(redis);
}
