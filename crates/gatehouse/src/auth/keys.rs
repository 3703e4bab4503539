//! Signing keys: generation, encryption at rest, rotation, and the
//! in-memory key ring that signs and verifies access tokens and signs ID
//! tokens.
//!
//! Access-token keys live in the database (shared by every node) unless a
//! `signing_key_file` or an HS256 secret is configured. The current key of
//! the configured algorithm signs; every key that may have signed a live
//! token stays published (and accepted) until its `retire_at`. ID-token keys
//! (OpenID Connect) always live in the database, one current key for each
//! [`IdTokenAlg`], whatever the access-token keys' source; they are published
//! beside the access-token keys and never verify an access token. Each
//! published key says which kind it is ([`PURPOSE_MEMBER`]), so a resource
//! server's verifier can leave the ID-token keys out too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{Config, JwtAlg, SecretBytes};
use crate::model::oidc::IdTokenAlg;
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

/// The key algorithm of an ID-token algorithm (the same JOSE name).
pub fn id_token_key_alg(alg: IdTokenAlg) -> JwtAlg {
    match alg {
        IdTokenAlg::Rs256 => JwtAlg::Rs256,
        IdTokenAlg::Es256 => JwtAlg::Es256,
        IdTokenAlg::EdDsa => JwtAlg::EdDsa,
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

/// The JWKS member naming what a published key signs: `access` (access
/// tokens) or `id_token` (OpenID Connect ID tokens), as `keys list` names
/// the purposes. Not an IANA-registered JWK parameter, hence the prefix: a
/// relying party that does not know it ignores it (RFC 7517 §4), and every
/// key keeps `kid`, `alg` and `use: "sig"`. `gatehouse-verify` keeps only
/// the keys that name `access` (or name nothing: a server older than the
/// member) as access-token keys.
pub const PURPOSE_MEMBER: &str = "gatehouse_purpose";

/// A public key as the JWKS publishes it: the JWK, and what the key signs
/// under [`PURPOSE_MEMBER`].
#[derive(Debug, Clone, Serialize)]
pub struct PublishedKey {
    #[serde(flatten)]
    pub jwk: Jwk,
    #[serde(rename = "gatehouse_purpose", serialize_with = "purpose_name")]
    pub purpose: KeyPurpose,
}

fn purpose_name<S: serde::Serializer>(purpose: &KeyPurpose, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(purpose.as_str())
}

/// The key that signs new tokens.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    pub key: EncodingKey,
}

/// A snapshot of the keys: immutable, swapped whole when keys change.
pub struct KeyRing {
    /// The access-token algorithm (`jwt_alg`).
    pub alg: JwtAlg,
    /// The access-token signer.
    pub signer: Option<Signer>,
    /// kid → verification key, for every access-token key of `alg` still
    /// accepted. Never an ID-token key.
    verifiers: HashMap<String, DecodingKey>,
    /// The current ID-token key of each algorithm.
    id_signers: HashMap<IdTokenAlg, Signer>,
    /// kid → algorithm and verification key, for every live ID-token key.
    id_verifiers: HashMap<String, (IdTokenAlg, DecodingKey)>,
    /// The public keys to publish: the live access-token keys (none for
    /// HS256) and the live ID-token keys, each with its purpose.
    pub published: Vec<PublishedKey>,
    /// What the ring was built from, to notice changes cheaply.
    fingerprint: Vec<(String, Option<OffsetDateTime>)>,
}

impl KeyRing {
    /// A ring with no key.
    fn empty(alg: JwtAlg) -> Self {
        Self {
            alg,
            signer: None,
            verifiers: HashMap::new(),
            id_signers: HashMap::new(),
            id_verifiers: HashMap::new(),
            published: Vec::new(),
            fingerprint: Vec::new(),
        }
    }

    /// The access-token verification key for a `kid`, if it is one of ours
    /// and live. An ID-token key's kid finds nothing here: an ID token
    /// never verifies as an access token.
    pub fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers.get(kid)
    }

    /// The key that signs new ID tokens of `alg`.
    pub fn id_token_signer(&self, alg: IdTokenAlg) -> Option<&Signer> {
        self.id_signers.get(&alg)
    }

    /// The algorithm and verification key of a live ID-token key (to check
    /// an `id_token_hint`, which must have been signed by one of ours).
    pub fn id_token_verifier(&self, kid: &str) -> Option<(IdTokenAlg, &DecodingKey)> {
        self.id_verifiers.get(kid).map(|(alg, key)| (*alg, key))
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
            let mut ring = FixedKey::hs256(secret).ring();
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
            verifiers,
            published: published.iter().cloned().map(access_key).collect(),
            ..Self::empty(alg)
        })
    }
}

