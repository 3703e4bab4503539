//! The cache of verified access tokens: a client that presents the same
//! token many times pays for its signature check once (an Ed25519 check
//! costs ~40 µs, the rest of a request a few). Keyed by the whole token, so
//! only the exact bytes that were verified can hit; only tokens that passed
//! every rule enter, so forged or expired tokens cannot fill it. Bounded in
//! bytes. What can change after the check (the time, the revocation set,
//! the key ring) is checked again on every hit by the caller
//! (`Bearer::verify_access_token`).

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::claims::VerifiedToken;

/// Bytes the cached tokens may hold, roughly (each is weighed at twice its
/// length plus a fixed overhead): ~16 MiB, some 20,000 typical tokens.
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The fixed part of an entry's weight: the claims' structure and the
/// cache's own bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;

/// A verified token and the key that verified it.
#[derive(Debug)]
pub struct Verified {
    pub token: Arc<VerifiedToken>,
    pub kid: String,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<Box<str>, Arc<Verified>> for ByLength {
    fn weight(&self, token: &Box<str>, _: &Arc<Verified>) -> u64 {
        // The token itself, and about as much again for its decoded claims.
        2 * token.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Verified tokens by their compact serialization.
pub struct VerifiedTokens {
    cache: Cache<Box<str>, Arc<Verified>, ByLength>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("len", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(MAX_BYTES)
    }
}

impl VerifiedTokens {
    /// A cache holding at most about `bytes` of tokens.
    pub fn with_capacity(bytes: u64) -> Self {
        // An estimate of the item count sizes the cache's tables; a typical
        // EdDSA token of ~600 bytes weighs ~1.5 KiB.
        let items = usize::try_from(bytes / 1536).unwrap_or(usize::MAX).max(16);
        Self {
            cache: Cache::with_weighter(items, bytes, ByLength),
        }
    }

    /// The entry of exactly this token, if it was verified before.
    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        self.cache.get(token)
    }

    /// Remembers a token that passed every rule.
    pub fn insert(&self, token: &str, kid: String, verified: Arc<VerifiedToken>) {
        self.cache.insert(
            token.into(),
            Arc::new(Verified {
                token: verified,
                kid,
            }),
        );
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// What the cached tokens weigh, in (estimated) bytes.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}
