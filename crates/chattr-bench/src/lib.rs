//! `chattr-bench`: Chattr's load generator. Scenarios run open-loop (sends go out on a
//! fixed schedule whatever the server's pace, and latency counts from the moment a send
//! was due, so a stalled server cannot hide its stall: no coordinated omission), record
//! latencies in HDR histograms, and verify every delivery while they measure: a run that
//! loses, duplicates or reorders a message is a failed run, not a fast one.
//!
//! Scenarios so far: [`chat`] (1:1 chat, and fan-out into groups, on Chattr or a peer
//! server, see [`target`]) and [`idle`] (connections held open). The
//! server's CPU time and memory are sampled from `/proc` when its pid is given, so results
//! can be normalised per core.

pub mod chart;
pub mod chat;
pub mod failures;
pub mod idle;
pub mod latency;
pub mod login;
pub mod process;
pub mod reconnect;
pub mod target;

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use chattr_client::Client;

/// The password of every user a scenario creates.
pub const PASSWORD: &str = "bench password 0123";

/// `n` loopback source addresses, 127.0.0.1 onwards: each gives a socket its own range of
/// ephemeral ports, so many connections to one server do not run out of them.
pub fn source_addresses(n: usize) -> Vec<IpAddr> {
    (0..n.clamp(1, 250)).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))).collect()
}

/// A name no earlier run used (scenarios create their users on a live server).
pub fn run_tag() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("b{}", &id[..8])
}

/// Signs up `names` on `server`, a few at a time (Argon2 makes signups the slow part of
/// setting up); returns the signed-in clients in order. A server with its default limits
/// allows 30 signups an hour from one address: run the benchmark's server with
/// `CHATTR__AUTH__SIGNUP_PER_IP_PER_HOUR` raised.
pub async fn sign_up(server: &url::Url, names: Vec<String>) -> anyhow::Result<Vec<Client>> {
    const AT_ONCE: usize = 8;
    let mut clients = Vec::with_capacity(names.len());
    for batch in names.chunks(AT_ONCE) {
        let mut pending = tokio::task::JoinSet::new();
        for (i, name) in batch.iter().enumerate() {
            let (server, name) = (server.clone(), name.clone());
            pending.spawn(async move {
                let client = Client::new(server.as_str())?;
                client.signup(&name, PASSWORD).await.with_context(|| {
                    format!("signing up {name} (a benchmark's server needs CHATTR__AUTH__SIGNUP_PER_IP_PER_HOUR raised)")
                })?;
                anyhow::Ok((i, client))
            });
        }
        let mut done: Vec<(usize, Client)> = Vec::with_capacity(batch.len());
        while let Some(joined) = pending.join_next().await {
            done.push(joined??);
        }
        done.sort_by_key(|(i, _)| *i);
        clients.extend(done.into_iter().map(|(_, c)| c));
    }
    Ok(clients)
}
