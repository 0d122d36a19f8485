//! The `chattr` process: wires backends and services by configuration and runs the roles
//! asked for. [`Server::start`] takes an already-bound listener, so tests bind port 0.

pub mod cli;
mod health;
pub mod otlp;
mod secrets;
pub mod settings;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use chattr_auth::{Auth, TokenKeys};
use chattr_bus::DynBus;
use chattr_cache::DynCache;
use chattr_gateway::{GatewayState, Ops};
use chattr_messaging::Messaging;
use chattr_proto::auth::AuthClient;
use chattr_proto::messaging::MessagingClient;
use chattr_proto::video::VideoClient;
use chattr_store::DynStore;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::info;

pub use settings::{Role, Settings};

/// A running server: its addresses and a handle to stop it.
pub struct Server {
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// The backends a process opened (only those its roles use).
#[derive(Clone, Default)]
struct Backends {
    store: Option<DynStore>,
    bus: Option<DynBus>,
    cache: Option<DynCache>,
}

impl Backends {
    async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let has = |r: Role| settings.services.contains(&r);
        let needs_store = [Role::Auth, Role::Messaging, Role::Relay, Role::Fanout].into_iter().any(has);
        // Messaging consumes call events (timeline summaries); video publishes them.
        let needs_bus = [Role::Messaging, Role::Relay, Role::Fanout, Role::Video].into_iter().any(has);
        let needs_cache =
            [Role::Gateway, Role::Auth, Role::Messaging, Role::Fanout, Role::Video].into_iter().any(has);
        let mut backends = Backends::default();
        if needs_store {
            backends.store = Some(chattr_store::open(&settings.store_url()).await.context("opening store")?);
        }
        if needs_bus {
            backends.bus = Some(chattr_bus::open(&settings.bus).context("opening bus")?);
        }
        if needs_cache {
            backends.cache = Some(chattr_cache::open(&settings.cache).await.context("opening cache")?);
        }
        Ok(backends)
    }

    fn store(&self) -> anyhow::Result<DynStore> {
        self.store.clone().context("no store opened for this role (a wiring bug)")
    }

    fn bus(&self) -> anyhow::Result<DynBus> {
        self.bus.clone().context("no bus opened for this role (a wiring bug)")
    }

    fn cache(&self) -> anyhow::Result<DynCache> {
        self.cache.clone().context("no cache opened for this role (a wiring bug)")
    }
}

