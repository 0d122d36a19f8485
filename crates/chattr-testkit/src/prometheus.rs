//! A real, throwaway Prometheus (the Debian `prometheus` package) scraping the processes a
//! test names, with the rule files it names, so dashboards and alerts can be checked
//! against the metrics Chattr really exports. It scrapes and evaluates every second.
//!
//! Like the other servers of the kit it runs under a `sh` watchdog that kills it, and
//! removes its directory, once the test process has gone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus may take to become ready.
const START_WAIT: Duration = Duration::from_secs(30);

/// Starts `"$@"` and kills it once the test process (`$1`) is gone; removes `$2` then.
const WATCHDOG: &str = r#"
test_pid=$1; dir=$2; shift 2
"$@" >"$dir/prometheus.log" 2>&1 &
server=$!
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
kill -9 "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -rf "$dir"
"#;

/// One scrape job: its name and targets (`host:port`, scraped at `/metrics`).
pub struct Job {
    /// The `job` label.
    pub name: String,
    /// The targets.
    pub targets: Vec<SocketAddr>,
}

/// A running Prometheus.
pub struct Prometheus {
    port: u16,
    dir: PathBuf,
    watchdog: Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and evaluating the rules in
    /// `rule_files` every second; returns once it is ready. Panics when the binary is
    /// missing (scripts/test.sh installs it) or it does not start.
    pub fn start(jobs: &[Job], rule_files: &[&Path]) -> Prometheus {
        let binary = std::env::var("CHATTR_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
        // A free port found by binding :0 may be taken before Prometheus binds it: retry.
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir =
                tempfile::Builder::new().prefix("chattr-prometheus-").tempdir().expect("temp dir").keep();
            std::fs::write(dir.join("prometheus.yml"), config(jobs, rule_files)).expect("writing the config");
            let port = crate::redis::free_port();
            let watchdog = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("sh")
                .arg(std::process::id().to_string())
                .arg(&dir)
                .arg(&binary)
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {binary} (run scripts/test.sh to install it): {e}"));
            let mut prometheus = Prometheus { port, dir, watchdog };
            if prometheus.wait_ready() {
                return prometheus;
            }
            last_log = prometheus.log();
        }
        panic!("prometheus did not start; its log:\n{last_log}");
    }

    /// Waits until it answers `/-/ready`; false if it exited or took too long.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_WAIT;
        while self.get("/-/ready").is_none_or(|(status, _)| status != 200) {
            if Instant::now() > deadline || matches!(self.watchdog.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        true
    }

    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// A plain HTTP/1.0 GET: status and body, or `None` when nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((status, body))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.watchdog.kill();
        let _ = Command::new("pkill").arg("-9").arg("-f").arg(self.dir.display().to_string()).status();
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration: one static job per entry, 1 s scrape and evaluation intervals.
fn config(jobs: &[Job], rule_files: &[&Path]) -> String {
    let mut out =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n");
    out.push_str("rule_files:\n");
    for file in rule_files {
        out.push_str(&format!("  - {:?}\n", file.display().to_string()));
    }
    out.push_str("scrape_configs:\n");
    for job in jobs {
        out.push_str(&format!("  - job_name: {:?}\n    static_configs:\n      - targets:\n", job.name));
        for target in &job.targets {
            out.push_str(&format!("          - {:?}\n", target.to_string()));
        }
    }
    out
}
