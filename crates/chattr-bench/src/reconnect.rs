//! Reconnect storm: `sockets` WebSockets of `users` users (several devices each, in direct
//! conversations of two) are all cut at once, as a network blip or a load balancer's
//! restart would; while they are away every conversation gets `missed` messages; then every
//! socket reconnects at the same moment with its cursors, as a client does. A socket has
//! resumed when the server said `synced` and it has every missed message, in seq order,
//! once. Reports the time from the reconnect until the last socket resumed, and each
//! socket's resume time as a histogram.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chattr_api::v1::ServerFrame;
use chattr_client::Client;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::failures::{reason, Failures};
use crate::latency::{Latencies, Point, Summary};
use crate::process::{self, Used};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: url::Url,
    /// Sockets cut and reconnected.
    pub sockets: usize,
    /// Users they belong to (even; paired into direct conversations).
    pub users: usize,
    /// Messages each conversation gets while its sockets are away.
    pub missed: u64,
    /// How long a socket may take to resume before it counts as failed.
    pub timeout: Duration,
    pub sources: Vec<IpAddr>,
    pub server_pids: Vec<u32>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub sockets: usize,
    pub users: usize,
    pub missed_per_conversation: u64,
    /// Sockets that resumed with every missed message.
    pub resumed: u64,
    /// Sockets that could not reconnect, or did not resume within the timeout.
    pub failed: u64,
    /// Why they failed, counted by reason.
    pub failures: Failures,
    /// Reconnects in the middle of a resume, after the server said "try again later"
    /// (1013) or the connection broke; the socket then resumes from where it got to.
    pub retries: u64,
    /// Missed messages a resumed socket never got, and ones it got twice or out of order.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Seconds from the reconnect until the last socket resumed.
    pub all_resumed_secs: f64,
    /// Each socket's time from the reconnect until it resumed.
    pub resume: Summary,
    pub resume_curve: Vec<Point>,
    pub server: Option<Used>,
}

