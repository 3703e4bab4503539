//! Registration, `GET /v1/me` and password change.

use gatehouse::config::Registration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn registration_returns_the_new_user_with_a_normalised_email() {
    let app = TestApp::spawn().await;
    let res = app.register("  New.User@Example.COM ", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.expect("json");
    let user = &body["user"];
    assert_eq!(user["email"], "new.user@example.com");
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["disabled"], false);
    assert_eq!(user["email_verified"], false);
    let id = user["id"].as_str().expect("id");
    assert_eq!(
        uuid::Uuid::parse_str(id).expect("uuid").get_version_num(),
        7
    );
    let created = user["created_at"].as_str().expect("created_at");
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    assert!(created.ends_with('Z'), "UTC: {created}");
    let fields: Vec<&String> = user.as_object().expect("object").keys().collect();
    assert_eq!(
        fields,
        [
            "created_at",
            "disabled",
            "email",
            "email_verified",
            "id",
            "roles"
        ],
        "no hash or extra field"
    );
}

/// An address is shown to admins, in audit trails and in `X-Auth-Request-
/// Email`, so it must read as what it is: invisible, bidirectional and
/// look-alike characters in the local part are 422 on `email`; an
/// internationalised domain is stored in its ASCII form, so a look-alike
/// (`еxample.com` with a Cyrillic е) can neither pass for the real one nor
/// take its address; and logging in with the Unicode form finds the account.
#[tokio::test]
async fn emails_that_cannot_be_shown_safely_are_refused_or_stored_in_ascii() {
    let app = TestApp::spawn().await;
    for bad in [
        "ad\u{200b}a@example.com",
        "ada\u{202e}@example.com",
        "\u{0430}da@example.com",
        "ada@exa\u{202e}mple.com",
    ] {
        let res = app.register(bad, PASSWORD).await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "email", "{bad:?}: {body}");
    }
    let res = app.register("ada@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app.register("ada@\u{0435}xample.com", PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "a look-alike domain is another domain"
    );
    let body: Value = res.json().await.expect("json");
    let stored = body["user"]["email"].as_str().expect("email").to_owned();
    assert!(stored.starts_with("ada@xn--"), "stored as {stored}");
    let res = app
        .login_with(&app.client(), "ada@\u{0435}xample.com", PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "the Unicode form logs in");
    let res = app.register("ada@B\u{fc}cher.example", PASSWORD).await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["email"], "ada@xn--bcher-kva.example");
}

#[tokio::test]
async fn an_email_is_taken_whatever_its_case() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app
        .register(&user.email.to_uppercase(), "another good passphrase")
        .await;
    let problem = assert_problem(res, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("exists")
    );
    // The original password still works: nothing was overwritten.
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn weak_passwords_and_bad_emails_are_422_with_field_errors() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let cases = [
        (email.as_str(), "short", "password"),
        (email.as_str(), "password", "password"),
        (email.as_str(), "Password123", "password"),
        (email.as_str(), &"x".repeat(129), "password"),
        (email.as_str(), email.as_str(), "password"),
        ("not-an-email", PASSWORD, "email"),
        ("", PASSWORD, "email"),
    ];
    for (email, password, field) in cases {
        let res = app.register(email, password).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{password:?}");
        assert!(problem["errors"][0]["message"].is_string());
    }
    // 8 and 128 characters are the inclusive bounds.
    assert_eq!(
        app.register(&unique_email(), "zq8#Lm2v").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register(&unique_email(), &"é".repeat(128))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn closed_registration_refuses_new_accounts() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Closed).await;
    let email = unique_email();
    let res = app.register(&email, PASSWORD).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app.login_with(&app.client(), &email, PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "no account was created"
    );
}

#[tokio::test]
async fn me_without_credentials_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let res = app.get_me(&app.client()).await;
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["title"], "Unauthorized");
}

#[tokio::test]
async fn me_shows_the_user_the_current_session_and_effective_permissions() {
    let app = TestApp::spawn().await;
    let user = app
        .create_user_with_role("support", &["tickets:write", "tickets:read"])
        .await;
    let client = app.client();
    let login: Value = app.login(&client, &user).await.json().await.expect("json");
    let res = app.get_me(&client).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["user"]["email"], user.email.as_str());
    assert_eq!(me["user"]["roles"], json!(["support"]));
    assert_eq!(me["permissions"], json!(["tickets:read", "tickets:write"]));
    assert_eq!(me["session"]["id"], login["session"]["id"]);
    assert_eq!(me["session"]["current"], true);
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session_but_keeps_this_one() {
    let app = TestApp::spawn().await;
    let (user, here) = app.logged_in().await;
    let elsewhere = app.client();
    assert_eq!(app.login(&elsewhere, &user).await.status(), StatusCode::OK);

    let res = here
        .post(app.url("/v1/me/password"))
        .json(
            &json!({ "current_password": user.password, "new_password": "a brand new passphrase" }),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.get_me(&here).await.status(), StatusCode::OK);
    assert_eq!(
        app.get_me(&elsewhere).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.sessions(&here).await.len(), 1);
    let old = app.login(&app.client(), &user).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = app
        .login_with(&app.client(), &user.email, "a brand new passphrase")
        .await;
    assert_eq!(new.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_current_password_is_401_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    let other = app.client();
    app.login(&other, &user).await;
    let res = client
        .post(app.url("/v1/me/password"))
        .json(&json!({ "current_password": "not my password", "new_password": "a brand new passphrase" }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        app.get_me(&client).await.status(),
        StatusCode::OK,
        "the caller stays logged in"
    );
    assert_eq!(
        app.get_me(&other).await.status(),
        StatusCode::OK,
        "no session ended"
    );
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_weak_new_password_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    let res = client
        .post(app.url("/v1/me/password"))
        .json(&json!({ "current_password": user.password, "new_password": "12345678" }))
        .send()
        .await
        .expect("request");
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "new_password");
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn password_change_requires_a_session() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app
        .client()
        .post(app.url("/v1/me/password"))
        .json(
            &json!({ "current_password": user.password, "new_password": "a brand new passphrase" }),
        )
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn stored_passwords_are_argon2id_hashes() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = ?")
        .bind(&user.email)
        .fetch_one(&app.sql().await)
        .await
        .expect("row");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(&user.password));
}
