//! Password hashing (argon2id on a bounded blocking pool) and the password
//! policy.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::types::Password;

/// Shortest and longest accepted passwords, in characters (OWASP ASVS 2.1.1,
/// 2.1.2).
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// The 10,000 most common passwords; see `data/common-passwords.NOTICE.md`.
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// Checks a new password against the policy.
///
/// # Errors
/// A message fit for a validation problem.
pub fn check_policy(password: &str) -> Result<(), &'static str> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err("must be at least 8 characters");
    }
    if chars > MAX_LEN {
        return Err("must be at most 128 characters");
    }
    if COMMON.contains(password.to_lowercase().as_str()) {
        return Err("is too common: it appears in lists of leaked passwords");
    }
    Ok(())
}

/// Why hashing could not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// More requests are waiting for the pool than it accepts: shed load
    /// instead of queueing without bound.
    #[error("the password hashing queue is full")]
    Busy,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Hashes and verifies passwords with argon2id at OWASP's parameters
/// (m = 19 MiB, t = 2, p = 1), never on the async executor: each job runs on
/// tokio's blocking pool, and a semaphore bounds how many run at once, so a
/// login flood queues here instead of starving request handling.
pub struct Hasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Verified against when the email is unknown, so that case costs the
    /// same as a wrong password.
    dummy_hash: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher running at most `concurrency` hashes at once and queueing at
    /// most `max_waiting` more.
    ///
    /// # Errors
    /// When the RNG or the hash of the dummy password fails.
    pub fn new(concurrency: usize, max_waiting: usize) -> anyhow::Result<Self> {
        // Params::default() is OWASP's argon2id recommendation.
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let dummy_hash = argon2
            .hash_password(&random)
            .map_err(|e| anyhow::anyhow!("hashing the dummy password: {e}"))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            dummy_hash,
        })
    }

    /// How many hashing jobs wait for a slot right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|e| anyhow::anyhow!("hashing pool closed: {e}"))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || {
            let out = job(&argon2);
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Internal(anyhow::anyhow!("hashing task failed: {e}")))
    }

    /// Hashes a password into a PHC string with a fresh random salt.
    ///
    /// # Errors
    /// [`HashError::Busy`] when the queue is full; otherwise internal.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.run(move |a| {
            a.hash_password(password.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await?
        .map_err(HashError::Internal)
    }

    /// Checks a password against a stored PHC string, or against the dummy
    /// hash when there is none (unknown account), which always fails but
    /// takes as long.
    ///
    /// # Errors
    /// [`HashError::Busy`] when the queue is full; internal when the stored
    /// hash cannot be parsed.
    pub async fn verify(&self, password: Password, phc: Option<String>) -> Result<bool, HashError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.clone());
        let matched = self
            .run(move |a| {
                let parsed = PasswordHash::new(&phc)
                    .map_err(|e| anyhow::anyhow!("a stored password hash is malformed: {e}"))?;
                Ok::<_, anyhow::Error>(
                    a.verify_password(password.expose().as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await?
            .map_err(HashError::Internal)?;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_enforces_length_and_rejects_common_passwords() {
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(129)).is_err());
        assert!(check_policy("correct horse battery staple").is_ok());
        // Length counts characters, not bytes.
        assert!(check_policy(&"é".repeat(100)).is_ok());
        for common in ["password", "PASSWORD", "12345678", "qwertyuiop"] {
            assert!(check_policy(common).is_err(), "{common}");
        }
        assert_eq!(COMMON.len(), 10_000);
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let h = Hasher::new(1, 8).expect("hasher");
        let phc = h
            .hash(Password::new("s3cret-enough".into()))
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            h.verify(Password::new("s3cret-enough".into()), Some(phc.clone()))
                .await
                .expect("v")
        );
        assert!(
            !h.verify(Password::new("wrong".into()), Some(phc))
                .await
                .expect("v")
        );
        assert!(
            !h.verify(Password::new("s3cret-enough".into()), None)
                .await
                .expect("v")
        );
        assert!(
            h.verify(Password::new("x".into()), Some("garbage".into()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_full_queue_sheds_load() {
        let h = Arc::new(Hasher::new(1, 0).expect("hasher"));
        assert!(matches!(
            h.hash(Password::new("abcdefgh".into())).await,
            Err(HashError::Busy)
        ));
    }
}
