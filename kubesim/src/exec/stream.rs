//! The Kubernetes remote-command WebSocket protocol (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`) served for exec and attach.
//!
//! Frames carry a channel byte first: 0 stdin, 1 stdout, 2 stderr, 3 error/status (a JSON
//! `metav1.Status` in v4+), 4 resize (`{"Width":..,"Height":..}`), 255 close (v5; payload is
//! the stream being half-closed). Base64 mode uses text frames with an ASCII digit channel.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::process;
use super::runtime::{ContainerRt, PodRt};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// A negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    V5,
    V4,
    V4Base64,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::V5 => "v5.channel.k8s.io",
            Proto::V4 => "v4.channel.k8s.io",
            Proto::V4Base64 => "v4.base64.channel.k8s.io",
        }
    }

    /// Pick the best protocol the client offers (in the server's preference order).
    pub fn negotiate(offered: &[String]) -> Option<Proto> {
        [Proto::V5, Proto::V4, Proto::V4Base64]
            .into_iter()
            .find(|p| offered.iter().any(|o| o == p.name()))
    }

    pub fn encode(self, ch: u8, data: &[u8]) -> Message {
        match self {
            Proto::V4Base64 => {
                let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
                s.push(char::from(b'0' + ch.min(9)));
                s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
                Message::text(s)
            }
            _ => {
                let mut v = Vec::with_capacity(data.len() + 1);
                v.push(ch);
                v.extend_from_slice(data);
                Message::binary(v)
            }
        }
    }

    pub fn decode(self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match (self, msg) {
            (Proto::V4Base64, Message::Text(t)) => {
                let s = t.as_str();
                let ch = s.as_bytes().first()?.checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&s[1..])
                    .ok()?;
                Some((ch, data))
            }
            (_, Message::Binary(b)) => {
                let ch = *b.first()?;
                Some((ch, b[1..].to_vec()))
            }
            _ => None,
        }
    }
}

/// What an exec asks for.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The v4+ status sent on the error channel.
pub fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {}",
            command.join(" "), code
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

fn internal_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500
    })
}

enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u16, u16),
    Gone,
}

fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let w = v.get("Width").and_then(Value::as_u64)?;
    let h = v.get("Height").and_then(Value::as_u64)?;
    Some((w.min(u16::MAX as u64) as u16, h.min(u16::MAX as u64) as u16))
}

/// Split a WebSocket into an outgoing frame queue (drained by a writer task that closes the
/// socket at the end) and a stream of decoded inputs.
fn pump<S>(
    ws: S,
    proto: Proto,
) -> (
    mpsc::Sender<Message>,
    mpsc::Receiver<Input>,
    tokio::task::JoinHandle<()>,
)
where
    S: Sink<Message>
        + Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Send
        + Unpin
        + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let (in_tx, in_rx) = mpsc::channel::<Input>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let Ok(msg) = msg else { break };
            if msg.is_close() {
                break;
            }
            let Some((ch, data)) = proto.decode(&msg) else {
                continue;
            };
            let input = match ch {
                STDIN => Input::Stdin(data),
                RESIZE => match parse_resize(&data) {
                    Some((w, h)) => Input::Resize(w, h),
                    None => continue,
                },
                CLOSE if data.first() == Some(&STDIN) => Input::CloseStdin,
                _ => continue,
            };
            if in_tx.send(input).await.is_err() {
                return;
            }
        }
        let _ = in_tx.send(Input::Gone).await;
    });
    (out_tx, in_rx, writer)
}

/// How long a container runtime takes to start an exec, roughly.
const EXEC_SETUP: Duration = Duration::from_millis(50);