impl Report {
    /// Valid only if every socket resumed with exactly the messages it missed.
    pub fn verified(&self) -> bool {
        self.failed == 0 && self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub connected: AtomicU64,
    pub resumed: AtomicU64,
}

/// One socket's device: whose it is, and where its conversation stood when it was cut.
struct Device {
    client: Client,
    conversation: Uuid,
    seen: u64,
    source: Option<IpAddr>,
}

/// Connects everything, cuts it, sends the missed messages, reconnects, and reports.
pub async fn run(config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    anyhow::ensure!(config.sockets > 0 && config.missed > 0, "need sockets and missed messages");
    let users = (config.users.clamp(2, config.sockets.max(2)) / 2) * 2;
    let tag = crate::run_tag();
    let clients = crate::sign_up(&config.server, (0..users).map(|i| format!("{tag}r{i}")).collect()).await?;
    let mut conversations = Vec::with_capacity(users / 2);
    for pair in clients.chunks(2) {
        let other = pair[1].me()?.id;
        conversations.push(pair[0].direct(other).await.context("creating a direct conversation")?.id);
    }

    // Everyone connects, and each socket holds its connection until the cut.
    let mut devices = Vec::with_capacity(config.sockets);
    let mut connecting = tokio::task::JoinSet::new();
    for n in 0..config.sockets {
        let client = clients[n % users].clone();
        let conversation = conversations[(n % users) / 2];
        let source = crate::target::pick(&config.sources, n);
        let progress = progress.clone();
        let deadline = Instant::now() + config.timeout;
        connecting.spawn(async move {
            let (socket, _) = connect(&client, BTreeMap::new(), source, deadline).await?;
            progress.connected.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok((Device { client, conversation, seen: 0, source }, socket))
        });
        if n % 512 == 511 {
            // Let the first ones finish their upgrade before piling on more.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut sockets = Vec::with_capacity(config.sockets);
    while let Some(joined) = connecting.join_next().await {
        let (device, socket) = joined?.context("connecting before the storm")?;
        devices.push(device);
        sockets.push(socket);
    }

    // The cut: every socket dropped at once, without a goodbye.
    drop(sockets);
    for (c, conversation) in conversations.iter().enumerate() {
        for m in 0..config.missed {
            clients[2 * c]
                .send(*conversation, &format!("{tag}-{c}-{m}"), &format!("missed {m}"))
                .await
                .context("sending while the sockets are away")?;
        }
    }

    // The storm: every socket reconnects at the same moment, with its cursor.
    let before = process::usage_of(&config.server_pids);
    let start = Instant::now();
    let mut storm = tokio::task::JoinSet::new();
    for device in devices {
        let (missed, timeout, progress) = (config.missed, config.timeout, progress.clone());
        storm.spawn(async move { resume(device, missed, start, timeout, progress).await });
    }
    let mut totals = Outcome::default();
    let mut times = Latencies::default();
    let mut last = Duration::ZERO;
    let mut failures = Failures::default();
    while let Some(joined) = storm.join_next().await {
        let outcome = joined?;
        if let Some(took) = outcome.took {
            times.record(took);
            last = last.max(took);
        }
        if let Some(failure) = &outcome.failure {
            failures.add(failure);
        }
        totals.add(outcome);
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = process::usage_of(&config.server_pids);
    Ok(Report {
        scenario: "reconnect",
        sockets: config.sockets,
        users,
        missed_per_conversation: config.missed,
        resumed: times.count(),
        failed: config.sockets as u64 - times.count(),
        failures,
        retries: totals.retries,
        lost: totals.lost,
        duplicated: totals.duplicated,
        out_of_order: totals.out_of_order,
        all_resumed_secs: last.as_secs_f64(),
        resume: times.summary(),
        resume_curve: times.curve(),
        server: before.zip(after).map(|(b, a)| process::used(b, a, seconds)),
    })
}

/// Connects as a client does: a server that is busy says so (close code 1013, "try again
/// later") or cannot take the connection yet, and the client tries again after a short,
/// growing, jittered pause, until `deadline`.
async fn connect(
    client: &Client,
    cursors: BTreeMap<Uuid, u64>,
    source: Option<IpAddr>,
    deadline: Instant,
) -> anyhow::Result<(chattr_client::Connection, ServerFrame)> {
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = tokio::time::timeout_at(deadline, client.connect_from(cursors.clone(), source)).await;
        match attempt {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(e)) if retryable(&e) && Instant::now() + pause < deadline => {
                let jitter = Duration::from_millis(rand::random::<u64>() % (pause.as_millis() as u64 + 1));
                tokio::time::sleep(pause + jitter).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("not connected before the deadline"),
        }
    }
}

/// Errors a client retries: the server asked to try again later, or the connection failed.
fn retryable(e: &chattr_client::ClientError) -> bool {
    use chattr_client::ClientError;
    match e {
        ClientError::Closed { code, .. } => *code == chattr_api::v1::close_codes::TRY_AGAIN_LATER,
        ClientError::Transport(_) => true,
        ClientError::Api { code, .. } => code == chattr_api::v1::codes::UNAVAILABLE,
        ClientError::NotSignedIn => false,
    }
}

/// What one socket's resume came to.
#[derive(Default)]
struct Outcome {
    /// From the reconnect until it resumed; `None` if it did not.
    took: Option<Duration>,
    /// Why it did not.
    failure: Option<String>,
    /// Times it reconnected mid-resume after "try again later" or a broken connection.
    retries: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.retries += other.retries;
    }
}

/// Reconnects one device with its cursor and reads until it has resumed.
async fn resume(
    device: Device,
    missed: u64,
    start: Instant,
    timeout: Duration,
    progress: Arc<Progress>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let give_up = start + timeout;
    let (mut last, mut synced) = (device.seen, false);
    // A socket the server closes mid-resume with "try again later" (1013), or that breaks,
    // reconnects from where it got to, as clients do; anything else ends the attempt.
    let mut socket = None;
    while !(synced && last >= device.seen + missed) {
        let open = match socket.as_mut() {
            Some(open) => open,
            None => {
                let cursors = BTreeMap::from([(device.conversation, last)]);
                match connect(&device.client, cursors, device.source, give_up).await {
                    Ok((open, _)) => socket.insert(open),
                    Err(e) => {
                        let why = e
                            .downcast_ref::<chattr_client::ClientError>()
                            .map_or_else(|| e.to_string(), reason);
                        outcome.failure = Some(format!("reconnect: {why}"));
                        break;
                    }
                }
            }
        };
        let frame = tokio::select! {
            frame = open.next() => frame,
            _ = tokio::time::sleep_until(give_up) => break,
        };
        match frame {
            Ok(ServerFrame::Message { message }) if message.conversation_id == device.conversation => {
                if message.seq <= last {
                    outcome.duplicated += 1;
                } else {
                    if message.seq != last + 1 {
                        outcome.out_of_order += 1;
                    }
                    last = message.seq;
                }
            }
            Ok(ServerFrame::Synced) => synced = true,
            Ok(_) => {}
            Err(e) if retryable(&e) && Instant::now() < give_up => {
                outcome.retries += 1;
                synced = false;
                socket = None;
            }
            Err(e) => {
                outcome.failure = Some(format!("socket ended while resuming: {}", reason(&e)));
                break;
            }
        }
    }
    if synced && last >= device.seen + missed {
        outcome.took = Some(start.elapsed());
        progress.resumed.fetch_add(1, Ordering::Relaxed);
    } else {
        outcome.lost += (device.seen + missed).saturating_sub(last);
        if outcome.failure.is_none() {
            let stage = if synced { "after synced, with messages missing" } else { "before synced" };
            outcome.failure = Some(format!("timed out {stage}"));
        }
    }
    if let Some(open) = socket {
        open.close().await;
    }
    outcome
}
