//! Cookie sessions: login, the cookie's attributes, listing, ending,
//! expiry, and what is stored.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::helpers::*;

#[tokio::test]
async fn login_sets_a_secure_host_only_session_cookie() {
    let app = TestApp::spawn_with(|c| c.cookie_secure = true).await;
    let user = app.create_user().await;
    let res = app.login(&app.bare_client(), &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let header = set_cookie_header(&res, "__Host-gatehouse").expect("Set-Cookie");
    let value = session_cookie_value(&res, "__Host-gatehouse").expect("value");
    assert_eq!(value.len(), 43);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&value)
        .expect("base64url");
    assert_eq!(raw.len(), 32);
    let attrs: Vec<&str> = header.split(';').skip(1).map(str::trim).collect();
    for want in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing from {header}");
    }
    assert!(!header.to_ascii_lowercase().contains("domain="), "{header}");
    let max_age: u64 = attrs
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("persistent cookie")
        .parse()
        .expect("seconds");
    let week = 7 * 24 * 3600;
    assert!((week - 5..=week).contains(&max_age), "{max_age}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["email"], user.email.as_str());
    assert_eq!(body["session"]["current"], true);
    assert!(
        !body.to_string().contains(&value),
        "the secret is only in the cookie"
    );
}

#[tokio::test]
async fn plain_http_mode_uses_the_gatehouse_cookie_without_secure() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app.login(&app.bare_client(), &user).await;
    let header = set_cookie_header(&res, "gatehouse").expect("Set-Cookie");
    assert!(!header.contains("Secure"), "{header}");
    assert!(header.contains("HttpOnly"));
    assert!(set_cookie_header(&res, "__Host-gatehouse").is_none());
}

#[tokio::test]
async fn every_login_creates_a_new_session() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.bare_client();
    let first = app.login(&client, &user).await;
    let second = app.login(&client, &user).await;
    let (a, b) = (
        session_cookie_value(&first, "gatehouse").expect("cookie"),
        session_cookie_value(&second, "gatehouse").expect("cookie"),
    );
    assert_ne!(a, b);
    let a_id = first.json::<Value>().await.expect("json")["session"]["id"].clone();
    let b_id = second.json::<Value>().await.expect("json")["session"]["id"].clone();
    assert_ne!(a_id, b_id);
}

