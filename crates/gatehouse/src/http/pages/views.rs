//! The hosted pages' HTML, written with `maud`: checked at compile time, and
//! every interpolated value HTML-escaped (emails, user agents and IPs come
//! from the network).
//!
//! Accessibility (WCAG 2.2): one `h1` per page, `lang`, every input with a
//! bound `label` and an `autocomplete` purpose (1.3.5), errors in text tied to
//! their field with `aria-describedby` and `aria-invalid` (3.3.1), messages
//! announced with `role="alert"`/`role="status"`, a visible focus style in the
//! stylesheet (2.4.7). No JavaScript but `passkeys.js`, on pages with a
//! passkey button.

use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::return_to::ReturnTo;
use crate::auth::FieldError;
use crate::auth::passkeys::PasskeyInfo;
use crate::store::{ClientRecord, Consent, FactorSummary, SessionRecord, UserRecord};

/// The path of the one stylesheet (`style-src 'self'`).
pub const STYLESHEET_PATH: &str = "/assets/gatehouse.css";

/// The stylesheet: small, no fonts or images to fetch.
pub const STYLESHEET: &str = include_str!("gatehouse.css");

/// The path of the one script (`script-src 'self'`): passkeys.
pub const SCRIPT_PATH: &str = "/assets/passkeys.js";

/// The script: the WebAuthn calls behind the passkey buttons.
pub const SCRIPT: &str = include_str!("passkeys.js");

/// A short message shown at the top of a page after a redirect. Chosen by a
/// fixed name in the query string, never echoed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Registered,
    SignedOut,
    PasswordChanged,
    SessionEnded,
    OthersEnded,
    TotpRemoved,
    PasskeyAdded,
    PasskeyRemoved,
    PasswordReset,
    VerificationSent,
    EmailVerified,
    ApplicationRemoved,
}

impl Notice {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "registered" => Self::Registered,
            "signed-out" => Self::SignedOut,
            "password-changed" => Self::PasswordChanged,
            "session-ended" => Self::SessionEnded,
            "others-ended" => Self::OthersEnded,
            "totp-removed" => Self::TotpRemoved,
            "passkey-added" => Self::PasskeyAdded,
            "passkey-removed" => Self::PasskeyRemoved,
            "password-reset" => Self::PasswordReset,
            "verification-sent" => Self::VerificationSent,
            "email-verified" => Self::EmailVerified,
            "application-removed" => Self::ApplicationRemoved,
            _ => return None,
        })
    }

    fn text(self) -> &'static str {
        match self {
            Self::Registered => "Your account was created. Sign in to continue.",
            Self::SignedOut => "You are signed out.",
            Self::PasswordChanged => {
                "Your password was changed, and every other device was signed out."
            }
            Self::SessionEnded => "That device was signed out.",
            Self::OthersEnded => "Every other device was signed out.",
            Self::TotpRemoved => "Two-step verification is off.",
            Self::PasskeyAdded => "The passkey was added.",
            Self::PasskeyRemoved => "The passkey was removed.",
            Self::PasswordReset => "Your password was changed. Sign in with the new one.",
            Self::VerificationSent => {
                "If your address is not verified yet, a mail with a link is on its way."
            }
            Self::EmailVerified => "Your email address is verified.",
            Self::ApplicationRemoved => {
                "The application's access was removed and it was signed out."
            }
        }
    }
}

fn layout(title: &str, content: Markup) -> Markup {
    page(title, content, false)
}

/// A page, with the passkey script when `script` (only pages with a passkey
/// button load it: with passkeys off, the pages run no script at all).
fn page(title: &str, content: Markup, script: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · gatehouse" }
                link rel="stylesheet" href=(STYLESHEET_PATH);
                @if script {
                    script src=(SCRIPT_PATH) defer {}
                }
            }
            body {
                header.site { p.brand { "gatehouse" } }
                main { (content) }
            }
        }
    }
}

