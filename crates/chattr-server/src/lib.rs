//! The `chattr` process: wires backends and services by configuration and runs the roles
//! asked for. [`Server::start`] takes an already-bound listener, so tests bind port 0.

pub mod cli;
mod secrets;
pub mod settings;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use chattr_auth::{Auth, TokenKeys};
use chattr_gateway::{GatewayState, Ops};
use chattr_messaging::Messaging;
use chattr_proto::auth::AuthClient;
use chattr_proto::messaging::MessagingClient;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::info;

pub use settings::{Role, Settings};

/// A running server: its address and a handle to stop it.
pub struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Opens the backends, builds the services of the selected roles and starts serving
    /// on `listener`.
    pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let roles = &settings.services;
        let has = |r: Role| roles.contains(&r);
        if has(Role::Gateway) && !(has(Role::Auth) && has(Role::Messaging)) {
            bail!("the gateway needs the auth and messaging services in the same process until remote services (gRPC) are available");
        }
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        let metrics = telemetry::metrics_handle();
        let store = chattr_store::open(&settings.store_url()).await.context("opening store")?;
        let bus = chattr_bus::open(&settings.bus).context("opening bus")?;
        let cache = chattr_cache::open(&settings.cache).await.context("opening cache")?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let outbox = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let stopped = |rx: watch::Receiver<bool>| async move {
            let mut rx = rx;
            let _ = rx.wait_for(|down| *down).await;
        };

        if has(Role::Relay) {
            let (store, bus, poke) = (store.clone(), bus.clone(), outbox.clone());
            tasks.spawn(chattr_messaging::relay::run(store, bus, poke, stopped(shutdown_rx.clone())));
        }
        if has(Role::Fanout) {
            let (bus, store, cache) = (bus.clone(), store.clone(), cache.clone());
            tasks.spawn(chattr_messaging::fanout::run(bus, store, cache, stopped(shutdown_rx.clone())));
        }
        let addr = listener.local_addr()?;
        if has(Role::Gateway) {
            let secret = match &settings.jwt_secret {
                Some(s) => s.clone(),
                None => secrets::load_or_create(&settings.data_dir.join("jwt.secret"))?,
            };
            let auth = Auth::new(
                store.clone(),
                cache.clone(),
                TokenKeys::new(&secret),
                settings.auth.clone(),
                outbox.clone(),
            )
            .map_err(|e| anyhow::anyhow!("auth service: {e}"))?;
            let messaging =
                Messaging::new(store.clone(), cache.clone(), settings.messaging.clone(), outbox.clone());
            let (ready_store, ready_bus, ready_cache) = (store.clone(), bus.clone(), cache.clone());
            let ops = Ops {
                render_metrics: Arc::new(move || metrics.render()),
                ready: Arc::new(move || {
                    let (store, bus, cache) = (ready_store.clone(), ready_bus.clone(), ready_cache.clone());
                    Box::pin(async move {
                        store.ping().await.map_err(|e| format!("store: {e}"))?;
                        bus.ping().await.map_err(|e| format!("bus: {e}"))?;
                        cache.ping().await.map_err(|e| format!("cache: {e}"))?;
                        Ok(())
                    })
                }),
            };
            let state = GatewayState::new(
                AuthClient::local(auth),
                MessagingClient::local(messaging),
                cache.clone(),
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
        }
        metrics::gauge!("chattr_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        info!(%addr, services = ?settings.services, store = %redact(&settings.store_url()), bus = %settings.bus, cache = %settings.cache, "chattr started");
        Ok(Self { addr, shutdown, tasks })
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops every role: sockets close with 1001 (resumable), requests drain.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until every role has stopped (they only stop on shutdown or failure).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Signals shutdown without waiting.
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Hides credentials in URLs for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
