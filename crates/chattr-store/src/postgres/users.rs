//! Users and sessions on PostgreSQL.

use chattr_api::v1::User;
use chattr_core::events::Event;
use chattr_core::{SessionId, Timestamp, UserId};

use super::rows::{
    id, ids, limit_param, load_session, ms, PgId, SessionRow, UserRow, SESSION_COLUMNS, USER_COLUMNS,
};
use super::{outbox, PostgresStore};
use crate::{RotateOutcome, SessionRecord, StoreError, StoreResult, UserRecord};

/// Name of the unique constraint on `users.username` (see the migration).
const USERNAME_CONSTRAINT: &str = "users_username_key";

pub(super) async fn create_user(store: &PostgresStore, user: &UserRecord) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    let inserted =
        sqlx::query("INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id(user.id))
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(ms(user.created_at))
            .execute(&mut *tx)
            .await;
    match inserted {
        Ok(_) => {}
        // The unique index makes concurrent registrations of one name race-free: the loser
        // waits for the winner's commit and then fails here. A clash on the id is a caller
        // bug, not a taken name, hence the check of the constraint's name.
        Err(sqlx::Error::Database(e))
            if e.is_unique_violation() && e.constraint() == Some(USERNAME_CONSTRAINT) =>
        {
            return Err(StoreError::Conflict("username"));
        }
        Err(e) => return Err(e.into()),
    }
    let event = Event::UserRegistered { user_id: user.id, username: user.username.clone() };
    outbox::push(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn user_by_username(
    store: &PostgresStore,
    username: &str,
) -> StoreResult<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
    let row: Option<UserRow> = sqlx::query_as(&sql).bind(username).fetch_optional(&store.pool).await?;
    row.map(UserRow::into_record).transpose()
}

fn public(rows: Vec<(PgId, String)>) -> Vec<User> {
    rows.into_iter().map(|(id, username)| User { id: id.0, username }).collect()
}

pub(super) async fn users_by_ids(store: &PostgresStore, user_ids: &[UserId]) -> StoreResult<Vec<User>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    // One array parameter, whatever the number of ids; `= ANY` returns each row once.
    let rows: Vec<(PgId, String)> = sqlx::query_as("SELECT id, username FROM users WHERE id = ANY($1)")
        .bind(ids(user_ids))
        .fetch_all(&store.pool)
        .await?;
    Ok(public(rows))
}

/// The smallest string above every string that starts with `prefix` (in code point order,
/// which is the byte order of the "C" collation on UTF-8), or `None` if there is none
/// (empty prefix, or only U+10FFFF characters).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value, skipping the surrogate gap.
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

pub(super) async fn search_users(store: &PostgresStore, prefix: &str, limit: u32) -> StoreResult<Vec<User>> {
    // Not LIKE: `%`/`_` would be wildcards. A range on the "C"-collated username index
    // finds exactly the names with this prefix and stops at its end; starts_with() keeps
    // the match exact even if the bound were ever off.
    let rows: Vec<(PgId, String)> = match prefix_upper_bound(prefix) {
        Some(upper) => {
            sqlx::query_as(
                "SELECT id, username FROM users \
                 WHERE username >= $1 AND username < $2 AND starts_with(username, $1) \
                 ORDER BY username LIMIT $3",
            )
            .bind(prefix)
            .bind(upper)
            .bind(limit_param(limit))
            .fetch_all(&store.pool)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT id, username FROM users WHERE username >= $1 AND starts_with(username, $1) \
                 ORDER BY username LIMIT $2",
            )
            .bind(prefix)
            .bind(limit_param(limit))
            .fetch_all(&store.pool)
            .await?
        }
    };
    Ok(public(rows))
}

pub(super) async fn create_session(store: &PostgresStore, s: &SessionRecord) -> StoreResult<()> {
    let sql = format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
    sqlx::query(&sql)
        .bind(id(s.id))
        .bind(id(s.user_id))
        .bind(&s.refresh_hash)
        .bind(ms(s.refresh_expires_at))
        .bind(&s.user_agent)
        .bind(ms(s.created_at))
        .bind(ms(s.last_seen_at))
        .bind(s.revoked)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn session(
    store: &PostgresStore,
    session_id: SessionId,
) -> StoreResult<Option<SessionRecord>> {
    let mut conn = store.pool.acquire().await?;
    load_session(&mut conn, session_id).await
}

pub(super) async fn sessions_by_ids(
    store: &PostgresStore,
    session_ids: &[SessionId],
) -> StoreResult<Vec<SessionRecord>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ANY($1)");
    let rows: Vec<SessionRow> = sqlx::query_as(&sql).bind(ids(session_ids)).fetch_all(&store.pool).await?;
    rows.into_iter().map(SessionRow::into_record).collect()
}

/// A session row locked for a rotation, with the hashes it rotated away.
#[derive(sqlx::FromRow)]
struct RotatingRow {
    #[sqlx(flatten)]
    session: SessionRow,
    rotated_refresh_hashes: Vec<String>,
}

