//! The README, held to what it says. Its Rust blocks compile as doctests
//! (`src/lib.rs` includes it); here: the `Cargo.toml` lines of the quick
//! start name every crate its code uses, with the versions and features it
//! needs, and a refused token is logged as "Why a token was refused" shows,
//! under the `RUST_LOG` it gives. (`crates/gatehouse/tests/api/verify_readme.rs`
//! runs the quick start's builder chain against the real gatehouse.)

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use gatehouse_verify::Algorithm;
use gatehouse_verify::axum::VerifyLayer;
use tower::ServiceExt as _;
use tracing_subscriber::EnvFilter;

use crate::common::{self, ManualClock, Mock, T0, TestKey};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md")
}

/// The fenced blocks of `lang` in the section under `## {heading}`.
fn blocks(readme: &str, heading: &str, lang: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has the section {heading:?}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line) {
            (None, fence) if fence.strip_prefix("```").is_some_and(|l| l == lang) => {
                current = Some(String::new());
            }
            (Some(_), "```") => found.extend(current.take()),
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    found
}

fn only(mut blocks: Vec<String>, what: &str) -> String {
    assert_eq!(blocks.len(), 1, "one {what} block: {blocks:?}");
    blocks.remove(0)
}

/// The crates a Rust block names by path (`use tracing_subscriber::...`,
/// `#[tokio::main]`, `axum::serve`), as package names, `std` aside. A `use`
/// declaration counts by its root only (`use a::{b::c}` names `a`).
fn crates_used(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest_of_code = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].trim_end_matches([' ', '\t']);
        let starts_statement = before.is_empty() || before.ends_with('\n');
        rest_of_code.push_str(&rest[..at]);
        let declaration = &rest[at..];
        let end = declaration.find(';').map_or(declaration.len(), |e| e + 1);
        if starts_statement {
            if let Some((root, _)) = declaration["use ".len()..].split_once("::") {
                used.insert(root.trim().to_owned());
            }
        } else {
            rest_of_code.push_str(&declaration[..end]);
        }
        rest = &declaration[end..];
    }
    rest_of_code.push_str(rest);
    let code = rest_of_code.as_str();
    for (at, _) in code.match_indices("::") {
        let before = &code[..at];
        let ident_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let ident = &before[ident_start..];
        if !before[..ident_start].ends_with("::")
            && ident.starts_with(|c: char| c.is_ascii_lowercase())
        {
            used.insert(ident.to_owned());
        }
    }
    used.retain(|c| {
        !matches!(
            c.as_str(),
            "std" | "core" | "alloc" | "crate" | "self" | "super"
        )
    });
    used.into_iter().map(|c| c.replace('_', "-")).collect()
}

fn features(dep: &toml::Value) -> BTreeSet<&str> {
    dep.get("features")
        .and_then(toml::Value::as_array)
        .map(|f| f.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default()
}

fn version(dep: &toml::Value) -> Option<&str> {
    dep.as_str()
        .or_else(|| dep.get("version").and_then(toml::Value::as_str))
}

#[test]
fn the_quick_starts_cargo_lines_are_what_its_code_needs() {
    let readme = readme();
    let section = "Protect a route in a few lines";
    let manifest: toml::Table = only(blocks(&readme, section, "toml"), "toml")
        .parse()
        .expect("the README's Cargo.toml lines parse");
    let deps = manifest["dependencies"]
        .as_table()
        .expect("a [dependencies] table");
    let code = only(blocks(&readme, section, "rust,no_run"), "quick start");

    let listed: BTreeSet<String> = deps.keys().cloned().collect();
    assert_eq!(
        crates_used(&code),
        listed,
        "the crates the quick start uses are the ones its Cargo.toml lines list"
    );

    // Not on crates.io: a path dependency on this crate, no registry version.
    let this = &deps["gatehouse-verify"];
    assert!(
        this.get("path")
            .and_then(toml::Value::as_str)
            .is_some_and(|p| p.ends_with("/crates/gatehouse-verify")),
        "{this}"
    );
    assert!(version(this).is_none(), "{this}");

    // The axum whose traits this crate implements.
    let ours: toml::Table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .expect("Cargo.toml")
            .parse()
            .expect("Cargo.toml parses");
    let our_axum = version(&ours["dependencies"]["axum"]).expect("axum's version");
    assert_eq!(version(&deps["axum"]), Some(our_axum));

    // `#[tokio::main]` on the multi-threaded runtime, and the listener.
    let tokio = features(&deps["tokio"]);
    for needed in ["macros", "rt-multi-thread", "net"] {
        assert!(tokio.contains(needed), "tokio needs {needed}: {tokio:?}");
    }
    if code.contains("EnvFilter") {
        assert!(features(&deps["tracing-subscriber"]).contains("env-filter"));
    }
}

#[test]
fn crates_used_reads_paths_not_types_or_modules() {
    let used = crates_used(
        "use a_b::c::{D, e::F};\nuse std::io;\n#[tokio::main]\nfn f() { std::mem::drop(G::new()); h::i(); }",
    );
    assert_eq!(
        used,
        BTreeSet::from(["a-b".into(), "tokio".into(), "h".into()])
    );
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

/// Each line without its leading timestamp.
fn untimed(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.trim_start()))
        .collect()
}

