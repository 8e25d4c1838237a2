//! The tunnel's transport, shared by Warden and the agent: a WebSocket whose binary messages
//! carry a byte stream (on which a yamux session multiplexes HTTP/1.1 connections) and whose
//! text messages carry JSON control messages.
//!
//! [`pump`] is generic over a `Stream` and a `Sink` of [`Frame`]s, so both WebSocket
//! libraries (axum's on the server, tokio-tungstenite in the agent) plug in, and tests can use
//! channels.

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One WebSocket message, as the tunnel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Binary(Bytes),
    Text(String),
    Close,
}

/// Largest binary message the pump sends.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Buffer between the WebSocket and yamux.
const DUPLEX_BUFFER: usize = 256 * 1024;

/// A running pump. Dropping it (or its guard) stops both directions.
pub struct Pump {
    /// The byte stream to run yamux on.
    pub io: DuplexStream,
    /// Text messages from the peer.
    pub control_rx: mpsc::Receiver<String>,
    /// Text messages to the peer.
    pub control_tx: mpsc::Sender<String>,
    pub guard: PumpGuard,
}

/// Stops the pump's tasks when dropped.
pub struct PumpGuard {
    tasks: [JoinHandle<()>; 2],
}

impl PumpGuard {
    /// Whether both directions have stopped.
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(|t| t.is_finished())
    }
}

impl Drop for PumpGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a pump does when its peer stops reading (Warden's end of an agent's tunnel).
///
/// yamux answers some frames itself (a ping with a pong, a stream it refuses with a reset) and
/// keeps reading while its answers wait, in a queue with no bound: a peer that sends pings and
/// never reads would grow that queue by four bytes for each byte it sends, until the process
/// runs out of memory. So while a message to the peer has waited longer than `pause_reads_after`,
/// nothing more is read from it; and one that waits longer than `give_up_after` ends the tunnel.
#[derive(Debug, Clone, Copy)]
pub struct WriteStall {
    pub pause_reads_after: Duration,
    pub give_up_after: Duration,
}

impl WriteStall {
    /// Warden's side of an agent's tunnel: a peer that reads nothing for 30 s is gone (yamux's
    /// own write timeout is as long).
    pub const SERVER: WriteStall = WriteStall {
        pause_reads_after: Duration::from_millis(20),
        give_up_after: Duration::from_secs(30),
    };
}

/// Run the tunnel's transport over a WebSocket given as a stream and a sink of frames.
///
/// Binary messages are written, in order, to [`Pump::io`]'s peer end; what is written there is
/// sent as binary messages of at most [`MAX_CHUNK`] bytes. Text messages go to and come from
/// the control channels. When the WebSocket ends (close, error, end of stream) the byte stream
/// reaches end-of-file; when the byte stream is shut down a close message is sent.
pub fn pump<R, W>(reader: R, writer: W) -> Pump
where
    R: Stream<Item = io::Result<Frame>> + Send + Unpin + 'static,
    W: Sink<Frame, Error = io::Error> + Send + Unpin + 'static,
{
    pump_with(reader, writer, None)
}

