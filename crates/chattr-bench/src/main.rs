//! `chattr-bench`: runs one scenario against a running server, prints a progress line
//! every second, and writes the report as JSON (stdout, or `--json FILE`). Exits non-zero
//! when the run lost, duplicated, reordered or was refused anything, or a socket broke:
//! such a run is not a valid result. `chattr-bench chart` draws PNG charts from saved reports.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chattr_bench::target::{self, Target};
use chattr_bench::{chart, chat, idle, login, reconnect, source_addresses};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chattr-bench", about = "Chattr's load generator")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// 1:1 chat: pairs of users, one of each sending at an even share of the rate.
    Pairs {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        chat: ChatArgs,
        /// Pairs of users.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
    },
    /// Fan-out: groups of users, one member of each sending at an even share of the rate.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        chat: ChatArgs,
        /// Groups.
        #[arg(long, default_value_t = 10)]
        groups: usize,
        /// Members of each group (one sends, the others receive).
        #[arg(long, default_value_t = 50)]
        members: usize,
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
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Load generator processes to spread the connections over (one holds ~19,000).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Connections being opened at once, over all workers (0: all at once).
        #[arg(long, default_value_t = 64)]
        opening: usize,
    },
    /// One worker process of `idle --workers` (started by it, not by hand).
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        server: url::Url,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        users: usize,
        #[arg(long, value_delimiter = ',')]
        source_list: Vec<IpAddr>,
        #[arg(long)]
        opening: usize,
    },
    /// Reconnect storm: every socket cut at once, then all reconnect with their cursors.
    Reconnect {
        #[command(flatten)]
        common: Common,
        /// Sockets.
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        /// Users they belong to (in direct conversations of two).
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Messages each conversation gets while the sockets are away.
        #[arg(long, default_value_t = 3)]
        missed: u64,
        /// Seconds a socket may take to resume.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Login storm: password logins, several at a time.
    Login {
        #[command(flatten)]
        common: Common,
        /// Users logging in (each signs up first).
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// Logins in all.
        #[arg(long, default_value_t = 500)]
        logins: usize,
        /// Logins in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Draws PNG charts from saved reports.
    Chart {
        /// Where the charts go.
        #[arg(long)]
        out: PathBuf,
        /// Report files (JSON) written by the other subcommands.
        reports: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// The server, e.g. http://127.0.0.1:8080 (a Chattr gateway), ws://127.0.0.1:5280/ws
    /// (ejabberd), http://127.0.0.1:8008 (Synapse).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: url::Url,
    /// The server's pid, to report its CPU time and memory (with its child processes'):
    /// repeat it for a server of several processes (e.g. a peer and its PostgreSQL).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Loopback addresses to connect from (127.0.0.1 onwards).
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Write the report here instead of stdout.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct ChatArgs {
    /// The server under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Chattr)]
    target: TargetKind,
    /// Messages a second over all conversations; several (comma-separated) run one after
    /// another on the same conversations, until a step's p99 passes --stop-p99-ms.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    rate: Vec<f64>,
    /// Seconds to send at each rate.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Where a rate sweep stops: send→deliver p99 in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    stop_p99_ms: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetKind {
    Chattr,
    Ejabberd,
    Synapse,
}

impl TargetKind {
    fn build(self, server: url::Url) -> Box<dyn Target> {
        match self {
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
            Scenario::Pairs { common, chat, pairs } => run_chat(common, chat, pairs, 2).await?,
            Scenario::Fanout { common, chat, groups, members } => {
                run_chat(common, chat, groups, members).await?
            }
            Scenario::Idle { common, connections, users, hold, workers, opening } => {
                let progress = Arc::new(idle::Progress::default());
                let ticker = tokio::spawn(tick({
                    let p = progress.clone();
                    move || {
                        let (o, f, d) = (
                            p.opened.load(Ordering::Relaxed),
                            p.failed.load(Ordering::Relaxed),
                            p.dropped.load(Ordering::Relaxed),
                        );
                        format!("open {o}  failed {f}  dropped {d}")
                    }
                }));
                let config = idle::Config {
                    server: common.server.clone(),
                    connections,
                    users,
                    hold: Duration::from_secs_f64(hold),
                    sources: source_addresses(common.sources),
                    server_pids: common.server_pid.clone(),
                    opening,
                };
                let report = if workers > 1 {
                    idle::run_workers(config, workers, &std::env::current_exe()?, progress).await?
                } else {
                    idle::run(config, progress).await?
                };
                ticker.abort();
                (serde_json::to_string_pretty(&report)?, report.verified(), common.json)
            }
            Scenario::IdleWorker { server, connections, users, source_list, opening } => {
                let config = idle::Config {
                    server,
                    connections,
                    users,
                    hold: Duration::ZERO,
                    sources: source_list,
                    server_pids: Vec::new(),
                    opening,
                };
                return idle::worker(config, Arc::new(idle::Progress::default())).await;
            }
            Scenario::Reconnect { common, sockets, users, missed, timeout } => {
                let progress = Arc::new(reconnect::Progress::default());
                let ticker = tokio::spawn(tick({
                    let p = progress.clone();
                    move || {
                        let (c, r) = (p.connected.load(Ordering::Relaxed), p.resumed.load(Ordering::Relaxed));
                        format!("connected {c}  resumed {r}")
                    }
                }));
                let config = reconnect::Config {
                    server: common.server.clone(),
                    sockets,
                    users,
                    missed,
                    timeout: Duration::from_secs_f64(timeout),
                    sources: source_addresses(common.sources),
                    server_pids: common.server_pid.clone(),
                };
                let report = reconnect::run(config, progress).await?;
                ticker.abort();
                (serde_json::to_string_pretty(&report)?, report.verified(), common.json)
            }
            Scenario::Login { common, users, logins, concurrency } => {
                let progress = Arc::new(login::Progress::default());
                let ticker = tokio::spawn(tick({
                    let p = progress.clone();
                    move || {
                        let (d, f) = (p.done.load(Ordering::Relaxed), p.failed.load(Ordering::Relaxed));
                        format!("logins {d}  failed {f}")
                    }
                }));
                let config = login::Config {
                    server: common.server.clone(),
                    users,
                    logins,
                    concurrency,
                    server_pids: common.server_pid.clone(),
                };
                let report = login::run(config, progress).await?;
                ticker.abort();
                (serde_json::to_string_pretty(&report)?, report.verified(), common.json)
            }
            Scenario::Chart { out, reports } => {
                let drawn = chart::draw(&reports, &out)?;
                for path in drawn {
                    println!("{}", path.display());
                }
                return Ok(());
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

/// Runs the chat scenario: `conversations` of `members` users, at one rate or a sweep.
async fn run_chat(
    common: Common,
    args: ChatArgs,
    conversations: usize,
    members: usize,
) -> anyhow::Result<(String, bool, Option<PathBuf>)> {
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
    let target = args.target.build(common.server.clone());
    let config = chat::Config {
        conversations,
        members,
        rate: args.rate.first().copied().unwrap_or(100.0),
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs(10),
        sources: source_addresses(common.sources),
        server_pids: common.server_pid.clone(),
    };
    let out = if args.rate.len() > 1 {
        let steps = chat::sweep(target.as_ref(), config, &args.rate, args.stop_p99_ms, progress).await?;
        // A sweep is valid when its steps verify; the last may have passed the p99 bound.
        let verified = steps.iter().all(chat::Report::verified);
        (serde_json::to_string_pretty(&steps)?, verified, common.json)
    } else {
        let report = chat::run(target.as_ref(), config, progress).await?;
        (serde_json::to_string_pretty(&report)?, report.verified(), common.json)
    };
    ticker.abort();
    Ok(out)
}

/// Prints `line()` over itself every second on stderr.
async fn tick(line: impl Fn() -> String) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        eprint!("\r{:<60}", line());
    }
}
