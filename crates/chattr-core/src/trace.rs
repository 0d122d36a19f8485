//! Trace context: which request a piece of work belongs to, carried across every hop a
//! message takes (gateway → gRPC → store outbox → bus → fan-out) in the W3C
//! `traceparent` format (`00-<32 hex trace id>-<16 hex span id>-01`).
//!
//! The context of the request being served lives in a task-local ([`scope`]); code that
//! crosses a process boundary reads it with [`current`] and writes it into the outgoing
//! message (gRPC metadata, outbox row, Kafka header), and the receiving side scopes its
//! work with the parsed value.

use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::SystemTime;

/// A W3C trace context: the trace, and the span (hop) within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace: the same for every hop of one request.
    pub trace_id: u128,
    /// This hop.
    pub span_id: u64,
    /// The hop that caused this one, if known (for exported spans).
    pub parent_span_id: Option<u64>,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace (a request that arrived without one).
    pub fn new_root() -> Self {
        // Every frame and request starts one: the thread-local generator costs no syscall.
        Self { trace_id: rand::random::<u128>().max(1), span_id: Self::new_span_id(), parent_span_id: None }
    }

    /// The next hop of the same trace, caused by this one.
    pub fn child(&self) -> Self {
        Self { trace_id: self.trace_id, span_id: Self::new_span_id(), parent_span_id: Some(self.span_id) }
    }

    /// Another hop with the same parent (a retry of this one).
    pub fn sibling(&self) -> Self {
        Self { span_id: Self::new_span_id(), ..*self }
    }

    fn new_span_id() -> u64 {
        // Never zero: an all-zero id is invalid in W3C trace context.
        rand::random::<u64>().max(1)
    }

    /// Parses a `traceparent` value; `None` for anything malformed (a bad header starts
    /// a new trace instead of failing the request).
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('-');
        let (version, trace, span, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || parts.next().is_some() {
            return None;
        }
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version) || !hex(trace) || !hex(span) || version == "ff" {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
        Some(Self { trace_id, span_id, parent_span_id: None })
    }

    /// The trace id as 32 hex digits (what logs show).
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header value (sampled flag set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

/// Runs `fut` as part of `context`.
pub async fn scope<F: Future>(context: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(context, fut).await
}

/// The context of the work in progress, if it runs inside [`scope`].
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` to send to the next hop: the current span, which the next hop names
/// as its parent (it continues with [`TraceContext::child`]).
pub fn outgoing() -> Option<String> {
    current().map(|c| c.to_string())
}

/// A finished span: one hop's work, for an exporter (see [`export_to`]).
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    /// What kind of work (`ws frame`, `grpc call`, `relay publish`, `fan-out`, `deliver`).
    pub name: &'static str,
    /// Which one (the frame type, the gRPC method, the topic).
    pub detail: String,
    /// Its place in the trace.
    pub context: TraceContext,
    /// When it started and ended.
    pub start: SystemTime,
    pub end: SystemTime,
}

type Sink = Box<dyn Fn(FinishedSpan) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends every finished span of this process to `sink` (once per process; later calls
/// are ignored). Without a sink, spans cost nothing beyond the task-local.
pub fn export_to(sink: impl Fn(FinishedSpan) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

/// Whether spans are being exported.
pub fn exporting() -> bool {
    SINK.get().is_some()
}

/// Records a span that already happened (when exporting).
pub fn record(name: &'static str, detail: impl FnOnce() -> String, context: TraceContext, start: SystemTime) {
    if let Some(sink) = SINK.get() {
        sink(FinishedSpan { name, detail: detail(), context, start, end: SystemTime::now() });
    }
}

/// Runs `fut` as part of `context`, as the span `name` (exported when a sink is set).
pub async fn span<F: Future>(
    name: &'static str,
    detail: impl FnOnce() -> String,
    context: TraceContext,
    fut: F,
) -> F::Output {
    let start = SystemTime::now();
    let out = CURRENT.scope(context, fut).await;
    record(name, detail, context, start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let root = TraceContext::new_root();
        let text = root.to_string();
        assert_eq!(text.len(), 55);
        assert_eq!(TraceContext::parse(&text), Some(root));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(child.parent_span_id, Some(root.span_id));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        let known = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(known.trace_hex(), "0af7651916cd43dd8448eb211c80319c");
    }

    #[tokio::test]
    async fn scope_sets_current_across_awaits() {
        assert_eq!(current(), None);
        let ctx = TraceContext::new_root();
        scope(ctx, async {
            tokio::task::yield_now().await;
            assert_eq!(current(), Some(ctx));
            let next = TraceContext::parse(&outgoing().unwrap()).unwrap().child();
            assert_eq!(next.trace_id, ctx.trace_id);
            assert_eq!(next.parent_span_id, Some(ctx.span_id), "the next hop names this one as its parent");
        })
        .await;
        assert_eq!(current(), None);
    }
}