/// [`pump`], bounded by `stall` when the peer stops reading (see [`WriteStall`]).
pub fn pump_with<R, W>(mut reader: R, mut writer: W, stall: Option<WriteStall>) -> Pump
where
    R: Stream<Item = io::Result<Frame>> + Send + Unpin + 'static,
    W: Sink<Frame, Error = io::Error> + Send + Unpin + 'static,
{
    let (ours, theirs) = tokio::io::duplex(DUPLEX_BUFFER);
    let (mut ours_r, mut ours_w) = tokio::io::split(ours);
    let (in_tx, in_rx) = mpsc::channel::<String>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
    // Since when the message being sent to the peer has waited (none: nothing waits).
    let (sending_tx, mut sending_rx) =
        tokio::sync::watch::channel::<Option<tokio::time::Instant>>(None);
    let read_task = tokio::spawn(async move {
        while let Some(frame) = reader.next().await {
            if let Some(stall) = stall {
                if sending_rx.has_changed().is_err() {
                    // The sending half gave up (or ended): nothing read now would be answered.
                    break;
                }
                let since = *sending_rx.borrow_and_update();
                if since.is_some_and(|t| t.elapsed() >= stall.pause_reads_after) {
                    // The peer reads nothing: read nothing from it until it does.
                    let resumed = tokio::time::timeout(stall.give_up_after, async {
                        loop {
                            if sending_rx.borrow_and_update().is_none() {
                                return true;
                            }
                            if sending_rx.changed().await.is_err() {
                                return false;
                            }
                        }
                    })
                    .await;
                    if !matches!(resumed, Ok(true)) {
                        tracing::debug!("tunnel: the peer stopped reading; giving up");
                        break;
                    }
                }
            }
            match frame {
                Ok(Frame::Binary(b)) => {
                    if ours_w.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Frame::Text(t)) => {
                    // Nobody listening is fine: the message is dropped.
                    let _ = in_tx.send(t).await;
                }
                Ok(Frame::Close) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel: WebSocket read failed");
                    break;
                }
            }
        }
        let _ = ours_w.shutdown().await;
    });
    let write_task = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut control_open = true;
        // Send one message; false when the peer is gone or (with `stall`) reads nothing.
        async fn send<W: Sink<Frame, Error = io::Error> + Unpin>(
            writer: &mut W,
            frame: Frame,
            stall: Option<WriteStall>,
            sending: &tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
        ) -> bool {
            let Some(stall) = stall else {
                return writer.send(frame).await.is_ok();
            };
            sending.send_replace(Some(tokio::time::Instant::now()));
            let sent = tokio::time::timeout(stall.give_up_after, writer.send(frame)).await;
            sending.send_replace(None);
            matches!(sent, Ok(Ok(())))
        }
        loop {
            tokio::select! {
                n = ours_r.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !send(&mut writer, Frame::Binary(Bytes::copy_from_slice(&buf[..n])), stall, &sending_tx).await {
                            return;
                        }
                    }
                },
                msg = out_rx.recv(), if control_open => match msg {
                    Some(t) => {
                        if !send(&mut writer, Frame::Text(t), stall, &sending_tx).await {
                            return;
                        }
                    }
                    None => control_open = false,
                },
            }
        }
        // Flush control messages queued before the end (a final notice), then close.
        while let Ok(t) = out_rx.try_recv() {
            if writer.send(Frame::Text(t)).await.is_err() {
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = writer.send(Frame::Close).await;
            let _ = writer.close().await;
        })
        .await;
    });
    Pump {
        io: theirs,
        control_rx: in_rx,
        control_tx: out_tx,
        guard: PumpGuard {
            tasks: [read_task, write_task],
        },
    }
}

/// The yamux settings both ends use.
pub fn yamux_config() -> tokio_yamux::Config {
    tokio_yamux::Config {
        // Streams opened faster than the agent accepts them queue up to this many.
        accept_backlog: 1024,
        enable_keepalive: true,
        keepalive_interval: Duration::from_secs(15),
        connection_write_timeout: Duration::from_secs(30),
        max_stream_count: 4096,
        max_stream_window_size: 1024 * 1024,
    }
}

