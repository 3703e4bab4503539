//! Signing keys: generation, encryption at rest, rotation, and the
//! in-memory key ring that signs and verifies access tokens.
//!
//! Keys live in the database (shared by every node) unless a
//! `signing_key_file` or an HS256 secret is configured. The current key of
//! the configured algorithm signs; every key that may have signed a live
//! token stays published (and accepted) until its `retire_at`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{Config, JwtAlg, SecretBytes};
use crate::store::{KeyPurpose, KeyStore, StoredKey};

/// The jsonwebtoken algorithm of a configured `jwt_alg`.
pub fn algorithm(alg: JwtAlg) -> Algorithm {
    match alg {
        JwtAlg::EdDsa => Algorithm::EdDSA,
        JwtAlg::Es256 => Algorithm::ES256,
        JwtAlg::Rs256 => Algorithm::RS256,
        JwtAlg::Hs256 => Algorithm::HS256,
    }
}

/// The JOSE name of an algorithm, as in a token header.
pub fn alg_name(alg: JwtAlg) -> &'static str {
    match alg {
        JwtAlg::EdDsa => "EdDSA",
        JwtAlg::Es256 => "ES256",
        JwtAlg::Rs256 => "RS256",
        JwtAlg::Hs256 => "HS256",
    }
}

fn alg_from_name(name: &str) -> Option<JwtAlg> {
    match name {
        "EdDSA" => Some(JwtAlg::EdDsa),
        "ES256" => Some(JwtAlg::Es256),
        "RS256" => Some(JwtAlg::Rs256),
        "HS256" => Some(JwtAlg::Hs256),
        _ => None,
    }
}

/// The key that signs new tokens.
pub struct Signer {
    pub kid: String,
    pub key: EncodingKey,
}

/// A snapshot of the keys: immutable, swapped whole when keys change.
pub struct KeyRing {
    pub alg: JwtAlg,
    pub signer: Option<Signer>,
    /// kid → verification key, for every key still accepted.
    verifiers: HashMap<String, DecodingKey>,
    /// The public keys to publish (empty for HS256).
    pub published: Vec<Jwk>,
    /// What the ring was built from, to notice changes cheaply.
    fingerprint: Vec<(String, Option<OffsetDateTime>)>,
}

impl KeyRing {
    /// The verification key for a `kid`, if it is one of ours and live.
    pub fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers.get(kid)
    }

    /// A ring that only verifies, as a verifier configured for `alg` would
    /// hold it: the published keys of that algorithm, or for HS256 the
    /// shared secret (under the kid gatehouse gives it). For checking the
    /// validation rules against fixed keys (the shared test vectors).
    ///
    /// # Errors
    /// When a key of the algorithm cannot be read, or HS256 has no secret.
    pub fn for_verification(
        alg: JwtAlg,
        published: &[Jwk],
        hs256_secret: Option<&SecretBytes>,
    ) -> anyhow::Result<Self> {
        if alg == JwtAlg::Hs256 {
            let secret = hs256_secret.context("HS256 verifies with the shared secret")?;
            let mut ring = KeyManager::hs256_ring(secret);
            ring.signer = None;
            return Ok(ring);
        }
        let mut verifiers = HashMap::new();
        for jwk in published {
            let of_alg = jwk
                .common
                .key_algorithm
                .is_some_and(|a| a.to_string() == alg_name(alg));
            if let (true, Some(kid)) = (of_alg, &jwk.common.key_id) {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow::anyhow!("{kid}: {e}"))?;
                verifiers.insert(kid.clone(), key);
            }
        }
        Ok(Self {
            alg,
            signer: None,
            verifiers,
            published: published.to_vec(),
            fingerprint: Vec::new(),
        })
    }
}

/// Where the keys come from.
enum Source {
    Database,
    /// A bring-your-own PEM key; never rotated by gatehouse.
    File,
    /// A shared secret; nothing is published.
    Hs256,
}

/// Seals private keys at rest with AES-256-GCM.
struct Kek(LessSafeKey);

