//! A seconds-long run of each scenario against a real server (embedded profile, in this
//! process), so the load generator keeps working. No timing is asserted: only that the
//! scenarios run, count, and verify (nothing lost, duplicated or reordered).

use std::sync::Arc;
use std::time::Duration;

use chattr_bench::target::chattr::Chattr;
use chattr_bench::{chat, idle, source_addresses};
use chattr_server::{Server, Settings};

async fn server() -> (Server, url::Url, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = Settings::for_test(dir.path());
    // Every user of a run signs up from this one address.
    settings.auth.signup_per_ip_per_hour = 10_000;
    let server = Server::start(settings, listener).await.unwrap();
    let url = url::Url::parse(&format!("http://{}", server.addr())).unwrap();
    (server, url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_runs_and_verifies() {
    let (server, url, _dir) = server().await;
    let target = Chattr { server: url };
    let config = chat::Config {
        // 10 a second per sender: under the gateway's per-socket limit (20).
        conversations: 20,
        members: 2,
        rate: 200.0,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        sources: source_addresses(2),
        server_pid: Some(std::process::id()),
    };
    let progress = Arc::new(chat::Progress::default());
    let report = chat::run(&target, config, progress).await.unwrap();
    assert!(report.verified(), "{report:#?}");
    assert!(report.sent >= 300, "the schedule sent {} of ~400", report.sent);
    assert_eq!(report.acked, report.sent, "{report:#?}");
    assert_eq!(report.delivered, report.acked, "{report:#?}");
    assert_eq!(report.deliver.count, report.delivered);
    assert!(report.ack.p50_ms > 0.0 && report.deliver.p99_ms >= report.deliver.p50_ms);
    assert!(report.server.is_some());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_and_verifies() {
    let (server, url, _dir) = server().await;
    let target = Chattr { server: url };
    let config = chat::Config {
        conversations: 3,
        members: 8,
        rate: 30.0,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        sources: source_addresses(2),
        server_pid: Some(std::process::id()),
    };
    let report = chat::run(&target, config, Arc::new(chat::Progress::default())).await.unwrap();
    assert!(report.verified(), "{report:#?}");
    assert_eq!(report.scenario, "fanout");
    assert!(report.acked >= 45, "the schedule sent {} of ~60", report.acked);
    assert_eq!(report.delivered, report.acked * 7, "every receiver got every message: {report:#?}");
    assert_eq!(report.deliver.count, report.delivered);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_its_connections() {
    let (server, url, _dir) = server().await;
    let config = idle::Config {
        server: url,
        connections: 60,
        users: 6,
        hold: Duration::from_secs(2),
        sources: source_addresses(3),
        server_pid: Some(std::process::id()),
    };
    let progress = Arc::new(idle::Progress::default());
    let report = idle::run(config, progress).await.unwrap();
    assert_eq!((report.opened, report.failed, report.dropped), (60, 0, 0), "{report:#?}");
    assert!(report.bytes_per_connection.is_some());
    server.shutdown().await;
}