#[tokio::test]
async fn a_client_chosen_session_id_is_never_adopted() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let planted = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([42u8; 32]);
    let res = app
        .bare_client()
        .post(app.url("/v1/login"))
        .header("cookie", format!("gatehouse={planted}"))
        .json(&serde_json::json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let issued = session_cookie_value(&res, "gatehouse").expect("cookie");
    assert_ne!(issued, planted);
    let me = app
        .bare_client()
        .get(app.url("/v1/me"))
        .header("cookie", format!("gatehouse={planted}"))
        .send()
        .await
        .expect("request");
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn only_the_sha256_of_the_session_secret_is_stored() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app.login(&app.bare_client(), &user).await;
    let secret = session_cookie_value(&res, "gatehouse").expect("cookie");
    let db = app.sql().await;
    let rows: Vec<(Vec<u8>, String)> = sqlx::query_as("SELECT secret_hash, id FROM sessions")
        .fetch_all(&db)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    let expected: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&secret)
        .expect("b64");
    let expected_raw: [u8; 32] = Sha256::digest(&raw).into();
    assert!(
        rows[0].0 == expected_raw || rows[0].0 == expected,
        "a SHA-256 of the secret"
    );
    drop(db);
    // The secret itself appears nowhere in the database file.
    let mut bytes = std::fs::read(&app.db_path).expect("db file");
    bytes.extend(std::fs::read(app.db_path.with_extension("db-wal")).unwrap_or_default());
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains(&secret));
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let login = app.login(&app.bare_client(), &user).await;
    let secret = session_cookie_value(&login, "gatehouse").expect("cookie");
    let cookie = format!("gatehouse={secret}");
    let res = app
        .bare_client()
        .post(app.url("/v1/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookie_header(&res, "gatehouse").expect("Set-Cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(cleared.starts_with("gatehouse=;"), "{cleared}");
    // Replaying the old cookie gets nothing.
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/sessions"),
        ("POST", "/v1/logout"),
    ] {
        let res = app
            .bare_client()
            .request(method.parse().expect("method"), app.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn logout_without_credentials_is_401() {
    let app = TestApp::spawn().await;
    let res = app
        .client()
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn the_session_list_shows_live_sessions_and_marks_the_current_one() {
    let app = TestApp::spawn().await;
    let (user, laptop) = app.logged_in().await;
    let phone = app.client();
    let res = phone
        .post(app.url("/v1/login"))
        .header("user-agent", "PhoneBrowser/1.0")
        .json(&serde_json::json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    let phone_session = res.json::<Value>().await.expect("json")["session"]["id"].clone();
    let other_user = app.logged_in().await;
    drop(other_user);

    let sessions = app.sessions(&laptop).await;
    assert_eq!(sessions.len(), 2, "only this user's sessions");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_ne!(current[0]["id"], phone_session);
    let phone_row = sessions
        .iter()
        .find(|s| s["id"] == phone_session)
        .expect("phone listed");
    assert_eq!(phone_row["user_agent"], "PhoneBrowser/1.0");
    assert_eq!(phone_row["ip"], "127.0.0.1");
    for field in [
        "created_at",
        "last_seen_at",
        "expires_at",
        "idle_expires_at",
    ] {
        assert!(phone_row[field].is_string(), "{field}");
    }
}

#[tokio::test]
async fn ending_a_session_by_id_logs_that_device_out() {
    let app = TestApp::spawn().await;
    let (user, laptop) = app.logged_in().await;
    let phone = app.client();
    let phone_session = app
        .login(&phone, &user)
        .await
        .json::<Value>()
        .await
        .expect("json")["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let res = laptop
        .delete(app.url(&format!("/v1/sessions/{phone_session}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&phone).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get_me(&laptop).await.status(), StatusCode::OK);
    // Ending it again: it no longer exists.
    let again = laptop
        .delete(app.url(&format!("/v1/sessions/{phone_session}")))
        .send()
        .await
        .expect("request");
    assert_problem(again, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn another_users_session_cannot_be_ended_and_looks_unknown() {
    let app = TestApp::spawn().await;
    let (_, attacker) = app.logged_in().await;
    let (_, victim) = app.logged_in().await;
    let victim_session = app.sessions(&victim).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let res = attacker
        .delete(app.url(&format!("/v1/sessions/{victim_session}")))
        .send()
        .await
        .expect("request");
    let problem = assert_problem(res, StatusCode::NOT_FOUND).await;
    let unknown = attacker
        .delete(app.url(&format!("/v1/sessions/{}", uuid::Uuid::now_v7())))
        .send()
        .await
        .expect("request");
    assert_eq!(
        assert_problem(unknown, StatusCode::NOT_FOUND).await,
        problem
    );
    assert_eq!(app.get_me(&victim).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_the_current_session_by_id_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    let id = app.sessions(&client).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let res = client
        .delete(app.url(&format!("/v1/sessions/{id}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookie_header(&res, "gatehouse").expect("Set-Cookie");
    assert!(cleared.contains("Max-Age=0"));
    assert_eq!(app.get_me(&client).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ending_all_other_sessions_keeps_only_the_current_one() {
    let app = TestApp::spawn().await;
    let (user, here) = app.logged_in().await;
    let others: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let c = app.client();
            app.login(&c, &user).await;
            v.push(c);
        }
        v
    };
    let (_, bystander) = app.logged_in().await;
    let res = here
        .delete(app.url("/v1/sessions?scope=others"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for c in &others {
        assert_eq!(app.get_me(c).await.status(), StatusCode::UNAUTHORIZED);
    }
    let left = app.sessions(&here).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["current"], true);
    assert_eq!(
        app.get_me(&bystander).await.status(),
        StatusCode::OK,
        "other users untouched"
    );
}

#[tokio::test]
async fn deleting_sessions_without_scope_others_is_refused() {
    let app = TestApp::spawn().await;
    let (user, here) = app.logged_in().await;
    let other = app.client();
    app.login(&other, &user).await;
    for query in ["", "?scope=all", "?scope=others&x=1"] {
        let res = here
            .delete(app.url(&format!("/v1/sessions{query}")))
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.get_me(&other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_session_expires_and_use_keeps_it_alive() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        c.session_idle_timeout = Duration::from_secs(30 * 60);
    })
    .await;
    let (_, client) = app.logged_in().await;
    // Used every 20 minutes, a 30-minute idle timeout never fires.
    for _ in 0..4 {
        clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    }
    // Just short of the timeout since the last use: still alive.
    clock.advance(Duration::from_secs(30 * 60 - 1));
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(30 * 60 + 1));
    assert_problem(app.get_me(&client).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_busy_session_still_ends_at_its_absolute_timeout() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        c.session_absolute_timeout = Duration::from_secs(3600);
    })
    .await;
    let (_, client) = app.logged_in().await;
    let login_max_age_checked = app.sessions(&client).await[0]["expires_at"].clone();
    assert!(login_max_age_checked.is_string());
    // Used every 10 minutes: busy, never idle.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(10 * 60));
        assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    }
    clock.advance(Duration::from_secs(10 * 60 - 1));
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_problem(app.get_me(&client).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn last_seen_is_not_written_on_every_request() {
    // With the default 24 h idle timeout, last_seen_at is written at most
    // once a minute.
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |_| {}).await;
    let (_, client) = app.logged_in().await;
    let before = app.sessions(&client).await[0]["last_seen_at"].clone();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(15));
        assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    }
    assert_eq!(app.sessions(&client).await[0]["last_seen_at"], before);
    // The control: past the minute, the next use is written.
    clock.advance(Duration::from_secs(16));
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    assert_ne!(app.sessions(&client).await[0]["last_seen_at"], before);
}

#[tokio::test]
async fn last_seen_advances_after_a_tenth_of_the_idle_timeout() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        c.session_idle_timeout = Duration::from_secs(3);
    })
    .await;
    let (_, client) = app.logged_in().await;
    let before = app.sessions(&client).await[0]["last_seen_at"].clone();
    clock.advance(Duration::from_millis(400));
    let after = app.sessions(&client).await[0].clone();
    assert_ne!(after["last_seen_at"], before);
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("rfc3339")
    };
    let idle = parse(&after["idle_expires_at"]) - parse(&after["last_seen_at"]);
    assert_eq!(idle, time::Duration::seconds(3));
}

#[tokio::test]
async fn a_disabled_users_sessions_are_refused() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    sqlx::query("UPDATE users SET disabled = 1 WHERE email = ?")
        .bind(&user.email)
        .execute(&app.sql().await)
        .await
        .expect("update");
    assert_problem(app.get_me(&client).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_disabled_users_cached_session_is_refused_within_the_cache_bound() {
    // The cookie path answers a session it read moments ago from memory (the
    // principal cache, one second at most); a write behind the server's back
    // reaches it when that read expires. (Disabling through gatehouse ends
    // the sessions too: refused by the next request.)
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    let done = sqlx::query("UPDATE users SET disabled = 1 WHERE email = ?")
        .bind(&user.email)
        .execute(&app.sql().await)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 1);
    let written = std::time::Instant::now();
    loop {
        let res = app.get_me(&client).await;
        if res.status() == StatusCode::UNAUTHORIZED {
            assert_problem(res, StatusCode::UNAUTHORIZED).await;
            break;
        }
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            written.elapsed() < Duration::from_secs(3),
            "the disabled user's cookie still works 3 s later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    let res = client
        .post(app.url("/v1/login"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&serde_json::json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["session"]["ip"], "127.0.0.1");
}

#[tokio::test]
async fn forwarded_for_is_believed_from_trusted_proxies() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let user = app.create_user().await;
    let client = app.client();
    let res = client
        .post(app.url("/v1/login"))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
        .json(&serde_json::json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["session"]["ip"], "203.0.113.7");
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let c = app.client();
    assert_eq!(
        c.get(app.url("/healthz")).send().await.expect("r").status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(app.url("/readyz")).send().await.expect("r").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn readiness_is_503_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    // Make the database unreadable under the running server.
    let db = app.sql().await;
    sqlx::query("DROP TABLE sessions")
        .execute(&db)
        .await
        .expect("drop");
    sqlx::query("ALTER TABLE users RENAME TO users_gone")
        .execute(&db)
        .await
        .expect("rename");
    drop(db);
    let ready = app
        .client()
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("request");
    assert_problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    let res = client.get(app.url("/v1/me")).send().await.expect("request");
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    let res = app
        .client()
        .post(app.url("/v1/login"))
        .json(&serde_json::json!({ "email": "a@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("request");
    assert_ne!(res.status(), StatusCode::OK);
    assert_ne!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
