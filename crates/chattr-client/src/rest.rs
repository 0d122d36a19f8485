//! [`Client`]: the REST side, holding tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chattr_api::v1::*;
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::{ClientError, ClientResult, Connection};

/// A Chattr REST client for one account. Cheap to clone (shares tokens).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Every gateway this client may use; `current` indexes the one in use. A gateway that
    /// refuses connections is left for the next (failover), round the list.
    servers: Arc<[url::Url]>,
    current: Arc<AtomicUsize>,
    session: Arc<Mutex<Option<AuthResponse>>>,
    /// One refresh at a time: two concurrent refreshes with the same token would look like
    /// token theft to the server and revoke the session.
    refreshing: Arc<tokio::sync::Mutex<()>>,
    on_tokens: Arc<Mutex<Option<TokenListener>>>,
}

/// Called with every new token pair (e.g. to save it to disk).
pub type TokenListener = Arc<dyn Fn(&AuthResponse) + Send + Sync>;

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> ClientResult<Self> {
        Self::with_servers(&[base])
    }

    /// A client for a deployment with several gateways: it uses the first and fails over
    /// to the next whenever the one in use cannot be reached (requests that never reached
    /// a server are retried on the next one; sockets reconnect there).
    pub fn with_servers(bases: &[&str]) -> ClientResult<Self> {
        let servers = bases
            .iter()
            .map(|b| url::Url::parse(b).map_err(|e| ClientError::Transport(format!("bad url {b:?}: {e}"))))
            .collect::<ClientResult<Vec<_>>>()?;
        if servers.is_empty() {
            return Err(ClientError::Transport("no server url given".to_owned()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("chattr-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            servers: servers.into(),
            current: Arc::new(AtomicUsize::new(0)),
            session: Arc::new(Mutex::new(None)),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
            on_tokens: Arc::new(Mutex::new(None)),
        })
    }

    /// The base URL of the server in use.
    pub fn base(&self) -> &url::Url {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Moves on to the next server after `failed` could not be reached (unless another
    /// task already did).
    fn fail_over(&self, failed: &url::Url) {
        let now = self.current.load(Ordering::Relaxed);
        if self.servers.len() > 1 && &self.servers[now % self.servers.len()] == failed {
            let _ = self.current.compare_exchange(now, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The current tokens, if signed in.
    pub fn auth(&self) -> Option<AuthResponse> {
        self.session.lock().clone()
    }

    /// Uses tokens obtained elsewhere (e.g. saved by the CLI).
    pub fn set_auth(&self, auth: AuthResponse) {
        *self.session.lock() = Some(auth);
    }

    /// Calls `listener` with every token pair obtained from now on (login, refresh).
    pub fn on_tokens(&self, listener: TokenListener) {
        *self.on_tokens.lock() = Some(listener);
    }

    /// The signed-in user.
    pub fn me(&self) -> ClientResult<User> {
        self.auth().map(|a| a.user).ok_or(ClientError::NotSignedIn)
    }

    fn access_token(&self) -> Option<String> {
        self.session.lock().as_ref().map(|a| a.access_token.clone())
    }

    /// Sends a request and decodes the JSON answer; returns the status too.
    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<(StatusCode, T)> {
        let (status, bytes) = self
            .request_raw(
                method,
                path,
                body.map(serde_json::to_vec)
                    .transpose()
                    .map_err(|e| ClientError::Transport(e.to_string()))?,
            )
            .await?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Transport(format!("decoding {path}: {e}")))?;
        Ok((status, value))
    }

    /// Sends raw body bytes (tests use it for malformed input); returns status and body.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> ClientResult<(StatusCode, Vec<u8>)> {
        // A request that could not connect never reached a server: try the next one (each
        // server once). Anything else is answered by the caller.
        let mut attempts = self.servers.len();
        let resp = loop {
            let base = self.base().clone();
            let url = base.join(path).map_err(|e| ClientError::Transport(e.to_string()))?;
            let mut req = self.http.request(method.clone(), url);
            if let Some(token) = self.access_token() {
                req = req.bearer_auth(token);
            }
            if let Some(body) = &body {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            match req.send().await {
                Ok(resp) => break resp,
                Err(e) if e.is_connect() && attempts > 1 => {
                    attempts -= 1;
                    self.fail_over(&base);
                }
                Err(e) => {
                    if e.is_connect() {
                        self.fail_over(&base);
                    }
                    return Err(ClientError::Transport(e.to_string()));
                }
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?.to_vec();
        if status.is_client_error() || status.is_server_error() {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
                code: "unknown".to_owned(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
                retry_after,
            });
        }
        Ok((status, bytes))
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<T> {
        Ok(self.request(method, path, body).await?.1)
    }

    async fn call_empty<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<()> {
        let body =
            body.map(serde_json::to_vec).transpose().map_err(|e| ClientError::Transport(e.to_string()))?;
        self.request_raw(method, path, body).await.map(|_| ())
    }

    fn keep(&self, auth: AuthResponse) -> AuthResponse {
        *self.session.lock() = Some(auth.clone());
        let listener = self.on_tokens.lock().clone();
        if let Some(listener) = listener {
            listener(&auth);
        }
        auth
    }

    /// Creates an account and signs in.
    pub async fn signup(&self, username: &str, password: &str) -> ClientResult<AuthResponse> {
        let creds = Credentials { username: username.to_owned(), password: password.to_owned() };
        let auth = self.call(Method::POST, "/v1/auth/signup", Some(&creds)).await?;
        Ok(self.keep(auth))
    }

    /// Signs in.
    pub async fn login(&self, username: &str, password: &str) -> ClientResult<AuthResponse> {
        let creds = Credentials { username: username.to_owned(), password: password.to_owned() };
        let auth = self.call(Method::POST, "/v1/auth/login", Some(&creds)).await?;
        Ok(self.keep(auth))
    }

    /// Rotates the tokens with the current refresh token.
    pub async fn refresh(&self) -> ClientResult<AuthResponse> {
        let _one_at_a_time = self.refreshing.lock().await;
        let token = self.auth().ok_or(ClientError::NotSignedIn)?.refresh_token;
        self.refresh_with(&token).await
    }

    /// Rotates tokens with an explicit refresh token.
    pub async fn refresh_with(&self, refresh_token: &str) -> ClientResult<AuthResponse> {
        let req = RefreshRequest { refresh_token: refresh_token.to_owned() };
        let auth = self.call(Method::POST, "/v1/auth/refresh", Some(&req)).await?;
        Ok(self.keep(auth))
    }

    /// Signs out (revokes this session).
    pub async fn logout(&self) -> ClientResult<()> {
        self.call_empty::<()>(Method::POST, "/v1/auth/logout", None).await?;
        *self.session.lock() = None;
        Ok(())
    }

    /// The account's live sessions.
    pub async fn sessions(&self) -> ClientResult<Vec<SessionInfo>> {
        Ok(self.call::<(), SessionList>(Method::GET, "/v1/auth/sessions", None).await?.sessions)
    }

    /// Revokes one session.
    pub async fn revoke_session(&self, id: Uuid) -> ClientResult<()> {
        self.call_empty::<()>(Method::DELETE, &format!("/v1/auth/sessions/{id}"), None).await
    }

    /// Revokes every other session.
    pub async fn revoke_other_sessions(&self) -> ClientResult<u32> {
        let v: serde_json::Value = self.call::<(), _>(Method::DELETE, "/v1/auth/sessions", None).await?;
        Ok(v.get("revoked").and_then(|n| n.as_u64()).unwrap_or(0) as u32)
    }

    /// Users by username prefix.
    pub async fn search_users(&self, prefix: &str) -> ClientResult<Vec<User>> {
        let mut url =
            url::Url::parse("http://x/v1/users").map_err(|e| ClientError::Transport(e.to_string()))?;
        url.query_pairs_mut().append_pair("prefix", prefix);
        let path = format!("/v1/users?{}", url.query().unwrap_or_default());
        Ok(self.call::<(), UserList>(Method::GET, &path, None).await?.users)
    }

    /// Presence of users sharing a conversation with the caller.
    pub async fn presence(&self, users: &[Uuid]) -> ClientResult<Vec<Presence>> {
        let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
        let path = format!("/v1/presence?user_ids={}", ids.join(","));
        Ok(self.call::<(), PresenceList>(Method::GET, &path, None).await?.presence)
    }

    /// Opens (or returns the existing) direct conversation with a user.
    pub async fn direct(&self, other: Uuid) -> ClientResult<Conversation> {
        let req = CreateConversation { kind: ConversationKind::Direct, members: vec![other], title: None };
        self.call(Method::POST, "/v1/conversations", Some(&req)).await
    }

    /// Creates a group.
    pub async fn group(&self, title: &str, members: &[Uuid]) -> ClientResult<Conversation> {
        let req = CreateConversation {
            kind: ConversationKind::Group,
            members: members.to_vec(),
            title: Some(title.to_owned()),
        };
        self.call(Method::POST, "/v1/conversations", Some(&req)).await
    }

    /// The caller's conversations.
    pub async fn conversations(&self) -> ClientResult<Vec<Conversation>> {
        Ok(self.call::<(), ConversationList>(Method::GET, "/v1/conversations", None).await?.conversations)
    }

    /// One conversation.
    pub async fn conversation(&self, id: Uuid) -> ClientResult<Conversation> {
        self.call::<(), _>(Method::GET, &format!("/v1/conversations/{id}"), None).await
    }

    /// Renames a group.
    pub async fn rename(&self, id: Uuid, title: &str) -> ClientResult<Conversation> {
        let req = UpdateConversation { title: title.to_owned() };
        self.call(Method::PATCH, &format!("/v1/conversations/{id}"), Some(&req)).await
    }

    /// Adds a member to a group.
    pub async fn add_member(&self, id: Uuid, user: Uuid) -> ClientResult<Conversation> {
        self.call(
            Method::POST,
            &format!("/v1/conversations/{id}/members"),
            Some(&AddMember { user_id: user }),
        )
        .await
    }

    /// Removes a member (or leaves, with one's own id).
    pub async fn remove_member(&self, id: Uuid, user: Uuid) -> ClientResult<()> {
        self.call_empty::<()>(Method::DELETE, &format!("/v1/conversations/{id}/members/{user}"), None).await
    }

    /// Sends a message; the bool is true when it was new (201), false for a repeat (200).
    pub async fn send(&self, id: Uuid, client_msg_id: &str, body: &str) -> ClientResult<(Message, bool)> {
        let req = SendMessage { client_msg_id: client_msg_id.to_owned(), body: body.to_owned() };
        let (status, message) =
            self.request(Method::POST, &format!("/v1/conversations/{id}/messages"), Some(&req)).await?;
        Ok((message, status == StatusCode::CREATED))
    }

    /// A page of history.
    pub async fn history(
        &self,
        id: Uuid,
        after: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> ClientResult<Vec<Message>> {
        let mut q = Vec::new();
        if let Some(a) = after {
            q.push(format!("after_seq={a}"));
        }
        if let Some(b) = before {
            q.push(format!("before_seq={b}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = format!("/v1/conversations/{id}/messages?{}", q.join("&"));
        Ok(self.call::<(), MessageList>(Method::GET, &path, None).await?.messages)
    }

    /// Edits a message.
    pub async fn edit(&self, id: Uuid, message_id: Uuid, body: &str) -> ClientResult<Message> {
        let req = EditMessage { body: body.to_owned() };
        self.call(Method::PATCH, &format!("/v1/conversations/{id}/messages/{message_id}"), Some(&req)).await
    }

    /// Deletes a message.
    pub async fn delete(&self, id: Uuid, message_id: Uuid) -> ClientResult<Message> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/conversations/{id}/messages/{message_id}"), None)
            .await
    }

    /// Marks read up to `seq`; returns the read position.
    pub async fn mark_read(&self, id: Uuid, seq: u64) -> ClientResult<u64> {
        let r: MarkRead =
            self.call(Method::POST, &format!("/v1/conversations/{id}/read"), Some(&MarkRead { seq })).await?;
        Ok(r.seq)
    }

    /// Opens a raw WebSocket and authenticates with `cursors`; returns after `ready`.
    pub async fn connect(
        &self,
        cursors: std::collections::BTreeMap<Uuid, u64>,
    ) -> ClientResult<(Connection, ServerFrame)> {
        self.connect_from(cursors, None).await
    }

    /// Like [`Client::connect`], from the local address `local` if given.
    pub async fn connect_from(
        &self,
        cursors: std::collections::BTreeMap<Uuid, u64>,
        local: Option<std::net::IpAddr>,
    ) -> ClientResult<(Connection, ServerFrame)> {
        let token = self.access_token().ok_or(ClientError::NotSignedIn)?;
        let base = self.base().clone();
        let opened = match local {
            Some(local) => Connection::open_from(&base, local).await,
            None => Connection::open(&base).await,
        };
        let mut conn = match opened {
            Ok(conn) => conn,
            Err(e) => {
                // The next attempt (Live reconnects with backoff) goes to the next server.
                self.fail_over(&base);
                return Err(e);
            }
        };
        conn.send(&ClientFrame::Auth { token, cursors }).await?;
        let ready = conn.next().await?;
        match ready {
            ServerFrame::Ready { .. } => Ok((conn, ready)),
            ServerFrame::Error { code, message, .. } => {
                Err(ClientError::Api { status: 0, code, message, retry_after: None })
            }
            other => Err(ClientError::Transport(format!("expected ready, got {other:?}"))),
        }
    }
}