fn notice(n: Option<Notice>) -> Markup {
    html! {
        @if let Some(n) = n {
            p.notice role="status" { (n.text()) }
        }
    }
}

/// The first error about `field`, if any.
fn error_for<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// A labelled text input with an optional hint and error, both tied to it
/// with `aria-describedby`.
struct Field<'a> {
    id: &'a str,
    label: &'a str,
    kind: &'a str,
    autocomplete: &'a str,
    value: Option<&'a str>,
    hint: Option<&'a str>,
    error: Option<String>,
    /// The id of a form-level message that also describes this field.
    form_error: Option<&'a str>,
    autofocus: bool,
}

fn field(f: &Field<'_>) -> Markup {
    let hint_id = format!("{}-hint", f.id);
    let error_id = format!("{}-error", f.id);
    let described: Vec<&str> = [
        f.form_error,
        f.hint.map(|_| hint_id.as_str()),
        f.error.as_ref().map(|_| error_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let described = (!described.is_empty()).then(|| described.join(" "));
    html! {
        div.field {
            label for=(f.id) { (f.label) }
            @if let Some(hint) = f.hint {
                p.hint id=(hint_id) { (hint) }
            }
            @if let Some(error) = &f.error {
                p.error id=(error_id) { (error) }
            }
            input id=(f.id) name=(f.id) type=(f.kind) autocomplete=(f.autocomplete)
                required value=[f.value] aria-describedby=[described]
                aria-invalid=[(f.error.is_some() || f.form_error.is_some()).then_some("true")] autofocus[f.autofocus];
        }
    }
}

/// A form-level error (the login's one message for every failure).
fn alert(id: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.error.banner id=(id) role="alert" { (m) }
        }
    }
}

fn return_to_field(return_to: &ReturnTo) -> Markup {
    html! {
        @if !return_to.is_default() {
            input type="hidden" name="return_to" value=(return_to.as_str());
        }
    }
}

/// What the login page shows.
pub struct LoginView<'a> {
    pub email: &'a str,
    pub return_to: &'a ReturnTo,
    pub error: Option<&'a str>,
    pub notice: Option<Notice>,
    pub registration_open: bool,
    /// Whether passkeys are on (the "sign in with a passkey" button).
    pub passkeys: bool,
    /// Whether mail is on (the "forgot your password?" link).
    pub password_reset: bool,
}

pub fn login(v: &LoginView<'_>) -> Markup {
    // The one message covers the whole form: it must not say which of
    // email or password was wrong.
    let error = v.error.map(|_| "login-error");
    let register_href = if v.return_to.is_default() {
        "/register".to_owned()
    } else {
        format!("/register?{}", query_of(v.return_to))
    };
    page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            (notice(v.notice))
            (alert("login-error", v.error))
            form method="post" action="/login" novalidate {
                (return_to_field(v.return_to))
                (field(&Field {
                    id: "email", label: "Email", kind: "email", autocomplete: "email",
                    value: Some(v.email), hint: None, error: None, form_error: error,
                    autofocus: v.email.is_empty(),
                }))
                (field(&Field {
                    id: "password", label: "Password", kind: "password",
                    autocomplete: "current-password", value: None, hint: None, error: None,
                    form_error: error, autofocus: !v.email.is_empty(),
                }))
                button type="submit" { "Sign in" }
            }
            @if v.password_reset {
                p { a href="/forgot-password" { "Forgot your password?" } }
            }
            @if v.passkeys {
                div.passkey hidden data-passkey="sign-in" data-return-to=(v.return_to.as_str()) {
                    button.secondary type="button" { "Sign in with a passkey" }
                    p.error role="alert" hidden data-passkey-error {}
                }
            }
            @if v.registration_open {
                p { "No account yet? " a href=(register_href) { "Create one" } "." }
            }
        },
        v.passkeys,
    )
}

