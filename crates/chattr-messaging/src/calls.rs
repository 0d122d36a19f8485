//! Call summaries: consumes `call.ended` from the bus and writes one line into the
//! call's conversation ("Missed call", "Call — 4 min"). Writing is idempotent (the
//! summary's `client_msg_id` is `call:<call id>`), so redelivered events change nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chattr_api::v1::CallOutcome;
use chattr_bus::{BusConsumer, DynBus, StartFrom};
use chattr_core::events::{Event, EVENT_SCHEMA_VERSION, TOPIC_CALLS};
use chattr_proto::messaging::MessagingError;
use tracing::{debug, warn};

use crate::Messaging;

/// Consumer group of the summary writer.
pub const GROUP: &str = "chattr-call-summaries";
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The timeline line for an ended call.
pub fn summary(outcome: CallOutcome, duration_ms: u64) -> String {
    match outcome {
        CallOutcome::Missed => "Missed call".to_owned(),
        CallOutcome::Declined => "Call declined".to_owned(),
        CallOutcome::Cancelled => "Cancelled call".to_owned(),
        CallOutcome::Completed => format!("Call — {}", duration_text(duration_ms)),
    }
}

/// "42 s", "4 min", "1 h 5 min": minutes rounded to the nearest, never "0 min".
fn duration_text(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    if secs < 60 {
        return format!("{secs} s");
    }
    let minutes = (secs + 30) / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// Runs the summary writer until `shutdown` resolves.
pub async fn run(bus: DynBus, messaging: Arc<Messaging>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut consumer: Box<dyn BusConsumer> = loop {
        let subscribed = tokio::select! {
            _ = &mut shutdown => return,
            // A summary line a moment late is fine: spare the broker the frequent fetches.
            c = bus.subscribe_unhurried(TOPIC_CALLS, GROUP, StartFrom::Earliest) => c,
        };
        match subscribed {
            Ok(c) => break c,
            Err(e) => {
                warn!(error = %e, "call summaries cannot subscribe, retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    };
    loop {
        let record = tokio::select! {
            _ = &mut shutdown => return,
            r = consumer.next() => r,
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "call summaries consumer failed");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let expected = EVENT_SCHEMA_VERSION.to_string();
        let event = match serde_json::from_slice::<Event>(&record.payload) {
            _ if record.header("schema_version").is_some_and(|v| v != expected) => None,
            Ok(event) => Some(event),
            Err(e) => {
                warn!(error = %e, offset = record.offset, "undecodable call event skipped");
                None
            }
        };
        if let Some(Event::CallEnded { call_id, conversation_id, caller_id, outcome, duration_ms, .. }) =
            event
        {
            let text = summary(outcome, duration_ms);
            // Retried until written: skipping would lose the line from the timeline.
            loop {
                match messaging.record_call_summary(conversation_id, caller_id, call_id, text.clone()).await {
                    Ok((_, created)) => {
                        if created {
                            metrics::counter!(crate::metrics::CALL_SUMMARIES).increment(1);
                        }
                        debug!(%call_id, created, "call summary written");
                        break;
                    }
                    // The caller left the conversation (or it is gone): nobody to tell.
                    Err(MessagingError::NotFound) => {
                        debug!(%call_id, "call summary skipped: caller no longer a member");
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, %call_id, "call summary failed, retrying");
                        tokio::select! {
                            _ = &mut shutdown => return,
                            _ = tokio::time::sleep(RETRY_DELAY) => {}
                        }
                    }
                }
            }
        }
        if let Err(e) = consumer.commit(&record).await {
            warn!(error = %e, "call summaries commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_like_a_phone_log() {
        assert_eq!(summary(CallOutcome::Missed, 0), "Missed call");
        assert_eq!(summary(CallOutcome::Declined, 0), "Call declined");
        assert_eq!(summary(CallOutcome::Cancelled, 0), "Cancelled call");
        assert_eq!(summary(CallOutcome::Completed, 400), "Call — 1 s");
        assert_eq!(summary(CallOutcome::Completed, 42_000), "Call — 42 s");
        assert_eq!(summary(CallOutcome::Completed, 240_000), "Call — 4 min");
        assert_eq!(summary(CallOutcome::Completed, 269_000), "Call — 4 min");
        assert_eq!(summary(CallOutcome::Completed, 3_600_000), "Call — 1 h");
        assert_eq!(summary(CallOutcome::Completed, 3_900_000), "Call — 1 h 5 min");
    }
}
