//! Group commit of sends on SQLite.
//!
//! Every write goes through one connection, and each statement on it is a round trip to
//! sqlx's worker thread. Sending one message used to take seven of them (begin, membership,
//! retry lookup, next seq, insert, read mark, outbox, commit), one message after another,
//! which capped the embedded server near 1,500 messages a second with cores to spare.
//!
//! Here, [`insert_message`] queues the send for one writer task. The task takes every send
//! waiting (up to [`MAX_BATCH`]) and commits them together in one transaction of seven
//! statements, whatever the batch size: each statement handles the whole batch, its rows
//! passed as one JSON array and unpacked by SQLite's `json_each`. Under light load a batch
//! is one send and nothing waits longer than before; under heavy load the cost per send
//! falls as batches grow. Nothing is acknowledged before its batch commits.
//!
//! A batch that fails is retried one send at a time, so a send the database refuses fails
//! alone and does not take its batch-mates with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chattr_api::v1::Message;
use chattr_core::events::Event;
use serde_json::json;
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot, Notify};

use super::rows::{db_id, ms, seq, MessageRow, MESSAGE_COLUMNS};
use crate::{NewMessage, StoreError, StoreResult};

/// The most sends committed in one transaction (bounds the statements' JSON parameters).
pub(super) const MAX_BATCH: usize = 256;

/// One queued send and where its answer goes.
pub(super) struct Queued {
    new: NewMessage,
    /// The sender's trace context, written to the outbox with its event.
    traceparent: Option<String>,
    reply: oneshot::Sender<StoreResult<(Message, bool)>>,
}

/// The queue into the writer task. Dropping the last handle ends the task.
pub(super) type SendQueue = mpsc::UnboundedSender<Queued>;

/// Starts the writer that commits queued sends on `write` (the store's one writer).
///
/// It runs on a thread of its own, not on the server's runtime: a batch takes eight round
/// trips to sqlx's worker thread, and on a runtime busy with thousands of sockets each
/// wake-up from that thread waits in the shared queue behind socket tasks, which capped
/// throughput with the writer mostly idle. The thread ends when the store is dropped.
/// `kick`, if any, is notified after every batch (the background checkpointer).
pub(super) fn start(write: SqlitePool, kick: Option<Arc<Notify>>) -> StoreResult<SendQueue> {
    let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend(format!("starting the send writer: {e}")))?;
    std::thread::Builder::new()
        .name("chattr-sends".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    metrics::counter!(crate::metrics::SEND_BATCHES).increment(1);
                    commit_or_split(&write, std::mem::take(&mut batch)).await;
                    if let Some(kick) = &kick {
                        kick.notify_one();
                    }
                }
            });
        })
        .map_err(|e| StoreError::Backend(format!("starting the send writer: {e}")))?;
    Ok(queue)
}

/// Queues `new` and waits until its batch has committed (or failed).
pub(super) async fn insert_message(queue: &SendQueue, new: &NewMessage) -> StoreResult<(Message, bool)> {
    let (reply, answer) = oneshot::channel();
    let queued = Queued { new: new.clone(), traceparent: chattr_core::trace::outgoing(), reply };
    queue.send(queued).map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}

