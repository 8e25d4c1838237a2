//! Password hashing with argon2id (the crate's defaults: m=19 MiB, t=2, p=1, as OWASP advises).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use std::sync::OnceLock;

use crate::error::{DomainError, DomainResult};

/// At most this many argon2 computations run at once (about the number of cores): a burst of
/// sign-ins queues here instead of taking every blocking thread and 19 MiB each.
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores.max(1))
    })
}

/// Hash a password. Runs on a blocking thread: argon2 is deliberately slow.
pub async fn hash(password: &str) -> DomainResult<String> {
    let password = password.to_owned();
    let _slot = hashing_slots()
        .acquire()
        .await
        .map_err(|e| DomainError::Internal(format!("hashing slots: {e}")))?;
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| DomainError::Internal(format!("hashing task failed: {e}")))?
}

pub fn hash_blocking(password: &str) -> DomainResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("argon2: {e}")))
}

/// Verify a password against a stored hash. With no stored hash (unknown user, or a user with
/// no password) it verifies against a fixed dummy hash, so the answer takes the same time.
pub async fn verify(password: &str, stored: Option<&str>) -> bool {
    let password = password.to_owned();
    let stored = stored.map(str::to_owned);
    let Ok(_slot) = hashing_slots().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let (phc, real) = match stored {
            Some(h) => (h, true),
            None => (dummy_hash().to_owned(), false),
        };
        let ok = PasswordHash::new(&phc)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && real
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("warden-timing-equaliser").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hash_and_verify() {
        let h = super::hash("correct horse battery").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("correct horse battery", Some(&h)).await);
        assert!(!super::verify("wrong horse battery", Some(&h)).await);
        assert!(!super::verify("warden-timing-equaliser", None).await);
    }
}