/// Adapt tokio-tungstenite's WebSocket to frames.
pub fn tungstenite_frames<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
) -> (
    impl Stream<Item = io::Result<Frame>> + Send + Unpin + 'static,
    impl Sink<Frame, Error = io::Error> + Send + Unpin + 'static,
)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use tokio_tungstenite::tungstenite::Message;
    let (sink, stream) = ws.split();
    let stream = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Binary(b)) => Some(Ok(Frame::Binary(b))),
            Ok(Message::Text(t)) => Some(Ok(Frame::Text(t.as_str().to_owned()))),
            Ok(Message::Close(_)) => Some(Ok(Frame::Close)),
            Ok(_) => None,
            Err(e) => Some(Err(io::Error::other(e))),
        }
    });
    let sink = sink
        .sink_map_err(io::Error::other)
        .with(|f: Frame| async move {
            Ok::<_, io::Error>(match f {
                Frame::Binary(b) => Message::Binary(b),
                Frame::Text(t) => Message::Text(t.into()),
                Frame::Close => Message::Close(None),
            })
        });
    (Box::pin(stream), Box::pin(sink))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc as fmpsc;

    /// Two pumps joined back to back by channels: bytes and control messages cross, and
    /// closing one side ends the other's byte stream.
    #[tokio::test]
    async fn bytes_and_control_messages_cross_and_close_propagates() {
        let (a_tx, a_rx) = fmpsc::unbounded::<Frame>();
        let (b_tx, b_rx) = fmpsc::unbounded::<Frame>();
        let a = pump(b_rx.map(Ok), a_tx.sink_map_err(io::Error::other));
        let b = pump(a_rx.map(Ok), b_tx.sink_map_err(io::Error::other));
        let Pump {
            io: mut a_io,
            control_rx: mut a_ctl_rx,
            control_tx: a_ctl_tx,
            guard: a_guard,
        } = a;
        let Pump {
            io: mut b_io,
            control_rx: mut b_ctl_rx,
            control_tx: b_ctl_tx,
            guard: _b_guard,
        } = b;

        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expect = big.clone();
        let writer = tokio::spawn(async move {
            a_io.write_all(&big).await.unwrap();
            a_io
        });
        let mut got = vec![0u8; expect.len()];
        b_io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expect);
        let mut a_io = writer.await.unwrap();

        a_ctl_tx.send("hello".into()).await.unwrap();
        assert_eq!(b_ctl_rx.recv().await.unwrap(), "hello");
        b_ctl_tx.send("back".into()).await.unwrap();
        assert_eq!(a_ctl_rx.recv().await.unwrap(), "back");

        b_io.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        a_io.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");

        // Shutting down A's byte stream closes the WebSocket; B's byte stream then ends.
        a_io.shutdown().await.unwrap();
        drop(a_io);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), b_io.read_to_end(&mut rest))
            .await
            .expect("end of stream, not a hang")
            .unwrap();
        assert!(rest.is_empty());
        drop(a_guard);
    }

    /// Never accepts a message: a peer that reads nothing.
    struct NeverReads;

    impl Sink<Frame> for NeverReads {
        type Error = io::Error;
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
        fn start_send(self: std::pin::Pin<&mut Self>, _: Frame) -> io::Result<()> {
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    /// A peer that floods yamux pings and never reads: each ping makes yamux queue a pong, in
    /// a queue with no bound. Bounded by [`WriteStall`], the pump stops reading from such a
    /// peer (only the first few of its messages are read) and ends the tunnel; unbounded (the
    /// agent's side, talking to Warden), it would read every message and never end.
    #[tokio::test]
    async fn a_peer_that_pings_and_never_reads_is_read_no_further_and_cut() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        const MESSAGES: usize = 400;
        /// Until the session ends (true), `enough` messages are read, or `within` passes.
        async fn flood(
            stall: Option<WriteStall>,
            enough: usize,
            within: Duration,
        ) -> (usize, bool) {
            let read = Arc::new(AtomicUsize::new(0));
            // Ping, SYN, stream 0, opaque 7: 12 bytes each, 4,000 per message.
            let ping = [0u8, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
            let msg: Bytes = ping
                .iter()
                .copied()
                .cycle()
                .take(ping.len() * 4000)
                .collect::<Vec<u8>>()
                .into();
            let counter = read.clone();
            let reader = futures::stream::iter((0..MESSAGES).map(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(Frame::Binary(msg.clone()))
            }));
            let p = pump_with(Box::pin(reader), NeverReads, stall);
            let mut session = tokio_yamux::Session::new_server(p.io, yamux_config());
            let seen = read.clone();
            let ended = tokio::select! {
                _ = async { while let Some(Ok(_)) = session.next().await {} } => true,
                _ = async {
                    let deadline = tokio::time::Instant::now() + within;
                    while seen.load(Ordering::SeqCst) < enough && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                } => false,
            };
            // Let the pump's tasks settle before counting.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(p.guard);
            (read.load(Ordering::SeqCst), ended)
        }
        let (read, ended) = flood(
            Some(WriteStall {
                pause_reads_after: Duration::from_millis(20),
                give_up_after: Duration::from_millis(500),
            }),
            MESSAGES,
            Duration::from_secs(10),
        )
        .await;
        assert!(read < MESSAGES / 8, "read {read} of {MESSAGES} messages");
        assert!(ended, "the tunnel did not end");
        // However slow the machine, unbounded it reads on (the test waits until it has, or
        // gives up after a long while) and never ends.
        let (read, ended) = flood(None, MESSAGES / 2 + 1, Duration::from_secs(60)).await;
        assert!(
            read > MESSAGES / 2,
            "unbounded, it reads on ({read} of {MESSAGES} messages)"
        );
        assert!(!ended);
    }
}
