//! Logging and the process-wide Prometheus recorder.
//!
//! Each crate declares its own metrics (a `metrics.rs` with names, help text and the
//! counters that start at zero); [`metrics_handle`] installs the recorder and has every
//! crate describe its metrics once. docs/metrics.md lists them all.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, Role};

/// The buckets of every latency histogram, in seconds (docs/metrics.md).
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the tracing subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// What `/metrics` serves: the recorder's metrics plus the process's own (CPU, memory,
/// file descriptors), sampled at each scrape.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// The process-wide recorder, installed on first use.
pub fn metrics_handle() -> Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may exist only if a library installed one; ours then stays local.
            let _ = metrics::set_global_recorder(recorder);
            // Histograms buffer their samples until folded in: do it on a timer, so a
            // process nobody scrapes does not grow.
            let upkeep = handle.clone();
            let _ =
                std::thread::Builder::new().name("chattr-metrics-upkeep".to_owned()).spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            let process = metrics_process::Collector::default();
            process.describe();
            Metrics { handle, process: Arc::new(process) }
        })
        .clone()
}

/// Sets `chattr_build_info{version, roles}`.
pub fn build_info(roles: &[Role]) {
    let roles = roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(",");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "roles" => roles).set(1.0);
}

/// Always 1, with the version and roles as labels.
const BUILD_INFO: &str = "chattr_build_info";

/// What a process runs and opened, for [`describe`].
pub struct Uses<'a> {
    /// Its roles.
    pub roles: &'a [Role],
    /// Whether it opened a store, a cache, a bus.
    pub store: bool,
    pub cache: bool,
    pub bus: bool,
}

/// Has every crate the process uses describe its metrics and create its zero counters
/// (once per process: the first server started in it decides).
pub fn describe(uses: Uses<'_>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let has = |role| uses.roles.contains(&role);
        metrics::describe_gauge!(BUILD_INFO, "Build information (value 1): version and roles");
        crate::health::describe();
        chattr_rpc::metrics::describe();
        if has(Role::Gateway) {
            chattr_gateway::metrics::describe();
        }
        if has(Role::Auth) {
            chattr_auth::metrics::describe();
        }
        if [Role::Messaging, Role::Relay, Role::Fanout].into_iter().any(has) {
            chattr_messaging::metrics::describe();
        }
        if has(Role::Video) {
            chattr_video::metrics::describe();
        }
        if uses.store {
            chattr_store::metrics::describe();
        }
        if uses.cache {
            chattr_cache::metrics::describe();
        }
        if uses.bus {
            chattr_bus::metrics::describe(&[
                chattr_core::events::TOPIC_USERS,
                chattr_core::events::TOPIC_CONVERSATIONS,
                chattr_core::events::TOPIC_CALLS,
                chattr_bus::canary::TOPIC,
            ]);
        }
    });
}
