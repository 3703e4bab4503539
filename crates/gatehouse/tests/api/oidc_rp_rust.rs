//! Interoperability with a Rust relying party (docs/api.md, "OpenID Connect
//! provider"): ramosbugs' `openidconnect` crate (pinned in Cargo.toml) signs
//! a user in at gatehouse as a Rust web app would: discovery, the code flow
//! with PKCE, `state`, `nonce` and `iss` through the hosted login page, the
//! ID token verified by openidconnect against the JWKS (RS256, ES256 and
//! EdDSA clients) with its `at_hash`, UserInfo, refresh, introspection and
//! revocation; on SQLite and on PostgreSQL with Redis. Over HTTPS, as in
//! production: oauth2 refuses a revocation endpoint that is not (RFC 7009 §2).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::Config;
use gatehouse::auth::audit::Actor;
use gatehouse::auth::clients::ClientSpec;
use gatehouse::config::TlsFiles;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreSubjectIdentifierType,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AdditionalProviderMetadata, AsyncHttpClient, AuthorizationCode,
    ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, HttpClientError, HttpRequest,
    HttpResponse, IntrospectionUrl, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    ProviderMetadata, RedirectUrl, RevocationUrl, Scope, SignatureVerificationError,
    TokenIntrospectionResponse as _, TokenResponse as _, UserInfoError,
};
use reqwest::header::LOCATION;
use reqwest::{Certificate, Client, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::helpers::{PASSWORD, TestApp, TestUser, following, unique_email};

/// Registered for every client, never fetched: the test reads the code
/// from the `Location`.
const REDIRECT_URI: &str = "https://app.example.com/callback";

/// Longest one request may take (password hashing in a debug build on a
/// busy machine included).
const TIMEOUT: Duration = Duration::from_secs(30);

/// What gatehouse's discovery names beyond the core metadata, and this
/// relying party uses (RFC 8414 §2).
#[derive(Clone, Debug, Deserialize, Serialize)]
struct TokenEndpoints {
    revocation_endpoint: String,
    introspection_endpoint: String,
}

impl AdditionalProviderMetadata for TokenEndpoints {}

type Metadata = ProviderMetadata<
    TokenEndpoints,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// openidconnect's HTTP client: the tests' reqwest. It never follows a
/// redirect: a relying party that does can be sent to any address by
/// whoever answers its requests (FIELD-NOTES: SSRF).
struct RpHttp(Client);

impl<'c> AsyncHttpClient<'c> for RpHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(Box::new)?;
            let response = self.0.execute(request).await.map_err(Box::new)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(Box::new)?;
            let mut answer = HttpResponse::new(body.to_vec());
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok(answer)
        })
    }
}

/// gatehouse serving HTTPS with a self-signed certificate for 127.0.0.1,
/// and the clients that trust it.
struct HttpsApp {
    app: TestApp,
    cert: Certificate,
    _dir: tempfile::TempDir,
}

impl HttpsApp {
    async fn on_sqlite() -> Self {
        let (dir, files, cert) = certificate();
        let app = TestApp::spawn_with(|c| serve_tls(c, files)).await;
        Self {
            app,
            cert,
            _dir: dir,
        }
    }

    async fn on_postgres_and_redis() -> Self {
        let (dir, files, cert) = certificate();
        let app = TestApp::spawn_on_redis(|c| serve_tls(c, files)).await;
        following(&app).await;
        Self {
            app,
            cert,
            _dir: dir,
        }
    }

    /// A client that trusts the test certificate only and never follows a
    /// redirect; with `cookies`, a browser with its own cookie jar.
    fn client(&self, cookies: bool) -> Client {
        Client::builder()
            .cookie_store(cookies)
            .tls_certs_only([self.cert.clone()])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .expect("client")
    }

    fn rp_http(&self) -> RpHttp {
        RpHttp(self.client(false))
    }

