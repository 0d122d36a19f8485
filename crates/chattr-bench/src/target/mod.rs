//! The servers a chat scenario can run against. Each one sets up users and conversations
//! its own way and speaks its own protocol, behind one seam: a [`Target`] creates the
//! conversations and hands back one [`Link`] per member, and a link sends messages and
//! reports [`Event`]s. The scenario (`crate::chat`) owns the schedule, the clocks and the
//! verification, so every target is measured and checked the same way.
//!
//! - [`chattr`]: Chattr's WebSocket protocol, on the Rust client.
//! - [`ejabberd`]: XMPP over WebSocket, multi-user chat rooms, MAM archive.
//! - [`synapse`]: the Matrix client-server API (send, and `/sync` long polls).

pub mod chattr;
pub mod ejabberd;
pub mod synapse;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// A boxed future, so links of every target fit one `Box<dyn Link>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a link saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server took send number `send` for good: Chattr's durable ack, the room's
    /// reflection of the sender's own message in XMPP, the event id in Matrix.
    Accepted { send: u64 },
    /// The server refused send number `send` (when it says which), with its error code.
    Refused { send: Option<u64>, code: String },
    /// A message reached this member. `id` is the sender's id for it (`p<conv>-<k>`, see
    /// [`message_id`]); `seq` is the server's position for it, on targets that number the
    /// messages of a conversation (Chattr), checked to rise by exactly one.
    Delivered { id: String, seq: Option<u64> },
    /// Anything else (presence, receipts, pings): ignored.
    Other,
}

/// One member's connection. `next` must be cancel-safe: the scenario races it against its
/// timers, and an event must not be lost when the race is lost (read from a channel fed by
/// a reader task, or from a stream that keeps partial frames).
pub trait Link: Send {
    /// Sends message number `k` with the id `id` into this member's conversation, without
    /// waiting for the server to take it (the answer comes as an [`Event`]).
    fn send<'a>(&'a mut self, k: u64, id: &'a str, body: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The next event; an error once the connection is gone.
    fn next(&mut self) -> BoxFuture<'_, anyhow::Result<Event>>;
}

/// One conversation: the member who sends, and every member who receives.
pub struct Conversation {
    pub sender: Box<dyn Link>,
    pub receivers: Vec<Box<dyn Link>>,
}

/// A chat server under test.
pub trait Target: Send + Sync {
    /// Its name in reports (`chattr`, `ejabberd`, `synapse`).
    fn name(&self) -> &'static str;
    /// Creates `conversations` conversations of `members` new users each (2: a 1:1
    /// conversation; more: a group), connects every member, spreading the sockets over
    /// `sources`, and returns them once every receiver is ready to receive. Conversation
    /// `i` sends ids `p<i>-<k>`.
    fn setup<'a>(
        &'a self,
        conversations: usize,
        members: usize,
        sources: &'a [IpAddr],
    ) -> BoxFuture<'a, anyhow::Result<Vec<Conversation>>>;
}

/// `p<conversation>-<k>`: which send a message is.
pub fn message_id(conversation: usize, k: u64) -> String {
    format!("p{conversation}-{k}")
}

/// The `(conversation, k)` a message id names.
pub fn parse_message_id(id: &str) -> Option<(usize, u64)> {
    let (conversation, k) = id.strip_prefix('p')?.split_once('-')?;
    Some((conversation.parse().ok()?, k.parse().ok()?))
}

/// Round-robin over `sources` (None when there are none: the system picks).
pub fn pick(sources: &[IpAddr], n: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[n % sources.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_message_id(&message_id(3, 41)), Some((3, 41)));
        assert_eq!(parse_message_id("nonsense"), None);
        assert_eq!(parse_message_id("p3-x"), None);
        assert_eq!(pick(&[], 3), None);
    }
}
