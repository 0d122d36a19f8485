//! Conversations and membership on PostgreSQL.

use chattr_api::v1::ConversationKind;
use chattr_core::events::Event;
use chattr_core::{ConversationId, Timestamp, UserId};
use sqlx::PgConnection;

use super::rows::{
    id, id_seqs, ids, kind_str, load_conversation, ms, seq, uuids, ConversationRow, MessageRow, PgId,
    CONVERSATION_COLUMNS, MEMBER_ORDER,
};
use super::{outbox, PostgresStore};
use crate::{ConversationRecord, ConversationSummary, Membership, NewConversation, StoreError, StoreResult};

/// The `direct_key` of a direct conversation: its two member ids, sorted, joined by `:`.
fn direct_key(members: &[UserId]) -> StoreResult<String> {
    match members {
        [a, b] if a != b => {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            Ok(format!("{}:{}", lo.hyphenated(), hi.hyphenated()))
        }
        _ => Err(StoreError::Backend("a direct conversation needs exactly two distinct members".into())),
    }
}

/// Loads a conversation the transaction just touched; its absence means a broken invariant.
async fn reload(conn: &mut PgConnection, conversation_id: ConversationId) -> StoreResult<ConversationRecord> {
    load_conversation(conn, conversation_id)
        .await?
        .ok_or_else(|| StoreError::Backend(format!("conversation {conversation_id} vanished")))
}

pub(super) async fn create_conversation(
    store: &PostgresStore,
    new: &NewConversation,
) -> StoreResult<(ConversationRecord, bool)> {
    let key = match new.kind {
        ConversationKind::Direct => Some(direct_key(&new.members)?),
        ConversationKind::Group => None,
    };
    let mut tx = store.pool.begin().await?;
    let created_at = ms(new.created_at);
    // ON CONFLICT on the unique direct_key makes concurrent creation of one pair race-free
    // without any lock of ours: a second inserter waits for the first one's transaction,
    // then inserts nothing (if it committed) and adopts the existing conversation below.
    let inserted = sqlx::query(
        "INSERT INTO conversations \
         (id, kind, title, owner_id, created_at, last_seq, direct_key, last_activity_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $5) ON CONFLICT (direct_key) DO NOTHING",
    )
    .bind(id(new.id))
    .bind(kind_str(new.kind))
    .bind(&new.title)
    .bind(new.owner_id.map(id))
    .bind(created_at)
    .bind(&key)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Only a direct conversation can conflict (groups have a NULL key). Under READ
        // COMMITTED this new statement sees the winner's committed row.
        let existing: Option<PgId> = sqlx::query_scalar("SELECT id FROM conversations WHERE direct_key = $1")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
        let existing =
            existing.ok_or_else(|| StoreError::Backend("direct conversation conflict vanished".into()))?;
        let record = reload(&mut tx, existing.0).await?;
        tx.commit().await?;
        return Ok((record, false));
    }
    // One statement for all members, inserted in the given order (WITH ORDINALITY), so
    // join_order breaks the joined_at tie in that order.
    sqlx::query(
        "INSERT INTO members (conversation_id, user_id, read_seq, joined_at) \
         SELECT $1, m.user_id, 0, $3 FROM unnest($2::uuid[]) WITH ORDINALITY AS m (user_id, n) ORDER BY m.n",
    )
    .bind(id(new.id))
    .bind(ids(&new.members))
    .bind(created_at)
    .execute(&mut *tx)
    .await?;
    let record = reload(&mut tx, new.id).await?;
    outbox::push(&mut tx, &[Event::ConversationCreated { conversation_id: new.id }]).await?;
    tx.commit().await?;
    Ok((record, true))
}

pub(super) async fn membership(
    store: &PostgresStore,
    conversation_id: ConversationId,
    user_id: UserId,
) -> StoreResult<Option<Membership>> {
    let read_seq: Option<i64> =
        sqlx::query_scalar("SELECT read_seq FROM members WHERE conversation_id = $1 AND user_id = $2")
            .bind(id(conversation_id))
            .bind(id(user_id))
            .fetch_optional(&store.pool)
            .await?;
    read_seq.map(|s| Ok(Membership { read_seq: seq(s)? })).transpose()
}

