//! Remote clients: [`RemoteAuth`] and [`RemoteMessaging`] implement the service traits
//! over gRPC, so `AuthClient::from_arc(Arc::new(RemoteAuth::new(..)))` is a drop-in for the
//! in-process service.
//!
//! [`Balancer`] spreads calls round-robin over every configured instance of a service.
//! An instance that refuses connections is skipped for a short back-off; a call that never
//! reached an instance is tried on the next one, and so is an idempotent call whose
//! instance died under it. Every call carries a deadline (sent as `grpc-timeout`, enforced
//! on both ends).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chattr_api::v1 as api;
use chattr_core::{ConversationId, MessageId, SessionId, UserId};
use chattr_proto::auth::{AuthError, AuthService, ClientInfo};
use chattr_proto::messaging::{HistoryQuery, LatestSeqsByUser, MessagingError, MessagingService};
use chattr_proto::video::{CallId, VideoError, VideoService};
use chattr_proto::Principal;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::convert as cv;
use crate::pb;
use crate::pb::auth_client::AuthClient as AuthStub;
use crate::pb::messaging_client::MessagingClient as MessagingStub;
use crate::pb::video_client::VideoClient as VideoStub;
use crate::server::TRACEPARENT;
use crate::status::{auth_error, messaging_error, video_error};

/// How long an instance that refused a connection is skipped.
const BACKOFF: Duration = Duration::from_secs(1);

/// Whether a call may run twice (on two instances) without a second effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, and writes made idempotent by a key (`client_msg_id`) or by their nature.
    Idempotent,
    /// Writes that must not repeat (signup, token refresh): retried only when the request
    /// provably never left this process.
    Once,
}

/// Calls in flight at once to one instance, per client process.
const MAX_IN_FLIGHT: usize = 256;

/// Settings of a remote service client.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// Deadline of every call.
    pub deadline: Duration,
    /// Bound on establishing a connection to one instance.
    pub connect_timeout: Duration,
    /// The shared secret the services require of callers (`None`: they require none).
    pub secret: Option<String>,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self { deadline: Duration::from_secs(5), connect_timeout: Duration::from_secs(1), secret: None }
    }
}

/// When an instance was last found down, as nanoseconds since the balancer's base instant
/// (0 = up). Atomic, so the hot path takes no lock.
#[derive(Debug, Default)]
struct DownSince(AtomicU64);

impl DownSince {
    fn mark(&self, base: Instant) {
        let nanos = base.elapsed().as_nanos().max(1) as u64;
        self.0.store(nanos, Ordering::Relaxed);
    }

    fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    fn is_down(&self, base: Instant, backoff: Duration) -> bool {
        let since = self.0.load(Ordering::Relaxed);
        since != 0 && (base.elapsed().as_nanos() as u64).saturating_sub(since) < backoff.as_nanos() as u64
    }
}

struct Instance {
    uri: String,
    channel: Channel,
    down: DownSince,
}

/// Round-robin over the instances of one service, with failover.
pub struct Balancer {
    service: &'static str,
    instances: Vec<Instance>,
    next: AtomicUsize,
    base: Instant,
    stamp: Stamp,
}