    /// Registers a fresh account over HTTPS (the helpers' clients speak
    /// plain HTTP).
    async fn create_user(&self) -> TestUser {
        let user = TestUser {
            email: unique_email(),
            password: PASSWORD.to_owned(),
        };
        let res = self
            .client(false)
            .post(self.app.url("/v1/users"))
            .json(&serde_json::json!({ "email": user.email, "password": user.password }))
            .send()
            .await
            .expect("POST /v1/users");
        assert_eq!(res.status(), StatusCode::CREATED);
        user
    }

    /// A first-party confidential client with the code and refresh grants,
    /// registered through the domain (the admin API has its own tests),
    /// signing its ID tokens with `alg` (gatehouse's default without).
    async fn register(&self, alg: Option<&str>) -> (ClientId, ClientSecret) {
        let spec = ClientSpec {
            name: "openidconnect relying party".to_owned(),
            kind: "confidential".to_owned(),
            redirect_uris: vec![REDIRECT_URI.to_owned()],
            first_party: Some(true),
            id_token_signed_response_alg: alg.map(str::to_owned),
            ..Default::default()
        };
        let new = self
            .app
            .auth
            .clients
            .create(spec, Actor::Cli)
            .await
            .expect("client registered");
        (
            ClientId::new(new.record.id.to_string()),
            ClientSecret::new(new.secret.expect("a confidential client's secret").secret()),
        )
    }
}

/// A self-signed certificate for 127.0.0.1 as PEM files in a directory of
/// their own, and the same certificate for clients to trust.
fn certificate() -> (tempfile::TempDir, TlsFiles, Certificate) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("writing cert.pem");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("writing key.pem");
    let trusted = Certificate::from_pem(made.cert.pem().as_bytes()).expect("PEM");
    (dir, TlsFiles { cert, key }, trusted)
}

fn serve_tls(config: &mut Config, files: TlsFiles) {
    config.tls = Some(files);
    config.cookie_secure = true;
}

