//! gRPC servers over the service traits: each wraps the same client handle the gateway
//! uses in one process, so a remote call runs exactly the code a local one does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use chattr_api::v1 as api;
use chattr_core::trace::{self, TraceContext};
use chattr_proto::auth::AuthClient;
use chattr_proto::messaging::{HistoryQuery, MessagingClient};
use chattr_proto::video::VideoClient;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tonic::codegen::http;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::convert::{self as cv, id};
use crate::pb;
use crate::status::to_status;

type Reply<T> = Result<Response<T>, Status>;

/// The services one process serves over gRPC (any subset).
#[derive(Clone, Default)]
pub struct Services {
    /// Accounts and sessions.
    pub auth: Option<AuthClient>,
    /// Conversations and messages.
    pub messaging: Option<MessagingClient>,
    /// Calls.
    pub video: Option<VideoClient>,
}

/// Serves the given services on `listener` until `shutdown` resolves; in-flight calls
/// finish first. With a `secret`, every call must present it (`authorization: Bearer
/// <secret>`, what [`crate::RemoteSettings::secret`] sends): the calls carry user ids, so
/// whoever reaches the port unchecked could act as anyone.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    secret: Option<&str>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let Services { auth, messaging, video } = services;
    let check = CallerCheck::new(secret);
    let (auth_check, messaging_check, video_check) = (check.clone(), check.clone(), check);
    let router = tonic::transport::Server::builder()
        .layer(TraceLayer)
        .add_optional_service(auth.map(|a| {
            pb::auth_server::AuthServer::with_interceptor(AuthGrpc(a), move |r| auth_check.check(r))
        }))
        .add_optional_service(messaging.map(|m| {
            pb::messaging_server::MessagingServer::with_interceptor(MessagingGrpc(m), move |r| {
                messaging_check.check(r)
            })
        }))
        .add_optional_service(video.map(|v| {
            pb::video_server::VideoServer::with_interceptor(VideoGrpc(v), move |r| video_check.check(r))
        }));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}

/// Admits callers: all of them, or only those presenting the shared secret. Compares
/// SHA-256 digests, so the time taken says nothing about how much of a guess was right.
#[derive(Clone)]
struct CallerCheck {
    digest: Option<[u8; 32]>,
}

impl CallerCheck {
    fn new(secret: Option<&str>) -> Self {
        Self { digest: secret.map(|s| Sha256::digest(s.as_bytes()).into()) }
    }

    fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = self.digest else { return Ok(request) };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if <[u8; 32]>::from(Sha256::digest(token.as_bytes())) == want => Ok(request),
            _ => Err(Status::unauthenticated("missing or wrong service secret")),
        }
    }
}

/// Metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Runs every call inside the caller's trace (a child span of its `traceparent`), or a new
/// trace when the caller sent none.
#[derive(Debug, Clone, Copy)]
struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced(inner)
    }
}

#[derive(Debug, Clone)]
struct Traced<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let context = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .map_or_else(TraceContext::new_root, |c| c.child());
        let method = crate::metrics::method_label(request.uri().path());
        tracing::debug!(trace_id = %context.trace_hex(), %method, "gRPC call");
        let timed = crate::metrics::Timed::start(crate::metrics::SERVER_SECONDS, method);
        let call = trace::span("grpc call", move || method.to_owned(), context, self.0.call(request));
        Box::pin(async move {
            let out = call.await;
            // A failed call answers with its status in the headers ("trailers only");
            // a successful one sends it in the trailers, after the body.
            let code = match &out {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            timed.finish(code);
            out
        })
    }
}

