//! Observability against the real thing: the distributed cluster (every role its own
//! process, on PostgreSQL, Redis and Kafka) scraped by a real Prometheus, under chat, call
//! and login traffic.
//!
//! 1. Every panel query of every Grafana dashboard (deploy/grafana/dashboards) and every
//!    recording and alerting rule (deploy/prometheus/rules) must parse and return at least
//!    one series. Alerts compare a signal with a threshold (`signal > 0.5`) and return
//!    nothing while healthy, so each is evaluated as `signal > bool 0.5`: the signal must
//!    exist. A misspelt metric, a label Chattr does not export or a broken expression fails
//!    the test; so does a rule Prometheus could not evaluate.
//! 2. One trace id follows a message from the sender's frame through gRPC, the store, the
//!    outbox relay and Kafka to fan-out and the receiver's socket, in each hop's JSON log;
//!    and the same hops arrive as spans of one trace at an OTLP collector (a small one in
//!    this test), every span's parent among them.

#[path = "e2e/cluster.rs"]
#[allow(dead_code)] // The e2e profile uses the rest of it.
mod cluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chattr_api::v1::{CallState, ClientFrame, ServerFrame};
use chattr_client::{Client, Connection};
use chattr_server::settings::LogFormat;
use chattr_server::Settings;
use chattr_testkit::prometheus::{Job, Prometheus};
use serde_json::Value;

use cluster::{Cluster, Shape};

