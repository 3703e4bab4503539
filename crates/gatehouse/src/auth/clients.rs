//! The OpenID client registry: the applications an administrator lets
//! sign users in through gatehouse (issue 20's first slice: the registry
//! alone; no authorization flow reads it yet). Each client is judged here
//! whole, at creation and after every change: its name, its redirect URIs
//! (which the flows will compare exactly, the loopback port aside), its
//! grant types, scopes, roles and ID-token algorithm, and the rules that
//! tie them together.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;

use serde_json::{Value, json};

use super::audit::{Actor, Audit, EventType};
use crate::clock::Clock;
use crate::model::client::FieldError;
use crate::model::oidc::{ClientType, GrantType, IdTokenAlg, SCOPES};
use crate::model::types::{ClientId, ClientSecret, CredentialId, RoleName};
use crate::store::{ClientRecord, ClientStore, ClientUpdate, ClientWriteError};

/// Most redirect URIs (and, apart, post-logout redirect URIs) of a client.
pub const MAX_URIS: usize = 20;

/// Longest redirect URI, in characters (they are ASCII).
pub const MAX_URI_LEN: usize = 2000;

/// Longest client name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// How often a change is tried when others change the client between its
/// read and its write. Each failed try means another change was written
/// (and returned), so this many changes racing on one client all land.
const PATCH_ATTEMPTS: usize = 32;

/// A client to register, as an administrator describes it; what is `None`
/// takes its default.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub name: String,
    /// `confidential` or `public`.
    pub kind: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub first_party: Option<bool>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub id_token_signed_response_alg: Option<String>,
}

/// A change to a client: the fields given are replaced, the others kept.
#[derive(Debug, Clone, Default)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub first_party: Option<bool>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub id_token_signed_response_alg: Option<String>,
}

impl ClientPatch {
    /// Whether it names no field at all.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.redirect_uris.is_none()
            && self.post_logout_redirect_uris.is_none()
            && self.first_party.is_none()
            && self.grant_types.is_none()
            && self.scopes.is_none()
            && self.roles.is_none()
            && self.id_token_signed_response_alg.is_none()
    }
}

/// A client just registered, with its secret (confidential clients only),
/// which exists nowhere else.
#[derive(Debug)]
pub struct NewClient {
    pub record: ClientRecord,
    pub secret: Option<ClientSecret>,
}

/// Why a client could not be registered or changed.
#[derive(Debug, thiserror::Error)]
pub enum ClientFailure {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("no such client")]
    NotFound,
    /// A public client has no secret to rotate.
    #[error("a public client has no secret")]
    NoSecret,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Most clients one node keeps read; past it the cache starts over.
const CLIENT_CACHE_MAX: usize = 4096;

/// What this node read of clients lately, for the OpenID endpoints that
/// authenticate a client on every request (the token endpoint,
/// introspection, revocation) and the authorization endpoint: a store read
/// each time would be most of their cost. An entry is fresh for
/// `fresh_for`, the principal cache's lifetime (zero where other nodes'
/// changes reach this one only through the store, so nothing is kept), and
/// a change or deletion made through this node drops it at once. Unknown
/// ids are never kept.
pub struct ClientCache {
    fresh_for: std::time::Duration,
    entries: std::sync::RwLock<HashMap<ClientId, (ClientRecord, OffsetDateTime)>>,
}

impl ClientCache {
    /// A cache whose entries answer for `fresh_for`, at most the principal
    /// cache's [`super::principals::FRESH_FOR`] (one second): the bound on
    /// how late another process's change reaches this node.
    pub fn new(fresh_for: std::time::Duration) -> Self {
        Self {
            fresh_for: fresh_for.min(super::principals::FRESH_FOR),
            entries: std::sync::RwLock::new(HashMap::new()),
        }
    }