/// What the second step of a login shows.
pub struct SecondStepView<'a> {
    /// The login's `mfa_token` (a hidden field; the page is never cached).
    pub mfa_token: &'a str,
    pub return_to: &'a ReturnTo,
    pub error: Option<&'a str>,
    /// Whether the user has recovery codes left (the hint mentions them).
    pub recovery_codes: bool,
    /// Whether a passkey may be the second step (its button).
    pub passkey: bool,
}

pub fn login_second_step(v: &SecondStepView<'_>) -> Markup {
    let hint = if v.recovery_codes {
        "The six-digit code from your authenticator app, or one of your recovery codes."
    } else {
        "The six-digit code from your authenticator app."
    };
    page(
        "Two-step verification",
        html! {
            h1 { "Two-step verification" }
            (alert("code-error", v.error))
            form method="post" action="/login/mfa" novalidate {
                input type="hidden" name="mfa_token" value=(v.mfa_token);
                (return_to_field(v.return_to))
                (field(&Field {
                    id: "code", label: "Code", kind: "text", autocomplete: "one-time-code",
                    value: None, hint: Some(hint), error: None,
                    form_error: v.error.map(|_| "code-error"), autofocus: true,
                }))
                button type="submit" { "Verify" }
            }
            @if v.passkey {
                div.passkey hidden data-passkey="second-step" data-mfa-token=(v.mfa_token)
                    data-return-to=(v.return_to.as_str()) {
                    button.secondary type="button" { "Use a passkey" }
                    p.error role="alert" hidden data-passkey-error {}
                }
            }
            p { a href="/login" { "Start again" } }
        },
        v.passkey,
    )
}

/// `return_to=…` for a link, percent-encoded.
pub fn query_of(return_to: &ReturnTo) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", return_to.as_str())
        .finish()
}

/// What the registration page shows.
pub struct RegisterView<'a> {
    pub email: &'a str,
    pub return_to: &'a ReturnTo,
    pub errors: &'a [FieldError],
    /// A message about the whole form (the registration budget is spent).
    pub error: Option<&'a str>,
}

pub fn register(v: &RegisterView<'_>) -> Markup {
    let login_href = if v.return_to.is_default() {
        "/login".to_owned()
    } else {
        format!("/login?{}", query_of(v.return_to))
    };
    layout(
        "Create an account",
        html! {
            h1 { "Create an account" }
            (alert("register-error", v.error))
            @if !v.errors.is_empty() {
                p.error.banner role="alert" { "The account was not created: see below." }
            }
            form method="post" action="/register" novalidate {
                (return_to_field(v.return_to))
                (field(&Field {
                    id: "email", label: "Email", kind: "email", autocomplete: "email",
                    value: Some(v.email), hint: None,
                    error: error_for(v.errors, "email").map(|m| format!("Email {m}.")),
                    form_error: None,
                    autofocus: true,
                }))
                (field(&Field {
                    id: "password", label: "Password", kind: "password",
                    autocomplete: "new-password", value: None,
                    hint: Some(PASSWORD_HINT),
                    error: error_for(v.errors, "password").map(|m| format!("Password {m}.")),
                    form_error: None,
                    autofocus: false,
                }))
                button type="submit" { "Create account" }
            }
            p { "Already have an account? " a href=(login_href) { "Sign in" } "." }
        },
    )
}

const PASSWORD_HINT: &str =
    "8 to 128 characters; not a common password, and not your email address.";

/// What the account page shows.
pub struct AccountView<'a> {
    pub user: &'a UserRecord,
    /// The caller's live sessions; the current one first.
    pub sessions: &'a [(SessionRecord, bool)],
    pub notice: Option<Notice>,
    /// Errors of the password change form, by field.
    pub password_errors: &'a [FieldError],
    /// The caller's second factors.
    pub factors: FactorSummary,
    /// The caller's passkeys, and whether passkeys are on.
    pub passkeys: &'a [PasskeyInfo],
    pub passkeys_enabled: bool,
    /// An error of the two-step verification forms.
    pub mfa_error: Option<&'a str>,
    /// Whether mail is on: the address's state, and the button that mails
    /// a verification link while it is not verified.
    pub mail_enabled: bool,
    /// The applications the user allowed (consents), with their names.
    pub applications: &'a [(Consent, ClientRecord)],
}

