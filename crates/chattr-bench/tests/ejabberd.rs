//! A seconds-long run of both chat scenarios against a real ejabberd (Debian's, started
//! privately by `scripts/peers/ejabberd.sh` on a free port, with its own PostgreSQL), so
//! the ejabberd target keeps working. No timing is asserted: only that the scenarios run,
//! count, and verify. The test never skips: without ejabberd installed it fails, naming
//! the script's `install`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chattr_bench::target::ejabberd::Peer;
use chattr_bench::{chat, source_addresses};

/// A private ejabberd, stopped when dropped (also when the test panics).
struct Ejabberd {
    state: tempfile::TempDir,
    url: url::Url,
    /// The Erlang VM's and PostgreSQL's.
    pids: Vec<u32>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/ejabberd.sh")
}

impl Ejabberd {
    fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/ejabberdctl").exists(),
            "ejabberd is not installed: run `scripts/peers/ejabberd.sh install` (as root)"
        );
        let state = tempfile::Builder::new().prefix("chattr-ejabberd-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut start = Command::new("bash");
        start.arg(script()).arg("start").arg(state.path()).arg(port.to_string());
        let out = start.output().expect("run bash");
        // Built before the check, so that a failed start is stopped too (Drop).
        let pids = std::fs::read_to_string(state.path().join("pids")).unwrap_or_default();
        let pids: Vec<u32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
        let url = url::Url::parse(&format!("ws://127.0.0.1:{port}/ws")).unwrap();
        let server = Ejabberd { state, url, pids };
        assert!(
            out.status.success() && server.pids.len() == 2,
            "scripts/peers/ejabberd.sh start failed (install it with `scripts/peers/ejabberd.sh install`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        let stopped = Command::new("bash").arg(script()).arg("stop").arg(self.state.path()).status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("stopping ejabberd in {} failed", self.state.path().display());
        }
    }
}

fn config(conversations: usize, members: usize, rate: f64, server: &Ejabberd) -> chat::Config {
    chat::Config {
        conversations,
        members,
        rate,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        sources: source_addresses(2),
        server_pids: server.pids.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_pairs_run_and_verify_on_ejabberd() {
    // One server for both scenarios: starting one takes seconds.
    let server = Ejabberd::start();
    let target = Peer { server: server.url.clone() };

    let fanout = config(3, 5, 15.0, &server);
    let report = chat::run(&target, fanout, Arc::new(chat::Progress::default())).await.unwrap();
    assert!(report.verified(), "fan-out: {report:#?}");
    assert_eq!((report.target, report.scenario), ("ejabberd", "fanout"));
    assert!(report.sent >= 20, "the schedule sent {} of ~30", report.sent);
    assert_eq!(report.acked, report.sent, "every send reflected by its room: {report:#?}");
    assert_eq!(report.delivered, report.acked * 4, "every receiver got every message: {report:#?}");
    assert_eq!(report.deliver.count, report.delivered);
    assert!(report.server.is_some(), "the server's processes {:?} were sampled", server.pids);

    let pairs = config(5, 2, 25.0, &server);
    let report = chat::run(&target, pairs, Arc::new(chat::Progress::default())).await.unwrap();
    assert!(report.verified(), "pairs: {report:#?}");
    assert_eq!(report.scenario, "pairs");
    assert!(report.sent >= 35, "the schedule sent {} of ~50", report.sent);
    assert_eq!(report.acked, report.sent, "every send acknowledged (stream management): {report:#?}");
    assert_eq!(report.delivered, report.acked, "every receiver got every message: {report:#?}");
    assert_eq!(report.deliver.count, report.delivered);
}
