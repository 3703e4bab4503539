//! The hashing limit: password verifications per second through gatehouse's
//! own [`Hasher`] (argon2id at OWASP's parameters, on its pool of
//! low-priority threads, one per core as `gatehouse serve` runs it), kept
//! busy for a while. The load harness (`bench/speed.py`) compares the login
//! rate with this figure, measured in the same run on the same machine.
//!
//! ```sh
//! cargo run --release --example hash_rate -- [SECONDS]
//! ```
//!
//! Prints one JSON line: `{"threads": N, "verifications": K, "per_s": R}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse::auth::password::Hasher;
use gatehouse::auth::types::Password;

const PASSWORD: &str = "bench passphrase that is long";

fn main() -> anyhow::Result<()> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 10,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let hasher = Arc::new(Hasher::new(threads, 1024)?);
        let phc = hasher.hash(Password::new(PASSWORD.to_owned())).await?;
        // A warm-up: the first hash of each thread allocates its memory.
        for _ in 0..threads {
            hasher
                .verify(Password::new(PASSWORD.to_owned()), Some(phc.clone()))
                .await?;
        }
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let until = start + Duration::from_secs(seconds);
        // Twice as many callers as threads, so the pool never waits for one.
        let callers: Vec<_> = (0..2 * threads)
            .map(|_| {
                let (hasher, phc, done) = (hasher.clone(), phc.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        let ok = hasher
                            .verify(Password::new(PASSWORD.to_owned()), Some(phc.clone()))
                            .await?;
                        anyhow::ensure!(ok, "the password did not verify");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for caller in callers {
            caller.await??;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "{{\"threads\": {threads}, \"verifications\": {n}, \"per_s\": {:.1}}}",
            n as f64 / elapsed
        );
        Ok(())
    })
}