/// Commits `batch` and answers every send in it; if the batch fails as a whole, each send
/// is tried alone so only the ones the database refuses fail.
async fn commit_or_split(write: &SqlitePool, batch: Vec<Queued>) {
    let news: Vec<&NewMessage> = batch.iter().map(|q| &q.new).collect();
    let traces: Vec<Option<&str>> = batch.iter().map(|q| q.traceparent.as_deref()).collect();
    match commit(write, &news, &traces).await {
        Ok(answers) => {
            for (queued, answer) in batch.into_iter().zip(answers) {
                // The caller may have gone away; its send stays committed, and a retry
                // with the same client_msg_id gets it back.
                let _ = queued.reply.send(answer);
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(queued) = batch.into_iter().next() {
                let _ = queued.reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, sends = batch.len(), "a batch of sends failed; retrying them one by one");
            for queued in batch {
                let answer = commit(write, &[&queued.new], &[queued.traceparent.as_deref()])
                    .await
                    .and_then(|mut answers| answers.pop().unwrap_or_else(|| Err(stopped())));
                let _ = queued.reply.send(answer);
            }
        }
    }
}

/// What becomes of one send of a batch.
enum Fate {
    /// Its sender is not a member (or the conversation does not exist).
    Refused,
    /// A retry: the message stored earlier.
    Stored(Message),
    /// A retry of a send earlier in this batch (its index).
    SameAs(usize),
    /// A new message; its seq is known once the counters have moved.
    New,
}

/// Commits the sends in one transaction and returns one answer per send, in order, with
/// the same meaning as [`crate::Store::insert_message`]. `Err` means nothing committed.
async fn commit(
    write: &SqlitePool,
    news: &[&NewMessage],
    traces: &[Option<&str>],
) -> StoreResult<Vec<StoreResult<(Message, bool)>>> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
    let keys = json!(news
        .iter()
        .map(|n| json!({"c": db_id(n.conversation_id), "s": db_id(n.sender_id), "k": n.client_msg_id}))
        .collect::<Vec<_>>())
    .to_string();
    let mut fates = classify(&mut tx, news, &keys).await?;

    // New messages take consecutive seqs per conversation, in batch order.
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (new, fate) in news.iter().zip(&fates) {
        if matches!(fate, Fate::New) {
            let entry = counts.entry(db_id(new.conversation_id)).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = ms(new.created_at);
        }
    }
    let mut messages: Vec<Option<Message>> = vec![None; news.len()];
    if !counts.is_empty() {
        let mut next = next_seqs(&mut tx, &counts).await?;
        for (i, (new, fate)) in news.iter().zip(&fates).enumerate() {
            if matches!(fate, Fate::New) {
                let slot = next
                    .get_mut(&db_id(new.conversation_id))
                    .ok_or_else(|| StoreError::Backend("a conversation's counter did not move".into()))?;
                messages[i] = Some(new.stored_as(seq(*slot)?));
                *slot += 1;
            }
        }
        write_new(&mut tx, &messages, traces).await?;
    }
    tx.commit().await?;

    let mut answers = Vec::with_capacity(news.len());
    for (i, fate) in fates.drain(..).enumerate() {
        answers.push(match fate {
            Fate::Refused => Err(StoreError::NotMember),
            Fate::Stored(message) => Ok((message, false)),
            Fate::SameAs(first) => match &messages[first] {
                Some(message) => Ok((message.clone(), false)),
                None => Err(StoreError::Backend("a repeated send lost its original".into())),
            },
            // Cloned, not taken: a later repeat of this send answers with it too.
            Fate::New => match messages[i].clone() {
                Some(message) => Ok((message, true)),
                None => Err(StoreError::Backend("a new send got no seq".into())),
            },
        });
    }
    Ok(answers)
}

