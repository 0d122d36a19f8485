//! Chat under load: `conversations` conversations of `members` users each (2: a direct
//! conversation, the 1:1 scenario; more: a group, the fan-out scenario). One member of each
//! sends over its WebSocket at an even share of `rate` messages a second; every other
//! member receives. Measures send→ack (the durable acknowledgement) and send→deliver (the
//! frame on each receiver's socket), both from the moment each send was due.
//!
//! Every delivery is checked: its seq must follow the previous one of its conversation,
//! and every acknowledged message must reach every receiver exactly once.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chattr_api::v1::{ClientFrame, ServerFrame};
use chattr_client::Connection;
use serde::Serialize;
use tokio::time::Instant;

use crate::latency::{Latencies, Summary};
use crate::process::{self, Used};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server (a gateway).
    pub server: url::Url,
    /// How many conversations.
    pub conversations: usize,
    /// Users in each (2 or more): one sends, the others receive.
    pub members: usize,
    /// Messages a second, over all pairs.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// How long to wait after the last send for the last deliveries.
    pub drain: Duration,
    /// Loopback addresses to connect from.
    pub sources: Vec<IpAddr>,
    /// The server's pid, to sample its CPU and memory.
    pub server_pid: Option<u32>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub conversations: usize,
    pub members: usize,
    pub target_rate: f64,
    pub duration_secs: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Deliveries a second (each message counts once per receiver).
    pub deliveries_per_second: f64,
    /// Acknowledged but never delivered (counted per receiver).
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Sends the server refused (an `error` frame), by error code. Each socket may send
    /// `frames_per_second` frames (20 by default, the gateway's setting): keep
    /// `rate / pairs` under it, or raise it in the server's config for a benchmark.
    pub refused: u64,
    pub refused_codes: BTreeMap<String, u64>,
    pub achieved_rate: f64,
    pub ack: Summary,
    pub deliver: Summary,
    pub server: Option<Used>,
}

impl Report {
    /// A run is valid only if nothing was lost, duplicated, reordered or refused.
    pub fn verified(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.refused == 0
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
}

/// Sets up the users and conversations, runs the schedule, and reports.
pub async fn run(config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let (n, members) = (config.conversations, config.members);
    anyhow::ensure!(
        n > 0 && members >= 2 && config.rate > 0.0,
        "need a conversation of 2 or more and a positive rate"
    );
    let tag = crate::run_tag();
    let names = (0..n)
        .flat_map(|i| (0..members).map(move |m| (i, m)))
        .map(|(i, m)| format!("{tag}c{i}m{m}"))
        .collect();
    let clients = crate::sign_up(&config.server, names).await?;
    let mut setups = Vec::with_capacity(n);
    let mut socket = 0usize;
    let mut from = || {
        socket += 1;
        config.sources.get(socket % config.sources.len().max(1)).copied()
    };
    for group in clients.chunks(members) {
        let sender = &group[0];
        let others: Vec<uuid::Uuid> =
            group[1..].iter().map(|c| c.me().map(|u| u.id)).collect::<Result<_, _>>()?;
        let conversation = if members == 2 {
            sender.direct(others[0]).await.context("creating a direct conversation")?.id
        } else {
            sender.group("bench", &others).await.context("creating a group")?.id
        };
        let (out, _) = sender.connect_from(BTreeMap::new(), from()).await.context("connecting a sender")?;
        let mut inboxes = Vec::with_capacity(members - 1);
        for receiver in &group[1..] {
            let (inbox, _) =
                receiver.connect_from(BTreeMap::new(), from()).await.context("connecting a receiver")?;
            inboxes.push(inbox);
        }
        setups.push((conversation, out, inboxes));
    }

    // Each conversation sends every `interval`, staggered evenly over one interval.
    let interval = Duration::from_secs_f64(n as f64 / config.rate);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + config.duration;
    let before = config.server_pid.and_then(process::usage);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (conversation, out, inboxes)) in setups.into_iter().enumerate() {
        let offset = interval.mul_f64(i as f64 / n as f64);
        let schedule = Schedule { first: start + offset, interval, end };
        let sent = Arc::new(AtomicU64::new(0));
        let sending = Arc::new(AtomicU64::new(1));
        let (s, p) = (sent.clone(), progress.clone());
        let sending_flag = sending.clone();
        tasks.spawn(async move {
            (Side::Sender, i, send(i, conversation, out, schedule, s, sending_flag, p).await)
        });
        for inbox in inboxes {
            let (sent, sending, p) = (sent.clone(), sending.clone(), progress.clone());
            let drain = config.drain;
            tasks.spawn(async move {
                (Side::Receiver, i, receive(i, inbox, schedule, sent, sending, drain, p).await)
            });
        }
    }
    let mut totals = Totals::default();
    let mut acked: Vec<HashSet<String>> = vec![HashSet::new(); n];
    let mut received: Vec<(usize, HashSet<String>)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (side, i, mut part) = done?;
        match side {
            Side::Sender => acked[i] = std::mem::take(&mut part.acked_ids),
            Side::Receiver => received.push((i, std::mem::take(&mut part.delivered_ids))),
        }
        totals.add(part);
    }
    let seconds = config.duration.as_secs_f64();
    let after = config.server_pid.and_then(process::usage);
    let acked_count: u64 = acked.iter().map(|a| a.len() as u64).sum();
    let lost = received.iter().map(|(i, got)| acked[*i].difference(got).count() as u64).sum();
    Ok(Report {
        scenario: if members == 2 { "pairs" } else { "fanout" },
        conversations: n,
        members,
        target_rate: config.rate,
        duration_secs: seconds,
        sent: totals.sent,
        acked: acked_count,
        delivered: totals.delivered,
        deliveries_per_second: totals.delivered as f64 / seconds,
        lost,
        duplicated: totals.duplicated,
        out_of_order: totals.out_of_order,
        refused: totals.refused,
        refused_codes: totals.refused_codes,
        achieved_rate: acked_count as f64 / seconds,
        ack: totals.ack.summary(),
        deliver: totals.deliver.summary(),
        server: before.zip(after).map(|(b, a)| process::used(b, a, seconds)),
    })
}

