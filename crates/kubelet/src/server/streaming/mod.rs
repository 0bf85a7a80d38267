//! exec, attach and port-forward: the request is checked, the connection upgraded to
//! WebSocket ([`websocket`], kubectl 1.30+) or SPDY/3.1 ([`spdy`], older kubectl and the
//! fallback), and the process's stdio streamed over it by one driver ([`run`]) whatever
//! the transport. Port-forwarding is in [`portforward`].

pub mod portforward;
pub mod spdy;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::{full, Body, HttpError, Query, State};
use crate::cri::{ExecRequest, StreamingProcess};

/// `X-Stream-Protocol-Version` of exec and attach over SPDY (Status JSON on the error
/// stream, JSON resizes).
pub const SPDY_V4_CHANNEL: &str = "v4.channel.k8s.io";
/// `X-Stream-Protocol-Version` of port-forward over SPDY.
pub const SPDY_PORT_FORWARD: &str = "portforward.k8s.io";
/// How long the client has to open its SPDY streams.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a terminal session waits for the client's first resize.
const FIRST_RESIZE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long output still drains after the process exited (a background child may hold
/// the pipes open).
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The pod (and container) a streaming request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name (empty for port-forward).
    pub container: String,
}

impl Target {
    /// A target from path segments.
    pub fn container(namespace: &str, pod: &str, container: &str) -> Target {
        Target {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }
}

/// What the client sends during exec or attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Bytes for stdin.
    Stdin(Bytes),
    /// No more stdin.
    StdinClosed,
    /// The terminal's new size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The connection is gone.
    Gone,
}

/// What the kubelet sends during exec or attach.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// Bytes of stdout (or the terminal).
    Stdout(Bytes),
    /// Bytes of stderr.
    Stderr(Bytes),
    /// The outcome, a `metav1.Status`; the last event.
    Status(Value),
}

/// One exec or attach session, whatever the transport: the client's events in, the
/// server's out. Dropping `out` ends the session (the transport closes the connection).
pub struct Session {
    /// The client's events; [`ClientEvent::Gone`] when the connection ends (the channel
    /// may close before, when the client has nothing more to send).
    pub events: mpsc::Receiver<ClientEvent>,
    /// The server's events.
    pub out: mpsc::Sender<ServerEvent>,
}

/// Which streams the client asked for (`stdin`, `stdout`, `stderr`, `tty` in the query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (never with a tty).
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

impl StreamOptions {
    /// Reads the options; at least one stream must be asked for.
    pub fn from_query(query: &Query) -> Result<StreamOptions, HttpError> {
        let tty = query.flag("tty");
        let opts = StreamOptions {
            stdin: query.flag("stdin") || query.flag("input"),
            stdout: query.flag("stdout") || query.flag("output"),
            stderr: (query.flag("stderr") || query.flag("error")) && !tty,
            tty,
        };
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err(HttpError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(opts)
    }
}

/// A resize message: `{"Width":80,"Height":24}`.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    Some((
        v.get("Width")?.as_u64()? as u16,
        v.get("Height")?.as_u64()? as u16,
    ))
}

/// The Status the session ends with, for an exit code (kubectl prints `command terminated
/// with exit code N` and exits N from the `ExitCode` cause).
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status of a session that failed before or while running.
pub fn error_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

/// How the client asked to upgrade.
enum Upgrade {
    WebSocket(Response<Body>, String),
    Spdy(Response<Body>),
}

/// Picks the transport and builds its 101 response; `websocket` and `spdy` are the
/// protocols supported on each.
fn negotiate(
    request: &Request<Incoming>,
    websocket: &[&str],
    spdy: &str,
) -> Result<Upgrade, HttpError> {
    if websocket::is_upgrade(request) {
        let (response, protocol) = websocket::accept(request, websocket)?;
        return Ok(Upgrade::WebSocket(response, protocol));
    }
    let upgrade = request
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Err(HttpError::bad_request("Upgrade request required"));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&spdy) {
        return Err(HttpError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "unable to negotiate a stream protocol: client offered {offered:?}, server supports [\"{spdy}\"]"
            ),
        });
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    let value = |s: &str| hyper::header::HeaderValue::from_str(s).expect("a header value");
    headers.insert(hyper::header::CONNECTION, value("Upgrade"));
    headers.insert(hyper::header::UPGRADE, value("SPDY/3.1"));
    headers.insert("x-stream-protocol-version", value(spdy));
    Ok(Upgrade::Spdy(response))
}

