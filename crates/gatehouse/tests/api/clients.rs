//! The OpenID client registry, black-box (docs/api.md, "OpenID clients"):
//! `/v1/admin/clients*` on SQLite and PostgreSQL (secrets shown once and
//! stored hashed, defaults, every validation rule, hostile input, changes
//! racing each other, roles and their deletion, the audit trail, admins
//! only), and `gatehouse client create|list|delete`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;

use crate::helpers::*;
use crate::process::{assert_fails_with_one_line, gatehouse, new_database, run};

const CB: &str = "https://app.example.com/callback";

// ---------------------------------------------------------------- helpers

/// An admin (role `admin` holding `gatehouse:admin`) on a fresh cookie
/// client.
async fn admin(app: &TestApp) -> Client {
    let user = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    client
}

async fn call(
    app: &TestApp,
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let mut req = client.request(method, app.url(path));
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request")
}

async fn post(app: &TestApp, admin: &Client, body: &Value) -> Response {
    call(app, admin, Method::POST, "/v1/admin/clients", Some(body)).await
}

/// Asserts the status and returns the JSON body.
async fn json_of(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("json")
}

/// Creates a client that must be created; the whole answer.
async fn create(app: &TestApp, admin: &Client, body: &Value) -> Value {
    json_of(post(app, admin, body).await, StatusCode::CREATED).await
}

/// A confidential client with the defaults: its id and secret.
async fn confidential(app: &TestApp, admin: &Client, name: &str) -> (String, String) {
    let body = create(
        app,
        admin,
        &json!({ "name": name, "redirect_uris": [CB], "type": "confidential" }),
    )
    .await;
    (
        body["client"]["client_id"].as_str().expect("id").to_owned(),
        body["client_secret"].as_str().expect("a secret").to_owned(),
    )
}

async fn get(app: &TestApp, admin: &Client, id: &str) -> Response {
    call(
        app,
        admin,
        Method::GET,
        &format!("/v1/admin/clients/{id}"),
        None,
    )
    .await
}

async fn patch(app: &TestApp, admin: &Client, id: &str, body: &Value) -> Response {
    call(
        app,
        admin,
        Method::PATCH,
        &format!("/v1/admin/clients/{id}"),
        Some(body),
    )
    .await
}

async fn list(app: &TestApp, admin: &Client) -> Vec<Value> {
    let body = json_of(
        call(app, admin, Method::GET, "/v1/admin/clients", None).await,
        StatusCode::OK,
    )
    .await;
    body["clients"].as_array().expect("clients").clone()
}

/// The fields a 422 names, in order.
async fn invalid_fields(res: Response) -> Vec<String> {
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["type"], "urn:gatehouse:problem:validation");
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            e["field"].as_str().expect("field").to_owned()
        })
        .collect()
}

