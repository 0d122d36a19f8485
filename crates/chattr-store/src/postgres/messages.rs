//! Messages and read positions on PostgreSQL.

use chattr_api::v1::Message;
use chattr_core::events::Event;
use chattr_core::{ConversationId, MessageId, UserId};

use super::rows::{
    id, into_messages, limit_param, load_message, ms, seq, seq_param, MessageRow, MESSAGE_COLUMNS,
};
use super::{outbox, PostgresStore};
use crate::{change_event, MessageChange, NewMessage, StoreError, StoreResult};

/// Inserts a message; see [`crate::Store::insert_message`].
///
/// Concurrency: the transaction first takes the conversation's row lock, so senders of one
/// conversation run one at a time from there to commit, and senders of different
/// conversations never wait for each other. Every check that follows is a new statement,
/// which under READ COMMITTED sees everything committed before the lock was granted. So
/// the dedupe check cannot miss a concurrent send of the same `client_msg_id`: the second
/// sender waits for the first one's commit, then finds its message and returns it. The
/// unique `(conversation_id, sender_id, client_msg_id)` constraint is the backstop.
pub(super) async fn insert_message(store: &PostgresStore, new: &NewMessage) -> StoreResult<(Message, bool)> {
    let (conversation, sender) = (id(new.conversation_id), id(new.sender_id));
    let mut tx = store.pool.begin().await?;

    // FOR NO KEY UPDATE is the lock the seq increment below takes anyway; taking it first
    // keeps the dedupe check inside the serialised section. It does not block foreign-key
    // checks (KEY SHARE), so adding members or reading is never held up.
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM conversations WHERE id = $1 FOR NO KEY UPDATE")
            .bind(conversation)
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Err(StoreError::NotMember);
    }
    // Locking the membership row (its read position is updated below anyway) means a
    // concurrent removal either commits before this check or waits until we commit.
    let member: Option<i64> = sqlx::query_scalar(
        "SELECT read_seq FROM members WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(conversation)
    .bind(sender)
    .fetch_optional(&mut *tx)
    .await?;
    if member.is_none() {
        return Err(StoreError::NotMember);
    }

    // A retry of a send that already committed returns the original, unchanged.
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m \
         WHERE m.conversation_id = $1 AND m.sender_id = $2 AND m.client_msg_id = $3"
    );
    let existing: Option<MessageRow> = sqlx::query_as(&sql)
        .bind(conversation)
        .bind(sender)
        .bind(&new.client_msg_id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(existing) = existing {
        tx.commit().await?;
        return Ok((existing.into_message()?, false));
    }

    // The counter moves in the same transaction as the insert, so seqs are gapless: a
    // rolled-back insert also rolls the counter back.
    let created_at = ms(new.created_at);
    let next: i64 = sqlx::query_scalar(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 WHERE id = $2 \
         RETURNING last_seq",
    )
    .bind(created_at)
    .bind(conversation)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO messages \
         (id, conversation_id, seq, sender_id, client_msg_id, body, created_at, edited_at, deleted) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, FALSE)",
    )
    .bind(id(new.id))
    .bind(conversation)
    .bind(next)
    .bind(sender)
    .bind(&new.client_msg_id)
    .bind(&new.body)
    .bind(created_at)
    .execute(&mut *tx)
    .await?;
    // The sender has obviously read their own message.
    sqlx::query("UPDATE members SET read_seq = $1 WHERE conversation_id = $2 AND user_id = $3")
        .bind(next)
        .bind(conversation)
        .bind(sender)
        .execute(&mut *tx)
        .await?;
    let message = new.stored_as(seq(next)?);
    outbox::push(&mut tx, &[Event::MessageCreated { message: message.clone() }]).await?;
    tx.commit().await?;
    Ok((message, true))
}

pub(super) async fn messages(
    store: &PostgresStore,
    conversation_id: ConversationId,
    after: Option<u64>,
    before: Option<u64>,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let select = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1");
    // Every variant is a range of the (conversation_id, seq) index. `before` alone (or
    // nothing) wants the *last* `limit` rows: take them newest first, then flip back.
    let (sql, bounds) = match (after, before) {
        (Some(after), Some(before)) => (
            format!("{select} AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq LIMIT $4"),
            vec![seq_param(after), seq_param(before)],
        ),
        (Some(after), None) => {
            (format!("{select} AND m.seq > $2 ORDER BY m.seq LIMIT $3"), vec![seq_param(after)])
        }
        (None, Some(before)) => (
            format!("SELECT * FROM ({select} AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3) page ORDER BY seq"),
            vec![seq_param(before)],
        ),
        (None, None) => {
            (format!("SELECT * FROM ({select} ORDER BY m.seq DESC LIMIT $2) page ORDER BY seq"), vec![])
        }
    };
    let mut query = sqlx::query_as(&sql).bind(id(conversation_id));
    for bound in bounds {
        query = query.bind(bound);
    }
    let rows: Vec<MessageRow> = query.bind(limit_param(limit)).fetch_all(&store.pool).await?;
    into_messages(rows)
}

pub(super) async fn change_message(
    store: &PostgresStore,
    conversation_id: ConversationId,
    message_id: MessageId,
    change: &MessageChange,
) -> StoreResult<Option<Message>> {
    let mut tx = store.pool.begin().await?;
    // Locked: concurrent edits and deletes of one message apply one after the other, and
    // each sees (and reports) the other's result, so a tombstone can never be edited.
    let Some(mut message) = load_message(&mut tx, conversation_id, message_id, true).await? else {
        return Ok(None);
    };
    // A tombstone stays a tombstone: no edit, no second delete, no event.
    if message.deleted {
        return Ok(Some(message));
    }
    match change {
        MessageChange::Edit { body, at } => {
            sqlx::query("UPDATE messages SET body = $1, edited_at = $2 WHERE id = $3")
                .bind(body)
                .bind(ms(*at))
                .bind(id(message_id))
                .execute(&mut *tx)
                .await?;
            message.body.clone_from(body);
            message.edited_at = Some(*at);
        }
        MessageChange::Delete { .. } => {
            sqlx::query("UPDATE messages SET body = '', deleted = TRUE WHERE id = $1")
                .bind(id(message_id))
                .execute(&mut *tx)
                .await?;
            message.body.clear();
            message.deleted = true;
        }
    }
    outbox::push(&mut tx, &[change_event(&message)]).await?;
    tx.commit().await?;
    Ok(Some(message))
}

pub(super) async fn mark_read(
    store: &PostgresStore,
    conversation_id: ConversationId,
    user_id: UserId,
    to: u64,
) -> StoreResult<u64> {
    let mut tx = store.pool.begin().await?;
    // The member row is locked so two concurrent calls cannot both move from the same old
    // position and leave the smaller target last (a read position never moves back).
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT me.read_seq, c.last_seq FROM members me JOIN conversations c ON c.id = me.conversation_id \
         WHERE me.conversation_id = $1 AND me.user_id = $2 FOR UPDATE OF me",
    )
    .bind(id(conversation_id))
    .bind(id(user_id))
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
    sqlx::query("UPDATE members SET read_seq = $1 WHERE conversation_id = $2 AND user_id = $3")
        .bind(seq_param(target))
        .bind(id(conversation_id))
        .bind(id(user_id))
        .execute(&mut *tx)
        .await?;
    outbox::push(&mut tx, &[Event::MessageRead { conversation_id, user_id, seq: target }]).await?;
    tx.commit().await?;
    Ok(target)
}