/// The auth service over gRPC.
pub struct AuthGrpc(pub AuthClient);

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthGrpc {
    async fn signup(&self, req: Request<pb::CredentialsRequest>) -> Reply<pb::AuthResponse> {
        let r = req.into_inner();
        let creds = api::Credentials { username: r.username, password: r.password };
        let client = cv::client_info_from(r.client)?;
        let out = self.0.signup(creds, client).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::auth_response(out)))
    }

    async fn login(&self, req: Request<pb::CredentialsRequest>) -> Reply<pb::AuthResponse> {
        let r = req.into_inner();
        let creds = api::Credentials { username: r.username, password: r.password };
        let client = cv::client_info_from(r.client)?;
        let out = self.0.login(creds, client).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::auth_response(out)))
    }

    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Reply<pb::AuthResponse> {
        let r = req.into_inner();
        let client = cv::client_info_from(r.client)?;
        let out = self.0.refresh(&r.refresh_token, client).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::auth_response(out)))
    }

    async fn logout(&self, req: Request<pb::Principal>) -> Reply<pb::Empty> {
        let who = cv::principal_from(req.get_ref())?;
        self.0.logout(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn authenticate(&self, req: Request<pb::AuthenticateRequest>) -> Reply<pb::Principal> {
        let who = self.0.authenticate(&req.get_ref().access_token).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::principal(who)))
    }

    async fn authenticate_many(
        &self,
        req: Request<pb::AuthenticateManyRequest>,
    ) -> Reply<pb::Authentications> {
        let who = self.0.authenticate_many(&req.get_ref().access_tokens).await.map_err(|e| to_status(&e))?;
        let answers =
            who.into_iter().map(|w| pb::Authentication { principal: w.map(cv::principal) }).collect();
        Ok(Response::new(pb::Authentications { answers }))
    }

    async fn check_session(&self, req: Request<pb::Principal>) -> Reply<pb::Empty> {
        let who = cv::principal_from(req.get_ref())?;
        self.0.check_session(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn check_sessions(&self, req: Request<pb::PrincipalList>) -> Reply<pb::SessionChecks> {
        let who = req.get_ref().principals.iter().map(cv::principal_from).collect::<Result<Vec<_>, _>>()?;
        let live = self.0.check_sessions(&who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::SessionChecks { live }))
    }

    async fn touch(&self, req: Request<pb::Principal>) -> Reply<pb::Empty> {
        let who = cv::principal_from(req.get_ref())?;
        self.0.touch(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Reply<pb::User> {
        let user = self.0.user(id("user_id", &req.get_ref().user_id)?).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::user(user)))
    }

    async fn get_users(&self, req: Request<pb::GetUsersRequest>) -> Reply<pb::UserList> {
        let ids = req.get_ref().user_ids.iter().map(|u| id("user_ids", u)).collect::<Result<Vec<_>, _>>()?;
        let users = self.0.users(&ids).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::UserList { users: users.into_iter().map(cv::user).collect() }))
    }

    async fn sessions(&self, req: Request<pb::Principal>) -> Reply<pb::SessionList> {
        let who = cv::principal_from(req.get_ref())?;
        let list = self.0.sessions(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::SessionList { sessions: list.into_iter().map(cv::session).collect() }))
    }

    async fn revoke_session(&self, req: Request<pb::RevokeSessionRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let who = cv::principal_from(&cv::required("who", r.who)?)?;
        self.0.revoke_session(who, id("session_id", &r.session_id)?).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn revoke_other_sessions(
        &self,
        req: Request<pb::Principal>,
    ) -> Reply<pb::RevokeOtherSessionsResponse> {
        let who = cv::principal_from(req.get_ref())?;
        let revoked = self.0.revoke_other_sessions(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::RevokeOtherSessionsResponse { revoked }))
    }

    async fn search_users(&self, req: Request<pb::SearchUsersRequest>) -> Reply<pb::UserList> {
        let r = req.into_inner();
        let who = cv::principal_from(&cv::required("who", r.who)?)?;
        let users = self.0.search_users(who, &r.prefix, r.limit).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::UserList { users: users.into_iter().map(cv::user).collect() }))
    }
}

/// The messaging service over gRPC.
pub struct MessagingGrpc(pub MessagingClient);

