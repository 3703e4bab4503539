//! The `client_credentials` grant and client secret rotation, black-box
//! (docs/api.md, "Client credentials"): a confidential client's own token
//! (`sub` = `client_id`, no `sid`, its roles' permissions), judged by
//! `/v1/verify` and introspection and refused by gatehouse's own API; the
//! secret rotated or the client deleted refuses its tokens at once, on the
//! node that did it and on another one (PostgreSQL alone, and with Redis);
//! and every way to ask for such a token wrongly.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse::config::{AccessRule, Config, RulePolicy};
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// The permissions of the role the service clients hold.
const REPORTS: [&str; 2] = ["reports:read", "reports:write"];

/// `/reports/` needs `reports:read`, `/billing/` `billing:admin`, `/mfa/`
/// a second factor; anything else any caller.
fn rules() -> Vec<AccessRule> {
    let rule = |path: &str, policy: RulePolicy, mfa: bool| AccessRule {
        path: path.into(),
        methods: Vec::new(),
        policy,
        mfa,
    };
    vec![
        rule(
            "/reports/",
            RulePolicy::Permission("reports:read".into()),
            false,
        ),
        rule(
            "/billing/",
            RulePolicy::Permission("billing:admin".into()),
            false,
        ),
        rule("/mfa/", RulePolicy::Authenticated, true),
    ]
}

fn with_rules(c: &mut Config) {
    c.rules = rules();
}

/// A cookie client of a fresh admin, and the `reports` role created.
async fn admin(app: &TestApp) -> Client {
    let user = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let res = client
        .put(app.url("/v1/admin/roles/reports"))
        .json(&json!({ "permissions": REPORTS }))
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success(), "{}", res.status());
    client
}

async fn json_of(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("json")
}

/// `POST /v1/admin/clients` with `body`, by the admin.
async fn register(app: &TestApp, admin: &Client, body: &Value) -> Response {
    admin
        .post(app.url("/v1/admin/clients"))
        .json(body)
        .send()
        .await
        .expect("request")
}

