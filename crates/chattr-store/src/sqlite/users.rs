//! Users and sessions on SQLite.

use chattr_api::v1::User;
use chattr_core::events::Event;
use chattr_core::{SessionId, Timestamp, UserId};

use super::rows::{
    db_id, json_ids, load_session, ms, uuid, SessionRow, UserRow, SESSION_COLUMNS, USER_COLUMNS,
};
use super::{outbox, SqliteStore};
use crate::{RotateOutcome, SessionRecord, StoreError, StoreResult, UserRecord};

/// Ids per `IN (…)` query, well under SQLite's bound-parameter limit.
const IDS_PER_QUERY: usize = 500;

pub(super) async fn create_user(store: &SqliteStore, user: &UserRecord) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    let inserted =
        sqlx::query("INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(db_id(user.id))
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(ms(user.created_at))
            .execute(&mut *tx)
            .await;
    match inserted {
        Ok(_) => {}
        // SQLite names the violated column in the message ("UNIQUE constraint failed:
        // users.username"); a clash on the id is a caller bug, not a taken name.
        Err(sqlx::Error::Database(e))
            if e.is_unique_violation() && e.message().contains("users.username") =>
        {
            return Err(StoreError::Conflict("username"));
        }
        Err(e) => return Err(e.into()),
    }
    let event = Event::UserRegistered { user_id: user.id, username: user.username.clone() };
    outbox::push(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn user_by_username(store: &SqliteStore, username: &str) -> StoreResult<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?");
    let row: Option<UserRow> = sqlx::query_as(&sql).bind(username).fetch_optional(&store.read).await?;
    row.map(UserRow::into_record).transpose()
}

fn public(rows: Vec<(String, String)>) -> StoreResult<Vec<User>> {
    rows.into_iter().map(|(id, username)| Ok(User { id: uuid(&id)?, username })).collect()
}

pub(super) async fn users_by_ids(store: &SqliteStore, ids: &[UserId]) -> StoreResult<Vec<User>> {
    let mut users = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let params = vec!["?"; chunk.len()].join(", ");
        let sql = format!("SELECT id, username FROM users WHERE id IN ({params})");
        let mut query = sqlx::query_as(&sql);
        for id in chunk {
            query = query.bind(db_id(*id));
        }
        let rows: Vec<(String, String)> = query.fetch_all(&store.read).await?;
        users.extend(public(rows)?);
    }
    // A duplicated id split across chunks would come back twice.
    users.sort_by_key(|u| u.id);
    users.dedup_by_key(|u| u.id);
    Ok(users)
}

pub(super) async fn search_users(store: &SqliteStore, prefix: &str, limit: u32) -> StoreResult<Vec<User>> {
    // Not LIKE: it is case-insensitive and treats `%`/`_` as wildcards. The `>=` bound lets
    // the username index start the scan at the prefix; substr() makes the match exact.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, username FROM users \
         WHERE username >= ?1 AND substr(username, 1, length(?1)) = ?1 \
         ORDER BY username LIMIT ?2",
    )
    .bind(prefix)
    .bind(limit)
    .fetch_all(&store.read)
    .await?;
    public(rows)
}

pub(super) async fn create_session(store: &SqliteStore, s: &SessionRecord) -> StoreResult<()> {
    let sql = format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    sqlx::query(&sql)
        .bind(db_id(s.id))
        .bind(db_id(s.user_id))
        .bind(&s.refresh_hash)
        .bind(ms(s.refresh_expires_at))
        .bind(&s.user_agent)
        .bind(ms(s.created_at))
        .bind(ms(s.last_seen_at))
        .bind(s.revoked)
        .execute(&store.write)
        .await?;
    Ok(())
}

pub(super) async fn session(store: &SqliteStore, id: SessionId) -> StoreResult<Option<SessionRecord>> {
    let mut conn = store.read.acquire().await?;
    load_session(&mut conn, id).await
}

pub(super) async fn sessions_by_ids(
    store: &SqliteStore,
    ids: &[SessionId],
) -> StoreResult<Vec<SessionRecord>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id IN (SELECT value FROM json_each(?))");
    let rows: Vec<SessionRow> = sqlx::query_as(&sql).bind(json_ids(ids)?).fetch_all(&store.read).await?;
    rows.into_iter().map(SessionRow::into_record).collect()
}

