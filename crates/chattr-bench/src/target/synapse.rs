//! Placeholder: the synapse adapter is being written (issue 7).

use std::net::IpAddr;

use super::{BoxFuture, Conversation, Target};

/// A synapse server.
pub struct Peer {
    pub server: url::Url,
}

impl Target for Peer {
    fn name(&self) -> &'static str {
        "synapse"
    }

    fn setup<'a>(
        &'a self,
        _conversations: usize,
        _members: usize,
        _sources: &'a [IpAddr],
    ) -> BoxFuture<'a, anyhow::Result<Vec<Conversation>>> {
        Box::pin(async { anyhow::bail!("the synapse adapter is not written yet") })
    }
}