impl Kek {
    fn new(secret: &SecretBytes) -> anyhow::Result<Self> {
        let key = UnboundKey::new(&AES_256_GCM, secret.expose())
            .map_err(|_| anyhow::anyhow!("key_encryption_key: not a valid AES-256 key"))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    fn seal(&self, kid: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        seal(&self.0, kid.as_bytes(), plaintext)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        open(&self.0, kid.as_bytes(), sealed).with_context(|| {
            format!("key_encryption_key: cannot decrypt signing key {kid} (is it the key it was sealed with?)")
        })
    }
}

/// AES-256-GCM with a random nonce: `nonce || ciphertext || tag`.
///
/// # Errors
/// When the OS RNG or the cipher fails.
pub fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
    let mut out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out,
    )
    .map_err(|_| anyhow::anyhow!("sealing failed"))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&out);
    Ok(sealed)
}

/// The inverse of [`seal`].
///
/// # Errors
/// When the data was not sealed under this key and associated data.
pub fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        anyhow::bail!("sealed data too short");
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce =
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
    let mut buf = ct.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| anyhow::anyhow!("authentication failed"))?;
    Ok(plain.to_vec())
}

/// A fresh key pair of `alg` for signing outside the server (the shared
/// test vectors): the encoding key, and its public JWK with `kid`, `alg` and
/// `use` as gatehouse publishes them.
///
/// # Errors
/// For HS256 (configured, not generated), or when generation fails.
pub fn generate_signing_key(alg: JwtAlg) -> anyhow::Result<(EncodingKey, Jwk)> {
    let der = generate(alg)?;
    from_pem(alg, der_to_pem(&der).as_bytes())
}

/// A freshly generated key pair: PKCS#8 DER of the private key.
fn generate(alg: JwtAlg) -> anyhow::Result<Vec<u8>> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    let der = match alg {
        JwtAlg::EdDsa => Ed25519KeyPair::generate()
            .and_then(|k| AsDer::<Pkcs8V1Der<'static>>::as_der(&k).map(|d| d.as_ref().to_vec()))
            .map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?,
        JwtAlg::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| anyhow::anyhow!("generating a P-256 key"))?,
        JwtAlg::Rs256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|k| AsDer::<Pkcs8V1Der<'static>>::as_der(&k).map(|d| d.as_ref().to_vec()))
            .map_err(|_| anyhow::anyhow!("generating an RSA key"))?,
        JwtAlg::Hs256 => anyhow::bail!("HS256 keys are configured, not generated"),
    };
    Ok(der)
}

/// The encoding key and public JWK (with its RFC 7638 thumbprint as `kid`)
/// of a PKCS#8 PEM private key.
fn from_pem(alg: JwtAlg, pem: &[u8]) -> anyhow::Result<(EncodingKey, Jwk)> {
    let key = match alg {
        JwtAlg::EdDsa => EncodingKey::from_ed_pem(pem),
        JwtAlg::Es256 => EncodingKey::from_ec_pem(pem),
        JwtAlg::Rs256 => EncodingKey::from_rsa_pem(pem),
        JwtAlg::Hs256 => anyhow::bail!("HS256 has no PEM key"),
    }
    .map_err(|e| anyhow::anyhow!("not a PKCS#8 {} private key: {e}", alg_name(alg)))?;
    let mut jwk = Jwk::from_encoding_key(&key, algorithm(alg))
        .map_err(|e| anyhow::anyhow!("deriving the public key: {e}"))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| anyhow::anyhow!("computing the key thumbprint: {e}"))?;
    jwk.common.key_id = Some(kid);
    jwk.common.key_algorithm = Some(KeyAlgorithm::from(algorithm(alg)));
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((key, jwk))
}

fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()))
}

/// Manages the key ring: builds it, rotates keys, notices other nodes'
/// rotations.
pub struct KeyManager {
    source: Source,
    alg: JwtAlg,
    store: Arc<dyn KeyStore>,
    kek: Option<Kek>,
    clock: Arc<dyn Clock>,
    /// How long a superseded key stays published: the longest an access
    /// token lives, plus the leeway verifiers grant.
    retire_after: Duration,
    ring: RwLock<Arc<KeyRing>>,
}

