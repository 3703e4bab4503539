//! The hosted pages in a real browser: the real server on port 0 with its
//! default `__Host-` secure cookie (Chromium treats `http://127.0.0.1` as a
//! secure context and keeps `Secure` cookies there), and
//! `tests/browser/journey.mjs` driving headless Chromium through
//! playwright-core. The test fails, never skips, when node, the journey's
//! `node_modules` or Chromium is missing: `bash scripts/test.sh` installs
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::helpers::TestApp;

/// Longer than the journey ever takes (about 10 s on two cores); a hung
/// browser must not hang the suite.
const JOURNEY_TIMEOUT: Duration = Duration::from_secs(180);

const HOW_TO_INSTALL: &str = "run the suite with `bash scripts/test.sh`, which installs them \
     (Debian's `chromium`, and `npm ci` in crates/gatehouse/tests/browser)";

/// The screenshots the journey must leave behind.
const SCREENSHOTS: &[&str] = &[
    "01-register",
    "02-login-failed",
    "03-login",
    "04-account",
    "05-account-after-ending-device-b",
    "06-password-refused",
    "07-after-logout",
];

pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `target/browser-artifacts/` (git-ignored), next to cargo's own output.
pub(crate) fn artifact_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser-artifacts")
}

pub(crate) fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Panics with how to install whatever the journey needs and is missing.
pub(crate) fn require_tools() {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "`node` (Node.js 20 or later) is not on PATH; {HOW_TO_INSTALL}"
    );
    let playwright = browser_dir().join("node_modules/playwright-core");
    assert!(
        playwright.is_dir(),
        "{} is missing; {HOW_TO_INSTALL}",
        playwright.display()
    );
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "Chromium is not at {} (set CHROMIUM to another path); {HOW_TO_INSTALL}",
        chromium.display()
    );
}

/// Runs `node SCRIPT ARGS...` from `tests/browser` with Chromium's path and
/// `envs`, to its end or the timeout, its output into `log`: (success,
/// stdout + stderr).
pub(crate) fn run_script(
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &Path,
) -> (bool, String) {
    let dir = browser_dir();
    let file = std::fs::File::create(log).expect("journey log");
    let err = file.try_clone().expect("journey log");
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .env("CHROMIUM", chromium())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .expect("node starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break Some(status);
        }
        if started.elapsed() > JOURNEY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut output = std::fs::read_to_string(log).unwrap_or_default();
    if status.is_none() {
        output.push_str(&format!("\n(killed after {} s)", JOURNEY_TIMEOUT.as_secs()));
    }
    (status.is_some_and(|s| s.success()), output)
}

/// Runs the journey to its end or the timeout: (success, stdout + stderr).
fn run_journey(base_url: &str, artifacts: &Path) -> (bool, String) {
    let dir = artifacts.display().to_string();
    run_script(
        "journey.mjs",
        &[base_url, &dir],
        &[],
        &artifacts.join("journey.log"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_pages_journey_passes_in_headless_chromium() {
    require_tools();
    // A folder of its own: the other journeys write theirs beside it while
    // this one runs.
    let artifacts = artifact_dir().join("hosted-pages");
    // Screenshots of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let app = TestApp::spawn_with(|c| c.cookie_secure = true).await;
    let started = SystemTime::now();

    let base_url = app.url("");
    let dir = artifacts.clone();
    let (ok, output) = tokio::task::spawn_blocking(move || run_journey(&base_url, &dir))
        .await
        .expect("the journey's thread");
    println!("{output}");
    assert!(ok, "the browser journey failed:\n{output}");

    for name in SCREENSHOTS {
        let path = artifacts.join(format!("{name}.png"));
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} was not written ({e})", path.display()));
        assert!(meta.len() > 1000, "{} is nearly empty", path.display());
        assert!(
            meta.modified().is_ok_and(|m| m >= started),
            "{} is from an earlier run",
            path.display()
        );
        let png = std::fs::read(&path).expect("read screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            path.display()
        );
    }
}
