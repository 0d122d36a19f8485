//! The test harness: starts a server on port 0 in a temp dir and offers typed helpers.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chattr_api::v1::ServerFrame;
use chattr_client::{Client, ClientError, Connection};
use chattr_server::{Server, Settings};

pub use crate::cluster::Cluster;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(15);

/// Awaits `fut` or fails the test after [`WAIT`].
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

/// Which shape the suite runs against, from `CHATTR_E2E_PROFILE`:
/// - `embedded` (default): one in-process server on SQLite, the in-process bus and cache;
/// - `distributed`: every role in its own `chattr` process, talking gRPC, on PostgreSQL,
///   Redis and Kafka (tansu), all started by the test kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Embedded,
    Distributed,
}

pub fn profile() -> Profile {
    match std::env::var("CHATTR_E2E_PROFILE").as_deref() {
        Ok("distributed") => Profile::Distributed,
        Ok("embedded") | Err(_) => Profile::Embedded,
        Ok(other) => panic!("CHATTR_E2E_PROFILE={other}: expected embedded or distributed"),
    }
}

/// A running server (one process, or a cluster of role processes) plus its data directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub cluster: Option<Cluster>,
    pub settings: Settings,
    pub dir: tempfile::TempDir,
    pub url: String,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A unique username per call (tests share nothing but a process).
pub fn name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{n}_{}", std::process::id() % 10_000)
}

pub const PASSWORD: &str = "correct horse battery";

impl TestServer {
    /// Starts with test settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with test settings changed by `tweak`, in the profile of this run.
    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::for_test(dir.path());
        tweak(&mut settings);
        if profile() == Profile::Distributed {
            crate::cluster::use_shared_backends(&mut settings).await;
            let cluster = Cluster::start(&settings, dir.path());
            let url = cluster.url();
            return Self { server: None, cluster: Some(cluster), settings, dir, url };
        }
        let (server, url) = Self::boot(settings.clone()).await;
        Self { server: Some(server), cluster: None, settings, dir, url }
    }

    async fn boot(settings: Settings) -> (Server, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::start(settings, listener).await.expect("server starts");
        let url = format!("http://{}", server.addr());
        (server, url)
    }

    /// Stops the server (every process, gracefully) and starts it again on the same data
    /// (new ports).
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            within(s.shutdown()).await;
            let (server, url) = Self::boot(self.settings.clone()).await;
            self.server = Some(server);
            self.url = url;
        }
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
            let cluster = Cluster::start(&self.settings, self.dir.path());
            self.url = cluster.url();
            self.cluster = Some(cluster);
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// A client with no account.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    /// A client signed up as a fresh user.
    pub async fn user(&self, prefix: &str) -> Client {
        let c = self.anonymous();
        within(c.signup(&name(prefix), PASSWORD)).await.expect("signup");
        c
    }

    /// A second device (session) of the same account as `client`.
    pub async fn second_device(&self, client: &Client) -> Client {
        let c = self.anonymous();
        within(c.login(&client.me().unwrap().username, PASSWORD)).await.expect("login");
        c
    }
}

/// Reads frames until `pick` returns Some, failing after [`WAIT`].
pub async fn wait_for<T>(conn: &mut Connection, mut pick: impl FnMut(&ServerFrame) -> Option<T>) -> T {
    within(async {
        loop {
            let frame = conn.next().await.expect("socket open");
            if let Some(v) = pick(&frame) {
                return v;
            }
        }
    })
    .await
}

/// Reads frames until the socket closes; returns the close code.
pub async fn wait_closed(conn: &mut Connection) -> u16 {
    within(async {
        loop {
            match conn.next().await {
                Ok(_) => continue,
                Err(ClientError::Closed { code, .. }) => return code,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    })
    .await
}

/// Reads until `synced`, returning the frames before it.
pub async fn until_synced(conn: &mut Connection) -> Vec<ServerFrame> {
    within(async {
        let mut frames = Vec::new();
        loop {
            match conn.next().await.expect("socket open") {
                ServerFrame::Synced => return frames,
                f => frames.push(f),
            }
        }
    })
    .await
}

/// Asserts an API error's status and code.
pub fn assert_api_error<T: std::fmt::Debug>(result: Result<T, ClientError>, status: u16, code: &str) {
    match result {
        Err(ClientError::Api { status: s, code: c, .. }) => {
            assert_eq!((s, c.as_str()), (status, code), "unexpected error");
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}
