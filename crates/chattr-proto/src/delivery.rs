//! The envelope fan-out publishes on pub/sub for gateways.
//!
//! A delivery is one line of header, a newline, then the client frame JSON, serialised
//! once for all recipients. The header tells the gateway what it needs without parsing
//! the JSON: which conversation and seq a message has (for ordering, dedupe and gap
//! detection), whether it may be dropped under pressure, and which session to close.

use bytes::{BufMut, Bytes, BytesMut};
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

/// A decoded delivery: its kind and the client frame bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Kind.
    pub kind: DeliveryKind,
    /// The JSON text of the client frame.
    pub frame: Bytes,
}

impl Delivery {
    /// Encodes header + frame into one buffer.
    pub fn encode(kind: DeliveryKind, frame: &[u8]) -> Bytes {
        let header = match kind {
            DeliveryKind::Message { conversation_id, seq } => format!("m {conversation_id} {seq}\n"),
            DeliveryKind::Event => "e\n".to_owned(),
            DeliveryKind::Ephemeral => "t\n".to_owned(),
            DeliveryKind::Revoke { session_id } => format!("r {session_id}\n"),
            DeliveryKind::ToSession { session_id } => format!("s {session_id}\n"),
        };
        let mut buf = BytesMut::with_capacity(header.len() + frame.len());
        buf.put_slice(header.as_bytes());
        buf.put_slice(frame);
        buf.freeze()
    }

    /// Decodes a buffer; `None` for anything malformed (it is then dropped and logged).
    pub fn decode(buf: Bytes) -> Option<Delivery> {
        let newline = buf.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&buf[..newline]).ok()?;
        let mut parts = header.split(' ');
        let kind = match (parts.next()?, parts.next(), parts.next()) {
            ("m", Some(conv), Some(seq)) => {
                DeliveryKind::Message { conversation_id: conv.parse().ok()?, seq: seq.parse().ok()? }
            }
            ("e", None, None) => DeliveryKind::Event,
            ("t", None, None) => DeliveryKind::Ephemeral,
            ("r", Some(session), None) => DeliveryKind::Revoke { session_id: session.parse().ok()? },
            ("s", Some(session), None) => DeliveryKind::ToSession { session_id: session.parse().ok()? },
            _ => return None,
        };
        Some(Delivery { kind, frame: buf.slice(newline + 1..) })
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
            let encoded = Delivery::encode(kind, br#"{"type":"x"}"#);
            let decoded = Delivery::decode(encoded).expect("decodes");
            assert_eq!(decoded.kind, kind);
            assert_eq!(&decoded.frame[..], br#"{"type":"x"}"#);
        }
        assert_eq!(Delivery::decode(Bytes::from_static(b"m nope 1\n{}")), None);
        assert_eq!(Delivery::decode(Bytes::from_static(b"no newline")), None);
        assert_eq!(Delivery::decode(Bytes::from_static(b"x\n{}")), None);
    }
}
