//! The issuer's verification keys: the JWKS fetch (RFC 7517), its parsing
//! (only access-token keys of an accepted algorithm and a matching type
//! survive: gatehouse marks its ID-token keys, which never sign an access
//! token, and they are left out), the
//! cache with its `Cache-Control` freshness, and the rate-limited,
//! single-flight refetch that an unknown `kid` or expired keys trigger.
//!
//! The hot path (a known `kid`, fresh keys) reads an `Arc<KeySet>` under a
//! `std::sync::RwLock` held only for the clone: no async lock, no I/O.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use serde::Deserialize;

use crate::error::VerifyError;
use crate::net::{self, BodyError};
use crate::token::Algorithm;
use crate::verifier::Clock;

/// Largest JWKS body accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Freshness bounds of a fetched key set.
pub(crate) const MIN_FRESHNESS: Duration = Duration::from_secs(10);
pub(crate) const MAX_FRESHNESS: Duration = Duration::from_secs(24 * 60 * 60);
pub(crate) const DEFAULT_FRESHNESS: Duration = Duration::from_secs(5 * 60);

/// RFC 7518 §3.3: RS256 keys of at least 2048 bits.
const MIN_RSA_BITS: usize = 2048;

/// The member in which gatehouse's JWKS names what a key signs: `access`
/// for access-token keys, `id_token` for the OpenID Connect ID-token keys
/// published beside them.
pub(crate) const PURPOSE_MEMBER: &str = "gatehouse_purpose";

/// The purpose of the keys that sign access tokens.
const ACCESS_PURPOSE: &str = "access";

/// One verification key, bound to the one algorithm it verifies (RFC 8725
/// §3.1): a token whose `alg` differs is refused before any crypto.
pub(crate) struct VerifyKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key material of an HS256 key is the shared secret: never print it.
        f.debug_struct("VerifyKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// An immutable snapshot of the issuer's keys, swapped whole on refetch.
#[derive(Debug)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
    /// Whether a JWKS was ever fetched (an empty set from the issuer is still
    /// an answer; no answer at all means `KeysUnavailable`).
    loaded: bool,
    fetched_at: SystemTime,
    expires_at: SystemTime,
}

impl KeySet {
    fn empty() -> Self {
        Self {
            keys: HashMap::new(),
            loaded: false,
            fetched_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Past its freshness, or the clock went back before the fetch (then
    /// nothing about its age can be trusted).
    fn is_stale(&self, now: SystemTime) -> bool {
        now >= self.expires_at || now < self.fetched_at
    }
}

/// The bookkeeping of refetches.
#[derive(Debug, Default)]
struct FetchMeta {
    /// When the last fetch (successful or not) started.
    last_attempt: Option<SystemTime>,
    in_flight: bool,
    /// Completed fetch attempts; lets a waiter see that the fetch it waited
    /// for has happened.
    generation: u64,
}

/// Where the JWKS comes from.
#[derive(Debug)]
pub(crate) struct JwksSource {
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
}

/// Why a fetch failed (for logs; callers see `KeysUnavailable` or keep their
/// cached keys).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("requesting the JWKS: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the JWKS endpoint answered {0}")]
    Status(http::StatusCode),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the JWKS is not a JSON object with a \"keys\" array")]
    NotJwks,
}

/// What a refetch did.
#[derive(Debug)]
enum Outcome {
    Fetched(Result<usize, FetchError>),
    /// Another caller's fetch finished while this one waited: use its result.
    Shared,
    /// The last attempt is younger than the refetch interval.
    RateLimited,
}

