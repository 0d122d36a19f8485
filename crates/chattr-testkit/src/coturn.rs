//! A private coturn TURN server in TURN REST API mode (`use-auth-secret`), on a free port,
//! plus a real TURN client check (`turnutils_uclient`, from the same Debian package) that
//! tells whether given credentials can allocate a relay. Without coturn installed every
//! test using it fails, pointing at `scripts/test.sh` (which installs it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Supervised;
use crate::redis::free_port;

/// A running `turnserver`; stopped when dropped (or when the test process dies).
pub struct TurnServer {
    port: u16,
    _process: Supervised,
    _dir: tempfile::TempDir,
}

fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()));
    assert!(found, "{binary} not found: install Debian's coturn package (scripts/test.sh does)");
}

impl TurnServer {
    /// Starts coturn accepting credentials signed with `secret`, relaying on loopback.
    pub fn start(secret: &str) -> TurnServer {
        require("turnserver");
        let dir = tempfile::Builder::new().prefix("chattr-turn-").tempdir().expect("temp dir");
        let port = free_port();
        let relay_low = 20_000 + (port % 20_000);
        let args: Vec<String> = [
            "-n".to_owned(),
            "--listening-ip=127.0.0.1".to_owned(),
            "--relay-ip=127.0.0.1".to_owned(),
            format!("--listening-port={port}"),
            "--use-auth-secret".to_owned(),
            format!("--static-auth-secret={secret}"),
            "--realm=chattr.test".to_owned(),
            "--no-cli".to_owned(),
            "--no-tls".to_owned(),
            "--no-dtls".to_owned(),
            "--allow-loopback-peers".to_owned(),
            format!("--min-port={relay_low}"),
            format!("--max-port={}", relay_low + 200),
            format!("--pidfile={}", dir.path().join("turnserver.pid").display()),
            "--log-file=stdout".to_owned(),
            "--simple-log".to_owned(),
        ]
        .into();
        let mut process = Supervised::spawn("turnserver", Path::new("turnserver"), &args, &[], dir.path());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(process.is_running(), "turnserver exited:\n{}", process.log());
            assert!(Instant::now() < deadline, "turnserver not listening after 10 s:\n{}", process.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        TurnServer { port, _process: process, _dir: dir }
    }

    /// The port (UDP and TCP) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `turn:` URL of this server.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}", self.port)
    }

    /// Whether a TURN client can allocate a relay with these credentials and send data
    /// through it (coturn's own test client).
    pub fn allocates(&self, username: &str, credential: &str) -> bool {
        require("turnutils_uclient");
        let port = self.port.to_string();
        let args = ["-y", "-n", "1", "-m", "1", "-l", "100", "-u", username, "-w", credential, "-p", &port];
        let status = Command::new("turnutils_uclient")
            .args(args)
            .arg("127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("running turnutils_uclient");
        status.success()
    }
}