/// The `RUST_LOG` value the README gives, and the line it shows.
fn readme_logging(readme: &str) -> (String, String) {
    let section = "Why a token was refused";
    let command = only(blocks(readme, section, "sh"), "sh");
    let filter = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("RUST_LOG="))
        .expect("the sh block sets RUST_LOG")
        .to_owned();
    let line = only(blocks(readme, section, "text"), "text");
    let line = untimed(&line)
        .first()
        .map(|l| (*l).to_owned())
        .expect("a log line");
    (filter, line)
}

/// The token with one character of its signature changed.
fn tampered(token: &str) -> String {
    let (_, signature) = token.rsplit_once('.').expect("a JWS");
    let at = token.len() - signature.len() / 2;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII")
}

#[tokio::test]
async fn a_refused_token_is_logged_as_the_readme_shows_never_the_token() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    let claims = common::claims(&mock.base, clock.secs());
    let valid = key.mint(&claims);
    let forged = tampered(&valid);
    let mut late = claims.clone();
    late["exp"] = (clock.secs() - 60).into();
    let expired = key.mint(&late);
    let app = Router::new()
        .route("/orders", get(|| async { "orders" }))
        .route_layer(VerifyLayer::new(verifier));
    let status = |token: Option<String>| {
        let app = app.clone();
        async move {
            let mut request = Request::builder().uri("/orders");
            if let Some(t) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let request = request.body(Body::empty()).expect("request");
            app.oneshot(request).await.expect("infallible").status()
        }
    };
    let (filter, shown) = readme_logging(&readme());
    assert_eq!(filter, "gatehouse_verify=debug");

    // Under the README's filter: a line per refusal, with its reason.
    let log = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&filter))
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    {
        // A current-thread runtime: the layer's events fire on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);
        assert_eq!(status(Some(valid.clone())).await, StatusCode::OK);
        assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(Some(forged.clone())).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(Some(expired.clone())).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let text = log.text();
    let refusals: Vec<&str> = untimed(&text)
        .into_iter()
        .filter(|l| l.contains("access token refused"))
        .collect();
    assert_eq!(
        refusals,
        [
            shown.as_str(),
            r#"DEBUG gatehouse_verify::verifier: access token refused reason="expired""#
        ],
        "{text}"
    );
    for secret in [&valid, &forged, &expired] {
        let (_, signature) = secret.rsplit_once('.').expect("a JWS");
        assert!(!text.contains(signature), "{text}");
    }

    // Without RUST_LOG (EnvFilter's default: errors only), nothing.
    let quiet = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(""))
        .with_writer({
            let quiet = quiet.clone();
            move || quiet.clone()
        })
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        assert_eq!(status(Some(forged)).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(quiet.text(), "");
}