#[tonic::async_trait]
impl pb::messaging_server::Messaging for MessagingGrpc {
    async fn create_conversation(
        &self,
        req: Request<pb::CreateConversationRequest>,
    ) -> Reply<pb::CreateConversationResponse> {
        let r = req.into_inner();
        let create = api::CreateConversation {
            kind: cv::kind_from(r.kind)?,
            members: cv::ids("members", &r.members)?,
            title: r.title,
        };
        let (conversation, created) = self
            .0
            .create_conversation(id("user_id", &r.user_id)?, create)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::CreateConversationResponse {
            conversation: Some(cv::conversation(conversation)),
            created,
        }))
    }

    async fn list_conversations(&self, req: Request<pb::UserRequest>) -> Reply<pb::ConversationList> {
        let list = self
            .0
            .list_conversations(id("user_id", &req.get_ref().user_id)?)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ConversationList {
            conversations: list.into_iter().map(cv::conversation).collect(),
        }))
    }

    async fn get_conversation(&self, req: Request<pb::ConversationRequest>) -> Reply<pb::Conversation> {
        let r = req.get_ref();
        let c = self
            .0
            .conversation(id("user_id", &r.user_id)?, id("conversation_id", &r.conversation_id)?)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::conversation(c)))
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> Reply<pb::Conversation> {
        let r = req.get_ref();
        let c = self
            .0
            .rename(id("user_id", &r.user_id)?, id("conversation_id", &r.conversation_id)?, &r.title)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::conversation(c)))
    }

    async fn add_member(&self, req: Request<pb::MemberRequest>) -> Reply<pb::Conversation> {
        let r = req.get_ref();
        let c = self
            .0
            .add_member(
                id("user_id", &r.user_id)?,
                id("conversation_id", &r.conversation_id)?,
                id("member_id", &r.member_id)?,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::conversation(c)))
    }

    async fn remove_member(&self, req: Request<pb::MemberRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        self.0
            .remove_member(
                id("user_id", &r.user_id)?,
                id("conversation_id", &r.conversation_id)?,
                id("member_id", &r.member_id)?,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn send(&self, req: Request<pb::SendRequest>) -> Reply<pb::SendResponse> {
        let r = req.into_inner();
        let (user, conversation) = (id("user_id", &r.user_id)?, id("conversation_id", &r.conversation_id)?);
        let msg = api::SendMessage { client_msg_id: r.client_msg_id, body: r.body };
        let (message, created) = self.0.send(user, conversation, msg).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::SendResponse { message: Some(cv::message(message)), created }))
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> Reply<pb::MessageList> {
        let r = req.get_ref();
        let q = HistoryQuery { after_seq: r.after_seq, before_seq: r.before_seq, limit: r.limit };
        let list = self
            .0
            .history(id("user_id", &r.user_id)?, id("conversation_id", &r.conversation_id)?, q)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::MessageList { messages: list.into_iter().map(cv::message).collect() }))
    }

    async fn edit(&self, req: Request<pb::EditRequest>) -> Reply<pb::Message> {
        let r = req.get_ref();
        let m = self
            .0
            .edit(
                id("user_id", &r.user_id)?,
                id("conversation_id", &r.conversation_id)?,
                id("message_id", &r.message_id)?,
                &r.body,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::message(m)))
    }

    async fn delete(&self, req: Request<pb::MessageRequest>) -> Reply<pb::Message> {
        let r = req.get_ref();
        let m = self
            .0
            .delete(
                id("user_id", &r.user_id)?,
                id("conversation_id", &r.conversation_id)?,
                id("message_id", &r.message_id)?,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(cv::message(m)))
    }

    async fn mark_read(&self, req: Request<pb::MarkReadRequest>) -> Reply<pb::MarkReadResponse> {
        let r = req.get_ref();
        let read_seq = self
            .0
            .mark_read(id("user_id", &r.user_id)?, id("conversation_id", &r.conversation_id)?, r.seq)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::MarkReadResponse { read_seq }))
    }

    async fn typing(&self, req: Request<pb::ConversationRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        self.0
            .typing(id("user_id", &r.user_id)?, id("conversation_id", &r.conversation_id)?)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn latest_seqs(&self, req: Request<pb::UserRequest>) -> Reply<pb::LatestSeqsResponse> {
        let seqs =
            self.0.latest_seqs(id("user_id", &req.get_ref().user_id)?).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LatestSeqsResponse {
            seqs: seqs
                .into_iter()
                .map(|(c, seq)| pb::LatestSeq { conversation_id: c.to_string(), seq })
                .collect(),
        }))
    }

    async fn get_presence(&self, req: Request<pb::PresenceRequest>) -> Reply<pb::PresenceList> {
        let r = req.get_ref();
        let of = cv::ids("of", &r.of)?;
        let list = self.0.presence(id("user_id", &r.user_id)?, &of).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::PresenceList { presence: list.into_iter().map(cv::presence).collect() }))
    }

    async fn presence_up(&self, req: Request<pb::PresenceChange>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        self.0.presence_up(id("user_id", &r.user_id)?, &r.connection).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn presence_down(&self, req: Request<pb::PresenceChange>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        self.0.presence_down(id("user_id", &r.user_id)?, &r.connection).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn presence_down_many(&self, req: Request<pb::PresenceDownRequest>) -> Reply<pb::Empty> {
        let gone = connections(&req.get_ref().gone)?;
        self.0.presence_down_many(&gone).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Reply<pb::HeartbeatResponse> {
        let live = connections(&req.get_ref().live)?;
        let latest = self.0.heartbeat(&live).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::HeartbeatResponse {
            users: latest
                .into_iter()
                .map(|(user, seqs)| pb::UserLatestSeqs {
                    user_id: user.to_string(),
                    seqs: seqs
                        .into_iter()
                        .map(|(c, seq)| pb::LatestSeq { conversation_id: c.to_string(), seq })
                        .collect(),
                })
                .collect(),
        }))
    }
}

