//! Conversions between SQLite column values and store records, plus the loaders that
//! several areas share. Nothing read from the database is trusted: a value that does not
//! parse becomes a `Backend` error instead of a panic.

use chattr_api::v1::Message;
use chattr_core::{ConversationId, MessageId, SessionId, UserId};
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::{ConversationRecord, SessionRecord, StoreResult, UserRecord};

use crate::codec::kind;
pub(super) use crate::codec::{bad_data, kind_str, ms, seq, seq_param, timestamp};

/// A uuid as stored: hyphenated lowercase text (so it sorts like the uuid's bytes).
pub(super) fn db_id(u: Uuid) -> String {
    u.hyphenated().to_string()
}

/// Ids as one JSON array of stored uuids, for SQLite's `json_each`.
pub(super) fn json_ids(ids: &[Uuid]) -> StoreResult<String> {
    serde_json::to_string(&ids.iter().map(|u| db_id(*u)).collect::<Vec<_>>())
        .map_err(|e| crate::StoreError::Backend(e.to_string()))
}

/// Decodes a stored uuid.
pub(super) fn uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| bad_data("uuid", s))
}

/// Columns of [`UserRow`].
pub(super) const USER_COLUMNS: &str = "id, username, password_hash, created_at";

/// A `users` row.
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    username: String,
    password_hash: String,
    created_at: i64,
}

impl UserRow {
    pub(super) fn into_record(self) -> StoreResult<UserRecord> {
        Ok(UserRecord {
            id: uuid(&self.id)?,
            username: self.username,
            password_hash: self.password_hash,
            created_at: timestamp(self.created_at)?,
        })
    }
}

/// Columns of [`SessionRow`].
pub(super) const SESSION_COLUMNS: &str =
    "id, user_id, refresh_hash, refresh_expires_at, user_agent, created_at, last_seen_at, revoked";

/// A `sessions` row.
#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: String,
    user_id: String,
    refresh_hash: String,
    refresh_expires_at: i64,
    user_agent: Option<String>,
    created_at: i64,
    last_seen_at: i64,
    revoked: bool,
}

impl SessionRow {
    pub(super) fn into_record(self) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            id: uuid(&self.id)?,
            user_id: uuid(&self.user_id)?,
            refresh_hash: self.refresh_hash,
            refresh_expires_at: timestamp(self.refresh_expires_at)?,
            user_agent: self.user_agent,
            created_at: timestamp(self.created_at)?,
            last_seen_at: timestamp(self.last_seen_at)?,
            revoked: self.revoked,
        })
    }
}

/// Columns of [`MessageRow`], prefixed with the `messages` alias `m`.
pub(super) const MESSAGE_COLUMNS: &str =
    "m.id, m.conversation_id, m.seq, m.sender_id, m.client_msg_id, m.body, m.created_at, m.edited_at, m.deleted";

/// A `messages` row.
#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: String,
    conversation_id: String,
    seq: i64,
    sender_id: String,
    client_msg_id: String,
    body: String,
    created_at: i64,
    edited_at: Option<i64>,
    deleted: bool,
}

impl MessageRow {
    pub(super) fn into_message(self) -> StoreResult<Message> {
        Ok(Message {
            id: uuid(&self.id)?,
            conversation_id: uuid(&self.conversation_id)?,
            seq: seq(self.seq)?,
            sender_id: uuid(&self.sender_id)?,
            body: self.body,
            client_msg_id: self.client_msg_id,
            created_at: timestamp(self.created_at)?,
            edited_at: self.edited_at.map(timestamp).transpose()?,
            deleted: self.deleted,
        })
    }
}

/// Decodes a list of message rows.
pub(super) fn into_messages(rows: Vec<MessageRow>) -> StoreResult<Vec<Message>> {
    rows.into_iter().map(MessageRow::into_message).collect()
}

/// Columns of [`ConversationRow`], prefixed with the `conversations` alias `c`.
pub(super) const CONVERSATION_COLUMNS: &str = "c.id, c.kind, c.title, c.owner_id, c.created_at, c.last_seq";

/// A `conversations` row (members are loaded separately).
#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: String,
    kind: String,
    title: Option<String>,
    owner_id: Option<String>,
    created_at: i64,
    last_seq: i64,
}

impl ConversationRow {
    /// The stored id, to look members up by.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn into_record(self, members: Vec<UserId>) -> StoreResult<ConversationRecord> {
        Ok(ConversationRecord {
            id: uuid(&self.id)?,
            kind: kind(&self.kind)?,
            title: self.title,
            owner_id: self.owner_id.as_deref().map(uuid).transpose()?,
            members,
            created_at: timestamp(self.created_at)?,
            last_seq: seq(self.last_seq)?,
        })
    }
}

/// Member order: join time, and insertion order (rowid) among members added together.
pub(super) const MEMBER_ORDER: &str = "ORDER BY joined_at, rowid";

/// Current members of a conversation, in join order.
pub(super) async fn load_members(conn: &mut SqliteConnection, id: &str) -> StoreResult<Vec<UserId>> {
    let sql = format!("SELECT user_id FROM members WHERE conversation_id = ? {MEMBER_ORDER}");
    let ids: Vec<String> = sqlx::query_scalar(&sql).bind(id).fetch_all(&mut *conn).await?;
    ids.iter().map(|s| uuid(s)).collect()
}

/// A conversation with its members.
pub(super) async fn load_conversation(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> StoreResult<Option<ConversationRecord>> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ?");
    let row: Option<ConversationRow> =
        sqlx::query_as(&sql).bind(db_id(id)).fetch_optional(&mut *conn).await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let members = load_members(conn, row.id()).await?;
    row.into_record(members).map(Some)
}

/// One message of a conversation.
pub(super) async fn load_message(
    conn: &mut SqliteConnection,
    conversation_id: ConversationId,
    message_id: MessageId,
) -> StoreResult<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ? AND m.id = ?");
    let row: Option<MessageRow> = sqlx::query_as(&sql)
        .bind(db_id(conversation_id))
        .bind(db_id(message_id))
        .fetch_optional(conn)
        .await?;
    row.map(MessageRow::into_message).transpose()
}

/// A session by id.
pub(super) async fn load_session(
    conn: &mut SqliteConnection,
    id: SessionId,
) -> StoreResult<Option<SessionRecord>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?");
    let row: Option<SessionRow> = sqlx::query_as(&sql).bind(db_id(id)).fetch_optional(conn).await?;
    row.map(SessionRow::into_record).transpose()
}
