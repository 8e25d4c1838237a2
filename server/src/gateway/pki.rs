//! The gateway's certificates, kept in `WARDEN_DATA_DIR/gateway/` (files 0600, created at the
//! first start):
//!
//! - the **user CA** signs the short-lived client certificates in kubeconfigs
//!   (`CN=<user id>`, `O=warden`, `OU=<session type>`, a random serial recorded in the database);
//! - the **gateway CA** signs the gateway's serving certificate and is embedded in kubeconfigs,
//!   so kubectl verifies the gateway without trusting anything else. The serving certificate is
//!   re-issued at every start for the hosts of `WARDEN_GATEWAY_PUBLIC_URL` and loopback.
//!
//! With `WARDEN_MASTER_KEY` the CA keys are encrypted at rest (AES-256-GCM, see
//! `warden_domain::secrets::Sealer`); without it they are plain PEM, readable by the owner only.
//!
//! At TLS, a client certificate must chain to the user CA (anything else is refused before a
//! byte of HTTP); its validity period is checked per request against Warden's clock and the
//! credential's record, so an expired or revoked credential hears why.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName as RustlsDn, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use warden_domain::secrets::Sealer;

use super::serving::{BySni, Fixed, ProvidedCert, ProvidedTls};

/// The organization every Warden client certificate carries.
pub const CERT_ORG: &str = "warden";

/// A certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn generate(cn: &str) -> anyhow::Result<(Ca, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, CERT_ORG);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok((
            Ca {
                cert_pem: cert.pem(),
                cert_der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let der = pem_to_der(cert_pem).context("the CA certificate is not PEM")?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            cert_der: CertificateDer::from(der),
            issuer,
        })
    }

    /// Load `<name>.pem` / `<name>-key.pem` from `dir`, or create and store them. With a
    /// sealer (`WARDEN_MASTER_KEY`) the key file is encrypted; a plain key file found then is
    /// sealed in place.
    fn load_or_create(
        dir: &Path,
        name: &str,
        cn: &str,
        sealer: Option<&Sealer>,
    ) -> anyhow::Result<Ca> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        let purpose = format!("gateway/{name}-key.pem");
        if cert.exists() && key.exists() {
            let c = std::fs::read_to_string(&cert)
                .with_context(|| format!("cannot read {}", cert.display()))?;
            let stored = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let k = match (Sealer::is_sealed(&stored), sealer) {
                (true, Some(s)) => String::from_utf8(s.open(&purpose, &stored).with_context(|| {
                    format!(
                        "cannot open {}: it was sealed with another database's data key (a data directory kept for a new database: remove {} and new certificate authorities are made; kubeconfigs issued before stop working) or another master key",
                        key.display(),
                        dir.display()
                    )
                })?)
                .context("the sealed key is not text")?,
                (true, None) => anyhow::bail!(
                    "{} is encrypted: set WARDEN_MASTER_KEY (or WARDEN_MASTER_KEY_FILE) to the key it was sealed with",
                    key.display()
                ),
                (false, Some(s)) => {
                    write_private(&key, &s.seal(&purpose, stored.as_bytes()))?;
                    tracing::info!(path = %key.display(), "encrypted a CA key with the master key");
                    stored
                }
                (false, None) => stored,
            };
            return Ca::from_pem(&c, &k).with_context(|| format!("{} is not a CA", cert.display()));
        }
        let (ca, key_pem) = Ca::generate(cn)?;
        match sealer {
            Some(s) => write_private(&key, &s.seal(&purpose, key_pem.as_bytes()))?,
            None => write_private(&key, &key_pem)?,
        }
        write_private(&cert, &ca.cert_pem)?;
        tracing::info!(path = %cert.display(), "created a certificate authority");
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// Write a file readable by its owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Everything the gateway signs and serves with.
pub struct Pki {
    dir: PathBuf,
    user_ca: Ca,
    gateway_ca: Ca,
    /// The serving certificate from the gateway CA (always served to loopback clients).
    internal: Arc<rustls::sign::CertifiedKey>,
    /// An operator-provided serving certificate for clients that name a host.
    provided: Option<Arc<ProvidedCert>>,
    server: Arc<rustls::ServerConfig>,
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub user_id: String,
    pub session_type: String,
    /// Hex, lower case, without leading zero bytes.
    pub serial: String,
}

