//! ejabberd, over XMPP over WebSocket (RFC 7395): users registered in-band (XEP-0077),
//! one stream per member, logged in with SASL PLAIN. A group is a multi-user chat room
//! (XEP-0045) that every member joins; a 1:1 conversation is `chat` messages to the other
//! member's bare JID. `scripts/peers/ejabberd.sh` runs a server set up for it: domain
//! `localhost`, rooms on `conference.localhost`, every message archived (MAM) in PostgreSQL.
//!
//! When the server has taken a message ([`Event::Accepted`]):
//! - in a room, when the room reflects the sender's own message back to it: the room
//!   broadcasts (and archives) a message before it reflects it;
//! - in 1:1, when the server acknowledges it with stream management (XEP-0198): the
//!   sender enables it and asks `<r/>` after each message, and `<a h='N'/>` says the
//!   server has handled the first N stanzas sent since, which map back to send numbers.
//!
//! A message carries its id as the stanza id and as an `<origin-id/>` (XEP-0359), which
//! servers pass on untouched; receivers read the origin id. Each stream has a reader task
//! that parses every frame, answers pings and ack requests, and turns the rest into
//! [`Event`]s on a channel (so [`Link::next`] is cancel-safe), and a writer task that
//! owns the socket's sending half.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event as Xml};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{parse_message_id, pick, BoxFuture, Conversation, Event, Link, Target};

/// The domain the users live on (`hosts` in the script's config).
const DOMAIN: &str = "localhost";
/// The multi-user chat service (ejabberd's default: `conference.` and the domain).
const ROOMS: &str = "conference.localhost";
/// Every member's resource.
const RESOURCE: &str = "bench";
/// Users connected (registered, logged in, bound) at once, and conversations set up at once.
const AT_ONCE: usize = 16;
/// How long the server may take to answer any one setup step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const SM: &str = "urn:xmpp:sm:3";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ORIGIN_ID: &str = "urn:xmpp:sid:0";

/// An XMPP server reached over WebSocket, e.g. `ws://127.0.0.1:5280/ws`.
pub struct Peer {
    pub server: url::Url,
}

impl Target for Peer {
    fn name(&self) -> &'static str {
        "ejabberd"
    }

    fn setup<'a>(
        &'a self,
        conversations: usize,
        members: usize,
        sources: &'a [IpAddr],
    ) -> BoxFuture<'a, anyhow::Result<Vec<Conversation>>> {
        Box::pin(async move {
            let tag = crate::run_tag();
            let names: Vec<String> = (0..conversations)
                .flat_map(|i| (0..members).map(move |m| (i, m)))
                .map(|(i, m)| format!("{tag}c{i}m{m}"))
                .collect();
            let mut sessions = futures_util::stream::iter(names.into_iter().enumerate())
                .map(|(n, name)| Session::connect(&self.server, pick(sources, n), name))
                .buffered(AT_ONCE)
                .try_collect::<Vec<_>>()
                .await?
                .into_iter();
            let groups: Vec<(usize, Vec<Session>)> =
                (0..conversations).map(|i| (i, sessions.by_ref().take(members).collect())).collect();
            futures_util::stream::iter(groups)
                .map(|(i, group)| {
                    let room = format!("{tag}c{i}@{ROOMS}");
                    async move {
                        if members == 2 {
                            pair(group).await
                        } else {
                            room_of(&room, group).await
                        }
                    }
                })
                .buffered(AT_ONCE)
                .try_collect()
                .await
        })
    }
}

/// A 1:1 conversation: both members available, the sender with acks on.
async fn pair(group: Vec<Session>) -> anyhow::Result<Conversation> {
    let [mut sender, mut receiver] =
        <[Session; 2]>::try_from(group).map_err(|g| anyhow!("a pair of {} members", g.len()))?;
    sender.send("<presence/>".to_owned()).await?;
    receiver.send("<presence/>".to_owned()).await?;
    // Once the receiver's ping is answered its presence is in effect: messages to its
    // bare JID reach this session rather than offline storage.
    receiver.ping().await?;
    sender.enable_acks().await?;
    let (to_receiver, to_sender) = (receiver.bare(), sender.bare());
    Ok(Conversation {
        sender: sender.into_link(Route { to: to_receiver, kind: "chat", reflection: None, acks: true }),
        receivers: vec![receiver.into_link(Route {
            to: to_sender,
            kind: "chat",
            reflection: None,
            acks: false,
        })],
    })
}

