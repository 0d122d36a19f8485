//! Processes of the project's own binaries, supervised for tests: output goes to a log
//! file, a tiny `sh` watchdog kills the process when the test process is gone (even after
//! `kill -9` of the test runner), and the test can kill (`SIGKILL`) or stop (`SIGTERM`) it
//! at will — the fault injection of the cluster tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `"$@"` with output to a log, records its pid, and kills it once the test process
/// (`$1`) is gone.
const WATCHDOG: &str = r#"
test_pid=$1; log=$2; pidfile=$3; shift 3
"$@" >"$log" 2>&1 &
child=$!
echo "$child" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
while kill -0 "$test_pid" 2>/dev/null; do
  kill -0 "$child" 2>/dev/null || { wait "$child"; exit $?; }
  sleep 0.5
done
kill -9 "$child" 2>/dev/null
"#;

/// A supervised process.
pub struct Supervised {
    name: String,
    watchdog: Child,
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    /// Starts `program args…` with extra environment `envs`, logging to `<dir>/<name>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], envs: &[(String, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let pidfile = dir.join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let mut command = Command::new("sh");
        command
            .args(["-c", WATCHDOG, "sh", &std::process::id().to_string()])
            .arg(&log)
            .arg(&pidfile)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        let watchdog = command.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "{name}: no pid after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        Self { name: name.to_owned(), watchdog, pid, log }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id of the program (not of its watchdog).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the program still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    /// Waits up to `within` until a line of the log satisfies `pick`; panics with the log
    /// if the process exits first or time runs out.
    pub fn wait_for_line<T>(&mut self, within: Duration, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if let Some(found) = log.lines().find_map(&pick) {
                return found;
            }
            if !self.is_running() {
                panic!("{} exited before it was ready; its log:\n{log}", self.name);
            }
            if Instant::now() >= deadline {
                panic!("{} was not ready within {within:?}; its log:\n{log}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: the process dies at once, as in a crash.
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.reap(Duration::from_secs(10));
    }

    /// `SIGTERM`, then waits up to `grace` for a clean exit (`SIGKILL` after that).
    /// Returns whether it exited within the grace period.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        self.signal("TERM");
        if self.reap(grace) {
            return true;
        }
        self.kill();
        false
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// Waits until the watchdog (which waits for the program) has exited.
    fn reap(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal("KILL");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
    }
}
