//! `chattr-bench`: runs one scenario against a running Chattr gateway, prints a progress
//! line every second, and writes the report as JSON (stdout, or `--json FILE`). Exits
//! non-zero when the run lost, duplicated or reordered anything.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chattr_bench::target::{self, Target};
use chattr_bench::{chat, idle, source_addresses};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chattr-bench", about = "Chattr's load generator")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// 1:1 chat: pairs of users, one sending at an even share of the rate.
    Pairs {
        #[command(flatten)]
        common: Common,
        /// Pairs of users.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages a second, over all pairs.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Fan-out: groups of users, one member of each sending at an even share of the rate.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Groups.
        #[arg(long, default_value_t = 10)]
        groups: usize,
        /// Members of each group (one sends, the others receive).
        #[arg(long, default_value_t = 50)]
        members: usize,
        /// Messages a second, over all groups.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Idle connections held open, answering heartbeats.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Users they belong to.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
    },
}

#[derive(Args)]
struct Common {
    /// The gateway, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: url::Url,
    /// The server's pid, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Loopback addresses to connect from (127.0.0.1 onwards).
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// The server under test (chat scenarios only).
    #[arg(long, value_enum, default_value_t = TargetKind::Chattr)]
    target: TargetKind,
    /// Write the report here instead of stdout.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetKind {
    Chattr,
    Ejabberd,
    Synapse,
}

impl Common {
    fn target(&self) -> Box<dyn Target> {
        let server = self.server.clone();
        match self.target {
            TargetKind::Chattr => Box::new(target::chattr::Chattr { server }),
            TargetKind::Ejabberd => Box::new(target::ejabberd::Peer { server }),
            TargetKind::Synapse => Box::new(target::synapse::Peer { server }),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (report, verified, json) = match cli.scenario {
            Scenario::Pairs { common, pairs, rate, duration } => {
                run_chat(common, pairs, 2, rate, duration).await?
            }
            Scenario::Fanout { common, groups, members, rate, duration } => {
                run_chat(common, groups, members, rate, duration).await?
            }
            Scenario::Idle { common, connections, users, hold } => {
                let progress = Arc::new(idle::Progress::default());
                let ticker = tokio::spawn(tick({
                    let p = progress.clone();
                    move || {
                        format!(
                            "open {}  dropped {}",
                            p.opened.load(Ordering::Relaxed),
                            p.dropped.load(Ordering::Relaxed)
                        )
                    }
                }));
                let config = idle::Config {
                    server: common.server,
                    connections,
                    users,
                    hold: Duration::from_secs_f64(hold),
                    sources: source_addresses(common.sources),
                    server_pid: common.server_pid,
                };
                let report = idle::run(config, progress).await?;
                ticker.abort();
                let verified = report.dropped == 0 && report.failed == 0;
                (serde_json::to_string_pretty(&report)?, verified, common.json)
            }
        };
        eprintln!();
        match json {
            Some(path) => std::fs::write(path, &report)?,
            None => println!("{report}"),
        }
        anyhow::ensure!(verified, "the run did not verify (see the report): not a valid result");
        Ok(())
    })
}

/// Runs the chat scenario: `conversations` of `members` users.
async fn run_chat(
    common: Common,
    conversations: usize,
    members: usize,
    rate: f64,
    duration: f64,
) -> anyhow::Result<(String, bool, Option<std::path::PathBuf>)> {
    let progress = Arc::new(chat::Progress::default());
    let ticker = tokio::spawn(tick({
        let p = progress.clone();
        move || {
            let (s, a, d) = (
                p.sent.load(Ordering::Relaxed),
                p.acked.load(Ordering::Relaxed),
                p.delivered.load(Ordering::Relaxed),
            );
            format!("sent {s}  acked {a}  delivered {d}")
        }
    }));
    let target = common.target();
    let config = chat::Config {
        conversations,
        members,
        rate,
        duration: Duration::from_secs_f64(duration),
        drain: Duration::from_secs(10),
        sources: source_addresses(common.sources),
        server_pid: common.server_pid,
    };
    let report = chat::run(target.as_ref(), config, progress).await?;
    ticker.abort();
    let verified = report.verified();
    Ok((serde_json::to_string_pretty(&report)?, verified, common.json))
}

/// Prints `line()` over itself every second on stderr.
async fn tick(line: impl Fn() -> String) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        eprint!("\r{:<60}", line());
    }
}