impl Pki {
    /// Load (or create) the CAs under `data_dir/gateway` and issue a serving certificate for
    /// `hosts` (DNS names or IP addresses). With a sealer the CA keys are encrypted at rest.
    /// The serving key lives in memory only (it is re-issued at every start).
    pub fn load_or_create(
        data_dir: &Path,
        hosts: &[String],
        sealer: Option<&Sealer>,
    ) -> anyhow::Result<Pki> {
        let dir = data_dir.join("gateway");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if sealer.is_none() {
            tracing::warn!(
                dir = %dir.display(),
                "WARDEN_MASTER_KEY is not set: the gateway's CA keys are stored unencrypted (files 0600); set it in production"
            );
        }
        let user_ca = Ca::load_or_create(&dir, "user-ca", "Warden user CA", sealer)?;
        let gateway_ca = Ca::load_or_create(&dir, "gateway-ca", "Warden gateway CA", sealer)?;
        let (cert_pem, key_pem) = serving_cert(&gateway_ca, hosts)?;
        write_private(&dir.join("gateway.pem"), &cert_pem)?;
        // A serving key left by an older version: it is not needed on disk.
        let _ = std::fs::remove_file(dir.join("gateway-key.pem"));
        let internal = certified_key(&gateway_ca, &cert_pem, &key_pem)?;
        let server = server_config(&user_ca, Arc::new(Fixed(internal.clone())))?;
        Ok(Pki {
            dir,
            user_ca,
            gateway_ca,
            internal,
            provided: None,
            server,
        })
    }

    /// Serve the operator's certificate to clients that name a host (see [`super::serving`]).
    pub fn serve_provided(&mut self, tls: ProvidedTls) -> anyhow::Result<()> {
        let provided = Arc::new(
            ProvidedCert::load(tls, Arc::new(rustls::crypto::ring::default_provider())).context(
                "cannot use the gateway's provided TLS certificate (WARDEN_GATEWAY_TLS_*)",
            )?,
        );
        self.server = server_config(
            &self.user_ca,
            Arc::new(BySni {
                internal: self.internal.clone(),
                provided: provided.clone(),
            }),
        )?;
        self.provided = Some(provided);
        Ok(())
    }

