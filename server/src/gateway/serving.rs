//! The gateway's serving certificate when the operator provides one
//! (`WARDEN_GATEWAY_TLS_CERT_FILE`, `WARDEN_GATEWAY_TLS_KEY_FILE`, optionally
//! `WARDEN_GATEWAY_TLS_CA_FILE`), e.g. a Secret cert-manager keeps renewed.
//!
//! - Clients that name a host (SNI) get the provided certificate; connections without SNI or
//!   to `localhost` (the web terminal's own kubectl, which dials loopback and trusts the gateway
//!   CA) keep the certificate from Warden's gateway CA. So the public URL must use a DNS name
//!   (checked in the configuration).
//! - The files are re-read when they change (checked at most every [`RECHECK`] on a
//!   handshake): a renewal needs no restart. A renewal that cannot be loaded (half-written
//!   files, a key that does not match) keeps the previous certificate and says so in the log.
//! - Kubeconfigs embed the CA file's certificates; without one they embed none and kubectl
//!   verifies against the system's trust store (a publicly trusted certificate).

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often a handshake may look at the files' modification times.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Where the provided certificate lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA kubeconfigs embed (absent: none, the system's trust store verifies).
    pub ca_file: Option<PathBuf>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// The provided certificate, reloaded when its files change.
pub struct ProvidedCert {
    files: ProvidedTls,
    provider: Arc<CryptoProvider>,
    recheck: Duration,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for ProvidedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidedCert")
            .field("cert_file", &self.files.cert_file)
            .finish_non_exhaustive()
    }
}

fn stamp(files: &ProvidedTls) -> Stamp {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert_file), m(&files.key_file))
}

fn load(files: &ProvidedTls, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .with_context(|| format!("cannot read {}", files.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not PEM certificates", files.cert_file.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key_file).with_context(|| {
        format!(
            "{} is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key_file.display()
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("cannot use the key in {}", files.key_file.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        anyhow::anyhow!(
            "the key in {} does not belong to the certificate in {}: {e}",
            files.key_file.display(),
            files.cert_file.display()
        )
    })?;
    Ok(Arc::new(ck))
}

impl ProvidedCert {
    /// Load the files now: a start with unusable files fails loudly.
    pub fn load(files: ProvidedTls, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        Self::load_with(files, provider, RECHECK)
    }

    pub fn load_with(
        files: ProvidedTls,
        provider: Arc<CryptoProvider>,
        recheck: Duration,
    ) -> anyhow::Result<Self> {
        let key = load(&files, &provider)?;
        let state = RwLock::new(Loaded {
            key,
            stamp: stamp(&files),
            checked: Instant::now(),
        });
        Ok(Self {
            files,
            provider,
            recheck,
            state,
        })
    }

    /// The certificate to serve, reloaded first when the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.checked.elapsed() < self.recheck {
                return s.key.clone();
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= self.recheck {
            s.checked = Instant::now();
            let now = stamp(&self.files);
            if now != s.stamp {
                match load(&self.files, &self.provider) {
                    Ok(key) => {
                        s.key = key;
                        s.stamp = now;
                        tracing::info!(file = %self.files.cert_file.display(), "reloaded the gateway's provided TLS certificate");
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the gateway's provided TLS certificate changed but cannot be loaded; still serving the previous one");
                    }
                }
            }
        }
        s.key.clone()
    }

    /// The PEM kubeconfigs embed: the CA file's content, read now (it may be renewed too), or
    /// `None` without a usable CA file.
    pub fn ca_pem(&self) -> Option<String> {
        let path = self.files.ca_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(s) if s.contains("-----BEGIN CERTIFICATE-----") => Some(s),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read WARDEN_GATEWAY_TLS_CA_FILE; kubeconfigs will rely on the system's trust store");
                None
            }
        }
    }
}

/// Serves a fixed certificate.
#[derive(Debug)]
pub struct Fixed(pub Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The provided certificate for clients naming a host; Warden's own for loopback clients.
#[derive(Debug)]
pub struct BySni {
    pub internal: Arc<CertifiedKey>,
    pub provided: Arc<ProvidedCert>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) if !name.eq_ignore_ascii_case("localhost") => Some(self.provided.current()),
            _ => Some(self.internal.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn self_signed(host: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &std::path::Path) -> ProvidedTls {
        ProvidedTls {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            ca_file: Some(dir.join("ca.crt")),
        }
    }

    fn write(f: &ProvidedTls, (cert, key): &(String, String)) {
        std::fs::write(&f.cert_file, cert).unwrap();
        std::fs::write(&f.key_file, key).unwrap();
        // Distinct modification times even on coarse file systems.
        let later = SystemTime::now()
            + Duration::from_secs(
                1 + std::fs::read_dir(f.cert_file.parent().unwrap())
                    .unwrap()
                    .count() as u64,
            );
        for p in [&f.cert_file, &f.key_file] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let first = self_signed("kube.example.com");
        write(&f, &first);
        let p = ProvidedCert::load_with(f.clone(), provider(), Duration::ZERO).unwrap();
        let served = p.current();
        assert_eq!(
            served.cert[0].as_ref(),
            CertificateDer::from_pem_slice(first.0.as_bytes())
                .unwrap()
                .as_ref()
        );

        let second = self_signed("kube.example.com");
        write(&f, &second);
        let renewed = p.current();
        assert_eq!(
            renewed.cert[0].as_ref(),
            CertificateDer::from_pem_slice(second.0.as_bytes())
                .unwrap()
                .as_ref()
        );

        // Half a renewal: a new certificate with the old key. Keep serving the second.
        let third = self_signed("kube.example.com");
        write(&f, &(third.0.clone(), second.1.clone()));
        assert_eq!(p.current().cert[0].as_ref(), renewed.cert[0].as_ref());
        // Garbage: the same.
        write(&f, &("not pem".into(), "not pem".into()));
        assert_eq!(p.current().cert[0].as_ref(), renewed.cert[0].as_ref());
    }

    #[test]
    fn unusable_files_are_refused_at_start_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let err = ProvidedCert::load(f.clone(), provider()).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
        let (cert, _) = self_signed("a.example.com");
        let (_, other_key) = self_signed("b.example.com");
        write(&f, &(cert, other_key));
        let err = ProvidedCert::load(f.clone(), provider()).unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
    }

    #[test]
    fn kubeconfigs_embed_the_ca_file_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        write(&f, &self_signed("kube.example.com"));
        let p = ProvidedCert::load(f.clone(), provider()).unwrap();
        assert_eq!(p.ca_pem(), None, "no CA file: the system trust store");
        let (ca, _) = self_signed("Some CA");
        std::fs::write(f.ca_file.as_ref().unwrap(), &ca).unwrap();
        assert_eq!(p.ca_pem(), Some(ca));
    }
}
