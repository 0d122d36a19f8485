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

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;

use crate::latency::{Latencies, Point, Summary};
use crate::process::{self, Used};
use crate::target::{message_id, parse_message_id, Conversation, Event, Link, Target};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many conversations.
    pub conversations: usize,
    /// Users in each (2 or more): one sends, the others receive.
    pub members: usize,
    /// Messages a second, over all conversations.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// How long to wait after the last send for the last deliveries.
    pub drain: Duration,
    /// Loopback addresses to connect from.
    pub sources: Vec<IpAddr>,
    /// The server's processes, to sample their CPU and memory (with their children).
    pub server_pids: Vec<u32>,
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
    /// Sockets (senders or receivers) whose connection failed during the step: a sender
    /// that stops sends less than the schedule, so a run with any is not a valid one.
    pub broken: u64,
    pub achieved_rate: f64,
    pub ack: Summary,
    pub deliver: Summary,
    /// Send→deliver latency by percentile, for charts.
    pub deliver_curve: Vec<Point>,
    pub server: Option<Used>,
}

impl Report {
    /// A run is valid only if nothing was lost, duplicated, reordered or refused.
    pub fn verified(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.refused == 0
            && self.strays == 0
            && self.broken == 0
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
}

/// Sets up the users and conversations on `target`, runs the schedule once, and reports.
pub async fn run(target: &dyn Target, config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let mut session = Session::start(target, &config).await?;
    session.step(&config, progress).await
}

/// Runs the schedule at each of `rates` in turn, on one set of conversations, until a step
/// fails to verify or its send→deliver p99 passes `stop_p99_ms`; returns every step run.
pub async fn sweep(
    target: &dyn Target,
    config: Config,
    rates: &[f64],
    stop_p99_ms: f64,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Report>> {
    let mut session = Session::start(target, &config).await?;
    let mut steps = Vec::with_capacity(rates.len());
    for &rate in rates {
        let report = session.step(&Config { rate, ..config.clone() }, progress.clone()).await?;
        let stop = !report.verified() || report.deliver.p99_ms > stop_p99_ms;
        steps.push(report);
        if stop {
            break;
        }
    }
    Ok(steps)
}

/// Conversations set up on a target, run at one rate after another. Send numbers go on
/// from step to step, and every receiver's order checks carry over.
pub struct Session {
    target: &'static str,
    members: usize,
    conversations: Vec<Option<Lane>>,
}

/// One conversation's links and where it stands.
struct Lane {
    sender: Box<dyn Link>,
    /// The next send's number.
    next: u64,
    receivers: Vec<Inbox>,
}

/// One receiver and the last message it got.
struct Inbox {
    link: Box<dyn Link>,
    last_seq: Option<u64>,
    last_send: Option<u64>,
}

impl Session {
    /// Creates the users and conversations and connects every member.
    pub async fn start(target: &dyn Target, config: &Config) -> anyhow::Result<Session> {
        let (n, members) = (config.conversations, config.members);
        anyhow::ensure!(n > 0 && members >= 2, "need a conversation of 2 or more");
        let setups = target.setup(n, members, &config.sources).await?;
        anyhow::ensure!(setups.len() == n, "{} set up {} conversations of {n}", target.name(), setups.len());
        let conversations = setups
            .into_iter()
            .map(|Conversation { sender, receivers }| {
                let receivers = receivers
                    .into_iter()
                    .map(|link| Inbox { link, last_seq: None, last_send: None })
                    .collect();
                Some(Lane { sender, next: 0, receivers })
            })
            .collect();
        Ok(Session { target: target.name(), members, conversations })
    }

    /// Sends at `config.rate` for `config.duration`, waits for the deliveries, and reports.
    pub async fn step(&mut self, config: &Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
        anyhow::ensure!(config.rate > 0.0, "need a positive rate");
        let n = self.conversations.len();
        // Each conversation sends every `interval`, staggered evenly over one interval.
        let interval = Duration::from_secs_f64(n as f64 / config.rate);
        let start = Instant::now() + Duration::from_millis(200);
        let end = start + config.duration;
        let before = process::usage_of(&config.server_pids);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, lane) in self.conversations.iter_mut().enumerate() {
            let Lane { sender, next, receivers } =
                lane.take().context("a conversation lost in an earlier step")?;
            let offset = interval.mul_f64(i as f64 / n as f64);
            let schedule = Schedule { first: start + offset, first_send: next, interval, end };
            let (sent, sending) = (Arc::new(AtomicU64::new(next)), Arc::new(AtomicU64::new(1)));
            let (s, flag, p) = (sent.clone(), sending.clone(), progress.clone());
            let drain = config.drain;
            tasks.spawn(async move {
                let mut inboxes = tokio::task::JoinSet::new();
                for (r, inbox) in receivers.into_iter().enumerate() {
                    let (sent, sending, p) = (sent.clone(), sending.clone(), p.clone());
                    inboxes.spawn(
                        async move { (r, receive(i, inbox, schedule, sent, sending, drain, p).await) },
                    );
                }
                let (sender, next, mut totals) = send(i, sender, schedule, s, flag, p).await;
                let mut receivers: Vec<(usize, Inbox)> = Vec::new();
                let mut lost = 0;
                while let Some(joined) = inboxes.join_next().await {
                    let Ok((r, (inbox, mut part))) = joined else { continue };
                    lost += totals.acked_sends.difference(&part.delivered_sends).count() as u64;
                    part.delivered_sends.clear();
                    totals.add(part);
                    receivers.push((r, inbox));
                }
                receivers.sort_by_key(|(r, _)| *r);
                totals.lost = lost;
                let receivers = receivers.into_iter().map(|(_, inbox)| inbox).collect();
                (i, Lane { sender, next, receivers }, totals)
            });
        }
        let mut totals = Totals::default();
        let mut acked = 0u64;
        while let Some(done) = tasks.join_next().await {
            let (i, lane, part) = done?;
            acked += part.acked_sends.len() as u64;
            totals.add(part);
            self.conversations[i] = Some(lane);
        }
        let seconds = config.duration.as_secs_f64();
        let after = process::usage_of(&config.server_pids);
        Ok(Report {
            target: self.target,
            scenario: if self.members == 2 { "pairs" } else { "fanout" },
            conversations: n,
            members: self.members,
            target_rate: config.rate,
            duration_secs: seconds,
            sent: totals.sent,
            acked,
            delivered: totals.delivered,
            deliveries_per_second: totals.delivered as f64 / seconds,
            lost: totals.lost,
            duplicated: totals.duplicated,
            out_of_order: totals.out_of_order,
            strays: totals.strays,
            refused: totals.refused,
            refused_codes: totals.refused_codes,
            broken: totals.broken,
            achieved_rate: acked as f64 / seconds,
            ack: totals.ack.summary(),
            deliver: totals.deliver.summary(),
            deliver_curve: totals.deliver.curve(),
            server: before.zip(after).map(|(b, a)| process::used(b, a, seconds)),
        })
    }
}

/// When one conversation sends: send number `first_send` at `first`, the next ones every
/// `interval`, until `end`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Instant,
    first_send: u64,
    interval: Duration,
    end: Instant,
}

