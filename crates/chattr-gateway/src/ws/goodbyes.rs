//! Closed sockets' presence, batched across all of this gateway's sockets.
//!
//! A socket that ends must tell the messaging service its connection is gone, so the
//! user's contacts hear when the user goes offline. When thousands of sockets drop at once
//! (a network blip, a restarted load balancer), one call each is thousands of calls, and
//! they queue ahead of the same sockets reconnecting. Here a closing socket hands its
//! goodbye to one task, which waits [`WINDOW`] for others and sends them all in one
//! [`MessagingService::presence_down_many`](chattr_proto::messaging::MessagingService::presence_down_many).

use std::time::Duration;

use chattr_core::UserId;
use chattr_proto::messaging::MessagingClient;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::batch;
use crate::metrics as m;

/// How long the first goodbye of a batch waits for others.
const WINDOW: Duration = Duration::from_millis(50);
/// The most goodbyes sent in one call.
const MAX_BATCH: usize = 2_000;

/// A goodbye handed to the batcher; `sent` is answered once its batch was sent.
struct Gone {
    user: UserId,
    connection: String,
    sent: oneshot::Sender<()>,
}

/// The handle sockets hand their goodbyes to; cloning shares the one batcher.
#[derive(Clone)]
pub(crate) struct Goodbyes {
    queue: mpsc::UnboundedSender<Gone>,
}

impl Goodbyes {
    /// Starts the batcher; it stops when the last handle is dropped.
    pub(crate) fn start(messaging: MessagingClient) -> Self {
        let (queue, gone) = mpsc::unbounded_channel();
        tokio::spawn(batcher(gone, messaging));
        Self { queue }
    }

    /// Hands over a closed connection. The receiver is answered once its batch was sent
    /// (successfully or not: a failure is logged, and the connection's presence expires
    /// with its TTL anyway), so a shutting-down gateway can wait for its goodbyes.
    pub(crate) fn say(&self, user: UserId, connection: String) -> oneshot::Receiver<()> {
        let (sent, done) = oneshot::channel();
        let _ = self.queue.send(Gone { user, connection, sent });
        done
    }
}

async fn batcher(mut queue: mpsc::UnboundedReceiver<Gone>, messaging: MessagingClient) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while batch::collect(&mut queue, &mut batch, WINDOW, MAX_BATCH).await {
        metrics::counter!(m::GOODBYE_BATCHES).increment(1);
        metrics::counter!(m::GOODBYES).increment(batch.len() as u64);
        let gone: Vec<(UserId, String)> = batch.iter().map(|g| (g.user, g.connection.clone())).collect();
        if let Err(e) = messaging.presence_down_many(&gone).await {
            warn!(error = %e, connections = gone.len(), "presence down failed");
        }
        for g in batch.drain(..) {
            let _ = g.sent.send(());
        }
    }
}