/// Every member's read position, in join order.
pub(super) async fn read_positions(
    store: &PostgresStore,
    conversation_id: ConversationId,
) -> StoreResult<Vec<(UserId, u64)>> {
    let sql = format!("SELECT user_id, read_seq FROM members WHERE conversation_id = $1 {MEMBER_ORDER}");
    let rows: Vec<(PgId, i64)> =
        sqlx::query_as(&sql).bind(id(conversation_id)).fetch_all(&store.pool).await?;
    id_seqs(rows)
}

/// A row of the conversation list query: the conversation with its members, the user's
/// read state, and the last message (all NULL when there is none).
#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    conversation: ConversationRow,
    read_seq: i64,
    unread: i64,
    #[sqlx(flatten)]
    last: LastMessageRow,
}

/// The columns of [`LastMessageRow`]: those of a message, renamed apart from the
/// conversation's (both have `id`, `created_at`, …).
const LAST_MESSAGE_COLUMNS: &str = "m.id AS m_id, m.conversation_id AS m_conversation_id, m.seq AS m_seq, \
     m.sender_id AS m_sender_id, m.client_msg_id AS m_client_msg_id, m.body AS m_body, \
     m.created_at AS m_created_at, m.edited_at AS m_edited_at, m.deleted AS m_deleted";

/// The columns of [`MessageRow`], nullable because of the LEFT JOIN.
#[derive(sqlx::FromRow)]
struct LastMessageRow {
    #[sqlx(rename = "m_id")]
    id: Option<PgId>,
    #[sqlx(rename = "m_conversation_id")]
    conversation_id: Option<PgId>,
    #[sqlx(rename = "m_seq")]
    seq: Option<i64>,
    #[sqlx(rename = "m_sender_id")]
    sender_id: Option<PgId>,
    #[sqlx(rename = "m_client_msg_id")]
    client_msg_id: Option<String>,
    #[sqlx(rename = "m_body")]
    body: Option<String>,
    #[sqlx(rename = "m_created_at")]
    created_at: Option<i64>,
    #[sqlx(rename = "m_edited_at")]
    edited_at: Option<i64>,
    #[sqlx(rename = "m_deleted")]
    deleted: Option<bool>,
}

impl LastMessageRow {
    fn into_message(self) -> StoreResult<Option<chattr_api::v1::Message>> {
        let Some(id) = self.id else {
            return Ok(None);
        };
        let missing = || StoreError::Backend(format!("incomplete message row {}", id.0));
        MessageRow {
            id,
            conversation_id: self.conversation_id.ok_or_else(missing)?,
            seq: self.seq.ok_or_else(missing)?,
            sender_id: self.sender_id.ok_or_else(missing)?,
            client_msg_id: self.client_msg_id.ok_or_else(missing)?,
            body: self.body.ok_or_else(missing)?,
            created_at: self.created_at.ok_or_else(missing)?,
            edited_at: self.edited_at,
            deleted: self.deleted.ok_or_else(missing)?,
        }
        .into_message()
        .map(Some)
    }
}

pub(super) async fn conversations_for_user(
    store: &PostgresStore,
    user_id: UserId,
) -> StoreResult<Vec<ConversationSummary>> {
    summaries(store, user_id, None).await
}

/// One conversation's summary for a member, without loading all of the member's list.
pub(super) async fn conversation_summary(
    store: &PostgresStore,
    conversation_id: ConversationId,
    user_id: UserId,
) -> StoreResult<Option<ConversationSummary>> {
    Ok(summaries(store, user_id, Some(conversation_id)).await?.pop())
}

/// Summaries of the user's conversations, or of just `only` among them.
///
/// One statement, hence one snapshot, so counts, members and last messages agree. It starts
/// from `members_by_user`; each unread count is a range of the `messages_unread` index and
/// each last message one probe of `(conversation_id, seq)`.
async fn summaries(
    store: &PostgresStore,
    user_id: UserId,
    only: Option<ConversationId>,
) -> StoreResult<Vec<ConversationSummary>> {
    // Most recent activity first; ties by id, also descending (v7 ids sort by creation).
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS}, me.read_seq, \
           (SELECT COUNT(*) FROM messages x WHERE x.conversation_id = c.id AND x.seq > me.read_seq \
              AND x.sender_id <> me.user_id AND NOT x.deleted) AS unread, \
           {LAST_MESSAGE_COLUMNS} \
         FROM members me JOIN conversations c ON c.id = me.conversation_id \
         LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
         WHERE me.user_id = $1 AND ($2::uuid IS NULL OR c.id = $2) \
         ORDER BY c.last_activity_at DESC, c.id DESC"
    );
    let rows: Vec<SummaryRow> =
        sqlx::query_as(&sql).bind(id(user_id)).bind(only.map(id)).fetch_all(&store.pool).await?;
    rows.into_iter()
        .map(|row| {
            Ok(ConversationSummary {
                last_message: row.last.into_message()?,
                conversation: row.conversation.into_record()?,
                read_seq: seq(row.read_seq)?,
                unread: seq(row.unread)?,
            })
        })
        .collect()
}

