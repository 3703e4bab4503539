//! The mail vocabulary: what a mail is about (`MailKind`), what a mailed
//! token is for (`TokenPurpose`), and a mail as the outbox keeps it.

use time::OffsetDateTime;
use uuid::Uuid;

/// What a mail is about: its template, and the `kind` label of the mail
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKind {
    PasswordReset,
    EmailVerification,
    /// A sign-in from a device not seen before for the user.
    NewSignIn,
    PasswordChanged,
    FactorAdded,
    FactorRemoved,
    RecoveryCodeUsed,
}

impl MailKind {
    pub const ALL: [Self; 7] = [
        Self::PasswordReset,
        Self::EmailVerification,
        Self::NewSignIn,
        Self::PasswordChanged,
        Self::FactorAdded,
        Self::FactorRemoved,
        Self::RecoveryCodeUsed,
    ];

    /// The name of its templates (`NAME.subject.txt`, `NAME.txt`,
    /// `NAME.html`) and of the outbox's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::NewSignIn => "new_sign_in",
            Self::PasswordChanged => "password_changed",
            Self::FactorAdded => "factor_added",
            Self::FactorRemoved => "factor_removed",
            Self::RecoveryCodeUsed => "recovery_code_used",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a mailed token may be spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    PasswordReset,
    EmailVerification,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "password_reset" => Some(Self::PasswordReset),
            "email_verification" => Some(Self::EmailVerification),
            _ => None,
        }
    }
}

/// A mail to send, as written to the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: Uuid,
    pub kind: MailKind,
    /// The address it goes to.
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub created_at: OffsetDateTime,
}

/// The bodies may hold a live link: never printed.
impl std::fmt::Debug for OutboxMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A mail a node has claimed from the outbox to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMail {
    pub mail: OutboxMail,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// The outbox's state, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Mails waiting to be sent (or being sent).
    pub pending: u64,
    /// Mails given up on after their last attempt, kept (without their
    /// bodies) until swept.
    pub failed: u64,
    /// When the oldest waiting mail was written.
    pub oldest_pending: Option<OffsetDateTime>,
}