/// Run one exec session over an upgraded WebSocket.
pub async fn serve_exec<S>(
    ws: S,
    proto: Proto,
    pod: Arc<PodRt>,
    container: Arc<ContainerRt>,
    spec: ExecSpec,
) where
    S: Sink<Message>
        + Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Send
        + Unpin
        + 'static,
{
    let (out, mut input, writer) = pump(ws, proto);
    // A real exec starts after the container runtime has set it up (tens of milliseconds).
    // client-go's WebSocket executor reads before it registers its streams, so output sent in
    // the first instant after the upgrade is discarded ("Unknown stream id"): start as late as
    // a runtime would.
    tokio::time::sleep(EXEC_SETUP).await;
    let status = if spec.tty {
        exec_tty(proto, &out, &mut input, &pod, &container, &spec).await
    } else {
        exec_pipes(proto, &out, &mut input, &pod, &container, &spec).await
    };
    let _ = out
        .send(proto.encode(ERROR, status.to_string().as_bytes()))
        .await;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

fn spawn_error(spec: &ExecSpec, e: &std::io::Error) -> Value {
    let prog = spec.command.first().cloned().unwrap_or_default();
    let why = if e.kind() == std::io::ErrorKind::NotFound {
        format!("exec: \"{prog}\": executable file not found in $PATH")
    } else {
        format!("exec: \"{prog}\": {e}")
    };
    internal_status(&format!(
        "error executing command in container: failed to exec in container: failed to start exec \"{}\": OCI runtime exec failed: exec failed: unable to start container process: {}: unknown",
        crate::defaults::random_hex(64),
        why
    ))
}

async fn exec_pipes(
    proto: Proto,
    out: &mpsc::Sender<Message>,
    input: &mut mpsc::Receiver<Input>,
    pod: &PodRt,
    container: &ContainerRt,
    spec: &ExecSpec,
) -> Value {
    let mut child = match process::spawn_piped(&spec.command, &container.env, spec.stdin) {
        Ok(c) => c,
        Err(e) => return spawn_error(spec, &e),
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    pod.add_pgid(pgid);
    let mut stdin = child.stdin.take();
    let mut pumps = Vec::new();
    for (ch, r, wanted) in [
        (
            STDOUT,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            spec.stdout,
        ),
        (
            STDERR,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            spec.stderr,
        ),
    ] {
        let Some(mut r) = r else { continue };
        let o = out.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if wanted => {
                        if o.send(proto.encode(ch, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    let mut stopped = pod.stopped.subscribe();
    let code = loop {
        tokio::select! {
            st = child.wait() => break st.map(process::exit_code).unwrap_or(1),
            inp = input.recv() => match inp {
                Some(Input::Stdin(d)) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&d).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(Input::CloseStdin) => stdin = None,
                Some(Input::Resize(..)) => {}
                Some(Input::Gone) | None => {
                    process::kill_group(pgid);
                    let st = child.wait().await;
                    pod.remove_pgid(pgid);
                    return exit_status(st.map(process::exit_code).unwrap_or(137), &spec.command);
                }
            },
            _ = stopped_signal(&mut stopped) => {
                process::kill_group(pgid);
            }
        }
    };
    pod.remove_pgid(pgid);
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    exit_status(code, &spec.command)
}

async fn exec_tty(
    proto: Proto,
    out: &mpsc::Sender<Message>,
    input: &mut mpsc::Receiver<Input>,
    pod: &PodRt,
    container: &ContainerRt,
    spec: &ExecSpec,
) -> Value {
    let (mut child, master) = match process::spawn_pty(&spec.command, &container.env, 80, 24) {
        Ok(x) => x,
        Err(e) => return spawn_error(spec, &e),
    };
    let master = Arc::new(master);
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    pod.add_pgid(pgid);
    let reader = {
        let m = master.clone();
        let o = out.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match m.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if o.send(proto.encode(STDOUT, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let mut stopped = pod.stopped.subscribe();
    let code = loop {
        tokio::select! {
            st = child.wait() => break st.map(process::exit_code).unwrap_or(1),
            inp = input.recv() => match inp {
                Some(Input::Stdin(d)) => { let _ = master.write_all(&d).await; }
                Some(Input::CloseStdin) => { let _ = master.write_all(&[4]).await; }
                Some(Input::Resize(w, h)) => { let _ = master.resize(w, h); }
                Some(Input::Gone) | None => {
                    process::kill_group(pgid);
                    let st = child.wait().await;
                    pod.remove_pgid(pgid);
                    reader.abort();
                    return exit_status(st.map(process::exit_code).unwrap_or(137), &spec.command);
                }
            },
            _ = stopped_signal(&mut stopped) => process::kill_group(pgid),
        }
    };
    pod.remove_pgid(pgid);
    // Drain what the terminal still holds; background processes may keep it open.
    if tokio::time::timeout(Duration::from_millis(500), reader)
        .await
        .is_err()
    {
        process::kill_group(pgid);
    }
    exit_status(code, &spec.command)
}

/// Run an exec session.
pub async fn run_exec<S>(
    ws: S,
    proto: Proto,
    pod: Arc<PodRt>,
    container: Arc<ContainerRt>,
    spec: ExecSpec,
) where
    S: Sink<Message>
        + Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Send
        + Unpin
        + 'static,
{
    serve_exec(ws, proto, pod, container, spec).await
}

/// Attach to a container's main process: its live output, and its stdin when it has one.
pub async fn run_attach<S>(
    ws: S,
    proto: Proto,
    pod: Arc<PodRt>,
    container: Arc<ContainerRt>,
    spec: ExecSpec,
) where
    S: Sink<Message>
        + Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Send
        + Unpin
        + 'static,
{
    let (out, mut input, writer) = pump(ws, proto);
    let mut output = container.output.subscribe();
    let mut exited = container.exited.subscribe();
    let mut stopped = pod.stopped.subscribe();
    let stdin = container
        .stdin
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let status = loop {
        if let Some(code) = *exited.borrow_and_update() {
            break exit_status(code, &[]);
        }
        tokio::select! {
            o = output.recv() => match o {
                Ok((ch, data)) => {
                    let wanted = if ch == STDOUT { spec.stdout } else { spec.stderr || spec.tty };
                    let ch = if spec.tty { STDOUT } else { ch };
                    if wanted && out.send(proto.encode(ch, &data)).await.is_err() {
                        break exit_status(0, &[]);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => {
                    let _ = exited.changed().await;
                }
            },
            inp = input.recv() => match inp {
                Some(Input::Stdin(d)) => {
                    if let Some(s) = &stdin {
                        let _ = s.send(Some(Bytes::from(d))).await;
                    }
                }
                Some(Input::CloseStdin) | Some(Input::Resize(..)) => {}
                Some(Input::Gone) | None => break exit_status(0, &[]),
            },
            r = exited.changed() => if r.is_err() { break exit_status(0, &[]); },
            _ = stopped_signal(&mut stopped) => break exit_status(137, &[]),
        }
    };
    let _ = out
        .send(proto.encode(ERROR, status.to_string().as_bytes()))
        .await;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

async fn stopped_signal(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_v5_then_v4() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Proto::negotiate(&offered(&["v4.channel.k8s.io", "v5.channel.k8s.io"])),
            Some(Proto::V5)
        );
        assert_eq!(
            Proto::negotiate(&offered(&["v4.base64.channel.k8s.io"])),
            Some(Proto::V4Base64)
        );
        assert_eq!(Proto::negotiate(&offered(&["channel.k8s.io"])), None);
    }

    #[test]
    fn frames_round_trip_in_binary_and_base64() {
        for p in [Proto::V5, Proto::V4, Proto::V4Base64] {
            let m = p.encode(STDOUT, b"hello");
            assert_eq!(p.decode(&m), Some((STDOUT, b"hello".to_vec())));
        }
        assert_eq!(Proto::V4Base64.encode(STDERR, b"x"), Message::text("2eA=="));
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
    }

    #[test]
    fn exit_status_shape() {
        let s = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            exit_status(0, &[]),
            json!({"metadata": {}, "status": "Success"})
        );
    }
}