pub fn account(v: &AccountView<'_>) -> Markup {
    let others = v.sessions.iter().filter(|(_, current)| !current).count();
    page(
        "Your account",
        html! {
            h1 { "Your account" }
            (notice(v.notice))
            section aria-labelledby="who" {
                h2 #who { "Signed in" }
                dl.facts {
                    dt { "Email" } dd { (v.user.email) }
                    // Without mail nobody can verify an address: "not
                    // verified" would only worry.
                    @if v.mail_enabled || v.user.email_verified {
                        dt { "Email status" }
                        dd #email-state {
                            @if v.user.email_verified { "Verified" } @else { "Not verified" }
                        }
                    }
                    dt { "Account created" } dd { (when(v.user.created_at)) }
                    @if !v.user.roles.is_empty() {
                        dt { "Roles" } dd { (v.user.roles.join(", ")) }
                    }
                }
                @if v.mail_enabled && !v.user.email_verified {
                    form method="post" action="/account/email-verification" {
                        button.secondary type="submit" aria-describedby="email-state" {
                            "Mail me a link to verify my address"
                        }
                    }
                }
                form method="post" action="/logout" {
                    button type="submit" { "Sign out" }
                }
            }
            section aria-labelledby="devices" {
                h2 #devices { "Your devices" }
                p { "These browsers and apps are signed in to your account. Sign out any you do not recognise." }
                ul.sessions {
                    @for (s, current) in v.sessions {
                        (session_item(s, *current))
                    }
                }
                @if others > 0 {
                    form method="post" action="/account/sessions/end-others" {
                        button.secondary type="submit" { "Sign out everywhere else" }
                    }
                }
            }
            @if !v.applications.is_empty() {
                (applications_section(v))
            }
            (two_step_section(v))
            @if v.passkeys_enabled {
                (passkeys_section(v))
            }
            section aria-labelledby="password-heading" {
                h2 #password-heading { "Change password" }
                @if !v.password_errors.is_empty() {
                    p.error.banner role="alert" { "The password was not changed: see below." }
                }
                form method="post" action="/account/password" novalidate {
                    // Password managers pair the new password with the
                    // account through this hidden username field.
                    input type="email" name="username" autocomplete="username"
                        value=(v.user.email) hidden;
                    (field(&Field {
                        id: "current_password", label: "Current password", kind: "password",
                        autocomplete: "current-password", value: None, hint: None,
                        error: error_for(v.password_errors, "current_password").map(String::from),
                        form_error: None,
                    autofocus: false,
                    }))
                    (field(&Field {
                        id: "new_password", label: "New password", kind: "password",
                        autocomplete: "new-password", value: None, hint: Some(PASSWORD_HINT),
                        error: error_for(v.password_errors, "new_password")
                            .map(|m| format!("The new password {m}.")),
                        form_error: None,
                    autofocus: false,
                    }))
                    button type="submit" { "Change password" }
                }
            }
        },
        v.passkeys_enabled,
    )
}

