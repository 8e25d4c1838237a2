//! The simulator's certificate authority, server certificate, client certificates and the
//! rustls server configuration (client certificates are optional and verified against the CA).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

/// The CA: its certificate (PEM and DER) and its signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh CA (`CN=kubesim-ca`), valid ten years.
    pub fn generate() -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kubesim-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
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
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA loaded back from its PEM certificate and key (for `--state`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let der = pem_to_der(cert_pem).ok_or_else(|| Error::State("bad CA certificate".into()))?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der: CertificateDer::from(der),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A serving certificate for loopback and the in-cluster service names.
    pub fn server_cert(&self) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([
                0u16, 0, 0, 0, 0, 0, 0, 1,
            ])));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([10, 96, 0, 1])));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate with `CN=user` and one `O=` per group, valid one year.
    ///
    /// Written with a small DER encoder: rcgen's distinguished names hold one value per
    /// attribute type, and Kubernetes needs one `O` attribute per group.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        use rcgen::{PublicKeyData, SigningKey};
        let key = KeyPair::generate()?;
        let ca_subject = {
            let (_, ca) = x509_parser::parse_x509_certificate(self.cert_der.as_ref())
                .map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
            ca.tbs_certificate.subject.as_raw().to_vec()
        };
        let mut rdns = Vec::new();
        for g in groups {
            rdns.push(der::set(&[der::seq(&[
                der::oid(&[2, 5, 4, 10]),
                der::utf8(g),
            ])]));
        }
        rdns.push(der::set(&[der::seq(&[
            der::oid(&[2, 5, 4, 3]),
            der::utf8(user),
        ])]));
        let subject = der::seq(&rdns);
        let ecdsa_sha256 = der::seq(&[der::oid(&[1, 2, 840, 10045, 4, 3, 2])]);
        let now = OffsetDateTime::now_utc();
        let validity = der::seq(&[
            der::utc_time(now - Duration::hours(1)),
            der::utc_time(now + Duration::days(365)),
        ]);
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let ext = |oid: &[u64], critical: bool, value: Vec<u8>| {
            let mut parts = vec![der::oid(oid)];
            if critical {
                parts.push(vec![0x01, 0x01, 0xff]);
            }
            parts.push(der::tlv(0x04, &value));
            der::seq(&parts)
        };
        let extensions = der::seq(&[
            ext(&[2, 5, 29, 15], true, der::tlv(0x03, &[0x07, 0x80])),
            ext(
                &[2, 5, 29, 37],
                false,
                der::seq(&[der::oid(&[1, 3, 6, 1, 5, 5, 7, 3, 2])]),
            ),
            ext(&[2, 5, 29, 19], true, der::seq(&[])),
        ]);
        let tbs = der::seq(&[
            der::tlv(0xa0, &der::tlv(0x02, &[0x02])),
            der::tlv(0x02, &serial),
            ecdsa_sha256.clone(),
            ca_subject,
            validity,
            subject,
            key.subject_public_key_info(),
            der::tlv(0xa3, &extensions),
        ]);
        let sig = self.issuer.key().sign(&tbs)?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(&sig);
        let cert = der::seq(&[tbs, ecdsa_sha256, der::tlv(0x03, &bits)]);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&cert);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        Ok((pem, key.serialize_pem()))
    }

    /// The rustls configuration: HTTP/1.1 only, client certificates optional but verified.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| Error::Other(format!("client verifier: {e}")))?;
        let (cert_pem, key_pem) = self.server_cert()?;
        let cert_der =
            pem_to_der(&cert_pem).ok_or_else(|| Error::Other("server cert pem".into()))?;
        let key_der = pem_to_der(&key_pem).ok_or_else(|| Error::Other("server key pem".into()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(cert_der), self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
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

/// `(CN, [O...])` of a verified client certificate.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Some((cn, groups))
}

/// Just enough DER to write a certificate.
mod der {
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn seq(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    pub fn set(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x31, &items.concat())
    }

    pub fn oid(arcs: &[u64]) -> Vec<u8> {
        let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
        for &a in &arcs[2..] {
            let mut chunk = vec![(a & 0x7f) as u8];
            let mut v = a >> 7;
            while v > 0 {
                chunk.push(0x80 | (v & 0x7f) as u8);
                v >>= 7;
            }
            chunk.reverse();
            body.extend(chunk);
        }
        tlv(0x06, &body)
    }

    pub fn utf8(s: &str) -> Vec<u8> {
        tlv(0x0c, s.as_bytes())
    }

    pub fn utc_time(t: time::OffsetDateTime) -> Vec<u8> {
        let s = format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        tlv(0x17, s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_carries_every_group() {
        let ca = Ca::generate().unwrap();
        let (pem, _) = ca.client_cert("alice", &["dev", "ops"]).unwrap();
        let der = pem_to_der(&pem).unwrap();
        let (cn, groups) = identity_from_cert(&der).unwrap();
        assert_eq!(cn, "alice");
        assert_eq!(groups, vec!["dev".to_string(), "ops".to_string()]);
    }
}