/// Sorts the sends into refused, retries and new ones, reading membership and earlier
/// sends inside the transaction (so nothing can change between the check and the write).
async fn classify(
    tx: &mut Transaction<'static, Sqlite>,
    news: &[&NewMessage],
    keys: &str,
) -> StoreResult<Vec<Fate>> {
    let members: Vec<i64> = sqlx::query_scalar(
        "SELECT j.key FROM json_each(?) j WHERE EXISTS (SELECT 1 FROM members \
         WHERE conversation_id = json_extract(j.value, '$.c') AND user_id = json_extract(j.value, '$.s'))",
    )
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored: HashMap<usize, Message> = HashMap::new();
    if !members.is_empty() {
        let sql = format!(
            "SELECT j.key AS i, {MESSAGE_COLUMNS} FROM json_each(?) j JOIN messages m \
             ON m.conversation_id = json_extract(j.value, '$.c') AND m.sender_id = json_extract(j.value, '$.s') \
             AND m.client_msg_id = json_extract(j.value, '$.k')"
        );
        let found: Vec<Found> = sqlx::query_as(&sql).bind(keys).fetch_all(&mut **tx).await?;
        for row in found {
            stored.insert(index(row.i)?, row.message.into_message()?);
        }
    }
    let is_member: std::collections::HashSet<usize> =
        members.into_iter().map(index).collect::<StoreResult<_>>()?;
    let mut first_of: HashMap<(_, _, &str), usize> = HashMap::new();
    let mut fates = Vec::with_capacity(news.len());
    for (i, new) in news.iter().enumerate() {
        let fate = if !is_member.contains(&i) {
            // A former member cannot post, not even a retry of an earlier send.
            Fate::Refused
        } else if let Some(message) = stored.remove(&i) {
            Fate::Stored(message)
        } else {
            match first_of.entry((new.conversation_id, new.sender_id, new.client_msg_id.as_str())) {
                std::collections::hash_map::Entry::Occupied(first) => Fate::SameAs(*first.get()),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                    Fate::New
                }
            }
        };
        fates.push(fate);
    }
    Ok(fates)
}

/// A stored message matched to the index of the send that repeats it.
#[derive(sqlx::FromRow)]
struct Found {
    i: i64,
    #[sqlx(flatten)]
    message: MessageRow,
}

fn index(i: i64) -> StoreResult<usize> {
    usize::try_from(i).map_err(|_| StoreError::Backend(format!("json_each returned index {i}")))
}

/// Moves each conversation's counter by its number of new messages (and its activity time
/// to its newest one); returns each conversation's first new seq. The counter moves in the
/// same transaction as the inserts, so seqs stay gapless.
async fn next_seqs(
    tx: &mut Transaction<'static, Sqlite>,
    counts: &BTreeMap<String, (i64, i64)>,
) -> StoreResult<HashMap<String, i64>> {
    let moves = json!(counts.iter().map(|(c, (n, t))| json!({"c": c, "n": n, "t": t})).collect::<Vec<_>>())
        .to_string();
    let moved: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE conversations SET last_seq = last_seq + json_extract(j.value, '$.n'), \
         last_activity_at = json_extract(j.value, '$.t') \
         FROM json_each(?) j WHERE conversations.id = json_extract(j.value, '$.c') \
         RETURNING conversations.id, conversations.last_seq",
    )
    .bind(moves)
    .fetch_all(&mut **tx)
    .await?;
    Ok(moved
        .into_iter()
        .map(|(c, last)| {
            let n = counts.get(&c).map_or(0, |(n, _)| *n);
            (c, last - n + 1)
        })
        .collect())
}

