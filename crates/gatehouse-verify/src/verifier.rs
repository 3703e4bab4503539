//! The [`Verifier`] and its [`VerifierBuilder`]: configuration, the order of
//! the checks, and the life of the revocation feed task.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::claims::Claims;
use crate::error::{BuildError, VerifyError};
use crate::keys::{JwksSource, KeyCache};
use crate::revocation::{self, Feed, FeedKey, RevocationStatus, Revocations};
use crate::token::{self, Algorithm, ClaimRules};
use crate::{net, token::parse_uuid};

/// The injectable clock: wall-clock time, as the token's claims count it.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The default leeway on `exp`, `nbf` and `iat`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest leeway accepted.
const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);
/// The default longest token lifetime (`exp - iat`): gatehouse's default
/// `access_token_ttl` (5 minutes) plus its default `jwt_leeway` (30 s).
const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60 + 30);
/// The default least time between two refetches an unknown `kid` triggers.
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// The long poll's `wait` (the contract allows 0..=30).
const FEED_WAIT_SECS: u64 = 25;
/// The shortest staleness bound: the feed must be able to answer in time.
const MIN_STALENESS: Duration = Duration::from_secs(2);
/// The algorithms accepted unless told otherwise.
const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];
/// RFC 7518 §3.2: an HS256 key of at least 256 bits.
const MIN_HS256_SECRET: usize = 32;

/// Seconds since the Unix epoch, floored (negative before 1970), as the
/// server's clock reads.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let floor = i64::from(d.subsec_nanos() > 0);
            secs.saturating_neg().saturating_sub(floor)
        }
    }
}

/// Verifies gatehouse access tokens locally: the issuer's keys are fetched
/// from its JWKS and cached, every claim is checked as the server checks it,
/// and, with a revocation feed, ended sessions are refused.
///
/// Cheap to clone (an `Arc` inside); share one per issuer across the whole
/// process. The feed task, if any, stops when the last clone is dropped.
///
/// # Revocation and staleness
/// Without a feed, a token stays valid until it expires even if its session
/// ends (at most `access_token_ttl`, 5 minutes by default). With a feed, an
/// ending reaches this verifier within the server's fan-out time while the
/// feed is healthy; while gatehouse is unreachable, sessions ended meanwhile
/// stay accepted until their tokens expire, unless
/// [`VerifierBuilder::revocation_max_staleness`] makes the verifier refuse
/// ([`VerifyError::RevocationsStale`]) once it has not synchronised for that
/// long.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    rules: ClaimRules,
    algorithms: Vec<Algorithm>,
    keys: Arc<KeyCache>,
    revocations: Arc<Revocations>,
    feed: Option<FeedHandle>,
    clock: Clock,
}

struct FeedHandle {
    task: tokio::task::AbortHandle,
    max_staleness: Option<Duration>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(feed) = &self.feed {
            feed.task.abort();
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Verifier")
            .field("issuer", &inner.rules.issuer)
            .field("audience", &inner.rules.audience)
            .field("leeway_secs", &inner.rules.leeway)
            .field("max_token_lifetime_secs", &inner.rules.max_lifetime)
            .field("algorithms", &inner.algorithms)
            .field("keys", &inner.keys)
            .field("revocation_feed", &inner.feed.is_some())
            .field(
                "revocation_max_staleness",
                &inner.feed.as_ref().and_then(|f| f.max_staleness),
            )
            .finish()
    }
}

