//! Chattr: users signed up over REST, conversations created by their first member, and one
//! WebSocket per member (the Rust client's [`Connection`]). A send's `req_id` is its
//! number, so the ack says which send it was.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context;
use chattr_api::v1::{ClientFrame, ServerFrame};
use chattr_client::Connection;

use super::{pick, BoxFuture, Conversation, Event, Link, Target};

/// A Chattr gateway.
pub struct Chattr {
    pub server: url::Url,
}

impl Target for Chattr {
    fn name(&self) -> &'static str {
        "chattr"
    }

    fn setup<'a>(
        &'a self,
        conversations: usize,
        members: usize,
        sources: &'a [IpAddr],
    ) -> BoxFuture<'a, anyhow::Result<Vec<Conversation>>> {
        Box::pin(async move {
            let tag = crate::run_tag();
            let names = (0..conversations)
                .flat_map(|i| (0..members).map(move |m| (i, m)))
                .map(|(i, m)| format!("{tag}c{i}m{m}"))
                .collect();
            let clients = crate::sign_up(&self.server, names).await?;
            let mut out = Vec::with_capacity(conversations);
            let mut sockets = 0usize;
            for group in clients.chunks(members) {
                let others: Vec<uuid::Uuid> =
                    group[1..].iter().map(|c| c.me().map(|u| u.id)).collect::<Result<_, _>>()?;
                let conversation = if members == 2 {
                    group[0].direct(others[0]).await.context("creating a direct conversation")?.id
                } else {
                    group[0].group("bench", &others).await.context("creating a group")?.id
                };
                let mut links = Vec::with_capacity(members);
                for member in group {
                    sockets += 1;
                    let (socket, _) = member
                        .connect_from(BTreeMap::new(), pick(sources, sockets))
                        .await
                        .context("connecting a member")?;
                    links.push(Box::new(Socket { socket, conversation }) as Box<dyn Link>);
                }
                let sender = links.remove(0);
                out.push(Conversation { sender, receivers: links });
            }
            Ok(out)
        })
    }
}

/// One member's WebSocket.
struct Socket {
    socket: Connection,
    conversation: uuid::Uuid,
}

impl Link for Socket {
    fn send<'a>(&'a mut self, k: u64, id: &'a str, body: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let frame = ClientFrame::Send {
                req_id: k.to_string(),
                conversation_id: self.conversation,
                client_msg_id: id.to_owned(),
                body: body.to_owned(),
            };
            Ok(self.socket.send(&frame).await?)
        })
    }

    fn next(&mut self) -> BoxFuture<'_, anyhow::Result<Event>> {
        Box::pin(async move {
            Ok(match self.socket.next().await? {
                ServerFrame::Ack { req_id, .. } => match req_id.parse() {
                    Ok(send) => Event::Accepted { send },
                    Err(_) => Event::Other,
                },
                ServerFrame::Error { req_id, code, .. } => {
                    Event::Refused { send: req_id.and_then(|r| r.parse().ok()), code }
                }
                ServerFrame::Message { message } => {
                    Event::Delivered { id: message.client_msg_id, seq: Some(message.seq) }
                }
                _ => Event::Other,
            })
        })
    }
}
