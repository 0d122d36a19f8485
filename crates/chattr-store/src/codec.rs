//! Value encodings shared by the SQL backends: timestamps as unix milliseconds, seqs as
//! signed 64-bit integers, conversation kinds as text, and the error for undecodable data.

use chattr_api::v1::ConversationKind;
use chattr_core::Timestamp;

use crate::{StoreError, StoreResult};

/// The error for a stored value that does not decode.
pub(crate) fn bad_data(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in database: {value}"))
}

/// A timestamp as stored: unix milliseconds.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

/// Decodes stored unix milliseconds.
pub(crate) fn timestamp(ms: i64) -> StoreResult<Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| bad_data("timestamp", ms))
}

/// Decodes a stored seq (SQL integers are signed).
pub(crate) fn seq(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| bad_data("seq", v))
}

/// A seq as a query parameter; beyond `i64::MAX` no stored seq can exist, so clamping
/// keeps comparisons correct.
pub(crate) fn seq_param(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A kind as stored.
pub(crate) fn kind_str(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

/// Decodes a stored kind.
pub(crate) fn kind(s: &str) -> StoreResult<ConversationKind> {
    match s {
        "direct" => Ok(ConversationKind::Direct),
        "group" => Ok(ConversationKind::Group),
        other => Err(bad_data("conversation kind", other)),
    }
}