impl Verifier {
    /// Starts configuring a verifier for tokens of `issuer` (the exact `iss`
    /// gatehouse puts in its tokens, e.g. `https://auth.example.com`).
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder::new(issuer.into())
    }

    /// Verifies an access token (the bearer token of a request, without the
    /// `Bearer ` prefix) and returns its claims.
    ///
    /// Costs a signature check and two hash lookups when the keys are cached
    /// and fresh; fetches the JWKS first when the token names a key not seen
    /// yet (at most once per refetch interval, shared by concurrent callers).
    ///
    /// # Errors
    /// The first rule the token breaks, in the server's order; or
    /// [`VerifyError::KeysUnavailable`] / [`VerifyError::RevocationsStale`]
    /// when this process cannot judge it now (answer those with 503).
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let verdict = self.check(token).await;
        if let Err(e) = &verdict {
            // The code only: a token is a credential and never goes to a log.
            tracing::debug!(reason = e.code(), "access token refused");
        }
        verdict
    }

    async fn check(&self, token: &str) -> Result<Claims, VerifyError> {
        let inner = &self.inner;
        let header = token::check_header(token, &inner.algorithms)?;
        let key = inner
            .keys
            .key_for(header.kid.as_deref(), header.alg)
            .await?;
        let payload = token::verify_signature(token, header.alg, &key.key)?;
        let now = (inner.clock)();
        let (claims, sid) = token::check_claims(&payload, &inner.rules, unix_secs(now))?;
        if inner.revocations.is_revoked(sid) {
            return Err(VerifyError::Revoked);
        }
        if let Some(bound) = inner.feed.as_ref().and_then(|f| f.max_staleness)
            && inner.revocations.is_stale(now, bound)
        {
            return Err(VerifyError::RevocationsStale);
        }
        Ok(claims)
    }

    /// Fetches the issuer's JWKS now (ignoring the refetch interval), for
    /// instance at start-up so the first request does not wait for it. A
    /// verifier that accepts only HS256 has nothing to fetch.
    ///
    /// # Errors
    /// [`VerifyError::KeysUnavailable`] when the fetch fails; the keys cached
    /// before stay in use.
    pub async fn refresh_keys(&self) -> Result<(), VerifyError> {
        self.inner.keys.refresh().await.map(|_| ())
    }

    /// The state of the revocation feed; `None` when none is configured.
    #[must_use]
    pub fn revocation_status(&self) -> Option<RevocationStatus> {
        self.inner
            .feed
            .as_ref()
            .map(|_| self.inner.revocations.status())
    }

    /// The issuer whose tokens this verifier accepts.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.rules.issuer
    }

    /// The audience a token must name.
    #[must_use]
    pub fn audience(&self) -> &str {
        &self.inner.rules.audience
    }

    /// Installs a JWKS given as bytes, fresh for a day, as if fetched: for
    /// tests and benchmarks that must not do I/O. Returns how many keys were
    /// usable.
    ///
    /// # Errors
    /// [`VerifyError::KeysUnavailable`] when the bytes are not a JWKS.
    #[doc(hidden)]
    pub fn preload_jwks(&self, jwks: &[u8]) -> Result<usize, VerifyError> {
        self.inner
            .keys
            .preload(jwks, Duration::from_secs(24 * 60 * 60))
    }

    /// Adds ended sessions as if the feed had sent them: for tests and
    /// benchmarks. Entries whose sid is not a UUID are skipped; returns how
    /// many were added.
    #[doc(hidden)]
    pub fn preload_revocations<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, SystemTime)>,
    ) -> usize {
        let parsed: Vec<(u128, i64)> = entries
            .into_iter()
            .filter_map(|(sid, until)| parse_uuid(sid, true).map(|s| (s, unix_secs(until))))
            .collect();
        let n = parsed.len();
        self.inner.revocations.insert(parsed);
        n
    }
}

