//! The distributed profile: every role of Chattr in its own `chattr` process (auth and
//! messaging serving gRPC, a gateway reaching them over it, relay and fan-out on the bus),
//! on PostgreSQL, Redis and Kafka started by the test kit. Each test gets a fresh database,
//! its own Redis key prefix and its own Kafka topic prefix, so tests share servers but
//! nothing else.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chattr_server::Settings;
use chattr_testkit::process::Supervised;

/// How long a role process may take to start.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a role process may take to stop on SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// The access-token secret every auth instance of a test cluster shares.
const JWT_SECRET: &str = "distributed-profile-test-secret-0123456789";
/// The secret between the cluster's services (gRPC callers must present it).
const RPC_SECRET: &str = "distributed-profile-service-secret";

/// Points `settings` at the shared PostgreSQL (a fresh database), Redis and Kafka, with
/// prefixes unique to this test.
pub async fn use_shared_backends(settings: &mut Settings) {
    let tenant = tenant_name();
    settings.store = Some(chattr_testkit::postgres::fresh_database_url().await);
    settings.cache = format!("{}?prefix={tenant}", chattr_testkit::redis::shared().url());
    settings.bus = format!("{}?topic_prefix={tenant}.", chattr_testkit::kafka::shared().url());
}

/// How many processes of each role a cluster runs (one auth instance always).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub messaging: usize,
    pub relays: usize,
    pub fanouts: usize,
    pub video: usize,
    pub gateways: usize,
    /// The processes' `RUST_LOG` (default `info`).
    pub log: &'static str,
}

impl Default for Shape {
    fn default() -> Self {
        Self { messaging: 1, relays: 1, fanouts: 1, video: 1, gateways: 1, log: "info" }
    }
}

/// One role process and the addresses it reported.
pub struct Role {
    pub process: Supervised,
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
}

/// The processes of one test's cluster.
pub struct Cluster {
    pub auth: Vec<Role>,
    pub messaging: Vec<Role>,
    pub relay: Vec<Role>,
    pub fanout: Vec<Role>,
    pub video: Vec<Role>,
    pub gateways: Vec<Role>,
    dir: std::path::PathBuf,
    /// `RUST_LOG` of every process.
    log: &'static str,
    generation: u32,
    /// Secrets of the settings (never in the TOML file), passed as environment.
    secrets: Vec<(String, String)>,
}

impl Cluster {
    /// Starts one process per role (auth, messaging, relay, fan-out, video, gateway).
    pub fn start(settings: &Settings, dir: &Path) -> Self {
        Self::start_shape(settings, dir, Shape::default())
    }

    /// Starts the processes of `shape`, each gateway balancing over every messaging
    /// instance.
    pub fn start_shape(settings: &Settings, dir: &Path, shape: Shape) -> Self {
        let mut cluster = Cluster {
            auth: Vec::new(),
            messaging: Vec::new(),
            relay: Vec::new(),
            fanout: Vec::new(),
            video: Vec::new(),
            gateways: Vec::new(),
            dir: dir.to_owned(),
            log: shape.log,
            generation: 0,
            secrets: Vec::new(),
        };
        if let Some(secret) = &settings.video.turn_secret {
            use secrecy::ExposeSecret;
            cluster.secrets.push(("CHATTR_TURN_SECRET".to_owned(), secret.expose_secret().to_owned()));
        }
        let config = dir.join("chattr.toml");
        std::fs::write(&config, settings.to_toml().expect("settings as TOML")).expect("writing config");
        cluster.generation = next_generation();
        let grpc = ["--grpc-listen", "127.0.0.1:0"];
        let mut pending = vec![cluster.spawn("auth", &["--services", "auth"], &grpc)];
        for i in 0..shape.messaging {
            pending.push(cluster.spawn(&format!("messaging{i}"), &["--services", "messaging"], &grpc));
        }
        for i in 0..shape.relays {
            pending.push(cluster.spawn(&format!("relay{i}"), &["--services", "relay"], &[]));
        }
        for i in 0..shape.fanouts {
            pending.push(cluster.spawn(&format!("fanout{i}"), &["--services", "fanout"], &[]));
        }
        for process in pending {
            let role = ready(process);
            let kind = role.process.name().split('-').next().unwrap_or_default().to_owned();
            match kind.trim_end_matches(|c: char| c.is_ascii_digit()) {
                "auth" => cluster.auth.push(role),
                "relay" => cluster.relay.push(role),
                "fanout" => cluster.fanout.push(role),
                _ => cluster.messaging.push(role),
            }
        }
        // Video reaches messaging (membership), so it starts once messaging listens.
        let messaging = addrs(&cluster.messaging);
        let video: Vec<_> = (0..shape.video)
            .map(|i| {
                let services = ["--services", "video", "--messaging-addrs", messaging.as_str()];
                cluster.spawn(&format!("video{i}"), &services, &grpc)
            })
            .collect();
        cluster.video.extend(video.into_iter().map(ready));
        for i in 0..shape.gateways {
            let gateway = cluster.spawn_gateway(i);
            cluster.gateways.push(ready(gateway));
        }
        cluster
    }