impl Schedule {
    /// When send number `k` was due.
    fn due(&self, k: u64) -> Instant {
        self.first + self.interval.mul_f64(k.saturating_sub(self.first_send) as f64)
    }
}

/// What one task saw.
#[derive(Default)]
struct Totals {
    sent: u64,
    refused: u64,
    broken: u64,
    refused_codes: BTreeMap<String, u64>,
    delivered: u64,
    duplicated: u64,
    out_of_order: u64,
    strays: u64,
    lost: u64,
    acked_sends: HashSet<u64>,
    delivered_sends: HashSet<u64>,
    ack: Latencies,
    deliver: Latencies,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.sent += other.sent;
        self.refused += other.refused;
        self.broken += other.broken;
        for (code, n) in other.refused_codes {
            *self.refused_codes.entry(code).or_default() += n;
        }
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.strays += other.strays;
        self.lost += other.lost;
        self.ack.merge(&other.ack);
        self.deliver.merge(&other.deliver);
    }
}

/// The sender of conversation `i`: sends on schedule, and reads the acks in between.
/// Returns its link and the next send's number.
async fn send(
    i: usize,
    mut out: Box<dyn Link>,
    schedule: Schedule,
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicU64>,
    progress: Arc<Progress>,
) -> (Box<dyn Link>, u64, Totals) {
    let mut totals = Totals::default();
    let mut k = schedule.first_send;
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
                    totals.broken += 1;
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
                    if (schedule.first_send..k).contains(&send) && totals.acked_sends.insert(send) {
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
                Err(_) => {
                    totals.broken += 1;
                    break;
                }
            },
            // Acks that never come: stop waiting a while after the end.
            _ = tokio::time::sleep_until(schedule.end + Duration::from_secs(10)), if !more => break,
        }
    }
    sending.store(0, Ordering::Release);
    (out, k, totals)
}