impl KeyManager {
    /// Builds the ring from the configuration: the configured HS256 secret
    /// or key file, or the database's keys (generating the first one, and
    /// sealing plaintext keys when a `key_encryption_key` is configured).
    ///
    /// # Errors
    /// When a key cannot be read, decrypted or generated, or the store fails.
    pub async fn init(
        config: &Config,
        store: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let alg = config.jwt_alg;
        let kek = config
            .key_encryption_key
            .as_ref()
            .map(Kek::new)
            .transpose()?;
        let retire_after = config.access_token_ttl + config.jwt_leeway;
        let (source, ring) = if let Some(secret) = &config.jwt_hs256_secret {
            (Source::Hs256, Self::hs256_ring(secret))
        } else if let Some(path) = &config.signing_key_file {
            (Source::File, Self::file_ring(alg, path)?)
        } else {
            let placeholder = KeyRing {
                alg,
                signer: None,
                verifiers: HashMap::new(),
                published: Vec::new(),
                fingerprint: Vec::new(),
            };
            (Source::Database, placeholder)
        };
        let manager = Self {
            source,
            alg,
            store,
            kek,
            clock,
            retire_after,
            ring: RwLock::new(Arc::new(ring)),
        };
        if matches!(manager.source, Source::Database) {
            manager.seal_plaintext_keys().await?;
            manager.reload().await?;
            if manager.ring().signer.is_none() {
                // Several nodes may start on an empty store at once: the
                // store adds only the first key, and every node uses it.
                let key = manager.generate_stored_key()?;
                if manager
                    .store
                    .add_first_key(&key, manager.retire_at())
                    .await?
                {
                    tracing::info!(target: "gatehouse::audit", event = "key_rotated", kid = %key.kid, alg = alg_name(alg), "first signing key generated");
                }
                manager.reload().await?;
                anyhow::ensure!(
                    manager.ring().signer.is_some(),
                    "no signing key could be established"
                );
            }
        }
        Ok(manager)
    }

    fn hs256_ring(secret: &SecretBytes) -> KeyRing {
        // A kid that names the secret without revealing anything of it.
        let digest = Sha256::digest(secret.expose());
        let kid = format!("hs256-{}", hex8(&digest));
        let mut verifiers = HashMap::new();
        verifiers.insert(kid.clone(), DecodingKey::from_secret(secret.expose()));
        KeyRing {
            alg: JwtAlg::Hs256,
            signer: Some(Signer {
                kid,
                key: EncodingKey::from_secret(secret.expose()),
            }),
            verifiers,
            published: Vec::new(),
            fingerprint: Vec::new(),
        }
    }