/// The account page's "Two-step verification": turn TOTP on (password
/// first), or, while it is on, renew the recovery codes or turn it off
/// (each with a current code).
fn two_step_section(v: &AccountView<'_>) -> Markup {
    let error = v.mfa_error.map(|_| "mfa-error");
    html! {
        section aria-labelledby="mfa-heading" {
            h2 #mfa-heading { "Two-step verification" }
            (alert("mfa-error", v.mfa_error))
            @if v.factors.totp {
                p {
                    "On: signing in takes your password and a code from your authenticator app. "
                    "Recovery codes left: " strong { (v.factors.recovery_codes_left) } "."
                }
                form method="post" action="/account/mfa/recovery-codes" novalidate {
                    (field(&Field {
                        id: "codes-code", label: "Code from your app", kind: "text",
                        autocomplete: "one-time-code", value: None,
                        hint: Some("New recovery codes replace the old ones."), error: None,
                        form_error: error, autofocus: false,
                    }))
                    button.secondary type="submit" { "Get new recovery codes" }
                }
                form method="post" action="/account/mfa/totp/remove" novalidate {
                    (field(&Field {
                        id: "remove-code", label: "Code from your app", kind: "text",
                        autocomplete: "one-time-code", value: None, hint: None, error: None,
                        form_error: error, autofocus: false,
                    }))
                    button.secondary type="submit" { "Turn off two-step verification" }
                }
            } @else {
                @if v.factors.passkeys > 0 {
                    p {
                        "Your passkeys are your second step. You can add an authenticator app (TOTP) too. "
                        "Recovery codes left: " strong { (v.factors.recovery_codes_left) } "."
                    }
                } @else {
                    p { "Off. Add an authenticator app (TOTP), so that a stolen password alone cannot sign in." }
                }
                form method="post" action="/account/mfa/totp" novalidate {
                    (field(&Field {
                        id: "mfa-password", label: "Your password", kind: "password",
                        autocomplete: "current-password", value: None, hint: None, error: None,
                        form_error: error, autofocus: false,
                    }))
                    button type="submit" { "Set up an authenticator app" }
                }
            }
        }
    }
}

/// The applications the user allowed to sign them in, each with what it
/// may see and a button that withdraws it (and signs the app out).
fn applications_section(v: &AccountView<'_>) -> Markup {
    html! {
        section aria-labelledby="applications-heading" {
            h2 #applications-heading { "Applications" }
            p { "You allowed these applications to sign you in. Removing one signs it out and asks again next time." }
            ul.sessions {
                @for (consent, client) in v.applications {
                    li.session data-client-id=(client.id) {
                        h3 id=(format!("app-{}", client.id)) { (client.name) }
                        dl.facts {
                            dt { "Allowed" } dd { (when(consent.granted_at)) }
                            dt { "May" } dd {
                                @for (i, scope) in consent.scopes.split(' ').enumerate() {
                                    @if i > 0 { "; " }
                                    (scope_text(scope))
                                }
                            }
                        }
                        form method="post" action=(format!("/account/applications/{}/remove", client.id)) {
                            button.secondary type="submit"
                                aria-describedby=(format!("app-{}", client.id)) { "Remove access" }
                        }
                    }
                }
            }
        }
    }
}

/// The account page's passkeys: the list, removal (a form), and adding one
/// (a button the script wires to the browser's WebAuthn API).
fn passkeys_section(v: &AccountView<'_>) -> Markup {
    html! {
        section aria-labelledby="passkeys-heading" {
            h2 #passkeys-heading { "Passkeys" }
            p { "Sign in with your device's screen lock or a security key, with or without your password." }
            @if !v.passkeys.is_empty() {
                ul.sessions {
                    @for p in v.passkeys {
                        li.session data-passkey-id=(p.id) {
                            h3 id=(format!("passkey-{}", p.id)) { (p.name) }
                            dl.facts {
                                dt { "Added" } dd { (when(p.created_at)) }
                                dt { "Last used" } dd {
                                    @match p.last_used_at {
                                        Some(t) => (when(t)),
                                        None => "never",
                                    }
                                }
                            }
                            form method="post" action=(format!("/account/passkeys/{}/remove", p.id)) {
                                button.secondary type="submit"
                                    aria-describedby=(format!("passkey-{}", p.id)) { "Remove" }
                            }
                        }
                    }
                }
            }
            div.passkey hidden data-passkey="register" {
                div.field {
                    label for="passkey-name" { "Name for the new passkey" }
                    input id="passkey-name" type="text" autocomplete="off" value="Passkey" maxlength="64";
                }
                button type="button" { "Add a passkey" }
                p.error role="alert" hidden data-passkey-error {}
                div hidden data-passkey-codes {
                    p.notice role="status" { "The passkey was added, and two-step verification is on." }
                    p { "Your recovery codes: each signs you in once if you lose your passkeys. They are shown only now." }
                    ul.codes {}
                    p { a href="/account" { "I have saved them" } }
                }
            }
        }
    }
}

