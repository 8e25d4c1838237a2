//! The internal channel between replicas: a stream to a cluster whose agent tunnel another
//! replica holds.
//!
//! The replica the client reached authenticates the caller and runs the authorization gate as
//! always (and keeps re-checking live streams when the shared epoch moves); only the byte
//! stream to the cluster's API server crosses to the replica holding the tunnel. So requests,
//! watches, `logs -f` and upgrades (exec, attach, port-forward) all work unchanged: HTTP/1.1
//! runs end to end over the forwarded stream.
//!
//! The receiving replica does not re-run the gate; it verifies a signed, short-lived assertion
//! from a peer instead: a TCP connection to `WARDEN_REPLICA_ADDR` starts with one line
//! `WARDEN-TUNNEL/3 <cluster id> <origin replica> <target replica> <unix ms> <nonce> <hmac>`,
//! where the HMAC-SHA256 key is derived with HKDF from `WARDEN_MASTER_KEY` (purpose `replica
//! internal channel`), so only a process holding the master key can ask. The hello names the
//! replica it is for, which must be the receiver: each replica remembers the nonces it saw, so
//! a hello captured on its way to one replica, replayed to another within the skew, would
//! otherwise be accepted there. The timestamp must be within [`MAX_SKEW`] of the receiver's
//! clock and a nonce is accepted once; anything else (no key, a wrong key, a hello for another
//! replica, an old or replayed one, a malformed line) is answered `ERR refused`, closed,
//! and audited (`replica.forward` denied, kind `system`, sampled like every unauthenticated
//! refusal). Accepted, the answer is `OK` and the
//! connection is spliced onto a new stream of the local tunnel.
//!
//! All of it runs inside mutually authenticated TLS 1.3 ([`super::tls`]): both ends prove
//! they hold the master key in the handshake, and what follows is encrypted and
//! integrity-protected, so nobody on the network between replicas reads the bearer tokens
//! and exec streams crossing it or injects requests into an open stream. A peer that fails
//! the handshake is refused and audited like a bad hello.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use warden_domain::ids::ClusterId;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType};
use warden_domain::secrets::Secret;
use warden_domain::Services;

use crate::tunnel::ClusterConnections;

const PROTOCOL: &str = "WARDEN-TUNNEL/3";
/// How far a hello's timestamp may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// The longest hello line accepted.
const MAX_LINE: usize = 512;
/// How long a peer may take to connect, or to answer a hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller may take over the TLS handshake and its hello line (one line, at once).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many connections may be saying hello at once (the rest are closed): an unauthenticated
/// flood of the port holds no more than this many sockets, each for at most [`ACCEPT_TIMEOUT`].
const MAX_HELLOS: usize = 256;
/// Of those, how many one address may hold (a pod that can reach the port does not take them
/// all).
const MAX_HELLOS_PER_SOURCE: usize = 64;

/// Unfinished hellos per source address.
#[derive(Default)]
struct HellosBySource(Mutex<HashMap<std::net::IpAddr, usize>>);

/// One source's place among the unfinished hellos, given back when dropped.
struct SourcePlace(Arc<HellosBySource>, std::net::IpAddr);

impl HellosBySource {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<SourcePlace> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_default();
        if *n >= MAX_HELLOS_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourcePlace(self.clone(), ip))
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0 .0.lock() {
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
    }
}

/// The keys of the internal channel (HKDF of the master key): the hello's HMAC key and the
/// TLS identity.
#[derive(Clone)]
pub struct InternalKey(ring::hmac::Key, Arc<super::tls::ChannelTls>);

impl std::fmt::Debug for InternalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalKey(<redacted>)")
    }
}

impl InternalKey {
    pub fn from_master(master_key: &Secret) -> Self {
        let bytes = warden_domain::secrets::derive_key(master_key, b"replica internal channel");
        let tls = super::tls::ChannelTls::from_master(master_key)
            .expect("an Ed25519 key and certificate from 32 derived bytes");
        Self(
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            Arc::new(tls),
        )
    }