/// A secret kept out of `Debug`.
#[derive(Clone)]
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Configures a [`Verifier`]; see each method for its default.
#[must_use]
pub struct VerifierBuilder {
    issuer: String,
    audience: Option<String>,
    leeway: Duration,
    max_token_lifetime: Duration,
    algorithms: Option<Vec<Algorithm>>,
    hs256_secret: Option<Secret>,
    jwks_url: Option<String>,
    refetch_interval: Duration,
    http_client: Option<reqwest::Client>,
    feed_key: Option<FeedKey>,
    max_staleness: Option<Duration>,
    clock: Option<Clock>,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("algorithms", &self.algorithms)
            .field("hs256_secret", &self.hs256_secret)
            .field("jwks_url", &self.jwks_url)
            .field("refetch_interval", &self.refetch_interval)
            .field("http_client", &self.http_client.is_some())
            .field("revocation_feed", &self.feed_key)
            .field("revocation_max_staleness", &self.max_staleness)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl VerifierBuilder {
    fn new(issuer: String) -> Self {
        Self {
            issuer,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            algorithms: None,
            hs256_secret: None,
            jwks_url: None,
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            http_client: None,
            feed_key: None,
            max_staleness: None,
            clock: None,
        }
    }

    /// The `aud` a token must name. Default: the issuer (gatehouse's own
    /// default audience).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat`, counted in whole
    /// seconds; default 30 s, at most 5 minutes.
    pub fn leeway(mut self, d: Duration) -> Self {
        self.leeway = d;
        self
    }

    /// The longest lifetime (`exp - iat`) a token may claim: gatehouse's
    /// `access_token_ttl` plus its `jwt_leeway`, which no token it issues
    /// exceeds; a longer one was not minted by its rules, whoever holds the
    /// key. Default 5 min 30 s (gatehouse's defaults, 5 min + 30 s); set it
    /// when your gatehouse's ttl or leeway differ. Counted in whole seconds
    /// (a fraction is dropped); at least 1 s. A token without `iat` is
    /// refused (`malformed`) whatever this says.
    pub fn max_token_lifetime(mut self, d: Duration) -> Self {
        self.max_token_lifetime = d;
        self
    }

    /// The algorithms a token may be signed with. Default: `EdDSA`, `ES256`,
    /// `RS256`. Name the one your gatehouse is configured with to refuse the
    /// others outright.
    pub fn algorithms(mut self, algs: &[Algorithm]) -> Self {
        self.algorithms = Some(algs.to_vec());
        self
    }

    /// Accepts HS256 tokens under this shared secret (gatehouse's
    /// `jwt_hs256_secret`, decoded), adding HS256 to the algorithms. Only
    /// the kid gatehouse derives from the secret is accepted. At least 32
    /// bytes.
    pub fn hs256_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.hs256_secret = Some(Secret(secret.into()));
        self
    }

    /// Where the keys are published. Default:
    /// `{issuer}/.well-known/jwks.json`.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// The least time between two JWKS fetches that unknown `kid`s or expired
    /// keys trigger (a flood of made-up kids costs gatehouse one request per
    /// interval). Default 10 s; at least 1 s.
    pub fn refetch_interval(mut self, d: Duration) -> Self {
        self.refetch_interval = d;
        self
    }

    /// The HTTP client for the JWKS and the feed. Default: one with a 5 s
    /// connect timeout, a 10 s total timeout and no redirects. Per-request
    /// timeouts (10 s for the JWKS, the long poll's wait plus 10 s for the
    /// feed) apply to a given client too.
    pub fn http_client(mut self, c: reqwest::Client) -> Self {
        self.http_client = Some(c);
        self
    }

    /// Follows `{issuer}/v1/revocations` with this resource-server key (an
    /// admin creates it; it starts `ghrs_`), so that ended sessions are
    /// refused before their tokens expire. The key never appears in logs or
    /// in `Debug`.
    pub fn revocation_feed(mut self, key: impl Into<String>) -> Self {
        self.feed_key = Some(FeedKey(key.into()));
        self
    }

    /// Fails closed when the feed has not synchronised within `d` (or ever):
    /// `verify` then returns [`VerifyError::RevocationsStale`] instead of
    /// accepting a token whose session may have ended unseen. Needs
    /// [`revocation_feed`](Self::revocation_feed); at least 2 s. The long
    /// poll's `wait` becomes at most half of `d`, so that a healthy feed
    /// always answers in time.
    pub fn revocation_max_staleness(mut self, d: Duration) -> Self {
        self.max_staleness = Some(d);
        self
    }

    /// The clock tokens and caches are judged by (for tests). Default:
    /// `SystemTime::now`.
    pub fn clock(mut self, now: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        self.clock = Some(now);
        self
    }

