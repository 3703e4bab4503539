//! Backups and restores as docs/production.md gives them ("Backups and
//! restores"), with the real tools: `sqlite3 .backup` and `VACUUM INTO` of a
//! live database, and `pg_dump -Fc` / `dropdb` / `createdb` /
//! `pg_restore --no-owner`; the host's paths, `runuser` and `systemctl`
//! are replaced by a temporary directory and the server process. What is
//! checked: a restored node starts, knows who existed at the backup and
//! nobody created after it, and (the page's warning) a session ended after
//! the backup is alive again.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::{Server, serve_cmd};
use crate::helpers::{PASSWORD, PG_SERVER, PgDatabase};
use crate::process::DEADLINE;

/// Runs a tool the page names; fails with how to install it when missing.
fn tool(program: &str, args: &[&str], package: &str) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed to test the documented backups ({e}): apt-get install {package}, or run `bash scripts/test.sh`")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

async fn register(server: &Server, email: &str) {
    let res = client()
        .post(server.url("/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(res.status(), StatusCode::CREATED, "registering {email}");
}

/// Logs `email` in: the status, and the session cookie (`name=value`) when
/// it succeeded.
async fn login(server: &Server, email: &str) -> (StatusCode, String) {
    let res = client()
        .post(server.url("/v1/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/login");
    let cookie = res
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_owned();
    (res.status(), cookie)
}

/// `GET /v1/me` with `cookie` sent as it is (a replay, whatever a browser
/// would have kept).
async fn me(server: &Server, cookie: &str) -> StatusCode {
    client()
        .get(server.url("/v1/me"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("GET /v1/me")
        .status()
}

async fn logout(server: &Server, cookie: &str) {
    let res = client()
        .post(server.url("/v1/logout"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("POST /v1/logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

/// Replaces the database with `backup` as the page's restore does: the old
/// `-wal` and `-shm` removed, the copy installed `0600`.
fn restore_sqlite(dir: &Path, backup: &Path) {
    for stale in ["gatehouse.db-wal", "gatehouse.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let db = dir.join("gatehouse.db");
    std::fs::copy(backup, &db).expect("installing the backup");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

#[tokio::test]
async fn a_sqlite_backup_of_a_live_database_restores_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gatehouse.db");
    let server = Server::start(&mut serve_cmd(dir.path()));
    register(&server, "before@example.com").await;
    let (status, ended_later) = login(&server, "before@example.com").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me(&server, &ended_later).await, StatusCode::OK);

    // Both documented copies, of the live database, under umask 077.
    let backup = dir.path().join("backup.db");
    let compact = dir.path().join("compact.db");
    tool(
        "sh",
        &[
            "-c",
            &format!(
                "umask 077; sqlite3 '{}' '.backup {}'",
                db.display(),
                backup.display()
            ),
        ],
        "sqlite3",
    );
    tool(
        "sh",
        &[
            "-c",
            &format!(
                "umask 077; sqlite3 '{}' \"VACUUM INTO '{}'\"",
                db.display(),
                compact.display()
            ),
        ],
        "sqlite3",
    );
    for copy in [&backup, &compact] {
        let mode = std::fs::metadata(copy)
            .expect("the copy")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} is for the owner alone", copy.display());
    }

    // After the backup: a new account, and the session ended.
    register(&server, "after@example.com").await;
    logout(&server, &ended_later).await;
    assert_eq!(me(&server, &ended_later).await, StatusCode::UNAUTHORIZED);
    server.stop();

    for copy in [&backup, &compact] {
        restore_sqlite(dir.path(), copy);
        let server = Server::start(&mut serve_cmd(dir.path()));
        let (status, _) = login(&server, "before@example.com").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}: the account of before",
            copy.display()
        );
        let (status, _) = login(&server, "after@example.com").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{}: an account made after the backup",
            copy.display()
        );
        // The page's warning: what ended after the backup lives again.
        assert_eq!(
            me(&server, &ended_later).await,
            StatusCode::OK,
            "{}: the session ended after the backup",
            copy.display()
        );
        server.stop();
    }
}

#[tokio::test]
async fn a_postgres_dump_restores_as_documented() {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database.url();
    let start = || Server::start(serve_cmd(dir.path()).env("GATEHOUSE_DATABASE_URL", &url));
    let server = start();
    register(&server, "before@example.com").await;
    let dump = dir.path().join("gatehouse.dump");
    tool(
        "pg_dump",
        &["-Fc", "-d", &url, "-f", &dump.display().to_string()],
        "postgresql-client",
    );
    register(&server, "after@example.com").await;
    server.stop();

    // "with every node stopped": drop, create, restore.
    let host: &[&str] = &[
        "--host",
        "127.0.0.1",
        "--port",
        "5432",
        "--username",
        "postgres",
    ];
    let name = database.name.as_str();
    tool("dropdb", &[host, &[name]].concat(), "postgresql-client");
    tool("createdb", &[host, &[name]].concat(), "postgresql-client");
    tool(
        "pg_restore",
        &[
            host,
            &["-d", name, "--no-owner", &dump.display().to_string()],
        ]
        .concat(),
        "postgresql-client",
    );
    assert!(url.starts_with(PG_SERVER));

    let server = start();
    let (status, _) = login(&server, "before@example.com").await;
    assert_eq!(status, StatusCode::OK, "the account of before");
    let (status, _) = login(&server, "after@example.com").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an account made after the dump"
    );
    server.stop();
}
