//! What a node knows of a networked store's health: "down since T", set by
//! the first operation that fails as a broken connection would (refused,
//! reset, timed out), and cleared by a background probe. While a store is
//! known down its operations fail at once instead of each waiting on a
//! reconnection (DESIGN.md, "fail closed, and fast"); only the probe waits.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::{from_millis, to_millis};

/// How often the probe asks a store that is down whether it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Longest one probe may wait for its answer.
pub const PROBE_WITHIN: Duration = Duration::from_millis(500);

/// The health of one store, shared by every handle on it.
#[derive(Debug)]
pub struct Health {
    /// Which store, for the log.
    name: &'static str,
    /// When the store was found down, in ms since the epoch; 0 while up.
    down_since_ms: AtomicI64,
    /// Whether a probe task is running.
    probing: AtomicBool,
}

impl Health {
    /// A store presumed up.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            down_since_ms: AtomicI64::new(0),
            probing: AtomicBool::new(false),
        })
    }

    /// When the store was found down, while it is (one atomic load: cheap
    /// enough for every operation).
    pub fn down_since(&self) -> Option<OffsetDateTime> {
        match self.down_since_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(from_millis(ms)),
        }
    }

    /// Marks the store down (keeping the first instant of an outage) and
    /// starts the probe unless one runs; `probe` answers `Ok` once the store
    /// serves again. Must be called within a Tokio runtime.
    pub fn mark_down<P, F, E>(self: &Arc<Self>, why: &E, probe: P)
    where
        P: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let now = to_millis(OffsetDateTime::now_utc()).max(1);
        if self
            .down_since_ms
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                store = self.name,
                error = %why,
                "store unreachable: its operations fail at once until a probe reaches it again"
            );
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let health = Arc::clone(self);
        tokio::spawn(health.probe(probe));
    }

    async fn probe<P, F, E>(self: Arc<Self>, mut probe: P)
    where
        P: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            match tokio::time::timeout(PROBE_WITHIN, probe()).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::debug!(store = self.name, error = %e, "store still unreachable");
                }
                Err(_) => {
                    tracing::debug!(store = self.name, "store probe timed out");
                }
            }
        }
        // Clear `probing` first: a failure after the store is marked up
        // must be able to start a new probe.
        self.probing.store(false, Ordering::Release);
        self.down_since_ms.store(0, Ordering::Release);
        tracing::info!(store = self.name, "store reachable again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn a_store_marked_down_stays_down_until_its_probe_succeeds() {
        let health = Health::new("test");
        assert!(health.down_since().is_none());
        let tries = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&tries);
        health.mark_down(&"refused", move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err("refused") } else { Ok(()) } }
        });
        let since = health.down_since().expect("down");
        // A second failure neither moves the instant nor starts a second probe.
        health.mark_down(&"refused", || async { Ok::<(), &str>(()) });
        assert_eq!(health.down_since(), Some(since));
        tokio::time::sleep(PROBE_EVERY * 6).await;
        assert!(health.down_since().is_none());
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }
}