/// The SVG of a QR code of `text`, without its XML declaration (it goes
/// inside the page); `None` when the text does not fit a QR code.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Some(match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    })
}

/// What the TOTP set-up page shows.
pub struct TotpSetupView<'a> {
    pub secret: &'a str,
    pub otpauth_uri: &'a str,
    pub error: Option<&'a str>,
}

/// Step two of turning TOTP on: the QR code (and the key, to type in),
/// and the code that confirms it.
pub fn totp_setup(v: &TotpSetupView<'_>) -> Markup {
    let qr = qr_svg(v.otpauth_uri);
    layout(
        "Set up your authenticator app",
        html! {
            h1 { "Set up your authenticator app" }
            (alert("code-error", v.error))
            ol {
                li { "Scan this code with your authenticator app." }
                li { "Enter the six-digit code the app shows." }
            }
            @if let Some(svg) = qr {
                div.qr role="img" aria-label="QR code of your authenticator key" {
                    (maud::PreEscaped(svg))
                }
            }
            p {
                "Cannot scan? Enter this key in the app instead: "
                code.secret { (v.secret) }
            }
            form method="post" action="/account/mfa/totp/confirm" novalidate {
                (field(&Field {
                    id: "code", label: "Code from your app", kind: "text",
                    autocomplete: "one-time-code", value: None, hint: None, error: None,
                    form_error: v.error.map(|_| "code-error"), autofocus: true,
                }))
                button type="submit" { "Turn on two-step verification" }
            }
            p { a href="/account" { "Cancel" } }
        },
    )
}

/// Recovery codes, shown once.
pub fn recovery_codes(codes: &[String], first: bool) -> Markup {
    layout(
        "Your recovery codes",
        html! {
            h1 { "Your recovery codes" }
            @if first {
                p.notice role="status" { "Two-step verification is on." }
            }
            p {
                "Each code signs you in once if you lose your authenticator app. "
                "Keep them somewhere safe: they are shown only now."
            }
            ul.codes {
                @for c in codes {
                    li { code { (c) } }
                }
            }
            p { a href="/account" { "I have saved them" } }
        },
    )
}

fn session_item(s: &SessionRecord, current: bool) -> Markup {
    let heading_id = format!("session-{}", s.id);
    let device = s.user_agent.as_deref().unwrap_or("Unknown device");
    html! {
        li.session.current[current] data-session-id=(s.id) {
            h3 id=(heading_id) {
                (device)
                @if current { " " strong.marker { "(this device)" } }
            }
            dl.facts {
                dt { "IP address" } dd { (s.ip.as_deref().unwrap_or("unknown")) }
                dt { "Signed in" } dd { (when(s.created_at)) }
                dt { "Last active" } dd { (when(s.last_seen_at)) }
            }
            form method="post" action=(format!("/account/sessions/{}/end", s.id)) {
                button.secondary type="submit" aria-describedby=(heading_id) {
                    @if current { "Sign out this device" } @else { "Sign out" }
                }
            }
        }
    }
}

/// A time for people (`2025-06-01 14:03 UTC`) in a `<time>` element with
/// its machine-readable RFC 3339 form.
fn when(t: OffsetDateTime) -> Markup {
    let t = t.to_offset(time::UtcOffset::UTC);
    let machine = t.format(&Rfc3339).unwrap_or_default();
    let human = t
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();
    html! { time datetime=(machine) { (human) } }
}