    /// Checks the configuration and builds the verifier. Fetches nothing:
    /// keys are fetched on first use or by [`Verifier::refresh_keys`]. With a
    /// revocation feed, spawns its task on the current Tokio runtime.
    ///
    /// # Errors
    /// A [`BuildError`] naming the first setting that cannot work: an empty
    /// issuer or audience, a leeway over 5 minutes, a maximum token lifetime
    /// under 1 s, a refetch interval under 1 s, no algorithm, HS256 without a secret of at least 32 bytes, a URL
    /// that is not absolute http(s), an unusable feed key or staleness bound,
    /// a feed outside a Tokio runtime, or an HTTP client that cannot be built.
    pub fn build(self) -> Result<Verifier, BuildError> {
        if self.issuer.is_empty() {
            return Err(BuildError::EmptyIssuer);
        }
        let audience = self.audience.unwrap_or_else(|| self.issuer.clone());
        if audience.is_empty() {
            return Err(BuildError::EmptyAudience);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(BuildError::LeewayTooLarge);
        }
        if self.max_token_lifetime < Duration::from_secs(1) {
            return Err(BuildError::MaxTokenLifetimeTooShort);
        }
        if self.refetch_interval < Duration::from_secs(1) {
            return Err(BuildError::RefetchIntervalTooShort);
        }
        let mut algorithms = self
            .algorithms
            .unwrap_or_else(|| DEFAULT_ALGORITHMS.to_vec());
        if self.hs256_secret.is_some() {
            algorithms.push(Algorithm::HS256);
        }
        let mut unique = Vec::with_capacity(algorithms.len());
        for alg in algorithms {
            if !unique.contains(&alg) {
                unique.push(alg);
            }
        }
        let algorithms = unique;
        if algorithms.is_empty() {
            return Err(BuildError::NoAlgorithms);
        }
        match &self.hs256_secret {
            Some(s) if s.0.len() < MIN_HS256_SECRET => return Err(BuildError::WeakHs256Secret),
            None if algorithms.contains(&Algorithm::HS256) => {
                return Err(BuildError::MissingHs256Secret);
            }
            _ => {}
        }
        let base = self.issuer.trim_end_matches('/');
        let jwks_algorithms: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| *a != Algorithm::HS256)
            .collect();
        let needs_http = !jwks_algorithms.is_empty() || self.feed_key.is_some();
        let client = match (self.http_client, needs_http) {
            (Some(c), _) => Some(c),
            (None, true) => Some(net::default_client()?),
            (None, false) => None,
        };
        let source = match (&client, jwks_algorithms.is_empty()) {
            (Some(client), false) => {
                let url = self
                    .jwks_url
                    .clone()
                    .unwrap_or_else(|| format!("{base}/.well-known/jwks.json"));
                Some(JwksSource {
                    client: client.clone(),
                    url: http_url(&url, "jwks_url")?,
                })
            }
            _ => None,
        };
        let clock: Clock = self.clock.unwrap_or_else(|| Arc::new(SystemTime::now));
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(0);
        let revocations = Arc::new(Revocations::new(leeway));

        let feed = match (self.feed_key, client) {
            (Some(key), Some(client)) => {
                let bound = self.max_staleness;
                if bound.is_some_and(|d| d < MIN_STALENESS) {
                    return Err(BuildError::InvalidStaleness);
                }
                if key.0.is_empty() {
                    return Err(BuildError::InvalidFeedKey);
                }
                let mut authorization = http::HeaderValue::from_str(&format!("Bearer {}", key.0))
                    .map_err(|_| BuildError::InvalidFeedKey)?;
                authorization.set_sensitive(true);
                let wait = bound.map_or(FEED_WAIT_SECS, |d| {
                    (d.as_secs() / 2).clamp(1, FEED_WAIT_SECS)
                });
                let feed = Feed {
                    client,
                    url: http_url(&format!("{base}/v1/revocations"), "revocation feed URL")?,
                    authorization,
                    wait,
                    clock: Arc::clone(&clock),
                };
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                let task = runtime
                    .spawn(revocation::run(feed, Arc::clone(&revocations)))
                    .abort_handle();
                Some(FeedHandle {
                    task,
                    max_staleness: bound,
                })
            }
            (None, _) if self.max_staleness.is_some() => {
                return Err(BuildError::InvalidStaleness);
            }
            _ => None,
        };
        if let Some(source) = &source {
            warn_if_plain_http(&source.url);
        }
        let keys = Arc::new(KeyCache::new(
            source,
            jwks_algorithms,
            self.hs256_secret.as_ref().map(|s| s.0.as_slice()),
            self.refetch_interval,
            Arc::clone(&clock),
        ));
        Ok(Verifier {
            inner: Arc::new(Inner {
                rules: ClaimRules {
                    issuer: self.issuer,
                    audience,
                    leeway,
                    max_lifetime: i64::try_from(self.max_token_lifetime.as_secs())
                        .unwrap_or(i64::MAX),
                },
                algorithms,
                keys,
                revocations,
                feed,
                clock,
            }),
        })
    }
}

fn http_url(url: &str, what: &'static str) -> Result<reqwest::Url, BuildError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| BuildError::InvalidUrl { what })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(BuildError::InvalidUrl { what });
    }
    Ok(parsed)
}