    /// The client as read less than `fresh_for` before `now`.
    pub fn get(&self, id: ClientId, now: OffsetDateTime) -> Option<ClientRecord> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&id)
            .filter(|(_, read_at)| now - *read_at < self.fresh_for)
            .map(|(record, _)| record.clone())
    }

    /// Keeps what was just read from the store.
    pub fn put(&self, record: &ClientRecord, now: OffsetDateTime) {
        if self.fresh_for.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CLIENT_CACHE_MAX {
            entries.clear();
        }
        entries.insert(record.id, (record.clone(), now));
    }

    pub fn forget(&self, id: ClientId) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// The registry of OpenID clients.
pub struct Clients {
    store: Arc<dyn ClientStore>,
    cache: Arc<ClientCache>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    pub fn new(
        store: Arc<dyn ClientStore>,
        cache: Arc<ClientCache>,
        audit: Arc<Audit>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            cache,
            audit,
            clock,
        }
    }

    /// Registers a client; a confidential one gets a fresh secret.
    ///
    /// # Errors
    /// [`ClientFailure::Invalid`] naming every field that breaks a rule
    /// (an unknown role among them); store failures.
    pub async fn create(&self, spec: ClientSpec, actor: Actor) -> Result<NewClient, ClientFailure> {
        let mut errors = Vec::new();
        let name = field(&mut errors, "name", parse_name(&spec.name));
        let kind = field(
            &mut errors,
            "type",
            ClientType::parse(&spec.kind).ok_or_else(|| {
                format!(
                    "must be \"confidential\" or \"public\", not {}",
                    shown(&spec.kind)
                )
            }),
        );
        let redirect_uris = field(
            &mut errors,
            "redirect_uris",
            parse_uris(&spec.redirect_uris),
        );
        let post_logout_redirect_uris = field(
            &mut errors,
            "post_logout_redirect_uris",
            parse_uris(
                spec.post_logout_redirect_uris
                    .as_deref()
                    .unwrap_or_default(),
            ),
        );
        let grant_types = field(
            &mut errors,
            "grant_types",
            spec.grant_types
                .as_deref()
                .map_or_else(|| Ok(GrantType::DEFAULT.to_vec()), parse_grants),
        );
        let scopes = field(
            &mut errors,
            "scopes",
            spec.scopes.as_deref().map_or_else(
                || Ok(SCOPES.iter().map(|s| (*s).to_owned()).collect()),
                parse_scopes,
            ),
        );
        let roles = field(
            &mut errors,
            "roles",
            parse_roles(spec.roles.as_deref().unwrap_or_default()),
        );
        let id_token_alg = field(
            &mut errors,
            "id_token_signed_response_alg",
            spec.id_token_signed_response_alg
                .as_deref()
                .map_or(Ok(IdTokenAlg::DEFAULT), parse_alg),
        );
        let (
            Some(name),
            Some(kind),
            Some(redirect_uris),
            Some(post_logout_redirect_uris),
            Some(grant_types),
            Some(scopes),
            Some(roles),
            Some(id_token_alg),
        ) = (
            name,
            kind,
            redirect_uris,
            post_logout_redirect_uris,
            grant_types,
            scopes,
            roles,
            id_token_alg,
        )
        else {
            return Err(ClientFailure::Invalid(errors));
        };
        let secret = match kind {
            ClientType::Confidential => {
                Some(ClientSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?)
            }
            ClientType::Public => None,
        };
        let record = ClientRecord {
            id: ClientId::new(),
            name,
            kind,
            secret_hash: secret.as_ref().map(ClientSecret::hash),
            redirect_uris,
            post_logout_redirect_uris,
            first_party: spec.first_party.unwrap_or(false),
            grant_types,
            scopes,
            roles,
            id_token_alg,
            created_at: self.clock.now(),
            revision: 0,
        };
        let errors = combination_errors(&record);
        if !errors.is_empty() {
            return Err(ClientFailure::Invalid(errors));
        }
        self.store
            .create_client(&record)
            .await
            .map_err(write_failure)?;
        let event = self
            .audit
            .event(EventType::ClientCreated, actor)
            .detail("client_id", record.id.to_string())
            .detail("name", record.name.as_str())
            .detail("type", record.kind.as_str())
            .detail("redirect_uris", record.redirect_uris.clone())
            .detail("grant_types", grant_names(&record.grant_types))
            .detail("roles", record.roles.clone());
        self.audit.record_one(event).await;
        Ok(NewClient { record, secret })
    }

    /// Every client, oldest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn clients(&self) -> anyhow::Result<Vec<ClientRecord>> {
        self.store.clients().await
    }

    /// One client, if it exists.
    ///
    /// # Errors
    /// Store failures.
    pub async fn client(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>> {
        self.store.client(id).await
    }

    /// One client, from this node's cache of recent reads when fresh (see
    /// [`ClientCache`]), else from the store.
    ///
    /// # Errors
    /// Store failures.
    pub async fn current(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>> {
        let now = self.clock.now();
        if let Some(hit) = self.cache.get(id, now) {
            return Ok(Some(hit));
        }
        let read = self.store.client(id).await?;
        if let Some(record) = &read {
            self.cache.put(record, now);
        }
        Ok(read)
    }

    /// The client a `client_credentials` token obtained with `credential`
    /// speaks for, while it does (see [`ClientRecord::honours`]), read as
    /// [`Clients::current`] reads it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn honouring(
        &self,
        id: ClientId,
        credential: CredentialId,
    ) -> anyhow::Result<Option<ClientRecord>> {
        Ok(self.current(id).await?.filter(|c| c.honours(credential)))
    }

    /// One client as the store has it now (kept in the cache for the next
    /// reads), whatever this node's copy says.
    ///
    /// # Errors
    /// Store failures.
    pub async fn reread(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>> {
        self.cache.forget(id);
        self.current(id).await
    }

    /// Drops this node's copy of a client (read again at its next use).
    pub fn forget(&self, id: ClientId) {
        self.cache.forget(id);
    }

    /// The permissions of the client's roles (what its `client_credentials`
    /// tokens carry), as the store has them now.
    ///
    /// # Errors
    /// Store failures.
    pub async fn permissions(&self, id: ClientId) -> anyhow::Result<Vec<String>> {
        self.store.client_permissions(id).await
    }

    /// Changes the fields `patch` gives, judged with the client's others
    /// as the client is when written (a change that raced another is
    /// judged again on the other's result). A change that changes nothing
    /// writes and records nothing.
    ///
    /// # Errors
    /// [`ClientFailure::Invalid`], [`ClientFailure::NotFound`]; store
    /// failures.
    pub async fn patch(
        &self,
        id: ClientId,
        patch: ClientPatch,
        actor: Actor,
    ) -> Result<ClientRecord, ClientFailure> {
        let parsed = ParsedPatch::parse(&patch)?;
        for _ in 0..PATCH_ATTEMPTS {
            let current = self
                .store
                .client(id)
                .await?
                .ok_or(ClientFailure::NotFound)?;
            let changed = parsed.apply(&current);
            let errors = combination_errors(&changed);
            if !errors.is_empty() {
                return Err(ClientFailure::Invalid(errors));
            }
            let changes = differences(&current, &changed);
            if changes.is_empty() {
                return Ok(current);
            }
            if let Some(written) = self.write_over(changed).await? {
                let event = self
                    .audit
                    .event(EventType::ClientChanged, actor)
                    .detail("client_id", id.to_string())
                    .detail("changes", Value::Object(changes));
                self.audit.record_one(event).await;
                return Ok(written);
            }
        }
        Err(kept_changing(id))
    }

    /// Writes `changed` over the revision it was read at: the record as
    /// stored once written (this node's copy dropped), `None` when another
    /// change came first (the caller reads again and retries).
    ///
    /// # Errors
    /// [`ClientFailure::NotFound`]; store failures.
    async fn write_over(
        &self,
        changed: ClientRecord,
    ) -> Result<Option<ClientRecord>, ClientFailure> {
        match self
            .store
            .update_client(&changed)
            .await
            .map_err(write_failure)?
        {
            ClientUpdate::Updated => {
                self.cache.forget(changed.id);
                Ok(Some(ClientRecord {
                    revision: changed.revision + 1,
                    ..changed
                }))
            }
            ClientUpdate::Missing => Err(ClientFailure::NotFound),
            ClientUpdate::Stale => Ok(None),
        }
    }

    /// Gives a confidential client a new secret, retiring the old one's
    /// credential first (through `sessions`): the tokens obtained with it
    /// are refused before the new secret exists, and a failure on the way
    /// leaves them refused (the client then authenticates with the old
    /// secret, but its new tokens are refused too, until the rotation is
    /// tried again).
    ///
    /// # Errors
    /// [`ClientFailure::NotFound`]; [`ClientFailure::NoSecret`] for a
    /// public client; store failures.
    pub async fn rotate_secret(
        &self,
        id: ClientId,
        sessions: &super::sessions::Sessions,
        actor: Actor,
    ) -> Result<ClientSecret, ClientFailure> {
        for _ in 0..PATCH_ATTEMPTS {
            let current = self
                .store
                .client(id)
                .await?
                .ok_or(ClientFailure::NotFound)?;
            let Some(old) = current.credential() else {
                return Err(ClientFailure::NoSecret);
            };
            sessions.retire_credential(old).await?;
            let secret =
                ClientSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
            let changed = ClientRecord {
                secret_hash: Some(secret.hash()),
                ..current
            };
            if self.write_over(changed).await?.is_some() {
                let event = self
                    .audit
                    .event(EventType::ClientSecretRotated, actor)
                    .detail("client_id", id.to_string());
                self.audit.record_one(event).await;
                return Ok(secret);
            }
        }
        Err(kept_changing(id))
    }

    /// Deletes a client: the credential of the secret it had when it went
    /// (`Some(None)` for a public client), `None` when there was none.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete(
        &self,
        id: ClientId,
        actor: Actor,
    ) -> anyhow::Result<Option<Option<CredentialId>>> {
        let Some(gone) = self.store.delete_client(id).await? else {
            return Ok(None);
        };
        self.cache.forget(id);
        let event = self
            .audit
            .event(EventType::ClientDeleted, actor)
            .detail("client_id", id.to_string())
            .detail("name", gone.name);
        self.audit.record_one(event).await;
        Ok(Some(gone.secret_hash.as_ref().map(CredentialId::of)))
    }
}

