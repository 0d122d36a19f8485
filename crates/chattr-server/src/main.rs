//! `chattr`: with no arguments (or `serve`) runs every service on embedded defaults;
//! `chattr chat …` is a terminal client; `chattr openapi` prints the API description.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use chattr_server::{Role, Server, Settings};
use clap::{Args, Parser, Subcommand};

/// mimalloc rather than the system allocator: it gives large freed blocks (Argon2's
/// 19 MiB per hash) back to the system, where glibc keeps them in its per-thread arenas,
/// so a process that has hashed a few hundred passwords stays small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "chattr", version, about = "Chattr: real-time chat that never loses a message")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Chat from the terminal.
    Chat(chattr_server::cli::ChatArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Create or upgrade the store's schema, then exit (servers also do it on start).
    Migrate {
        /// Store URL (default sqlite://./data/chattr.db).
        #[arg(long, env = "CHATTR_STORE", default_value = "sqlite://./data/chattr.db")]
        store: String,
    },
}

#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "CHATTR_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long, env = "CHATTR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (default ./data).
    #[arg(long, env = "CHATTR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or memory:// (default sqlite://<data-dir>/chattr.db).
    #[arg(long, env = "CHATTR_STORE")]
    store: Option<String>,
    /// Bus URL: inproc:// or kafka://HOST:PORT[,HOST:PORT…] (default inproc://).
    #[arg(long, env = "CHATTR_BUS")]
    bus: Option<String>,
    /// Cache URL (default memory://).
    #[arg(long, env = "CHATTR_CACHE")]
    cache: Option<String>,
    /// Services to run: all, or a list of gateway,auth,messaging,relay,fanout,video.
    #[arg(long, env = "CHATTR_SERVICES")]
    services: Option<String>,
    /// gRPC listen address for the auth, messaging and video roles of this process.
    #[arg(long, env = "CHATTR_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Remote auth instances, comma-separated host:port (when this process has no auth role).
    #[arg(long, env = "CHATTR_AUTH_ADDRS")]
    auth_addrs: Option<String>,
    /// Remote messaging instances, comma-separated host:port.
    #[arg(long, env = "CHATTR_MESSAGING_ADDRS")]
    messaging_addrs: Option<String>,
    /// Remote video instances, comma-separated host:port.
    #[arg(long, env = "CHATTR_VIDEO_ADDRS")]
    video_addrs: Option<String>,
    /// Access-token signing secret, shared by every auth instance (default: generated into
    /// the data dir, which suits a single auth instance).
    #[arg(long, env = "CHATTR_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Shared secret between services: gRPC servers require it, clients present it (set
    /// the same on every process whenever gRPC is reachable beyond loopback).
    #[arg(long, env = "CHATTR_RPC_SECRET", hide_env_values = true)]
    rpc_secret: Option<String>,
    /// TURN/STUN server URLs for WebRTC, comma-separated (turn:host:3478,…).
    #[arg(long, env = "CHATTR_TURN_URL")]
    turn_url: Option<String>,
    /// The secret shared with the TURN server (coturn's static-auth-secret).
    #[arg(long, env = "CHATTR_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        None => runtime.block_on(serve(ServeArgs::default())),
        Some(Command::Serve(args)) => runtime.block_on(serve(*args)),
        Some(Command::Chat(args)) => {
            runtime.block_on(args.command.run(&args.server, args.profile.as_deref()))
        }
        Some(Command::Openapi) => {
            println!("{}", chattr_gateway::openapi_json());
            Ok(())
        }
        Some(Command::Migrate { store }) => runtime.block_on(async {
            if let Some(path) = store.strip_prefix("sqlite://") {
                if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
            }
            chattr_store::open(&store).await.context("migrating the store")?;
            println!("store schema is up to date");
            Ok(())
        }),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    if let Some(v) = args.listen {
        settings.listen = v;
    }
    if let Some(v) = args.data_dir {
        settings.data_dir = v;
    }
    if let Some(v) = args.store {
        settings.store = Some(v);
    }
    if let Some(v) = args.bus {
        settings.bus = v;
    }
    if let Some(v) = args.cache {
        settings.cache = v;
    }
    if let Some(v) = args.services {
        settings.services = Role::parse_list(&v)?;
    }
    if let Some(v) = args.grpc_listen {
        settings.grpc_listen = Some(v);
    }
    if let Some(v) = args.auth_addrs {
        settings.remote.auth = chattr_server::settings::address_list(&v);
    }
    if let Some(v) = args.messaging_addrs {
        settings.remote.messaging = chattr_server::settings::address_list(&v);
    }
    if let Some(v) = args.jwt_secret {
        settings.jwt_secret = Some(v.into());
    }
    if let Some(v) = args.rpc_secret {
        settings.remote.secret = Some(v.into());
    }
    if let Some(v) = args.video_addrs {
        settings.remote.video = chattr_server::settings::address_list(&v);
    }
    if let Some(v) = args.turn_url {
        settings.video.turn_urls = chattr_server::settings::address_list(&v);
    }
    if let Some(v) = args.turn_secret {
        settings.video.turn_secret = Some(v.into());
    }
    chattr_server::telemetry::init_logging(settings.log_format);
    let listener =
        chattr_server::listen(settings.listen).with_context(|| format!("binding {}", settings.listen))?;
    let gateway = settings.services.contains(&Role::Gateway);
    let roles = format!("{:?}", settings.services).to_lowercase();
    let mut server = Server::start(settings, listener).await?;
    let addr = server.addr();
    // One machine-readable line, for scripts and supervisors that start with port 0.
    let grpc = server.grpc_addr().map_or_else(|| "-".to_owned(), |a| a.to_string());
    println!("chattr listening http={addr} grpc={grpc}");
    if !gateway {
        println!("Chattr roles {roles} running; health and metrics on http://{addr}, gRPC on {grpc}");
    } else {
        println!("Chattr is running on http://{addr}  (REST under /v1, WebSocket at ws://{addr}/v1/ws, API description at /openapi.json)");
        println!("Try it: chattr chat --server http://{addr} signup <username>   — Ctrl-C stops the server.");
    }
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            server.shutdown().await;
        }
        _ = server.wait() => {
            tracing::error!("a role stopped unexpectedly; shutting down");
            server.shutdown().await;
            anyhow::bail!("a role stopped unexpectedly (see the log above)");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
