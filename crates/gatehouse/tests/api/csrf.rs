//! Cross-site request forgery: cookie-authenticated writes (and logins) from
//! an `Origin` that is not allowed are refused with 403 and change nothing.

use reqwest::header::{AUTHORIZATION, ORIGIN, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use serde_json::json;

use crate::helpers::*;

const EVIL: &str = "https://evil.example";

/// POST /v1/logout on the client's cookie, with the given `Origin` (none
/// when `None`).
async fn logout_from(app: &TestApp, client: &Client, origin: Option<&str>) -> Response {
    let mut req = client.post(app.url("/v1/logout"));
    if let Some(o) = origin {
        req = req.header(ORIGIN, o);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn logout_from_a_foreign_origin_is_403_and_the_session_lives_on() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    let res = logout_from(&app, &client, Some(EVIL)).await;
    assert!(
        set_cookie_header(&res, app.cookie_name()).is_none(),
        "the cookie is not cleared"
    );
    assert_problem(res, StatusCode::FORBIDDEN).await;

    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_from_the_issuer_origin_is_204() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    let res = logout_from(&app, &client, Some(&app.origin())).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.get_me(&client).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_without_origin_is_204() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    let res = logout_from(&app, &client, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.get_me(&client).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_from_an_allowed_origin_is_204() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let (_, client) = app.logged_in().await;

    let res = logout_from(&app, &client, Some("https://app.example.com")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.get_me(&client).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn allowed_origins_do_not_replace_the_issuer_origin() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let (_, client) = app.logged_in().await;

    let res = logout_from(&app, &client, Some(&app.origin())).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn null_origin_is_403() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    let res = logout_from(&app, &client, Some("null")).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;

    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn same_host_with_another_scheme_or_port_is_foreign() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    let other_port = format!(
        "http://{}:{}",
        app.addr.ip(),
        app.addr.port().wrapping_add(1).max(1)
    );
    let other_scheme = format!("https://{}", app.addr);

    for origin in [other_port, other_scheme] {
        let res = logout_from(&app, &client, Some(&origin)).await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }

    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_other_sessions_from_a_foreign_origin_is_403_and_they_live_on() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    let other = app.client();
    assert_eq!(app.login(&other, &user).await.status(), StatusCode::OK);

    let res = client
        .delete(app.url("/v1/sessions?scope=others"))
        .header(ORIGIN, EVIL)
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::FORBIDDEN).await;

    assert_eq!(app.get_me(&other).await.status(), StatusCode::OK);
    assert_eq!(app.sessions(&client).await.len(), 2);
}

#[tokio::test]
async fn password_change_from_a_foreign_origin_is_403_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    let new_password = "an entirely different passphrase";

    let res = client
        .post(app.url("/v1/me/password"))
        .header(ORIGIN, EVIL)
        .json(&json!({ "current_password": user.password, "new_password": new_password }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::FORBIDDEN).await;

    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
    let res = app
        .login_with(&app.client(), &user.email, new_password)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_from_a_foreign_origin_is_403_without_a_cookie() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;

    let res = app
        .bare_client()
        .post(app.url("/v1/login"))
        .header(ORIGIN, EVIL)
        .json(&json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    assert!(
        res.headers().get(reqwest::header::SET_COOKIE).is_none(),
        "no Set-Cookie on a refused login"
    );
    assert_problem(res, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn login_from_the_issuer_origin_is_200_with_a_cookie() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;

    let res = app
        .bare_client()
        .post(app.url("/v1/login"))
        .header(ORIGIN, app.origin())
        .json(&json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
}

#[tokio::test]
async fn safe_method_from_a_foreign_origin_is_not_refused() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    let res = client
        .get(app.url("/v1/me"))
        .header(ORIGIN, EVIL)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn write_with_an_authorization_header_is_not_subject_to_the_origin_check() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    // The cookie rides along too, but the Authorization header decides: no
    // bearer token is valid yet, so 401 (not the CSRF 403).
    let res = client
        .post(app.url("/v1/logout"))
        .header(ORIGIN, EVIL)
        .header(AUTHORIZATION, "Bearer not-a-token")
        .send()
        .await
        .expect("request");
    let challenge = res
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );

    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_from_a_foreign_origin_is_403_even_with_an_authorization_header() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app
        .bare_client()
        .post(app.url("/v1/login"))
        .header(ORIGIN, EVIL)
        .header(reqwest::header::AUTHORIZATION, "Basic eDp5")
        .json(&json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    assert!(res.headers().get(reqwest::header::SET_COOKIE).is_none());
    assert_problem(res, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn the_token_endpoint_ignores_the_cookie_and_so_the_origin() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    let res = client
        .post(app.url("/v1/token"))
        .header(ORIGIN, EVIL)
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(reqwest::header::SET_COOKIE).is_none());
}