/// Inserts the new messages, moves each sender's read position to their newest one (a
/// sender has read what they sent), and appends one `message.created` per message to the
/// outbox, in batch order (so in seq order within each conversation).
async fn write_new(
    tx: &mut Transaction<'static, Sqlite>,
    messages: &[Option<Message>],
    traces: &[Option<&str>],
) -> StoreResult<()> {
    let new: Vec<(&Message, Option<&str>)> =
        messages.iter().zip(traces).filter_map(|(m, t)| m.as_ref().map(|m| (m, *t))).collect();
    let rows = json!(new
        .iter()
        .map(|(m, _)| json!({
            "id": db_id(m.id), "c": db_id(m.conversation_id), "q": m.seq, "s": db_id(m.sender_id),
            "k": m.client_msg_id, "b": m.body, "t": ms(m.created_at),
        }))
        .collect::<Vec<_>>())
    .to_string();
    sqlx::query(
        "INSERT INTO messages \
         (id, conversation_id, seq, sender_id, client_msg_id, body, created_at, edited_at, deleted) \
         SELECT json_extract(value, '$.id'), json_extract(value, '$.c'), json_extract(value, '$.q'), \
         json_extract(value, '$.s'), json_extract(value, '$.k'), json_extract(value, '$.b'), \
         json_extract(value, '$.t'), NULL, 0 FROM json_each(?) ORDER BY key",
    )
    .bind(&rows)
    .execute(&mut **tx)
    .await?;

    let mut read: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (m, _) in &new {
        let at = read.entry((db_id(m.conversation_id), db_id(m.sender_id))).or_default();
        *at = (*at).max(m.seq);
    }
    let reads =
        json!(read.iter().map(|((c, s), q)| json!({"c": c, "s": s, "q": q})).collect::<Vec<_>>()).to_string();
    sqlx::query(
        "UPDATE members SET read_seq = json_extract(j.value, '$.q') FROM json_each(?) j \
         WHERE members.conversation_id = json_extract(j.value, '$.c') \
         AND members.user_id = json_extract(j.value, '$.s')",
    )
    .bind(reads)
    .execute(&mut **tx)
    .await?;

    let now = ms(chattr_core::now());
    let events = json!(new
        .iter()
        .map(|(m, trace)| {
            let event = Event::MessageCreated { message: (*m).clone() };
            let (topic, key) = event.route();
            json!({"topic": topic, "key": key, "kind": event.kind(), "payload": event.to_json(), "trace": trace})
        })
        .collect::<Vec<_>>())
    .to_string();
    sqlx::query(
        "INSERT INTO outbox (topic, key, kind, payload, created_at, traceparent) \
         SELECT json_extract(value, '$.topic'), json_extract(value, '$.key'), json_extract(value, '$.kind'), \
         json_extract(value, '$.payload'), ?, json_extract(value, '$.trace') FROM json_each(?) ORDER BY key",
    )
    .bind(now)
    .bind(events)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chattr_api::v1::ConversationKind;
    use uuid::Uuid;

    use super::super::SqliteStore;
    use crate::{NewConversation, NewMessage, Store, StoreError, UserRecord};

    /// A send the database refuses (here: a trigger) fails alone; the sends committed in
    /// the same batch are split off and still commit, with gapless seqs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_refused_send_fails_alone() {
        let store = Arc::new(SqliteStore::open(":memory:").await.expect("open"));
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned send'); END",
        )
        .execute(&store.write)
        .await
        .expect("trigger");
        let now = chattr_core::now();
        let user = UserRecord {
            id: Uuid::now_v7(),
            username: "p".into(),
            password_hash: "h".into(),
            created_at: now,
        };
        store.create_user(&user).await.expect("user");
        let conversation = NewConversation {
            id: Uuid::now_v7(),
            kind: ConversationKind::Group,
            title: None,
            owner_id: Some(user.id),
            members: vec![user.id],
            created_at: now,
        };
        store.create_conversation(&conversation).await.expect("conversation");
        let start = Arc::new(tokio::sync::Barrier::new(40));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let (store, start) = (store.clone(), start.clone());
                let new = NewMessage {
                    id: Uuid::now_v7(),
                    conversation_id: conversation.id,
                    sender_id: user.id,
                    client_msg_id: format!("m{i}"),
                    body: if i == 17 { "poison".into() } else { format!("body {i}") },
                    created_at: now,
                };
                tokio::spawn(async move {
                    start.wait().await;
                    (i, store.insert_message(&new).await)
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for handle in handles {
            match handle.await.expect("task") {
                (17, answer) => {
                    assert!(
                        matches!(&answer, Err(StoreError::Backend(e)) if e.contains("poisoned")),
                        "{answer:?}"
                    )
                }
                (_, answer) => seqs.push(answer.expect("an ordinary send").0.seq),
            }
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=39).collect::<Vec<u64>>());
        let stored = store.messages(conversation.id, None, None, 100).await.expect("page");
        assert_eq!(stored.len(), 39);
        assert!(stored.iter().all(|m| m.body != "poison"));
    }
}