/// A group: a room the first member creates, then every other member joins.
async fn room_of(room: &str, group: Vec<Session>) -> anyhow::Result<Conversation> {
    let mut links = Vec::with_capacity(group.len());
    for (m, mut member) in group.into_iter().enumerate() {
        member.send("<presence/>".to_owned()).await?;
        let created = member.join(room).await?;
        if m == 0 && created {
            member.configure(room).await?;
        }
        let route = Route {
            to: room.to_owned(),
            kind: "groupchat",
            reflection: Some(member.occupant(room)),
            acks: false,
        };
        links.push(member.into_link(route));
    }
    let sender = links.remove(0);
    Ok(Conversation { sender, receivers: links })
}

type Socket = WebSocketStream<TcpStream>;

/// One member's stream while it is set up: read step by step.
struct Session {
    ws: Socket,
    user: String,
    /// Elements read from a frame but not yet handled.
    backlog: VecDeque<Element>,
}

impl Session {
    /// Registers `user`, logs in and binds a resource, on a socket from `local`.
    async fn connect(server: &url::Url, local: Option<IpAddr>, user: String) -> anyhow::Result<Session> {
        let ws = tokio::time::timeout(STEP_TIMEOUT, open_socket(server, local))
            .await
            .map_err(|_| anyhow!("no WebSocket in {STEP_TIMEOUT:?}"))
            .and_then(|r| r)
            .with_context(|| format!("connecting to {server}"))?;
        let mut session = Session { ws, user, backlog: VecDeque::new() };
        session.open_stream().await?;
        let (user, password) = (escape(&session.user).into_owned(), escape(crate::PASSWORD).into_owned());
        let reg = format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
             <username>{user}</username><password>{password}</password></query></iq>"
        );
        session.request(reg, "reg", "registering").await?;
        let plain = format!("\0{}\0{}", session.user, crate::PASSWORD);
        let plain = base64::engine::general_purpose::STANDARD.encode(plain);
        session
            .send(format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"))
            .await?;
        let answer = session.expect("logging in", |e| e.name == "success" || e.name == "failure").await?;
        if answer.name == "failure" {
            bail!("logging in {} failed: {}", session.user, answer.first_child_name());
        }
        session.open_stream().await?;
        let bind = format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{RESOURCE}</resource></bind></iq>"
        );
        session.request(bind, "bind", "binding a resource").await?;
        Ok(session)
    }

    fn bare(&self) -> String {
        format!("{}@{DOMAIN}", self.user)
    }

    /// This member's JID in `room` (its nick is its user name).
    fn occupant(&self, room: &str) -> String {
        format!("{room}/{}", self.user)
    }

    /// Opens (or, after logging in, restarts) the stream and reads the server's features.
    async fn open_stream(&mut self) -> anyhow::Result<()> {
        self.send(format!("<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")).await?;
        self.expect("opening the stream", |e| e.name == "open").await?;
        self.expect("reading the stream features", |e| e.name == "features").await?;
        Ok(())
    }

    /// Sends an iq with id `id` and waits for its result; its error fails `step`.
    async fn request(&mut self, iq: String, id: &str, step: &str) -> anyhow::Result<Element> {
        self.send(iq).await?;
        let answer = self.expect(step, |e| e.name == "iq" && e.attr("id") == Some(id)).await?;
        if answer.attr("type") != Some("result") {
            bail!("{step} {}: {}", self.user, answer.error_condition());
        }
        Ok(answer)
    }

    /// A round trip to the server: everything sent before has been handled.
    async fn ping(&mut self) -> anyhow::Result<()> {
        let ping = format!("<iq type='get' id='ping' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>");
        self.request(ping, "ping", "pinging the server").await.map(drop)
    }

    /// Turns stream management on; stanzas are counted from here.
    async fn enable_acks(&mut self) -> anyhow::Result<()> {
        self.send(format!("<enable xmlns='{SM}'/>")).await?;
        let answer =
            self.expect("enabling stream management", |e| e.name == "enabled" || e.name == "failed").await?;
        if answer.name == "failed" {
            bail!("the server refused stream management for {}: {}", self.user, answer.first_child_name());
        }
        Ok(())
    }

    /// Joins `room` without history and waits for the room's presence for this member;
    /// true if the join created the room.
    async fn join(&mut self, room: &str) -> anyhow::Result<bool> {
        let me = self.occupant(room);
        self.send(format!(
            "<presence to='{}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>",
            escape(&me)
        ))
        .await?;
        let step = format!("joining {room}");
        let answer = self
            .expect(&step, |e| {
                let own = e.child(MUC_USER, "x").is_some_and(|x| x.has_status("110"));
                e.name == "presence"
                    && e.attr("from") == Some(&me)
                    && (own || e.attr("type") == Some("error"))
            })
            .await?;
        if answer.attr("type") == Some("error") {
            bail!("{step} as {}: {}", self.user, answer.error_condition());
        }
        Ok(answer.child(MUC_USER, "x").is_some_and(|x| x.has_status("201")))
    }

    /// Accepts the default configuration of a room just created (an instant room), which
    /// unlocks it for the others.
    async fn configure(&mut self, room: &str) -> anyhow::Result<()> {
        let iq = format!(
            "<iq type='set' id='cfg' to='{}'><query xmlns='{MUC_OWNER}'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>",
            escape(room)
        );
        self.request(iq, "cfg", "configuring the room").await.map(drop)
    }

    async fn send(&mut self, xml: String) -> anyhow::Result<()> {
        self.ws.send(Message::text(xml)).await.with_context(|| format!("sending on {}'s stream", self.user))
    }

    /// Reads until an element `wanted` accepts, answering the server's iqs on the way.
    async fn expect(&mut self, step: &str, wanted: impl Fn(&Element) -> bool) -> anyhow::Result<Element> {
        let user = self.user.clone();
        let wait = async {
            loop {
                let element = self.recv().await?;
                if wanted(&element) {
                    return Ok(element);
                }
                if element.name == "error" || element.name == "close" {
                    bail!("the server ended the stream: {}", element.first_child_name());
                }
                if let Some(reply) = answer_iq(&element) {
                    self.send(reply).await?;
                }
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, wait)
            .await
            .map_err(|_| anyhow!("no answer in {STEP_TIMEOUT:?}"))
            .and_then(|r| r)
            .with_context(|| format!("{step} ({user})"))
    }

    /// The next element from the server.
    async fn recv(&mut self) -> anyhow::Result<Element> {
        loop {
            if let Some(element) = self.backlog.pop_front() {
                return Ok(element);
            }
            match self.ws.next().await {
                None => bail!("the server closed the WebSocket"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => self.backlog.extend(Element::parse_all(text.as_str())?),
                Some(Ok(Message::Close(frame))) => bail!("the server closed the WebSocket: {frame:?}"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Hands the stream to a reader and a writer task.
    fn into_link(self, route: Route) -> Box<dyn Link> {
        let (sink, stream) = self.ws.split();
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let acks = route.acks.then(|| Arc::new(Mutex::new(VecDeque::new())));
        tokio::spawn(write(sink, outgoing, acks.clone()));
        let reader = Reader {
            events: events_tx,
            outbox: outbox.clone(),
            reflection: route.reflection.clone(),
            acks,
            received: 0,
        };
        let reader = tokio::spawn(reader.run(stream, self.backlog));
        Box::new(Member { route, outbox, events, reader })
    }
}

/// A socket to `server` (plain `ws://`), from `local` when given, asking for the `xmpp`
/// subprotocol.
async fn open_socket(server: &url::Url, local: Option<IpAddr>) -> anyhow::Result<Socket> {
    anyhow::ensure!(server.scheme() == "ws", "the ejabberd target speaks ws:// only, not {server}");
    let host = server.host_str().context("no host in the server url")?;
    let port = server.port_or_known_default().unwrap_or(80);
    let stream = match local {
        Some(local) => {
            let remote = tokio::net::lookup_host((host, port))
                .await?
                .find(|a| a.is_ipv4() == local.is_ipv4())
                .with_context(|| format!("{host} has no address like {local}"))?;
            let socket = if local.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }?;
            socket.bind(SocketAddr::new(local, 0))?;
            socket.connect(remote).await?
        }
        None => TcpStream::connect((host, port)).await?,
    };
    stream.set_nodelay(true)?;
    let mut request = server.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// Where a member's messages go, and how its own come back.
struct Route {
    /// The room, or the other member's bare JID.
    to: String,
    /// The message type: `groupchat` or `chat`.
    kind: &'static str,
    /// This member's JID in its room: a message from it is the reflection of its own.
    reflection: Option<String>,
    /// Ask for a stream management ack after each message (stream management is on).
    acks: bool,
}

/// Messages sent and not yet acknowledged: (stanza number since stream management was
/// enabled, send number).
type Unacked = Arc<Mutex<VecDeque<(u64, u64)>>>;

/// What the writer task sends.
enum Outgoing {
    /// A stanza (counted by stream management), message number `send` if it is one.
    Stanza { xml: String, send: Option<u64> },
    /// Anything else: `<r/>`, `<a/>`.
    Nonza(String),
    /// Close the stream and stop.
    Close,
}

/// A member's live stream.
struct Member {
    route: Route,
    outbox: mpsc::UnboundedSender<Outgoing>,
    events: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

impl Link for Member {
    fn send<'a>(&'a mut self, k: u64, id: &'a str, body: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (to, id, body) = (escape(&self.route.to), escape(id), escape(body));
            let xml = format!(
                "<message type='{}' to='{to}' id='{id}'><body>{body}</body>\
                 <origin-id xmlns='{ORIGIN_ID}' id='{id}'/></message>",
                self.route.kind
            );
            let closed = |_| anyhow!("the XMPP stream is closed");
            self.outbox.send(Outgoing::Stanza { xml, send: Some(k) }).map_err(closed)?;
            if self.route.acks {
                self.outbox.send(Outgoing::Nonza(format!("<r xmlns='{SM}'/>"))).map_err(closed)?;
            }
            Ok(())
        })
    }

    fn next(&mut self) -> BoxFuture<'_, anyhow::Result<Event>> {
        Box::pin(async move { self.events.recv().await.context("the XMPP stream is closed") })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = self.outbox.send(Outgoing::Close);
    }
}

/// The writer task: sends what is queued, a batch per flush, and numbers the stanzas as
/// the server's stream management does.
async fn write(
    mut sink: SplitSink<Socket, Message>,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    unacked: Option<Unacked>,
) {
    let mut stanzas = 0u64;
    while let Some(first) = outbox.recv().await {
        let mut item = Some(first);
        while let Some(next) = item.take() {
            let xml = match next {
                Outgoing::Stanza { xml, send } => {
                    stanzas += 1;
                    // Recorded before it is sent, so the ack cannot come first.
                    if let (Some(unacked), Some(k)) = (&unacked, send) {
                        unacked.lock().push_back((stanzas, k));
                    }
                    xml
                }
                Outgoing::Nonza(xml) => xml,
                Outgoing::Close => {
                    let _ = sink.send(Message::text(format!("<close xmlns='{FRAMING}'/>"))).await;
                    let _ = sink.close().await;
                    return;
                }
            };
            if sink.feed(Message::text(xml)).await.is_err() {
                return;
            }
            item = outbox.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// The reader task's state.
struct Reader {
    events: mpsc::UnboundedSender<Event>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    reflection: Option<String>,
    acks: Option<Unacked>,
    /// Stanzas received since stream management was enabled, for answering `<r/>`.
    received: u64,
}

impl Reader {
    /// Handles `backlog`, then every frame, until the stream ends or the link is dropped.
    async fn run(mut self, mut stream: SplitStream<Socket>, backlog: VecDeque<Element>) {
        for element in backlog {
            if !self.handle(element) {
                return;
            }
        }
        while let Some(Ok(message)) = stream.next().await {
            let elements = match message {
                Message::Text(text) => Element::parse_all(text.as_str()),
                Message::Close(_) => return,
                _ => continue,
            };
            let elements = match elements {
                Ok(elements) => elements,
                Err(_) => {
                    let code = "unparsable-frame".to_owned();
                    if self.events.send(Event::Refused { send: None, code }).is_err() {
                        return;
                    }
                    continue;
                }
            };
            for element in elements {
                if !self.handle(element) {
                    return;
                }
            }
        }
    }

    /// Turns one element into events (and answers); false once the stream or link is gone.
    fn handle(&mut self, element: Element) -> bool {
        let mut events = Vec::with_capacity(1);
        match element.name.as_str() {
            "message" => {
                self.received += 1;
                events.push(self.message(&element));
            }
            "presence" | "iq" => {
                self.received += 1;
                if let Some(reply) = answer_iq(&element) {
                    let _ = self.outbox.send(Outgoing::Stanza { xml: reply, send: None });
                }
                events.push(match element.attr("type") {
                    Some("error") => Event::Refused { send: None, code: element.error_condition() },
                    _ => Event::Other,
                });
            }
            "r" => {
                let _ = self.outbox.send(Outgoing::Nonza(format!("<a xmlns='{SM}' h='{}'/>", self.received)));
                events.push(Event::Other);
            }
            "a" => {
                let h: Option<u64> = element.attr("h").and_then(|h| h.parse().ok());
                if let (Some(unacked), Some(h)) = (&self.acks, h) {
                    let mut unacked = unacked.lock();
                    while let Some(&(_, k)) = unacked.front().filter(|(n, _)| *n <= h) {
                        unacked.pop_front();
                        events.push(Event::Accepted { send: k });
                    }
                }
            }
            // A stream error: say which, then the stream is over.
            "error" => {
                let code = format!("stream:{}", element.first_child_name());
                let _ = self.events.send(Event::Refused { send: None, code });
                return false;
            }
            "close" => return false,
            _ => events.push(Event::Other),
        }
        events.into_iter().all(|event| self.events.send(event).is_ok())
    }

    fn message(&self, message: &Element) -> Event {
        let id = message.child(ORIGIN_ID, "origin-id").and_then(|o| o.attr("id")).or(message.attr("id"));
        if message.attr("type") == Some("error") {
            let send = id.and_then(parse_message_id).map(|(_, k)| k);
            return Event::Refused { send, code: message.error_condition() };
        }
        // Only live messages count: a body, and no <delay/> (history replayed on a join).
        let live = message.children.iter().any(|c| c.name == "body")
            && !message.children.iter().any(|c| c.name == "delay");
        let Some(id) = id.filter(|_| live) else {
            return Event::Other;
        };
        if self.reflection.is_some() && message.attr("from") == self.reflection.as_deref() {
            return match parse_message_id(id) {
                Some((_, k)) => Event::Accepted { send: k },
                None => Event::Other,
            };
        }
        Event::Delivered { id: id.to_owned(), seq: None }
    }
}

/// The answer an iq `get` or `set` from the server needs: a result to a ping or a roster
/// push, an error to anything else. None for everything that is not such an iq.
fn answer_iq(iq: &Element) -> Option<String> {
    let kind = iq.attr("type")?;
    if iq.name != "iq" || (kind != "get" && kind != "set") {
        return None;
    }
    let id = escape(iq.attr("id").unwrap_or_default());
    let to = iq.attr("from").map(|from| format!(" to='{}'", escape(from))).unwrap_or_default();
    let understood =
        iq.child("urn:xmpp:ping", "ping").is_some() || iq.child("jabber:iq:roster", "query").is_some();
    Some(if understood {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    })
}

/// An XML element, as much as this client reads of it: its local name, attributes (a
/// namespace is its `xmlns` attribute) and child elements; text is skipped.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
}

impl Element {
    /// The top-level elements of one frame (RFC 7395 puts one in each).
    fn parse_all(xml: &str) -> anyhow::Result<Vec<Element>> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut open: Vec<Element> = Vec::new();
        let mut done = Vec::new();
        loop {
            let closed = match reader.read_event()? {
                Xml::Start(start) => {
                    open.push(Element::from_start(&start)?);
                    None
                }
                Xml::Empty(start) => Some(Element::from_start(&start)?),
                Xml::End(_) => Some(open.pop().context("an end tag without a start")?),
                Xml::Eof => break,
                _ => None,
            };
            if let Some(element) = closed {
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => done.push(element),
                }
            }
        }
        anyhow::ensure!(open.is_empty(), "an unclosed element in a frame");
        Ok(done)
    }

    fn from_start(start: &BytesStart) -> anyhow::Result<Element> {
        let name = String::from_utf8(start.local_name().as_ref().to_vec())?;
        let mut attrs = Vec::new();
        for attr in start.attributes() {
            let attr = attr?;
            let key = String::from_utf8(attr.key.local_name().as_ref().to_vec())?;
            attrs.push((key, attr.unescape_value()?.into_owned()));
        }
        Ok(Element { name, attrs, ..Element::default() })
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The child named `name` in namespace `xmlns`.
    fn child(&self, xmlns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name && c.attr("xmlns") == Some(xmlns))
    }

    /// Whether this MUC `<x/>` carries `<status code='code'/>`.
    fn has_status(&self, code: &str) -> bool {
        self.children.iter().any(|c| c.name == "status" && c.attr("code") == Some(code))
    }

    fn first_child_name(&self) -> String {
        self.children.first().map_or_else(|| "no reason given".to_owned(), |c| c.name.clone())
    }

    /// The defined condition of this stanza's `<error/>` (RFC 6120 8.3.3).
    fn error_condition(&self) -> String {
        self.children
            .iter()
            .find(|c| c.name == "error")
            .and_then(|e| e.children.iter().find(|c| c.name != "text"))
            .map_or_else(|| "undefined-condition".to_owned(), |c| c.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(
        reflection: Option<&str>,
    ) -> (Reader, mpsc::UnboundedReceiver<Event>, mpsc::UnboundedReceiver<Outgoing>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let acks = Some(Arc::new(Mutex::new(VecDeque::from([(1, 0), (3, 1)]))));
        let reader = Reader { events, outbox, reflection: reflection.map(str::to_owned), acks, received: 0 };
        (reader, events_rx, outbox_rx)
    }

    fn feed(reader: &mut Reader, xml: &str) {
        for element in Element::parse_all(xml).unwrap() {
            assert!(reader.handle(element));
        }
    }

    #[test]
    fn parses_a_stanza() {
        let xml = "<message xmlns='jabber:client' from='r@c/n' id='x&amp;y'><body>hi &lt;3</body>\
                   <origin-id xmlns='urn:xmpp:sid:0' id='p1-2'/></message>";
        let elements = Element::parse_all(xml).unwrap();
        assert_eq!(elements.len(), 1);
        let m = &elements[0];
        assert_eq!((m.name.as_str(), m.attr("id")), ("message", Some("x&y")));
        assert_eq!(m.children[0].name, "body");
        assert_eq!(m.child(ORIGIN_ID, "origin-id").and_then(|o| o.attr("id")), Some("p1-2"));
        assert!(Element::parse_all("<a><b></a>").is_err());
    }

    #[test]
    fn maps_messages_to_events() {
        let (mut r, mut events, _out) = reader(Some("room@conference.localhost/me"));
        let msg = |from: &str, extra: &str| {
            format!(
                "<message type='groupchat' from='{from}' id='p0-7'><body>b</body>\
                 <origin-id xmlns='urn:xmpp:sid:0' id='p0-5'/>{extra}</message>"
            )
        };
        feed(&mut r, &msg("room@conference.localhost/me", ""));
        assert_eq!(events.try_recv().unwrap(), Event::Accepted { send: 5 });
        feed(&mut r, &msg("room@conference.localhost/other", ""));
        assert_eq!(events.try_recv().unwrap(), Event::Delivered { id: "p0-5".into(), seq: None });
        feed(&mut r, &msg("room@conference.localhost/other", "<delay xmlns='urn:xmpp:delay'/>"));
        assert_eq!(events.try_recv().unwrap(), Event::Other);
        feed(
            &mut r,
            "<message type='error' id='p0-9'><error type='wait'>\
             <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        );
        let refused = Event::Refused { send: Some(9), code: "resource-constraint".into() };
        assert_eq!(events.try_recv().unwrap(), refused);
    }

    #[test]
    fn maps_acks_to_sends_and_answers_requests() {
        let (mut r, mut events, mut out) = reader(None);
        feed(&mut r, "<iq type='get' id='s1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert!(matches!(out.try_recv().unwrap(), Outgoing::Stanza { xml, .. } if xml.contains("result")));
        feed(&mut r, "<r xmlns='urn:xmpp:sm:3'/>");
        assert!(matches!(out.try_recv().unwrap(), Outgoing::Nonza(xml) if xml.contains("h='1'")));
        // Stanza 2 was the answer to the ping: h='2' acks send 0 only, h='3' send 1.
        feed(&mut r, "<a xmlns='urn:xmpp:sm:3' h='2'/>");
        feed(&mut r, "<a xmlns='urn:xmpp:sm:3' h='3'/>");
        let acked: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(
            acked,
            [Event::Other, Event::Other, Event::Accepted { send: 0 }, Event::Accepted { send: 1 }]
        );
    }
}
