//! The typed configuration: read from an optional TOML file, overridden by
//! `GATEHOUSE_<KEY>` environment variables, validated once at start-up.
//!
//! Every key is declared once, in the table of `config_keys!` (name, type,
//! default, check, whether the environment may set it); serde types each
//! value, and a key the table does not know is refused, so a typo or a bad
//! value stops the process with one line naming the key instead of surfacing
//! later.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use url::Url;

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "GATEHOUSE_";

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    /// The key (or the file, or the environment variable) at fault.
    pub key: String,
    /// One line saying what is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Whether anyone may create an account through `POST /v1/users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Closed,
}

/// The JWS algorithm that access tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlg {
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "HS256")]
    Hs256,
}

/// What a node does with session cookies while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationFailMode {
    Closed,
    Stale,
}

/// Whether users must prove their email address (`email_verification`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailVerification {
    /// No verification mail is sent on registration.
    Off,
    /// A verification mail on registration; unverified users may log in.
    Optional,
    /// Unverified users cannot log in (403 `email-not-verified`).
    Required,
}

/// How the log on stderr is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// The store that users, roles and keys live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: the embedded single-node store.
    Sqlite(String),
    /// `postgres://...`: the shared store of a multi-node deployment.
    Postgres(SecretUrl),
}

/// A URL that may carry a password (`postgres://user:PASSWORD@host/db`,
/// `redis://:PASSWORD@host`): `Debug` and `Display` show it with the
/// password replaced by `***`, so a printed configuration or a log line
/// never holds it. [`SecretUrl::expose`] gives the URL itself, for the
/// driver alone.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***` (and, if it cannot be
    /// parsed, a placeholder: its text might hold the password anywhere).
    pub fn redacted(&self) -> String {
        match Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Setting a password fails only for URLs that cannot
                    // have one, and this one has one.
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "<a URL that cannot be parsed>".to_owned(),
        }
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretUrl").field(&self.redacted()).finish()
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Secret bytes from the configuration; `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps secret bytes (for configurations built in code).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The certificate and key files for serving HTTPS directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How many connections the server holds, and how long it waits on each:
/// the defences against clients that connect and dawdle (slowloris).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once, TLS handshakes included; past it,
    /// new connections wait in the kernel's listen backlog.
    pub max_connections: usize,
    /// How long a client has to send a whole request head (request line and
    /// headers): from the connection's start, or from the first byte of a
    /// request after an idle spell.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    pub keep_alive_timeout: Duration,
    /// How long a client has to send a request's whole body, counted from
    /// the end of its head; past it the answer is 408.
    pub request_body_timeout: Duration,
    /// How long a shutdown waits for the requests in flight before closing
    /// their connections anyway.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults of `config_keys!`'s table.
    fn default() -> Self {
        Inputs::default().connection_limits()
    }
}

/// What a forward-auth rule demands of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePolicy {
    Public,
    Authenticated,
    Deny,
    Permission(String),
}

/// One `[[rules]]` entry: a path prefix, optional methods, and a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub path: String,
    /// Upper-case method names; empty means every method.
    pub methods: Vec<String>,
    pub policy: RulePolicy,
    /// The caller's session must have proved a second factor (`mfa = true`).
    pub mfa: bool,
}

/// Longest configuration file we read; anything bigger is a mistake.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The highest count a throttling budget other than `login_max_failures`
/// may allow.
const MAX_BUDGET: i64 = 1_000_000;

/// `login_max_failures_per_ip` and `login_max_failures_per_account` when
/// unset, unless `login_max_failures` is higher.
const WIDER_LOGIN_BUDGET: u32 = 50;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Declares every configuration key once, in one table, and generates from
/// it the [`Config`] struct, its `Default`, the key list [`KEYS`] and the
/// reading of each key. A row is
///
/// ```text
/// pub NAME: TYPE = DEFAULT, env|file, CHECK;
/// ```
///
/// `env` lets a `GATEHOUSE_<NAME>` variable set the key, `file` keeps it to
/// the file. `CHECK` is a function from the raw value serde reads (`String`,
/// `bool`, `i64`, `Vec<String>`, [`Humantime`], an enum, ...) to `TYPE`; its
/// error becomes a [`ConfigError`] naming the key. The rows of `struct
/// Inputs` are keys that are no field of their own: [`Inputs::apply`] turns
/// them into the `derived` fields. Adding a key is adding its row (and its
/// line in API.md or docs/api.md).
macro_rules! config_keys {
    (@env env) => { true };
    (@env file) => { false };
    (@take $sources:ident, $key:ident, env, $check:expr) => {
        $sources.take(stringify!($key), $check)
    };
    (@take $sources:ident, $key:ident, file, $check:expr) => {
        $sources.take_file(stringify!($key), $check)
    };
    (@read $sources:ident, $key:ident, $from:ident, $check:expr, $default:expr) => {
        match config_keys!(@take $sources, $key, $from, $check)? {
            Some(value) => value,
            None => $default,
        }
    };
    (
        $(#[$meta:meta])*
        pub struct Config {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $field_ty:ty =
                    $field_default:expr, $field_from:ident, $field_check:expr;
            )*
        }
        $(#[$inputs_meta:meta])*
        struct Inputs {
            $(
                $(#[$input_meta:meta])*
                $input:ident: $input_ty:ty =
                    $input_default:expr, $input_from:ident, $input_check:expr;
            )*
        }
        derived {
            $(
                $(#[$derived_meta:meta])*
                pub $derived:ident: $derived_ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct Config {
            $( $(#[$field_meta])* pub $field: $field_ty, )*
            $( $(#[$derived_meta])* pub $derived: $derived_ty, )*
        }

        $(#[$inputs_meta])*
        struct Inputs {
            $( $(#[$input_meta])* $input: $input_ty, )*
        }

        /// Every key a file or the environment may set, in the order they
        /// are read.
        const KEYS: &[Key] = &[
            $( Key { name: stringify!($field), env: config_keys!(@env $field_from) }, )*
            $( Key { name: stringify!($input), env: config_keys!(@env $input_from) }, )*
        ];

        impl Default for Inputs {
            fn default() -> Self {
                Self { $( $input: $input_default, )* }
            }
        }

        impl Default for Config {
            fn default() -> Self {
                let mut config = Self {
                    $( $field: $field_default, )*
                    $( $derived: Default::default(), )*
                };
                Inputs::default().apply(&mut config);
                config
            }
        }

        impl Config {
            /// The effective value of every key, in [`KEYS`]' order, as a
            /// TOML value (secrets hidden), or `None` when unset.
            pub fn effective(&self) -> Vec<(&'static str, Option<String>)> {
                let mut values = vec![
                    $( (stringify!($field), Show::show(&self.$field)), )*
                ];
                values.extend(self.effective_inputs());
                values
            }

            /// Types every key from `sources` (an unset one takes its
            /// default), then applies the rules between keys.
            fn read(mut sources: Sources) -> Result<Self, ConfigError> {
                let mut config = Self {
                    $(
                        $field: config_keys!(
                            @read sources, $field, $field_from, $field_check, $field_default
                        ),
                    )*
                    $( $derived: Default::default(), )*
                };
                let inputs = Inputs {
                    $(
                        $input: config_keys!(
                            @read sources, $input, $input_from, $input_check, $input_default
                        ),
                    )*
                };
                inputs.check(&config)?;
                inputs.apply(&mut config);
                Ok(config)
            }
        }
    };
}

config_keys! {
    /// The whole, validated configuration.
    #[derive(Debug, Clone)]
    pub struct Config {
        pub listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), env, socket_addr;
        pub database_url: DatabaseUrl =
            DatabaseUrl::Sqlite("sqlite://gatehouse.db".into()), env, database_url;
        pub redis_url: Option<SecretUrl> = None, env, some(redis_url);
        /// Without a trailing slash. `None` means "`http://` + the bound address".
        pub issuer: Option<String> = None, env, some(issuer);
        pub audience: Option<String> = None, env, some(audience);
        pub registration: Registration = Registration::Open, env, accept;
        pub cookie_secure: bool = true, env, accept;
        pub session_idle_timeout: Duration = DAY, env, at_least_1s;
        pub session_absolute_timeout: Duration = 7 * DAY, env, at_least_1s;
        /// Most live sessions one user may have; a new one ends the oldest.
        // Every login reads the user's sessions to enforce it, so the
        // ceiling bounds that read too.
        pub max_sessions_per_user: u32 = 100, env, count(1..=10_000);
        pub access_token_ttl: Duration = 5 * MINUTE, env,
            timeout(DAY, "must be at most 24h: access tokens are meant to be short-lived");
        pub refresh_reuse_grace: Duration = Duration::ZERO, env,
            within(Duration::ZERO..=5 * MINUTE, "must be at most 5m");
        pub jwt_alg: JwtAlg = JwtAlg::EdDsa, env, accept;
        pub jwt_hs256_secret: Option<SecretBytes> = None, env, some(secret_bytes(32..=usize::MAX));
        pub signing_key_file: Option<PathBuf> = None, env, some(readable_file);
        pub jwt_leeway: Duration = 30 * SECOND, env,
            within(Duration::ZERO..=30 * SECOND, "must be between 0s and 30s");
        pub login_max_failures: u32 = 5, env, count(1..=1000);
        pub login_window: Duration = 15 * MINUTE, env, at_least_1s;
        /// Registration attempts (created or not) from one client network
        /// within `registration_window`.
        pub registration_max_per_ip: u32 = 50, env, count(1..=MAX_BUDGET);
        pub registration_window: Duration = HOUR, env, at_least_1s;
        /// Serialized origins (`scheme://host[:port]`).
        pub allowed_origins: Vec<String> = Vec::new(), env, each(origin);
        pub trusted_proxies: Vec<IpNet> = Vec::new(), env, each(net);
        pub key_encryption_key: Option<SecretBytes> = None, env, some(secret_bytes(32..=32));
        pub redis_key_prefix: String = "gatehouse:".into(), env, redis_key_prefix;
        pub revocation_fail_mode: RevocationFailMode =
            RevocationFailMode::Closed, env, accept;
        /// With `redis_url`: how long this node may go without proof (a
        /// heartbeat answered on its revocation feed) that it knows every
        /// revocation, before `revocation_fail_mode` applies.
        pub revocation_max_staleness: Duration = 5 * SECOND, env,
            within(SECOND..=HOUR, "must be between 1s and 1h");
        /// With `redis_url`: how long a session record read from Redis answers
        /// this node's requests (0 reads Redis on every request).
        pub session_cache_ttl: Duration = 10 * SECOND, env, within(
            Duration::ZERO..=MINUTE,
            "must be at most 1m: a cached session is trusted this long without asking Redis",
        );
        /// How long audit events are kept; `None` keeps them forever.
        pub audit_retention: Option<Duration> = Some(90 * DAY), env, retention;
        /// When set, `GET /metrics` needs `Authorization: Bearer` with it.
        pub metrics_token: Option<SecretBytes> = None, env, some(metrics_token);
        pub rules: Vec<AccessRule> = Vec::new(), file, rules;
        /// The admin API refuses callers whose session proved no second
        /// factor (401 `insufficient_user_authentication`).
        pub admin_requires_mfa: bool = false, env, accept;
        /// The WebAuthn relying party id; `None` means the issuer's host.
        pub rp_id: Option<String> = None, env, some(rp_id);
        /// Origins whose WebAuthn ceremonies are accepted; empty means the
        /// issuer's origin.
        pub webauthn_origins: Vec<String> = Vec::new(), env, each(origin);
        /// `smtp://` (STARTTLS when the server offers it) or `smtps://`,
        /// credentials in the URL; unset: no mail, the email endpoints 404.
        pub smtp_url: Option<SecretUrl> = None, env, some(smtp_url);
        /// A PEM file of certificate authorities the SMTP server's
        /// certificate may chain to, besides the system's.
        pub smtp_ca_file: Option<PathBuf> = None, env, some(readable_file);
        /// The sender of every mail; `None` means `gatehouse@` + the
        /// issuer's host.
        pub email_from: Option<String> = None, env, some(email_from);
        /// The base of links in mails and of the hosted pages; `None` means
        /// the issuer. Without a trailing slash.
        pub public_url: Option<String> = None, env, some(issuer);
        pub email_verification: EmailVerification = EmailVerification::Optional, env, accept;
        pub password_reset_ttl: Duration = 30 * MINUTE, env, at_least_1s;
        pub email_verification_ttl: Duration = 48 * HOUR, env, at_least_1s;
        /// A directory whose files replace the built-in mail templates of
        /// the same name.
        pub email_templates: Option<PathBuf> = None, env, some(readable_dir);
        /// `text` or `json` (one object a line) on stderr.
        pub log_format: LogFormat = LogFormat::Text, env, accept;
    }

    /// The keys read into fields of another shape (`tls`, `connections`) or
    /// whose value depends on another key (the wider login budgets).
    struct Inputs {
        tls_cert: Option<PathBuf> = None, env, some(readable_file);
        tls_key: Option<PathBuf> = None, env, some(readable_file);
        // Half the common 1,024 open files, leaving the rest to the
        // database pool, Redis and the process itself.
        max_connections: usize = 512, env, count(1..=1_000_000);
        // The upper bounds catch a unit typed wrong ("10h" for "10s"): such
        // a wait would let slow clients hold connections, or a shutdown hang.
        header_read_timeout: Duration = 10 * SECOND, env, timeout(5 * MINUTE, "must be at most 5m");
        keep_alive_timeout: Duration = MINUTE, env, timeout(HOUR, "must be at most 1h");
        request_body_timeout: Duration = 30 * SECOND, env, timeout(HOUR, "must be at most 1h");
        shutdown_timeout: Duration = 10 * SECOND, env, timeout(HOUR, "must be at most 1h");
        // Unset: WIDER_LOGIN_BUDGET, or login_max_failures if higher.
        login_max_failures_per_ip: Option<u32> = None, env, some(count(1..=MAX_BUDGET));
        login_max_failures_per_account: Option<u32> = None, env, some(count(1..=MAX_BUDGET));
    }

    derived {
        /// Failed password checks from one client network (an IPv4 address, an
        /// IPv6 /64), over every account, within `login_window`: what stops
        /// password spraying.
        pub login_max_failures_per_ip: u32,
        /// Failed password checks of one account, from every client, within
        /// `login_window`: what stops guessing from many addresses.
        pub login_max_failures_per_account: u32,
        pub tls: Option<TlsFiles>,
        pub connections: ConnectionLimits,
    }
}

/// A configuration key: its name, and whether a `GATEHOUSE_*` variable may
/// set it.
struct Key {
    name: &'static str,
    env: bool,
}

/// Every configuration key, with whether a `GATEHOUSE_*` variable may set
/// it (else only the file may), in the order they are read.
pub fn keys() -> impl Iterator<Item = (&'static str, bool)> {
    KEYS.iter().map(|k| (k.name, k.env))
}

/// A configuration value written as TOML would hold it, for
/// `gatehouse config check`; `None` when unset. Secrets never show.
trait Show {
    fn show(&self) -> Option<String>;
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// What a secret shows as.
const HIDDEN: &str = "\"(hidden)\"";

impl Show for SocketAddr {
    fn show(&self) -> Option<String> {
        Some(quoted(&self.to_string()))
    }
}

impl Show for DatabaseUrl {
    fn show(&self) -> Option<String> {
        Some(match self {
            Self::Sqlite(url) => quoted(url),
            Self::Postgres(url) => quoted(&url.redacted()),
        })
    }
}

impl Show for Option<SecretUrl> {
    fn show(&self) -> Option<String> {
        self.as_ref().map(|url| quoted(&url.redacted()))
    }
}

impl Show for Option<SecretBytes> {
    fn show(&self) -> Option<String> {
        self.as_ref().map(|_| HIDDEN.to_owned())
    }
}

impl Show for Option<String> {
    fn show(&self) -> Option<String> {
        self.as_deref().map(quoted)
    }
}

impl Show for Option<PathBuf> {
    fn show(&self) -> Option<String> {
        self.as_ref().map(|p| quoted(&p.display().to_string()))
    }
}

impl Show for String {
    fn show(&self) -> Option<String> {
        Some(quoted(self))
    }
}

impl Show for bool {
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Show for u32 {
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Show for usize {
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// A duration in the largest unit that holds it whole (`90s`, `15m`,
/// `24h`, `7d`): days only from two days on, so a day reads `24h`.
impl Show for Duration {
    fn show(&self) -> Option<String> {
        let text = if self.subsec_nanos() == 0 {
            let secs = self.as_secs();
            match secs {
                0 => "0s".to_owned(),
                s if s % 86_400 == 0 && s >= 2 * 86_400 => format!("{}d", s / 86_400),
                s if s % 3_600 == 0 => format!("{}h", s / 3_600),
                s if s % 60 == 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            }
        } else if self.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", self.as_millis())
        } else {
            humantime::format_duration(*self).to_string()
        };
        Some(quoted(&text))
    }
}

/// `audit_retention`: unset keeps events forever, written `0s`.
impl Show for Option<Duration> {
    fn show(&self) -> Option<String> {
        self.unwrap_or_default().show()
    }
}

impl Show for Vec<String> {
    fn show(&self) -> Option<String> {
        Some(format!(
            "[{}]",
            self.iter()
                .map(|s| quoted(s))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

impl Show for Vec<IpNet> {
    fn show(&self) -> Option<String> {
        Some(format!(
            "[{}]",
            self.iter()
                .map(|n| quoted(&n.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The rules as an array of inline tables, in their order.
impl Show for Vec<AccessRule> {
    fn show(&self) -> Option<String> {
        let rules: Vec<String> = self
            .iter()
            .map(|r| {
                let mut fields = vec![format!("path = {}", quoted(&r.path))];
                if !r.methods.is_empty() {
                    fields.push(format!(
                        "methods = {}",
                        r.methods.show().unwrap_or_default()
                    ));
                }
                fields.push(match &r.policy {
                    RulePolicy::Public => "policy = \"public\"".to_owned(),
                    RulePolicy::Authenticated => "policy = \"authenticated\"".to_owned(),
                    RulePolicy::Deny => "policy = \"deny\"".to_owned(),
                    RulePolicy::Permission(p) => format!("permission = {}", quoted(p)),
                });
                if r.mfa {
                    fields.push("mfa = true".to_owned());
                }
                format!("{{ {} }}", fields.join(", "))
            })
            .collect();
        Some(format!("[{}]", rules.join(", ")))
    }
}

impl Show for Registration {
    fn show(&self) -> Option<String> {
        Some(quoted(match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }))
    }
}

impl Show for JwtAlg {
    fn show(&self) -> Option<String> {
        Some(quoted(match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Hs256 => "HS256",
        }))
    }
}

impl Show for RevocationFailMode {
    fn show(&self) -> Option<String> {
        Some(quoted(match self {
            Self::Closed => "closed",
            Self::Stale => "stale",
        }))
    }
}

impl Show for EmailVerification {
    fn show(&self) -> Option<String> {
        Some(quoted(match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }))
    }
}

impl Show for LogFormat {
    fn show(&self) -> Option<String> {
        Some(quoted(match self {
            Self::Text => "text",
            Self::Json => "json",
        }))
    }
}

impl Config {
    /// The effective values of the keys read into fields of another shape.
    fn effective_inputs(&self) -> [(&'static str, Option<String>); 9] {
        let c = &self.connections;
        [
            ("tls_cert", self.tls.as_ref().map(|t| t.cert.clone()).show()),
            ("tls_key", self.tls.as_ref().map(|t| t.key.clone()).show()),
            ("max_connections", c.max_connections.show()),
            ("header_read_timeout", c.header_read_timeout.show()),
            ("keep_alive_timeout", c.keep_alive_timeout.show()),
            ("request_body_timeout", c.request_body_timeout.show()),
            ("shutdown_timeout", c.shutdown_timeout.show()),
            (
                "login_max_failures_per_ip",
                self.login_max_failures_per_ip.show(),
            ),
            (
                "login_max_failures_per_account",
                self.login_max_failures_per_account.show(),
            ),
        ]
    }
}

/// WebAuthn's rule between `rp_id` and the origins whose ceremonies count
/// (`webauthn_origins`, else the issuer's): each origin's host is the
/// relying party id or a name under it. Checked before anything is opened,
/// so a relying party that cannot work stops the start-up. With `rp_id`
/// unset it is the issuer's host, which fits the issuer's origin.
fn check_relying_party(config: &Config) -> Result<(), ConfigError> {
    let Some(rp_id) = &config.rp_id else {
        return Ok(());
    };
    let origins: Vec<String> = if config.webauthn_origins.is_empty() {
        match config.issuer_origin() {
            Some(origin) => vec![origin],
            None => {
                return Err(ConfigError::new(
                    "rp_id",
                    "needs webauthn_origins or issuer: the server's own address is an IP \
                     address, which cannot belong to a relying party id",
                ));
            }
        }
    } else {
        config.webauthn_origins.clone()
    };
    for origin in &origins {
        let host = Url::parse(origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        if host != *rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(ConfigError::new(
                "rp_id",
                format!(
                    "{rp_id:?} does not cover the origin {origin} (its host must be the relying party id or a name under it)"
                ),
            ));
        }
    }
    Ok(())
}

fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

impl Inputs {
    /// The rules between keys, once each is valid on its own.
    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        match (config.jwt_alg, &config.jwt_hs256_secret) {
            (JwtAlg::Hs256, None) => {
                return Err(ConfigError::new(
                    "jwt_hs256_secret",
                    "required when jwt_alg = \"HS256\"",
                ));
            }
            (JwtAlg::EdDsa | JwtAlg::Es256 | JwtAlg::Rs256, Some(_)) => {
                return Err(ConfigError::new(
                    "jwt_hs256_secret",
                    "only allowed when jwt_alg = \"HS256\"",
                ));
            }
            _ => {}
        }
        if config.signing_key_file.is_some() && config.jwt_alg == JwtAlg::Hs256 {
            return Err(ConfigError::new(
                "signing_key_file",
                "not used with jwt_alg = \"HS256\" (the shared secret signs)",
            ));
        }
        // The wider budgets must leave the (account, IP) one its meaning: a
        // set one below it is an error (an unset one is raised to it).
        let pair = config.login_max_failures;
        for (key, budget) in [
            ("login_max_failures_per_ip", self.login_max_failures_per_ip),
            (
                "login_max_failures_per_account",
                self.login_max_failures_per_account,
            ),
        ] {
            if let Some(n) = budget.filter(|n| *n < pair) {
                return Err(ConfigError::new(
                    key,
                    format!("{n} is below login_max_failures ({pair})"),
                ));
            }
        }
        check_relying_party(config)?;
        if config.email_verification == EmailVerification::Required && config.smtp_url.is_none() {
            return Err(ConfigError::new(
                "email_verification",
                "\"required\" needs smtp_url: nobody could verify an address",
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(ConfigError::new("tls_key", "required with tls_cert")),
            (None, Some(_)) => Err(ConfigError::new("tls_cert", "required with tls_key")),
            _ => Ok(()),
        }
    }

    /// Fills the fields built from these keys.
    fn apply(self, config: &mut Config) {
        config.connections = self.connection_limits();
        let pair = config.login_max_failures;
        config.login_max_failures_per_ip = self
            .login_max_failures_per_ip
            .unwrap_or(WIDER_LOGIN_BUDGET)
            .max(pair);
        config.login_max_failures_per_account = self
            .login_max_failures_per_account
            .unwrap_or(WIDER_LOGIN_BUDGET)
            .max(pair);
        config.tls = self
            .tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key });
    }

    fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            request_body_timeout: self.request_body_timeout,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

impl Config {
    /// Loads the configuration from `file` (when given) and the process
    /// environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first key (or the file) that is invalid.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(
            file,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Loads from `file` and the given environment variables (all of them;
    /// those without the `GATEHOUSE_` prefix are ignored).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_sources(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::read(Sources::collect(file, env)?)
    }

    /// The scheme the server speaks: `https` when it serves TLS itself
    /// (`tls_cert`/`tls_key`), else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The origin (`scheme://host[:port]`) of the configured issuer, if any.
    pub fn issuer_origin(&self) -> Option<String> {
        self.issuer
            .as_deref()
            .and_then(|i| Url::parse(i).ok())
            .map(|u| u.origin().ascii_serialization())
    }
}

/// The file's table and the `GATEHOUSE_*` values by key, each taken out as
/// its key is read.
struct Sources {
    file: toml::Table,
    env: BTreeMap<&'static str, String>,
}

impl Sources {
    /// Reads `file` and picks the `GATEHOUSE_*` variables out of `env`,
    /// refusing any key that is not in [`KEYS`]: a typo
    /// (`GATEHOUSE_REGISTRATON=closed`) must not leave a default in force.
    fn collect(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) => read_toml(path)?,
            None => toml::Table::new(),
        };
        if let Some(unknown) = file.keys().find(|k| key(k).is_none()) {
            return Err(ConfigError::new(
                unknown.as_str(),
                "unknown configuration key",
            ));
        }
        let mut vars = BTreeMap::new();
        for (name, value) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match key(&suffix.to_ascii_lowercase()) {
                None => return Err(ConfigError::new(name, "unknown configuration variable")),
                Some(k) if !k.env => {
                    return Err(ConfigError::new(
                        name,
                        "can only be set in the configuration file",
                    ));
                }
                Some(k) => {
                    vars.insert(k.name, value);
                }
            }
        }
        Ok(Self { file, env: vars })
    }

    /// The value of `key`, from the environment or else the file, typed by
    /// serde as `R` and checked by `check`; `None` when neither sets it.
    fn take<R: EnvValue, T, E: Into<Invalid>>(
        &mut self,
        key: &'static str,
        check: impl FnOnce(R) -> Result<T, E>,
    ) -> Result<Option<T>, ConfigError> {
        let value = match self.env.remove(key) {
            Some(text) => Some(R::env_value(&text).map_err(|m| ConfigError::new(key, m))?),
            None => self.file.remove(key),
        };
        value.map(|v| typed(key, v, check)).transpose()
    }

    /// As [`Sources::take`], for a key only the file may set.
    fn take_file<R: DeserializeOwned, T, E: Into<Invalid>>(
        &mut self,
        key: &'static str,
        check: impl FnOnce(R) -> Result<T, E>,
    ) -> Result<Option<T>, ConfigError> {
        self.file
            .remove(key)
            .map(|v| typed(key, v, check))
            .transpose()
    }
}

fn typed<R: DeserializeOwned, T, E: Into<Invalid>>(
    key: &str,
    mut value: toml::Value,
    check: impl FnOnce(R) -> Result<T, E>,
) -> Result<T, ConfigError> {
    // Spaces around a value are a copy-and-paste accident, in either source.
    if let toml::Value::String(s) = &mut value {
        *s = s.trim().to_owned();
    }
    let raw = R::deserialize(value).map_err(|e| ConfigError::new(key, e.message()))?;
    check(raw).map_err(|e| {
        let Invalid { at, message } = e.into();
        ConfigError::new(format!("{key}{at}"), message)
    })
}

fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let key = format!("config file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::new(&key, e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::new(key, "larger than 1 MiB"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&key, e.to_string()))?;
    text.parse::<toml::Table>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(1);
        ConfigError::new(
            key,
            format!("TOML syntax error at line {line}: {}", e.message().trim()),
        )
    })
}

/// What a check found wrong with a key's value: the message, and where in
/// the value (`[2]`, the third item) when not the whole of it.
struct Invalid {
    at: String,
    message: String,
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Self {
            at: String::new(),
            message,
        }
    }
}

/// A raw value type whose `GATEHOUSE_*` text is first made into the TOML
/// value a file would hold, so serde types both sources alike.
trait EnvValue: DeserializeOwned {
    /// The TOML value; by default a string, which serde then types.
    ///
    /// # Errors
    /// One line saying why `text` is not such a value.
    fn env_value(text: &str) -> Result<toml::Value, String> {
        Ok(toml::Value::String(text.to_owned()))
    }
}

impl EnvValue for String {}
impl EnvValue for Humantime {}
impl EnvValue for Registration {}
impl EnvValue for JwtAlg {}
impl EnvValue for RevocationFailMode {}
impl EnvValue for LogFormat {}
impl EnvValue for EmailVerification {}

impl EnvValue for bool {
    fn env_value(text: &str) -> Result<toml::Value, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{text:?} is not true or false")),
        }
    }
}

impl EnvValue for i64 {
    fn env_value(text: &str) -> Result<toml::Value, String> {
        text.trim()
            .parse()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{text:?} is not an integer"))
    }
}

/// A list: a TOML array of strings, or a comma-separated variable (API.md).
impl EnvValue for Vec<String> {
    fn env_value(text: &str) -> Result<toml::Value, String> {
        Ok(toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ))
    }
}

/// A duration written as humantime text (`"90s"`, `"15m"`, `"7d"`).
struct Humantime(Duration);

impl<'de> Deserialize<'de> for Humantime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Self).map_err(|e| {
            D::Error::custom(format!(
                "{text:?} is not a duration such as \"90s\" or \"15m\" ({e})"
            ))
        })
    }
}

/// Any value of the raw type.
fn accept<T>(value: T) -> Result<T, String> {
    Ok(value)
}

/// An optional key: `check`'s value, present.
fn some<R, T>(
    check: impl FnOnce(R) -> Result<T, String>,
) -> impl FnOnce(R) -> Result<Option<T>, String> {
    move |raw| check(raw).map(Some)
}

/// A list whose every item passes `check`.
fn each<T>(
    check: fn(&str) -> Result<T, String>,
) -> impl FnOnce(Vec<String>) -> Result<Vec<T>, String> {
    move |items| items.iter().map(|item| check(item)).collect()
}

/// A whole number within `range`.
fn count<T: TryFrom<i64>>(range: RangeInclusive<i64>) -> impl FnOnce(i64) -> Result<T, String> {
    move |n| {
        range
            .contains(&n)
            .then(|| T::try_from(n).ok())
            .flatten()
            .ok_or_else(|| format!("{n} is not between {} and {}", range.start(), range.end()))
    }
}

/// A duration of timeouts, TTLs and windows: at least 1s (API.md).
fn at_least_1s(Humantime(d): Humantime) -> Result<Duration, String> {
    if d < SECOND {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// At least 1s and at most `max`; `too_long` says so.
fn timeout(
    max: Duration,
    too_long: &'static str,
) -> impl FnOnce(Humantime) -> Result<Duration, String> {
    move |d| {
        let d = at_least_1s(d)?;
        if d > max {
            return Err(too_long.into());
        }
        Ok(d)
    }
}

/// Within `range`; `outside` says what is allowed.
fn within(
    range: RangeInclusive<Duration>,
    outside: &'static str,
) -> impl FnOnce(Humantime) -> Result<Duration, String> {
    move |Humantime(d)| {
        if !range.contains(&d) {
            return Err(outside.into());
        }
        Ok(d)
    }
}

/// `audit_retention`: 0s keeps the trail forever.
fn retention(Humantime(d): Humantime) -> Result<Option<Duration>, String> {
    Ok((!d.is_zero()).then_some(d))
}

fn socket_addr(s: String) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:8080"))
}

fn database_url(s: String) -> Result<DatabaseUrl, String> {
    if let Some(path) = s.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or_default();
        if file.is_empty() || file == ":memory:" {
            return Err(
                "sqlite:// needs a file path (an in-memory database would lose every session)"
                    .into(),
            );
        }
        Ok(DatabaseUrl::Sqlite(s))
    } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Url::parse(&s).map_err(|e| format!("not a valid URL ({e})"))?;
        Ok(DatabaseUrl::Postgres(SecretUrl::new(s)))
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

fn redis_url(s: String) -> Result<SecretUrl, String> {
    let u = Url::parse(&s).map_err(|e| format!("not a URL ({e})"))?;
    match u.scheme() {
        "redis" | "rediss" => Ok(SecretUrl::new(s)),
        _ => Err("must start with redis:// or rediss://".into()),
    }
}

fn smtp_url(s: String) -> Result<SecretUrl, String> {
    let u = Url::parse(&s).map_err(|_| "not a URL".to_owned())?;
    if !matches!(u.scheme(), "smtp" | "smtps") {
        return Err("must start with smtp:// or smtps://".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("needs a host".into());
    }
    if u.path() != "" && u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err("must be smtp://[user:password@]host[:port], without path or query".into());
    }
    Ok(SecretUrl::new(s))
}

/// A sender: `addr@domain` or `Name <addr@domain>` (checked again, fully,
/// when the mailer is built).
fn email_from(s: String) -> Result<String, String> {
    let s = s.trim().to_owned();
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        _ => s.as_str(),
    };
    let valid = addr
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && (d.contains('.') || d == "localhost"));
    if !valid || s.len() > 320 || s.chars().any(char::is_control) {
        return Err(format!(
            "{s:?} is not a mail address such as gatehouse@example.com or \"Example <gatehouse@example.com>\""
        ));
    }
    Ok(s)
}

fn readable_dir(s: String) -> Result<PathBuf, String> {
    match std::fs::metadata(&s) {
        Ok(m) if m.is_dir() => Ok(PathBuf::from(s)),
        Ok(_) => Err(format!("{s} is not a directory")),
        Err(e) => Err(format!("cannot read {s}: {e}")),
    }
}

fn issuer(s: String) -> Result<String, String> {
    let u = Url::parse(&s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err("must be an http:// or https:// URL".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// A WebAuthn relying party id: a domain name (WebAuthn forbids an IP
/// address), lower-cased, without scheme, port or path.
fn rp_id(s: String) -> Result<String, String> {
    let id = s.trim().to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if id.is_empty() || id.len() > 253 || !id.split('.').all(label_ok) {
        return Err(format!(
            "{s:?} is not a domain name (a relying party id has no scheme, port or path)"
        ));
    }
    if id.parse::<IpAddr>().is_ok() || id.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{s:?} is an IP address, which WebAuthn forbids as a relying party id"
        ));
    }
    Ok(id)
}

fn audience(s: String) -> Result<String, String> {
    if s.is_empty() || s.len() > 512 {
        return Err("must be 1 to 512 characters".into());
    }
    Ok(s)
}

/// Base64 of a secret whose decoded length is within `len`.
fn secret_bytes(len: RangeInclusive<usize>) -> impl FnOnce(String) -> Result<SecretBytes, String> {
    move |s| {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let bytes = STANDARD
            .decode(&s)
            .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
            .map_err(|_| "is not valid base64".to_owned())?;
        if !len.contains(&bytes.len()) {
            let bound = if len.start() == len.end() {
                "exactly"
            } else {
                "at least"
            };
            return Err(format!(
                "must be {bound} {} bytes once decoded, found {}",
                len.start(),
                bytes.len()
            ));
        }
        Ok(SecretBytes(bytes))
    }
}

fn redis_key_prefix(s: String) -> Result<String, String> {
    if s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 64 characters without spaces".into());
    }
    Ok(s)
}

fn metrics_token(s: String) -> Result<SecretBytes, String> {
    if s.len() < 32 || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 32 to 256 printable ASCII characters without spaces".into());
    }
    Ok(SecretBytes(s.into_bytes()))
}

fn readable_file(s: String) -> Result<PathBuf, String> {
    match std::fs::metadata(&s) {
        Ok(m) if m.is_file() => Ok(PathBuf::from(s)),
        Ok(_) => Err(format!("{s} is not a file")),
        Err(e) => Err(format!("cannot read {s}: {e}")),
    }
}

fn origin(s: &str) -> Result<String, String> {
    let u = Url::parse(s).map_err(|e| format!("{s:?} is not an origin ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(format!("{s:?} is not an http:// or https:// origin"));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty()
    {
        return Err(format!(
            "{s:?} is not an origin: no path, query or user allowed"
        ));
    }
    Ok(u.origin().ascii_serialization())
}

fn net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR"))
}

/// `[[rules]]`: each table typed by serde, then checked; an error names the
/// rule (`rules[2]`).
fn rules(items: Vec<toml::Value>) -> Result<Vec<AccessRule>, Invalid> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            rule(item).map_err(|message| Invalid {
                at: format!("[{i}]"),
                message,
            })
        })
        .collect()
}

/// One `[[rules]]` table as written; serde refuses a missing `path`, a
/// value of the wrong type and a key it does not know.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    path: String,
    #[serde(default)]
    methods: Vec<String>,
    policy: Option<String>,
    permission: Option<String>,
    #[serde(default)]
    mfa: bool,
}

fn rule(v: toml::Value) -> Result<AccessRule, String> {
    let RuleEntry {
        path,
        methods,
        policy,
        permission,
        mfa,
    } = RuleEntry::deserialize(v).map_err(|e| e.message().to_owned())?;
    if !path.starts_with('/') || path.len() > 2048 {
        return Err("path must be a string starting with /".into());
    }
    let methods = methods
        .into_iter()
        .map(|m| {
            if !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(m.to_ascii_uppercase())
            } else {
                Err("methods must be a list of HTTP method names".to_owned())
            }
        })
        .collect::<Result<_, _>>()?;
    let policy = match (policy, permission) {
        (Some(p), None) => match p.as_str() {
            "public" => RulePolicy::Public,
            "authenticated" => RulePolicy::Authenticated,
            "deny" => RulePolicy::Deny,
            _ => return Err(format!("policy {p:?} is not public, authenticated or deny")),
        },
        (None, Some(p)) => {
            crate::model::types::Permission::parse(&p).map_err(|e| format!("permission: {e}"))?;
            RulePolicy::Permission(p)
        }
        (Some(_), Some(_)) => return Err("give either policy or permission, not both".into()),
        (None, None) => return Err("needs a policy or a permission".into()),
    };
    if mfa && matches!(policy, RulePolicy::Public | RulePolicy::Deny) {
        return Err("mfa = true needs a caller: policy authenticated or a permission".into());
    }
    Ok(AccessRule {
        path,
        methods,
        policy,
        mfa,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_configuration_never_shows_a_url_password() {
        let c = Config::from_sources(
            None,
            env(&[
                (
                    "GATEHOUSE_DATABASE_URL",
                    "postgres://gatehouse:pg-s3cret-pw@db.internal:5432/gatehouse",
                ),
                (
                    "GATEHOUSE_REDIS_URL",
                    "redis://:redis-s3cret-pw@cache.internal:6379/0",
                ),
            ]),
        )
        .expect("valid");
        let printed = format!("{c:?}");
        for secret in ["pg-s3cret-pw", "redis-s3cret-pw"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(
            printed.contains("postgres://gatehouse:***@db.internal:5432/gatehouse"),
            "{printed}"
        );
        assert!(
            printed.contains("redis://:***@cache.internal:6379/0"),
            "{printed}"
        );
        let DatabaseUrl::Postgres(url) = &c.database_url else {
            panic!("postgres")
        };
        assert_eq!(
            url.expose(),
            "postgres://gatehouse:pg-s3cret-pw@db.internal:5432/gatehouse",
            "the driver gets the password"
        );
        assert_eq!(
            url.to_string(),
            "postgres://gatehouse:***@db.internal:5432/gatehouse"
        );
        // Without a password nothing is hidden; unparseable text is not shown.
        assert_eq!(
            SecretUrl::new("redis://127.0.0.1:6379/").to_string(),
            "redis://127.0.0.1:6379/"
        );
        assert!(!format!("{:?}", SecretUrl::new("not a url pw")).contains("pw"));
    }
    use std::io::Write as _;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn defaults_without_any_source() {
        let c = Config::from_sources(None, env(&[("PATH", "/bin")])).expect("defaults");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("sqlite://gatehouse.db".into())
        );
        assert!(c.cookie_secure);
        assert_eq!(c.session_idle_timeout, Duration::from_secs(86_400));
        assert_eq!(c.login_max_failures, 5);
        assert_eq!(c.max_sessions_per_user, 100);
        assert_eq!(c.jwt_alg, JwtAlg::EdDsa);
    }

    #[test]
    fn max_sessions_per_user_reads_from_the_file_and_the_environment() {
        let f = file("max_sessions_per_user = 3\n");
        let c = Config::from_sources(Some(f.path()), env(&[])).expect("file");
        assert_eq!(c.max_sessions_per_user, 3);
        let c = Config::from_sources(
            Some(f.path()),
            env(&[("GATEHOUSE_MAX_SESSIONS_PER_USER", "10000")]),
        )
        .expect("environment");
        assert_eq!(c.max_sessions_per_user, 10_000);
        let f = file("max_sessions_per_user = \"3\"\n");
        let err = Config::from_sources(Some(f.path()), env(&[])).expect_err("a string");
        assert_eq!(err.key, "max_sessions_per_user");
    }

    #[test]
    fn environment_wins_over_file() {
        let f = file("login_window = \"10m\"\ncookie_secure = true\n");
        let c = Config::from_sources(
            Some(f.path()),
            env(&[
                ("GATEHOUSE_LOGIN_WINDOW", "2m"),
                ("GATEHOUSE_COOKIE_SECURE", "false"),
            ]),
        )
        .expect("config");
        assert_eq!(c.login_window, Duration::from_secs(120));
        assert!(!c.cookie_secure);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v, key) in [
            ("GATEHOUSE_LISTEN", "nope", "listen"),
            ("GATEHOUSE_LOGIN_WINDOW", "soon", "login_window"),
            ("GATEHOUSE_JWT_LEEWAY", "31s", "jwt_leeway"),
            ("GATEHOUSE_LOGIN_MAX_FAILURES", "0", "login_max_failures"),
            (
                "GATEHOUSE_MAX_SESSIONS_PER_USER",
                "0",
                "max_sessions_per_user",
            ),
            (
                "GATEHOUSE_MAX_SESSIONS_PER_USER",
                "10001",
                "max_sessions_per_user",
            ),
            (
                "GATEHOUSE_MAX_SESSIONS_PER_USER",
                "many",
                "max_sessions_per_user",
            ),
            ("GATEHOUSE_REGISTRATION", "maybe", "registration"),
            ("GATEHOUSE_JWT_ALG", "none", "jwt_alg"),
            ("GATEHOUSE_JWT_HS256_SECRET", "c2hvcnQ=", "jwt_hs256_secret"),
            (
                "GATEHOUSE_KEY_ENCRYPTION_KEY",
                "c2hvcnQ=",
                "key_encryption_key",
            ),
            (
                "GATEHOUSE_ALLOWED_ORIGINS",
                "https://a.example/path",
                "allowed_origins",
            ),
            (
                "GATEHOUSE_TRUSTED_PROXIES",
                "10.0.0.0/33",
                "trusted_proxies",
            ),
            ("GATEHOUSE_METRICS_TOKEN", "too-short", "metrics_token"),
            ("GATEHOUSE_DATABASE_URL", "mysql://x", "database_url"),
            ("GATEHOUSE_REDIS_URL", "http://x", "redis_url"),
            ("GATEHOUSE_ISSUER", "ftp://x", "issuer"),
            ("GATEHOUSE_COOKIE_SECURE", "sometimes", "cookie_secure"),
            (
                "GATEHOUSE_SESSION_IDLE_TIMEOUT",
                "0s",
                "session_idle_timeout",
            ),
            (
                "GATEHOUSE_REVOCATION_FAIL_MODE",
                "open",
                "revocation_fail_mode",
            ),
            (
                "GATEHOUSE_REVOCATION_MAX_STALENESS",
                "500ms",
                "revocation_max_staleness",
            ),
            (
                "GATEHOUSE_REVOCATION_MAX_STALENESS",
                "2h",
                "revocation_max_staleness",
            ),
            ("GATEHOUSE_SESSION_CACHE_TTL", "2m", "session_cache_ttl"),
            ("GATEHOUSE_SESSION_CACHE_TTL", "fresh", "session_cache_ttl"),
            ("GATEHOUSE_TLS_CERT", "/nonexistent/cert.pem", "tls_cert"),
            ("GATEHOUSE_NO_SUCH_KEY", "1", "GATEHOUSE_NO_SUCH_KEY"),
        ] {
            let err = Config::from_sources(None, env(&[(k, v)])).expect_err(k);
            assert_eq!(err.key, key, "{k}={v}: {err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn throttling_budgets_parse_and_name_their_key() {
        let d = Config::from_sources(None, env(&[])).expect("defaults");
        assert_eq!(
            (
                d.login_max_failures_per_ip,
                d.login_max_failures_per_account,
                d.registration_max_per_ip,
                d.registration_window,
            ),
            (50, 50, 50, Duration::from_secs(3600))
        );
        let f = file("login_max_failures_per_ip = 80\nregistration_window = \"10m\"\n");
        let c = Config::from_sources(
            Some(f.path()),
            env(&[
                ("GATEHOUSE_LOGIN_MAX_FAILURES_PER_ACCOUNT", "200"),
                ("GATEHOUSE_REGISTRATION_MAX_PER_IP", "7"),
            ]),
        )
        .expect("config");
        assert_eq!(c.login_max_failures_per_ip, 80);
        assert_eq!(c.login_max_failures_per_account, 200);
        assert_eq!(c.registration_max_per_ip, 7);
        assert_eq!(c.registration_window, Duration::from_secs(600));
        for (k, v, key) in [
            (
                "GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP",
                "0",
                "login_max_failures_per_ip",
            ),
            (
                "GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP",
                "many",
                "login_max_failures_per_ip",
            ),
            (
                "GATEHOUSE_LOGIN_MAX_FAILURES_PER_ACCOUNT",
                "-1",
                "login_max_failures_per_account",
            ),
            (
                "GATEHOUSE_REGISTRATION_MAX_PER_IP",
                "1000001",
                "registration_max_per_ip",
            ),
            ("GATEHOUSE_REGISTRATION_WINDOW", "0s", "registration_window"),
            (
                "GATEHOUSE_REGISTRATION_WINDOW",
                "later",
                "registration_window",
            ),
        ] {
            let err = Config::from_sources(None, env(&[(k, v)])).expect_err(k);
            assert_eq!(err.key, key, "{k}={v}: {err}");
        }
    }

    #[test]
    fn connection_limits_parse_and_name_their_key() {
        let f = file("max_connections = 64\nheader_read_timeout = \"5s\"\n");
        let c = Config::from_sources(
            Some(f.path()),
            env(&[
                ("GATEHOUSE_KEEP_ALIVE_TIMEOUT", "2m"),
                ("GATEHOUSE_SHUTDOWN_TIMEOUT", "3s"),
            ]),
        )
        .expect("config");
        assert_eq!(
            c.connections,
            ConnectionLimits {
                max_connections: 64,
                header_read_timeout: Duration::from_secs(5),
                keep_alive_timeout: Duration::from_secs(120),
                request_body_timeout: Duration::from_secs(30),
                shutdown_timeout: Duration::from_secs(3),
            }
        );
        for (k, v, key) in [
            ("GATEHOUSE_MAX_CONNECTIONS", "0", "max_connections"),
            ("GATEHOUSE_MAX_CONNECTIONS", "many", "max_connections"),
            (
                "GATEHOUSE_HEADER_READ_TIMEOUT",
                "500ms",
                "header_read_timeout",
            ),
            (
                "GATEHOUSE_HEADER_READ_TIMEOUT",
                "10h",
                "header_read_timeout",
            ),
            ("GATEHOUSE_KEEP_ALIVE_TIMEOUT", "2h", "keep_alive_timeout"),
            (
                "GATEHOUSE_REQUEST_BODY_TIMEOUT",
                "0s",
                "request_body_timeout",
            ),
            ("GATEHOUSE_SHUTDOWN_TIMEOUT", "soon", "shutdown_timeout"),
        ] {
            let err = Config::from_sources(None, env(&[(k, v)])).expect_err(k);
            assert_eq!(err.key, key, "{k}={v}: {err}");
        }
    }

    #[test]
    fn the_wider_login_budgets_are_never_below_the_pair_budget() {
        // Unset, they rise with login_max_failures.
        let c = Config::from_sources(None, env(&[("GATEHOUSE_LOGIN_MAX_FAILURES", "120")]))
            .expect("config");
        assert_eq!(c.login_max_failures_per_ip, 120);
        assert_eq!(c.login_max_failures_per_account, 120);
        // Set below it, they are refused: the pair's contract would not hold.
        for key in [
            "login_max_failures_per_ip",
            "login_max_failures_per_account",
        ] {
            let f = file(&format!("login_max_failures = 10\n{key} = 9\n"));
            let err = Config::from_sources(Some(f.path()), env(&[])).expect_err(key);
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn hs256_needs_its_secret_and_only_it() {
        let err =
            Config::from_sources(None, env(&[("GATEHOUSE_JWT_ALG", "HS256")])).expect_err("hs");
        assert_eq!(err.key, "jwt_hs256_secret");
        let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let ok = Config::from_sources(
            None,
            env(&[
                ("GATEHOUSE_JWT_ALG", "HS256"),
                ("GATEHOUSE_JWT_HS256_SECRET", &secret),
            ]),
        )
        .expect("hs256");
        assert_eq!(ok.jwt_hs256_secret.expect("secret").expose(), &[7u8; 32]);
        let err = Config::from_sources(None, env(&[("GATEHOUSE_JWT_HS256_SECRET", &secret)]))
            .expect_err("secret without HS256");
        assert_eq!(err.key, "jwt_hs256_secret");
    }

    #[test]
    fn file_errors_are_one_line() {
        let f = file("listen = \n[[[");
        let err = Config::from_sources(Some(f.path()), env(&[])).expect_err("syntax");
        assert!(err.key.starts_with("config file"));
        assert!(!err.to_string().contains('\n'));
        let f = file("lisen = \"127.0.0.1:1\"\n");
        assert_eq!(
            Config::from_sources(Some(f.path()), env(&[]))
                .expect_err("typo")
                .key,
            "lisen"
        );
        let f = file("login_max_failures = \"five\"\n");
        let err = Config::from_sources(Some(f.path()), env(&[])).expect_err("type");
        assert_eq!(err.key, "login_max_failures");
    }

    #[test]
    fn rules_and_lists_parse() {
        let f = file(
            r#"
allowed_origins = ["https://app.example.com", "http://localhost:3000/"]
trusted_proxies = ["10.0.0.0/8", "::1"]

[[rules]]
path = "/public/"
methods = ["get", "HEAD"]
policy = "public"

[[rules]]
path = "/admin/"
permission = "site:admin"
"#,
        );
        let c = Config::from_sources(Some(f.path()), env(&[])).expect("config");
        assert_eq!(
            c.allowed_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.rules[0].methods, vec!["GET", "HEAD"]);
        assert_eq!(
            c.rules[1].policy,
            RulePolicy::Permission("site:admin".into())
        );
        let f = file("[[rules]]\npath = \"/x\"\npolicy = \"public\"\npermission = \"a\"\n");
        assert_eq!(
            Config::from_sources(Some(f.path()), env(&[]))
                .expect_err("both")
                .key,
            "rules[0]"
        );
        let err = Config::from_sources(None, env(&[("GATEHOUSE_RULES", "x")])).expect_err("env");
        assert_eq!(err.key, "GATEHOUSE_RULES");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let secret = base64::engine::general_purpose::STANDARD.encode([0x41u8; 32]);
        let c = Config::from_sources(None, env(&[("GATEHOUSE_KEY_ENCRYPTION_KEY", &secret)]))
            .expect("config");
        let dbg = format!("{c:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains("65, 65"));
    }

    #[test]
    fn every_key_is_listed_once_in_lower_case() {
        // The environment's names are lower-cased to find their key, so an
        // upper-case key could only ever come from the file.
        let mut seen = std::collections::BTreeSet::new();
        for k in KEYS {
            assert!(seen.insert(k.name), "{} is listed twice", k.name);
            assert!(
                k.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                k.name
            );
        }
        let file_only: Vec<_> = KEYS.iter().filter(|k| !k.env).map(|k| k.name).collect();
        assert_eq!(file_only, ["rules"]);
    }

    #[test]
    fn every_key_is_read_and_its_errors_name_it() {
        // A table is the wrong type for every key: each one is read (not
        // refused as unknown, not silently ignored) and named.
        for k in KEYS {
            let f = file(&format!("{} = {{ x = 1 }}\n", k.name));
            let err = Config::from_sources(Some(f.path()), env(&[])).expect_err(k.name);
            assert_eq!(err.key, k.name, "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn no_source_gives_the_defaults() {
        let read = Config::from_sources(None, env(&[])).expect("defaults");
        assert_eq!(format!("{read:?}"), format!("{:?}", Config::default()));
        assert_eq!(read.connections, ConnectionLimits::default());
        assert_eq!(
            (
                read.tls,
                read.login_max_failures_per_ip,
                read.audit_retention
            ),
            (None, 50, Some(Duration::from_secs(90 * 24 * 3600)))
        );
    }

    #[test]
    fn unknown_keys_and_file_only_keys_are_refused_by_name() {
        let f = file("listen = \"127.0.0.1:1\"\nregistraton = \"closed\"\n");
        let err = Config::from_sources(Some(f.path()), env(&[])).expect_err("typo");
        assert_eq!(
            (err.key.as_str(), err.message.as_str()),
            ("registraton", "unknown configuration key")
        );
        let err = Config::from_sources(None, env(&[("GATEHOUSE_REGISTRATON", "closed")]))
            .expect_err("typo");
        assert_eq!(
            (err.key.as_str(), err.message.as_str()),
            ("GATEHOUSE_REGISTRATON", "unknown configuration variable")
        );
        let f = file("[[rules]]\npath = \"/x\"\npolicy = \"deny\"\nmethod = [\"GET\"]\n");
        let err = Config::from_sources(Some(f.path()), env(&[])).expect_err("rule key");
        assert_eq!(err.key, "rules[0]", "{err}");
        assert!(err.message.contains("method"), "{err}");
    }

    #[test]
    fn named_choices_read_from_either_source() {
        let f = file("jwt_alg = \"ES256\"\nregistration = \" closed \"\n");
        let c = Config::from_sources(
            Some(f.path()),
            env(&[("GATEHOUSE_REVOCATION_FAIL_MODE", "stale")]),
        )
        .expect("config");
        assert_eq!(
            (c.jwt_alg, c.registration, c.revocation_fail_mode),
            (
                JwtAlg::Es256,
                Registration::Closed,
                RevocationFailMode::Stale
            )
        );
        let err = Config::from_sources(None, env(&[("GATEHOUSE_JWT_ALG", "eddsa")]))
            .expect_err("names are case-sensitive");
        assert!(err.message.contains("EdDSA"), "says what is allowed: {err}");
    }
}