/// The key cache of one verifier.
pub(crate) struct KeyCache {
    set: RwLock<Arc<KeySet>>,
    meta: Mutex<FetchMeta>,
    /// Held for the duration of a fetch: concurrent callers queue here and
    /// share its result (single flight).
    flight: tokio::sync::Mutex<()>,
    /// Whether a background refresh task is already scheduled.
    refresh_scheduled: AtomicBool,
    /// `None` when no JWKS algorithm is accepted (HS256 only): nothing to fetch.
    source: Option<JwksSource>,
    /// JWKS algorithms accepted.
    accepted: Vec<Algorithm>,
    /// The HS256 key and its kid, when configured; never from a JWKS.
    hs256: Option<(String, Arc<VerifyKey>)>,
    refetch_interval: Duration,
    clock: Clock,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("source", &self.source.as_ref().map(|s| s.url.as_str()))
            .field("accepted", &self.accepted)
            .field("hs256_kid", &self.hs256.as_ref().map(|(kid, _)| kid))
            .field("refetch_interval", &self.refetch_interval)
            .finish_non_exhaustive()
    }
}

/// A guard that closes a fetch attempt even if the future running it is
/// dropped half-way (a cancelled request must not leave `in_flight` set).
struct InFlight<'a>(&'a Mutex<FetchMeta>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut meta = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        meta.in_flight = false;
        meta.generation = meta.generation.wrapping_add(1);
    }
}

/// The kid gatehouse gives its HS256 key: `hs256-` and the lower-case hex of
/// the first 8 bytes of SHA-256 of the secret, naming it without revealing it.
pub(crate) fn hs256_kid(secret: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    let hex: String = digest
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("hs256-{hex}")
}

impl KeyCache {
    pub(crate) fn new(
        source: Option<JwksSource>,
        accepted: Vec<Algorithm>,
        hs256_secret: Option<&[u8]>,
        refetch_interval: Duration,
        clock: Clock,
    ) -> Self {
        let hs256 = hs256_secret.map(|secret| {
            (
                hs256_kid(secret),
                Arc::new(VerifyKey {
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret),
                }),
            )
        });
        Self {
            set: RwLock::new(Arc::new(KeySet::empty())),
            meta: Mutex::new(FetchMeta::default()),
            flight: tokio::sync::Mutex::new(()),
            refresh_scheduled: AtomicBool::new(false),
            source,
            accepted,
            hs256,
            refetch_interval,
            clock,
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key `kid` names: the HS256 key, or one of the JWKS. The bool says
    /// whether it came from the JWKS.
    fn find(&self, set: &KeySet, kid: &str) -> Option<(Arc<VerifyKey>, bool)> {
        if let Some((hs_kid, key)) = &self.hs256
            && hs_kid == kid
        {
            return Some((Arc::clone(key), false));
        }
        set.keys.get(kid).map(|k| (Arc::clone(k), true))
    }

    /// Step 6: the key for a token's `kid` under its header's `alg`.
    ///
    /// # Errors
    /// `UnknownKey` when no key has that kid (after at most one rate-limited,
    /// shared refetch), `WrongAlgorithm` when the key is of another algorithm,
    /// `KeysUnavailable` when no JWKS was ever fetched and fetching fails.
    pub(crate) async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, VerifyError> {
        let Some(kid) = kid else {
            return Err(VerifyError::UnknownKey);
        };
        let set = self.current();
        if let Some((key, from_jwks)) = self.find(&set, kid) {
            if from_jwks && set.is_stale((self.clock)()) {
                // Stale keys keep verifying while a refetch runs aside: no
                // request waits on gatehouse for a key it already has.
                self.refresh_in_background();
            }
            return bound_to(key, alg);
        }
        // A JWKS never carries HS256 keys, and without a JWKS algorithm
        // there is nothing to fetch: no refetch can help.
        if self.source.is_none() || alg == Algorithm::HS256 {
            return Err(VerifyError::UnknownKey);
        }
        let _ = self.refetch(false).await;
        let set = self.current();
        match self.find(&set, kid) {
            Some((key, _)) => bound_to(key, alg),
            None if set.loaded => Err(VerifyError::UnknownKey),
            None => Err(VerifyError::KeysUnavailable),
        }
    }

    /// Fetches the JWKS now, ignoring the refetch interval (still one fetch at
    /// a time). Returns how many usable keys it holds.
    ///
    /// # Errors
    /// `KeysUnavailable` when the fetch fails; the cached keys stay.
    pub(crate) async fn refresh(&self) -> Result<usize, VerifyError> {
        if self.source.is_none() {
            return Ok(0);
        }
        match self.refetch(true).await {
            Outcome::Fetched(Ok(n)) => Ok(n),
            Outcome::Fetched(Err(_)) => Err(VerifyError::KeysUnavailable),
            Outcome::Shared | Outcome::RateLimited => Ok(self.current().keys.len()),
        }
    }

    /// Whether `last` is younger than the refetch interval. A clock that went
    /// back past it does not block refetches for the time it jumped.
    fn is_recent(&self, last: Option<SystemTime>, now: SystemTime) -> bool {
        last.is_some_and(|last| {
            now.duration_since(last)
                .is_ok_and(|age| age < self.refetch_interval)
        })
    }

    fn refresh_in_background(self: &Arc<Self>) {
        {
            let meta = self.meta.lock().unwrap_or_else(PoisonError::into_inner);
            if meta.in_flight || self.is_recent(meta.last_attempt, (self.clock)()) {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refresh_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let _ = this.refetch(false).await;
            this.refresh_scheduled.store(false, Ordering::Release);
        });
    }

    /// One fetch for every concurrent caller: the first past the interval
    /// check fetches while the others wait on `flight` and then see, by the
    /// generation, that it happened.
    async fn refetch(&self, force: bool) -> Outcome {
        let Some(source) = &self.source else {
            return Outcome::Shared;
        };
        let seen = {
            let meta = self.meta.lock().unwrap_or_else(PoisonError::into_inner);
            if !force && !meta.in_flight && self.is_recent(meta.last_attempt, (self.clock)()) {
                return Outcome::RateLimited;
            }
            meta.generation
        };
        let _flight = self.flight.lock().await;
        {
            let mut meta = self.meta.lock().unwrap_or_else(PoisonError::into_inner);
            if !force {
                if meta.generation != seen {
                    return Outcome::Shared;
                }
                if self.is_recent(meta.last_attempt, (self.clock)()) {
                    return Outcome::RateLimited;
                }
            }
            meta.in_flight = true;
            meta.last_attempt = Some((self.clock)());
        }
        let attempt = InFlight(&self.meta);
        let result = self.fetch(source).await;
        let result = match result {
            Ok((keys, freshness)) => {
                let n = keys.len();
                self.install(keys, freshness);
                tracing::debug!(
                    keys = n,
                    freshness_secs = freshness.as_secs(),
                    "JWKS fetched"
                );
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %source.url, "JWKS fetch failed; keeping the cached keys");
                Err(e)
            }
        };
        drop(attempt);
        Outcome::Fetched(result)
    }