/// A service client registered through the admin API: (id, secret).
async fn service(app: &TestApp, admin: &Client) -> (String, String) {
    let body = json!({
        "name": "Report builder",
        "type": "confidential",
        "redirect_uris": [],
        "grant_types": ["client_credentials"],
        "roles": ["reports"],
    });
    let body = json_of(register(app, admin, &body).await, StatusCode::CREATED).await;
    (
        body["client"]["client_id"].as_str().expect("id").to_owned(),
        body["client_secret"].as_str().expect("secret").to_owned(),
    )
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn grant(app: &TestApp, id: &str, secret: &str, extra: &[(&str, &str)]) -> Response {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    app.bare_client()
        .post(app.url("/v1/token"))
        .header(AUTHORIZATION, basic(id, secret))
        .form(&form)
        .send()
        .await
        .expect("request")
}

/// A token the grant must give.
async fn token_of(app: &TestApp, id: &str, secret: &str) -> String {
    let body = json_of(grant(app, id, secret, &[]).await, StatusCode::OK).await;
    body["access_token"].as_str().expect("token").to_owned()
}

/// The claims of a JWT, unverified (the server's verdicts are asserted
/// separately).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

fn header(token: &str) -> Value {
    let header = token.split('.').next().expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("json")
}

/// `GET /v1/verify` for `path` with the token.
async fn verify(app: &TestApp, token: &str, path: &str) -> Response {
    app.bare_client()
        .get(app.url("/v1/verify"))
        .bearer_auth(token)
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", path)
        .send()
        .await
        .expect("request")
}

async fn introspect(app: &TestApp, id: &str, secret: &str, token: &str) -> Value {
    let res = app
        .bare_client()
        .post(app.url("/oauth2/introspect"))
        .header(AUTHORIZATION, basic(id, secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("request");
    json_of(res, StatusCode::OK).await
}

async fn rotate(app: &TestApp, admin: &Client, id: &str) -> Response {
    admin
        .post(app.url(&format!("/v1/admin/clients/{id}/secret")))
        .send()
        .await
        .expect("request")
}

/// The grant, the token's claims, and what each endpoint makes of it.
async fn journey(app: &TestApp) {
    let admin = admin(app).await;
    let (id, secret) = service(app, &admin).await;
    let res = grant(app, &id, &secret, &[]).await;
    assert_eq!(
        res.headers().get(CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let body = json_of(res, StatusCode::OK).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "reports:read reports:write");
    assert!(body["expires_in"].as_u64().expect("expires_in") > 0);
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();

    // The contract's claims: the client as subject, no session.
    assert_eq!(header(&token)["typ"], "at+jwt");
    let c = claims(&token);
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["client_id"], id.as_str());
    assert!(c.get("sid").is_none(), "{c}");
    let credential = c["credential_id"].as_str().expect("credential_id");
    assert!(uuid::Uuid::parse_str(credential).is_ok(), "{credential}");
    assert_eq!(c["scope"], "reports:read reports:write");
    assert_eq!(c["roles"], json!(["reports"]));
    let aud: Vec<&str> = c["aud"]
        .as_array()
        .expect("aud")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    assert!(aud.contains(&id.as_str()), "{aud:?}");
    assert!(
        aud.contains(&app.auth.tokens.settings().audience.as_str()),
        "{aud:?}"
    );

    // client_secret_post works too, and a narrower scope narrows the token.
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "reports:read"),
        ])
        .send()
        .await
        .expect("request");
    let narrow = json_of(res, StatusCode::OK).await;
    assert_eq!(narrow["scope"], "reports:read");
    let narrow = narrow["access_token"].as_str().expect("token").to_owned();
    assert_eq!(claims(&narrow)["scope"], "reports:read");

    // Forward authentication: the client is the caller, by the token's
    // permissions.
    let res = verify(app, &token, "/reports/q3").await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(
        h.get("x-auth-request-user").map(|v| v.as_bytes()),
        Some(id.as_bytes())
    );
    assert_eq!(
        h.get("x-auth-request-roles").map(|v| v.as_bytes()),
        Some(&b"reports"[..])
    );
    assert!(h.get("x-auth-request-email").is_none());
    let res = verify(app, &token, "/billing/x").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let challenge = res
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert!(challenge.contains("billing:admin"), "{challenge}");
    // A client proves no second factor.
    assert_eq!(
        verify(app, &token, "/mfa/x").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        verify(app, &token, "/anything").await.status(),
        StatusCode::OK
    );

    // Not a user: gatehouse's own API and UserInfo refuse it.
    for path in ["/v1/me", "/v1/admin/users", "/oauth2/userinfo"] {
        let res = app
            .bare_client()
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }

    // Introspection: active, the client as subject, no user, no session.
    let seen = introspect(app, &id, &secret, &token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["sub"], id.as_str());
    assert_eq!(seen["client_id"], id.as_str());
    assert_eq!(seen["scope"], "reports:read reports:write");
    assert!(seen.get("username").is_none(), "{seen}");
    assert!(seen.get("sid").is_none(), "{seen}");

    // RFC 7009: such a token is revoked by rotating the secret.
    let res = app
        .bare_client()
        .post(app.url("/oauth2/revoke"))
        .header(AUTHORIZATION, basic(&id, &secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "unsupported_token_type"
    );
    assert_eq!(
        verify(app, &token, "/reports/q3").await.status(),
        StatusCode::OK
    );

    // Rotation: the new secret shown once; the old one and its tokens refused
    // at once; the new one works.
    let res = rotate(app, &admin, &id).await;
    assert_eq!(
        res.headers().get(CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let rotated = json_of(res, StatusCode::OK).await;
    assert_eq!(rotated["client_id"], id.as_str());
    let new_secret = rotated["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(new_secret.starts_with("ghcs_") && new_secret != secret);
    for t in [&token, &narrow] {
        assert_eq!(
            verify(app, t, "/reports/q3").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = grant(app, &id, &secret, &[]).await;
    assert_eq!(
        json_of(res, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    let fresh = token_of(app, &id, &new_secret).await;
    assert_ne!(
        claims(&fresh)["credential_id"],
        claims(&token)["credential_id"]
    );
    assert_eq!(
        verify(app, &fresh, "/reports/q3").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        introspect(app, &id, &new_secret, &token).await["active"],
        false
    );
    assert_eq!(
        introspect(app, &id, &new_secret, &fresh).await["active"],
        true
    );

    // Taking the grant away stops its tokens too.
    let res = admin
        .patch(app.url(&format!("/v1/admin/clients/{id}")))
        .json(&json!({ "grant_types": ["authorization_code"], "roles": [], "redirect_uris": ["https://app.example.com/cb"] }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        verify(app, &fresh, "/reports/q3").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = grant(app, &id, &new_secret, &[]).await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "unauthorized_client"
    );

    // Deletion: a second service's token is refused at once.
    let (id2, secret2) = service(app, &admin).await;
    let token2 = token_of(app, &id2, &secret2).await;
    assert_eq!(
        verify(app, &token2, "/reports/q3").await.status(),
        StatusCode::OK
    );
    let res = admin
        .delete(app.url(&format!("/v1/admin/clients/{id2}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        verify(app, &token2, "/reports/q3").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        introspect(app, &id, &new_secret, &token2).await["active"],
        false
    );

    // The audit trail names the rotation, never the secret.
    let res = admin
        .get(app.url("/v1/admin/audit?type=client_secret_rotated"))
        .send()
        .await
        .expect("request");
    let audit = json_of(res, StatusCode::OK).await;
    let text = audit.to_string();
    assert!(text.contains(&id), "{text}");
    assert!(
        !text.contains(&new_secret) && !text.contains(&secret),
        "{text}"
    );
}

#[tokio::test]
async fn client_credentials_journey_on_sqlite() {
    journey(&TestApp::spawn_with(with_rules).await).await;
}

#[tokio::test]
async fn client_credentials_journey_on_postgres() {
    journey(&TestApp::spawn_on_postgres(with_rules).await).await;
}

#[tokio::test]
async fn client_credentials_journey_on_postgres_and_redis() {
    let app = TestApp::spawn_on_redis(with_rules).await;
    following(&app).await;
    journey(&app).await;
}

/// Two nodes on one database: the rotation made through node A refuses
/// the token at node B on its next request, with no Redis (B reads the
/// client) and with Redis (B's revocation set hears it).
async fn another_node_refuses_at_once(redis: bool) {
    let pg = PgDatabase::create().await;
    let prefix = if redis {
        Some(RedisPrefix::create().await)
    } else {
        None
    };
    let shared = |c: &mut Config| {
        c.database_url = gatehouse::config::DatabaseUrl::Postgres(pg.url().into());
        if let Some(p) = &prefix {
            c.redis_url = Some(REDIS_URL.to_owned().into());
            c.redis_key_prefix = p.prefix.clone();
        }
        c.issuer = Some("http://gatehouse.test".into());
        c.rules = rules();
    };
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    if redis {
        following(&a).await;
        following(&b).await;
    }
    let admin = admin(&a).await;
    let (id, secret) = service(&a, &admin).await;
    let token = token_of(&b, &id, &secret).await;
    // B verifies it (and, with Redis, now holds the client in its cache).
    assert_eq!(
        verify(&b, &token, "/reports/q3").await.status(),
        StatusCode::OK
    );
    let res = rotate(&a, &admin, &id).await;
    let new_secret = json_of(res, StatusCode::OK).await["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_eq!(
        verify(&b, &token, "/reports/q3").await.status(),
        StatusCode::UNAUTHORIZED,
        "node B accepted a token of a rotated secret"
    );
    // Nor does B give a token for the old secret, whatever its copy of the
    // client says.
    let res = grant(&b, &id, &secret, &[]).await;
    assert_eq!(
        json_of(res, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    let fresh = token_of(&b, &id, &new_secret).await;
    assert_eq!(
        verify(&a, &fresh, "/reports/q3").await.status(),
        StatusCode::OK
    );
    // Deleted through B: refused at A at once.
    let res = admin
        .delete(b.url(&format!("/v1/admin/clients/{id}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        verify(&a, &fresh, "/reports/q3").await.status(),
        StatusCode::UNAUTHORIZED,
        "node A accepted a token of a deleted client"
    );
}

#[tokio::test]
async fn a_rotation_reaches_another_node_at_once_on_postgres() {
    another_node_refuses_at_once(false).await;
}

#[tokio::test]
async fn a_rotation_reaches_another_node_at_once_with_redis() {
    another_node_refuses_at_once(true).await;
}

/// Every wrong way to ask: no client authentication, a wrong secret, a
/// public client, a client not registered for the grant, a scope beyond
/// its roles, hostile values; and rotation's own refusals.
#[tokio::test]
async fn the_grant_and_the_rotation_refuse_what_they_must() {
    let app = TestApp::spawn_with(with_rules).await;
    let admin = admin(&app).await;
    let (id, secret) = service(&app, &admin).await;

    // No client authentication at all: 401 invalid_client.
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(
        json_of(res, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    // A wrong secret, a forged one, an SQL-looking id: 401 with a Basic
    // challenge.
    for (who, what) in [
        (
            id.as_str(),
            "ghcs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        (id.as_str(), "not-a-secret"),
        (id.as_str(), ""),
        ("' OR '1'='1", secret.as_str()),
    ] {
        let res = grant(&app, who, what, &[]).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{who} {what}");
        assert!(res.headers().contains_key(WWW_AUTHENTICATE));
        assert_eq!(
            json_of(res, StatusCode::UNAUTHORIZED).await["error"],
            "invalid_client"
        );
    }
    // Basic and a body secret at once: 400.
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .header(AUTHORIZATION, basic(&id, &secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // A scope beyond the client's roles, or naming nothing it holds.
    for scope in [
        "gatehouse:admin",
        "reports:read billing:admin",
        "' OR 1=1 --",
    ] {
        let res = grant(&app, &id, &secret, &[("scope", scope)]).await;
        assert_eq!(
            json_of(res, StatusCode::BAD_REQUEST).await["error"],
            "invalid_scope",
            "{scope}"
        );
    }
    // A confidential client registered for the code flow only.
    let res = register(
        &app,
        &admin,
        &json!({
            "name": "Web app",
            "type": "confidential",
            "redirect_uris": ["https://app.example.com/cb"],
        }),
    )
    .await;
    let web = json_of(res, StatusCode::CREATED).await;
    let (web_id, web_secret) = (
        web["client"]["client_id"].as_str().expect("id").to_owned(),
        web["client_secret"].as_str().expect("secret").to_owned(),
    );
    let res = grant(&app, &web_id, &web_secret, &[]).await;
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "unauthorized_client"
    );
    // A public client cannot be registered for it, nor authenticate for it.
    let res = register(
        &app,
        &admin,
        &json!({
            "name": "SPA",
            "type": "public",
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["client_credentials"],
        }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = register(
        &app,
        &admin,
        &json!({
            "name": "SPA",
            "type": "public",
            "redirect_uris": ["https://app.example.com/cb"],
        }),
    )
    .await;
    let spa = json_of(res, StatusCode::CREATED).await;
    let spa_id = spa["client"]["client_id"].as_str().expect("id").to_owned();
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", &spa_id)])
        .send()
        .await
        .expect("request");
    assert_eq!(
        json_of(res, StatusCode::BAD_REQUEST).await["error"],
        "unauthorized_client"
    );

    // Rotation: a public client has no secret (409); unknown or malformed
    // ids are 404; a non-admin is 403; no credential 401. None of them
    // changed anything: the service's secret still works.
    assert_eq!(
        rotate(&app, &admin, &spa_id).await.status(),
        StatusCode::CONFLICT
    );
    for bad in [
        uuid::Uuid::now_v7().to_string(),
        "not-a-uuid".to_owned(),
        "%27%20OR%201%3D1".to_owned(),
    ] {
        assert_eq!(
            rotate(&app, &admin, &bad).await.status(),
            StatusCode::NOT_FOUND,
            "{bad}"
        );
    }
    let (_, someone) = app.logged_in().await;
    assert_eq!(
        rotate(&app, &someone, &id).await.status(),
        StatusCode::FORBIDDEN
    );
    let res = app
        .bare_client()
        .request(
            Method::POST,
            app.url(&format!("/v1/admin/clients/{id}/secret")),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The client's own token is no admin's.
    let token = token_of(&app, &id, &secret).await;
    let res = app
        .bare_client()
        .post(app.url(&format!("/v1/admin/clients/{id}/secret")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        verify(&app, &token, "/reports/q3").await.status(),
        StatusCode::OK
    );
}

/// A token altered to pass as another holder is refused: the client's
/// token with a `sid` added, or with its `credential_id` or `sub` changed,
/// breaks the signature; and a user's token never reads as a client's.
#[tokio::test]
async fn tampered_client_tokens_are_refused() {
    let app = TestApp::spawn_with(with_rules).await;
    let admin = admin(&app).await;
    let (id, secret) = service(&app, &admin).await;
    let token = token_of(&app, &id, &secret).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let original = claims(&token);
    for change in [
        json!({ "sid": uuid::Uuid::now_v7().to_string() }),
        json!({ "credential_id": uuid::Uuid::new_v4().to_string() }),
        json!({ "sub": uuid::Uuid::now_v7().to_string() }),
        json!({ "scope": "reports:read billing:admin" }),
    ] {
        let mut c = original.clone();
        for (k, v) in change.as_object().expect("object") {
            c[k] = v.clone();
        }
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        let forged = parts.join(".");
        assert_eq!(
            verify(&app, &forged, "/reports/q3").await.status(),
            StatusCode::UNAUTHORIZED,
            "{change}"
        );
    }
}

/// A resource server verifying tokens itself with gatehouse-verify and
/// following the revocation feed: it accepts a client's own token (and
/// tells it from a user's), then refuses it once the secret is rotated,
/// without asking gatehouse about the token.
#[tokio::test]
async fn gatehouse_verify_follows_a_rotation_through_the_feed() {
    let app = TestApp::spawn_with(with_rules).await;
    let admin = admin(&app).await;
    let res = admin
        .post(app.url("/v1/admin/resource-servers"))
        .json(&json!({ "name": "reports-api" }))
        .send()
        .await
        .expect("request");
    let key = json_of(res, StatusCode::CREATED).await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let settings = app.auth.tokens.settings();
    let verifier = gatehouse_verify::Verifier::builder(settings.issuer.clone())
        .audience(settings.audience.clone())
        .algorithms(&[gatehouse_verify::Algorithm::EdDSA])
        .jwks_url(app.url("/.well-known/jwks.json"))
        .revocation_feed(key)
        .build()
        .expect("a verifier");
    let (id, secret) = service(&app, &admin).await;
    let token = token_of(&app, &id, &secret).await;
    let claims = verifier.verify(&token).await.expect("accepted");
    assert!(claims.is_client());
    assert_eq!(claims.sub, id);
    assert_eq!(claims.client_id.as_deref(), Some(id.as_str()));
    assert_eq!(claims.sid, None);
    assert!(claims.has_permission("reports:read"));
    // A user's token is not a client's.
    let user = app.create_user().await;
    let (user_token, _) = token_pair(&app, &user).await;
    assert!(
        !verifier
            .verify(&user_token)
            .await
            .expect("accepted")
            .is_client()
    );

    assert_eq!(rotate(&app, &admin, &id).await.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    loop {
        match verifier.verify(&token).await {
            Err(gatehouse_verify::VerifyError::Revoked) => break,
            Ok(_) if started.elapsed() < std::time::Duration::from_secs(10) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => panic!("the rotated credential's token: {other:?}"),
        }
    }
}

/// `gatehouse client rotate-secret`, another process on the server's SQLite
/// file: the running server refuses the old secret's tokens within its
/// client cache's second (as it sees any change the command line makes),
/// and the old secret stops working within it too.
#[tokio::test]
async fn a_rotation_by_the_command_line_reaches_a_running_server_within_a_second() {
    let app = TestApp::spawn_with(with_rules).await;
    let admin = admin(&app).await;
    let (id, secret) = service(&app, &admin).await;
    let token = token_of(&app, &id, &secret).await;
    // The server now holds the client in its cache.
    assert_eq!(
        verify(&app, &token, "/reports/q3").await.status(),
        StatusCode::OK
    );
    let dir = app.db_path.parent().expect("db dir").to_owned();
    let out = crate::process::run(
        crate::process::gatehouse(&dir).args(["client", "rotate-secret", &id]),
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let new_secret = out.stdout.lines().nth(1).expect("the secret").to_owned();
    let rotated = std::time::Instant::now();
    loop {
        let status = verify(&app, &token, "/reports/q3").await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            rotated.elapsed() < std::time::Duration::from_millis(1500),
            "the old secret's token was still accepted {:?} after the rotation",
            rotated.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let res = grant(&app, &id, &secret, &[]).await;
    assert_eq!(
        json_of(res, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_client"
    );
    let fresh = token_of(&app, &id, &new_secret).await;
    assert_eq!(
        verify(&app, &fresh, "/reports/q3").await.status(),
        StatusCode::OK
    );
}