    fn file_ring(alg: JwtAlg, path: &Path) -> anyhow::Result<KeyRing> {
        let pem = std::fs::read(path)
            .with_context(|| format!("signing_key_file: cannot read {}", path.display()))?;
        let (key, jwk) =
            from_pem(alg, &pem).map_err(|e| anyhow::anyhow!("signing_key_file: {e:#}"))?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| anyhow::anyhow!("signing_key_file: {e}"))?;
        Ok(KeyRing {
            alg,
            signer: Some(Signer {
                kid: kid.clone(),
                key,
            }),
            verifiers: HashMap::from([(kid, decoding)]),
            published: vec![jwk],
            fingerprint: Vec::new(),
        })
    }

    /// Seals a secret other than a signing key (a TOTP key) for storage
    /// under the `key_encryption_key`, with `aad` binding it to its owner;
    /// without one, the secret as it is. Returns the stored bytes and
    /// whether they are sealed.
    ///
    /// # Errors
    /// When the OS RNG or the cipher fails.
    pub fn seal_secret(&self, aad: &[u8], secret: &[u8]) -> anyhow::Result<(Vec<u8>, bool)> {
        match &self.kek {
            Some(kek) => Ok((seal(&kek.0, aad, secret)?, true)),
            None => Ok((secret.to_vec(), false)),
        }
    }

    /// Whether secrets are sealed (a `key_encryption_key` is configured).
    pub fn seals(&self) -> bool {
        self.kek.is_some()
    }

    /// The inverse of [`Self::seal_secret`].
    ///
    /// # Errors
    /// When sealed bytes cannot be opened: no `key_encryption_key`, another
    /// one, or bytes sealed for another owner.
    pub fn open_secret(&self, aad: &[u8], stored: &[u8], sealed: bool) -> anyhow::Result<Vec<u8>> {
        if !sealed {
            return Ok(stored.to_vec());
        }
        let kek = self.kek.as_ref().ok_or_else(|| {
            anyhow::anyhow!("a stored secret is sealed, but no key_encryption_key is configured")
        })?;
        open(&kek.0, aad, stored).context(
            "key_encryption_key: cannot decrypt a stored secret (is it the key it was sealed with?)",
        )
    }

    /// The current ring (cheap: an `Arc` clone).
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn seal_plaintext_keys(&self) -> anyhow::Result<()> {
        let Some(kek) = &self.kek else {
            return Ok(());
        };
        for key in self.store.signing_keys().await? {
            if !key.encrypted {
                let sealed = kek.seal(&key.kid, &key.private_key)?;
                self.store.set_private_key(&key.kid, &sealed, true).await?;
                tracing::info!(kid = %key.kid, "signing key sealed with key_encryption_key");
            }
        }
        Ok(())
    }

    /// Rebuilds the ring from the database if its keys changed (a rotation
    /// on another node or by the CLI). Database-held keys only.
    ///
    /// # Errors
    /// When the store fails or a key cannot be opened.
    pub async fn reload(&self) -> anyhow::Result<()> {
        if !matches!(self.source, Source::Database) {
            return Ok(());
        }
        let now = self.clock.now();
        let keys = self.store.signing_keys().await?;
        let live: Vec<&StoredKey> = keys
            .iter()
            .filter(|k| k.retire_at.is_none_or(|r| r > now))
            .filter(|k| k.purpose == KeyPurpose::Access)
            .collect();
        let fingerprint: Vec<_> = live.iter().map(|k| (k.kid.clone(), k.retire_at)).collect();
        if fingerprint == self.ring().fingerprint && !fingerprint.is_empty() {
            return Ok(());
        }
        let mut verifiers = HashMap::new();
        let mut published = Vec::new();
        let mut signer = None;
        for k in &live {
            let Some(alg) = alg_from_name(&k.alg) else {
                continue;
            };
            let jwk: Jwk = serde_json::from_str(&k.public_jwk)
                .with_context(|| format!("signing key {}: stored JWK is not valid", k.kid))?;
            let decoding = DecodingKey::from_jwk(&jwk)
                .map_err(|e| anyhow::anyhow!("signing key {}: {e}", k.kid))?;
            // Only keys of the configured algorithm verify: a token is
            // accepted under exactly one algorithm.
            if alg == self.alg {
                verifiers.insert(k.kid.clone(), decoding);
                if k.retire_at.is_none() {
                    let der = match (&self.kek, k.encrypted) {
                        (Some(kek), true) => kek.open(&k.kid, &k.private_key)?,
                        (None, true) => anyhow::bail!(
                            "key_encryption_key: signing keys are encrypted at rest; configure the key that sealed them"
                        ),
                        (_, false) => k.private_key.clone(),
                    };
                    let (key, _) = from_pem(alg, der_to_pem(&der).as_bytes())
                        .with_context(|| format!("signing key {}", k.kid))?;
                    signer = Some(Signer {
                        kid: k.kid.clone(),
                        key,
                    });
                }
            }
            published.push(jwk);
        }
        let ring = KeyRing {
            alg: self.alg,
            signer,
            verifiers,
            published,
            fingerprint,
        };
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Generates a new key of the configured algorithm, makes it the signing
    /// key, and schedules the previous one to leave the JWKS once every
    /// token it signed has expired. Returns the new kid.
    ///
    /// # Errors
    /// When keys come from a file or a shared secret (rotate those by
    /// replacing them), or generation or the store fails.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        match self.source {
            Source::Database => {}
            Source::File => {
                anyhow::bail!("keys come from signing_key_file: rotate by replacing the file")
            }
            Source::Hs256 => {
                anyhow::bail!("HS256 uses jwt_hs256_secret: rotate by replacing the secret")
            }
        }
        let key = self.generate_stored_key()?;
        let kid = key.kid.clone();
        self.store.add_key(&key, self.retire_at()).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// When keys superseded now may leave the JWKS.
    fn retire_at(&self) -> OffsetDateTime {
        self.clock.now() + self.retire_after
    }

    /// A new key of the configured algorithm, sealed when a key-encryption
    /// key is configured, ready to store.
    fn generate_stored_key(&self) -> anyhow::Result<StoredKey> {
        let der = generate(self.alg)?;
        let (_, jwk) = from_pem(self.alg, der_to_pem(&der).as_bytes())?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let (private_key, encrypted) = match &self.kek {
            Some(kek) => (kek.seal(&kid, &der)?, true),
            None => (der, false),
        };
        Ok(StoredKey {
            kid,
            purpose: KeyPurpose::Access,
            alg: alg_name(self.alg).to_owned(),
            private_key,
            encrypted,
            public_jwk: serde_json::to_string(&jwk).context("serializing a JWK")?,
            created_at: self.clock.now(),
            retire_at: None,
        })
    }

    /// Every stored key with its state, for `gatehouse keys list`.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn list(&self) -> anyhow::Result<Vec<KeyInfo>> {
        let now = self.clock.now();
        Ok(match self.source {
            Source::Database => self
                .store
                .signing_keys()
                .await?
                .into_iter()
                .map(|k| KeyInfo {
                    state: match k.retire_at {
                        None => KeyState::Signing,
                        Some(r) if r > now => KeyState::Published { until: r },
                        Some(r) => KeyState::Retired { since: r },
                    },
                    kid: k.kid,
                    alg: k.alg,
                    created_at: Some(k.created_at),
                    encrypted: k.encrypted,
                })
                .collect(),
            Source::File | Source::Hs256 => self
                .ring()
                .signer
                .iter()
                .map(|s| KeyInfo {
                    kid: s.kid.clone(),
                    alg: alg_name(self.alg).to_owned(),
                    created_at: None,
                    encrypted: false,
                    state: KeyState::Signing,
                })
                .collect(),
        })
    }
}