/// Which end of a conversation a task was.
enum Side {
    Sender,
    Receiver,
}

/// When one conversation sends: `first`, then every `interval`, until `end`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Duration,
    end: Instant,
}

impl Schedule {
    /// When send number `k` was due.
    fn due(&self, k: u64) -> Instant {
        self.first + self.interval.mul_f64(k as f64)
    }
}

/// What one task saw.
#[derive(Default)]
struct Totals {
    sent: u64,
    refused: u64,
    refused_codes: BTreeMap<String, u64>,
    delivered: u64,
    duplicated: u64,
    out_of_order: u64,
    acked_ids: HashSet<String>,
    delivered_ids: HashSet<String>,
    ack: Latencies,
    deliver: Latencies,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.sent += other.sent;
        self.refused += other.refused;
        for (code, n) in other.refused_codes {
            *self.refused_codes.entry(code).or_default() += n;
        }
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.ack.merge(&other.ack);
        self.deliver.merge(&other.deliver);
    }
}

/// `p<conversation>-<k>`: which send a message is.
fn message_id(pair: usize, k: u64) -> String {
    format!("p{pair}-{k}")
}

fn send_number(id: &str) -> Option<u64> {
    id.rsplit_once('-')?.1.parse().ok()
}

/// The sender of conversation `i`: sends on schedule, and reads the acks in between.
async fn send(
    i: usize,
    conversation: uuid::Uuid,
    mut out: Connection,
    schedule: Schedule,
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicU64>,
    progress: Arc<Progress>,
) -> Totals {
    let mut totals = Totals::default();
    let mut k = 0u64;
    let mut waiting = 0u64;
    loop {
        let due = schedule.due(k);
        let more = due < schedule.end;
        if !more && waiting == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due), if more => {
                let id = message_id(i, k);
                let frame = ClientFrame::Send {
                    req_id: k.to_string(),
                    conversation_id: conversation,
                    client_msg_id: id,
                    body: format!("message {k} of pair {i}"),
                };
                if out.send(&frame).await.is_err() {
                    break;
                }
                k += 1;
                waiting += 1;
                totals.sent += 1;
                sent.store(k, Ordering::Release);
                progress.sent.fetch_add(1, Ordering::Relaxed);
            }
            frame = out.next() => match frame {
                Ok(ServerFrame::Ack { req_id, message }) => {
                    if let Ok(n) = req_id.parse::<u64>() {
                        totals.ack.record(Instant::now().saturating_duration_since(schedule.due(n)));
                    }
                    waiting = waiting.saturating_sub(1);
                    totals.acked_ids.insert(message.client_msg_id);
                    progress.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(ServerFrame::Error { code, .. }) => {
                    waiting = waiting.saturating_sub(1);
                    totals.refused += 1;
                    *totals.refused_codes.entry(code).or_default() += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            },
            // Acks that never come: stop waiting a while after the end.
            _ = tokio::time::sleep_until(schedule.end + Duration::from_secs(10)), if !more => break,
        }
    }
    sending.store(0, Ordering::Release);
    totals
}

/// One receiver in conversation `i`: checks each delivery and measures it, until everything
/// sent arrived or `drain` after the end.
async fn receive(
    i: usize,
    mut inbox: Connection,
    schedule: Schedule,
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicU64>,
    drain: Duration,
    progress: Arc<Progress>,
) -> Totals {
    let mut totals = Totals::default();
    let mut last_seq: Option<u64> = None;
    let give_up = schedule.end + drain;
    loop {
        let done = sending.load(Ordering::Acquire) == 0
            && totals.delivered_ids.len() as u64 >= sent.load(Ordering::Acquire);
        if done {
            break;
        }
        let frame = tokio::select! {
            frame = inbox.next() => frame,
            _ = tokio::time::sleep_until(give_up) => break,
            // Re-check `done` now and then: the sender may finish with nothing in flight.
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let message = match frame {
            Ok(ServerFrame::Message { message }) => message,
            Ok(_) => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        match last_seq {
            Some(last) if message.seq <= last => totals.duplicated += 1,
            Some(last) if message.seq != last + 1 => totals.out_of_order += 1,
            _ => {}
        }
        last_seq = Some(last_seq.map_or(message.seq, |l| l.max(message.seq)));
        if !totals.delivered_ids.insert(message.client_msg_id.clone()) {
            continue;
        }
        totals.delivered += 1;
        progress.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = send_number(&message.client_msg_id)
            .filter(|_| message.client_msg_id.starts_with(&format!("p{i}-")))
        {
            totals.deliver.record(now.saturating_duration_since(schedule.due(k)));
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_send_number() {
        assert_eq!(send_number(&message_id(3, 41)), Some(41));
        assert_eq!(send_number("nonsense"), None);
        let s = Schedule {
            first: Instant::now(),
            interval: Duration::from_millis(10),
            end: Instant::now() + Duration::from_secs(1),
        };
        assert_eq!(s.due(3) - s.due(0), Duration::from_millis(30));
    }
}
