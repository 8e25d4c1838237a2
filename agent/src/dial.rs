//! Dialling Warden: TCP (directly or through an HTTP proxy's CONNECT), TLS for `https://`
//! Warden URLs (trusting the CA from the Secret, else the public web roots), then the WebSocket
//! upgrade on `GET /agent/v1/connect`. A refusal comes back as an HTTP error carrying Warden's
//! error envelope; it is final.

use base64::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;
use warden_domain::agent_protocol::{
    Challenge, CHALLENGE_PATH, CONNECT_PATH, HEADER_AGENT_KEY, HEADER_AGENT_VERSION,
    HEADER_CLUSTER, HEADER_FINGERPRINT, HEADER_NONCE, HEADER_PROOF,
};

use crate::identity::AgentKey;
use crate::settings::Settings;

/// Any byte stream the WebSocket can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub type Socket = WebSocketStream<Box<dyn Io>>;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Warden refused this agent; retrying cannot help.
    #[error("Warden refused the agent ({code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// Anything that may pass: network, DNS, TLS, a 5xx.
    #[error("{0}")]
    Transient(String),
}

impl DialError {
    fn transient(e: impl std::fmt::Display) -> Self {
        Self::Transient(e.to_string())
    }
}

/// The parts of a URL the dialler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix of Warden's URL (usually empty).
    pub base: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, DialError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(DialError::Refused {
                status: 0,
                code: "bad_url".into(),
                message: format!("{url:?} must start with http:// or https://"),
            });
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) =
            split_host_port(authority, if tls { 443 } else { 80 }).ok_or_else(|| {
                DialError::Refused {
                    status: 0,
                    code: "bad_url".into(),
                    message: format!("{url:?} has no valid host"),
                }
            })?;
        Ok(Self {
            tls,
            host,
            port,
            base: base.to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// Whether `host` is exempt from the proxy by a `NO_PROXY` list.
pub fn no_proxy_matches(no_proxy: Option<&str>, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .unwrap_or_default()
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|e| {
            let e = e.split(':').next().unwrap_or_default().to_owned();
            e == "*"
                || host == e.trim_start_matches('.')
                || host.ends_with(&format!(".{}", e.trim_start_matches('.')))
                || (e.starts_with('.') && host.ends_with(&e))
        })
}

/// The proxy to use for `target`, if any.
pub fn proxy_for(settings: &Settings, target: &Target) -> Option<String> {
    let proxy = if target.tls {
        settings.https_proxy.clone()
    } else {
        settings.http_proxy.clone()
    };
    proxy.filter(|_| !no_proxy_matches(settings.no_proxy.as_deref(), &target.host))
}

/// Open a TCP connection to `target`, through `proxy` (an `http://` proxy speaking CONNECT).
async fn tcp(target: &Target, proxy: Option<&str>) -> Result<TcpStream, DialError> {
    let timeout = Duration::from_secs(10);
    let Some(proxy) = proxy else {
        return tokio::time::timeout(
            timeout,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| {
            DialError::transient(format!("connecting to {} timed out", target.authority()))
        })?
        .map_err(|e| {
            DialError::transient(format!("cannot connect to {}: {e}", target.authority()))
        });
    };
    let p = Target::parse(proxy).map_err(|_| DialError::Refused {
        status: 0,
        code: "bad_proxy".into(),
        message: format!("the proxy URL {proxy:?} is not an http:// URL"),
    })?;
    if p.tls {
        return Err(DialError::Refused { status: 0, code: "bad_proxy".into(), message: "https:// proxies are not supported; use an http:// proxy (it tunnels TLS with CONNECT)".into() });
    }
    let mut s = tokio::time::timeout(timeout, TcpStream::connect((p.host.as_str(), p.port)))
        .await
        .map_err(|_| {
            DialError::transient(format!(
                "connecting to the proxy {} timed out",
                p.authority()
            ))
        })?
        .map_err(|e| {
            DialError::transient(format!(
                "cannot connect to the proxy {}: {e}",
                p.authority()
            ))
        })?;
    let mut req = format!(
        "CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n",
        a = target.authority()
    );
    if let Some(creds) = proxy_credentials(proxy) {
        req.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(creds)
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(DialError::transient)?;
    // Read the proxy's answer up to the blank line, one byte at a time so nothing of the
    // tunnelled stream is consumed.
    let mut head = Vec::new();
    let read = async {
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the proxy closed the connection",
                ));
            }
            head.push(b[0]);
            if head.len() > 16 * 1024 {
                return Err(std::io::Error::other("the proxy's answer is too long"));
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| DialError::transient("the proxy did not answer CONNECT in time"))?
        .map_err(DialError::transient)?;
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(DialError::transient(format!(
            "the proxy refused CONNECT {}: {status_line}",
            target.authority()
        )));
    }
    Ok(s)
}

