//! Conversations and membership on SQLite.

use std::collections::HashMap;

use chattr_api::v1::ConversationKind;
use chattr_core::events::Event;
use chattr_core::{ConversationId, Timestamp, UserId};
use sqlx::SqliteConnection;

use super::rows::{
    db_id, into_messages, json_ids, kind_str, load_conversation, ms, seq, uuid, ConversationRow, MessageRow,
    CONVERSATION_COLUMNS, MEMBER_ORDER, MESSAGE_COLUMNS,
};
use super::{outbox, SqliteStore};
use crate::{ConversationRecord, ConversationSummary, Membership, NewConversation, StoreError, StoreResult};

/// The `direct_key` of a direct conversation: its two member ids, sorted, joined by `:`.
fn direct_key(members: &[UserId]) -> StoreResult<String> {
    match members {
        [a, b] if a != b => {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            Ok(format!("{}:{}", db_id(*lo), db_id(*hi)))
        }
        _ => Err(StoreError::Backend("a direct conversation needs exactly two distinct members".into())),
    }
}

/// Loads a conversation the transaction just touched; its absence means a broken invariant.
async fn reload(conn: &mut SqliteConnection, id: ConversationId) -> StoreResult<ConversationRecord> {
    load_conversation(conn, id)
        .await?
        .ok_or_else(|| StoreError::Backend(format!("conversation {id} vanished")))
}

pub(super) async fn create_conversation(
    store: &SqliteStore,
    new: &NewConversation,
) -> StoreResult<(ConversationRecord, bool)> {
    let key = match new.kind {
        ConversationKind::Direct => Some(direct_key(&new.members)?),
        ConversationKind::Group => None,
    };
    // The single writer connection serialises this check-then-insert within the process,
    // and BEGIN IMMEDIATE across processes, so one pair never gets two conversations (the
    // UNIQUE index on direct_key is the backstop).
    let mut tx = store.begin_write().await?;
    if let Some(key) = &key {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM conversations WHERE direct_key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            let record = reload(&mut tx, uuid(&existing)?).await?;
            tx.commit().await?;
            return Ok((record, false));
        }
    }
    let created_at = ms(new.created_at);
    sqlx::query(
        "INSERT INTO conversations \
         (id, kind, title, owner_id, created_at, last_seq, direct_key, last_activity_at) \
         VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
    )
    .bind(db_id(new.id))
    .bind(kind_str(new.kind))
    .bind(&new.title)
    .bind(new.owner_id.map(db_id))
    .bind(created_at)
    .bind(&key)
    .bind(created_at)
    .execute(&mut *tx)
    .await?;
    // Inserted in the given order: rowid then breaks the joined_at tie in that order.
    for member in &new.members {
        sqlx::query(
            "INSERT INTO members (conversation_id, user_id, read_seq, joined_at) VALUES (?, ?, 0, ?)",
        )
        .bind(db_id(new.id))
        .bind(db_id(*member))
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
    }
    outbox::push(&mut tx, &Event::ConversationCreated { conversation_id: new.id }).await?;
    let record = reload(&mut tx, new.id).await?;
    tx.commit().await?;
    Ok((record, true))
}

pub(super) async fn membership(
    store: &SqliteStore,
    id: ConversationId,
    user_id: UserId,
) -> StoreResult<Option<Membership>> {
    let read_seq: Option<i64> =
        sqlx::query_scalar("SELECT read_seq FROM members WHERE conversation_id = ? AND user_id = ?")
            .bind(db_id(id))
            .bind(db_id(user_id))
            .fetch_optional(&store.read)
            .await?;
    read_seq.map(|s| Ok(Membership { read_seq: seq(s)? })).transpose()
}

/// Every member's read position, in join order.
pub(super) async fn read_positions(
    store: &SqliteStore,
    id: ConversationId,
) -> StoreResult<Vec<(UserId, u64)>> {
    let sql = format!("SELECT user_id, read_seq FROM members WHERE conversation_id = ? {MEMBER_ORDER}");
    let rows: Vec<(String, i64)> = sqlx::query_as(&sql).bind(db_id(id)).fetch_all(&store.read).await?;
    rows.into_iter().map(|(user, read)| Ok((uuid(&user)?, seq(read)?))).collect()
}

/// A row of the conversation list query.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    conversation: ConversationRow,
    read_seq: i64,
    unread: i64,
}

pub(super) async fn conversations_for_user(
    store: &SqliteStore,
    user_id: UserId,
) -> StoreResult<Vec<ConversationSummary>> {
    summaries(store, user_id, None).await
}

/// One conversation's summary for a member, without loading all of the member's list.
pub(super) async fn conversation_summary(
    store: &SqliteStore,
    id: ConversationId,
    user_id: UserId,
) -> StoreResult<Option<ConversationSummary>> {
    Ok(summaries(store, user_id, Some(id)).await?.pop())
}