impl Balancer {
    /// A balancer over `addrs` (`host:port` or `http://host:port`). Connections are made
    /// lazily, so instances may start after their clients.
    pub fn new(service: &'static str, addrs: &[String], settings: &RemoteSettings) -> Result<Self, String> {
        if addrs.is_empty() {
            return Err(format!("no address given for the {service} service"));
        }
        let mut instances = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let uri = if addr.contains("://") { addr.clone() } else { format!("http://{addr}") };
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("{service} address {addr:?}: {e}"))?
                .connect_timeout(settings.connect_timeout)
                .timeout(settings.deadline)
                // Calls past this wait in this process, not on the instance: a burst (a
                // reconnect storm's ten thousand goodbyes) sent all at once would sit
                // unaccepted on the instance, time out, and be reset, and an HTTP/2
                // server drops a connection whose client resets many streams it has not
                // accepted yet, failing every call on it.
                .concurrency_limit(MAX_IN_FLIGHT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            instances.push(Instance { uri, channel: endpoint.connect_lazy(), down: DownSince::default() });
        }
        let secret = match &settings.secret {
            Some(secret) => Some(
                format!("Bearer {secret}")
                    .parse()
                    .map_err(|_| format!("the {service} service secret must be printable ASCII"))?,
            ),
            None => None,
        };
        let stamp = Stamp { deadline: settings.deadline, secret };
        Ok(Self { service, instances, next: AtomicUsize::new(0), base: Instant::now(), stamp })
    }

    /// Runs `call` on an instance, failing over as the module docs say, and records its
    /// time and outcome.
    pub async fn call<T, F, Fut>(&self, method: &'static str, retry: Retry, call: F) -> Result<T, Status>
    where
        F: Fn(Channel, Stamp) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timed = crate::metrics::Timed::start(
            crate::metrics::CLIENT_SECONDS,
            crate::metrics::client_label(self.service, method),
        );
        let out = self.call_with_failover(method, retry, call).await;
        timed.finish(out.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        out
    }

    async fn call_with_failover<T, F, Fut>(
        &self,
        method: &'static str,
        retry: Retry,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(Channel, Stamp) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Healthy instances first, in round-robin order; then those in back-off, as a last
        // resort (they may have come back).
        let order = (0..n)
            .map(|i| (start + i) % n)
            .filter(|&i| !self.instances[i].down.is_down(self.base, BACKOFF))
            .chain(
                (0..n)
                    .map(|i| (start + i) % n)
                    .filter(|&i| self.instances[i].down.is_down(self.base, BACKOFF)),
            );
        let mut last = None;
        for i in order {
            let instance = &self.instances[i];
            match call(instance.channel.clone(), self.stamp.clone()).await {
                Ok(response) => {
                    instance.down.clear();
                    return Ok(response.into_inner());
                }
                Err(status) => {
                    let unreached = never_sent(&status);
                    let died = died_mid_call(&status);
                    if unreached || died || timed_out(&status) {
                        instance.down.mark(self.base);
                        tracing::warn!(service = self.service, method, instance = %instance.uri, error = %status.message(), "instance unavailable");
                    }
                    if unreached || (died && retry == Retry::Idempotent) {
                        last = Some(status);
                        continue;
                    }
                    return Err(status);
                }
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable(format!("no {} instance reachable", self.service))))
    }
}

/// What every request of a balancer carries: its deadline (sent as `grpc-timeout`), the
/// service secret if one is set, and the caller's trace context (`traceparent`).
#[derive(Clone)]
pub struct Stamp {
    deadline: Duration,
    secret: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Stamp {
    /// `message` as a request with everything attached.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(secret) = &self.secret {
            request.metadata_mut().insert("authorization", secret.clone());
        }
        if let Some(traceparent) = chattr_core::trace::outgoing().and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert(TRACEPARENT, traceparent);
        }
        request
    }
}

fn has_chattr_code(status: &Status) -> bool {
    status.metadata().contains_key(crate::status::CODE_KEY)
}

/// Whether the instance failed under a call that may have reached it: the connection
/// broke (tonic reports a broken HTTP/2 connection as `Unknown`, a closed one as
/// `Unavailable`). A status with a Chattr code is the service's own answer, never this.
fn died_mid_call(status: &Status) -> bool {
    !has_chattr_code(status) && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
}

/// Whether the call ran out of its deadline on this side: the instance is not answering
/// (it is marked down, but the call is not repeated: that would double its latency).
fn timed_out(status: &Status) -> bool {
    !has_chattr_code(status)
        && matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded)
}

