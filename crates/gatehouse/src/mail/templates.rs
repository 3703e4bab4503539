//! The mails' templates: for each kind of mail a subject, a plain-text body
//! and an HTML body (`NAME.subject.txt`, `NAME.txt`, `NAME.html`, where
//! `NAME` is [`MailKind::as_str`]), and `layout.html` the HTML bodies
//! extend. They are built in; `email_templates` names a directory whose
//! files replace the built-in ones of the same name. Every template is
//! compiled and rendered once with sample values at start-up, so a broken
//! override stops the start-up instead of a mail. Values are escaped in the
//! HTML templates, never in the text ones; a template that uses a value
//! the mail does not have is an error (strict undefined).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use minijinja::{Environment, UndefinedBehavior, Value};

use crate::model::mail::MailKind;

/// The built-in templates, by file name.
const BUILT_IN: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    (
        "password_reset.subject.txt",
        include_str!("templates/password_reset.subject.txt"),
    ),
    (
        "password_reset.txt",
        include_str!("templates/password_reset.txt"),
    ),
    (
        "password_reset.html",
        include_str!("templates/password_reset.html"),
    ),
    (
        "email_verification.subject.txt",
        include_str!("templates/email_verification.subject.txt"),
    ),
    (
        "email_verification.txt",
        include_str!("templates/email_verification.txt"),
    ),
    (
        "email_verification.html",
        include_str!("templates/email_verification.html"),
    ),
    (
        "new_sign_in.subject.txt",
        include_str!("templates/new_sign_in.subject.txt"),
    ),
    ("new_sign_in.txt", include_str!("templates/new_sign_in.txt")),
    (
        "new_sign_in.html",
        include_str!("templates/new_sign_in.html"),
    ),
    (
        "password_changed.subject.txt",
        include_str!("templates/password_changed.subject.txt"),
    ),
    (
        "password_changed.txt",
        include_str!("templates/password_changed.txt"),
    ),
    (
        "password_changed.html",
        include_str!("templates/password_changed.html"),
    ),
    (
        "factor_added.subject.txt",
        include_str!("templates/factor_added.subject.txt"),
    ),
    (
        "factor_added.txt",
        include_str!("templates/factor_added.txt"),
    ),
    (
        "factor_added.html",
        include_str!("templates/factor_added.html"),
    ),
    (
        "factor_removed.subject.txt",
        include_str!("templates/factor_removed.subject.txt"),
    ),
    (
        "factor_removed.txt",
        include_str!("templates/factor_removed.txt"),
    ),
    (
        "factor_removed.html",
        include_str!("templates/factor_removed.html"),
    ),
    (
        "recovery_code_used.subject.txt",
        include_str!("templates/recovery_code_used.subject.txt"),
    ),
    (
        "recovery_code_used.txt",
        include_str!("templates/recovery_code_used.txt"),
    ),
    (
        "recovery_code_used.html",
        include_str!("templates/recovery_code_used.html"),
    ),
];

/// Largest template file read from `email_templates`.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// A mail written out.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, with the files of `dir` (when given) in
    /// place of those of the same name.
    ///
    /// # Errors
    /// A file in `dir` that is no template's name, cannot be read or does
    /// not compile, or a template that fails on sample values.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut sources: BTreeMap<String, String> = BUILT_IN
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir)
                .with_context(|| format!("email_templates: cannot read {}", dir.display()))?;
            for entry in entries {
                let entry = entry
                    .with_context(|| format!("email_templates: cannot read {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !sources.contains_key(&name) {
                    let known: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
                    anyhow::bail!(
                        "email_templates: {name:?} is no template's name (they are: {})",
                        known.join(", ")
                    );
                }
                let path = entry.path();
                let len = std::fs::metadata(&path)
                    .with_context(|| format!("email_templates: cannot read {}", path.display()))?
                    .len();
                anyhow::ensure!(
                    len <= MAX_TEMPLATE_BYTES,
                    "email_templates: {} is over 256 KiB",
                    path.display()
                );
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("email_templates: cannot read {}", path.display()))?;
                sources.insert(name, text);
            }
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, text) in sources {
            env.add_template_owned(name.clone(), text)
                .with_context(|| format!("email template {name}"))?;
        }
        let templates = Self { env };
        for kind in MailKind::ALL {
            templates
                .render(kind, &sample(kind))
                .with_context(|| format!("email templates of {}", kind.as_str()))?;
        }
        Ok(templates)
    }

    /// Writes a mail of `kind` with the values of `ctx`.
    ///
    /// # Errors
    /// When a template uses a value `ctx` does not have, or fails.
    pub fn render(&self, kind: MailKind, ctx: &Value) -> anyhow::Result<Rendered> {
        let name = kind.as_str();
        let part = |suffix: &str| -> anyhow::Result<String> {
            let file = format!("{name}{suffix}");
            self.env
                .get_template(&file)
                .and_then(|t| t.render(ctx))
                .map_err(|e| anyhow::anyhow!("{file}: {e:#}"))
        };
        let subject = part(".subject.txt")?;
        // A subject is one line: a newline in it would be a header
        // injection, whatever the template says.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow::ensure!(!subject.is_empty(), "{name}.subject.txt renders empty");
        Ok(Rendered {
            subject,
            text: part(".txt")?,
            html: part(".html")?,
        })
    }
}