/// Where the access-token keys come from (ID-token keys always come from
/// the database).
enum Source {
    Database,
    /// A bring-your-own PEM key; never rotated by gatehouse.
    File(FixedKey),
    /// A shared secret; nothing of it is published.
    Hs256(FixedKey),
}

/// An access-token key from the configuration rather than the database.
struct FixedKey {
    alg: JwtAlg,
    signer: Signer,
    verifier: DecodingKey,
    /// Its public JWK (none for HS256).
    published: Option<Jwk>,
}

impl FixedKey {
    fn hs256(secret: &SecretBytes) -> Self {
        // A kid that names the secret without revealing anything of it.
        let digest = Sha256::digest(secret.expose());
        Self {
            alg: JwtAlg::Hs256,
            signer: Signer {
                kid: format!("hs256-{}", hex8(&digest)),
                key: EncodingKey::from_secret(secret.expose()),
            },
            verifier: DecodingKey::from_secret(secret.expose()),
            published: None,
        }
    }

    fn file(alg: JwtAlg, path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path)
            .with_context(|| format!("signing_key_file: cannot read {}", path.display()))?;
        let (key, jwk) =
            from_pem(alg, &pem).map_err(|e| anyhow::anyhow!("signing_key_file: {e:#}"))?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let verifier =
            DecodingKey::from_jwk(&jwk).map_err(|e| anyhow::anyhow!("signing_key_file: {e}"))?;
        Ok(Self {
            alg,
            signer: Signer { kid, key },
            verifier,
            published: Some(jwk),
        })
    }

    /// A ring holding this key alone.
    fn ring(&self) -> KeyRing {
        KeyRing {
            signer: Some(self.signer.clone()),
            verifiers: HashMap::from([(self.signer.kid.clone(), self.verifier.clone())]),
            published: self.published.iter().cloned().map(access_key).collect(),
            ..KeyRing::empty(self.alg)
        }
    }
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
    /// token (or an ID token, which lives no longer) lives, plus the leeway
    /// verifiers grant.
    retire_after: Duration,
    ring: RwLock<Arc<KeyRing>>,
}

impl KeyManager {
    /// Builds the ring from the configuration: the access-token key from
    /// the configured HS256 secret or key file, or the database's keys; the
    /// ID-token keys from the database, whatever the access-token source.
    /// Generates each missing current key (the database's first access key,
    /// an ID-token key of each algorithm), and seals plaintext keys when a
    /// `key_encryption_key` is configured.
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
        let source = if let Some(secret) = &config.jwt_hs256_secret {
            Source::Hs256(FixedKey::hs256(secret))
        } else if let Some(path) = &config.signing_key_file {
            Source::File(FixedKey::file(alg, path)?)
        } else {
            Source::Database
        };
        let ring = match &source {
            Source::Database => KeyRing::empty(alg),
            Source::File(fixed) | Source::Hs256(fixed) => fixed.ring(),
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
        manager.seal_plaintext_keys().await?;
        manager.reload().await?;
        let missing = manager.missing_keys();
        if !missing.is_empty() {
            for (purpose, alg) in missing {
                // Several nodes may start on an empty store at once: the
                // store adds only the first key of each purpose and
                // algorithm, and every node uses it.
                let key = manager.generate_stored_key(purpose, alg).await?;
                if manager
                    .store
                    .add_first_key(&key, manager.retire_at())
                    .await?
                {
                    tracing::info!(target: "gatehouse::audit", event = "key_rotated", kid = %key.kid, alg = alg_name(alg), purpose = purpose.as_str(), "first signing key generated");
                }
            }
            manager.reload().await?;
            anyhow::ensure!(
                manager.missing_keys().is_empty(),
                "no signing key could be established"
            );
        }
        Ok(manager)
    }

