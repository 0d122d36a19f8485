//! The envelope fan-out publishes on pub/sub for gateways.
//!
//! A delivery is one line of header, a newline, then the client frame JSON, serialised
//! once for all recipients. The header tells the gateway what it needs without parsing
//! the JSON: which conversation and seq a message has (for ordering, dedupe and gap
//! detection), whether it may be dropped under pressure, and which session to close.

use bytes::{BufMut, Bytes, BytesMut};
use chattr_api::v1::ServerFrame;
use chattr_core::trace::TraceContext;
use chattr_core::{ConversationId, SessionId, UserId};

/// Pub/sub channel of one user: every event for that user goes here.
pub fn user_channel(user: UserId) -> String {
    format!("u.{user}")
}

/// What a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A new message with its seq: ordered, deduped, gap-checked per connection.
    Message {
        /// Conversation.
        conversation_id: ConversationId,
        /// Seq.
        seq: u64,
    },
    /// A durable event that is not a new message (edit, delete, read, membership).
    Event,
    /// An ephemeral event (typing, presence): the first to be dropped under pressure.
    Ephemeral,
    /// The session was revoked: deliver the frame, then close its sockets.
    Revoke {
        /// Session to close.
        session_id: SessionId,
    },
    /// For the sockets of one session (device) only: call signaling.
    ToSession {
        /// The addressed session.
        session_id: SessionId,
    },
}

/// What the gateway should know about a delivery besides its kind, for metrics and logs:
/// carried as optional `key=value` header fields, which a gateway skips when it does not
/// know them. (Gateways before these fields existed refuse them on every kind but `m`:
/// upgrade gateways before the producers of deliveries, see docs/operations.md.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// The frame's `type` (one of [`ServerFrame::TYPES`]).
    pub frame_type: Option<&'static str>,
    /// For a new message: when it was committed (Unix milliseconds), so the gateway can
    /// measure commit→socket latency.
    pub committed_ms: Option<i64>,
    /// The span that sent the delivery (the receiver's work continues its trace).
    pub trace: Option<TraceContext>,
}

impl Meta {
    /// The metadata of `frame` sent now: its type, its commit time if it is a new message,
    /// and the trace in progress.
    pub fn of(frame: &ServerFrame) -> Meta {
        let committed_ms = match frame {
            ServerFrame::Message { message } => Some(message.created_at.timestamp_millis()),
            _ => None,
        };
        Meta { frame_type: Some(frame.type_name()), committed_ms, trace: chattr_core::trace::current() }
    }
}

/// A decoded delivery: its kind, metadata and the client frame bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Kind.
    pub kind: DeliveryKind,
    /// Type, commit time and trace, where the sender gave them.
    pub meta: Meta,
    /// The JSON text of the client frame.
    pub frame: Bytes,
}

impl Delivery {
    /// Serialises `frame` once for every recipient, with its [`Meta`].
    pub fn serialize(kind: DeliveryKind, frame: &ServerFrame) -> Result<Bytes, serde_json::Error> {
        Ok(Self::encode(kind, &Meta::of(frame), &serde_json::to_vec(frame)?))
    }

    /// Encodes header + frame into one buffer.
    pub fn encode(kind: DeliveryKind, meta: &Meta, frame: &[u8]) -> Bytes {
        use std::fmt::Write;
        let mut header = match kind {
            DeliveryKind::Message { conversation_id, seq } => format!("m {conversation_id} {seq}"),
            DeliveryKind::Event => "e".to_owned(),
            DeliveryKind::Ephemeral => "t".to_owned(),
            DeliveryKind::Revoke { session_id } => format!("r {session_id}"),
            DeliveryKind::ToSession { session_id } => format!("s {session_id}"),
        };
        if let Some(frame_type) = meta.frame_type {
            let _ = write!(header, " f={frame_type}");
        }
        if let Some(ms) = meta.committed_ms {
            let _ = write!(header, " c={ms}");
        }
        if let Some(trace) = meta.trace {
            let _ = write!(header, " t={trace}");
        }
        header.push('\n');
        let mut buf = BytesMut::with_capacity(header.len() + frame.len());
        buf.put_slice(header.as_bytes());
        buf.put_slice(frame);
        buf.freeze()
    }

    /// Decodes a buffer; `None` for anything malformed (it is then dropped and logged).
    /// Metadata fields it does not know, or cannot read, are ignored.
    pub fn decode(buf: Bytes) -> Option<Delivery> {
        let newline = buf.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&buf[..newline]).ok()?;
        let (fields, extra): (Vec<&str>, Vec<&str>) = header.split(' ').partition(|f| !f.contains('='));
        let kind = match fields.as_slice() {
            ["m", conv, seq] => {
                DeliveryKind::Message { conversation_id: conv.parse().ok()?, seq: seq.parse().ok()? }
            }
            ["e"] => DeliveryKind::Event,
            ["t"] => DeliveryKind::Ephemeral,
            ["r", session] => DeliveryKind::Revoke { session_id: session.parse().ok()? },
            ["s", session] => DeliveryKind::ToSession { session_id: session.parse().ok()? },
            _ => return None,
        };
        let mut meta = Meta::default();
        for field in extra {
            match field.split_once('=') {
                Some(("f", name)) => {
                    meta.frame_type = ServerFrame::TYPES.iter().copied().find(|t| *t == name)
                }
                Some(("c", ms)) => meta.committed_ms = ms.parse().ok(),
                Some(("t", trace)) => meta.trace = TraceContext::parse(trace),
                _ => {}
            }
        }
        Some(Delivery { kind, meta, frame: buf.slice(newline + 1..) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let id = uuid::Uuid::now_v7();
        for kind in [
            DeliveryKind::Message { conversation_id: id, seq: 42 },
            DeliveryKind::Event,
            DeliveryKind::Ephemeral,
            DeliveryKind::Revoke { session_id: id },
            DeliveryKind::ToSession { session_id: id },
        ] {
            let encoded = Delivery::encode(kind, &Meta::default(), br#"{"type":"x"}"#);
            let decoded = Delivery::decode(encoded).expect("decodes");
            assert_eq!(decoded.kind, kind);
            assert_eq!(decoded.meta, Meta::default());
            assert_eq!(&decoded.frame[..], br#"{"type":"x"}"#);
            let meta = Meta {
                frame_type: Some("message"),
                committed_ms: Some(1_700_000_000_123),
                trace: TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            };
            let decoded = Delivery::decode(Delivery::encode(kind, &meta, b"{}")).expect("decodes");
            assert_eq!((decoded.kind, decoded.meta), (kind, meta));
        }
        // Unknown or unreadable metadata is ignored; the delivery still counts.
        let odd = Delivery::decode(Bytes::from_static(b"e f=no_such_frame c=soon z=1\n{}")).expect("decodes");
        assert_eq!((odd.kind, odd.meta), (DeliveryKind::Event, Meta::default()));
        assert_eq!(Delivery::decode(Bytes::from_static(b"m nope 1\n{}")), None);
        assert_eq!(Delivery::decode(Bytes::from_static(b"no newline")), None);
        assert_eq!(Delivery::decode(Bytes::from_static(b"x\n{}")), None);
    }
}
