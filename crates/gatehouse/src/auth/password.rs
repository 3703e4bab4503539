//! Password hashing (argon2id on a bounded pool of low-priority threads)
//! and the password policy.

use std::collections::HashSet;

use anyhow::Context as _;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc};
use std::time::Duration;

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use crate::model::client::FieldError;
use crate::model::types::{Email, Password};

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

/// The policy of a new password, and not the account's own email: the
/// field error naming `field`, if any.
pub(crate) fn validate_new_password(
    field: &'static str,
    password: &str,
    email: Option<&Email>,
) -> Option<FieldError> {
    if let Err(m) = check_policy(password) {
        return Some(FieldError::new(field, m));
    }
    if email.is_some_and(|e| password.trim().eq_ignore_ascii_case(e.as_str())) {
        return Some(FieldError::new(field, "must not be your email address"));
    }
    None
}

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
        let dummy_hash = hash_phc(&argon2, &random).context("hashing the dummy password")?;
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
        self.run(move |a| hash_phc(a, password.expose().as_bytes()).context("hashing a password"))
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
            .run(move |_| verify_phc(password.expose().as_bytes(), &phc))
            .await?
            .map_err(HashError::Internal)?;
        Ok(known && matched)
    }
}

thread_local! {
    /// The argon2 memory of the thread, reused by every hash it runs.
    /// Allocated afresh for each hash (19 MiB), it cost ~7 ms of page faults
    /// a hash, and glibc, whose mmap threshold rises to the size of the
    /// first block freed, then served later blocks from per-thread arenas it
    /// never returned: 430 MB stayed resident after 40 hashes on 2 threads.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread keeps its memory: only the pool's threads do (a
    /// hash made elsewhere, as the dummy one at start-up, frees its own).
    static KEEPS_MEMORY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Most blocks a thread keeps for reuse: what the parameters gatehouse
/// hashes with need. A stored hash made with more memory (imported from
/// elsewhere) is verified with memory of its own, freed after.
fn reused_blocks() -> usize {
    Params::default().block_count()
}

/// How long a hashing thread keeps its argon2 memory without a job: an idle
/// node gives the memory back (19 MiB a thread), a busy one reuses it.
const KEEP_MEMORY_IDLE: Duration = Duration::from_secs(10);

/// The blocks a kept memory reserves (33 MiB of address space; only the
/// blocks a hash uses are ever touched, so only they are resident). Above
/// glibc's largest dynamic mmap threshold (32 MiB): such an allocation is
/// always its own mapping, unmapped when freed, and freeing it does not
/// raise the threshold, so memory released when a thread goes idle goes
/// back to the system every time rather than into an arena.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// Runs `f` over `blocks` blocks of this thread's argon2 memory.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    if blocks > reused_blocks() || !KEEPS_MEMORY.get() {
        return f(&mut vec![Block::new(); blocks]);
    }
    MEMORY.with_borrow_mut(|memory| {
        if memory.capacity() < blocks {
            *memory = Vec::with_capacity(RESERVED_BLOCKS.max(blocks));
        }
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        f(&mut memory[..blocks])
    })
}

/// Gives this thread's argon2 memory back (it is allocated again by the
/// next hash).
fn release_memory() {
    MEMORY.with_borrow_mut(|memory| *memory = Vec::new());
}

