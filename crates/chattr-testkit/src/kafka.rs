//! Real, throwaway `tansu` brokers (a Kafka-protocol broker written in Rust) for tests.
//!
//! [`shared`] starts one private broker per test binary on first use; tests that stop and
//! restart a broker start their own with [`KafkaServer::start`]. Brokers keep their data in
//! SQLite in a private temp dir, so it survives [`KafkaServer::restart`] on the same port.
//! Each broker runs under a tiny `sh` watchdog that kills it once the test process has
//! exited (Rust never drops statics), and then removes the dir. Nothing is skipped: without
//! the `tansu` binary every test fails, pointing at `scripts/install-tansu.sh`.
//!
//! Not tansu's in-memory engine: it serves a fetch only from whole stored batches that
//! start at or after the fetch offset, so a consumer resuming from a commit in the middle
//! of a batch never sees the rest of that batch (tansu 0.6.0). The SQLite engine stores
//! records one by one and has no such gap.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::redis::free_port;

/// How long a fresh broker may take to answer a metadata request.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM before it gets SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Runs the broker (`$3…`) in the data dir `$2`, logging to `tansu.log` and writing its pid
/// to `tansu.pid`; polls every 0.2 s until either the test process (`$1`) or the broker has
/// gone, then kills the broker. The dir goes only with the test process: a broker stopped
/// by the test leaves its data for the restart.
const WATCHDOG: &str = r#"
test_pid=$1; dir=$2; shift 2
cd "$dir" || exit 1
"$@" >>tansu.log 2>&1 &
server=$!
echo "$server" >tansu.pid
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
kill -9 "$server" 2>/dev/null
wait "$server" 2>/dev/null
kill -0 "$test_pid" 2>/dev/null || rm -rf "$dir"
"#;

/// A private `tansu` broker on 127.0.0.1.
pub struct KafkaServer {
    port: u16,
    dir: PathBuf,
    /// The watchdog of the running broker; `None` while stopped.
    watchdog: Option<Child>,
}

impl KafkaServer {
    /// Starts a broker on a free port and waits until it answers a metadata request.
    /// Panics (failing the test) when that is impossible.
    pub fn start() -> KafkaServer {
        let mut last_error = String::new();
        // A free port found by binding :0 may be taken by someone else before tansu binds
        // it; a few attempts make that race harmless.
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("chattr-tansu-").tempdir().expect("temp dir").keep();
            let mut server = KafkaServer { port: free_port(), dir, watchdog: None };
            match server.launch() {
                Ok(()) => return server,
                Err(log) => last_error = log,
            }
            drop(server);
        }
        panic!(
            "tansu did not answer a metadata request within {START_WAIT:?}; its log ends with:\n{last_error}"
        );
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bus URL of this broker.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, then SIGKILL if it lingers), closing every client
    /// connection as a real restart does, and waits until it has exited.
    pub fn stop(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else { return };
        let pid = std::fs::read_to_string(self.dir.join("tansu.pid")).unwrap_or_default();
        let pid = pid.trim();
        signal("TERM", pid);
        let mut deadline = Some(Instant::now() + STOP_WAIT);
        // The watchdog exits right after the broker does.
        while !matches!(watchdog.try_wait(), Ok(Some(_))) {
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                signal("KILL", pid);
                deadline = None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port with the same data (after [`stop`]).
    ///
    /// [`stop`]: KafkaServer::stop
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!(
                "tansu did not come back on port {} within {START_WAIT:?}; its log ends with:\n{log}",
                self.port
            );
        }
    }

    /// Runs the broker under its watchdog and waits until it answers; on failure stops it
    /// and returns the end of its log.
    fn launch(&mut self) -> Result<(), String> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(tansu_binary())
            .arg("broker")
            .args(["--listener-url", &listener, "--advertised-listener-url", &listener])
            // Relative to the broker's working directory, its private dir.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning sh to run tansu");
        self.watchdog = Some(watchdog);
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if metadata_answers(self.port) {
                return Ok(());
            }
            if self.watchdog.as_mut().is_some_and(|w| matches!(w.try_wait(), Ok(Some(_)))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(log_tail(&self.dir))
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        // Statics never get here; a test's own broker goes as soon as the test ends.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `kill -SIGNAL pid`; the harness forbids `unsafe`, so no libc.
fn signal(name: &str, pid: &str) {
    if !pid.is_empty() {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(pid).stderr(Stdio::null()).status();
    }
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("tansu.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The `tansu` binary: `$CHATTR_TANSU`, else the one `scripts/install-tansu.sh` installs
/// (`$CHATTR_TOOLS/bin`, by default `~/.cache/chattr-tools/bin`), else `tansu` on the PATH.
/// Fails the test, with instructions, when none runs.
pub fn tansu_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let tools = std::env::var_os("CHATTR_TOOLS").map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/chattr-tools"))
            });
            let binary = std::env::var_os("CHATTR_TANSU")
                .map(PathBuf::from)
                .or_else(|| tools.map(|tools| tools.join("bin/tansu")).filter(|path| path.is_file()))
                .unwrap_or_else(|| PathBuf::from("tansu"));
            if let Err(e) = Command::new(&binary).arg("--version").stdout(Stdio::null()).status() {
                panic!(
                    "cannot run {} ({e}): the Kafka bus tests need the tansu broker. \
                     Run scripts/install-tansu.sh (scripts/test.sh does), or set CHATTR_TANSU.",
                    binary.display()
                );
            }
            binary
        })
        .clone()
}

