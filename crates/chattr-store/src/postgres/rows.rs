//! Conversions between PostgreSQL column values and store records, plus the loaders that
//! several areas share. Nothing read from the database is trusted: a value that does not
//! decode becomes a `Backend` error instead of a panic.

use chattr_api::v1::Message;
use chattr_core::{ConversationId, MessageId, SessionId};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::{ConversationRecord, SessionRecord, StoreResult, UserRecord};

/// A uuid as a native PostgreSQL `uuid` value (16 bytes on the wire).
///
/// The workspace enables sqlx without its `uuid` feature, so this is the (tiny) codec: it
/// keeps ids in their proper column type instead of text. It can be replaced by `Uuid`
/// itself if that feature is ever turned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PgId(pub(super) Uuid);

/// Built-in OIDs of `uuid` and `uuid[]`, fixed in every PostgreSQL installation.
const UUID_OID: Oid = Oid(2950);
const UUID_ARRAY_OID: Oid = Oid(2951);

impl sqlx::Type<Postgres> for PgId {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(UUID_OID)
    }
}

impl PgHasArrayType for PgId {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(UUID_ARRAY_OID)
    }
}

impl sqlx::Encode<'_, Postgres> for PgId {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

impl sqlx::Decode<'_, Postgres> for PgId {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let uuid = match value.format() {
            PgValueFormat::Binary => Uuid::from_slice(value.as_bytes()?)?,
            PgValueFormat::Text => Uuid::parse_str(value.as_str()?)?,
        };
        Ok(Self(uuid))
    }
}

/// An id as a query parameter.
pub(super) fn id(u: Uuid) -> PgId {
    PgId(u)
}

/// Ids as a `uuid[]` query parameter.
pub(super) fn ids(us: &[Uuid]) -> Vec<PgId> {
    us.iter().copied().map(PgId).collect()
}

/// Decoded ids.
pub(super) fn uuids(ids: Vec<PgId>) -> Vec<Uuid> {
    ids.into_iter().map(|i| i.0).collect()
}

use crate::codec::kind;
pub(super) use crate::codec::{kind_str, ms, seq, seq_param, timestamp};

/// A row limit as a query parameter (`LIMIT` takes a BIGINT).
pub(super) fn limit_param(v: u32) -> i64 {
    i64::from(v)
}

/// Columns of [`UserRow`].
pub(super) const USER_COLUMNS: &str = "id, username, password_hash, created_at";

/// A `users` row.
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: PgId,
    username: String,
    password_hash: String,
    created_at: i64,
}

impl UserRow {
    pub(super) fn into_record(self) -> StoreResult<UserRecord> {
        Ok(UserRecord {
            id: self.id.0,
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
    id: PgId,
    user_id: PgId,
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
            id: self.id.0,
            user_id: self.user_id.0,
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
    pub(super) id: PgId,
    pub(super) conversation_id: PgId,
    pub(super) seq: i64,
    pub(super) sender_id: PgId,
    pub(super) client_msg_id: String,
    pub(super) body: String,
    pub(super) created_at: i64,
    pub(super) edited_at: Option<i64>,
    pub(super) deleted: bool,
}

impl MessageRow {
    pub(super) fn into_message(self) -> StoreResult<Message> {
        Ok(Message {
            id: self.id.0,
            conversation_id: self.conversation_id.0,
            seq: seq(self.seq)?,
            sender_id: self.sender_id.0,
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

/// Member order: join time, and insertion order among members added together.
pub(super) const MEMBER_ORDER: &str = "ORDER BY joined_at, join_order";

/// Columns of [`ConversationRow`], prefixed with the `conversations` alias `c`. The member
/// list is an array subquery, so a conversation and its members come from one statement
/// and hence one snapshot.
pub(super) const CONVERSATION_COLUMNS: &str = "c.id, c.kind, c.title, c.owner_id, c.created_at, c.last_seq, \
     ARRAY(SELECT o.user_id FROM members o WHERE o.conversation_id = c.id \
           ORDER BY o.joined_at, o.join_order) AS members";

/// A `conversations` row with its members.
#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: PgId,
    kind: String,
    title: Option<String>,
    owner_id: Option<PgId>,
    created_at: i64,
    last_seq: i64,
    members: Vec<PgId>,
}

impl ConversationRow {
    pub(super) fn into_record(self) -> StoreResult<ConversationRecord> {
        Ok(ConversationRecord {
            id: self.id.0,
            kind: kind(&self.kind)?,
            title: self.title,
            owner_id: self.owner_id.map(|o| o.0),
            members: uuids(self.members),
            created_at: timestamp(self.created_at)?,
            last_seq: seq(self.last_seq)?,
        })
    }
}

/// A conversation with its members.
pub(super) async fn load_conversation(
    conn: &mut PgConnection,
    conversation_id: ConversationId,
) -> StoreResult<Option<ConversationRecord>> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $1");
    let row: Option<ConversationRow> =
        sqlx::query_as(&sql).bind(id(conversation_id)).fetch_optional(conn).await?;
    row.map(ConversationRow::into_record).transpose()
}

/// One message of a conversation; `FOR UPDATE` when `lock` (to change it).
pub(super) async fn load_message(
    conn: &mut PgConnection,
    conversation_id: ConversationId,
    message_id: MessageId,
    lock: bool,
) -> StoreResult<Option<Message>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 AND m.id = $2{lock}");
    let row: Option<MessageRow> =
        sqlx::query_as(&sql).bind(id(conversation_id)).bind(id(message_id)).fetch_optional(conn).await?;
    row.map(MessageRow::into_message).transpose()
}

/// A session by id.
pub(super) async fn load_session(
    conn: &mut PgConnection,
    session_id: SessionId,
) -> StoreResult<Option<SessionRecord>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
    let row: Option<SessionRow> = sqlx::query_as(&sql).bind(id(session_id)).fetch_optional(conn).await?;
    row.map(SessionRow::into_record).transpose()
}

/// Decodes `(id, seq)` rows (a member's read position, a conversation's last seq).
pub(super) fn id_seqs(rows: Vec<(PgId, i64)>) -> StoreResult<Vec<(Uuid, u64)>> {
    rows.into_iter().map(|(i, s)| Ok((i.0, seq(s)?))).collect()
}
