//! In-process stores for the single-node shape: the failed-login counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::FailureCounter;

/// Most keys kept; past this, expired windows are swept, and if that is not
/// enough the oldest windows are dropped, so a spray of guesses over many
/// accounts cannot grow memory without bound.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: OffsetDateTime,
    closes: OffsetDateTime,
    failures: u32,
}

/// Failed-login counters in a mutex-guarded map (the critical sections are
/// a few map operations, never an await).
#[derive(Debug, Default)]
pub struct MemoryFailureCounter {
    windows: Mutex<HashMap<String, Window>>,
}

fn remaining(w: &Window, max: u32, now: OffsetDateTime) -> Option<Duration> {
    if w.failures >= max && now < w.closes {
        Duration::try_from(w.closes - now).ok()
    } else {
        None
    }
}

impl MemoryFailureCounter {
    fn evict(map: &mut HashMap<String, Window>, now: OffsetDateTime) {
        map.retain(|_, w| w.closes > now);
        if map.len() >= MAX_KEYS {
            let mut opened: Vec<OffsetDateTime> = map.values().map(|w| w.opened).collect();
            opened.sort_unstable();
            let cutoff = opened[opened.len() / 2];
            map.retain(|_, w| w.opened > cutoff);
        }
    }
}

#[async_trait]
impl FailureCounter for MemoryFailureCounter {
    async fn locked_for(
        &self,
        key: &str,
        max: u32,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<Duration>> {
        let map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).and_then(|w| remaining(w, max, now)))
    }

    async fn record_failure(
        &self,
        key: &str,
        max: u32,
        window: Duration,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<Duration>> {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            Self::evict(&mut map, now);
        }
        let w = map.entry(key.to_owned()).or_insert(Window {
            opened: now,
            closes: now + window,
            failures: 0,
        });
        if now >= w.closes {
            *w = Window {
                opened: now,
                closes: now + window,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        Ok(remaining(w, max, now))
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn locks_after_max_failures_until_the_window_closes() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let win = Duration::from_secs(60);
        assert_eq!(c.record_failure("k", 3, win, t0).await.expect("ok"), None);
        assert_eq!(c.record_failure("k", 3, win, t0).await.expect("ok"), None);
        let locked = c
            .record_failure("k", 3, win, t0 + Duration::from_secs(10))
            .await
            .expect("ok");
        assert_eq!(locked, Some(Duration::from_secs(50)));
        assert!(
            c.locked_for("k", 3, t0 + Duration::from_secs(59))
                .await
                .expect("ok")
                .is_some()
        );
        assert_eq!(c.locked_for("k", 3, t0 + win).await.expect("ok"), None);
        assert_eq!(c.locked_for("other", 3, t0).await.expect("ok"), None);
        // The next failure after the window opens a fresh one.
        assert_eq!(
            c.record_failure("k", 3, win, t0 + win).await.expect("ok"),
            None
        );
    }

    #[tokio::test]
    async fn reset_forgets_failures() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let win = Duration::from_secs(60);
        c.record_failure("k", 1, win, t0).await.expect("ok");
        assert!(c.locked_for("k", 1, t0).await.expect("ok").is_some());
        c.reset("k").await.expect("ok");
        assert_eq!(c.locked_for("k", 1, t0).await.expect("ok"), None);
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_spray() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        for i in 0..(MAX_KEYS + 10) {
            let now = t0 + Duration::from_millis(i as u64);
            c.record_failure(&format!("user{i}"), 5, Duration::from_secs(3600), now)
                .await
                .expect("ok");
        }
        let len = c.windows.lock().expect("lock").len();
        assert!(len <= MAX_KEYS, "{len}");
    }
}
