//! The typed configuration: read from an optional TOML file, overridden by
//! `GATEHOUSE_<KEY>` environment variables, validated once at start-up.
//!
//! Every key of API.md's table is parsed and checked here, including keys whose
//! features are served by later parts of the server, so a typo or a bad value
//! stops the process with one line naming the key instead of surfacing later.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;
use serde::Deserialize as _;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Open,
    Closed,
}

/// The JWS algorithm that access tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    EdDsa,
    Es256,
    Rs256,
    Hs256,
}

/// What a node does with session cookies while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationFailMode {
    Closed,
    Stale,
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
    fn default() -> Self {
        Self {
            // Half the common 1,024 open files, leaving the rest to the
            // database pool, Redis and the process itself.
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            request_body_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
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
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    pub redis_url: Option<SecretUrl>,
    /// Without a trailing slash. `None` means "`http://` + the bound address".
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub registration: Registration,
    pub cookie_secure: bool,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    /// Most live sessions one user may have; a new one ends the oldest.
    pub max_sessions_per_user: u32,
    pub access_token_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub jwt_alg: JwtAlg,
    pub jwt_hs256_secret: Option<SecretBytes>,
    pub signing_key_file: Option<PathBuf>,
    pub jwt_leeway: Duration,
    pub login_max_failures: u32,
    pub login_window: Duration,
    /// Failed password checks from one client network (an IPv4 address, an
    /// IPv6 /64), over every account, within `login_window`: what stops
    /// password spraying.
    pub login_max_failures_per_ip: u32,
    /// Failed password checks of one account, from every client, within
    /// `login_window`: what stops guessing from many addresses.
    pub login_max_failures_per_account: u32,
    /// Registration attempts (created or not) from one client network
    /// within `registration_window`.
    pub registration_max_per_ip: u32,
    pub registration_window: Duration,
    /// Serialized origins (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub connections: ConnectionLimits,
    pub trusted_proxies: Vec<IpNet>,
    pub key_encryption_key: Option<SecretBytes>,
    pub redis_key_prefix: String,
    pub revocation_fail_mode: RevocationFailMode,
    /// With `redis_url`: how long this node may go without proof (a
    /// heartbeat answered on its revocation feed) that it knows every
    /// revocation, before `revocation_fail_mode` applies.
    pub revocation_max_staleness: Duration,
    /// With `redis_url`: how long a session record read from Redis answers
    /// this node's requests (0 reads Redis on every request).
    pub session_cache_ttl: Duration,
    /// How long audit events are kept; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    /// When set, `GET /metrics` needs `Authorization: Bearer` with it.
    pub metrics_token: Option<SecretBytes>,
    pub rules: Vec<AccessRule>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DatabaseUrl::Sqlite("sqlite://gatehouse.db".into()),
            redis_url: None,
            issuer: None,
            audience: None,
            registration: Registration::Open,
            cookie_secure: true,
            session_idle_timeout: Duration::from_secs(24 * 3600),
            session_absolute_timeout: Duration::from_secs(7 * 24 * 3600),
            max_sessions_per_user: 100,
            access_token_ttl: Duration::from_secs(5 * 60),
            refresh_reuse_grace: Duration::ZERO,
            jwt_alg: JwtAlg::EdDsa,
            jwt_hs256_secret: None,
            signing_key_file: None,
            jwt_leeway: Duration::from_secs(30),
            login_max_failures: 5,
            login_window: Duration::from_secs(15 * 60),
            login_max_failures_per_ip: 50,
            login_max_failures_per_account: 50,
            registration_max_per_ip: 50,
            registration_window: Duration::from_secs(3600),
            allowed_origins: Vec::new(),
            tls: None,
            connections: ConnectionLimits::default(),
            trusted_proxies: Vec::new(),
            key_encryption_key: None,
            redis_key_prefix: "gatehouse:".into(),
            revocation_fail_mode: RevocationFailMode::Closed,
            revocation_max_staleness: Duration::from_secs(5),
            session_cache_ttl: Duration::from_secs(10),
            audit_retention: Some(Duration::from_secs(90 * 24 * 3600)),
            metrics_token: None,
            rules: Vec::new(),
        }
    }
}