    async fn fetch(
        &self,
        source: &JwksSource,
    ) -> Result<(HashMap<String, Arc<VerifyKey>>, Duration), FetchError> {
        let response = source
            .client
            .get(source.url.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .timeout(net::REQUEST_TIMEOUT)
            .send()
            .await?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let freshness = freshness(response.headers());
        let body = net::read_limited(response, MAX_JWKS_BYTES).await?;
        let keys = parse_jwks(
            &body,
            &self.accepted,
            self.hs256.as_ref().map(|(kid, _)| kid.as_str()),
        )?;
        Ok((keys, freshness))
    }

    fn install(&self, keys: HashMap<String, Arc<VerifyKey>>, freshness: Duration) {
        let now = (self.clock)();
        let set = KeySet {
            keys,
            loaded: true,
            fetched_at: now,
            expires_at: now.checked_add(freshness).unwrap_or(now),
        };
        *self.set.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    /// Installs a JWKS given as bytes, as if fetched with the given
    /// freshness (tests and benchmarks: no I/O).
    ///
    /// # Errors
    /// `KeysUnavailable` when the bytes are not a JWKS.
    pub(crate) fn preload(&self, jwks: &[u8], freshness: Duration) -> Result<usize, VerifyError> {
        let keys = parse_jwks(
            jwks,
            &self.accepted,
            self.hs256.as_ref().map(|(kid, _)| kid.as_str()),
        )
        .map_err(|_| VerifyError::KeysUnavailable)?;
        let n = keys.len();
        self.install(keys, freshness);
        Ok(n)
    }
}

/// A key only verifies under its own algorithm.
fn bound_to(key: Arc<VerifyKey>, alg: Algorithm) -> Result<Arc<VerifyKey>, VerifyError> {
    if key.alg == alg {
        Ok(key)
    } else {
        Err(VerifyError::WrongAlgorithm)
    }
}

/// How long a JWKS response stays fresh, from its `Cache-Control`
/// (RFC 9111 §5.2.2): `max-age` clamped to 10 s ..= 1 day; 5 minutes when
/// absent or unparseable; `no-store`/`no-cache` as the 10 s floor (keys are
/// needed in memory to verify at all, so "do not store" becomes "refetch
/// soon").
pub(crate) fn freshness(headers: &HeaderMap) -> Duration {
    let mut max_age: Option<Option<u64>> = None;
    let mut no_cache = false;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        // gatehouse's own answer; a directive we cannot read leaves the
        // 5-minute default, which only decides how soon keys are refetched.
        let Ok(value) = value.to_str() else {
            continue;
        };
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim())),
                None => (directive.trim(), None),
            };
            // RFC 9111 §5.2: directive names are case-insensitive.
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
                // RFC 9111 §4.2.1: with several max-age, use the first.
                max_age = Some(argument.and_then(delta_seconds));
            }
        }
    }
    if no_cache {
        return MIN_FRESHNESS;
    }
    match max_age {
        Some(Some(secs)) => Duration::from_secs(secs).clamp(MIN_FRESHNESS, MAX_FRESHNESS),
        _ => DEFAULT_FRESHNESS,
    }
}

