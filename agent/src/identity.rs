//! The agent's identity: an Ed25519 key pair generated in the cluster at its first start. The
//! private key (its 32-byte seed) stays where the agent keeps its other state (its Secret, or
//! the state file next to the manifest); Warden keeps only the public key, registered with the
//! bootstrap token, and every connection proves possession by signing a one-time challenge.

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use warden_domain::agent_protocol::{proof_message, Challenge, PROOF_CONTEXT};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The agent's key pair.
pub struct AgentKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("public", &self.public_b64())
            .finish()
    }
}

impl AgentKey {
    /// A new random seed (base64url), from the operating system's generator.
    pub fn generate_seed() -> Result<String, String> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "the system's random generator failed".to_owned())?;
        Ok(B64.encode(seed))
    }

    /// The key pair of a stored seed.
    pub fn from_seed(seed_b64: &str) -> Result<Self, String> {
        let seed = B64
            .decode(seed_b64.trim().trim_end_matches('='))
            .map_err(|_| "the stored agent key is not base64url".to_owned())?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| "the stored agent key is not a 32-byte Ed25519 seed".to_owned())?;
        Ok(Self { pair })
    }

    /// The public key, as sent in `X-Warden-Agent-Key`.
    pub fn public_b64(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// The proof for a challenge, as sent in `X-Warden-Proof`. It is always made for the
    /// agent's connection ([`PROOF_CONTEXT`]), whatever context the challenge names: the key
    /// signs nothing whose purpose the other side chooses.
    pub fn prove(&self, c: &Challenge) -> String {
        B64.encode(
            self.pair
                .sign(&proof_message(PROOF_CONTEXT, &c.nonce, &c.cluster_id))
                .as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_key_nonce_and_cluster() {
        let key = AgentKey::from_seed(&AgentKey::generate_seed().unwrap()).unwrap();
        let other = AgentKey::from_seed(&AgentKey::generate_seed().unwrap()).unwrap();
        let c = Challenge {
            nonce: "n1".into(),
            cluster_id: "c1".into(),
            context: warden_domain::agent_protocol::PROOF_CONTEXT.into(),
        };
        let proof = key.prove(&c);
        let verify = |k: &str, n: &str, id: &str, p: &str| {
            let msg = proof_message(warden_domain::agent_protocol::PROOF_CONTEXT, n, id);
            let (Ok(k), Ok(p)) = (B64.decode(k), B64.decode(p)) else {
                return false;
            };
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k)
                .verify(&msg, &p)
                .is_ok()
        };
        assert!(verify(&key.public_b64(), "n1", "c1", &proof));
        // A challenge naming another purpose gets the same proof, good for connecting only.
        let other_purpose = Challenge {
            context: "sign-in-somewhere-else".into(),
            ..c.clone()
        };
        assert_eq!(key.prove(&other_purpose), proof);
        assert!(!verify(&other.public_b64(), "n1", "c1", &proof));
        assert!(!verify(&key.public_b64(), "n2", "c1", &proof));
        assert!(!verify(&key.public_b64(), "n1", "c2", &proof));
        // The same seed is the same key.
        let seed = AgentKey::generate_seed().unwrap();
        assert_eq!(
            AgentKey::from_seed(&seed).unwrap().public_b64(),
            AgentKey::from_seed(&seed).unwrap().public_b64()
        );
        assert!(AgentKey::from_seed("not a key").is_err());
        assert!(!format!("{key:?}").contains(&seed));
    }
}