/// A page that only says what went wrong (403, 404, 400, 503...).
pub fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        html! {
            h1 { (title) }
            p { (text) }
            p { a href="/account" { "Go to your account" } }
        },
    )
}

/// What the "forgot your password" form shows.
pub struct ForgotView<'a> {
    pub email: &'a str,
    /// The address's error (not an address).
    pub errors: &'a [FieldError],
    /// A message about the whole form (too many requests).
    pub error: Option<&'a str>,
}

/// `/forgot-password`: the address to mail a reset link to.
pub fn forgot_password(v: &ForgotView<'_>) -> Markup {
    layout(
        "Reset your password",
        html! {
            h1 { "Reset your password" }
            (alert("forgot-error", v.error))
            p { "Enter the email address of your account, and we mail you a link to choose a new password." }
            form method="post" action="/forgot-password" novalidate {
                (field(&Field {
                    id: "email", label: "Email", kind: "email", autocomplete: "email",
                    value: Some(v.email), hint: None,
                    error: error_for(v.errors, "email").map(|m| format!("Email {m}.")),
                    form_error: v.error.map(|_| "forgot-error"),
                    autofocus: true,
                }))
                button type="submit" { "Mail me a link" }
            }
            p { a href="/login" { "Back to sign in" } }
        },
    )
}

/// The answer to a reset request: the same page, byte for byte, whether or
/// not an account uses the address (it is not even repeated).
pub fn reset_requested(text: &str) -> Markup {
    layout(
        "Check your mail",
        html! {
            h1 { "Check your mail" }
            p.notice role="status" { (text) }
            p { "No mail? Check your spam folder, or " a href="/forgot-password" { "ask again" } "." }
            p { a href="/login" { "Back to sign in" } }
        },
    )
}

/// What the "choose a new password" form shows.
pub struct ResetView<'a> {
    /// The link's token, carried in a hidden field (the page is never
    /// cached, and sends no referrer with its path).
    pub token: &'a str,
    /// The new password's policy errors.
    pub errors: &'a [FieldError],
}

/// `/reset-password`: the new password, for the link's token.
pub fn reset_password(v: &ResetView<'_>) -> Markup {
    layout(
        "Choose a new password",
        html! {
            h1 { "Choose a new password" }
            @if !v.errors.is_empty() {
                p.error.banner role="alert" { "The password was not changed: see below." }
            }
            p { "Setting a new password signs out every device signed in to your account." }
            form method="post" action="/reset-password" novalidate {
                input type="hidden" name="token" value=(v.token);
                (field(&Field {
                    id: "new_password", label: "New password", kind: "password",
                    autocomplete: "new-password", value: None, hint: Some(PASSWORD_HINT),
                    error: error_for(v.errors, "new_password")
                        .map(|m| format!("The new password {m}.")),
                    form_error: None,
                    autofocus: true,
                }))
                button type="submit" { "Set the new password" }
            }
        },
    )
}

/// `/verify-email`: one button that proves the mailbox (opening the link
/// alone does nothing: mail scanners open links too).
pub fn verify_email(token: &str) -> Markup {
    layout(
        "Verify your email address",
        html! {
            h1 { "Verify your email address" }
            p { "Press the button to confirm that this mailbox is yours." }
            form method="post" action="/verify-email" {
                input type="hidden" name="token" value=(token);
                button type="submit" { "Verify my email address" }
            }
        },
    )
}

/// After a verification link was used.
pub fn email_verified() -> Markup {
    layout(
        "Email address verified",
        html! {
            h1 { "Email address verified" }
            p.notice role="status" { (Notice::EmailVerified.text()) }
            p { a href="/account" { "Go to your account" } }
        },
    )
}

/// Which mailed link a page is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    PasswordReset,
    EmailVerification,
}

