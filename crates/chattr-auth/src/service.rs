//! [`Auth`]: the in-process implementation of the auth service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chattr_api::v1::{AuthResponse, Credentials, SessionInfo, User};
use chattr_cache::{DynCache, RateDecision, RateLimit};
use chattr_core::{new_id, now, Password, SessionId, UserId, Username};
use chattr_proto::auth::{AuthError, AuthService, ClientInfo};
use chattr_proto::Principal;
use chattr_store::{DynStore, RotateOutcome, SessionRecord, StoreError, UserRecord};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::metrics as m;
use crate::password::Hasher;
use crate::tokens::{new_refresh_token, parse_refresh_token, TokenKeys};
use crate::AuthSettings;

/// The auth service over a store and a cache.
pub struct Auth {
    store: DynStore,
    cache: DynCache,
    keys: TokenKeys,
    hasher: Hasher,
    settings: AuthSettings,
    /// Poked after writes that add outbox rows, so the relay publishes them promptly.
    outbox: Arc<Notify>,
}

fn internal(e: StoreError) -> AuthError {
    match e {
        StoreError::Unavailable(why) => AuthError::Unavailable(why),
        other => AuthError::Internal(other.to_string()),
    }
}

/// Cache failures mean Redis is unreachable or timing out: retryable.
fn cache_down(e: chattr_cache::CacheError) -> AuthError {
    AuthError::Unavailable(e.to_string())
}

fn store_user_agent(client: &ClientInfo) -> Option<String> {
    // Bounded: a user agent is shown in the session list, not stored unbounded.
    client.user_agent.as_ref().map(|ua| ua.chars().take(256).collect())
}

impl Auth {
    /// Builds the service. Hashing parameters are checked here.
    pub fn new(
        store: DynStore,
        cache: DynCache,
        keys: TokenKeys,
        settings: AuthSettings,
        outbox: Arc<Notify>,
    ) -> Result<Self, AuthError> {
        let hasher = Hasher::new(settings.argon2_memory_kib, settings.argon2_iterations)?;
        Ok(Self { store, cache, keys, hasher, settings, outbox })
    }

    /// Rotates a refresh token (the body of [`AuthService::refresh`]).
    async fn rotate(&self, refresh_token: &str, _client: ClientInfo) -> Result<AuthResponse, AuthError> {
        let (session_id, presented_hash) =
            parse_refresh_token(refresh_token).ok_or(AuthError::InvalidRefreshToken)?;
        let (new_token, new_hash) = new_refresh_token(session_id);
        let now = now();
        let outcome = self
            .store
            .rotate_refresh(session_id, &presented_hash, &new_hash, now + self.settings.refresh_ttl(), now)
            .await
            .map_err(internal)?;
        match outcome {
            RotateOutcome::Rotated(session) => {
                let users = self.store.users_by_ids(&[session.user_id]).await.map_err(internal)?;
                let user = users.into_iter().next().ok_or(AuthError::InvalidRefreshToken)?;
                Ok(self.tokens(user, session_id, new_token))
            }
            RotateOutcome::Reused => {
                self.outbox.notify_one();
                warn!(session_id = %session_id, "refresh token reused, session revoked");
                metrics::counter!(m::REFRESH_REUSE).increment(1);
                Err(AuthError::InvalidRefreshToken)
            }
            RotateOutcome::Invalid => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// The session of `who` if it is live (not revoked, theirs).
    async fn live_session(&self, who: Principal) -> Result<SessionRecord, AuthError> {
        match self.store.session(who.session_id).await.map_err(internal)? {
            Some(s) if !s.revoked && s.user_id == who.user_id => Ok(s),
            _ => Err(AuthError::Unauthorized),
        }
    }

    /// Writes the sessions' last-seen time where it is older than `last_seen_every_secs`:
    /// in a reconnect storm most sessions were seen a moment ago, and a write per socket
    /// would queue every connection behind the database's writer. One write for all.
    async fn mark_seen<'a>(
        &self,
        sessions: impl IntoIterator<Item = &'a SessionRecord>,
    ) -> Result<(), AuthError> {
        let now = now();
        let every = i64::try_from(self.settings.last_seen_every_secs)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .unwrap_or(chrono::TimeDelta::MAX);
        let due: Vec<SessionId> = sessions
            .into_iter()
            .filter(|s| now.signed_duration_since(s.last_seen_at) >= every)
            .map(|s| s.id)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.store.touch_sessions(&due, now).await.map_err(internal)
    }

    async fn limit(&self, key: String, burst: u32, period: Duration) -> Result<(), AuthError> {
        let decision = self.cache.rate_limit(&key, RateLimit { burst, period }).await.map_err(cache_down)?;
        match decision {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => {
                metrics::counter!(m::RATE_LIMITED, "bucket" => bucket_of(&key)).increment(1);
                Err(AuthError::RateLimited { retry_after })
            }
        }
    }

    /// Opens a session for a user and returns the token pair.
    async fn open_session(&self, user: User, client: &ClientInfo) -> Result<AuthResponse, AuthError> {
        let session_id = new_id();
        let (refresh_token, refresh_hash) = new_refresh_token(session_id);
        let now = now();
        let record = SessionRecord {
            id: session_id,
            user_id: user.id,
            refresh_hash,
            refresh_expires_at: now + self.settings.refresh_ttl(),
            user_agent: store_user_agent(client),
            created_at: now,
            last_seen_at: now,
            revoked: false,
        };
        self.store.create_session(&record).await.map_err(internal)?;
        Ok(self.tokens(user, session_id, refresh_token))
    }

    fn tokens(&self, user: User, session_id: SessionId, refresh_token: String) -> AuthResponse {
        let who = Principal { user_id: user.id, session_id };
        let access_token =
            self.keys.issue(who, chrono::Utc::now().timestamp(), self.settings.access_ttl_secs);
        AuthResponse {
            user,
            access_token,
            refresh_token,
            session_id,
            expires_in: self.settings.access_ttl_secs,
        }
    }
}

fn bucket_of(key: &str) -> &'static str {
    if key.starts_with("login:user:") {
        "login_user"
    } else if key.starts_with("login:ip:") {
        "login_ip"
    } else {
        "signup_ip"
    }
}

