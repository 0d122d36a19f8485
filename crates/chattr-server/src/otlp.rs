//! Export of trace spans to an OpenTelemetry collector: OTLP over HTTP with the JSON
//! encoding (`POST <endpoint>/v1/traces`), when `otlp.endpoint` is set.
//!
//! Chattr's spans are its own hops (a WebSocket frame, an HTTP request, a gRPC call, the
//! relay publishing an outbox row, fan-out handling a record, a gateway writing a message
//! to a socket), recorded by `chattr_core::trace` with the trace and span ids the hops
//! already carry to each other (`traceparent`). Exporting those ids as they are is what
//! makes the spans of every process link into one trace; a tracing SDK would mint ids of
//! its own. So the exporter is small: spans go into a bounded queue (dropped, and counted,
//! when it is full: tracing must never slow chat down) and a thread posts them in batches.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chattr_core::trace::{self, FinishedSpan};
use serde_json::{json, Value};

use crate::settings::{OtlpSettings, Role};

/// Spans waiting to be sent; beyond this they are dropped.
const QUEUE: usize = 8192;
/// Spans per request at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bound on one export request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Spans sent to the collector.
pub const EXPORTED: &str = "chattr_otlp_spans_exported_total";
/// Spans dropped because the queue was full or the collector refused them.
pub const DROPPED: &str = "chattr_otlp_spans_dropped_total";

/// Starts exporting this process's spans, if `settings` name an endpoint (once per
/// process: the first call decides). Fails on an unusable endpoint.
pub fn install(settings: &OtlpSettings, roles: &[Role]) -> anyhow::Result<()> {
    let Some(endpoint) = &settings.endpoint else { return Ok(()) };
    let base = reqwest::Url::parse(endpoint).with_context(|| format!("otlp.endpoint {endpoint:?}"))?;
    if base.scheme() != "http" {
        bail!("otlp.endpoint must be an http:// URL (Chattr has no TLS client built in yet)");
    }
    let url = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
    let service = settings.service_name.clone().unwrap_or_else(|| default_service_name(roles));
    if trace::exporting() {
        return Ok(());
    }
    metrics::describe_counter!(EXPORTED, "Trace spans sent to the OTLP collector");
    metrics::describe_counter!(DROPPED, "Trace spans dropped (queue full or collector refused)");
    metrics::counter!(EXPORTED).increment(0);
    metrics::counter!(DROPPED).increment(0);
    let (tx, rx) = sync_channel::<FinishedSpan>(QUEUE);
    std::thread::Builder::new()
        .name("chattr-otlp".to_owned())
        .spawn(move || run(&rx, &url, &service))
        .context("starting the OTLP exporter thread")?;
    trace::export_to(move |span| enqueue(&tx, span));
    tracing::info!(%endpoint, "exporting trace spans over OTLP");
    Ok(())
}

fn enqueue(tx: &SyncSender<FinishedSpan>, span: FinishedSpan) {
    if tx.try_send(span).is_err() {
        metrics::counter!(DROPPED).increment(1);
    }
}

/// `chattr-gateway`, `chattr-auth+messaging`, or `chattr` for every role.
fn default_service_name(roles: &[Role]) -> String {
    if Role::ALL.iter().all(|r| roles.contains(r)) {
        return "chattr".to_owned();
    }
    let names: Vec<String> = roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
    format!("chattr-{}", names.join("+"))
}

/// The exporter thread: collects batches and posts them until the process ends.
fn run(rx: &Receiver<FinishedSpan>, url: &str, service: &str) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "OTLP exporter cannot start; spans are dropped");
            return;
        }
    };
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "OTLP exporter cannot start; spans are dropped");
            return;
        }
    };
    let mut last_complaint: Option<Instant> = None;
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        let deadline = Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let body = encode(service, &batch);
        let sent = runtime.block_on(async { client.post(url).json(&body).send().await?.error_for_status() });
        match sent {
            Ok(_) => metrics::counter!(EXPORTED).increment(batch.len() as u64),
            Err(e) => {
                metrics::counter!(DROPPED).increment(batch.len() as u64);
                // A collector that is down would otherwise log once a second.
                if last_complaint.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, %url, "OTLP export failed; spans dropped");
                    last_complaint = Some(Instant::now());
                }
            }
        }
    }
}

/// One OTLP `ExportTraceServiceRequest` in the JSON encoding (ids in hex, times in
/// nanoseconds as strings, as the OTLP specification's JSON mapping says).
fn encode(service: &str, spans: &[FinishedSpan]) -> Value {
    let spans: Vec<Value> = spans.iter().map(span).collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [attribute("service.name", service)]},
            "scopeSpans": [{
                "scope": {"name": "chattr", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

fn span(span: &FinishedSpan) -> Value {
    let context = span.context;
    let mut out = json!({
        "traceId": format!("{:032x}", context.trace_id),
        "spanId": format!("{:016x}", context.span_id),
        "name": span.name,
        "kind": kind(span.name),
        "startTimeUnixNano": nanos(span.start).to_string(),
        "endTimeUnixNano": nanos(span.end).to_string(),
        "attributes": [attribute("chattr.detail", &span.detail)],
    });
    if let Some(parent) = context.parent_span_id {
        out["parentSpanId"] = Value::String(format!("{parent:016x}"));
    }
    out
}

/// OTLP span kinds: SERVER (2) for requests received, CONSUMER (5) for records
/// consumed, PRODUCER (4) for records published, INTERNAL (1) otherwise.
fn kind(name: &str) -> u8 {
    match name {
        "ws frame" | "http request" | "grpc call" => 2,
        "fan-out" => 5,
        "relay publish" => 4,
        _ => 1,
    }
}

fn attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chattr_core::trace::TraceContext;

    #[test]
    fn spans_encode_as_otlp_json_with_their_ids_and_parent() {
        let root = TraceContext::new_root();
        let child = root.child();
        let start = SystemTime::now();
        let finished =
            |name, context| FinishedSpan { name, detail: "send".to_owned(), context, start, end: start };
        let body = encode("chattr-gateway", &[finished("ws frame", root), finished("deliver", child)]);
        let resource = &body["resourceSpans"][0];
        assert_eq!(resource["resource"]["attributes"][0]["value"]["stringValue"], "chattr-gateway");
        let spans = resource["scopeSpans"][0]["spans"].as_array().unwrap();
        assert_eq!(spans[0]["traceId"], format!("{:032x}", root.trace_id));
        assert_eq!(spans[0]["spanId"].as_str().unwrap().len(), 16);
        assert!(spans[0].get("parentSpanId").is_none(), "a root has no parent");
        assert_eq!(spans[1]["parentSpanId"], spans[0]["spanId"]);
        assert_eq!(spans[0]["kind"], 2);
        assert_eq!(spans[1]["startTimeUnixNano"], nanos(start).to_string());
    }

    #[test]
    fn service_names_follow_the_roles() {
        assert_eq!(default_service_name(&Role::ALL), "chattr");
        assert_eq!(default_service_name(&[Role::Gateway]), "chattr-gateway");
        assert_eq!(default_service_name(&[Role::Auth, Role::Messaging]), "chattr-auth+messaging");
    }
}