    /// The current keys the ring lacks and the database should hold: the
    /// access-token key (when the database holds it) and an ID-token key of
    /// each algorithm.
    fn missing_keys(&self) -> Vec<(KeyPurpose, JwtAlg)> {
        let ring = self.ring();
        let access = (self.access_keys_in_database() && ring.signer.is_none())
            .then_some((KeyPurpose::Access, self.alg));
        let id_tokens = IdTokenAlg::ALL
            .into_iter()
            .filter(|a| ring.id_token_signer(*a).is_none())
            .map(|a| (KeyPurpose::IdToken, id_token_key_alg(a)));
        access.into_iter().chain(id_tokens).collect()
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
                tracing::info!(kid = %key.kid, purpose = key.purpose.as_str(), "signing key sealed with key_encryption_key");
            }
        }
        Ok(())
    }

    /// Whether the ring uses the database's access-token keys.
    fn access_keys_in_database(&self) -> bool {
        matches!(self.source, Source::Database)
    }

    /// Rebuilds the ring from the database if its keys changed (a rotation
    /// on another node or by the CLI): the access-token keys when the
    /// database holds them (a key file's or a secret's never change), and
    /// the ID-token keys always.
    ///
    /// # Errors
    /// When the store fails or a key cannot be opened.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let now = self.clock.now();
        let keys = self.store.signing_keys().await?;
        let live: Vec<&StoredKey> = keys
            .iter()
            .filter(|k| k.retire_at.is_none_or(|r| r > now))
            // With a key file or a secret configured, access-token keys
            // left in the database by an earlier configuration are unused.
            .filter(|k| k.purpose == KeyPurpose::IdToken || self.access_keys_in_database())
            .collect();
        let fingerprint: Vec<_> = live.iter().map(|k| (k.kid.clone(), k.retire_at)).collect();
        if fingerprint == self.ring().fingerprint && !fingerprint.is_empty() {
            return Ok(());
        }
        let mut ring = match &self.source {
            Source::Database => KeyRing::empty(self.alg),
            Source::File(fixed) | Source::Hs256(fixed) => fixed.ring(),
        };
        for k in &live {
            let Some(alg) = alg_from_name(&k.alg) else {
                continue;
            };
            let jwk: Jwk = serde_json::from_str(&k.public_jwk)
                .with_context(|| format!("signing key {}: stored JWK is not valid", k.kid))?;
            let decoding = DecodingKey::from_jwk(&jwk)
                .map_err(|e| anyhow::anyhow!("signing key {}: {e}", k.kid))?;
            match k.purpose {
                // Only access keys of the configured algorithm verify: a
                // token is accepted under exactly one algorithm.
                KeyPurpose::Access if alg == self.alg => {
                    ring.verifiers.insert(k.kid.clone(), decoding);
                    if k.retire_at.is_none() {
                        ring.signer = Some(self.open_signer(k, alg)?);
                    }
                }
                KeyPurpose::Access => {}
                KeyPurpose::IdToken => {
                    let Some(id_alg) = IdTokenAlg::parse(&k.alg) else {
                        continue;
                    };
                    ring.id_verifiers.insert(k.kid.clone(), (id_alg, decoding));
                    if k.retire_at.is_none() {
                        ring.id_signers.insert(id_alg, self.open_signer(k, alg)?);
                    }
                }
            }
            ring.published.push(PublishedKey {
                jwk,
                purpose: k.purpose,
            });
        }
        ring.fingerprint = fingerprint;
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// The signer of a stored key, opened with the key-encryption key when
    /// it is sealed.
    fn open_signer(&self, k: &StoredKey, alg: JwtAlg) -> anyhow::Result<Signer> {
        let der = match (&self.kek, k.encrypted) {
            (Some(kek), true) => kek.open(&k.kid, &k.private_key)?,
            (None, true) => anyhow::bail!(
                "key_encryption_key: signing keys are encrypted at rest; configure the key that sealed them"
            ),
            (_, false) => k.private_key.clone(),
        };
        let (key, _) = from_pem(alg, der_to_pem(&der).as_bytes())
            .with_context(|| format!("signing key {}", k.kid))?;
        Ok(Signer {
            kid: k.kid.clone(),
            key,
        })
    }

    /// Generates a new access-token key of the configured algorithm, makes
    /// it the signing key, and schedules the previous one to leave the JWKS
    /// once every token it signed has expired. Returns the new kid. The
    /// ID-token keys are left as they are.
    ///
    /// # Errors
    /// When keys come from a file or a shared secret (rotate those by
    /// replacing them), or generation or the store fails.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        match self.source {
            Source::Database => {}
            Source::File(_) => {
                anyhow::bail!("keys come from signing_key_file: rotate by replacing the file")
            }
            Source::Hs256(_) => {
                anyhow::bail!("HS256 uses jwt_hs256_secret: rotate by replacing the secret")
            }
        }
        let key = self
            .generate_stored_key(KeyPurpose::Access, self.alg)
            .await?;
        let kid = key.kid.clone();
        self.store.add_key(&key, self.retire_at()).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Generates a new ID-token key of each algorithm (whatever the
    /// access-token keys' source), each of which signs from then on; the
    /// previous ones stay published until every ID token they signed has
    /// expired. The access-token key is left as it is. Returns the new
    /// kids in the order of [`IdTokenAlg::ALL`].
    ///
    /// # Errors
    /// When generation or the store fails; the algorithms before the one
    /// that failed are rotated.
    pub async fn rotate_id_token_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut kids = Vec::with_capacity(IdTokenAlg::ALL.len());
        for alg in IdTokenAlg::ALL {
            let key = self
                .generate_stored_key(KeyPurpose::IdToken, id_token_key_alg(alg))
                .await?;
            self.store.add_key(&key, self.retire_at()).await?;
            kids.push(key.kid);
        }
        self.reload().await?;
        Ok(kids)
    }

    /// When keys superseded now may leave the JWKS.
    fn retire_at(&self) -> OffsetDateTime {
        self.clock.now() + self.retire_after
    }

    /// A new key of `purpose` and `alg`, sealed when a key-encryption key is
    /// configured, ready to store. The key pair is generated on the
    /// blocking pool, off the async executor: an RSA key takes tens to
    /// hundreds of milliseconds of CPU (the ID-token rotation of the admin
    /// API makes one every time, and a first start on RS256 another).
    async fn generate_stored_key(
        &self,
        purpose: KeyPurpose,
        alg: JwtAlg,
    ) -> anyhow::Result<StoredKey> {
        let der = tokio::task::spawn_blocking(move || generate(alg))
            .await
            .context("the key generation task failed")??;
        let (_, jwk) = from_pem(alg, der_to_pem(&der).as_bytes())?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let (private_key, encrypted) = match &self.kek {
            Some(kek) => (kek.seal(&kid, &der)?, true),
            None => (der, false),
        };
        Ok(StoredKey {
            kid,
            purpose,
            alg: alg_name(alg).to_owned(),
            private_key,
            encrypted,
            public_jwk: serde_json::to_string(&jwk).context("serializing a JWK")?,
            created_at: self.clock.now(),
            retire_at: None,
        })
    }

    /// Every key with its state, for `gatehouse keys list`: the stored keys,
    /// or with a key file or a secret, that access-token key and the
    /// stored ID-token keys.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn list(&self) -> anyhow::Result<Vec<KeyInfo>> {
        let now = self.clock.now();
        let fixed = match &self.source {
            Source::Database => None,
            Source::File(fixed) | Source::Hs256(fixed) => Some(KeyInfo {
                kid: fixed.signer.kid.clone(),
                purpose: KeyPurpose::Access,
                alg: alg_name(fixed.alg).to_owned(),
                created_at: None,
                encrypted: false,
                state: KeyState::Signing,
            }),
        };
        let stored = self
            .store
            .signing_keys()
            .await?
            .into_iter()
            .filter(|k| k.purpose == KeyPurpose::IdToken || self.access_keys_in_database())
            .map(|k| KeyInfo {
                state: match k.retire_at {
                    None => KeyState::Signing,
                    Some(r) if r > now => KeyState::Published { until: r },
                    Some(r) => KeyState::Retired { since: r },
                },
                kid: k.kid,
                purpose: k.purpose,
                alg: k.alg,
                created_at: Some(k.created_at),
                encrypted: k.encrypted,
            });
        Ok(fixed.into_iter().chain(stored).collect())
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
    pub purpose: KeyPurpose,
    pub alg: String,
    pub created_at: Option<OffsetDateTime>,
    pub encrypted: bool,
    pub state: KeyState,
}

