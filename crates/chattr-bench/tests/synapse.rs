//! A seconds-long run of each chat scenario against a real Synapse (started with
//! `scripts/peers/synapse.sh` in a temporary directory, on a free port), so the Synapse
//! target keeps working. No timing is asserted: only that the scenarios run, count, and
//! verify (nothing lost, duplicated, reordered or refused).
//!
//! Never skipped: without Synapse installed it fails, naming the install command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chattr_bench::target::synapse::Peer;
use chattr_bench::{chat, source_addresses};

/// `scripts/peers/synapse.sh`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/synapse.sh")
}

/// A Synapse and its PostgreSQL, running until dropped (also when a test panics).
struct Synapse {
    state: tempfile::TempDir,
    url: url::Url,
    pids: Vec<u32>,
}

impl Synapse {
    fn start() -> Synapse {
        let state = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out =
            Command::new(script()).arg("start").arg(state.path()).arg(port.to_string()).output().unwrap();
        assert!(
            out.status.success(),
            "starting Synapse failed (install it with `scripts/peers/synapse.sh install`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pids = std::fs::read_to_string(state.path().join("pids")).unwrap();
        let pids = pids.lines().map(|l| l.parse().unwrap()).collect();
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        Synapse { state, url, pids }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let out = Command::new(script()).arg("stop").arg(self.state.path()).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("stopping Synapse in {} failed: {out:?}", self.state.path().display());
        }
    }
}

fn config(conversations: usize, members: usize, rate: f64, server_pids: &[u32]) -> chat::Config {
    chat::Config {
        conversations,
        members,
        rate,
        duration: Duration::from_secs(3),
        drain: Duration::from_secs(20),
        sources: source_addresses(2),
        server_pids: server_pids.to_vec(),
    }
}

// One Synapse for both scenarios: it takes a good few seconds to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_pairs_run_and_verify() {
    let synapse = Synapse::start();
    let target = Peer { server: synapse.url.clone() };

    let fanout = config(3, 5, 6.0, &synapse.pids);
    let report = chat::run(&target, fanout, Arc::new(chat::Progress::default())).await.unwrap();
    assert!(report.verified(), "{report:#?}");
    assert_eq!(report.scenario, "fanout");
    assert!(report.sent >= 12, "the schedule sent {} of ~18", report.sent);
    assert_eq!(report.acked, report.sent, "{report:#?}");
    assert_eq!(report.delivered, report.acked * 4, "every receiver got every message: {report:#?}");
    assert_eq!(report.deliver.count, report.delivered);
    assert!(report.server.is_some());

    let pairs = config(5, 2, 10.0, &synapse.pids);
    let report = chat::run(&target, pairs, Arc::new(chat::Progress::default())).await.unwrap();
    assert!(report.verified(), "{report:#?}");
    assert_eq!(report.scenario, "pairs");
    assert!(report.sent >= 20, "the schedule sent {} of ~30", report.sent);
    assert_eq!(report.acked, report.sent, "{report:#?}");
    assert_eq!(report.delivered, report.acked, "{report:#?}");
    assert_eq!(report.deliver.count, report.delivered);
}
