//! The messaging service and its two background roles.
//!
//! - [`Messaging`] implements [`chattr_proto::messaging::MessagingService`]: conversations,
//!   membership, messages (durable, idempotent, ordered by seq), reads, typing, presence.
//! - [`relay`] publishes committed outbox rows to the bus (at least once, in order).
//! - [`fanout`] consumes bus events, resolves recipients and publishes each event once to
//!   the pub/sub channels of the users it concerns, where gateways pick it up.
//! - [`calls`] writes a summary line into the timeline for every ended call.

pub mod calls;
pub mod fanout;
pub mod metrics;
pub mod relay;
mod service;
mod settings;
mod views;

pub use service::{Messaging, CALL_SUMMARY_PREFIX};
pub use settings::MessagingSettings;