/// A change that lost every race it ran (a store failure to the caller).
fn kept_changing(id: ClientId) -> ClientFailure {
    anyhow::anyhow!("the client {id} kept changing under {PATCH_ATTEMPTS} attempts").into()
}

/// A patch whose every field has been judged alone.
#[derive(Debug, Default)]
struct ParsedPatch {
    name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    post_logout_redirect_uris: Option<Vec<String>>,
    first_party: Option<bool>,
    grant_types: Option<Vec<GrantType>>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    id_token_alg: Option<IdTokenAlg>,
}

impl ParsedPatch {
    fn parse(patch: &ClientPatch) -> Result<Self, ClientFailure> {
        let mut errors = Vec::new();
        let mut one = |name: &'static str, result: Option<Result<(), String>>| {
            if let Some(Err(message)) = result {
                errors.push(FieldError::new(name, message));
            }
        };
        let name = patch.name.as_deref().map(parse_name);
        let redirect_uris = patch.redirect_uris.as_deref().map(parse_uris);
        let post_logout = patch.post_logout_redirect_uris.as_deref().map(parse_uris);
        let grant_types = patch.grant_types.as_deref().map(parse_grants);
        let scopes = patch.scopes.as_deref().map(parse_scopes);
        let roles = patch.roles.as_deref().map(parse_roles);
        let alg = patch.id_token_signed_response_alg.as_deref().map(parse_alg);
        one("name", name.as_ref().map(unit));
        one("redirect_uris", redirect_uris.as_ref().map(unit));
        one("post_logout_redirect_uris", post_logout.as_ref().map(unit));
        one("grant_types", grant_types.as_ref().map(unit));
        one("scopes", scopes.as_ref().map(unit));
        one("roles", roles.as_ref().map(unit));
        one("id_token_signed_response_alg", alg.as_ref().map(unit));
        if !errors.is_empty() {
            return Err(ClientFailure::Invalid(errors));
        }
        Ok(Self {
            name: name.and_then(Result::ok),
            redirect_uris: redirect_uris.and_then(Result::ok),
            post_logout_redirect_uris: post_logout.and_then(Result::ok),
            first_party: patch.first_party,
            grant_types: grant_types.and_then(Result::ok),
            scopes: scopes.and_then(Result::ok),
            roles: roles.and_then(Result::ok),
            id_token_alg: alg.and_then(Result::ok),
        })
    }

    /// The client with this patch applied (same revision: the store moves
    /// it when it writes).
    fn apply(&self, current: &ClientRecord) -> ClientRecord {
        let mut c = current.clone();
        if let Some(v) = &self.name {
            c.name.clone_from(v);
        }
        if let Some(v) = &self.redirect_uris {
            c.redirect_uris.clone_from(v);
        }
        if let Some(v) = &self.post_logout_redirect_uris {
            c.post_logout_redirect_uris.clone_from(v);
        }
        if let Some(v) = self.first_party {
            c.first_party = v;
        }
        if let Some(v) = &self.grant_types {
            c.grant_types.clone_from(v);
        }
        if let Some(v) = &self.scopes {
            c.scopes.clone_from(v);
        }
        if let Some(v) = &self.roles {
            c.roles.clone_from(v);
        }
        if let Some(v) = self.id_token_alg {
            c.id_token_alg = v;
        }
        c
    }
}