pub(super) async fn rotate_refresh(
    store: &SqliteStore,
    id: SessionId,
    presented_hash: &str,
    new_hash: &str,
    new_expires_at: Timestamp,
    now: Timestamp,
) -> StoreResult<RotateOutcome> {
    let mut tx = store.begin_write().await?;
    let Some(mut session) = load_session(&mut tx, id).await?.filter(|s| !s.revoked) else {
        return Ok(RotateOutcome::Invalid);
    };
    let (rotated,): (String,) = sqlx::query_as("SELECT rotated_refresh_hashes FROM sessions WHERE id = ?")
        .bind(db_id(id))
        .fetch_one(&mut *tx)
        .await?;
    if session.refresh_hash != presented_hash {
        if !rotated.split(' ').any(|h| h == presented_hash) {
            return Ok(RotateOutcome::Invalid);
        }
        // A token that was already rotated away is being replayed: treat the session as
        // stolen and kill it.
        revoke(&mut tx, session.user_id, id).await?;
        tx.commit().await?;
        return Ok(RotateOutcome::Reused);
    }
    if session.refresh_expires_at <= now {
        return Ok(RotateOutcome::Invalid);
    }
    let kept: Vec<&str> = std::iter::once(session.refresh_hash.as_str())
        .chain(rotated.split(' ').filter(|h| !h.is_empty()))
        .take(crate::ROTATED_KEEP)
        .collect();
    sqlx::query(
        "UPDATE sessions SET refresh_hash = ?, refresh_expires_at = ?, last_seen_at = ?, \
         rotated_refresh_hashes = ? WHERE id = ?",
    )
    .bind(new_hash)
    .bind(ms(new_expires_at))
    .bind(ms(now))
    .bind(kept.join(" "))
    .bind(db_id(id))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    session.refresh_hash = new_hash.to_owned();
    session.refresh_expires_at = new_expires_at;
    session.last_seen_at = now;
    Ok(RotateOutcome::Rotated(session))
}

pub(super) async fn touch_sessions(
    store: &SqliteStore,
    ids: &[SessionId],
    now: Timestamp,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE sessions SET last_seen_at = ? WHERE id IN (SELECT value FROM json_each(?)) AND revoked = 0",
    )
    .bind(ms(now))
    .bind(json_ids(ids)?)
    .execute(&store.write)
    .await?;
    Ok(())
}

pub(super) async fn list_sessions(store: &SqliteStore, user_id: UserId) -> StoreResult<Vec<SessionRecord>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ? AND revoked = 0 \
         ORDER BY created_at DESC, id DESC"
    );
    let rows: Vec<SessionRow> = sqlx::query_as(&sql).bind(db_id(user_id)).fetch_all(&store.read).await?;
    rows.into_iter().map(SessionRow::into_record).collect()
}

/// Marks a session revoked and records `session.revoked`, inside the caller's transaction.
async fn revoke(conn: &mut sqlx::SqliteConnection, user_id: UserId, id: SessionId) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET revoked = 1 WHERE id = ?").bind(db_id(id)).execute(&mut *conn).await?;
    outbox::push(conn, &Event::SessionRevoked { user_id, session_id: id }).await
}

pub(super) async fn revoke_session(store: &SqliteStore, user_id: UserId, id: SessionId) -> StoreResult<bool> {
    let mut tx = store.begin_write().await?;
    let live: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sessions WHERE id = ? AND user_id = ? AND revoked = 0")
            .bind(db_id(id))
            .bind(db_id(user_id))
            .fetch_optional(&mut *tx)
            .await?;
    if live.is_none() {
        return Ok(false);
    }
    revoke(&mut tx, user_id, id).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn revoke_other_sessions(
    store: &SqliteStore,
    user_id: UserId,
    keep: SessionId,
) -> StoreResult<Vec<SessionId>> {
    let mut tx = store.begin_write().await?;
    // Same order as list_sessions (newest first) so events come out deterministically.
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = ? AND revoked = 0 AND id <> ? \
         ORDER BY created_at DESC, id DESC",
    )
    .bind(db_id(user_id))
    .bind(db_id(keep))
    .fetch_all(&mut *tx)
    .await?;
    let mut revoked = Vec::with_capacity(others.len());
    for id in others {
        let id = uuid(&id)?;
        revoke(&mut tx, user_id, id).await?;
        revoked.push(id);
    }
    tx.commit().await?;
    Ok(revoked)
}