/// Whether the request never reached the server: the connection could not be made.
fn never_sent(status: &Status) -> bool {
    if status.code() != tonic::Code::Unavailable || has_chattr_code(status) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::NotFound
            ) {
                return true;
            }
        }
        if err.to_string().contains("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}

/// One remote call: builds the request, calls with failover (see [`Balancer::call`]) and
/// turns a failure into the service's error; evaluates to the reply message.
macro_rules! remote_call {
    ($self:ident, $stub:ident, $error:path, $method:ident, $retry:expr, $msg:expr) => {{
        let msg = $msg;
        let out = $self
            .0
            .call(stringify!($method), $retry, |ch, d| {
                let msg = msg.clone();
                async move { $stub::new(ch).$method(d.request(msg)).await }
            })
            .await;
        decode(out, $error)?
    }};
}

/// The auth service over gRPC.
pub struct RemoteAuth(Balancer);

impl RemoteAuth {
    /// A client of the auth instances at `addrs`.
    pub fn new(addrs: &[String], settings: &RemoteSettings) -> Result<Self, String> {
        Balancer::new("auth", addrs, settings).map(Self)
    }
}

fn decode<T, E>(result: Result<T, Status>, err: fn(&Status) -> E) -> Result<T, E> {
    result.map_err(|s| err(&s))
}

fn auth_decode<T>(value: Result<T, Status>) -> Result<T, AuthError> {
    value.map_err(|s| AuthError::Internal(format!("malformed reply: {}", s.message())))
}

#[async_trait]
impl AuthService for RemoteAuth {
    async fn signup(
        &self,
        creds: api::Credentials,
        client: ClientInfo,
    ) -> Result<api::AuthResponse, AuthError> {
        let msg = credentials(creds, client);
        auth_decode(cv::auth_response_from(remote_call!(
            self,
            AuthStub,
            auth_error,
            signup,
            Retry::Once,
            msg
        )))
    }

    async fn login(
        &self,
        creds: api::Credentials,
        client: ClientInfo,
    ) -> Result<api::AuthResponse, AuthError> {
        let msg = credentials(creds, client);
        auth_decode(cv::auth_response_from(remote_call!(self, AuthStub, auth_error, login, Retry::Once, msg)))
    }

    async fn refresh(&self, refresh_token: &str, client: ClientInfo) -> Result<api::AuthResponse, AuthError> {
        let msg = pb::RefreshRequest {
            refresh_token: refresh_token.to_owned(),
            client: Some(cv::client_info(client)),
        };
        // Never repeated once it may have arrived: a second rotation looks like token theft.
        auth_decode(cv::auth_response_from(remote_call!(
            self,
            AuthStub,
            auth_error,
            refresh,
            Retry::Once,
            msg
        )))
    }

    async fn logout(&self, who: Principal) -> Result<(), AuthError> {
        remote_call!(self, AuthStub, auth_error, logout, Retry::Idempotent, cv::principal(who));
        Ok(())
    }

    async fn authenticate(&self, access_token: &str) -> Result<Principal, AuthError> {
        let msg = pb::AuthenticateRequest { access_token: access_token.to_owned() };
        auth_decode(cv::principal_from(&remote_call!(
            self,
            AuthStub,
            auth_error,
            authenticate,
            Retry::Idempotent,
            msg
        )))
    }

    async fn authenticate_many(&self, access_tokens: &[String]) -> Result<Vec<Option<Principal>>, AuthError> {
        let msg = pb::AuthenticateManyRequest { access_tokens: access_tokens.to_vec() };
        let out = remote_call!(self, AuthStub, auth_error, authenticate_many, Retry::Idempotent, msg);
        if out.answers.len() != access_tokens.len() {
            return Err(AuthError::Internal(format!(
                "malformed reply: {} answers for {} tokens",
                out.answers.len(),
                access_tokens.len()
            )));
        }
        auth_decode(
            out.answers.iter().map(|a| a.principal.as_ref().map(cv::principal_from).transpose()).collect(),
        )
    }

    async fn check_session(&self, who: Principal) -> Result<(), AuthError> {
        remote_call!(self, AuthStub, auth_error, check_session, Retry::Idempotent, cv::principal(who));
        Ok(())
    }

    async fn check_sessions(&self, who: &[Principal]) -> Result<Vec<bool>, AuthError> {
        let msg = pb::PrincipalList { principals: who.iter().map(|w| cv::principal(*w)).collect() };
        let out = remote_call!(self, AuthStub, auth_error, check_sessions, Retry::Idempotent, msg);
        if out.live.len() != who.len() {
            return Err(AuthError::Internal(format!(
                "malformed reply: {} answers for {} sessions",
                out.live.len(),
                who.len()
            )));
        }
        Ok(out.live)
    }

    async fn touch(&self, who: Principal) -> Result<(), AuthError> {
        remote_call!(self, AuthStub, auth_error, touch, Retry::Idempotent, cv::principal(who));
        Ok(())
    }

    async fn user(&self, id: UserId) -> Result<api::User, AuthError> {
        let msg = pb::GetUserRequest { user_id: id.to_string() };
        auth_decode(cv::user_from(remote_call!(self, AuthStub, auth_error, get_user, Retry::Idempotent, msg)))
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<api::User>, AuthError> {
        let msg = pb::GetUsersRequest { user_ids: ids.iter().map(ToString::to_string).collect() };
        let out = remote_call!(self, AuthStub, auth_error, get_users, Retry::Idempotent, msg);
        auth_decode(out.users.into_iter().map(cv::user_from).collect())
    }

    async fn sessions(&self, who: Principal) -> Result<Vec<api::SessionInfo>, AuthError> {
        let out = remote_call!(self, AuthStub, auth_error, sessions, Retry::Idempotent, cv::principal(who));
        auth_decode(out.sessions.into_iter().map(cv::session_from).collect())
    }

    async fn revoke_session(&self, who: Principal, id: SessionId) -> Result<(), AuthError> {
        let msg = pb::RevokeSessionRequest { who: Some(cv::principal(who)), session_id: id.to_string() };
        // Repeating a revocation that went through would answer `not_found`.
        remote_call!(self, AuthStub, auth_error, revoke_session, Retry::Once, msg);
        Ok(())
    }

    async fn revoke_other_sessions(&self, who: Principal) -> Result<u32, AuthError> {
        let msg = cv::principal(who);
        Ok(remote_call!(self, AuthStub, auth_error, revoke_other_sessions, Retry::Idempotent, msg).revoked)
    }

    async fn search_users(
        &self,
        who: Principal,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<api::User>, AuthError> {
        let msg = pb::SearchUsersRequest { who: Some(cv::principal(who)), prefix: prefix.to_owned(), limit };
        let out = remote_call!(self, AuthStub, auth_error, search_users, Retry::Idempotent, msg);
        auth_decode(out.users.into_iter().map(cv::user_from).collect())
    }
}

fn credentials(creds: api::Credentials, client: ClientInfo) -> pb::CredentialsRequest {
    pb::CredentialsRequest {
        username: creds.username,
        password: creds.password,
        client: Some(cv::client_info(client)),
    }
}

/// The messaging service over gRPC.
pub struct RemoteMessaging(Balancer);

impl RemoteMessaging {
    /// A client of the messaging instances at `addrs`.
    pub fn new(addrs: &[String], settings: &RemoteSettings) -> Result<Self, String> {
        Balancer::new("messaging", addrs, settings).map(Self)
    }
}

fn msg_decode<T>(value: Result<T, Status>) -> Result<T, MessagingError> {
    value.map_err(|s| MessagingError::Internal(format!("malformed reply: {}", s.message())))
}

#[async_trait]
impl MessagingService for RemoteMessaging {
    async fn create_conversation(
        &self,
        user: UserId,
        req: api::CreateConversation,
    ) -> Result<(api::Conversation, bool), MessagingError> {
        // A direct conversation is unique per pair, so repeating its creation is harmless;
        // a group created twice would be two groups.
        let retry = match req.kind {
            api::ConversationKind::Direct => Retry::Idempotent,
            api::ConversationKind::Group => Retry::Once,
        };
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            create_conversation,
            retry,
            pb::CreateConversationRequest {
                user_id: user.to_string(),
                kind: cv::kind(req.kind) as i32,
                members: req.members.iter().map(ToString::to_string).collect(),
                title: req.title,
            }
        );
        let conversation =
            msg_decode(cv::conversation_from(msg_decode(cv::required("conversation", out.conversation))?))?;
        Ok((conversation, out.created))
    }

    async fn list_conversations(&self, user: UserId) -> Result<Vec<api::Conversation>, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            list_conversations,
            Retry::Idempotent,
            pb::UserRequest { user_id: user.to_string() }
        );
        msg_decode(out.conversations.into_iter().map(cv::conversation_from).collect())
    }

    async fn conversation(
        &self,
        user: UserId,
        id: ConversationId,
    ) -> Result<api::Conversation, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            get_conversation,
            Retry::Idempotent,
            pb::ConversationRequest { user_id: user.to_string(), conversation_id: id.to_string() }
        );
        msg_decode(cv::conversation_from(out))
    }

    async fn rename(
        &self,
        user: UserId,
        id: ConversationId,
        title: &str,
    ) -> Result<api::Conversation, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            rename,
            Retry::Idempotent,
            pb::RenameRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                title: title.to_owned(),
            }
        );
        msg_decode(cv::conversation_from(out))
    }

    async fn add_member(
        &self,
        user: UserId,
        id: ConversationId,
        member: UserId,
    ) -> Result<api::Conversation, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            add_member,
            Retry::Idempotent,
            pb::MemberRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                member_id: member.to_string(),
            }
        );
        msg_decode(cv::conversation_from(out))
    }

    async fn remove_member(
        &self,
        user: UserId,
        id: ConversationId,
        member: UserId,
    ) -> Result<(), MessagingError> {
        remote_call!(
            self,
            MessagingStub,
            messaging_error,
            remove_member,
            Retry::Once,
            pb::MemberRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                member_id: member.to_string(),
            }
        );
        Ok(())
    }

    async fn send(
        &self,
        user: UserId,
        id: ConversationId,
        msg: api::SendMessage,
    ) -> Result<(api::Message, bool), MessagingError> {
        // Idempotent by `client_msg_id`: a repeat returns the first message, not a second.
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            send,
            Retry::Idempotent,
            pb::SendRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                client_msg_id: msg.client_msg_id,
                body: msg.body,
            }
        );
        let message = msg_decode(cv::message_from(msg_decode(cv::required("message", out.message))?))?;
        Ok((message, out.created))
    }

    async fn history(
        &self,
        user: UserId,
        id: ConversationId,
        q: HistoryQuery,
    ) -> Result<Vec<api::Message>, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            history,
            Retry::Idempotent,
            pb::HistoryRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                after_seq: q.after_seq,
                before_seq: q.before_seq,
                limit: q.limit,
            }
        );
        msg_decode(cv::messages_from(out.messages))
    }

    async fn edit(
        &self,
        user: UserId,
        id: ConversationId,
        message_id: MessageId,
        body: &str,
    ) -> Result<api::Message, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            edit,
            Retry::Idempotent,
            pb::EditRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                message_id: message_id.to_string(),
                body: body.to_owned(),
            }
        );
        msg_decode(cv::message_from(out))
    }

    async fn delete(
        &self,
        user: UserId,
        id: ConversationId,
        message_id: MessageId,
    ) -> Result<api::Message, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            delete,
            Retry::Idempotent,
            pb::MessageRequest {
                user_id: user.to_string(),
                conversation_id: id.to_string(),
                message_id: message_id.to_string(),
            }
        );
        msg_decode(cv::message_from(out))
    }

    async fn mark_read(&self, user: UserId, id: ConversationId, seq: u64) -> Result<u64, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            mark_read,
            Retry::Idempotent,
            pb::MarkReadRequest { user_id: user.to_string(), conversation_id: id.to_string(), seq }
        );
        Ok(out.read_seq)
    }

    async fn typing(&self, user: UserId, id: ConversationId) -> Result<(), MessagingError> {
        remote_call!(
            self,
            MessagingStub,
            messaging_error,
            typing,
            Retry::Idempotent,
            pb::ConversationRequest { user_id: user.to_string(), conversation_id: id.to_string() }
        );
        Ok(())
    }

    async fn latest_seqs(&self, user: UserId) -> Result<Vec<(ConversationId, u64)>, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            latest_seqs,
            Retry::Idempotent,
            pb::UserRequest { user_id: user.to_string() }
        );
        msg_decode(
            out.seqs
                .into_iter()
                .map(|s| Ok((cv::id("conversation_id", &s.conversation_id)?, s.seq)))
                .collect(),
        )
    }

    async fn presence(&self, user: UserId, of: &[UserId]) -> Result<Vec<api::Presence>, MessagingError> {
        let out = remote_call!(
            self,
            MessagingStub,
            messaging_error,
            get_presence,
            Retry::Idempotent,
            pb::PresenceRequest {
                user_id: user.to_string(),
                of: of.iter().map(ToString::to_string).collect(),
            }
        );
        msg_decode(out.presence.into_iter().map(cv::presence_from).collect())
    }

    async fn heartbeat(&self, live: &[(UserId, String)]) -> Result<LatestSeqsByUser, MessagingError> {
        let msg = pb::HeartbeatRequest { live: changes(live) };
        let out = remote_call!(self, MessagingStub, messaging_error, heartbeat, Retry::Idempotent, msg);
        msg_decode(
            out.users
                .into_iter()
                .map(|u| {
                    let seqs = u
                        .seqs
                        .into_iter()
                        .map(|s| Ok((cv::id("conversation_id", &s.conversation_id)?, s.seq)))
                        .collect::<Result<Vec<_>, Status>>()?;
                    Ok((cv::id("user_id", &u.user_id)?, seqs))
                })
                .collect(),
        )
    }

    async fn presence_down_many(&self, gone: &[(UserId, String)]) -> Result<(), MessagingError> {
        remote_call!(
            self,
            MessagingStub,
            messaging_error,
            presence_down_many,
            Retry::Idempotent,
            pb::PresenceDownRequest { gone: changes(gone) }
        );
        Ok(())
    }

    async fn presence_up(&self, user: UserId, connection: &str) -> Result<(), MessagingError> {
        remote_call!(
            self,
            MessagingStub,
            messaging_error,
            presence_up,
            Retry::Idempotent,
            pb::PresenceChange { user_id: user.to_string(), connection: connection.to_owned() }
        );
        Ok(())
    }

    async fn presence_down(&self, user: UserId, connection: &str) -> Result<(), MessagingError> {
        remote_call!(
            self,
            MessagingStub,
            messaging_error,
            presence_down,
            Retry::Idempotent,
            pb::PresenceChange { user_id: user.to_string(), connection: connection.to_owned() }
        );
        Ok(())
    }
}