fn unit<T>(r: &Result<T, String>) -> Result<(), String> {
    r.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// The value of a field judged alone, its message kept when it fails.
fn field<T>(
    errors: &mut Vec<FieldError>,
    name: &'static str,
    result: Result<T, String>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(message) => {
            errors.push(FieldError::new(name, message));
            None
        }
    }
}

/// What the store answered, as the domain reports it.
fn write_failure(e: ClientWriteError) -> ClientFailure {
    match e {
        ClientWriteError::UnknownRole(r) => ClientFailure::Invalid(vec![FieldError::new(
            "roles",
            format!(
                "unknown role {} (create it first: PUT /v1/admin/roles/{{name}})",
                shown(&r)
            ),
        )]),
        ClientWriteError::Store(e) => ClientFailure::Store(e),
    }
}

/// A client's string in a message: quoted, at most 64 characters.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn grant_names(grants: &[GrantType]) -> Vec<&'static str> {
    grants.iter().map(|g| g.as_str()).collect()
}

/// Characters that would make a name read as something it is not where it
/// is shown (a consent page, the audit trail): controls, bidirectional
/// overrides and invisible formatting.
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}')
}

/// A name for people: trimmed, 1 to 100 characters, none of them
/// deceptive.
fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("is required".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(is_deceptive) {
        return Err(
            "must not hold control, bidirectional or invisible formatting characters".into(),
        );
    }
    Ok(name.to_owned())
}