/// RFC 9111 §1.2.2 delta-seconds: digits only (a quoted form is tolerated,
/// §5.2); too large a number saturates instead of failing.
fn delta_seconds(arg: &str) -> Option<u64> {
    let arg = arg
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(arg);
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS body: keys are judged one by one, so a key of a
/// kind this library does not know cannot hide the others; a key whose `kid`
/// appears twice is dropped with its twin (which one is meant is unknowable).
///
/// # Errors
/// [`FetchError::NotJwks`] when the body is not a JSON object with a `keys`
/// array.
pub(crate) fn parse_jwks(
    body: &[u8],
    accepted: &[Algorithm],
    hs256_kid: Option<&str>,
) -> Result<HashMap<String, Arc<VerifyKey>>, FetchError> {
    let raw: RawJwks = serde_json::from_slice(body).map_err(|_| FetchError::NotJwks)?;
    let mut keys = HashMap::new();
    let mut twins = HashSet::new();
    for value in raw.keys {
        match usable_key(value, accepted) {
            Ok((kid, key)) => {
                if hs256_kid == Some(kid.as_str()) {
                    tracing::warn!(kid = %kid, "JWKS key ignored: its kid is the HS256 key's");
                    continue;
                }
                if keys.insert(kid.clone(), key).is_some() {
                    twins.insert(kid);
                }
            }
            Err(reason) => tracing::debug!(reason, "JWKS key ignored"),
        }
    }
    for kid in twins {
        tracing::warn!(kid = %kid, "JWKS keys ignored: the kid appears more than once");
        keys.remove(&kid);
    }
    Ok(keys)
}

/// One JWK, if it is a signing key of an accepted algorithm whose key type
/// and curve are that algorithm's (RFC 8725 §3.1: a key serves one algorithm)
/// and that may sign access tokens: a key whose `gatehouse_purpose` is
/// anything but `access` is one gatehouse never signs an access token with
/// (an ID-token key), and a key without the member is taken (a gatehouse
/// older than the member marks none).
fn usable_key(
    value: serde_json::Value,
    accepted: &[Algorithm],
) -> Result<(String, Arc<VerifyKey>), &'static str> {
    if value
        .get(PURPOSE_MEMBER)
        .is_some_and(|p| p.as_str() != Some(ACCESS_PURPOSE))
    {
        return Err("not an access-token key (gatehouse_purpose)");
    }
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK of a known type")?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("no kid")?;
    let alg = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        // HS256 keys never come from a JWKS: that would publish the secret.
        _ => return Err("no alg, or an alg this library does not take from a JWKS"),
    };
    if !accepted.contains(&alg) {
        return Err("alg not accepted by this verifier");
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("use is not sig");
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("key_ops lacks verify");
    }
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::RSA(p), Algorithm::RS256) => {
            rsa_bits(&p.n).is_some_and(|bits| bits >= MIN_RSA_BITS)
        }
        _ => false,
    };
    if !fits {
        return Err("key type or curve does not match alg, or RSA modulus under 2048 bits");
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "invalid key material")?;
    Ok((kid, Arc::new(VerifyKey { alg, key })))
}