/// One receiver in conversation `i`: checks each delivery and measures it, until everything
/// sent in this step arrived or `drain` after the end. Sends must arrive in the order they
/// were sent (one sender per conversation), each once; where the target numbers messages,
/// each seq must be the previous one plus one.
async fn receive(
    i: usize,
    mut inbox: Inbox,
    schedule: Schedule,
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicU64>,
    drain: Duration,
    progress: Arc<Progress>,
) -> (Inbox, Totals) {
    let mut totals = Totals::default();
    let give_up = schedule.end + drain;
    loop {
        let expected = sent.load(Ordering::Acquire).saturating_sub(schedule.first_send);
        if sending.load(Ordering::Acquire) == 0 && totals.delivered_sends.len() as u64 >= expected {
            break;
        }
        let event = tokio::select! {
            event = inbox.link.next() => event,
            _ = tokio::time::sleep_until(give_up) => break,
            // Re-check now and then: the sender may finish with nothing in flight.
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let (id, seq) = match event {
            Ok(Event::Delivered { id, seq }) => (id, seq),
            Ok(_) => continue,
            Err(_) => {
                totals.broken += 1;
                break;
            }
        };
        let now = Instant::now();
        let k = match parse_message_id(&id) {
            Some((conversation, k)) if conversation == i => k,
            // Not a message of this conversation: counted, never trusted.
            _ => {
                totals.strays += 1;
                continue;
            }
        };
        if let Some(seq) = seq {
            match inbox.last_seq {
                Some(last) if seq <= last => totals.duplicated += 1,
                Some(last) if seq != last + 1 => totals.out_of_order += 1,
                _ => {}
            }
            inbox.last_seq = Some(inbox.last_seq.map_or(seq, |l| l.max(seq)));
        }
        // A message of an earlier step arrives only after that step gave up on it.
        let earlier_step = k < schedule.first_send;
        if earlier_step || !totals.delivered_sends.insert(k) {
            if seq.is_none() {
                totals.duplicated += 1;
            }
            continue;
        }
        if seq.is_none() && inbox.last_send.is_some_and(|last| k < last) {
            totals.out_of_order += 1;
        }
        inbox.last_send = Some(inbox.last_send.map_or(k, |l| l.max(k)));
        totals.delivered += 1;
        progress.delivered.fetch_add(1, Ordering::Relaxed);
        totals.deliver.record(now.saturating_duration_since(schedule.due(k)));
    }
    (inbox, totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_due_on_an_even_schedule() {
        let s = Schedule {
            first: Instant::now(),
            first_send: 0,
            interval: Duration::from_millis(10),
            end: Instant::now() + Duration::from_secs(1),
        };
        assert_eq!(s.due(3) - s.due(0), Duration::from_millis(30));
    }
}