const PASSWORD: &str = "correct horse battery";
/// How long the queries may take to all return series (scrapes and rule evaluations run
/// every second; rates need two samples; Kafka reports consumer lag every 5 s).
const SETTLE: Duration = Duration::from_secs(90);
/// Debug logs of the hops a message takes.
const LOG: &str = "info,chattr_gateway=debug,chattr_rpc=debug,chattr_messaging=debug";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_alerts_and_traces_hold_on_a_live_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_test(dir.path());
    settings.log_format = LogFormat::Json;
    let collector = Collector::start().await;
    settings.otlp.endpoint = Some(collector.url.clone());
    cluster::use_shared_backends(&mut settings).await;
    let shape = Shape { gateways: 2, log: LOG, ..Shape::default() };
    let mut cluster = Cluster::start_shape(&settings, dir.path(), shape);
    let rules = repo().join("deploy/prometheus/rules/chattr.yml");
    let prometheus = blocking(|| Prometheus::start(&jobs(&cluster), &[rules.as_path()]));

    // ---- traffic: logins (one failing), chat with live delivery and a resume, a call ----
    let tenant = cluster::tenant_name();
    let alice = Client::new(&format!("http://{}", cluster.gateways[0].http)).unwrap();
    let bob = Client::new(&format!("http://{}", cluster.gateways[1].http)).unwrap();
    alice.signup(&format!("{tenant}alice"), PASSWORD).await.unwrap();
    bob.signup(&format!("{tenant}bob"), PASSWORD).await.unwrap();
    assert!(alice.login(&format!("{tenant}alice"), "wrong password").await.is_err());
    alice.login(&format!("{tenant}alice"), PASSWORD).await.unwrap();
    bob.refresh().await.unwrap();
    let bob_id = bob.me().unwrap().id;
    let conv = alice.direct(bob_id).await.unwrap();
    let group = alice.group("ops", &[bob_id]).await.unwrap();
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    for i in 0..10 {
        alice.send(conv.id, &format!("warm-{i}"), "hello").await.unwrap();
        alice.send(group.id, &format!("group-{i}"), "hello all").await.unwrap();
    }
    let mut seen = 0;
    frame_where(&mut b, |f| {
        seen += matches!(f, ServerFrame::Message { .. }) as u32;
        (seen == 20).then_some(())
    })
    .await;
    // Bob reconnects from his position: a resume.
    b.close().await;
    let (mut b, _) = bob.connect(BTreeMap::from([(conv.id, 10)])).await.unwrap();
    let (mut a, _) = alice.connect(BTreeMap::new()).await.unwrap();
    call(&mut a, &mut b, conv.id).await;

    // Traffic keeps flowing while the queries settle, so rates stay above zero.
    let sender = tokio::spawn({
        let alice = alice.clone();
        async move {
            for i in 0.. {
                let _ = alice.send(conv.id, &format!("steady-{i}"), "tick").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });

    // ---- 1. every panel and rule returns series ----
    let http = reqwest::Client::new();
    let panels = panel_queries();
    assert!(panels.len() >= 50, "only {} panel queries found", panels.len());
    let deadline = Instant::now() + SETTLE;
    let failures = loop {
        let mut failures = Vec::new();
        for (panel, expr) in &panels {
            if let Err(why) = series(&http, &prometheus, &expr.replace("$__rate_interval", "1m")).await {
                failures.push(format!("panel {panel}: {why}\n    {expr}"));
            }
        }
        let rules = loaded_rules(&http, &prometheus).await;
        assert!(rules.len() >= 30, "only {} rules loaded:\n{}", rules.len(), prometheus.log());
        for rule in &rules {
            let name = rule["name"].as_str().unwrap_or_default();
            let query = rule["query"].as_str().unwrap_or_default();
            if rule["health"] != "ok" {
                failures.push(format!("rule {name}: health {} {}", rule["health"], rule["lastError"]));
                continue;
            }
            let expr = match rule["type"].as_str() {
                Some("alerting") => match as_signal(query) {
                    Ok(expr) => expr,
                    Err(why) => {
                        failures.push(format!("alert {name}: {why}\n    {query}"));
                        continue;
                    }
                },
                _ => query.to_owned(),
            };
            if let Err(why) = series(&http, &prometheus, &expr).await {
                failures.push(format!("rule {name}: {why}\n    {expr}"));
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(failures.is_empty(), "{} queries failed:\n{}", failures.len(), failures.join("\n"));
    // The series are not just the zeros every process starts with: the traffic moved them.
    for moved in [
        "sum(chattr_gateway_frames_in_total{type=\"call_start\"}) > 0",
        "sum(chattr_gateway_frames_out_total{type=\"message\"}) > 0",
        "sum(chattr_gateway_messages_delivered_total) > 0",
        "sum(chattr_gateway_delivery_latency_seconds_count) > 0",
        "sum(chattr_rpc_server_seconds_count{method=\"messaging.send\", code=\"OK\"}) > 0",
        "sum(chattr_rpc_client_seconds_count{method=\"messaging.send\", code=\"OK\"}) > 0",
        "sum(chattr_store_op_seconds_count{op=\"insert_message\"}) > 0",
        "sum(chattr_outbox_published_total) > 0",
        "sum(chattr_bus_consume_delay_seconds_count{topic=\"chattr.conversations\"}) > 0",
        "sum(chattr_fanout_messages_total) > 0",
        "sum(chattr_auth_attempts_total{result=\"failure\"}) > 0",
        "sum(chattr_auth_refreshes_total{result=\"success\"}) > 0",
        "sum(chattr_video_calls_started_total) > 0",
        "sum(chattr_video_calls_ended_total{outcome=\"completed\"}) > 0",
        "sum(chattr_messaging_call_summaries_total) > 0",
        "sum(chattr_gateway_resume_total{result=\"ok\"}) > 0",
        "min(chattr_backend_up) > 0",
    ] {
        assert!(series(&http, &prometheus, moved).await.is_ok(), "not moved by the traffic: {moved}");
    }
    // Every process was scraped.
    let up = series(&http, &prometheus, "up == 1").await.unwrap();
    assert_eq!(up.len(), cluster.roles().count(), "targets up: {up:?}");
    sender.abort();

    // ---- 2. one trace id through every hop ----
    b.close().await;
    let (mut b, _) = bob.connect(BTreeMap::new()).await.unwrap();
    let traced = alice.direct(bob_id).await.unwrap();
    let fresh = alice.group("traced", &[bob_id]).await.unwrap();
    assert_ne!(traced.id, fresh.id);
    a.send(&ClientFrame::Send {
        req_id: "traced".into(),
        conversation_id: fresh.id,
        client_msg_id: "traced-1".into(),
        body: "follow me".into(),
    })
    .await
    .unwrap();
    frame_where(&mut b, |f| {
        matches!(f, ServerFrame::Message { message } if message.conversation_id == fresh.id).then_some(())
    })
    .await;
    // The log lines are written as the hops happen; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let committed = log_lines(&cluster.messaging[0].process.log())
        .into_iter()
        .find(|l| {
            l["fields"]["message"] == "message committed"
                && l["fields"]["conversation_id"] == fresh.id.to_string().as_str()
        })
        .expect("messaging logs the commit with its trace id");
    let trace = committed["fields"]["trace_id"].as_str().expect("a trace id").to_owned();
    let hops = [
        ("the sender's gateway (frame)", cluster.gateways[0].process.log(), "frame received"),
        ("messaging (gRPC)", cluster.messaging[0].process.log(), "gRPC call"),
        ("the relay (outbox → Kafka)", cluster.relay[0].process.log(), "relaying to the bus"),
        ("fan-out (Kafka → pub/sub)", cluster.fanout[0].process.log(), "fanning out"),
        ("the receiver's gateway (socket)", cluster.gateways[1].process.log(), "message written to socket"),
    ];
    for (hop, log, message) in hops {
        let found = log_lines(&log)
            .iter()
            .any(|l| l["fields"]["trace_id"] == trace.as_str() && l["fields"]["message"] == message);
        assert!(found, "trace {trace} not in the log of {hop} (\"{message}\")");
    }

    // ---- the same trace as OTLP spans, from every process on the way ----
    let want = [
        ("chattr-gateway", "ws frame"),
        ("chattr-messaging", "grpc call"),
        ("chattr-relay", "relay publish"),
        ("chattr-fanout", "fan-out"),
        ("chattr-gateway", "deliver"),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = collector.spans_of(&trace);
        let complete = want
            .iter()
            .all(|(service, name)| spans.iter().any(|(s, span)| s == service && span["name"] == *name));
        // Both gateways write the message (Alice's own socket on gateway 0, Bob's on
        // gateway 1), each exporting its span in its own time.
        let delivered = spans.iter().filter(|(_, s)| s["name"] == "deliver").count();
        if complete && delivered >= 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans of trace {trace} so far: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hops: Vec<String> = spans.iter().map(|(service, s)| format!("{service}: {}", s["name"])).collect();
    println!("trace {trace}: {} spans\n  {}", spans.len(), hops.join("\n  "));
    let ids: std::collections::HashSet<&str> =
        spans.iter().filter_map(|(_, s)| s["spanId"].as_str()).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered = collector.spans_of(&trace).iter().filter(|(_, s)| s["name"] == "deliver").count();
    assert_eq!(delivered, 2, "one deliver span per member socket, no more");
    let roots: Vec<_> = spans.iter().filter(|(_, s)| s.get("parentSpanId").is_none()).collect();
    assert_eq!(roots.len(), 1, "one root (the sender's frame): {roots:#?}");
    assert_eq!(roots[0].1["name"], "ws frame");
    for (service, span) in &spans {
        if let Some(parent) = span["parentSpanId"].as_str() {
            assert!(ids.contains(parent), "{service} {} has a parent that was not exported", span["name"]);
        }
    }
    blocking(|| cluster.stop());
}

/// A small OTLP/HTTP collector: takes `POST /v1/traces` (JSON) and keeps every span with
/// its service name.
struct Collector {
    url: String,
    spans: std::sync::Arc<parking_lot::Mutex<Vec<(String, Value)>>>,
}

impl Collector {
    async fn start() -> Collector {
        use axum::routing::post;
        let spans = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |axum::Json(body): axum::Json<Value>| {
                let kept = kept.clone();
                async move {
                    for resource in body["resourceSpans"].as_array().cloned().unwrap_or_default() {
                        let service = resource["resource"]["attributes"]
                            .as_array()
                            .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
                            .and_then(|kv| kv["value"]["stringValue"].as_str())
                            .unwrap_or_default()
                            .to_owned();
                        for scope in resource["scopeSpans"].as_array().cloned().unwrap_or_default() {
                            for span in scope["spans"].as_array().cloned().unwrap_or_default() {
                                kept.lock().push((service.clone(), span));
                            }
                        }
                    }
                    axum::Json(serde_json::json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    fn spans_of(&self, trace: &str) -> Vec<(String, Value)> {
        self.spans.lock().iter().filter(|(_, s)| s["traceId"] == trace).cloned().collect()
    }
}

/// One call: Alice rings Bob, Bob answers, they exchange a signal, Alice hangs up.
async fn call(a: &mut Connection, b: &mut Connection, conversation_id: uuid::Uuid) {
    a.send(&ClientFrame::CallStart { req_id: "start".into(), conversation_id }).await.unwrap();
    let call = frame_where(a, |f| match f {
        ServerFrame::Call { req_id: Some(_), call } => Some(call.clone()),
        _ => None,
    })
    .await;
    frame_where(b, |f| matches!(f, ServerFrame::Call { call: c, .. } if c.id == call.id).then_some(())).await;
    b.send(&ClientFrame::CallAnswer { req_id: "answer".into(), call_id: call.id }).await.unwrap();
    let to = frame_where(a, |f| match f {
        ServerFrame::Call { call: c, .. } if c.state == CallState::Active => {
            c.participants.iter().find(|p| p.user_id != call.caller_id).map(|p| p.session_id)
        }
        _ => None,
    })
    .await;
    let signal = chattr_api::v1::Signal::Offer { sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into() };
    a.send(&ClientFrame::CallSignal { req_id: None, call_id: call.id, to_session_id: to, signal })
        .await
        .unwrap();
    frame_where(b, |f| matches!(f, ServerFrame::CallSignal { .. }).then_some(())).await;
    a.send(&ClientFrame::CallLeave { req_id: "bye".into(), call_id: call.id }).await.unwrap();
    frame_where(b, |f| {
        matches!(f, ServerFrame::Call { call: c, .. } if c.state == CallState::Ended).then_some(())
    })
    .await;
}

/// The Prometheus jobs of the cluster, named as deploy/prometheus names them.
fn jobs(cluster: &Cluster) -> Vec<Job> {
    let job = |name: &str, roles: &[cluster::Role]| Job {
        name: format!("chattr-{name}"),
        targets: roles.iter().map(|r| r.http).collect(),
    };
    vec![
        job("gateway", &cluster.gateways),
        job("auth", &cluster.auth),
        job("messaging", &cluster.messaging),
        job("relay", &cluster.relay),
        job("fanout", &cluster.fanout),
        job("video", &cluster.video),
    ]
}

/// Evaluates `expr` now; its series, or why there are none.
async fn series(http: &reqwest::Client, prometheus: &Prometheus, expr: &str) -> Result<Vec<Value>, String> {
    let url = format!("{}/api/v1/query", prometheus.url());
    let response = http.get(url).query(&[("query", expr)]).send().await.map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{} {}", body["errorType"], body["error"]));
    }
    match body["data"]["result"].as_array() {
        Some(result) if !result.is_empty() => Ok(result.clone()),
        _ => Err("no series".to_owned()),
    }
}

/// Every rule Prometheus loaded (`/api/v1/rules`).
async fn loaded_rules(http: &reqwest::Client, prometheus: &Prometheus) -> Vec<Value> {
    let body: Value =
        http.get(format!("{}/api/v1/rules", prometheus.url())).send().await.unwrap().json().await.unwrap();
    let groups = body["data"]["groups"].as_array().cloned().unwrap_or_default();
    groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect()
}

/// `signal > 0.5` as `signal > bool 0.5`: the alert's signal, which exists whether or not
/// the alert fires. Alerts must have exactly one comparison at the top level.
fn as_signal(query: &str) -> Result<String, String> {
    let bytes = query.as_bytes();
    let (mut depth, mut quoted, mut found) = (0i32, false, Vec::new());
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => quoted = !quoted,
            b'(' | b'{' | b'[' if !quoted => depth += 1,
            b')' | b'}' | b']' if !quoted => depth -= 1,
            _ if quoted || depth != 0 => {}
            _ => {
                for op in [" == ", " != ", " >= ", " <= ", " > ", " < "] {
                    if query[i..].starts_with(op) {
                        found.push((i, op.len()));
                    }
                }
            }
        }
    }
    match found.as_slice() {
        [(at, len)] => Ok(format!("{} bool {}", &query[..at + len - 1], &query[at + len..])),
        _ => Err(format!("{} top-level comparisons (one expected)", found.len())),
    }
}

/// Every panel's target expressions: (dashboard/panel title, expr).
fn panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboards = repo().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dashboards).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let mut stack: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
        while let Some(panel) = stack.pop() {
            stack.extend(panel["panels"].as_array().cloned().unwrap_or_default());
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                if let Some(expr) = target["expr"].as_str() {
                    let name = format!("{}/{}", dashboard["title"], panel["title"]);
                    out.push((name, expr.to_owned()));
                }
            }
        }
    }
    out
}

fn log_lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn frame_where<T>(ws: &mut Connection, mut pick: impl FnMut(&ServerFrame) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(v) = pick(&ws.next().await.expect("socket open")) {
                return v;
            }
        }
    })
    .await
    .expect("timed out waiting for a frame")
}

/// Runs a blocking test-kit call without stalling the runtime's workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[test]
fn alert_signals_keep_the_comparison_and_add_bool() {
    assert_eq!(as_signal("up{job=\"a\"} == 0").unwrap(), "up{job=\"a\"} == bool 0");
    assert_eq!(as_signal("max(rate(x[5m])) > 0.5").unwrap(), "max(rate(x[5m])) > bool 0.5");
    assert_eq!(as_signal("a / b >= 1").unwrap(), "a / b >= bool 1");
    assert!(as_signal("sum(x > 1) > 2").is_ok(), "nested comparisons are inside parentheses");
    assert!(as_signal("x > 1 and y < 2").is_err());
    assert!(as_signal("x").is_err());
}
