//! The relay of an upgraded connection (exec, attach, port-forward, proxy): bytes both ways,
//! each chunk admitted by the stream's [`LiveGuard`] before it is written, and the whole
//! connection cut the moment Warden ends the stream. When the connection speaks the Kubernetes
//! WebSocket stream protocol (`v4`/`v5.channel.k8s.io`), the client is told why on the error
//! channel, as a `Status`, before the close frame; kubectl prints it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::live::LiveGuard;

/// How the client side of an upgraded connection is framed, from the negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `v4.channel.k8s.io` / `v5.channel.k8s.io`: binary frames, first byte the channel.
    Channel,
    /// `v4.base64.channel.k8s.io`: text frames, an ASCII channel digit, base64 data.
    Base64Channel,
    /// Anything else (SPDY, other subprotocols): bytes only.
    Opaque,
}

impl Framing {
    pub fn from_subprotocol(p: Option<&str>) -> Self {
        match p.map(str::trim) {
            Some("v4.channel.k8s.io" | "v5.channel.k8s.io") => Framing::Channel,
            Some("v4.base64.channel.k8s.io" | "v5.base64.channel.k8s.io") => Framing::Base64Channel,
            _ => Framing::Opaque,
        }
    }
}

/// Follows WebSocket frame boundaries in one direction of a byte stream, so a frame of
/// Warden's own can be inserted between two frames, never inside one.
#[derive(Debug, Default)]
pub struct FrameTracker {
    header: Vec<u8>,
    payload_left: u64,
    /// The stream stopped looking like WebSocket frames.
    lost: bool,
}

impl FrameTracker {
    /// Account for bytes written to the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let n = (self.payload_left as usize).min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some((len, header_len)) = Self::parse_header(&self.header) {
                if self.header.len() == header_len {
                    self.header.clear();
                    self.payload_left = len;
                }
            }
            if self.header.len() > 14 {
                self.lost = true;
            }
        }
    }

    /// `(payload length, header length)` once enough of the header is known.
    fn parse_header(h: &[u8]) -> Option<(u64, usize)> {
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let mask = if masked { 4 } else { 0 };
        match h[1] & 0x7f {
            126 => {
                let hl = 4 + mask;
                (h.len() >= 4).then(|| (u16::from_be_bytes([h[2], h[3]]) as u64, hl))
            }
            127 => {
                let hl = 10 + mask;
                (h.len() >= 10).then(|| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&h[2..10]);
                    (u64::from_be_bytes(b), hl)
                })
            }
            n => Some((n as u64, 2 + mask)),
        }
    }

    /// Between two frames: a frame may be inserted here.
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.header.is_empty() && self.payload_left == 0
    }
}

/// One unmasked (server-to-client) WebSocket frame.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The frames that tell a Kubernetes stream client why Warden ends its connection: a
/// `Status` on the error channel (3), then a normal close.
pub fn closing_frames(framing: Framing, message: &str) -> Vec<u8> {
    let status = warden_domain::agent_protocol::kube_status(403, "Forbidden", message).to_string();
    let mut out = match framing {
        Framing::Channel => {
            let mut p = vec![3u8];
            p.extend_from_slice(status.as_bytes());
            ws_frame(0x2, &p)
        }
        Framing::Base64Channel => {
            use base64::Engine;
            let mut p = b"3".to_vec();
            p.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(status.as_bytes())
                    .as_bytes(),
            );
            ws_frame(0x1, &p)
        }
        Framing::Opaque => return vec![],
    };
    out.extend_from_slice(&ws_frame(0x8, &1000u16.to_be_bytes()));
    out
}

/// How a relay ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RelayEnd {
    /// Bytes from the client to the cluster, and back.
    pub up: u64,
    pub down: u64,
    /// Why Warden cut it (None: one of the ends closed it).
    pub closed_by_warden: Option<String>,
    pub error: Option<String>,
}

const BUF: usize = 16 * 1024;

