//! A seconds-long run of each scenario against a real server (embedded profile, in this
//! process), so the load generator keeps working. No timing is asserted: only that the
//! scenarios run, count, and verify (nothing lost, duplicated or reordered).

use std::sync::Arc;
use std::time::Duration;

use chattr_bench::target::chattr::Chattr;
use chattr_bench::{chart, chat, idle, login, reconnect, source_addresses};
use chattr_server::{Server, Settings};

async fn server() -> (Server, url::Url, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = Settings::for_test(dir.path());
    // Every user of a run signs up from this one address.
    settings.auth.signup_per_ip_per_hour = 10_000;
    // The login storm logs the same few users in many times.
    settings.auth.login_per_username_per_minute = 10_000;
    settings.auth.login_per_ip_per_minute = 10_000;
    let server = Server::start(settings, listener).await.unwrap();
    let url = url::Url::parse(&format!("http://{}", server.addr())).unwrap();
    (server, url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_sweep_runs_and_verifies() {
    let (server, url, _dir) = server().await;
    let target = Chattr { server: url };
    let config = chat::Config {
        // 5 and then 10 a second per sender: under the gateway's per-socket limit (20).
        conversations: 20,
        members: 2,
        rate: 100.0,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        sources: source_addresses(2),
        server_pids: vec![std::process::id()],
    };
    let progress = Arc::new(chat::Progress::default());
    // The bound is never reached here: both steps run.
    let steps = chat::sweep(&target, config, &[100.0, 200.0], 60_000.0, progress).await.unwrap();
    assert_eq!(steps.len(), 2);
    for (step, rate) in steps.iter().zip([100.0, 200.0]) {
        assert!(step.verified(), "{step:#?}");
        assert_eq!(step.target_rate, rate);
        assert!(step.sent as f64 >= rate * 1.5, "the schedule sent {} of ~{}", step.sent, rate * 2.0);
        assert_eq!(step.acked, step.sent, "{step:#?}");
        assert_eq!(step.delivered, step.acked, "{step:#?}");
        assert_eq!(step.deliver.count, step.delivered);
        assert!(step.ack.p50_ms > 0.0 && step.deliver.p99_ms >= step.deliver.p50_ms);
        assert!(step.server.is_some());
        assert!(!step.deliver_curve.is_empty());
    }
    // The second step went on from the first one's send numbers and seqs, in order.
    assert_eq!(steps[1].out_of_order + steps[1].duplicated, 0);

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("pairs.json");
    std::fs::write(&report, serde_json::to_string(&steps).unwrap()).unwrap();
    let drawn = chart::draw(&[report], &dir.path().join("charts")).unwrap();
    assert_eq!(drawn.len(), 2, "{drawn:?}");
    for png in drawn {
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    }
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
        server_pids: vec![std::process::id()],
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
        server_pids: vec![std::process::id()],
        opening: 0,
    };
    let progress = Arc::new(idle::Progress::default());
    let report = idle::run(config, progress).await.unwrap();
    assert_eq!((report.opened, report.failed, report.dropped), (60, 0, 0), "{report:#?}");
    assert!(report.bytes_per_connection.is_some());
    server.shutdown().await;
}

/// A run that loses connections says why: here the server shuts down while they are held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_why_connections_dropped() {
    let (server, url, _dir) = server().await;
    let config = idle::Config {
        server: url,
        connections: 20,
        users: 2,
        hold: Duration::ZERO,
        sources: source_addresses(2),
        server_pids: vec![std::process::id()],
        opening: 0,
    };
    let progress = Arc::new(idle::Progress::default());
    let report = idle::run_until(config, progress, |_| server.shutdown()).await.unwrap();
    assert_eq!((report.opened, report.dropped), (20, 20), "{report:#?}");
    assert_eq!(
        report.failures.counts().iter().collect::<Vec<_>>(),
        [(&"dropped: closed 1001: server shutting down".to_owned(), &20)],
        "{report:#?}"
    );
    assert!(!report.verified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_spreads_over_worker_processes() {
    let (server, url, _dir) = server().await;
    let config = idle::Config {
        server: url,
        connections: 90,
        users: 6,
        hold: Duration::from_millis(500),
        sources: source_addresses(4),
        server_pids: vec![std::process::id()],
        opening: 8,
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_chattr-bench"));
    let report = idle::run_workers(config, 3, exe, Arc::new(idle::Progress::default())).await.unwrap();
    assert_eq!(report.workers, 3);
    assert_eq!(
        (report.connections, report.opened, report.failed, report.dropped),
        (90, 90, 0, 0),
        "{report:#?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_resumes_everyone() {
    let (server, url, _dir) = server().await;
    let config = reconnect::Config {
        server: url,
        sockets: 40,
        users: 4,
        missed: 3,
        timeout: Duration::from_secs(30),
        sources: source_addresses(2),
        server_pids: vec![std::process::id()],
    };
    let report = reconnect::run(config, Arc::new(reconnect::Progress::default())).await.unwrap();
    assert!(report.verified(), "{report:#?}");
    assert_eq!(report.resumed, 40);
    assert_eq!(report.failures.total(), 0, "a run without failures lists no reasons");
    assert_eq!(report.resume.count, 40);
    assert!(report.all_resumed_secs >= report.resume.p50_ms / 1000.0 * 0.99);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_storm_counts_logins() {
    let (server, url, _dir) = server().await;
    let config = login::Config {
        server: url,
        users: 3,
        logins: 12,
        concurrency: 3,
        server_pids: vec![std::process::id()],
    };
    let report = login::run(config, Arc::new(login::Progress::default())).await.unwrap();
    assert!(report.verified(), "{report:#?}");
    assert_eq!(report.logins, 12);
    assert!(report.logins_per_second > 0.0);
    server.shutdown().await;
}