/// The video service over gRPC.
pub struct VideoGrpc(pub VideoClient);

fn who_of(who: Option<&pb::Principal>) -> Result<chattr_proto::Principal, Status> {
    cv::principal_from(who.ok_or_else(|| Status::invalid_argument("who is required"))?)
}

fn json_reply(value: &impl serde::Serialize) -> Reply<pb::JsonReply> {
    let json = serde_json::to_string(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::JsonReply { json }))
}

#[tonic::async_trait]
impl pb::video_server::Video for VideoGrpc {
    async fn ice_servers(&self, req: Request<pb::Principal>) -> Reply<pb::JsonReply> {
        let who = cv::principal_from(req.get_ref())?;
        json_reply(&self.0.ice_servers(who).await.map_err(|e| to_status(&e))?)
    }

    async fn calls_of(&self, req: Request<pb::CallsOfRequest>) -> Reply<pb::JsonReply> {
        let r = req.get_ref();
        let who = who_of(r.who.as_ref())?;
        let conversations =
            r.conversation_ids.iter().map(|c| id("conversation_ids", c)).collect::<Result<Vec<_>, _>>()?;
        json_reply(&self.0.calls_of(who, &conversations).await.map_err(|e| to_status(&e))?)
    }

    async fn start(&self, req: Request<pb::StartCallRequest>) -> Reply<pb::JsonReply> {
        let r = req.get_ref();
        let who = who_of(r.who.as_ref())?;
        let conversation = id("conversation_id", &r.conversation_id)?;
        json_reply(&self.0.start(who, conversation).await.map_err(|e| to_status(&e))?)
    }

    async fn answer(&self, req: Request<pb::CallRequest>) -> Reply<pb::JsonReply> {
        let r = req.get_ref();
        let (who, call) = (who_of(r.who.as_ref())?, id("call_id", &r.call_id)?);
        json_reply(&self.0.answer(who, call).await.map_err(|e| to_status(&e))?)
    }

    async fn decline(&self, req: Request<pb::CallRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let (who, call) = (who_of(r.who.as_ref())?, id("call_id", &r.call_id)?);
        self.0.decline(who, call).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn leave(&self, req: Request<pb::CallRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let (who, call) = (who_of(r.who.as_ref())?, id("call_id", &r.call_id)?);
        self.0.leave(who, call).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn media(&self, req: Request<pb::MediaRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let (who, call) = (who_of(r.who.as_ref())?, id("call_id", &r.call_id)?);
        self.0.media(who, call, r.audio, r.video).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn signal(&self, req: Request<pb::SignalRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let (who, call) = (who_of(r.who.as_ref())?, id("call_id", &r.call_id)?);
        let to = id("to_session_id", &r.to_session_id)?;
        let signal: api::Signal = serde_json::from_str(&r.signal_json)
            .map_err(|e| Status::invalid_argument(format!("signal_json: {e}")))?;
        self.0.signal(who, call, to, signal).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn keepalive(&self, req: Request<pb::Principal>) -> Reply<pb::KeepaliveReply> {
        let who = cv::principal_from(req.get_ref())?;
        let in_call = self.0.keepalive(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::KeepaliveReply { in_call }))
    }

    async fn disconnected(&self, req: Request<pb::Principal>) -> Reply<pb::Empty> {
        let who = cv::principal_from(req.get_ref())?;
        self.0.disconnected(who).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::Empty {}))
    }
}

/// `(user, connection)` pairs of a request.
fn connections(changes: &[pb::PresenceChange]) -> Result<Vec<(chattr_core::UserId, String)>, Status> {
    changes.iter().map(|c| Ok((id("user_id", &c.user_id)?, c.connection.clone()))).collect()
}