/// The 422's messages, joined.
async fn invalid_messages(res: Response) -> String {
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["message"].as_str().expect("message").to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the database holds for a client: its type, secret hash and name.
async fn stored(app: &TestApp, id: &str) -> Option<(String, Option<Vec<u8>>, String)> {
    match &app.config.database_url {
        gatehouse::config::DatabaseUrl::Sqlite(_) => {
            let db = app.sql().await;
            let row =
                sqlx::query_as("SELECT type, secret_hash, name FROM clients WHERE client_id = $1")
                    .bind(id)
                    .fetch_optional(&db)
                    .await
                    .expect("reading the row");
            db.close().await;
            row
        }
        gatehouse::config::DatabaseUrl::Postgres(url) => {
            let mut db = sqlx::PgConnection::connect(url.expose())
                .await
                .expect("PostgreSQL");
            let row = sqlx::query_as(
                "SELECT type, secret_hash, name FROM clients WHERE client_id::text = $1",
            )
            .bind(id)
            .fetch_optional(&mut db)
            .await
            .expect("reading the row");
            let _ = db.close().await;
            row
        }
    }
}

/// The SHA-256 of a secret as shown (`ghcs_` and base64url of 32 bytes).
fn hash_of(secret: &str) -> Vec<u8> {
    let raw = URL_SAFE_NO_PAD
        .decode(secret.strip_prefix("ghcs_").expect("the prefix"))
        .expect("base64url");
    assert_eq!(raw.len(), 32);
    Sha256::digest(&raw).to_vec()
}

/// The audit events of one type, newest first.
async fn events(app: &TestApp, admin: &Client, kind: &str) -> Vec<Value> {
    let body = json_of(
        call(
            app,
            admin,
            Method::GET,
            &format!("/v1/admin/audit?type={kind}"),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    body["events"].as_array().expect("events").clone()
}

/// Creates a role through the API.
async fn put_role(app: &TestApp, admin: &Client, name: &str) {
    let res = call(
        app,
        admin,
        Method::PUT,
        &format!("/v1/admin/roles/{name}"),
        Some(&json!({ "permissions": ["orders:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

// ------------------------------------------- on SQLite and on PostgreSQL

/// Generates, for each scenario over a fresh app, a test on SQLite and one
/// on PostgreSQL (several threads: the concurrent scenarios race for real).
macro_rules! on_sqlite_and_postgres {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            $scenario(TestApp::spawn().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let _slot = PG_SLOTS.acquire().await.expect("the semaphore is never closed");
            $scenario(TestApp::spawn_on_postgres(|_| {}).await).await;
        }
    )+};
}

on_sqlite_and_postgres! {
    a_confidential_clients_secret_is_shown_once_and_stored_hashed
        => sqlite_clients_confidential_secret_shown_once_and_stored_hashed,
           postgres_clients_confidential_secret_shown_once_and_stored_hashed;
    a_public_client_has_no_secret_and_gets_the_defaults
        => sqlite_clients_public_without_secret_with_defaults,
           postgres_clients_public_without_secret_with_defaults;
    every_field_round_trips
        => sqlite_clients_every_field_round_trips,
           postgres_clients_every_field_round_trips;
    clients_are_listed_read_changed_and_deleted
        => sqlite_clients_listed_read_changed_and_deleted,
           postgres_clients_listed_read_changed_and_deleted;
    a_refused_change_changes_nothing
        => sqlite_clients_refused_change_changes_nothing,
           postgres_clients_refused_change_changes_nothing;
    roles_must_exist_and_go_with_their_deletion
        => sqlite_clients_roles_must_exist_and_go_with_their_deletion,
           postgres_clients_roles_must_exist_and_go_with_their_deletion;
    sql_looking_input_is_stored_verbatim_and_harmless
        => sqlite_clients_sql_looking_input_stored_verbatim,
           postgres_clients_sql_looking_input_stored_verbatim;
    concurrent_changes_of_different_fields_all_land
        => sqlite_clients_concurrent_changes_all_land,
           postgres_clients_concurrent_changes_all_land;
    changes_are_in_the_audit_trail_without_the_secret
        => sqlite_clients_changes_in_the_audit_trail,
           postgres_clients_changes_in_the_audit_trail;
}

async fn a_confidential_clients_secret_is_shown_once_and_stored_hashed(app: TestApp) {
    let admin = admin(&app).await;
    let res = post(
        &app,
        &admin,
        &json!({ "name": "Orders", "redirect_uris": [CB], "type": "confidential" }),
    )
    .await;
    assert_eq!(
        res.headers()["cache-control"],
        "no-store",
        "an answer with a secret is never cached"
    );
    let body = json_of(res, StatusCode::CREATED).await;
    let secret = body["client_secret"].as_str().expect("a secret").to_owned();
    assert!(
        secret.starts_with("ghcs_")
            && secret.len() == 5 + 43
            && secret[5..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{secret}"
    );
    let id = body["client"]["client_id"].as_str().expect("id").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id)
            .expect("a UUID")
            .get_version_num(),
        7
    );
    assert_eq!(body["client"]["type"], "confidential");

    // Never shown again.
    for path in [
        "/v1/admin/clients".to_owned(),
        format!("/v1/admin/clients/{id}"),
    ] {
        let res = call(&app, &admin, Method::GET, &path, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.expect("body");
        assert!(!text.contains(&secret[5..]), "{path}: {text}");
        assert!(!text.contains("client_secret"), "{path}: {text}");
    }
    // A second client gets another secret.
    let (_, other) = confidential(&app, &admin, "Other").await;
    assert_ne!(other, secret);

    // The database holds its SHA-256, not the secret.
    let (kind, hash, name) = stored(&app, &id).await.expect("the row");
    assert_eq!((kind.as_str(), name.as_str()), ("confidential", "Orders"));
    let hash = hash.expect("a confidential client has a secret hash");
    assert_eq!(hash, hash_of(&secret));
    assert!(!String::from_utf8_lossy(&hash).contains(&secret[5..]));
}

async fn a_public_client_has_no_secret_and_gets_the_defaults(app: TestApp) {
    let admin = admin(&app).await;
    let body = create(
        &app,
        &admin,
        &json!({ "name": "Mobile", "redirect_uris": ["com.example.app:/cb"], "type": "public" }),
    )
    .await;
    assert!(body.get("client_secret").is_none(), "{body}");
    let client = &body["client"];
    let id = client["client_id"].as_str().expect("id");
    assert_eq!(
        client,
        &json!({
            "client_id": id,
            "name": "Mobile",
            "type": "public",
            "redirect_uris": ["com.example.app:/cb"],
            "post_logout_redirect_uris": [],
            "first_party": false,
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["openid", "profile", "email", "offline_access"],
            "roles": [],
            "id_token_signed_response_alg": "RS256",
            "created_at": client["created_at"],
        })
    );
    let created = time::OffsetDateTime::parse(
        client["created_at"].as_str().expect("created_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!((time::OffsetDateTime::now_utc() - created).abs() < time::Duration::minutes(1));
    let (kind, hash, _) = stored(&app, id).await.expect("the row");
    assert_eq!(kind, "public");
    assert_eq!(hash, None);
    // The same client read back.
    let read = json_of(get(&app, &admin, id).await, StatusCode::OK).await;
    assert_eq!(&read["client"], client);
}

async fn every_field_round_trips(app: TestApp) {
    let admin = admin(&app).await;
    put_role(&app, &admin, "orders-reader").await;
    put_role(&app, &admin, "billing").await;
    let body = create(
        &app,
        &admin,
        &json!({
            "name": "  Back office  ",
            "type": "confidential",
            "redirect_uris": [CB, "http://127.0.0.1:8080/cb", "http://[::1]/cb",
                              "http://localhost:3000/cb", CB],
            "post_logout_redirect_uris": ["https://app.example.com/bye"],
            "first_party": true,
            "id_token_signed_response_alg": "EdDSA",
            "grant_types": ["client_credentials", "authorization_code"],
            "scopes": ["openid", "email", "openid"],
            "roles": ["orders-reader", "billing", "orders-reader"],
        }),
    )
    .await;
    let c = &body["client"];
    assert_eq!(c["name"], "Back office", "trimmed");
    assert_eq!(
        c["redirect_uris"],
        json!([
            CB,
            "http://127.0.0.1:8080/cb",
            "http://[::1]/cb",
            "http://localhost:3000/cb"
        ]),
        "in order, without the duplicate"
    );
    assert_eq!(
        c["post_logout_redirect_uris"],
        json!(["https://app.example.com/bye"])
    );
    assert_eq!(c["first_party"], true);
    assert_eq!(c["id_token_signed_response_alg"], "EdDSA");
    assert_eq!(
        c["grant_types"],
        json!(["client_credentials", "authorization_code"])
    );
    assert_eq!(c["scopes"], json!(["openid", "email"]));
    assert_eq!(c["roles"], json!(["billing", "orders-reader"]), "sorted");
    let id = c["client_id"].as_str().expect("id");
    let read = json_of(get(&app, &admin, id).await, StatusCode::OK).await;
    assert_eq!(&read["client"], c);
}

async fn clients_are_listed_read_changed_and_deleted(app: TestApp) {
    let admin = admin(&app).await;
    assert!(list(&app, &admin).await.is_empty());
    let (first, _) = confidential(&app, &admin, "First").await;
    let (second, _) = confidential(&app, &admin, "Second").await;
    let ids: Vec<Value> = list(&app, &admin)
        .await
        .iter()
        .map(|c| c["client_id"].clone())
        .collect();
    assert_eq!(ids, [json!(first), json!(second)], "oldest first");

    // Each mutable field, one at a time and together.
    let before = json_of(get(&app, &admin, &first).await, StatusCode::OK).await["client"].clone();
    let changed = json_of(
        patch(&app, &admin, &first, &json!({ "name": "First, renamed" })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["client"]["name"], "First, renamed");
    assert_eq!(changed["client"]["redirect_uris"], before["redirect_uris"]);
    assert_eq!(changed["client"]["created_at"], before["created_at"]);
    let changed = json_of(
        patch(
            &app,
            &admin,
            &first,
            &json!({
                "redirect_uris": ["https://new.example.com/cb"],
                "post_logout_redirect_uris": ["https://new.example.com/bye"],
                "first_party": true,
                "grant_types": ["authorization_code"],
                "scopes": ["openid"],
                "id_token_signed_response_alg": "ES256",
            }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let c = &changed["client"];
    assert_eq!(c["name"], "First, renamed");
    assert_eq!(c["redirect_uris"], json!(["https://new.example.com/cb"]));
    assert_eq!(
        c["post_logout_redirect_uris"],
        json!(["https://new.example.com/bye"])
    );
    assert_eq!(c["first_party"], true);
    assert_eq!(c["grant_types"], json!(["authorization_code"]));
    assert_eq!(c["scopes"], json!(["openid"]));
    assert_eq!(c["id_token_signed_response_alg"], "ES256");
    assert_eq!(c["type"], "confidential");
    let read = json_of(get(&app, &admin, &first).await, StatusCode::OK).await;
    assert_eq!(&read["client"], c, "the change is stored");
    // A change to what it is already is a success that changes nothing.
    let same = json_of(
        patch(&app, &admin, &first, &json!({ "first_party": true })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(&same["client"], c);

    // Deleted: gone, and a second delete is 404.
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/clients/{first}"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(get(&app, &admin, &first).await, StatusCode::NOT_FOUND).await;
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/clients/{first}"),
        None,
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    assert!(stored(&app, &first).await.is_none());
    let left: Vec<Value> = list(&app, &admin)
        .await
        .iter()
        .map(|c| c["client_id"].clone())
        .collect();
    assert_eq!(left, [json!(second)]);

    // Unknown and malformed ids are 404 for every method.
    for id in [
        uuid::Uuid::now_v7().to_string(),
        "not-a-client".into(),
        "%27%20OR%201%3D1%20--".into(),
        "0".repeat(300),
    ] {
        let path = format!("/v1/admin/clients/{id}");
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({ "name": "x" }))),
            (Method::DELETE, None),
        ] {
            let res = call(&app, &admin, method.clone(), &path, body.as_ref()).await;
            assert_problem(res, StatusCode::NOT_FOUND).await;
        }
    }
    assert_eq!(list(&app, &admin).await.len(), 1);
}

async fn a_refused_change_changes_nothing(app: TestApp) {
    let admin = admin(&app).await;
    let (id, _) = confidential(&app, &admin, "Kept").await;
    let public = create(
        &app,
        &admin,
        &json!({ "name": "SPA", "redirect_uris": [CB], "type": "public" }),
    )
    .await["client"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = json_of(get(&app, &admin, &id).await, StatusCode::OK).await;
    for (body, field) in [
        (json!({ "name": "" }), "name"),
        (
            json!({ "redirect_uris": ["javascript:alert(1)"] }),
            "redirect_uris",
        ),
        (json!({ "redirect_uris": [] }), "redirect_uris"),
        (
            json!({ "post_logout_redirect_uris": ["http://evil.example/"] }),
            "post_logout_redirect_uris",
        ),
        (json!({ "grant_types": ["password"] }), "grant_types"),
        (json!({ "grant_types": ["refresh_token"] }), "grant_types"),
        (json!({ "scopes": ["admin"] }), "scopes"),
        (json!({ "roles": ["no-such-role"] }), "roles"),
        (
            json!({ "id_token_signed_response_alg": "none" }),
            "id_token_signed_response_alg",
        ),
        // Valid alone, refused with the client's other fields: roles
        // without client_credentials.
        (json!({ "name": "Renamed", "roles": ["admin"] }), "roles"),
    ] {
        let fields = invalid_fields(patch(&app, &admin, &id, &body).await).await;
        assert_eq!(fields, [field], "{body}");
    }
    let after = json_of(get(&app, &admin, &id).await, StatusCode::OK).await;
    assert_eq!(after, before, "nothing changed");

    // A public client cannot be given client_credentials.
    let fields = invalid_fields(
        patch(
            &app,
            &admin,
            &public,
            &json!({ "grant_types": ["authorization_code", "client_credentials"] }),
        )
        .await,
    )
    .await;
    assert_eq!(fields, ["grant_types"]);

    // Bodies that do not parse, or name what cannot change: 400.
    for body in [
        json!({}),
        json!({ "type": "public" }),
        json!({ "client_id": uuid::Uuid::now_v7().to_string() }),
        json!({ "client_secret": "ghcs_x" }),
        json!({ "name": null }),
        json!({ "first_party": "yes" }),
        json!({ "redirect_uris": CB }),
        json!({ "roles": [1] }),
    ] {
        let res = patch(&app, &admin, &id, &body).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    let after = json_of(get(&app, &admin, &id).await, StatusCode::OK).await;
    assert_eq!(after, before, "nothing changed");
}

async fn roles_must_exist_and_go_with_their_deletion(app: TestApp) {
    let admin = admin(&app).await;
    put_role(&app, &admin, "reports").await;
    let body = json!({
        "name": "Batch",
        "redirect_uris": [],
        "type": "confidential",
        "grant_types": ["client_credentials"],
        "roles": ["reports", "ghost-role"],
    });
    let res = post(&app, &admin, &body).await;
    let messages = invalid_messages(res).await;
    assert!(messages.contains("ghost-role"), "{messages}");
    assert!(list(&app, &admin).await.is_empty(), "nothing was created");

    let mut body = body;
    body["roles"] = json!(["reports"]);
    let created = create(&app, &admin, &body).await;
    let id = created["client"]["client_id"].as_str().expect("id");
    assert_eq!(created["client"]["roles"], json!(["reports"]));
    assert_eq!(created["client"]["redirect_uris"], json!([]));

    // An unknown role in a change leaves the roles as they were.
    let res = patch(
        &app,
        &admin,
        id,
        &json!({ "roles": ["reports", "ghost-role"] }),
    )
    .await;
    assert!(invalid_messages(res).await.contains("ghost-role"));
    let read = json_of(get(&app, &admin, id).await, StatusCode::OK).await;
    assert_eq!(read["client"]["roles"], json!(["reports"]));

    // A deleted role leaves every client that had it; created again, it
    // grants nothing until assigned again.
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        "/v1/admin/roles/reports",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let read = json_of(get(&app, &admin, id).await, StatusCode::OK).await;
    assert_eq!(read["client"]["roles"], json!([]));
    put_role(&app, &admin, "reports").await;
    let read = json_of(get(&app, &admin, id).await, StatusCode::OK).await;
    assert_eq!(read["client"]["roles"], json!([]));
    let changed = json_of(
        patch(&app, &admin, id, &json!({ "roles": ["reports"] })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["client"]["roles"], json!(["reports"]));
}

async fn sql_looking_input_is_stored_verbatim_and_harmless(app: TestApp) {
    let admin = admin(&app).await;
    let name = "Robert'); DROP TABLE clients; --";
    let uri = "https://app.example.com/cb?q=%27%20OR%201=1;--";
    let body = create(
        &app,
        &admin,
        &json!({ "name": name, "redirect_uris": [uri], "type": "confidential" }),
    )
    .await;
    let id = body["client"]["client_id"].as_str().expect("id").to_owned();
    assert_eq!(body["client"]["name"], name);
    assert_eq!(body["client"]["redirect_uris"], json!([uri]));
    let (_, _, stored_name) = stored(&app, &id).await.expect("the table and row exist");
    assert_eq!(stored_name, name);
    let renamed = "x' WHERE 1=1; UPDATE clients SET name='pwned' --";
    let (other, _) = confidential(&app, &admin, "Bystander").await;
    let changed = json_of(
        patch(&app, &admin, &id, &json!({ "name": renamed })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["client"]["name"], renamed);
    let bystander = json_of(get(&app, &admin, &other).await, StatusCode::OK).await;
    assert_eq!(bystander["client"]["name"], "Bystander");
    assert_eq!(list(&app, &admin).await.len(), 2);
}

async fn concurrent_changes_of_different_fields_all_land(app: TestApp) {
    let admin = admin(&app).await;
    let (id, _) = confidential(&app, &admin, "Raced").await;
    let mut tasks = tokio::task::JoinSet::new();
    let url = app.url(&format!("/v1/admin/clients/{id}"));
    let bodies = (0..8)
        .map(|i| json!({ "name": format!("name {i}") }))
        .chain([
            json!({ "first_party": true }),
            json!({ "scopes": ["openid"] }),
            json!({ "id_token_signed_response_alg": "ES256" }),
            json!({ "post_logout_redirect_uris": ["https://app.example.com/bye"] }),
        ]);
    for body in bodies {
        let (admin, url) = (admin.clone(), url.clone());
        tasks.spawn(async move {
            admin
                .patch(url)
                .json(&body)
                .send()
                .await
                .expect("request")
                .status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.expect("the task"), StatusCode::OK);
    }
    let c = json_of(get(&app, &admin, &id).await, StatusCode::OK).await["client"].clone();
    assert!(
        c["name"].as_str().expect("name").starts_with("name "),
        "{c}"
    );
    assert_eq!(c["first_party"], true, "no change was lost: {c}");
    assert_eq!(c["scopes"], json!(["openid"]), "{c}");
    assert_eq!(c["id_token_signed_response_alg"], "ES256", "{c}");
    assert_eq!(
        c["post_logout_redirect_uris"],
        json!(["https://app.example.com/bye"]),
        "{c}"
    );
    assert_eq!(events(&app, &admin, "client_changed").await.len(), 12);
}

async fn changes_are_in_the_audit_trail_without_the_secret(app: TestApp) {
    let admin = admin(&app).await;
    let me: Value = app.get_me(&admin).await.json().await.expect("json");
    let admin_id = me["user"]["id"].as_str().expect("id").to_owned();
    let (id, secret) = confidential(&app, &admin, "Audited").await;
    let res = patch(
        &app,
        &admin,
        &id,
        &json!({ "redirect_uris": ["https://other.example.com/cb"], "first_party": false }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/clients/{id}"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let created = events(&app, &admin, "client_created").await;
    assert_eq!(created.len(), 1);
    let e = &created[0];
    assert_eq!(
        (e["actor"].as_str(), e["actor_id"].as_str()),
        (Some("user"), Some(admin_id.as_str()))
    );
    assert_eq!(e["details"]["client_id"], id.as_str());
    assert_eq!(e["details"]["name"], "Audited");
    assert_eq!(e["details"]["type"], "confidential");
    assert_eq!(e["details"]["redirect_uris"], json!([CB]));

    let changed = events(&app, &admin, "client_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["details"]["client_id"], id.as_str());
    assert_eq!(
        changed[0]["details"]["changes"],
        json!({ "redirect_uris": ["https://other.example.com/cb"] }),
        "only what changed (first_party was false already)"
    );

    let deleted = events(&app, &admin, "client_deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["details"]["client_id"], id.as_str());
    assert_eq!(deleted[0]["details"]["name"], "Audited");

    let trail = call(&app, &admin, Method::GET, "/v1/admin/audit?limit=200", None)
        .await
        .text()
        .await
        .expect("body");
    assert!(!trail.contains(&secret[5..]), "the secret is in the trail");
}

// -------------------------------------------------- validation (SQLite)

/// A valid confidential client's body, changed by `change`.
fn body_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut body = json!({ "name": "App", "redirect_uris": [CB], "type": "confidential" });
    change(&mut body);
    body
}

#[tokio::test]
async fn every_validation_rule_is_a_422_naming_its_field_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let uri = |u: &str| {
        let u = u.to_owned();
        body_with(move |b| b["redirect_uris"] = json!([CB, u]))
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "http off the loopback interface",
            uri("http://app.example.com/cb"),
            "redirect_uris",
        ),
        (
            "http on another loopback address",
            uri("http://127.0.0.2/cb"),
            "redirect_uris",
        ),
        (
            "http on a look-alike of localhost",
            uri("http://localhost.evil.example/cb"),
            "redirect_uris",
        ),
        (
            "a fragment",
            uri("https://app.example.com/cb#x"),
            "redirect_uris",
        ),
        (
            "a wildcard host",
            uri("https://*.example.com/cb"),
            "redirect_uris",
        ),
        (
            "a wildcard path",
            uri("https://app.example.com/*"),
            "redirect_uris",
        ),
        (
            "userinfo",
            uri("https://user:pw@app.example.com/cb"),
            "redirect_uris",
        ),
        (
            "a user name",
            uri("https://evil.example@app.example.com/cb"),
            "redirect_uris",
        ),
        (
            "javascript:",
            uri("javascript:alert(document.cookie)"),
            "redirect_uris",
        ),
        (
            "javascript: in capitals",
            uri("JAVASCRIPT:alert(1)"),
            "redirect_uris",
        ),
        (
            "data:",
            uri("data:text/html,<script>alert(1)</script>"),
            "redirect_uris",
        ),
        ("file:", uri("file:///etc/passwd"), "redirect_uris"),
        ("a scheme without a dot", uri("myapp:/cb"), "redirect_uris"),
        ("a relative URI", uri("/callback"), "redirect_uris"),
        ("no scheme", uri("app.example.com/cb"), "redirect_uris"),
        ("an empty URI", uri(""), "redirect_uris"),
        (
            "a space",
            uri("https://app.example.com/a b"),
            "redirect_uris",
        ),
        (
            "a leading space",
            uri(" https://app.example.com/cb"),
            "redirect_uris",
        ),
        (
            "a newline",
            uri("https://app.example.com/cb\n"),
            "redirect_uris",
        ),
        (
            "a backslash",
            uri("https:\\\\evil.example/cb"),
            "redirect_uris",
        ),
        (
            "a non-ASCII host",
            uri("https://app.ex\u{e4}mple.com/cb"),
            "redirect_uris",
        ),
        (
            "not in normal form",
            uri("https://APP.example.com/cb"),
            "redirect_uris",
        ),
        (
            "a dot segment",
            uri("https://app.example.com/x/../cb"),
            "redirect_uris",
        ),
        (
            "an IPv4 short form",
            uri("http://127.1/cb"),
            "redirect_uris",
        ),
        (
            "2,001 characters",
            uri(&format!(
                "https://app.example.com/{}",
                "a".repeat(2001 - 24)
            )),
            "redirect_uris",
        ),
        (
            "21 URIs",
            body_with(|b| {
                b["redirect_uris"] = json!(
                    (0..21)
                        .map(|i| format!("https://app.example.com/{i}"))
                        .collect::<Vec<_>>()
                );
            }),
            "redirect_uris",
        ),
        (
            "no URI with authorization_code",
            body_with(|b| b["redirect_uris"] = json!([])),
            "redirect_uris",
        ),
        (
            "a bad post-logout URI",
            body_with(|b| b["post_logout_redirect_uris"] = json!(["javascript:alert(1)"])),
            "post_logout_redirect_uris",
        ),
        (
            "21 post-logout URIs",
            body_with(|b| {
                b["post_logout_redirect_uris"] = json!(
                    (0..21)
                        .map(|i| format!("https://app.example.com/bye/{i}"))
                        .collect::<Vec<_>>()
                );
            }),
            "post_logout_redirect_uris",
        ),
        (
            "an empty name",
            body_with(|b| b["name"] = json!("")),
            "name",
        ),
        (
            "a blank name",
            body_with(|b| b["name"] = json!("   ")),
            "name",
        ),
        (
            "a name of 101 characters",
            body_with(|b| b["name"] = json!("n".repeat(101))),
            "name",
        ),
        (
            "a name with a bidi override",
            body_with(|b| b["name"] = json!("App\u{202e}lapyaP")),
            "name",
        ),
        (
            "a name with a control",
            body_with(|b| b["name"] = json!("App\u{7}")),
            "name",
        ),
        (
            "an unknown type",
            body_with(|b| b["type"] = json!("trusted")),
            "type",
        ),
        (
            "an unknown grant",
            body_with(|b| b["grant_types"] = json!(["password"])),
            "grant_types",
        ),
        (
            "the implicit grant",
            body_with(|b| b["grant_types"] = json!(["implicit"])),
            "grant_types",
        ),
        (
            "no grant",
            body_with(|b| b["grant_types"] = json!([])),
            "grant_types",
        ),
        (
            "refresh_token alone",
            body_with(|b| b["grant_types"] = json!(["refresh_token"])),
            "grant_types",
        ),
        (
            "a public client with client_credentials",
            body_with(|b| {
                b["type"] = json!("public");
                b["grant_types"] = json!(["authorization_code", "client_credentials"]);
            }),
            "grant_types",
        ),
        (
            "an unknown scope",
            body_with(|b| b["scopes"] = json!(["openid", "admin"])),
            "scopes",
        ),
        (
            "an unknown algorithm",
            body_with(|b| b["id_token_signed_response_alg"] = json!("HS256")),
            "id_token_signed_response_alg",
        ),
        (
            "alg none",
            body_with(|b| b["id_token_signed_response_alg"] = json!("none")),
            "id_token_signed_response_alg",
        ),
        (
            "an algorithm in the wrong case",
            body_with(|b| b["id_token_signed_response_alg"] = json!("rs256")),
            "id_token_signed_response_alg",
        ),
        (
            "an unknown role",
            body_with(|b| {
                b["grant_types"] = json!(["client_credentials"]);
                b["roles"] = json!(["no-such-role"]);
            }),
            "roles",
        ),
        (
            "a malformed role",
            body_with(|b| {
                b["grant_types"] = json!(["client_credentials"]);
                b["roles"] = json!(["two words"]);
            }),
            "roles",
        ),
        (
            "roles without client_credentials",
            body_with(|b| b["roles"] = json!(["admin"])),
            "roles",
        ),
    ];
    for (what, body, field) in cases {
        let fields = invalid_fields(post(&app, &admin, &body).await).await;
        assert_eq!(fields, [field], "{what}: {body}");
    }
    // Several bad fields: each is named.
    let body = json!({
        "name": "",
        "redirect_uris": ["http://evil.example/"],
        "type": "confidential",
        "scopes": ["root"],
        "id_token_signed_response_alg": "none",
    });
    let fields = invalid_fields(post(&app, &admin, &body).await).await;
    assert_eq!(
        fields,
        [
            "name",
            "redirect_uris",
            "scopes",
            "id_token_signed_response_alg"
        ]
    );
    assert!(list(&app, &admin).await.is_empty(), "nothing was created");
    // The message says what is wrong with which URI.
    let res = post(&app, &admin, &uri("javascript:alert(1)")).await;
    let message = invalid_messages(res).await;
    assert!(message.contains("javascript"), "{message}");
    let res = post(&app, &admin, &uri("https://APP.example.com/cb")).await;
    let message = invalid_messages(res).await;
    assert!(message.contains("https://app.example.com/cb"), "{message}");
}

#[tokio::test]
async fn every_allowed_kind_of_redirect_uri_is_accepted() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let uris = [
        "https://app.example.com/callback",
        "https://app.example.com:8443/cb?tenant=a&x=1",
        "https://192.0.2.10/cb",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:49152/cb",
        "http://[::1]:8080/cb",
        "http://localhost/cb",
        "com.example.app:/oauth2redirect",
        "com.example.app://callback",
    ];
    let mut twenty: Vec<String> = (0..20 - uris.len())
        .map(|i| format!("https://app.example.com/{i}"))
        .collect();
    twenty.extend(uris.iter().map(|u| (*u).to_owned()));
    let long = format!("https://app.example.com/{}", "a".repeat(2000 - 24));
    assert_eq!(long.len(), 2000);
    twenty[0] = long;
    let body = create(
        &app,
        &admin,
        &json!({
            "name": "Everywhere",
            "redirect_uris": twenty,
            "post_logout_redirect_uris": uris,
            "type": "public",
        }),
    )
    .await;
    assert_eq!(body["client"]["redirect_uris"], json!(twenty));
    assert_eq!(body["client"]["post_logout_redirect_uris"], json!(uris));
}

#[tokio::test]
async fn hostile_bodies_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let url = app.url("/v1/admin/clients");
    let raw = |body: Vec<u8>| {
        admin
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };
    for body in [
        b"{".to_vec(),
        b"{\"name\": \"App\", \"redirect_uris\": [".to_vec(),
        b"not json".to_vec(),
        b"[]".to_vec(),
        b"\"App\"".to_vec(),
        b"null".to_vec(),
        b"".to_vec(),
        vec![0xff, 0xfe, 0x00],
    ] {
        let res = raw(body.clone()).await.expect("request");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    for body in [
        // Missing required fields.
        json!({}),
        json!({ "name": "App", "type": "confidential" }),
        json!({ "name": "App", "redirect_uris": [CB] }),
        // Wrong types.
        json!({ "name": 1, "redirect_uris": [CB], "type": "public" }),
        json!({ "name": "App", "redirect_uris": CB, "type": "public" }),
        json!({ "name": "App", "redirect_uris": [1], "type": "public" }),
        json!({ "name": "App", "redirect_uris": [CB], "type": true }),
        json!({ "name": "App", "redirect_uris": [CB], "type": "public", "first_party": "yes" }),
        json!({ "name": "App", "redirect_uris": [CB], "type": "public", "scopes": "openid" }),
        json!({ "name": ["App"], "redirect_uris": [CB], "type": "public" }),
        // Null where a value is expected.
        json!({ "name": "App", "redirect_uris": [CB], "type": "public", "roles": null }),
        json!({ "name": null, "redirect_uris": [CB], "type": "public" }),
        // Unknown fields, among them what the server chooses.
        json!({ "name": "App", "redirect_uris": [CB], "type": "public", "client_id": "mine" }),
        json!({ "name": "App", "redirect_uris": [CB], "type": "confidential",
                "client_secret": "ghcs_chosen_by_the_caller" }),
        json!({ "name": "App", "redirect_uris": [CB], "type": "public", "secret_hash": "00" }),
        json!({ "name": "App", "redirect_uris": [CB], "type": "public", "revision": 5 }),
    ] {
        let res = post(&app, &admin, &body).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    // No JSON content type: 415.
    let res = admin
        .post(&url)
        .header(CONTENT_TYPE, "text/plain")
        .body(json!({ "name": "App", "redirect_uris": [CB], "type": "public" }).to_string())
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // 70 KB: 413, as a body and as many redirect URIs.
    let big = json!({ "name": "x".repeat(70 * 1024), "redirect_uris": [CB], "type": "public" });
    assert_problem(
        post(&app, &admin, &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let many: Vec<String> = (0..2000)
        .map(|i| format!("https://app.example.com/{i:030}"))
        .collect();
    let big = json!({ "name": "App", "redirect_uris": many, "type": "public" });
    assert!(big.to_string().len() > 70 * 1024);
    assert_problem(
        post(&app, &admin, &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // 60 KB of allowed shape but too many URIs: 422, not a crash.
    let many: Vec<String> = (0..1500)
        .map(|i| format!("https://app.example.com/{i}"))
        .collect();
    let fields = invalid_fields(
        post(
            &app,
            &admin,
            &json!({ "name": "App", "redirect_uris": many, "type": "public" }),
        )
        .await,
    )
    .await;
    assert_eq!(fields, ["redirect_uris"]);

    assert!(list(&app, &admin).await.is_empty(), "nothing was created");
    // Still serving, still the admin.
    let (id, _) = confidential(&app, &admin, "After").await;
    assert_eq!(get(&app, &admin, &id).await.status(), StatusCode::OK);
}

// -------------------------------------------------------- admins only

#[tokio::test]
async fn every_client_operation_is_for_admins_only_and_changes_nothing_otherwise() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let (id, _) = confidential(&app, &admin, "Guarded").await;
    let before = json_of(get(&app, &admin, &id).await, StatusCode::OK).await;
    let (user, cookie_client) = app.logged_in().await;
    let (token, _) = token_pair(&app, &user).await;
    let create_body = json!({ "name": "Sneaky", "redirect_uris": [CB], "type": "confidential" });
    let patch_body = json!({ "redirect_uris": ["https://evil.example/cb"] });
    let endpoints = [
        (Method::GET, "/v1/admin/clients".to_owned(), None),
        (
            Method::POST,
            "/v1/admin/clients".to_owned(),
            Some(&create_body),
        ),
        (Method::GET, format!("/v1/admin/clients/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/admin/clients/{id}"),
            Some(&patch_body),
        ),
        (Method::DELETE, format!("/v1/admin/clients/{id}"), None),
    ];
    for (method, path, body) in &endpoints {
        let res = call(&app, &app.bare_client(), method.clone(), path, *body).await;
        assert_problem(res, StatusCode::UNAUTHORIZED).await;

        let mut req = cookie_client
            .request(method.clone(), app.url(path))
            .header(ORIGIN, app.origin());
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request");
        assert_problem(res, StatusCode::FORBIDDEN).await;

        let mut req = app
            .bare_client()
            .request(method.clone(), app.url(path))
            .bearer_auth(&token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request");
        let problem = assert_problem(res, StatusCode::FORBIDDEN).await;
        assert_eq!(problem["type"], "urn:gatehouse:problem:insufficient-scope");
    }
    // Nothing was created, changed or deleted.
    let all = list(&app, &admin).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0], before["client"]);
    // An admin's bearer token does the same as their cookie.
    let admin_user = app
        .create_user_with_role("token-admin", &["gatehouse:admin"])
        .await;
    let (admin_token, _) = token_pair(&app, &admin_user).await;
    let res = app
        .bare_client()
        .post(app.url("/v1/admin/clients"))
        .bearer_auth(&admin_token)
        .json(&json!({ "name": "By token", "redirect_uris": [CB], "type": "public" }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
}

// ---------------------------------------------------- the command line

/// A fresh directory with the database `serve` would create.
fn database() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    dir
}

fn client_cmd(dir: &Path, args: &[&str]) -> crate::process::Finished {
    run(gatehouse(dir).arg("client").args(args), "")
}

/// A row of the CLI's database: type and secret hash.
async fn cli_row(dir: &Path, id: &str) -> Option<(String, Option<Vec<u8>>)> {
    let url = format!("sqlite://{}", dir.join("gatehouse.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("db");
    let row = sqlx::query_as("SELECT type, secret_hash FROM clients WHERE client_id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await
        .expect("reading the row");
    db.close().await;
    row
}

#[tokio::test]
async fn cli_client_create_prints_the_id_and_the_secret_once() {
    let dir = database();
    let out = client_cmd(
        dir.path(),
        &[
            "create",
            "--name",
            "Orders web",
            "--redirect-uri",
            CB,
            "--redirect-uri",
            "http://127.0.0.1:8080/cb",
            "--post-logout-redirect-uri",
            "https://app.example.com/bye",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    let rest = lines[0]
        .strip_prefix("created confidential client ")
        .unwrap_or_else(|| panic!("{:?}", lines[0]));
    let (id, name) = rest.split_once(' ').expect("id and name");
    assert_eq!(name, "Orders web");
    let secret = lines[1];
    assert!(
        secret.starts_with("ghcs_") && secret.len() == 48,
        "{secret}"
    );
    let (kind, hash) = cli_row(dir.path(), id).await.expect("the row");
    assert_eq!(kind, "confidential");
    assert_eq!(hash, Some(hash_of(secret)), "only the SHA-256 is stored");
    let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("db");
    let bye: String =
        sqlx::query_scalar("SELECT post_logout_redirect_uris FROM clients WHERE client_id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .expect("the row");
    db.close().await;
    assert_eq!(bye, r#"["https://app.example.com/bye"]"#);

    let out = client_cmd(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains(id) && out.stdout.contains("Orders web"),
        "{out:?}"
    );
    assert!(out.stdout.contains("confidential"), "{out:?}");
    assert!(
        !out.stdout.contains(&secret[5..]),
        "the secret is shown once"
    );

    let out = client_cmd(
        dir.path(),
        &[
            "create",
            "--name",
            "Phone",
            "--redirect-uri",
            "com.example.app:/cb",
            "--public",
            "--first-party",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "a public client has no secret: {out:?}");
    let public_id = lines[0]
        .strip_prefix("created public client ")
        .and_then(|r| r.split(' ').next())
        .expect("the id");
    let (kind, hash) = cli_row(dir.path(), public_id).await.expect("the row");
    assert_eq!((kind.as_str(), hash), ("public", None));
    let out = client_cmd(dir.path(), &["list"]);
    assert!(out.stdout.contains(public_id) && out.stdout.contains("public"));

    // The command line's creations are in the audit trail, by the CLI.
    let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("db");
    let actors: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, details FROM audit_events WHERE type = 'client_created' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .expect("the trail");
    db.close().await;
    assert_eq!(actors.len(), 2);
    assert!(actors.iter().all(|(actor, _)| actor == "cli"));
    assert!(actors.iter().all(|(_, d)| !d.contains(&secret[5..])));
}

#[tokio::test]
async fn cli_client_refusals_exit_1_with_one_line_and_usage_errors_2() {
    let dir = database();
    for (args, says) in [
        (
            &[
                "create",
                "--name",
                "App",
                "--redirect-uri",
                "http://app.example.com/cb",
            ][..],
            "redirect_uris",
        ),
        (
            &[
                "create",
                "--name",
                "App",
                "--redirect-uri",
                "javascript:alert(1)",
            ],
            "redirect_uris",
        ),
        (&["create", "--name", "", "--redirect-uri", CB], "name"),
        (
            &[
                "create",
                "--name",
                "A",
                "--redirect-uri",
                CB,
                "--post-logout-redirect-uri",
                "http://evil.example/",
            ],
            "post_logout_redirect_uris",
        ),
        (&["delete", "not-a-client-id"], "not-a-client-id"),
        // The code flow needs a redirect URI; a service does not.
        (&["create", "--name", "App"], "redirect_uris"),
        (
            &["create", "--name", "App", "--grant-type", "implicit"],
            "grant_types",
        ),
        (
            &[
                "create",
                "--name",
                "Svc",
                "--grant-type",
                "client_credentials",
                "--role",
                "no-such-role",
            ],
            "no-such-role",
        ),
        (&["rotate-secret", "not-a-client-id"], "not-a-client-id"),
    ] {
        let out = client_cmd(dir.path(), args);
        let line = assert_fails_with_one_line(&out);
        assert!(
            line.starts_with("gatehouse: ") && line.contains(says),
            "{args:?}: {line}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let out = client_cmd(dir.path(), &["delete", &unknown]);
    assert!(assert_fails_with_one_line(&out).contains(&unknown));
    let out = client_cmd(dir.path(), &["rotate-secret", &unknown]);
    assert!(assert_fails_with_one_line(&out).contains(&unknown));
    for args in [
        &["create", "--redirect-uri", CB][..],
        &["rotate-secret"],
        &[
            "create",
            "--name",
            "App",
            "--redirect-uri",
            CB,
            "--type",
            "public",
        ],
        &["delete"],
        &["rename"],
        &[],
    ] {
        let out = client_cmd(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.trim().is_empty(), "{args:?}: {out:?}");
    }
    let out = client_cmd(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "only the header: {out:?}");
}

#[tokio::test]
async fn cli_client_delete_removes_it() {
    let dir = database();
    let out = client_cmd(
        dir.path(),
        &["create", "--name", "Gone", "--redirect-uri", CB],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let id = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("created confidential client "))
        .and_then(|r| r.split(' ').next())
        .expect("the id")
        .to_owned();
    let out = client_cmd(dir.path(), &["delete", &id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), format!("deleted client {id}"));
    assert!(cli_row(dir.path(), &id).await.is_none());
    let out = client_cmd(dir.path(), &["list"]);
    assert!(!out.stdout.contains(&id), "{out:?}");
    let again = client_cmd(dir.path(), &["delete", &id]);
    assert_fails_with_one_line(&again);
}

#[test]
fn cli_client_commands_refuse_to_create_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["list"][..],
        &["create", "--name", "App", "--redirect-uri", CB],
        &["delete", "0193e5a0-0000-7000-8000-000000000001"],
    ] {
        let out = client_cmd(dir.path(), args);
        let line = assert_fails_with_one_line(&out);
        assert!(line.starts_with("gatehouse: no database at "), "{line}");
        assert!(
            std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
            "{args:?} created a file"
        );
    }
}

/// A service client from the command line (`--grant-type`, `--role`, no
/// redirect URI), and `client rotate-secret`: the new secret alone on its
/// line, the stored hash replaced; a public client has none to rotate.
#[tokio::test]
async fn cli_client_for_a_service_and_its_secret_rotated() {
    let dir = database();
    let out = run(
        gatehouse(dir.path()).args(["role", "set", "reports", "reports:read"]),
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = client_cmd(
        dir.path(),
        &[
            "create",
            "--name",
            "Report builder",
            "--grant-type",
            "client_credentials",
            "--role",
            "reports",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    let id = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("the id")
        .to_owned();
    let secret = lines.next().expect("the secret").to_owned();
    let (_, before) = cli_row(dir.path(), &id).await.expect("stored");
    let out = client_cmd(dir.path(), &["rotate-secret", &id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0], format!("rotated the secret of client {id}"));
    let rotated = lines[1];
    assert!(
        rotated.starts_with("ghcs_") && rotated.len() == 48,
        "{rotated}"
    );
    assert_ne!(rotated, secret);
    let (_, after) = cli_row(dir.path(), &id).await.expect("stored");
    assert_eq!(
        after.as_deref(),
        Some(&Sha256::digest(URL_SAFE_NO_PAD.decode(&rotated[5..]).expect("b64"))[..])
    );
    assert_ne!(after, before);

    let out = client_cmd(
        dir.path(),
        &["create", "--name", "SPA", "--public", "--redirect-uri", CB],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let public = out
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("the id")
        .to_owned();
    let out = client_cmd(dir.path(), &["rotate-secret", &public]);
    assert!(assert_fails_with_one_line(&out).contains("public"));
}