#[async_trait]
impl AuthService for Auth {
    async fn signup(&self, creds: Credentials, client: ClientInfo) -> Result<AuthResponse, AuthError> {
        let username = Username::parse(&creds.username)?;
        let password = Password::parse(&creds.password)?;
        if let Some(ip) = client.ip {
            self.limit(
                format!("signup:ip:{ip}"),
                self.settings.signup_per_ip_per_hour,
                Duration::from_secs(3600),
            )
            .await?;
        }
        let password_hash = self.hasher.hash(password.expose().to_owned()).await?;
        let record = UserRecord {
            id: new_id(),
            username: username.as_str().to_owned(),
            password_hash,
            created_at: now(),
        };
        match self.store.create_user(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::UsernameTaken),
            Err(e) => return Err(internal(e)),
        }
        self.outbox.notify_one();
        metrics::counter!(m::SIGNUPS).increment(1);
        info!(user_id = %record.id, "user signed up");
        self.open_session(User { id: record.id, username: record.username }, &client).await
    }

    async fn login(&self, creds: Credentials, client: ClientInfo) -> Result<AuthResponse, AuthError> {
        // Rate limit before any lookup, so a limited caller learns nothing about the account.
        let per_minute = Duration::from_secs(60);
        if let Some(ip) = client.ip {
            self.limit(format!("login:ip:{ip}"), self.settings.login_per_ip_per_minute, per_minute).await?;
        }
        // Key by the normalised name so case variants share the bucket; invalid names are
        // checked like unknown ones (no early, faster answer).
        let name_key: String = creds.username.chars().take(64).collect::<String>().to_lowercase();
        self.limit(format!("login:user:{name_key}"), self.settings.login_per_username_per_minute, per_minute)
            .await?;
        let record = match Username::parse(&creds.username) {
            Ok(name) => self.store.user_by_username(name.as_str()).await.map_err(internal)?,
            Err(_) => None,
        };
        let phc = record.as_ref().map(|r| r.password_hash.clone());
        let password: String = creds.password.chars().take(1024).collect();
        let ok = self.hasher.verify(password, phc).await?;
        let Some(record) = record.filter(|_| ok) else {
            metrics::counter!(m::ATTEMPTS, "result" => "failure").increment(1);
            return Err(AuthError::InvalidCredentials);
        };
        metrics::counter!(m::ATTEMPTS, "result" => "success").increment(1);
        self.open_session(User { id: record.id, username: record.username }, &client).await
    }

    async fn refresh(&self, refresh_token: &str, client: ClientInfo) -> Result<AuthResponse, AuthError> {
        let out = self.rotate(refresh_token, client).await;
        let result = if out.is_ok() { "success" } else { "failure" };
        metrics::counter!(m::REFRESHES, "result" => result).increment(1);
        out
    }

    async fn logout(&self, who: Principal) -> Result<(), AuthError> {
        self.revoke_session(who, who.session_id).await
    }

    async fn authenticate(&self, access_token: &str) -> Result<Principal, AuthError> {
        let who = self.keys.verify(access_token).ok_or(AuthError::Unauthorized)?;
        // A revoked session's tokens stop working at once, not when they expire.
        let session = self.live_session(who).await?;
        // Every authenticated request and connection marks its session seen.
        if let Err(e) = self.mark_seen([&session]).await {
            warn!(error = %e, "marking the session seen failed");
        }
        Ok(who)
    }

    async fn authenticate_many(&self, access_tokens: &[String]) -> Result<Vec<Option<Principal>>, AuthError> {
        let claimed: Vec<Option<Principal>> = access_tokens.iter().map(|t| self.keys.verify(t)).collect();
        let ids: Vec<SessionId> = claimed.iter().flatten().map(|w| w.session_id).collect();
        if ids.is_empty() {
            return Ok(claimed);
        }
        // One read for every session, as `authenticate` does for one.
        let live: HashMap<SessionId, SessionRecord> = self
            .store
            .sessions_by_ids(&ids)
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|s| !s.revoked)
            .map(|s| (s.id, s))
            .collect();
        if let Err(e) = self.mark_seen(live.values()).await {
            warn!(error = %e, sessions = live.len(), "marking sessions seen failed");
        }
        Ok(claimed
            .into_iter()
            .map(|c| c.filter(|w| live.get(&w.session_id).is_some_and(|s| s.user_id == w.user_id)))
            .collect())
    }

    async fn check_session(&self, who: Principal) -> Result<(), AuthError> {
        self.live_session(who).await.map(|_| ())
    }

    async fn check_sessions(&self, who: &[Principal]) -> Result<Vec<bool>, AuthError> {
        let ids: Vec<SessionId> = who.iter().map(|w| w.session_id).collect();
        let found = self.store.sessions_by_ids(&ids).await.map_err(internal)?;
        let live: std::collections::HashMap<SessionId, UserId> =
            found.into_iter().filter(|s| !s.revoked).map(|s| (s.id, s.user_id)).collect();
        Ok(who.iter().map(|w| live.get(&w.session_id) == Some(&w.user_id)).collect())
    }

    async fn touch(&self, who: Principal) -> Result<(), AuthError> {
        let session = self.live_session(who).await?;
        self.mark_seen([&session]).await
    }

    async fn user(&self, id: UserId) -> Result<User, AuthError> {
        let users = self.store.users_by_ids(&[id]).await.map_err(internal)?;
        users.into_iter().next().ok_or(AuthError::NotFound)
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>, AuthError> {
        self.store.users_by_ids(ids).await.map_err(internal)
    }

    async fn sessions(&self, who: Principal) -> Result<Vec<SessionInfo>, AuthError> {
        let sessions = self.store.list_sessions(who.user_id).await.map_err(internal)?;
        Ok(sessions
            .into_iter()
            .map(|s| SessionInfo {
                id: s.id,
                user_agent: s.user_agent,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                current: s.id == who.session_id,
            })
            .collect())
    }

    async fn revoke_session(&self, who: Principal, id: SessionId) -> Result<(), AuthError> {
        if self.store.revoke_session(who.user_id, id).await.map_err(internal)? {
            self.outbox.notify_one();
            info!(user_id = %who.user_id, session_id = %id, "session revoked");
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    async fn revoke_other_sessions(&self, who: Principal) -> Result<u32, AuthError> {
        let revoked =
            self.store.revoke_other_sessions(who.user_id, who.session_id).await.map_err(internal)?;
        if !revoked.is_empty() {
            self.outbox.notify_one();
        }
        Ok(revoked.len() as u32)
    }

    async fn search_users(&self, _who: Principal, prefix: &str, limit: u32) -> Result<Vec<User>, AuthError> {
        let prefix = prefix.trim().to_lowercase();
        if prefix.is_empty() {
            return Ok(Vec::new());
        }
        let prefix: String = prefix.chars().take(32).collect();
        self.store.search_users(&prefix, limit.clamp(1, 50)).await.map_err(internal)
    }
}
