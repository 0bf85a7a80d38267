//! Kubernetes' streaming protocols over WebSocket (what kubectl 1.30+ tries first):
//!
//! - `v5.channel.k8s.io` / `v4.channel.k8s.io` for exec and attach: binary messages whose
//!   first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4
//!   terminal resizes as `{"Width":w,"Height":h}`); v5 adds channel 255, on which the
//!   client closes one of its channels (`[255, 0]` ends stdin).
//! - `SPDY/3.1+portforward.k8s.io` for port-forward: the messages tunnel a SPDY connection
//!   (kubectl 1.31+), served by [`super::spdy`].

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{ClientEvent, ServerEvent, Session};
use crate::server::{full, Body, HttpError};

/// exec/attach channels with a close signal.
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
/// exec/attach channels.
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// SPDY port-forwarding tunnelled in WebSocket messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The channel of the client's stdin.
const STDIN: u8 = 0;
/// The channel of stdout.
const STDOUT: u8 = 1;
/// The channel of stderr.
const STDERR: u8 = 2;
/// The channel of the final Status.
const ERROR: u8 = 3;
/// The channel of terminal resizes.
const RESIZE: u8 = 4;
/// v5: the channel on which the client closes one of its channels.
const CLOSE: u8 = 255;

/// A close with status 1000: clients (client-go) read anything else as an error of every
/// channel.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Whether the request asks to upgrade to WebSocket.
pub fn is_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake with the first of `supported` the client offers: the 101
/// response and the protocol chosen.
pub fn accept(
    request: &Request<Incoming>,
    supported: &[&str],
) -> Result<(Response<Body>, String), HttpError> {
    let key = request
        .headers()
        .get("sec-websocket-key")
        .ok_or_else(|| HttpError::bad_request("missing Sec-WebSocket-Key"))?;
    let offered: Vec<String> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let protocol = supported
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "none of the WebSocket subprotocols {offered:?} is supported (want one of {supported:?})"
            ))
        })?;
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    let value = |s: &str| hyper::header::HeaderValue::from_str(s).expect("a header value");
    headers.insert(hyper::header::CONNECTION, value("Upgrade"));
    headers.insert(hyper::header::UPGRADE, value("websocket"));
    headers.insert(
        "sec-websocket-accept",
        value(&derive_accept_key(key.as_bytes())),
    );
    headers.insert("sec-websocket-protocol", value(protocol));
    Ok((response, protocol.to_string()))
}

/// Runs the channel protocol over an upgraded connection.
pub async fn channels(upgraded: Upgraded, protocol: &str) -> Session {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (events_tx, events) = mpsc::channel(64);
    let (out, mut out_rx) = mpsc::channel::<ServerEvent>(64);
    let v5 = protocol == V5_CHANNEL;
    tokio::spawn(async move {
        while let Some(message) = source.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("exec WebSocket: {e}");
                    break;
                }
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            let event = match channel {
                STDIN => ClientEvent::Stdin(Bytes::copy_from_slice(payload)),
                RESIZE => match super::parse_resize(payload) {
                    Some((width, height)) => ClientEvent::Resize { width, height },
                    None => continue,
                },
                CLOSE if v5 && payload.first() == Some(&STDIN) => ClientEvent::StdinClosed,
                _ => continue,
            };
            if events_tx.send(event).await.is_err() {
                break;
            }
        }
        let _ = events_tx.send(ClientEvent::Gone).await;
    });
    tokio::spawn(async move {
        while let Some(event) = out_rx.recv().await {
            let (channel, payload) = match event {
                ServerEvent::Stdout(b) => (STDOUT, b),
                ServerEvent::Stderr(b) => (STDERR, b),
                ServerEvent::Status(s) => (ERROR, Bytes::from(s.to_string())),
            };
            let mut message = Vec::with_capacity(payload.len() + 1);
            message.push(channel);
            message.extend_from_slice(&payload);
            if sink.send(Message::binary(message)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    Session { events, out }
}

/// The bytes tunnelled in an upgraded connection's binary messages, as a plain stream.
pub async fn tunnel(upgraded: Upgraded) -> tokio::io::DuplexStream {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut ours_r, mut ours_w) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            if ours_w.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = ours_w.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match ours_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    theirs
}