pub(super) async fn add_member(
    store: &PostgresStore,
    conversation_id: ConversationId,
    user_id: UserId,
    now: Timestamp,
) -> StoreResult<bool> {
    let mut tx = store.pool.begin().await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = $1")
        .bind(id(conversation_id))
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotMember);
    }
    // ON CONFLICT: two concurrent adds of one user insert (and announce) once. An unknown
    // user fails the foreign key: a backend error, not a silent row.
    let added = sqlx::query(
        "INSERT INTO members (conversation_id, user_id, read_seq, joined_at) VALUES ($1, $2, 0, $3) \
         ON CONFLICT (conversation_id, user_id) DO NOTHING",
    )
    .bind(id(conversation_id))
    .bind(id(user_id))
    .bind(ms(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 0 {
        return Ok(false);
    }
    outbox::push(&mut tx, &[Event::MemberAdded { conversation_id, user_id }]).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn remove_member(
    store: &PostgresStore,
    conversation_id: ConversationId,
    user_id: UserId,
) -> StoreResult<bool> {
    let mut tx = store.pool.begin().await?;
    let removed = sqlx::query("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2")
        .bind(id(conversation_id))
        .bind(id(user_id))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Ok(false);
    }
    outbox::push(&mut tx, &[Event::MemberRemoved { conversation_id, user_id }]).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn set_title(
    store: &PostgresStore,
    conversation_id: ConversationId,
    title: &str,
) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    let updated = sqlx::query("UPDATE conversations SET title = $1 WHERE id = $2")
        .bind(title)
        .bind(id(conversation_id))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::NotMember);
    }
    outbox::push(&mut tx, &[Event::ConversationUpdated { conversation_id }]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn contacts(store: &PostgresStore, user_id: UserId) -> StoreResult<Vec<UserId>> {
    let ids: Vec<PgId> = sqlx::query_scalar(
        "SELECT DISTINCT other.user_id FROM members me \
         JOIN members other ON other.conversation_id = me.conversation_id \
         WHERE me.user_id = $1 AND other.user_id <> $1 \
         ORDER BY other.user_id",
    )
    .bind(id(user_id))
    .fetch_all(&store.pool)
    .await?;
    Ok(uuids(ids))
}

pub(super) async fn contacts_of(
    store: &PostgresStore,
    users: &[UserId],
) -> StoreResult<Vec<(UserId, UserId)>> {
    let rows: Vec<(PgId, PgId)> = sqlx::query_as(
        "SELECT DISTINCT me.user_id, other.user_id FROM members me \
         JOIN members other ON other.conversation_id = me.conversation_id \
         WHERE me.user_id = ANY($1) AND other.user_id <> me.user_id",
    )
    .bind(ids(users))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.into_iter().map(|(u, c)| (u.0, c.0)).collect())
}

pub(super) async fn latest_seqs_of(
    store: &PostgresStore,
    users: &[UserId],
) -> StoreResult<Vec<(UserId, ConversationId, u64)>> {
    let rows: Vec<(PgId, PgId, i64)> = sqlx::query_as(
        "SELECT me.user_id, c.id, c.last_seq FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.user_id = ANY($1)",
    )
    .bind(ids(users))
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter().map(|(u, c, last)| Ok((u.0, c.0, seq(last)?))).collect()
}

pub(super) async fn latest_seqs(
    store: &PostgresStore,
    user_id: UserId,
) -> StoreResult<Vec<(ConversationId, u64)>> {
    let rows: Vec<(PgId, i64)> = sqlx::query_as(
        "SELECT c.id, c.last_seq FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.user_id = $1 ORDER BY c.id",
    )
    .bind(id(user_id))
    .fetch_all(&store.pool)
    .await?;
    id_seqs(rows)
}