/// Every key a file or the environment may set. `rules` is file-only.
const KEYS: &[&str] = &[
    "listen",
    "database_url",
    "redis_url",
    "issuer",
    "audience",
    "registration",
    "cookie_secure",
    "session_idle_timeout",
    "session_absolute_timeout",
    "max_sessions_per_user",
    "access_token_ttl",
    "refresh_reuse_grace",
    "jwt_alg",
    "jwt_hs256_secret",
    "signing_key_file",
    "jwt_leeway",
    "login_max_failures",
    "login_window",
    "login_max_failures_per_ip",
    "login_max_failures_per_account",
    "registration_max_per_ip",
    "registration_window",
    "allowed_origins",
    "tls_cert",
    "tls_key",
    "max_connections",
    "header_read_timeout",
    "keep_alive_timeout",
    "request_body_timeout",
    "shutdown_timeout",
    "trusted_proxies",
    "key_encryption_key",
    "redis_key_prefix",
    "revocation_fail_mode",
    "revocation_max_staleness",
    "session_cache_ttl",
    "audit_retention",
    "metrics_token",
    "rules",
];

/// The highest count a throttling budget other than `login_max_failures`
/// may allow.
const MAX_LIMIT: u32 = 1_000_000;

/// The highest `max_sessions_per_user`: every login reads the user's
/// sessions to enforce it, so it bounds that read too.
const MAX_SESSIONS_PER_USER: i64 = 10_000;

/// Longest configuration file we read; anything bigger is a mistake.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A raw value before typing: from the TOML file or from the environment.
enum Raw {
    Toml(toml::Value),
    Env(String),
}

/// The merged raw values, consumed key by key as they are typed.
struct Source(BTreeMap<String, Raw>);

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
        let mut raw = BTreeMap::new();
        if let Some(path) = file {
            for (key, value) in read_toml(path)? {
                if !KEYS.contains(&key.as_str()) {
                    return Err(ConfigError::new(key, "unknown configuration key"));
                }
                raw.insert(key, Raw::Toml(value));
            }
        }
        for (name, value) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = suffix.to_ascii_lowercase();
            if key == "rules" {
                return Err(ConfigError::new(
                    name,
                    "access rules can only be set in the configuration file",
                ));
            }
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::new(name, "unknown configuration variable"));
            }
            raw.insert(key, Raw::Env(value));
        }
        Source(raw).into_config()
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