/// A list of redirect URIs (or post-logout ones): each judged by
/// [`check_uri`], at most [`MAX_URIS`], duplicates dropped (the first kept,
/// in order).
fn parse_uris(raw: &[String]) -> Result<Vec<String>, String> {
    let mut uris: Vec<String> = Vec::with_capacity(raw.len().min(MAX_URIS));
    for uri in raw {
        if !uris.contains(uri) {
            uris.push(uri.clone());
        }
    }
    if uris.len() > MAX_URIS {
        return Err(format!("may hold at most {MAX_URIS} URIs"));
    }
    for uri in &uris {
        check_uri(uri).map_err(|why| format!("{} {why}", shown(uri)))?;
    }
    Ok(uris)
}

/// Whether a URI may be registered as a place to send users back to, which
/// the flows will compare exactly with what a client sends (RFC 9700
/// §4.1.3), the port of a loopback `http` URI aside (RFC 8252 §7.3):
/// - visible ASCII only (no spaces, no controls, which URL parsers strip),
///   at most 2,000 characters, no wildcard, no fragment (RFC 6749
///   §3.1.2), no user name or password;
/// - absolute: `https` anywhere; `http` only on the loopback interface
///   (`127.0.0.1`, `[::1]`, `localhost`: RFC 8252 §7.3, §8.3); or a
///   private-use scheme of a native app, which holds a `.` (a reversed
///   domain name such as `com.example.app:/cb`, RFC 8252 §7.1). Any other
///   scheme (`javascript:`, `data:`, `file:`, a scheme without a `.`) is
///   refused;
/// - written in its normal form (lower-case scheme and host, no default
///   port, no `.` or `..` segment, `https://example.com/` rather than
///   `https://example.com`): what is compared is then what a browser goes
///   to, with no second reading of the same text.
fn check_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("is empty".into());
    }
    if uri.len() > MAX_URI_LEN {
        return Err(format!("is longer than {MAX_URI_LEN} characters"));
    }
    if !uri.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("must be ASCII without spaces or control characters".into());
    }
    if uri.contains('*') {
        return Err("must not hold a wildcard (*): register each URI".into());
    }
    if uri.contains('#') {
        return Err("must not have a fragment (#)".into());
    }
    if uri.contains('\\') {
        return Err("must not hold a backslash".into());
    }
    let url = url::Url::parse(uri).map_err(|_| "is not an absolute URI".to_owned())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password (userinfo)".into());
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
                Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(
                    "uses http, which is allowed only on the loopback interface \
                     (127.0.0.1, [::1], localhost): use https"
                        .into(),
                );
            }
        }
        scheme if scheme.contains('.') => {}
        scheme => {
            return Err(format!(
                "has the scheme {scheme:?}, which is not allowed: use https, http on the \
                 loopback interface, or a native app's private-use scheme such as \
                 com.example.app (RFC 8252 §7.1)"
            ));
        }
    }
    if url.as_str() != uri {
        return Err(format!(
            "is not in normal form: write it as {}",
            shown(url.as_str())
        ));
    }
    Ok(())
}