/// Values every mail has, and those of `kind`, as sample text: what the
/// templates are checked with at start-up.
fn sample(kind: MailKind) -> Value {
    let mut values = BTreeMap::from([
        ("email", Value::from("user@example.com")),
        ("public_url", Value::from("https://auth.example.com")),
        (
            "account_url",
            Value::from("https://auth.example.com/account"),
        ),
        (
            "forgot_url",
            Value::from("https://auth.example.com/forgot-password"),
        ),
        ("at", Value::from("2026-01-01 12:00 UTC")),
        ("ip", Value::from("192.0.2.1")),
        ("user_agent", Value::from("Mozilla/5.0")),
    ]);
    for (key, value) in kind_values(kind) {
        values.insert(key, value);
    }
    Value::from(values)
}

/// The sample values only mails of `kind` have.
fn kind_values(kind: MailKind) -> Vec<(&'static str, Value)> {
    match kind {
        MailKind::PasswordReset | MailKind::EmailVerification => vec![
            ("link", Value::from("https://auth.example.com/x?token=t")),
            ("expires_in", Value::from("30 minutes")),
        ],
        MailKind::PasswordChanged => vec![("how", Value::from("change"))],
        MailKind::FactorAdded => vec![("method", Value::from("a passkey"))],
        MailKind::FactorRemoved => vec![
            ("method", Value::from("a passkey")),
            ("by_admin", Value::from(false)),
        ],
        MailKind::RecoveryCodeUsed => vec![("codes_left", Value::from(9))],
        MailKind::NewSignIn => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_template_renders_and_html_values_are_escaped() {
        let t = Templates::load(None).expect("built-in templates");
        let mut values = BTreeMap::from([
            ("email", Value::from("<b>x</b>@example.com")),
            ("public_url", Value::from("https://auth.example.com")),
            (
                "account_url",
                Value::from("https://auth.example.com/account"),
            ),
            ("forgot_url", Value::from("https://auth.example.com/f")),
            ("at", Value::from("now")),
            ("ip", Value::from("192.0.2.1")),
            ("user_agent", Value::from("<script>")),
        ]);
        values.insert("link", Value::from("https://auth.example.com/r?token=a&b"));
        values.insert("expires_in", Value::from("30 minutes"));
        let mail = t
            .render(MailKind::PasswordReset, &Value::from(values))
            .expect("render");
        assert_eq!(mail.subject, "Reset your password");
        assert!(mail.text.contains("https://auth.example.com/r?token=a&b"));
        assert!(mail.text.contains("<b>x</b>@example.com"), "{}", mail.text);
        assert!(
            mail.html.contains("&lt;b&gt;x&lt;&#x2f;b&gt;@example.com")
                || mail.html.contains("&lt;b&gt;x&lt;/b&gt;@example.com"),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<b>x</b>"), "{}", mail.html);
        assert!(mail.html.contains("token=a&amp;b"), "{}", mail.html);
    }

    #[test]
    fn an_override_replaces_its_template_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("password_reset.subject.txt"),
            "Acme: new password\nfor {{ email }}",
        )
        .expect("write");
        let t = Templates::load(Some(dir.path())).expect("override");
        let mail = t
            .render(MailKind::PasswordReset, &sample(MailKind::PasswordReset))
            .expect("render");
        assert_eq!(mail.subject, "Acme: new password for user@example.com");

        std::fs::write(dir.path().join("password_reset.txt"), "{{ no_such_value }}")
            .expect("write");
        let e = Templates::load(Some(dir.path())).expect_err("undefined value");
        assert!(format!("{e:#}").contains("password_reset"), "{e:#}");

        let other = tempfile::tempdir().expect("dir");
        std::fs::write(other.path().join("pasword_reset.txt"), "typo").expect("write");
        let e = Templates::load(Some(other.path())).expect_err("unknown name");
        assert!(format!("{e:#}").contains("pasword_reset.txt"), "{e:#}");

        let broken = tempfile::tempdir().expect("dir");
        std::fs::write(broken.path().join("layout.html"), "{% block body %}").expect("write");
        assert!(Templates::load(Some(broken.path())).is_err());
    }
}
