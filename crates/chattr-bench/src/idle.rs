//! Idle connections: `connections` WebSockets, spread over `users` users and over the
//! given source addresses, authenticated and then held open, each answering the server's
//! heartbeats with a ping as a real client does. Once every connection is open they are
//! held for `hold` (or until told to stop); reports how many stayed up and, with the
//! server's pid, the memory each costs the server.
//!
//! One process can hold about 19,000 sockets (20,000 open files is the hard limit here),
//! so larger runs split over worker processes ([`run_workers`]): each runs this scenario
//! for its share, says when its share is open, and holds until the parent closes its
//! standard input; the parent reads the server while all of them are open.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chattr_api::v1::{ClientFrame, ServerFrame};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::failures::{self, Failures};
use crate::process::{self, Used};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: url::Url,
    pub connections: usize,
    /// Users the connections belong to (each has `connections / users` of them).
    pub users: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    pub sources: Vec<IpAddr>,
    /// The server's processes (with their children), to read CPU and memory from.
    pub server_pids: Vec<u32>,
    /// Connections being opened at once (0: all at once, a storm).
    pub opening: usize,
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub connections: usize,
    pub users: usize,
    pub hold_secs: f64,
    /// Load generator processes the connections were spread over.
    pub workers: usize,
    /// Connections that authenticated.
    pub opened: u64,
    /// Connections that failed to open or authenticate.
    pub failed: u64,
    /// Connections the server closed while they were held.
    pub dropped: u64,
    /// Why connections failed or were dropped, counted by reason.
    #[serde(default)]
    pub failures: Failures,
    /// Seconds from the first connect until the last connection was open.
    pub open_secs: f64,
    /// Server memory per open connection (resident, while all are open, minus before), in bytes.
    pub bytes_per_connection: Option<f64>,
    pub server: Option<Used>,
}

impl Report {
    pub fn verified(&self) -> bool {
        self.failed == 0 && self.dropped == 0
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    /// Why connections failed or were dropped.
    pub failures: failures::Shared,
}

impl Progress {
    fn settled(&self) -> u64 {
        self.opened.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Opens the connections, holds them for `config.hold`, and reports.
pub async fn run(config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let hold = config.hold;
    run_until(config, progress, |_| async move { tokio::time::sleep(hold).await }).await
}

/// Opens the connections, calls `held(opened)` once all are open (or failed), and holds
/// them until it returns.
pub async fn run_until<F, Fut>(config: Config, progress: Arc<Progress>, held: F) -> anyhow::Result<Report>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_between(config, progress, async {}, held).await
}

/// Like [`run_until`], and waits for `go` after signing the users up, before connecting.
async fn run_between<F, Fut>(
    config: Config,
    progress: Arc<Progress>,
    go: impl std::future::Future<Output = ()>,
    held: F,
) -> anyhow::Result<Report>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    anyhow::ensure!(config.connections > 0, "need at least one connection");
    let users = config.users.clamp(1, config.connections);
    let tag = crate::run_tag();
    let clients = crate::sign_up(&config.server, (0..users).map(|i| format!("{tag}i{i}")).collect()).await?;
    go.await;
    let before = process::usage_of(&config.server_pids);
    let started = tokio::time::Instant::now();
    let (stop, stopping) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let opening = Arc::new(tokio::sync::Semaphore::new(match config.opening {
        0 => tokio::sync::Semaphore::MAX_PERMITS,
        n => n,
    }));
    for n in 0..config.connections {
        let client = clients[n % users].clone();
        let source = crate::target::pick(&config.sources, n);
        let (progress, mut stopping) = (progress.clone(), stopping.clone());
        let permit = opening.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let connected = client.connect_from(BTreeMap::new(), source).await;
            drop(permit);
            let (mut conn, ready) = match connected {
                Ok(connected) => connected,
                Err(e) => {
                    progress.failures.add(&format!("connect: {}", failures::reason(&e)));
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            progress.opened.fetch_add(1, Ordering::Relaxed);
            let every = match ready {
                ServerFrame::Ready { heartbeat_interval_secs, .. } => heartbeat_interval_secs.max(1),
                _ => 25,
            };
            let mut ping = tokio::time::interval(Duration::from_secs(every));
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => break,
                    _ = ping.tick() => {
                        if let Err(e) = conn.send(&ClientFrame::Ping { req_id: None }).await {
                            progress.failures.add(&format!("dropped: {}", failures::reason(&e)));
                            progress.dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    frame = conn.next() => if let Err(e) = frame {
                        progress.failures.add(&format!("dropped: {}", failures::reason(&e)));
                        progress.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    },
                }
            }
            conn.close().await;
        });
        // Opening in waves keeps the server's accept queue busy but not overrun.
        if n % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    while progress.settled() < config.connections as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_secs = started.elapsed().as_secs_f64();
    let opened = progress.opened.load(Ordering::Relaxed);
    held(opened).await;
    // The memory is read while every connection is still open.
    let during = process::usage_of(&config.server_pids);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        scenario: "idle".to_owned(),
        connections: config.connections,
        users,
        hold_secs: config.hold.as_secs_f64(),
        workers: 1,
        opened,
        failed: progress.failed.load(Ordering::Relaxed),
        dropped: progress.dropped.load(Ordering::Relaxed),
        failures: progress.failures.snapshot(),
        open_secs,
        bytes_per_connection: per_connection(before, during, opened),
        server: before.zip(during).map(|(b, d)| process::used(b, d, seconds)),
    })
}

