//! Password attempt counters (the `FailureCounter`) on PostgreSQL, shared by
//! every node. SQLite has none: a single node counts in memory
//! (`store/memory.rs`).

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use time::OffsetDateTime;

use super::ms;
use crate::store::postgres::PgStore;
use crate::store::{Attempt, FailureCounter};

#[async_trait]
impl FailureCounter for PgStore {
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: OffsetDateTime,
    ) -> anyhow::Result<Attempt> {
        let now = ms(now);
        // A window too long to represent never closes (fail closed), as in
        // the in-memory counter.
        let closes = time::Duration::try_from(window)
            .ok()
            .and_then(|w| now.checked_add(w))
            .unwrap_or(OffsetDateTime::new_utc(
                time::Date::MAX,
                time::Time::MIDNIGHT,
            ));
        // One statement, so the row lock makes concurrent attempts (on any
        // node) count one after another: each sees its own count. In SET,
        // `login_attempts.*` are the values before this update.
        let (count, closes_at): (i32, OffsetDateTime) = sqlx::query_as(
            "INSERT INTO login_attempts (key, count, closes_at) VALUES ($1, 1, $3) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN login_attempts.closes_at <= $2 THEN 1 \
                            ELSE LEAST(login_attempts.count, 2147483646) + 1 END, \
               closes_at = CASE WHEN login_attempts.closes_at <= $2 THEN excluded.closes_at \
                                ELSE login_attempts.closes_at END \
             RETURNING count, closes_at",
        )
        .bind(key)
        .bind(now)
        .bind(ms(closes))
        .fetch_one(&mut *self.conn().await?)
        .await
        .context("counting a login attempt")?;
        Ok(Attempt {
            count: u32::try_from(count).context("a stored attempt count is negative")?,
            window_left: Duration::try_from(closes_at - now).unwrap_or_default(),
        })
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM login_attempts WHERE key = $1")
            .bind(key)
            .execute(&mut *self.conn().await?)
            .await
            .context("resetting login attempts")?;
        Ok(())
    }

    async fn forgive(&self, key: &str, now: OffsetDateTime) -> anyhow::Result<()> {
        // The row lock orders this with concurrent hits and forgivals on
        // any node; `count` has no zero (CHECK), so the last attempt goes
        // with its row.
        // Through the health check, like every other PostgreSQL operation:
        // while PostgreSQL is known down this fails at once instead of
        // waiting out the pool's acquire timeout.
        let mut tx = self.begin().await.context("forgiving an attempt: begin")?;
        let count: Option<i32> = sqlx::query_scalar(
            "SELECT count FROM login_attempts WHERE key = $1 AND closes_at > $2 FOR UPDATE",
        )
        .bind(key)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await
        .context("forgiving an attempt: reading the window")?;
        let change = match count {
            None => None,
            Some(n) if n > 1 => Some("UPDATE login_attempts SET count = count - 1 WHERE key = $1"),
            Some(_) => Some("DELETE FROM login_attempts WHERE key = $1"),
        };
        if let Some(sql) = change {
            sqlx::query(sql)
                .bind(key)
                .execute(&mut *tx)
                .await
                .context("forgiving an attempt")?;
        }
        tx.commit().await.context("forgiving an attempt: commit")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL side, against a real server (see
    //! `store::postgres::testing`); the contract suite in `tests/api` runs
    //! both.

    use std::sync::Arc;

    use super::*;
    use crate::store::postgres::testing::{Scratch, T0};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failure_counter_counts_in_a_fixed_window() {
        let db = Scratch::new().await;
        let s = Arc::new(db.store.clone());
        let win = Duration::from_secs(60);
        assert_eq!(s.hit("k", win, T0).await.expect("hit").count, 1);
        assert_eq!(s.hit("k", win, T0).await.expect("hit").count, 2);
        let third = s
            .hit("k", win, T0 + Duration::from_secs(10))
            .await
            .expect("hit");
        assert_eq!(
            third,
            Attempt {
                count: 3,
                window_left: Duration::from_secs(50)
            }
        );
        assert_eq!(s.hit("other", win, T0).await.expect("hit").count, 1);
        // The first attempt after the window closed opens a fresh one.
        let reopened = s.hit("k", win, T0 + win).await.expect("hit");
        assert_eq!(
            reopened,
            Attempt {
                count: 1,
                window_left: win
            }
        );
        s.reset("k").await.expect("reset");
        assert_eq!(s.hit("k", win, T0 + win).await.expect("hit").count, 1);

        // Concurrent attempts each see a distinct count.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.hit("burst", win, T0).await.expect("hit").count
            }));
        }
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.expect("join"));
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<u32>>());

        // A window too long to represent never closes.
        for n in 1..=2 {
            let long = s.hit("long", Duration::MAX, T0).await.expect("hit");
            assert_eq!(long.count, n);
            assert!(long.window_left > Duration::from_secs(7000 * 365 * 86400));
        }
    }
}
