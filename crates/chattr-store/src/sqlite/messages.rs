//! Messages and read positions on SQLite.

use chattr_api::v1::Message;
use chattr_core::events::Event;
use chattr_core::{ConversationId, MessageId, UserId};

use super::rows::{db_id, into_messages, load_message, ms, seq, seq_param, MessageRow, MESSAGE_COLUMNS};
use super::{outbox, SqliteStore};
use crate::{change_event, MessageChange, StoreError, StoreResult};

pub(super) async fn messages(
    store: &SqliteStore,
    id: ConversationId,
    after: Option<u64>,
    before: Option<u64>,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let select = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ?1");
    // `before` alone (or nothing) wants the *last* `limit` rows: take them newest first,
    // then flip back to ascending.
    let sql = match (after, before) {
        (Some(_), Some(_)) => format!("{select} AND m.seq > ?2 AND m.seq < ?3 ORDER BY m.seq LIMIT ?4"),
        (Some(_), None) => format!("{select} AND m.seq > ?2 ORDER BY m.seq LIMIT ?4"),
        (None, Some(_)) => {
            format!("SELECT * FROM ({select} AND m.seq < ?3 ORDER BY m.seq DESC LIMIT ?4) ORDER BY seq")
        }
        (None, None) => format!("SELECT * FROM ({select} ORDER BY m.seq DESC LIMIT ?4) ORDER BY seq"),
    };
    let rows: Vec<MessageRow> = sqlx::query_as(&sql)
        .bind(db_id(id))
        .bind(seq_param(after.unwrap_or(0)))
        .bind(seq_param(before.unwrap_or(u64::MAX)))
        .bind(limit)
        .fetch_all(&store.read)
        .await?;
    into_messages(rows)
}

pub(super) async fn change_message(
    store: &SqliteStore,
    id: ConversationId,
    message_id: MessageId,
    change: &MessageChange,
) -> StoreResult<Option<Message>> {
    let mut tx = store.begin_write().await?;
    let Some(mut message) = load_message(&mut tx, id, message_id).await? else {
        return Ok(None);
    };
    // A tombstone stays a tombstone: no edit, no second delete, no event.
    if message.deleted {
        return Ok(Some(message));
    }
    match change {
        MessageChange::Edit { body, at } => {
            sqlx::query("UPDATE messages SET body = ?, edited_at = ? WHERE id = ?")
                .bind(body)
                .bind(ms(*at))
                .bind(db_id(message_id))
                .execute(&mut *tx)
                .await?;
            message.body.clone_from(body);
            message.edited_at = Some(*at);
        }
        MessageChange::Delete { .. } => {
            sqlx::query("UPDATE messages SET body = '', deleted = 1 WHERE id = ?")
                .bind(db_id(message_id))
                .execute(&mut *tx)
                .await?;
            message.body.clear();
            message.deleted = true;
        }
    }
    outbox::push(&mut tx, &change_event(&message)).await?;
    tx.commit().await?;
    Ok(Some(message))
}

pub(super) async fn mark_read(
    store: &SqliteStore,
    id: ConversationId,
    user_id: UserId,
    to: u64,
) -> StoreResult<u64> {
    let (conversation, user) = (db_id(id), db_id(user_id));
    let mut tx = store.begin_write().await?;
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT me.read_seq, c.last_seq FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.conversation_id = ? AND me.user_id = ?",
    )
    .bind(&conversation)
    .bind(&user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((read_seq, last_seq)) = row else {
        return Err(StoreError::NotMember);
    };
    let (read_seq, last_seq) = (seq(read_seq)?, seq(last_seq)?);
    // Clamp to what exists, and never move backwards.
    let target = to.min(last_seq);
    if target <= read_seq {
        return Ok(read_seq);
    }
    sqlx::query("UPDATE members SET read_seq = ? WHERE conversation_id = ? AND user_id = ?")
        .bind(seq_param(target))
        .bind(&conversation)
        .bind(&user)
        .execute(&mut *tx)
        .await?;
    outbox::push(&mut tx, &Event::MessageRead { conversation_id: id, user_id, seq: target }).await?;
    tx.commit().await?;
    Ok(target)
}