impl Source {
    fn take(&mut self, key: &str) -> Option<Raw> {
        self.0.remove(key)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Raw::Env(s)) => Ok(Some(s)),
            Some(Raw::Toml(toml::Value::String(s))) => Ok(Some(s)),
            Some(Raw::Toml(other)) => Err(ConfigError::new(
                key,
                format!("expected a string, found a {}", other.type_str()),
            )),
        }
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.string(key)?
            .map(|s| parse(s.trim()).map_err(|m| ConfigError::new(key, m)))
            .transpose()
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.parsed(key, |s| {
            humantime::parse_duration(s)
                .map_err(|e| format!("{s:?} is not a duration such as \"90s\" or \"15m\" ({e})"))
        })
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Raw::Toml(toml::Value::Boolean(b))) => Ok(Some(b)),
            Some(Raw::Env(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(ConfigError::new(key, format!("{s:?} is not true or false"))),
            },
            Some(Raw::Toml(other)) => Err(ConfigError::new(
                key,
                format!("expected true or false, found a {}", other.type_str()),
            )),
        }
    }

    fn integer(&mut self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Raw::Toml(toml::Value::Integer(i))) => Ok(Some(i)),
            Some(Raw::Env(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::new(key, format!("{s:?} is not an integer"))),
            Some(Raw::Toml(other)) => Err(ConfigError::new(
                key,
                format!("expected an integer, found a {}", other.type_str()),
            )),
        }
    }

    /// A count of attempts a throttling budget allows: 1 to [`MAX_LIMIT`].
    fn limit(&mut self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.integer(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    ConfigError::new(key, format!("{n} is not between 1 and {MAX_LIMIT}"))
                }),
        }
    }

    /// A list: a TOML array of strings, or a comma-separated variable.
    fn list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Raw::Env(s)) => Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            )),
            Some(Raw::Toml(toml::Value::Array(items))) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Err(ConfigError::new(
                        key,
                        format!("expected strings in the list, found a {}", other.type_str()),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Raw::Toml(other)) => Err(ConfigError::new(
                key,
                format!("expected a list of strings, found a {}", other.type_str()),
            )),
        }
    }

    fn into_config(mut self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let listen = self
            .parsed("listen", |s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:8080"))
            })?
            .unwrap_or(d.listen);
        let database_url = self
            .parsed("database_url", parse_database_url)?
            .unwrap_or(d.database_url);
        let redis_url = self.parsed("redis_url", |s| {
            let u = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
            match u.scheme() {
                "redis" | "rediss" => Ok(SecretUrl::new(s)),
                _ => Err("must start with redis:// or rediss://".into()),
            }
        })?;
        let issuer = self.parsed("issuer", parse_issuer)?;
        let audience = self.parsed("audience", |s| {
            if s.is_empty() || s.len() > 512 {
                Err("must be 1 to 512 characters".into())
            } else {
                Ok(s.to_owned())
            }
        })?;
        let registration = self
            .parsed("registration", |s| match s {
                "open" => Ok(Registration::Open),
                "closed" => Ok(Registration::Closed),
                _ => Err(format!("{s:?} is not \"open\" or \"closed\"")),
            })?
            .unwrap_or(d.registration);
        let cookie_secure = self.boolean("cookie_secure")?.unwrap_or(d.cookie_secure);

        let session_idle_timeout = at_least_a_second(
            "session_idle_timeout",
            self.duration("session_idle_timeout")?,
            d.session_idle_timeout,
        )?;
        let session_absolute_timeout = at_least_a_second(
            "session_absolute_timeout",
            self.duration("session_absolute_timeout")?,
            d.session_absolute_timeout,
        )?;
        let max_sessions_per_user = match self.integer("max_sessions_per_user")? {
            None => d.max_sessions_per_user,
            Some(n @ 1..=MAX_SESSIONS_PER_USER) => {
                u32::try_from(n).unwrap_or(d.max_sessions_per_user)
            }
            Some(n) => {
                return Err(ConfigError::new(
                    "max_sessions_per_user",
                    format!("{n} is not between 1 and {MAX_SESSIONS_PER_USER}"),
                ));
            }
        };
        let access_token_ttl = at_least_a_second(
            "access_token_ttl",
            self.duration("access_token_ttl")?,
            d.access_token_ttl,
        )?;
        if access_token_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                "access_token_ttl",
                "must be at most 24h: access tokens are meant to be short-lived",
            ));
        }
        let refresh_reuse_grace = self
            .duration("refresh_reuse_grace")?
            .unwrap_or(d.refresh_reuse_grace);
        if refresh_reuse_grace > Duration::from_secs(300) {
            return Err(ConfigError::new(
                "refresh_reuse_grace",
                "must be at most 5m",
            ));
        }

        let jwt_alg = self
            .parsed("jwt_alg", |s| match s {
                "EdDSA" => Ok(JwtAlg::EdDsa),
                "ES256" => Ok(JwtAlg::Es256),
                "RS256" => Ok(JwtAlg::Rs256),
                "HS256" => Ok(JwtAlg::Hs256),
                _ => Err(format!("{s:?} is not one of EdDSA, ES256, RS256, HS256")),
            })?
            .unwrap_or(d.jwt_alg);
        let jwt_hs256_secret = self.parsed("jwt_hs256_secret", |s| {
            let bytes = decode_base64(s)?;
            if bytes.len() < 32 {
                return Err(format!(
                    "must be at least 32 bytes once decoded, found {}",
                    bytes.len()
                ));
            }
            Ok(SecretBytes(bytes))
        })?;
        match (jwt_alg, &jwt_hs256_secret) {
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
        let signing_key_file = self.parsed("signing_key_file", readable_file)?;
        if signing_key_file.is_some() && jwt_alg == JwtAlg::Hs256 {
            return Err(ConfigError::new(
                "signing_key_file",
                "not used with jwt_alg = \"HS256\" (the shared secret signs)",
            ));
        }
        let jwt_leeway = self.duration("jwt_leeway")?.unwrap_or(d.jwt_leeway);
        if jwt_leeway > Duration::from_secs(30) {
            return Err(ConfigError::new("jwt_leeway", "must be between 0s and 30s"));
        }

        let login_max_failures = match self.integer("login_max_failures")? {
            None => d.login_max_failures,
            Some(n @ 1..=1000) => u32::try_from(n).unwrap_or(d.login_max_failures),
            Some(n) => {
                return Err(ConfigError::new(
                    "login_max_failures",
                    format!("{n} is not between 1 and 1000"),
                ));
            }
        };
        let login_window = at_least_a_second(
            "login_window",
            self.duration("login_window")?,
            d.login_window,
        )?;
        // The wider budgets must leave the (account, IP) one its meaning: an
        // unset one is raised to it, a set one below it is an error.
        let wider_budget = |key: &str, value: Option<u32>, default: u32| match value {
            None => Ok(default.max(login_max_failures)),
            Some(n) if n >= login_max_failures => Ok(n),
            Some(n) => Err(ConfigError::new(
                key,
                format!("{n} is below login_max_failures ({login_max_failures})"),
            )),
        };
        let login_max_failures_per_ip = wider_budget(
            "login_max_failures_per_ip",
            self.limit("login_max_failures_per_ip")?,
            d.login_max_failures_per_ip,
        )?;
        let login_max_failures_per_account = wider_budget(
            "login_max_failures_per_account",
            self.limit("login_max_failures_per_account")?,
            d.login_max_failures_per_account,
        )?;
        let registration_max_per_ip = self
            .limit("registration_max_per_ip")?
            .unwrap_or(d.registration_max_per_ip);
        let registration_window = at_least_a_second(
            "registration_window",
            self.duration("registration_window")?,
            d.registration_window,
        )?;

        let allowed_origins = self
            .list("allowed_origins")?
            .unwrap_or_default()
            .iter()
            .map(|o| parse_origin(o).map_err(|m| ConfigError::new("allowed_origins", m)))
            .collect::<Result<Vec<_>, _>>()?;

        let tls_cert = self.parsed("tls_cert", readable_file)?;
        let tls_key = self.parsed("tls_key", readable_file)?;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::new("tls_key", "required with tls_cert")),
            (None, Some(_)) => return Err(ConfigError::new("tls_cert", "required with tls_key")),
        };
        let connections = self.connection_limits(d.connections)?;

        let trusted_proxies = self
            .list("trusted_proxies")?
            .unwrap_or_default()
            .iter()
            .map(|p| parse_net(p).map_err(|m| ConfigError::new("trusted_proxies", m)))
            .collect::<Result<Vec<_>, _>>()?;

        let key_encryption_key = self.parsed("key_encryption_key", |s| {
            let bytes = decode_base64(s)?;
            if bytes.len() != 32 {
                return Err(format!(
                    "must be exactly 32 bytes once decoded, found {}",
                    bytes.len()
                ));
            }
            Ok(SecretBytes(bytes))
        })?;
        let redis_key_prefix = self
            .parsed("redis_key_prefix", |s| {
                if s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    Err("must be at most 64 characters without spaces".into())
                } else {
                    Ok(s.to_owned())
                }
            })?
            .unwrap_or(d.redis_key_prefix);
        let revocation_fail_mode = self
            .parsed("revocation_fail_mode", |s| match s {
                "closed" => Ok(RevocationFailMode::Closed),
                "stale" => Ok(RevocationFailMode::Stale),
                _ => Err(format!("{s:?} is not \"closed\" or \"stale\"")),
            })?
            .unwrap_or(d.revocation_fail_mode);
        let revocation_max_staleness = self
            .duration("revocation_max_staleness")?
            .unwrap_or(d.revocation_max_staleness);
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&revocation_max_staleness)
        {
            return Err(ConfigError::new(
                "revocation_max_staleness",
                "must be between 1s and 1h",
            ));
        }
        let session_cache_ttl = self
            .duration("session_cache_ttl")?
            .unwrap_or(d.session_cache_ttl);
        if session_cache_ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "session_cache_ttl",
                "must be at most 1m: a cached session is trusted this long without asking Redis",
            ));
        }
        // 0s keeps the trail forever.
        let audit_retention = match self.duration("audit_retention")? {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => d.audit_retention,
        };
        let metrics_token = self.parsed("metrics_token", |s| {
            if s.len() < 32 || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("must be 32 to 256 printable ASCII characters without spaces".into());
            }
            Ok(SecretBytes(s.as_bytes().to_vec()))
        })?;
        let rules = match self.take("rules") {
            None => Vec::new(),
            Some(Raw::Toml(toml::Value::Array(items))) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_rule(v).map_err(|m| ConfigError::new(format!("rules[{i}]"), m)))
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::new(
                    "rules",
                    "expected [[rules]] tables in the configuration file",
                ));
            }
        };

        Ok(Config {
            listen,
            database_url,
            redis_url,
            issuer,
            audience,
            registration,
            cookie_secure,
            session_idle_timeout,
            session_absolute_timeout,
            max_sessions_per_user,
            access_token_ttl,
            refresh_reuse_grace,
            jwt_alg,
            jwt_hs256_secret,
            signing_key_file,
            jwt_leeway,
            login_max_failures,
            login_window,
            login_max_failures_per_ip,
            login_max_failures_per_account,
            registration_max_per_ip,
            registration_window,
            allowed_origins,
            tls,
            connections,
            trusted_proxies,
            key_encryption_key,
            redis_key_prefix,
            revocation_fail_mode,
            revocation_max_staleness,
            session_cache_ttl,
            audit_retention,
            metrics_token,
            rules,
        })
    }
}

