//! Password hashing (argon2id on a bounded pool of low-priority threads)
//! and the password policy.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc};

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

/// The niceness of the hashing threads. The scheduler then gives the cores
/// to request handling first and to hashing what is left, which is all of
/// them while nothing else runs: a login flood slows logins down, not the
/// token and session checks beside it (on 2 cores, nice 10 against 0 is a
/// weight of about 1 to 10).
const HASH_NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords with argon2id at OWASP's parameters
/// (m = 19 MiB, t = 2, p = 1), never on the async executor: each job runs on
/// a pool of `concurrency` threads of its own at [`HASH_NICENESS`], and a
/// bounded queue in front of it sheds load with [`HashError::Busy`], so a
/// login flood queues here instead of starving request handling.
pub struct Hasher {
    argon2: Argon2<'static>,
    /// Jobs for the hashing threads (they end when this is dropped).
    jobs: mpsc::Sender<Job>,
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
        let concurrency = concurrency.max(1);
        Ok(Self {
            argon2,
            jobs: spawn_pool(concurrency)?,
            permits: Arc::new(Semaphore::new(concurrency)),
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
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let out = job(&argon2);
            drop(permit);
            // The request may have gone meanwhile; nobody to tell.
            let _ = done.send(out);
        });
        self.jobs
            .send(job)
            .map_err(|_| HashError::Internal(anyhow::anyhow!("the hashing threads are gone")))?;
        result
            .await
            .map_err(|_| HashError::Internal(anyhow::anyhow!("a hashing job panicked")))
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

/// Starts `n` hashing threads at [`HASH_NICENESS`], taking jobs in turn from
/// one queue; they end when the returned sender is dropped.
fn spawn_pool(n: usize) -> anyhow::Result<mpsc::Sender<Job>> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for i in 0..n {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("gatehouse-hash-{i}"))
            .spawn(move || {
                lower_this_threads_priority();
                loop {
                    // The lock is held only while waiting for the next job.
                    let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { return };
                    // A panicking job drops its reply (the caller gets an
                    // error); the thread lives on for the next one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })
            .map_err(|e| anyhow::anyhow!("starting a password hashing thread: {e}"))?;
    }
    Ok(sender)
}

/// Makes the calling thread yield the CPU to request handling (Linux keeps
/// a niceness per thread). Elsewhere, or when refused, hashing keeps normal
/// priority, which only costs latency under a login flood.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        // Only ever lower the priority (a process started nicer stays so).
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if current >= HASH_NICENESS {
            return;
        }
        if let Err(e) = rustix::process::setpriority_process(Some(tid), HASH_NICENESS) {
            tracing::debug!(error = %e, "could not lower the priority of a hashing thread");
        }
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_below_request_handling() {
        let h = Hasher::new(2, 8).expect("hasher");
        let own = rustix::process::getpriority_process(None).expect("own niceness");
        for _ in 0..4 {
            let (name, niceness) = h
                .run(|_| {
                    let tid = rustix::thread::gettid();
                    let name = std::thread::current().name().map(str::to_owned);
                    (name, rustix::process::getpriority_process(Some(tid)))
                })
                .await
                .expect("job");
            assert!(
                name.as_deref()
                    .is_some_and(|n| n.starts_with("gatehouse-hash-")),
                "{name:?}"
            );
            // Lowered to niceness 10, or left lower if the process was.
            assert_eq!(niceness.expect("niceness"), own.max(HASH_NICENESS));
        }
        // The caller's own thread is untouched.
        assert_eq!(
            rustix::process::getpriority_process(None).expect("own"),
            own
        );
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_lives_on() {
        let h = Hasher::new(1, 8).expect("hasher");
        let failed = h.run(|_| -> u8 { panic!("boom") }).await;
        assert!(matches!(failed, Err(HashError::Internal(_))));
        assert!(h.hash(Password::new("abcdefgh".into())).await.is_ok());
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
