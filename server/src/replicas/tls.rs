//! TLS for the replicas' internal channel: mutually authenticated TLS 1.3, both ends proving
//! they hold the master key.
//!
//! Every replica derives the same Ed25519 key from `WARDEN_MASTER_KEY` (HKDF, purpose
//! `replica internal channel tls identity`) and presents a self-signed certificate for it, as
//! server and as client. Each end accepts only a peer certificate for exactly that public key
//! (pinned, no CA, no names), and the handshake proves possession of its private key. So only a
//! process holding the master key can open the channel or answer it, and everything after the
//! handshake (the hello, HTTP, bearer tokens, exec streams) is encrypted and integrity-protected:
//! someone on the network between replicas can neither read nor inject. The signed hello
//! inside still binds a stream to one cluster, one target replica and a short time.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use warden_domain::secrets::Secret;

/// The name both ends use in the handshake (the certificate is pinned, not matched by name).
pub const SERVER_NAME: &str = "warden-replica.internal";

/// PKCS#8 v1 of an Ed25519 private key: this prefix, then the 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Both ends' TLS configurations.
pub struct ChannelTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ChannelTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelTls(<keys redacted>)")
    }
}

impl ChannelTls {
    pub fn from_master(master_key: &Secret) -> anyhow::Result<Self> {
        let seed = warden_domain::secrets::derive_key(
            master_key,
            b"replica internal channel tls identity",
        );
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice())?;
        let pinned = key.public_key_raw().to_vec();
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
        let cert = params.self_signed(&key)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let private = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pin = Arc::new(Pinned {
            key: pinned,
            provider: provider.clone(),
        });
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(pin.clone())
            .with_single_cert(chain.clone(), private())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(pin)
            .with_client_auth_cert(chain, private())?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }
}

/// Accepts exactly one public key, whatever the certificate around it says.
#[derive(Debug)]
struct Pinned {
    key: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refused = || {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let spki = parsed.public_key();
        let is_ed25519 = spki.algorithm.algorithm.to_id_string() == "1.3.101.112";
        if is_ed25519 && spki.subject_public_key.data.as_ref() == self.key.as_slice() {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

/// Both ends speak TLS 1.3 only.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for Pinned {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn handshake(server: &ChannelTls, client: &ChannelTls) -> Result<String, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = server.acceptor();
        let served = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(String::from_utf8_lossy(&buf).into_owned())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let dialled = async {
            let mut tls = client
                .connector()
                .connect(ChannelTls::server_name(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        let got = served.await.unwrap();
        dialled?;
        got
    }

    /// Two processes with the master key talk; one without it can neither dial nor answer.
    #[tokio::test]
    async fn only_holders_of_the_master_key_open_or_answer_the_channel() {
        let a = ChannelTls::from_master(&Secret::new("the master key of the test, long enough"))
            .unwrap();
        let b = ChannelTls::from_master(&Secret::new("the master key of the test, long enough"))
            .unwrap();
        let other =
            ChannelTls::from_master(&Secret::new("a guessed key, also long enough!")).unwrap();
        assert_eq!(handshake(&a, &b).await.as_deref(), Ok("hello"));
        assert!(
            handshake(&a, &other).await.is_err(),
            "a dialler without the key"
        );
        assert!(
            handshake(&other, &a).await.is_err(),
            "an answerer without the key"
        );
    }
}