/// What an exec or attach session starts once the client is connected.
type Start = Box<dyn FnOnce() -> crate::cri::Result<StreamingProcess> + Send>;

/// Upgrades and, in the background, runs `start`'s process over the session.
fn upgrade_and_run(
    mut request: Request<Incoming>,
    opts: StreamOptions,
    start: Start,
) -> Result<Response<Body>, HttpError> {
    let upgrade = negotiate(
        &request,
        &[websocket::V5_CHANNEL, websocket::V4_CHANNEL],
        SPDY_V4_CHANNEL,
    )?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (response, protocol) = match upgrade {
        Upgrade::WebSocket(response, protocol) => (response, Some(protocol)),
        Upgrade::Spdy(response) => (response, None),
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("streaming upgrade failed: {e}");
                return;
            }
        };
        let mut session = match protocol {
            Some(protocol) => websocket::channels(upgraded, &protocol).await,
            None => match spdy_channels(TokioIo::new(upgraded), opts).await {
                Some(session) => session,
                None => return,
            },
        };
        // A terminal starts at the client's size: its first resize comes right after
        // the connection, so it is waited for (briefly) before the process starts.
        let mut early = Vec::new();
        if opts.tty {
            if let Ok(Some(event)) =
                tokio::time::timeout(FIRST_RESIZE_TIMEOUT, session.events.recv()).await
            {
                early.push(event);
            }
        }
        run(session, start(), early).await;
    });
    Ok(response)
}

/// `/exec/{ns}/{pod}/{container}?command=...`.
pub async fn exec(
    state: Arc<State>,
    request: Request<Incoming>,
    target: Target,
    query: &Query,
) -> Result<Response<Body>, HttpError> {
    let opts = StreamOptions::from_query(query)?;
    let command = query.all("command");
    if command.is_empty() {
        return Err(HttpError::bad_request("you must specify a command"));
    }
    let pod = state.pod(&target.namespace, &target.pod).await?;
    let id = state.running_container(&pod, &target.container)?;
    let exec = ExecRequest {
        command,
        stdin: opts.stdin,
        tty: opts.tty,
    };
    let runtime = state.runtime.clone();
    upgrade_and_run(request, opts, Box::new(move || runtime.exec(&id, &exec)))
}

/// `/attach/{ns}/{pod}/{container}`.
pub async fn attach(
    state: Arc<State>,
    request: Request<Incoming>,
    target: Target,
    query: &Query,
) -> Result<Response<Body>, HttpError> {
    let opts = StreamOptions::from_query(query)?;
    let pod = state.pod(&target.namespace, &target.pod).await?;
    let id = state.running_container(&pod, &target.container)?;
    let attach = crate::cri::AttachRequest {
        stdin: opts.stdin,
        stdin_once: stdin_once(&pod, &target.container),
        tty: opts.tty,
    };
    let runtime = state.runtime.clone();
    upgrade_and_run(
        request,
        opts,
        Box::new(move || {
            let mut process = runtime.attach(&id, &attach)?;
            // The session ends when the client leaves; the container goes on (a
            // detach reports success, as the kubelet does).
            process.exit = Box::pin(async move {
                let _ = process.exit.await;
                Ok(0)
            });
            Ok(process)
        }),
    )
}

/// Whether `pod`'s container `name` (of any kind) has `stdinOnce`.
fn stdin_once(pod: &k8s_openapi::api::core::v1::Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .map(|c| c.stdin_once)
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .map(|c| c.stdin_once)
        })
        .flatten()
        .unwrap_or(false)
}