/// Summaries of the user's conversations, or of just `only` among them.
async fn summaries(
    store: &SqliteStore,
    user_id: UserId,
    only: Option<ConversationId>,
) -> StoreResult<Vec<ConversationSummary>> {
    let user = db_id(user_id);
    let only = only.map(db_id);
    // One snapshot for the three queries, so counts, members and last messages agree.
    let mut tx = store.begin_read().await?;
    // Most recent activity first; ties by id, also descending (v7 ids sort by creation).
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS}, me.read_seq, \
           (SELECT COUNT(*) FROM messages x WHERE x.conversation_id = c.id AND x.seq > me.read_seq \
              AND x.sender_id <> me.user_id AND x.deleted = 0) AS unread \
         FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.user_id = ? AND (?2 IS NULL OR c.id = ?2) \
         ORDER BY c.last_activity_at DESC, c.id DESC"
    );
    let rows: Vec<SummaryRow> = sqlx::query_as(&sql).bind(&user).bind(&only).fetch_all(&mut *tx).await?;

    let sql = format!(
        "SELECT conversation_id, user_id FROM members WHERE conversation_id IN \
         (SELECT conversation_id FROM members WHERE user_id = ? AND (?2 IS NULL OR conversation_id = ?2)) \
         {MEMBER_ORDER}"
    );
    let member_rows: Vec<(String, String)> =
        sqlx::query_as(&sql).bind(&user).bind(&only).fetch_all(&mut *tx).await?;
    let mut members: HashMap<String, Vec<UserId>> = HashMap::new();
    for (conversation, member) in member_rows {
        members.entry(conversation).or_default().push(uuid(&member)?);
    }

    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM members me \
         JOIN conversations c ON c.id = me.conversation_id \
         JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
         WHERE me.user_id = ? AND (?2 IS NULL OR c.id = ?2)"
    );
    let last_rows: Vec<MessageRow> = sqlx::query_as(&sql).bind(&user).bind(&only).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let mut last: HashMap<_, _> =
        into_messages(last_rows)?.into_iter().map(|m| (m.conversation_id, m)).collect();

    rows.into_iter()
        .map(|row| {
            let conversation_members = members.remove(row.conversation.id()).unwrap_or_default();
            let conversation = row.conversation.into_record(conversation_members)?;
            Ok(ConversationSummary {
                last_message: last.remove(&conversation.id),
                conversation,
                read_seq: seq(row.read_seq)?,
                unread: seq(row.unread)?,
            })
        })
        .collect()
}

/// Whether the conversation exists and whether `user` is a member of it.
async fn presence(conn: &mut SqliteConnection, id: &str, user: &str) -> StoreResult<(bool, bool)> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = c.id AND user_id = ?) \
         FROM conversations c WHERE c.id = ?",
    )
    .bind(user)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or((false, false), |(member,)| (true, member != 0)))
}

pub(super) async fn add_member(
    store: &SqliteStore,
    id: ConversationId,
    user_id: UserId,
    now: Timestamp,
) -> StoreResult<bool> {
    let (conversation, user) = (db_id(id), db_id(user_id));
    let mut tx = store.begin_write().await?;
    match presence(&mut tx, &conversation, &user).await? {
        (false, _) => return Err(StoreError::NotMember),
        (true, true) => return Ok(false),
        (true, false) => {}
    }
    sqlx::query("INSERT INTO members (conversation_id, user_id, read_seq, joined_at) VALUES (?, ?, 0, ?)")
        .bind(&conversation)
        .bind(&user)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    outbox::push(&mut tx, &Event::MemberAdded { conversation_id: id, user_id }).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn remove_member(
    store: &SqliteStore,
    id: ConversationId,
    user_id: UserId,
) -> StoreResult<bool> {
    let mut tx = store.begin_write().await?;
    let removed = sqlx::query("DELETE FROM members WHERE conversation_id = ? AND user_id = ?")
        .bind(db_id(id))
        .bind(db_id(user_id))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Ok(false);
    }
    outbox::push(&mut tx, &Event::MemberRemoved { conversation_id: id, user_id }).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn set_title(store: &SqliteStore, id: ConversationId, title: &str) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    let updated = sqlx::query("UPDATE conversations SET title = ? WHERE id = ?")
        .bind(title)
        .bind(db_id(id))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(StoreError::NotMember);
    }
    outbox::push(&mut tx, &Event::ConversationUpdated { conversation_id: id }).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn contacts(store: &SqliteStore, user_id: UserId) -> StoreResult<Vec<UserId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT other.user_id FROM members me \
         JOIN members other ON other.conversation_id = me.conversation_id \
         WHERE me.user_id = ?1 AND other.user_id <> ?1 \
         ORDER BY other.user_id",
    )
    .bind(db_id(user_id))
    .fetch_all(&store.read)
    .await?;
    ids.iter().map(|s| uuid(s)).collect()
}

pub(super) async fn contacts_of(store: &SqliteStore, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT me.user_id, other.user_id FROM members me \
         JOIN members other ON other.conversation_id = me.conversation_id \
         WHERE me.user_id IN (SELECT value FROM json_each(?)) AND other.user_id <> me.user_id",
    )
    .bind(json_ids(users)?)
    .fetch_all(&store.read)
    .await?;
    rows.iter().map(|(u, c)| Ok((uuid(u)?, uuid(c)?))).collect()
}

pub(super) async fn latest_seqs_of(
    store: &SqliteStore,
    users: &[UserId],
) -> StoreResult<Vec<(UserId, ConversationId, u64)>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT me.user_id, c.id, c.last_seq FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.user_id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_ids(users)?)
    .fetch_all(&store.read)
    .await?;
    rows.into_iter().map(|(u, c, last)| Ok((uuid(&u)?, uuid(&c)?, seq(last)?))).collect()
}

pub(super) async fn latest_seqs(
    store: &SqliteStore,
    user_id: UserId,
) -> StoreResult<Vec<(ConversationId, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.id, c.last_seq FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.user_id = ? ORDER BY c.id",
    )
    .bind(db_id(user_id))
    .fetch_all(&store.read)
    .await?;
    rows.into_iter().map(|(id, last)| Ok((uuid(&id)?, seq(last)?))).collect()
}