/// The bit length of a base64url big-endian modulus.
fn rsa_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    let first = bytes.iter().position(|&b| b != 0)?;
    let significant = &bytes[first..];
    let lead = significant.first()?;
    Some((significant.len() - 1) * 8 + (8 - lead.leading_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(values: &[&str]) -> Duration {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                http::header::CACHE_CONTROL,
                HeaderValue::from_str(v).expect("header"),
            );
        }
        freshness(&headers)
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        assert_eq!(cc(&["public, max-age=300"]), Duration::from_secs(300));
        assert_eq!(cc(&["MAX-AGE=60"]), Duration::from_secs(60));
        assert_eq!(cc(&["max-age=\"120\""]), Duration::from_secs(120));
        assert_eq!(cc(&["max-age = 90 , public"]), Duration::from_secs(90));
        assert_eq!(cc(&["max-age=0"]), MIN_FRESHNESS);
        assert_eq!(cc(&["max-age=3"]), MIN_FRESHNESS);
        assert_eq!(cc(&["max-age=604800"]), MAX_FRESHNESS);
        assert_eq!(
            cc(&["max-age=99999999999999999999999999999"]),
            MAX_FRESHNESS
        );
    }

    #[test]
    fn the_first_max_age_wins_across_header_lines() {
        assert_eq!(
            cc(&["public", "max-age=40", "max-age=900"]),
            Duration::from_secs(40)
        );
        assert_eq!(cc(&["max-age=40, max-age=900"]), Duration::from_secs(40));
    }

    #[test]
    fn absent_or_unparseable_max_age_means_five_minutes() {
        assert_eq!(cc(&[]), DEFAULT_FRESHNESS);
        assert_eq!(cc(&["public"]), DEFAULT_FRESHNESS);
        for bad in [
            "max-age",
            "max-age=",
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
            "max-age=0x10",
            "max-age=\"",
        ] {
            assert_eq!(cc(&[bad]), DEFAULT_FRESHNESS, "{bad}");
        }
        // s-maxage is for shared caches, not for us.
        assert_eq!(cc(&["s-maxage=20"]), DEFAULT_FRESHNESS);
    }

    #[test]
    fn no_store_and_no_cache_mean_the_floor() {
        assert_eq!(cc(&["no-store"]), MIN_FRESHNESS);
        assert_eq!(cc(&["max-age=600, No-Cache"]), MIN_FRESHNESS);
        assert_eq!(
            cc(&["max-age=600", "no-cache=\"set-cookie\""]),
            MIN_FRESHNESS
        );
    }

    #[test]
    fn hs256_kid_is_the_truncated_sha256_in_hex() {
        // SHA-256("") = e3b0c44298fc1c14...
        assert_eq!(hs256_kid(b""), "hs256-e3b0c44298fc1c14");
        let kid = hs256_kid(&[0x42; 32]);
        assert_eq!(kid.len(), "hs256-".len() + 16);
        assert!(
            kid[6..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn jwks(keys: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("json")
    }

    const EDDSA_ONLY: &[Algorithm] = &[Algorithm::EdDSA];

    #[test]
    fn a_signing_key_of_an_accepted_algorithm_is_kept() {
        let body = jwks(serde_json::json!([
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"a","alg":"EdDSA","use":"sig"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"b","alg":"EdDSA","key_ops":["verify"]},
        ]));
        let keys = parse_jwks(&body, EDDSA_ONLY, None).expect("jwks");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys["a"].alg, Algorithm::EdDSA);
    }

    #[test]
    fn keys_of_other_kinds_are_ignored_one_by_one() {
        let body = jwks(serde_json::json!([
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"good","alg":"EdDSA"},
            // No alg: not bound to one algorithm.
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"no-alg"},
            // An encryption key.
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"enc","alg":"EdDSA","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"sign-only","alg":"EdDSA","key_ops":["sign"]},
            // An alg that does not fit the key type.
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"confused","alg":"ES256"},
            {"kty":"OKP","crv":"X25519","x":ED_X,"kid":"x25519","alg":"EdDSA"},
            // A symmetric key in a JWKS is never taken.
            {"kty":"oct","k":"c2VjcmV0","kid":"oct","alg":"HS256"},
            // Unknown to jsonwebtoken: skipped, does not spoil the set.
            {"kty":"AKP","alg":"ML-DSA-44","pub":"AAAA","kid":"pq"},
            {"kid":"nothing"},
            "a string",
            42,
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"alg":"EdDSA"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"","alg":"EdDSA"},
        ]));
        let keys = parse_jwks(&body, &[Algorithm::EdDSA, Algorithm::ES256], None).expect("jwks");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["good"]);
    }

    #[test]
    fn keys_of_unaccepted_algorithms_and_twins_are_dropped() {
        let body = jwks(serde_json::json!([
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"a","alg":"EdDSA"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"twin","alg":"EdDSA"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"twin","alg":"EdDSA"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"hs256-0011223344556677","alg":"EdDSA"},
        ]));
        let keys = parse_jwks(&body, EDDSA_ONLY, Some("hs256-0011223344556677")).expect("jwks");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["a"]);
        assert!(
            parse_jwks(&body, &[Algorithm::ES256], None)
                .expect("jwks")
                .is_empty()
        );
    }

    #[test]
    fn only_keys_that_may_sign_access_tokens_are_kept() {
        let body = jwks(serde_json::json!([
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"access","alg":"EdDSA","use":"sig","gatehouse_purpose":"access"},
            // A gatehouse older than the member: taken as before.
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"unmarked","alg":"EdDSA","use":"sig"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"id","alg":"EdDSA","use":"sig","gatehouse_purpose":"id_token"},
            // Anything but exactly "access" is some other purpose.
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"upper","alg":"EdDSA","gatehouse_purpose":"ACCESS"},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"empty","alg":"EdDSA","gatehouse_purpose":""},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"null","alg":"EdDSA","gatehouse_purpose":null},
            {"kty":"OKP","crv":"Ed25519","x":ED_X,"kid":"list","alg":"EdDSA","gatehouse_purpose":["access"]},
        ]));
        let keys = parse_jwks(&body, EDDSA_ONLY, None).expect("jwks");
        let mut kids: Vec<&String> = keys.keys().collect();
        kids.sort();
        assert_eq!(kids, ["access", "unmarked"]);
    }

    #[test]
    fn a_short_rsa_modulus_is_refused() {
        let n1024 = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let n2048 = URL_SAFE_NO_PAD.encode([0xC5u8; 256]);
        assert_eq!(rsa_bits(&n1024), Some(1024));
        assert_eq!(rsa_bits(&n2048), Some(2048));
        let mut padded = vec![0u8];
        padded.extend([0x01u8; 256]);
        assert_eq!(rsa_bits(&URL_SAFE_NO_PAD.encode(padded)), Some(2041));
        let body = jwks(serde_json::json!([
            {"kty":"RSA","n":n1024,"e":"AQAB","kid":"short","alg":"RS256"},
            {"kty":"RSA","n":n2048,"e":"AQAB","kid":"long","alg":"RS256"},
        ]));
        let keys = parse_jwks(&body, &[Algorithm::RS256], None).expect("jwks");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["long"]);
    }

    #[test]
    fn a_body_that_is_not_a_jwks_is_refused() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"keys\":{}}",
            b"{\"keys\":null}",
            b"\xff\xfe",
        ] {
            assert!(matches!(
                parse_jwks(body, EDDSA_ONLY, None),
                Err(FetchError::NotJwks)
            ));
        }
    }
}
