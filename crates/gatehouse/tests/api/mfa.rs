//! Second factors: TOTP enrolment and the two-step login, with codes
//! computed by PyPI's `pyotp` (installed and pinned by scripts/test.sh) from
//! the enrolment's `otpauth://` URI; recovery codes; the token endpoint's
//! `mfa_required` answer and MFA grant; step-up; the administrator's reset;
//! hostile input; and a login begun on one node and finished on another.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::clock::{Clock as _, ManualClock};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, session_cookie_value};

/// Keep in step with PYOTP_VERSION in scripts/test.sh.
const PYOTP: &str = "2.9.0";

/// Runs `script` with `args` in Python with pyotp; its stdout, trimmed.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys, importlib.metadata, pyotp\n\
             v = importlib.metadata.version('pyotp')\n\
             assert v == {PYOTP:?}, 'pyotp ' + v + ' is not the pinned {PYOTP}'\n{script}"
        ))
        .args(args)
        .output()
        .expect("python3 runs (pyotp is installed by scripts/test.sh: pip install pyotp==2.9.0)");
    assert!(
        out.status.success(),
        "pyotp failed (install it with: pip install pyotp=={PYOTP}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// The code pyotp computes from `uri` for the instant `unix`.
fn pyotp_code(uri: &str, unix: i64) -> String {
    python(
        "print(pyotp.parse_uri(sys.argv[1]).at(int(sys.argv[2])))",
        &[uri, &unix.to_string()],
    )
}

/// The code for the real now plus `offset` seconds (apps on the system
/// clock).
fn code_now(uri: &str, offset: i64) -> String {
    pyotp_code(
        uri,
        time::OffsetDateTime::now_utc().unix_timestamp() + offset,
    )
}

async fn post(client: &Client, url: String, body: Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.expect("request")
}

async fn json_of(res: reqwest::Response) -> Value {
    res.json().await.expect("json")
}

/// Enrols TOTP for the signed-in `client` with the code pyotp computes at
/// `at` (Unix seconds): the `otpauth://` URI and the recovery codes.
pub(crate) async fn enrol(
    app: &TestApp,
    client: &Client,
    user: &TestUser,
    at: i64,
) -> (String, Vec<String>) {
    let res = post(
        client,
        app.url("/v1/me/mfa/totp"),
        json!({ "password": user.password }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = json_of(res).await;
    let uri = body["otpauth_uri"].as_str().expect("uri").to_owned();
    let res = post(
        client,
        app.url("/v1/me/mfa/totp/confirm"),
        json!({ "code": pyotp_code(&uri, at) }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let codes: Vec<String> = json_of(res).await["recovery_codes"]
        .as_array()
        .expect("recovery codes with the first factor")
        .iter()
        .map(|c| c.as_str().expect("string").to_owned())
        .collect();
    (uri, codes)
}

/// Logs in with the password: the `mfa_required` answer's `mfa_token`.
pub(crate) async fn first_step(app: &TestApp, client: &Client, user: &TestUser) -> String {
    let res = app.login(client, user).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "no cookie before the second step"
    );
    let body = json_of(res).await;
    assert_eq!(body["mfa_required"], true, "{body}");
    body["mfa_token"].as_str().expect("mfa_token").to_owned()
}

pub(crate) async fn second_step(
    app: &TestApp,
    client: &Client,
    token: &str,
    code: &str,
) -> reqwest::Response {
    post(
        client,
        app.url("/v1/login/mfa"),
        json!({ "mfa_token": token, "code": code }),
    )
    .await
}

/// The claims of a JWT, unverified (the server's own token, read back).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

async fn session_amr(app: &TestApp, client: &Client) -> Value {
    let me = json_of(app.get_me(client).await).await;
    me["session"]["amr"].clone()
}

/// A server on a clock the test moves, and that clock.
async fn app_on_clock(
    configure: impl FnOnce(&mut gatehouse::Config),
) -> (TestApp, Arc<ManualClock>) {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), configure).await;
    (app, clock)
}

fn now(clock: &ManualClock) -> i64 {
    clock.now().unix_timestamp()
}

#[tokio::test]
async fn totp_enrolment_with_pyotp_then_a_two_step_login_records_amr() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, client) = app.logged_in().await;
    assert_eq!(session_amr(&app, &client).await, json!(["pwd"]));
    let status = json_of(client.get(app.url("/v1/me/mfa")).send().await.expect("req")).await;
    assert_eq!(
        status,
        json!({ "totp": false, "passkeys": [], "recovery_codes_left": 0 })
    );

    // A wrong password enrols nothing.
    let res = post(
        &client,
        app.url("/v1/me/mfa/totp"),
        json!({ "password": "not the password" }),
    )
    .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = post(
        &client,
        app.url("/v1/me/mfa/totp"),
        json!({ "password": user.password }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let uri = body["otpauth_uri"].as_str().expect("uri").to_owned();
    // pyotp reads the URI as authenticator apps do.
    let parsed = python(
        "t = pyotp.parse_uri(sys.argv[1])\n\
         print(t.issuer, t.name, t.digits, t.interval, t.digest().name, t.secret)",
        &[&uri],
    );
    let host = app.addr.ip().to_string();
    assert_eq!(
        parsed,
        format!(
            "{host} {} 6 30 sha1 {}",
            user.email,
            body["secret"].as_str().expect("secret")
        )
    );
    // Pending: a login still needs only the password.
    let res = app.login(&app.client(), &user).await;
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());

    let t = now(&clock);
    let res = post(
        &client,
        app.url("/v1/me/mfa/totp/confirm"),
        json!({ "code": "000000" }),
    )
    .await;
    let wrong = pyotp_code(&uri, t) == "000000";
    if !wrong {
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    let res = post(
        &client,
        app.url("/v1/me/mfa/totp/confirm"),
        json!({ "code": pyotp_code(&uri, t) }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let codes = json_of(res).await["recovery_codes"].clone();
    let codes: Vec<&str> = codes
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("str"))
        .collect();
    assert_eq!(codes.len(), 10);
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    // 12 base32 characters: 60 bits each.
    assert!(
        codes.iter().all(|c| c.replace('-', "").len() == 12),
        "{codes:?}"
    );
    // Enrolling again while active is a conflict.
    let res = post(
        &client,
        app.url("/v1/me/mfa/totp"),
        json!({ "password": user.password }),
    )
    .await;
    assert_problem(res, StatusCode::CONFLICT).await;
    let status = json_of(client.get(app.url("/v1/me/mfa")).send().await.expect("req")).await;
    assert_eq!(
        status,
        json!({ "totp": true, "passkeys": [], "recovery_codes_left": 10 })
    );

    // The password alone now starts no session.
    let browser = app.client();
    let res = app.login(&browser, &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("set-cookie").is_none());
    let body = json_of(res).await;
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(body["expires_in"], 300);
    let token = body["mfa_token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.get_me(&browser).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The code that confirmed the enrolment was used: refused, even within
    // its 30 seconds.
    let res = second_step(&app, &browser, &token, &pyotp_code(&uri, t)).await;
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-code");
    // The next step's code signs in.
    clock.advance(Duration::from_secs(30));
    let res = second_step(&app, &browser, &token, &pyotp_code(&uri, now(&clock))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
    let body = json_of(res).await;
    assert_eq!(body["session"]["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(body["user"]["email"], user.email.as_str());
    assert_eq!(
        session_amr(&app, &browser).await,
        json!(["pwd", "otp", "mfa"])
    );
    // Its access tokens carry `amr`.
    let res = browser
        .post(app.url("/v1/session/token"))
        .send()
        .await
        .expect("req");
    let access = json_of(res).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(claims(&access)["amr"], json!(["pwd", "otp", "mfa"]));
    // ... which the bearer path reads back.
    let me = app
        .bare_client()
        .get(app.url("/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("req");
    assert_eq!(
        json_of(me).await["session"]["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    // The mfa_token was spent by the login.
    clock.advance(Duration::from_secs(30));
    let res = second_step(&app, &app.client(), &token, &pyotp_code(&uri, now(&clock))).await;
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-mfa-token");

    // The trail names the enrolment and the failed code, never the code.
    let events: Vec<(String, Value)> =
        sqlx::query_as::<_, (String, String)>("SELECT type, details FROM audit_events ORDER BY id")
            .fetch_all(&app.sql().await)
            .await
            .expect("audit")
            .into_iter()
            .map(|(t, d)| (t, serde_json::from_str(&d).expect("json")))
            .collect();
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "mfa_enrolled" && d["method"] == "totp")
    );
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "mfa_failed" && d["during"] == "login")
    );
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "login_succeeded" && d["amr"] == json!(["pwd", "otp", "mfa"]))
    );
}

#[tokio::test]
async fn codes_one_step_either_side_are_accepted_and_two_steps_are_not() {
    let (app, clock) = app_on_clock(|c| c.login_max_failures = 20).await;
    let (user, client) = app.logged_in().await;
    let t0 = now(&clock);
    let (uri, _) = enrol(&app, &client, &user, t0).await;
    // Each login's code must be for a later step than the last accepted.
    clock.advance(Duration::from_secs(300));
    let t = now(&clock);
    let login = app.client();
    let token = first_step(&app, &login, &user).await;
    for offset in [-60, 60, -90, 90] {
        let res = second_step(&app, &login, &token, &pyotp_code(&uri, t + offset)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "offset {offset}s");
    }
    for offset in [-30, 0, 30] {
        let login = app.client();
        let token = first_step(&app, &login, &user).await;
        let res = second_step(&app, &login, &token, &pyotp_code(&uri, t + offset)).await;
        assert_eq!(res.status(), StatusCode::OK, "offset {offset}s");
    }
    // The step just used, and the one before it, are spent.
    for offset in [0, 30] {
        let login = app.client();
        let token = first_step(&app, &login, &user).await;
        let res = second_step(&app, &login, &token, &pyotp_code(&uri, t + offset)).await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "offset {offset}s again"
        );
    }
}

#[tokio::test]
async fn one_code_submitted_twice_at_once_signs_in_exactly_once() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, client) = app.logged_in().await;
    let (uri, _) = enrol(&app, &client, &user, now(&clock)).await;
    clock.advance(Duration::from_secs(60));
    let code = pyotp_code(&uri, now(&clock));
    let (a, b) = (app.client(), app.client());
    let (ta, tb) = (
        first_step(&app, &a, &user).await,
        first_step(&app, &b, &user).await,
    );
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(
            second_step(&app, &a, &ta, &code),
            second_step(&app, &b, &tb, &code)
        );
        let ok = [ra.status(), rb.status()]
            .iter()
            .filter(|s| **s == StatusCode::OK)
            .count();
        assert!(ok <= 1, "one code signed in twice");
        if ok == 1 {
            return;
        }
    }
    panic!("the right code never signed in");
}

#[tokio::test]
async fn a_recovery_code_signs_in_once_and_a_new_set_voids_the_old() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, client) = app.logged_in().await;
    let (uri, codes) = enrol(&app, &client, &user, now(&clock)).await;

    let login = app.client();
    let token = first_step(&app, &login, &user).await;
    // Typed in capitals with spaces: still the code.
    let typed = codes[0].to_uppercase().replace('-', " ");
    let res = second_step(&app, &login, &token, &typed).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_of(res).await["session"]["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    let login = app.client();
    let token = first_step(&app, &login, &user).await;
    let res = second_step(&app, &login, &token, &codes[0]).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let status = json_of(client.get(app.url("/v1/me/mfa")).send().await.expect("req")).await;
    assert_eq!(status["recovery_codes_left"], 9);

    // A recovery code does not buy a new set: it takes a TOTP code.
    let res = post(
        &client,
        app.url("/v1/me/mfa/recovery-codes"),
        json!({ "code": codes[1] }),
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    clock.advance(Duration::from_secs(30));
    let res = post(
        &client,
        app.url("/v1/me/mfa/recovery-codes"),
        json!({ "code": pyotp_code(&uri, now(&clock)) }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = json_of(res).await["recovery_codes"].clone();
    assert_eq!(fresh.as_array().expect("codes").len(), 10);
    let res = second_step(&app, &login, &token, &codes[1]).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = second_step(&app, &login, &token, fresh[0].as_str().expect("code")).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Removing TOTP takes a current code, and its recovery codes go too.
    clock.advance(Duration::from_secs(30));
    let res = client
        .delete(app.url("/v1/me/mfa/totp"))
        .json(&json!({ "code": pyotp_code(&uri, now(&clock)) }))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let status = json_of(client.get(app.url("/v1/me/mfa")).send().await.expect("req")).await;
    assert_eq!(
        status,
        json!({ "totp": false, "passkeys": [], "recovery_codes_left": 0 })
    );
    let res = app.login(&app.client(), &user).await;
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
}

#[tokio::test]
async fn guessing_the_second_step_is_throttled_and_kills_the_token() {
    let (app, clock) = app_on_clock(|c| c.login_max_failures = 3).await;
    let (user, client) = app.logged_in().await;
    let (uri, _) = enrol(&app, &client, &user, now(&clock)).await;
    clock.advance(Duration::from_secs(60));
    let right = pyotp_code(&uri, now(&clock));
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let login = app.client();
    let token = first_step(&app, &login, &user).await;
    for _ in 0..3 {
        let res = second_step(&app, &login, &token, wrong).await;
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
    // Past the budget: 429 even with the right code, and a new password
    // login does not start the count over.
    let res = second_step(&app, &login, &token, &right).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let res = app.login(&app.client(), &user).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Once the window closes, the dead token stays dead (3 wrong codes).
    clock.advance(Duration::from_secs(16 * 60));
    let res = second_step(&app, &login, &token, &pyotp_code(&uri, now(&clock))).await;
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-mfa-token");
    // A token also dies after five minutes.
    let token = first_step(&app, &login, &user).await;
    clock.advance(Duration::from_secs(301));
    let res = second_step(&app, &login, &token, &pyotp_code(&uri, now(&clock))).await;
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-mfa-token");
}

#[tokio::test]
async fn the_token_endpoint_answers_mfa_required_and_the_mfa_grant_completes() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, client) = app.logged_in().await;
    let (uri, codes) = enrol(&app, &client, &user, now(&clock)).await;
    let token_client = app.bare_client();
    let grant = |params: Vec<(&'static str, String)>| {
        let (c, url) = (token_client.clone(), app.url("/v1/token"));
        async move { c.post(url).form(&params).send().await.expect("req") }
    };
    let res = grant(vec![
        ("grant_type", "password".into()),
        ("username", user.email.clone()),
        ("password", user.password.clone()),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body = json_of(res).await;
    assert_eq!(body["error"], "mfa_required");
    let mfa_token = body["mfa_token"].as_str().expect("mfa_token").to_owned();
    const MFA: &str = "urn:gatehouse:grant-type:mfa";

    // Neither or both of otp and recovery_code: invalid_request.
    for extra in [vec![], vec![("otp", "1"), ("recovery_code", "2")]] {
        let mut params = vec![
            ("grant_type", MFA.to_owned()),
            ("mfa_token", mfa_token.clone()),
        ];
        params.extend(extra.into_iter().map(|(k, v)| (k, v.to_owned())));
        let res = grant(params).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json_of(res).await["error"], "invalid_request");
    }
    let res = grant(vec![
        ("grant_type", MFA.into()),
        ("mfa_token", mfa_token.clone()),
        ("otp", "12345x".into()),
    ])
    .await;
    assert_eq!(json_of(res).await["error"], "invalid_grant");
    clock.advance(Duration::from_secs(30));
    let res = grant(vec![
        ("grant_type", MFA.into()),
        ("mfa_token", mfa_token.clone()),
        ("otp", pyotp_code(&uri, now(&clock))),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(claims(access)["amr"], json!(["pwd", "otp", "mfa"]));
    assert!(body["refresh_token"].is_string());
    // Refreshed tokens keep the session's amr.
    let res = grant(vec![
        ("grant_type", "refresh_token".into()),
        (
            "refresh_token",
            body["refresh_token"].as_str().expect("rt").into(),
        ),
    ])
    .await;
    let refreshed = json_of(res).await;
    assert_eq!(
        claims(refreshed["access_token"].as_str().expect("at"))["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    // The mfa_token is spent.
    let res = grant(vec![
        ("grant_type", MFA.into()),
        ("mfa_token", mfa_token),
        ("recovery_code", codes[0].clone()),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(res).await["error"], "invalid_grant");
    // A recovery code completes a fresh one.
    let res = grant(vec![
        ("grant_type", "password".into()),
        ("username", user.email.clone()),
        ("password", user.password.clone()),
    ])
    .await;
    let mfa_token = json_of(res).await["mfa_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let res = grant(vec![
        ("grant_type", MFA.into()),
        ("mfa_token", mfa_token),
        ("recovery_code", codes[0].clone()),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_hosted_login_page_asks_for_the_second_step() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, client) = app.logged_in().await;
    let (uri, _) = enrol(&app, &client, &user, now(&clock)).await;
    let browser = app.client();
    let origin = app.origin();
    let form = |path: &str, fields: Vec<(&str, String)>| {
        browser
            .post(app.url(path))
            .header("origin", origin.as_str())
            .form(&fields)
            .send()
    };
    let res = form(
        "/login",
        vec![
            ("email", user.email.clone()),
            ("password", user.password.clone()),
            ("return_to", "/account".into()),
        ],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("set-cookie").is_none());
    let page = res.text().await.expect("html");
    assert!(page.contains("Two-step verification"), "{page}");
    assert!(page.contains(r#"autocomplete="one-time-code""#));
    let token = page
        .split(r#"name="mfa_token" value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the mfa_token field")
        .to_owned();
    let res = form(
        "/login/mfa",
        vec![
            ("mfa_token", token.clone()),
            ("code", "abc".into()),
            ("return_to", "/account".into()),
        ],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.text()
            .await
            .expect("html")
            .contains("The code is incorrect")
    );
    clock.advance(Duration::from_secs(30));
    let res = form(
        "/login/mfa",
        vec![
            ("mfa_token", token.clone()),
            ("code", pyotp_code(&uri, now(&clock))),
            ("return_to", "/account".into()),
        ],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/account");
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
    // Without an allowed Origin the step is refused like every form post.
    let res = app
        .bare_client()
        .post(app.url("/login/mfa"))
        .form(&[("mfa_token", token.as_str()), ("code", "000000")])
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn step_up_rules_and_admin_requires_mfa_refuse_a_password_only_session() {
    let (app, clock) = app_on_clock(|c| {
        c.admin_requires_mfa = true;
        c.rules = vec![gatehouse::config::AccessRule {
            path: "/payments/".into(),
            methods: Vec::new(),
            policy: gatehouse::config::RulePolicy::Authenticated,
            mfa: true,
        }];
    })
    .await;
    let admin = app
        .create_user_with_role("admins", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &admin).await.status(), StatusCode::OK);
    let verify = |client: &Client, uri: &'static str| {
        client
            .get(app.url("/v1/verify"))
            .header("x-original-method", "GET")
            .header("x-original-uri", uri)
            .send()
    };
    assert_eq!(
        verify(&client, "/home").await.expect("req").status(),
        StatusCode::OK
    );
    let res = verify(&client, "/payments/new").await.expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    // Climbing out of the protected prefix does not escape it.
    let res = verify(&client, "/payments/../payments/new")
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client
        .get(app.url("/v1/admin/users"))
        .send()
        .await
        .expect("req");
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        problem["type"],
        "urn:gatehouse:problem:insufficient-user-authentication"
    );
    // A bearer token of that session is refused alike.
    let token = json_of(
        client
            .post(app.url("/v1/session/token"))
            .send()
            .await
            .expect("req"),
    )
    .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let res = app
        .bare_client()
        .get(app.url("/v1/admin/users"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // With a second factor, both let the caller through.
    let (uri, _) = enrol(&app, &client, &admin, now(&clock)).await;
    clock.advance(Duration::from_secs(30));
    let strong = app.client();
    let token = first_step(&app, &strong, &admin).await;
    let res = second_step(&app, &strong, &token, &pyotp_code(&uri, now(&clock))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        verify(&strong, "/payments/new")
            .await
            .expect("req")
            .status(),
        StatusCode::OK
    );
    let res = strong
        .get(app.url("/v1/admin/users"))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_administrator_resets_a_users_factors() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let admin = app
        .create_user_with_role("admins", &["gatehouse:admin"])
        .await;
    let admin_client = app.client();
    assert_eq!(
        app.login(&admin_client, &admin).await.status(),
        StatusCode::OK
    );
    let (user, client) = app.logged_in().await;
    enrol(&app, &client, &user, now(&clock)).await;
    let id = json_of(app.get_me(&client).await).await["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Not by the user themselves, nor for an unknown id.
    let res = client
        .delete(app.url(&format!("/v1/admin/users/{id}/mfa")))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = admin_client
        .delete(app.url(&format!("/v1/admin/users/{}/mfa", uuid::Uuid::now_v7())))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A login waiting for its second step dies with the factors.
    let pending = first_step(&app, &app.client(), &user).await;
    let res = admin_client
        .delete(app.url(&format!("/v1/admin/users/{id}/mfa")))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = second_step(&app, &app.client(), &pending, "000000").await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = app.login(&app.client(), &user).await;
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
    let reset: (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_events WHERE type = 'mfa_reset'")
            .fetch_one(&app.sql().await)
            .await
            .expect("audit");
    assert_eq!(reset.0, 1);
}

#[tokio::test]
async fn hostile_second_steps_get_a_clear_4xx() {
    let (app, _clock) = app_on_clock(|_| {}).await;
    let client = app.bare_client();
    let huge = "9".repeat(70_000);
    let bodies: Vec<(String, StatusCode)> = vec![
        ("{".into(), StatusCode::BAD_REQUEST),
        (
            r#"{"mfa_token": 5, "code": "123456"}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"mfa_token": "x"}"#.into(), StatusCode::BAD_REQUEST),
        (
            r#"{"mfa_token": "x", "code": "1", "admin": true}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"mfa_token": "' OR 1=1 --", "code": "' OR 1=1 --"}"#.into(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            format!(r#"{{"mfa_token": "{}", "code": "123456"}}"#, "A".repeat(43)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            format!(r#"{{"mfa_token": "x", "code": "{huge}"}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (body, status) in bodies {
        let res = client
            .post(app.url("/v1/login/mfa"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), status, "{}", &body[..body.len().min(80)]);
    }
    // Enrolment endpoints need a caller, and typed input.
    for path in [
        "/v1/me/mfa/totp",
        "/v1/me/mfa/totp/confirm",
        "/v1/me/mfa/recovery-codes",
    ] {
        let res = post(&client, app.url(path), json!({ "code": "123456" })).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (_, signed_in) = app.logged_in().await;
    for (path, body) in [
        ("/v1/me/mfa/totp", json!({ "password": 12 })),
        ("/v1/me/mfa/totp/confirm", json!({ "code": ["1"] })),
        (
            "/v1/me/mfa/recovery-codes",
            json!({ "code": "1", "extra": 1 }),
        ),
    ] {
        let res = post(&signed_in, app.url(path), body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    // Nothing pending or active: nothing to confirm, remove or renew.
    let res = post(
        &signed_in,
        app.url("/v1/me/mfa/totp/confirm"),
        json!({ "code": "123456" }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = signed_in
        .delete(app.url("/v1/me/mfa/totp"))
        .json(&json!({ "code": "123456" }))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// A login whose password step one node answered is completed on another
/// (the pending login lives in the shared database): on PostgreSQL, and on
/// PostgreSQL with Redis.
async fn a_login_begun_on_one_node_completes_on_another(a: TestApp) {
    let config = a.config.clone();
    let b = TestApp::spawn_with(|c| {
        c.database_url = config.database_url.clone();
        c.redis_url = config.redis_url.clone();
        c.redis_key_prefix = config.redis_key_prefix.clone();
    })
    .await;
    let (user, client) = a.logged_in().await;
    // Confirmed with the code of the step before now, so that the logins
    // below, with now's and the next step's, are later steps.
    let (uri, _) = enrol(
        &a,
        &client,
        &user,
        time::OffsetDateTime::now_utc().unix_timestamp() - 30,
    )
    .await;
    let browser = b.client();
    let token = first_step(&a, &a.client(), &user).await;
    let res = second_step(&b, &browser, &token, &code_now(&uri, 0)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        session_amr(&b, &browser).await,
        json!(["pwd", "otp", "mfa"])
    );
    // Spent on every node.
    let res = second_step(&a, &a.client(), &token, &code_now(&uri, 30)).await;
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-mfa-token");
}

#[tokio::test]
async fn on_postgres_a_login_begun_on_one_node_completes_on_another() {
    // Two nodes: two PostgreSQL pools.
    let _slots = crate::helpers::PG_SLOTS
        .acquire_many(2)
        .await
        .expect("the semaphore is never closed");
    a_login_begun_on_one_node_completes_on_another(TestApp::spawn_on_postgres(|_| {}).await).await;
}

#[tokio::test]
async fn on_redis_a_login_begun_on_one_node_completes_on_another() {
    // Two nodes: two PostgreSQL pools.
    let _slots = crate::helpers::PG_SLOTS
        .acquire_many(2)
        .await
        .expect("the semaphore is never closed");
    a_login_begun_on_one_node_completes_on_another(TestApp::spawn_on_redis(|_| {}).await).await;
}

/// The code pyotp computes from a base32 key for the instant `unix`.
fn pyotp_code_of_key(secret: &str, unix: i64) -> String {
    python(
        "print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
        &[secret, &unix.to_string()],
    )
}

#[tokio::test]
async fn the_account_page_sets_up_totp_with_a_qr_code_and_shows_the_codes_once() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, browser) = app.logged_in().await;
    let origin = app.origin();
    let form = |path: &str, fields: Vec<(&str, String)>| {
        browser
            .post(app.url(path))
            .header("origin", origin.as_str())
            .form(&fields)
            .send()
    };
    let page = browser
        .get(app.url("/account"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Two-step verification"), "{page}");
    assert!(page.contains("Set up an authenticator app"));

    let res = form(
        "/account/mfa/totp",
        vec![("mfa-password", "wrong password!".into())],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.text()
            .await
            .expect("html")
            .contains("The current password is incorrect.")
    );
    let res = form(
        "/account/mfa/totp",
        vec![("mfa-password", user.password.clone())],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let page = res.text().await.expect("html");
    assert!(
        page.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{page}"
    );
    assert!(
        !page.contains("<?xml"),
        "the QR code's XML declaration stays out of the page"
    );
    let secret = page
        .split(r#"<code class="secret">"#)
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the key to type in")
        .to_owned();
    let t = now(&clock);
    let right = pyotp_code_of_key(&secret, t);
    let wrong = if right == "111111" {
        "222222"
    } else {
        "111111"
    };
    let res = form("/account/mfa/totp/confirm", vec![("code", wrong.into())])
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let page = res.text().await.expect("html");
    assert!(page.contains("The code is incorrect") && page.contains(&secret));
    let res = form("/account/mfa/totp/confirm", vec![("code", right)])
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.expect("html");
    assert_eq!(page.matches("<li><code>").count(), 10, "{page}");
    let first_code = page
        .split("<li><code>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("a code")
        .to_owned();

    let page = browser
        .get(app.url("/account"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("Recovery codes left: <strong>10</strong>"),
        "{page}"
    );
    // The codes are not shown again, anywhere.
    assert!(!page.contains(&first_code));

    // The password alone no longer signs in; the code from the page does.
    let other = app.client();
    let token = first_step(&app, &other, &user).await;
    let res = second_step(&app, &other, &token, &first_code).await;
    assert_eq!(res.status(), StatusCode::OK);

    clock.advance(Duration::from_secs(30));
    let res = form(
        "/account/mfa/recovery-codes",
        vec![("codes-code", pyotp_code_of_key(&secret, now(&clock)))],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.text()
            .await
            .expect("html")
            .matches("<li><code>")
            .count(),
        10
    );
    clock.advance(Duration::from_secs(30));
    let res = form(
        "/account/mfa/totp/remove",
        vec![("remove-code", "12".into())],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = form(
        "/account/mfa/totp/remove",
        vec![("remove-code", pyotp_code_of_key(&secret, now(&clock)))],
    )
    .await
    .expect("req");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/account?notice=totp-removed");
    let res = app.login(&app.client(), &user).await;
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
}

#[tokio::test]
async fn gatehouse_user_reset_mfa_lets_the_password_alone_sign_in_again() {
    let (app, clock) = app_on_clock(|_| {}).await;
    let (user, client) = app.logged_in().await;
    enrol(&app, &client, &user, now(&clock)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = format!("sqlite://{}", app.db_path.display());
    let reset = |email: &str| {
        crate::process::run(
            crate::process::gatehouse(dir.path())
                .args(["user", "reset-mfa", email])
                .env("GATEHOUSE_DATABASE_URL", &database_url),
            "",
        )
    };
    let out = reset("nobody@example.com");
    let line = crate::process::assert_fails_with_one_line(&out);
    assert!(line.contains("nobody@example.com"), "{line}");
    let out = reset(&user.email.to_uppercase());
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("removed every second factor"),
        "{out:?}"
    );
    let res = app.login(&app.client(), &user).await;
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
    let out = reset(&user.email);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("had no second factor"), "{out:?}");
}
