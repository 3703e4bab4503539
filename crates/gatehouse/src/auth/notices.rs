//! Security notices: the mails a user gets when something happens to
//! their account (a sign-in from a device not seen before, a password
//! change, a second factor added or removed, a recovery code used). They
//! are derived from the audit events of those happenings, written to the
//! outbox in the same transaction as the events (`AuditStore::append`), so
//! a notice exists exactly when its event was recorded. The links they
//! carry and where mails point are [`Links`], built on `public_url`.

use std::net::IpAddr;
use std::sync::Arc;

use minijinja::Value;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::sync::Notify;

use crate::mail::Templates;
use crate::model::audit::{Actor, AuditEvent, EventType};
use crate::model::client::client_network;
use crate::model::mail::{MailKind, OutboxMail};
use crate::model::types::SecretHash;
use crate::store::{DeviceSeen, MailStore, UserRecord, UserStore};

/// The URLs mails point at, on `public_url` (never on a request's `Host`).
#[derive(Debug, Clone)]
pub struct Links {
    /// Without a trailing slash.
    base: String,
}

impl Links {
    pub fn new(public_url: &str) -> Self {
        Self {
            base: public_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `path` (starting with `/`) on the public URL, with `token` as its
    /// query (tokens are base64url: nothing to escape).
    pub fn with_token(&self, path: &str, token: &str) -> String {
        format!("{}{path}?token={token}", self.base)
    }

    pub fn page(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// An instant as mails show it: `2026-12-06 14:03 UTC`.
pub(crate) fn mail_time(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ))
    .unwrap_or_else(|_| at.to_string())
}

/// The values every mail to `user` has.
pub(crate) fn base_values(
    links: &Links,
    user: &UserRecord,
    at: OffsetDateTime,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Vec<(&'static str, Value)> {
    vec![
        ("email", Value::from(user.email.as_str())),
        ("public_url", Value::from(links.base())),
        ("account_url", Value::from(links.page("/account"))),
        ("forgot_url", Value::from(links.page("/forgot-password"))),
        ("at", Value::from(mail_time(at))),
        ("ip", Value::from(ip.unwrap_or("an unknown address"))),
        (
            "user_agent",
            Value::from(user_agent.unwrap_or("an unknown device")),
        ),
    ]
}

/// What a sign-in's device is known by: its user agent and its client
/// network (an IPv4 address, an IPv6 /64), hashed.
pub(crate) fn device_fingerprint(user_agent: Option<&str>, ip: Option<IpAddr>) -> SecretHash {
    let mut h = Sha256::new();
    h.update(b"gatehouse device\0");
    h.update(user_agent.unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(client_network(ip).as_bytes());
    SecretHash(h.finalize().into())
}

/// Writes the notices of audit events.
pub struct Notices {
    users: Arc<dyn UserStore>,
    store: Arc<dyn MailStore>,
    templates: Arc<Templates>,
    links: Links,
    /// Woken when notices are written, so this node's sender sends them
    /// at once.
    pub(crate) wake: Arc<Notify>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices")
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl Notices {
    pub fn new(
        users: Arc<dyn UserStore>,
        store: Arc<dyn MailStore>,
        templates: Arc<Templates>,
        links: Links,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            users,
            store,
            templates,
            links,
            wake,
        }
    }

    /// The notices `events` call for. A notice that cannot be written (its
    /// user cannot be read, a template fails) is logged and left out: the
    /// events are recorded regardless.
    pub async fn for_events(&self, events: &[AuditEvent]) -> Vec<OutboxMail> {
        let mut mails = Vec::new();
        for e in events {
            match self.for_event(e).await {
                Ok(Some(mail)) => mails.push(mail),
                Ok(None) => {}
                Err(err) => tracing::error!(
                    target: "gatehouse::mail",
                    event = e.kind.as_str(),
                    event_id = %e.id,
                    error = format!("{err:#}"),
                    "a security notice could not be written"
                ),
            }
        }
        mails
    }

    async fn for_event(&self, e: &AuditEvent) -> anyhow::Result<Option<OutboxMail>> {
        let detail = |key: &str| e.details.get(key);
        let text = |key: &str| detail(key).and_then(serde_json::Value::as_str);
        let method = |m: Option<&str>| match m {
            Some("totp") => "an authenticator app (TOTP)",
            Some("passkey") => "a passkey",
            _ => "a second factor",
        };
        let (kind, extra): (MailKind, Vec<(&'static str, Value)>) = match e.kind {
            EventType::LoginSucceeded => (MailKind::NewSignIn, vec![]),
            EventType::PasswordChanged => (
                MailKind::PasswordChanged,
                vec![("how", Value::from(text("how").unwrap_or("change")))],
            ),
            EventType::MfaEnrolled => (
                MailKind::FactorAdded,
                vec![("method", Value::from(method(text("method"))))],
            ),
            EventType::MfaRemoved => (
                MailKind::FactorRemoved,
                vec![
                    ("method", Value::from(method(text("method")))),
                    ("by_admin", Value::from(false)),
                ],
            ),
            EventType::MfaReset => (
                MailKind::FactorRemoved,
                vec![
                    ("method", Value::from("every second factor")),
                    (
                        "by_admin",
                        Value::from(!matches!(e.actor, Actor::User(u) if Some(u) == e.user_id)),
                    ),
                ],
            ),
            EventType::RecoveryCodeUsed => (
                MailKind::RecoveryCodeUsed,
                vec![(
                    "codes_left",
                    Value::from(
                        detail("codes_left")
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(0),
                    ),
                )],
            ),
            _ => return Ok(None),
        };
        let Some(user_id) = e.user_id else {
            return Ok(None);
        };
        let ip: Option<IpAddr> = e.ip.as_deref().and_then(|ip| ip.parse().ok());
        let user_agent = text("user_agent");
        if kind == MailKind::NewSignIn {
            let device = device_fingerprint(user_agent, ip);
            match self.store.remember_device(user_id, &device, e.at).await? {
                DeviceSeen::New => {}
                DeviceSeen::First | DeviceSeen::Known => return Ok(None),
            }
        }
        let Some(user) = self.users.user_by_id(user_id).await? else {
            return Ok(None);
        };
        let mut values = base_values(&self.links, &user, e.at, e.ip.as_deref(), user_agent);
        values.extend(extra);
        let rendered = self.templates.render(
            kind,
            &Value::from(
                values
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        )?;
        Ok(Some(OutboxMail {
            id: uuid::Uuid::now_v7(),
            kind,
            to: user.email,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            created_at: e.at,
        }))
    }
}