fn proxy_credentials(proxy: &str) -> Option<String> {
    let rest = proxy.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (creds, _) = authority.rsplit_once('@')?;
    Some(percent_decode(creds))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // On bytes: the two after `%` may be part of a character (`%é`), not hex digits.
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The roots that may vouch for Warden's certificate: `WARDEN_CA` when given, else the public
/// web roots. Never the proxy's CA (`PROXY_CA`): a proxy (or whoever holds its CA) must not be
/// able to pose as Warden.
pub fn warden_roots(settings: &Settings) -> Result<rustls::RootCertStore, DialError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut custom = false;
    for pem in [settings.warden_ca.as_deref()].into_iter().flatten() {
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            let cert: rustls_pki_types::CertificateDer<'static> =
                cert.map_err(|e| DialError::Refused {
                    status: 0,
                    code: "bad_ca".into(),
                    message: format!("a CA certificate in the Secret is not valid PEM: {e}"),
                })?;
            roots.add(cert).map_err(|e| DialError::Refused {
                status: 0,
                code: "bad_ca".into(),
                message: format!("a CA certificate in the Secret is not usable: {e}"),
            })?;
            custom = true;
        }
    }
    if settings.warden_ca.is_none() || !custom {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// The TLS settings for Warden (see [`warden_roots`]).
pub fn tls_config(settings: &Settings) -> Result<rustls::ClientConfig, DialError> {
    let roots = warden_roots(settings)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(DialError::transient)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What the agent proves when it dials.
pub struct Hello<'a> {
    pub secret: &'a str,
    pub fingerprint: &'a str,
    /// Its key pair: the public key goes along, and a signature over a fresh challenge.
    pub key: &'a AgentKey,
}

/// Dial Warden: ask for a one-time challenge, sign it, and upgrade to the tunnel's WebSocket
/// with the proof.
pub async fn connect(settings: &Settings, hello: &Hello<'_>) -> Result<Socket, DialError> {
    let challenge = challenge(settings, hello.secret, hello.fingerprint).await?;
    if challenge.context != warden_domain::agent_protocol::PROOF_CONTEXT {
        return Err(DialError::Transient(format!(
            "the challenge names another purpose ({:?}) than connecting an agent: not signed",
            challenge.context
        )));
    }
    let proof = hello.key.prove(&challenge);
    let public = hello.key.public_b64();
    upgrade(
        settings,
        hello.secret,
        hello.fingerprint,
        &[
            (HEADER_AGENT_KEY, public.as_str()),
            (HEADER_NONCE, challenge.nonce.as_str()),
            (HEADER_PROOF, proof.as_str()),
        ],
    )
    .await
}

/// A header value from a setting; a setting an HTTP header cannot carry is a final refusal.
fn header(v: &str) -> Result<HeaderValue, DialError> {
    HeaderValue::from_str(v).map_err(|_| DialError::Refused {
        status: 0,
        code: "bad_settings".into(),
        message: "a setting holds characters not allowed in an HTTP header".into(),
    })
}

/// A refusal from Warden's error envelope: 400/401/403 are final, anything else may pass.
fn refusal_from(status: u16, body: &str) -> DialError {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let code = v
        .pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or("http_error")
        .to_owned();
    let message = v
        .pointer("/error/message")
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            )
        });
    if matches!(status, 400 | 401 | 403) {
        DialError::Refused {
            status,
            code,
            message,
        }
    } else {
        DialError::Transient(format!("Warden answered HTTP {status}: {message}"))
    }
}

/// `POST /agent/v1/challenge`: a one-time nonce for this secret's cluster. The fingerprint goes
/// along so that a manifest applied to the wrong cluster is told so at once.
pub async fn challenge(
    settings: &Settings,
    secret: &str,
    fingerprint: &str,
) -> Result<Challenge, DialError> {
    use http_body_util::{BodyExt, Empty, Limited};
    let (target, io) = open(settings).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .map_err(DialError::transient)?;
    let driver = tokio::spawn(conn);
    let req = http::Request::post(format!("{}{}", target.base, CHALLENGE_PATH))
        .header(http::header::HOST, target.authority())
        .header(
            http::header::AUTHORIZATION,
            header(&format!("Bearer {secret}"))?,
        )
        .header(HEADER_AGENT_VERSION, env!("CARGO_PKG_VERSION"))
        .header(HEADER_FINGERPRINT, header(fingerprint)?)
        .body(Empty::new())
        .map_err(DialError::transient)?;
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(DialError::transient)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| DialError::transient(format!("reading the challenge: {e}")))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err(refusal_from(status, &body));
        }
        serde_json::from_str::<Challenge>(&body)
            .map_err(|e| DialError::transient(format!("Warden sent a bad challenge: {e}")))
    })
    .await
    .map_err(|_| DialError::transient("asking Warden for a challenge timed out"))?;
    driver.abort();
    result
}

