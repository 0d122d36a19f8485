//! New sockets' access tokens, checked in batches.
//!
//! Every new socket's `auth` frame needs its token verified and its session found live,
//! which is a call to the auth service and a database read. When thousands of sockets
//! arrive at once (a reconnect storm), those are thousands of calls and reads. Here a
//! socket hands its token to one task, which sends whatever tokens are waiting in one
//! [`AuthService::authenticate_many`](chattr_proto::auth::AuthService::authenticate_many).
//! Unlike heartbeats it does not wait for more: a lone connection is checked at once, and
//! batches form on their own while earlier calls are in flight (at most
//! [`IN_FLIGHT`] at a time).

use std::sync::Arc;
use std::time::Duration;

use chattr_proto::auth::{AuthClient, AuthError};
use chattr_proto::Principal;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::batch;
use crate::metrics as m;

/// The most tokens sent in one call.
const MAX_BATCH: usize = 1_000;
/// Calls in flight at once; more tokens wait and go together in the next call.
const IN_FLIGHT: usize = 4;

/// What a token came to: who it authenticates, or why it could not be checked.
pub(crate) type Checked = Result<Principal, Arc<AuthError>>;

/// A token handed to the batcher.
struct Pending {
    token: String,
    answer: oneshot::Sender<Checked>,
}

/// The handle sockets hand their tokens to; cloning shares the one batcher.
#[derive(Clone)]
pub(crate) struct Tokens {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Tokens {
    /// Starts the batcher; it stops when the last handle is dropped.
    pub(crate) fn start(auth: AuthClient) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(batcher(pending, auth));
        Self { queue }
    }

    /// Checks one token as [`AuthService::authenticate`] does (an unknown, expired or
    /// tampered token, or a revoked session, is `Unauthorized`).
    ///
    /// [`AuthService::authenticate`]: chattr_proto::auth::AuthService::authenticate
    pub(crate) async fn check(&self, token: String) -> Checked {
        let (answer, answered) = oneshot::channel();
        let _ = self.queue.send(Pending { token, answer });
        answered
            .await
            .unwrap_or_else(|_| Err(Arc::new(AuthError::Unavailable("gateway shutting down".into()))))
    }
}

async fn batcher(mut queue: mpsc::UnboundedReceiver<Pending>, auth: AuthClient) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut batch = Vec::new();
        if !batch::collect(&mut queue, &mut batch, Duration::ZERO, MAX_BATCH).await {
            return;
        }
        let auth = auth.clone();
        tokio::spawn(async move {
            answer(batch, &auth).await;
            drop(permit);
        });
    }
}

async fn answer(batch: Vec<Pending>, auth: &AuthClient) {
    metrics::counter!(m::TOKEN_BATCHES).increment(1);
    let tokens: Vec<String> = batch.iter().map(|p| p.token.clone()).collect();
    match auth.authenticate_many(&tokens).await {
        Ok(who) => {
            for (pending, who) in batch.into_iter().zip(who) {
                let _ = pending.answer.send(who.ok_or_else(|| Arc::new(AuthError::Unauthorized)));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for pending in batch {
                let _ = pending.answer.send(Err(e.clone()));
            }
        }
    }
}