impl Source {
    fn connection_limits(&mut self, d: ConnectionLimits) -> Result<ConnectionLimits, ConfigError> {
        let max_connections = match self.integer("max_connections")? {
            None => d.max_connections,
            Some(n @ 1..=1_000_000) => usize::try_from(n).unwrap_or(d.max_connections),
            Some(n) => {
                return Err(ConfigError::new(
                    "max_connections",
                    format!("{n} is not between 1 and 1000000"),
                ));
            }
        };
        // The upper bounds catch a unit typed wrong ("10h" for "10s"): such
        // a wait would let slow clients hold connections, or a shutdown hang.
        let mut timeout = |key: &str, default: Duration, max: Duration, max_text: &str| {
            let value = at_least_a_second(key, self.duration(key)?, default)?;
            if value > max {
                return Err(ConfigError::new(key, format!("must be at most {max_text}")));
            }
            Ok(value)
        };
        Ok(ConnectionLimits {
            max_connections,
            header_read_timeout: timeout(
                "header_read_timeout",
                d.header_read_timeout,
                Duration::from_secs(300),
                "5m",
            )?,
            keep_alive_timeout: timeout(
                "keep_alive_timeout",
                d.keep_alive_timeout,
                Duration::from_secs(3600),
                "1h",
            )?,
            request_body_timeout: timeout(
                "request_body_timeout",
                d.request_body_timeout,
                Duration::from_secs(3600),
                "1h",
            )?,
            shutdown_timeout: timeout(
                "shutdown_timeout",
                d.shutdown_timeout,
                Duration::from_secs(3600),
                "1h",
            )?,
        })
    }
}

fn at_least_a_second(
    key: &str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v >= Duration::from_secs(1) => Ok(v),
        Some(_) => Err(ConfigError::new(key, "must be at least 1s")),
    }
}

fn parse_database_url(s: &str) -> Result<DatabaseUrl, String> {
    if let Some(path) = s.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or_default();
        if file.is_empty() || file == ":memory:" {
            return Err(
                "sqlite:// needs a file path (an in-memory database would lose every session)"
                    .into(),
            );
        }
        Ok(DatabaseUrl::Sqlite(s.to_owned()))
    } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
        Ok(DatabaseUrl::Postgres(SecretUrl::new(s)))
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

fn parse_issuer(s: &str) -> Result<String, String> {
    let u = Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err("must be an http:// or https:// URL".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_origin(s: &str) -> Result<String, String> {
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

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR"))
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
        .map_err(|_| "is not valid base64".into())
}

fn readable_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(_) => Err(format!("{s} is not a file")),
        Err(e) => Err(format!("cannot read {s}: {e}")),
    }
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
}

fn parse_rule(v: toml::Value) -> Result<AccessRule, String> {
    let RuleEntry {
        path,
        methods,
        policy,
        permission,
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
    Ok(AccessRule {
        path,
        methods,
        policy,
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
}