    /// The TLS configurations of both ends.
    pub fn tls(&self) -> &super::tls::ChannelTls {
        &self.1
    }

    fn sign(&self, h: &Hello<'_>) -> String {
        hex::encode(ring::hmac::sign(&self.0, h.signed().as_bytes()).as_ref())
    }

    fn verifies(&self, h: &Hello<'_>, mac: &str) -> bool {
        let Ok(tag) = hex::decode(mac) else {
            return false;
        };
        ring::hmac::verify(&self.0, h.signed().as_bytes(), &tag).is_ok()
    }
}

/// What a hello asserts.
#[derive(Debug, Clone, Copy)]
pub struct Hello<'a> {
    pub cluster_id: &'a str,
    /// The replica asking.
    pub origin: &'a str,
    /// The replica asked (the receiver).
    pub target: &'a str,
    pub at_ms: i64,
    pub nonce: &'a str,
}

impl Hello<'_> {
    fn signed(&self) -> String {
        format!(
            "{PROTOCOL}\n{}\n{}\n{}\n{}\n{}",
            self.cluster_id, self.origin, self.target, self.at_ms, self.nonce
        )
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The hello line, signed with `key` (tests sign their own, with wrong keys, old timestamps
/// and other targets).
pub fn hello(key: &InternalKey, h: &Hello<'_>) -> String {
    let mac = key.sign(h);
    format!(
        "{PROTOCOL} {} {} {} {} {} {mac}\n",
        h.cluster_id, h.origin, h.target, h.at_ms, h.nonce
    )
}

/// Read one `\n`-terminated line, byte by byte (nothing after it is consumed), at most
/// [`MAX_LINE`] bytes.
async fn read_line(s: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut line = Vec::with_capacity(128);
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
    }
    String::from_utf8(line)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Open the channel's TLS to replica `addr` (both ends proving they hold the master key).
pub async fn connect(
    addr: &str,
    key: &InternalKey,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = tokio::time::timeout(HELLO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to replica {addr} timed out"))?
        .map_err(|e| format!("cannot connect to replica {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(
        HELLO_TIMEOUT,
        key.tls()
            .connector()
            .connect(super::tls::ChannelTls::server_name(), tcp),
    )
    .await
    .map_err(|_| format!("replica {addr}: the TLS handshake timed out"))?
    .map_err(|e| format!("replica {addr}: the TLS handshake failed: {e}"))
}

/// Open a stream to `cluster_id` through replica `target` at `addr`: an error says why not.
pub async fn dial(
    addr: &str,
    key: &InternalKey,
    origin: &str,
    target: &str,
    cluster_id: ClusterId,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut s = connect(addr, key).await?;
    let nonce = warden_domain::secrets::random_token(16);
    let cluster = cluster_id.to_string();
    let line = hello(
        key,
        &Hello {
            cluster_id: &cluster,
            origin,
            target,
            at_ms: now_ms(),
            nonce: &nonce,
        },
    );
    let answer = tokio::time::timeout(HELLO_TIMEOUT, async {
        s.write_all(line.as_bytes()).await?;
        s.flush().await?;
        read_line(&mut s).await
    })
    .await
    .map_err(|_| format!("replica {addr} did not answer in time"))?
    .map_err(|e| format!("replica {addr}: {e}"))?;
    if answer == "OK" {
        Ok(s)
    } else {
        Err(format!("replica {addr} answered: {answer}"))
    }
}

/// Nonces seen within the skew window: each hello is accepted once.
#[derive(Default)]
struct SeenNonces(Mutex<HashMap<String, i64>>);

impl SeenNonces {
    /// Record `nonce` (first use: true).
    fn first_use(&self, nonce: &str, now: i64) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        // A hello dated up to the skew ahead stays acceptable for twice the skew after it
        // arrives: kept longer than that, with a margin.
        let window = 2 * MAX_SKEW.as_millis() as i64 + 10_000;
        if m.len() > 10_000 {
            m.retain(|_, at| now - *at < window);
        }
        if m.len() > 100_000 {
            return false;
        }
        m.insert(nonce.to_owned(), now).is_none()
    }
}

/// Why a hello is refused (audited; the peer only hears `ERR refused`).
fn check(
    line: &str,
    key: Option<&InternalKey>,
    me: &str,
    seen: &SeenNonces,
    now: i64,
) -> Result<(ClusterId, String), String> {
    let Some(key) = key else {
        return Err("this replica has no WARDEN_MASTER_KEY: the internal channel is closed".into());
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let [proto, cluster_id, origin, target, at, nonce, mac] = parts[..] else {
        return Err("a malformed hello".into());
    };
    if proto != PROTOCOL {
        return Err("not the internal channel's protocol".into());
    }
    let at: i64 = at.parse().map_err(|_| "a malformed timestamp".to_owned())?;
    let h = Hello {
        cluster_id,
        origin,
        target,
        at_ms: at,
        nonce,
    };
    if !key.verifies(&h, mac) {
        return Err("the hello's signature does not verify (wrong or no key)".into());
    }
    if target != me {
        return Err(format!(
            "a hello for replica {target:?}, not this one (a hello replayed from another replica's traffic?)"
        ));
    }
    if (now - at).abs() > MAX_SKEW.as_millis() as i64 {
        return Err(format!(
            "the hello is {} s old (at most {} s)",
            (now - at) / 1000,
            MAX_SKEW.as_secs()
        ));
    }
    if nonce.len() < 16 || !seen.first_use(nonce, now) {
        return Err("a replayed hello".into());
    }
    let cluster_id = ClusterId::parse(cluster_id).ok_or("a malformed cluster id")?;
    Ok((cluster_id, origin.to_owned()))
}

/// Serve the internal channel on `listener` until the registry is gone.
pub fn spawn_server(
    listener: TcpListener,
    key: Option<InternalKey>,
    me: String,
    services: Weak<Services>,
    conns: Weak<ClusterConnections>,
) {
    let seen = Arc::new(SeenNonces::default());
    let me: Arc<str> = me.into();
    let hellos = Arc::new(tokio::sync::Semaphore::new(MAX_HELLOS));
    let by_source = Arc::new(HellosBySource::default());
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "the internal channel cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if conns.strong_count() == 0 {
                return;
            }
            let (key, seen, services, conns, me) = (
                key.clone(),
                seen.clone(),
                services.clone(),
                conns.clone(),
                me.clone(),
            );
            // A place among those saying hello, held until the hello is checked. When every
            // place is taken the connection is closed at once: the accept loop never waits
            // for one, so sockets held open without a word do not stop the peers' streams.
            let place = match hellos.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(tokio::sync::TryAcquireError::Closed) => return,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    tracing::debug!(peer = %peer, "the internal channel is full of unfinished hellos; closed a connection");
                    drop(sock);
                    continue;
                }
            };
            let Some(source_place) = by_source.take(peer.ip()) else {
                tracing::debug!(peer = %peer, "this address holds its share of unfinished hellos; closed a connection");
                drop(sock);
                continue;
            };
            let place = (place, source_place);
            tokio::spawn(async move {
                serve_one(sock, peer, key, &me, &seen, services, conns, place).await;
            });
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn serve_one(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    key: Option<InternalKey>,
    me: &str,
    seen: &SeenNonces,
    services: Weak<Services>,
    conns: Weak<ClusterConnections>,
    place: (tokio::sync::OwnedSemaphorePermit, SourcePlace),
) {
    let _ = tcp.set_nodelay(true);
    let Some(key) = key else {
        let mut tcp = tcp;
        refuse(
            &mut tcp,
            peer,
            &services,
            "this replica has no WARDEN_MASTER_KEY: the internal channel is closed",
        )
        .await;
        return;
    };
    let mut sock = match tokio::time::timeout(ACCEPT_TIMEOUT, key.tls().acceptor().accept(tcp))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            audit_refusal(
                    peer,
                    &services,
                    &format!("the peer failed the channel's TLS handshake (it does not hold the master key, or does not speak TLS): {e}"),
                )
                .await;
            return;
        }
        Err(_) => {
            audit_refusal(peer, &services, "no TLS handshake in time").await;
            return;
        }
    };
    let line = match tokio::time::timeout(ACCEPT_TIMEOUT, read_line(&mut sock)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            refuse(
                &mut sock,
                peer,
                &services,
                &format!("an unreadable hello: {e}"),
            )
            .await;
            return;
        }
        Err(_) => {
            refuse(&mut sock, peer, &services, "no hello in time").await;
            return;
        }
    };
    let checked = check(&line, Some(&key), me, seen, now_ms());
    drop(place);
    let (cluster_id, origin) = match checked {
        Ok(v) => v,
        Err(why) => {
            refuse(&mut sock, peer, &services, &why).await;
            return;
        }
    };
    let Some(tunnel) = conns.upgrade().and_then(|c| c.get_by_id(cluster_id)) else {
        let _ = sock.write_all(b"ERR not connected here\n").await;
        let _ = sock.shutdown().await;
        return;
    };
    let mut stream = match tunnel.open_stream().await {
        Ok(s) => s,
        Err(e) => {
            let _ = sock
                .write_all(format!("ERR {}\n", e.to_string().replace('\n', " ")).as_bytes())
                .await;
            let _ = sock.shutdown().await;
            return;
        }
    };
    if sock.write_all(b"OK\n").await.is_err() || sock.flush().await.is_err() {
        return;
    }
    tracing::info!(cluster.id = %cluster_id, replica.origin = %origin, peer = %peer, "forwarding a stream from another replica");
    let _ = tokio::io::copy_bidirectional(&mut sock, &mut stream).await;
}

