//! Chattr: users signed up over REST, conversations created by their first member, and one
//! WebSocket per member (the Rust client's [`Connection`]). A send's `req_id` is its
//! number, so the ack says which send it was.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context;
use chattr_api::v1::{ClientFrame, ServerFrame};
use chattr_client::Connection;
use tokio::sync::oneshot;

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
            let mut held = Vec::with_capacity(conversations);
            let mut sockets = 0usize;
            for group in clients.chunks(members) {
                let others: Vec<uuid::Uuid> =
                    group[1..].iter().map(|c| c.me().map(|u| u.id)).collect::<Result<_, _>>()?;
                let conversation = if members == 2 {
                    group[0].direct(others[0]).await.context("creating a direct conversation")?.id
                } else {
                    group[0].group("bench", &others).await.context("creating a group")?.id
                };
                let mut members = Vec::with_capacity(group.len());
                for member in group {
                    sockets += 1;
                    let (socket, _) = member
                        .connect_from(BTreeMap::new(), pick(sources, sockets))
                        .await
                        .context("connecting a member")?;
                    members.push(Held::keep(socket));
                }
                held.push((conversation, members));
            }
            // Setting up thousands of members takes minutes; every socket was kept read
            // meanwhile, and is handed to the run only now.
            let mut out = Vec::with_capacity(conversations);
            for (conversation, members) in held {
                let mut links = Vec::with_capacity(members.len());
                for member in members {
                    let socket = member.release().await?;
                    links.push(Box::new(Socket { socket, conversation }) as Box<dyn Link>);
                }
                let sender = links.remove(0);
                out.push(Conversation { sender, receivers: links });
            }
            Ok(out)
        })
    }
}

/// A connected socket waiting for the run: read all the while, so the server's pings are
/// answered and it is not closed as a dead peer (three heartbeats without a frame).
/// What arrives meanwhile (other members coming online) is of no interest and dropped.
struct Held {
    stop: oneshot::Sender<()>,
    reader: tokio::task::JoinHandle<anyhow::Result<Connection>>,
}

impl Held {
    fn keep(mut socket: Connection) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let reader = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(socket),
                    frame = socket.next() => {
                        frame.context("a member's socket broke while the others were set up")?;
                    }
                }
            }
        });
        Self { stop, reader }
    }

    async fn release(self) -> anyhow::Result<Connection> {
        let _ = self.stop.send(());
        self.reader.await.context("a member's reader failed")?
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
