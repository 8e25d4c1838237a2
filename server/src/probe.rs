//! `warden healthcheck`: the container image's `HEALTHCHECK`. The runtime image has no shell and
//! no curl, so the binary asks its own console listener for `/readyz` (database reachable).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where to reach a listener bound to `addr` from the same host: a wildcard bind
/// (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// GET `path` on `addr` over plain HTTP/1.1; `Ok(())` on a 2xx answer within `timeout`, else
/// an error saying what was seen.
pub async fn check(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let target = local_target(addr);
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nUser-Agent: warden-healthcheck\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {target}: {e}"))?;
        // The status line is all we need; read a bounded prefix.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = tcp
                .read(&mut buf)
                .await
                .map_err(|e| format!("cannot read from {target}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or("").to_owned();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("{target} did not answer HTTP (got {line:?})"))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{path} on {target} answered {status}"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("{path} on {target} did not answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn one_answer(status_line: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await;
        });
        addr
    }

    #[tokio::test]
    async fn ready_only_on_a_2xx_answer() {
        let ok = one_answer("HTTP/1.1 200 OK").await;
        assert_eq!(check(ok, "/readyz", Duration::from_secs(2)).await, Ok(()));
        let down = one_answer("HTTP/1.1 503 Service Unavailable").await;
        let err = check(down, "/readyz", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
        let garbage = one_answer("SSH-2.0-OpenSSH").await;
        assert!(check(garbage, "/readyz", Duration::from_secs(2))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(check(addr, "/readyz", Duration::from_secs(2))
            .await
            .is_err());
    }

    #[test]
    fn a_wildcard_bind_is_reached_on_loopback() {
        assert_eq!(
            local_target("0.0.0.0:3000".parse().unwrap()),
            "127.0.0.1:3000".parse().unwrap()
        );
        assert_eq!(
            local_target("[::]:3000".parse().unwrap()),
            "[::1]:3000".parse().unwrap()
        );
        assert_eq!(
            local_target("10.0.0.5:3000".parse().unwrap()),
            "10.0.0.5:3000".parse().unwrap()
        );
    }
}
