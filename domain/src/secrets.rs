//! Random secrets and their hashes (only hashes of tokens are stored), and the sealing of
//! secrets Warden must keep readable (encrypted at rest with `WARDEN_MASTER_KEY`).

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A random URL-safe secret with `bytes` bytes of entropy.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 in hex. Tokens carry 256 bits of entropy, so a fast hash is the right tool.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Constant-time comparison of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A generated password for the first administrator: 24 characters from an unambiguous set.
pub fn generate_password() -> String {
    const SET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| SET[(rng.next_u32() as usize) % SET.len()] as char)
        .collect()
}

/// A secret value whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A 32-byte key for one `purpose`, derived from the master key (any length) with
/// HKDF-SHA256: keys for different purposes are independent of each other.
pub fn derive_key(master_key: &Secret, purpose: &[u8]) -> [u8; 32] {
    use ring::hkdf;
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"warden master key v1");
    let prk = salt.extract(master_key.expose().as_bytes());
    let mut bytes = [0u8; 32];
    prk.expand(&[purpose], Len)
        .and_then(|okm| okm.fill(&mut bytes))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    bytes
}

/// Encrypts secrets kept at rest (the gateway's CA keys today) with a key derived from
/// `WARDEN_MASTER_KEY`: AES-256-GCM, a fresh random nonce per value, and the value's purpose
/// as associated data so a sealed value cannot be moved to another use. Sealed text looks like
/// `warden-sealed:v1:<base64 of nonce and ciphertext>`.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<ring::aead::LessSafeKey>,
    /// Keys [`Sealer::mac`]: derived from the same master key for another purpose.
    mac_key: ring::hmac::Key,
}

/// Why a sealed value cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the value is not sealed by Warden")]
    NotSealed,
    #[error("the value cannot be decrypted: wrong WARDEN_MASTER_KEY, or the value was altered")]
    Undecryptable,
}

const SEALED_PREFIX: &str = "warden-sealed:v1:";
const SEALED_BYTES_PREFIX: &[u8] = b"warden-sealed:b1:";

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    /// A sealer keyed by the master key (any length; HKDF-SHA256 derives the AES key).
    pub fn new(master_key: &Secret) -> Self {
        use ring::aead;
        let bytes = derive_key(master_key, b"secrets at rest");
        let key =
            aead::UnboundKey::new(&aead::AES_256_GCM, &bytes).expect("32 bytes is an AES-256 key");
        let mac = derive_key(master_key, b"macs at rest");
        Self {
            key: std::sync::Arc::new(aead::LessSafeKey::new(key)),
            mac_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &mac),
        }
    }

    /// HMAC-SHA256 of `data` for `purpose`, in hex: a digest of a low-entropy secret (a
    /// recovery code) that a copy of the database alone cannot test guesses against.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.mac_key);
        ctx.update(purpose.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        hex::encode(ctx.sign().as_ref())
    }

    /// Whether `text` is a sealed value.
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }

    /// The nonce, then `plain` encrypted for `purpose` with its tag.
    fn seal_raw(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        use ring::aead;
        let mut nonce = [0u8; aead::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(purpose.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM seals any length we store");
        let mut out = Vec::with_capacity(nonce.len() + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    /// What [`Sealer::seal_raw`] sealed for `purpose`.
    fn open_raw(&self, purpose: &str, raw: &[u8]) -> Result<Vec<u8>, SealError> {
        use ring::aead;
        if raw.len() < aead::NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(SealError::Undecryptable);
        }
        let (nonce, ct) = raw.split_at(aead::NONCE_LEN);
        let nonce =
            aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Undecryptable)?;
        let mut buf = ct.to_vec();
        let n = self
            .key
            .open_in_place(nonce, aead::Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| SealError::Undecryptable)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Seal `plain` for `purpose` (e.g. the file name).
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> String {
        format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(self.seal_raw(purpose, plain))
        )
    }

    /// Seal `plain` for `purpose` as bytes (for blobs such as terminal recordings, where
    /// base64 would add a third): `warden-sealed:b1:`, the nonce, the ciphertext and its tag.
    pub fn seal_bytes(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let mut out = SEALED_BYTES_PREFIX.to_vec();
        out.extend(self.seal_raw(purpose, plain));
        out
    }

    /// Whether `data` was sealed by [`Sealer::seal_bytes`].
    pub fn is_sealed_bytes(data: &[u8]) -> bool {
        data.starts_with(SEALED_BYTES_PREFIX)
    }

    /// Open bytes sealed for `purpose` by [`Sealer::seal_bytes`].
    pub fn open_bytes(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let raw = sealed
            .strip_prefix(SEALED_BYTES_PREFIX)
            .ok_or(SealError::NotSealed)?;
        self.open_raw(purpose, raw)
    }

    /// Open a value sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed
            .trim()
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::NotSealed)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| SealError::Undecryptable)?;
        self.open_raw(purpose, &raw)
    }
}

#[cfg(test)]
mod sealer_tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_the_wrong_key_purpose_or_edits() {
        let s = Sealer::new(&Secret::new("correct horse battery staple"));
        let sealed = s.seal("user-ca-key.pem", b"-----BEGIN PRIVATE KEY-----");
        assert!(Sealer::is_sealed(&sealed));
        assert!(!sealed.contains("PRIVATE KEY"));
        assert_eq!(
            s.open("user-ca-key.pem", &sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            s.seal("user-ca-key.pem", b"-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(
            s.open("gateway-ca-key.pem", &sealed),
            Err(SealError::Undecryptable)
        );
        let other = Sealer::new(&Secret::new("another key"));
        assert_eq!(
            other.open("user-ca-key.pem", &sealed),
            Err(SealError::Undecryptable)
        );
        let mut edited = sealed.clone();
        edited.pop();
        edited.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            s.open("user-ca-key.pem", &edited),
            Err(SealError::Undecryptable)
        );
        assert_eq!(s.open("x", "plain text"), Err(SealError::NotSealed));
    }

    #[test]
    fn bytes_seal_and_open_bound_to_their_purpose() {
        let s = Sealer::new(&Secret::new("correct horse battery staple"));
        let plain = b"[0.1, \"o\", \"password: hunter2\"]\n";
        let sealed = s.seal_bytes("recording r chunk 0", plain);
        assert!(Sealer::is_sealed_bytes(&sealed));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open_bytes("recording r chunk 0", &sealed).unwrap(), plain);
        assert_eq!(
            s.open_bytes("recording r chunk 1", &sealed),
            Err(SealError::Undecryptable)
        );
        let mut edited = sealed.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert_eq!(
            s.open_bytes("recording r chunk 0", &edited),
            Err(SealError::Undecryptable)
        );
        assert_eq!(
            s.open_bytes("recording r chunk 0", plain),
            Err(SealError::NotSealed)
        );
        assert_eq!(s.open_bytes("x", &s.seal_bytes("x", b"")).unwrap(), b"");
    }
}