/// The PHC string of `password` under `argon2`'s parameters and a fresh
/// 16-byte salt: `$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`.
fn hash_phc(argon2: &Argon2<'_>, password: &[u8]) -> anyhow::Result<String> {
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
    let params = argon2.params();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, &salt, &mut out, memory)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| anyhow::anyhow!("{e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("{e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("{e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc` (any argon2 variant,
/// version and parameters it names), compared in constant time.
///
/// # Errors
/// When `phc` is not an argon2 PHC string with a salt and a hash.
fn verify_phc(password: &[u8], phc: &str) -> anyhow::Result<bool> {
    let malformed =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("a stored password hash is malformed: {e}");
    let parsed = PasswordHash::new(phc).map_err(|e| malformed(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| malformed(&e))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| malformed(&e))?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|e| malformed(&e))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(malformed(&"no salt or no hash"));
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    with_memory(argon2.params().block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, salt, &mut out, memory)
    })
    .map_err(|e| malformed(&e))?;
    Ok(bool::from(out.ct_eq(expected.as_bytes())))
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
                KEEPS_MEMORY.set(true);
                loop {
                    // The lock is held only while waiting for the next job.
                    let next = receiver
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .recv_timeout(KEEP_MEMORY_IDLE);
                    let job = match next {
                        Ok(job) => job,
                        // No job for a while (this thread's wait, or the
                        // others' before it): the memory goes back.
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            release_memory();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
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
    fn a_kept_memory_is_reserved_whole_and_given_back_whole() {
        std::thread::spawn(|| {
            KEEPS_MEMORY.set(true);
            let blocks = reused_blocks();
            with_memory(blocks, |m| assert_eq!(m.len(), blocks));
            // Reserved past glibc's largest dynamic mmap threshold: its own
            // mapping, unmapped when released.
            MEMORY.with_borrow(|m| assert!(m.capacity() >= RESERVED_BLOCKS));
            let again = MEMORY.with_borrow(|m| m.as_ptr());
            with_memory(blocks, |m| assert_eq!(m.as_ptr(), again, "reused"));
            release_memory();
            MEMORY.with_borrow(|m| assert_eq!(m.capacity(), 0));
        })
        .join()
        .expect("the thread");
    }

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

    /// Our PHC strings and the argon2 crate's own (which allocate their
    /// memory afresh and compose the string themselves) are one format:
    /// each verifies the other's, for the variants and parameters a stored
    /// hash may name. Run on a thread that keeps its memory, so later
    /// hashes reuse memory an earlier one left dirty, larger and smaller.
    #[test]
    fn phc_strings_agree_with_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        std::thread::spawn(|| {
            KEEPS_MEMORY.set(true);
            let password = b"correct horse battery staple";
            let cases = [
                (Algorithm::Argon2id, Params::default()),
                (
                    Algorithm::Argon2i,
                    Params::new(4096, 3, 1, Some(32)).expect("params"),
                ),
                (
                    Algorithm::Argon2d,
                    Params::new(8192, 1, 2, Some(24)).expect("params"),
                ),
                // More than a thread keeps: memory of its own.
                (
                    Algorithm::Argon2id,
                    Params::new(32768, 1, 1, None).expect("params"),
                ),
            ];
            for (algorithm, params) in cases {
                let argon2 = Argon2::new(algorithm, Version::V0x13, params.clone());
                let theirs = argon2
                    .hash_password(password)
                    .expect("their hash")
                    .to_string();
                assert!(verify_phc(password, &theirs).expect("parses"), "{theirs}");
                assert!(!verify_phc(b"wrong", &theirs).expect("parses"), "{theirs}");
                if algorithm == Algorithm::Argon2id && params.output_len().is_none() {
                    let ours = hash_phc(&argon2, password).expect("our hash");
                    let parsed = PasswordHash::new(&ours).expect("a PHC string");
                    argon2
                        .verify_password(password, &parsed)
                        .expect("they verify ours");
                    assert!(argon2.verify_password(b"wrong", &parsed).is_err());
                    assert!(verify_phc(password, &ours).expect("parses"));
                }
            }
            // Two hashes of one password differ (fresh salts).
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
            let one = hash_phc(&argon2, password).expect("hash");
            assert_ne!(one, hash_phc(&argon2, password).expect("hash"));
            assert!(
                MEMORY.with_borrow(Vec::len) == reused_blocks(),
                "the thread kept its memory"
            );
            for bad in [
                "",
                "$argon2id$v=19$m=19456,t=2,p=1",
                "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
                "$argon2id$v=99$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            ] {
                assert!(verify_phc(password, bad).is_err(), "{bad:?}");
            }
        })
        .join()
        .expect("the hashing thread");
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