fn parse_grants(raw: &[String]) -> Result<Vec<GrantType>, String> {
    let mut grants = Vec::new();
    for g in raw {
        let grant = GrantType::parse(g).ok_or_else(|| {
            format!(
                "unknown grant type {} (known: authorization_code, refresh_token, \
                 client_credentials)",
                shown(g)
            )
        })?;
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    if grants.is_empty() {
        return Err("must name at least one grant type".into());
    }
    Ok(grants)
}

fn parse_scopes(raw: &[String]) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in raw {
        if !SCOPES.contains(&s.as_str()) {
            return Err(format!(
                "unknown scope {} (known: {})",
                shown(s),
                SCOPES.join(", ")
            ));
        }
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    Ok(scopes)
}

/// Role names, sorted, without duplicates (whether they exist is the
/// store's to say, as it writes them).
fn parse_roles(raw: &[String]) -> Result<Vec<String>, String> {
    let mut roles = raw
        .iter()
        .map(|r| {
            RoleName::parse(r)
                .map(|n| n.as_str().to_owned())
                .map_err(|m| format!("{}: {m}", shown(r)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    roles.sort();
    roles.dedup();
    Ok(roles)
}

fn parse_alg(raw: &str) -> Result<IdTokenAlg, String> {
    IdTokenAlg::parse(raw)
        .ok_or_else(|| format!("must be RS256, ES256 or EdDSA, not {}", shown(raw)))
}

/// The rules that tie a client's fields together, on the client as it
/// would be stored.
fn combination_errors(c: &ClientRecord) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let has = |g: GrantType| c.grant_types.contains(&g);
    if c.kind == ClientType::Public && has(GrantType::ClientCredentials) {
        errors.push(FieldError::new(
            "grant_types",
            "a public client cannot use client_credentials: it has no secret to \
             authenticate with",
        ));
    } else if has(GrantType::RefreshToken) && !has(GrantType::AuthorizationCode) {
        errors.push(FieldError::new(
            "grant_types",
            "refresh_token needs authorization_code: refresh tokens come only from it",
        ));
    }
    if has(GrantType::AuthorizationCode) && c.redirect_uris.is_empty() {
        errors.push(FieldError::new(
            "redirect_uris",
            "must hold at least one URI while grant_types has authorization_code",
        ));
    }
    if !c.roles.is_empty() && !has(GrantType::ClientCredentials) {
        errors.push(FieldError::new(
            "roles",
            "are the permissions of client_credentials tokens: add client_credentials to \
             grant_types, or leave roles empty",
        ));
    }
    errors
}

/// Each field that differs, with its new value (for `client_changed`).
fn differences(old: &ClientRecord, new: &ClientRecord) -> serde_json::Map<String, Value> {
    let mut changes = serde_json::Map::new();
    let mut note = |name: &str, differs: bool, value: Value| {
        if differs {
            changes.insert(name.to_owned(), value);
        }
    };
    note("name", old.name != new.name, json!(new.name));
    note(
        "redirect_uris",
        old.redirect_uris != new.redirect_uris,
        json!(new.redirect_uris),
    );
    note(
        "post_logout_redirect_uris",
        old.post_logout_redirect_uris != new.post_logout_redirect_uris,
        json!(new.post_logout_redirect_uris),
    );
    note(
        "first_party",
        old.first_party != new.first_party,
        json!(new.first_party),
    );
    note(
        "grant_types",
        old.grant_types != new.grant_types,
        json!(grant_names(&new.grant_types)),
    );
    note("scopes", old.scopes != new.scopes, json!(new.scopes));
    note("roles", old.roles != new.roles, json!(new.roles));
    note(
        "id_token_signed_response_alg",
        old.id_token_alg != new.id_token_alg,
        json!(new.id_token_alg.as_str()),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_of_every_allowed_kind_pass() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com/cb?tenant=a",
            "https://192.0.2.1:8443/cb",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51004/oauth/cb",
            "http://[::1]:8080/cb",
            "http://localhost:3000/cb",
            "com.example.app:/oauth2redirect",
            "com.example.app://cb",
        ] {
            assert_eq!(check_uri(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn redirect_uris_of_every_refused_kind_are_refused() {
        for bad in [
            "",
            "/callback",
            "app.example.com/cb",
            "http://app.example.com/cb",
            "http://127.0.0.2/cb",
            "http://localhost.evil.example/cb",
            "http://127.0.0.1.nip.io/cb",
            "https://app.example.com/cb#frag",
            "https://*.example.com/cb",
            "https://app.example.com/*",
            "https://user:pw@app.example.com/cb",
            "https://user@app.example.com/cb",
            "javascript:alert(1)",
            "JavaScript:alert(1)//",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "myapp:/cb",
            "ftp://example.com/cb",
            "https://app.example.com/c b",
            " https://app.example.com/cb",
            "https://app.example.com/cb\n",
            "https://app.exämple.com/cb",
            "https:\\\\evil.example/cb",
            "https://app.example.com",
            "HTTPS://app.example.com/cb",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com/a/../cb",
            "http://127.1/cb",
            "http://[0:0:0:0:0:0:0:1]/cb",
            "https:///cb",
            "com.example.app://user@host/cb",
        ] {
            assert!(check_uri(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_URI_LEN));
        assert!(check_uri(&long).is_err());
    }

    #[test]
    fn uri_lists_are_bounded_and_deduplicated_in_order() {
        let uris: Vec<String> = (0..MAX_URIS)
            .map(|i| format!("https://app.example.com/{i}"))
            .collect();
        assert_eq!(parse_uris(&uris).expect("20 pass"), uris);
        let mut more = uris.clone();
        more.push("https://app.example.com/x".into());
        assert!(parse_uris(&more).is_err());
        let twice = vec![uris[1].clone(), uris[0].clone(), uris[1].clone()];
        assert_eq!(
            parse_uris(&twice).expect("ok"),
            [uris[1].clone(), uris[0].clone()]
        );
    }

    #[test]
    fn names_are_trimmed_bounded_and_plain() {
        assert_eq!(parse_name("  Orders  ").as_deref(), Ok("Orders"));
        assert_eq!(
            parse_name("'; DROP TABLE clients; --").as_deref(),
            Ok("'; DROP TABLE clients; --")
        );
        assert!(parse_name("   ").is_err());
        assert!(parse_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(parse_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        for bad in ["a\u{202e}b", "a\u{200b}b", "a\nb", "a\u{0}b"] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }

    fn record(kind: ClientType, grants: &[GrantType]) -> ClientRecord {
        ClientRecord {
            id: ClientId::new(),
            name: "c".into(),
            kind,
            secret_hash: None,
            redirect_uris: vec!["https://app.example.com/cb".into()],
            post_logout_redirect_uris: vec![],
            first_party: false,
            grant_types: grants.to_vec(),
            scopes: vec![],
            roles: vec![],
            id_token_alg: IdTokenAlg::DEFAULT,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            revision: 0,
        }
    }

    #[test]
    fn the_client_cache_keeps_reads_for_its_lifetime_only() {
        use std::time::Duration;
        let t0 = time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1000);
        let client = record(ClientType::Public, &GrantType::DEFAULT);
        let cache = ClientCache::new(Duration::from_secs(1));
        assert_eq!(cache.get(client.id, t0), None);
        cache.put(&client, t0);
        assert_eq!(
            cache.get(client.id, t0 + Duration::from_millis(999)),
            Some(client.clone())
        );
        assert_eq!(
            cache.get(client.id, t0 + Duration::from_secs(1)),
            None,
            "stale"
        );
        cache.put(&client, t0);
        cache.forget(client.id);
        assert_eq!(
            cache.get(client.id, t0),
            None,
            "a change through this node drops it"
        );
        let never = ClientCache::new(Duration::ZERO);
        never.put(&client, t0);
        assert_eq!(
            never.get(client.id, t0),
            None,
            "a zero lifetime keeps nothing"
        );
    }

    #[test]
    fn the_fields_rules_together() {
        use GrantType::*;
        let fields = |c: &ClientRecord| -> Vec<&str> {
            combination_errors(c).iter().map(|e| e.field).collect()
        };
        assert!(fields(&record(ClientType::Public, &GrantType::DEFAULT)).is_empty());
        assert_eq!(
            fields(&record(ClientType::Public, &[ClientCredentials])),
            ["grant_types"]
        );
        assert!(fields(&record(ClientType::Confidential, &[ClientCredentials])).is_empty());
        assert_eq!(
            fields(&record(ClientType::Confidential, &[RefreshToken])),
            ["grant_types"]
        );
        let mut no_uris = record(ClientType::Confidential, &[AuthorizationCode]);
        no_uris.redirect_uris.clear();
        assert_eq!(fields(&no_uris), ["redirect_uris"]);
        let mut roles = record(ClientType::Confidential, &GrantType::DEFAULT);
        roles.roles = vec!["reader".into()];
        assert_eq!(fields(&roles), ["roles"]);
        roles.grant_types.push(ClientCredentials);
        assert!(fields(&roles).is_empty());
    }

    #[test]
    fn grants_scopes_roles_and_algorithms_are_judged() {
        assert!(parse_grants(&["password".into()]).is_err());
        assert!(parse_grants(&[]).is_err());
        assert_eq!(
            parse_grants(&["refresh_token".into(), "refresh_token".into()]),
            Ok(vec![GrantType::RefreshToken])
        );
        assert!(parse_scopes(&["admin".into()]).is_err());
        assert_eq!(parse_scopes(&[]), Ok(vec![]));
        assert_eq!(
            parse_roles(&["b".into(), "a".into(), "b".into()]),
            Ok(vec!["a".into(), "b".into()])
        );
        assert!(parse_roles(&["two words".into()]).is_err());
        assert!(parse_alg("HS256").is_err());
        assert!(parse_alg("none").is_err());
        assert_eq!(parse_alg("EdDSA"), Ok(IdTokenAlg::EdDsa));
    }

    #[test]
    fn an_empty_patch_is_empty() {
        assert!(ClientPatch::default().is_empty());
        assert!(
            !ClientPatch {
                first_party: Some(false),
                ..ClientPatch::default()
            }
            .is_empty()
        );
    }
}