/// A key's place in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Signing,
    Published { until: OffsetDateTime },
    Retired { since: OffsetDateTime },
}

/// What `keys list` shows of a key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub created_at: Option<OffsetDateTime>,
    pub encrypted: bool,
    pub state: KeyState,
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_for_every_algorithm() {
        for alg in [JwtAlg::EdDsa, JwtAlg::Es256, JwtAlg::Rs256] {
            let der = generate(alg).expect("generate");
            let (_, jwk) = from_pem(alg, der_to_pem(&der).as_bytes()).expect("load");
            let kid = jwk.common.key_id.clone().expect("kid");
            assert_eq!(kid.len(), 43, "RFC 7638 SHA-256 thumbprint");
            DecodingKey::from_jwk(&jwk).expect("public key");
        }
    }

    #[test]
    fn sealing_round_trips_and_detects_tampering() {
        let kek = Kek::new(&SecretBytes::new([7u8; 32].to_vec())).expect("kek");
        let sealed = kek.seal("kid1", b"private").expect("seal");
        assert_eq!(kek.open("kid1", &sealed).expect("open"), b"private");
        assert!(kek.open("kid2", &sealed).is_err(), "bound to its kid");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(kek.open("kid1", &tampered).is_err());
        let other = Kek::new(&SecretBytes::new([8u8; 32].to_vec())).expect("kek");
        assert!(other.open("kid1", &sealed).is_err());
    }
}
