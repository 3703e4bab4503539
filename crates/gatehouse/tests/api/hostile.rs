//! Malformed, oversized and hostile input: never a 500 or a panic, always a
//! clear 4xx problem document, and nothing lost or corrupted afterwards.

use reqwest::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, COOKIE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// The two endpoints that take a JSON body from an anonymous caller.
const JSON_ENDPOINTS: [&str; 2] = ["/v1/users", "/v1/login"];

/// POSTs raw bytes with the given `Content-Type` (none when `None`).
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut req = app.bare_client().post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.send().await.expect("request")
}

/// GET /v1/me with a hand-made `Cookie` header.
async fn me_with_cookie_header(app: &TestApp, cookie: &str) -> Response {
    app.bare_client()
        .get(app.url("/v1/me"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("request")
}

/// A fresh user logged in on a bare client: the user and the session
/// cookie's value, for hand-made `Cookie` headers.
async fn logged_in_cookie(app: &TestApp) -> (TestUser, String) {
    let user = app.create_user().await;
    let res = app.login(&app.bare_client(), &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    let value =
        session_cookie_value(&res, app.cookie_name()).expect("login sets the session cookie");
    (user, value)
}

/// A well-formed session secret (32 random bytes, unpadded base64url) that
/// the server never issued.
fn unknown_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("rng");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn www_authenticate(res: &Response) -> String {
    res.headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// --- bodies -------------------------------------------------------------

#[tokio::test]
async fn body_over_64_kib_is_413_on_registration_and_login() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let body = serde_json::to_vec(&json!({ "email": email, "password": "a".repeat(70 * 1024) }))
        .expect("json");
    assert!(body.len() > 64 * 1024);

    for path in JSON_ENDPOINTS {
        let res = post_raw(&app, path, Some("application/json"), body.clone()).await;
        let problem = assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert_eq!(problem["status"], 413, "{path}");
    }

    // Nothing was created: the email is still free.
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for path in JSON_ENDPOINTS {
        for body in [
            &b"{\"email\": "[..],
            b"{\"email\": \"a@example.com\",}",
            b"not json",
            b"",
        ] {
            let res = post_raw(&app, path, Some("application/json"), body.to_vec()).await;
            assert_problem(res, StatusCode::BAD_REQUEST).await;
        }
    }
}

#[tokio::test]
async fn wrong_types_are_400_and_create_nothing() {
    let app = TestApp::spawn().await;
    for path in JSON_ENDPOINTS {
        let body = serde_json::to_vec(&json!({ "email": 123, "password": true })).expect("json");
        let res = post_raw(&app, path, Some("application/json"), body).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    let email = unique_email();
    let body = serde_json::to_vec(&json!({ "email": email, "password": 12_345_678_901_u64 }))
        .expect("json");
    let res = post_raw(&app, "/v1/users", Some("application/json"), body).await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;

    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn missing_fields_are_400() {
    let app = TestApp::spawn().await;
    for path in JSON_ENDPOINTS {
        for body in [
            json!({}),
            json!({ "email": unique_email() }),
            json!({ "password": PASSWORD }),
        ] {
            let res = post_raw(
                &app,
                path,
                Some("application/json"),
                serde_json::to_vec(&body).expect("json"),
            )
            .await;
            assert_problem(res, StatusCode::BAD_REQUEST).await;
        }
    }
}

#[tokio::test]
async fn array_or_string_instead_of_an_object_is_400() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    for path in JSON_ENDPOINTS {
        for body in [
            json!([{ "email": email, "password": PASSWORD }]),
            json!("email"),
            json!(null),
            json!(42),
        ] {
            let res = post_raw(
                &app,
                path,
                Some("application/json"),
                serde_json::to_vec(&body).expect("json"),
            )
            .await;
            assert_problem(res, StatusCode::BAD_REQUEST).await;
        }
    }
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn missing_or_other_content_type_is_415() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let body = serde_json::to_vec(&json!({ "email": email, "password": PASSWORD })).expect("json");
    for path in JSON_ENDPOINTS {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let res = post_raw(&app, path, ct, body.clone()).await;
            assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        }
    }
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn invalid_utf8_body_is_400() {
    let app = TestApp::spawn().await;
    let body =
        b"{\"email\": \"\xff\xfe@example.com\", \"password\": \"correct horse \xc3\x28 staple\"}"
            .to_vec();
    for path in JSON_ENDPOINTS {
        let res = post_raw(&app, path, Some("application/json"), body.clone()).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn registration_with_roles_is_400_and_grants_nothing() {
    let app = TestApp::spawn().await;
    let email = unique_email();

    let res = app
        .bare_client()
        .post(app.url("/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD, "roles": ["admin"] }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST).await;

    // The email is still free, and the clean registration holds no role.
    let res = app.register(&email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["roles"], json!([]));
    let client = app.client();
    assert_eq!(
        app.login_with(&client, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
    let me: Value = app.get_me(&client).await.json().await.expect("json");
    assert_eq!(me["user"]["roles"], json!([]));
    assert_eq!(me["permissions"], json!([]));
}

#[tokio::test]
async fn login_with_unknown_field_is_400_and_sets_no_cookie() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;

    let res = app
        .bare_client()
        .post(app.url("/v1/login"))
        .json(&json!({ "email": user.email, "password": user.password, "remember": true }))
        .send()
        .await
        .expect("request");
    assert!(set_cookie_header(&res, app.cookie_name()).is_none());
    assert_problem(res, StatusCode::BAD_REQUEST).await;

    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

// --- forged cookies -----------------------------------------------------

#[tokio::test]
async fn short_random_cookie_is_401() {
    let app = TestApp::spawn().await;
    let res = me_with_cookie_header(&app, &format!("{}=abc123", app.cookie_name())).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn cookie_of_43_chars_outside_base64url_is_401() {
    let app = TestApp::spawn().await;
    let value: String = "!#$%&*+.^~".chars().cycle().take(43).collect();
    let res = me_with_cookie_header(&app, &format!("{}={value}", app.cookie_name())).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn well_formed_but_unknown_secret_is_401() {
    let app = TestApp::spawn().await;
    let value = unknown_secret();
    assert_eq!(value.len(), 43);
    let res = me_with_cookie_header(&app, &format!("{}={value}", app.cookie_name())).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn eight_kilobyte_cookie_is_401() {
    let app = TestApp::spawn().await;
    let value = "A".repeat(8 * 1024);
    let res = me_with_cookie_header(&app, &format!("{}={value}", app.cookie_name())).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn sql_looking_cookie_is_401() {
    let app = TestApp::spawn().await;
    let res = me_with_cookie_header(&app, &format!("{}=' OR '1'='1", app.cookie_name())).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn session_cookie_sent_twice_is_401_in_either_order() {
    let app = TestApp::spawn().await;
    let (_, valid) = logged_in_cookie(&app).await;
    let name = app.cookie_name();
    let forged = unknown_secret();
    // The valid cookie alone works, so the refusals below are about the pair.
    assert_eq!(
        me_with_cookie_header(&app, &format!("{name}={valid}"))
            .await
            .status(),
        StatusCode::OK
    );

    for header in [
        format!("{name}={valid}; {name}={forged}"),
        format!("{name}={forged}; {name}={valid}"),
    ] {
        let res = me_with_cookie_header(&app, &header).await;
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
}

// --- Authorization header -----------------------------------------------

#[tokio::test]
async fn garbage_bearer_token_is_401_invalid_token_even_with_a_valid_cookie() {
    let app = TestApp::spawn().await;
    let (_, valid) = logged_in_cookie(&app).await;
    let cookie = format!("{}={valid}", app.cookie_name());
    assert_eq!(
        me_with_cookie_header(&app, &cookie).await.status(),
        StatusCode::OK
    );

    let res = app
        .bare_client()
        .get(app.url("/v1/me"))
        .header(COOKIE, &cookie)
        .header(AUTHORIZATION, "Bearer garbage")
        .send()
        .await
        .expect("request");
    let challenge = www_authenticate(&res);
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

#[tokio::test]
async fn unsecured_jwt_is_401_invalid_token() {
    let app = TestApp::spawn().await;
    let (_, valid) = logged_in_cookie(&app).await;
    let res = app
        .bare_client()
        .get(app.url("/v1/me"))
        .header(COOKIE, format!("{}={valid}", app.cookie_name()))
        .header(AUTHORIZATION, "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
        .send()
        .await
        .expect("request");
    let challenge = www_authenticate(&res);
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

#[tokio::test]
async fn basic_authorization_is_401() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app
        .bare_client()
        .get(app.url("/v1/me"))
        .basic_auth(&user.email, Some(&user.password))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// --- SQL-looking data ---------------------------------------------------

#[tokio::test]
async fn sql_looking_email_registration_is_refused_or_stored_never_executed() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;

    let res = app
        .register("x'); DROP TABLE users;--@example.com", PASSWORD)
        .await;
    match res.status() {
        StatusCode::CREATED => {}
        StatusCode::UNPROCESSABLE_ENTITY => {
            let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(problem["errors"][0]["field"], "email");
        }
        other => panic!("expected 201 or 422, got {other}"),
    }

    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn sql_looking_login_email_is_401_and_users_survive() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;

    for email in [
        "' OR '1'='1",
        "' OR 1=1 --@example.com",
        "x'); DROP TABLE users;--@example.com",
    ] {
        let res = app
            .login_with(&app.bare_client(), email, "' OR '1'='1")
            .await;
        assert!(set_cookie_header(&res, app.cookie_name()).is_none());
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }

    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn sql_looking_password_is_just_a_password() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let password = "'); DROP TABLE users; -- x7Q";
    assert_eq!(
        app.register(&email, password).await.status(),
        StatusCode::CREATED
    );

    let res = app
        .login_with(&app.bare_client(), &email, "' OR '1'='1' --")
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;

    let client = app.client();
    assert_eq!(
        app.login_with(&client, &email, password).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

// --- sizes and characters ------------------------------------------------

#[tokio::test]
async fn sixty_kilobyte_password_on_login_is_401() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;

    let res = app
        .login_with(&app.bare_client(), &user.email, &"p".repeat(60 * 1024))
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;

    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn sixty_kilobyte_password_on_registration_is_422_on_password() {
    let app = TestApp::spawn().await;
    let email = unique_email();

    let res = app.register(&email, &"p".repeat(60 * 1024)).await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "password");

    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn email_with_nul_character_is_422_on_email() {
    let app = TestApp::spawn().await;
    let res = app.register("nul\u{0}user@example.com", PASSWORD).await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "email");
}

// --- routing ------------------------------------------------------------

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .get(app.url("/v1/no-such-thing"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn wrong_method_is_405_problem() {
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .put(app.url("/v1/login"))
        .json(&json!({ "email": unique_email(), "password": PASSWORD }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn wrong_method_names_the_allowed_ones() {
    // RFC 9110 §15.5.6: a 405 response MUST carry Allow.
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .put(app.url("/v1/login"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res
        .headers()
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        allow.split(',').any(|m| m.trim() == "POST"),
        "Allow: {allow:?}"
    );
}

#[tokio::test]
async fn deleting_a_session_by_malformed_or_unknown_id_is_404() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;

    for id in ["not-a-uuid".to_owned(), uuid::Uuid::now_v7().to_string()] {
        let res = client
            .delete(app.url(&format!("/v1/sessions/{id}")))
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }

    // The caller's own session is untouched.
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    assert_eq!(app.sessions(&client).await.len(), 1);
}