    /// The CA certificates a downloaded kubeconfig embeds: the gateway CA, or with a provided
    /// certificate its CA file (`None`: kubectl uses the system's trust store).
    pub fn kubeconfig_ca_pem(&self) -> Option<String> {
        match &self.provided {
            Some(p) => p.ca_pem(),
            None => Some(self.gateway_ca.cert_pem().to_owned()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA kubectl must trust for the gateway (embedded in kubeconfigs).
    pub fn gateway_ca_pem(&self) -> &str {
        self.gateway_ca.cert_pem()
    }

    pub fn user_ca_pem(&self) -> &str {
        self.user_ca.cert_pem()
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// A client certificate and its key (PEM) for a kubeconfig.
    pub fn client_cert(
        &self,
        user_id: &str,
        session_type: &str,
        serial_hex: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user_id);
        dn.push(DnType::OrganizationName, CERT_ORG);
        dn.push(DnType::OrganizationalUnitName, session_type);
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(
            &hex::decode(serial_hex).context("serial is not hex")?,
        ));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.user_ca.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn serving_cert(ca: &Ca, hosts: &[String]) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        let h = h.trim_start_matches('[').trim_end_matches(']').to_owned();
        if !h.is_empty() && !names.contains(&h) {
            names.push(h);
        }
    }
    for n in &names {
        match n.parse::<std::net::IpAddr>() {
            Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => params
                .subject_alt_names
                .push(SanType::DnsName(n.as_str().try_into()?)),
        }
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "warden-gateway");
    dn.push(DnType::OrganizationName, CERT_ORG);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The serving certificate (chain: it and the gateway CA) with its key.
fn certified_key(
    gateway_ca: &Ca,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let cert_der = pem_to_der(cert_pem).context("serving certificate")?;
    let key_der = pem_to_der(key_pem).context("serving key")?;
    let ck = rustls::sign::CertifiedKey::from_der(
        vec![CertificateDer::from(cert_der), gateway_ca.cert_der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        &rustls::crypto::ring::default_provider(),
    )?;
    Ok(Arc::new(ck))
}

fn server_config(
    user_ca: &Ca,
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(user_ca.cert_der.clone())?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("client verifier: {e}"))?;
    let verifier = Arc::new(ChainOnlyVerifier { inner });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    // HTTP/1.1 only: upgrades (exec, attach, port-forward) are HTTP/1.1 upgrades.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Verifies the chain to the user CA (and the handshake signatures) at TLS, but not the
/// validity period: expiry is checked per request against Warden's clock and the credential
/// record, so the refusal can say "expired" instead of a bare TLS alert.
#[derive(Debug)]
struct ChainOnlyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ChainOnlyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[RustlsDn] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Verify "as of" an instant inside the certificate's own validity period.
        let at = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .ok()
            .map(|(_, c)| c.validity().not_before.timestamp())
            .filter(|t| *t > 0)
            .map(|t| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t as u64 + 1)))
            .unwrap_or(now);
        self.inner.verify_client_cert(end_entity, intermediates, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Who a (verified) client certificate names.
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user_id = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_owned();
    let session_type = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("cli")
        .to_owned();
    Some(PeerIdentity {
        user_id,
        session_type,
        serial: normalize_serial(cert.raw_serial()),
    })
}

/// Hex of a serial number without leading zero bytes.
pub fn normalize_serial(bytes: &[u8]) -> String {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    hex::encode(trimmed)
}

/// The first PEM block's DER bytes.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut inside = false;
    let mut b64 = String::new();
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            inside = true;
            continue;
        }
        if line.starts_with("-----END") {
            break;
        }
        if inside {
            b64.push_str(line);
        }
    }
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_client_certs_it_can_read_back_and_keeps_its_cas() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &["gw.example.com".into()], None).unwrap();
        let now = OffsetDateTime::now_utc();
        let (cert, _key) = pki
            .client_cert(
                "6f1c1f47-6d7c-4a37-9d8b-0d7c3f1e2a10",
                "cli",
                "1a2b3c",
                now,
                now + Duration::hours(8),
            )
            .unwrap();
        let id = peer_identity(&pem_to_der(&cert).unwrap()).unwrap();
        assert_eq!(id.user_id, "6f1c1f47-6d7c-4a37-9d8b-0d7c3f1e2a10");
        assert_eq!(id.session_type, "cli");
        assert_eq!(id.serial, "1a2b3c");
        let again = Pki::load_or_create(dir.path(), &[], None).unwrap();
        assert_eq!(again.user_ca_pem(), pki.user_ca_pem());
        assert_eq!(again.gateway_ca_pem(), pki.gateway_ca_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["user-ca-key.pem", "gateway-ca-key.pem", "gateway.pem"] {
                let mode = std::fs::metadata(dir.path().join("gateway").join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
    }

    #[test]
    fn ca_keys_are_sealed_with_the_master_key_and_refused_without_it() {
        use warden_domain::secrets::Secret;
        let dir = tempfile::tempdir().unwrap();
        // Created unencrypted first (no master key yet)...
        let plain = Pki::load_or_create(dir.path(), &[], None).unwrap();
        let key_file = dir.path().join("gateway").join("user-ca-key.pem");
        assert!(std::fs::read_to_string(&key_file)
            .unwrap()
            .contains("PRIVATE KEY"));
        assert!(!dir.path().join("gateway").join("gateway-key.pem").exists());
        // ...then sealed in place once a master key is set, and still the same CA.
        let sealer = Sealer::new(&Secret::new("master key for tests"));
        let sealed = Pki::load_or_create(dir.path(), &[], Some(&sealer)).unwrap();
        assert_eq!(sealed.user_ca_pem(), plain.user_ca_pem());
        let on_disk = std::fs::read_to_string(&key_file).unwrap();
        assert!(Sealer::is_sealed(&on_disk) && !on_disk.contains("PRIVATE KEY"));
        let again = Pki::load_or_create(dir.path(), &[], Some(&sealer)).unwrap();
        assert_eq!(again.gateway_ca_pem(), plain.gateway_ca_pem());
        // Without the key, or with another one, it refuses to start and says why.
        let err = Pki::load_or_create(dir.path(), &[], None).err().unwrap();
        assert!(format!("{err:#}").contains("WARDEN_MASTER_KEY"), "{err:#}");
        let wrong = Sealer::new(&Secret::new("another key"));
        let err = Pki::load_or_create(dir.path(), &[], Some(&wrong))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("wrong WARDEN_MASTER_KEY"),
            "{err:#}"
        );
        // A fresh directory with a master key never holds a plain key.
        let fresh = tempfile::tempdir().unwrap();
        Pki::load_or_create(fresh.path(), &[], Some(&sealer)).unwrap();
        for f in ["user-ca-key.pem", "gateway-ca-key.pem"] {
            let text = std::fs::read_to_string(fresh.path().join("gateway").join(f)).unwrap();
            assert!(Sealer::is_sealed(&text), "{f}");
        }
    }
}
