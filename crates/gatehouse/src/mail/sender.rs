//! The outbox's sender: every node runs one. It claims due mails from the
//! store (each mail goes to one node's sender until its lease passes, so
//! on many nodes one sends it), sends them, deletes what was sent, and
//! retries what failed with exponential backoff; a mail refused for good,
//! or still failing after [`MAX_ATTEMPTS`], is given up on: logged at
//! error level, counted (`gatehouse_mails_total{result="failed"}`) and
//! kept without its bodies until swept. It wakes when this node writes a
//! mail, and every [`POLL_EVERY`] for mails written by other nodes or the
//! command line.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::smtp::{COMMAND_TIMEOUT, Smtp};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::mail::ClaimedMail;
use crate::store::MailStore;

/// How often the outbox is looked at when nothing wakes the sender.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Attempts before a mail is given up on: with the backoff below, about
/// 27 minutes of trying, close to a reset link's default lifetime.
pub const MAX_ATTEMPTS: u32 = 12;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// How long a claim holds a mail: longer than a send can take (each SMTP
/// command is bounded), so no other node sends it meanwhile.
const LEASE: Duration = Duration::from_secs(120);

/// Mails claimed at once.
const BATCH: u32 = 16;

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... up to
/// [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Sends the outbox's mails.
pub struct Sender {
    store: Arc<dyn MailStore>,
    smtp: Smtp,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("smtp", &self.smtp)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn new(
        store: Arc<dyn MailStore>,
        smtp: Smtp,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            smtp,
            clock,
            metrics,
            wake,
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        loop {
            // Drain: while a batch came back full, more may be due.
            loop {
                match self.send_due().await {
                    Ok(n) if n == BATCH as usize => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(
                            target: "gatehouse::mail",
                            error = format!("{e:#}"),
                            "reading the outbox failed; trying again shortly"
                        );
                        break;
                    }
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    /// Claims the due mails and sends them one after the other; returns
    /// how many were claimed.
    ///
    /// # Errors
    /// When the outbox cannot be read.
    pub async fn send_due(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let claimed = self.store.claim_mails(now, now + LEASE, BATCH).await?;
        let n = claimed.len();
        for mail in claimed {
            self.send_one(mail).await;
        }
        Ok(n)
    }

    async fn send_one(&self, claimed: ClaimedMail) {
        let mail = &claimed.mail;
        // Each command is bounded; the whole send is bounded too, well
        // inside the lease.
        let sent = tokio::time::timeout(4 * COMMAND_TIMEOUT, self.smtp.send(mail)).await;
        let failure = match sent {
            Ok(Ok(())) => {
                self.metrics.mails_sent.increment(1);
                tracing::info!(
                    target: "gatehouse::mail",
                    mail_id = %mail.id,
                    kind = mail.kind.as_str(),
                    attempts = claimed.attempts,
                    "mail sent"
                );
                if let Err(e) = self.store.mail_sent(mail.id).await {
                    // Sent but still in the outbox: it will be sent again
                    // once its lease passes (the same Message-ID).
                    tracing::error!(
                        target: "gatehouse::mail",
                        mail_id = %mail.id,
                        error = format!("{e:#}"),
                        "a sent mail could not be deleted from the outbox; it may be sent twice"
                    );
                }
                return;
            }
            Ok(Err(e)) => e,
            Err(_) => super::smtp::SendError {
                permanent: false,
                message: "the SMTP server did not finish in time".to_owned(),
            },
        };
        let now = self.clock.now();
        let give_up = failure.permanent || claimed.attempts >= MAX_ATTEMPTS;
        let retry_at = (!give_up).then(|| now + backoff(claimed.attempts));
        let message: String = failure.message.chars().take(500).collect();
        if give_up {
            self.metrics.mails_failed.increment(1);
            tracing::error!(
                target: "gatehouse::mail",
                mail_id = %mail.id,
                kind = mail.kind.as_str(),
                attempts = claimed.attempts,
                permanent = failure.permanent,
                error = %message,
                "a mail could not be delivered and is given up on"
            );
        } else {
            self.metrics.mails_retried.increment(1);
            tracing::warn!(
                target: "gatehouse::mail",
                mail_id = %mail.id,
                kind = mail.kind.as_str(),
                attempts = claimed.attempts,
                retry_in_seconds = backoff(claimed.attempts).as_secs(),
                error = %message,
                "sending a mail failed; it will be tried again"
            );
        }
        if let Err(e) = self
            .store
            .mail_failed(mail.id, &message, retry_at, now)
            .await
        {
            tracing::warn!(
                target: "gatehouse::mail",
                mail_id = %mail.id,
                error = format!("{e:#}"),
                "recording a failed mail failed; it is tried again when its lease passes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes_and_the_attempts_last_about_half_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(11), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        let total: Duration = (1..MAX_ATTEMPTS).map(backoff).sum();
        assert!(total > Duration::from_secs(20 * 60) && total < Duration::from_secs(40 * 60));
    }
}
