//! Heartbeat work, batched across all of this gateway's sockets.
//!
//! Every socket's heartbeat needs three answers from the services: is its session still
//! live, mark its connection present, and the latest seq of each of its user's
//! conversations. Asked per socket that is three calls and two database reads per socket
//! per interval, which at tens of thousands of idle sockets is thousands of calls a second
//! and timeouts. Here a socket whose heartbeat is due hands it to one task; the task waits
//! [`WINDOW`] for others, then asks for the whole batch with two calls
//! ([`AuthService::check_sessions`](chattr_proto::auth::AuthService::check_sessions) and
//! [`MessagingService::heartbeat`](chattr_proto::messaging::MessagingService::heartbeat)),
//! each one query per backend, and answers every socket.
//!
//! A socket that has just subscribed needs the same three answers (its session may have
//! been revoked meanwhile, it is now present, and `ready` carries the snapshot), plus its
//! user's profile for `ready`. So new connections ask here too ([`Beats::greet`]; the
//! profiles take one more call, [`AuthService::users`](chattr_proto::auth::AuthService::users)),
//! and a reconnect storm costs a few calls per batch. A batch with a new connection goes
//! without waiting for [`WINDOW`]: a lone connection gets its `ready` at once, and in a
//! storm the connections that arrive while one batch is out make up the next.

use std::collections::HashMap;
use std::time::Duration;

use chattr_api::v1::User;
use chattr_core::{ConversationId, UserId};
use chattr_proto::auth::AuthClient;
use chattr_proto::messaging::MessagingClient;
use chattr_proto::Principal;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::batch;
use crate::metrics as m;

/// How long the first heartbeat of a batch waits for others (a batch with a new connection
/// does not wait).
const WINDOW: Duration = Duration::from_millis(50);
/// The most heartbeats asked for in one call.
const MAX_BATCH: usize = 2_000;

/// What a socket's heartbeat came to.
#[derive(Debug)]
pub(crate) enum Beat {
    /// The session was revoked: close the socket.
    Revoked,
    /// Not known to be revoked.
    Live {
        /// Whether the session check answered (`false`: it failed, which is not a
        /// revocation; a heartbeat tries again next time, a new connection is refused).
        checked: bool,
        /// The latest seq of each conversation, or `None` if the snapshot failed.
        latest: Option<Vec<(ConversationId, u64)>>,
        /// The user's profile, for a new connection ([`Beats::greet`]); `None` for a
        /// heartbeat, or if it could not be read.
        user: Option<User>,
    },
}

/// A heartbeat handed to the batcher.
struct Due {
    who: Principal,
    connection: String,
    /// A new connection, which also needs its user's profile.
    greet: bool,
    answer: oneshot::Sender<Beat>,
}

/// The handle sockets hand their heartbeats to; cloning shares the one batcher.
#[derive(Clone)]
pub(crate) struct Beats {
    queue: mpsc::UnboundedSender<Due>,
}

impl Beats {
    /// Starts the batcher; it stops when the last handle is dropped.
    pub(crate) fn start(auth: AuthClient, messaging: MessagingClient) -> Self {
        let (queue, due) = mpsc::unbounded_channel();
        tokio::spawn(batcher(due, auth, messaging));
        Self { queue }
    }

    /// Hands over one socket's heartbeat. The answer comes once its batch is done (after
    /// [`WINDOW`] plus the calls); the socket goes on serving meanwhile. If the batcher is
    /// gone, the answer never comes (the receiver reports the sender dropped).
    pub(crate) fn request(&self, who: Principal, connection: &str) -> oneshot::Receiver<Beat> {
        self.enqueue(who, connection, false)
    }

    /// A new connection's first beat: like [`Beats::request`], but asked without waiting for
    /// others, and the answer also carries the user's profile.
    pub(crate) fn greet(&self, who: Principal, connection: &str) -> oneshot::Receiver<Beat> {
        self.enqueue(who, connection, true)
    }

    fn enqueue(&self, who: Principal, connection: &str, greet: bool) -> oneshot::Receiver<Beat> {
        let (answer, answered) = oneshot::channel();
        let _ = self.queue.send(Due { who, connection: connection.to_owned(), greet, answer });
        answered
    }
}

async fn batcher(mut due: mpsc::UnboundedReceiver<Due>, auth: AuthClient, messaging: MessagingClient) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while due.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A new connection is waiting for its `ready`: ask at once, with whatever else is
        // queued (in a storm, all that arrived while the last batch was out). Heartbeats
        // are in no hurry and wait for company.
        let window = if batch.iter().any(|d| d.greet) { Duration::ZERO } else { WINDOW };
        batch::top_up(&mut due, &mut batch, window, MAX_BATCH).await;
        metrics::counter!(m::HEARTBEAT_BATCHES).increment(1);
        metrics::counter!(m::HEARTBEATS).increment(batch.len() as u64);
        answer(std::mem::take(&mut batch), &auth, &messaging).await;
    }
}

/// Asks for one batch and answers each of its sockets.
async fn answer(batch: Vec<Due>, auth: &AuthClient, messaging: &MessagingClient) {
    let started = std::time::Instant::now();
    let who: Vec<Principal> = batch.iter().map(|d| d.who).collect();
    let live: Vec<_> = batch.iter().map(|d| (d.who.user_id, d.connection.clone())).collect();
    let mut greeted: Vec<UserId> = batch.iter().filter(|d| d.greet).map(|d| d.who.user_id).collect();
    greeted.sort_unstable();
    greeted.dedup();
    let profiles = async {
        if greeted.is_empty() {
            return Ok(Vec::new());
        }
        auth.users(&greeted).await
    };
    let (checked, latest, profiles) =
        tokio::join!(auth.check_sessions(&who), messaging.heartbeat(&live), profiles);
    // Only a definite "revoked" closes a socket.
    let (checked, alive) = match checked {
        Ok(alive) => (true, alive),
        Err(e) => {
            warn!(error = %e, sockets = batch.len(), "session check failed");
            (false, vec![true; batch.len()])
        }
    };
    // One snapshot per user, however many of the user's sockets are in the batch.
    let latest = latest.unwrap_or_else(|e| {
        warn!(error = %e, sockets = batch.len(), "heartbeat snapshot failed");
        HashMap::new()
    });
    let profiles: HashMap<UserId, User> = match profiles {
        Ok(users) => users.into_iter().map(|u| (u.id, u)).collect(),
        Err(e) => {
            warn!(error = %e, users = greeted.len(), "profiles for new connections failed");
            HashMap::new()
        }
    };
    for (due, live) in batch.into_iter().zip(alive) {
        let beat = if live {
            let user = if due.greet { profiles.get(&due.who.user_id).cloned() } else { None };
            Beat::Live { checked, latest: latest.get(&due.who.user_id).cloned(), user }
        } else {
            Beat::Revoked
        };
        let _ = due.answer.send(beat);
    }
    metrics::histogram!(m::HEARTBEAT_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
}