/// Keys fetched over plain HTTP from another machine can be swapped in
/// transit (RFC 8725 §3.10): allowed, for development, but said.
fn warn_if_plain_http(url: &reqwest::Url) {
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() == "http" && !loopback {
        tracing::warn!(url = %url, "the JWKS is fetched over plain HTTP; use https in production");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}

    #[test]
    fn a_verifier_and_its_futures_cross_threads() {
        let v = Verifier::builder("https://auth.example")
            .build()
            .expect("verifier");
        send_sync(&v);
        send(&v.verify("t"));
        send(&v.refresh_keys());
    }

    #[test]
    fn unix_seconds_floor_like_the_server() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(unix_secs(epoch + Duration::from_millis(1_999)), 1);
        assert_eq!(unix_secs(epoch - Duration::from_millis(1)), -1);
        assert_eq!(unix_secs(epoch - Duration::from_secs(2)), -2);
    }

    fn build_error(b: VerifierBuilder) -> BuildError {
        match b.build() {
            Ok(_) => panic!("expected a build error"),
            Err(e) => e,
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let b = || Verifier::builder("https://auth.example");
        assert_eq!(build_error(Verifier::builder("")), BuildError::EmptyIssuer);
        assert_eq!(build_error(b().audience("")), BuildError::EmptyAudience);
        assert_eq!(
            build_error(b().leeway(Duration::from_secs(301))),
            BuildError::LeewayTooLarge
        );
        assert_eq!(
            build_error(b().max_token_lifetime(Duration::from_millis(999))),
            BuildError::MaxTokenLifetimeTooShort
        );
        assert_eq!(
            build_error(b().refetch_interval(Duration::from_millis(999))),
            BuildError::RefetchIntervalTooShort
        );
        assert_eq!(build_error(b().algorithms(&[])), BuildError::NoAlgorithms);
        assert_eq!(
            build_error(b().algorithms(&[Algorithm::HS256])),
            BuildError::MissingHs256Secret
        );
        assert_eq!(
            build_error(b().hs256_secret([1u8; 31])),
            BuildError::WeakHs256Secret
        );
        assert_eq!(
            build_error(b().jwks_url("file:///etc/jwks.json")),
            BuildError::InvalidUrl { what: "jwks_url" }
        );
        assert_eq!(
            build_error(Verifier::builder("not a url")),
            BuildError::InvalidUrl { what: "jwks_url" }
        );
        assert_eq!(
            build_error(b().revocation_max_staleness(Duration::from_secs(60))),
            BuildError::InvalidStaleness
        );
        // Outside a runtime, a feed cannot start.
        assert_eq!(
            build_error(b().revocation_feed("ghrs_x")),
            BuildError::NoRuntime
        );
    }

    #[tokio::test]
    async fn feed_settings_are_checked() {
        let b = || Verifier::builder("https://auth.example");
        assert_eq!(
            build_error(b().revocation_feed("")),
            BuildError::InvalidFeedKey
        );
        assert_eq!(
            build_error(b().revocation_feed("ghrs_\nx")),
            BuildError::InvalidFeedKey
        );
        assert_eq!(
            build_error(
                b().revocation_feed("ghrs_x")
                    .revocation_max_staleness(Duration::from_secs(1))
            ),
            BuildError::InvalidStaleness
        );
    }

    #[test]
    fn hs256_only_needs_no_url_and_hs256_secret_adds_the_algorithm() {
        let v = Verifier::builder("urn:not-a-web-issuer")
            .algorithms(&[Algorithm::HS256])
            .hs256_secret([1u8; 32])
            .build()
            .expect("HS256 only");
        assert_eq!(v.inner.algorithms, [Algorithm::HS256]);
        assert_eq!(v.audience(), "urn:not-a-web-issuer");
        let v = Verifier::builder("https://auth.example")
            .algorithms(&[Algorithm::EdDSA])
            .hs256_secret([1u8; 32])
            .build()
            .expect("both");
        assert_eq!(v.inner.algorithms, [Algorithm::EdDSA, Algorithm::HS256]);
    }

    #[test]
    fn debug_output_redacts_the_secrets() {
        let b = Verifier::builder("https://auth.example")
            .hs256_secret(b"0123456789abcdef0123456789abcdef".to_vec())
            .revocation_feed("ghrs_topsecretkey");
        let text = format!("{b:?}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("48, 49, 50"), "{text}");
        assert!(text.contains("[redacted]"));
    }
}