/// A mailed link that cannot be used: unknown, spent, expired, or voided
/// by a change of email or password. One page for all of them.
pub fn link_invalid(kind: LinkKind) -> Markup {
    layout(
        "Link not valid",
        html! {
            h1 { "Link not valid" }
            p { "This link is invalid, was used, or has expired." }
            @match kind {
                LinkKind::PasswordReset => p {
                    a href="/forgot-password" { "Ask for a new link" }
                },
                LinkKind::EmailVerification => p {
                    "Sign in, and ask for a new link on "
                    a href="/account" { "your account page" } "."
                },
            }
        },
    )
}

/// A page that sends the browser on with `<meta http-equiv="refresh">`
/// (and a link): after a form post whose next stop redirects to another
/// origin, which the posting page's `form-action` would forbid on the
/// redirect (CSP 3 checks form submissions' redirects too).
pub fn continue_to(location: &str) -> Markup {
    let refresh = format!("0;url={location}");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(refresh);
                title { "Continuing · gatehouse" }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                header.site { p.brand { "gatehouse" } }
                main {
                    h1 { "Signed in" }
                    p { a href=(location) { "Continue" } }
                }
            }
        }
    }
}

/// What the consent page shows.
pub struct ConsentView<'a> {
    pub client_name: &'a str,
    /// Where the application is (its redirect URI's origin).
    pub client_origin: &'a str,
    pub email: &'a str,
    /// The scopes asked for, in the order shown.
    pub scopes: &'a [&'a str],
    /// The authorization request's query, sent back with the decision.
    pub request: &'a str,
}

/// What a scope lets an application do, in words.
fn scope_text(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know who you are on gatehouse (your account id)",
        "profile" => "See your user name and your roles",
        "email" => "See your email address and whether it is verified",
        "offline_access" => "Stay signed in while you are away (until you sign out here)",
        _ => "Unknown access",
    }
}

pub fn consent(v: &ConsentView<'_>) -> Markup {
    layout(
        "Allow access",
        html! {
            h1 { "Allow " (v.client_name) "?" }
            p { (v.client_name) " (" (v.client_origin) ") asks to sign you in as "
                strong { (v.email) } " and to:" }
            ul {
                @for scope in v.scopes {
                    li { (scope_text(scope)) }
                }
            }
            p { "You can withdraw this on your account page at any time." }
            form method="post" action="/oauth2/consent" {
                input type="hidden" name="request" value=(v.request);
                button type="submit" name="decision" value="allow" { "Allow" }
                " "
                button.secondary type="submit" name="decision" value="deny" { "Deny" }
            }
        },
    )
}

/// The page of an authorization request that names no genuine client or
/// redirect URI: nothing is sent anywhere (RFC 6749 §4.1.2.1).
pub fn authorize_refused(reason: &str) -> Markup {
    layout(
        "Sign-in request refused",
        html! {
            h1 { "Sign-in request refused" }
            p { "The application that sent you here made a request gatehouse cannot accept: " (reason) }
            p { "Go back to the application and try again, or tell its administrator." }
        },
    )
}

/// What the RP-initiated logout's confirmation page shows.
pub struct LogoutView<'a> {
    pub client_name: Option<&'a str>,
    pub client_id: &'a str,
    pub post_logout_redirect_uri: &'a str,
    pub state: &'a str,
}

pub fn logout_confirm(v: &LogoutView<'_>) -> Markup {
    layout(
        "Sign out",
        html! {
            h1 { "Sign out of gatehouse?" }
            @if let Some(name) = v.client_name {
                p { (name) " asks to sign you out. You will be signed out of every application you signed in to here on this device." }
            } @else {
                p { "You will be signed out of every application you signed in to here on this device." }
            }
            form method="post" action="/oauth2/logout/confirm" {
                input type="hidden" name="client_id" value=(v.client_id);
                input type="hidden" name="post_logout_redirect_uri" value=(v.post_logout_redirect_uri);
                input type="hidden" name="state" value=(v.state);
                button type="submit" { "Sign out" }
            }
            p { a href="/account" { "Stay signed in" } }
        },
    )
}
