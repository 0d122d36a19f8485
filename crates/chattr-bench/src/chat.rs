//! Chat under load, on any [`Target`]: `conversations` conversations of `members` users
//! each (2: a direct conversation, the 1:1 scenario; more: a group, the fan-out scenario).
//! One member of each sends at an even share of `rate` messages a second; every other
//! member receives. Measures send→ack (the server taking the message for good) and
//! send→deliver (the message on each receiver's connection), both from the moment each
//! send was due.
//!
//! Every delivery is checked: each acknowledged message must reach every receiver of its
//! conversation exactly once and in the order it was sent, and where the server numbers
//! messages, each seq must follow the previous one.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::latency::{Latencies, Summary};
use crate::process::{self, Used};
use crate::target::{message_id, parse_message_id, Conversation, Event, Link, Target};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
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
    /// The server: `chattr`, `ejabberd` or `synapse`.
    pub target: &'static str,
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
    /// Messages that were not of the receiver's conversation (never expected: a server
    /// that delivers them is leaking).
    pub strays: u64,
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
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.refused == 0 && self.strays == 0
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
}

/// Sets up the users and conversations on `target`, runs the schedule, and reports.
pub async fn run(target: &dyn Target, config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let (n, members) = (config.conversations, config.members);
    anyhow::ensure!(
        n > 0 && members >= 2 && config.rate > 0.0,
        "need a conversation of 2 or more and a positive rate"
    );
    let setups = target.setup(n, members, &config.sources).await?;
    anyhow::ensure!(setups.len() == n, "{} set up {} conversations of {n}", target.name(), setups.len());

    // Each conversation sends every `interval`, staggered evenly over one interval.
    let interval = Duration::from_secs_f64(n as f64 / config.rate);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + config.duration;
    let before = config.server_pid.and_then(process::usage);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, Conversation { sender, receivers }) in setups.into_iter().enumerate() {
        let offset = interval.mul_f64(i as f64 / n as f64);
        let schedule = Schedule { first: start + offset, interval, end };
        let sent = Arc::new(AtomicU64::new(0));
        let sending = Arc::new(AtomicU64::new(1));
        let (s, p) = (sent.clone(), progress.clone());
        let sending_flag = sending.clone();
        tasks.spawn(async move { (Side::Sender, i, send(i, sender, schedule, s, sending_flag, p).await) });
        for inbox in receivers {
            let (sent, sending, p) = (sent.clone(), sending.clone(), progress.clone());
            let drain = config.drain;
            tasks.spawn(async move {
                (Side::Receiver, i, receive(i, inbox, schedule, sent, sending, drain, p).await)
            });
        }
    }
    let mut totals = Totals::default();
    let mut acked: Vec<HashSet<u64>> = vec![HashSet::new(); n];
    let mut received: Vec<(usize, HashSet<u64>)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (side, i, mut part) = done?;
        match side {
            Side::Sender => acked[i] = std::mem::take(&mut part.acked_sends),
            Side::Receiver => received.push((i, std::mem::take(&mut part.delivered_sends))),
        }
        totals.add(part);
    }
    let seconds = config.duration.as_secs_f64();
    let after = config.server_pid.and_then(process::usage);
    let acked_count: u64 = acked.iter().map(|a| a.len() as u64).sum();
    let lost = received.iter().map(|(i, got)| acked[*i].difference(got).count() as u64).sum();
    Ok(Report {
        target: target.name(),
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
        strays: totals.strays,
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
    strays: u64,
    acked_sends: HashSet<u64>,
    delivered_sends: HashSet<u64>,
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
        self.strays += other.strays;
        self.ack.merge(&other.ack);
        self.deliver.merge(&other.deliver);
    }
}

/// The sender of conversation `i`: sends on schedule, and reads the acks in between.
async fn send(
    i: usize,
    mut out: Box<dyn Link>,
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
                let body = format!("message {k} of conversation {i}");
                if out.send(k, &message_id(i, k), &body).await.is_err() {
                    break;
                }
                k += 1;
                waiting += 1;
                totals.sent += 1;
                sent.store(k, Ordering::Release);
                progress.sent.fetch_add(1, Ordering::Relaxed);
            }
            event = out.next() => match event {
                Ok(Event::Accepted { send }) => {
                    if totals.acked_sends.insert(send) {
                        totals.ack.record(Instant::now().saturating_duration_since(schedule.due(send)));
                        waiting = waiting.saturating_sub(1);
                        progress.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Event::Refused { code, .. }) => {
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
/// sent arrived or `drain` after the end. Sends must arrive in the order they were sent
/// (one sender per conversation), each once; where the target numbers messages, each seq
/// must be the previous one plus one.
async fn receive(
    i: usize,
    mut inbox: Box<dyn Link>,
    schedule: Schedule,
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicU64>,
    drain: Duration,
    progress: Arc<Progress>,
) -> Totals {
    let mut totals = Totals::default();
    let mut last_seq: Option<u64> = None;
    let mut last_send: Option<u64> = None;
    let give_up = schedule.end + drain;
    loop {
        let done = sending.load(Ordering::Acquire) == 0
            && totals.delivered_sends.len() as u64 >= sent.load(Ordering::Acquire);
        if done {
            break;
        }
        let event = tokio::select! {
            event = inbox.next() => event,
            _ = tokio::time::sleep_until(give_up) => break,
            // Re-check `done` now and then: the sender may finish with nothing in flight.
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let (id, seq) = match event {
            Ok(Event::Delivered { id, seq }) => (id, seq),
            Ok(_) => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        let k = match parse_message_id(&id) {
            Some((conversation, k)) if conversation == i => k,
            // Not a message of this run's conversation: counted, never trusted.
            _ => {
                totals.strays += 1;
                continue;
            }
        };
        if let Some(seq) = seq {
            match last_seq {
                Some(last) if seq <= last => totals.duplicated += 1,
                Some(last) if seq != last + 1 => totals.out_of_order += 1,
                _ => {}
            }
            last_seq = Some(last_seq.map_or(seq, |l| l.max(seq)));
        }
        if !totals.delivered_sends.insert(k) {
            if seq.is_none() {
                totals.duplicated += 1;
            }
            continue;
        }
        if seq.is_none() && last_send.is_some_and(|last| k < last) {
            totals.out_of_order += 1;
        }
        last_send = Some(last_send.map_or(k, |l| l.max(k)));
        totals.delivered += 1;
        progress.delivered.fetch_add(1, Ordering::Relaxed);
        totals.deliver.record(now.saturating_duration_since(schedule.due(k)));
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_due_on_an_even_schedule() {
        let s = Schedule {
            first: Instant::now(),
            interval: Duration::from_millis(10),
            end: Instant::now() + Duration::from_secs(1),
        };
        assert_eq!(s.due(3) - s.due(0), Duration::from_millis(30));
    }
}
