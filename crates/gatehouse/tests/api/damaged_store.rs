//! A damaged embedded store, black-box: pages of garbage in the middle of
//! the SQLite file, and a file that can no longer be written
//! (operations.md, "When a dependency fails").

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;

use crate::cli::{Server, serve_cmd};
use crate::helpers::*;
use crate::process::*;

/// Rows of 1 KiB written to grow the file past the pages the start-up
/// itself reads (schema, migrations), so damage lands on data.
const FILLER_ROWS: usize = 2_000;

/// Starts a server on `dir/gatehouse.db`, fills the file, and stops it.
async fn a_stopped_database_with_data(dir: &Path) -> PathBuf {
    let server = Server::start(&mut serve_cmd(dir));
    let ready = reqwest::get(server.url("/readyz"))
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    server.stop();
    let db = dir.join("gatehouse.db");
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("opening the file");
    for i in 0..FILLER_ROWS {
        sqlx::query(
            "INSERT INTO audit_events (id, at, type, actor, details) \
             VALUES (?, ?, 'login_failed', 'anonymous', ?)",
        )
        .bind(format!("filler-{i}"))
        .bind(i64::try_from(i).expect("small"))
        .bind("x".repeat(1_000))
        .execute(&pool)
        .await
        .expect("adding a row");
    }
    // Everything into the main file, nothing left in the WAL.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");
    pool.close().await;
    db
}

#[tokio::test]
async fn serve_refuses_a_database_with_garbage_in_its_middle_naming_database_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = a_stopped_database_with_data(dir.path()).await;
    let len = std::fs::metadata(&db).expect("file size").len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("opening the file for damage");
    file.seek(SeekFrom::Start(len / 2)).expect("seek");
    file.write_all(&[0xA5; 16 * 1024]).expect("writing garbage");
    drop(file);

    let out = run(&mut serve_cmd(dir.path()), "");
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("database_url"), "{line:?}");
    assert!(line.contains("corrupt"), "{line:?}");
    assert!(out.stdout.is_empty(), "never announced a listener: {out:?}");
}

/// Makes files immutable (`chattr +i`): even root may no longer write them,
/// through descriptors already open too. Undone when dropped, so the
/// temporary directory can be removed.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Self {
        let out = Command::new("chattr")
            .arg("+i")
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("running chattr: {e}"));
        assert!(
            out.status.success(),
            "this test makes the database immutable with chattr +i, which needs root \
             (CAP_LINUX_IMMUTABLE) on a file system that supports it; chattr said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

#[tokio::test]
async fn readiness_is_503_while_the_database_file_cannot_be_written() {
    let app = TestApp::spawn().await;
    let readyz = || async {
        app.bare_client()
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz")
            .status()
    };
    assert_eq!(readyz().await, StatusCode::OK);

    // The file and its WAL; not the `-shm`, which SQLite maps into memory
    // and every reader writes.
    let wal = PathBuf::from(format!("{}-wal", app.db_path.display()));
    let guard = Immutable::set(vec![app.db_path.clone(), wal]);
    let while_read_only = readyz().await;
    // Busy enough that the pool opens connections while the file is
    // immutable: SQLite opens such a file read-only, and a connection opened
    // read-only stays so after the file is writable again.
    let busy: Vec<_> = (0..12).map(|_| readyz()).collect();
    for status in futures_util::future::join_all(busy).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    drop(guard);
    assert_eq!(
        while_read_only,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz while the file cannot be written"
    );
    // Writable again: ready again, without a restart, on every connection
    // the pool holds (it holds at most 8).
    for _ in 0..16 {
        assert_eq!(readyz().await, StatusCode::OK);
    }
}