/// The video service over gRPC.
pub struct RemoteVideo(Balancer);

impl RemoteVideo {
    /// A client of the video instances at `addrs`.
    pub fn new(addrs: &[String], settings: &RemoteSettings) -> Result<Self, String> {
        Balancer::new("video", addrs, settings).map(Self)
    }
}

/// Reads a v1 wire object a video instance sent as JSON.
fn video_json<T: serde::de::DeserializeOwned>(reply: pb::JsonReply) -> Result<T, VideoError> {
    serde_json::from_str(&reply.json).map_err(|e| VideoError::Internal(format!("malformed reply: {e}")))
}

fn call_request(who: Principal, call_id: CallId) -> pb::CallRequest {
    pb::CallRequest { who: Some(cv::principal(who)), call_id: call_id.to_string() }
}

#[async_trait]
impl VideoService for RemoteVideo {
    async fn ice_servers(&self, who: Principal) -> Result<api::IceServerList, VideoError> {
        video_json(remote_call!(
            self,
            VideoStub,
            video_error,
            ice_servers,
            Retry::Idempotent,
            cv::principal(who)
        ))
    }

    async fn calls_of(
        &self,
        who: Principal,
        conversations: &[ConversationId],
    ) -> Result<Vec<api::Call>, VideoError> {
        let msg = pb::CallsOfRequest {
            who: Some(cv::principal(who)),
            conversation_ids: conversations.iter().map(ToString::to_string).collect(),
        };
        video_json(remote_call!(self, VideoStub, video_error, calls_of, Retry::Idempotent, msg))
    }

