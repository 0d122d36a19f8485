//! Conversions between the wire types of the public API (`chattr_api::v1`) and their
//! protobuf twins. Decoding is strict: a malformed id or instant is an `InvalidArgument`
//! status on the server and an internal error on the client, never a panic.

use chattr_api::v1 as api;
use chattr_core::Timestamp;
use chrono::DateTime;
use tonic::Status;
use uuid::Uuid;

use crate::pb;

/// Parses a UUID field, naming the field in the error.
pub fn id(field: &str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| Status::invalid_argument(format!("{field}: not a UUID")))
}

/// Parses a list of UUIDs.
pub fn ids(field: &str, raw: &[String]) -> Result<Vec<Uuid>, Status> {
    raw.iter().map(|r| id(field, r)).collect()
}

/// An instant as microseconds since the Unix epoch.
pub fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// Microseconds since the Unix epoch as an instant.
pub fn instant(field: &str, us: i64) -> Result<Timestamp, Status> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Status::invalid_argument(format!("{field}: out of range")))
}

/// Decodes a required sub-message.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{field}: missing")))
}

pub fn principal(p: chattr_proto::Principal) -> pb::Principal {
    pb::Principal { user_id: p.user_id.to_string(), session_id: p.session_id.to_string() }
}

pub fn principal_from(p: &pb::Principal) -> Result<chattr_proto::Principal, Status> {
    Ok(chattr_proto::Principal {
        user_id: id("user_id", &p.user_id)?,
        session_id: id("session_id", &p.session_id)?,
    })
}

pub fn user(u: api::User) -> pb::User {
    pb::User { id: u.id.to_string(), username: u.username }
}

pub fn user_from(u: pb::User) -> Result<api::User, Status> {
    Ok(api::User { id: id("user.id", &u.id)?, username: u.username })
}

pub fn auth_response(r: api::AuthResponse) -> pb::AuthResponse {
    pb::AuthResponse {
        user: Some(user(r.user)),
        access_token: r.access_token,
        refresh_token: r.refresh_token,
        session_id: r.session_id.to_string(),
        expires_in: r.expires_in,
    }
}

pub fn auth_response_from(r: pb::AuthResponse) -> Result<api::AuthResponse, Status> {
    Ok(api::AuthResponse {
        user: user_from(required("user", r.user)?)?,
        access_token: r.access_token,
        refresh_token: r.refresh_token,
        session_id: id("session_id", &r.session_id)?,
        expires_in: r.expires_in,
    })
}

pub fn session(s: api::SessionInfo) -> pb::SessionInfo {
    pb::SessionInfo {
        id: s.id.to_string(),
        user_agent: s.user_agent,
        created_at_us: micros(s.created_at),
        last_seen_at_us: micros(s.last_seen_at),
        current: s.current,
    }
}

pub fn session_from(s: pb::SessionInfo) -> Result<api::SessionInfo, Status> {
    Ok(api::SessionInfo {
        id: id("session.id", &s.id)?,
        user_agent: s.user_agent,
        created_at: instant("created_at_us", s.created_at_us)?,
        last_seen_at: instant("last_seen_at_us", s.last_seen_at_us)?,
        current: s.current,
    })
}

pub fn client_info(c: chattr_proto::auth::ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo { user_agent: c.user_agent, ip: c.ip.map(|ip| ip.to_string()) }
}

pub fn client_info_from(c: Option<pb::ClientInfo>) -> Result<chattr_proto::auth::ClientInfo, Status> {
    let c = c.unwrap_or_default();
    let ip = match c.ip {
        Some(raw) => Some(raw.parse().map_err(|_| Status::invalid_argument("client.ip: not an IP address"))?),
        None => None,
    };
    Ok(chattr_proto::auth::ClientInfo { user_agent: c.user_agent, ip })
}

pub fn kind(k: api::ConversationKind) -> pb::ConversationKind {
    match k {
        api::ConversationKind::Direct => pb::ConversationKind::Direct,
        api::ConversationKind::Group => pb::ConversationKind::Group,
    }
}

pub fn kind_from(raw: i32) -> Result<api::ConversationKind, Status> {
    match pb::ConversationKind::try_from(raw) {
        Ok(pb::ConversationKind::Direct) => Ok(api::ConversationKind::Direct),
        Ok(pb::ConversationKind::Group) => Ok(api::ConversationKind::Group),
        _ => Err(Status::invalid_argument("kind: must be direct or group")),
    }
}