/// Relay `client` <-> `cluster` until both directions end or Warden ends the stream.
pub async fn relay<C, S>(
    client: C,
    cluster: S,
    guard: Option<&LiveGuard>,
    framing: Framing,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(cluster);
    let mut tracker = FrameTracker::default();
    let mut up_buf = vec![0u8; BUF];
    let mut down_buf = vec![0u8; BUF];
    let (mut up_open, mut down_open) = (true, true);
    let mut end = RelayEnd::default();
    let cancelled = async {
        match guard {
            Some(g) => g.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancelled);
    while up_open || down_open {
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                let reason = guard.and_then(LiveGuard::reason).unwrap_or_else(|| "access ended".into());
                if tracker.at_boundary() {
                    let frames = closing_frames(framing, &format!("Warden closed this session: {reason}"));
                    if !frames.is_empty() {
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            cw.write_all(&frames),
                        )
                        .await;
                    }
                }
                end.closed_by_warden = Some(reason);
                break;
            }
            r = cr.read(&mut up_buf), if up_open => match r {
                Ok(0) => {
                    up_open = false;
                    let _ = sw.shutdown().await;
                }
                Ok(n) => {
                    if let Some(g) = guard {
                        if g.admit().await.is_err() {
                            continue; // the cancelled branch closes it
                        }
                    }
                    if let Err(e) = sw.write_all(&up_buf[..n]).await {
                        end.error = Some(e.to_string());
                        break;
                    }
                    end.up += n as u64;
                }
                Err(e) => {
                    end.error = Some(e.to_string());
                    break;
                }
            },
            r = sr.read(&mut down_buf), if down_open => match r {
                Ok(0) => {
                    down_open = false;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    if let Some(g) = guard {
                        if g.admit().await.is_err() {
                            continue;
                        }
                    }
                    if let Err(e) = cw.write_all(&down_buf[..n]).await {
                        end.error = Some(e.to_string());
                        break;
                    }
                    tracker.feed(&down_buf[..n]);
                    end.down += n as u64;
                }
                Err(e) => {
                    end.error = Some(e.to_string());
                    break;
                }
            },
        }
    }
    let _ = cw.flush().await;
    let _ = cw.shutdown().await;
    let _ = sw.shutdown().await;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_tracker_follows_boundaries_across_chunks() {
        let mut t = FrameTracker::default();
        assert!(t.at_boundary());
        let a = ws_frame(0x2, b"\x01hello");
        let b = ws_frame(0x2, &vec![7u8; 300]);
        let c = ws_frame(0x2, &vec![9u8; 70_000]);
        let all: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        // Byte by byte: a boundary exactly after each frame.
        let mut boundaries = vec![];
        for (i, byte) in all.iter().enumerate() {
            t.feed(std::slice::from_ref(byte));
            if t.at_boundary() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(
            boundaries,
            vec![a.len(), a.len() + b.len(), a.len() + b.len() + c.len()]
        );
        // In odd chunks.
        let mut t = FrameTracker::default();
        t.feed(&all[..3]);
        assert!(!t.at_boundary());
        t.feed(&all[3..a.len() + 1]);
        assert!(!t.at_boundary());
        t.feed(&all[a.len() + 1..]);
        assert!(t.at_boundary());
    }

    #[test]
    fn closing_frames_carry_a_status_on_the_error_channel() {
        let f = closing_frames(Framing::Channel, "your access was removed");
        assert_eq!(f[0], 0x82);
        let (len, hl) = FrameTracker::parse_header(&f[..4]).unwrap();
        let (len, hl) = (len as usize, hl);
        assert_eq!(f[hl], 3, "error channel");
        let status: serde_json::Value = serde_json::from_slice(&f[hl + 1..hl + len]).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["message"], "your access was removed");
        assert_eq!(&f[hl + len..], &[0x88, 2, 0x03, 0xe8]);
        assert!(closing_frames(Framing::Opaque, "x").is_empty());
        let b = closing_frames(Framing::Base64Channel, "x");
        let (_, hl) = FrameTracker::parse_header(&b[..4]).unwrap();
        assert_eq!((b[0], b[hl]), (0x81, b'3'));
    }

    #[tokio::test]
    async fn relays_both_ways_and_half_closes() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (cluster, mut cluster_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(relay(client, cluster, None, Framing::Opaque));
        client_peer.write_all(b"stdin").await.unwrap();
        let mut buf = [0u8; 5];
        cluster_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"stdin");
        cluster_peer.write_all(b"out").await.unwrap();
        let mut buf = [0u8; 3];
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"out");
        drop(client_peer);
        drop(cluster_peer);
        let end = task.await.unwrap();
        assert_eq!((end.up, end.down, end.closed_by_warden), (5, 3, None));
    }
}