/// Whether a Kafka broker on `port` answers a Metadata (v1) request listing itself. Raw
/// bytes keep the harness free of a Kafka client.
pub fn metadata_answers(port: u16) -> bool {
    const CORRELATION_ID: i32 = 0x0c4a_77e5;
    let client_id = b"chattr-testkit";
    let mut request = Vec::new();
    request.extend(3i16.to_be_bytes()); // API key: Metadata
    request.extend(1i16.to_be_bytes()); // API version
    request.extend(CORRELATION_ID.to_be_bytes());
    request.extend((client_id.len() as i16).to_be_bytes());
    request.extend(client_id);
    request.extend((-1i32).to_be_bytes()); // topics: null, meaning all
    let mut framed = (request.len() as i32).to_be_bytes().to_vec();
    framed.extend(request);

    let exchange = || -> std::io::Result<Vec<u8>> {
        let addr = (Ipv4Addr::LOCALHOST, port).into();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(&framed)?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size)?;
        let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap_or(0)];
        stream.read_exact(&mut response)?;
        Ok(response)
    };
    let Ok(response) = exchange() else { return false };
    // correlation id, broker count, then the first broker: node id, host, port.
    let int = |at: usize| response.get(at..at + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let host_len = response.get(12..14).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    int(0) == Some(CORRELATION_ID)
        && int(4).is_some_and(|brokers| brokers >= 1)
        && host_len.and_then(|len| int(14 + len)) == Some(i32::from(port))
}

/// The broker shared by all tests of this binary, started on first use.
pub fn shared() -> &'static KafkaServer {
    static SERVER: OnceLock<KafkaServer> = OnceLock::new();
    SERVER.get_or_init(KafkaServer::start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_not_a_broker() {
        assert!(!metadata_answers(free_port()));
    }

    #[test]
    fn broker_comes_back_on_the_same_port_with_its_data() {
        let mut server = KafkaServer::start();
        assert!(metadata_answers(server.port()));
        let db = server.dir.join("tansu.db");
        assert!(db.is_file(), "tansu keeps its data in {}", db.display());
        server.stop();
        assert!(!metadata_answers(server.port()), "stopped broker still answers");
        server.restart();
        assert!(metadata_answers(server.port()));
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "dropping the server removes its dir");
    }
}
