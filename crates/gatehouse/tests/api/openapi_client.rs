//! `GET /openapi.json` generates a working client: the real server on port
//! 0, its document fed to openapi-python-client (pinned), and
//! `tests/openapi_client/journey.py` calling register, login, `/v1/me` and
//! both grants of the token endpoint through the generated package only.
//! The test fails, never skips, when the generator is missing:
//! `bash scripts/test.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp, unique_email};

/// The openapi-python-client release the suite is run with
/// (`scripts/test.sh` installs it; keep the two in step).
const OPENAPI_PYTHON_CLIENT: &str = "0.29.1";

/// Longer than generating and running the journey ever take (about 2 s);
/// a hung interpreter must not hang the suite.
const TIMEOUT: Duration = Duration::from_secs(120);

fn journey() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_client/journey.py")
}

/// Runs `cmd` to its end or the timeout, its stdout and stderr into `log`:
/// `(success, what it printed)`.
fn run(mut cmd: Command, log: &Path) -> (bool, String) {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("the command starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the command") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = std::fs::read_to_string(log).unwrap_or_default();
    if status.is_none() {
        output.push_str(&format!("\n(killed after {} s)", TIMEOUT.as_secs()));
    }
    (status.is_some_and(|s| s.success()), output)
}

/// [`run`], off the runtime's threads (the server runs on them).
async fn run_blocking(cmd: Command, log: PathBuf) -> (bool, String) {
    tokio::task::spawn_blocking(move || run(cmd, &log))
        .await
        .expect("the command's thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_generates_a_python_client_that_works() {
    let version = Command::new("openapi-python-client")
        .arg("--version")
        .output();
    let installed = version.as_ref().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .trim_end()
                .ends_with(&format!(" {OPENAPI_PYTHON_CLIENT}"))
    });
    assert!(
        installed,
        "openapi-python-client {OPENAPI_PYTHON_CLIENT} is required: \
         `pip install openapi-python-client=={OPENAPI_PYTHON_CLIENT}` (Python 3.11 or later; \
         or run `bash scripts/test.sh`, which installs it); found: {version:?}"
    );
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let document = res.bytes().await.expect("the document");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("openapi.json"), &document).expect("write the document");

    // `--meta none`: the package alone, importable from `dir`.
    // `--fail-on-warning`: an operation or schema the generator skips fails
    // the test too.
    let mut generate = Command::new("openapi-python-client");
    generate
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .args(["generate", "--path", "openapi.json", "--meta", "none"])
        .args(["--output-path", "gatehouse_client", "--fail-on-warning"]);
    let (ok, output) = run_blocking(generate, dir.path().join("generate.log")).await;
    assert!(ok, "openapi-python-client generate failed:\n{output}");
    assert!(
        dir.path()
            .join("gatehouse_client/api/tokens/token.py")
            .is_file(),
        "no token module was generated:\n{output}"
    );

    let mut python = Command::new("python3");
    python
        .current_dir(dir.path())
        .arg(journey())
        .env("PYTHONPATH", dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("GATEHOUSE_BASE_URL", app.url(""))
        .env("GATEHOUSE_COOKIE", app.cookie_name())
        .env("GATEHOUSE_EMAIL", unique_email())
        .env("GATEHOUSE_PASSWORD", PASSWORD);
    let (ok, output) = run_blocking(python, dir.path().join("journey.log")).await;
    // Shown with --nocapture, and with the failure otherwise.
    eprintln!(
        "generated client journey in {:.1?}:\n{output}",
        started.elapsed()
    );
    assert!(ok, "the generated client's journey failed:\n{output}");
    assert!(output.contains("journey: done"), "{output}");
}