impl Server {
    /// Opens the backends the selected roles need, builds their services and starts
    /// serving HTTP on `listener` (the gateway, or only health/readiness/metrics for a
    /// process without one) and gRPC on `settings.grpc_listen` if set.
    pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let roles = &settings.services;
        let has = |r: Role| roles.contains(&r);
        if (has(Role::Auth) || has(Role::Messaging) || has(Role::Video))
            && !has(Role::Gateway)
            && settings.grpc_listen.is_none()
        {
            bail!("the auth, messaging and video roles without a gateway serve nobody: set grpc_listen (--grpc-listen)");
        }
        if has(Role::Gateway) && !has(Role::Auth) && settings.remote.auth.is_empty() {
            bail!("a gateway without the auth role needs remote auth addresses (--auth-addrs)");
        }
        if has(Role::Gateway) && !has(Role::Messaging) && settings.remote.messaging.is_empty() {
            bail!(
                "a gateway without the messaging role needs remote messaging addresses (--messaging-addrs)"
            );
        }
        if has(Role::Gateway) && !has(Role::Video) && settings.remote.video.is_empty() {
            bail!("a gateway without the video role needs remote video addresses (--video-addrs)");
        }
        if has(Role::Video) && !has(Role::Messaging) && settings.remote.messaging.is_empty() {
            bail!("the video role without the messaging role needs remote messaging addresses (--messaging-addrs)");
        }
        check_split_backends(&settings)?;
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        let metrics = telemetry::metrics_handle();
        otlp::install(&settings.otlp, &settings.services)?;
        let backends = Backends::open(&settings).await?;
        telemetry::describe(telemetry::Uses {
            roles: &settings.services,
            store: backends.store.is_some(),
            cache: backends.cache.is_some(),
            bus: backends.bus.is_some(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let outbox = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let stopped = |rx: watch::Receiver<bool>| async move {
            let mut rx = rx;
            let _ = rx.wait_for(|down| *down).await;
        };

        if has(Role::Relay) {
            let (store, bus, poke) = (backends.store()?, backends.bus()?, outbox.clone());
            let poll = std::time::Duration::from_millis(settings.messaging.relay_poll_ms.max(1));
            tasks.spawn(chattr_messaging::relay::run(store, bus, poke, poll, stopped(shutdown_rx.clone())));
        }
        if has(Role::Fanout) {
            let (bus, store, cache) = (backends.bus()?, backends.store()?, backends.cache()?);
            tasks.spawn(chattr_messaging::fanout::run(bus, store, cache, stopped(shutdown_rx.clone())));
        }

        let local_auth = if has(Role::Auth) {
            let secret = match &settings.jwt_secret {
                Some(s) => s.clone(),
                None => secrets::load_or_create(&settings.data_dir.join("jwt.secret"))?,
            };
            let auth = Auth::new(
                backends.store()?,
                backends.cache()?,
                TokenKeys::new(&secret),
                settings.auth.clone(),
                outbox.clone(),
            )
            .map_err(|e| anyhow::anyhow!("auth service: {e}"))?;
            Some(AuthClient::local(auth))
        } else {
            None
        };
        let local_messaging = if has(Role::Messaging) {
            let (store, cache) = (backends.store()?, backends.cache()?);
            let messaging =
                Arc::new(Messaging::new(store, cache, settings.messaging.clone(), outbox.clone()));
            let (bus, stop) = (backends.bus()?, stopped(shutdown_rx.clone()));
            tasks.spawn(chattr_messaging::calls::run(bus, messaging.clone(), stop));
            Some(MessagingClient::from_arc(messaging))
        } else {
            None
        };
        let remote = settings.remote.rpc();
        let messaging_client = || -> anyhow::Result<MessagingClient> {
            Ok(match &local_messaging {
                Some(local) => local.clone(),
                None => MessagingClient::from_arc(Arc::new(
                    chattr_rpc::RemoteMessaging::new(&settings.remote.messaging, &remote)
                        .map_err(anyhow::Error::msg)?,
                )),
            })
        };
        let local_video = if has(Role::Video) {
            let video = Arc::new(chattr_video::Video::new(
                settings.video.clone(),
                backends.cache()?,
                backends.bus()?,
                messaging_client()?,
            ));
            tasks.spawn(video.clone().run_timers(stopped(shutdown_rx.clone())));
            Some(VideoClient::from_arc(video))
        } else {
            None
        };

        let mut grpc_addr = None;
        if let Some(grpc_listen) = settings
            .grpc_listen
            .filter(|_| local_auth.is_some() || local_messaging.is_some() || local_video.is_some())
        {
            let grpc = listen(grpc_listen).with_context(|| format!("binding gRPC {grpc_listen}"))?;
            grpc_addr = Some(grpc.local_addr()?);
            let services = chattr_rpc::Services {
                auth: local_auth.clone(),
                messaging: local_messaging.clone(),
                video: local_video.clone(),
            };
            let stop = stopped(shutdown_rx.clone());
            let secret = settings.remote.secret.as_ref().map(|s| s.expose_secret().to_owned());
            if secret.is_none() && !grpc_listen.ip().is_loopback() {
                tracing::warn!(%grpc_listen, "gRPC served beyond loopback without a service secret (remote.secret / --rpc-secret): anyone who reaches it can act as any user");
            }
            tasks.spawn(async move {
                if let Err(e) = chattr_rpc::serve(grpc, services, secret.as_deref(), stop).await {
                    tracing::error!(error = %e, "gRPC server stopped");
                }
            });
        }

        let addr = listener.local_addr()?;
        let health = health::Health::start(
            health::Probed {
                store: backends.store.clone(),
                cache: backends.cache.clone(),
                bus: backends.bus.clone(),
            },
            shutdown_rx.clone(),
        );
        let ops =
            Ops { render_metrics: Arc::new(move || metrics.render()), ready: health::ready_check(health) };
        if has(Role::Gateway) {
            let auth = match local_auth {
                Some(local) => local,
                None => AuthClient::from_arc(Arc::new(
                    chattr_rpc::RemoteAuth::new(&settings.remote.auth, &remote)
                        .map_err(anyhow::Error::msg)?,
                )),
            };
            let messaging = messaging_client()?;
            let video = match local_video {
                Some(local) => local,
                None => VideoClient::from_arc(Arc::new(
                    chattr_rpc::RemoteVideo::new(&settings.remote.video, &remote)
                        .map_err(anyhow::Error::msg)?,
                )),
            };
            let state = GatewayState::new(
                auth,
                messaging,
                video,
                backends.cache()?,
                settings.gateway.clone(),
                ops,
                shutdown_rx.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("gateway: {e}"))?;
            let stop = stopped(shutdown_rx.clone());
            tasks.spawn(async move {
                if let Err(e) = chattr_gateway::serve(listener, state, stop).await {
                    tracing::error!(error = %e, "gateway stopped");
                }
            });
        } else {
            let stop = stopped(shutdown_rx.clone());
            tasks.spawn(async move {
                if let Err(e) = chattr_gateway::serve_ops(listener, ops, stop).await {
                    tracing::error!(error = %e, "ops endpoint stopped");
                }
            });
        }
        telemetry::build_info(&settings.services);
        info!(%addr, grpc = ?grpc_addr, services = ?settings.services, store = %redact(&settings.store_url()), bus = %redact(&settings.bus), cache = %redact(&settings.cache), "chattr started");
        Ok(Self { addr, grpc_addr, shutdown, tasks })
    }

    /// The address of the gRPC listener, if this process serves one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The address of the HTTP listener (the gateway, or health/metrics only).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops every role: sockets close with 1001 (resumable), requests drain.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until a role stops. Roles only stop on shutdown or when they fail, so outside
    /// a shutdown this means the process is no longer whole: stop it (and let a supervisor
    /// restart it) rather than run on half-working.
    pub async fn wait(&mut self) {
        let _ = self.tasks.join_next().await;
    }

    /// Signals shutdown without waiting.
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Refuses in-process backends that would silently cut a process off from its peers: an
/// `inproc://` bus, `memory://` cache or `memory://` store connects only the roles of one
/// process, so a relay without its fan-out (or a gateway without the fan-out that feeds
/// it) would lose every event without an error. A SQLite file can be shared by processes
/// on one machine, but the relay lease does not cover it: warn.
fn check_split_backends(settings: &Settings) -> anyhow::Result<()> {
    let roles = &settings.services;
    let has = |r: Role| roles.contains(&r);
    let all = Role::ALL.iter().all(|r| roles.contains(r));
    if settings.bus.starts_with("inproc://") && (has(Role::Relay) != has(Role::Fanout)) {
        bail!("the in-process bus (inproc://) joins a relay only to a fan-out in the same process: give every process the same --bus kafka://…");
    }
    if settings.bus.starts_with("inproc://") && (has(Role::Video) != has(Role::Messaging)) {
        bail!("the in-process bus (inproc://) joins video's call events only to messaging in the same process: give every process the same --bus kafka://…");
    }
    let cache_users = [Role::Gateway, Role::Auth, Role::Messaging, Role::Fanout, Role::Video];
    if settings.cache.starts_with("memory://") && !all && cache_users.into_iter().any(has) {
        bail!("the in-memory cache (memory://) is not shared between processes: give every process the same --cache redis://…");
    }
    let store_users = [Role::Auth, Role::Messaging, Role::Relay, Role::Fanout];
    let store = settings.store_url();
    if !all && store_users.into_iter().any(has) {
        if store.starts_with("memory://") {
            bail!("the in-memory store (memory://) is not shared between processes: give every process the same --store postgres://…");
        }
        if store.starts_with("sqlite://") {
            tracing::warn!(store = %store, "roles split over processes on SQLite: only safe on one machine with one relay; use PostgreSQL");
        }
    }
    if has(Role::Auth) && settings.grpc_listen.is_some() && settings.jwt_secret.is_none() {
        tracing::warn!("auth served over gRPC with a token secret generated into this data dir: every auth instance needs the same --jwt-secret");
    }
    Ok(())
}

/// Hides credentials in URLs for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Connections the kernel queues for `accept` on a listening socket. Tokio's default
/// (1,024) overflows when thousands of clients reconnect at once: the kernel then drops
/// their SYNs and they retry after 1, 3, 7 s, so a reconnect storm takes seconds longer
/// than the server needs. Linux caps it at `net.core.somaxconn` (4,096 by default).
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a listening TCP socket with a backlog of [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and tokio do on Unix: a restarted server may bind while old sockets linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
