//! The README's tour, end to end: the real gatehouse (in-process, on a
//! fresh SQLite file, over HTTP on port 0) issues a token; the orders
//! service accepts it, enforces its permissions, and refuses it once its
//! session is logged out.

use std::time::{Duration, Instant};

use gatehouse::Config;
use gatehouse::auth::Services;
use gatehouse::auth::accounts::Registrar;
use gatehouse::auth::types::{Permission, RoleName};
use gatehouse::config::DatabaseUrl;
use gatehouse_verify::Verifier;
use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const PASSWORD: &str = "correct horse battery staple";

/// A running gatehouse; stops when dropped.
struct Gatehouse {
    url: String,
    auth: Services,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn gatehouse(configure: impl FnOnce(&mut Config)) -> Gatehouse {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join("gatehouse.db").display()
        )),
        cookie_secure: false,
        ..Config::default()
    };
    configure(&mut config);
    let app = gatehouse::Application::build(config)
        .await
        .expect("gatehouse builds");
    let url = format!("http://{}", app.local_addr());
    let auth = app.services();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Gatehouse {
        url,
        auth,
        _stop: stop,
        _dir: dir,
    }
}

impl Gatehouse {
    /// A user holding a role of its own with these permissions; returns
    /// the email.
    async fn user(&self, role: &str, permissions: &[&str]) -> String {
        let role = RoleName::parse(role).expect("role");
        let perms: Vec<Permission> = permissions
            .iter()
            .map(|p| Permission::parse(p).expect("permission"))
            .collect();
        self.auth
            .admin
            .set_role(&role, &perms, gatehouse::auth::audit::Actor::Cli)
            .await
            .expect("role set");
        let email = format!("{}@example.com", role.as_str());
        self.auth
            .accounts
            .register(&email, PASSWORD.into(), vec![role], Registrar::Operator)
            .await
            .expect("user created");
        email
    }

    /// A password grant; returns the access token.
    async fn token(&self, email: &str) -> String {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/token", self.url))
            .form(&[
                ("grant_type", "password"),
                ("username", email),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .expect("POST /v1/token");
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    async fn logout(&self, token: &str) {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/logout", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST /v1/logout");
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
}

/// The orders service on port 0; returns its base URL.
async fn orders_service(verifier: Verifier) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, orders_service::app(verifier))
            .await
            .expect("the orders service serves");
    });
    url
}

async fn get_orders(svc: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{svc}/orders"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("GET /orders")
}

async fn place_order(svc: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{svc}/orders"))
        .bearer_auth(token)
        .json(&json!({ "item": "tea", "quantity": 2 }))
        .send()
        .await
        .expect("POST /orders")
}

fn challenge(res: &reqwest::Response) -> String {
    res.headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_service_accepts_a_gatehouse_token_and_refuses_it_after_logout() {
    let gh = gatehouse(|_| {}).await;
    let shopper = gh.user("shopper", &["orders:read", "orders:write"]).await;
    let browser = gh.user("browser", &["orders:read"]).await;
    let key = gh
        .auth
        .feed
        .create_resource_server("orders", gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("resource server")
        .key
        .key();
    let verifier = Verifier::builder(gh.url.clone())
        .revocation_feed(key)
        .build()
        .expect("verifier");
    let svc = orders_service(verifier.clone()).await;

    // Open, and closed without a token.
    let res = reqwest::get(format!("{svc}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(res.status(), StatusCode::OK);
    let res = get_orders(&svc, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&res), r#"Bearer realm="gatehouse""#);

    // gatehouse issues a token; the service accepts it.
    let token = gh.token(&shopper).await;
    let res = place_order(&svc, &token).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = get_orders(&svc, Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    let sub = gh
        .auth
        .bearer
        .verify_access_token(&token)
        .expect("fresh")
        .claims
        .sub
        .clone();
    assert_eq!(body["user"], sub.as_str());
    assert_eq!(body["orders"][0]["item"], "tea");

    // Permissions: reading is not writing.
    let read_only = gh.token(&browser).await;
    assert_eq!(
        get_orders(&svc, Some(&read_only)).await.status(),
        StatusCode::OK
    );
    let res = place_order(&svc, &read_only).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        challenge(&res).contains(r#"error="insufficient_scope""#),
        "{}",
        challenge(&res)
    );

    // A tampered token is refused.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let res = get_orders(&svc, Some(&forged)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&res).contains(r#"error="invalid_token""#));

    // Logout at gatehouse: the service refuses the token soon after,
    // through the revocation feed; the other user's token still works.
    let started = Instant::now();
    while verifier.revocation_status().is_none_or(|s| !s.connected) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the feed connects"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gh.logout(&token).await;
    let ended = Instant::now();
    loop {
        let status = get_orders(&svc, Some(&token)).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            ended.elapsed() < Duration::from_secs(2),
            "the service still accepts a logged-out token after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "orders-service: a logged-out token refused {:?} after the logout returned",
        ended.elapsed()
    );
    assert_eq!(
        get_orders(&svc, Some(&read_only)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_the_feed_a_logged_out_token_is_accepted_until_it_expires() {
    // Short-lived tokens, and no leeway in the verifier, so expiry comes
    // within the test.
    let gh = gatehouse(|c| {
        c.access_token_ttl = Duration::from_secs(2);
        c.jwt_leeway = Duration::ZERO;
    })
    .await;
    let shopper = gh.user("shopper", &["orders:read"]).await;
    let verifier = Verifier::builder(gh.url.clone())
        .leeway(Duration::ZERO)
        .build()
        .expect("verifier");
    let svc = orders_service(verifier).await;
    let token = gh.token(&shopper).await;
    let issued = Instant::now();
    assert_eq!(
        get_orders(&svc, Some(&token)).await.status(),
        StatusCode::OK
    );
    gh.logout(&token).await;
    // The documented staleness of a verifier that does not follow the feed.
    assert_eq!(
        get_orders(&svc, Some(&token)).await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(issued.elapsed())).await;
    assert_eq!(
        get_orders(&svc, Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED,
        "expired"
    );
}
