//! What `/ready` answers and `chattr_backend_up` reports: every few seconds each backend
//! this process opened is probed (the store and cache answer a ping, the bus carries a
//! canary record round trip), and a stopping process stops being ready at once, so load
//! balancers send nobody new to it while it drains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chattr_bus::canary::Canary;
use chattr_bus::DynBus;
use chattr_cache::DynCache;
use chattr_store::DynStore;
use tokio::sync::watch;

/// How often the backends are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long one probe may take before its backend counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// 1 when a backend answered its last probe, by `backend`.
pub const BACKEND_UP: &str = "chattr_backend_up";
/// How long a probe took, by `backend`.
pub const BACKEND_PROBE_SECONDS: &str = "chattr_backend_probe_seconds";

/// Describes the metrics.
pub fn describe() {
    metrics::describe_gauge!(BACKEND_UP, "1 if the backend answered the last health probe, else 0");
    metrics::describe_histogram!(
        BACKEND_PROBE_SECONDS,
        metrics::Unit::Seconds,
        "Health probe time by backend (the bus probe is a canary round trip)"
    );
}

/// The latest verdict: `None` until the first round of probes finished, then why the
/// process is not ready (or `Ok`).
type Verdict = Option<Result<(), String>>;

/// The probes of one process and their latest verdict.
#[derive(Clone)]
pub struct Health {
    verdict: watch::Receiver<Verdict>,
    draining: watch::Receiver<bool>,
}

/// The backends to probe.
pub struct Probed {
    pub store: Option<DynStore>,
    pub cache: Option<DynCache>,
    pub bus: Option<DynBus>,
}

impl Health {
    /// Starts probing every [`PROBE_EVERY`] until `draining` turns true or the runtime
    /// stops.
    pub fn start(probed: Probed, draining: watch::Receiver<bool>) -> Self {
        let (tx, verdict) = watch::channel(None);
        let canary = probed.bus.clone().map(Canary::new);
        let mut stop = draining.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|down| *down) => return,
                    _ = every.tick() => {}
                }
                let outcome = probe_all(&probed, canary.as_ref()).await;
                if tx.send(Some(outcome)).is_err() {
                    return;
                }
            }
        });
        Self { verdict, draining }
    }

    /// Ready when not stopping and every backend answered its last probe. Before the first
    /// round finished, waits for it.
    pub async fn ready(&self) -> Result<(), String> {
        if *self.draining.borrow() {
            return Err("shutting down".to_owned());
        }
        let mut verdict = self.verdict.clone();
        let first = tokio::time::timeout(PROBE_TIMEOUT * 2, verdict.wait_for(Option::is_some)).await;
        match first {
            Ok(Ok(v)) => v.clone().unwrap_or_else(|| Err("not probed yet".to_owned())),
            Ok(Err(_)) => Err("health probes stopped".to_owned()),
            Err(_) => Err("backends not probed yet".to_owned()),
        }
    }
}

/// Probes every backend (concurrently); the first failure is the verdict, which names the
/// backend only (`/ready` is public; the details are in the log).
async fn probe_all(probed: &Probed, canary: Option<&Canary>) -> Result<(), String> {
    let store = async {
        match &probed.store {
            Some(store) => {
                Some(timed("store", async { store.ping().await.map_err(|e| e.to_string()) }).await)
            }
            None => None,
        }
    };
    let cache = async {
        match &probed.cache {
            Some(cache) => {
                Some(timed("cache", async { cache.ping().await.map_err(|e| e.to_string()) }).await)
            }
            None => None,
        }
    };
    let bus = async {
        match canary {
            // The canary bounds itself: joining its group the first time may take longer
            // than a probe, then each round trip gets PROBE_TIMEOUT.
            Some(canary) => Some(
                observed("bus", async { canary.probe(PROBE_TIMEOUT).await.map_err(|e| e.to_string()) }).await,
            ),
            None => None,
        }
    };
    let (store, cache, bus) = tokio::join!(store, cache, bus);
    for (name, result) in [("store", store), ("cache", cache), ("bus", bus)] {
        if let Some(Err(_)) = result {
            return Err(format!("{name} unreachable"));
        }
    }
    Ok(())
}

/// Runs one probe with [`PROBE_TIMEOUT`] and records it.
async fn timed(
    backend: &'static str,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    observed(backend, async {
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    })
    .await
}

/// Runs one probe and records its outcome and time.
async fn observed(
    backend: &'static str,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let started = Instant::now();
    let result = probe.await;
    metrics::histogram!(BACKEND_PROBE_SECONDS, "backend" => backend).record(started.elapsed().as_secs_f64());
    metrics::gauge!(BACKEND_UP, "backend" => backend).set(if result.is_ok() { 1.0 } else { 0.0 });
    if let Err(reason) = &result {
        tracing::warn!(backend, %reason, "backend probe failed");
    }
    result
}

/// `/ready` as the gateway's ops routes want it.
pub fn ready_check(health: Health) -> chattr_gateway::ReadyCheck {
    let health = Arc::new(health);
    Arc::new(move || {
        let health = Arc::clone(&health);
        Box::pin(async move { health.ready().await })
    })
}