/// TCP (through the proxy if any) and TLS to Warden.
async fn open(settings: &Settings) -> Result<(Target, Box<dyn Io>), DialError> {
    let target = Target::parse(&settings.warden_url)?;
    if warden_domain::agent_protocol::is_insecure_remote(&settings.warden_url)
        && !settings.allow_insecure_http
    {
        return Err(DialError::Refused {
            status: 0,
            code: "insecure_url".into(),
            message: format!(
                "{} is plain http:// to another host: the agent's secrets would cross the network in the clear. Serve Warden over https:// (set WARDEN_PUBLIC_URL), or set WARDEN_ALLOW_INSECURE_HTTP=true in the agent's Secret",
                settings.warden_url
            ),
        });
    }
    let proxy = proxy_for(settings, &target);
    let tcp = tcp(&target, proxy.as_deref()).await?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if target.tls {
        let config = tls_config(settings)?;
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| DialError::transient(format!("bad server name {}: {e}", target.host)))?;
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| DialError::transient("the TLS handshake with Warden timed out"))?
        .map_err(|e| {
            DialError::transient(format!("TLS with Warden failed: {e} (is WARDEN_CA right?)"))
        })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    Ok((target, io))
}

/// Upgrade to the tunnel's WebSocket with the secret, the fingerprint and `extra` headers.
pub async fn upgrade(
    settings: &Settings,
    secret: &str,
    fingerprint: &str,
    extra: &[(&'static str, &str)],
) -> Result<Socket, DialError> {
    let (target, io) = open(settings).await?;
    let scheme = if target.tls { "wss" } else { "ws" };
    let url = format!(
        "{scheme}://{}{}{}",
        target.authority(),
        target.base,
        CONNECT_PATH
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(DialError::transient)?;
    let headers = request.headers_mut();
    headers.insert("authorization", header(&format!("Bearer {secret}"))?);
    headers.insert(HEADER_FINGERPRINT, header(fingerprint)?);
    for (name, value) in extra {
        headers.insert(*name, header(value)?);
    }
    headers.insert(HEADER_CLUSTER, header(&settings.cluster)?);
    headers.insert(HEADER_AGENT_VERSION, header(env!("CARGO_PKG_VERSION"))?);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(16 << 20));
    match tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async_with_config(request, io, Some(config)),
    )
    .await
    {
        Err(_) => Err(DialError::transient(
            "the WebSocket upgrade with Warden timed out",
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(refusal_from(status, &body))
        }
        Ok(Err(e)) => Err(DialError::transient(format!(
            "the WebSocket upgrade with Warden failed: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_no_proxy() {
        assert_eq!(
            Target::parse("http://127.0.0.1:3000").unwrap(),
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 3000,
                base: "".into()
            }
        );
        assert_eq!(
            Target::parse("https://warden.example.com/w/").unwrap(),
            Target {
                tls: true,
                host: "warden.example.com".into(),
                port: 443,
                base: "/w".into()
            }
        );
        assert_eq!(Target::parse("https://[::1]:8443").unwrap().host, "::1");
        assert!(Target::parse("ftp://x").is_err());
        assert!(no_proxy_matches(
            Some("localhost, .example.com"),
            "warden.example.com"
        ));
        assert!(no_proxy_matches(Some("example.com"), "warden.example.com"));
        assert!(no_proxy_matches(Some("*"), "anything"));
        assert!(!no_proxy_matches(Some("example.org"), "warden.example.com"));
        assert!(!no_proxy_matches(None, "warden.example.com"));
        assert_eq!(
            proxy_credentials("http://u%40x:p%3Aw@proxy:3128").as_deref(),
            Some("u@x:p:w")
        );
        assert_eq!(proxy_credentials("http://proxy:3128"), None);
        // A `%` before a character of several bytes is kept as it is (no panic at start).
        assert_eq!(
            proxy_credentials("http://u:p%aé@proxy:3128").as_deref(),
            Some("u:p%aé")
        );
        assert_eq!(
            proxy_credentials("http://u:%41@proxy:3128").as_deref(),
            Some("u:A")
        );
    }

    #[test]
    fn the_proxy_ca_never_vouches_for_warden() {
        let mut data = std::collections::BTreeMap::new();
        data.insert(
            "WARDEN_URL".to_owned(),
            "https://warden.example.com".to_owned(),
        );
        data.insert("WARDEN_CLUSTER".to_owned(), "c".to_owned());
        data.insert("WARDEN_BOOTSTRAP_TOKEN".to_owned(), "wdb_x".to_owned());
        // A proxy CA, even a broken one, is not read for Warden: only the public roots are.
        data.insert(
            "PROXY_CA".to_owned(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        );
        let settings = Settings::from_data(&data).unwrap();
        assert!(settings.proxy_ca.is_some());
        let roots = warden_roots(&settings).unwrap();
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        // WARDEN_CA is what Warden is verified with (here a broken one is refused).
        data.insert(
            "WARDEN_CA".to_owned(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        );
        let settings = Settings::from_data(&data).unwrap();
        assert!(matches!(
            warden_roots(&settings),
            Err(DialError::Refused { code, .. }) if code == "bad_ca"
        ));
    }
}
