//! The gateway: Chattr's WebSocket and REST edge.
//!
//! It authenticates requests and sockets, translates them into calls on the auth and
//! messaging clients, and delivers events from pub/sub to the sockets it hosts. It holds
//! no business logic. [`router`] builds the axum router; [`serve`] runs it on an already
//! bound listener until a shutdown future resolves.

mod error;
mod extract;
mod hub;
pub mod metrics;
mod openapi;
mod routes;
mod settings;
mod web;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use chattr_cache::DynCache;
use chattr_proto::auth::AuthClient;
use chattr_proto::messaging::MessagingClient;
use chattr_proto::video::VideoClient;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use hub::Hub;
pub use openapi::openapi_json;
pub use settings::GatewaySettings;

/// A readiness probe: resolves to `Err(reason)` when a backend is unreachable.
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Operational hooks the process provides: metrics rendering and readiness.
#[derive(Clone)]
pub struct Ops {
    /// Renders the Prometheus text exposition of this process.
    pub render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Checks the backends this process depends on.
    pub ready: ReadyCheck,
}

/// Shared state of every request and socket.
#[derive(Clone)]
pub struct GatewayState {
    pub(crate) auth: AuthClient,
    pub(crate) messaging: MessagingClient,
    pub(crate) video: VideoClient,
    pub(crate) hub: Hub,
    /// Batches every socket's heartbeat work into a few calls.
    pub(crate) beats: ws::Beats,
    /// Batches closed sockets' presence into a few calls.
    pub(crate) goodbyes: ws::Goodbyes,
    /// Batches new sockets' token checks into a few calls.
    pub(crate) tokens: ws::Tokens,
    pub(crate) settings: Arc<GatewaySettings>,
    pub(crate) ops: Ops,
    /// Flips to true on shutdown; sockets close with 1001 (resumable).
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Open sockets, awaited on shutdown.
    pub(crate) sockets: Arc<ws::Sockets>,
}

impl GatewayState {
    /// Wires the gateway: opens its one shared pub/sub connection.
    pub async fn new(
        auth: AuthClient,
        messaging: MessagingClient,
        video: VideoClient,
        cache: DynCache,
        settings: GatewaySettings,
        ops: Ops,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let hub = Hub::start_with(cache, settings.pubsub_capacity, settings.queue_capacity).await?;
        Ok(Self {
            beats: ws::Beats::start(auth.clone(), messaging.clone()),
            goodbyes: ws::Goodbyes::start(messaging.clone()),
            tokens: ws::Tokens::start(auth.clone()),
            auth,
            messaging,
            video,
            hub,
            settings: Arc::new(settings),
            ops,
            shutdown,
            sockets: Arc::default(),
        })
    }
}

impl axum::extract::FromRef<GatewayState> for Ops {
    fn from_ref(state: &GatewayState) -> Self {
        state.ops.clone()
    }
}

/// The HTTP endpoints of a process without a gateway (auth, messaging, relay, fan-out
/// roles): `/health`, `/ready` and `/metrics`, so every role is probed and scraped alike.
pub async fn serve_ops(
    listener: TcpListener,
    ops: Ops,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = Router::new()
        .route("/health", get(routes::ops::health))
        .route("/ready", get(routes::ops::ready))
        .route("/metrics", get(routes::ops::metrics))
        .with_state(ops);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// The gateway's HTTP router (REST, WebSocket, health, metrics, OpenAPI).
pub fn router(state: GatewayState) -> Router {
    routes::router(state)
}

/// How long shutdown waits for sockets to finish their goodbye (1001) before giving up.
const SOCKETS_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the gateway on `listener` until `shutdown` resolves, then closes sockets
/// (1001, resumable), drains in-flight requests and waits (bounded) until every socket has
/// sent its close frame, so a process exiting right after loses no goodbye.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sockets = state.sockets.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // No Nagle: a frame written while the previous one waits for its ACK would otherwise
    // wait for that ACK too, which the client's delayed ACK holds back up to 40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on a connection");
        }
    });
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let open = sockets.count();
    tracing::info!(sockets = open, "stopped accepting; open sockets told to resume elsewhere (1001)");
    if tokio::time::timeout(SOCKETS_CLOSE_WAIT, sockets.all_closed()).await.is_err() {
        tracing::warn!("sockets still open {SOCKETS_CLOSE_WAIT:?} after shutdown; exiting anyway");
    } else if open > 0 {
        tracing::info!(sockets = open, "every socket closed");
    }
    served
}