fn per_connection(
    before: Option<process::Usage>,
    during: Option<process::Usage>,
    opened: u64,
) -> Option<f64> {
    before
        .zip(during)
        .filter(|_| opened > 0)
        .map(|(b, d)| (d.rss_bytes as f64 - b.rss_bytes as f64) / opened as f64)
}

/// What a worker prints on its standard output once its users are signed up, and once
/// its share is open.
const SIGNED_UP: &str = "signed-up";
const OPENED: &str = "opened ";

/// The worker side: signs its users up and prints `signed-up`, connects its share once a
/// line comes on standard input, prints `opened <n>` once it is open, holds until standard
/// input closes, then prints the report as one line. (Signing up runs Argon2 on the server:
/// the parent reads the server's memory only after every worker's signups.)
pub async fn worker(config: Config, progress: Arc<Progress>) -> anyhow::Result<()> {
    let stdin = Arc::new(tokio::sync::Mutex::new(BufReader::new(tokio::io::stdin())));
    let go = {
        let stdin = stdin.clone();
        async move {
            println!("{SIGNED_UP}");
            let mut line = String::new();
            let _ = stdin.lock().await.read_line(&mut line).await;
        }
    };
    let report = run_between(config, progress, go, |opened| async move {
        println!("{OPENED}{opened}");
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut *stdin.lock().await, &mut rest).await;
    })
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The next line of a worker that starts with `prefix` (what follows it).
async fn expect_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> anyhow::Result<String> {
    loop {
        let line =
            lines.next_line().await?.with_context(|| format!("a worker ended before saying {prefix:?}"))?;
        if let Some(rest) = line.strip_prefix(prefix) {
            return Ok(rest.trim().to_owned());
        }
    }
}

/// Spreads `config` over `workers` processes of `exe` (this program, run as
/// `exe idle-worker ...`), holds every connection for `config.hold` once all are open,
/// and adds up their reports.
pub async fn run_workers(
    config: Config,
    workers: usize,
    exe: &Path,
    progress: Arc<Progress>,
) -> anyhow::Result<Report> {
    let workers = workers.clamp(1, config.connections.max(1));
    let mut children = Vec::with_capacity(workers);
    for w in 0..workers {
        let share = config.connections / workers + usize::from(w < config.connections % workers);
        let users = (config.users / workers).max(1);
        // Each worker connects from its own slice of the source addresses.
        let sources: Vec<String> =
            config.sources.iter().skip(w).step_by(workers).map(|s| s.to_string()).collect();
        let sources = if sources.is_empty() { vec!["127.0.0.1".to_owned()] } else { sources };
        let mut child = tokio::process::Command::new(exe)
            .args(["idle-worker", "--server", config.server.as_str()])
            .args(["--connections", &share.to_string(), "--users", &users.to_string()])
            .args(["--source-list", &sources.join(",")])
            .args(["--opening", &config.opening.div_ceil(workers).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {} ({})", w, exe.display()))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        children.push((child, BufReader::new(stdout).lines()));
    }
    for (_, lines) in &mut children {
        expect_line(lines, SIGNED_UP).await?;
    }
    let before = process::usage_of(&config.server_pids);
    let started = tokio::time::Instant::now();
    for (child, _) in &mut children {
        child.stdin.as_mut().context("worker stdin")?.write_all(b"go\n").await?;
    }
    // Wait for every worker's share to be open.
    let mut opened = 0u64;
    for (_, lines) in &mut children {
        let n: u64 = expect_line(lines, OPENED).await?.parse().context("a worker's opened count")?;
        opened += n;
        progress.opened.fetch_add(n, Ordering::Relaxed);
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(config.hold).await;
    let during = process::usage_of(&config.server_pids);
    let mut total: Option<Report> = None;
    for (mut child, mut lines) in children {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let line = expect_line(&mut lines, "{").await?;
        let report: Report = serde_json::from_str(&format!("{{{line}")).context("a worker's report")?;
        let _ = child.wait().await;
        total = Some(match total {
            None => report,
            Some(t) => Report {
                connections: t.connections + report.connections,
                users: t.users + report.users,
                opened: t.opened + report.opened,
                failed: t.failed + report.failed,
                dropped: t.dropped + report.dropped,
                failures: {
                    let mut all = t.failures.clone();
                    all.merge(&report.failures);
                    all
                },
                ..t
            },
        });
    }
    let mut total = total.context("no workers")?;
    let seconds = started.elapsed().as_secs_f64();
    total.workers = workers;
    total.hold_secs = config.hold.as_secs_f64();
    total.open_secs = open_secs;
    total.bytes_per_connection = per_connection(before, during, opened);
    total.server = before.zip(during).map(|(b, d)| process::used(b, d, seconds));
    Ok(total)
}