/// `/portForward/{ns}/{pod}`.
pub async fn port_forward(
    state: Arc<State>,
    mut request: Request<Incoming>,
    target: Target,
    _query: &Query,
) -> Result<Response<Body>, HttpError> {
    let pod = state.pod(&target.namespace, &target.pod).await?;
    let sandbox = state.sandbox(&pod)?;
    let upgrade = negotiate(
        &request,
        &[websocket::PORT_FORWARD_TUNNEL],
        SPDY_PORT_FORWARD,
    )?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (response, tunnelled) = match upgrade {
        Upgrade::WebSocket(response, _) => (response, true),
        Upgrade::Spdy(response) => (response, false),
    };
    let forwarder = portforward::Forwarder {
        runtime: state.runtime.clone(),
        sandbox,
        pod: target.pod,
        uid: pod.metadata.uid.unwrap_or_default(),
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("port-forward upgrade failed: {e}");
                return;
            }
        };
        if tunnelled {
            forwarder.serve(websocket::tunnel(upgraded).await).await;
        } else {
            forwarder.serve(TokioIo::new(upgraded)).await;
        }
    });
    Ok(response)
}

/// Waits for the SPDY streams exec/attach needs (`streamtype` error, stdin, stdout,
/// stderr, resize) and turns them into a session.
async fn spdy_channels<T>(io: T, opts: StreamOptions) -> Option<Session>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut streams, sender) = spdy::serve(io);
    let (events_tx, events) = mpsc::channel(64);
    let expected =
        1 + opts.stdin as usize + opts.stdout as usize + opts.stderr as usize + opts.tty as usize;
    let mut by_type: std::collections::HashMap<String, spdy::Stream> = Default::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while by_type.len() < expected {
        tokio::select! {
            stream = streams.recv() => {
                let stream = stream?;
                let kind = stream.header("streamtype").unwrap_or("").to_string();
                by_type.insert(kind, stream);
            }
            _ = &mut deadline => {
                tracing::debug!("SPDY client opened {} of {expected} streams in time", by_type.len());
                sender.close();
                return None;
            }
        }
    }
    let id_of = |kind: &str| by_type.get(kind).map(|s| s.id);
    let (error, stdout, stderr) = (id_of("error")?, id_of("stdout"), id_of("stderr"));
    {
        // The stream channel ends with the connection.
        let events_tx = events_tx.clone();
        tokio::spawn(async move {
            while streams.recv().await.is_some() {}
            let _ = events_tx.send(ClientEvent::Gone).await;
        });
    }
    if let Some(mut stdin) = by_type.remove("stdin") {
        let events_tx = events_tx.clone();
        tokio::spawn(async move {
            while let Some(data) = stdin.data.recv().await {
                if events_tx.send(ClientEvent::Stdin(data)).await.is_err() {
                    return;
                }
            }
            let _ = events_tx.send(ClientEvent::StdinClosed).await;
        });
    }
    if let Some(mut resize) = by_type.remove("resize") {
        let events_tx = events_tx.clone();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(data) = resize.data.recv().await {
                pending.extend_from_slice(&data);
                // Resizes are JSON objects written one after another.
                let mut values =
                    serde_json::Deserializer::from_slice(&pending).into_iter::<Value>();
                let mut used = 0;
                let mut sizes = Vec::new();
                while let Some(Ok(v)) = values.next() {
                    used = values.byte_offset();
                    if let Some(size) = parse_resize(v.to_string().as_bytes()) {
                        sizes.push(size);
                    }
                }
                pending.drain(..used);
                for (width, height) in sizes {
                    if events_tx
                        .send(ClientEvent::Resize { width, height })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    drop(events_tx);
    let (out, mut out_rx) = mpsc::channel::<ServerEvent>(64);
    tokio::spawn(async move {
        while let Some(event) = out_rx.recv().await {
            let _ = match event {
                ServerEvent::Stdout(b) => stdout.is_some_and(|id| sender.data(id, b)),
                ServerEvent::Stderr(b) => stderr.is_some_and(|id| sender.data(id, b)),
                ServerEvent::Status(s) => sender.data(error, Bytes::from(s.to_string())),
            };
        }
        for id in [Some(error), stdout, stderr].into_iter().flatten() {
            sender.finish(id);
        }
        sender.close();
    });
    Some(Session { events, out })
}

/// Streams a process over a session until it exits (or the client leaves), then sends the
/// final Status; `early` are events received before the process started.
pub async fn run(
    session: Session,
    process: crate::cri::Result<StreamingProcess>,
    early: Vec<ClientEvent>,
) {
    let Session { mut events, out } = session;
    let process = match process {
        Ok(p) => p,
        Err(e) => {
            let _ = out
                .send(ServerEvent::Status(error_status(&e.to_string())))
                .await;
            return;
        }
    };
    let StreamingProcess {
        mut stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = process;
    let pump = |mut from: crate::cri::ProcessOutput, err: bool| {
        let out = out.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let data = Bytes::copy_from_slice(&buf[..n]);
                        let event = if err {
                            ServerEvent::Stderr(data)
                        } else {
                            ServerEvent::Stdout(data)
                        };
                        if out.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    };
    let mut pumps = vec![pump(stdout, false)];
    pumps.extend(stderr.map(|e| pump(e, true)));
    tokio::pin!(exit);
    let mut listening = true;
    let mut early = early.into_iter();
    let code = loop {
        let event = match early.next() {
            Some(event) => Some(event),
            None => tokio::select! {
                code = &mut exit => break code,
                event = events.recv(), if listening => event,
            },
        };
        match event {
            Some(ClientEvent::Stdin(data)) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data).await.and(w.flush().await).is_err() {
                        stdin = None;
                    }
                }
            }
            Some(ClientEvent::StdinClosed) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Some(ClientEvent::Resize { width, height }) => {
                if let Some(resize) = &resize {
                    resize(width, height);
                }
            }
            // The client has nothing more to say.
            None => listening = false,
            // The client left: nobody to report to.
            Some(ClientEvent::Gone) => return,
        }
    };
    drop(stdin);
    for pump in pumps {
        let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, pump).await;
    }
    let status = match code {
        Ok(code) => exit_status(code),
        Err(e) => error_status(&e.to_string()),
    };
    let _ = out.send(ServerEvent::Status(status)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_statuses() {
        assert_eq!(exit_status(0)["status"], "Success");
        let s = exit_status(3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn resize_messages() {
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
        assert_eq!(parse_resize(b"nope"), None);
    }

    #[test]
    fn stream_options_need_a_stream() {
        assert!(StreamOptions::from_query(&Query::parse(Some("command=ls"))).is_err());
        let o = StreamOptions::from_query(&Query::parse(Some("stdout=true&stderr=true&tty=true")))
            .unwrap();
        assert!(o.stdout && o.tty && !o.stderr);
    }

    #[test]
    fn driver_streams_and_reports_the_exit_code() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (events_tx, events) = mpsc::channel(4);
            let (out, mut out_rx) = mpsc::channel(16);
            let (stdin_w, stdin_r) = tokio::io::duplex(1024);
            let (stdout_w, stdout_r) = tokio::io::duplex(1024);
            let process = StreamingProcess {
                stdin: Some(Box::new(stdin_w)),
                stdout: Box::new(stdout_r),
                stderr: None,
                resize: None,
                exit: Box::pin(async move {
                    // An echo: stdin to stdout until stdin closes, then exit 3.
                    let (mut r, mut w) = (stdin_r, stdout_w);
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    drop(w);
                    Ok(3)
                }),
            };
            let driver = tokio::spawn(run(Session { events, out }, Ok(process), Vec::new()));
            events_tx
                .send(ClientEvent::Stdin(Bytes::from("hi")))
                .await
                .unwrap();
            events_tx.send(ClientEvent::StdinClosed).await.unwrap();
            assert_eq!(
                out_rx.recv().await,
                Some(ServerEvent::Stdout(Bytes::from("hi")))
            );
            match out_rx.recv().await {
                Some(ServerEvent::Status(s)) => {
                    assert_eq!(s["details"]["causes"][0]["message"], "3")
                }
                other => panic!("{other:?}"),
            }
            driver.await.unwrap();
        });
    }
}
