//! A full disk under the embedded store, black-box: the SQLite file on a
//! small tmpfs that the test fills. Every registration answered 201 must be
//! in the file for any other reader, during the outage and after it;
//! `/readyz` must say the store cannot write while it cannot; and once space
//! is freed the node must write again. The test mounts the tmpfs itself
//! (root, or CAP_SYS_ADMIN), and fails saying so where it may not.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use sqlx::Connection as _;

use crate::helpers::*;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running mount: {e}"));
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs to fill it, which needs root (or CAP_SYS_ADMIN); \
             run the suite as root, as scripts/test.sh does in CI. mount said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the app's last connections may still be closing, and a
        // busy mount would otherwise stay behind after the test.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system at `dir` with a file of its own until a write
/// fails; returns the file, whose removal frees the space.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("creating the filler");
    let chunk = vec![0u8; 4096];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
    path
}

/// The emails of every account a fresh connection sees in the file.
async fn emails_in(db: &Path) -> Vec<String> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("opening the database read-only");
    sqlx::query_scalar("SELECT email FROM users")
        .fetch_all(&mut conn)
        .await
        .expect("reading users")
}

async fn ready(app: &TestApp) -> StatusCode {
    app.bare_client()
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz")
        .status()
}

#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_write_and_readiness_says_so() {
    let tmpfs = Tmpfs::mount("6m");
    let db = tmpfs.path().join("gatehouse.db");
    let url = format!("sqlite://{}", db.display());
    let app = TestApp::spawn_with(|c| {
        c.database_url = gatehouse::config::DatabaseUrl::Sqlite(url);
        c.registration_max_per_ip = 10_000;
    })
    .await;
    assert_eq!(ready(&app).await, StatusCode::OK);

    let filler = fill(tmpfs.path());
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut readiness_while_full = Vec::new();
    for i in 0..60 {
        let email = format!("full{i}@example.com");
        let status = app.register(&email, PASSWORD).await.status();
        match status {
            StatusCode::CREATED => acknowledged.push(email),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                readiness_while_full.push(ready(&app).await);
            }
            other => panic!("registration {i} on a full disk: {other} (want 201 or 503)"),
        }
        if refused >= 10 {
            break;
        }
    }
    assert!(
        refused >= 10,
        "the disk never filled: {} registrations went through",
        acknowledged.len()
    );
    let seen = emails_in(&db).await;
    let lost: Vec<_> = acknowledged.iter().filter(|e| !seen.contains(e)).collect();
    assert!(
        lost.is_empty(),
        "answered 201 on a full disk but not in the file: {lost:?}"
    );
    // The probe writes one small row: while the disk still has a page or
    // two for it, it may pass where a registration's larger write failed.
    // Once the disk is truly full it must fail, and keep failing.
    assert!(
        readiness_while_full[readiness_while_full.len() - 5..]
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "/readyz while writes fail: {readiness_while_full:?}"
    );

    // Space comes back: the node writes again, readiness recovers, and
    // nothing acknowledged before or after is missing.
    std::fs::remove_file(&filler).expect("removing the filler");
    let mut after = Vec::new();
    for i in 0..5 {
        let email = format!("after{i}@example.com");
        let res = app.register(&email, PASSWORD).await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "registration {i} after space was freed"
        );
        after.push(email);
    }
    assert_eq!(ready(&app).await, StatusCode::OK);
    let seen = emails_in(&db).await;
    let lost: Vec<_> = acknowledged
        .iter()
        .chain(&after)
        .filter(|e| !seen.contains(e))
        .collect();
    assert!(
        lost.is_empty(),
        "answered 201 but not in the file: {lost:?}"
    );
    drop(app);
}
