//! [`Connection`]: one raw WebSocket speaking JSON frames.

use chattr_api::v1::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{ClientError, ClientResult};

/// One WebSocket to `/v1/ws`.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Connection {
    /// Opens a socket to the server at `base` (http → ws, https → wss). Sends no frame.
    pub async fn open(base: &url::Url) -> ClientResult<Self> {
        let url = ws_url(base)?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self { ws })
    }

    /// Like [`Connection::open`], from the local address `local` (a load generator spreads
    /// its sockets over 127.0.0.x so as not to run out of ports). Plain `ws://` only.
    pub async fn open_from(base: &url::Url, local: std::net::IpAddr) -> ClientResult<Self> {
        let url = ws_url(base)?;
        let transport = |e: std::io::Error| ClientError::Transport(e.to_string());
        let host = url.host_str().ok_or_else(|| ClientError::Transport("no host in the url".to_owned()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let remote = tokio::net::lookup_host((host, port))
            .await
            .map_err(transport)?
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| ClientError::Transport(format!("{host} has no address like {local}")))?;
        let socket =
            if local.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                .map_err(transport)?;
        socket.bind(std::net::SocketAddr::new(local, 0)).map_err(transport)?;
        let stream = socket.connect(remote).await.map_err(transport)?;
        stream.set_nodelay(true).map_err(transport)?;
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self { ws })
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> ClientResult<()> {
        let text = serde_json::to_string(frame).map_err(|e| ClientError::Transport(e.to_string()))?;
        self.send_text(text).await
    }

    /// Sends arbitrary text (tests use it for malformed frames).
    pub async fn send_text(&mut self, text: String) -> ClientResult<()> {
        self.ws.send(Message::text(text)).await.map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// Sends a binary frame (tests).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> ClientResult<()> {
        self.ws.send(Message::binary(bytes)).await.map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// The next server frame; `Closed` with the server's code when it closes.
    pub async fn next(&mut self) -> ClientResult<ServerFrame> {
        loop {
            let msg = match self.ws.next().await {
                None => return Err(ClientError::Closed { code: 1006, reason: "connection lost".to_owned() }),
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| ClientError::Transport(format!("bad frame {text}: {e}")));
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(ClientError::Closed { code, reason });
                }
                _ => continue,
            }
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// `/v1/ws` on the server at `base`, with the WebSocket scheme.
fn ws_url(base: &url::Url) -> ClientResult<url::Url> {
    let mut url = base.join("/v1/ws").map_err(|e| ClientError::Transport(e.to_string()))?;
    let scheme = if base.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).map_err(|_| ClientError::Transport("cannot set ws scheme".to_owned()))?;
    Ok(url)
}