/// The `Location` of a redirect, resolved against the app.
fn location(app: &TestApp, res: &reqwest::Response) -> Url {
    let to = res
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", res.status()))
        .to_str()
        .expect("ascii");
    Url::parse(&app.url("/"))
        .and_then(|base| base.join(to))
        .expect("Location")
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The browser's part of the code flow: from the authorization URL, without
/// a session, through the hosted login page, to the redirect back to the
/// client, which it returns.
async fn browse_to_callback(https: &HttpsApp, user: &TestUser, authorize: &Url) -> Url {
    let app = &https.app;
    let browser = https.client(true);
    let res = browser
        .get(authorize.clone())
        .send()
        .await
        .expect("authorize");
    assert_eq!(res.status(), StatusCode::FOUND, "authorization request");
    let login = location(app, &res);
    assert_eq!(login.path(), "/login", "{login}");
    let return_to = param(&login, "return_to").expect("return_to");
    assert!(return_to.starts_with("/oauth2/authorize?"), "{login}");

    let res = browser
        .post(app.url("/login"))
        .header("Origin", app.origin())
        .form(&[
            ("email", user.email.as_str()),
            ("password", user.password.as_str()),
            ("return_to", return_to.as_str()),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK, "login form");
    // A page that sends the browser on, not a 303 (docs/api.md: the login
    // page's `form-action` does not cover the client's origin).
    let html = res.text().await.expect("html");
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");

    let res = browser
        .get(app.url(&return_to))
        .send()
        .await
        .expect("back to authorize");
    assert_eq!(res.status(), StatusCode::FOUND, "authorization after login");
    location(app, &res)
}

/// The same token with one bit of its signature flipped.
fn with_flipped_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("a compact JWS");
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    bytes[0] ^= 0x01;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// One client's journey: the client signs its ID tokens with `alg`, which
/// its relying party, as it should, allows alone.
async fn sign_in_with_openidconnect(
    https: &HttpsApp,
    user: &TestUser,
    registered: Option<&str>,
    alg: CoreJwsSigningAlgorithm,
) {
    let app = &https.app;
    let http = https.rp_http();
    let (client_id, client_secret) = https.register(registered).await;

    // Discovery, and the JWKS it names.
    let issuer = IssuerUrl::new(app.auth.provider.issuer().to_owned()).expect("issuer");
    let metadata = Metadata::discover_async(issuer.clone(), &http)
        .await
        .expect("discovery");
    let endpoints = metadata.additional_metadata().clone();
    let client = CoreClient::from_provider_metadata(
        metadata.clone(),
        client_id.clone(),
        Some(client_secret.clone()),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_owned()).expect("redirect URI"))
    .set_introspection_url(
        IntrospectionUrl::new(endpoints.introspection_endpoint).expect("introspection URL"),
    )
    .set_revocation_url(RevocationUrl::new(endpoints.revocation_endpoint).expect("revocation URL"));
    let verifier = client.id_token_verifier().set_allowed_algs([alg.clone()]);

    // The authorization request and the browser's part.
    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".to_owned()))
        .add_scope(Scope::new("profile".to_owned()))
        .add_scope(Scope::new("offline_access".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    let callback = browse_to_callback(https, user, &authorize).await;
    assert_eq!(&callback[..url::Position::AfterPath], REDIRECT_URI);
    assert_eq!(param(&callback, "error"), None, "{callback}");
    // openidconnect leaves `state` and the RFC 9207 `iss` to its caller.
    assert_eq!(
        param(&callback, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        param(&callback, "iss").as_deref(),
        Some(metadata.issuer().as_str())
    );
    let code = param(&callback, "code").expect("code");

    // The code grant (client_secret_basic, openidconnect's default).
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("a token endpoint")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("the code grant");
    let access = tokens.access_token().clone();
    let refresh = tokens.refresh_token().expect("a refresh token").clone();

    // The ID token: signature against the JWKS, alg, aud, iss, exp, nonce.
    let id_token = tokens.id_token().expect("an ID token");
    assert_eq!(id_token.signing_alg().expect("signed"), &alg);
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("the ID token verifies");
    // openidconnect checks `at_hash` only when asked to (OIDC Core §3.1.3.8).
    let expected = AccessTokenHash::from_token(
        &access,
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&verifier).expect("the signing key"),
    )
    .expect("at_hash");
    assert_eq!(
        claims.access_token_hash().map(|h| h.as_str()),
        Some(expected.as_str()),
        "at_hash"
    );
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some(user.email.as_str())
    );
    assert_eq!(claims.email_verified(), Some(false));
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some(user.email.as_str())
    );
    assert!(claims.auth_time().is_some(), "auth_time");
    let subject = claims.subject().clone();

    // What openidconnect refuses, on the same token.
    let wrong_nonce = id_token.claims(&verifier, &Nonce::new("another nonce".to_owned()));
    assert!(
        matches!(wrong_nonce, Err(ClaimsVerificationError::InvalidNonce(_))),
        "{wrong_nonce:?}"
    );
    let other_client = CoreIdTokenVerifier::new_confidential_client(
        ClientId::new("another-client".to_owned()),
        client_secret.clone(),
        issuer.clone(),
        metadata.jwks().clone(),
    )
    .set_allowed_algs([alg.clone()]);
    let other_aud = id_token.claims(&other_client, &nonce);
    assert!(
        matches!(other_aud, Err(ClaimsVerificationError::InvalidAudience(_))),
        "{other_aud:?}"
    );
    let tampered =
        CoreIdToken::from_str(&with_flipped_signature(&id_token.to_string())).expect("still a JWS");
    let bad_signature = tampered.claims(&verifier, &nonce);
    assert!(
        matches!(
            bad_signature,
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::CryptoError(_)
            ))
        ),
        "{bad_signature:?}"
    );
    let other_alg = if alg == CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256 {
        CoreJwsSigningAlgorithm::EcdsaP256Sha256
    } else {
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
    };
    let pinned_elsewhere = id_token.claims(
        &client.id_token_verifier().set_allowed_algs([other_alg]),
        &nonce,
    );
    assert!(
        matches!(
            pinned_elsewhere,
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::DisallowedAlg(_)
            ))
        ),
        "{pinned_elsewhere:?}"
    );

    // UserInfo: the same subject (openidconnect compares it when given).
    let info: CoreUserInfoClaims = client
        .user_info(access.clone(), Some(subject.clone()))
        .expect("a UserInfo endpoint")
        .request_async(&http)
        .await
        .expect("UserInfo");
    assert_eq!(info.subject(), &subject);
    assert_eq!(info.email().map(|e| e.as_str()), Some(user.email.as_str()));

    // Refresh: a new access token (and refresh token), no new ID token.
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .expect("a token endpoint")
        .request_async(&http)
        .await
        .expect("the refresh grant");
    assert!(refreshed.id_token().is_none(), "an ID token on refresh");
    let access2 = refreshed.access_token().clone();
    let refresh2 = refreshed
        .refresh_token()
        .expect("a new refresh token")
        .clone();
    assert_ne!(
        refresh2.secret(),
        refresh.secret(),
        "the refresh token rotates"
    );

    // Introspection of the live access token.
    let introspected = client
        .introspect(&access2)
        .set_token_type_hint("access_token")
        .request_async(&http)
        .await
        .expect("introspection");
    assert!(introspected.active(), "the access token is active");
    assert_eq!(introspected.client_id(), Some(&client_id));
    assert_eq!(introspected.sub(), Some(subject.as_str()));
    assert_eq!(introspected.username(), Some(user.email.as_str()));

    // Revoking the refresh token ends the client session: its access token
    // dies with it (docs/api.md, "Revocation").
    client
        .revoke_token(CoreRevocableToken::RefreshToken(refresh2))
        .expect("a revocation endpoint")
        .request_async(&http)
        .await
        .expect("revocation");
    let after: Result<CoreUserInfoClaims, _> = client
        .user_info(access2.clone(), Some(subject))
        .expect("a UserInfo endpoint")
        .request_async(&http)
        .await;
    assert!(
        matches!(
            after,
            Err(UserInfoError::Response(StatusCode::UNAUTHORIZED, _, _))
        ),
        "{after:?}"
    );
    let introspected = client
        .introspect(&access2)
        .request_async(&http)
        .await
        .expect("introspection");
    assert!(
        !introspected.active(),
        "a revoked session's token is inactive"
    );
}