    async fn start(&self, who: Principal, conversation_id: ConversationId) -> Result<api::Call, VideoError> {
        let msg = pb::StartCallRequest {
            who: Some(cv::principal(who)),
            conversation_id: conversation_id.to_string(),
        };
        video_json(remote_call!(self, VideoStub, video_error, start, Retry::Once, msg))
    }

    async fn answer(&self, who: Principal, call_id: CallId) -> Result<api::Call, VideoError> {
        // Answering again on the same device changes nothing: safe to repeat.
        let msg = call_request(who, call_id);
        video_json(remote_call!(self, VideoStub, video_error, answer, Retry::Idempotent, msg))
    }

    async fn decline(&self, who: Principal, call_id: CallId) -> Result<(), VideoError> {
        remote_call!(self, VideoStub, video_error, decline, Retry::Once, call_request(who, call_id));
        Ok(())
    }

    async fn leave(&self, who: Principal, call_id: CallId) -> Result<(), VideoError> {
        remote_call!(self, VideoStub, video_error, leave, Retry::Once, call_request(who, call_id));
        Ok(())
    }

    async fn media(
        &self,
        who: Principal,
        call_id: CallId,
        audio: bool,
        video: bool,
    ) -> Result<(), VideoError> {
        let msg =
            pb::MediaRequest { who: Some(cv::principal(who)), call_id: call_id.to_string(), audio, video };
        remote_call!(self, VideoStub, video_error, media, Retry::Idempotent, msg);
        Ok(())
    }