async fn refuse(
    sock: &mut (impl AsyncWrite + Unpin),
    peer: std::net::SocketAddr,
    services: &Weak<Services>,
    why: &str,
) {
    let _ = sock.write_all(b"ERR refused\n").await;
    let _ = sock.shutdown().await;
    audit_refusal(peer, services, why).await;
}

async fn audit_refusal(peer: std::net::SocketAddr, services: &Weak<Services>, why: &str) {
    tracing::warn!(peer = %peer, reason = %why, "refused a connection on the replicas' internal channel");
    if let Some(svc) = services.upgrade() {
        // An unauthenticated caller: sampled like every such refusal (a flood of them is
        // counted, and summarised, rather than written row by row).
        let ev = AuditEvent::new(
            AuditKind::System,
            Actor::Anonymous {
                claimed: format!("replica channel peer {}", peer.ip()),
            },
            SessionType::System,
            "replica.forward",
            Outcome::Denied,
        )
        .reason(why)
        .request(RequestMeta {
            source_ip: Some(peer.ip().to_string()),
            ..Default::default()
        });
        if let Err(e) = svc.record_refusal(ev).await {
            tracing::error!(error = %e, "could not audit a refusal on the internal channel");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> InternalKey {
        InternalKey::from_master(&Secret::new(k))
    }

    fn line(k: &InternalKey, cluster_id: &str, target: &str, at_ms: i64, nonce: &str) -> String {
        hello(
            k,
            &Hello {
                cluster_id,
                origin: "r1",
                target,
                at_ms,
                nonce,
            },
        )
        .trim_end()
        .to_owned()
    }

    /// One address holds at most its share of the unfinished hellos, and gets places back as
    /// its connections finish.
    #[test]
    fn one_address_holds_at_most_its_share_of_unfinished_hellos() {
        let by = Arc::new(HellosBySource::default());
        let a: std::net::IpAddr = "10.42.0.9".parse().unwrap();
        let b: std::net::IpAddr = "10.42.0.10".parse().unwrap();
        let mut held: Vec<SourcePlace> = (0..MAX_HELLOS_PER_SOURCE)
            .map(|_| by.take(a).expect("a place"))
            .collect();
        assert!(by.take(a).is_none(), "past its share");
        let other = by.take(b).expect("another address is not held back");
        held.pop();
        let again = by.take(a).expect("a place given back");
        drop((held, again, other));
        assert!(by.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_hello_is_accepted_once_within_the_skew_with_the_key_and_by_its_target() {
        let k = key("the master key of the test, long enough");
        let seen = SeenNonces::default();
        let now = now_ms();
        let (c1, c2) = (ClusterId::new(), ClusterId::new());
        let (s1, s2) = (c1.to_string(), c2.to_string());
        let good = line(&k, &s1, "r2", now, "0123456789abcdef0123");
        assert_eq!(
            check(&good, Some(&k), "r2", &seen, now),
            Ok((c1, "r1".to_owned()))
        );
        assert_eq!(
            check(&good, Some(&k), "r2", &seen, now),
            Err("a replayed hello".into())
        );
        // Replayed to another replica (which never saw its nonce): refused all the same.
        let elsewhere = SeenNonces::default();
        assert!(check(&good, Some(&k), "r3", &elsewhere, now)
            .unwrap_err()
            .contains("not this one"));
        // Nor can the target be rewritten: it is signed.
        let retargeted = good.replace(" r2 ", " r3 ");
        assert!(check(&retargeted, Some(&k), "r3", &elsewhere, now)
            .unwrap_err()
            .contains("does not verify"));
        let wrong = line(&key("another key"), &s1, "r2", now, "abcdef0123456789abcd");
        assert!(check(&wrong, Some(&k), "r2", &seen, now)
            .unwrap_err()
            .contains("does not verify"));
        let old = line(&k, &s1, "r2", now - 60_000, "fedcba9876543210fedc");
        assert!(check(&old, Some(&k), "r2", &seen, now)
            .unwrap_err()
            .contains("old"));
        // A signature for another cluster does not open this one.
        let other = line(&k, &s1, "r2", now, "1111111111111111aaaa")
            .replace(&format!(" {s1} "), &format!(" {s2} "));
        assert!(check(&other, Some(&k), "r2", &seen, now).is_err());
        // A signed hello whose cluster is not a cluster id is refused all the same.
        let odd = line(&k, "c1", "r2", now, "2222222222222222bbbb");
        assert_eq!(
            check(&odd, Some(&k), "r2", &seen, now),
            Err("a malformed cluster id".into())
        );
        assert!(check(&good, None, "r2", &seen, now).is_err());
        assert!(check("GET / HTTP/1.1", Some(&k), "r2", &seen, now).is_err());
    }

    /// A hello dated as far ahead as the skew allows is still remembered when it stops being
    /// acceptable.
    #[test]
    fn a_nonce_is_remembered_as_long_as_its_hello_is_acceptable() {
        let k = key("the master key of the test, long enough");
        let seen = SeenNonces::default();
        let now = now_ms();
        let skew = MAX_SKEW.as_millis() as i64;
        let ahead = line(
            &k,
            &ClusterId::new().to_string(),
            "r2",
            now + skew,
            "3333333333333333cccc",
        );
        assert!(check(&ahead, Some(&k), "r2", &seen, now).is_ok());
        // Fill the cache past its pruning size, at the last moment the hello is acceptable.
        let later = now + 2 * skew;
        for i in 0..10_001 {
            seen.first_use(&format!("filler-{i:016}"), later);
        }
        assert_eq!(
            check(&ahead, Some(&k), "r2", &seen, later),
            Err("a replayed hello".into())
        );
    }
}