/// One user signs in to three clients, one per ID-token algorithm.
async fn openidconnect_signs_users_in(https: &HttpsApp) {
    let user = https.create_user().await;
    for (registered, alg) in [
        (None, CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256),
        (Some("ES256"), CoreJwsSigningAlgorithm::EcdsaP256Sha256),
        (Some("EdDSA"), CoreJwsSigningAlgorithm::EdDsa),
    ] {
        sign_in_with_openidconnect(https, &user, registered, alg).await;
    }
}

#[tokio::test]
async fn an_openidconnect_relying_party_signs_users_in_on_sqlite() {
    openidconnect_signs_users_in(&HttpsApp::on_sqlite().await).await;
}

#[tokio::test]
async fn an_openidconnect_relying_party_signs_users_in_on_postgres_and_redis() {
    openidconnect_signs_users_in(&HttpsApp::on_postgres_and_redis().await).await;
}

#[tokio::test]
async fn the_relying_partys_http_client_follows_no_redirect() {
    let https = HttpsApp::on_sqlite().await;
    let (client_id, _) = https.register(None).await;
    let mut authorize = Url::parse(&https.app.url("/oauth2/authorize")).expect("url");
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id.as_str())
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "openid")
        .append_pair("code_challenge", &"a".repeat(43))
        .append_pair("code_challenge_method", "S256");
    let request = openidconnect::http::Request::get(authorize.as_str())
        .body(Vec::new())
        .expect("request");
    let answer = https.rp_http().call(request).await.expect("an answer");
    // The login page's redirect, handed back rather than followed.
    assert_eq!(answer.status(), StatusCode::FOUND);
    let to = answer.headers()[LOCATION].to_str().expect("ascii");
    let to = Url::parse(&https.app.url("/"))
        .and_then(|base| base.join(to))
        .expect("Location");
    assert_eq!(to.path(), "/login", "{to}");
}