/// An access-token key as the JWKS publishes it.
fn access_key(jwk: Jwk) -> PublishedKey {
    PublishedKey {
        jwk,
        purpose: KeyPurpose::Access,
    }
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::DatabaseUrl;

    /// A key manager on a fresh SQLite file, its clock, and the directory.
    async fn manager(
        configure: impl FnOnce(&mut Config),
    ) -> (KeyManager, Arc<ManualClock>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            database_url: DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                dir.path().join("keys.db").display()
            )),
            ..Config::default()
        };
        configure(&mut config);
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let stores = crate::store::open(&config, clock.clone())
            .await
            .expect("store");
        let keys = KeyManager::init(&config, stores.keys.clone(), clock.clone())
            .await
            .expect("keys");
        (keys, clock, dir)
    }

    fn published_kids(ring: &KeyRing) -> Vec<String> {
        ring.published
            .iter()
            .map(|p| p.jwk.common.key_id.clone().expect("kid"))
            .collect()
    }

    /// A compact JWS of `{}` signed by `signer` under `alg`.
    fn sign(signer: &Signer, alg: JwtAlg) -> String {
        let mut header = jsonwebtoken::Header::new(algorithm(alg));
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, &serde_json::json!({}), &signer.key).expect("sign")
    }

    #[tokio::test]
    async fn init_makes_an_id_token_signer_of_every_algorithm_that_verifies_its_own() {
        let (keys, _clock, _dir) = manager(|_| {}).await;
        let ring = keys.ring();

        let mut kids = Vec::new();
        for alg in IdTokenAlg::ALL {
            let signer = ring.id_token_signer(alg).expect("an ID-token signer");
            let (verifier_alg, key) = ring.id_token_verifier(&signer.kid).expect("its verifier");
            assert_eq!(verifier_alg, alg);
            let token = sign(signer, id_token_key_alg(alg));
            let mut v = jsonwebtoken::Validation::new(algorithm(id_token_key_alg(alg)));
            v.required_spec_claims.clear();
            v.validate_exp = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, key, &v)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            kids.push(signer.kid.clone());
        }
        let access = ring.signer.as_ref().expect("an access-token signer");
        kids.push(access.kid.clone());
        let mut published = published_kids(&ring);
        published.sort();
        kids.sort();
        assert_eq!(
            published, kids,
            "the access key and the three ID-token keys"
        );
    }

    #[tokio::test]
    async fn an_id_token_key_is_never_an_access_token_verifier() {
        // EdDSA for both: the same algorithm, still not the same keys.
        let (keys, _clock, _dir) = manager(|c| c.jwt_alg = JwtAlg::EdDsa).await;
        keys.rotate_id_token_keys().await.expect("rotate");
        let ring = keys.ring();

        let access = ring.signer.as_ref().expect("an access-token signer");
        assert!(ring.verifier(&access.kid).is_some());
        assert!(ring.id_token_verifier(&access.kid).is_none());
        for published in &ring.published {
            let kid = published.jwk.common.key_id.as_deref().expect("kid");
            if kid != access.kid {
                assert!(ring.id_token_verifier(kid).is_some(), "{kid}");
                assert!(ring.verifier(kid).is_none(), "{kid} verifies access tokens");
            }
        }
        // An EdDSA ID token is refused by the access-token path, for its key.
        let signer = ring.id_token_signer(IdTokenAlg::EdDsa).expect("signer");
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(signer.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &serde_json::json!({}), &signer.key).expect("sign");
        assert!(matches!(
            crate::auth::claims::verify_signature(&token, &ring),
            Err(crate::auth::claims::TokenError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn every_published_key_names_its_purpose_beside_the_standard_members() {
        let (keys, _clock, _dir) = manager(|c| c.jwt_alg = JwtAlg::EdDsa).await;
        let ring = keys.ring();
        let access = &ring.signer.as_ref().expect("an access-token signer").kid;

        for published in &ring.published {
            let json = serde_json::to_value(published).expect("JSON");
            let kid = json["kid"].as_str().expect("kid");
            let (purpose, name) = if kid == access {
                (KeyPurpose::Access, "access")
            } else {
                (KeyPurpose::IdToken, "id_token")
            };
            assert_eq!(published.purpose, purpose, "{json}");
            assert_eq!(json[PURPOSE_MEMBER], name, "{json}");
            assert_eq!(json["use"], "sig", "{json}");
            assert!(json["alg"].is_string() && json["kty"].is_string(), "{json}");
        }
    }

    #[tokio::test]
    async fn rotating_id_token_keys_keeps_the_old_ones_published_until_they_retire() {
        let (keys, clock, _dir) = manager(|_| {}).await;
        let before = keys.ring();
        let old: Vec<String> = IdTokenAlg::ALL
            .into_iter()
            .map(|a| before.id_token_signer(a).expect("signer").kid.clone())
            .collect();
        let access = before.signer.as_ref().expect("signer").kid.clone();

        let new = keys.rotate_id_token_keys().await.expect("rotate");

        let ring = keys.ring();
        assert_eq!(new.len(), 3);
        for ((alg, old), new) in IdTokenAlg::ALL.into_iter().zip(&old).zip(&new) {
            assert_ne!(old, new);
            assert_eq!(&ring.id_token_signer(alg).expect("signer").kid, new);
            assert_eq!(ring.id_token_verifier(old).map(|(a, _)| a), Some(alg));
        }
        assert_eq!(ring.signer.as_ref().expect("signer").kid, access);
        assert_eq!(
            ring.published.len(),
            7,
            "one access key, three old, three new"
        );

        // ID tokens live at most access_token_ttl: then the old keys go.
        clock.advance(Duration::from_secs(3600));
        keys.reload().await.expect("reload");
        let ring = keys.ring();
        for old in &old {
            assert!(
                ring.id_token_verifier(old).is_none(),
                "{old} still accepted"
            );
        }
        let mut published = published_kids(&ring);
        published.sort();
        let mut expected = new.clone();
        expected.push(access);
        expected.sort();
        assert_eq!(published, expected);
    }

    #[tokio::test]
    async fn a_shared_secret_publishes_only_the_id_token_keys() {
        let (keys, _clock, _dir) = manager(|c| {
            c.jwt_alg = JwtAlg::Hs256;
            c.jwt_hs256_secret = Some(SecretBytes::new([5u8; 32].to_vec()));
        })
        .await;
        let ring = keys.ring();

        let mut ids: Vec<String> = IdTokenAlg::ALL
            .into_iter()
            .map(|a| ring.id_token_signer(a).expect("signer").kid.clone())
            .collect();
        ids.sort();
        let mut published = published_kids(&ring);
        published.sort();
        assert_eq!(published, ids);
        assert!(
            ring.signer
                .as_ref()
                .expect("signer")
                .kid
                .starts_with("hs256-")
        );
        assert!(
            keys.rotate().await.is_err(),
            "the secret is not rotated here"
        );
        let rotated = keys.rotate_id_token_keys().await.expect("rotate");
        assert_eq!(
            ring_id_signers(&keys.ring()),
            rotated,
            "ID-token keys rotate with any access-token source"
        );
    }

    fn ring_id_signers(ring: &KeyRing) -> Vec<String> {
        IdTokenAlg::ALL
            .into_iter()
            .map(|a| ring.id_token_signer(a).expect("signer").kid.clone())
            .collect()
    }

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