    /// Starts gateway number `i` (a new process) against the running services.
    pub fn spawn_gateway(&self, i: usize) -> Supervised {
        self.spawn_gateway_on(&format!("gateway{i}"), "127.0.0.1:0")
    }

    fn spawn_gateway_on(&self, name: &str, listen: &str) -> Supervised {
        let auth = addrs(&self.auth);
        let messaging = addrs(&self.messaging);
        let video = addrs(&self.video);
        let services = ["--services", "gateway", "--listen", listen];
        self.spawn(
            name,
            &services,
            &["--auth-addrs", &auth, "--messaging-addrs", &messaging, "--video-addrs", &video],
        )
    }

    #[allow(dead_code)] // The cluster test's; the e2e suite restarts nothing.
    /// A rolling-restart step for gateway `i`: SIGTERM, which must end the process within
    /// [`STOP_WAIT`], then a new process on the same address, so clients that know the
    /// address find it again. Returns how long the old process took to exit, and its log.
    pub fn restart_gateway(&mut self, i: usize) -> (Duration, String) {
        let took = terminate(&mut self.gateways[i]);
        let log = self.gateways[i].process.log();
        let name = format!("gateway{i}r{}", next_generation());
        let listen = self.gateways[i].http.to_string();
        self.gateways[i] = ready(self.spawn_gateway_on(&name, &listen));
        (took, log)
    }

    #[allow(dead_code)] // The cluster test's.
    /// The same for messaging instance `i`, on the same HTTP and gRPC addresses (gateways
    /// and video instances know it by its gRPC address).
    pub fn restart_messaging(&mut self, i: usize) -> (Duration, String) {
        let took = terminate(&mut self.messaging[i]);
        let log = self.messaging[i].process.log();
        let name = format!("messaging{i}r{}", next_generation());
        let listen = self.messaging[i].http.to_string();
        let grpc = self.messaging[i].grpc.map(|a| a.to_string()).unwrap_or_default();
        let services = ["--services", "messaging", "--listen", listen.as_str()];
        self.messaging[i] = ready(self.spawn(&name, &services, &["--grpc-listen", &grpc]));
        (took, log)
    }

    fn spawn(&self, name: &str, services: &[&str], extra: &[&str]) -> Supervised {
        let mut args: Vec<String> = vec!["serve".into(), "--config".into()];
        args.push(self.dir.join("chattr.toml").display().to_string());
        if !services.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"].map(String::from));
        }
        args.extend(services.iter().chain(extra).map(|s| s.to_string()));
        let mut envs = self.secrets.clone();
        envs.extend([
            ("CHATTR__JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
            ("CHATTR_RPC_SECRET".to_owned(), RPC_SECRET.to_owned()),
            ("RUST_LOG".to_owned(), self.log.to_owned()),
        ]);
        let name = format!("{name}-g{}", self.generation);
        Supervised::spawn(&name, Path::new(env!("CARGO_BIN_EXE_chattr")), &args, &envs, &self.dir)
    }

    /// The URL of the first gateway.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateways[0].http)
    }

    /// Every process, for checks over all of them.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.auth
            .iter()
            .chain(&self.messaging)
            .chain(&self.relay)
            .chain(&self.fanout)
            .chain(&self.video)
            .chain(&self.gateways)
    }

    /// SIGTERM to every process still running (a test may have killed some), gateways
    /// first; each must exit within [`STOP_WAIT`].
    pub fn stop(&mut self) {
        for role in self
            .gateways
            .iter_mut()
            .chain(&mut self.auth)
            .chain(&mut self.messaging)
            .chain(&mut self.relay)
            .chain(&mut self.fanout)
            .chain(&mut self.video)
        {
            if role.process.is_running() {
                terminate(role);
            }
        }
    }
}

/// SIGTERM, then waits for the exit; panics unless it came within [`STOP_WAIT`].
fn terminate(role: &mut Role) -> Duration {
    let asked = std::time::Instant::now();
    let name = role.process.name().to_owned();
    assert!(role.process.terminate(STOP_WAIT), "{name} did not stop on SIGTERM within {STOP_WAIT:?}");
    asked.elapsed()
}

fn addrs(roles: &[Role]) -> String {
    roles.iter().filter_map(|r| r.grpc).map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

/// A name unique to this test (key and topic prefix).
pub fn tenant_name() -> String {
    static TENANT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = TENANT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("t{}x{n}", std::process::id())
}

fn next_generation() -> u32 {
    static GENERATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Waits for the process's `chattr listening http=… grpc=…` line.
pub fn ready(mut process: Supervised) -> Role {
    let (http, grpc) = process.wait_for_line(START_WAIT, |line| {
        let rest = line.split("chattr listening ").nth(1)?;
        let mut http = None;
        let mut grpc = None;
        for field in rest.split_whitespace() {
            if let Some(v) = field.strip_prefix("http=") {
                http = v.parse::<SocketAddr>().ok();
            } else if let Some(v) = field.strip_prefix("grpc=") {
                grpc = Some(v.parse::<SocketAddr>().ok());
            }
        }
        Some((http?, grpc?))
    });
    Role { process, http, grpc }
}
