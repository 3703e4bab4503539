//! The same HTTP journeys on every SQL backend: each scenario is written
//! once and run on a fresh SQLite file and on a fresh PostgreSQL database.

use std::time::Duration;

use gatehouse::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Generates a `sqlite_` and a `postgres_` test for each scenario.
macro_rules! on_every_backend {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)+) => {$(
        #[tokio::test]
        async fn $sqlite() {
            $scenario(|c| TestApp::spawn_with(c)).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let _slot = PG_SLOTS.acquire().await.expect("the semaphore is never closed");
            $scenario(|c| TestApp::spawn_on_postgres(c)).await;
        }
    )+};
}

on_every_backend! {
    cookie_session_journey => sqlite_cookie_session_journey, postgres_cookie_session_journey;
    token_journey => sqlite_token_journey, postgres_token_journey;
    throttling_journey => sqlite_throttling_journey, postgres_throttling_journey;
    admin_journey => sqlite_admin_journey, postgres_admin_journey;
    password_change_journey => sqlite_password_change_journey, postgres_password_change_journey;
}

async fn token_pair(app: &TestApp, user: &TestUser) -> (String, String) {
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.bare_client()
        .post(app.url("/v1/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .expect("request")
}

async fn me_with_bearer(app: &TestApp, token: &str) -> StatusCode {
    app.bare_client()
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
}

async fn cookie_session_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let user = app.create_user().await;
    assert_eq!(
        app.register(&user.email.to_uppercase(), PASSWORD)
            .await
            .status(),
        StatusCode::CONFLICT
    );
    let laptop = app.client();
    let phone = app.client();
    assert_eq!(app.login(&laptop, &user).await.status(), StatusCode::OK);
    assert_eq!(app.login(&phone, &user).await.status(), StatusCode::OK);
    let me: Value = app.get_me(&laptop).await.json().await.expect("json");
    assert_eq!(me["user"]["email"], user.email.as_str());
    assert_eq!(app.sessions(&laptop).await.len(), 2);
    let res = laptop
        .delete(app.url("/v1/sessions?scope=others"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&phone).await.status(), StatusCode::UNAUTHORIZED);
    let res = laptop
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&laptop).await.status(), StatusCode::UNAUTHORIZED);
}

async fn token_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let user = app.create_user().await;
    let (access, refresh_token) = token_pair(&app, &user).await;
    assert_eq!(me_with_bearer(&app, &access).await, StatusCode::OK);
    let res = refresh(&app, &refresh_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let next: Value = res.json().await.expect("json");
    let next_access = next["access_token"].as_str().expect("access");
    assert_eq!(me_with_bearer(&app, next_access).await, StatusCode::OK);
    // Reuse of the spent token ends the session: every token of it dies.
    assert_eq!(
        refresh(&app, &refresh_token).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        me_with_bearer(&app, next_access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with_bearer(&app, &access).await,
        StatusCode::UNAUTHORIZED
    );
    let successor = next["refresh_token"].as_str().expect("refresh");
    assert_eq!(
        refresh(&app, successor).await.status(),
        StatusCode::BAD_REQUEST
    );
}

async fn throttling_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|c| {
        c.login_max_failures = 2;
        c.login_window = Duration::from_secs(60);
    }))
    .await;
    let user = app.create_user().await;
    let client = app.client();
    for _ in 0..2 {
        let res = app
            .login_with(&client, &user.email, "wrong password here")
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.login(&client, &user).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
}

async fn admin_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let admin = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let admin_client = app.client();
    assert_eq!(
        app.login(&admin_client, &admin).await.status(),
        StatusCode::OK
    );
    let (user, user_client) = app.logged_in().await;
    let (access, _) = token_pair(&app, &user).await;
    let id = app
        .get_me(&user_client)
        .await
        .json::<Value>()
        .await
        .expect("json")["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let page: Value = admin_client
        .get(app.url("/v1/admin/users?limit=1"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(page["users"].as_array().expect("users").len(), 1);
    assert!(page["next_cursor"].is_string());
    let res = admin_client
        .patch(app.url(&format!("/v1/admin/users/{id}")))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.get_me(&user_client).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with_bearer(&app, &access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn password_change_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let (user, here) = app.logged_in().await;
    let (other_access, _) = token_pair(&app, &user).await;
    let res = here
        .post(app.url("/v1/me/password"))
        .json(&json!({ "current_password": user.password, "new_password": "another long passphrase" }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&here).await.status(), StatusCode::OK);
    assert_eq!(
        me_with_bearer(&app, &other_access).await,
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .login_with(&app.client(), &user.email, "another long passphrase")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}
