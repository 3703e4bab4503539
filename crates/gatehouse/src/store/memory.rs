//! In-process stores for the single-node shape: the attempt counters of
//! login and registration throttling.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Attempt, FailureCounter};

/// Most keys kept; past this, closed windows are swept, and if that is not
/// enough the older half is dropped, so a spray of guesses over many
/// accounts cannot grow memory without bound.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: OffsetDateTime,
    closes: OffsetDateTime,
    count: u32,
}

/// Attempt counters in a mutex-guarded map (the critical sections are a few
/// map operations, never an await).
#[derive(Debug, Default)]
pub struct MemoryFailureCounter {
    windows: Mutex<HashMap<String, Window>>,
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
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: OffsetDateTime,
    ) -> anyhow::Result<Attempt> {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            Self::evict(&mut map, now);
        }
        // A window too long to represent never closes (fail closed).
        let closes = time::Duration::try_from(window)
            .ok()
            .and_then(|w| now.checked_add(w))
            .unwrap_or(OffsetDateTime::new_utc(
                time::Date::MAX,
                time::Time::MIDNIGHT,
            ));
        let fresh = Window {
            opened: now,
            closes,
            count: 0,
        };
        let w = map.entry(key.to_owned()).or_insert(fresh);
        if now >= w.closes {
            *w = fresh;
        }
        w.count = w.count.saturating_add(1);
        Ok(Attempt {
            count: w.count,
            window_left: Duration::try_from(w.closes - now).unwrap_or_default(),
        })
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }

    async fn forgive(&self, key: &str, now: OffsetDateTime) -> anyhow::Result<()> {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let emptied = match map.get_mut(key) {
            Some(w) if now < w.closes => {
                w.count = w.count.saturating_sub(1);
                w.count == 0
            }
            _ => false,
        };
        if emptied {
            map.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn counts_attempts_in_a_fixed_window() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let win = Duration::from_secs(60);
        assert_eq!(c.hit("k", win, t0).await.expect("ok").count, 1);
        assert_eq!(c.hit("k", win, t0).await.expect("ok").count, 2);
        let third = c
            .hit("k", win, t0 + Duration::from_secs(10))
            .await
            .expect("ok");
        assert_eq!(
            third,
            Attempt {
                count: 3,
                window_left: Duration::from_secs(50)
            }
        );
        assert_eq!(c.hit("other", win, t0).await.expect("ok").count, 1);
        // The first attempt after the window closed opens a fresh one.
        assert_eq!(c.hit("k", win, t0 + win).await.expect("ok").count, 1);
    }

    #[tokio::test]
    async fn reset_forgets_attempts() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let win = Duration::from_secs(60);
        c.hit("k", win, t0).await.expect("ok");
        c.reset("k").await.expect("ok");
        assert_eq!(c.hit("k", win, t0).await.expect("ok").count, 1);
    }

    #[tokio::test]
    async fn forgive_takes_back_one_attempt_of_an_open_window() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let win = Duration::from_secs(60);
        c.hit("k", win, t0).await.expect("ok");
        c.hit("k", win, t0).await.expect("ok");
        c.forgive("k", t0 + Duration::from_secs(10))
            .await
            .expect("ok");
        let next = c
            .hit("k", win, t0 + Duration::from_secs(20))
            .await
            .expect("ok");
        assert_eq!(
            next,
            Attempt {
                count: 2,
                window_left: Duration::from_secs(40)
            },
            "one taken back, the window's close kept"
        );
        // Emptied, the window is forgotten: the next attempt opens one.
        for _ in 0..2 {
            c.forgive("k", t0 + Duration::from_secs(30))
                .await
                .expect("ok");
        }
        c.forgive("k", t0 + Duration::from_secs(30))
            .await
            .expect("no window: a no-op");
        let fresh = c
            .hit("k", win, t0 + Duration::from_secs(30))
            .await
            .expect("ok");
        assert_eq!(fresh.count, 1);
        assert_eq!(fresh.window_left, win);
        // A closed window is not touched.
        c.forgive("k", t0 + Duration::from_secs(90))
            .await
            .expect("ok");
        assert_eq!(c.windows.lock().expect("lock")["k"].count, 1);
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_spray() {
        let c = MemoryFailureCounter::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        for i in 0..(MAX_KEYS + 10) {
            let now = t0 + Duration::from_millis(i as u64);
            c.hit(&format!("user{i}"), Duration::from_secs(3600), now)
                .await
                .expect("ok");
        }
        let len = c.windows.lock().expect("lock").len();
        assert!(len <= MAX_KEYS, "{len}");
    }
}
