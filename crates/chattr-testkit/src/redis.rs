//! Real, throwaway `redis-server` processes for tests.
//!
//! [`shared`] starts one private server per test binary on first use; tests that need to
//! stop and restart a server start their own with [`RedisServer::start`]. Each server runs
//! under a tiny `sh` watchdog that kills it, and removes its temp dir, once the test
//! process has exited, because Rust never drops statics and so cannot stop the shared
//! server itself. Nothing is skipped: without `redis-server` every test fails, pointing at
//! `scripts/test.sh` (which installs it).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const START_WAIT: Duration = Duration::from_secs(15);

/// Starts `redis-server "$@"`, then polls every 0.2 s until either the test process
/// (`$1`) or the server has gone; then kills the server and removes its dir (`$2`).
const WATCHDOG: &str = r#"
test_pid=$1; dir=$2; shift 2
"$@" &
server=$!
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
kill -9 "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -rf "$dir"
"#;

/// A private `redis-server` on 127.0.0.1.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    watchdog: Child,
    /// False once [`RedisServer::stop`] ran: the port may then belong to a successor.
    running: bool,
}

impl RedisServer {
    /// Starts a server on `port`, or on a free port when `None`, and waits until it
    /// answers PING. Panics (failing the test) when that is impossible.
    pub fn start(port: Option<u16>) -> RedisServer {
        require_redis_server();
        let mut last_error = String::new();
        // A free port found by binding :0 may be taken by someone else before Redis binds
        // it; a few attempts make that race harmless.
        for _ in 0..3 {
            let port = port.unwrap_or_else(free_port);
            let dir = tempfile::Builder::new().prefix("chattr-redis-").tempdir().expect("temp dir").keep();
            let watchdog = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("sh")
                .arg(std::process::id().to_string())
                .arg(&dir)
                .arg("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning sh to run redis-server");
            let mut server = RedisServer { port, dir, watchdog, running: true };
            if server.wait_until_up() {
                return server;
            }
            last_error = server.log_tail();
            server.stop();
        }
        panic!("redis-server did not answer PING within {START_WAIT:?}; its log ends with:\n{last_error}");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Polls PING until it answers or the watchdog (hence the server) has exited.
    fn wait_until_up(&mut self) -> bool {
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if raw_command(self.port, "PING").is_some_and(|reply| reply.starts_with("+PONG")) {
                return true;
            }
            if matches!(self.watchdog.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Shuts the server down (the process exits and every client connection closes, as in
    /// a restart) and waits until the port no longer answers.
    pub fn stop(&mut self) {
        self.running = false;
        let _ = raw_command(self.port, "SHUTDOWN NOSAVE");
        let deadline = Instant::now() + START_WAIT;
        while raw_command(self.port, "PING").is_some() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not shut down", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.watchdog.try_wait(); // Reap the watchdog if it is done already.
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Statics never get here; a test's own server stops as soon as the test ends.
        if self.running {
            let _ = raw_command(self.port, "SHUTDOWN NOSAVE");
        }
    }
}

/// Fails the test, with instructions, when `redis-server` is not installed.
fn require_redis_server() {
    if let Err(e) = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status() {
        panic!(
            "cannot run redis-server ({e}): the Redis cache tests need a real Redis. \
             Run scripts/test.sh, which installs it (or `apt-get install redis-server`)."
        );
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a free port");
    listener.local_addr().expect("local addr").port()
}

/// Sends one inline command and returns the start of the reply; `None` when nothing
/// answers. Inline commands keep the harness free of any Redis client.
pub fn raw_command(port: u16, command: &str) -> Option<String> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The server shared by all tests of this binary, started on first use.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start(None))
}
