//! Login storm: `logins` password logins of `users` users, `concurrency` at a time, each
//! hashed by the server with Argon2id at its configured cost. Reports logins a second and
//! each login's latency; every login must return tokens for the right user.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chattr_client::Client;
use serde::Serialize;
use tokio::time::Instant;

use crate::latency::{Latencies, Point, Summary};
use crate::process::{self, Used};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: url::Url,
    pub users: usize,
    pub logins: usize,
    pub concurrency: usize,
    pub server_pids: Vec<u32>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub users: usize,
    pub concurrency: usize,
    pub logins: u64,
    /// Logins refused or failed, by error code.
    pub failed: u64,
    pub failed_codes: BTreeMap<String, u64>,
    /// Logins that answered for another user than asked (never expected).
    pub wrong_user: u64,
    pub logins_per_second: f64,
    pub latency: Summary,
    pub latency_curve: Vec<Point>,
    pub server: Option<Used>,
}

impl Report {
    pub fn verified(&self) -> bool {
        self.failed == 0 && self.wrong_user == 0
    }
}

/// Live counters, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// Signs the users up, then runs the logins and reports.
pub async fn run(config: Config, progress: Arc<Progress>) -> anyhow::Result<Report> {
    anyhow::ensure!(config.users > 0 && config.logins > 0, "need users and logins");
    let tag = crate::run_tag();
    let names: Vec<String> = (0..config.users).map(|i| format!("{tag}l{i}")).collect();
    let users = crate::sign_up(&config.server, names.clone()).await?;
    let ids: Vec<uuid::Uuid> = users.iter().map(|c| c.me().map(|u| u.id)).collect::<Result<_, _>>()?;
    let next = Arc::new(AtomicU64::new(0));
    let before = process::usage_of(&config.server_pids);
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (next, names, ids, progress) = (next.clone(), names.clone(), ids.clone(), progress.clone());
        let (server, logins) = (config.server.clone(), config.logins as u64);
        workers.spawn(async move {
            let mut part = Part::default();
            let client = Client::new(server.as_str())?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= logins {
                    break;
                }
                let who = n as usize % names.len();
                let began = Instant::now();
                match client.login(&names[who], crate::PASSWORD).await {
                    Ok(auth) => {
                        part.latency.record(began.elapsed());
                        part.logins += 1;
                        if auth.user.id != ids[who] || auth.access_token.is_empty() {
                            part.wrong_user += 1;
                        }
                        progress.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let code = e.code().unwrap_or("transport").to_owned();
                        *part.failed.entry(code).or_default() += 1;
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(part)
        });
    }
    let mut total = Part::default();
    while let Some(joined) = workers.join_next().await {
        let part = joined??;
        total.logins += part.logins;
        total.wrong_user += part.wrong_user;
        total.latency.merge(&part.latency);
        for (code, n) in part.failed {
            *total.failed.entry(code).or_default() += n;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = process::usage_of(&config.server_pids);
    Ok(Report {
        scenario: "login",
        users: config.users,
        concurrency: config.concurrency.max(1),
        logins: total.logins,
        failed: total.failed.values().sum(),
        failed_codes: total.failed,
        wrong_user: total.wrong_user,
        logins_per_second: total.logins as f64 / seconds,
        latency: total.latency.summary(),
        latency_curve: total.latency.curve(),
        server: before.zip(after).map(|(b, a)| process::used(b, a, seconds)),
    })
}

/// What one worker saw.
#[derive(Default)]
struct Part {
    logins: u64,
    wrong_user: u64,
    failed: BTreeMap<String, u64>,
    latency: Latencies,
}