pub(super) async fn rotate_refresh(
    store: &PostgresStore,
    session_id: SessionId,
    presented_hash: &str,
    new_hash: &str,
    new_expires_at: Timestamp,
    now: Timestamp,
) -> StoreResult<RotateOutcome> {
    let mut tx = store.pool.begin().await?;
    // FOR UPDATE: two refreshes presenting the same token must not both rotate. The second
    // waits, then sees the first one's result and reports a replay.
    let sql =
        format!("SELECT {SESSION_COLUMNS}, rotated_refresh_hashes FROM sessions WHERE id = $1 FOR UPDATE");
    let row: Option<RotatingRow> = sqlx::query_as(&sql).bind(id(session_id)).fetch_optional(&mut *tx).await?;
    let Some(row) = row else {
        return Ok(RotateOutcome::Invalid);
    };
    let rotated = row.rotated_refresh_hashes;
    let mut session = row.session.into_record()?;
    if session.revoked {
        return Ok(RotateOutcome::Invalid);
    }
    if session.refresh_hash != presented_hash {
        if !rotated.iter().any(|h| h == presented_hash) {
            return Ok(RotateOutcome::Invalid);
        }
        // A token that was already rotated away is being replayed: treat the session as
        // stolen and kill it.
        revoke(&mut tx, session.user_id, &[session_id]).await?;
        tx.commit().await?;
        return Ok(RotateOutcome::Reused);
    }
    if session.refresh_expires_at <= now {
        return Ok(RotateOutcome::Invalid);
    }
    let kept: Vec<&str> = std::iter::once(session.refresh_hash.as_str())
        .chain(rotated.iter().map(String::as_str))
        .take(crate::ROTATED_KEEP)
        .collect();
    sqlx::query(
        "UPDATE sessions SET refresh_hash = $1, refresh_expires_at = $2, last_seen_at = $3, \
         rotated_refresh_hashes = $4 WHERE id = $5",
    )
    .bind(new_hash)
    .bind(ms(new_expires_at))
    .bind(ms(now))
    .bind(kept)
    .bind(id(session_id))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    session.refresh_hash = new_hash.to_owned();
    session.refresh_expires_at = new_expires_at;
    session.last_seen_at = now;
    Ok(RotateOutcome::Rotated(session))
}

pub(super) async fn touch_sessions(
    store: &PostgresStore,
    sessions: &[SessionId],
    now: Timestamp,
) -> StoreResult<()> {
    if sessions.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = ANY($2) AND NOT revoked")
        .bind(ms(now))
        .bind(ids(sessions))
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn list_sessions(store: &PostgresStore, user_id: UserId) -> StoreResult<Vec<SessionRecord>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND NOT revoked \
         ORDER BY created_at DESC, id DESC"
    );
    let rows: Vec<SessionRow> = sqlx::query_as(&sql).bind(id(user_id)).fetch_all(&store.pool).await?;
    rows.into_iter().map(SessionRow::into_record).collect()
}

/// Marks sessions (already locked by the caller) revoked and records one
/// `session.revoked` each, in the given order, inside the caller's transaction.
async fn revoke(
    conn: &mut sqlx::PgConnection,
    user_id: UserId,
    session_ids: &[SessionId],
) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET revoked = TRUE WHERE id = ANY($1)")
        .bind(ids(session_ids))
        .execute(&mut *conn)
        .await?;
    let events: Vec<Event> =
        session_ids.iter().map(|&session_id| Event::SessionRevoked { user_id, session_id }).collect();
    outbox::push(conn, &events).await
}

pub(super) async fn revoke_session(
    store: &PostgresStore,
    user_id: UserId,
    session_id: SessionId,
) -> StoreResult<bool> {
    let mut tx = store.pool.begin().await?;
    // The row lock makes "live" still true when we revoke: two concurrent revocations
    // write one event, not two.
    let live: Option<PgId> = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE id = $1 AND user_id = $2 AND NOT revoked FOR UPDATE",
    )
    .bind(id(session_id))
    .bind(id(user_id))
    .fetch_optional(&mut *tx)
    .await?;
    if live.is_none() {
        return Ok(false);
    }
    revoke(&mut tx, user_id, &[session_id]).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn revoke_other_sessions(
    store: &PostgresStore,
    user_id: UserId,
    keep: SessionId,
) -> StoreResult<Vec<SessionId>> {
    let mut tx = store.pool.begin().await?;
    // Same order as list_sessions (newest first) so events come out deterministically.
    // Locking first (all rows, then one UPDATE, then the events) keeps the outbox push the
    // last statement, which its deadlock-freedom argument needs.
    let others: Vec<PgId> = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = $1 AND NOT revoked AND id <> $2 \
         ORDER BY created_at DESC, id DESC FOR UPDATE",
    )
    .bind(id(user_id))
    .bind(id(keep))
    .fetch_all(&mut *tx)
    .await?;
    let revoked: Vec<SessionId> = others.into_iter().map(|i| i.0).collect();
    if revoked.is_empty() {
        return Ok(revoked);
    }
    revoke(&mut tx, user_id, &revoked).await?;
    tx.commit().await?;
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn upper_bound_is_the_next_string_after_the_prefix_range() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("car").as_deref(), Some("cas"));
        assert_eq!(prefix_upper_bound("ca_").as_deref(), Some("ca`"));
        assert_eq!(prefix_upper_bound("a\u{D7FF}").as_deref(), Some("a\u{E000}"), "skips surrogates");
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }
}
