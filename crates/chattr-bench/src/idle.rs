//! Idle connections: `connections` WebSockets, spread over `users` users and over the
//! given source addresses, authenticated and then held open for `hold`, each answering
//! the server's heartbeats with a ping as a real client does. Reports how many stayed up
//! and, with the server's pid, the memory each costs the server.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chattr_api::v1::{ClientFrame, ServerFrame};
use serde::Serialize;

use crate::process::{self, Used};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: url::Url,
    pub connections: usize,
    /// Users the connections belong to (each has `connections / users` of them).
    pub users: usize,
    pub hold: Duration,
    pub sources: Vec<IpAddr>,
    pub server_pid: Option<u32>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub connections: usize,
    pub users: usize,
    pub hold_secs: f64,
    /// Connections that authenticated.
    pub opened: u64,
    /// Connections that failed to open or authenticate.
    pub failed: u64,
    /// Connections the server closed while they were held.
    pub dropped: u64,
    /// Server memory per open connection (resident, after minus before), in bytes.
    pub bytes_per_connection: Option<f64>,
    pub server: Option<Used>,
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub opened: AtomicU64,
    pub dropped: AtomicU64,
}

/// Opens the connections, holds them, and reports.
pub async fn run(config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    anyhow::ensure!(config.connections > 0, "need at least one connection");
    let users = config.users.clamp(1, config.connections);
    let tag = crate::run_tag();
    let clients = crate::sign_up(&config.server, (0..users).map(|i| format!("{tag}i{i}")).collect()).await?;
    let before = config.server_pid.and_then(process::usage);
    let started = tokio::time::Instant::now();
    let until = started + config.hold;
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    // Opening in waves keeps the server's accept queue and Argon2-free auth path busy but
    // not overrun.
    for n in 0..config.connections {
        let client = clients[n % users].clone();
        let source = config.sources.get(n % config.sources.len().max(1)).copied();
        let (progress, failed) = (progress.clone(), failed.clone());
        tasks.spawn(async move {
            let Ok((mut conn, ready)) = client.connect_from(BTreeMap::new(), source).await else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            progress.opened.fetch_add(1, Ordering::Relaxed);
            let every = match ready {
                ServerFrame::Ready { heartbeat_interval_secs, .. } => heartbeat_interval_secs.max(1),
                _ => 25,
            };
            let mut ping = tokio::time::interval(Duration::from_secs(every));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = ping.tick() => {
                        if conn.send(&ClientFrame::Ping { req_id: None }).await.is_err() {
                            progress.dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    frame = conn.next() => if frame.is_err() {
                        progress.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    },
                }
            }
            conn.close().await;
        });
        if n % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    // The memory is read while every connection is open: just before the hold ends.
    let measure_at = until - Duration::from_millis(500).min(config.hold / 2);
    tokio::time::sleep_until(measure_at).await;
    let during = config.server_pid.and_then(process::usage);
    while tasks.join_next().await.is_some() {}
    let opened = progress.opened.load(Ordering::Relaxed);
    let bytes_per_connection = before
        .zip(during)
        .filter(|_| opened > 0)
        .map(|(b, d)| (d.rss_bytes as f64 - b.rss_bytes as f64) / opened as f64);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        scenario: "idle",
        connections: config.connections,
        users,
        hold_secs: config.hold.as_secs_f64(),
        opened,
        failed: failed.load(Ordering::Relaxed),
        dropped: progress.dropped.load(Ordering::Relaxed),
        bytes_per_connection,
        server: before.zip(during).map(|(b, d)| process::used(b, d, seconds)),
    })
}