    async fn signal(
        &self,
        who: Principal,
        call_id: CallId,
        to: SessionId,
        signal: api::Signal,
    ) -> Result<(), VideoError> {
        let signal_json = serde_json::to_string(&signal).map_err(|e| VideoError::Internal(e.to_string()))?;
        let msg = pb::SignalRequest {
            who: Some(cv::principal(who)),
            call_id: call_id.to_string(),
            to_session_id: to.to_string(),
            signal_json,
        };
        // A signal relayed twice would confuse the peer's negotiation: never repeated.
        remote_call!(self, VideoStub, video_error, signal, Retry::Once, msg);
        Ok(())
    }

    async fn keepalive(&self, who: Principal) -> Result<bool, VideoError> {
        Ok(remote_call!(self, VideoStub, video_error, keepalive, Retry::Idempotent, cv::principal(who))
            .in_call)
    }

    async fn disconnected(&self, who: Principal) -> Result<(), VideoError> {
        remote_call!(self, VideoStub, video_error, disconnected, Retry::Idempotent, cv::principal(who));
        Ok(())
    }
}

/// `(user, connection)` pairs as their wire form.
fn changes(connections: &[(UserId, String)]) -> Vec<pb::PresenceChange> {
    connections
        .iter()
        .map(|(u, c)| pb::PresenceChange { user_id: u.to_string(), connection: c.clone() })
        .collect()
}