pub fn message(m: api::Message) -> pb::Message {
    pb::Message {
        id: m.id.to_string(),
        conversation_id: m.conversation_id.to_string(),
        seq: m.seq,
        sender_id: m.sender_id.to_string(),
        body: m.body,
        client_msg_id: m.client_msg_id,
        created_at_us: micros(m.created_at),
        edited_at_us: m.edited_at.map(micros),
        deleted: m.deleted,
    }
}

pub fn message_from(m: pb::Message) -> Result<api::Message, Status> {
    Ok(api::Message {
        id: id("message.id", &m.id)?,
        conversation_id: id("message.conversation_id", &m.conversation_id)?,
        seq: m.seq,
        sender_id: id("message.sender_id", &m.sender_id)?,
        body: m.body,
        client_msg_id: m.client_msg_id,
        created_at: instant("message.created_at_us", m.created_at_us)?,
        edited_at: m.edited_at_us.map(|us| instant("message.edited_at_us", us)).transpose()?,
        deleted: m.deleted,
    })
}

pub fn messages_from(list: Vec<pb::Message>) -> Result<Vec<api::Message>, Status> {
    list.into_iter().map(message_from).collect()
}

pub fn conversation(c: api::Conversation) -> pb::Conversation {
    pb::Conversation {
        id: c.id.to_string(),
        kind: kind(c.kind) as i32,
        title: c.title,
        owner_id: c.owner_id.map(|o| o.to_string()),
        members: c.members.into_iter().map(user).collect(),
        created_at_us: micros(c.created_at),
        last_seq: c.last_seq,
        read_seq: c.read_seq,
        unread: c.unread,
        last_message: c.last_message.map(message),
        read_positions: c
            .read_positions
            .into_iter()
            .map(|r| pb::ReadPosition { user_id: r.user_id.to_string(), seq: r.seq })
            .collect(),
    }
}

pub fn conversation_from(c: pb::Conversation) -> Result<api::Conversation, Status> {
    Ok(api::Conversation {
        id: id("conversation.id", &c.id)?,
        kind: kind_from(c.kind)?,
        title: c.title,
        owner_id: c.owner_id.map(|o| id("conversation.owner_id", &o)).transpose()?,
        members: c.members.into_iter().map(user_from).collect::<Result<_, _>>()?,
        created_at: instant("conversation.created_at_us", c.created_at_us)?,
        last_seq: c.last_seq,
        read_seq: c.read_seq,
        unread: c.unread,
        last_message: c.last_message.map(message_from).transpose()?,
        read_positions: c
            .read_positions
            .into_iter()
            .map(|r| Ok(api::ReadPosition { user_id: id("read_position.user_id", &r.user_id)?, seq: r.seq }))
            .collect::<Result<_, Status>>()?,
    })
}

pub fn presence(p: api::Presence) -> pb::Presence {
    pb::Presence {
        user_id: p.user_id.to_string(),
        online: p.online,
        last_seen_at_us: p.last_seen_at.map(micros),
    }
}

pub fn presence_from(p: pb::Presence) -> Result<api::Presence, Status> {
    Ok(api::Presence {
        user_id: id("presence.user_id", &p.user_id)?,
        online: p.online,
        last_seen_at: p.last_seen_at_us.map(|us| instant("presence.last_seen_at_us", us)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_message() -> api::Message {
        api::Message {
            id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            seq: 7,
            sender_id: Uuid::now_v7(),
            body: "héllo".to_owned(),
            client_msg_id: "c-1".to_owned(),
            created_at: chattr_core::now(),
            edited_at: Some(chattr_core::now()),
            deleted: false,
        }
    }

    #[test]
    fn conversation_round_trips() {
        let alice = api::User { id: Uuid::now_v7(), username: "alice".to_owned() };
        let c = api::Conversation {
            id: Uuid::now_v7(),
            kind: api::ConversationKind::Group,
            title: Some("team".to_owned()),
            owner_id: Some(alice.id),
            members: vec![alice.clone()],
            created_at: chattr_core::now(),
            last_seq: 7,
            read_seq: 3,
            unread: 4,
            last_message: Some(sample_message()),
            read_positions: vec![api::ReadPosition { user_id: alice.id, seq: 3 }],
        };
        assert_eq!(conversation_from(conversation(c.clone())).unwrap(), c);
    }

    #[test]
    fn malformed_fields_are_invalid_arguments() {
        let mut m = message(sample_message());
        m.sender_id = "nope".to_owned();
        let err = message_from(m).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("sender_id"));
        assert_eq!(kind_from(0).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(instant("t", i64::MAX).is_err());
    }
}
