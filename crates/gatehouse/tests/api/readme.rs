//! The README's tour ("A short tour with curl"), run as written against a
//! fresh server with the default configuration, twice in a row: every
//! block must succeed (the blocks use `--fail-with-body` where an answer
//! must be 2xx), and every status code a command prints must be the one
//! its `# NNN` comment shows. Only the server's address (the tour's
//! `http://127.0.0.1:8080`, here a free port) and `cargo run --release --`
//! (here the binary under test) are replaced.

use std::path::Path;
use std::process::Command;

use crate::cli::Server;
use crate::process::*;

/// The tour's shell blocks, in order, as one script.
fn tour() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("reading README.md");
    let start = readme
        .find("\n## A short tour with curl\n")
        .expect("README.md has the section \"A short tour with curl\"");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut script = String::new();
    let mut blocks = 0;
    let mut inside = false;
    for line in section.lines() {
        match (inside, line) {
            (false, "```sh") => {
                inside = true;
                blocks += 1;
            }
            (true, "```") => inside = false,
            (true, line) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert_eq!(blocks, 3, "the tour's three sh blocks");
    script
}

/// The status codes the tour's comments promise, in order.
fn promised(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|line| {
            let (_, comment) = line.rsplit_once("# ")?;
            let code = comment.trim();
            (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.to_owned())
        })
        .collect()
}

#[test]
fn the_readme_tour_runs_as_written_twice() {
    let curl = Command::new("curl").arg("--version").output();
    assert!(
        curl.as_ref().is_ok_and(|o| o.status.success()),
        "the README's tour needs curl (7.76 or later): apt-get install curl; {curl:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The defaults, as `cargo run --release -- serve` in the README; only
    // the port is free rather than 8080.
    let server = Server::start(
        gatehouse(dir.path())
            .arg("serve")
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0"),
    );
    let written = tour();
    let expected = promised(&written);
    assert!(
        expected.len() >= 7,
        "the tour promises its codes: {expected:?}"
    );
    let binary = env!("CARGO_BIN_EXE_gatehouse");
    let script = written
        .replace("http://127.0.0.1:8080", &format!("http://{}", server.addr))
        .replace("cargo run --release --", &format!("'{binary}'"));
    assert!(!script.contains("cargo run"), "{script}");

    for run_number in 1..=2 {
        let out = run(
            Command::new("bash")
                .current_dir(dir.path())
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .args(["-e", "-o", "pipefail", "-c", &script]),
            "",
        );
        assert!(
            out.status.success(),
            "run {run_number}: the tour failed: {out:?}\nscript:\n{script}"
        );
        let printed: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.len() == 3 && l.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        assert_eq!(
            printed, expected,
            "run {run_number}: status codes\n{}",
            out.stdout
        );
        if run_number == 1 {
            assert!(
                out.stdout.contains("\"email\":\"ada@example.com\""),
                "{}",
                out.stdout
            );
        } else {
            assert!(
                out.stdout.contains("\"status\":409"),
                "registered again: {}",
                out.stdout
            );
            assert!(out.stdout.contains("bob exists"), "{}", out.stdout);
        }
        assert!(
            out.stdout.contains("signature: valid"),
            "token decode: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("new signing key "),
            "keys rotate: {}",
            out.stdout
        );
    }
    server.stop();
}
