//! Port-forwarding over SPDY (`portforward.k8s.io`, also tunnelled in WebSocket by
//! kubectl 1.31+): for each local connection the client opens a pair of streams, `error`
//! and `data`, with the same `requestID` and `port` headers; the kubelet connects to that
//! port on the pod's loopback, copies bytes both ways on the data stream, and reports a
//! failure as text on the error stream.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::spdy::{self, Sender, Stream};
use crate::Runtime;

/// Forwards the connections of one port-forward session to one pod.
pub struct Forwarder {
    /// The runtime that connects inside the sandbox.
    pub runtime: Arc<dyn Runtime>,
    /// The pod's sandbox.
    pub sandbox: String,
    /// The pod's name (for messages).
    pub pod: String,
    /// The pod's UID (for messages).
    pub uid: String,
}

/// The pair a stream belongs to: its `requestID`, else (older clients) the error
/// stream's id, the data stream being the next one the client opened.
fn pair_key(stream: &Stream) -> String {
    match stream.header("requestid") {
        Some(id) => id.to_string(),
        None if stream.header("streamtype") == Some("data") => {
            stream.id.saturating_sub(2).to_string()
        }
        None => stream.id.to_string(),
    }
}

impl Forwarder {
    /// Serves a SPDY connection until the client closes it.
    pub async fn serve<T>(self, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut streams, sender) = spdy::serve(io);
        let this = Arc::new(self);
        let mut pairs: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
        while let Some(stream) = streams.recv().await {
            let key = pair_key(&stream);
            let slot = pairs.entry(key.clone()).or_default();
            match stream.header("streamtype") {
                Some("error") => slot.0 = Some(stream),
                Some("data") => slot.1 = Some(stream),
                other => {
                    tracing::debug!("port-forward: unexpected stream type {other:?}");
                    sender.reset(stream.id);
                    continue;
                }
            }
            if matches!(pairs.get(&key), Some((Some(_), Some(_)))) {
                if let Some((Some(error), Some(data))) = pairs.remove(&key) {
                    tokio::spawn(this.clone().forward(error, data, sender.clone()));
                }
            }
        }
        sender.close();
    }

    /// Forwards one connection.
    async fn forward(self: Arc<Self>, error: Stream, mut data: Stream, sender: Sender) {
        let port = data
            .header("port")
            .or(error.header("port"))
            .and_then(|p| p.parse::<u16>().ok());
        let connected = match port {
            Some(port) => {
                let (runtime, sandbox) = (self.runtime.clone(), self.sandbox.clone());
                tokio::task::spawn_blocking(move || runtime.port_forward(&sandbox, port))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .and_then(|tcp| {
                        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
                        tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())
                    })
            }
            None => Err("invalid port".to_string()),
        };
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err(e) => {
                let message = format!(
                    "error forwarding port {} to pod {}, uid {}: {e}",
                    port.unwrap_or(0),
                    self.pod,
                    self.uid
                );
                sender.data(error.id, Bytes::from(message));
                sender.finish(error.id);
                sender.finish(data.id);
                return;
            }
        };
        let (mut from_pod, mut to_pod) = tcp.into_split();
        let upstream = tokio::spawn(async move {
            while let Some(bytes) = data.data.recv().await {
                if to_pod.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = to_pod.shutdown().await;
        });
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !sender.data(data.id, Bytes::copy_from_slice(&buf[..n])) {
                        break;
                    }
                }
            }
        }
        // kubectl waits for the error stream to end once the data stream did; the
        // client's direction goes on until it closes it.
        sender.finish(data.id);
        sender.finish(error.id);
        drop(upstream);
    }
}
