//! The OpenID Provider, black-box (docs/api.md, "OpenID Connect provider"):
//! discovery, the authorization endpoint (login, consent, prompt, max_age,
//! PKCE, errors to the page or to the client), the code grant and its ID
//! token (checked against the published JWKS), UserInfo, refresh tokens of
//! client sessions, and the bridge: a client's tokens die with the user's
//! browser session. Negative tests carry the name of the OpenID
//! Foundation's basic-plan module they stand for (`oidcc_*`).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::{AUTHORIZATION, CONTENT_SECURITY_POLICY, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256, Sha512};
use url::Url;

use crate::helpers::*;

const CB: &str = "https://app.example.com/callback";

/// A registered client and what its relying party holds.
struct Rp {
    id: String,
    secret: Option<String>,
    redirect_uri: String,
}

/// Registers a client through the domain (the admin API has its own tests).
async fn register(
    app: &TestApp,
    kind: &str,
    first_party: bool,
    alg: Option<&str>,
    scopes: Option<Vec<&str>>,
) -> Rp {
    let spec = gatehouse::auth::clients::ClientSpec {
        name: "Test app".to_owned(),
        kind: kind.to_owned(),
        redirect_uris: vec![CB.to_owned(), "http://127.0.0.1/cb".to_owned()],
        first_party: Some(first_party),
        id_token_signed_response_alg: alg.map(str::to_owned),
        scopes: scopes.map(|s| s.into_iter().map(str::to_owned).collect()),
        ..Default::default()
    };
    let new = app
        .auth
        .clients
        .create(spec, gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("client registered");
    Rp {
        id: new.record.id.to_string(),
        secret: new.secret.map(|s| s.secret()),
        redirect_uri: CB.to_owned(),
    }
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    // 43 to 128 unreserved characters (RFC 7636 §4.1).
    let verifier = format!(
        "{}.{}~",
        URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `GET /oauth2/authorize` with these parameters on a browser.
async fn authorize(app: &TestApp, browser: &Client, params: &[(&str, &str)]) -> Response {
    let mut url = Url::parse(&app.url("/oauth2/authorize")).expect("url");
    url.query_pairs_mut().extend_pairs(params);
    browser.get(url).send().await.expect("request")
}

fn location(res: &Response) -> Url {
    let loc = res
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", res.status()))
        .to_str()
        .expect("ascii");
    Url::parse(loc)
        .or_else(|_| Url::parse("http://relative.invalid").and_then(|b| b.join(loc)))
        .expect("location")
}

fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The basic authorization request of `rp`, with PKCE.
fn request<'a>(
    rp: &'a Rp,
    challenge: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", rp.id.as_str()),
        ("redirect_uri", rp.redirect_uri.as_str()),
        ("scope", "openid profile email offline_access"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    params
}

/// Runs the request on a signed-in browser and returns the code (the
/// answer must be a redirect to the client with `state` and `iss`).
async fn code_for(app: &TestApp, browser: &Client, params: &[(&str, &str)]) -> String {
    let res = authorize(app, browser, params).await;
    assert_eq!(res.status(), StatusCode::FOUND, "{:?}", res.headers());
    let to = location(&res);
    assert!(
        to.as_str().starts_with(CB) || to.host_str() == Some("127.0.0.1"),
        "{to}"
    );
    let q = query(&to);
    assert_eq!(
        q.get("iss").map(String::as_str),
        Some(app.auth.provider.issuer())
    );
    assert_eq!(q.get("state").map(String::as_str), Some("st-123"), "{to}");
    q.get("code")
        .unwrap_or_else(|| panic!("no code: {to}"))
        .clone()
}

/// `POST /v1/token` with a form; the client authenticates by HTTP Basic
/// when `basic` is given.
async fn token(app: &TestApp, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Response {
    let mut req = app.bare_client().post(app.url("/v1/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.header(
            AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        );
    }
    req.send().await.expect("request")
}

async fn exchange(app: &TestApp, rp: &Rp, code: &str, verifier: &str) -> Response {
    token(
        app,
        Some((&rp.id, rp.secret.as_deref().expect("confidential"))),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", rp.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn json_of(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("json")
}

/// A signed-in browser (a cookie session) of a fresh user.
async fn signed_in(app: &TestApp) -> (TestUser, Client) {
    app.logged_in().await
}

/// Verifies an ID token with the published JWKS, as a relying party does,
/// and returns its claims.
async fn verify_id_token(app: &TestApp, id_token: &str, rp: &Rp) -> Value {
    let header = jsonwebtoken::decode_header(id_token).expect("header");
    let kid = header.kid.clone().expect("kid");
    let jwks: Value = app
        .bare_client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let jwk_value = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not published"))
        .clone();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_value).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[rp.id.as_str()]);
    validation.set_issuer(&[app.auth.provider.issuer()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .expect("the ID token verifies against the JWKS")
        .claims
}

/// An ID token signed under `alg`, and the access token issued with it, of
/// a fresh user through the code flow of a new first-party client (for
/// other modules' tests, e.g. `token decode`).
pub(crate) async fn id_token_of(app: &TestApp, alg: &str) -> (String, String) {
    let rp = register(app, "confidential", true, Some(alg), None).await;
    let (_, browser) = signed_in(app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(app, &browser, &request(&rp, &challenge, &[])).await;
    let body = json_of(exchange(app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let s = |k: &str| body[k].as_str().expect(k).to_owned();
    (s("id_token"), s("access_token"))
}

/// `at_hash` as a relying party computes it.
fn at_hash(alg: &str, token: &str) -> String {
    match alg {
        "EdDSA" => URL_SAFE_NO_PAD.encode(&Sha512::digest(token.as_bytes())[..32]),
        _ => URL_SAFE_NO_PAD.encode(&Sha256::digest(token.as_bytes())[..16]),
    }
}

async fn userinfo(app: &TestApp, token: &str) -> Response {
    app.bare_client()
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

// ------------------------------------------------------------- discovery

#[tokio::test]
async fn discovery_names_every_endpoint_on_the_issuer() {
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let meta: Value = res.json().await.expect("json");
    let issuer = app.auth.provider.issuer().trim_end_matches('/');
    assert_eq!(meta["issuer"], app.auth.provider.issuer());
    assert_eq!(
        meta["authorization_endpoint"],
        format!("{issuer}/oauth2/authorize")
    );
    assert_eq!(meta["token_endpoint"], format!("{issuer}/v1/token"));
    assert_eq!(
        meta["userinfo_endpoint"],
        format!("{issuer}/oauth2/userinfo")
    );
    assert_eq!(meta["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert_eq!(
        meta["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        meta["subject_types_supported"],
        serde_json::json!(["public"])
    );
    for alg in ["RS256", "ES256", "EdDSA"] {
        assert!(
            meta["id_token_signing_alg_values_supported"]
                .as_array()
                .expect("algs")
                .contains(&Value::from(alg)),
            "{alg}"
        );
    }
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password"
        ])
    );
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        assert!(
            meta["token_endpoint_auth_methods_supported"]
                .as_array()
                .expect("methods")
                .contains(&Value::from(method))
        );
    }
}

// --------------------------------------------------------------- journey

/// The whole flow for a first-party confidential client on one backend:
/// login, code, tokens, ID token, UserInfo, refresh, and the bridge.
async fn code_flow_journey(app: &TestApp) {
    let rp = register(app, "confidential", true, None, None).await;
    let (user, browser) = signed_in(app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(app, &browser, &request(&rp, &challenge, &[])).await;
    let body = json_of(exchange(app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let access = body["access_token"].as_str().expect("access").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
    let id_token = body["id_token"].as_str().expect("id_token").to_owned();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["scope"]
            .as_str()
            .expect("scope")
            .starts_with("openid profile email offline_access")
    );

    // The ID token, as a relying party checks it.
    assert_eq!(
        jsonwebtoken::decode_header(&id_token).expect("h").alg,
        jsonwebtoken::Algorithm::RS256
    );
    let claims = verify_id_token(app, &id_token, &rp).await;
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["aud"], rp.id.as_str());
    assert_eq!(claims["email"], user.email.as_str());
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["preferred_username"], user.email.as_str());
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert_eq!(claims["at_hash"], at_hash("RS256", &access).as_str());
    assert!(
        claims["auth_time"].as_i64().expect("auth_time") <= claims["iat"].as_i64().expect("iat")
    );
    let browser_sid = app.sessions(&browser).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        claims["sid"],
        browser_sid.as_str(),
        "sid names the browser session"
    );
    // The client session is no device of the user.
    assert_eq!(app.sessions(&browser).await.len(), 1);

    // The access token: for the client and the configured audience.
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).expect("payload"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(payload["client_id"], rp.id.as_str());
    assert_eq!(
        payload["aud"],
        serde_json::json!([rp.id, app.auth.tokens.settings().audience])
    );
    assert_ne!(
        payload["sid"],
        browser_sid.as_str(),
        "a client session of its own"
    );

    // UserInfo, GET and POST (header and body).
    let info = json_of(userinfo(app, &access).await, StatusCode::OK).await;
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["email"], user.email.as_str());
    let posted = app
        .bare_client()
        .post(app.url("/oauth2/userinfo"))
        .form(&[("access_token", access.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(json_of(posted, StatusCode::OK).await["sub"], claims["sub"]);

    // A client's token does not reach gatehouse's own API.
    let me = app
        .bare_client()
        .get(app.url("/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("request");
    assert_eq!(me.status(), StatusCode::FORBIDDEN);

    // Refresh: only the client may.
    let stolen = token(
        app,
        None,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        json_of(stolen, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    let refreshed = token(
        app,
        Some((&rp.id, rp.secret.as_deref().expect("secret"))),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    let refreshed = json_of(refreshed, StatusCode::OK).await;
    let access2 = refreshed["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh2 = refreshed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_eq!(userinfo(app, &access2).await.status(), StatusCode::OK);

    // The bridge: signing out of gatehouse ends the client's session.
    let out = browser
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    for t in [&access, &access2] {
        let res = userinfo(app, t).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let challenge = res.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }
    let after = token(
        app,
        Some((&rp.id, rp.secret.as_deref().expect("secret"))),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ],
    )
    .await;
    assert_eq!(
        json_of(after, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn code_flow_journey_on_sqlite() {
    code_flow_journey(&TestApp::spawn().await).await;
}

#[tokio::test]
async fn code_flow_journey_on_postgres() {
    code_flow_journey(&TestApp::spawn_on_postgres(|_| {}).await).await;
}

#[tokio::test]
async fn code_flow_journey_on_postgres_and_redis() {
    let app = TestApp::spawn_on_redis(|_| {}).await;
    following(&app).await;
    code_flow_journey(&app).await;
}

#[tokio::test]
async fn id_tokens_are_signed_with_each_clients_algorithm() {
    let app = TestApp::spawn().await;
    let (_, browser) = signed_in(&app).await;
    for alg in ["ES256", "EdDSA", "RS256"] {
        let rp = register(&app, "confidential", true, Some(alg), None).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
        let body = json_of(exchange(&app, &rp, &code, &verifier).await, StatusCode::OK).await;
        let id_token = body["id_token"].as_str().expect("id_token");
        let header = jsonwebtoken::decode_header(id_token).expect("header");
        assert_eq!(format!("{:?}", header.alg), alg);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let claims = verify_id_token(&app, id_token, &rp).await;
        let access = body["access_token"].as_str().expect("access");
        assert_eq!(claims["at_hash"], at_hash(alg, access).as_str(), "{alg}");
    }
}

#[tokio::test]
async fn an_id_token_is_never_an_access_token() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, Some("EdDSA"), None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let body = json_of(exchange(&app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let id_token = body["id_token"].as_str().expect("id_token");
    assert_eq!(
        userinfo(&app, id_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let verify = app
        .bare_client()
        .get(app.url("/v1/verify"))
        .bearer_auth(id_token)
        .header("X-Original-URI", "/")
        .header("X-Original-Method", "GET")
        .send()
        .await
        .expect("request");
    assert_eq!(verify.status(), StatusCode::UNAUTHORIZED);
}

// ------------------------------------------------- the authorization request

#[tokio::test]
async fn oidcc_ensure_registered_redirect_uri() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (_, challenge) = pkce();
    for bad in [
        "https://evil.example/callback",
        "https://app.example.com/callback/",
        "https://app.example.com/callback?x=1",
        "https://app.example.com/callback#f",
        "HTTPS://app.example.com/callback",
        "http://127.0.0.1:8080/other",
        "http://localhost:8080/cb",
    ] {
        let mut params = request(&rp, &challenge, &[]);
        params.retain(|(k, _)| *k != "redirect_uri");
        params.push(("redirect_uri", bad));
        let res = authorize(&app, &browser, &params).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            res.headers().get(LOCATION).is_none(),
            "{bad}: never redirected"
        );
        let page = res.text().await.expect("body");
        assert!(page.contains("not one registered"), "{bad}");
    }
    // The loopback one with any port is the registered one.
    let mut params = request(&rp, &challenge, &[]);
    params.retain(|(k, _)| *k != "redirect_uri");
    params.push(("redirect_uri", "http://127.0.0.1:53123/cb"));
    let res = authorize(&app, &browser, &params).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(location(&res).port(), Some(53123));
}

#[tokio::test]
async fn unknown_or_missing_clients_get_a_page_never_a_redirect() {
    let app = TestApp::spawn().await;
    let (_, browser) = signed_in(&app).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for params in [
        vec![("response_type", "code"), ("redirect_uri", CB)],
        vec![
            ("response_type", "code"),
            ("client_id", unknown.as_str()),
            ("redirect_uri", CB),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", "' OR 1=1 --"),
            ("redirect_uri", CB),
        ],
    ] {
        let res = authorize(&app, &browser, &params).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(res.headers().get(LOCATION).is_none());
    }
    let rp = register(&app, "confidential", true, None, None).await;
    let twice = format!(
        "{}?response_type=code&client_id={}&redirect_uri={CB}&redirect_uri=https://evil.example/",
        app.url("/oauth2/authorize"),
        rp.id
    );
    let res = browser.get(twice).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get(LOCATION).is_none());
}

#[tokio::test]
async fn bad_requests_of_a_genuine_client_go_back_to_it() {
    let app = TestApp::spawn().await;
    let rp = register(
        &app,
        "confidential",
        true,
        None,
        Some(vec!["openid", "email"]),
    )
    .await;
    let (_, browser) = signed_in(&app).await;
    let (_, challenge) = pkce();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            vec![("response_type", "code id_token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "openid profile")], "invalid_scope"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("max_age", "soon")], "invalid_request"),
        (vec![("prompt", "none login")], "invalid_request"),
        (
            vec![("request", "eyJhbGciOiJub25lIn0.e30.")],
            "request_not_supported",
        ),
        (
            vec![("request_uri", "https://evil.example/r")],
            "request_uri_not_supported",
        ),
        (vec![("response_mode", "fragment")], "invalid_request"),
    ];
    for (changes, error) in cases {
        let mut params = request(&rp, &challenge, &[]);
        params.retain(|(k, _)| !changes.iter().any(|(c, _)| c == k) && *k != "scope");
        if !changes.iter().any(|(k, _)| *k == "scope") {
            params.push(("scope", "openid email"));
        }
        params.extend(changes.iter().copied());
        let res = authorize(&app, &browser, &params).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{changes:?}");
        let to = location(&res);
        assert!(to.as_str().starts_with(CB), "{to}");
        let q = query(&to);
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{changes:?}: {to}"
        );
        assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
        assert_eq!(
            q.get("iss").map(String::as_str),
            Some(app.auth.provider.issuer())
        );
        assert!(!q.contains_key("code"));
    }
    // A parameter given twice.
    let url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={CB}&scope=openid&scope=email&state=s",
        app.url("/oauth2/authorize"),
        rp.id
    );
    let res = browser.get(url).send().await.expect("request");
    assert_eq!(
        query(&location(&res)).get("error").map(String::as_str),
        Some("invalid_request")
    );
    // Unknown scopes are ignored (OIDC Core §3.1.2.1).
    let mut params = request(&rp, &challenge, &[]);
    params.retain(|(k, _)| *k != "scope");
    params.push(("scope", "openid email groups"));
    let res = authorize(&app, &browser, &params).await;
    assert!(query(&location(&res)).contains_key("code"));
}

#[tokio::test]
async fn oidcc_prompt_none_not_logged_in() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (_, challenge) = pkce();
    let res = authorize(
        &app,
        &app.client(),
        &request(&rp, &challenge, &[("prompt", "none")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let q = query(&location(&res));
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], app.auth.provider.issuer());
}

#[tokio::test]
async fn without_a_session_the_login_page_comes_first_then_back() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let user = app.create_user().await;
    let browser = app.client();
    let (verifier, challenge) = pkce();
    let params = request(&rp, &challenge, &[("login_hint", user.email.as_str())]);
    let res = authorize(&app, &browser, &params).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let to = location(&res);
    assert_eq!(to.path(), "/login");
    let q = query(&to);
    assert!(q["return_to"].starts_with("/oauth2/authorize?"), "{to}");
    // The login page fills in the hint.
    let page = browser
        .get(app.url(&format!("{}?{}", to.path(), to.query().expect("q"))))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains(&user.email), "login_hint fills the email");
    // The form's post signs in and sends the browser on (a page, so the
    // login form's `form-action` does not govern the redirect to the app).
    let login = browser
        .post(app.url("/login"))
        .header("Origin", app.origin())
        .form(&[
            ("email", user.email.as_str()),
            ("password", user.password.as_str()),
            ("return_to", q["return_to"].as_str()),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let html = login.text().await.expect("html");
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    let back = browser
        .get(app.url(&q["return_to"]))
        .send()
        .await
        .expect("back");
    assert_eq!(back.status(), StatusCode::FOUND);
    let code = query(&location(&back))["code"].clone();
    assert_eq!(
        exchange(&app, &rp, &code, &verifier).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn prompt_login_and_max_age_ask_for_a_fresh_sign_in_once() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |_| {}).await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (user, browser) = signed_in(&app).await;
    let (_, challenge) = pkce();
    for extra in [("prompt", "login"), ("max_age", "60")] {
        clock.advance(Duration::from_secs(120));
        let res = authorize(&app, &browser, &request(&rp, &challenge, &[extra])).await;
        let to = location(&res);
        assert_eq!(to.path(), "/login", "{extra:?}");
        let q = query(&to);
        assert_eq!(q["prompt"], "login");
        let back = q["return_to"].clone();
        assert!(
            !back.contains("prompt=login") && !back.contains("max_age"),
            "{back}"
        );
        // Coming back without signing in again: the login page again.
        let again = browser.get(app.url(&back)).send().await.expect("again");
        assert_eq!(location(&again).path(), "/login", "{extra:?}");
        // The login page shows the form to the signed-in visitor.
        let form = browser
            .get(
                to.as_str()
                    .replace("http://relative.invalid", &app.origin()),
            )
            .send()
            .await
            .expect("form");
        assert_eq!(form.status(), StatusCode::OK);
        // After a fresh sign-in, the code.
        clock.advance(Duration::from_secs(1));
        assert_eq!(app.login(&browser, &user).await.status(), StatusCode::OK);
        let done = browser.get(app.url(&back)).send().await.expect("done");
        assert!(query(&location(&done)).contains_key("code"), "{extra:?}");
    }
    // max_age that the session meets: no login.
    let res = authorize(
        &app,
        &browser,
        &request(&rp, &challenge, &[("max_age", "3600")]),
    )
    .await;
    assert!(query(&location(&res)).contains_key("code"));
}

// ------------------------------------------------------------------- PKCE

#[tokio::test]
async fn oidcc_pkce_public_clients_must_use_s256() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "public", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let mut params = request(&rp, "", &[]);
    params.retain(|(k, _)| !k.starts_with("code_challenge"));
    let res = authorize(&app, &browser, &params).await;
    assert_eq!(query(&location(&res))["error"], "invalid_request");
    // A public client's code grant: client_id alone, with the verifier.
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let wrong = token(
        &app,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &rp.id),
            ("redirect_uri", CB),
            ("code_verifier", &pkce().0),
        ],
    )
    .await;
    assert_eq!(
        json_of(wrong, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // The code was spent by the failed try: a fresh one.
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let ok = token(
        &app,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &rp.id),
            ("redirect_uri", CB),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn pkce_downgrade_and_missing_verifier_are_refused() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    // No challenge in the request, a verifier at the token endpoint.
    let mut params = request(&rp, &challenge, &[]);
    params.retain(|(k, _)| !k.starts_with("code_challenge"));
    let code = code_for(&app, &browser, &params).await;
    let res = exchange(&app, &rp, &code, &verifier).await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // A challenge in the request, no verifier.
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let res = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
        ],
    )
    .await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // Without PKCE at all, a confidential client still gets its tokens.
    let code = code_for(&app, &browser, &params).await;
    let res = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

// -------------------------------------------------------- the code grant

#[tokio::test]
async fn oidcc_codereuse_ends_what_the_code_issued() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let first = json_of(exchange(&app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let access = first["access_token"].as_str().expect("access");
    assert_eq!(userinfo(&app, access).await.status(), StatusCode::OK);
    let again = exchange(&app, &rp, &code, &verifier).await;
    assert_eq!(
        json_of(again, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    assert_eq!(
        userinfo(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refresh = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().expect("r")),
        ],
    )
    .await;
    assert_eq!(refresh.status(), StatusCode::BAD_REQUEST);
    // The browser session itself lives on.
    assert_eq!(app.get_me(&browser).await.status(), StatusCode::OK);
    let pool = app.sql().await;
    let replays: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE type = 'code_replayed'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(replays, 1);
}

#[tokio::test]
async fn concurrent_uses_of_a_code_are_a_replay_and_codes_expire_after_60_seconds() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |_| {}).await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let tries = (0..8).map(|_| exchange(&app, &rp, &code, &verifier));
    let answers = futures_util::future::join_all(tries).await;
    let statuses: Vec<StatusCode> = answers.iter().map(Response::status).collect();
    // Concurrent uses of one code are a replay: at most one exchange gets
    // tokens, none fails otherwise than invalid_grant, and whatever was
    // issued is refused once the replays are seen.
    assert!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count() <= 1
            && statuses
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    for res in answers {
        if res.status() == StatusCode::OK {
            let body: Value = res.json().await.expect("json");
            let access = body["access_token"].as_str().expect("access");
            assert_eq!(
                userinfo(&app, access).await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
    }
    // One exchange alone succeeds.
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    assert_eq!(
        exchange(&app, &rp, &code, &verifier).await.status(),
        StatusCode::OK
    );
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    clock.advance(Duration::from_secs(61));
    let late = exchange(&app, &rp, &code, &verifier).await;
    assert_eq!(
        json_of(late, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_code_is_its_clients_and_its_redirect_uris() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let other = register(&app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let res = exchange(
        &app,
        &Rp {
            redirect_uri: CB.to_owned(),
            ..other
        },
        &code,
        &verifier,
    )
    .await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let res = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn client_authentication_basic_or_post_never_both() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let secret = rp.secret.clone().expect("secret");
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let base = |code: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), "authorization_code".into()),
            ("code".into(), code.into()),
            ("redirect_uri".into(), CB.into()),
            ("code_verifier".into(), verifier.clone()),
        ]
    };
    // oidcc-client-secret-basic with a wrong secret: 401 and the challenge.
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let wrong = gatehouse::auth::types::ClientSecret::generate()
        .expect("rng")
        .secret();
    let form: Vec<(String, String)> = base(&code);
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .header(
            AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{}:{wrong}", rp.id))),
        )
        .form(&form)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("a")
            .starts_with("Basic")
    );
    assert_eq!(
        res.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    // Wrong secret in the body, and no secret for a confidential client.
    for extra in [
        vec![
            ("client_id", rp.id.clone()),
            ("client_secret", wrong.clone()),
        ],
        vec![("client_id", rp.id.clone())],
    ] {
        let mut form = base(&code);
        form.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let res = app
            .bare_client()
            .post(app.url("/v1/token"))
            .form(&form)
            .send()
            .await
            .expect("r");
        assert_eq!(
            json_of(res, StatusCode::UNAUTHORIZED).await["error"],
            "invalid_client"
        );
    }
    // Both ways at once.
    let mut form = base(&code);
    form.push(("client_secret".into(), secret.clone()));
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .header(
            AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{}:{secret}", rp.id))),
        )
        .form(&form)
        .send()
        .await
        .expect("request");
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "invalid_request"
    );
    // client_secret_post works (the code was not spent by the refusals).
    let mut form = base(&code);
    form.push(("client_id".into(), rp.id.clone()));
    form.push(("client_secret".into(), secret));
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&form)
        .send()
        .await
        .expect("r");
    let body = json_of(res, StatusCode::OK).await;
    assert!(body["id_token"].is_string());
    // The token response is never stored.
}

#[tokio::test]
async fn token_responses_are_not_cacheable() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let res = exchange(&app, &rp, &code, &verifier).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
}

// ----------------------------------------------------------------- consent

#[tokio::test]
async fn third_party_clients_ask_consent_once_and_it_can_be_withdrawn() {
    let app = TestApp::spawn().await;
    let rp = register(&app, "confidential", false, None, None).await;
    let (_, browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    // prompt=none before consent: consent_required.
    let res = authorize(
        &app,
        &browser,
        &request(&rp, &challenge, &[("prompt", "none")]),
    )
    .await;
    assert_eq!(query(&location(&res))["error"], "consent_required");
    // The consent page, whose form may go on to the app's origin.
    let res = authorize(&app, &browser, &request(&rp, &challenge, &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("form-action 'self'") && csp.contains("https://app.example.com"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    let page = res.text().await.expect("html");
    assert!(
        page.contains("Test app") && page.contains("Stay signed in"),
        "{page}"
    );
    let request_field = page
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("hidden request field")
        .replace("&amp;", "&");
    // Deny: access_denied to the app.
    let deny = browser
        .post(app.url("/oauth2/consent"))
        .header("Origin", app.origin())
        .form(&[("request", request_field.as_str()), ("decision", "deny")])
        .send()
        .await
        .expect("deny");
    assert_eq!(deny.status(), StatusCode::SEE_OTHER);
    assert_eq!(query(&location(&deny))["error"], "access_denied");
    // From another site: refused.
    let forged = browser
        .post(app.url("/oauth2/consent"))
        .header("Origin", "https://evil.example")
        .form(&[("request", request_field.as_str()), ("decision", "allow")])
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Allow: the code, and a refresh token (offline_access went through the page).
    let allow = browser
        .post(app.url("/oauth2/consent"))
        .header("Origin", app.origin())
        .form(&[("request", request_field.as_str()), ("decision", "allow")])
        .send()
        .await
        .expect("allow");
    assert_eq!(allow.status(), StatusCode::SEE_OTHER);
    let q = query(&location(&allow));
    assert_eq!(q["state"], "st-123");
    let body = json_of(
        exchange(&app, &rp, &q["code"], &verifier).await,
        StatusCode::OK,
    )
    .await;
    assert!(body["refresh_token"].is_string());
    let access = body["access_token"].as_str().expect("access").to_owned();
    // Remembered: the next request gets its code at once, also with prompt=none.
    let res = authorize(
        &app,
        &browser,
        &request(&rp, &challenge, &[("prompt", "none")]),
    )
    .await;
    assert!(query(&location(&res)).contains_key("code"));
    // prompt=consent asks again.
    let res = authorize(
        &app,
        &browser,
        &request(&rp, &challenge, &[("prompt", "consent")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // The account page lists it; removing it signs the app out.
    let account = browser
        .get(app.url("/account"))
        .send()
        .await
        .expect("account")
        .text()
        .await
        .expect("html");
    assert!(account.contains("Applications") && account.contains("Test app"));
    let removed = browser
        .post(app.url(&format!("/account/applications/{}/remove", rp.id)))
        .header("Origin", app.origin())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .expect("remove");
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        userinfo(&app, &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = authorize(
        &app,
        &browser,
        &request(&rp, &challenge, &[("prompt", "none")]),
    )
    .await;
    assert_eq!(query(&location(&res))["error"], "consent_required");
    let pool = app.sql().await;
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT type FROM audit_events WHERE type IN ('consent_given', 'consent_revoked') ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(events, ["consent_given", "consent_revoked"]);
}

// ------------------------------------------------------------------ UserInfo

#[tokio::test]
async fn userinfo_refuses_what_is_not_a_clients_openid_token() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let (own, _) = token_pair(&app, &user).await;
    let res = userinfo(&app, &own).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "gatehouse's own token has no openid"
    );
    let none = app
        .bare_client()
        .get(app.url("/oauth2/userinfo"))
        .send()
        .await
        .expect("r");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    for garbage in [
        "garbage",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        &"a".repeat(9000),
    ] {
        assert_eq!(
            userinfo(&app, garbage).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // oidcc-userinfo-post-body with the header too: one way only.
    let both = app
        .bare_client()
        .post(app.url("/oauth2/userinfo"))
        .bearer_auth(&own)
        .form(&[("access_token", own.as_str())])
        .send()
        .await
        .expect("r");
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
}

// ------------------------------------------ revocation and introspection

/// A first-party confidential client with tokens for a signed-in user:
/// (client, browser, access token, refresh token, ID token).
async fn with_tokens(app: &TestApp) -> (Rp, Client, String, String, String) {
    let rp = register(app, "confidential", true, None, None).await;
    let (_, browser) = signed_in(app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(app, &browser, &request(&rp, &challenge, &[])).await;
    let body = json_of(exchange(app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let s = |k: &str| body[k].as_str().expect(k).to_owned();
    (
        rp,
        browser,
        s("access_token"),
        s("refresh_token"),
        s("id_token"),
    )
}

async fn introspect(app: &TestApp, rp: &Rp, token: &str) -> Value {
    let res = token_like(app, "/oauth2/introspect", rp, &[("token", token)]).await;
    json_of(res, StatusCode::OK).await
}

async fn token_like(app: &TestApp, path: &str, rp: &Rp, form: &[(&str, &str)]) -> Response {
    app.bare_client()
        .post(app.url(path))
        .basic_auth(&rp.id, rp.secret.as_deref())
        .form(form)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn introspection_says_active_only_for_live_tokens_of_the_right_kind() {
    let app = TestApp::spawn().await;
    let (rp, browser, access, refresh, id_token) = with_tokens(&app).await;
    let other = register(&app, "confidential", true, None, None).await;
    let a = introspect(&app, &rp, &access).await;
    assert_eq!(a["active"], true);
    assert_eq!(a["client_id"], rp.id.as_str());
    assert_eq!(a["token_type"], "Bearer");
    assert!(a["scope"].as_str().expect("scope").starts_with("openid"));
    assert!(a["exp"].is_i64() && a["sub"].is_string() && a["username"].is_string());
    let r = introspect(&app, &rp, &refresh).await;
    assert_eq!(
        (r["active"].clone(), r["token_type"].clone()),
        (Value::from(true), Value::from("refresh_token"))
    );
    // An ID token is never active; another client's refresh token neither;
    // an access token is, for any authenticated caller (a resource server).
    assert_eq!(
        introspect(&app, &rp, &id_token).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(
        introspect(&app, &other, &refresh).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(introspect(&app, &other, &access).await["active"], true);
    for garbage in ["", "x", "a.b.c", "' OR 1=1 --", &"A".repeat(43)] {
        let res = token_like(&app, "/oauth2/introspect", &rp, &[("token", garbage)]).await;
        if garbage.is_empty() {
            assert_eq!(
                json_of(res, StatusCode::BAD_REQUEST).await["error"],
                "invalid_request"
            );
        } else {
            assert_eq!(
                json_of(res, StatusCode::OK).await,
                serde_json::json!({"active": false})
            );
        }
    }
    // A resource server's key may introspect too; no caller, a wrong
    // secret, or a public client may not.
    let key = app
        .auth
        .feed
        .create_resource_server("api", gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("created")
        .key;
    let by_rs = app
        .bare_client()
        .post(app.url("/oauth2/introspect"))
        .bearer_auth(key.key())
        .form(&[("token", access.as_str())])
        .send()
        .await
        .expect("r");
    assert_eq!(json_of(by_rs, StatusCode::OK).await["active"], true);
    let nobody = app
        .bare_client()
        .post(app.url("/oauth2/introspect"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .expect("r");
    assert_eq!(
        json_of(nobody, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    let public = register(&app, "public", true, None, None).await;
    let res = app
        .bare_client()
        .post(app.url("/oauth2/introspect"))
        .form(&[
            ("token", access.as_str()),
            ("client_id", public.id.as_str()),
        ])
        .send()
        .await
        .expect("r");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Ended: signing out makes both inactive at once.
    let out = browser
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        introspect(&app, &rp, &access).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(
        introspect(&app, &rp, &refresh).await,
        serde_json::json!({"active": false})
    );
}

#[tokio::test]
async fn revocation_ends_the_client_session_and_only_for_its_client() {
    let app = TestApp::spawn().await;
    let (rp, browser, access, refresh, _) = with_tokens(&app).await;
    let other = register(&app, "confidential", true, None, None).await;
    // Another client cannot revoke it (RFC 7009 §2.1).
    let res = token_like(&app, "/oauth2/revoke", &other, &[("token", &refresh)]).await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "unauthorized_client"
    );
    assert_eq!(userinfo(&app, &access).await.status(), StatusCode::OK);
    // Unknown tokens are no error (§2.2).
    for token in ["nonsense", "a.b.c", &"A".repeat(43)] {
        let res = token_like(&app, "/oauth2/revoke", &rp, &[("token", token)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{token}");
    }
    // Revoking the refresh token ends the session: the access token too.
    let res = token_like(
        &app,
        "/oauth2/revoke",
        &rp,
        &[("token", &refresh), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        userinfo(&app, &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let again = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    // The browser session lives on; a second grant's access token revoked
    // by itself ends its own client session.
    assert_eq!(app.get_me(&browser).await.status(), StatusCode::OK);
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &request(&rp, &challenge, &[])).await;
    let body = json_of(exchange(&app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let access2 = body["access_token"].as_str().expect("a");
    let res = token_like(&app, "/oauth2/revoke", &rp, &[("token", access2)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        userinfo(&app, access2).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Without client authentication: 401.
    let res = app
        .bare_client()
        .post(app.url("/oauth2/revoke"))
        .form(&[("token", access2)])
        .send()
        .await
        .expect("r");
    assert_eq!(
        json_of(res, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    let pool = app.sql().await;
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE type = 'session_ended' AND details LIKE '%token_revoked%'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(revoked, 2);
}

// ------------------------------------------------ RP-initiated logout

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_goes_back_to_a_registered_uri() {
    let app = TestApp::spawn().await;
    let (rp, browser, access, _, id_token) = with_tokens(&app).await;
    let bye = "https://app.example.com/bye";
    let patch = gatehouse::auth::clients::ClientPatch {
        post_logout_redirect_uris: Some(vec![bye.to_owned()]),
        ..Default::default()
    };
    app.auth
        .clients
        .patch(
            gatehouse::auth::types::ClientId::parse(&rp.id).expect("id"),
            patch,
            gatehouse::auth::audit::Actor::Cli,
        )
        .await
        .expect("patched");
    let logout = |params: Vec<(&'static str, String)>| {
        let mut url = Url::parse(&app.url("/oauth2/logout")).expect("url");
        url.query_pairs_mut().extend_pairs(params);
        browser.get(url).send()
    };
    // An unregistered URI, a forged hint, a hint of another client: pages.
    for params in [
        vec![
            ("id_token_hint", id_token.clone()),
            (
                "post_logout_redirect_uri",
                "https://evil.example/".to_owned(),
            ),
        ],
        vec![
            (
                "id_token_hint",
                format!("{}x", &id_token[..id_token.len() - 1]),
            ),
            ("post_logout_redirect_uri", bye.to_owned()),
        ],
        vec![
            ("id_token_hint", id_token.clone()),
            ("client_id", uuid::Uuid::now_v7().to_string()),
        ],
        vec![("post_logout_redirect_uri", bye.to_owned())],
        vec![("id_token_hint", access.clone())],
    ] {
        let res = logout(params.clone()).await.expect("logout");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(res.headers().get(LOCATION).is_none());
    }
    assert_eq!(
        app.get_me(&browser).await.status(),
        StatusCode::OK,
        "nothing ended yet"
    );
    // With the hint: the browser session ends, the cookie goes, back to the app.
    let res = logout(vec![
        ("id_token_hint", id_token.clone()),
        ("post_logout_redirect_uri", bye.to_owned()),
        ("state", "bye-state".to_owned()),
    ])
    .await
    .expect("logout");
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(location(&res).as_str(), format!("{bye}?state=bye-state"));
    let cleared = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().is_ok_and(|c| c.contains("Max-Age=0")));
    assert!(cleared, "the cookie is removed");
    assert_eq!(
        app.get_me(&browser).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        userinfo(&app, &access).await.status(),
        StatusCode::UNAUTHORIZED,
        "the client's session went with it"
    );
}

#[tokio::test]
async fn rp_initiated_logout_without_a_hint_asks_first() {
    let app = TestApp::spawn().await;
    let (rp, browser, access, _, _) = with_tokens(&app).await;
    let res = browser
        .get(app.url(&format!("/oauth2/logout?client_id={}", rp.id)))
        .send()
        .await
        .expect("r");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .expect("html")
            .contains("Sign out of gatehouse?")
    );
    assert_eq!(
        app.get_me(&browser).await.status(),
        StatusCode::OK,
        "a GET alone ends nothing"
    );
    let forged = browser
        .post(app.url("/oauth2/logout/confirm"))
        .header("Origin", "https://evil.example")
        .form(&[
            ("client_id", rp.id.as_str()),
            ("post_logout_redirect_uri", ""),
            ("state", ""),
        ])
        .send()
        .await
        .expect("r");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let confirmed = browser
        .post(app.url("/oauth2/logout/confirm"))
        .header("Origin", app.origin())
        .form(&[
            ("client_id", rp.id.as_str()),
            ("post_logout_redirect_uri", ""),
            ("state", ""),
        ])
        .send()
        .await
        .expect("r");
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&confirmed).path(), "/login");
    assert_eq!(
        app.get_me(&browser).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        userinfo(&app, &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_disabled_user_stops_the_clients_tokens() {
    let app = TestApp::spawn().await;
    let (rp, browser, access, refresh, _) = with_tokens(&app).await;
    let me: Value = app.get_me(&browser).await.json().await.expect("me");
    let user_id = gatehouse::auth::types::UserId::parse(me["user"]["id"].as_str().expect("id"))
        .expect("uuid");
    app.auth
        .admin
        .set_disabled(user_id, true, gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("disabled");
    assert_eq!(
        userinfo(&app, &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    assert_eq!(introspect(&app, &rp, &access).await["active"], false);
}

#[tokio::test]
async fn deleting_a_client_ends_every_session_it_holds() {
    let app = TestApp::spawn_on_redis(|_| {}).await;
    following(&app).await;
    let (rp, browser, access, refresh, _) = with_tokens(&app).await;
    // A second user of the same client, and another client's tokens.
    let (_, other_browser) = signed_in(&app).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &other_browser, &request(&rp, &challenge, &[])).await;
    let body = json_of(exchange(&app, &rp, &code, &verifier).await, StatusCode::OK).await;
    let access2 = body["access_token"].as_str().expect("access").to_owned();
    let (_, _, kept, _, _) = with_tokens(&app).await;
    let id = gatehouse::auth::types::ClientId::parse(&rp.id).expect("id");
    assert!(
        app.auth
            .provider
            .delete_client(id, gatehouse::auth::audit::Actor::Cli)
            .await
            .expect("deleted")
    );
    for t in [&access, &access2] {
        assert_eq!(userinfo(&app, t).await.status(), StatusCode::UNAUTHORIZED);
    }
    let res = token(
        &app,
        Some((&rp.id, rp.secret.as_deref().expect("s"))),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        json_of(res, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    // The users stay signed in to gatehouse; another client's tokens live on.
    assert_eq!(app.get_me(&browser).await.status(), StatusCode::OK);
    assert_eq!(userinfo(&app, &kept).await.status(), StatusCode::OK);
    // Deleting it again finds nothing.
    assert!(
        !app.auth
            .provider
            .delete_client(id, gatehouse::auth::audit::Actor::Cli)
            .await
            .expect("read")
    );
}
